"""``spl refine``: refine the CAMs of a whole data set with ASAM, batch by batch, without losing work.

Pipeline: a DataLoader whose workers decode images and read CAMs (every WSSS format below), batches
of images refined on the device (images of equal size together: ``asam_refine`` is batch-invariant, so
the outputs do not depend on batch size, worker count or number of ranks), and a background thread
that writes the outputs. Every output is written to a temporary name and renamed, so a killed job
leaves no half-written file; a rerun skips images whose mask exists. A missing, truncated or malformed
image or CAM is reported as one JSON line in ``errors.jsonl`` and skipped; the exit code says whether
anything failed. Under ``torchrun`` each rank takes every world_size-th image of the list and its own
GPU (``LOCAL_RANK``); rank 0 gathers the evaluation.

CAM formats (``--format auto`` looks at each file):
  irn    ``.npy`` dict with ``keys`` (0-based foreground class indices) and ``high_res`` (or ``cam``)
         maps ``[n, h, w]``, as IRN / ReCAM write them.
  eps    ``.npy`` dict {0-based foreground class index: map [h, w]}, as EPS / L2G / PSA write them.
  array  ``.npy`` array ``[C, h, w]`` of foreground scores (C = --num-classes), or ``[C + 1, h, w]`` with
         the background first (dropped).
  png    label PNG (0 background, k for class k, 255 ignored): refined as one-hot scores.
"""
from __future__ import annotations

import concurrent.futures
import json
import math
import os
import sys
import time
import zipfile
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from . import asam
from .metrics import DEFAULT_THRESHOLDS, ConfusionMatrix, ThresholdSweep, confusion_matrix

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")
FORMATS = ("auto", "irn", "eps", "array", "png")


def voc_palette() -> List[int]:
    """The PASCAL VOC colour map (768 values), as the VOC devkit builds it."""
    palette = []
    for k in range(256):
        r = g = b = 0
        c = k
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


# ---------------------------------------------------------------------------------------------
# Reading

def find_file(folder: str, name: str, extensions) -> Optional[str]:
    for ext in extensions:
        path = os.path.join(folder, name + ext)
        if os.path.isfile(path):
            return path
    return None


def read_image(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im.load()  # decodes the whole file now: a truncated file fails here, not later
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            # 16-bit / 32-bit grayscale: PIL's convert("RGB") clips it to 255 (an all-white image).
            # Scale its full range to 8 bits instead.
            a = np.asarray(im, dtype=np.float64)
            top = 65535.0 if im.mode.startswith("I;16") else max(float(a.max()), 1.0)
            gray = np.clip(np.round(a / top * 255.0), 0, 255).astype(np.uint8)
            return np.repeat(gray[:, :, None], 3, axis=2)
        return np.array(im.convert("RGB"))  # a writable copy (torch tensors must not alias read-only memory)


def read_label_png(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode not in ("P", "L"):
            raise ValueError(f"{path}: a label PNG must be palette (P) or grayscale (L), got mode {im.mode}")
        return np.asarray(im)


def detect_format(path: str) -> str:
    if path.lower().endswith(".png"):
        return "png"
    data = _load_npy(path)
    if isinstance(data, dict):
        return "irn" if "keys" in data else "eps"
    return "array"


def _load_npy(path: str):
    try:
        data = np.load(path, allow_pickle=True)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npy file ({e})") from None
    if isinstance(data, np.ndarray) and data.dtype == object and data.shape == ():
        data = data.item()
    if not isinstance(data, (dict, np.ndarray)):
        raise ValueError(f"{path}: expected a dict or an array, got {type(data).__name__}")
    return data


def _finite(path: str, scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float32)
    if not np.isfinite(scores).all():
        raise ValueError(f"{path}: the CAM holds NaN or infinite values")
    return scores


def read_cam(path: str, fmt: str, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """(scores float32 [num_classes, h, w], present bool [num_classes]) from a CAM file."""
    if fmt == "auto":
        fmt = detect_format(path)
    present = np.zeros(num_classes, bool)
    if fmt == "png":
        labels = read_label_png(path)
        classes = [int(c) for c in np.unique(labels) if c not in (0, 255)]
        if any(c > num_classes for c in classes):
            raise ValueError(f"{path}: label {max(classes)} is not a class (1..{num_classes}, 0, 255)")
        scores = np.zeros((num_classes,) + labels.shape, np.float32)
        for c in classes:
            scores[c - 1] = labels == c
            present[c - 1] = True
        return scores, present
    data = _load_npy(path)
    if fmt == "irn":
        if not isinstance(data, dict) or "keys" not in data or not ({"high_res", "cam"} & set(data)):
            raise ValueError(f"{path}: an IRN CAM must be a dict with 'keys' and 'high_res' (or 'cam')")
        keys = np.asarray(data["keys"]).astype(np.int64).reshape(-1)
        maps = _finite(path, data["high_res"] if "high_res" in data else data["cam"])
        if maps.ndim != 3 or maps.shape[0] != keys.shape[0]:
            raise ValueError(f"{path}: {keys.shape[0]} keys but maps of shape {list(maps.shape)}")
        items = list(zip(keys.tolist(), maps))
    elif fmt == "eps":
        if not isinstance(data, dict):
            raise ValueError(f"{path}: an EPS CAM must be a dict {{class index: map}}")
        try:
            items = [(int(k), _finite(path, v)) for k, v in data.items()]
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: an EPS CAM must map class indices to maps ({e})") from None
        if any(v.ndim != 2 for _, v in items) or len({v.shape for _, v in items}) > 1:
            raise ValueError(f"{path}: the maps of an EPS CAM must be 2-D and of one size")
    elif fmt == "array":
        if not isinstance(data, np.ndarray) or data.ndim != 3:
            raise ValueError(f"{path}: an array CAM must have shape [C, H, W]")
        maps = _finite(path, data)
        if maps.shape[0] == num_classes + 1:
            maps = maps[1:]  # background first
        if maps.shape[0] != num_classes:
            raise ValueError(f"{path}: an array CAM must have {num_classes} (or {num_classes + 1}) channels, "
                             f"got {maps.shape[0]}")
        return maps, maps.reshape(num_classes, -1).max(1) > 0
    else:
        raise ValueError(f"unknown CAM format {fmt!r} (one of {FORMATS})")
    if not items:
        return np.zeros((num_classes, 1, 1), np.float32), present
    shape = items[0][1].shape
    scores = np.zeros((num_classes,) + shape, np.float32)
    for k, m in items:
        if not 0 <= k < num_classes:
            raise ValueError(f"{path}: class index {k} outside [0, {num_classes})")
        scores[k] = m
        present[k] = True
    return scores, present


class RefineDataset(torch.utils.data.Dataset):
    """One item per image name: image, CAM, ground truth and whether its output already exists.
    Failures come back as items with an ``error`` (so that one bad file never stops the loader)."""

    def __init__(self, names, images, cams, fmt, num_classes, gt=None, out=None):
        self.names, self.images, self.cams, self.fmt = names, images, cams, fmt
        self.num_classes, self.gt, self.out = num_classes, gt, out

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        name = self.names[i]
        item = {"name": name, "error": None, "stage": None}
        done = self.out is not None and os.path.isfile(os.path.join(self.out, name + ".png"))
        item["done"] = done
        if done and self.gt is None:
            return item  # nothing to read: the output exists and there is nothing to evaluate
        try:
            item["stage"] = "image"
            path = find_file(self.images, name, IMAGE_EXTENSIONS)
            if path is None:
                raise FileNotFoundError(f"no image {name}.* in {self.images}")
            item["image"] = read_image(path)
            item["stage"] = "cam"
            exts = (".png",) if self.fmt == "png" else (".npy",) if self.fmt != "auto" else (".npy", ".png")
            path = find_file(self.cams, name, exts)
            if path is None:
                raise FileNotFoundError(f"no CAM {name}{'/'.join(exts)} in {self.cams}")
            scores, present = read_cam(path, self.fmt, self.num_classes)
            H, W = item["image"].shape[:2]
            h, w = scores.shape[1:]
            if present.any() and (h > H or w > W or h < 1 or w < 1):
                raise ValueError(f"{path}: CAM of {h}x{w} for an image of {H}x{W}; a CAM must have the image's size "
                                 "or a smaller one, at least 1x1")
            if present.any() and not np.isfinite(scores[present]).all():
                raise ValueError(f"{path}: the CAM holds NaN or infinite scores")
            # Only the present classes' maps travel, as tensors (shared memory, not a pickle through
            # the loader's pipe): a dense 20-class VOC CAM is 15 MB, its two or three classes ~2 MB.
            # The absent classes are masked out everywhere downstream, so dropping them changes nothing.
            item["cam"] = torch.from_numpy(np.ascontiguousarray(scores[present]))
            item["present"] = present
            item["image"] = torch.from_numpy(item["image"])
            if self.gt is not None:
                item["stage"] = "gt"
                path = find_file(self.gt, name, (".png",))
                if path is None:
                    raise FileNotFoundError(f"no ground truth {name}.png in {self.gt}")
                item["gt"] = read_label_png(path)
                if item["gt"].shape != (H, W):
                    raise ValueError(f"{path}: ground truth is {item['gt'].shape} but the image is {(H, W)}")
            if done:
                item["stage"] = "output"
                item["previous"] = read_label_png(os.path.join(self.out, name + ".png"))
                scores_path = os.path.join(self.out, name + ".npy")
                if self.gt is not None and os.path.exists(scores_path):  # for the curve (--save-scores)
                    item["previous_scores"] = np.load(scores_path)
            item["stage"] = None
        except Exception as e:  # noqa: BLE001  (reported per image, never stops the job)
            item["error"] = f"{type(e).__name__}: {e}"
        return item


def _collate(items):
    return items


# ---------------------------------------------------------------------------------------------
# Writing

def atomic_write(path: str, write) -> None:
    """Writes through ``write(tmp_path)`` then renames: readers never see a partial file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def die_with_parent(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: the worker is killed when its parent dies, even by SIGKILL (the
    parent cannot clean up then; each orphaned worker held ~200 MB for minutes). Linux only."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container's or a job system's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover
        return max(1, os.cpu_count() or 1)


def budget_threads(threads: Optional[int], world: int = 1) -> int:
    """Sets and returns the main process's intra-op threads (--threads). Each DataLoader worker runs
    one thread (torch sets that in every worker). By default the main process takes the CPUs this
    process may use, shared among the processes of a torchrun job: the workers decode and wait most
    of the time, and spl's CPU kernels and asam_refine keep their speed beside them (issue 16; on 2
    cores with 2 workers, 80 VOC images: 2 threads were ~10% faster than 1 idle, and equal beside
    a busy process; README: Threads)."""
    if threads is None:  # the processes of a torchrun job on this machine share its CPUs
        threads = max(1, available_cpus() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    torch.set_num_threads(threads)
    return threads


class OutputLocked(RuntimeError):
    pass


def lock_output(out_dir: str, what: str, rank: int = 0):
    """Takes ``OUT/.spl-<what>.rank<r>.lock`` (flock: released by the kernel when the process dies, even
    by SIGKILL); returns the open file, to keep. Raises OutputLocked when another live process holds it."""
    import fcntl

    path = os.path.join(out_dir, f".spl-{what}.rank{rank}.lock")
    f = open(path, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise OutputLocked(f"another spl {what} (pid {holder}) is writing to {out_dir}; wait for it to finish or "
                           "use another --out") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def prepare_output(out_dir: str, prog: str) -> Optional[str]:
    """Creates the output folder and checks that it takes files; returns a one-line message instead of
    raising (an output location that does not work is a usage error, not an image's failure)."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, f".spl-probe-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("")
        os.remove(probe)
    except OSError as e:
        return f"{prog}: --out {out_dir} cannot hold the outputs ({e.strerror or type(e).__name__})"
    return None


def _remove_stale_temporaries(out_dir: str, names: List[str]) -> None:
    """Deletes the temporaries a killed run left for these images (``NAME.png.tmp-PID``).

    Only this rank's own names: another rank may be writing its temporaries right now.
    """
    mine = set(names)
    for f in os.listdir(out_dir):
        final, sep, _ = f.partition(".tmp-")
        if sep and os.path.splitext(final)[0] in mine:
            try:
                os.remove(os.path.join(out_dir, f))
            except FileNotFoundError:
                pass


def save_mask(path: str, mask: np.ndarray, palette: List[int]) -> None:
    from PIL import Image

    im = Image.fromarray(mask.astype(np.uint8), mode="P")
    im.putpalette(palette)
    atomic_write(path, lambda tmp: im.save(tmp, format="PNG"))


def save_scores(path: str, scores: np.ndarray) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, scores.astype(np.float32))
    atomic_write(path, write)


# ---------------------------------------------------------------------------------------------
# The job

def _distributed():
    """(rank, world size, local rank), initialising torch.distributed under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("SPL_DIST_BACKEND") != "gloo" else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), local


def list_names(images: str, list_file: Optional[str]) -> List[str]:
    if list_file:
        with open(list_file) as f:
            names = [line.split()[0] for line in f if line.strip() and not line.startswith("#")]
        return [os.path.splitext(os.path.basename(n))[0] for n in names]
    return sorted(os.path.splitext(f)[0] for f in os.listdir(images) if f.lower().endswith(IMAGE_EXTENSIONS))


ASAM_OPTIONS = ("mode", "n_segments", "compactness", "iters", "steps", "alpha", "weight", "sigma_c", "beta", "hops",
                "diffuse_iters", "diffuse_mix", "core", "edge_sigma")


def _check_options(args, options) -> Optional[str]:
    """A usage error in the options, found before any image is read (exit code 2), or None. The ASAM
    options are checked by asam_refine itself, on a 8x8 image (one place owns their ranges): an option
    out of range would otherwise fail every image, one line each in errors.jsonl."""
    if args.threads is not None and args.threads < 1:
        return f"--threads must be at least 1, got {args.threads}"
    for name, low in (("batch_size", 1), ("workers", 0), ("num_classes", 1)):
        if getattr(args, name) < low:
            return f"--{name.replace('_', '-')} must be at least {low}, got {getattr(args, name)}"
    if not (math.isfinite(args.bg_threshold) and args.bg_threshold > 0):
        return f"--bg-threshold must be a finite number > 0, got {args.bg_threshold}"
    try:
        asam.asam_refine(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, 1, 8, 8), **options)
    except (TypeError, ValueError) as e:
        message = str(e).removeprefix("asam_refine: ")
        for k in options:  # "iters must be ..." -> "--iters must be ..."
            if message.startswith((k + " ", k + ":")):
                return f"--{k.replace('_', '-')}{message[len(k):]}"
        return message
    return None


def run_refine(args) -> int:
    rank, world, local = _distributed()
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    # An explicit index: torch.cuda.set_device rejects a bare "cuda" (torch 2.11).
    device = torch.device(f"cuda:{local}" if args.device == "cuda" else args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    for name in ("images", "cams"):
        if not os.path.isdir(getattr(args, name)):
            print(f"spl refine: --{name} {getattr(args, name)} is not a folder", file=sys.stderr)
            return 2
    options = {k: getattr(args, k) for k in ASAM_OPTIONS}
    problem = _check_options(args, options)
    if problem is not None:
        print(f"spl refine: {problem}", file=sys.stderr)
        return 2
    problem = prepare_output(args.out, "spl refine")
    errors_path = os.path.join(args.out, "errors.jsonl" if world == 1 else f"errors.rank{rank}.jsonl")
    if problem is None and os.path.isdir(errors_path):
        problem = f"spl refine: {errors_path} is a folder; it must be a file (or absent)"
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    try:
        lock = lock_output(args.out, "refine", rank)  # noqa: F841  (held until the process ends)
    except OutputLocked as e:
        print(f"spl refine: {e}", file=sys.stderr)
        return 3
    budget_threads(args.threads, world)
    names = list_names(args.images, args.list)
    mine = names[rank::world]
    _remove_stale_temporaries(args.out, mine + (["eval"] if rank == 0 else []))
    t = args.bg_threshold
    dataset = RefineDataset(mine, args.images, args.cams, args.format, args.num_classes, args.gt, args.out)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                                         collate_fn=_collate, shuffle=False, worker_init_fn=die_with_parent)
    palette = voc_palette()
    before, after = ConfusionMatrix(args.num_classes + 1), ConfusionMatrix(args.num_classes + 1)
    # With --gt, the WSSS protocol's curves: mIoU against the background threshold, raw and refined.
    thresholds = tuple(sorted(set(DEFAULT_THRESHOLDS) | {float(t)}))
    curve_before = ThresholdSweep(thresholds, args.num_classes + 1)
    curve_after = ThresholdSweep(thresholds, args.num_classes + 1)
    failed = refined = skipped = 0
    writer = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    writes = []  # (item, its figures, the future of its write)
    try:
        from tqdm import tqdm

        bar = tqdm(total=len(mine), unit="img", disable=rank != 0 or args.quiet, dynamic_ncols=True)
    except ImportError:  # pragma: no cover
        bar = None
    start = time.perf_counter()
    with open(errors_path, "w") as errors:  # this run's failures (a rerun retries the earlier ones)
        def fail(item, message, stage):
            nonlocal failed
            failed += 1
            errors.write(json.dumps({"image": item["name"], "stage": stage, "error": message}) + "\n")
            errors.flush()

        def collect(pending, wait):
            """Counts the items whose outputs are written (their figures join the evaluation) and the
            failed writes; returns the writes still running."""
            nonlocal refined
            left = []
            for it, figures, future in pending:
                if not (wait or future.done()):
                    left.append((it, figures, future))
                elif future.exception() is not None:
                    fail(it, f"{type(future.exception()).__name__}: {future.exception()}", "write")
                else:
                    refined += 1
                    if figures is not None:
                        before.matrix += figures[0]
                        after.matrix += figures[1]
                        curve_before.matrix += figures[2].matrix
                        curve_after.matrix += figures[3].matrix
            return left

        for batch in loader:
            todo = []
            for item in batch:
                if item["error"] is not None:
                    fail(item, item["error"], item["stage"])
                elif item["done"]:
                    skipped += 1
                    if args.gt is not None:
                        raw_scores = _upsampled(item, device, args.num_classes)
                        before.update(asam.cam_to_mask(raw_scores, t, item["present"][None])[0].cpu(), item["gt"])
                        after.update(item["previous"], item["gt"])
                        present = np.flatnonzero(item["present"])
                        curve_before.update(raw_scores[0, present].cpu(), item["gt"], present + 1)
                        if item.get("previous_scores") is not None:
                            curve_after.update(item["previous_scores"][present], item["gt"], present + 1)
                else:
                    todo.append(item)
            groups: Dict[Tuple[int, int], list] = {}
            for item in todo:
                groups.setdefault(item["image"].shape[:2], []).append(item)
            # Images of one size are refined together; if that fails, each is refined alone, so that one
            # bad item never takes the others of its batch with it.
            work = list(groups.values())
            while work:
                items = work.pop(0)
                try:
                    images = torch.stack([it["image"] for it in items]).permute(0, 3, 1, 2).to(device)
                    cams = torch.cat([_upsampled(it, device, args.num_classes) for it in items])
                    mask = torch.from_numpy(np.stack([it["present"] for it in items])).to(device)
                    out = asam.asam_refine(images, cams, class_mask=mask, **options)
                    labels = asam.cam_to_mask(out, t, mask).cpu().numpy()
                    raw = asam.cam_to_mask(cams, t, mask).cpu().numpy() if args.gt is not None else None
                    scores = out.cpu().numpy() if args.save_scores or args.gt is not None else None
                except Exception as e:  # noqa: BLE001
                    if len(items) > 1:
                        work = [[it] for it in items] + work
                    else:
                        fail(items[0], f"{type(e).__name__}: {e}", "refine")
                    continue
                for j, it in enumerate(items):
                    figures = None
                    if args.gt is not None:  # counted once the outputs are written (a full disk: not at all)
                        present = np.flatnonzero(it["present"])
                        n = args.num_classes + 1
                        figures = (confusion_matrix(raw[j], it["gt"], n), confusion_matrix(labels[j], it["gt"], n),
                                   ThresholdSweep(thresholds, n).update(cams[j, present].cpu(), it["gt"], present + 1),
                                   ThresholdSweep(thresholds, n).update(scores[j, present], it["gt"], present + 1))
                    saved = scores[j] if args.save_scores else None
                    writes.append((it, figures,
                                   writer.submit(_write_outputs, args.out, it["name"], labels[j], saved, palette)))
            if bar is not None:
                bar.update(len(batch))
            writes = collect(writes, wait=False)
        writes = collect(writes, wait=True)
        writer.shutdown(wait=True)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - start

    counts = torch.tensor([refined, skipped, failed], dtype=torch.int64)
    if world > 1:
        import torch.distributed as dist

        reduce_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
        stacked = torch.stack([before.matrix, after.matrix]).to(reduce_device)
        counts = counts.to(reduce_device)
        dist.all_reduce(stacked)
        dist.all_reduce(counts)
        before.matrix, after.matrix = stacked[0].cpu(), stacked[1].cpu()
        counts = counts.cpu()
    refined, skipped, failed = counts.tolist()
    if rank == 0:
        print(f"spl refine: {refined} refined, {skipped} already done, {failed} failed "
              f"({len(names)} images, {world} process{'es' if world > 1 else ''}, {device.type}); "
              f"{refined / max(elapsed, 1e-9):.1f} images/s on rank 0's share")
        if failed:
            print(f"spl refine: failures are listed in {args.out}/errors*.jsonl", file=sys.stderr)
        if args.gt is not None:
            _report(args, before, after, refined + skipped, curve_before, curve_after)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return 1 if failed else 0


def _upsampled(item, device, num_classes: int) -> torch.Tensor:
    """[1, num_classes, H, W] scores on the device: the present classes' maps, upsampled to the image's
    size, zeros elsewhere."""
    maps = item["cam"].to(device)[None]
    H, W = item["image"].shape[:2]
    if maps.shape[1] and maps.shape[-2:] != (H, W):
        maps = torch.nn.functional.interpolate(maps, size=(H, W), mode="bilinear", align_corners=False)
    cam = torch.zeros(1, num_classes, H, W, dtype=maps.dtype, device=device)
    cam[:, torch.from_numpy(np.flatnonzero(item["present"])).to(device)] = maps  # an index: no device sync
    return cam


def _write_outputs(out_dir, name, labels, scores, palette):
    if scores is not None:  # scores first: an existing mask means everything for the image is there
        save_scores(os.path.join(out_dir, name + ".npy"), scores)
    save_mask(os.path.join(out_dir, name + ".png"), labels, palette)


def _report(args, before: ConfusionMatrix, after: ConfusionMatrix, images: int, curve_before: ThresholdSweep,
            curve_after: ThresholdSweep) -> None:
    names = VOC_CLASSES if args.num_classes == 20 else ["background"] + [f"class{k}" for k in range(1, args.num_classes + 1)]
    iou_b, iou_a = before.iou().tolist(), after.iou().tolist()
    print(f"\nmIoU over {images} images ({args.num_classes + 1} classes, 255 ignored, threshold {args.bg_threshold}):"
          f" before {100 * before.miou():.2f}, after ASAM {100 * after.miou():.2f}")
    print(f"{'class':14s} {'before':>7s} {'after':>7s}")
    for n, b, a in zip(names, iou_b, iou_a):
        if not (np.isnan(b) and np.isnan(a)):
            print(f"{n:14s} {100 * b:7.2f} {100 * a:7.2f}")
    print(f"\nmIoU against the background threshold (the WSSS protocol: refine once, then sweep t):")
    print(f"{'t':>6s} {'raw CAM':>8s} {'ASAM':>8s}")
    for t, b, a in zip(curve_before.thresholds, curve_before.miou(), curve_after.miou()):
        print(f"{t:6.2f} {100 * b:8.2f} {100 * a:8.2f}")
    (tb, mb), (ta, ma) = curve_before.best(), curve_after.best()
    if tb is not None:
        line = f"best t: raw CAM {tb:.2f} ({100 * mb:.2f})"
        line += f", ASAM {ta:.2f} ({100 * ma:.2f})" if ta is not None else ", ASAM: no refined scores"
        if curve_after.matrix.sum() < curve_before.matrix.sum():
            line += " (images refined by an earlier run without --save-scores are not in ASAM's curve)"
        print(line)
    report = {"images": images, "bg_threshold": args.bg_threshold, "miou_before": 100 * before.miou(),
              "curve": {"thresholds": list(curve_before.thresholds),
                        "raw": [100 * float(v) for v in curve_before.miou()],
                        "asam": [100 * float(v) for v in curve_after.miou()],
                        "best_t_raw": tb, "best_t_asam": ta},
              "miou_after": 100 * after.miou(),
              "iou_before": {n: None if np.isnan(v) else 100 * v for n, v in zip(names, iou_b)},
              "iou_after": {n: None if np.isnan(v) else 100 * v for n, v in zip(names, iou_a)}}
    atomic_write(os.path.join(args.out, "eval.json"),
                 lambda tmp: open(tmp, "w").write(json.dumps(report, indent=1)))


def add_arguments(p) -> None:
    d = asam.ASAM_DEFAULTS
    p.add_argument("--images", required=True, help="folder of images (JPEG / PNG)")
    p.add_argument("--cams", required=True, help="folder of CAMs, one file per image (same name)")
    p.add_argument("--out", required=True, help="output folder: <name>.png masks (VOC palette)")
    p.add_argument("--list", help="file of image names, one per line (default: every image in --images)")
    p.add_argument("--format", default="auto", choices=FORMATS, help="CAM format (default: auto, per file)")
    p.add_argument("--gt", help="folder of ground-truth PNGs: print mIoU before and after, write eval.json")
    p.add_argument("--save-scores", action="store_true", help="also write the refined scores as <name>.npy")
    p.add_argument("--num-classes", type=int, default=20, help="foreground classes (default 20, VOC)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (0: in the main one)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads of the main process (each worker runs one); default: the CPUs this "
                        "process may use, shared among a torchrun job's processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("ASAM options (spl.asam_refine)")
    p.add_argument("--bg-threshold", type=float, default=0.15,
                   help="background threshold of the masks written (and of --gt's figures): the one you use for "
                        "your raw CAMs, the refined scores share their scale (default 0.15, IRN's convention)")
    g.add_argument("--mode", choices=["meanfield", "diffusion"], default=d["mode"])
    g.add_argument("--n-segments", type=int, default=d["n_segments"])
    g.add_argument("--compactness", type=float, default=d["compactness"])
    g.add_argument("--iters", type=int, default=d["iters"])
    g.add_argument("--steps", type=int, default=d["steps"])
    g.add_argument("--alpha", type=float, default=d["alpha"])
    g.add_argument("--weight", type=float, default=d["weight"])
    g.add_argument("--sigma-c", type=float, default=d["sigma_c"])
    g.add_argument("--beta", type=float, default=d["beta"])
    g.add_argument("--hops", type=int, default=d["hops"])
    g.add_argument("--diffuse-iters", type=int, default=d["diffuse_iters"])
    g.add_argument("--diffuse-mix", type=float, default=d["diffuse_mix"])
    g.add_argument("--core", type=float, default=d["core"])
    g.add_argument("--edge-sigma", type=float, default=d["edge_sigma"])
