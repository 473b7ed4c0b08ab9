"""ASAM quality: raw CAM vs DenseCRF vs ASAM on PASCAL VOC images with simulated (or your own) CAMs.

    python benchmarks/eval_asam.py [--voc DIR] [--cams DIR] [--device cpu|cuda] [--json out.json]

CAMs: IRN-format ``.npy`` files in --cams; when that folder is not given, they are made with the
project's ``synth_cams.py`` tool (../shared/tools) from the VOC ground truth. Each method turns the
CAM into a label map with the background threshold t (raw: ``cam_to_mask(cam, t)``; DenseCRF: the
background's probability is t before normalising; ASAM: ``bg_threshold=t``), only the classes of the
image-level label compete, and mIoU (21 VOC classes, 255 ignored) is taken over the data set at the
best t of each method on the grid 0.05, 0.07, ..., 0.39. Timings: median milliseconds per image, one
image per call, at that threshold (SLIC included for ASAM). DenseCRF (pydensecrf2, 10 iterations,
Gaussian sxy=3 compat=3, bilateral sxy=50 srgb=5 compat=10) is skipped when not installed.
``spl bench --workload W3`` runs the same evaluation (spl.bench.asam_quality) beside its timings.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

import spl
from spl import bench

HERE = os.path.dirname(os.path.abspath(__file__))
GRID = [round(float(t), 2) for t in np.arange(0.05, 0.41, 0.02)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voc", default=os.path.join(HERE, "..", "..", "shared", "data", "voc-dev"))
    parser.add_argument("--cams", help="folder of IRN .npy CAMs (default: simulate them with synth_cams.py)")
    parser.add_argument("--synth", default=os.path.join(HERE, "..", "..", "shared", "tools", "synth_cams.py"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() and spl.has_cuda_kernels() else "cpu")
    parser.add_argument("--no-densecrf", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    if not bench._voc_files(args.voc):
        sys.exit(f"eval_asam: no VOC images in {args.voc}/JPEGImages (use --voc)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.cams is None:
            if not os.path.exists(args.synth):
                sys.exit(f"eval_asam: no --cams folder and no CAM simulator at {args.synth} (use --synth)")
            subprocess.run([sys.executable, args.synth, args.voc, tmp], check=True, stdout=subprocess.DEVNULL)
            args.cams = tmp
        items = bench.voc_cam_items(args.voc, args.cams)
    device = torch.device(args.device)
    print(f"# ASAM vs DenseCRF: {len(items)} VOC images, device {device}, torch {torch.__version__}")

    def asam(item, t):
        image = torch.from_numpy(item[1]).permute(2, 0, 1)[None].to(device)
        cam = torch.from_numpy(item[3])[None].to(device)
        mask = torch.from_numpy(item[4])[None].to(device)
        out = spl.asam_refine(image, cam, bg_threshold=t, class_mask=mask)
        return spl.cam_to_mask(out, t, mask)[0].cpu().numpy()

    methods = {"raw CAM": lambda item, t: spl.cam_to_mask(item[3], t, item[4])}
    if not args.no_densecrf and bench.has_densecrf():
        methods["DenseCRF"] = lambda item, t: bench.densecrf(item[1], item[3], item[4], t)
    else:
        print("DenseCRF skipped" + ("" if args.no_densecrf else " (pydensecrf2 not installed)"))
    methods[f"ASAM ({device.type})"] = asam
    rows = bench.asam_quality(methods, items, GRID)
    report = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "device": str(device),
              "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None, "images": len(items),
              "defaults": spl.asam.ASAM_DEFAULTS, "results": rows}
    print("\n| method | mIoU | gain over raw CAM | best t | ms / image |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['miou']:.2f} | {r['miou'] - rows[0]['miou']:+.2f} | {r['threshold']:.2f} | "
              f"{r['ms_per_image']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
