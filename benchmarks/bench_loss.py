"""Workload W2: B=16, C=21, 512x512, K=1000 superpixels.

- consistency_weights (the fused kernel of the superpixel-consistency loss), and
- superpixel_pool (mean) + superpixel_unpool, forward and backward,
each against spl.reference on the same device.

    python benchmarks/bench_loss.py [--device cpu|cuda|all] [--quick] [--json out.json]

Timing: warm-up, then the median (min-max) of several runs; CUDA runs synchronise. On CUDA the
DRAM floor (bytes that must move / measured copy bandwidth) is printed next to each figure.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time

import torch

import spl
from spl import reference


def timed(fn, repeats, sync):
    fn()
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), max(times)


def copy_bandwidth(device):
    """Bytes per second of a device-to-device copy (read + write)."""
    a = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    med, _, _ = timed(lambda: b.copy_(a), 10, True)
    return 2 * a.numel() / med


def workload(B, C, H, W, K, device):
    g = torch.Generator().manual_seed(0)
    # Superpixels: SLIC on smooth random images; pseudo-labels: blocky classes (as CAMs), 10% ignored.
    base = torch.nn.functional.interpolate(torch.rand(B, 3, H // 32, W // 32, generator=g), size=(H, W),
                                           mode="bilinear", align_corners=False)
    image = (base * 255 + 20 * torch.randn(B, 3, H, W, generator=g)).clamp(0, 255).to(torch.uint8)
    labels = spl.slic(image, K).clamp(max=K - 1)
    target = torch.randint(0, C, (B, 1, H // 16, W // 16), generator=g).float()
    target = torch.nn.functional.interpolate(target, size=(H, W), mode="nearest")[:, 0].long()
    target[torch.rand(B, H, W, generator=g) < 0.1] = 255
    x = torch.randn(B, C, H, W, generator=g)
    return x.to(device), labels.to(device), target.to(device)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    parser.add_argument("--quick", action="store_true", help="B=2, 128x128, K=100 (CI)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    B, C, H, W, K = (2, 21, 128, 128, 100) if args.quick else (16, 21, 512, 512, 1000)
    devices = ["cpu"] if args.device in ("cpu", "all") else []
    if args.device in ("cuda", "all") and torch.cuda.is_available() and spl.has_cuda_kernels():
        devices.append("cuda")

    rows = []
    for device in devices:
        sync = device == "cuda"
        repeats = 5 if device == "cpu" else 20
        x, labels, target = workload(B, C, H, W, K, device)
        bandwidth = copy_bandwidth(device) if sync else None
        N, P = B * C * H * W, B * H * W

        def weights(impl):
            return lambda: impl(target, labels, K, C, 0.7, 1.0, 255)

        def pool_unpool(pool, unpool):
            xg = x.detach().requires_grad_(True)
            grad = torch.ones_like(x)

            def run():
                xg.grad = None
                unpool(pool(xg, labels, K, "mean"), labels).backward(grad)
            return run

        cases = [
            ("consistency_weights", weights(spl.consistency_weights), weights(reference.consistency_weights),
             P * (8 + 8) + P * (8 + 8 + 4 + 8)),  # histogram pass, write pass
            ("pool(mean)+unpool fwd+bwd", pool_unpool(spl.superpixel_pool, spl.superpixel_unpool),
             pool_unpool(reference.superpixel_pool, reference.superpixel_unpool),
             # pool: x twice (scale pass, sum pass); unpool: write; backward: grad twice + write;
             # labels (int64) once per pass
             4 * N * (2 + 1 + 2 + 1) + 8 * P * 4),
        ]
        for name, ours, ref, floor_bytes in cases:
            t_ours = timed(ours, repeats, sync)
            t_ref = timed(ref, max(2, repeats // 3), sync)
            row = {"op": name, "device": device, "spl_ms": t_ours[0] * 1e3, "spl_min": t_ours[1] * 1e3,
                   "spl_max": t_ours[2] * 1e3, "reference_ms": t_ref[0] * 1e3, "speedup": t_ref[0] / t_ours[0]}
            if bandwidth:
                row["floor_ms"] = floor_bytes / bandwidth * 1e3
                row["fraction_of_floor"] = row["floor_ms"] / row["spl_ms"]
            rows.append(row)

    env = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "gpu": torch.cuda.get_device_name() if "cuda" in devices else None,
           "workload": f"W2: B={B}, C={C}, {H}x{W}, K={K}"}
    print(f"# {env['workload']}; torch {env['torch']}, {env['threads']} CPU threads, GPU: {env['gpu']}, {env['date']}")
    print("| op | device | spl ms (median, min-max) | reference ms | speed-up | DRAM floor ms (fraction) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        floor = f"{r['floor_ms']:.2f} ({r['fraction_of_floor']:.0%})" if "floor_ms" in r else "-"
        print(f"| {r['op']} | {r['device']} | {r['spl_ms']:.1f} ({r['spl_min']:.1f}-{r['spl_max']:.1f}) | "
              f"{r['reference_ms']:.1f} | {r['speedup']:.1f}x | {floor} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
