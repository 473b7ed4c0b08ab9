"""ASAM: refinement of class activation maps over the graph of adjacent superpixels (SPEC section 3).

``asam_refine`` runs SLIC (unless superpixels are given), pools the CAM and the colour over the
superpixels, builds the adjacency graph with colour (and optional deep-feature) affinities, and runs a
mean-field inference in which the background competes with the classes:

    u_i   = mean over the pixels of superpixel i of log p(class | pixel), where p normalises
            [bg_threshold, cam_1, ..., cam_C] (the background's score is the threshold, as in DenseCRF
            practice for WSSS); classes absent from the image are excluded
    q     = softmax(u)
    steps times:  m = sparse_propagate(graph, a, q, iters, alpha)     (messages: an edge-aware
                  q = softmax(u + weight * m)                          random walk of iters rounds)

The random walk over edge-aware affinities ``a_ij = exp(-|Lab_i - Lab_j|^2 / (2 sigma_c^2))^beta`` is a
sparse stand-in for DenseCRF's dense Gaussian kernels: it reaches far along regions of similar colour
and stops at colour edges, at a cost linear in the number of superpixels. The output is
``bg_threshold * q_c / q_bg`` per class, so ``cam_to_mask(out, bg_threshold)`` gives the label of highest
posterior, and a different threshold moves the background decision monotonically.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from . import ops, reference

__all__ = ["asam_refine", "cam_to_mask", "ASAM_DEFAULTS"]

ArrayLike = Union[torch.Tensor, np.ndarray]

#: The defaults of ``asam_refine`` (chosen on PASCAL VOC images with simulated CAMs, see
#: benchmarks/eval_asam.py and benchmarks/RESULTS.md).
ASAM_DEFAULTS = dict(bg_threshold=0.15, n_segments=1000, compactness=10.0, iters=40, steps=5, alpha=1.0,
                     weight=10.0, sigma_c=6.0, beta=1.0, hops=1, sigma_f=1.0)

_LOG_FLOOR = 1e-6  # probabilities below this count as this in the unary (log 0 is -inf)


def _number(fn: str, name: str, value, low: float, high: float = math.inf, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: {name} must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < low or v > high or (low_open and v == low):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{fn}: {name} must be a finite number {bound}" +
                         (f" and <= {high}" if math.isfinite(high) else "") + f", got {value}")
    return v


def _integer(fn: str, name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{fn}: {name} must be >= {low}, got {value}")
    return int(value)


def _float_maps(fn: str, name: str, x, batch: Optional[int], device, check_finite: bool = True) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
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
        class_mask = torch.from_numpy(np.ascontiguousarray(class_mask))
    if not isinstance(class_mask, torch.Tensor) or class_mask.dtype != torch.bool:
        raise TypeError(f"{fn}: class_mask must be a bool tensor of shape [B, C]")
    if class_mask.dim() == 1:
        class_mask = class_mask.unsqueeze(0).expand(batch, -1)
    if tuple(class_mask.shape) != (batch, channels):
        raise ValueError(f"{fn}: class_mask must have shape [B, C] = [{batch}, {channels}], got {list(class_mask.shape)}")
    return class_mask.to(device)


def _upsample(x: torch.Tensor, height: int, width: int, fn: str, name: str) -> torch.Tensor:
    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x
    if h > height or w > width or h < 1 or w < 1:
        raise ValueError(f"{fn}: {name} is {h}x{w} but the image is {height}x{width}; {name} must have the "
                         "image's size or a smaller one (it is then upsampled)")
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
        cam = torch.from_numpy(np.ascontiguousarray(cam))
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


def asam_refine(image: ArrayLike, cam: ArrayLike, labels: Optional[ArrayLike] = None, *,
                bg_threshold: float = ASAM_DEFAULTS["bg_threshold"],
                class_mask: Optional[ArrayLike] = None,
                n_segments: int = ASAM_DEFAULTS["n_segments"],
                compactness: float = ASAM_DEFAULTS["compactness"],
                iters: int = ASAM_DEFAULTS["iters"],
                steps: int = ASAM_DEFAULTS["steps"],
                alpha: float = ASAM_DEFAULTS["alpha"],
                weight: float = ASAM_DEFAULTS["weight"],
                sigma_c: float = ASAM_DEFAULTS["sigma_c"],
                beta: float = ASAM_DEFAULTS["beta"],
                hops: int = ASAM_DEFAULTS["hops"],
                features: Optional[ArrayLike] = None,
                sigma_f: float = ASAM_DEFAULTS["sigma_f"],
                return_labels: bool = False):
    """Refines class activation maps by mean-field propagation over adjacent superpixels (ASAM).

    Args:
        image (Tensor[B, 3, H, W] uint8 or float in [0, 1], or NumPy [H, W, 3]): the RGB images.
        cam (Tensor[B, C, h, w] float, or NumPy [C, h, w]): non-negative foreground class scores (no
            background channel), at the image's size or smaller (upsampled bilinearly). Negative
            values count as 0.
        labels (Tensor[B, H, W] int64, or NumPy [H, W], optional): superpixels; computed with
            ``spl.slic(image, n_segments, compactness)`` when not given. -1 leaves a pixel out.
        bg_threshold (float): the background's score (> 0), as for ``cam_to_mask``.
        class_mask (Tensor[B, C] bool, optional): classes present in each image; default: the classes
            whose CAM is positive somewhere in the image.
        n_segments, compactness: SLIC parameters (when labels are not given).
        iters (int): random-walk rounds per message (the reach of the smoothing).
        steps (int): mean-field updates.
        alpha (float): restart of the walk: 1 is a pure random walk of ``iters`` rounds.
        weight (float): the weight of the messages against the unary.
        sigma_c (float): colour scale of the affinity, in CIELAB units.
        beta (float): the affinity's exponent (larger: sharper edges).
        hops (int): also connect superpixels up to ``hops`` steps apart in the adjacency graph.
        features (Tensor[B, D, h, w] float, optional): deep features; their mean per superpixel adds
            a factor ``exp(-|f_i - f_j|^2 / (2 sigma_f^2))`` to the affinity.
        sigma_f (float): feature scale.
        return_labels (bool): also return the superpixels used.

    Returns:
        Tensor[B, C, H, W] float32 (NumPy [C, H, W] for NumPy input): refined scores,
        ``bg_threshold * q_c / q_background`` with q the posterior of each superpixel, 0 for absent
        classes and for pixels labelled -1; ``cam_to_mask(out, bg_threshold)`` is the most probable
        label. With return_labels, ``(refined, labels)``.

    Raises:
        TypeError / ValueError naming the argument: shapes, dtypes or devices that do not match, a
        CAM larger than the image, C = 0, NaN or infinite scores, superpixel labels out of range,
        parameters out of range.
    """
    fn = "asam_refine"
    numpy_in = isinstance(image, np.ndarray)
    if numpy_in:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{fn}: a NumPy image must have shape [H, W, 3], got {list(image.shape)}")
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
        if not isinstance(cam, np.ndarray) or cam.ndim != 3:
            raise ValueError(f"{fn}: with a NumPy image, cam must be a NumPy array of shape [C, h, w]")
        cam = cam[None]
        if labels is not None:
            if not isinstance(labels, np.ndarray) or labels.ndim != 2:
                raise ValueError(f"{fn}: with a NumPy image, labels must be a NumPy array of shape [H, W]")
            labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))[None]
        if isinstance(class_mask, np.ndarray) and class_mask.ndim == 1:
            class_mask = class_mask[None]
        if isinstance(features, np.ndarray) and features.ndim == 3:
            features = features[None]
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{fn}: image must be a tensor or NumPy array, got {type(image).__name__}")
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"{fn}: image must have shape [B, 3, H, W], got {list(image.shape)}")
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise TypeError(f"{fn}: image must be uint8 or floating point, got {image.dtype}")
    B, _, H, W = image.shape
    device = image.device
    if H == 0 or W == 0:
        raise ValueError(f"{fn}: image must not be empty, got shape {list(image.shape)}")
    cam = _float_maps(fn, "cam", cam, B, device, check_finite=False)
    C = cam.shape[1]
    if C < 1:
        raise ValueError(f"{fn}: cam must have at least one class channel (C >= 1), got shape {list(cam.shape)}")
    t = _number(fn, "bg_threshold", bg_threshold, 0.0, low_open=True)
    n_segments = _integer(fn, "n_segments", n_segments, 1)
    iters = _integer(fn, "iters", iters, 0)
    steps = _integer(fn, "steps", steps, 0)
    hops = _integer(fn, "hops", hops, 1)
    alpha = _number(fn, "alpha", alpha, 0.0, 1.0)
    weight = _number(fn, "weight", weight, 0.0)
    sigma_c = _number(fn, "sigma_c", sigma_c, 0.0, low_open=True)
    sigma_f = _number(fn, "sigma_f", sigma_f, 0.0, low_open=True)
    beta = _number(fn, "beta", beta, 0.0)
    _number(fn, "compactness", compactness, 0.0, low_open=True)
    class_mask = _class_mask(fn, class_mask, B, C, device)
    if features is not None:
        features = _upsample(_float_maps(fn, "features", features, B, device), H, W, fn, "features")
    # One pass over the CAM gives every per-channel fact needed below (the CAM is the largest input:
    # on the CPU each pass over it costs about as much as the propagation).
    # Its extremes give NaN and infinities (NaN propagates into both) and negative scores; without a
    # class mask, per-channel maxima also give the default one (two vectorised reductions then:
    # torch.aminmax over a dim is ~3x slower on the CPU), else one global aminmax pass.
    flat = cam.flatten(2).float()
    if not cam.numel():
        low = high = cam.new_zeros(B, C)
    elif class_mask is None:
        high, low = flat.amax(2), flat.amin(2)
    else:
        low, high = torch.aminmax(flat)
    cam = _upsample(cam.float(), H, W, fn, "cam")  # bilinear: stays within [low, high]

    if labels is None:
        labels, counts = ops.slic(image, n_segments, compactness, return_counts=True) if B else (
            torch.zeros(0, H, W, dtype=torch.int64, device=device), torch.zeros(0, dtype=torch.int64, device=device))
        lowest = counts.new_zeros(())
    else:
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64:
            raise TypeError(f"{fn}: labels must be an int64 tensor")
        if tuple(labels.shape) != (B, H, W):
            raise ValueError(f"{fn}: labels must have shape [B, H, W] = [{B}, {H}, {W}], got {list(labels.shape)}")
        if labels.device != device:
            raise ValueError(f"{fn}: labels are on {labels.device} but image is on {device}")
        lowest = labels.amin() if labels.numel() else labels.new_zeros(())
        counts = labels.flatten(1).amax(1) + 1 if B else labels.new_zeros(0)
    if class_mask is None:
        class_mask = high > 0
    # Every fact the host needs, in one device synchronisation (each one stalls the GPU's queue).
    facts = [(torch.isfinite(low) & torch.isfinite(high)).all(), (low < 0).any(), lowest]
    if B:
        facts += [counts.max(), counts.sum()]
    finite, negative, lowest, *sizes = torch.stack([f.long() for f in facts]).tolist()
    if not finite:
        raise ValueError(f"{fn}: cam holds NaN or infinite values")
    if lowest < -1:
        raise ValueError(f"{fn}: labels must be >= -1 (-1: pixel left out)")
    if negative:  # negative scores count as 0
        cam = cam.clamp_min(0)
    if B == 0:
        out = cam.new_zeros(0, C, H, W)
        return (out, labels) if return_labels else out

    # Nodes of the batch graph: superpixel k of image b is node offsets[b] + k. Long index tensors
    # (not boolean masks, whose indexing synchronises to count) move values between [B, K] and [N].
    k_max, N = sizes
    offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    node = torch.arange(N, device=device)
    image_of_node = torch.searchsorted(offsets[1:], node, right=True)
    node_index = image_of_node * k_max + node - offsets[image_of_node]  # into [B * K]

    def nodes(per_image: torch.Tensor) -> torch.Tensor:  # [B, D, K] -> [N, D]
        return per_image.transpose(1, 2).reshape(B * k_max, per_image.shape[1])[node_index]

    # Node features: mean colour in CIELAB, the unary (mean log-probability), optional deep features.
    # uint8 images are scaled to [0, 1] after pooling (on the means, not on every pixel: one pass
    # less over the image).
    mean_rgb = nodes(ops.superpixel_pool(image.float(), labels, k_max, "mean"))
    if image.dtype == torch.uint8:
        mean_rgb = mean_rgb / 255.0
    # float64: float32 pow / cube root round differently in vector bodies and loop tails, which would
    # make a superpixel's colour depend on its position in the batch.
    lab = reference.rgb_to_lab(mean_rgb.double().T[None, :, :, None])[0, :, :, 0].T.float()  # [N, 3]
    # The unary in one pass over the CAM, reading only the present classes' planes (ops._cam_unary).
    unary = nodes(ops._cam_unary(cam, labels, class_mask, k_max, t, _LOG_FLOOR))
    allowed = torch.cat([class_mask.new_ones(B, 1), class_mask], 1)
    unary = unary.masked_fill(~allowed[image_of_node], float("-inf"))

    graph = ops.superpixel_adjacency(labels, counts)
    if hops > 1:
        graph = expand_hops(graph, hops)
    rows, cols = graph.rows(), graph.indices
    affinity = torch.exp(-((lab[rows] - lab[cols]) ** 2).sum(1) / (2 * sigma_c ** 2))
    if features is not None:
        f = nodes(ops.superpixel_pool(features.float(), labels, k_max, "mean"))
        affinity = affinity * torch.exp(-((f[rows] - f[cols]) ** 2).sum(1) / (2 * sigma_f ** 2))
    if beta != 1.0:
        affinity = affinity ** beta

    # Mean field with the background competing; messages are edge-aware random walks.
    q = torch.softmax(unary, 1)
    for _ in range(steps):
        messages = ops.sparse_propagate(graph, affinity, q, iters, alpha, _check_weight=False)
        q = torch.softmax(unary + weight * messages, 1)
    score = t * q[:, 1:] / q[:, :1].clamp_min(1e-30)

    per_image = score.new_zeros(B * k_max, C)
    per_image[node_index] = score
    out = ops.superpixel_unpool(per_image.view(B, k_max, C).permute(0, 2, 1).contiguous(), labels)
    if numpy_in:
        out, labels = out[0].cpu().numpy(), labels[0].cpu().numpy()
    return (out, labels) if return_labels else out


def expand_hops(graph: "ops.Graph", hops: int) -> "ops.Graph":
    """The graph whose edges join nodes up to ``hops`` steps apart (border 0 for the added edges)."""
    N = graph.num_nodes
    device = graph.indptr.device
    rows = graph.rows()
    base = torch.sparse_coo_tensor(torch.stack([rows, graph.indices]), torch.ones(graph.num_edges, device=device),
                                   (N, N), check_invariants=False).coalesce()
    eye = torch.sparse_coo_tensor(torch.arange(N, device=device).expand(2, N), torch.ones(N, device=device), (N, N),
                                  check_invariants=False)
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
