"""Where the time of the benchmark workloads goes (W1 SLIC, W2 pool/unpool forward+backward and
consistency_weights, W3 ASAM), under torch.profiler: which kernel, op or host stall to work on next.

    python tools/profile_kernels.py [--device cuda|cpu] [--rows 12] [--quick]

For each workload:
- wall ms per call (median of 5, the device synchronised) against the GPU's kernel time: their
  difference is the GPU waiting for the host (launches, synchronisations, Python);
- the number of kernel launches and of host synchronisations (cudaStreamSynchronize and friends,
  and the blocking copies that the .item()/.tolist() behind a host-side check make);
- the spl ops (torch.ops.spl.*), each with its calls, host time and the device time of the kernels
  it launched; then the most expensive kernels (GPU) or aten ops (CPU).
On the CPU the same tables show host time only: a way to check the tool without a GPU.
"""

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

import spl
from spl.apps.bench import measure

# Host calls that wait for the device (a synchronous cudaMemcpy included: torch reads scalars with
# cudaMemcpyAsync + cudaStreamSynchronize, counted once, as the sync).
_SYNC_CALLS = {"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy"}
_LAUNCH_PREFIXES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchCooperativeKernel")


def _device_us(event, self_only=True):
    names = (
        ("self_device_time_total", "self_cuda_time_total") if self_only else ("device_time_total", "cuda_time_total")
    )
    for attr in names:
        if hasattr(event, attr):
            return getattr(event, attr)
    return 0


def show(name: str, fn, device: str, rows: int) -> None:
    wall = 1e3 * measure(lambda r: fn(), device, repeats=5, budget_s=30.0).median  # warm-up, then 5 calls
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()
    print(f"\n## {name}: {wall:.2f} ms per call (wall, median of 5)")
    if device == "cuda":
        kernels = [e for e in events if _device_us(e) > 0]
        gpu = sum(_device_us(e) for e in kernels) / 1e3
        launches = sum(e.count for e in events if e.key.startswith(_LAUNCH_PREFIXES))
        syncs = sum(e.count for e in events if e.key in _SYNC_CALLS)
        print(
            f"  GPU kernel time {gpu:.2f} ms ({gpu / wall:.0%} of the wall time); {launches} kernel launches, "
            f"{syncs} host synchronisations"
        )
    ops = sorted((e for e in events if e.key.startswith("spl::")), key=lambda e: e.cpu_time_total, reverse=True)
    if ops:
        print("  spl ops:                          calls   host ms" + ("  device ms" if device == "cuda" else ""))
        for e in ops:
            dev = f"  {_device_us(e, self_only=False) / 1e3:9.3f}" if device == "cuda" else ""
            print(f"    {e.key[:32]:32s} {e.count:5d} {e.cpu_time_total / 1e3:9.3f}{dev}")
    if device == "cuda":
        top = sorted((e for e in events if _device_us(e) > 0), key=_device_us, reverse=True)[:rows]
        print("  kernels by device time:")
        for e in top:
            print(f"    {_device_us(e) / 1e3:8.3f} ms {e.count:5d}x  {e.key[:90]}")
    else:
        top = sorted(
            (e for e in events if not e.key.startswith("spl::")), key=lambda e: e.self_cpu_time_total, reverse=True
        )[:rows]
        print("  other ops by host time (self):")
        for e in top:
            print(f"    {e.self_cpu_time_total / 1e3:8.3f} ms {e.count:5d}x  {e.key[:90]}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="small inputs (a check of the tool)")
    args = parser.parse_args()
    dev = args.device
    B1, S, B2, B3 = (4, 256, 2, 4) if args.quick else (32, 512, 16, 32)
    g = torch.Generator(device=dev).manual_seed(0)
    images = torch.randint(0, 256, (B1, 3, S, S), dtype=torch.uint8, device=dev, generator=g)
    images = torch.nn.functional.avg_pool2d(images.float(), 9, 1, 4).to(torch.uint8)  # smooth-ish content
    show("W1 slic", lambda: spl.slic(images, 1000, 10.0, 10), dev, args.rows)
    labels = spl.slic(images[:B2], 1000).clamp(max=999)  # as the bench: K = 1000 exactly
    x = torch.randn(B2, 21, S, S, device=dev, requires_grad=True)

    def pool_unpool():
        out = spl.superpixel_unpool(spl.superpixel_pool(x, labels, 1000, "mean"), labels)
        out.backward(torch.ones_like(out))

    show("W2 pool(mean)+unpool fwd+bwd", pool_unpool, dev, args.rows)
    target = torch.randint(0, 21, (B2, S, S), device=dev)
    show("W2 consistency_weights", lambda: spl.consistency_weights(target, labels, 1000, 21), dev, args.rows)
    h, w = (375, 500) if not args.quick else (187, 250)
    img = torch.nn.functional.interpolate(images[:1].float(), size=(h, w)).to(torch.uint8).expand(B3, 3, h, w)
    img = img.contiguous()
    present = torch.zeros(B3, 20, dtype=torch.bool, device=dev)
    present[:, torch.randperm(20, generator=torch.Generator().manual_seed(0))[:3].to(dev)] = True
    cam = torch.rand(B3, 20, h // 16 + 1, w // 16 + 1, device=dev, generator=g) * present[:, :, None, None]
    cam = torch.nn.functional.interpolate(cam, size=(h, w), mode="bilinear").contiguous()
    show("W3 asam_refine, SLIC included", lambda: spl.asam_refine(img, cam, class_mask=present), dev, args.rows)
    sp = spl.slic(img, 1000)
    show("W3 asam_refine, superpixels given", lambda: spl.asam_refine(img, cam, sp, class_mask=present), dev, args.rows)


if __name__ == "__main__":
    main()
