"""Chooses ASAM's defaults on the TUNING half of voc-val-dev (never the report half).

    python benchmarks/tune_asam.py --cams real-os16=DIR [--cams synth=DIR ...] \
        [--set diffuse_mix=0,0.5,1 --set core=0.9,2] [--limit N] [--json out.json]

Each ``--set name=v1,v2,...`` adds one axis; every combination is refined once per image and swept over
the background threshold (``spl.apps.cam_eval``). Prints, per CAM source, mIoU at the best t, that t, the mIoU at
the raw CAM's best t, and the worst per-class drop against the raw CAM. The split lists are in
benchmarks/splits/ (voc-val-dev-tune.txt, voc-val-dev-report.txt).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import spl  # noqa: E402
from spl.apps import cam_eval  # noqa: E402


def parse_value(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"none": None, "true": True, "false": False}.get(text.lower(), text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--voc", default=os.path.join(HERE, "..", "..", "shared", "data", "voc-val-dev"))
    p.add_argument("--ids", default=os.path.join(HERE, "splits", "voc-val-dev-tune.txt"))
    p.add_argument("--cams", action="append", required=True, help="NAME=DIR of IRN-format CAMs (repeatable)")
    p.add_argument("--set", action="append", default=[], help="NAME=V1,V2,... (repeatable)")
    p.add_argument("--limit", type=int)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json")
    a = p.parse_args(argv)
    if "report" in os.path.basename(a.ids):
        sys.exit("tune_asam: refusing to tune on the report half")
    torch.set_num_threads(a.threads)
    axes = [(k, [parse_value(v) for v in vs.split(",")]) for k, vs in (s.split("=", 1) for s in a.set)]
    combos = [dict(zip([k for k, _ in axes], vals)) for vals in itertools.product(*[v for _, v in axes])]
    ids = cam_eval.read_ids(a.ids)[: a.limit]
    report = {}
    for source in a.cams:
        name, folder = source.split("=", 1)
        names = [i for i in ids if os.path.exists(os.path.join(folder, i + ".npy"))]
        methods = [cam_eval.Method("raw CAM", scores=lambda it: it.cam)]
        for combo in combos:
            label = " ".join(f"{k}={v}" for k, v in combo.items()) or "defaults"
            methods.append(cam_eval.Method(label, scores=lambda it, kw=combo: spl.asam_refine(it.rgb, it.cam, **kw)))
        items = (cam_eval.load_item(a.voc, folder, i) for i in names)
        results = cam_eval.evaluate(methods, items)
        raw_t = results["raw CAM"].sweep.best()[0]
        print(f"\n## {name}: {len(names)} tuning images (raw CAM best t {raw_t})")
        print("| setting | mIoU | best t | at raw t | worst class vs raw | ms |\n|---|---|---|---|---|---|")
        rows = []
        raw_iou = results["raw CAM"].summary(raw_t)["iou"]
        for label, r in results.items():
            s = r.summary(raw_t)
            drops = [
                (s["iou"][c] - raw_iou[c], c) for c in raw_iou if s["iou"][c] is not None and raw_iou[c] is not None
            ]
            worst = min(drops)
            print(
                f"| {label} | {s['miou']:.2f} | {s['best_t']:.2f} | {s['miou_at_raw_t']:.2f} | "
                f"{worst[0]:+.1f} ({worst[1]}) | {s['ms_per_image']:.1f} |",
                flush=True,
            )
            rows.append(s)
        report[name] = rows
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
