"""Workload W3: ASAM on 32 VOC-size images (375x500), 20 foreground classes (21 with the background),
K = 1000 superpixels, 40 propagation rounds per message, SLIC included.

    python benchmarks/bench_asam.py [--device cpu|cuda|all] [--quick] [--json out.json]

Rows: spl.asam_refine with its defaults (5 mean-field steps of 40 rounds each) and with one step (a
single 40-round propagation), SLIC included; the refinement alone (superpixels given) for spl and for
the plain-PyTorch pipeline of spl.reference.asam_refine (torch.sparse CSR products in a Python loop) on
the same device; DenseCRF (pydensecrf2, CPU, 10 iterations) per image when installed. Timing: warm-up,
then the median (min-max) of several runs, two input batches alternating, CUDA synchronised; on the
GPU the DRAM floor (CAM read + refined scores written + image read, at the measured copy bandwidth).
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

import spl
from spl import reference

HERE = os.path.dirname(os.path.abspath(__file__))
H, W, C_FG = 375, 500, 20


def inputs(voc_dir, batch, size, seed):
    """(images uint8 [B, 3, H, W], CAMs float32 [B, 20, H, W], class_mask [B, 20]): VOC images when found
    (else scikit-image samples), CAMs made by blurring one-hot masks of a few random classes."""
    from PIL import Image

    files = sorted(glob.glob(os.path.join(voc_dir, "JPEGImages", "*.jpg")))
    if files:
        pool = [np.array(Image.open(f).convert("RGB").resize((size[1], size[0]))) for f in files]
    else:
        from skimage import data, transform

        pool = [(transform.resize(im[..., :3], size) * 255).astype(np.uint8)
                for im in (data.astronaut(), data.coffee(), data.chelsea())]
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(pool), (batch,), generator=g)
    images = torch.from_numpy(np.stack([pool[i] for i in idx])).permute(0, 3, 1, 2).contiguous()
    coarse = torch.rand(batch, C_FG, size[0] // 16 + 1, size[1] // 16 + 1, generator=g)
    mask = torch.zeros(batch, C_FG, dtype=torch.bool)
    for b in range(batch):
        mask[b, torch.randperm(C_FG, generator=g)[:3]] = True
    cams = F.interpolate(coarse * mask[:, :, None, None], size=size, mode="bilinear", align_corners=False)
    return images, cams.contiguous(), mask


def timed(fn, repeats, sync):
    fn(0)
    times = []
    for r in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(r)
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def copy_bandwidth(device):
    a = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    t = timed(lambda r: b.copy_(a), 10, True)[0]
    return 2 * a.numel() / t


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    parser.add_argument("--voc", default=os.path.join(HERE, "..", "..", "shared", "data", "voc-dev"))
    parser.add_argument("--quick", action="store_true", help="B=2, 128x160, K=100 (CI)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    batch, size, K = (2, (128, 160), 100) if args.quick else (32, (H, W), 1000)
    devices = ["cpu"] if args.device in ("cpu", "all") else []
    if args.device in ("cuda", "all") and torch.cuda.is_available() and spl.has_cuda_kernels():
        devices.append("cuda")
    rows = []
    for device in devices:
        sync = device == "cuda"
        repeats = 3 if device == "cpu" else 10
        data = [tuple(t.to(device) for t in inputs(args.voc, batch, size, seed)) for seed in (0, 1)]
        labels = [spl.slic(d[0], K) for d in data]
        n_ref = batch if device == "cuda" else max(1, batch // 8)

        def add(name, t, images):
            rows.append({"method": name, "device": device, "ms_per_batch": 1e3 * t[0], "ms_min": 1e3 * t[1],
                         "ms_max": 1e3 * t[2], "images": images, "ms_per_image": 1e3 * t[0] / images})

        add("spl.asam_refine, defaults (5 x 40 rounds), SLIC included",
            timed(lambda r: spl.asam_refine(data[r % 2][0], data[r % 2][1], class_mask=data[r % 2][2],
                                            n_segments=K), repeats, sync), batch)
        add("spl.asam_refine, 1 x 40 rounds, SLIC included",
            timed(lambda r: spl.asam_refine(data[r % 2][0], data[r % 2][1], class_mask=data[r % 2][2],
                                            n_segments=K, steps=1), repeats, sync), batch)
        add("spl.asam_refine, defaults, superpixels given",
            timed(lambda r: spl.asam_refine(data[r % 2][0], data[r % 2][1], labels[r % 2],
                                            class_mask=data[r % 2][2]), repeats, sync), batch)
        add("spl.reference.asam_refine (torch.sparse), superpixels given",
            timed(lambda r: reference.asam_refine(data[r % 2][0][:n_ref], data[r % 2][1][:n_ref],
                                                  labels[r % 2][:n_ref], data[r % 2][2][:n_ref]), 2, sync), n_ref)
        if sync:
            floor = (data[0][1].numel() * 4 * 2 + data[0][0].numel()) / copy_bandwidth(device)
            for r in rows:
                if r["device"] == device and r["images"] == batch:
                    r["dram_floor_ms"] = 1e3 * floor
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax

        images, cams, mask = inputs(args.voc, 2, size, 0)

        def crf(r):
            img = np.ascontiguousarray(images[r % 2].permute(1, 2, 0).numpy())
            fg = cams[r % 2][mask[r % 2]].numpy()
            probs = np.concatenate([np.full((1,) + size, 0.15, np.float32), fg])
            probs /= probs.sum(0, keepdims=True)
            d = dcrf.DenseCRF2D(size[1], size[0], probs.shape[0])
            d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
            d.addPairwiseGaussian(sxy=3, compat=3)
            d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=img, compat=10)
            return np.array(d.inference(10))

        t = timed(crf, 3, False)
        rows.append({"method": "DenseCRF (pydensecrf2, 10 iterations)", "device": "cpu", "ms_per_batch": 1e3 * t[0],
                     "ms_min": 1e3 * t[1], "ms_max": 1e3 * t[2], "images": 1, "ms_per_image": 1e3 * t[0]})
    except ImportError:
        print("skipped: pydensecrf2 not installed")

    header = (f"# W3: {batch} images {size[0]}x{size[1]}, {C_FG} foreground classes (+ background), K = {K}, "
              f"40 rounds per message; torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
              + (f", GPU: {torch.cuda.get_device_name()}" if "cuda" in devices else "")
              + f", {datetime.date.today().isoformat()}")
    print(header)
    print("| method | device | ms / batch (median, min-max) | images | ms / image | DRAM floor ms |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        floor = f"{r['dram_floor_ms']:.2f}" if "dram_floor_ms" in r else ""
        print(f"| {r['method']} | {r['device']} | {r['ms_per_batch']:.1f} ({r['ms_min']:.1f}-{r['ms_max']:.1f}) | "
              f"{r['images']} | {r['ms_per_image']:.2f} | {floor} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "rows": rows, "torch": torch.__version__,
                       "date": datetime.date.today().isoformat()}, f, indent=1)


if __name__ == "__main__":
    main()
