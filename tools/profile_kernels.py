"""Per-kernel GPU times of the benchmark workloads (W1 SLIC, W2 pool/unpool forward+backward, W3 ASAM)
under torch.profiler: which kernel to work on next.

    python tools/profile_kernels.py [--rows 12]
"""
import argparse

import torch
from torch.profiler import ProfilerActivity, profile

import spl


def show(name, fn, rows):
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if _device_us(e) > 0]
    events.sort(key=_device_us, reverse=True)
    total = sum(_device_us(e) for e in events)
    print(f"\n## {name}: {total / 1e3:.2f} ms of GPU time")
    for e in events[:rows]:
        print(f"  {_device_us(e) / 1e3:8.3f} ms {e.count:5d}x  {e.key[:90]}")


def _device_us(event):
    for attr in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, attr):
            return getattr(event, attr)
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=12)
    args = parser.parse_args()
    g = torch.Generator(device="cuda").manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 512, 512), dtype=torch.uint8, device="cuda", generator=g)
    images = torch.nn.functional.avg_pool2d(images.float(), 9, 1, 4).to(torch.uint8)  # smooth-ish content
    show("W1 slic", lambda: spl.slic(images, 1000, 10.0, 10), args.rows)
    labels = spl.slic(images[:16], 1000)
    x = torch.randn(16, 21, 512, 512, device="cuda", requires_grad=True)

    def pool_unpool():
        out = spl.superpixel_unpool(spl.superpixel_pool(x, labels, 1000, "mean"), labels)
        out.backward(torch.ones_like(out))
    show("W2 pool(mean)+unpool fwd+bwd", pool_unpool, args.rows)
    target = torch.randint(0, 21, (16, 512, 512), device="cuda")
    show("W2 consistency_weights", lambda: spl.consistency_weights(target, labels, 1000, 21), args.rows)
    img = images[:, :, :375, :500].contiguous()
    cam = torch.rand(32, 20, 24, 32, device="cuda")
    cam = torch.nn.functional.interpolate(cam, size=(375, 500), mode="bilinear")
    show("W3 asam_refine", lambda: spl.asam_refine(img, cam), args.rows)


if __name__ == "__main__":
    main()
