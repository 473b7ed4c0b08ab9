"""spl.enforce_connectivity: relabel a label map into 4-connected regions, merging small ones (op
``spl::enforce_connectivity``; kernels csrc/ops/{cpu,cuda}/enforce_connectivity_kernel.*, the merge rule
csrc/ops/enforce_connectivity.h)."""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

from ._common import check_device, check_labels

ArrayLike = Union[torch.Tensor, np.ndarray]


def enforce_connectivity(labels: ArrayLike, min_size: int = 0, *, return_counts: bool = False):
    """Relabels a label map into 4-connected regions, merging the small ones.

    Every 4-connected region of equal labels becomes one label; a region smaller than
    ``min_size`` pixels is merged into the neighbour with which it shares the longest border
    (ties: the smaller label), in rounds until no small region has a neighbour. ``spl.slic`` uses
    this with ``min_size = min_size_factor * H*W / n_segments``.

    Args:
        labels (Tensor[B, H, W] or Tensor[H, W] of int64, or ndarray[H, W]): any integer labels;
            -1 marks pixels outside every region.
        min_size (int): regions smaller than this are merged. 0 or 1 only splits labels into
            connected regions.
        return_counts (bool): also return the number of regions of each image.

    Returns:
        int64 labels ``0..n-1`` of the same shape, numbered in raster order of each region's first
        pixel (-1 stays -1); with ``return_counts`` also the counts.

    Raises:
        TypeError: labels are not integers.
        ValueError: wrong rank, labels below -1, min_size < 0.
    """
    numpy_in = isinstance(labels, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(labels)) if numpy_in else labels
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"enforce_connectivity: labels must be a tensor or array, got {type(labels).__name__}")
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"enforce_connectivity: labels must be an integer tensor, got {t.dtype}")
    batched = t.dim() == 3
    if t.dim() == 2:
        t = t.unsqueeze(0)
    elif not batched:
        raise ValueError(f"enforce_connectivity: labels must have shape [B, H, W] or [H, W], got {list(t.shape)}")
    check_device(t, "enforce_connectivity")
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 0:
        raise ValueError(f"enforce_connectivity: min_size must be an int >= 0, got {min_size!r}")
    # Beyond any image's size a larger min_size changes nothing ("merge every region that has a
    # neighbour"); clamped, it fits the op's int64.
    min_size = min(int(min_size), t.shape[-2] * t.shape[-1] + 1)
    out, counts = torch.ops.spl.enforce_connectivity(t.long(), min_size)
    if not batched:
        out, counts = out[0], counts[0]
    if numpy_in:
        out, counts = out.numpy(), (counts.numpy() if batched else int(counts))
    return (out, counts) if return_counts else out


@torch.library.register_fake("spl::enforce_connectivity")
def _enforce_connectivity_fake(labels, min_size):
    check_labels("enforce_connectivity", labels)
    return torch.empty_like(labels), labels.new_empty((labels.shape[0],))
