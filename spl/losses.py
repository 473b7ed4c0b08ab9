"""The superpixel local-consistency weighted cross-entropy (the rule: spl.ops.consistency_weights)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks, ops

__all__ = ["SuperpixelConsistencyLoss"]


class SuperpixelConsistencyLoss(nn.Module):
    """Cross-entropy on noisy pseudo-labels, weighted by their agreement within superpixels.

    ``L = sum_p w_p^gamma CE(logits_p, Yhat_p) / max(sum_p w_p^gamma, eps)``, where ``Yhat`` is the
    pseudo-label after the local superpixel transformation (superpixels whose majority class holds
    a share >= tau take that class everywhere) and ``w_p`` the share of pixel p's class in its
    superpixel, computed on ``Yhat`` (see ``spl.consistency_weights``). The weights come from one
    fused kernel; the cross-entropy and its gradient are PyTorch's.

    Args:
        num_classes (int): number of classes (logit channels), background included.
        tau (float): majority share in [0, 1] that triggers the transformation. Default 0.7.
        gamma (float): power of the weights (>= 0). Default 1.
        ignore_index (int): pseudo-label value to ignore. Default 255.
        eps (float): lower bound of the normaliser. Default 1e-8.

    Call: ``loss(logits, target, superpixels, num_superpixels=None)``
        logits (Tensor[B, num_classes, h, w]): any floating dtype (float16/bfloat16 under AMP);
            resized bilinearly (align_corners=False) to the target's size when smaller.
        target (Tensor[B, H, W] of int64): pseudo-labels.
        superpixels (Tensor[B, H, W] of int64): superpixel labels in [0, K), -1 to leave out.
        num_superpixels (int, optional): K. Default: ``superpixels.max() + 1``, which costs a
            device synchronisation (pass it, e.g. from ``spl.slic(..., return_counts=True)``,
            inside compiled code).

    Returns: a float32 scalar, differentiable with respect to the logits.
    """

    def __init__(
        self, num_classes: int, tau: float = 0.7, gamma: float = 1.0, ignore_index: int = 255, eps: float = 1e-8
    ):
        super().__init__()
        fn = "SuperpixelConsistencyLoss"
        num_classes = _checks.integer(fn, "num_classes", num_classes, 1)
        tau, gamma = _checks.number(fn, "tau", tau), _checks.number(fn, "gamma", gamma)
        eps = _checks.number(fn, "eps", eps, 0.0, low_open=True)
        ignore_index = _checks.integer(fn, "ignore_index", ignore_index)
        # tau's and gamma's ranges are the op's (consistency_weights): asked now, on one pixel, so that
        # a bad value fails here and not at the first forward.
        one = torch.zeros(1, 1, 1, dtype=torch.int64)
        try:
            torch.ops.spl.consistency_weights(one, one, 1, num_classes, tau, gamma, ignore_index)
        except ValueError as e:
            raise ValueError(f"{fn}: {str(e).split(': ', 1)[-1]}") from None
        self.num_classes, self.tau, self.gamma = num_classes, float(tau), float(gamma)
        self.ignore_index, self.eps = int(ignore_index), float(eps)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, tau={self.tau}, gamma={self.gamma}, ignore_index={self.ignore_index}"

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        superpixels: torch.Tensor,
        num_superpixels: Optional[int] = None,
    ) -> torch.Tensor:
        if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
            raise TypeError("SuperpixelConsistencyLoss: logits must be a floating point tensor")
        if logits.dim() != 4 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"SuperpixelConsistencyLoss: logits must have shape [B, {self.num_classes}, h, w], "
                f"got {list(logits.shape)}"
            )
        if not isinstance(target, torch.Tensor) or target.dim() != 3 or target.shape[0] != logits.shape[0]:
            raise ValueError(
                f"SuperpixelConsistencyLoss: target must have shape [B, H, W] with B = "
                f"{logits.shape[0]}, got {list(getattr(target, 'shape', []))}"
            )
        if target.device != logits.device:
            raise ValueError(f"SuperpixelConsistencyLoss: target is on {target.device} but logits on {logits.device}")
        if num_superpixels is None:
            if not isinstance(superpixels, torch.Tensor) or superpixels.dtype != torch.int64:
                raise TypeError("SuperpixelConsistencyLoss: superpixels must be an int64 tensor [B, H, W]")
            num_superpixels = int(superpixels.max()) + 1 if superpixels.numel() else 0
            pixels = superpixels[0].numel()
            if num_superpixels > pixels:  # a stray label would make K (and the histograms) huge
                raise ValueError(
                    f"SuperpixelConsistencyLoss: superpixels hold a label ({num_superpixels - 1}) that "
                    f"is not below the pixels of an image ({pixels}); renumber them "
                    "(spl.enforce_connectivity) or pass num_superpixels"
                )
        if tuple(logits.shape[-2:]) != tuple(target.shape[-2:]):
            logits = F.interpolate(logits, size=tuple(target.shape[-2:]), mode="bilinear", align_corners=False)
        with torch.no_grad():
            weights, transformed = ops.consistency_weights(
                target, superpixels, num_superpixels, self.num_classes, self.tau, self.gamma, self.ignore_index
            )
        ce = F.cross_entropy(logits.float(), transformed, ignore_index=self.ignore_index, reduction="none")
        return (weights * ce).sum() / weights.sum().clamp_min(self.eps)
