"""ASAM quality: raw CAM vs DenseCRF vs ASAM on PASCAL VOC images with simulated CAMs.

    python benchmarks/eval_asam.py [--voc DIR] [--cams DIR] [--device cpu|cuda] [--json out.json]

CAMs: IRN-format ``.npy`` files in --cams; when that folder is not given, they are made with the
project's ``synth_cams.py`` tool (../shared/tools) from the VOC ground truth. Each method turns the
CAM into a label map with the background threshold t (raw: ``cam_to_mask(cam, t)``; DenseCRF: the
background's probability is t before normalising; ASAM: ``bg_threshold=t``), only the classes of the
image-level label compete, and mIoU (21 VOC classes, 255 ignored) is taken over the data set at the
best t of each method on a common grid. Timings: median milliseconds per image, one image per call,
at that threshold (SLIC included for ASAM). DenseCRF (pydensecrf2, 10 iterations, Gaussian sxy=3
compat=3, bilateral sxy=50 srgb=5 compat=10) is skipped when not installed.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

import spl
from spl.metrics import ConfusionMatrix

HERE = os.path.dirname(os.path.abspath(__file__))
GRID = np.round(np.arange(0.05, 0.41, 0.02), 2)


def load(voc_dir: str, cam_dir: str):
    items = []
    for f in sorted(glob.glob(os.path.join(voc_dir, "JPEGImages", "*.jpg"))):
        from PIL import Image

        name = os.path.splitext(os.path.basename(f))[0]
        image = np.array(Image.open(f).convert("RGB"))
        gt = np.array(Image.open(os.path.join(voc_dir, "SegmentationClass", name + ".png")))
        d = np.load(os.path.join(cam_dir, name + ".npy"), allow_pickle=True).item()
        cam = np.zeros((20,) + gt.shape, np.float32)
        cam[d["keys"]] = d["high_res"]
        present = np.zeros(20, bool)
        present[d["keys"]] = True
        items.append((name, image, gt, cam, present))
    return items


def densecrf(image, cam, present, t):
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    fg = cam[present]
    H, W = image.shape[:2]
    probs = np.concatenate([np.full((1, H, W), t, np.float32), fg])
    probs = probs / probs.sum(0, keepdims=True)
    d = dcrf.DenseCRF2D(W, H, probs.shape[0])
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(image), compat=10)
    q = np.array(d.inference(10)).reshape(-1, H, W).argmax(0)
    classes = np.concatenate([[0], np.nonzero(present)[0] + 1])
    return classes[q]


def evaluate(name, predict, items, grid):
    """(best mIoU, best t, per-class IoU at best t, median ms per image at best t)."""
    best = None
    for t in grid:
        cm = ConfusionMatrix(21)
        for item in items:
            cm.update(predict(item, t), item[2])
        if best is None or cm.miou() > best[0]:
            best = (cm.miou(), float(t), cm.iou())
    times = []
    for item in items:
        predict(item, best[1])  # warm (caches, CUDA)
        start = time.perf_counter()
        predict(item, best[1])
        times.append(time.perf_counter() - start)
    print(f"{name:10s} mIoU {100 * best[0]:.2f} at t = {best[1]:.2f}, {1e3 * statistics.median(times):.1f} ms/image",
          flush=True)
    return {"method": name, "miou": 100 * best[0], "threshold": best[1],
            "iou": [None if np.isnan(v) else 100 * v for v in best[2].tolist()],
            "ms_per_image": 1e3 * statistics.median(times)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voc", default=os.path.join(HERE, "..", "..", "shared", "data", "voc-dev"))
    parser.add_argument("--cams", help="folder of IRN .npy CAMs (default: simulate them with synth_cams.py)")
    parser.add_argument("--synth", default=os.path.join(HERE, "..", "..", "shared", "tools", "synth_cams.py"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() and spl.has_cuda_kernels() else "cpu")
    parser.add_argument("--no-densecrf", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    if not glob.glob(os.path.join(args.voc, "JPEGImages", "*.jpg")):
        sys.exit(f"eval_asam: no VOC images in {args.voc}/JPEGImages (use --voc)")
    tmp = None
    if args.cams is None:
        if not os.path.exists(args.synth):
            sys.exit(f"eval_asam: no --cams folder and no CAM simulator at {args.synth} (use --synth)")
        tmp = tempfile.TemporaryDirectory()
        subprocess.run([sys.executable, args.synth, args.voc, tmp.name], check=True, stdout=subprocess.DEVNULL)
        args.cams = tmp.name
    items = load(args.voc, args.cams)
    device = torch.device(args.device)
    print(f"# ASAM vs DenseCRF: {len(items)} VOC images, simulated CAMs, device {device}, torch {torch.__version__}")

    def raw(item, t):
        return spl.cam_to_mask(item[3], t, item[4])

    def asam(item, t):
        image = torch.from_numpy(item[1]).permute(2, 0, 1)[None].to(device)
        cam = torch.from_numpy(item[3])[None].to(device)
        mask = torch.from_numpy(item[4])[None].to(device)
        out = spl.asam_refine(image, cam, bg_threshold=t, class_mask=mask)
        return spl.cam_to_mask(out, t, mask)[0].cpu().numpy()

    rows = [evaluate("raw CAM", raw, items, GRID)]
    try:
        if args.no_densecrf:
            raise ImportError
        import pydensecrf.densecrf  # noqa: F401

        rows.append(evaluate("DenseCRF", lambda item, t: densecrf(item[1], item[3], item[4], t), items, GRID))
    except ImportError:
        print("DenseCRF   skipped (pydensecrf2 not installed)")
    rows.append(evaluate(f"ASAM ({device.type})", asam, items, GRID))
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
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
