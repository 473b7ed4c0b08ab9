"""spl.edge_aware_unpool: superpixel values back to the pixels with colour-guided soft boundaries (op
``spl::edge_aware_unpool``; kernels csrc/ops/{cpu,cuda}/edge_aware_unpool_kernel.*, the per-pixel rule
csrc/ops/edge_aware_unpool.h). Not differentiable."""

from __future__ import annotations

import math
from typing import Optional

import torch

from ._common import check_features, check_labels


def edge_aware_unpool(
    features: torch.Tensor,
    labels: torch.Tensor,
    guide: torch.Tensor,
    sigma: float,
    radius: int = 1,
    guide_means: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Spreads per-superpixel values back to the pixels with soft boundaries that follow the image.

    Inside a superpixel this is ``superpixel_unpool``. A pixel whose (2 radius + 1)^2 window meets
    other superpixels takes the mean of the values of the distinct superpixels there (its own among
    them), weighted by how close its guide value (e.g. its colour) is to each superpixel's mean guide
    value: ``w_k = exp(-(d_k - min_k d_k) / (2 sigma^2))`` with ``d_k = |guide_p - guide_means_k|^2``.

    Args:
        features (Tensor[B, C, K]): float16, bfloat16, float32 or float64 values per superpixel.
        labels (Tensor[B, H, W] of int64): in [0, K); -1 gives 0 and is never a candidate.
        guide (Tensor[B, D, H, W]): per-pixel guidance (e.g. RGB in [0, 1]); used in float32.
        sigma (float): > 0, the scale of guide distances.
        radius (int): 0..3, the window's half size (0: plain unpooling).
        guide_means (Tensor[B, D, K], optional): each superpixel's mean guide value; default
            ``superpixel_pool(guide, labels, K, "mean")``.

    Returns:
        Tensor[B, C, H, W], the dtype of features. Not differentiable (use superpixel_unpool for
        gradients). Each pixel is computed alone: deterministic, independent of threads and batch.

    Raises:
        TypeError / ValueError naming the argument: dtypes, shapes or devices that do not match,
        labels outside [-1, K), sigma or radius out of range, NaN or infinite guide values.
    """
    fn = "edge_aware_unpool"
    check_features(fn, features, 3, "features")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 3:
        raise ValueError(f"{fn}: labels must be a tensor of shape [B, H, W]")
    B, C, K = features.shape
    check_labels(fn, labels, (B, labels.shape[1], labels.shape[2]), features.device)
    check_features(fn, guide, 4, "guide")
    if guide.shape[0] != B or tuple(guide.shape[2:]) != tuple(labels.shape[1:]):
        raise ValueError(
            f"{fn}: guide must have shape [B, D, H, W] = [{B}, D, {labels.shape[1]}, {labels.shape[2]}], "
            f"got {list(guide.shape)}"
        )
    if guide.device != features.device:
        raise ValueError(f"{fn}: guide is on {guide.device} but features are on {features.device}")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"{fn}: sigma must be a finite number > 0, got {sigma!r}")
    if isinstance(radius, bool) or not isinstance(radius, int) or not 0 <= radius <= 3:
        raise ValueError(f"{fn}: radius must be an int in [0, 3], got {radius!r}")
    if any(t.requires_grad for t in (features, guide)) and torch.is_grad_enabled():
        raise ValueError(f"{fn}: is not differentiable; use superpixel_unpool for gradients (or torch.no_grad())")
    guide = guide.float()
    if guide.numel() and not torch.compiler.is_compiling() and not bool(torch.isfinite(guide).all()):
        raise ValueError(f"{fn}: guide holds NaN or infinite values")
    if guide_means is None:
        guide_means = torch.ops.spl.superpixel_pool(guide, labels, K, "mean")[0]
    else:
        check_features(fn, guide_means, 3, "guide_means")
        if tuple(guide_means.shape) != (B, guide.shape[1], K) or guide_means.device != features.device:
            raise ValueError(
                f"{fn}: guide_means must be a tensor of shape [B, D, K] = [{B}, {guide.shape[1]}, {K}] "
                f"on {features.device}, got {list(guide_means.shape)} on {guide_means.device}"
            )
        guide_means = guide_means.float()
    return torch.ops.spl.edge_aware_unpool(features, labels, guide, guide_means, float(sigma), radius)


@torch.library.register_fake("spl::edge_aware_unpool")
def _edge_aware_unpool_fake(features, labels, guide, guide_means, sigma, radius):
    # The op's own arguments (csrc/ops/edge_aware_unpool.h): guide and guide_means already float32.
    fn = "edge_aware_unpool"
    check_features(fn, features, 3, "features")
    B, _, K = features.shape
    check_labels(fn, labels)
    check_labels(fn, labels, (B, labels.shape[1], labels.shape[2]), features.device)
    D = guide.shape[1] if guide.dim() == 4 else -1
    for name, t, shape in (
        ("guide", guide, (B, D, labels.shape[1], labels.shape[2])),
        ("guide_means", guide_means, (B, D, K)),
    ):
        if t.dtype != torch.float32:
            raise TypeError(f"{fn}: {name} must be float32, got {t.dtype}")
        if tuple(t.shape) != shape or t.device != features.device:
            raise ValueError(
                f"{fn}: {name} must have shape {list(shape)} on {features.device}, got {list(t.shape)} on {t.device}"
            )
    return features.new_empty((B, features.shape[1], labels.shape[1], labels.shape[2]))
