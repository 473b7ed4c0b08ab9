"""spl.sparse_propagate: propagation over a superpixel graph (ops ``spl::sparse_propagate`` and its
backward ``spl::_sparse_propagate_backward``; kernels csrc/ops/{cpu,cuda}/sparse_propagate_kernel.*,
arguments csrc/ops/sparse_propagate.h). ``transition`` and ``propagate`` are ASAM's way in: the
transition computed once, walked many times."""

from __future__ import annotations

import math

import torch

from ._common import FLOAT_DTYPES, check_features, count, on_calling_thread
from .superpixel_adjacency import Graph

# sparse_propagate's checks and transition (torch ops over the edges) for a graph of at most this
# many nodes (some 3 million edges) run on the calling thread: a few ms at most, and torch would
# open parallel regions for them (repeat_interleave even for a few thousand elements), each costly
# on a busy machine. The kernel decides its own threads (csrc/ops/cpu/parallel.h).
_GRAPH_INLINE_NODES = 2**19


def transition(graph: Graph, weight: torch.Tensor, self_weight: float):
    """T = D^-1 A with A = weight off the diagonal and self_weight on it: (edge values, diagonal).
    The row sums come from a segmented sum (one row at a time, in CSR order: deterministic, without
    atomics, independent of the other rows, hence of the batch) and are differentiable."""
    degree = torch.segment_reduce(weight, "sum", offsets=graph.indptr, unsafe=True) + self_weight
    rows = graph.rows()
    return weight / degree[rows], self_weight / degree


def _check_graph(fn: str, graph, device) -> None:
    """A Graph a user may have built by hand: field types and shapes, then the CSR structure that
    the row sums need (indptr non-decreasing from 0 to E, indices in [0, N), node_offset
    non-decreasing from 0 to N), in one device synchronisation. The kernels check the rest (every
    edge inside its image, a symmetric structure)."""
    if not isinstance(graph, Graph):
        raise TypeError(f"{fn}: graph must be a spl.Graph (from spl.superpixel_adjacency), got {type(graph).__name__}")
    for name in Graph._fields:
        t = getattr(graph, name)
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.dim() != 1:
            raise TypeError(
                f"{fn}: graph.{name} must be a 1-D int64 tensor, got "
                + (f"{t.dtype} of shape {list(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__)
            )
        if t.device != device:
            raise ValueError(f"{fn}: graph.{name} is on {t.device} but x is on {device}")
    if graph.indptr.numel() < 1 or graph.node_offset.numel() < 1:
        raise ValueError(f"{fn}: graph.indptr and graph.node_offset must have at least one entry (N + 1, B + 1)")
    N, E = graph.num_nodes, graph.num_edges
    if graph.border.numel() != E:
        raise ValueError(f"{fn}: graph.border must have one entry per edge (E = {E}), got {graph.border.numel()}")
    if torch.compiler.is_compiling():
        return
    ip, off, ix = graph.indptr, graph.node_offset, graph.indices
    facts = torch.stack(
        [
            ip[0] == 0,
            ip[-1] == E,
            (ip.diff() >= 0).all(),
            off[0] == 0,
            off[-1] == N,
            (off.diff() >= 0).all(),
            (ix >= 0).all() & (ix < N).all() if E else torch.ones((), dtype=torch.bool, device=device),
        ]
    )
    ok = facts.tolist()
    if not all(ok[:3]):
        raise ValueError(f"{fn}: graph.indptr must be non-decreasing from 0 to the number of edges E = {E}")
    if not all(ok[3:6]):
        raise ValueError(f"{fn}: graph.node_offset must be non-decreasing from 0 to the number of nodes N = {N}")
    if not ok[6]:
        raise ValueError(f"{fn}: graph.indices must be node ids in [0, N) = [0, {N})")


def propagate(graph: Graph, transition, x: torch.Tensor, iters: int, alpha: float) -> torch.Tensor:
    """``sparse_propagate`` with the transition of ``transition`` computed once by the caller (ASAM's
    mean field walks the same graph many times). Private: x float32 or float64 like the transition,
    the graph from superpixel_adjacency, checked by the op."""
    edge_value, self_value = transition
    return torch.ops.spl.sparse_propagate(
        graph.indptr, graph.indices, graph.node_offset, edge_value, self_value, x, iters, float(alpha)
    )


def sparse_propagate(
    graph: Graph,
    weight: torch.Tensor,
    x: torch.Tensor,
    iters: int,
    alpha: float = 1.0,
    *,
    self_weight: float = 1.0,
    _check_weight: bool = True,
) -> torch.Tensor:
    """Propagation over a superpixel graph: ``s <- alpha * T s + (1 - alpha) * x`` for ``iters`` rounds,
    starting from ``s = x``, with the transition ``T = D^-1 A`` (A: ``weight`` on the edges, ``self_weight``
    on the diagonal; D: the row sums of A). All rounds run in one op (one kernel launch on the GPU).

    Args:
        graph (Graph): from ``superpixel_adjacency``.
        weight (Tensor[E]): non-negative finite edge affinities (float), on the graph's device.
        x (Tensor[N, C]): node values (float16 / bfloat16 are computed in float32).
        iters (int): rounds, >= 0. alpha (float): in [0, 1]; 1 is a pure random walk.
        self_weight (float): the diagonal of A, > 0 (default 1: each node keeps a share of its own value).

    Returns:
        Tensor[N, C], the dtype of x. Differentiable to ``x`` and ``weight`` (the backward stores the
        ``iters`` intermediate states: iters * N * C values). Deterministic: a fixed summation order
        and no atomics; given the same transition values the CPU and CUDA kernels compute the same
        bits (the row sums of T come from torch's segment_reduce, which may round differently on
        the two devices).
    """
    fn = "sparse_propagate"
    check_features(fn, x, 2)
    with on_calling_thread(x.device.type == "cpu" and x.shape[0] <= _GRAPH_INLINE_NODES):
        _check_graph(fn, graph, x.device)
        edge_value, self_value, x_in = _propagate_inputs(fn, graph, weight, x, iters, alpha, self_weight, _check_weight)
    out = torch.ops.spl.sparse_propagate(
        graph.indptr, graph.indices, graph.node_offset, edge_value, self_value, x_in, int(iters), float(alpha)
    )
    return out.to(x.dtype)


def _propagate_inputs(fn, graph, weight, x, iters, alpha, self_weight, check_weight):
    """sparse_propagate's checks of its other arguments and its transition (edge and self values)."""
    if not isinstance(weight, torch.Tensor) or weight.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{fn}: weight must be a floating-point tensor")
    if weight.dim() != 1 or weight.shape[0] != graph.num_edges:
        raise ValueError(f"{fn}: weight must have shape [E] = [{graph.num_edges}], got {list(weight.shape)}")
    if x.shape[0] != graph.num_nodes:
        raise ValueError(f"{fn}: x must have shape [N, C] with N = {graph.num_nodes} nodes, got {list(x.shape)}")
    if weight.device != x.device:
        raise ValueError(f"{fn}: weight is on {weight.device} but x is on {x.device}")
    iters = count(fn, "iters", iters)
    if not (0.0 <= float(alpha) <= 1.0):
        raise ValueError(f"{fn}: alpha must be in [0, 1], got {alpha}")
    if not (float(self_weight) > 0.0 and math.isfinite(self_weight)):
        raise ValueError(f"{fn}: self_weight must be a finite number > 0, got {self_weight}")
    # (spl.asam_refine builds finite non-negative weights itself and skips this device sync.)
    if (
        check_weight
        and not torch.compiler.is_compiling()
        and weight.numel()
        and not bool((torch.isfinite(weight) & (weight >= 0)).all())
    ):
        raise ValueError(f"{fn}: weight must be finite and >= 0")
    dtype = x.dtype if x.dtype == torch.float64 else torch.float32
    edge_value, self_value = transition(graph, weight.to(dtype), float(self_weight))
    return edge_value, self_value, x.to(dtype)


def _propagate_setup_context(ctx, inputs, output):
    indptr, indices, node_offset, edge_value, self_value, x, iters, alpha = inputs
    ctx.iters, ctx.alpha = iters, alpha
    ctx.save_for_backward(indptr, indices, node_offset, edge_value, self_value, x)


def _propagate_backward(ctx, grad):
    indptr, indices, node_offset, edge_value, self_value, x = ctx.saved_tensors
    g_edge, g_self, g_x = torch.ops.spl._sparse_propagate_backward(
        grad.contiguous(), indptr, indices, node_offset, edge_value, self_value, x, ctx.iters, ctx.alpha
    )
    return None, None, None, g_edge, g_self, g_x, None, None


torch.library.register_autograd("spl::sparse_propagate", _propagate_backward, setup_context=_propagate_setup_context)


def _check_op_args(fn, indptr, indices, node_offset, edge_value, self_value, x) -> None:
    """The op's dtypes and shapes (csrc/ops/sparse_propagate.h), for the fake kernels."""
    check_features(fn, x, 2)
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{fn}: x must be float32 or float64, got {x.dtype}")
    N = x.shape[0]
    for name, t, dtype, size in (
        ("indptr", indptr, torch.int64, N + 1),
        ("indices", indices, torch.int64, None),
        ("node_offset", node_offset, torch.int64, None),
        ("edge values", edge_value, x.dtype, indices.shape[0]),
        ("self values", self_value, x.dtype, N),
    ):
        if t.dtype != dtype:
            raise TypeError(f"{fn}: {name} must be {dtype}, got {t.dtype}")
        if t.dim() != 1 or (size is not None and t.shape[0] != size) or t.device != x.device:
            raise ValueError(
                f"{fn}: {name} must be a 1-D tensor"
                + ("" if size is None else f" of {size} entries")
                + f" on {x.device}, got {list(t.shape)} on {t.device}"
            )


@torch.library.register_fake("spl::sparse_propagate")
def _sparse_propagate_fake(indptr, indices, node_offset, edge_value, self_value, x, iters, alpha):
    _check_op_args("sparse_propagate", indptr, indices, node_offset, edge_value, self_value, x)
    return torch.empty_like(x)


@torch.library.register_fake("spl::_sparse_propagate_backward")
def _sparse_propagate_backward_fake(grad, indptr, indices, node_offset, edge_value, self_value, x, iters, alpha):
    _check_op_args("_sparse_propagate_backward", indptr, indices, node_offset, edge_value, self_value, x)
    if grad.shape != x.shape or grad.dtype != x.dtype:
        raise ValueError(
            f"_sparse_propagate_backward: grad must match x ({x.dtype} {list(x.shape)}), "
            f"got {grad.dtype} {list(grad.shape)}"
        )
    return torch.empty_like(edge_value), torch.empty_like(self_value), torch.empty_like(x)
