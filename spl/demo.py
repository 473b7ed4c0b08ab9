"""``spl demo``: SLIC on the sample images that ship with scikit-image; writes overlay PNGs.

Needs no data set and no GPU (uses one when spl has CUDA kernels and a GPU is present).
"""
from __future__ import annotations

import os
import time
from typing import Optional

import numpy as np
import torch

from . import ops


def _timed(fn, repeats: int = 3, sync: bool = False) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def run_demo(out_dir: str = "spl-out/demo", device: Optional[str] = None, n_segments: int = 400) -> int:
    from PIL import Image
    from skimage import data
    from skimage.segmentation import mark_boundaries
    from skimage.segmentation import slic as skimage_slic

    if device is None:
        device = "cuda" if torch.cuda.is_available() and ops.has_cuda_kernels() else "cpu"
    os.makedirs(out_dir, exist_ok=True)
    samples = {"astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea()}
    print(f"spl demo: SLIC with n_segments={n_segments} on scikit-image sample images, device {device}")
    print(f"{'image':10s} {'size':>9s} {'segments':>8s} {'spl ms':>8s} {'skimage ms':>10s}")
    for name, rgb in samples.items():
        rgb = np.ascontiguousarray(rgb[..., :3])
        tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device)
        labels, counts = ops.slic(tensor, n_segments, return_counts=True)
        spl_ms = 1e3 * _timed(lambda: ops.slic(tensor, n_segments), sync=device == "cuda")
        sk_ms = 1e3 * _timed(lambda: skimage_slic(rgb, n_segments=n_segments, compactness=10, start_label=0), 1)
        overlay = mark_boundaries(rgb, labels[0].cpu().numpy(), color=(1, 1, 0))
        path = os.path.join(out_dir, f"{name}_slic.png")
        Image.fromarray((overlay * 255).round().astype(np.uint8)).save(path)
        print(f"{name:10s} {rgb.shape[1]:4d}x{rgb.shape[0]:<4d} {int(counts[0]):8d} {spl_ms:8.1f} {sk_ms:10.1f}")
    print(f"wrote overlays to {os.path.abspath(out_dir)}")
    return 0
