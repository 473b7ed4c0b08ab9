"""The fake kernels (spl/ops/*.py), which torch.compile traces instead of the ops: for every op, the
same output shapes and dtypes as the real CPU kernel, and for an input of a wrong dtype or shape the
same exception type as the real op, naming the op."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv

import spl

B, C, H, W, K, CLASSES = 2, 3, 8, 8, 4, 3


def _inputs():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, K, (B, H, W), generator=g)
    target = torch.randint(0, CLASSES, (B, H, W), generator=g)
    x = torch.rand(B, C, H, W, generator=g)
    graph = spl.superpixel_adjacency(labels, K)
    N = graph.num_nodes
    edge_value = torch.rand(graph.num_edges, generator=g)
    self_value = torch.rand(N, generator=g)
    nodes = torch.rand(N, 5, generator=g)
    return {
        "slic": ((x * 255).to(torch.uint8), 10, 10.0, 10, True, True, 0.25, [1.0, 1.0], None),
        "enforce_connectivity": (labels, 3),
        "superpixel_pool": (x, labels, K, "mean"),
        "_superpixel_pool_backward": (
            torch.rand(B, C, K, generator=g),
            labels,
            torch.ops.spl.superpixel_pool(x, labels, K, "mean")[1],
            H,
            W,
            "mean",
        ),
        "superpixel_unpool": (torch.rand(B, C, K, generator=g), labels),
        "edge_aware_unpool": (torch.rand(B, C, K, generator=g), labels, x, torch.rand(B, C, K, generator=g), 0.2, 1),
        "superpixel_histogram": (target, labels, K, CLASSES, 255),
        "consistency_weights": (target, labels, K, CLASSES, 0.7, 1.0, 255),
        "superpixel_adjacency": (labels, graph.node_offset),
        "_cam_unary": (x, labels, torch.tensor([[True, False, True], [False, True, True]]), K, 0.15, 1e-6),
        "sparse_propagate": (graph.indptr, graph.indices, graph.node_offset, edge_value, self_value, nodes, 3, 0.9),
        "_sparse_propagate_backward": (
            torch.rand(N, 5, generator=g),
            graph.indptr,
            graph.indices,
            graph.node_offset,
            edge_value,
            self_value,
            nodes,
            3,
            0.9,
        ),
    }


# Ops whose output sizes depend on the values (the fake gives symbolic sizes).
DYNAMIC = {"superpixel_adjacency"}
# Private backward ops: called only by autograd with the forward's own tensors; the kernels do not
# check them again, so only their output shapes are compared.
UNCHECKED = {"_superpixel_pool_backward"}


def _run(name, args, fake):
    op = getattr(torch.ops.spl, name)
    if not fake:
        return op(*args)
    with FakeTensorMode(shape_env=ShapeEnv()) as mode:
        return op(*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args])


def _flat(out):
    return out if isinstance(out, tuple) else (out,)


def test_every_op_has_a_case():
    ops = {name[len("spl::") :] for name in torch._C._dispatch_get_all_op_names() if name.startswith("spl::")}
    assert ops - {"_cuda_version"} == set(_inputs())


@pytest.mark.parametrize("name", sorted(_inputs()))
def test_fake_matches_the_kernel(name):
    args = _inputs()[name]
    real, fake = _flat(_run(name, args, False)), _flat(_run(name, args, True))
    assert len(real) == len(fake)
    for r, f in zip(real, fake):
        assert r.dtype == f.dtype and r.device == f.device and r.dim() == f.dim()
        if name not in DYNAMIC:
            assert tuple(r.shape) == tuple(f.shape)


def _bad_cases(args):
    """(index, replacement, kind): every tensor argument once with a wrong dtype, once with a wrong shape."""
    for i, a in enumerate(args):
        if not isinstance(a, torch.Tensor):
            continue
        yield i, a.to(torch.int16), "dtype"  # no op takes int16
        yield i, a[None], "shape"


@pytest.mark.parametrize("name", sorted(set(_inputs()) - UNCHECKED))
def test_fake_rejects_what_the_kernel_rejects(name):
    args = _inputs()[name]
    for i, bad, kind in _bad_cases(args):
        case = list(args)
        case[i] = bad
        errors = []
        for fake in (False, True):
            with pytest.raises((TypeError, ValueError)) as info:
                _run(name, case, fake)
                print(f"{name}: argument {i} with a wrong {kind} passed ({'fake' if fake else 'kernel'})")
            errors.append(info.value)
        real, fake = errors
        where = f"{name}: argument {i} with a wrong {kind}: kernel {real!r}, fake {fake!r}"
        assert type(real) is type(fake), where
        assert name.lstrip("_") in str(fake), where
