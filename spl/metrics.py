"""Quality metrics: superpixels against a ground-truth segmentation, and semantic segmentation
(confusion matrix, per-class IoU, mIoU; ``ConfusionMatrix`` accumulates over a data set).

All functions take label maps as tensors or NumPy arrays, ``[H, W]`` (one image: a float is
returned) or ``[B, H, W]`` (a float64 tensor of one value per image is returned). Labels are any
integers; pixels whose ground truth equals ``ignore_index`` (if given) are left out.

- boundary recall (BR): the fraction of ground-truth boundary pixels within ``tolerance`` pixels
  (Chebyshev distance) of a superpixel boundary pixel. Higher is better.
- undersegmentation error (UE, Neubert & Protzel 2012): ``(1/N) sum_G sum_{S meets G}
  min(|S & G|, |S - G|)``: how much superpixels leak across ground-truth regions. Lower is better.
- achievable segmentation accuracy (ASA): ``(1/N) sum_S max_G |S & G|``, the accuracy of the best
  labelling that is constant on each superpixel. Higher is better.

References: P. Neubert and P. Protzel, "Superpixel Benchmark and Comparison", Forum Bildverarbeitung
2012; D. Stutz et al., "Superpixels: An Evaluation of the State-of-the-Art", CVIU 2018.
"""

from __future__ import annotations

from typing import Dict, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "boundary_map",
    "boundary_recall",
    "undersegmentation_error",
    "achievable_segmentation_accuracy",
    "number_of_segments",
    "superpixel_scores",
    "ConfusionMatrix",
    "confusion_matrix",
    "ThresholdSweep",
    "DEFAULT_THRESHOLDS",
]

Labels = Union[torch.Tensor, np.ndarray]


def _as_batch(labels: Labels, name: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(labels)) if isinstance(labels, np.ndarray) else labels
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or array, got {type(labels).__name__}")
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name} must hold integer labels, got {t.dtype}")
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3:
        raise ValueError(f"{name} must have shape [H, W] or [B, H, W], got {list(t.shape)}")
    return t.long()


def _pair(superpixels: Labels, ground_truth: Labels):
    single = (superpixels.ndim if isinstance(superpixels, np.ndarray) else superpixels.dim()) == 2
    sp = _as_batch(superpixels, "superpixels")
    gt = _as_batch(ground_truth, "ground_truth").to(sp.device)
    if sp.shape != gt.shape:
        raise ValueError(f"superpixels {list(sp.shape)} and ground_truth {list(gt.shape)} differ in shape")
    if sp.numel() == 0:
        raise ValueError("superpixels must have at least one pixel")
    return sp, gt, single


def _result(values: torch.Tensor, single: bool):
    values = values.double().cpu()
    return float(values[0]) if single else values


def boundary_map(labels: Labels) -> torch.Tensor:
    """Bool ``[B, H, W]``: pixels whose label differs from the pixel right of or below them."""
    t = _as_batch(labels, "labels")
    edge = torch.zeros_like(t, dtype=torch.bool)
    edge[:, :, :-1] |= t[:, :, 1:] != t[:, :, :-1]
    edge[:, :-1, :] |= t[:, 1:, :] != t[:, :-1, :]
    return edge


def boundary_recall(superpixels: Labels, ground_truth: Labels, tolerance: int = 2, ignore_index: Optional[int] = None):
    """Fraction of ground-truth boundary pixels within ``tolerance`` px of a superpixel boundary.

    An image without ground-truth boundaries has recall 1."""
    sp, gt, single = _pair(superpixels, ground_truth)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    gt_edge = boundary_map(gt)
    if ignore_index is not None:
        gt_edge &= gt != ignore_index
    sp_edge = boundary_map(sp).float().unsqueeze(1)
    near = F.max_pool2d(sp_edge, 2 * tolerance + 1, stride=1, padding=tolerance).squeeze(1) > 0
    hits = (gt_edge & near).flatten(1).sum(1)
    total = gt_edge.flatten(1).sum(1)
    return _result(torch.where(total > 0, hits / total.clamp_min(1), torch.ones_like(hits, dtype=torch.float)), single)


def _overlaps(sp: torch.Tensor, gt: torch.Tensor, ignore_index: Optional[int]):
    """Per image: the overlap counts |S & G| of every (superpixel, ground-truth) pair that meets,
    the superpixel of each pair, and the number of pixels counted."""
    keep = torch.ones_like(gt, dtype=torch.bool) if ignore_index is None else gt != ignore_index
    out = []
    for b in range(sp.shape[0]):
        s, g = sp[b][keep[b]], gt[b][keep[b]]
        _, s_id = torch.unique(s, return_inverse=True)
        _, g_id = torch.unique(g, return_inverse=True)
        n_g = int(g_id.max()) + 1 if g_id.numel() else 1
        pair, count = torch.unique(s_id * n_g + g_id, return_counts=True)
        out.append((pair // n_g, count, s.numel()))
    return out


def undersegmentation_error(superpixels: Labels, ground_truth: Labels, ignore_index: Optional[int] = None):
    """Undersegmentation error of Neubert & Protzel (lower is better)."""
    sp, gt, single = _pair(superpixels, ground_truth)
    values = []
    for s_of_pair, count, n in _overlaps(sp, gt, ignore_index):
        size = torch.zeros(int(s_of_pair.max()) + 1 if n else 1, dtype=torch.long).index_add_(0, s_of_pair, count)
        leak = torch.minimum(count, size[s_of_pair] - count).sum()
        values.append(leak / max(n, 1))
    return _result(torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in values]), single)


def achievable_segmentation_accuracy(superpixels: Labels, ground_truth: Labels, ignore_index: Optional[int] = None):
    """Achievable segmentation accuracy (higher is better)."""
    sp, gt, single = _pair(superpixels, ground_truth)
    values = []
    for s_of_pair, count, n in _overlaps(sp, gt, ignore_index):
        best = torch.zeros(int(s_of_pair.max()) + 1 if n else 1, dtype=torch.long).scatter_reduce(
            0, s_of_pair, count, "amax"
        )
        values.append(best.sum() / max(n, 1))
    return _result(torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in values]), single)


def number_of_segments(superpixels: Labels):
    """Number of distinct labels (>= 0) per image."""
    single = (superpixels.ndim if isinstance(superpixels, np.ndarray) else superpixels.dim()) == 2
    sp = _as_batch(superpixels, "superpixels")
    counts = torch.tensor([torch.unique(sp[b][sp[b] >= 0]).numel() for b in range(sp.shape[0])])
    return int(counts[0]) if single else counts


def superpixel_scores(
    superpixels: Labels, ground_truth: Labels, tolerance: int = 2, ignore_index: Optional[int] = None
) -> Dict[str, float]:
    """BR, UE, ASA and the number of segments, averaged over the images of the batch."""

    def mean(v):
        return float(v) if isinstance(v, (float, int)) else float(v.double().mean())

    return {
        "boundary_recall": mean(boundary_recall(superpixels, ground_truth, tolerance, ignore_index)),
        "undersegmentation_error": mean(undersegmentation_error(superpixels, ground_truth, ignore_index)),
        "achievable_segmentation_accuracy": mean(
            achievable_segmentation_accuracy(superpixels, ground_truth, ignore_index)
        ),
        "segments": mean(number_of_segments(superpixels)),
    }


# ---------------------------------------------------------------------------------------------
# Semantic segmentation


def confusion_matrix(
    prediction: Labels, ground_truth: Labels, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """int64 [num_classes, num_classes] counts, rows = ground truth, columns = prediction. Pixels whose
    ground truth is ``ignore_index`` are left out; any other value outside [0, num_classes), in either
    map, raises ValueError."""
    pred, gt = (torch.from_numpy(np.array(x)) if isinstance(x, np.ndarray) else x for x in (prediction, ground_truth))
    if not isinstance(pred, torch.Tensor) or not isinstance(gt, torch.Tensor):
        raise TypeError("confusion_matrix: prediction and ground_truth must be tensors or NumPy arrays")
    if pred.shape != gt.shape:
        raise ValueError(
            f"confusion_matrix: prediction {list(pred.shape)} and ground_truth {list(gt.shape)} "
            "must have the same shape"
        )
    if pred.is_floating_point() or gt.is_floating_point():
        raise TypeError("confusion_matrix: label maps must hold integers")
    pred, gt = pred.long().flatten().cpu(), gt.long().flatten().cpu()
    keep = gt != ignore_index
    pred, gt = pred[keep], gt[keep]
    for name, x in (("ground_truth", gt), ("prediction", pred)):
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= num_classes):
            raise ValueError(
                f"confusion_matrix: {name} holds a class outside [0, {num_classes}) "
                f"(other than ignore_index {ignore_index})"
            )
    return torch.bincount(gt * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)


class ConfusionMatrix:
    """Accumulates a confusion matrix over a data set; ``iou()`` per class (NaN for a class that is in
    neither the ground truth nor the predictions) and ``miou()`` over the classes that occur."""

    def __init__(self, num_classes: int = 21, ignore_index: int = 255):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, prediction: Labels, ground_truth: Labels) -> "ConfusionMatrix":
        self.matrix += confusion_matrix(prediction, ground_truth, self.num_classes, self.ignore_index)
        return self

    def iou(self) -> torch.Tensor:
        m = self.matrix.double()
        inter = m.diag()
        union = m.sum(0) + m.sum(1) - inter
        return torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, float("nan")))

    def miou(self) -> float:
        iou = self.iou()
        present = ~torch.isnan(iou)
        return float(iou[present].mean()) if bool(present.any()) else float("nan")


#: The background thresholds of the WSSS evaluation protocol (IRN's eval_cam, SEAM's ``--curve``):
#: 0.05, 0.10, ..., 0.60.
DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 13))


class ThresholdSweep:
    """mIoU of class scores against the background threshold, accumulated over a data set: the WSSS
    protocol for CAMs and refined CAMs (IRN's eval_cam, SEAM's ``--curve``).

    At threshold t a pixel is background (0) where no allowed class's score reaches t, else
    ``classes[k]`` for the channel k of highest score (``spl.cam_to_mask``'s rule). One confusion
    matrix per threshold is kept (``num_classes`` squared int64 counts each).

    Args:
        thresholds (sequence of float): the background thresholds (default ``DEFAULT_THRESHOLDS``).
        num_classes (int): classes of the ground truth, background included (21 for VOC).
        ignore_index (int): ground-truth value left out (255 for VOC).

    Example::

        sweep = ThresholdSweep()
        for scores, gt in data:            # scores [C, H, W] foreground scores, gt [H, W]
            sweep.update(scores, gt)
        t, miou = sweep.best()             # the best threshold and its mIoU (in [0, 1])
        curve = sweep.miou()               # one mIoU per threshold
    """

    def __init__(self, thresholds=DEFAULT_THRESHOLDS, num_classes: int = 21, ignore_index: int = 255):
        thresholds = [float(t) for t in thresholds]
        if not thresholds or any(not np.isfinite(t) for t in thresholds):
            raise ValueError("ThresholdSweep: thresholds must be a non-empty sequence of finite numbers")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"ThresholdSweep: num_classes must be an int >= 2, got {num_classes!r}")
        self.thresholds = tuple(thresholds)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = np.zeros((len(thresholds), num_classes, num_classes), np.int64)

    def update(self, scores, ground_truth, classes=None) -> "ThresholdSweep":
        """Adds one image.

        Args:
            scores (Tensor or NumPy [C, H, W], float): the scores of C candidate classes (the classes
                of the image-level label, or all of them); C may be 0 (all background).
            ground_truth (Tensor or NumPy [H, W], int): labels in [0, num_classes) or ignore_index.
            classes (sequence of int, optional): the label of each channel (default ``1 .. C``, the
                VOC numbering of 20 foreground channels).
        """
        fn = "ThresholdSweep.update"
        s = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
        gt = ground_truth.cpu().numpy() if isinstance(ground_truth, torch.Tensor) else np.asarray(ground_truth)
        if s.ndim != 3 or gt.ndim != 2 or s.shape[1:] != gt.shape:
            raise ValueError(
                f"{fn}: scores must be [C, H, W] and ground_truth [H, W] of the same size, got "
                f"{list(s.shape)} and {list(gt.shape)}"
            )
        if not np.issubdtype(s.dtype, np.floating) or not np.issubdtype(gt.dtype, np.integer):
            raise TypeError(
                f"{fn}: scores must be floating point and ground_truth integer, got {s.dtype} and {gt.dtype}"
            )
        if not np.isfinite(s).all():
            raise ValueError(f"{fn}: scores hold NaN or infinite values")
        classes = np.arange(1, s.shape[0] + 1) if classes is None else np.asarray(classes, np.int64).reshape(-1)
        if classes.shape[0] != s.shape[0]:
            raise ValueError(f"{fn}: classes must give one label per channel ({s.shape[0]}), got {classes.shape[0]}")
        n = self.num_classes
        if classes.size and (classes.min() < 1 or classes.max() >= n):
            raise ValueError(f"{fn}: classes must be in [1, {n}), got {classes.tolist()}")
        valid = gt != self.ignore_index
        g = gt[valid].astype(np.int64)
        if g.size and (g.min() < 0 or g.max() >= n):
            raise ValueError(
                f"{fn}: ground_truth holds a class outside [0, {n}) (other than ignore_index {self.ignore_index})"
            )
        if s.shape[0]:
            top, arg = s.max(0)[valid], classes[s.argmax(0)][valid]
        else:
            top, arg = np.full(g.shape, -np.inf, np.float32), np.zeros_like(g)
        # One histogram over (truth, arg-max class, how many thresholds the top score reaches) gives
        # every threshold's matrix: at threshold i a pixel is foreground iff it reaches more than i.
        order = np.argsort(self.thresholds, kind="stable")
        sorted_t = np.asarray(self.thresholds)[order]
        reached = np.searchsorted(sorted_t, top, side="right")  # thresholds <= top
        M = len(sorted_t)
        hist = np.bincount((g * n + arg) * (M + 1) + reached, minlength=n * n * (M + 1)).reshape(n, n, M + 1)
        above = np.cumsum(hist[:, :, ::-1], axis=2)[:, :, ::-1]  # [.., j] = pixels reaching > j - 1
        total = hist.sum(2)
        for rank, i in enumerate(order):
            fg = above[:, :, rank + 1] if rank + 1 <= M else np.zeros_like(total)
            m = fg.copy()
            m[:, 0] += (total - fg).sum(1)  # the rest is predicted background
            self.matrix[i] += m
        return self

    def iou(self) -> np.ndarray:
        """float64 [thresholds, num_classes]: per-class IoU at each threshold (NaN where a class is in
        neither the ground truth nor the predictions)."""
        m = self.matrix.astype(np.float64)
        inter = np.diagonal(m, axis1=1, axis2=2)
        union = m.sum(1) + m.sum(2) - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, inter / union, np.nan)

    def miou(self) -> np.ndarray:
        """float64 [thresholds]: mIoU at each threshold, over the classes that occur."""
        iou = self.iou()
        present = ~np.isnan(iou)
        return np.where(present.any(1), np.nansum(iou, 1) / np.maximum(present.sum(1), 1), np.nan)

    def best(self):
        """(threshold, mIoU) at the threshold of highest mIoU (the first on ties); (None, NaN) before
        any update."""
        curve = self.miou()
        if np.isnan(curve).all():
            return None, float("nan")
        i = int(np.nanargmax(curve))
        return self.thresholds[i], float(curve[i])

    def at(self, threshold: float) -> float:
        """mIoU at one of the thresholds."""
        if float(threshold) not in self.thresholds:
            raise ValueError(f"ThresholdSweep.at: {threshold} is not one of the thresholds {list(self.thresholds)}")
        return float(self.miou()[self.thresholds.index(float(threshold))])
