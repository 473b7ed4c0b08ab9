"""The WSSS evaluation protocol for CAM refiners, shared by ``benchmarks/eval_asam.py`` and ``spl bench``.

Each method refines a CAM once, with its defaults; the background threshold t is then swept over
its output (IRN's eval_cam, SEAM's ``--curve``): mIoU over the 21 VOC classes at every t of
``spl.metrics.DEFAULT_THRESHOLDS``, the best t, the mIoU at the raw CAM's best t, and the per-class
IoU at the best t. A method whose output depends on t (DenseCRF, which takes the background's score
as input) is run again at every t instead, which is its best case.

Data: a VOC-style folder (``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png``) and a folder of
IRN-format CAMs (``<id>.npy``: ``{"keys": 0-based foreground classes, "high_res": [n, H, W]}``), as
written by ``../shared/tools/real_cams.py`` and ``synth_cams.py``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from ..formats import VOC_CLASSES
from ..metrics import DEFAULT_THRESHOLDS, ThresholdSweep

__all__ = ["Item", "load_item", "read_ids", "Method", "evaluate", "VOC_CLASSES"]


@dataclass
class Item:
    """One image: ``rgb`` uint8 [H, W, 3], ``truth`` int64 [H, W] (255 ignored), ``keys`` int64 [n]
    (0-based foreground classes of the image-level label), ``cam`` float32 [n, H, W]."""

    name: str
    rgb: np.ndarray
    truth: np.ndarray
    keys: np.ndarray
    cam: np.ndarray


def read_ids(path: str) -> List[str]:
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def load_item(voc: str, cams: str, name: str) -> Item:
    """Reads image, ground truth and CAM of ``name``; the CAM is upsampled when smaller than the image."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    with Image.open(os.path.join(voc, "JPEGImages", name + ".jpg")) as im:
        rgb = np.array(im.convert("RGB"))
    with Image.open(os.path.join(voc, "SegmentationClass", name + ".png")) as im:
        truth = np.array(im).astype(np.int64)
    d = np.load(os.path.join(cams, name + ".npy"), allow_pickle=True).item()
    keys = np.asarray(d["keys"], np.int64).reshape(-1)
    cam = np.asarray(d["high_res"] if "high_res" in d else d["cam"], np.float32)
    if cam.ndim != 3 or cam.shape[0] != keys.shape[0]:
        raise ValueError(f"{name}: CAM of shape {list(cam.shape)} for {keys.shape[0]} keys")
    if cam.shape[1:] != truth.shape:
        cam = F.interpolate(torch.from_numpy(cam)[None], size=truth.shape, mode="bilinear", align_corners=False)[
            0
        ].numpy()
    return Item(name, rgb, truth, keys, np.ascontiguousarray(cam))


@dataclass
class Method:
    """A refiner. ``scores(item) -> [n, H, W]`` float scores of the item's classes (swept over t), or,
    for a method that takes the threshold as input, ``labels(item, t) -> [H, W]`` int (0 background,
    k + 1 for the item's channel k) run at every t."""

    name: str
    scores: Optional[Callable[[Item], np.ndarray]] = None
    labels: Optional[Callable[[Item, float], np.ndarray]] = None


@dataclass
class Result:
    method: str
    sweep: ThresholdSweep
    seconds: List[float] = field(default_factory=list)  # per image (one call, or one call per t / len(t))

    def summary(self, raw_best_t: Optional[float] = None) -> dict:
        t, miou = self.sweep.best()
        i = self.sweep.thresholds.index(t)
        iou = self.sweep.iou()[i]
        out = {
            "method": self.method,
            "images": len(self.seconds),
            "best_t": t,
            "miou": 100 * miou,
            "curve": [None if np.isnan(v) else round(100 * float(v), 3) for v in self.sweep.miou()],
            "iou": {c: (None if np.isnan(v) else round(100 * float(v), 3)) for c, v in zip(VOC_CLASSES, iou)},
            "ms_per_image": 1e3 * float(np.median(self.seconds)) if self.seconds else None,
        }
        if raw_best_t is not None:
            out["miou_at_raw_t"] = 100 * self.sweep.at(raw_best_t)
            out["iou_at_raw_t"] = {
                c: (None if np.isnan(v) else round(100 * float(v), 3))
                for c, v in zip(VOC_CLASSES, self.sweep.iou()[self.sweep.thresholds.index(raw_best_t)])
            }
        return out


def evaluate(
    methods: Sequence[Method],
    items: Iterable[Item],
    thresholds=DEFAULT_THRESHOLDS,
    progress: Optional[Callable[[int], None]] = None,
) -> Dict[str, Result]:
    """Runs every method on every item; returns name -> Result (sweep and seconds per image)."""
    results = {m.name: Result(m.name, ThresholdSweep(thresholds)) for m in methods}
    for n, item in enumerate(items):
        classes = item.keys + 1
        for m in methods:
            r = results[m.name]
            if m.scores is not None:
                start = time.perf_counter()
                s = m.scores(item)
                r.seconds.append(time.perf_counter() - start)
                r.sweep.update(np.asarray(s, np.float32), item.truth, classes)
            else:
                lut = np.concatenate([[0], classes])
                valid = item.truth != r.sweep.ignore_index
                g = item.truth[valid]
                nc = r.sweep.num_classes
                spent = 0.0
                for i, t in enumerate(r.sweep.thresholds):
                    start = time.perf_counter()
                    lab = m.labels(item, t)
                    spent += time.perf_counter() - start
                    pred = lut[np.asarray(lab)][valid]
                    r.sweep.matrix[i] += np.bincount(g * nc + pred, minlength=nc * nc).reshape(nc, nc)
                r.seconds.append(spent / len(r.sweep.thresholds))
        if progress is not None:
            progress(n + 1)
    return results
