"""Typed Python wrappers over ``torch.ops.spl.*``: the only package that calls them.

One module per op, named like its C++ files (``spl/ops/slic.py`` - ``csrc/ops/slic.{h,cpp}``,
``csrc/ops/cpu/slic_kernel.cpp``, ``csrc/ops/cuda/slic_kernel.cu``), each holding the same three
things in the same order: the public function (it validates its arguments - ``ValueError`` /
``TypeError`` naming the argument - accepts the layouts users have, batched or single tensors and
NumPy arrays in scikit-image's layout, and calls the op), the autograd formula where the op is
differentiable, and the fake kernel, which checks dtypes and shapes like the C++ op and gives the
output shapes, so that ``torch.compile(fullgraph=True)`` traces the op. ``_common`` holds the checks
several ops share.
"""

from . import cam_unary  # noqa: F401  (registers the private op's autograd and fake kernel)
from ._common import has_cuda_kernels
from .consistency_weights import consistency_weights
from .edge_aware_unpool import edge_aware_unpool
from .enforce_connectivity import enforce_connectivity
from .slic import slic
from .sparse_propagate import sparse_propagate
from .superpixel_adjacency import Graph, superpixel_adjacency
from .superpixel_histogram import superpixel_histogram
from .superpixel_pool import superpixel_pool
from .superpixel_unpool import superpixel_unpool

__all__ = [
    "slic",
    "enforce_connectivity",
    "superpixel_pool",
    "superpixel_unpool",
    "edge_aware_unpool",
    "superpixel_histogram",
    "consistency_weights",
    "Graph",
    "superpixel_adjacency",
    "sparse_propagate",
    "has_cuda_kernels",
]
