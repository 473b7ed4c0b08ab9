"""spl.consistency_weights: the local superpixel transformation of a pseudo-label and its consistency
weights (op ``spl::consistency_weights``; kernels csrc/ops/{cpu,cuda}/consistency_weights_kernel.*, the
rule csrc/ops/consistency_weights.h)."""

from __future__ import annotations

import torch

from ._common import as_float, count
from .superpixel_histogram import check_target


def consistency_weights(
    target: torch.Tensor,
    labels: torch.Tensor,
    num_superpixels: int,
    num_classes: int,
    tau: float = 0.7,
    gamma: float = 1.0,
    ignore_index: int = 255,
):
    """Local superpixel transformation of a pseudo-label and its consistency weights.

    In each superpixel k with class histogram h_k and n_k labelled pixels: if the majority class
    m_k = argmax h_k (ties: the smaller class) has h_k(m_k) >= tau * n_k, every labelled pixel
    takes class m_k and weighs 1; otherwise the label stays and weighs h_k(Y_p) / n_k. Pixels with
    ignore_index, or with superpixel -1, keep ignore_index and weigh 0. One fused kernel: a pass
    to count, a pass to write.

    Args:
        target (Tensor[B, H, W] of int64): pseudo-labels in [0, num_classes), or ignore_index.
        labels (Tensor[B, H, W] of int64): superpixels in [0, K); -1 leaves a pixel out.
        num_superpixels (int): K. num_classes (int).
        tau (float): majority share in [0, 1] above which a superpixel is relabelled. Default 0.7.
        gamma (float): the weights are returned to this power (>= 0). Default 1.
        ignore_index (int): default 255.

    Returns:
        (weights Tensor[B, H, W] of float32, transformed target Tensor[B, H, W] of int64).
    """
    fn = "consistency_weights"
    check_target(fn, target, labels, num_classes, ignore_index)
    K = count(fn, "num_superpixels", num_superpixels)
    # The op checks tau in [0, 1] and gamma finite >= 0 (csrc/ops/cpu/consistency_weights_kernel.cpp).
    tau, gamma = as_float(fn, "tau", tau), as_float(fn, "gamma", gamma)
    return torch.ops.spl.consistency_weights(target, labels, K, int(num_classes), tau, gamma, int(ignore_index))


@torch.library.register_fake("spl::consistency_weights")
def _consistency_weights_fake(target, labels, num_superpixels, num_classes, tau, gamma, ignore_index):
    check_target("consistency_weights", target, labels, num_classes, ignore_index)
    return target.new_empty(target.shape, dtype=torch.float32), torch.empty_like(target)
