"""spl bench's command line: arguments, the run, saving as it goes."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import List, Sequence

import torch

from .data import _voc_files, default_synth, default_voc, default_voc_val
from .report import environment, plot, plot_slic_quality, tables
from .workloads import WORKLOADS, Bench, BenchError

# ---------------------------------------------------------------------------------------------- CLI


def parse_workloads(text: str) -> List[str]:
    chosen = [w.strip() for w in text.split(",") if w.strip()]
    by_name = {w.lower(): w for w in WORKLOADS}
    unknown = [w for w in chosen if w.lower() not in by_name]
    if unknown or not chosen:
        raise BenchError(f"--workload: unknown {', '.join(unknown) or '(empty)'}; choose from {','.join(WORKLOADS)}")
    return [by_name[w.lower()] for w in chosen]


def merge_reports(paths: Sequence[str]) -> dict:
    """One report from several runs on the same device (e.g. workloads measured in separate calls)."""
    reports = []
    for path in paths:
        try:
            with open(path) as f:
                reports.append(json.load(f))
        except (OSError, ValueError) as e:
            raise BenchError(f"--merge {path}: cannot read a bench.json ({e})") from None
        if not isinstance(reports[-1], dict) or "environment" not in reports[-1] or "results" not in reports[-1]:
            raise BenchError(f"--merge {path}: not a spl bench report")
    devices = {(r["environment"]["device"], r["environment"]["gpu"] or r["environment"]["cpu"]) for r in reports}
    if len(devices) > 1:
        raise BenchError(f"--merge: the reports come from different devices {sorted(devices)}")
    merged = {
        "environment": reports[0]["environment"],
        "complete": all(r.get("complete") for r in reports),
        "merged_from": [dict(r["environment"], arguments=r.get("arguments")) for r in reports],
        "results": [],
        "scaling": [],
        "skipped": [],
        "notes": {},
        "seconds": 0.0,
    }
    for r in reports:
        merged["results"] += r["results"]
        merged["scaling"] += r.get("scaling", [])
        merged["skipped"] += r.get("skipped", [])
        merged["seconds"] += r.get("seconds", 0.0)
        if r.get("contention"):
            merged["contention"] = r["contention"]  # the last run's, whole (its rows are side by side)
        for k, v in r.get("notes", {}).items():
            merged["notes"].setdefault(k, []).extend(n for n in v if n not in merged["notes"].get(k, []))
    return merged


def write_outputs(report: dict, out: str) -> List[str]:
    """bench.json, bench.md and the plots of a report; prints the tables."""
    os.makedirs(out, exist_ok=True)
    json_path = os.path.join(out, "bench.json")
    with open(json_path + ".tmp", "w") as f:
        json.dump(report, f, indent=1)
    os.replace(json_path + ".tmp", json_path)
    text = tables(report)
    print("\n" + text)
    with open(os.path.join(out, "bench.md"), "w") as f:
        f.write(text + "\n")
    written = [json_path]
    if report["scaling"] or any(r["workload"] == "W1 quality" for r in report["results"]):
        try:
            written += plot(report, out) + plot_slic_quality(report, out)
        except ImportError:
            print("spl bench: matplotlib is not installed: no plots (pip install matplotlib)", file=sys.stderr)
    return written


def _checked_inputs(args):
    """(workloads, device, voc, synth, voc_val) from the options, the data folders found by default
    where not given; a BenchError (a usage error) names the option that is wrong."""
    from ... import ops

    workloads = parse_workloads(args.workload)
    cuda_here = torch.cuda.is_available() and ops.has_cuda_kernels()
    device = args.device or ("cuda" if cuda_here else "cpu")
    if device not in ("cpu", "cuda"):
        raise BenchError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not cuda_here:
        raise BenchError("--device cuda: no CUDA GPU here, or spl was built without CUDA kernels")
    if args.contention and device != "cpu":
        raise BenchError("--contention measures the CPU kernels: use it with --device cpu")
    if args.scaling_only and not (args.scaling and {"W1", "W3"} & set(workloads)):
        raise BenchError("--scaling-only needs the sweeps (no --no-scaling) of W1 or W3 in --workload")
    voc = args.voc if args.voc is not None else default_voc()
    if args.voc is not None and not _voc_files(args.voc):
        raise BenchError(f"--voc {args.voc}: no JPEGImages/*.jpg there")
    synth = args.synth if args.synth is not None else default_synth(voc)
    if args.synth is not None and not os.path.isfile(args.synth):
        raise BenchError(f"--synth {args.synth}: no such file")
    voc_val = args.voc_val if args.voc_val is not None else default_voc_val()
    if args.voc_val is not None and not _voc_files(args.voc_val):
        raise BenchError(f"--voc-val {args.voc_val}: no JPEGImages/*.jpg there")
    if args.w3_cams is not None and not os.path.isdir(args.w3_cams):
        raise BenchError(f"--w3-cams {args.w3_cams}: not a folder")
    if synth is None and voc_val is not None:
        synth = default_synth(voc_val)
    return workloads, device, voc, synth, voc_val


class _ReportFile:
    """bench.json, written atomically after every stage: a job cut short keeps its figures."""

    def __init__(self, out: str, env: dict, arguments: dict, bench: Bench):
        self.path = os.path.join(out, "bench.json")
        self.env, self.arguments, self.bench = env, arguments, bench
        self.contention: dict = {}
        self.start = time.perf_counter()

    def save(self, complete: bool) -> dict:
        bench = self.bench
        report = {
            "environment": self.env,
            "complete": complete,
            "arguments": self.arguments,
            "results": bench.rows,
            "scaling": bench.scaling,
            "skipped": bench.skipped,
            "notes": bench.notes,
            "contention": self.contention,
            "seconds": time.perf_counter() - self.start,
        }
        with open(self.path + ".tmp", "w") as f:
            json.dump(report, f, indent=1)
        os.replace(self.path + ".tmp", self.path)
        return report


def _stages(args, bench: Bench, workloads) -> list:
    """The workloads asked for, then the scaling sweeps of W1 (SLIC) and W3 (ASAM)."""
    run = {"W1": bench.w1, "W2": bench.w2, "W3": bench.w3, "refine": bench.refine}
    stages = [] if args.scaling_only else [run[w] for w in workloads]
    if args.scaling and "W1" in workloads:
        stages.append(lambda: bench.sweep("SLIC"))
    if args.scaling and "W3" in workloads:
        stages.append(lambda: bench.sweep("ASAM"))
    return stages


def run_bench(args) -> int:
    try:
        if args.merge:
            print("spl bench: wrote " + ", ".join(write_outputs(merge_reports(args.merge), args.out)))
            return 0
        workloads, device, voc, synth, voc_val = _checked_inputs(args)
    except BenchError as e:
        print(f"spl bench: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    bench = Bench(
        device,
        quick=args.quick,
        peers=args.peers,
        voc=voc,
        synth=synth,
        voc_val=voc_val,
        w3_cams=args.w3_cams,
        w3_images=args.w3_images,
    )
    arguments = {"workloads": workloads, "quick": args.quick, "peers": args.peers, "voc": voc, "synth": synth}
    report = _ReportFile(args.out, environment(device, bench.bandwidth), dict(arguments, scaling=args.scaling), bench)
    bench.progress = lambda: report.save(complete=False)
    if args.contention:
        from .contention import run_contention

        report.contention.update(run_contention(voc, args.quick))
    else:
        for stage in _stages(args, bench, workloads):
            stage()
            report.save(complete=False)
    written = write_outputs(report.save(complete=True), args.out)
    print(f"\nspl bench: {time.perf_counter() - report.start:.0f} s; wrote " + ", ".join(written))
    return 0


def add_arguments(p) -> None:
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--workload", default=",".join(WORKLOADS), help="comma-separated subset of W1,W2,W3,refine")
    p.add_argument("--quick", action="store_true", help="small sizes: under a minute on a 2-core CPU (CI)")
    p.add_argument(
        "--peers",
        action="store_true",
        help="also time the installed peers (scikit-image, fast-slic, OpenCV ximgproc, cuda-slic, pydensecrf2)",
    )
    p.add_argument("--out", default="spl-out/bench", help="folder for bench.json, bench.md and the plots")
    p.add_argument(
        "--no-scaling", dest="scaling", action="store_false", help="skip the sweeps over batch size, image size and K"
    )
    p.add_argument("--scaling-only", action="store_true", help="only the sweeps (of W1: SLIC, of W3: ASAM)")
    p.add_argument(
        "--contention",
        action="store_true",
        help="instead of the workloads: every CPU workload idle, beside a busy torch process, and with one "
        "thread beside it, each in a fresh process (spl/apps/bench/contention.py); --quick: two of them",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="combine the bench.json files of several runs on one "
        "device into --out (tables, JSON, plots); runs nothing",
    )
    p.add_argument(
        "--voc",
        help="PASCAL VOC-style folder (JPEGImages, SegmentationClass) for the photos and the "
        "quality figures (default: $SPL_VOC or the project's shared/data/voc-dev; else "
        "scikit-image samples)",
    )
    p.add_argument(
        "--voc-val",
        help="voc-val-dev-style folder for W3's quality figures, on the report half of "
        "benchmarks/splits (default: $SPL_VOC_VAL or the project's shared/data/voc-val-dev)",
    )
    p.add_argument(
        "--w3-cams",
        help="folder of IRN-format CAMs of those images for W3's quality (e.g. real CAMs "
        "from shared/tools/real_cams.py; default: simulated by --synth)",
    )
    p.add_argument("--w3-images", type=int, default=60, help="images of W3's quality figures (default 60)")
    p.add_argument(
        "--synth",
        help="CAM simulator for the ASAM quality figures (default: $SPL_SYNTH_CAMS or "
        "shared/tools/synth_cams.py beside the VOC folder; else scenes of known shapes)",
    )
