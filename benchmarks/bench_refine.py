"""End-to-end throughput of ``spl refine``: images per second, from JPEG + IRN CAM files to masks on disk.

    python benchmarks/bench_refine.py [--copies 8] [--device cpu|cuda] [--batch-size 8] [--workers 2]

The data set: the VOC images of ../shared/data/voc-dev (native sizes), each copied --copies times
under new names, with CAMs simulated by ../shared/tools/synth_cams.py, in a temporary folder. The
job runs as a user would run it (``python -m spl refine``), so the figure includes start-up, decoding,
reading, refinement and writing; the time of a second run over the same outputs (everything already
done) is printed as well.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voc", default=os.path.join(HERE, "..", "..", "shared", "data", "voc-dev"))
    parser.add_argument("--synth", default=os.path.join(HERE, "..", "..", "shared", "tools", "synth_cams.py"))
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cams = os.path.join(tmp, "cams0")
        subprocess.run([sys.executable, args.synth, args.voc, cams], check=True, stdout=subprocess.DEVNULL)
        images, cam_dir = os.path.join(tmp, "images"), os.path.join(tmp, "cams")
        os.makedirs(images)
        os.makedirs(cam_dir)
        for f in sorted(os.listdir(os.path.join(args.voc, "JPEGImages"))):
            stem = os.path.splitext(f)[0]
            for c in range(args.copies):
                shutil.copy(os.path.join(args.voc, "JPEGImages", f), os.path.join(images, f"{stem}_{c}.jpg"))
                shutil.copy(os.path.join(cams, stem + ".npy"), os.path.join(cam_dir, f"{stem}_{c}.npy"))
        n = len(os.listdir(images))
        cmd = [sys.executable, "-m", "spl", "refine", "--images", images, "--cams", cam_dir, "--out",
               os.path.join(tmp, "out"), "--batch-size", str(args.batch_size), "--workers", str(args.workers),
               "--quiet"] + (["--device", args.device] if args.device else [])
        times = []
        for _ in range(2):
            start = time.perf_counter()
            result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)  # the installed spl
            times.append(time.perf_counter() - start)
            if result.returncode != 0:
                sys.exit(result.stdout + result.stderr)
        print(result.stdout.strip().splitlines()[0])
        print(f"spl refine, {n} VOC images (native sizes), batch {args.batch_size}, {args.workers} workers: "
              f"{times[0]:.1f} s end to end = {n / times[0]:.1f} images/s; rerun with everything done: "
              f"{times[1]:.1f} s")


if __name__ == "__main__":
    main()
