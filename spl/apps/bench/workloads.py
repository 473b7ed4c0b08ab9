"""The workloads W1 (SLIC), W2 (pooling and the loss), W3 (ASAM) and refine, as methods of Bench."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..peers import has_densecrf
from .data import asam_inputs, cam_set, photo_batches, photo_pool, report_split, segmentation_set, write_refine_dataset
from .peer_methods import compare_at_equal_recall, densecrf, slic_peers
from .sweeps import ScalingSweeps
from .timing import Timing, _sync, copy_bandwidth, measure

WORKLOADS = ("W1", "W2", "W3", "refine")


class BenchError(ValueError):
    """A bad ``spl bench`` argument."""


# ------------------------------------------------------------------------------------------ the bench


@dataclass
class Bench(ScalingSweeps):
    device: str
    quick: bool = False
    peers: bool = False
    voc: Optional[str] = None
    synth: Optional[str] = None
    voc_val: Optional[str] = None  # voc-val-dev: W3's quality on its report half
    w3_cams: Optional[str] = None  # IRN-format CAMs for it (default: simulated)
    w3_images: int = 60
    rows: List[dict] = field(default_factory=list)
    scaling: List[dict] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    notes: Dict[str, List[str]] = field(default_factory=dict)
    bandwidth: float = 0.0
    progress: Callable[[], None] = lambda: None  # called after each finished sweep axis (saves the report)

    def __post_init__(self):
        self.budget = 1.0 if self.quick else 6.0  # seconds of timed calls per figure
        self.repeats = 5 if self.quick else 15
        self.bandwidth = copy_bandwidth(self.device)

    def add(
        self,
        workload: str,
        case: str,
        method: str,
        device: str,
        images: int,
        t: Timing,
        floor_bytes: Optional[float] = None,
        **extra,
    ) -> dict:
        row = {
            "workload": workload,
            "case": case,
            "method": method,
            "device": device,
            "images": images,
            "ms": 1e3 * t.median,
            "ms_min": 1e3 * t.low,
            "ms_max": 1e3 * t.high,
            "runs": t.runs,
            "ms_per_image": 1e3 * t.median / images,
            **extra,
        }
        if floor_bytes is not None and device == self.device:
            row["floor_ms"] = 1e3 * floor_bytes / self.bandwidth
            row["floor_fraction"] = row["floor_ms"] / row["ms"]
        self.rows.append(row)
        return row

    def skip(self, what: str) -> None:
        self.skipped.append(what)
        print(f"  skipped: {what}", flush=True)

    def note(self, workload: str, text: str) -> None:
        self.notes.setdefault(workload, []).append(text)

    def per_image(self, fn: Callable[[np.ndarray], object], images: Sequence[np.ndarray], device: str = "cpu"):
        """Times a one-image-per-call method over as many of ``images`` as the budget allows:
        (Timing of one call over n images, n)."""
        fn(images[0])  # warm-up (a GPU peer may compile its kernels here)
        _sync(device)
        start = time.perf_counter()
        fn(images[-1])  # the estimate of one image's time
        _sync(device)
        one = time.perf_counter() - start
        n = int(min(len(images), max(1, self.budget / 3 / max(one, 1e-9))))
        t = measure(lambda r: [fn(im) for im in images[:n]], device, self.repeats, self.budget)
        return t, n

    # --------------------------------------------------------------------------------------- W1
    def w1(self) -> None:
        from ... import metrics, ops, reference

        B, S, K = (4, 256, 200) if self.quick else (32, 512, 1000)
        compactness, iters = 10.0, 10
        case = f"{B} RGB {S}x{S} uint8, n_segments={K}, compactness {compactness:g}, {iters} iterations"
        print(f"W1 SLIC: {case}", flush=True)
        batches = [b.to(self.device) for b in photo_batches(photo_pool(self.voc), B, (S, S))]
        host = [np.ascontiguousarray(b.permute(0, 2, 3, 1).cpu().numpy()) for b in batches]
        described, qset = segmentation_set(self.voc, 3 if self.quick else 11)
        self.note("W1", f"quality on {described}, n_segments={K} at native size")
        # Bytes a SLIC pass structure must move: the image once, Lab features written once, then per
        # iteration an assignment pass (features read, labels written) and an update pass (both read);
        # int64 labels out. (12-byte float Lab features, 4-byte labels in the passes.)
        P = B * S * S
        floor = P * (3 + 12 + iters * 2 * (12 + 4) + 8)

        def quality(segment):
            scores = [metrics.superpixel_scores(np.asarray(segment(rgb)), gt, ignore_index=255) for rgb, gt in qset]
            return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}

        def spl_segment(rgb):
            x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).to(self.device)
            return ops.slic(x, K, compactness, iters).cpu().numpy()

        t = measure(lambda r: ops.slic(batches[r % 3], K, compactness, iters), self.device, self.repeats, self.budget)
        base = self.add("W1", case, "spl", self.device, B, t, floor, **quality(spl_segment))
        n_ref = B if self.device.startswith("cuda") else max(1, B // 16)
        t = measure(
            lambda r: reference.slic(batches[r % 3][:n_ref], K, compactness, iters),
            self.device,
            self.repeats,
            self.budget,
        )
        self.add("W1", case, "spl.reference (float64)", self.device, n_ref, t, floor * n_ref / B)
        if self.peers:
            for name, segment in slic_peers(self.device, K, compactness, iters).items():
                if segment is None:
                    self.skip(f"W1 {name}: not installed")
                    continue
                dev = "cuda" if name == "cuda-slic" else "cpu"
                try:
                    t, n = self.per_image(segment, list(host[0]), dev)
                    self.add("W1", case, name, dev, n, t, **quality(segment))
                except Exception as e:  # a peer that breaks on this machine is reported, not fatal
                    self.skip(f"W1 {name}: failed ({type(e).__name__}: {e})")
        self._speedups("W1", base)
        self._slic_quality_sweep(described, qset, K, iters)

    def _slic_quality_sweep(self, described: str, qset, K: int, iters: int) -> None:
        """Boundary recall, UE and ASA against compactness for spl and each peer.

        Implementations scale compactness differently (fast-slic, for one, measures colour and space
        in its own units), so quality at one nominal compactness compares trade-off points, not
        methods. Sweeping it traces each method's BR-UE curve; each peer point then gets spl's UE and
        ASA at the same BR, interpolated along spl's curve: the comparison at equal boundary recall."""
        from ... import metrics, ops

        grid = [5.0, 10.0, 20.0] if self.quick else [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 15.0, 20.0, 30.0]
        case = f"{described}, n_segments={K}, {iters} iterations"
        print(f"W1 quality against compactness {grid[0]:g}..{grid[-1]:g}", flush=True)

        def spl_at(c):
            def segment(rgb):
                x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).to(self.device)
                return ops.slic(x, K, c, iters).cpu().numpy()

            return segment

        methods = [("spl", self.device, spl_at)]
        if self.peers:
            for name, segment in slic_peers(self.device, K, 10.0, iters).items():
                # A GPU run sweeps the GPU peer only: the CPU peers' curves belong to a CPU run (their
                # labels do not depend on the machine, and scikit-image's sweep takes minutes).
                if segment is not None and not (self.device.startswith("cuda") and name != "cuda-slic"):
                    methods.append(
                        (
                            name,
                            "cuda" if name == "cuda-slic" else "cpu",
                            lambda c, name=name: slic_peers(self.device, K, c, iters)[name],
                        )
                    )
        for name, device, make in methods:
            for c in grid:
                try:
                    segment = make(c)
                    scores = [
                        metrics.superpixel_scores(np.asarray(segment(rgb)), gt, ignore_index=255) for rgb, gt in qset
                    ]
                except Exception as e:  # a peer that breaks is reported, not fatal
                    if name == "spl":
                        raise
                    self.skip(f"W1 quality {name}: failed at compactness {c:g} ({type(e).__name__}: {e})")
                    break
                self.rows.append(
                    {
                        "workload": "W1 quality",
                        "case": case,
                        "method": name,
                        "device": device,
                        "compactness": c,
                        **{k: float(np.mean([s[k] for s in scores])) for k in scores[0]},
                    }
                )
        compare_at_equal_recall([r for r in self.rows if r["workload"] == "W1 quality" and r["case"] == case])

    # --------------------------------------------------------------------------------------- W2
    def w2(self) -> None:
        from ... import ops, reference

        B, C, S, K = (2, 21, 128, 100) if self.quick else (16, 21, 512, 1000)
        case = f"B={B}, C={C}, {S}x{S}, K={K}"
        print(f"W2 pooling and the consistency loss: {case}", flush=True)
        g = torch.Generator().manual_seed(0)
        images = photo_batches(photo_pool(self.voc), B, (S, S), 1)[0]
        labels = ops.slic(images, K).clamp(max=K - 1).to(self.device)
        inputs = []
        for _ in range(3):
            target = torch.randint(0, C, (B, 1, S // 16, S // 16), generator=g).float()
            target = F.interpolate(target, size=(S, S), mode="nearest")[:, 0].long()
            target[torch.rand(B, S, S, generator=g) < 0.1] = 255
            inputs.append((torch.randn(B, C, S, S, generator=g).to(self.device), target.to(self.device)))
        N, P = B * C * S * S, B * S * S

        def weights(impl):
            return lambda r: impl(inputs[r % 3][1], labels, K, C, 0.7, 1.0, 255)

        def pool_unpool(pool, unpool):
            xs = [x.detach().requires_grad_(True) for x, _ in inputs]
            grad = torch.ones_like(xs[0])

            def run(r):
                x = xs[r % 3]
                x.grad = None
                unpool(pool(x, labels, K, "mean"), labels).backward(grad)

            return run

        cases = [
            # histogram pass: target + labels read; write pass: both again, weights and target out.
            (
                "consistency_weights",
                weights(ops.consistency_weights),
                weights(reference.consistency_weights),
                P * (8 + 8) + P * (8 + 8 + 4 + 8),
            ),
            # pool: x read twice (plane scale, sums); unpool: written; backward: gradient read twice and
            # written; the int64 labels read in each of the four passes.
            (
                "pool(mean)+unpool fwd+bwd",
                pool_unpool(ops.superpixel_pool, ops.superpixel_unpool),
                pool_unpool(reference.superpixel_pool, reference.superpixel_unpool),
                4 * N * (2 + 1 + 2 + 1) + 8 * P * 4,
            ),
        ]
        for name, ours, ref, floor in cases:
            base = self.add(
                "W2",
                f"{name}, {case}",
                "spl",
                self.device,
                B,
                measure(ours, self.device, 3 * self.repeats, self.budget),
                floor,
            )
            self.add(
                "W2",
                f"{name}, {case}",
                "spl.reference",
                self.device,
                B,
                measure(ref, self.device, self.repeats, self.budget),
                floor,
            )
            self._speedups("W2", base)

    # --------------------------------------------------------------------------------------- W3
    def w3(self) -> None:
        from ... import asam, ops, reference
        from ...asam import ASAM_DEFAULTS, THRESHOLDS

        B, (H, W), K = (2, (128, 160), 100) if self.quick else (32, (375, 500), ASAM_DEFAULTS["n_segments"])
        case = (
            f"{B} images {H}x{W}, 20 classes (3 present) + background, K={K}, mean field at {len(THRESHOLDS)} "
            f"thresholds, {ASAM_DEFAULTS['steps']} x {ASAM_DEFAULTS['iters']} rounds"
        )
        print(f"W3 ASAM: {case}", flush=True)
        pool = photo_pool(self.voc)
        data = [tuple(t.to(self.device) for t in asam_inputs(pool, B, (H, W), seed=s)) for s in range(3)]
        labels = [ops.slic(d[0], K) for d in data]
        # CAM read, refined scores written (21 channels), image read.
        floor = B * H * W * (20 * 4 + 21 * 4 + 3)
        t = measure(
            lambda r: asam.asam_refine(data[r % 3][0], data[r % 3][1], class_mask=data[r % 3][2], n_segments=K),
            self.device,
            self.repeats,
            self.budget,
        )
        base = self.add("W3", case, "spl.asam_refine, SLIC included", self.device, B, t, floor)
        t = measure(
            lambda r: asam.asam_refine(data[r % 3][0], data[r % 3][1], labels[r % 3], class_mask=data[r % 3][2]),
            self.device,
            self.repeats,
            self.budget,
        )
        given = self.add("W3", case, "spl.asam_refine, superpixels given", self.device, B, t, floor)
        n_ref = B if self.device.startswith("cuda") else max(1, B // 8)
        t = measure(
            lambda r: reference.asam_refine(
                data[r % 3][0][:n_ref], data[r % 3][1][:n_ref], labels[r % 3][:n_ref], data[r % 3][2][:n_ref]
            ),
            self.device,
            self.repeats,
            self.budget,
        )
        ref = self.add(
            "W3",
            case,
            "spl.reference.asam_refine (torch.sparse), superpixels given",
            self.device,
            n_ref,
            t,
            floor * n_ref / B,
        )
        ref["vs_spl"] = ref["ms_per_image"] / given["ms_per_image"]
        if self.peers:
            if has_densecrf():
                imgs = data[0][0].permute(0, 2, 3, 1).cpu().numpy()
                cams, masks = data[0][1].cpu().numpy(), data[0][2].cpu().numpy()
                crf_t, n = self.per_image(lambda i: densecrf(imgs[i], cams[i], masks[i], 0.15), list(range(B)))
                crf = self.add("W3", case, "DenseCRF (pydensecrf2, 10 iterations, one threshold)", "cpu", n, crf_t)
                crf["vs_spl"] = crf["ms_per_image"] / base["ms_per_image"]
            else:
                self.skip("W3 DenseCRF: pydensecrf2 not installed")
        self._asam_quality()

    def _asam_quality(self) -> None:
        """The WSSS protocol (spl.apps.cam_eval): each method refines once with its defaults, then the
        background threshold is swept over its output; raw CAM, ASAM and, with --peers, PAR and
        DenseCRF (run again at each threshold: it takes t as input). Images: the report half of
        voc-val-dev when it is found (never the tuning half), else the VOC sample or scenes."""
        from ...asam import asam_refine
        from ...metrics import DEFAULT_THRESHOLDS
        from .. import cam_eval, peers

        thresholds = (0.1, 0.15, 0.2) if self.quick else DEFAULT_THRESHOLDS
        with tempfile.TemporaryDirectory() as tmp:
            described, items = self._quality_items(3 if self.quick else self.w3_images, tmp)
        self.note("W3", f"quality on {described}; thresholds {thresholds[0]}..{thresholds[-1]}")

        def on_device(fn):
            def run(it):
                image = torch.from_numpy(it.rgb).permute(2, 0, 1)[None].to(self.device)
                out = fn(image, torch.from_numpy(it.cam)[None].to(self.device))
                _sync(self.device)
                return out[0].cpu().numpy()

            return run

        methods = [
            cam_eval.Method("raw CAM", scores=lambda it: it.cam),
            cam_eval.Method("ASAM (defaults)", scores=on_device(lambda im, cam: asam_refine(im, cam))),
        ]
        if self.peers:
            methods.append(cam_eval.Method("PAR (AFA/ToCo)", scores=on_device(peers.par_refine)))
            if has_densecrf():
                methods.append(
                    cam_eval.Method("DenseCRF", labels=lambda it, t: peers.densecrf_labels(it.rgb, it.cam, t))
                )
        for m in methods[1:]:  # warm-up (caches, the device)
            (m.scores or (lambda it: m.labels(it, 0.2)))(items[0])
        results = cam_eval.evaluate(methods, items, thresholds)
        raw_t = results["raw CAM"].sweep.best()[0]
        for m in methods:
            r = results[m.name].summary(raw_t)
            r["gain"] = r["miou"] - results["raw CAM"].sweep.best()[1] * 100
            r["threshold"] = r["best_t"]
            r["thresholds"] = list(thresholds)
            self.rows.append({"workload": "W3 quality", "case": described, "device": self.device, **r})
            print(
                f"  {r['method']:16s} mIoU {r['miou']:.2f} ({r['gain']:+.2f}) at t = {r['best_t']:.2f}, "
                f"{r['miou_at_raw_t']:.2f} at the raw CAM's t",
                flush=True,
            )

    def _quality_items(self, count: int, tmp: str):
        from .. import cam_eval

        val = self.voc_val
        if val is not None:
            ids = cam_eval.read_ids(os.path.join(val, "ids.txt"))
            split = report_split()
            if split is not None:
                ids = cam_eval.read_ids(split)
            ids = ids[:count]
            cams = self.w3_cams
            source = f"CAMs from {cams}"
            if cams is None and self.synth:
                cams = os.path.join(tmp, "synth-cams")
                subprocess.run([sys.executable, self.synth, val, cams], check=True, stdout=subprocess.DEVNULL)
                source = "CAMs simulated by synth_cams.py"
            if cams is not None:
                ids = [i for i in ids if os.path.exists(os.path.join(cams, i + ".npy"))]
                items = [cam_eval.load_item(val, cams, i) for i in ids]
                half = "report half of " if split is not None else ""
                return f"{len(items)} PASCAL VOC 2012 val images ({half}voc-val-dev), {source}", items
        described, legacy = cam_set(self.voc, self.synth, count, tmp)
        items = [
            cam_eval.Item(name, rgb, truth, np.flatnonzero(present), cam[present])
            for name, rgb, truth, cam, present in legacy
        ]
        return described, items

    # ----------------------------------------------------------------------------------- refine
    def refine(self) -> None:
        copies = 1 if self.quick else (32 if self.device.startswith("cuda") else 8)
        with tempfile.TemporaryDirectory() as tmp:
            described, items = cam_set(self.voc, self.synth, 3 if self.quick else 11, tmp)
            root = write_refine_dataset(items, tmp, copies)
            n = len(items) * copies
            workers = max(2, min(8, (os.cpu_count() or 2) // 2))
            case = f"{n} images ({described}), batch 8, {workers} workers"
            print(f"refine: {case}", flush=True)
            common = [
                "--images",
                os.path.join(root, "images"),
                "--cams",
                os.path.join(root, "cams"),
                "--gt",
                os.path.join(root, "gt"),
                "--batch-size",
                "8",
                "--workers",
                str(workers),
                "--quiet",
                "--device",
                "cuda" if self.device.startswith("cuda") else "cpu",
            ]
            first = run_refine_job(common + ["--out", os.path.join(tmp, "out")], tmp)
            again = run_refine_job(common + ["--out", os.path.join(tmp, "out")], tmp)
            with open(os.path.join(tmp, "out", "eval.json")) as f:
                ev = json.load(f)
            quality = {"miou_before": ev["miou_before"], "miou_after": ev["miou_after"]}
            base = self.add(
                "refine",
                case,
                "spl refine, end to end",
                self.device,
                n,
                Timing(first, first, first, 1),
                images_per_s=n / first,
                **quality,
            )
            self.add(
                "refine",
                case,
                "spl refine, rerun with every output present",
                self.device,
                n,
                Timing(again, again, again, 1),
                images_per_s=n / again,
            )
            # The same driver with spl.reference's SLIC and ASAM swapped in, on a few images.
            n_ref = min(n, 2 if self.quick else 4)
            with open(os.path.join(tmp, "few.txt"), "w") as f:
                f.write(
                    "\n".join(sorted(os.path.splitext(x)[0] for x in os.listdir(os.path.join(root, "images")))[:n_ref])
                )
            ref_s = run_refine_job(
                common + ["--out", os.path.join(tmp, "out-ref"), "--list", os.path.join(tmp, "few.txt")],
                tmp,
                reference=True,
            )
            ref = self.add(
                "refine",
                case,
                "the same driver on spl.reference ops",
                self.device,
                n_ref,
                Timing(ref_s, ref_s, ref_s, 1),
                images_per_s=n_ref / ref_s,
            )
            ref["vs_spl"] = ref["ms_per_image"] / base["ms_per_image"]
        self.note(
            "refine",
            "one run each, wall clock of `python -m spl refine` including start-up, decoding and "
            "writing; the reference run is short, so its start-up weighs more",
        )

    def _speedups(self, workload: str, base: dict) -> None:
        """Each other row of the case: how many times spl's time per image it takes."""
        for r in self.rows:
            if r["workload"] == workload and r["case"] == base["case"] and r is not base and "ms_per_image" in r:
                r["vs_spl"] = r["ms_per_image"] / base["ms_per_image"]


def run_refine_job(args: List[str], cwd: str, reference: bool = False) -> float:
    """Seconds of one ``spl refine`` job, run as a user runs it (a new process, the installed spl)."""
    cmd = [sys.executable, "-m"] + (["spl.apps.reference_refine"] if reference else ["spl", "refine"]) + args
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"spl refine failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return seconds
