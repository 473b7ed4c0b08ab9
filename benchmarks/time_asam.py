"""ASAM's time per VOC image on one CPU thread, SLIC included (issue 15's target), called as
benchmarks/eval_asam.py calls it: ``spl.asam_refine(image [H, W, 3] uint8, cam [n_keys, H, W])``.

    python benchmarks/time_asam.py --cams benchmarks/cache/real-os16 [--voc ../shared/data/voc-val-dev] \
        [--repeats 3] [--json out.json]

For each image of --cams (IRN-format CAMs, names from the report half), ``--repeats`` calls: the first
call's time (each image refined once, as a user's data set is) and the best of the calls, with their
mean, median and 90th percentile over the images. To compare two builds side by side, run it
alternately with ``PYTHONPATH`` pointing at each checkout (the figures of RESULTS.md were taken so).
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cams", required=True, help="folder of IRN-format CAMs (<name>.npy)")
    p.add_argument(
        "--voc",
        default=os.path.join(HERE, "..", "..", "shared", "data", "voc-val-dev"),
        help="voc-val-dev-style folder (JPEGImages/)",
    )
    p.add_argument("--images", type=int, default=40, help="at most this many images (default 40)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    from PIL import Image

    import spl

    torch.set_num_threads(1)
    names = sorted(f[:-4] for f in os.listdir(args.cams) if f.endswith(".npy"))[: args.images]
    if not names:
        sys.exit(f"time_asam: no .npy CAMs in {args.cams}")
    data = []
    for name in names:
        # Read here, not with spl's readers: the script also times older checkouts.
        cam = np.load(os.path.join(args.cams, name + ".npy"), allow_pickle=True).item()
        image = np.array(Image.open(os.path.join(args.voc, "JPEGImages", name + ".jpg")).convert("RGB"))
        data.append((image, np.ascontiguousarray(cam["high_res"], np.float32)))
    for image, cam in data[:3]:  # warm-up
        spl.asam_refine(image, cam)
    times = np.zeros((len(data), args.repeats))
    for i, (image, cam) in enumerate(data):
        for r in range(args.repeats):
            start = time.perf_counter()
            spl.asam_refine(image, cam)
            times[i, r] = (time.perf_counter() - start) * 1e3
    first, best = times[:, 0], times.min(1)
    stats = {
        k: {"mean": float(v.mean()), "median": float(np.median(v)), "p90": float(np.percentile(v, 90))}
        for k, v in (("first_call_ms", first), ("best_ms", best))
    }
    pixels = float(np.mean([im.shape[0] * im.shape[1] for im, _ in data]))
    print(
        f"{os.path.dirname(spl.__file__)}: {len(data)} images ({pixels / 1e3:.0f}k pixels on average), one thread: "
        f"first call mean {stats['first_call_ms']['mean']:.2f} ms, median {stats['first_call_ms']['median']:.2f}; "
        f"best of {args.repeats} mean {stats['best_ms']['mean']:.2f}, median {stats['best_ms']['median']:.2f}, "
        f"p90 {stats['best_ms']['p90']:.2f}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "spl": os.path.dirname(spl.__file__),
                    "torch": torch.__version__,
                    "images": len(data),
                    "mean_pixels": pixels,
                    "repeats": args.repeats,
                    **stats,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
