"""spl.superpixel_adjacency: the graph of adjacent superpixels of a batch, in CSR form (op
``spl::superpixel_adjacency``; kernels csrc/ops/{cpu,cuda}/superpixel_adjacency_kernel.*, arguments and
the batch CSR layout csrc/ops/superpixel_adjacency.h)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._common import check_labels, count


class Graph(NamedTuple):
    """The superpixel adjacency graph of a batch: the disjoint union of the images'
    graphs in CSR form. Image b owns nodes ``node_offset[b] .. node_offset[b + 1] - 1`` (its
    superpixel k is node ``node_offset[b] + k``); the neighbours of node i are
    ``indices[indptr[i]:indptr[i + 1]]``, sorted, without i itself, and j is a neighbour of i exactly
    when i is one of j. ``border[e]`` counts the 4-neighbour pixel pairs along the border of edge e
    (0 for edges added by ``hops`` > 1). All int64, on the device of the labels."""

    indptr: torch.Tensor
    indices: torch.Tensor
    border: torch.Tensor
    node_offset: torch.Tensor

    @property
    def num_nodes(self) -> int:
        return self.indptr.shape[0] - 1

    @property
    def num_edges(self) -> int:
        return self.indices.shape[0]

    def rows(self) -> torch.Tensor:
        """The source node of every edge (int64 [E])."""
        return torch.repeat_interleave(
            torch.arange(self.num_nodes, device=self.indptr.device), self.indptr.diff(), output_size=self.num_edges
        )  # no device sync


def _node_offset(fn: str, num_superpixels, batch: int, device) -> torch.Tensor:
    if isinstance(num_superpixels, torch.Tensor):
        counts = num_superpixels
        if counts.dtype != torch.int64 or counts.dim() != 1 or counts.shape[0] != batch:
            raise ValueError(
                f"{fn}: num_superpixels must be an int or an int64 tensor of shape [B] = [{batch}], "
                f"got {counts.dtype} {list(counts.shape)}"
            )
        counts = counts.to(device)
    else:
        K = count(fn, "num_superpixels", num_superpixels)
        counts = torch.full((batch,), K, dtype=torch.int64, device=device)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def superpixel_adjacency(labels: torch.Tensor, num_superpixels) -> Graph:
    """The graph of adjacent superpixels of a batch of label maps (4-neighbour pixel pairs across a border).

    Args:
        labels (Tensor[B, H, W] of int64): superpixel of each pixel; -1 leaves a pixel out.
        num_superpixels (int or Tensor[B] of int64): K, or the number of superpixels of each image
            (e.g. the counts of ``spl.slic(..., return_counts=True)``); labels of image b must be in
            [-1, K_b).

    Returns:
        Graph: edge (i, j) when some pixel of i and some pixel of j are 4-neighbours, with the number
        of such pixel pairs in ``border``. Built on the labels' device (on the GPU for GPU labels).

    Raises:
        TypeError / ValueError: labels not int64 [B, H, W], labels out of range, bad num_superpixels.
    """
    fn = "superpixel_adjacency"
    check_labels(fn, labels)
    node_offset = _node_offset(fn, num_superpixels, labels.shape[0], labels.device)
    indptr, indices, border = torch.ops.spl.superpixel_adjacency(labels, node_offset)
    return Graph(indptr, indices, border, node_offset)


@torch.library.register_fake("spl::superpixel_adjacency")
def _superpixel_adjacency_fake(labels, node_offset):
    fn = "superpixel_adjacency"
    check_labels(fn, labels)
    if node_offset.dtype != torch.int64:
        raise TypeError(f"{fn}: node_offset must be an int64 tensor, got {node_offset.dtype}")
    if node_offset.dim() != 1 or node_offset.shape[0] != labels.shape[0] + 1 or node_offset.device != labels.device:
        raise ValueError(
            f"{fn}: node_offset must have shape [B + 1] = [{labels.shape[0] + 1}] on {labels.device}, "
            f"got {list(node_offset.shape)} on {node_offset.device}"
        )
    # The numbers of nodes and edges depend on the values (node_offset[-1], the labels' borders).
    num_edges = torch.library.get_ctx().new_dynamic_size()
    num_nodes = torch.library.get_ctx().new_dynamic_size()
    return labels.new_empty((num_nodes + 1,)), labels.new_empty((num_edges,)), labels.new_empty((num_edges,))
