"""``spl eval``: score a folder of CAMs (any format of spl/formats.py) or of label PNGs against the
ground truth, without refining: mIoU and per-class IoU at a background threshold, and with
``--curve`` the sweep over thresholds (table, JSON and PNG plot), as IRN's eval_cam and SEAM's
``--curve`` do. ``spl refine --gt`` prints its curves with the same functions.

    spl eval --pred CAMS --gt SegmentationClass [--list val.txt] [--dataset voc|coco] [--curve] [--out DIR]

A file that cannot be read, or has no ground truth, is reported (stderr, and ``errors.jsonl`` with
``--out``) and left out; the exit code is then 1. Usage errors exit with 2.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import asam
from ..formats import (
    DATASETS,
    FORMATS,
    IGNORE,
    class_names,
    find_file,
    list_names,
    read_cam,
    read_label_png,
    to_image_grid,
)
from ..metrics import DEFAULT_THRESHOLDS, ConfusionMatrix, ThresholdSweep
from .common import add_dataset_arguments, atomic_write, die_with_parent, prepare_output

# ---------------------------------------------------------------------------------------------
# Reports shared with spl refine --gt


def curve_table(sweeps: Dict[str, ThresholdSweep]) -> List[str]:
    """Lines of a table: mIoU (%) of each column against the background threshold, then each one's best t."""
    names = list(sweeps)
    first = sweeps[names[0]]
    lines = [f"{'t':>6s} " + " ".join(f"{n:>10s}" for n in names)]
    curves = {n: s.miou() for n, s in sweeps.items()}
    for i, t in enumerate(first.thresholds):
        lines.append(f"{t:6.2f} " + " ".join(f"{100 * curves[n][i]:10.2f}" for n in names))
    best = []
    for n, s in sweeps.items():
        t, m = s.best()
        best.append(f"{n} {t:.2f} ({100 * m:.2f})" if t is not None else f"{n}: no scores")
    lines.append("best t: " + ", ".join(best))
    return lines


def class_table(names: Sequence[str], ious: Dict[str, Sequence[float]]) -> List[str]:
    """Lines of a per-class IoU (%) table; classes that are in no column's ground truth or predictions
    are left out."""
    cols = list(ious)
    width = max(14, max(len(n) for n in names) + 1)
    lines = [f"{'class':{width}s} " + " ".join(f"{c:>10s}" for c in cols)]
    for k, name in enumerate(names):
        values = [ious[c][k] for c in cols]
        if all(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            continue
        lines.append(
            f"{name:{width}s} "
            + " ".join("       n/a" if v is None or math.isnan(v) else f"{100 * v:10.2f}" for v in values)
        )
    return lines


def curve_json(sweeps: Dict[str, ThresholdSweep]) -> dict:
    first = next(iter(sweeps.values()))
    out = {"thresholds": list(first.thresholds)}
    for n, s in sweeps.items():
        t, m = s.best()
        out[n] = {
            "miou": [None if math.isnan(v) else 100 * float(v) for v in s.miou()],
            "best_t": t,
            "best_miou": None if t is None else 100 * m,
        }
    return out


def plot_curves(path: str, sweeps: Dict[str, ThresholdSweep], title: str) -> None:
    """mIoU against the background threshold, one line per column, as a PNG (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    for n, s in sweeps.items():
        ax.plot(s.thresholds, 100 * s.miou(), marker="o", ms=3, label=n)
    ax.set_xlabel("background threshold t")
    ax.set_ylabel("mIoU (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# spl eval


class EvalSet(torch.utils.data.Dataset):
    """One item per name: the prediction (scores or labels) and the ground truth, or an error."""

    def __init__(self, names, pred, gt, fmt, num_classes, curve: bool):
        self.names, self.pred, self.gt, self.fmt = names, pred, gt, fmt
        self.num_classes, self.curve = num_classes, curve

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        name = self.names[i]
        item = {"name": name, "error": None}
        try:
            exts = (".png",) if self.fmt == "png" else (".npy",) if self.fmt != "auto" else (".npy", ".png")
            path = find_file(self.pred, name, exts)
            if path is None:
                raise FileNotFoundError(f"no prediction {name}{'/'.join(exts)} in {self.pred}")
            gt_path = find_file(self.gt, name, (".png",))
            if gt_path is None:
                raise FileNotFoundError(f"no ground truth {name}.png in {self.gt}")
            gt = read_label_png(gt_path)
            n = self.num_classes + 1
            bad = np.unique(gt[(gt != IGNORE) & (gt >= n)])
            if bad.size:
                raise ValueError(
                    f"{gt_path}: label {int(bad[0])} is not a class (0..{n - 1}, 255); is --dataset / "
                    "--num-classes right?"
                )
            item["gt"] = gt
            H, W = gt.shape
            if path.lower().endswith(".png") and (self.fmt in ("auto", "png")):
                labels = read_label_png(path)
                if labels.shape != (H, W):
                    raise ValueError(
                        f"{path}: {labels.shape[0]}x{labels.shape[1]} labels for a ground truth of {H}x{W}"
                    )
                bad = np.unique(labels[(labels != IGNORE) & (labels >= n)])
                if bad.size:
                    raise ValueError(f"{path}: label {int(bad[0])} is not a class (0..{n - 1}, 255)")
                if self.curve:
                    raise ValueError(f"{path}: a label PNG has no scores to sweep (--curve needs CAMs)")
                item["labels"] = labels
                return item
            cam = read_cam(path, self.fmt, self.num_classes)
            present = np.flatnonzero(cam.present)
            maps = to_image_grid(path, torch.from_numpy(np.ascontiguousarray(cam.scores[present])), cam.stride, H, W)
            if not maps.shape[0]:  # no class in the image: all background
                maps = torch.zeros(0, H, W)
            elif maps.shape[-2:] != (H, W):
                maps = torch.nn.functional.interpolate(maps[None], size=(H, W), mode="bilinear", align_corners=False)[0]
            item["scores"], item["classes"] = maps, present + 1
        except Exception as e:  # noqa: BLE001  (reported per image, never stops the evaluation)
            item["error"] = f"{type(e).__name__}: {e}"
        return item


def _collate(items):
    return items


def _usage_problem(args, prog: str, num_classes: int) -> Optional[str]:
    """A usage error in the options (exit code 2), found before any file is read, or None."""
    for name in ("pred", "gt"):
        if not os.path.isdir(getattr(args, name)):
            return f"{prog}: --{name} {getattr(args, name)} is not a folder"
    if num_classes < 1:
        return f"{prog}: --num-classes must be at least 1, got {num_classes}"
    if not (math.isfinite(args.bg_threshold) and args.bg_threshold > 0):
        return f"{prog}: --bg-threshold must be a finite number > 0, got {args.bg_threshold}"
    if args.workers < 0:
        return f"{prog}: --workers must be at least 0, got {args.workers}"
    if args.out is not None:
        return prepare_output(args.out, prog)
    return None


def _names_to_score(args, prog: str) -> Tuple[List[str], Optional[str]]:
    """The prediction names (from --list or the --pred folder), or a usage error."""
    try:
        names = list_names(args.pred, args.list, (".npy", ".png"))
    except OSError as e:
        return [], f"{prog}: --list {args.list}: {e.strerror or e}"
    if not names:
        return [], f"{prog}: no predictions (.npy / .png) in {args.pred}" + (
            f" named in {args.list}" if args.list else ""
        )
    return names, None


class _Tally:
    """What the scored images add up to: the confusion at t, the sweep over thresholds (--curve), the
    failures, and how many CAMs and label maps were scored."""

    def __init__(self, num_classes: int, t: float, thresholds, curve: bool):
        self.t = t
        self.at_t = ConfusionMatrix(num_classes + 1)
        self.sweep = ThresholdSweep(thresholds, num_classes + 1) if curve else None
        self.errors: List[dict] = []
        self.scored = self.labelled = 0

    def add(self, item: dict) -> None:
        """One item of EvalSet: its label map, or its CAM thresholded at t (and swept); a bad one is
        a failure of that image only."""
        if item["error"] is not None:
            self.errors.append({"image": item["name"], "error": item["error"]})
            return
        try:
            if "labels" in item:
                self.at_t.update(item["labels"], item["gt"])
                self.labelled += 1
                return
            scores, classes = item["scores"], item["classes"]
            if scores.shape[0]:
                mask = asam.cam_to_mask(scores[None], self.t)[0]
            else:
                mask = torch.zeros(item["gt"].shape, dtype=torch.int64)
            lut = torch.from_numpy(np.concatenate([[0], classes]).astype(np.int64))
            self.at_t.update(lut[mask], item["gt"])
            if self.sweep is not None:
                self.sweep.update(scores, item["gt"], classes)
            self.scored += 1
        except (TypeError, ValueError) as e:
            self.errors.append({"image": item["name"], "error": f"{type(e).__name__}: {e}"})


def _report(prog: str, tally: _Tally, class_names_: List[str], thresholds) -> dict:
    """Prints the figures (failures, mIoU, per-class IoU, the curve) and returns eval.json's content."""
    for e in tally.errors[:10]:
        print(f"{prog}: {e['image']}: {e['error']}", file=sys.stderr)
    if len(tally.errors) > 10:
        print(f"{prog}: ... {len(tally.errors) - 10} more failures", file=sys.stderr)
    scored, labelled, at_t, sweep, n = tally.scored, tally.labelled, tally.at_t, tally.sweep, len(class_names_)
    evaluated = scored + labelled
    what = ", ".join(x for x in (f"{scored} CAMs" if scored else "", f"{labelled} label maps" if labelled else "") if x)
    print(f"{prog}: {evaluated} images ({what or 'none'}), {len(tally.errors)} failed; {n} classes, 255 ignored")
    report = {
        "images": evaluated,
        "cams": scored,
        "label_maps": labelled,
        "failed": len(tally.errors),
        "num_classes": n,
        "classes": class_names_,
    }

    def per_class(ious):
        return {c: None if math.isnan(v) else 100 * v for c, v in zip(class_names_, ious)}

    if evaluated:
        print(f"{'mIoU at t = ' + str(tally.t) if scored else 'mIoU'}: {100 * at_t.miou():.2f}")
        for line in class_table(class_names_, {"IoU": at_t.iou().tolist()}):
            print(line)
        report["bg_threshold"] = tally.t if scored else None
        report["miou"] = 100 * at_t.miou()
        report["iou"] = per_class(at_t.iou().tolist())
    if sweep is not None and scored:
        print("\nmIoU against the background threshold:")
        for line in curve_table({"CAM": sweep}):
            print(line)
        report["curve"] = curve_json({"CAM": sweep})
        best_t, _ = sweep.best()
        if best_t is not None:
            report["iou_at_best_t"] = per_class(sweep.iou()[thresholds.index(best_t)].tolist())
    return report


def _write_outputs(args, prog: str, tally: _Tally, report: dict) -> None:
    """eval.json, errors.jsonl and (with --curve) curve.png in --out, each written atomically."""
    curve = tally.sweep is not None and tally.scored
    if args.out is None:
        if curve:
            print(f"{prog}: --out DIR also writes eval.json and the plot curve.png")
        return
    text = json.dumps(report, indent=1)
    atomic_write(os.path.join(args.out, "eval.json"), lambda tmp: open(tmp, "w").write(text))
    lines = "".join(json.dumps(e) + "\n" for e in tally.errors)
    atomic_write(os.path.join(args.out, "errors.jsonl"), lambda tmp: open(tmp, "w").write(lines))
    if curve:
        title = f"{os.path.basename(os.path.normpath(args.pred))}: {tally.scored} images"
        plot_curves(os.path.join(args.out, "curve.png"), {"CAM": tally.sweep}, title)
    print(f"{prog}: wrote {args.out}/eval.json" + (" and curve.png" if curve else ""))


def run_eval(args) -> int:
    prog = "spl eval"
    num_classes = args.num_classes if args.num_classes is not None else len(DATASETS[args.dataset]) - 1
    names, problem = [], _usage_problem(args, prog, num_classes)
    if problem is None:
        names, problem = _names_to_score(args, prog)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    t = float(args.bg_threshold)
    thresholds = tuple(sorted(set(DEFAULT_THRESHOLDS) | {t}))
    tally = _Tally(num_classes, t, thresholds, args.curve)
    loader = torch.utils.data.DataLoader(
        EvalSet(names, args.pred, args.gt, args.format, num_classes, args.curve),
        batch_size=8,
        num_workers=args.workers,
        collate_fn=_collate,
        worker_init_fn=die_with_parent,
    )
    for batch in loader:
        for item in batch:
            tally.add(item)
    report = _report(prog, tally, class_names(args.dataset, num_classes), thresholds)
    _write_outputs(args, prog, tally, report)
    if tally.scored + tally.labelled == 0:
        return 1
    return 1 if tally.errors else 0


def add_arguments(p) -> None:
    p.add_argument("--pred", required=True, help="folder of CAMs (.npy, any format) or label PNGs, one per image")
    p.add_argument("--gt", required=True, help="folder of ground-truth label PNGs (255 ignored)")
    p.add_argument("--list", help="file of image names, one per line (default: every .npy / .png in --pred)")
    p.add_argument("--format", default="auto", choices=FORMATS, help="prediction format (default: auto, per file)")
    add_dataset_arguments(p, background=False)
    p.add_argument(
        "--bg-threshold",
        type=float,
        default=0.15,
        help="background threshold of the CAMs' mIoU (default 0.15); label PNGs need none",
    )
    p.add_argument("--curve", action="store_true", help="also sweep the background threshold (0.05 ... 0.60)")
    p.add_argument("--out", help="folder for eval.json, errors.jsonl and (with --curve) curve.png")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (0: in the main one)")
