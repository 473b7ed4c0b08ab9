"""The inputs of the workloads: VOC samples or synthetic scenes, photo batches, CAMs, refine data sets."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# The source checkout (benchmarks/, and shared/ beside it), three levels above this file.
SOURCE_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

# ----------------------------------------------------------------------------------------------- data


def _shared_data(env: str, name: str) -> Optional[str]:
    """$env, else the project's ``shared/data/<name>`` beside a source checkout (or the cwd), if it holds
    JPEG images."""
    for d in (
        os.environ.get(env),
        os.path.join(SOURCE_ROOT, "..", "shared", "data", name),
        os.path.join("shared", "data", name),
        os.path.join("..", "shared", "data", name),
    ):
        if d and glob.glob(os.path.join(d, "JPEGImages", "*.jpg")):
            return os.path.abspath(d)
    return None


def default_voc() -> Optional[str]:
    """$SPL_VOC, else the ``voc-dev`` sample (11 VOC train images)."""
    return _shared_data("SPL_VOC", "voc-dev")


def default_voc_val() -> Optional[str]:
    """$SPL_VOC_VAL, else ``voc-val-dev`` (711 VOC val images)."""
    return _shared_data("SPL_VOC_VAL", "voc-val-dev")


def report_split() -> Optional[str]:
    """benchmarks/splits/voc-val-dev-report.txt of a source checkout (the images no default was tuned on)."""
    path = os.path.join(SOURCE_ROOT, "benchmarks", "splits", "voc-val-dev-report.txt")
    return os.path.abspath(path) if os.path.exists(path) else None


def default_synth(voc: Optional[str]) -> Optional[str]:
    """$SPL_SYNTH_CAMS, else ``shared/tools/synth_cams.py`` beside the VOC sample."""
    for f in (
        os.environ.get("SPL_SYNTH_CAMS"),
        voc and os.path.join(voc, "..", "..", "tools", "synth_cams.py"),
        voc and os.path.join(voc, "..", "synth_cams.py"),
    ):
        if f and os.path.isfile(f):
            return os.path.abspath(f)
    return None


def _voc_files(voc: Optional[str]) -> List[str]:
    return sorted(glob.glob(os.path.join(voc, "JPEGImages", "*.jpg"))) if voc else []


def photo_pool(voc: Optional[str]) -> List[np.ndarray]:
    """Natural photos (H, W, 3) uint8: the VOC sample, else scikit-image's samples."""
    from PIL import Image

    files = _voc_files(voc)
    if files:
        return [np.array(Image.open(f).convert("RGB")) for f in files]
    from skimage import data

    return [
        np.ascontiguousarray(im[..., :3])
        for im in (data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry())
    ]


def photo_batches(pool: Sequence[np.ndarray], batch: int, size, count: int = 3) -> List[torch.Tensor]:
    """``count`` batches (B, 3, H, W) uint8 of photos from the pool, resized to ``size`` = (H, W)."""
    from PIL import Image

    resized = [np.array(Image.fromarray(p).resize((size[1], size[0]), Image.BILINEAR)) for p in pool]
    rng = np.random.default_rng(0)
    return [
        torch.from_numpy(np.stack([resized[i] for i in rng.integers(0, len(resized), batch)]))
        .permute(0, 3, 1, 2)
        .contiguous()
        for _ in range(count)
    ]


def segmentation_set(voc: Optional[str], count: int):
    """(description, [(rgb (H, W, 3) uint8, truth (H, W) int64, 255 = ignore)]): VOC images with their
    ground truth, else scenes of known regions made from scikit-image's samples (``spl.apps.scenes.scene``)."""
    from PIL import Image

    files = _voc_files(voc)[:count]
    if files:
        pairs = [
            (
                np.array(Image.open(f).convert("RGB")),
                np.array(Image.open(f.replace("JPEGImages", "SegmentationClass").replace(".jpg", ".png"))).astype(
                    np.int64
                ),
            )
            for f in files
        ]
        return f"{len(pairs)} PASCAL VOC 2012 images ({voc})", pairs
    from ..scenes import scene

    return (
        f"{count} scenes of known regions from scikit-image samples (no VOC data found)",
        [scene(seed) for seed in range(count)],
    )


def cam_set(voc: Optional[str], synth: Optional[str], count: int, tmp: str):
    """(description, [(name, rgb, truth, cam (20, H, W) float32, present (20,) bool)]): VOC images with
    CAMs simulated by ``synth_cams.py``, else scenes with coarse CAMs of their known regions."""
    if _voc_files(voc) and synth:
        cams = os.path.join(tmp, "synth-cams")
        subprocess.run([sys.executable, synth, voc, cams], check=True, stdout=subprocess.DEVNULL)
        items = voc_cam_items(voc, cams, count)
        return f"{len(items)} PASCAL VOC 2012 images, CAMs simulated by {os.path.basename(synth)}", items
    from ..scenes import coarse_cams, scene

    items = []
    for seed in range(count):
        rgb, truth = scene(seed)
        cam = np.zeros((20,) + truth.shape, np.float32)
        cam[:5] = coarse_cams(truth, 5, seed)
        present = np.zeros(20, bool)
        present[np.unique(truth[truth > 0]) - 1] = True
        items.append((f"scene{seed}", rgb, truth, cam, present))
    return f"{count} scenes of known regions with coarse CAMs (no VOC data or CAM simulator found)", items


def voc_cam_items(voc: str, cams: str, count: Optional[int] = None):
    """[(name, rgb, truth, cam (20, H, W) float32, present (20,) bool)] of the first ``count`` VOC images,
    their ground truth and their IRN-format CAMs (``keys`` + ``high_res``) from the folder ``cams``."""
    from PIL import Image

    items = []
    for f in _voc_files(voc)[:count]:
        name = os.path.splitext(os.path.basename(f))[0]
        gt = np.array(Image.open(os.path.join(voc, "SegmentationClass", name + ".png"))).astype(np.int64)
        d = np.load(os.path.join(cams, name + ".npy"), allow_pickle=True).item()
        cam = np.zeros((20,) + gt.shape, np.float32)
        cam[d["keys"]] = d["high_res"]
        present = np.zeros(20, bool)
        present[d["keys"]] = True
        items.append((name, np.array(Image.open(f).convert("RGB")), gt, cam, present))
    return items


def asam_inputs(pool, batch: int, size, n_classes: int = 20, seed: int = 0):
    """(images uint8 (B, 3, H, W), CAMs float32 (B, 20, H, W), class_mask (B, 20)): photos and smooth
    random CAMs of 3 classes per image (upsampled from 1/16 resolution, as CAMs are)."""
    g = torch.Generator().manual_seed(seed)
    images = photo_batches(pool, batch, size, 1)[0]
    coarse = torch.rand(batch, n_classes, size[0] // 16 + 1, size[1] // 16 + 1, generator=g)
    mask = torch.zeros(batch, n_classes, dtype=torch.bool)
    for b in range(batch):
        mask[b, torch.randperm(n_classes, generator=g)[:3]] = True
    cams = F.interpolate(coarse * mask[:, :, None, None], size=size, mode="bilinear", align_corners=False)
    return images, cams.contiguous(), mask


def write_refine_dataset(items, tmp: str, copies: int) -> str:
    """images/*.jpg, cams/*.npy (IRN format) and gt/*.png of the items, each ``copies`` times."""
    from PIL import Image

    root = os.path.join(tmp, "data")
    for sub in ("images", "cams", "gt"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for name, rgb, truth, cam, present in items:
        keys = np.nonzero(present)[0]
        for c in range(copies):
            stem = f"{name}_{c}"
            Image.fromarray(rgb).save(os.path.join(root, "images", stem + ".jpg"), quality=95)
            np.save(os.path.join(root, "cams", stem + ".npy"), {"keys": keys, "high_res": cam[keys]})
            Image.fromarray(truth.astype(np.uint8)).save(os.path.join(root, "gt", stem + ".png"))
    return root
