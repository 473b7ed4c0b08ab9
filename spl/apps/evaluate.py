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
from typing import Dict, List, Sequence

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


def run_eval(args) -> int:
    prog = "spl eval"
    for name in ("pred", "gt"):
        if not os.path.isdir(getattr(args, name)):
            print(f"{prog}: --{name} {getattr(args, name)} is not a folder", file=sys.stderr)
            return 2
    num_classes = args.num_classes if args.num_classes is not None else len(DATASETS[args.dataset]) - 1
    if num_classes < 1:
        print(f"{prog}: --num-classes must be at least 1, got {num_classes}", file=sys.stderr)
        return 2
    if not (math.isfinite(args.bg_threshold) and args.bg_threshold > 0):
        print(f"{prog}: --bg-threshold must be a finite number > 0, got {args.bg_threshold}", file=sys.stderr)
        return 2
    if args.workers < 0:
        print(f"{prog}: --workers must be at least 0, got {args.workers}", file=sys.stderr)
        return 2
    if args.out is not None:
        problem = prepare_output(args.out, prog)
        if problem is not None:
            print(problem, file=sys.stderr)
            return 2
    try:
        names = list_names(args.pred, args.list, (".npy", ".png"))
    except OSError as e:
        print(f"{prog}: --list {args.list}: {e.strerror or e}", file=sys.stderr)
        return 2
    if not names:
        print(
            f"{prog}: no predictions (.npy / .png) in {args.pred}" + (f" named in {args.list}" if args.list else ""),
            file=sys.stderr,
        )
        return 2
    n = num_classes + 1
    t = float(args.bg_threshold)
    thresholds = tuple(sorted(set(DEFAULT_THRESHOLDS) | {t}))
    at_t = ConfusionMatrix(n)
    sweep = ThresholdSweep(thresholds, n) if args.curve else None
    errors: List[dict] = []
    scored = labelled = 0
    loader = torch.utils.data.DataLoader(
        EvalSet(names, args.pred, args.gt, args.format, num_classes, args.curve),
        batch_size=8,
        num_workers=args.workers,
        collate_fn=_collate,
        worker_init_fn=die_with_parent,
    )
    for batch in loader:
        for item in batch:
            if item["error"] is not None:
                errors.append({"image": item["name"], "error": item["error"]})
                continue
            try:
                if "labels" in item:
                    at_t.update(item["labels"], item["gt"])
                    labelled += 1
                else:
                    scores, classes = item["scores"], item["classes"]
                    mask = (
                        asam.cam_to_mask(scores[None], t)[0]
                        if scores.shape[0]
                        else torch.zeros(item["gt"].shape, dtype=torch.int64)
                    )
                    lut = torch.from_numpy(np.concatenate([[0], classes]).astype(np.int64))
                    at_t.update(lut[mask], item["gt"])
                    if sweep is not None:
                        sweep.update(scores, item["gt"], classes)
                    scored += 1
            except (TypeError, ValueError) as e:
                errors.append({"image": item["name"], "error": f"{type(e).__name__}: {e}"})
    for e in errors[:10]:
        print(f"{prog}: {e['image']}: {e['error']}", file=sys.stderr)
    if len(errors) > 10:
        print(f"{prog}: ... {len(errors) - 10} more failures", file=sys.stderr)
    evaluated = scored + labelled
    names_c = class_names(args.dataset, num_classes)
    what = ", ".join(x for x in (f"{scored} CAMs" if scored else "", f"{labelled} label maps" if labelled else "") if x)
    print(f"{prog}: {evaluated} images ({what or 'none'}), {len(errors)} failed; {n} classes, 255 ignored")
    report = {
        "images": evaluated,
        "cams": scored,
        "label_maps": labelled,
        "failed": len(errors),
        "num_classes": n,
        "classes": names_c,
    }
    if evaluated:
        label = f"mIoU at t = {t}" if scored else "mIoU"
        print(f"{label}: {100 * at_t.miou():.2f}")
        for line in class_table(names_c, {"IoU": at_t.iou().tolist()}):
            print(line)
        report.update(
            {
                "bg_threshold": t if scored else None,
                "miou": 100 * at_t.miou(),
                "iou": {c: None if math.isnan(v) else 100 * v for c, v in zip(names_c, at_t.iou().tolist())},
            }
        )
    if sweep is not None and scored:
        print("\nmIoU against the background threshold:")
        for line in curve_table({"CAM": sweep}):
            print(line)
        report["curve"] = curve_json({"CAM": sweep})
        best_t, _ = sweep.best()
        if best_t is not None:
            report["iou_at_best_t"] = {
                c: None if math.isnan(v) else 100 * v
                for c, v in zip(names_c, sweep.iou()[thresholds.index(best_t)].tolist())
            }
    if args.out is not None:
        atomic_write(
            os.path.join(args.out, "eval.json"), lambda tmp: open(tmp, "w").write(json.dumps(report, indent=1))
        )
        lines = "".join(json.dumps(e) + "\n" for e in errors)
        atomic_write(os.path.join(args.out, "errors.jsonl"), lambda tmp: open(tmp, "w").write(lines))
        if sweep is not None and scored:
            plot_curves(
                os.path.join(args.out, "curve.png"),
                {"CAM": sweep},
                f"{os.path.basename(os.path.normpath(args.pred))}: {scored} images",
            )
        print(f"{prog}: wrote {args.out}/eval.json" + (" and curve.png" if sweep is not None and scored else ""))
    elif sweep is not None and scored:
        print(f"{prog}: --out DIR also writes eval.json and the plot curve.png")
    if not evaluated:
        return 1
    return 1 if errors else 0


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
