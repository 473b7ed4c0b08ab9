"""spl.superpixel_unpool: per-superpixel features back to the pixels (op ``spl::superpixel_unpool``;
kernels csrc/ops/{cpu,cuda}/superpixel_unpool_kernel.*, arguments csrc/ops/superpixel_unpool.h). Its
gradient is the scatter-sum, superpixel_pool "sum"."""

from __future__ import annotations

import torch

from ._common import check_features, check_labels


def superpixel_unpool(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Spreads per-superpixel features back to the pixels: ``out[b, :, p] = features[b, :, labels[b, p]]``.

    Args:
        features (Tensor[B, C, K]): float16, bfloat16, float32 or float64.
        labels (Tensor[B, H, W] of int64): in [0, K); -1 gives 0.

    Returns:
        Tensor[B, C, H, W]. The gradient to features is the scatter-sum (superpixel_pool "sum").
    """
    _check_args(features, labels)
    return torch.ops.spl.superpixel_unpool(features, labels)


def _check_args(features, labels) -> None:
    """Dtypes, shapes and devices (the wrapper and the fake kernel); the kernels check the labels' values."""
    fn = "superpixel_unpool"
    check_features(fn, features, 3, "features")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 3:
        raise ValueError(f"{fn}: labels must be a tensor of shape [B, H, W]")
    check_labels(fn, labels, (features.shape[0], labels.shape[1], labels.shape[2]), features.device)


def _unpool_setup_context(ctx, inputs, output):
    features, labels = inputs
    ctx.num_superpixels = features.shape[2]
    ctx.save_for_backward(labels)


def _unpool_backward(ctx, grad):
    (labels,) = ctx.saved_tensors
    return torch.ops.spl.superpixel_pool(grad, labels, ctx.num_superpixels, "sum")[0], None


torch.library.register_autograd("spl::superpixel_unpool", _unpool_backward, setup_context=_unpool_setup_context)


@torch.library.register_fake("spl::superpixel_unpool")
def _superpixel_unpool_fake(features, labels):
    _check_args(features, labels)
    return features.new_empty((features.shape[0], features.shape[1], labels.shape[1], labels.shape[2]))
