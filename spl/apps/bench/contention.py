"""``spl bench --contention``: every CPU workload on an idle machine, beside a busy process, and with one
thread beside it, side by side.

Users run spl beside DataLoader workers, on shared nodes, next to a training job. What matters there
is whether the default thread count (all the CPUs) still pays: an op whose parallel regions wait for
a descheduled thread can run many times slower with its threads than with one. For each workload
and size this measures, each in a fresh process (the thread count is fixed before torch does any
work, as a user's would be):

- ``idle``: default threads, nothing else running;
- ``busy``: default threads, beside one co-running torch process (``python -m spl.apps.bench.contention
  busy``: short element-wise ops and a reduction on 40,000 floats in a loop, at torch's default
  threads, so its own threads keep entering and leaving parallel regions);
- ``busy, 1 thread``: ``torch.set_num_threads(1)``, beside the same process.

The ratio busy / (busy, 1 thread) is the figure of issue 16 (target <= 1.5); idle is compared with
earlier idle figures. Workloads on VOC-size (375x500) photos, K = 1000: ``slic``, ``superpixel_pool``
(21 channels, mean), ``consistency_weights``, ``superpixel_adjacency``, ``sparse_propagate`` (40
rounds, 21 channels) and ``asam_refine`` (defaults, 20 classes, 3 present), each on one image and on
a batch of 8.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

import torch

WORKLOADS = (
    "slic",
    "superpixel_pool",
    "consistency_weights",
    "superpixel_adjacency",
    "sparse_propagate",
    "asam_refine",
)
SETTINGS = ("idle", "busy", "busy, 1 thread")
SIZE = (375, 500)


def busy_loop() -> None:  # pragma: no cover  (runs until killed)
    x = torch.rand(40_000)
    y = torch.empty_like(x)
    while True:
        torch.mul(x, 1.0001, out=y)
        torch.add(y, x, out=y)
        y.sum()


def _workload(name: str, batch: int, voc: Optional[str]) -> Callable[[], object]:
    import spl

    from .data import asam_inputs, photo_pool

    images, cams, present = asam_inputs(photo_pool(voc)[:16], batch, SIZE)
    if name == "slic":
        return lambda: spl.slic(images, n_segments=1000, compactness=10.0)
    if name == "asam_refine":
        return lambda: spl.asam_refine(images, cams, class_mask=present)
    labels = spl.slic(images, n_segments=1000, compactness=10.0)
    counts = labels.flatten(1).amax(1) + 1
    K = int(counts.max())
    g = torch.Generator().manual_seed(0)
    if name == "superpixel_pool":
        x = torch.rand(batch, 21, *SIZE, generator=g)
        return lambda: spl.superpixel_pool(x, labels, K)
    if name == "consistency_weights":
        target = torch.randint(0, 21, (batch, *SIZE), generator=g)
        return lambda: spl.consistency_weights(target, labels, K, 21)
    if name == "superpixel_adjacency":
        return lambda: spl.superpixel_adjacency(labels, counts)
    if name == "sparse_propagate":
        graph = spl.superpixel_adjacency(labels, counts)
        weight = torch.rand(graph.num_edges, generator=g)
        x = torch.rand(int(counts.sum()), 21, generator=g)
        return lambda: spl.sparse_propagate(graph, weight, x, 40)
    raise ValueError(f"spl bench --contention: unknown workload {name!r}")


def time_workload(name: str, batch: int, threads: Optional[int], voc: Optional[str], budget_s: float) -> dict:
    """Median time (ms) of the workload in this process: a warm-up call, then calls until the budget is
    spent (at least 5)."""
    if threads is not None:
        torch.set_num_threads(threads)
    fn = _workload(name, batch, voc)
    fn()
    times: List[float] = []
    end = time.perf_counter() + budget_s
    while len(times) < 5 or (time.perf_counter() < end and len(times) < 200):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return {
        "ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "calls": len(times),
        "threads": torch.get_num_threads(),
    }


def _child(name: str, batch: int, threads: Optional[int], voc: Optional[str], budget_s: float) -> dict:
    cmd = [sys.executable, "-m", "spl.apps.bench.contention", "time", name, str(batch), "--budget", str(budget_s)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    if voc:
        cmd += ["--voc", voc]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_contention(voc: Optional[str], quick: bool, log: Callable[[str], None] = print) -> dict:
    """Every workload x size x setting; returns the report's ``contention`` section."""
    batches = (1,) if quick else (1, 8)
    workloads = ("slic", "sparse_propagate") if quick else WORKLOADS
    budget = 0.5 if quick else 3.0
    rows = []
    results: Dict[tuple, dict] = {}
    for phase in ("idle", "busy"):
        busy = None
        if phase == "busy":
            busy = subprocess.Popen(
                [sys.executable, "-m", "spl.apps.bench.contention", "busy"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(3.0)  # until it imports torch and loops
        try:
            for name in workloads:
                for batch in batches:
                    for threads in (None,) if phase == "idle" else (None, 1):
                        setting = phase if threads is None else "busy, 1 thread"
                        results[(name, batch, setting)] = _child(name, batch, threads, voc, budget)
                        log(f"  contention: {name} B={batch} {setting}: {results[(name, batch, setting)]['ms']:.1f} ms")
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    for name in workloads:
        for batch in batches:
            r = {s: results[(name, batch, s)] for s in SETTINGS}
            rows.append(
                {
                    "workload": name,
                    "batch": batch,
                    **{s: r[s] for s in SETTINGS},
                    "busy_over_one_thread": r["busy"]["ms"] / r["busy, 1 thread"]["ms"],
                }
            )
    return {
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "co_runner": "python -m spl.apps.bench.contention busy (torch element-wise ops on 40,000 floats, "
        "default threads)",
        "size": list(SIZE),
        "rows": rows,
    }


def contention_table(section: dict) -> List[str]:
    lines = [
        f"### CPU contention ({section['cpus']} CPUs; co-runner: {section['co_runner']})",
        "",
        "| workload | B | idle, default threads | busy, default threads | busy, 1 thread | busy / 1 thread |",
        "|---|---|---|---|---|---|",
    ]
    for r in section["rows"]:
        lines.append(
            f"| {r['workload']} | {r['batch']} | {r['idle']['ms']:.1f} ms ({r['idle']['threads']}) | "
            f"{r['busy']['ms']:.1f} ms | {r['busy, 1 thread']['ms']:.1f} ms | "
            f"{r['busy_over_one_thread']:.2f} |"
        )
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m spl.apps.bench.contention", description="child processes of spl bench --contention"
    )
    sub = p.add_subparsers(dest="what", required=True)
    sub.add_parser("busy", help="the co-running busy process (runs until killed)")
    t = sub.add_parser("time", help="time one workload in this process; prints one JSON line")
    t.add_argument("workload", choices=WORKLOADS)
    t.add_argument("batch", type=int)
    t.add_argument("--threads", type=int)
    t.add_argument("--voc")
    t.add_argument("--budget", type=float, default=3.0)
    args = p.parse_args(argv)
    if args.what == "busy":
        busy_loop()
        return 0
    print(json.dumps(time_workload(args.workload, args.batch, args.threads, args.voc, args.budget)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
