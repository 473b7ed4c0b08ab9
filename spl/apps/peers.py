"""The CAM refiners that spl's ASAM is measured against (``spl bench`` W3, ``benchmarks/eval_asam.py``).

- ``par_refine``: PAR, the pixel-adaptive refinement of AFA (Ru et al., "Learning Affinity from
  Attention", CVPR 2022), which ToCo (CVPR 2023) and most single-stage WSSS methods use to refine
  their CAMs. Written here in plain PyTorch from the paper's description (no code of theirs):
  affinities to the 8 neighbours at dilations 1, 2, 4, 8, 12, 24 from RGB differences normalised by
  the standard deviation of the neighbours' colours (w1 = 0.3), plus a position term (w2 = 0.01),
  softmax over the neighbours, 10 iterations at half resolution. PAR is linear in the CAM, so a
  constant background channel stays constant: refining the foreground channels and sweeping the
  background threshold afterwards is exactly ToCo's use with its background channel.
- ``densecrf_labels``: DenseCRF (pydensecrf2) of the CAM with the background's score set to the
  threshold t, the way WSSS code bases apply it. It is not linear: its output depends on t, so the
  evaluation runs it again at every threshold (its best case).
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["par_refine", "densecrf_labels", "DENSECRF_SETTINGS", "has_densecrf"]

PAR_DILATIONS = (1, 2, 4, 8, 12, 24)

#: DenseCRF settings compared (both with the Gaussian kernel sxy 3 / compat 3 and 10 iterations):
#: the bilateral kernel of the DeepLab defaults, and the one of IRN/PSA's ``crf_inference``.
DENSECRF_SETTINGS = {"bilateral sxy 50 srgb 5": (50, 5), "IRN/PSA sxy 80 srgb 13": (80, 13)}

_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def _neighbours(x: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, 8 * len(dilations), H, W]: the 8 neighbours at each dilation (edges
    replicated)."""
    H, W = x.shape[-2:]
    out = []
    for d in dilations:
        padded = F.pad(x, [d] * 4, mode="replicate")
        for dy, dx in _OFFSETS:
            out.append(padded[:, :, d + dy * d : d + dy * d + H, d + dx * d : d + dx * d + W])
    return torch.stack(out, 2)


def par_affinity(
    image: torch.Tensor, dilations: Sequence[int] = PAR_DILATIONS, w1: float = 0.3, w2: float = 0.01
) -> torch.Tensor:
    """PAR's affinity of every pixel to its 8 * len(dilations) neighbours: [B, 1, 8 * len(dilations), H, W]."""
    nb = _neighbours(image, dilations)
    diff = (nb - image[:, :, None]).abs()
    std = nb.std(2, keepdim=True)
    colour = (-((diff / (std + 1e-8) / w1) ** 2)).mean(1, keepdim=True)
    dist = torch.tensor(
        [d * (math.sqrt(2.0) if dy and dx else 1.0) for d in dilations for dy, dx in _OFFSETS],
        dtype=image.dtype,
        device=image.device,
    ).view(1, 1, -1, 1, 1)
    position = -((dist / (dist.std(2, keepdim=True) + 1e-8) / w1) ** 2)
    return F.softmax(colour, 2) + w2 * F.softmax(position, 2)


def par_refine(
    image: torch.Tensor,
    cam: torch.Tensor,
    iters: int = 10,
    scale: float = 0.5,
    dilations: Sequence[int] = PAR_DILATIONS,
    w1: float = 0.3,
    w2: float = 0.01,
) -> torch.Tensor:
    """PAR (AFA, CVPR 2022) on foreground CAMs.

    Args:
        image (Tensor[B, 3, H, W]): RGB, uint8 or float (the affinity is invariant to the scale).
        cam (Tensor[B, C, h, w]): foreground scores.
        iters, scale, dilations, w1, w2: PAR's settings (AFA/ToCo's defaults).

    Returns:
        Tensor[B, C, H, W] float32, the refined scores at the image's size.
    """
    B, _, H, W = image.shape
    h, w = max(1, int(H * scale)), max(1, int(W * scale))
    small = F.interpolate(image.float(), size=(h, w), mode="bilinear", align_corners=False)
    scores = F.interpolate(cam.float(), size=(h, w), mode="bilinear", align_corners=True)
    aff = par_affinity(small, dilations, w1, w2)
    for _ in range(iters):
        scores = (_neighbours(scores, dilations) * aff).sum(2)
    return F.interpolate(scores, size=(H, W), mode="bilinear", align_corners=False)


def has_densecrf() -> bool:
    try:
        import pydensecrf.densecrf  # noqa: F401

        return True
    except ImportError:
        return False


def densecrf_labels(
    rgb: np.ndarray, cam: np.ndarray, t: float, bilateral: Tuple[float, float] = (50, 5), iters: int = 10
) -> np.ndarray:
    """DenseCRF (pydensecrf2) of foreground scores with the background's score t.

    Args:
        rgb (uint8 [H, W, 3]): the image.
        cam (float [C, H, W]): scores of the image's C candidate classes.
        t (float): the background's score before normalising.
        bilateral ((sxy, srgb)): the bilateral kernel (compat 10); the Gaussian kernel is sxy 3,
            compat 3.

    Returns:
        int64 [H, W]: 0 for background, k + 1 for channel k.
    """
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    H, W = rgb.shape[:2]
    probs = np.concatenate([np.full((1, H, W), t, np.float32), np.asarray(cam, np.float32)])
    probs = probs / probs.sum(0, keepdims=True)
    d = dcrf.DenseCRF2D(W, H, probs.shape[0])
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=bilateral[0], srgb=bilateral[1], rgbim=np.ascontiguousarray(rgb), compat=10)
    return np.array(d.inference(iters)).reshape(-1, H, W).argmax(0).astype(np.int64)
