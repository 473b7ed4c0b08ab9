"""``spl refine``: refine the CAMs of a whole data set with ASAM, batch by batch, without losing work.

Pipeline: a DataLoader whose workers decode images and read CAMs (every WSSS format below), batches
of images refined on the device (images of equal size together: ``asam_refine`` is batch-invariant, so
the outputs do not depend on batch size, worker count or number of ranks), and a background thread
that writes the outputs. Every output is written to a temporary name and renamed, so a killed job
leaves no half-written file; a rerun skips images whose mask exists. A missing, truncated or malformed
image or CAM is reported as one JSON line in ``errors.jsonl`` and skipped; the exit code says whether
anything failed. Under ``torchrun`` each rank takes every world_size-th image of the list and its own
GPU (``LOCAL_RANK``); rank 0 gathers the evaluation.

CAM formats (``--format auto`` looks at each file; spl/formats.py): IRN / ReCAM, AMN, CLIP-ES, EPS /
L2G / PSA dicts, plain arrays and label PNGs, for PASCAL VOC (``--dataset voc``) or MS-COCO 2014
(``--dataset coco``). ``--ignore-band LOW HIGH`` writes training pseudo-labels with 255 where the top
foreground score lies between the two thresholds (IRN's conf_bg / conf_fg, ToCo's two thresholds).
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from .. import asam
from ..formats import (
    DATASETS,
    FORMATS,
    IGNORE,
    IMAGE_EXTENSIONS,
    class_names,
    find_file,
    list_names,
    read_cam,
    read_image,
    read_label_png,
    to_image_grid,
    voc_palette,
)
from ..metrics import DEFAULT_THRESHOLDS, ConfusionMatrix, ThresholdSweep, confusion_matrix
from .common import (
    OutputLocked,
    add_dataset_arguments,
    add_threads_argument,
    atomic_write,
    budget_threads,
    die_with_parent,
    distributed,
    lock_output,
    prepare_output,
)


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
            cam = read_cam(path, self.fmt, self.num_classes)
            present = cam.present
            H, W = item["image"].shape[:2]
            if present.any() and not np.isfinite(cam.scores[present]).all():
                raise ValueError(f"{path}: the CAM holds NaN or infinite scores")
            # Only the present classes' maps travel, as tensors (shared memory, not a pickle through
            # the loader's pipe): a dense 20-class VOC CAM is 15 MB, its two or three classes ~2 MB.
            # The absent classes are masked out everywhere downstream, so dropping them changes nothing.
            # Stride-4 maps (IRN's "cam") are brought to the image's grid here; smaller maps are
            # upsampled on the device.
            item["cam"] = to_image_grid(
                path, torch.from_numpy(np.ascontiguousarray(cam.scores[present])), cam.stride, H, W
            )
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

ASAM_OPTIONS = (
    "mode",
    "n_segments",
    "compactness",
    "iters",
    "steps",
    "alpha",
    "weight",
    "sigma_c",
    "beta",
    "hops",
    "diffuse_iters",
    "diffuse_mix",
    "core",
    "edge_sigma",
)


def _check_options(args, options) -> Optional[str]:
    """A usage error in the options, found before any image is read (exit code 2), or None. The ASAM
    options are checked by asam_refine itself, on a 8x8 image (one place owns their ranges): an option
    out of range would otherwise fail every image, one line each in errors.jsonl."""
    if args.threads is not None and args.threads < 1:
        return f"--threads must be at least 1, got {args.threads}"
    if args.ignore_band is not None:
        low, high = args.ignore_band
        if not (math.isfinite(low) and math.isfinite(high) and 0 <= low < high):
            return f"--ignore-band LOW HIGH must be finite numbers with 0 <= LOW < HIGH, got {low} {high}"
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
                return f"--{k.replace('_', '-')}{message[len(k) :]}"
        return message
    return None


def run_refine(args, refiner=None) -> int:
    """Runs the job of the parsed ``spl refine`` arguments; returns the exit code. ``refiner``: the
    function called as ``asam_refine(images, cams, class_mask=..., **ASAM options)`` (default
    ``spl.asam_refine``; spl bench times the driver on the reference ops through it)."""
    job = _Job.start(args, refiner)
    if isinstance(job, int):  # a usage error (2) or another refine writing there (3)
        return job
    try:
        return job.run()
    finally:
        if job.world > 1:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()


class _Evaluation:
    """With --gt: the figures of the images whose outputs are written, raw CAM against refined: confusion
    matrices at the background threshold, the curves over thresholds (the WSSS protocol), and with an
    ignore band the written pseudo-labels' confident pixels."""

    def __init__(self, args):
        self.n = args.num_classes + 1
        self.t = args.bg_threshold
        self.band = tuple(args.ignore_band) if args.ignore_band else None
        self.thresholds = tuple(sorted(set(DEFAULT_THRESHOLDS) | {float(self.t)}))
        self.before, self.after = ConfusionMatrix(self.n), ConfusionMatrix(self.n)
        self.curve_before = ThresholdSweep(self.thresholds, self.n)
        self.curve_after = ThresholdSweep(self.thresholds, self.n)
        self.band_cm = ConfusionMatrix(self.n) if self.band is not None else None
        self.band_pixels = [0, 0]  # ignored, labelled (ground truth not 255) pixels of the written masks
        self.unscored = 0  # finished images of an earlier --ignore-band run without saved scores: no mask at t

    def of_refined(self, item, raw, labels, written, cam, scores):
        """The figures of one refined image (added once its outputs are written: a full disk, not at all)."""
        present = np.flatnonzero(item["present"])
        gt = item["gt"]
        figures = (
            confusion_matrix(raw, gt, self.n),
            confusion_matrix(labels, gt, self.n),
            ThresholdSweep(self.thresholds, self.n).update(cam[present].cpu(), gt, present + 1).matrix,
            ThresholdSweep(self.thresholds, self.n).update(scores[present], gt, present + 1).matrix,
        )
        return figures + (_band_figures(written, gt, self.n) if self.band is not None else ())

    def add(self, figures) -> None:
        self.before.matrix += figures[0]
        self.after.matrix += figures[1]
        self.curve_before.matrix += figures[2]
        self.curve_after.matrix += figures[3]
        if self.band_cm is not None:
            self._add_band(*figures[4:])

    def _add_band(self, matrix, ignored, labelled) -> None:
        self.band_cm.matrix += matrix
        self.band_pixels = [self.band_pixels[0] + ignored, self.band_pixels[1] + labelled]

    def add_finished(self, item, raw_scores) -> None:
        """An image an earlier run finished: its raw CAM, and its written mask (or saved scores)."""
        present, gt = np.flatnonzero(item["present"]), item["gt"]
        self.before.update(asam.cam_to_mask(raw_scores, self.t, item["present"][None])[0].cpu(), gt)
        self.curve_before.update(raw_scores[0, present].cpu(), gt, present + 1)
        previous, saved = item["previous"], item.get("previous_scores")
        if saved is not None:
            self.curve_after.update(saved[present], gt, present + 1)
        # A mask written with an ignore band (this run's option, or 255s of an earlier run's) is not
        # the mask at t: that comes from the saved scores, if any.
        if self.band is not None or (previous == IGNORE).any():
            if self.band_cm is not None:
                self._add_band(*_band_figures(previous, gt, self.n))
            previous = None if saved is None else asam.cam_to_mask(saved, self.t, item["present"]).astype(np.uint8)
        if previous is not None:
            self.after.update(previous, gt)
        else:
            self.unscored += 1

    def all_reduce(self, device) -> None:
        """Sums every rank's figures (torch.distributed)."""
        import torch.distributed as dist

        reduce_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
        band = self.band_cm.matrix if self.band_cm is not None else torch.zeros_like(self.before.matrix)
        stacked = torch.stack([self.before.matrix, self.after.matrix, band]).to(reduce_device)
        counts = torch.tensor([self.unscored, *self.band_pixels]).to(reduce_device)
        curves = torch.from_numpy(np.stack([self.curve_before.matrix, self.curve_after.matrix])).to(reduce_device)
        for x in (stacked, counts, curves):
            dist.all_reduce(x)
        self.before.matrix, self.after.matrix = stacked[0].cpu(), stacked[1].cpu()
        if self.band_cm is not None:
            self.band_cm.matrix = stacked[2].cpu()
        self.curve_before.matrix, self.curve_after.matrix = curves[0].cpu().numpy(), curves[1].cpu().numpy()
        self.unscored, self.band_pixels = int(counts[0]), counts[1:].cpu().tolist()


class _Job:
    """One rank's share of an spl refine job: read (DataLoader), refine (groups of equal size), write
    (a background thread), count."""

    @staticmethod
    def start(args, refiner):
        """Checks the arguments and the output folder, takes its lock; a _Job, or an exit code."""
        rank, world, local = distributed()
        if args.device is None:
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        # An explicit index: torch.cuda.set_device rejects a bare "cuda" (torch 2.11).
        device = torch.device(f"cuda:{local}" if args.device == "cuda" else args.device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if args.num_classes is None:
            args.num_classes = len(DATASETS[args.dataset]) - 1
        options = {k: getattr(args, k) for k in ASAM_OPTIONS}
        errors_path = os.path.join(args.out, "errors.jsonl" if world == 1 else f"errors.rank{rank}.jsonl")
        problem = next(
            (
                f"spl refine: --{name} {getattr(args, name)} is not a folder"
                for name in ("images", "cams")
                if not os.path.isdir(getattr(args, name))
            ),
            None,
        )
        if problem is None:
            problem = _check_options(args, options)
            problem = None if problem is None else f"spl refine: {problem}"
        if problem is None:
            problem = prepare_output(args.out, "spl refine")
        if problem is None and os.path.isdir(errors_path):
            problem = f"spl refine: {errors_path} is a folder; it must be a file (or absent)"
        if problem is not None:
            print(problem, file=sys.stderr)
            return 2
        try:
            lock = lock_output(args.out, "refine", rank)
        except OutputLocked as e:
            print(f"spl refine: {e}", file=sys.stderr)
            return 3
        return _Job(args, refiner or asam.asam_refine, options, rank, world, device, errors_path, lock)

    def __init__(self, args, refiner, options, rank, world, device, errors_path, lock):
        self.args, self.refiner, self.options = args, refiner, options
        self.rank, self.world, self.device = rank, world, device
        self.errors_path, self.lock = errors_path, lock  # the lock is held until the process ends
        self.evaluation = _Evaluation(args) if args.gt is not None else None
        self.band = tuple(args.ignore_band) if args.ignore_band else None
        self.palette = voc_palette()  # 256 distinct colours: VOC's 21 and COCO's 81 classes, 255 ignored
        self.refined = self.skipped = self.failed = 0
        self.errors = None

    def run(self) -> int:
        args = self.args
        budget_threads(args.threads, self.world)
        names = list_names(args.images, args.list)
        mine = names[self.rank :: self.world]
        _remove_stale_temporaries(args.out, mine + (["eval"] if self.rank == 0 else []))
        dataset = RefineDataset(mine, args.images, args.cams, args.format, args.num_classes, args.gt, args.out)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=args.batch_size,
            num_workers=args.workers,
            collate_fn=_collate,
            shuffle=False,
            worker_init_fn=die_with_parent,
        )
        writer = concurrent.futures.ThreadPoolExecutor(max_workers=2)
        writes = []  # (item, its figures, the future of its write)
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(mine), unit="img", disable=self.rank != 0 or args.quiet, dynamic_ncols=True)
        except ImportError:  # pragma: no cover
            bar = None
        start = time.perf_counter()
        with open(self.errors_path, "w") as self.errors:  # this run's failures (a rerun retries the earlier ones)
            for batch in loader:
                writes += self._refine(self._todo(batch), writer)
                if bar is not None:
                    bar.update(len(batch))
                writes = self._collect(writes, wait=False)
            self._collect(writes, wait=True)
            writer.shutdown(wait=True)
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - start
        return self._finish(len(names), elapsed)

    def _fail(self, item, message, stage) -> None:
        self.failed += 1
        self.errors.write(json.dumps({"image": item["name"], "stage": stage, "error": message}) + "\n")
        self.errors.flush()

    def _todo(self, batch) -> list:
        """The items to refine; failed and finished ones are counted (finished ones evaluated)."""
        todo = []
        for item in batch:
            if item["error"] is not None:
                self._fail(item, item["error"], item["stage"])
            elif item["done"]:
                self.skipped += 1
                if self.evaluation is not None:
                    self.evaluation.add_finished(item, _upsampled(item, self.device, self.args.num_classes))
            else:
                todo.append(item)
        return todo

    def _refine(self, todo, writer) -> list:
        """Refines the items, images of one size together; if that fails, each alone, so that one bad item
        never takes the others of its batch with it. Returns the writes submitted."""
        args, device, t = self.args, self.device, self.args.bg_threshold
        groups: Dict[Tuple[int, int], list] = {}
        for item in todo:
            groups.setdefault(item["image"].shape[:2], []).append(item)
        work, writes = list(groups.values()), []
        while work:
            items = work.pop(0)
            try:
                images = torch.stack([it["image"] for it in items]).permute(0, 3, 1, 2).to(device)
                cams = torch.cat([_upsampled(it, device, args.num_classes) for it in items])
                mask = torch.from_numpy(np.stack([it["present"] for it in items])).to(device)
                out = self.refiner(images, cams, class_mask=mask, **self.options)
                labels = asam.cam_to_mask(out, t, mask).cpu().numpy()
                written = labels if self.band is None else _ignore_band(out, mask, *self.band).cpu().numpy()
                raw = asam.cam_to_mask(cams, t, mask).cpu().numpy() if self.evaluation is not None else None
                scores = out.cpu().numpy() if args.save_scores or self.evaluation is not None else None
            except Exception as e:  # noqa: BLE001
                if len(items) > 1:
                    work = [[it] for it in items] + work
                else:
                    self._fail(items[0], f"{type(e).__name__}: {e}", "refine")
                continue
            for j, it in enumerate(items):
                figures = (
                    None
                    if self.evaluation is None
                    else self.evaluation.of_refined(it, raw[j], labels[j], written[j], cams[j], scores[j])
                )
                saved = scores[j] if args.save_scores else None
                writes.append(
                    (it, figures, writer.submit(_write_outputs, args.out, it["name"], written[j], saved, self.palette))
                )
        return writes

    def _collect(self, pending, wait: bool) -> list:
        """Counts the items whose outputs are written (their figures join the evaluation) and the failed
        writes; returns the writes still running."""
        left = []
        for it, figures, future in pending:
            if not (wait or future.done()):
                left.append((it, figures, future))
            elif future.exception() is not None:
                self._fail(it, f"{type(future.exception()).__name__}: {future.exception()}", "write")
            else:
                self.refined += 1
                if figures is not None:
                    self.evaluation.add(figures)
        return left

    def _finish(self, images: int, elapsed: float) -> int:
        """Sums the ranks' counts and figures; rank 0 reports. Returns the exit code."""
        counts = torch.tensor([self.refined, self.skipped, self.failed], dtype=torch.int64)
        if self.world > 1:
            import torch.distributed as dist

            if dist.get_backend() == "nccl":
                counts = counts.to(self.device)
            dist.all_reduce(counts)
            if self.evaluation is not None:
                self.evaluation.all_reduce(self.device)
        refined, skipped, failed = counts.cpu().tolist()
        if self.rank == 0:
            print(
                f"spl refine: {refined} refined, {skipped} already done, {failed} failed "
                f"({images} images, {self.world} process{'es' if self.world > 1 else ''}, {self.device.type}); "
                f"{refined / max(elapsed, 1e-9):.1f} images/s on rank 0's share"
            )
            if failed:
                print(f"spl refine: failures are listed in {self.args.out}/errors*.jsonl", file=sys.stderr)
            if self.evaluation is not None:
                _report(self.args, self.evaluation, refined + skipped)
        return 1 if failed else 0


def _ignore_band(scores: torch.Tensor, class_mask: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Training pseudo-labels [B, H, W] from scores [B, C, H, W]: class k + 1 where the top allowed class
    score is >= high (k that class), background where it is < low, IGNORE in between (IRN's conf_fg /
    conf_bg, ToCo's high / low thresholds)."""
    labels = asam.cam_to_mask(scores, high, class_mask)
    top = (
        scores.masked_fill(~class_mask[:, :, None, None], float("-inf")).amax(1)
        if scores.shape[1]
        else scores.new_full(labels.shape, float("-inf"))
    )
    return labels.masked_fill((top >= low) & (top < high), IGNORE)


def _band_figures(written: np.ndarray, gt: np.ndarray, n: int):
    """(confusion matrix of the confident pixels, ignored pixels, labelled pixels) of a pseudo-label map
    with an ignore band, against the ground truth (its 255 pixels left out)."""
    written, gt = np.asarray(written, np.int64), np.asarray(gt, np.int64)
    ignored = written == IGNORE
    labelled = gt != IGNORE
    matrix = confusion_matrix(np.where(ignored, 0, written), np.where(ignored, IGNORE, gt), n)
    return matrix, int((ignored & labelled).sum()), int(labelled.sum())


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


def _report(args, evaluation: "_Evaluation", images: int) -> None:
    ev = evaluation
    before, after, curve_before, curve_after, unscored = (
        ev.before,
        ev.after,
        ev.curve_before,
        ev.curve_after,
        ev.unscored,
    )
    band = None if ev.band_cm is None else (ev.band_cm, *ev.band_pixels)
    from .evaluate import class_table, curve_json, curve_table

    names = class_names(args.dataset, args.num_classes)
    iou_b, iou_a = before.iou().tolist(), after.iou().tolist()
    print(
        f"\nmIoU over {images} images ({args.num_classes + 1} classes, 255 ignored, threshold {args.bg_threshold}):"
        f" before {100 * before.miou():.2f}, after ASAM {100 * after.miou():.2f}"
    )
    if unscored:
        print(
            f"({unscored} images written earlier with --ignore-band and without --save-scores have no mask at "
            f"{args.bg_threshold}: not in 'after')"
        )
    for line in class_table(names, {"before": iou_b, "after": iou_a}):
        print(line)
    print("\nmIoU against the background threshold (the WSSS protocol: refine once, then sweep t):")
    sweeps = {"raw CAM": curve_before, "ASAM": curve_after}
    for line in curve_table(sweeps):
        print(line)
    if curve_after.matrix.sum() < curve_before.matrix.sum():
        print("(images refined by an earlier run without --save-scores are not in ASAM's curve)")
    curve = curve_json(sweeps)
    (tb, _), (ta, _) = curve_before.best(), curve_after.best()
    report = {
        "images": images,
        "dataset": args.dataset,
        "bg_threshold": args.bg_threshold,
        "miou_before": 100 * before.miou(),
        "curve": {
            "thresholds": curve["thresholds"],
            "raw": curve["raw CAM"]["miou"],
            "asam": curve["ASAM"]["miou"],
            "best_t_raw": tb,
            "best_t_asam": ta,
        },
        "miou_after": 100 * after.miou(),
        "iou_before": {n: None if np.isnan(v) else 100 * v for n, v in zip(names, iou_b)},
        "iou_after": {n: None if np.isnan(v) else 100 * v for n, v in zip(names, iou_a)},
    }
    if band is not None:
        band_cm, ignored, labelled = band
        low, high = args.ignore_band
        share = ignored / max(labelled, 1)
        print(
            f"\nignore band [{low}, {high}): {100 * share:.1f}% of the labelled pixels written as 255; mIoU of the "
            f"other pixels of the written pseudo-labels {100 * band_cm.miou():.2f}"
        )
        report["ignore_band"] = {
            "low": low,
            "high": high,
            "ignored_share": share,
            "miou_confident": 100 * band_cm.miou(),
        }
    atomic_write(os.path.join(args.out, "eval.json"), lambda tmp: open(tmp, "w").write(json.dumps(report, indent=1)))


def add_arguments(p) -> None:
    d = asam.ASAM_DEFAULTS
    p.add_argument("--images", required=True, help="folder of images (JPEG / PNG)")
    p.add_argument("--cams", required=True, help="folder of CAMs, one file per image (same name)")
    p.add_argument("--out", required=True, help="output folder: <name>.png masks (VOC colour map)")
    p.add_argument("--list", help="file of image names, one per line (default: every image in --images)")
    p.add_argument("--format", default="auto", choices=FORMATS, help="CAM format (default: auto, per file)")
    p.add_argument("--gt", help="folder of ground-truth PNGs: print mIoU before and after, write eval.json")
    p.add_argument("--save-scores", action="store_true", help="also write the refined scores as <name>.npy")
    add_dataset_arguments(p, background=False)
    p.add_argument(
        "--ignore-band",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="pseudo-labels for training: background below LOW, the top class from HIGH, 255 (ignored) "
        "in between (IRN's conf_bg / conf_fg, e.g. 0.05 0.30; ToCo's 0.25 0.70)",
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (0: in the main one)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    add_threads_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("ASAM options (spl.asam_refine)")
    p.add_argument(
        "--bg-threshold",
        type=float,
        default=0.15,
        help="background threshold of the masks written (and of --gt's figures): the one you use for "
        "your raw CAMs, the refined scores share their scale (default 0.15, IRN's convention)",
    )
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
