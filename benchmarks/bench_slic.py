"""Workload W1: SLIC on 32 RGB 512x512 uint8 images, n_segments=1000, compactness 10, 10 iterations,
connectivity on. spl (CPU, CUDA) against spl.reference on the same device and the peers a user would
otherwise pick (scikit-image, fast-slic, OpenCV ximgproc, cuda-slic), each with its quality
(boundary recall, undersegmentation error, achievable segmentation accuracy) on images with ground
truth: the PASCAL VOC images of --voc when present, else collages of scikit-image samples.

    python benchmarks/bench_slic.py [--device cpu|cuda|all] [--quick] [--json out.json]

Timing: warm-up first, then the median (and min-max) of several runs; two input batches alternate
so caches do not flatter; CUDA timings synchronise before and after. Missing peers are skipped.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

import spl
from spl import metrics, reference

N_SEGMENTS, COMPACTNESS, ITERATIONS = 1000, 10.0, 10


def load_images(voc_dir: str, size: int):
    """(timing batch source [N, size, size, 3], quality images, quality ground truths)."""
    from PIL import Image
    from skimage import data, transform

    files = sorted(glob.glob(os.path.join(voc_dir, "JPEGImages", "*.jpg")))
    if files:
        imgs = [np.array(Image.open(f).convert("RGB")) for f in files]
        gts = [np.array(Image.open(f.replace("JPEGImages", "SegmentationClass").replace(".jpg", ".png"))) for f in files]
        source = "PASCAL VOC 2012 ({} images)".format(len(files))
    else:
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
        from conftest import collage

        pairs = [collage(seed, size=256) for seed in range(8)]
        imgs, gts = [p[0] for p in pairs], [p[1] for p in pairs]
        source = "collages of scikit-image samples (no VOC data found)"
    pool = imgs + [data.astronaut(), data.coffee(), data.chelsea()]
    resized = [(transform.resize(im[..., :3], (size, size), anti_aliasing=True) * 255).astype(np.uint8) for im in pool]
    return np.stack(resized), imgs, gts, source


def timed(fn, repeats: int, sync: bool = False):
    fn(0)  # warm-up
    times = []
    for r in range(repeats):
        if sync:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn(r)
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), max(times)


def quality(segment, imgs, gts):
    scores = [metrics.superpixel_scores(segment(im), gt, ignore_index=255) for im, gt in zip(imgs, gts)]
    return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    parser.add_argument("--voc", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "voc-dev"))
    parser.add_argument("--quick", action="store_true", help="small workload (CI): 4 images of 256x256")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args(argv)

    batch, size = (4, 256) if args.quick else (32, 512)
    repeats = 3 if args.quick else 7
    pool, q_imgs, q_gts, source = load_images(args.voc, size)
    rng = np.random.default_rng(0)
    batches = [pool[rng.integers(0, len(pool), batch)] for _ in range(2)]  # alternate between two
    tensors = [torch.from_numpy(b).permute(0, 3, 1, 2).contiguous() for b in batches]
    if args.quick:
        q_imgs, q_gts = q_imgs[:3], q_gts[:3]

    devices = []
    if args.device in ("cpu", "all"):
        devices.append("cpu")
    if args.device in ("cuda", "all") and torch.cuda.is_available() and spl.has_cuda_kernels():
        devices.append("cuda")

    rows = []

    def add(name, device, per_batch, per_image_n, q):
        med, lo, hi = per_batch
        rows.append({"method": name, "device": device, "ms_per_batch": med * 1e3, "ms_min": lo * 1e3,
                     "ms_max": hi * 1e3, "images": per_image_n, "ms_per_image": med * 1e3 / per_image_n, **q})

    def spl_segment(device):
        return lambda im: spl.slic(torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).to(device),
                                   N_SEGMENTS, COMPACTNESS, ITERATIONS).cpu().numpy()

    for device in devices:
        sync = device == "cuda"
        gpu = [t.to(device) for t in tensors]
        t = timed(lambda r: spl.slic(gpu[r % 2], N_SEGMENTS, COMPACTNESS, ITERATIONS), repeats, sync)
        add("spl", device, t, batch, quality(spl_segment(device), q_imgs, q_gts))
        # The reference is slow: time a slice of the batch, once or twice.
        n_ref = batch if device == "cuda" else max(1, batch // 16)
        t = timed(lambda r: reference.slic(gpu[r % 2][:n_ref], N_SEGMENTS, COMPACTNESS, ITERATIONS), 2, sync)
        add("spl.reference (float64)", device, t, n_ref, {})

    def per_image_peer(name, segment, device="cpu", n_images=batch):
        t = timed(lambda r: [segment(im) for im in batches[r % 2][:n_images]], repeats if n_images == batch else 1)
        add(name, device, t, n_images, quality(segment, q_imgs, q_gts))

    try:
        from skimage.segmentation import slic as sk_slic

        per_image_peer("scikit-image slic", lambda im: sk_slic(im, n_segments=N_SEGMENTS, compactness=COMPACTNESS,
                                                               max_num_iter=ITERATIONS, start_label=0),
                       n_images=min(batch, 4))
    except ImportError:
        print("skipped: scikit-image not installed")
    try:
        from fast_slic.avx2 import SlicAvx2

        per_image_peer("fast-slic (AVX2)", lambda im: SlicAvx2(num_components=N_SEGMENTS, compactness=COMPACTNESS,
                                                               num_threads=torch.get_num_threads()).iterate(
            np.ascontiguousarray(im), max_iter=ITERATIONS))
    except ImportError:
        print("skipped: fast-slic not installed")
    try:
        import cv2

        def opencv(im):
            lab = cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2LAB)
            step = int(round((im.shape[0] * im.shape[1] / N_SEGMENTS) ** 0.5))
            s = cv2.ximgproc.createSuperpixelSLIC(lab, algorithm=cv2.ximgproc.SLIC, region_size=step,
                                                  ruler=COMPACTNESS)
            s.iterate(ITERATIONS)
            s.enforceLabelConnectivity(25)
            return s.getLabels()

        per_image_peer("OpenCV ximgproc SLIC", opencv, n_images=min(batch, 8))
    except (ImportError, AttributeError):
        print("skipped: opencv-contrib-python not installed")
    if "cuda" in devices:
        try:
            from cuda_slic.slic import slic as cuda_slic

            per_image_peer("cuda-slic", lambda im: cuda_slic(im, n_segments=N_SEGMENTS, compactness=COMPACTNESS,
                                                             max_iter=ITERATIONS), "cuda")
        except ImportError:
            print("skipped: cuda-slic not installed")

    env = {
        "date": datetime.date.today().isoformat(), "torch": torch.__version__, "spl": spl.__version__,
        "cuda_kernels": spl.cuda_version(), "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if "cuda" in devices else None,
        "workload": f"W1: {batch} RGB {size}x{size} uint8, n_segments={N_SEGMENTS}, compactness {COMPACTNESS}, "
                    f"{ITERATIONS} iterations, connectivity on", "quality images": source,
    }
    print(f"# {env['workload']}")
    print(f"# torch {env['torch']}, {env['threads']} CPU threads, GPU: {env['gpu']}, {env['date']}")
    print(f"# quality on {source}")
    print("| method | device | ms / batch (median, min-max) | ms / image | BR | UE | ASA | segments |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        q = (f"{r['boundary_recall']:.3f} | {r['undersegmentation_error']:.4f} | "
             f"{r['achievable_segmentation_accuracy']:.4f} | {r['segments']:.0f}") if "boundary_recall" in r else "| | |"
        per_batch = f"{r['ms_per_batch']:.1f} ({r['ms_min']:.1f}-{r['ms_max']:.1f})"
        if r["images"] != batch:
            per_batch += f" for {r['images']} images"
        print(f"| {r['method']} | {r['device']} | {per_batch} | {r['ms_per_image']:.2f} | {q} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
