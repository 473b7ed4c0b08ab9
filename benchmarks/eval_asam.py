"""ASAM against the raw CAM, DenseCRF and PAR, with the WSSS protocol, on the REPORT half of voc-val-dev.

    python benchmarks/eval_asam.py --cams synth=DIR --cams real-os16=DIR --cams real-os32=DIR \
        [--split report|tune|FILE] [--voc DIR] [--methods raw,asam,asam-diffusion,par,densecrf] \
        [--densecrf-settings best|both] [--limit N] [--cache DIR] [--out DIR] [--montage ID,ID,...]

Protocol (``spl.apps.cam_eval``): every method refines each CAM once with its defaults; the background
threshold t is then swept over its output (t = 0.05 ... 0.60); reported: the best t and its mIoU (21
VOC classes, 255 ignored), the curve, the mIoU at the raw CAM's best t, the per-class IoU, and the
median milliseconds per image on one CPU thread. DenseCRF takes t as input, so it runs again at each
t (its best case); to bound its cost it runs at the thresholds within ``--densecrf-window`` of the raw
CAM's best t (default 0.15: 7 thresholds), and the curve shows only those. Its bilateral setting
(sxy 50 / srgb 5 or IRN/PSA's sxy 80 / srgb 13) was chosen on the tuning half (``--densecrf-settings
both`` runs the two). PAR is ``spl.apps.peers.par_refine``.

CAMs: folders of IRN-format ``.npy`` files, made once with ``../shared/tools/real_cams.py`` (real
Grad-CAMs of a trained classifier; ``--os 32`` for the second source) and ``synth_cams.py``
(simulated); see benchmarks/RESULTS.md. Every image's result is cached (``--cache``, one JSON line per
image and method), so an interrupted run resumes where it stopped and a re-run only adds what is new;
the sources of an earlier eval.json in ``--out`` (same split, same defaults) that a run does not redo
are kept in its report.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import spl  # noqa: E402
from spl.apps import cam_eval, peers  # noqa: E402
from spl.metrics import DEFAULT_THRESHOLDS, ThresholdSweep  # noqa: E402

METHODS = ("raw", "asam", "asam-diffusion", "par", "densecrf")
TITLES = {
    "raw": "raw CAM",
    "asam": "ASAM (spl, defaults)",
    "asam-diffusion": "ASAM diffusion (SPL paper's T s)",
    "par": "PAR (AFA/ToCo)",
    "densecrf": "DenseCRF",
}
BEST_DENSECRF = "bilateral sxy 50 srgb 5"  # the better of the two on the tuning half (RESULTS.md)


def method_table(densecrf_settings):
    """key -> (title, scores(item) or None, labels(item, t) or None)."""
    table = {
        "raw": (TITLES["raw"], lambda it: it.cam, None),
        "asam": (TITLES["asam"], lambda it: spl.asam_refine(it.rgb, it.cam), None),
        "asam-diffusion": (
            TITLES["asam-diffusion"],
            lambda it: spl.asam_refine(it.rgb, it.cam, mode="diffusion", iters=40, alpha=1.0),
            None,
        ),
        "par": (
            TITLES["par"],
            lambda it: peers.par_refine(
                torch.from_numpy(it.rgb).permute(2, 0, 1)[None], torch.from_numpy(it.cam)[None]
            )[0].numpy(),
            None,
        ),
    }
    for setting in densecrf_settings:
        sxy_srgb = peers.DENSECRF_SETTINGS[setting]
        table[f"densecrf:{setting}"] = (
            f"DenseCRF ({setting})",
            None,
            lambda it, t, b=sxy_srgb: peers.densecrf_labels(it.rgb, it.cam, t, b),
        )
    return table


class Cache:
    """One JSON line per (image, method): the confusion matrices (sparse) of every threshold run."""

    def __init__(self, path):
        self.path = path
        self.rows = {}
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    try:
                        r = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by a kill
                        continue
                    self.rows[r["name"]] = r

    def add(self, row):
        self.rows[row["name"]] = row
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def run_method(key, fn_scores, fn_labels, items_for, names, thresholds, cache):
    """Fills the cache for every name; returns (sweep, seconds per image)."""
    todo = [n for n in names if n not in cache.rows or sorted(cache.rows[n]["t"]) != sorted(thresholds)]
    for k, item in enumerate(items_for(todo)):
        classes = item.keys + 1
        sweep = ThresholdSweep(DEFAULT_THRESHOLDS)
        if fn_scores is not None:
            start = time.perf_counter()
            s = fn_scores(item)
            seconds = time.perf_counter() - start
            sweep.update(np.asarray(s, np.float32), item.truth, classes)
        else:
            lut = np.concatenate([[0], classes])
            valid = item.truth != 255
            g = item.truth[valid]
            seconds = 0.0
            for t in thresholds:
                start = time.perf_counter()
                lab = fn_labels(item, t)
                seconds += time.perf_counter() - start
                pred = lut[lab][valid]
                sweep.matrix[DEFAULT_THRESHOLDS.index(t)] += np.bincount(g * 21 + pred, minlength=441).reshape(21, 21)
            seconds /= len(thresholds)
        flat = sweep.matrix.reshape(-1)
        nz = np.nonzero(flat)[0]
        cache.add(
            {
                "name": item.name,
                "t": list(thresholds),
                "seconds": seconds,
                "nz": nz.tolist(),
                "counts": flat[nz].tolist(),
            }
        )
        print(f"\r  {key}: {k + 1}/{len(todo)}", end="", flush=True)
    if todo:
        print()
    sweep = ThresholdSweep(DEFAULT_THRESHOLDS)
    flat = sweep.matrix.reshape(-1)
    seconds = []
    for n in names:
        r = cache.rows[n]
        np.add.at(flat, np.asarray(r["nz"], np.int64), np.asarray(r["counts"], np.int64))
        seconds.append(r["seconds"])
    evaluated = [t in thresholds for t in DEFAULT_THRESHOLDS]
    return sweep, seconds, evaluated


def summarise(title, sweep, seconds, evaluated, raw_t):
    curve = sweep.miou()
    curve = np.where(evaluated, curve, np.nan)
    i = int(np.nanargmax(curve))
    iou = sweep.iou()
    at_raw = DEFAULT_THRESHOLDS.index(raw_t)
    return {
        "method": title,
        "best_t": DEFAULT_THRESHOLDS[i],
        "miou": 100 * float(curve[i]),
        "miou_at_raw_t": None if not evaluated[at_raw] else 100 * float(curve[at_raw]),
        "curve": [None if np.isnan(v) else round(100 * float(v), 3) for v in curve],
        "iou": [None if np.isnan(v) else round(100 * float(v), 2) for v in iou[i]],
        "iou_at_raw_t": [None if np.isnan(v) else round(100 * float(v), 2) for v in iou[at_raw]],
        "ms_per_image": 1e3 * float(np.median(seconds)),
        "images": len(seconds),
    }


def markdown(report):
    lines = [
        f"# ASAM quality: {report['split']} half of voc-val-dev, {report['date']}",
        f"\n{report['machine']}; torch {report['torch']}; one CPU thread per method; thresholds "
        f"{DEFAULT_THRESHOLDS[0]}..{DEFAULT_THRESHOLDS[-1]}.\n",
    ]
    for source, rows in report["sources"].items():
        raw = rows[0]
        lines.append(f"\n## {source}: {raw['images']} images (raw CAM best t {raw['best_t']:.2f})\n")
        lines.append("| method | mIoU (best t) | gain | best t | mIoU at raw's t | worst class vs raw | ms / image |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in rows:
            drops = [
                (a - b, c)
                for a, b, c in zip(r["iou"], raw["iou"], cam_eval.VOC_CLASSES)
                if a is not None and b is not None
            ]
            worst = min(drops)
            at = "–" if r["miou_at_raw_t"] is None else f"{r['miou_at_raw_t']:.2f}"
            lines.append(
                f"| {r['method']} | {r['miou']:.2f} | {r['miou'] - raw['miou']:+.2f} | {r['best_t']:.2f} | {at} | "
                f"{worst[0]:+.1f} ({worst[1]}) | {r['ms_per_image']:.1f} |"
            )
        lines.append("\nCurves (mIoU at t = " + ", ".join(f"{t:.2f}" for t in DEFAULT_THRESHOLDS) + "):\n")
        for r in rows:
            lines.append(f"- {r['method']}: " + " ".join("–" if v is None else f"{v:.1f}" for v in r["curve"]))
        lines.append("\nPer-class IoU at each method's best t:\n")
        lines.append("| class | " + " | ".join(r["method"] for r in rows) + " |")
        lines.append("|---" * (len(rows) + 1) + "|")
        for c, name in enumerate(cam_eval.VOC_CLASSES):
            lines.append(
                f"| {name} | " + " | ".join("–" if r["iou"][c] is None else f"{r['iou'][c]:.1f}" for r in rows) + " |"
            )
    return "\n".join(lines) + "\n"


def plot_curves(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = list(report["sources"])
    fig, axes = plt.subplots(1, len(sources), figsize=(5 * len(sources), 4), squeeze=False)
    for ax, source in zip(axes[0], sources):
        for r in report["sources"][source]:
            ys = [np.nan if v is None else v for v in r["curve"]]
            ax.plot(DEFAULT_THRESHOLDS, ys, marker="o", ms=3, label=r["method"])
        ax.set_title(f"{source} ({report['sources'][source][0]['images']} report images)")
        ax.set_xlabel("background threshold t")
        ax.set_ylabel("mIoU (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def palette():
    p = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        p[i] = (r, g, b)
    return p


def montage(voc, folder, names, best_t, settings, path):
    """image | raw | DenseCRF | PAR | ASAM | truth, one row per image, each method at its best t."""
    from PIL import Image, ImageDraw

    pal = palette()
    rows = []
    width = 200
    for name in names:
        it = cam_eval.load_item(voc, folder, name)
        lut = np.concatenate([[0], it.keys + 1])
        maps = {"raw CAM": spl.cam_to_mask(it.cam, best_t["raw"]) if len(it.keys) else np.zeros_like(it.truth)}
        if settings:
            maps["DenseCRF"] = peers.densecrf_labels(
                it.rgb, it.cam, best_t["densecrf"], peers.DENSECRF_SETTINGS[settings[0]]
            )
        maps["PAR"] = spl.cam_to_mask(
            peers.par_refine(torch.from_numpy(it.rgb).permute(2, 0, 1)[None], torch.from_numpy(it.cam)[None])[
                0
            ].numpy(),
            best_t["par"],
        )
        maps["ASAM"] = spl.cam_to_mask(spl.asam_refine(it.rgb, it.cam), best_t["asam"])
        tiles = [it.rgb] + [pal[lut[m] if k != "DenseCRF" else lut[m]] for k, m in maps.items()] + [pal[it.truth]]
        h = int(it.rgb.shape[0] * width / it.rgb.shape[1])
        rows.append([np.array(Image.fromarray(t).resize((width, h), Image.NEAREST)) for t in tiles])
    titles = ["image"] + list(maps) + ["truth"]
    total_h = 18 + sum(r[0].shape[0] + 4 for r in rows)
    canvas = Image.new("RGB", (len(titles) * (width + 4), total_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, t in enumerate(titles):
        draw.text((c * (width + 4) + 4, 3), t, fill=(0, 0, 0))
    y = 18
    for r in rows:
        for c, tile in enumerate(r):
            canvas.paste(Image.fromarray(tile), (c * (width + 4), y))
        y += r[0].shape[0] + 4
    canvas.save(path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--voc", default=os.path.join(HERE, "..", "..", "shared", "data", "voc-val-dev"))
    p.add_argument("--split", default="report", help="report, tune, or a file of image ids")
    p.add_argument("--cams", action="append", required=True, help="NAME=DIR of IRN-format CAMs (repeatable)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--densecrf-settings", default="best", choices=("best", "both"))
    p.add_argument("--densecrf-window", type=float, default=0.15)
    p.add_argument("--limit", type=int)
    p.add_argument("--cache", default=os.path.join(HERE, "cache", "eval"))
    p.add_argument("--out", default=os.path.join(HERE, "results", "asam-eval"))
    p.add_argument("--montage", default="", help="comma-separated image ids for a montage per CAM source")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    split = os.path.join(HERE, "splits", f"voc-val-dev-{a.split}.txt") if a.split in ("report", "tune") else a.split
    ids = cam_eval.read_ids(split)[: a.limit]
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        sys.exit(f"eval_asam: unknown methods {sorted(unknown)} (known: {', '.join(METHODS)})")
    if "densecrf" in methods and not peers.has_densecrf():
        print("eval_asam: pydensecrf2 is not installed: DenseCRF skipped")
        methods.remove("densecrf")
    settings = (
        ([BEST_DENSECRF] if a.densecrf_settings == "best" else list(peers.DENSECRF_SETTINGS))
        if "densecrf" in methods
        else []
    )
    table = method_table(settings)
    keys = [m for m in methods if m != "densecrf"] + [f"densecrf:{s}" for s in settings]
    if "raw" not in keys:
        keys.insert(0, "raw")
    report = {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "split": a.split,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "defaults": spl.asam.ASAM_DEFAULTS,
        "sources": {},
    }
    os.makedirs(a.out, exist_ok=True)
    earlier = os.path.join(a.out, "eval.json")
    if os.path.exists(earlier):
        # Sources of an earlier run into this folder, on the same split, that this run does not
        # redo are kept (their CAMs need not be on disk any more): eval.md and curves.png show all.
        with open(earlier) as f:
            before = json.load(f)
        if before.get("split") == a.split and before.get("defaults") == report["defaults"]:
            rerun = {s.split("=", 1)[0] for s in a.cams}
            report["sources"] = {k: v for k, v in before["sources"].items() if k not in rerun}
    for source in a.cams:
        name, folder = source.split("=", 1)
        names = [i for i in ids if os.path.exists(os.path.join(folder, i + ".npy"))]
        if len(names) < len(ids):
            print(
                f"{name}: {len(ids) - len(names)} of {len(ids)} CAM files missing in {folder}; evaluating {len(names)}"
            )
        cache_dir = os.path.join(a.cache, name)
        os.makedirs(cache_dir, exist_ok=True)

        def items_for(todo, folder=folder):
            return (cam_eval.load_item(a.voc, folder, n) for n in todo)

        rows, raw_t, best_t = [], None, {}
        for key in keys:
            title, fs, fl = table[key]
            if fl is None:
                ts = list(DEFAULT_THRESHOLDS)
            else:
                ts = [t for t in DEFAULT_THRESHOLDS if abs(t - raw_t) <= a.densecrf_window + 1e-9]
            sweep, seconds, evaluated = run_method(
                key,
                fs,
                fl,
                items_for,
                names,
                ts,
                Cache(os.path.join(cache_dir, key.replace(":", "_").replace(" ", "_") + ".jsonl")),
            )
            row = summarise(title, sweep, seconds, evaluated, raw_t if raw_t is not None else 0.05)
            if key == "raw":
                raw_t = row["best_t"]
                row = summarise(title, sweep, seconds, evaluated, raw_t)
            best_t[key.split(":")[0]] = row["best_t"]
            rows.append(row)
            print(f"{name} | {title}: {row['miou']:.2f} at t {row['best_t']:.2f} ({row['ms_per_image']:.1f} ms/image)")
        report["sources"][name] = rows
        with open(os.path.join(a.out, "eval.json"), "w") as f:
            json.dump(report, f, indent=1)
        if a.montage:
            montage(a.voc, folder, a.montage.split(","), best_t, settings, os.path.join(a.out, f"montage-{name}.png"))
    with open(os.path.join(a.out, "eval.md"), "w") as f:
        f.write(markdown(report))
    try:
        plot_curves(report, os.path.join(a.out, "curves.png"))
    except ImportError:
        print("matplotlib not installed: no curves.png")
    print(markdown(report))


if __name__ == "__main__":
    main()
