"""Seeded fuzzing of spl's public API: random, often hostile, inputs for every entry point.

    python tests/fuzz_ops.py --cases 2000 --seed 0 [--start 0] [--json out.json]

Each case picks an entry point and draws its arguments: small random shapes (zero and one included),
every dtype, values with NaN / infinities / negatives / out-of-range labels now and then, and now and
then a wrong type, rank or device-free mismatch. A case passes when the call

- returns, and every documented invariant holds on the result, checked against ``spl.reference``
  (same values within the dtype's tolerance, label ranges, shapes, scores in [0, 1], ...); or
- raises ``ValueError`` / ``TypeError`` whose message names the function.

Anything else is a violation: another exception, a message naming nothing, a wrong result. A crash
(segfault, abort) or a hang ends the process: the test that runs this script in a child process
(tests/test_fuzz.py) reports it with the case number printed last ("case N ..." lines go to stderr,
flushed, before each call).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback

import numpy as np
import torch

import spl
from spl import reference

FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
TOL = {torch.float32: 1e-4, torch.float64: 1e-9, torch.float16: 5e-3, torch.bfloat16: 3e-2}


class Violation(AssertionError):
    pass


def check(cond, what):
    if not cond:
        raise Violation(what)


def close(a, b, dtype, what):
    tol = TOL.get(dtype, 1e-5)
    a, b = a.double().cpu(), b.double().cpu()
    check(a.shape == b.shape, f"{what}: shape {list(a.shape)} != {list(b.shape)}")
    bad = ~((a == b) | ((a - b).abs() <= tol * (1 + b.abs())) | (a.isnan() & b.isnan()))
    if bool(bad.any()):
        raise Violation(f"{what}: differs from the reference by {float((a - b)[bad].abs().max())}")


class Draw:
    """Random arguments from one seeded generator."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.g = torch.Generator().manual_seed(int(self.rng.integers(2**31)))

    def chance(self, p):
        return bool(self.rng.random() < p)

    def size(self, low=0, high=9):
        # Mostly 1..high, sometimes 0.
        return 0 if self.chance(0.04) and low == 0 else int(self.rng.integers(max(low, 1), high + 1))

    def dtype(self):
        return FLOATS[int(self.rng.integers(len(FLOATS)))]

    def floats(self, shape, dtype=torch.float32, low=0.0, high=1.0, poison=0.05):
        x = torch.rand(shape, generator=self.g, dtype=torch.float64) * (high - low) + low
        if x.numel() and self.chance(poison):
            x.view(-1)[int(self.rng.integers(x.numel()))] = float(self.rng.choice([math.nan, math.inf, -math.inf]))
        return x.to(dtype)

    def junk(self):
        """A value of the wrong kind for any argument."""
        return [None, "ab", [1, 2, 3], (1,), float("nan"), float("inf"), -1, 10**30, True, np.zeros(3), torch.zeros(2)][
            int(self.rng.integers(11))
        ]

    def labels(self, B, H, W, K, bad=0.03):
        lab = torch.randint(-1, max(K, 1), (B, H, W), generator=self.g) if K > 0 else torch.full((B, H, W), -1)
        if lab.numel() and self.chance(bad):
            lab.view(-1)[int(self.rng.integers(lab.numel()))] = int(self.rng.choice([K, K + 5, -2, 10**12]))
        return lab


# --------------------------------------------------------------------------------------------- cases


def case_slic(d: Draw):
    B, H, W = d.size(1, 3), d.size(1, 24), d.size(1, 24)
    C = int(d.rng.choice([1, 3, 3, 5]))
    image = (
        torch.randint(0, 256, (B, C, H, W), generator=d.g, dtype=torch.uint8)
        if d.chance(0.5)
        else d.floats((B, C, H, W), d.dtype(), poison=0.03)
    )
    n = int(d.rng.integers(1, H * W + 1)) if not d.chance(0.03) else int(d.rng.choice([0, H * W + 1]))
    kw = dict(
        compactness=float(d.rng.choice([0.1, 1, 10, 100, 1e7])) if d.chance(0.3) else 10.0,
        max_num_iter=int(d.rng.choice([1, 2, 10])),
        enforce_connectivity=d.chance(0.8),
        min_size_factor=float(d.rng.choice([0.0, 0.25, 1.0, 1e40])),
    )
    if d.chance(0.2):
        kw["spacing"] = (float(d.rng.choice([0.5, 1, 2])), float(d.rng.choice([0.5, 1, 2])))
    mask = None
    if d.chance(0.2):
        mask = torch.rand(B, H, W, generator=d.g) < 0.7
        kw["mask"] = mask
    if d.chance(0.1):
        kw[str(d.rng.choice(["spacing", "compactness", "max_num_iter", "min_size_factor"]))] = d.junk()
    if d.chance(0.15) and B == 1:  # scikit-image layout, sometimes big-endian
        arr = image[0].permute(1, 2, 0).float().numpy()
        arr = arr.astype(">f4") if d.chance(0.5) else arr
        out = spl.slic(arr, n, **kw)
        check(isinstance(out, np.ndarray) and out.shape == (H, W), "slic: NumPy in, NumPy [H, W] out")
        check(
            np.array_equal(out, spl.slic(torch.from_numpy(arr.astype("=f4")).permute(2, 0, 1), n, **kw).numpy()),
            "slic: NumPy and tensor inputs agree",
        )
        return
    labels, counts = spl.slic(image, n, return_counts=True, **kw)
    check(labels.shape == (B, H, W) and labels.dtype == torch.int64, "slic: labels shape / dtype")
    for b in range(B):
        lb, k = labels[b], int(counts[b])
        inside = lb >= 0 if mask is None else mask[b]
        check(bool((lb[~inside] == -1).all()) and bool((lb[inside] >= 0).all()), "slic: -1 exactly outside the mask")
        present = torch.unique(lb[inside])
        check(
            present.numel() == k and (k == 0 or (int(present[0]) == 0 and int(present[-1]) == k - 1)),
            "slic: labels 0..n-1 contiguous",
        )
        if kw["enforce_connectivity"] and k:
            check(
                int(reference.enforce_connectivity(lb[None], 0, return_counts=True)[1][0]) == k,
                "slic: every label one 4-connected region",
            )
    again = spl.slic(image, n, **kw)
    check(torch.equal(again, labels), "slic: deterministic")


def case_enforce_connectivity(d: Draw):
    B, H, W = d.size(1, 3), d.size(0, 16), d.size(0, 16)
    lab = torch.randint(-1, 4, (B, H, W), generator=d.g)
    if d.chance(0.05):
        lab = lab.float()
    min_size = int(d.rng.choice([0, 1, 3, 10, 10**15])) if not d.chance(0.03) else -1
    if d.chance(0.03):
        min_size = d.junk()
    if d.chance(0.2) and not lab.is_floating_point():  # NumPy in (batched or not), NumPy out
        arr = lab.numpy() if d.chance(0.5) else lab[0].numpy()
        out, counts = spl.enforce_connectivity(arr, min_size, return_counts=True)
        ref = reference.enforce_connectivity(
            torch.from_numpy(arr).reshape(lab.shape if arr.ndim == 3 else (1, H, W)), min_size
        )
        check(
            isinstance(out, np.ndarray) and np.array_equal(out.reshape(ref.shape), ref.numpy()),
            "enforce_connectivity: NumPy result equals the reference",
        )
        return
    out = spl.enforce_connectivity(lab, min_size)
    ref = reference.enforce_connectivity(lab, min_size)
    check(torch.equal(out, ref), "enforce_connectivity: equals the reference")


def case_pool(d: Draw):
    B, C, H, W, K = d.size(), d.size(), d.size(), d.size(), d.size()
    dtype = d.dtype()
    x = d.floats((B, C, H, W), dtype, -3, 3, poison=0.02)
    labels = d.labels(B, H, W, K)
    reduce = str(d.rng.choice(["mean", "sum", "max", "max", "median"] if d.chance(0.05) else ["mean", "sum", "max"]))
    out = spl.superpixel_pool(x, labels, K, reduce)
    close(out, reference.superpixel_pool(x.double(), labels, K, reduce), dtype, f"superpixel_pool {reduce}")
    unp = spl.superpixel_unpool(out, labels)
    close(unp, reference.superpixel_unpool(out, labels), dtype, "superpixel_unpool")


def case_histogram_weights(d: Draw):
    B, H, W, K, n = d.size(1, 3), d.size(), d.size(), d.size(), d.size(1, 5)
    labels = d.labels(B, H, W, K)
    target = torch.randint(0, n, (B, H, W), generator=d.g)
    target[torch.rand(B, H, W, generator=d.g) < 0.1] = 255
    if target.numel() and d.chance(0.05):
        target.view(-1)[0] = n + 3
    hist = spl.superpixel_histogram(target, labels, K, n)
    check(torch.equal(hist, reference.superpixel_histogram(target, labels, K, n)), "superpixel_histogram")
    tau, gamma = float(d.rng.choice([0.0, 0.5, 0.7, 1.0])), float(d.rng.choice([0.0, 1.0, 2.0]))
    w, t = spl.consistency_weights(target, labels, K, n, tau, gamma)
    rw, rt = reference.consistency_weights(target, labels, K, n, tau, gamma)
    close(w, rw, torch.float32, "consistency_weights: weights")
    check(torch.equal(t, rt), "consistency_weights: transformed labels")
    check(bool(((w >= 0) & (w <= 1)).all()), "consistency_weights: weights in [0, 1]")


def case_loss(d: Draw):
    B, H, W, K, n = d.size(1, 2), d.size(1, 8), d.size(1, 8), d.size(1, 6), d.size(1, 4)
    kw = dict(
        tau=float(d.rng.choice([0.5, 0.7, math.inf if d.chance(0.05) else 1.0])),
        gamma=float(d.rng.choice([0.0, 1.0, 2.0])),
    )
    loss_fn = spl.SuperpixelConsistencyLoss(n, **kw)
    logits = d.floats((B, n, H, W), torch.float32, -3, 3, poison=0.0)
    target = torch.randint(0, n, (B, H, W), generator=d.g)
    sp = d.labels(B, H, W, K)
    if d.chance(0.05):
        sp = sp.int()
    given = d.chance(0.8)
    value = loss_fn(logits, target, sp, num_superpixels=K if given else None)
    used = K if given else int(sp.max()) + 1  # without num_superpixels: the largest label + 1
    ref = reference.superpixel_consistency_loss(logits.double(), target, sp, used, n, kw["tau"], kw["gamma"])
    close(value, ref, torch.float32, "SuperpixelConsistencyLoss")


def case_adjacency_propagate(d: Draw):
    B, H, W, K = d.size(1, 3), d.size(1, 10), d.size(1, 10), d.size(1, 8)
    labels = d.labels(B, H, W, K, bad=0.05)
    g = spl.superpixel_adjacency(labels, K)
    counts = torch.full((B,), K)
    ip, ix, border, off = reference.superpixel_adjacency(labels, counts)
    check(
        torch.equal(g.indptr, ip) and torch.equal(g.indices, ix) and torch.equal(g.border, border),
        "superpixel_adjacency: equals the reference",
    )
    C = d.size(1, 4)
    dtype = torch.float64 if d.chance(0.3) else torch.float32
    x = d.floats((g.num_nodes, C), dtype, -1, 1, poison=0.0)
    weight = d.floats((g.num_edges,), torch.float32, 0, 2, poison=0.05)
    if d.chance(0.05) and weight.numel():
        weight[0] = -1.0
    iters, alpha = int(d.rng.integers(0, 6)), float(d.rng.choice([0.0, 0.5, 1.0, 1.5 if d.chance(0.05) else 0.9]))
    graph = g
    if d.chance(0.15):  # a hand-broken graph
        fields = [t.clone() for t in g]
        k = int(d.rng.integers(4))
        if fields[k].numel():
            fields[k].view(-1)[int(d.rng.integers(fields[k].numel()))] = int(d.rng.integers(-(10**6), 10**6))
        graph = spl.Graph(*fields)
    out = spl.sparse_propagate(graph, weight, x, iters, alpha)
    ref = reference.sparse_propagate(graph.indptr, graph.indices, weight.double(), x.double(), iters, alpha)
    close(out, ref, torch.float32 if dtype == torch.float32 else torch.float64, "sparse_propagate")


def case_asam(d: Draw):
    B, H, W = d.size(1, 2), d.size(1, 20), d.size(1, 20)
    C = d.size(1, 4)
    image = (
        torch.randint(0, 256, (B, 3, H, W), generator=d.g, dtype=torch.uint8)
        if d.chance(0.6)
        else d.floats((B, 3, H, W), torch.float32, poison=0.02)
    )
    h, w = (H, W) if d.chance(0.6) else (max(1, H // 2), max(1, W // 2))
    cam = d.floats((B, C, h, w), d.dtype() if d.chance(0.2) else torch.float32, -0.1, 1, poison=0.03)
    mask = torch.rand(B, C, generator=d.g) < 0.6 if d.chance(0.5) else None
    kw = {}
    if d.chance(0.3):
        kw["mode"] = str(d.rng.choice(["meanfield", "diffusion"]))
    if d.chance(0.2):
        kw["n_segments"] = int(d.rng.choice([1, 5, 50, 10**6]))
    if d.chance(0.1):
        kw["bg_threshold"] = float(d.rng.choice([0.05, 0.3, 0.9]))
    if d.chance(0.1):
        kw["edge_sigma"] = 0.1
    if d.chance(0.05):
        kw["iters"] = -1
    if d.chance(0.05):
        kw[str(d.rng.choice(["iters", "steps", "weight", "sigma_c", "core", "thresholds", "n_segments"]))] = d.junk()
    if d.chance(0.1) and B == 1 and image.dtype == torch.uint8 and cam.dtype in (torch.float32, torch.float64):
        out = spl.asam_refine(
            image[0].permute(1, 2, 0).numpy(),
            cam[0].numpy(),
            class_mask=None if mask is None else mask[0].numpy(),
            **kw,
        )
        check(isinstance(out, np.ndarray) and out.shape == (C, H, W), "asam_refine: NumPy in, NumPy [C, H, W] out")
        check(
            np.array_equal(out, spl.asam_refine(image, cam, class_mask=mask, **kw)[0].numpy()),
            "asam_refine: NumPy and tensor inputs agree",
        )
        return
    out = spl.asam_refine(image, cam, class_mask=mask, **kw)
    check(out.shape == (B, C, H, W) and out.dtype == torch.float32, "asam_refine: shape / dtype")
    check(bool(torch.isfinite(out).all()) and bool(((out >= 0) & (out <= 1)).all()), "asam_refine: scores in [0, 1]")
    present = mask if mask is not None else cam.flatten(2).float().clamp_min(0).amax(2) > 0 if cam.numel() else None
    if present is not None:
        check(bool((out[~present] == 0).all()), "asam_refine: absent classes are 0")
    if B == 2 and d.chance(0.3):
        one = spl.asam_refine(image[1:], cam[1:], class_mask=None if mask is None else mask[1:], **kw)
        check(torch.equal(one, out[1:]), "asam_refine: batch-invariant")
    masks = spl.cam_to_mask(out, 0.3, mask)
    check(torch.equal(masks, reference.cam_to_mask(out, 0.3, mask)), "cam_to_mask: equals the reference")


def case_edge_unpool(d: Draw):
    B, C, H, W, K = d.size(1, 2), d.size(), d.size(), d.size(), d.size()
    dtype = d.dtype()
    f = d.floats((B, C, K), dtype, -2, 2, poison=0.0)
    labels = d.labels(B, H, W, K)
    guide = d.floats((B, 3, H, W), torch.float32, poison=0.03)
    sigma = float(d.rng.choice([0.05, 0.5, 10.0, 0.0 if d.chance(0.05) else 1.0]))
    radius = int(d.rng.choice([0, 1, 2, 3, 4 if d.chance(0.05) else 1]))
    out = spl.edge_aware_unpool(f, labels, guide, sigma, radius)
    means = spl.superpixel_pool(guide, labels, K, "mean")
    # The weights are float32 (expf) whatever the dtype of the values.
    close(
        out,
        reference.edge_aware_unpool(f.double(), labels, guide, means, sigma, radius),
        torch.float32 if dtype == torch.float64 else dtype,
        "edge_aware_unpool",
    )


def case_metrics(d: Draw):
    H, W = d.size(1, 12), d.size(1, 12)
    sp = torch.randint(0, 5, (H, W), generator=d.g)
    gt = torch.randint(0, 3, (H, W), generator=d.g)
    br = spl.metrics.boundary_recall(sp, gt)
    ue = spl.metrics.undersegmentation_error(sp, gt)
    asa = spl.metrics.achievable_segmentation_accuracy(sp, gt)
    check(0 <= br <= 1 and ue >= 0 and 0 <= asa <= 1, "metrics: ranges")
    scores = d.floats((d.size(0, 3), H, W), torch.float32, poison=0.05)
    sweep = spl.metrics.ThresholdSweep().update(scores, gt)
    check(int(sweep.matrix[0].sum()) == H * W, "ThresholdSweep: every pixel counted once per threshold")


CASES = {
    "slic": case_slic,
    "enforce_connectivity": case_enforce_connectivity,
    "superpixel_pool": case_pool,
    "superpixel_histogram": case_histogram_weights,
    "SuperpixelConsistencyLoss": case_loss,
    "sparse_propagate": case_adjacency_propagate,
    "asam_refine": case_asam,
    "edge_aware_unpool": case_edge_unpool,
    "metrics": case_metrics,
}
# The names a rejection may carry: the public function, or the op it calls for the user.
NAMES = {
    "slic": ("slic",),
    "enforce_connectivity": ("enforce_connectivity",),
    "superpixel_pool": ("superpixel_pool", "superpixel_unpool"),
    "superpixel_histogram": ("superpixel_histogram", "consistency_weights"),
    "SuperpixelConsistencyLoss": ("SuperpixelConsistencyLoss", "consistency_weights"),
    "sparse_propagate": ("superpixel_adjacency", "sparse_propagate"),
    "asam_refine": ("asam_refine", "cam_to_mask", "slic"),
    "edge_aware_unpool": ("edge_aware_unpool", "superpixel_pool"),
    "metrics": ("ThresholdSweep", "boundary_recall", "undersegmentation_error", "achievable"),
}


def run(cases: int, seed: int, start: int = 0) -> dict:
    names = list(CASES)
    summary = {
        "cases": 0,
        "calls_ok": 0,
        "rejected": 0,
        "violations": [],
        "seconds": 0.0,
        "by_entry_point": {n: 0 for n in names},
    }
    t0 = time.perf_counter()
    for i in range(start, start + cases):
        d = Draw(seed * 1_000_003 + i)
        name = names[int(d.rng.integers(len(names)))]
        print(f"case {i} {name}", file=sys.stderr, flush=True)
        summary["by_entry_point"][name] += 1
        summary["cases"] += 1
        try:
            CASES[name](d)
            summary["calls_ok"] += 1
        except Violation as e:
            summary["violations"].append({"case": i, "entry_point": name, "error": str(e)})
        except (ValueError, TypeError) as e:
            message = str(e)
            if any(n in message for n in NAMES[name]):
                summary["rejected"] += 1
            else:
                summary["violations"].append(
                    {"case": i, "entry_point": name, "error": f"{type(e).__name__} naming no function: {message[:300]}"}
                )
        except Exception as e:  # noqa: BLE001
            summary["violations"].append(
                {
                    "case": i,
                    "entry_point": name,
                    "error": f"{type(e).__name__}: {e}"[:300],
                    "traceback": traceback.format_exc()[-1500:],
                }
            )
    summary["seconds"] = time.perf_counter() - t0
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--json")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    summary = run(a.cases, a.seed, a.start)
    text = json.dumps(summary, indent=1)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text)
    print(text)
    return 1 if summary["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
