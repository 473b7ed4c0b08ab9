"""spl.superpixel_histogram: counts of pseudo-label classes inside each superpixel (op
``spl::superpixel_histogram``; kernels csrc/ops/{cpu,cuda}/superpixel_histogram_kernel.*, arguments
csrc/ops/superpixel_histogram.h)."""

from __future__ import annotations

import torch

from ._common import check_int_arg, check_labels, count


def check_target(fn: str, target, labels, num_classes, ignore_index):
    """Dtypes, shapes and devices of a pseudo-label and its superpixels (the wrappers and fake
    kernels of superpixel_histogram and consistency_weights); the kernels check the values."""
    check_labels(fn, target, name="target")  # int64 class indices [B, H, W]
    check_labels(fn, labels, tuple(target.shape), target.device)
    count(fn, "num_classes", num_classes, 1)
    check_int_arg(fn, "ignore_index", ignore_index)


def superpixel_histogram(
    target: torch.Tensor, labels: torch.Tensor, num_superpixels: int, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Counts of pseudo-label classes inside each superpixel.

    Args:
        target (Tensor[B, H, W] of int64): classes in [0, num_classes), or ignore_index.
        labels (Tensor[B, H, W] of int64): superpixels in [0, K); -1 leaves a pixel out.
        num_superpixels (int): K. num_classes (int). ignore_index (int): default 255.

    Returns:
        Tensor[B, K, num_classes] of int64.
    """
    fn = "superpixel_histogram"
    check_target(fn, target, labels, num_classes, ignore_index)
    K = count(fn, "num_superpixels", num_superpixels)
    return torch.ops.spl.superpixel_histogram(target, labels, K, int(num_classes), int(ignore_index))


@torch.library.register_fake("spl::superpixel_histogram")
def _superpixel_histogram_fake(target, labels, num_superpixels, num_classes, ignore_index):
    check_target("superpixel_histogram", target, labels, num_classes, ignore_index)
    return target.new_empty((target.shape[0], num_superpixels, num_classes))
