"""spl: superpixels for weakly supervised semantic segmentation, as PyTorch custom ops.

Batched SLIC superpixels on the CPU and CUDA (``spl.slic``), connectivity enforcement
(``spl.enforce_connectivity``), superpixel pooling and the superpixel local-consistency loss
(``spl.superpixel_pool``, ``spl.SuperpixelConsistencyLoss``, ...), CAM refinement over the graph of
adjacent superpixels (``spl.asam_refine``, ``spl.superpixel_adjacency``, ``spl.sparse_propagate``), and
superpixel and segmentation metrics (``spl.metrics``). Every op is a
real ``torch.ops.spl.*`` custom op with a pure-PyTorch reference in ``spl.reference``.
"""

import torch  # noqa: F401  (the extension links against torch's libraries)

from . import (
    _C,  # noqa: F401  (loads the library that registers torch.ops.spl.*)
    metrics,
    reference,
)
from .asam import asam_refine, cam_to_mask
from .losses import SuperpixelConsistencyLoss
from .ops import (
    Graph,
    consistency_weights,
    edge_aware_unpool,
    enforce_connectivity,
    has_cuda_kernels,
    slic,
    sparse_propagate,
    superpixel_adjacency,
    superpixel_histogram,
    superpixel_pool,
    superpixel_unpool,
)

__version__ = "0.1.0"

__all__ = [
    "slic",
    "enforce_connectivity",
    "superpixel_pool",
    "superpixel_unpool",
    "edge_aware_unpool",
    "superpixel_histogram",
    "consistency_weights",
    "SuperpixelConsistencyLoss",
    "Graph",
    "superpixel_adjacency",
    "sparse_propagate",
    "asam_refine",
    "cam_to_mask",
    "has_cuda_kernels",
    "metrics",
    "reference",
    "cuda_version",
]


def cuda_version() -> int:
    """CUDA runtime version spl's kernels were compiled with (e.g. 13000), or 0 for a CPU build."""
    return int(torch.ops.spl._cuda_version())
