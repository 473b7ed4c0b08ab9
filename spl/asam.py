"""ASAM: refinement of class activation maps over the graph of adjacent superpixels.

``asam_refine`` runs SLIC (unless superpixels are given), pools the CAM and the colour over the
superpixels, and builds the adjacency graph with colour (and optional deep-feature) affinities
``a_ij = exp(-|Lab_i - Lab_j|^2 / (2 sigma_c^2))^beta``. Then, by ``mode``:

- ``"meanfield"`` (default): **a mean field at every background threshold.** For each t of a grid
  over (0, 1) (``THRESHOLDS``), the background competes with the classes with the score t: the
  unary is ``log p`` with p normalising ``[t, s_1, ..., s_C]`` (s: the superpixel's mean CAM), then
  ``steps`` times ``q <- softmax(unary + weight * walk(q))``, where ``walk`` is an edge-aware random
  walk of ``iters`` rounds (``spl.sparse_propagate``; every threshold is one block of channels of
  the same propagation). A superpixel's refined score is the **highest threshold at which the mean
  field still labels it foreground** (interpolated between grid points on the log-odds), so
  ``cam_to_mask(refined, t)`` is the mean field's decision at t for every t: the background
  threshold is chosen after refinement, exactly as for a raw CAM, and the usual sweep over t works.
  Optionally (``diffuse_mix > 0``) the mean field starts from a mix of the CAM and its diffusion.
- ``"diffusion"``: **the SPL paper's linear diffusion**, ``s <- alpha T s + (1 - alpha) s0`` for
  ``iters`` rounds with the row-normalised transition ``T = D^-1 A``, each class rescaled to its CAM
  maximum (the walk averages, which lowers peaks).

A present class keeps its confident core: where a class leads the CAM with a mean score of at least
``core`` times its highest in the image, its refined score is at least the CAM's and it wins. Scores
are in [0, 1] on the CAM's scale (CAMs normalised to a maximum of 1, the IRN convention). The
superpixel scores go back to the pixels by ``superpixel_unpool``, or with ``edge_sigma`` by
``edge_aware_unpool`` (soft boundaries decided by each pixel's colour).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from . import _checks, ops, reference
from .ops._common import on_calling_thread
from .ops.sparse_propagate import propagate, transition

__all__ = ["asam_refine", "cam_to_mask", "threshold_mean_field", "ASAM_DEFAULTS", "THRESHOLDS"]

ArrayLike = Union[torch.Tensor, np.ndarray]

#: The defaults of ``asam_refine`` (chosen on PASCAL VOC images with simulated CAMs, see
#: benchmarks/eval_asam.py and benchmarks/RESULTS.md).
ASAM_DEFAULTS = dict(
    mode="meanfield",
    n_segments=500,
    compactness=10.0,
    sigma_c=5.0,
    beta=1.0,
    hops=1,
    diffuse_iters=10,
    diffuse_mix=0.0,
    iters=20,
    steps=5,
    alpha=1.0,
    weight=10.0,
    core=0.9,
    edge_sigma=None,
    sigma_f=1.0,
)

#: The background thresholds at which the mean field runs (mode "meanfield"): every 0.05 from 0.05 to
#: 0.95, and 0.02 and 0.98 at the ends.
THRESHOLDS = (0.02,) + tuple(round(0.05 * i, 2) for i in range(1, 20)) + (0.98,)

_LOG_FLOOR = 1e-6  # probabilities below this count as this in the unary (log 0 is -inf)


def _from_numpy(a: np.ndarray, dtype=None) -> torch.Tensor:
    """A tensor over a NumPy array's memory where torch can use it: a copy for read-only arrays (e.g.
    np.asarray of a PIL image: torch warns on them and may not write to them) and for non-native byte
    order (which torch cannot read)."""
    a = np.ascontiguousarray(a, dtype=dtype)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if not a.flags.writeable:
        a = a.copy()
    return torch.from_numpy(a)


def _number(fn: str, name: str, value, low: float, high: float = math.inf, low_open: bool = False) -> float:
    return _checks.number(
        fn, name, value, None if low == -math.inf else low, None if high == math.inf else high, low_open=low_open
    )


# Rounds beyond this are a mistake, not a request (the defaults are 5..20; each round costs ~1 ms
# per image): without a bound, steps=10**30 loops for ever. The same bound as slic's max_num_iter.
MAX_ROUNDS = 10_000


def _integer(fn: str, name: str, value, low: int, high: int = MAX_ROUNDS) -> int:
    return _checks.integer(fn, name, value, low, high)


def _float_maps(fn: str, name: str, x, batch: Optional[int], device, check_finite: bool = True) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = _from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a tensor or NumPy array, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: {name} must be floating point, got {x.dtype}")
    if x.dim() != 4:
        raise ValueError(f"{fn}: {name} must have shape [B, C, H, W], got {list(x.shape)}")
    if batch is not None and x.shape[0] != batch:
        raise ValueError(f"{fn}: {name} has {x.shape[0]} images but image has {batch}")
    if device is not None and x.device != device:
        raise ValueError(f"{fn}: {name} is on {x.device} but image is on {device}")
    if check_finite and x.numel():
        low, high = torch.aminmax(x)  # one pass; NaN propagates into both
        if not (math.isfinite(float(low)) and math.isfinite(float(high))):
            raise ValueError(f"{fn}: {name} holds NaN or infinite values")
    return x


def _class_mask(fn: str, class_mask, batch: int, channels: int, device) -> Optional[torch.Tensor]:
    if class_mask is None:
        return None
    if isinstance(class_mask, np.ndarray):
        class_mask = _from_numpy(class_mask)
    if not isinstance(class_mask, torch.Tensor) or class_mask.dtype != torch.bool:
        raise TypeError(f"{fn}: class_mask must be a bool tensor of shape [B, C]")
    if class_mask.dim() == 1:
        class_mask = class_mask.unsqueeze(0).expand(batch, -1)
    if tuple(class_mask.shape) != (batch, channels):
        raise ValueError(
            f"{fn}: class_mask must have shape [B, C] = [{batch}, {channels}], got {list(class_mask.shape)}"
        )
    return class_mask.to(device)


def _upsample(x: torch.Tensor, height: int, width: int, fn: str, name: str) -> torch.Tensor:
    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x
    if h > height or w > width or h < 1 or w < 1:
        raise ValueError(
            f"{fn}: {name} is {h}x{w} but the image is {height}x{width}; {name} must have the "
            "image's size or a smaller one (it is then upsampled)"
        )
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)


def cam_to_mask(cam: ArrayLike, bg_threshold: float, class_mask: Optional[ArrayLike] = None) -> ArrayLike:
    """Label map from class scores, the WSSS convention: 0 (background) where no allowed class's score
    reaches ``bg_threshold``, else ``k + 1`` for the class k of highest score (VOC numbering for C = 20).

    Args:
        cam (Tensor[B, C, H, W] or NumPy [C, H, W]): foreground class scores.
        bg_threshold (float): the background threshold.
        class_mask (Tensor[B, C] of bool, optional): classes present in each image (image-level
            labels); the others are never chosen.

    Returns:
        int64 labels [B, H, W] (NumPy [H, W] for NumPy input).
    """
    fn = "cam_to_mask"
    numpy_in = isinstance(cam, np.ndarray)
    if numpy_in:
        cam = _from_numpy(cam)
        if cam.dim() != 3:
            raise ValueError(f"{fn}: a NumPy cam must have shape [C, H, W], got {list(cam.shape)}")
        cam = cam[None]
        if isinstance(class_mask, np.ndarray) and class_mask.ndim == 1:
            class_mask = class_mask[None]
    cam = _float_maps(fn, "cam", cam, None, None)
    if cam.shape[1] < 1:
        raise ValueError(f"{fn}: cam must have at least one class channel (C >= 1)")
    threshold = _number(fn, "bg_threshold", bg_threshold, -math.inf)
    mask = reference.cam_to_mask(cam, threshold, _class_mask(fn, class_mask, cam.shape[0], cam.shape[1], cam.device))
    return mask[0].numpy() if numpy_in else mask


# How asam_refine uses the CPU's threads. It runs some forty torch ops over pixel-sized tensors
# (upsampling, gathers, maxima, fills) between its spl ops; torch splits each one statically among
# its threads and ends it with a barrier. On a busy machine (DataLoader workers, another job) every
# barrier waits for whichever thread the OS has descheduled: on 2 cores beside a busy torch
# process, one VOC image took 716 ms with 2 threads against 80 ms with one (benchmarks/RESULTS.md,
# contention). So a CPU call on at most INLINE_PIXELS pixels (about one VOC image) runs on the
# calling thread alone; on an idle machine that costs nothing measurable (48 vs 44 ms). Batches keep
# torch's threads: running their images side by side on one thread each was steadier beside a busy
# process but 20-30% slower on an idle one (Python threads contend), so it is not done.
# torch.set_num_threads sets the calling thread's OpenMP thread count (each thread has its own), and
# it is restored before returning.
INLINE_PIXELS = 2**18


def _small_calls_on_calling_thread(refine):
    """Wraps asam_refine: a CPU call on at most INLINE_PIXELS pixels runs on the calling thread."""

    @functools.wraps(refine)
    def wrapper(image, *args, **kwargs):
        if isinstance(image, np.ndarray):
            small = image.size <= 3 * INLINE_PIXELS
        elif isinstance(image, torch.Tensor):
            small = image.device.type == "cpu" and image.dim() >= 3 and image.numel() <= image.shape[-3] * INLINE_PIXELS
        else:
            small = False
        with on_calling_thread(small):
            return refine(image, *args, **kwargs)

    return wrapper


@_small_calls_on_calling_thread
def asam_refine(
    image: ArrayLike,
    cam: ArrayLike,
    labels: Optional[ArrayLike] = None,
    *,
    class_mask: Optional[ArrayLike] = None,
    mode: str = ASAM_DEFAULTS["mode"],
    n_segments: int = ASAM_DEFAULTS["n_segments"],
    compactness: float = ASAM_DEFAULTS["compactness"],
    sigma_c: float = ASAM_DEFAULTS["sigma_c"],
    beta: float = ASAM_DEFAULTS["beta"],
    hops: int = ASAM_DEFAULTS["hops"],
    diffuse_iters: int = ASAM_DEFAULTS["diffuse_iters"],
    diffuse_mix: float = ASAM_DEFAULTS["diffuse_mix"],
    iters: int = ASAM_DEFAULTS["iters"],
    steps: int = ASAM_DEFAULTS["steps"],
    alpha: float = ASAM_DEFAULTS["alpha"],
    weight: float = ASAM_DEFAULTS["weight"],
    thresholds: Optional[Sequence[float]] = None,
    bg_threshold: Optional[float] = None,
    core: float = ASAM_DEFAULTS["core"],
    edge_sigma: Optional[float] = ASAM_DEFAULTS["edge_sigma"],
    features: Optional[ArrayLike] = None,
    sigma_f: float = ASAM_DEFAULTS["sigma_f"],
    return_labels: bool = False,
):
    """Refines class activation maps over the graph of adjacent superpixels (ASAM).

    Args:
        image (Tensor[B, 3, H, W] uint8 or float in [0, 1], or NumPy [H, W, 3]): the RGB images.
        cam (Tensor[B, C, h, w] float, or NumPy [C, h, w]): non-negative foreground class scores (no
            background channel), normalised to a maximum of about 1 per class (the IRN convention),
            at the image's size or smaller (upsampled bilinearly). Negative values count as 0.
        labels (Tensor[B, H, W] int64, or NumPy [H, W], optional): superpixels; computed with
            ``spl.slic(image, n_segments, compactness)`` when not given. -1 leaves a pixel out.
        class_mask (Tensor[B, C] bool, optional): classes present in each image (image-level
            labels); default: the classes whose CAM is positive somewhere in the image.
        mode (str): ``"meanfield"`` (a mean field at every background threshold) or
            ``"diffusion"`` (the SPL paper's linear diffusion alone).
        n_segments, compactness: SLIC parameters (when labels are not given).
        sigma_c (float): colour scale of the affinity, in CIELAB units.
        beta (float): the affinity's exponent (larger: sharper edges).
        hops (int): also connect superpixels up to ``hops`` steps apart.
        diffuse_iters (int): rounds of the diffusion stage (mode "meanfield").
        diffuse_mix (float): in [0, 1], the share of the diffused scores in the mean field's input
            (0: the pooled CAM alone).
        iters (int): rounds of each random walk (mode "meanfield"), or of the diffusion (mode
            "diffusion").
        steps (int): mean-field updates. ``iters``, ``steps`` and ``diffuse_iters`` are at most
            ``MAX_ROUNDS`` (10,000), ``hops`` at most 64.
        alpha (float): in [0, 1], the walk's restart: ``s <- alpha T s + (1 - alpha) s0`` (1: pure walk).
        weight (float): weight of the messages against the unary.
        thresholds (sequence of float, optional): the background thresholds of the mean field, in
            (0, 1), increasing (default ``THRESHOLDS``). Refined scores are exact at these values and
            interpolated between them.
        bg_threshold (float, optional): run the mean field at this one threshold only (faster; the
            refined scores then separate background from foreground exactly at this threshold and are
            extrapolated elsewhere).
        core (float): in (0, 1]; where a class leads the CAM with a mean score of at least ``core``
            times its highest in the image, the refined score keeps at least the CAM's, and the class
            wins; > 1 turns this off.
        edge_sigma (float, optional): the pixel-level step: superpixel scores go back to the pixels
            with ``spl.edge_aware_unpool`` (a pixel at a superpixel boundary takes the scores of the
            superpixels around it, weighted by how close its RGB colour, in [0, 1], is to theirs,
            with this scale); None: plain ``superpixel_unpool``.
        features (Tensor[B, D, h, w] float, optional): deep features; their mean per superpixel adds
            a factor ``exp(-|f_i - f_j|^2 / (2 sigma_f^2))`` to the affinity.
        sigma_f (float): feature scale.
        return_labels (bool): also return the superpixels used.

    Returns:
        Tensor[B, C, H, W] float32 (NumPy [C, H, W] for NumPy input): refined scores in [0, 1], 0 for
        absent classes and for pixels labelled -1. A superpixel's score is the highest threshold at
        which the mean field labels it foreground, so ``cam_to_mask(out, t)`` is the mean field's
        foreground at t (where that decision is monotone in t, nearly everywhere; elsewhere the
        masks stay nested: foreground at t stays foreground at lower thresholds). In mode
        "diffusion", each class's maximum is the CAM's. With return_labels, ``(refined, labels)``.

    Raises:
        TypeError / ValueError naming the argument: shapes, dtypes or devices that do not match, a
        CAM larger than the image, C = 0, NaN or infinite scores, superpixel labels out of range,
        parameters out of range.

    Example::

        >>> refined = spl.asam_refine(images, cams, class_mask=present)   # [B, C, H, W]
        >>> masks = spl.cam_to_mask(refined, 0.3, present)                 # pick t as for raw CAMs
    """
    fn = "asam_refine"
    numpy_in = isinstance(image, np.ndarray)
    if numpy_in:
        image, cam, labels, class_mask, features = _numpy_inputs(fn, image, cam, labels, class_mask, features)
    image, cam, class_mask, features = _checked_inputs(fn, image, cam, class_mask, features)
    opts = _checked_options(
        fn,
        cam,
        features,
        bg_threshold,
        mode=mode,
        n_segments=n_segments,
        compactness=compactness,
        sigma_c=sigma_c,
        beta=beta,
        hops=hops,
        diffuse_iters=diffuse_iters,
        diffuse_mix=diffuse_mix,
        iters=iters,
        steps=steps,
        alpha=alpha,
        weight=weight,
        thresholds=thresholds,
        core=core,
        edge_sigma=edge_sigma,
        sigma_f=sigma_f,
    )
    batch = _Batch.of(fn, image, cam, labels, class_mask, opts)
    if batch.empty:  # no image, or no class present anywhere: all background
        out = torch.zeros(*batch.out_shape, dtype=torch.float32, device=image.device)
    else:
        cam_slots = _slot_maps(fn, batch, cam)
        nodes, rgb_means, lab, pooled, valid = _superpixel_means(batch, image, cam_slots)
        graph, affinity = _affinity_graph(batch, nodes, lab, features, opts)
        score = _refined_scores(graph, affinity, pooled, valid, nodes, cam_slots, opts)
        out = _to_pixels(batch, nodes, score, image, rgb_means, opts)
    if return_labels:
        return _numpy_out(out, numpy_in), _numpy_out(batch.labels, numpy_in)
    return _numpy_out(out, numpy_in)


# ---------------------------------------------------------------------------------------------
# asam_refine's steps


def _checked_inputs(fn, image, cam, class_mask, features):
    """The tensors' types, shapes and devices (values come with the batch's facts)."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{fn}: image must be a tensor or NumPy array, got {type(image).__name__}")
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"{fn}: image must have shape [B, 3, H, W], got {list(image.shape)}")
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise TypeError(f"{fn}: image must be uint8 or floating point, got {image.dtype}")
    B, _, H, W = image.shape
    if H == 0 or W == 0:
        raise ValueError(f"{fn}: image must not be empty, got shape {list(image.shape)}")
    cam = _float_maps(fn, "cam", cam, B, image.device, check_finite=False)
    if cam.shape[1] < 1:
        raise ValueError(f"{fn}: cam must have at least one class channel (C >= 1), got shape {list(cam.shape)}")
    h, w = cam.shape[-2:]
    if h > H or w > W or h < 1 or w < 1:
        raise ValueError(
            f"{fn}: cam is {h}x{w} but the image is {H}x{W}; cam must have the image's size or a "
            "smaller one (it is then upsampled)"
        )
    class_mask = _class_mask(fn, class_mask, B, cam.shape[1], image.device)
    if features is not None:
        features = _upsample(_float_maps(fn, "features", features, B, image.device), H, W, fn, "features")
    return image, cam, class_mask, features


@dataclass(frozen=True)
class _Options:
    mode: str
    n_segments: int
    compactness: float
    sigma_c: float
    beta: float
    hops: int
    diffuse_iters: int
    diffuse_mix: float
    iters: int
    steps: int
    alpha: float
    weight: float
    thresholds: tuple
    core: float
    edge_sigma: Optional[float]
    sigma_f: float


# asam_refine's numeric options and their ranges, in the order they are checked: integers (low, high),
# then numbers (low, high, low_open).
_INTEGER_RANGES = {
    "n_segments": (1, _checks.INT64_MAX),
    "diffuse_iters": (0,),
    "iters": (0,),
    "steps": (0,),
    "hops": (1, 64),
}
_NUMBER_RANGES = {
    "diffuse_mix": (0.0, 1.0),
    "alpha": (0.0, 1.0),
    "weight": (0.0,),
    "sigma_c": (0.0, math.inf, True),
    "sigma_f": (0.0, math.inf, True),
    "beta": (0.0,),
    "core": (0.0, math.inf, True),
}


def _checked_options(fn, cam, features, bg_threshold, **given) -> _Options:
    """asam_refine's options (given: the fields of _Options), each checked against its range (a
    TypeError or ValueError naming it); bg_threshold, when given, is the one-threshold grid."""
    o = dict(given)
    if o["mode"] not in ("meanfield", "diffusion"):
        raise ValueError(f"{fn}: mode must be 'meanfield' or 'diffusion', got {o['mode']!r}")
    for name, bounds in _INTEGER_RANGES.items():
        o[name] = _integer(fn, name, o[name], *bounds)
    for name, bounds in _NUMBER_RANGES.items():
        o[name] = _number(fn, name, o[name], *bounds)
    if o["edge_sigma"] is not None:
        o["edge_sigma"] = _number(fn, "edge_sigma", o["edge_sigma"], 0.0, low_open=True)
        if torch.is_grad_enabled() and any(isinstance(x, torch.Tensor) and x.requires_grad for x in (cam, features)):
            raise ValueError(
                f"{fn}: edge_sigma: the edge-aware step is not differentiable; use edge_sigma=None "
                "(plain unpooling) for gradients, or torch.no_grad()"
            )
    _number(fn, "compactness", o["compactness"], 0.0, low_open=True)  # checked; the op takes it as given
    if bg_threshold is not None:
        if o["thresholds"] is not None:
            raise ValueError(f"{fn}: give thresholds or bg_threshold, not both")
        o["thresholds"] = (_number(fn, "bg_threshold", bg_threshold, 0.0, low_open=True),)
    o["thresholds"] = _threshold_grid(fn, THRESHOLDS if o["thresholds"] is None else o["thresholds"])
    return _Options(**o)


@dataclass
class _Batch:
    """A batch's superpixels and what the host knows of it after the one device synchronisation."""

    labels: torch.Tensor  # [B, H, W]
    counts: torch.Tensor  # [B] superpixels per image
    class_mask: torch.Tensor  # [B, C] on the device
    present: torch.Tensor  # [B] classes per image, on the device
    present_classes: np.ndarray  # [B, C] on the host
    out_shape: tuple  # (B, C, H, W)
    negative: bool = False  # the CAM has negative scores
    k_max: int = 0  # the most superpixels of an image
    N: int = 0  # superpixels of the batch
    S: int = 0  # slots: the most classes of an image
    empty: bool = True

    @staticmethod
    def of(fn, image, cam, labels, class_mask, opts: _Options) -> "_Batch":
        B, C = cam.shape[:2]
        H, W = image.shape[-2:]
        # One pass over the CAM gives every per-channel fact needed below: its extremes give NaN and
        # infinities (NaN propagates into both) and negative scores; without a class mask, per-channel
        # maxima also give the default one.
        flat = cam.flatten(2)
        if not cam.numel():
            low = high = cam.new_zeros(B, C)
        elif class_mask is None:
            high, low = flat.amax(2), flat.amin(2)
        else:
            low, high = torch.aminmax(flat)
        if class_mask is None:
            class_mask = high > 0
        labels, counts, lowest = _superpixels(fn, image, labels, opts.n_segments, opts.compactness)
        # Every fact the host needs, in one device synchronisation (each one stalls the GPU's queue).
        present = class_mask.sum(1)
        finite = torch.isfinite(low) & torch.isfinite(high)
        if cam.dtype == torch.float64:  # computed in float32: larger values would become infinite
            big = torch.finfo(torch.float32).max
            finite = finite & (low.abs() <= big) & (high.abs() <= big)
        facts = [finite.all(), (low < 0).any(), lowest]
        if B:
            facts += [counts.max(), counts.sum(), present.max()]
        # The class mask comes along: the host then knows which planes of the output to write.
        host = torch.cat([torch.stack([f.long() for f in facts]), class_mask.flatten().long()]).tolist()
        finite, negative, lowest, *sizes = host[: len(facts)]
        present_classes = np.asarray(host[len(facts) :], dtype=bool).reshape(B, C)
        if not finite:
            raise ValueError(
                f"{fn}: cam holds NaN or infinite values"
                + (" (or values beyond float32's range, where it is computed)" if cam.dtype == torch.float64 else "")
            )
        if lowest == -(2**62):
            raise ValueError(
                f"{fn}: labels hold an id not below the number of pixels of an image ({H * W}); "
                "superpixel labels must be 0..K-1 (renumber them with spl.enforce_connectivity)"
            )
        if lowest < -1:
            raise ValueError(f"{fn}: labels must be >= -1 (-1: pixel left out)")
        batch = _Batch(labels, counts, class_mask, present, present_classes, (B, C, H, W), bool(negative))
        if B and sizes[2]:
            batch.k_max, batch.N, batch.S = sizes
            batch.empty = False
        return batch


def _slot_maps(fn, batch: _Batch, cam: torch.Tensor) -> torch.Tensor:
    """[B, S, H, W] float32: image b's present classes' maps, in order, padded to S = the most classes of
    any image, at the image's size, negative scores as 0, padding slots 0. The refinement works on
    slots (a VOC image has 1-4 classes, not C = 20)."""
    B, C, H, W = batch.out_shape
    h, w = cam.shape[-2:]
    S = batch.S
    if batch.present_classes.all():  # every class present in every image (IRN-format CAMs): slots = planes
        cam_slots = cam.float()
    else:
        slot_class = torch.argsort((~batch.class_mask).to(torch.uint8), dim=1, stable=True)[:, :S]  # [B, S]
        # Whole planes copied (index_select over [B * C] planes), not a gather with a per-pixel index.
        plane = (torch.arange(B, device=cam.device)[:, None] * C + slot_class).flatten()
        cam_slots = cam.flatten(0, 1).index_select(0, plane).view(B, S, h, w).float()
    cam_slots = _upsample(cam_slots, H, W, fn, "cam")  # bilinear: stays within [low, high]
    if batch.negative:  # negative scores count as 0
        cam_slots = cam_slots.clamp_min(0)
    if not batch.present_classes.all():  # padding slots hold another class's plane (or a repeat): zeroed
        cam_slots = cam_slots * _slot_valid(batch)[:, :, None, None]
    return cam_slots


def _slot_valid(batch: _Batch) -> torch.Tensor:  # [B, S]: the slots that hold a class of the image
    return torch.arange(batch.S, device=batch.counts.device)[None, :] < batch.present[:, None]


def _superpixel_means(batch: _Batch, image: torch.Tensor, cam_slots: torch.Tensor):
    """(nodes, mean RGB [B, 3, K] in [0, 1], CIELAB [N, 3], pooled CAM [N, S], valid slots [N, S])."""
    nodes = _Nodes(batch.counts, batch.k_max, batch.N)
    # Colour and CAM pooled in one call (one pass of the labels' counts and range check less; each
    # plane's mean is computed alone, so the values are the same as from two calls). The cat also
    # converts a uint8 image to float.
    colour = image if image.dtype == torch.uint8 else image.float()  # float64 would promote the CAM
    means = ops.superpixel_pool(torch.cat([colour, cam_slots], 1), batch.labels, batch.k_max, "mean")  # [B, 3 + S, K]
    rgb_means = means[:, :3]
    if image.dtype == torch.uint8:  # scaled on the means, not on every pixel (one pass less)
        rgb_means = rgb_means / 255.0
    mean_rgb = nodes.gather(rgb_means)
    # float64: float32 pow / cube root round differently in vector bodies and loop tails, which would
    # make a superpixel's colour depend on its position in the batch.
    lab = reference.rgb_to_lab(mean_rgb.double().T[None, :, :, None])[0, :, :, 0].T.float()  # [N, 3]
    pooled = nodes.gather(means[:, 3:])  # [N, S]
    valid = _slot_valid(batch)[nodes.image]  # [N, S]
    return nodes, rgb_means, lab, pooled, valid


def _affinity_graph(
    batch: _Batch, nodes: "_Nodes", lab: torch.Tensor, features: Optional[torch.Tensor], opts: _Options
):
    """The graph of adjacent superpixels (``hops`` steps apart) and its edge affinities
    ``exp(-|Lab_i - Lab_j|^2 / (2 sigma_c^2)) [* exp(-|f_i - f_j|^2 / (2 sigma_f^2))]) ^ beta``."""
    graph = ops.superpixel_adjacency(batch.labels, batch.counts)
    if opts.hops > 1:
        graph = expand_hops(graph, opts.hops)
    rows, cols = graph.rows(), graph.indices
    affinity = torch.exp(-((lab[rows] - lab[cols]) ** 2).sum(1) / (2 * opts.sigma_c**2))
    if features is not None:
        f = nodes.gather(ops.superpixel_pool(features.float(), batch.labels, batch.k_max, "mean"))
        affinity = affinity * torch.exp(-((f[rows] - f[cols]) ** 2).sum(1) / (2 * opts.sigma_f**2))
    if opts.beta != 1.0:
        affinity = affinity**opts.beta
    return graph, affinity


def _refined_scores(graph, affinity, pooled, valid, nodes: "_Nodes", cam_slots, opts: _Options) -> torch.Tensor:
    """[N, S] refined scores by ``opts.mode``, then the confident-core guarantee."""
    if opts.mode == "diffusion":  # each class's maximum becomes the CAM's (pixel) maximum
        B, S = cam_slots.shape[:2]
        peak = cam_slots.flatten(2).amax(2) if cam_slots.numel() else cam_slots.new_zeros(B, S)
        score = _diffuse(graph, affinity, pooled, nodes, opts.iters, opts.alpha, peak[nodes.image])
    else:
        scores = pooled
        if opts.diffuse_mix > 0:
            scores = (1 - opts.diffuse_mix) * pooled + opts.diffuse_mix * _diffuse(
                graph, affinity, pooled, nodes, opts.diffuse_iters, 1.0
            )
        score = threshold_mean_field(
            graph, affinity, scores, valid, opts.thresholds, opts.iters, opts.steps, opts.weight, opts.alpha
        )
    if opts.core <= 1.0:
        score = _keep_core(score, pooled, valid, nodes, opts.core)
    return score


def _to_pixels(
    batch: _Batch, nodes: "_Nodes", score: torch.Tensor, image: torch.Tensor, rgb_means: torch.Tensor, opts: _Options
) -> torch.Tensor:
    """[N, S] -> [B, S, K] -> the slots' pixels [B, S, H, W] -> their planes of the output [B, C, H, W]
    (the other planes are 0: absent classes are not unpooled)."""
    B, C, H, W = batch.out_shape
    device = score.device
    per_node = torch.zeros(B * batch.k_max, batch.S, dtype=torch.float32, device=device)
    per_node[nodes.index] = score.float()
    per_slot = per_node.view(B, batch.k_max, batch.S).transpose(1, 2).contiguous()
    if opts.edge_sigma is None:
        slot_pixels = ops.superpixel_unpool(per_slot, batch.labels)
    else:
        guide = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        slot_pixels = torch.ops.spl.edge_aware_unpool(
            per_slot, batch.labels, guide, rgb_means.float().contiguous(), opts.edge_sigma, 1
        )
    if batch.present_classes.all():  # slots = planes (IRN-format CAMs: only the image's classes)
        return slot_pixels
    out = torch.zeros(B, C, H, W, dtype=torch.float32, device=device)
    b_index, c_index = np.nonzero(batch.present_classes)  # row-major: slot s of image b is its s-th class
    s_index = np.concatenate([np.arange(n) for n in batch.present_classes.sum(1)])
    to_device = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(device)  # noqa: E731
    out[to_device(b_index), to_device(c_index)] = slot_pixels[to_device(b_index), to_device(s_index)]
    return out


class _Nodes:
    """The nodes of a batch graph: superpixel k of image b is node ``offsets[b] + k``. Long index
    tensors (not boolean masks, whose indexing synchronises to count) move values between [B, K] and
    [N]."""

    def __init__(self, counts: torch.Tensor, k_max: int, N: int):
        B = counts.shape[0]
        self.B, self.k_max = B, k_max
        offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        node = torch.arange(N, device=counts.device)
        self.image = torch.searchsorted(offsets[1:], node, right=True)  # [N]
        self.index = self.image * k_max + node - offsets[self.image]  # into [B * K]

    def gather(self, per_image: torch.Tensor) -> torch.Tensor:  # [B, D, K] -> [N, D]
        return per_image.transpose(1, 2).reshape(self.B * self.k_max, per_image.shape[1])[self.index]

    def image_max(self, x: torch.Tensor) -> torch.Tensor:  # [N, D] -> [B, D], max over each image's nodes
        out = x.new_zeros(self.B, x.shape[1])
        return out.scatter_reduce(0, self.image[:, None].expand_as(x), x, "amax", include_self=False)


def _diffuse(
    graph, affinity, scores, nodes: _Nodes, iters: int, alpha: float, peak: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``iters`` rounds of ``s <- alpha T s + (1 - alpha) s0``, each class of each image rescaled to
    ``peak`` ([N, S], default: the maximum of its input; the walk averages, which lowers peaks)."""
    s = propagate(graph, transition(graph, affinity.float(), 1.0), scores.float(), iters, alpha)
    if peak is None:
        peak = nodes.image_max(scores)[nodes.image]
    return s * (peak / nodes.image_max(s)[nodes.image].clamp_min(1e-30))


def threshold_mean_field(
    graph: "ops.Graph",
    affinity: torch.Tensor,
    scores: torch.Tensor,
    valid: torch.Tensor,
    thresholds: Sequence[float],
    iters: int,
    steps: int,
    weight: float,
    alpha: float = 1.0,
) -> torch.Tensor:
    """The mean field with the background competing at every threshold of ``thresholds``, summarised
    as each node's threshold of turning to background.

    Args:
        graph, affinity: the superpixel graph and its edge affinities.
        scores (Tensor[N, S]): non-negative class scores per node (S class slots).
        valid (Tensor[N, S] of bool): the slots that hold a class of the node's image.
        thresholds: increasing background thresholds t_1 < ... < t_M in (0, 1).
        iters, steps, weight, alpha: the walk's rounds, the mean-field updates, the messages' weight
            and the walk's restart.

    Returns:
        Tensor[N, S]: for the slot that leads at the highest threshold where the node is foreground,
        that threshold (interpolated on the log-odds towards the next grid point; above t_M towards
        1, below t_1 towards 0); other slots that score times their posterior ratio to the leader
        (so they stay below it); 0 for invalid slots.
    """
    N, S = scores.shape
    M = len(thresholds)
    t = torch.tensor(thresholds, dtype=torch.float32, device=scores.device)
    scores = scores.float().clamp_min(0) * valid
    # [N, 1 + S, M]: background and slots, each with the thresholds innermost (softmax over dim 1
    # then runs along contiguous rows of M values; over a last dimension of 2-5 it is ~8x slower).
    p = torch.cat([t.view(1, 1, M).expand(N, 1, M), scores[:, :, None].expand(N, S, M)], 1)
    unary = torch.log((p / _sum_slots(p)).clamp_min(_LOG_FLOOR))
    allowed = torch.cat([valid.new_ones(N, 1), valid], 1)[:, :, None]
    unary = unary.masked_fill(~allowed, float("-inf"))
    walk = transition(graph, affinity.float(), 1.0)  # once for every walk
    logits = unary
    for _ in range(steps):
        # Only the class slots walk: T is row-stochastic and q_background = 1 - sum of the slots,
        # so the background's message is 1 - the sum of theirs (the same in exact arithmetic, and
        # half the propagation for a one-class image).
        q = _softmax_slots(logits)[:, 1:].reshape(N, S * M)
        walked = propagate(graph, walk, q, iters, alpha).view(N, S, M)
        messages = torch.cat([1 - _sum_slots(walked), walked], 1)
        logits = torch.add(unary, messages, alpha=weight)
    log_odds = (logits[:, 1:] - logits[:, :1]).transpose(1, 2)  # [N, M, S]: log q_c - log q_background
    return _turning_threshold(log_odds, t, valid)


# Batch invariance: torch.softmax and sum over dim 1 of [N, 1 + S, M] group their additions by
# how N splits into vector chunks, so a node's result could change in the last bit with the other
# images of the batch (seen: ~1e-7 in 1 of 6 random batches). These two add the 1 + S rows one after
# the other, element by element: every node's arithmetic is the same wherever it sits. (max and the
# element-wise exp are exact functions of their inputs.)
def _sum_slots(x: torch.Tensor) -> torch.Tensor:  # [N, R, M] -> [N, 1, M]
    total = x[:, :1]
    for r in range(1, x.shape[1]):
        total = total + x[:, r : r + 1]
    return total


def _softmax_slots(x: torch.Tensor) -> torch.Tensor:  # softmax over dim 1 of [N, R, M]
    e = torch.exp(x - x.amax(1, keepdim=True))
    return e / _sum_slots(e)


def _turning_threshold(log_odds: torch.Tensor, t: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    N, M, S = log_odds.shape
    best = log_odds.amax(2)  # [N, M]: the leading class against the background
    grid = torch.arange(M, device=t.device)
    last = torch.where(best >= 0, grid, -1).amax(1)  # the highest threshold still foreground
    j = last.clamp_min(0)
    above = (j + 1).clamp_max(M - 1)
    b_j = best.gather(1, j[:, None])[:, 0]
    b_above = best.gather(1, above[:, None])[:, 0]
    # b_j >= 0 > b_above: the log-odds cross 0 in between.
    frac = (b_j / (b_j - b_above)).nan_to_num(0.0).clamp(0, 1)
    between = t[j] + frac * (t[above] - t[j])
    top = t[j] + (1 - t[j]) * (1 - torch.exp(-b_j))  # foreground at every grid threshold
    bottom = t[0] * torch.exp(best[:, 0].clamp_max(0))  # background at every grid threshold
    turn = torch.where(last < 0, bottom, torch.where(above > j, between, top))
    at = log_odds[torch.arange(N, device=t.device), j]  # [N, S], at the deciding threshold
    lead = at.amax(1, keepdim=True)
    ratio = torch.exp(at - lead.clamp_min(-1e30)).masked_fill(~valid, 0.0).nan_to_num(0.0)
    return turn[:, None] * ratio


def _keep_core(
    score: torch.Tensor, pooled: torch.Tensor, valid: torch.Tensor, nodes: _Nodes, core: float
) -> torch.Tensor:
    """Where a class leads the CAM with at least ``core`` times its highest mean score in the image,
    its refined score is at least the CAM's and the other classes' at most theirs (so it wins)."""
    pooled = pooled.float().masked_fill(~valid, -1.0)
    lead, leader = pooled.max(1)
    highest = nodes.image_max(pooled.clamp_min(0))[nodes.image]  # [N, S]
    slot = torch.arange(pooled.shape[1], device=pooled.device)[None, :]
    is_core = (slot == leader[:, None]) & (lead[:, None] > 0) & (pooled >= core * highest)
    in_core = is_core.any(1, keepdim=True)
    raised = torch.where(is_core, torch.maximum(score, pooled), torch.minimum(score, pooled.clamp_min(0)))
    return torch.where(in_core, raised, score)


def _threshold_grid(fn: str, thresholds) -> tuple:
    try:
        if isinstance(thresholds, (str, bytes)):  # iterable, but of characters
            raise TypeError
        values = tuple(float(t) for t in thresholds)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: thresholds must be a sequence of numbers, got {thresholds!r:.80}") from None
    if not values or any(not (0.0 < v < 1.0) for v in values) or any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{fn}: thresholds must be increasing numbers in (0, 1), got {list(thresholds)}")
    return values


def _superpixels(fn, image, labels, n_segments, compactness):
    """(labels, counts [B], the lowest label (a tensor)) from SLIC or the given labels (checked)."""
    B, _, H, W = image.shape
    device = image.device
    if labels is None:
        if not B:
            return (
                torch.zeros(0, H, W, dtype=torch.int64, device=device),
                torch.zeros(0, dtype=torch.int64, device=device),
                torch.zeros((), dtype=torch.int64, device=device),
            )
        labels, counts = ops.slic(image, min(n_segments, H * W), compactness, return_counts=True)
        return labels, counts, counts.new_zeros(())
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64:
        raise TypeError(f"{fn}: labels must be an int64 tensor")
    if tuple(labels.shape) != (B, H, W):
        raise ValueError(f"{fn}: labels must have shape [B, H, W] = [{B}, {H}, {W}], got {list(labels.shape)}")
    if labels.device != device:
        raise ValueError(f"{fn}: labels are on {labels.device} but image is on {device}")
    lowest = labels.amin() if labels.numel() else labels.new_zeros(())
    counts = labels.flatten(1).amax(1).clamp_min(-1) + 1 if B else labels.new_zeros(0)
    # A label beyond the pixel count (a stray id, not a superpixel) would size every per-superpixel
    # buffer by it: checked with the other facts, in the caller's one synchronisation.
    lowest = torch.where(
        (counts > H * W).any() if B else torch.zeros((), dtype=torch.bool, device=device),
        torch.full_like(lowest, -(2**62)),
        lowest,
    )
    return labels, counts, lowest


def _numpy_inputs(fn, image, cam, labels, class_mask, features):
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{fn}: a NumPy image must have shape [H, W, 3], got {list(image.shape)}")
    image = _from_numpy(image).permute(2, 0, 1)[None]
    if not isinstance(cam, np.ndarray) or cam.ndim != 3:
        raise ValueError(f"{fn}: with a NumPy image, cam must be a NumPy array of shape [C, h, w]")
    cam = cam[None]
    if labels is not None:
        if not isinstance(labels, np.ndarray) or labels.ndim != 2:
            raise ValueError(f"{fn}: with a NumPy image, labels must be a NumPy array of shape [H, W]")
        labels = _from_numpy(labels, np.int64)[None]
    if isinstance(class_mask, np.ndarray) and class_mask.ndim == 1:
        class_mask = class_mask[None]
    if isinstance(features, np.ndarray) and features.ndim == 3:
        features = features[None]
    return image, cam, labels, class_mask, features


def _numpy_out(x: torch.Tensor, numpy_in: bool):
    return x[0].cpu().numpy() if numpy_in else x


def expand_hops(graph: "ops.Graph", hops: int) -> "ops.Graph":
    """The graph whose edges join nodes up to ``hops`` steps apart (border 0 for the added edges)."""
    N = graph.num_nodes
    device = graph.indptr.device
    rows = graph.rows()
    base = torch.sparse_coo_tensor(
        torch.stack([rows, graph.indices]), torch.ones(graph.num_edges, device=device), (N, N), check_invariants=False
    ).coalesce()
    eye = torch.sparse_coo_tensor(
        torch.arange(N, device=device).expand(2, N), torch.ones(N, device=device), (N, N), check_invariants=False
    )
    step = (base + eye).coalesce()
    reach = step
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse support is in beta"
        for _ in range(hops - 1):
            reach = torch.sparse.mm(reach, step).coalesce()
    i, j = reach.indices()
    keep = i != j
    i, j = i[keep], j[keep]  # coalesced: sorted by (i, j)
    indptr = torch.cat([i.new_zeros(1), torch.bincount(i, minlength=N).cumsum(0)])
    # Border counts of the original edges carry over; the added ones get 0.
    border = torch.zeros(i.shape[0], dtype=torch.int64, device=device)
    key_new, key_old = i * N + j, rows * N + graph.indices
    pos = torch.searchsorted(key_new, key_old)
    border[pos] = graph.border
    return ops.Graph(indptr, j.contiguous(), border, graph.node_offset)
