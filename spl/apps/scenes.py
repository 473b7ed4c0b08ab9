"""Synthetic scenes with a known segmentation, for spl demo and spl bench (no data set needed): regions
filled with crops of scikit-image's sample photos, and CAM-like maps of their known shapes."""

from __future__ import annotations

import numpy as np
import torch

# scikit-image's sample photos (shipped with it: nothing is downloaded) that scenes are cut from.
SAMPLE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina", "hubble_deep_field")


def sample_photos(count: int = len(SAMPLE_PHOTOS)) -> list:
    """The first count of SAMPLE_PHOTOS, as uint8 arrays [H, W, 3] (or [H, W, 4])."""
    from skimage import data

    return [getattr(data, name)() for name in SAMPLE_PHOTOS[:count]]


def scene(seed: int, size: int = 288, regions: int = 6):
    """(uint8 [size, size, 3], int64 truth [size, size] in 0..regions-1): smooth random regions, each
    filled with a crop of a different scikit-image sample photo."""
    from skimage import filters

    rng = np.random.default_rng(seed)
    sources = [s for s in sample_photos() if min(s.shape[:2]) >= size]
    fields = np.stack([filters.gaussian(rng.standard_normal((size, size)), sigma=size / 8) for _ in range(regions)])
    truth = fields.argmax(0)
    image = np.zeros((size, size, 3), np.uint8)
    for r in range(regions):
        src = sources[(seed + r) % len(sources)]
        y = rng.integers(0, src.shape[0] - size + 1)
        x = rng.integers(0, src.shape[1] - size + 1)
        image[truth == r] = src[y : y + size, x : x + size, :3][truth == r]
    return image, truth.astype(np.int64)


def coarse_cams(truth: np.ndarray, num_classes: int, seed: int, stride: int = 16) -> np.ndarray:
    """CAM-like scores [num_classes, H, W] for the foreground regions 1.. of truth: pooled to 1/stride,
    multiplied by a smooth random field (parts stay weak, as in real CAMs), blurred, upsampled."""
    rng = np.random.default_rng(seed)
    H, W = truth.shape
    t = torch.from_numpy(truth)
    onehot = torch.nn.functional.one_hot(t, num_classes + 1).permute(2, 0, 1).float()[None, 1:]
    small = torch.nn.functional.avg_pool2d(onehot, stride, ceil_mode=True)
    field = torch.from_numpy(rng.uniform(0.2, 1.0, small.shape).astype(np.float32))
    small = torch.nn.functional.avg_pool2d(small * field, 3, 1, 1, count_include_pad=False)
    cams = torch.nn.functional.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)[0]
    return (cams / cams.flatten(1).amax(1).clamp_min(1e-6)[:, None, None]).numpy()
