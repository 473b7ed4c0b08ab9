"""``spl train``: a thin DeepLab-v2 training driver with the superpixel local-consistency loss.

Data: images and pseudo-label PNGs (255 = ignore) named in a list; random scale (0.5-1.5), crop
(padded with the mean colour / 255 / -1) and flip; superpixels computed on the fly with ``spl.slic``
on the training device (``--superpixels auto``) or read from a folder of label maps (``.png`` or
``.npy``, same name as the image) and transformed with the image.

Reproducible and resumable: the images of iteration i and their augmentation depend only on (seed,
i), not on the state of a random generator, so a run resumed from its last checkpoint (model,
optimizer, AMP scaler, iteration, RNG states; written atomically) reaches the same weights as an
uninterrupted one. Under ``torchrun`` the model is wrapped in DistributedDataParallel (nccl on GPUs,
gloo on the CPU), every rank draws its own share of each epoch's permutation, and only rank 0 writes
checkpoints, logs and the evaluation.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from typing import List

import numpy as np
import torch
import torch.nn.functional as F

from .. import ops
from ..formats import DATASETS, IMAGE_EXTENSIONS, class_names, find_file, list_names, read_image, read_label_png
from ..losses import SuperpixelConsistencyLoss
from ..metrics import ConfusionMatrix
from . import models
from .common import (
    add_dataset_arguments,
    add_threads_argument,
    atomic_write,
    budget_threads,
    die_with_parent,
    distributed,
)

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


class TrainError(Exception):
    """A problem with the inputs of the job, reported in one line."""


# ---------------------------------------------------------------------------------------------
# Data


def read_superpixels(folder: str, name: str) -> np.ndarray:
    path = find_file(folder, name, (".npy", ".png"))
    if path is None:
        raise TrainError(f"no superpixel map {name}.npy/.png in {folder}")
    if path.endswith(".npy"):
        return np.load(path).astype(np.int64)
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im).astype(np.int64)


class TrainSet(torch.utils.data.Dataset):
    """Item (epoch, index) -> augmented crop; the randomness comes from (seed, epoch, index) only."""

    def __init__(self, names, images, labels, superpixels, crop, num_classes, seed):
        self.names, self.images, self.labels, self.superpixels = names, images, labels, superpixels
        self.crop, self.num_classes, self.seed = crop, num_classes, seed

    def __len__(self):
        return len(self.names)

    def __getitem__(self, key):
        epoch, index = key
        name = self.names[index]
        image = read_image(find_file(self.images, name, IMAGE_EXTENSIONS))
        label_path = os.path.join(self.labels, name + ".png")
        label = read_label_png(label_path).astype(np.int64)
        bad = np.unique(label[(label != 255) & ((label < 0) | (label >= self.num_classes))])
        if bad.size:
            raise TrainError(
                f"{label_path}: class index {int(bad[0])} >= num_classes {self.num_classes} "
                "(255 is the only other value allowed)"
            )
        if label.shape != image.shape[:2]:
            raise TrainError(f"{label_path}: pseudo-label is {label.shape} but the image is {image.shape[:2]}")
        sp = read_superpixels(self.superpixels, name) if self.superpixels else None
        if sp is not None and sp.shape != image.shape[:2]:
            raise TrainError(f"superpixels of {name}: {sp.shape} but the image is {image.shape[:2]}")
        rng = np.random.default_rng([self.seed, epoch, index])
        return augment(image, label, sp, self.crop, rng)


def augment(image, label, sp, crop, rng):
    """Random scale in [0.5, 1.5], flip, crop x crop (padded): (uint8 [3, S, S], int64 [S, S], sp or None)."""
    from PIL import Image

    H, W = label.shape
    s = rng.uniform(0.5, 1.5)
    h, w = max(1, int(H * s + 0.5)), max(1, int(W * s + 0.5))
    image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    label = np.asarray(Image.fromarray(label.astype(np.uint8)).resize((w, h), Image.NEAREST)).astype(np.int64)
    if sp is not None:
        sp = np.asarray(Image.fromarray(sp.astype(np.int32)).resize((w, h), Image.NEAREST)).astype(np.int64)
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
        sp = sp[:, ::-1] if sp is not None else None
    ph, pw = max(crop, h), max(crop, w)
    img_p = np.empty((ph, pw, 3), np.uint8)
    img_p[:] = MEAN.round().astype(np.uint8)
    lab_p = np.full((ph, pw), 255, np.int64)
    img_p[:h, :w], lab_p[:h, :w] = image, label
    y, x = int(rng.integers(0, ph - crop + 1)), int(rng.integers(0, pw - crop + 1))
    out = {
        "image": torch.from_numpy(np.ascontiguousarray(img_p[y : y + crop, x : x + crop].transpose(2, 0, 1))),
        "label": torch.from_numpy(np.ascontiguousarray(lab_p[y : y + crop, x : x + crop])),
    }
    if sp is not None:
        sp_p = np.full((ph, pw), -1, np.int64)
        sp_p[:h, :w] = sp
        sp_c = sp_p[y : y + crop, x : x + crop]
        # Renumber the superpixels present in the crop 0..n-1 (the loss sizes its tables by the labels).
        ids, inverse = np.unique(sp_c, return_inverse=True)
        offset = 1 if ids[0] == -1 else 0
        out["superpixels"] = torch.from_numpy(np.ascontiguousarray((inverse.reshape(sp_c.shape) - offset)))
    return out


class PlanSampler(torch.utils.data.Sampler):
    """Batches of (epoch, index) for iterations start .. stop - 1: epoch e's order is a permutation drawn
    from (seed, e); rank r takes every world-th entry (padded to a whole number of batches per rank)."""

    def __init__(self, n, batch, rank, world, seed, start, stop):
        self.n, self.batch, self.rank, self.world, self.seed = n, batch, rank, world, seed
        self.start, self.stop = start, stop
        self.per_epoch = max(1, math.ceil(n / (world * batch)))

    def __len__(self):
        return max(0, self.stop - self.start)

    def __iter__(self):
        for it in range(self.start, self.stop):
            epoch, b = divmod(it, self.per_epoch)
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
            total = self.per_epoch * self.world * self.batch
            perm = (perm * math.ceil(total / self.n))[:total]
            mine = perm[self.rank :: self.world]
            yield [(epoch, i) for i in mine[b * self.batch : (b + 1) * self.batch]]


def _stack(items):
    out = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    return out


# ---------------------------------------------------------------------------------------------
# The job


def _check_inputs(args, names: List[str]) -> None:
    from PIL import Image

    for name in names:
        image = find_file(args.images, name, IMAGE_EXTENSIONS)
        if image is None:
            raise TrainError(f"no image {name}.* in {args.images}")
        label = os.path.join(args.pseudo_labels, name + ".png")
        if not os.path.isfile(label):
            raise TrainError(f"missing pseudo-label file {label}")
        with Image.open(image) as a, Image.open(label) as b:
            if a.size != b.size:
                raise TrainError(
                    f"{label}: pseudo-label is {b.size[1]}x{b.size[0]} but the image is {a.size[1]}x{a.size[0]}"
                )


def _normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN, device=images.device)[None, :, None, None]
    std = torch.tensor(STD, device=images.device)[None, :, None, None]
    return (images.float() - mean) / std


def _rng_state():
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def run_train(args) -> int:
    try:
        return _train(args)
    except TrainError as e:
        print(f"spl train: error: {e}", file=sys.stderr)
        return 2


def _remove_stale_temporaries(out_dir: str) -> None:
    """Deletes what killed runs left: ``checkpoint.pt.tmp-PID``, ``model.pt.tmp-PID``, ... (hundreds of
    MB each for a real model). Only rank 0 writes there, and only after this."""
    for f in os.listdir(out_dir):
        if ".tmp-" in f:
            try:
                os.remove(os.path.join(out_dir, f))
            except FileNotFoundError:
                pass


def _truncate_log(path: str, iterations: int) -> None:
    """Keeps the log lines of the first ``iterations`` iterations (those a resumed run continues from):
    a run killed after its last checkpoint logged iterations that the resumed run logs again."""
    if not os.path.exists(path):
        return
    keep = []
    with open(path) as f:
        for line in f:
            try:
                if int(json.loads(line)["iteration"]) <= iterations:
                    keep.append(line if line.endswith("\n") else line + "\n")
            except (ValueError, KeyError, TypeError):  # a line cut by a kill
                continue
    atomic_write(path, lambda tmp: open(tmp, "w").writelines(keep))


def _train(args) -> int:
    rank, world, device, names, superpixels = _setup(args)
    model, optimizer, scaler, start = _model(args, device, rank)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    criterion = (
        SuperpixelConsistencyLoss(args.num_classes, tau=args.tau, gamma=args.gamma)
        if args.loss == "consistency"
        else None
    )
    dataset = TrainSet(names, args.images, args.pseudo_labels, superpixels, args.crop_size, args.num_classes, args.seed)
    stop = args.max_iters if args.stop_after is None else min(args.max_iters, start + args.stop_after)
    sampler = PlanSampler(len(names), args.batch_size, rank, world, args.seed, start, stop)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=args.workers, collate_fn=_stack, worker_init_fn=die_with_parent
    )
    log = _Log(args, rank, start)
    net.train()
    try:
        for it, batch in enumerate(loader, start):
            factor = (1 - it / args.max_iters) ** 0.9  # DeepLab's poly schedule
            optimizer.param_groups[0]["lr"] = args.lr * factor
            optimizer.param_groups[1]["lr"] = 10 * args.lr * factor
            loss = _step(args, net, criterion, optimizer, scaler, batch, device)
            if not torch.isfinite(loss):
                raise TrainError(f"the loss became {loss.item()} at iteration {it}; lower --lr")
            done = it + 1
            if rank == 0:
                log.iteration(done, loss.item(), args.lr * factor, device)
                if done % args.checkpoint_every == 0 or done in (args.max_iters, stop):
                    _save_checkpoint(os.path.join(args.out, "checkpoint.pt"), model, optimizer, scaler, done)
    finally:
        log.close()
    if rank == 0 and stop == args.max_iters:
        atomic_write(os.path.join(args.out, "model.pt"), lambda tmp: torch.save(model.state_dict(), tmp))
        if args.val_list:
            evaluate(model, args, device)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return 0


def _setup(args):
    """Checks the arguments and inputs, sets the device, threads and seeds: (rank, world, device, the
    training names, the superpixel folder or None)."""
    if args.num_classes is None:  # background included
        args.num_classes = len(DATASETS[args.dataset])
    if args.num_classes < 2:
        raise TrainError(f"--num-classes must be at least 2 (background and one class), got {args.num_classes}")
    rank, world, local = distributed()
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(f"cuda:{local}" if args.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    for flag in ("images", "pseudo_labels"):
        if not os.path.isdir(getattr(args, flag)):
            raise TrainError(f"--{flag.replace('_', '-')} {getattr(args, flag)} is not a folder")
    if not os.path.isfile(args.list):
        raise TrainError(f"--list {args.list} does not exist")
    superpixels = None if args.superpixels == "auto" else args.superpixels
    if superpixels is not None and not os.path.isdir(superpixels):
        raise TrainError(f"--superpixels {superpixels} is neither 'auto' nor a folder")
    if args.threads is not None and args.threads < 1:
        raise TrainError(f"--threads must be at least 1, got {args.threads}")
    budget_threads(args.threads, world)
    names = list_names(args.images, args.list)
    if not names:
        raise TrainError(f"--list {args.list} names no image")
    _check_inputs(args, names)
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    return rank, world, device, names, superpixels


def _model(args, device, rank):
    """(model, optimizer, AMP scaler, first iteration): built, or resumed from OUT/checkpoint.pt."""
    model = models.build_model(args.model, args.num_classes)
    if args.backbone_weights:
        models.load_backbone(model, args.backbone_weights)
    model.to(device)
    optimizer = torch.optim.SGD(model.param_groups(args.lr), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=args.amp and device.type == "cuda")
    checkpoint = os.path.join(args.out, "checkpoint.pt")
    if rank == 0:
        _remove_stale_temporaries(args.out)
    start = 0
    if args.resume and os.path.isfile(checkpoint):
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        start = int(state["iteration"])
        if rank == 0:
            print(f"spl train: resumed from {checkpoint} at iteration {start}")
    return model, optimizer, scaler, start


def _step(args, net, criterion, optimizer, scaler, batch, device) -> torch.Tensor:
    """One iteration: forward (autocast with --amp on CUDA), the loss, backward, the optimizer step."""
    images = batch["image"].to(device, non_blocking=True)
    target = batch["label"].to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
        logits = net(_normalise(images))
    if criterion is None:
        up = models.upsample_logits(logits.float(), target.shape[-2:])
        loss = F.cross_entropy(up, target, ignore_index=255)
    else:
        sp = (
            batch["superpixels"].to(device)
            if "superpixels" in batch
            else ops.slic(images, args.n_segments, args.compactness)
        )
        loss = criterion(logits.float(), target, sp)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss


class _Log:
    """Rank 0's train.log (one JSON line per iteration; a resumed run first drops the lines after its
    checkpoint) and progress bar."""

    def __init__(self, args, rank: int, start: int):
        self.start, self.tic = start, time.perf_counter()
        self.file = self.bar = None
        if rank != 0:
            return
        path = os.path.join(args.out, "train.log")
        _truncate_log(path, start)
        self.file = open(path, "a")
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=args.max_iters, initial=start, unit="it", disable=args.quiet, dynamic_ncols=True)
        except ImportError:  # pragma: no cover
            pass

    def iteration(self, done: int, loss: float, lr: float, device) -> None:
        rate = (done - self.start) / max(time.perf_counter() - self.tic, 1e-9)
        entry = {"iteration": done, "loss": loss, "lr": lr, "iterations_per_s": rate}
        if device.type == "cuda":
            entry["max_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.file is not None:
            self.file.close()


def _save_checkpoint(path, model, optimizer, scaler, iteration):
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "iteration": iteration,
        "rng": _rng_state(),
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


@torch.no_grad()
def evaluate(model, args, device) -> float:
    if not args.gt:
        raise TrainError("--val-list needs --gt (the ground-truth folder)")
    names = list_names(args.images, args.val_list)
    cm = ConfusionMatrix(args.num_classes)
    model.eval()
    for name in names:
        image = read_image(find_file(args.images, name, IMAGE_EXTENSIONS))
        gt_path = os.path.join(args.gt, name + ".png")
        if not os.path.isfile(gt_path):
            raise TrainError(f"missing ground truth {gt_path}")
        gt = read_label_png(gt_path)
        x = _normalise(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(device))
        logits = models.upsample_logits(model(x).float(), gt.shape)
        cm.update(logits.argmax(1)[0].cpu(), torch.from_numpy(gt.astype(np.int64)))
    model.train()
    miou = cm.miou()
    print(f"spl train: validation mIoU {100 * miou:.2f} over {len(names)} images")
    report = {
        "images": len(names),
        "miou": 100 * miou,
        "iou": [None if math.isnan(v) else 100 * v for v in cm.iou().tolist()],
        "classes": class_names(args.dataset, args.num_classes - 1),
    }
    atomic_write(os.path.join(args.out, "eval.json"), lambda tmp: open(tmp, "w").write(json.dumps(report, indent=1)))
    return miou


def add_arguments(p) -> None:
    p.add_argument("--images", required=True)
    p.add_argument("--pseudo-labels", required=True, help="folder of label PNGs (255 = ignore)")
    p.add_argument("--list", required=True, help="training image names, one per line")
    p.add_argument("--out", required=True, help="checkpoints, model.pt, train.log, eval.json")
    p.add_argument("--val-list")
    p.add_argument("--gt", help="ground-truth folder for --val-list")
    p.add_argument("--model", default="deeplabv2-resnet101", choices=models.MODELS)
    p.add_argument("--backbone-weights", help="ImageNet weights (torchvision ResNet state dict), local file")
    add_dataset_arguments(p, background=True)
    p.add_argument("--superpixels", default="auto", help="'auto' (spl.slic on the device) or a folder of maps")
    p.add_argument("--n-segments", type=int, default=300, help="superpixels per crop (auto)")
    p.add_argument("--compactness", type=float, default=10.0)
    p.add_argument("--loss", default="consistency", choices=["consistency", "ce"])
    p.add_argument("--tau", type=float, default=0.7)
    p.add_argument("--gamma", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--crop-size", type=int, default=321)
    p.add_argument("--max-iters", type=int, default=20000)
    p.add_argument("--lr", type=float, default=2.5e-4)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    add_threads_argument(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--amp", action="store_true", help="float16 autocast on CUDA")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument(
        "--stop-after",
        type=int,
        help="stop (with a checkpoint) after this many iterations of this "
        "call; --resume continues. Splits a long job into shorter ones",
    )
    p.add_argument("--quiet", action="store_true")
