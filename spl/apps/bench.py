"""``spl bench``: every spl workload against its plain-PyTorch reference and the peers, in one command.

    spl bench [--device cpu|cuda] [--workload W1,W2,W3,refine] [--quick] [--peers] [--out DIR]
              [--no-scaling] [--voc DIR] [--synth FILE]

Workloads (the benchmarks of the issues that built each part):

- W1, SLIC: 32 RGB 512x512 uint8 images, n_segments 1000, compactness 10, 10 iterations,
  connectivity on. spl and ``spl.reference.slic`` on the device; with ``--peers`` scikit-image,
  fast-slic, OpenCV ximgproc (CPU) and cuda-slic (GPU). Quality beside speed: boundary recall,
  undersegmentation error, achievable segmentation accuracy, on images with ground truth; then the
  same against compactness for every method (each scales it its own way), with spl's UE and ASA
  at each peer point's boundary recall: the comparison at equal BR (table and ``quality_slic.png``).
- W2, the loss: B=16, C=21, 512x512, K=1000: ``consistency_weights``, and ``superpixel_pool`` (mean)
  + ``superpixel_unpool`` forward and backward, against the reference ops.
- W3, ASAM: 32 VOC-size images (375x500), 20 classes (3 present) + background, ASAM's defaults
  (K=500, a mean field at 21 thresholds), SLIC included; the refinement alone for spl and for
  ``spl.reference.asam_refine`` (torch.sparse); with ``--peers`` DenseCRF (pydensecrf2, CPU).
  Quality, with the WSSS protocol (``spl.apps.cam_eval``): raw CAM, ASAM and, with ``--peers``, PAR and
  DenseCRF, each refined once, then the background threshold swept over its output; on the report
  half of voc-val-dev (``--w3-cams``: real CAMs; default simulated), else the VOC sample or scenes.
- refine: ``spl refine`` end to end as a user runs it (decode, refine, write), images per second,
  against the same driver with the reference ops swapped in.
- Scaling (unless ``--no-scaling``): time against batch size (1..64), image size (256..2048 square)
  and K (100..5000) for SLIC and ASAM, spl vs reference vs peers, as plots.

Timing: a warm-up call first; then the median of several calls (min-max and count shown), the
device synchronised around each; three input batches in rotation so that caches do not flatter.
Slow methods get fewer calls (at least one after the warm-up) within a time budget, and sweeps stop
a method once a point takes too long. Beside every figure: the physical floor, the bytes the
workload must move divided by the measured copy bandwidth of the device, and the fraction of it
achieved. ``--quick`` shrinks everything to run in well under a minute on a 2-core CPU.

Output: tables on the terminal, ``bench.json`` (device, versions, date, every figure) and PNG plots
(matplotlib) in ``--out``. A missing peer is reported as skipped, never an error.
"""
from __future__ import annotations

import datetime
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .peers import has_densecrf

WORKLOADS = ("W1", "W2", "W3", "refine")
_HERE = os.path.dirname(os.path.abspath(__file__))


class BenchError(ValueError):
    """A bad ``spl bench`` argument."""


# --------------------------------------------------------------------------------------------- timing


@dataclass
class Timing:
    median: float  # seconds per call
    low: float
    high: float
    runs: int


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(fn: Callable[[int], object], device: str, repeats: int, budget_s: float) -> Timing:
    """Times ``fn(r)`` (r: the call's number, for rotating inputs): one warm-up call, then up to
    ``repeats`` calls, fewer when they would pass ``budget_s`` (at least 3, or 1 for calls slower
    than the budget). Wall-clock time with the device synchronised before and after each call."""
    def once(r: int) -> float:
        _sync(device)
        start = time.perf_counter()
        fn(r)
        _sync(device)
        return time.perf_counter() - start

    first = once(0)
    least = 3 if 3 * first <= budget_s else 1
    times: List[float] = []
    for r in range(1, repeats + 1):
        times.append(once(r))
        if len(times) >= least and sum(times) > budget_s:
            break
    return Timing(statistics.median(times), min(times), max(times), len(times))


def copy_bandwidth(device: str) -> float:
    """Bytes per second of a large device-to-device copy, read and write counted."""
    n = (512 if device.startswith("cuda") else 128) * 2**20
    a = torch.empty(n, dtype=torch.uint8, device=device).fill_(1)
    b = torch.empty_like(a)
    t = measure(lambda r: b.copy_(a), device, 10, 2.0)
    return 2 * n / t.median


# ----------------------------------------------------------------------------------------------- data


def default_voc() -> Optional[str]:
    """$SPL_VOC, else the project's ``shared/data/voc-dev`` sample beside a source checkout."""
    for d in (os.environ.get("SPL_VOC"), os.path.join(_HERE, "..", "..", "shared", "data", "voc-dev"),
              os.path.join("shared", "data", "voc-dev"), os.path.join("..", "shared", "data", "voc-dev")):
        if d and glob.glob(os.path.join(d, "JPEGImages", "*.jpg")):
            return os.path.abspath(d)
    return None


def default_voc_val() -> Optional[str]:
    """$SPL_VOC_VAL, else the project's ``shared/data/voc-val-dev`` beside a source checkout."""
    for d in (os.environ.get("SPL_VOC_VAL"), os.path.join(_HERE, "..", "..", "shared", "data", "voc-val-dev"),
              os.path.join("shared", "data", "voc-val-dev"), os.path.join("..", "shared", "data", "voc-val-dev")):
        if d and glob.glob(os.path.join(d, "JPEGImages", "*.jpg")):
            return os.path.abspath(d)
    return None


def report_split() -> Optional[str]:
    """benchmarks/splits/voc-val-dev-report.txt of a source checkout (the images no default was tuned on)."""
    path = os.path.join(_HERE, "..", "benchmarks", "splits", "voc-val-dev-report.txt")
    return os.path.abspath(path) if os.path.exists(path) else None


def default_synth(voc: Optional[str]) -> Optional[str]:
    """$SPL_SYNTH_CAMS, else ``shared/tools/synth_cams.py`` beside the VOC sample."""
    for f in (os.environ.get("SPL_SYNTH_CAMS"),
              voc and os.path.join(voc, "..", "..", "tools", "synth_cams.py"),
              voc and os.path.join(voc, "..", "synth_cams.py")):
        if f and os.path.isfile(f):
            return os.path.abspath(f)
    return None


def _voc_files(voc: Optional[str]) -> List[str]:
    return sorted(glob.glob(os.path.join(voc, "JPEGImages", "*.jpg"))) if voc else []


def photo_pool(voc: Optional[str]) -> List[np.ndarray]:
    """Natural photos (H, W, 3) uint8: the VOC sample, else scikit-image's samples."""
    from PIL import Image

    files = _voc_files(voc)
    if files:
        return [np.array(Image.open(f).convert("RGB")) for f in files]
    from skimage import data

    return [np.ascontiguousarray(im[..., :3]) for im in (data.astronaut(), data.coffee(), data.chelsea(),
                                                          data.rocket(), data.immunohistochemistry())]


def photo_batches(pool: Sequence[np.ndarray], batch: int, size, count: int = 3) -> List[torch.Tensor]:
    """``count`` batches (B, 3, H, W) uint8 of photos from the pool, resized to ``size`` = (H, W)."""
    from PIL import Image

    resized = [np.array(Image.fromarray(p).resize((size[1], size[0]), Image.BILINEAR)) for p in pool]
    rng = np.random.default_rng(0)
    return [torch.from_numpy(np.stack([resized[i] for i in rng.integers(0, len(resized), batch)]))
            .permute(0, 3, 1, 2).contiguous() for _ in range(count)]


def segmentation_set(voc: Optional[str], count: int):
    """(description, [(rgb (H, W, 3) uint8, truth (H, W) int64, 255 = ignore)]): VOC images with their
    ground truth, else scenes of known regions made from scikit-image's samples (``spl.apps.scenes.scene``)."""
    from PIL import Image

    files = _voc_files(voc)[:count]
    if files:
        pairs = [(np.array(Image.open(f).convert("RGB")),
                  np.array(Image.open(f.replace("JPEGImages", "SegmentationClass").replace(".jpg", ".png")))
                  .astype(np.int64)) for f in files]
        return f"{len(pairs)} PASCAL VOC 2012 images ({voc})", pairs
    from .scenes import scene

    return (f"{count} scenes of known regions from scikit-image samples (no VOC data found)",
            [scene(seed) for seed in range(count)])


def cam_set(voc: Optional[str], synth: Optional[str], count: int, tmp: str):
    """(description, [(name, rgb, truth, cam (20, H, W) float32, present (20,) bool)]): VOC images with
    CAMs simulated by ``synth_cams.py``, else scenes with coarse CAMs of their known regions."""
    if _voc_files(voc) and synth:
        cams = os.path.join(tmp, "synth-cams")
        subprocess.run([sys.executable, synth, voc, cams], check=True, stdout=subprocess.DEVNULL)
        items = voc_cam_items(voc, cams, count)
        return f"{len(items)} PASCAL VOC 2012 images, CAMs simulated by {os.path.basename(synth)}", items
    from .scenes import coarse_cams, scene

    items = []
    for seed in range(count):
        rgb, truth = scene(seed)
        cam = np.zeros((20,) + truth.shape, np.float32)
        cam[:5] = coarse_cams(truth, 5, seed)
        present = np.zeros(20, bool)
        present[np.unique(truth[truth > 0]) - 1] = True
        items.append((f"scene{seed}", rgb, truth, cam, present))
    return f"{count} scenes of known regions with coarse CAMs (no VOC data or CAM simulator found)", items


def voc_cam_items(voc: str, cams: str, count: Optional[int] = None):
    """[(name, rgb, truth, cam (20, H, W) float32, present (20,) bool)] of the first ``count`` VOC images,
    their ground truth and their IRN-format CAMs (``keys`` + ``high_res``) from the folder ``cams``."""
    from PIL import Image

    items = []
    for f in _voc_files(voc)[:count]:
        name = os.path.splitext(os.path.basename(f))[0]
        gt = np.array(Image.open(os.path.join(voc, "SegmentationClass", name + ".png"))).astype(np.int64)
        d = np.load(os.path.join(cams, name + ".npy"), allow_pickle=True).item()
        cam = np.zeros((20,) + gt.shape, np.float32)
        cam[d["keys"]] = d["high_res"]
        present = np.zeros(20, bool)
        present[d["keys"]] = True
        items.append((name, np.array(Image.open(f).convert("RGB")), gt, cam, present))
    return items


def asam_inputs(pool, batch: int, size, n_classes: int = 20, seed: int = 0):
    """(images uint8 (B, 3, H, W), CAMs float32 (B, 20, H, W), class_mask (B, 20)): photos and smooth
    random CAMs of 3 classes per image (upsampled from 1/16 resolution, as CAMs are)."""
    g = torch.Generator().manual_seed(seed)
    images = photo_batches(pool, batch, size, 1)[0]
    coarse = torch.rand(batch, n_classes, size[0] // 16 + 1, size[1] // 16 + 1, generator=g)
    mask = torch.zeros(batch, n_classes, dtype=torch.bool)
    for b in range(batch):
        mask[b, torch.randperm(n_classes, generator=g)[:3]] = True
    cams = F.interpolate(coarse * mask[:, :, None, None], size=size, mode="bilinear", align_corners=False)
    return images, cams.contiguous(), mask


# ---------------------------------------------------------------------------------------------- peers


def slic_peers(device: str, n_segments: int, compactness: float, iters: int) -> Dict[str, Optional[Callable]]:
    """name -> segment(rgb uint8 (H, W, 3)) -> labels, or None where the peer is not installed. The GPU
    peer (cuda-slic) only for a CUDA run, the CPU peers for either (they run on the host)."""
    peers: Dict[str, Optional[Callable]] = {}
    try:
        import skimage
        from skimage.segmentation import slic as sk_slic

        peers[f"scikit-image {skimage.__version__} slic"] = lambda im: sk_slic(
            im, n_segments=n_segments, compactness=compactness, max_num_iter=iters, start_label=0)
    except ImportError:
        peers["scikit-image slic"] = None
    try:
        from fast_slic.avx2 import SlicAvx2

        peers["fast-slic (AVX2)"] = lambda im: SlicAvx2(
            num_components=n_segments, compactness=compactness, num_threads=torch.get_num_threads()
        ).iterate(np.ascontiguousarray(im), max_iter=iters)
    except ImportError:
        peers["fast-slic (AVX2)"] = None
    try:
        import cv2

        cv2.ximgproc.createSuperpixelSLIC  # noqa: B018  (only opencv-contrib has it)

        def opencv(im):
            lab = cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2LAB)
            step = max(1, int(round((im.shape[0] * im.shape[1] / n_segments) ** 0.5)))
            s = cv2.ximgproc.createSuperpixelSLIC(lab, algorithm=cv2.ximgproc.SLIC, region_size=step,
                                                  ruler=compactness)
            s.iterate(iters)
            s.enforceLabelConnectivity(25)
            return s.getLabels()

        peers[f"OpenCV {cv2.__version__} ximgproc SLIC"] = opencv
    except (ImportError, AttributeError):
        peers["OpenCV ximgproc SLIC"] = None
    if device.startswith("cuda"):
        try:
            from cuda_slic.slic import slic as cuda_slic

            def gpu_peer(im):
                # cuda-slic runs on pycuda when it can import it, and pycuda.autoinit makes a context of
                # its own current: torch's later kernels would then run in it, on pointers of another
                # context. Hide pycuda during the call so that cuda-slic takes its CuPy path, which
                # shares torch's (primary) context.
                saved = {m: sys.modules.get(m) for m in ("pycuda", "pycuda.autoinit")}
                sys.modules.update(dict.fromkeys(saved))  # None: "import pycuda" raises ImportError
                try:
                    return cuda_slic(im, n_segments=n_segments, compactness=compactness, max_iter=iters)
                finally:
                    for m, module in saved.items():
                        if module is None:
                            sys.modules.pop(m, None)
                        else:
                            sys.modules[m] = module

            peers["cuda-slic"] = gpu_peer
        except Exception:  # ImportError, or pycuda failing to find a device or compiler
            peers["cuda-slic"] = None
    return peers


def compare_at_equal_recall(rows: List[dict]) -> None:
    """Adds ``spl_ue_at_br`` and ``spl_asa_at_br`` to each peer row of a quality sweep: spl's UE and
    ASA at the peer's boundary recall, linear between the two spl points of nearest BR on either side
    (spl's points ordered by BR). A peer point outside the BR range of spl's sweep gets none."""
    mine = sorted((r for r in rows if r["method"] == "spl"), key=lambda r: r["boundary_recall"])
    for r in rows:
        if r["method"] == "spl":
            continue
        br = r["boundary_recall"]
        for lo, hi in zip(mine, mine[1:]):
            if lo["boundary_recall"] <= br <= hi["boundary_recall"]:
                span = hi["boundary_recall"] - lo["boundary_recall"]
                w = (br - lo["boundary_recall"]) / span if span > 0 else 0.0
                for key, out in (("undersegmentation_error", "spl_ue_at_br"),
                                 ("achievable_segmentation_accuracy", "spl_asa_at_br")):
                    r[out] = (1 - w) * lo[key] + w * hi[key]
                break


def densecrf(rgb: np.ndarray, cam: np.ndarray, present: np.ndarray, t: float) -> np.ndarray:
    """Labels (H, W) 0..20 by DenseCRF (``spl.apps.peers.densecrf_labels``) of the present classes' scores."""
    from .peers import densecrf_labels

    return np.concatenate([[0], np.nonzero(present)[0] + 1])[densecrf_labels(rgb, cam[present], t)]


# ------------------------------------------------------------------------------------------ the bench


@dataclass
class Bench:
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

    def add(self, workload: str, case: str, method: str, device: str, images: int, t: Timing,
            floor_bytes: Optional[float] = None, **extra) -> dict:
        row = {"workload": workload, "case": case, "method": method, "device": device, "images": images,
               "ms": 1e3 * t.median, "ms_min": 1e3 * t.low, "ms_max": 1e3 * t.high, "runs": t.runs,
               "ms_per_image": 1e3 * t.median / images, **extra}
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
        from .. import metrics, ops, reference

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
        t = measure(lambda r: reference.slic(batches[r % 3][:n_ref], K, compactness, iters), self.device,
                    self.repeats, self.budget)
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
        from .. import metrics, ops

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
                    methods.append((name, "cuda" if name == "cuda-slic" else "cpu",
                                    lambda c, name=name: slic_peers(self.device, K, c, iters)[name]))
        for name, device, make in methods:
            for c in grid:
                try:
                    segment = make(c)
                    scores = [metrics.superpixel_scores(np.asarray(segment(rgb)), gt, ignore_index=255)
                              for rgb, gt in qset]
                except Exception as e:  # a peer that breaks is reported, not fatal
                    if name == "spl":
                        raise
                    self.skip(f"W1 quality {name}: failed at compactness {c:g} ({type(e).__name__}: {e})")
                    break
                self.rows.append({"workload": "W1 quality", "case": case, "method": name, "device": device,
                                  "compactness": c,
                                  **{k: float(np.mean([s[k] for s in scores])) for k in scores[0]}})
        compare_at_equal_recall([r for r in self.rows if r["workload"] == "W1 quality" and r["case"] == case])

    # --------------------------------------------------------------------------------------- W2
    def w2(self) -> None:
        from .. import ops, reference

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
            ("consistency_weights", weights(ops.consistency_weights), weights(reference.consistency_weights),
             P * (8 + 8) + P * (8 + 8 + 4 + 8)),
            # pool: x read twice (plane scale, sums); unpool: written; backward: gradient read twice and
            # written; the int64 labels read in each of the four passes.
            ("pool(mean)+unpool fwd+bwd", pool_unpool(ops.superpixel_pool, ops.superpixel_unpool),
             pool_unpool(reference.superpixel_pool, reference.superpixel_unpool),
             4 * N * (2 + 1 + 2 + 1) + 8 * P * 4),
        ]
        for name, ours, ref, floor in cases:
            base = self.add("W2", f"{name}, {case}", "spl", self.device, B,
                            measure(ours, self.device, 3 * self.repeats, self.budget), floor)
            self.add("W2", f"{name}, {case}", "spl.reference", self.device, B,
                     measure(ref, self.device, self.repeats, self.budget), floor)
            self._speedups("W2", base)

    # --------------------------------------------------------------------------------------- W3
    def w3(self) -> None:
        from .. import asam, ops, reference

        from ..asam import ASAM_DEFAULTS, THRESHOLDS

        B, (H, W), K = (2, (128, 160), 100) if self.quick else (32, (375, 500), ASAM_DEFAULTS["n_segments"])
        case = (f"{B} images {H}x{W}, 20 classes (3 present) + background, K={K}, mean field at {len(THRESHOLDS)} "
                f"thresholds, {ASAM_DEFAULTS['steps']} x {ASAM_DEFAULTS['iters']} rounds")
        print(f"W3 ASAM: {case}", flush=True)
        pool = photo_pool(self.voc)
        data = [tuple(t.to(self.device) for t in asam_inputs(pool, B, (H, W), seed=s)) for s in range(3)]
        labels = [ops.slic(d[0], K) for d in data]
        # CAM read, refined scores written (21 channels), image read.
        floor = B * H * W * (20 * 4 + 21 * 4 + 3)
        t = measure(lambda r: asam.asam_refine(data[r % 3][0], data[r % 3][1], class_mask=data[r % 3][2],
                                               n_segments=K), self.device, self.repeats, self.budget)
        base = self.add("W3", case, "spl.asam_refine, SLIC included", self.device, B, t, floor)
        t = measure(lambda r: asam.asam_refine(data[r % 3][0], data[r % 3][1], labels[r % 3],
                                               class_mask=data[r % 3][2]), self.device, self.repeats, self.budget)
        given = self.add("W3", case, "spl.asam_refine, superpixels given", self.device, B, t, floor)
        n_ref = B if self.device.startswith("cuda") else max(1, B // 8)
        t = measure(lambda r: reference.asam_refine(data[r % 3][0][:n_ref], data[r % 3][1][:n_ref],
                                                    labels[r % 3][:n_ref], data[r % 3][2][:n_ref]),
                    self.device, self.repeats, self.budget)
        ref = self.add("W3", case, "spl.reference.asam_refine (torch.sparse), superpixels given", self.device,
                       n_ref, t, floor * n_ref / B)
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
        from . import cam_eval, peers
        from ..asam import asam_refine
        from ..metrics import DEFAULT_THRESHOLDS

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

        methods = [cam_eval.Method("raw CAM", scores=lambda it: it.cam),
                   cam_eval.Method("ASAM (defaults)", scores=on_device(lambda im, cam: asam_refine(im, cam)))]
        if self.peers:
            methods.append(cam_eval.Method("PAR (AFA/ToCo)", scores=on_device(peers.par_refine)))
            if has_densecrf():
                methods.append(cam_eval.Method("DenseCRF", labels=lambda it, t: peers.densecrf_labels(it.rgb, it.cam, t)))
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
            print(f"  {r['method']:16s} mIoU {r['miou']:.2f} ({r['gain']:+.2f}) at t = {r['best_t']:.2f}, "
                  f"{r['miou_at_raw_t']:.2f} at the raw CAM's t", flush=True)

    def _quality_items(self, count: int, tmp: str):
        from . import cam_eval

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
        items = [cam_eval.Item(name, rgb, truth, np.flatnonzero(present), cam[present])
                 for name, rgb, truth, cam, present in legacy]
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
            common = ["--images", os.path.join(root, "images"), "--cams", os.path.join(root, "cams"), "--gt",
                      os.path.join(root, "gt"), "--batch-size", "8", "--workers", str(workers), "--quiet",
                      "--device", "cuda" if self.device.startswith("cuda") else "cpu"]
            first = run_refine_job(common + ["--out", os.path.join(tmp, "out")], tmp)
            again = run_refine_job(common + ["--out", os.path.join(tmp, "out")], tmp)
            with open(os.path.join(tmp, "out", "eval.json")) as f:
                ev = json.load(f)
            quality = {"miou_before": ev["miou_before"], "miou_after": ev["miou_after"]}
            base = self.add("refine", case, "spl refine, end to end", self.device, n, Timing(first, first, first, 1),
                            images_per_s=n / first, **quality)
            self.add("refine", case, "spl refine, rerun with every output present", self.device, n,
                     Timing(again, again, again, 1), images_per_s=n / again)
            # The same driver with spl.reference's SLIC and ASAM swapped in, on a few images.
            n_ref = min(n, 2 if self.quick else 4)
            with open(os.path.join(tmp, "few.txt"), "w") as f:
                f.write("\n".join(sorted(os.path.splitext(x)[0] for x in os.listdir(os.path.join(root, "images")))[:n_ref]))
            ref_s = run_refine_job(common + ["--out", os.path.join(tmp, "out-ref"), "--list", os.path.join(tmp, "few.txt")],
                                tmp, reference=True)
            ref = self.add("refine", case, "the same driver on spl.reference ops", self.device, n_ref,
                           Timing(ref_s, ref_s, ref_s, 1), images_per_s=n_ref / ref_s)
            ref["vs_spl"] = ref["ms_per_image"] / base["ms_per_image"]
        self.note("refine", "one run each, wall clock of `python -m spl refine` including start-up, decoding and "
                            "writing; the reference run is short, so its start-up weighs more")

    def _speedups(self, workload: str, base: dict) -> None:
        """Each other row of the case: how many times spl's time per image it takes."""
        for r in self.rows:
            if r["workload"] == workload and r["case"] == base["case"] and r is not base and "ms_per_image" in r:
                r["vs_spl"] = r["ms_per_image"] / base["ms_per_image"]

    # ---------------------------------------------------------------------------------- scaling
    def sweep(self, op: str) -> None:
        self._sweeps(op, self._slic_methods() if op == "SLIC" else self._asam_methods())

    def _slic_methods(self):
        from .. import ops, reference

        def spl_fn(batch, K):
            return lambda r: ops.slic(batch, K)

        def ref_fn(batch, K):
            return lambda r: reference.slic(batch, K)

        methods = [("spl", self.device, spl_fn), ("spl.reference", self.device, ref_fn)]
        if self.peers:
            for name, segment in slic_peers(self.device, 1000, 10.0, 10).items():
                # A GPU run sweeps the GPU peer only: the CPU peers' curves belong to a CPU run.
                if segment is None or (self.device.startswith("cuda") and name != "cuda-slic"):
                    continue
                def peer(batch, K, name=name):
                    seg = slic_peers(self.device, K, 10.0, 10)[name]
                    host = batch.permute(0, 2, 3, 1).cpu().numpy()
                    return lambda r: [seg(np.ascontiguousarray(im)) for im in host]
                methods.append((name, "cuda" if name == "cuda-slic" else "cpu", peer))
        return methods

    def _asam_methods(self):
        from .. import asam, ops, reference

        def spl_fn(batch, K):
            images, cams, mask = batch
            return lambda r: asam.asam_refine(images, cams, class_mask=mask, n_segments=K)

        def spl_given(batch, K):
            images, cams, mask = batch
            labels = ops.slic(images, K)
            return lambda r: asam.asam_refine(images, cams, labels, class_mask=mask)

        def ref_given(batch, K):
            images, cams, mask = batch
            labels = ops.slic(images, K)
            return lambda r: reference.asam_refine(images, cams, labels, mask)

        methods = [("spl (SLIC included)", self.device, spl_fn),
                   ("spl (superpixels given)", self.device, spl_given),
                   ("spl.reference (superpixels given)", self.device, ref_given)]
        if self.peers and has_densecrf():
            def crf(batch, K):
                images, cams, mask = (t.cpu().numpy() for t in batch)
                images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
                return lambda r: [densecrf(images[i], cams[i], mask[i], 0.15) for i in range(len(images))]
            methods.append(("DenseCRF", "cpu", crf))
        return methods

    def _sweeps(self, op: str, methods) -> None:
        """Time against batch size, image size and K; a method leaves a sweep once a point is slower
        than the limit (costs grow along every sweep)."""
        pool = photo_pool(self.voc)
        if self.quick:
            sweeps = {"batch": [1, 2, 4], "size": [128, 192, 256], "K": [50, 100, 200]}
            fixed = {"batch": 2, "size": 128, "K": 100}
        else:
            sweeps = {"batch": [1, 2, 4, 8, 16, 32, 64], "size": [256, 512, 1024, 2048],
                      "K": [100, 300, 1000, 3000, 5000]}
            fixed = {"batch": 8 if self.device.startswith("cuda") else 1, "size": 512, "K": 1000}
        limit = 0.5 if self.quick else 4.0  # seconds per call: a method whose next point would take
        # longer (its last time scaled by the growth in pixels or images) leaves the sweep.
        print(f"scaling, {op}: " + ", ".join(f"{k} {v[0]}..{v[-1]}" for k, v in sweeps.items()), flush=True)
        for axis, values in sweeps.items():
            active = {name for name, *_ in methods}
            last: Dict[str, float] = {}
            for v_prev, v in zip([None] + values[:-1], values):
                p = dict(fixed, **{axis: v})
                size = (p["size"], p["size"])
                if op == "SLIC":
                    batch = photo_batches(pool, p["batch"], size, 1)[0].to(self.device)
                else:
                    batch = tuple(t.to(self.device) for t in asam_inputs(pool, p["batch"], size))
                for name, device, make in methods:
                    if name in last and v_prev is not None:
                        scale = {"batch": v / v_prev, "size": (v / v_prev) ** 2, "K": 1.0}[axis]
                        if last[name] * scale > limit:
                            active.discard(name)
                    if name not in active:
                        continue
                    try:
                        t = measure(make(batch, p["K"]), device, self.repeats, self.budget / 2)
                    except torch.cuda.OutOfMemoryError:
                        active.discard(name)
                        self.skip(f"scaling {op} {name}: out of memory at {axis} {v}")
                        continue
                    except Exception as e:  # a peer failing here is reported, not fatal
                        if name.startswith("spl"):
                            raise
                        active.discard(name)
                        self.skip(f"scaling {op} {name}: failed at {axis} {v} ({type(e).__name__}: {e})")
                        continue
                    self.scaling.append({"op": op, "axis": axis, "value": v, "method": name, "device": device,
                                         "batch": p["batch"], "size": p["size"], "K": p["K"], "ms": 1e3 * t.median,
                                         "ms_min": 1e3 * t.low, "ms_max": 1e3 * t.high, "runs": t.runs})
                    last[name] = t.median
                del batch
                if self.device.startswith("cuda"):
                    torch.cuda.empty_cache()
            self.progress()


def write_refine_dataset(items, tmp: str, copies: int) -> str:
    """images/*.jpg, cams/*.npy (IRN format) and gt/*.png of the items, each ``copies`` times."""
    from PIL import Image

    root = os.path.join(tmp, "data")
    for sub in ("images", "cams", "gt"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for name, rgb, truth, cam, present in items:
        keys = np.nonzero(present)[0]
        for c in range(copies):
            stem = f"{name}_{c}"
            Image.fromarray(rgb).save(os.path.join(root, "images", stem + ".jpg"), quality=95)
            np.save(os.path.join(root, "cams", stem + ".npy"), {"keys": keys, "high_res": cam[keys]})
            Image.fromarray(truth.astype(np.uint8)).save(os.path.join(root, "gt", stem + ".png"))
    return root


def run_refine_job(args: List[str], cwd: str, reference: bool = False) -> float:
    """Seconds of one ``spl refine`` job, run as a user runs it (a new process, the installed spl)."""
    cmd = [sys.executable, "-m"] + (["spl.apps.reference_refine"] if reference else ["spl", "refine"]) + args
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"spl refine failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return seconds


# ---------------------------------------------------------------------------------------- reporting


def environment(device: str, bandwidth: float) -> dict:
    import spl

    env = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "spl": spl.__version__,
           "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
           "spl_cuda_kernels": spl.cuda_version() or None, "python": platform.python_version(),
           "cpu": _cpu_name(), "cpu_threads": torch.get_num_threads(), "device": device,
           "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
           "copy_bandwidth_gb_s": bandwidth / 1e9}
    try:
        env["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                    cwd=_HERE, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git"] = None
    return env


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _fmt_ms(ms: float) -> str:
    return f"{ms:.3g}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


def tables(report: dict) -> str:
    env = report["environment"]
    lines = [f"spl bench on {env['gpu'] or env['cpu']} ({env['device']}), torch {env['torch']}, "
             f"{env['cpu_threads']} CPU threads, {env['date']}; copy bandwidth {env['copy_bandwidth_gb_s']:.0f} GB/s"]
    rows = report["results"]
    order = ("W1", "W1 quality", "W2", "W3", "W3 quality", "refine")
    for workload in [w for w in order if any(r["workload"] == w for r in rows)]:
        mine = [r for r in rows if r["workload"] == workload]
        lines.append("")
        if workload == "W1 quality":
            lines += slic_quality_table(mine)
            continue
        if workload == "W3 quality":
            lines.append(f"### W3 quality: {mine[0]['case']}")
            lines.append("Each method refines once with its defaults; the background threshold t is swept over "
                         "its output (DenseCRF, which takes t as input, runs at each t).")
            lines.append("| method | mIoU (best t) | gain over raw CAM | best t | mIoU at the raw CAM's t | ms / image |")
            lines.append("|---|---|---|---|---|---|")
            for r in mine:
                at = r.get("miou_at_raw_t")
                lines.append(f"| {r['method']} | {r['miou']:.2f} | {r['gain']:+.2f} | {r['threshold']:.2f} | "
                             f"{'' if at is None else f'{at:.2f}'} | {_fmt_ms(r['ms_per_image'])} |")
            continue
        for case in dict.fromkeys(r["case"] for r in mine):
            lines.append(f"### {workload}: {case}")
            lines.append("| method | device | images / call | ms / call (median, min-max, runs) | ms / image | "
                         "x spl's time | floor ms (achieved) | quality |")
            lines.append("|---|---|---|---|---|---|---|---|")
            for r in (r for r in mine if r["case"] == case):
                floor = f"{_fmt_ms(r['floor_ms'])} ({r['floor_fraction']:.0%})" if "floor_ms" in r else ""
                q = ""
                if "boundary_recall" in r:
                    q = (f"BR {r['boundary_recall']:.3f}, UE {r['undersegmentation_error']:.4f}, "
                         f"ASA {r['achievable_segmentation_accuracy']:.4f}, {r['segments']:.0f} segments")
                elif "miou_after" in r:
                    q = f"mIoU {r['miou_before']:.1f} -> {r['miou_after']:.1f}"
                if "images_per_s" in r:
                    q = (q + "; " if q else "") + f"{r['images_per_s']:.1f} images/s"
                vs = f"{r['vs_spl']:.1f}x" if "vs_spl" in r else ""
                lines.append(f"| {r['method']} | {r['device']} | {r['images']} | {_fmt_ms(r['ms'])} "
                             f"({_fmt_ms(r['ms_min'])}-{_fmt_ms(r['ms_max'])}, {r['runs']}) | "
                             f"{_fmt_ms(r['ms_per_image'])} | {vs} | {floor} | {q} |")
        for n in report["notes"].get(workload, []):
            lines.append(f"- {n}")
    if report.get("contention"):
        from .bench_contention import contention_table

        lines += [""] + contention_table(report["contention"])
    if report["skipped"]:
        lines.append("\nskipped: " + "; ".join(report["skipped"]))
    return "\n".join(lines)


def slic_quality_table(rows: List[dict]) -> List[str]:
    """The quality sweep of W1 as a table, and per peer how often spl does better at equal BR."""
    lines = []
    for case in dict.fromkeys(r["case"] for r in rows):
        mine = [r for r in rows if r["case"] == case]
        lines.append(f"### W1 quality against compactness: {case}")
        lines.append("| method | compactness | BR | UE | ASA | segments | spl's UE at this BR | spl's ASA at this BR |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for r in mine:
            at = (f"{r['spl_ue_at_br']:.4f} | {r['spl_asa_at_br']:.4f}" if "spl_ue_at_br" in r
                  else ("" if r["method"] == "spl" else "outside spl's BR range") + " | ")
            lines.append(f"| {r['method']} | {r['compactness']:g} | {r['boundary_recall']:.3f} | "
                         f"{r['undersegmentation_error']:.4f} | {r['achievable_segmentation_accuracy']:.4f} | "
                         f"{r['segments']:.0f} | {at} |")
        for peer in dict.fromkeys(r["method"] for r in mine if r["method"] != "spl"):
            inside = [r for r in mine if r["method"] == peer and "spl_ue_at_br" in r]
            if inside:
                ue = sum(r["spl_ue_at_br"] <= r["undersegmentation_error"] for r in inside)
                asa = sum(r["spl_asa_at_br"] >= r["achievable_segmentation_accuracy"] for r in inside)
                lines.append(f"- {peer}: at equal boundary recall spl's UE is as low or lower at {ue} of "
                             f"{len(inside)} points, its ASA as high or higher at {asa} of {len(inside)}")
    return lines


def plot_slic_quality(report: dict, out: str) -> List[str]:
    """UE against BR over the compactness sweep, one curve per method (lower right is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if r["workload"] == "W1 quality"]
    if not rows:
        return []
    env = report["environment"]
    fig, ax = plt.subplots(figsize=(7, 5))
    for method in dict.fromkeys(r["method"] for r in rows):
        line = [r for r in rows if r["method"] == method]
        ax.plot([r["boundary_recall"] for r in line], [r["undersegmentation_error"] for r in line],
                marker="o", label=method)
        for r in line:
            ax.annotate(f"{r['compactness']:g}", (r["boundary_recall"], r["undersegmentation_error"]),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("boundary recall (r = 2 px), higher is better")
    ax.set_ylabel("undersegmentation error, lower is better")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"SLIC quality against compactness (labels): {rows[0]['case'].split(' (')[0]}", fontsize=9)
    fig.suptitle(f"spl bench: {env['gpu'] or env['cpu']}, {env['date'][:10]}", fontsize=9)
    fig.tight_layout()
    path = os.path.join(out, "quality_slic.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot(report: dict, out: str) -> List[str]:
    """One PNG per swept op: time against batch size, image size and K (log-log), one line per method."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    env = report["environment"]
    for op in dict.fromkeys(s["op"] for s in report["scaling"]):
        points = [s for s in report["scaling"] if s["op"] == op]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
        for ax, axis in zip(axes, ("batch", "size", "K")):
            on_axis = [s for s in points if s["axis"] == axis]
            for method in dict.fromkeys(s["method"] for s in on_axis):
                line = [s for s in on_axis if s["method"] == method]
                ax.errorbar([s["value"] for s in line], [s["ms"] for s in line],
                            yerr=[[s["ms"] - s["ms_min"] for s in line], [s["ms_max"] - s["ms"] for s in line]],
                            marker="o", capsize=2, label=f"{method} ({line[0]['device']})")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.set_xticks(sorted({s["value"] for s in on_axis}))
            ax.grid(True, which="both", alpha=0.3)
            fixed = {k: on_axis[0][k] for k in ("batch", "size", "K") if k != axis} if on_axis else {}
            label = {"batch": "batch size", "size": "image side (pixels, square)", "K": "superpixels K"}[axis]
            ax.set_xlabel(label)
            ax.set_ylabel("ms per call (median)")
            ax.set_title(", ".join(f"{k} {v}" for k, v in fixed.items()), fontsize=10)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"spl bench, {op}: {env['gpu'] or env['cpu']}, torch {env['torch']}, {env['date'][:10]}")
        fig.tight_layout()
        path = os.path.join(out, f"scaling_{op.lower()}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


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
    merged = {"environment": reports[0]["environment"], "complete": all(r.get("complete") for r in reports),
              "merged_from": [dict(r["environment"], arguments=r.get("arguments")) for r in reports],
              "results": [], "scaling": [], "skipped": [], "notes": {}, "seconds": 0.0}
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


def run_bench(args) -> int:
    from .. import ops

    if args.merge:
        try:
            report = merge_reports(args.merge)
        except BenchError as e:
            print(f"spl bench: {e}", file=sys.stderr)
            return 2
        print("spl bench: wrote " + ", ".join(write_outputs(report, args.out)))
        return 0
    try:
        workloads = parse_workloads(args.workload)
        device = args.device or ("cuda" if torch.cuda.is_available() and ops.has_cuda_kernels() else "cpu")
        if device not in ("cpu", "cuda"):
            raise BenchError(f"--device must be cpu or cuda, got {device!r}")
        if device == "cuda" and not (torch.cuda.is_available() and ops.has_cuda_kernels()):
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
    except BenchError as e:
        print(f"spl bench: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    bench = Bench(device, quick=args.quick, peers=args.peers, voc=voc, synth=synth, voc_val=voc_val,
                  w3_cams=args.w3_cams, w3_images=args.w3_images)
    env = environment(device, bench.bandwidth)
    start = time.perf_counter()
    json_path = os.path.join(args.out, "bench.json")

    def save(complete: bool) -> dict:
        """The report so far, written atomically after every stage: a job cut short keeps its figures."""
        report = {"environment": env, "complete": complete,
                  "arguments": {"workloads": workloads, "quick": args.quick, "peers": args.peers, "voc": voc,
                                "synth": synth, "scaling": args.scaling},
                  "results": bench.rows, "scaling": bench.scaling, "skipped": bench.skipped, "notes": bench.notes,
                  "contention": contention, "seconds": time.perf_counter() - start}
        with open(json_path + ".tmp", "w") as f:
            json.dump(report, f, indent=1)
        os.replace(json_path + ".tmp", json_path)
        return report

    contention: dict = {}
    bench.progress = lambda: save(complete=False)
    if args.contention:
        from .bench_contention import run_contention

        contention.update(run_contention(voc, args.quick))
        written = write_outputs(save(complete=True), args.out)
        print(f"\nspl bench: {time.perf_counter() - start:.0f} s; wrote " + ", ".join(written))
        return 0
    stages = [] if args.scaling_only else \
        [{"W1": bench.w1, "W2": bench.w2, "W3": bench.w3, "refine": bench.refine}[w] for w in workloads]
    if args.scaling and "W1" in workloads:
        stages.append(lambda: bench.sweep("SLIC"))
    if args.scaling and "W3" in workloads:
        stages.append(lambda: bench.sweep("ASAM"))
    for stage in stages:
        stage()
        save(complete=False)
    written = write_outputs(save(complete=True), args.out)
    print(f"\nspl bench: {time.perf_counter() - start:.0f} s; wrote " + ", ".join(written))
    return 0


def add_arguments(p) -> None:
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--workload", default=",".join(WORKLOADS), help="comma-separated subset of W1,W2,W3,refine")
    p.add_argument("--quick", action="store_true", help="small sizes: under a minute on a 2-core CPU (CI)")
    p.add_argument("--peers", action="store_true", help="also time the installed peers (scikit-image, fast-slic, "
                                                        "OpenCV ximgproc, cuda-slic, pydensecrf2)")
    p.add_argument("--out", default="spl-out/bench", help="folder for bench.json, bench.md and the plots")
    p.add_argument("--no-scaling", dest="scaling", action="store_false",
                   help="skip the sweeps over batch size, image size and K")
    p.add_argument("--scaling-only", action="store_true", help="only the sweeps (of W1: SLIC, of W3: ASAM)")
    p.add_argument("--contention", action="store_true",
                   help="instead of the workloads: every CPU workload idle, beside a busy torch process, and with one "
                        "thread beside it, each in a fresh process (spl/apps/bench_contention.py); --quick: two of them")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="combine the bench.json files of several runs on one "
                                                               "device into --out (tables, JSON, plots); runs nothing")
    p.add_argument("--voc", help="PASCAL VOC-style folder (JPEGImages, SegmentationClass) for the photos and the "
                                 "quality figures (default: $SPL_VOC or the project's shared/data/voc-dev; else "
                                 "scikit-image samples)")
    p.add_argument("--voc-val", help="voc-val-dev-style folder for W3's quality figures, on the report half of "
                                     "benchmarks/splits (default: $SPL_VOC_VAL or the project's shared/data/voc-val-dev)")
    p.add_argument("--w3-cams", help="folder of IRN-format CAMs of those images for W3's quality (e.g. real CAMs "
                                     "from shared/tools/real_cams.py; default: simulated by --synth)")
    p.add_argument("--w3-images", type=int, default=60, help="images of W3's quality figures (default 60)")
    p.add_argument("--synth", help="CAM simulator for the ASAM quality figures (default: $SPL_SYNTH_CAMS or "
                                   "shared/tools/synth_cams.py beside the VOC folder; else scenes of known shapes)")
