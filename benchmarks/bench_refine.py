"""End-to-end throughput of ``spl refine``: images per second, from JPEG + IRN CAM files to masks on disk.

    python benchmarks/bench_refine.py [--copies 8] [--device cpu|cuda] [--batch-size 8] [--workers 2]

The data set: the VOC images of ../shared/data/voc-dev (native sizes; scenes of known shapes when it
is missing), each copied --copies times under new names, with CAMs simulated by
../shared/tools/synth_cams.py, in a temporary folder. The job runs as a user would run it
(``python -m spl refine``), so the figure includes start-up, decoding, reading, refinement and
writing; the time of a second run over the same outputs (everything already done) is printed as
well. ``spl bench --workload refine`` measures the same at batch 8 and 2 workers.
"""

from __future__ import annotations

import argparse
import os
import tempfile

from spl.apps import bench

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
        described, items = bench.cam_set(args.voc, args.synth if os.path.isfile(args.synth) else None, 11, tmp)
        root = bench.write_refine_dataset(items, tmp, args.copies)
        n = len(items) * args.copies
        cmd = [
            "--images",
            os.path.join(root, "images"),
            "--cams",
            os.path.join(root, "cams"),
            "--out",
            os.path.join(tmp, "out"),
            "--batch-size",
            str(args.batch_size),
            "--workers",
            str(args.workers),
            "--quiet",
        ] + (["--device", args.device] if args.device else [])
        first, again = bench.run_refine_job(cmd, tmp), bench.run_refine_job(cmd, tmp)
        print(
            f"spl refine, {n} images ({described}), batch {args.batch_size}, {args.workers} workers: "
            f"{first:.1f} s end to end = {n / first:.1f} images/s; rerun with everything done: {again:.1f} s"
        )


if __name__ == "__main__":
    main()
