"""Typed Python wrappers over ``torch.ops.spl.*``: the only module that calls them.

Each public function validates its arguments (``ValueError`` / ``TypeError`` naming the argument),
accepts the layouts users have (batched or single tensors, NumPy arrays in scikit-image's layout),
and calls one custom op. Fake (meta) kernels registered here let ``torch.compile(fullgraph=True)``
trace the ops.
"""
from __future__ import annotations

import contextlib
import math
from typing import NamedTuple, Optional, Sequence, Union

import numpy as np
import torch

from . import _checks

__all__ = [
    "slic",
    "enforce_connectivity",
    "superpixel_pool",
    "superpixel_unpool",
    "edge_aware_unpool",
    "superpixel_histogram",
    "consistency_weights",
    "Graph",
    "superpixel_adjacency",
    "sparse_propagate",
    "has_cuda_kernels",
]

ArrayLike = Union[torch.Tensor, np.ndarray]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# CUDA kernels index the pixels of a batch with int32.
_MAX_BATCH_PIXELS = 2**31 - 1


def has_cuda_kernels() -> bool:
    """True if this build of spl has CUDA kernels (it may still run on a machine without a GPU)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("spl::slic", "CUDA")


def _as_float(fn: str, name: str, value) -> float:  # conversion only: the op checks the value
    return _checks.number(fn, name, value, finite=False)


def _check_device(t: torch.Tensor, fn: str) -> None:
    if t.device.type == "cuda" and not has_cuda_kernels():
        raise RuntimeError(
            f"{fn}: got a CUDA tensor, but this build of spl has no CUDA kernels. Rebuild it on a "
            "machine with nvcc and a CUDA build of torch (see README, 'Building for CUDA')."
        )
    if t.device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"{fn}: tensors must be on a CPU or CUDA device, got {t.device}")


def _as_bool_mask(mask, batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"slic: mask must be a bool tensor or array, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"slic: mask must be a bool tensor, got dtype {mask.dtype}")
    if mask.dim() == 2:
        mask = mask.unsqueeze(0).expand(batch, -1, -1)
    if mask.dim() != 3 or tuple(mask.shape) != (batch, height, width):
        raise ValueError(
            f"slic: mask must have shape [B, H, W] = [{batch}, {height}, {width}] (or [H, W]), "
            f"got {list(mask.shape)}"
        )
    if mask.device != device:
        raise ValueError(f"slic: mask is on {mask.device} but image is on {device}")
    return mask


def slic(
    image: ArrayLike,
    n_segments: int = 400,
    compactness: float = 10.0,
    max_num_iter: int = 10,
    *,
    convert2lab: Optional[bool] = None,
    enforce_connectivity: bool = True,
    min_size_factor: float = 0.25,
    spacing: Optional[Sequence[float]] = None,
    mask: Optional[ArrayLike] = None,
    return_counts: bool = False,
):
    """SLIC superpixels of a batch of images, on the CPU or a CUDA GPU.

    k-means in colour and image space, each pixel comparing only the centres of the 3x3 grid
    cells around it (Achanta et al., 2012; the grid as in gSLICr). Deterministic: the same input
    gives the same labels on every run, and the CPU and CUDA kernels give the same labels.

    Args:
        image (Tensor[B, C, H, W] or Tensor[C, H, W], or ndarray[H, W, C] or ndarray[H, W]):
            uint8 (0..255) or floating point (0..1) images, any number of channels C >= 1
            (grayscale, RGB, or feature maps). A NumPy array uses scikit-image's layout and gives
            a NumPy result.
        n_segments (int): the number of superpixels to aim for, in [1, H*W]. The grid has
            ``round(H/S) x round(W/S)`` cells with ``S = sqrt(H*W / n_segments)``. Default 400
            (scikit-image's ``slic``: 100).
        compactness (float): weight of the spatial distance against the colour distance:
            ``D = |c_p - c_k|^2 + (compactness / S)^2 |xy_p - xy_k|^2``, colours in CIELAB for RGB
            images and in the image's units (uint8 scaled to 0..1) otherwise. Default 10.
        max_num_iter (int): assignment/update rounds. Default 10.
        convert2lab (bool, optional): convert sRGB to CIELAB (D65) inside the kernel. Defaults to
            True when C == 3. Float RGB values are clamped to [0, 1] for the conversion.
        enforce_connectivity (bool): make every label one 4-connected region, merging regions
            smaller than ``min_size_factor * H*W / n_segments`` pixels into the neighbour with
            which they share the longest border (ties: the smaller label). Default True.
        min_size_factor (float): see ``enforce_connectivity``. Default 0.25 (scikit-image's ``slic``: 0.5).
        spacing (sequence of 2 floats, optional): pixel spacing (y, x) weighting the spatial
            distance. Default (1, 1).
        mask (Tensor[B, H, W] or Tensor[H, W] of bool, optional): pixels outside the mask get
            label -1 and take no part.
        return_counts (bool): also return the number of superpixels of each image.

    Returns:
        Tensor[B, H, W] (or [H, W], or ndarray[H, W]) of int64 labels ``0..n_b-1``, numbered in
        raster order of each superpixel's first pixel; with ``return_counts``, also the counts
        ``n_b`` (Tensor[B], or a 0-d tensor / int for a single image).

    Raises:
        TypeError: image is neither uint8 nor floating point; mask is not bool.
        ValueError: wrong rank or empty image, n_segments outside [1, H*W], compactness outside
            [1e-6, 1e6], max_num_iter < 1, convert2lab with C != 3, wrong mask shape, NaN or
            infinite values in the image (inside the mask).

    Example:
        >>> import torch, spl
        >>> image = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
        >>> image[:, :, :, 32:] = 255
        >>> labels, counts = spl.slic(image, n_segments=4, return_counts=True)
        >>> labels.shape, counts.tolist()
        (torch.Size([1, 64, 64]), [4])

    References:
        R. Achanta et al., "SLIC Superpixels Compared to State-of-the-Art Superpixel Methods",
        TPAMI 2012; scikit-image ``skimage.segmentation.slic``.
    """
    numpy_in = isinstance(image, np.ndarray)
    if numpy_in:
        if image.ndim not in (2, 3):
            raise ValueError(f"slic: a NumPy image must have shape (H, W) or (H, W, C), got {image.shape}")
        arr = image[..., None] if image.ndim == 2 else image
        if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and np.little_endian is False):
            arr = arr.astype(arr.dtype.newbyteorder("="))  # torch reads native byte order only
        if arr.dtype == np.uint16:
            raise TypeError("slic: a uint16 image must be scaled first, e.g. image.astype(np.float32) / 65535")
        arr = np.ascontiguousarray(arr)
        if not arr.flags.writeable:  # e.g. np.asarray of a PIL image; torch wants writable memory
            arr = arr.copy()
        image_t = torch.from_numpy(arr).permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        image_t = image
    else:
        raise TypeError(f"slic: image must be a torch.Tensor or numpy.ndarray, got {type(image).__name__}")

    if image_t.dtype != torch.uint8 and image_t.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"slic: image must be uint8 (0..255) or floating point (0..1), got {image_t.dtype}; "
            "convert it first, e.g. image.float() / 65535 for uint16 data"
        )
    batched = image_t.dim() == 4
    if image_t.dim() == 3:
        image_t = image_t.unsqueeze(0)
    elif not batched:
        raise ValueError(
            f"slic: image must have shape [B, C, H, W] or [C, H, W], got {list(image_t.shape)}"
        )
    B, C, H, W = image_t.shape
    if C < 1 or H < 1 or W < 1:
        raise ValueError(f"slic: image must have at least one channel and one pixel, got shape {list(image_t.shape)}")
    _check_device(image_t, "slic")

    # Types and int64 bounds here; the op checks every range itself (csrc/ops/slic.h: n_segments in
    # [1, H*W], compactness in [1e-6, 1e6], max_num_iter in [1, 10000], min_size_factor >= 0, spacing
    # two entries in [1e-3, 1e3]), with the same ValueError.
    n_segments = _checks.integer("slic", "n_segments", n_segments)
    compactness = _as_float("slic", "compactness", compactness)
    max_num_iter = _checks.integer("slic", "max_num_iter", max_num_iter)
    if convert2lab is None:
        convert2lab = C == 3
    elif convert2lab and C != 3:
        raise ValueError(f"slic: convert2lab=True needs 3 (RGB) channels, got {C}")
    min_size_factor = _as_float("slic", "min_size_factor", min_size_factor)
    if spacing is None:
        spacing = (1.0, 1.0)
    if isinstance(spacing, (str, bytes)) or not hasattr(spacing, "__len__"):
        raise TypeError(f"slic: spacing must be a pair of numbers (y, x), got {spacing!r}")
    spacing = [_as_float("slic", "spacing", s) for s in spacing]
    if mask is not None:
        mask = _as_bool_mask(mask, B, H, W, image_t.device)

    def run(img, msk):
        return torch.ops.spl.slic(
            img, int(n_segments), compactness, int(max_num_iter), bool(convert2lab),
            bool(enforce_connectivity), min_size_factor, spacing, msk,
        )

    per_call = max(1, _MAX_BATCH_PIXELS // (H * W))
    if image_t.device.type == "cuda" and B > per_call:
        parts = [
            run(image_t[i:i + per_call], None if mask is None else mask[i:i + per_call])
            for i in range(0, B, per_call)
        ]
        labels = torch.cat([p[0] for p in parts])
        counts = torch.cat([p[1] for p in parts])
    else:
        labels, counts = run(image_t, mask)

    if not batched:
        labels, counts = labels[0], counts[0]
    if numpy_in:
        labels = labels.numpy()
        counts = int(counts)
    return (labels, counts) if return_counts else labels


def enforce_connectivity(labels: ArrayLike, min_size: int = 0, *, return_counts: bool = False):
    """Relabels a label map into 4-connected regions, merging the small ones.

    Every 4-connected region of equal labels becomes one label; a region smaller than
    ``min_size`` pixels is merged into the neighbour with which it shares the longest border
    (ties: the smaller label), in rounds until no small region has a neighbour. ``spl.slic`` uses
    this with ``min_size = min_size_factor * H*W / n_segments``.

    Args:
        labels (Tensor[B, H, W] or Tensor[H, W] of int64, or ndarray[H, W]): any integer labels;
            -1 marks pixels outside every region.
        min_size (int): regions smaller than this are merged. 0 or 1 only splits labels into
            connected regions.
        return_counts (bool): also return the number of regions of each image.

    Returns:
        int64 labels ``0..n-1`` of the same shape, numbered in raster order of each region's first
        pixel (-1 stays -1); with ``return_counts`` also the counts.

    Raises:
        TypeError: labels are not integers.
        ValueError: wrong rank, labels below -1, min_size < 0.
    """
    numpy_in = isinstance(labels, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(labels)) if numpy_in else labels
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"enforce_connectivity: labels must be a tensor or array, got {type(labels).__name__}")
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"enforce_connectivity: labels must be an integer tensor, got {t.dtype}")
    batched = t.dim() == 3
    if t.dim() == 2:
        t = t.unsqueeze(0)
    elif not batched:
        raise ValueError(f"enforce_connectivity: labels must have shape [B, H, W] or [H, W], got {list(t.shape)}")
    _check_device(t, "enforce_connectivity")
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 0:
        raise ValueError(f"enforce_connectivity: min_size must be an int >= 0, got {min_size!r}")
    # Beyond any image's size a larger min_size changes nothing ("merge every region that has a
    # neighbour"); clamped, it fits the op's int64.
    min_size = min(int(min_size), t.shape[-2] * t.shape[-1] + 1)
    out, counts = torch.ops.spl.enforce_connectivity(t.long(), min_size)
    if not batched:
        out, counts = out[0], counts[0]
    if numpy_in:
        out, counts = out.numpy(), (counts.numpy() if batched else int(counts))
    return (out, counts) if return_counts else out


# ---------------------------------------------------------------------------------------------
# Superpixel pooling

_FEATURE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_REDUCTIONS = ("sum", "mean", "max")


INT64_MAX = _checks.INT64_MAX


def _check_num(name: str, fn: str, value, minimum: int = 0, maximum: int = INT64_MAX):
    return _checks.integer(fn, name, value, minimum, None if maximum == INT64_MAX else maximum)


def _check_labels(fn: str, labels, batch_hw=None, device=None, name: str = "labels"):
    """An int64 [B, H, W] tensor: of exactly ``batch_hw`` and on ``device`` when given, else of any
    [B, H, W] and on a supported device."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a tensor, got {type(labels).__name__}")
    if labels.dtype != torch.int64:
        raise TypeError(f"{fn}: {name} must be an int64 tensor, got {labels.dtype}")
    if batch_hw is None:
        if labels.dim() != 3:
            raise ValueError(f"{fn}: {name} must have shape [B, H, W], got {list(labels.shape)}")
    elif labels.dim() != 3 or tuple(labels.shape) != tuple(batch_hw):
        raise ValueError(f"{fn}: {name} must have shape [B, H, W] = {list(batch_hw)}, got {list(labels.shape)}")
    if device is None:
        _check_device(labels, fn)
    elif labels.device != device:
        raise ValueError(f"{fn}: {name} are on {labels.device} but the input is on {device}")


def _check_features(fn: str, x, dims: int, name: str = "x"):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a tensor, got {type(x).__name__}")
    if x.dtype not in _FEATURE_DTYPES:
        raise TypeError(f"{fn}: {name} must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if x.dim() != dims:
        raise ValueError(f"{fn}: {name} must have {dims} dimensions, got shape {list(x.shape)}")
    _check_device(x, fn)


def superpixel_pool(x: torch.Tensor, labels: torch.Tensor, num_superpixels: int,
                    reduce: str = "mean") -> torch.Tensor:
    """Pools features over superpixels.

    Args:
        x (Tensor[B, C, H, W]): float16, bfloat16, float32 or float64 features.
        labels (Tensor[B, H, W] of int64): superpixel of each pixel in [0, num_superpixels);
            -1 leaves a pixel out.
        num_superpixels (int): K, the number of superpixels per image (the output size).
        reduce (str): "mean", "sum" or "max". Default "mean".

    Returns:
        Tensor[B, C, K], the dtype of x: the sum, mean or maximum of each superpixel's pixels;
        0 for a superpixel without pixels. Sums are accumulated in float64 (CPU) or exact
        fixed point (CUDA), so the result does not depend on thread order.

    Gradients: to x for all three reductions (sum: the gradient of the superpixel, mean: divided
    by its size, max: to the first pixel in raster order that reaches the maximum). They are
    gathers or one-to-one scatters, hence deterministic too.

    Raises:
        TypeError: x is not floating point, labels are not int64.
        ValueError: shapes or devices differ, labels outside [-1, K), unknown reduce.
    """
    fn = "superpixel_pool"
    _check_features(fn, x, 4)
    _check_labels(fn, labels, (x.shape[0], x.shape[2], x.shape[3]), x.device)
    K = _check_num("num_superpixels", fn, num_superpixels)
    if reduce not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduce must be one of {_REDUCTIONS}, got {reduce!r}")
    return torch.ops.spl.superpixel_pool(x, labels, K, reduce)[0]


def superpixel_unpool(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Spreads per-superpixel features back to the pixels: ``out[b, :, p] = features[b, :, labels[b, p]]``.

    Args:
        features (Tensor[B, C, K]): float16, bfloat16, float32 or float64.
        labels (Tensor[B, H, W] of int64): in [0, K); -1 gives 0.

    Returns:
        Tensor[B, C, H, W]. The gradient to features is the scatter-sum (superpixel_pool "sum").
    """
    fn = "superpixel_unpool"
    _check_features(fn, features, 3, "features")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 3:
        raise ValueError(f"{fn}: labels must be a tensor of shape [B, H, W]")
    _check_labels(fn, labels, (features.shape[0], labels.shape[1], labels.shape[2]), features.device)
    return torch.ops.spl.superpixel_unpool(features, labels)


def edge_aware_unpool(features: torch.Tensor, labels: torch.Tensor, guide: torch.Tensor, sigma: float,
                      radius: int = 1, guide_means: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Spreads per-superpixel values back to the pixels with soft boundaries that follow the image.

    Inside a superpixel this is ``superpixel_unpool``. A pixel whose (2 radius + 1)^2 window meets
    other superpixels takes the mean of the values of the distinct superpixels there (its own among
    them), weighted by how close its guide value (e.g. its colour) is to each superpixel's mean guide
    value: ``w_k = exp(-(d_k - min_k d_k) / (2 sigma^2))`` with ``d_k = |guide_p - guide_means_k|^2``.

    Args:
        features (Tensor[B, C, K]): float16, bfloat16, float32 or float64 values per superpixel.
        labels (Tensor[B, H, W] of int64): in [0, K); -1 gives 0 and is never a candidate.
        guide (Tensor[B, D, H, W]): per-pixel guidance (e.g. RGB in [0, 1]); used in float32.
        sigma (float): > 0, the scale of guide distances.
        radius (int): 0..3, the window's half size (0: plain unpooling).
        guide_means (Tensor[B, D, K], optional): each superpixel's mean guide value; default
            ``superpixel_pool(guide, labels, K, "mean")``.

    Returns:
        Tensor[B, C, H, W], the dtype of features. Not differentiable (use superpixel_unpool for
        gradients). Each pixel is computed alone: deterministic, independent of threads and batch.

    Raises:
        TypeError / ValueError naming the argument: dtypes, shapes or devices that do not match,
        labels outside [-1, K), sigma or radius out of range, NaN or infinite guide values.
    """
    fn = "edge_aware_unpool"
    _check_features(fn, features, 3, "features")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 3:
        raise ValueError(f"{fn}: labels must be a tensor of shape [B, H, W]")
    B, C, K = features.shape
    _check_labels(fn, labels, (B, labels.shape[1], labels.shape[2]), features.device)
    _check_features(fn, guide, 4, "guide")
    if guide.shape[0] != B or tuple(guide.shape[2:]) != tuple(labels.shape[1:]):
        raise ValueError(f"{fn}: guide must have shape [B, D, H, W] = [{B}, D, {labels.shape[1]}, {labels.shape[2]}], "
                         f"got {list(guide.shape)}")
    if guide.device != features.device:
        raise ValueError(f"{fn}: guide is on {guide.device} but features are on {features.device}")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"{fn}: sigma must be a finite number > 0, got {sigma!r}")
    if isinstance(radius, bool) or not isinstance(radius, int) or not 0 <= radius <= 3:
        raise ValueError(f"{fn}: radius must be an int in [0, 3], got {radius!r}")
    if any(t.requires_grad for t in (features, guide)) and torch.is_grad_enabled():
        raise ValueError(f"{fn}: is not differentiable; use superpixel_unpool for gradients (or torch.no_grad())")
    guide = guide.float()
    if guide.numel() and not torch.compiler.is_compiling() and not bool(torch.isfinite(guide).all()):
        raise ValueError(f"{fn}: guide holds NaN or infinite values")
    if guide_means is None:
        guide_means = torch.ops.spl.superpixel_pool(guide, labels, K, "mean")[0]
    else:
        _check_features(fn, guide_means, 3, "guide_means")
        if tuple(guide_means.shape) != (B, guide.shape[1], K) or guide_means.device != features.device:
            raise ValueError(f"{fn}: guide_means must be a tensor of shape [B, D, K] = [{B}, {guide.shape[1]}, {K}] "
                             f"on {features.device}, got {list(guide_means.shape)} on {guide_means.device}")
        guide_means = guide_means.float()
    return torch.ops.spl.edge_aware_unpool(features, labels, guide, guide_means, float(sigma), radius)


def _check_target(fn: str, target, labels, num_classes, ignore_index):
    _check_labels(fn, target, name="target")  # int64 class indices [B, H, W]
    _check_labels(fn, labels, tuple(target.shape), target.device)
    _check_num("num_classes", fn, num_classes, 1)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"{fn}: ignore_index must be an int, got {type(ignore_index).__name__}")


def superpixel_histogram(target: torch.Tensor, labels: torch.Tensor, num_superpixels: int, num_classes: int,
                         ignore_index: int = 255) -> torch.Tensor:
    """Counts of pseudo-label classes inside each superpixel.

    Args:
        target (Tensor[B, H, W] of int64): classes in [0, num_classes), or ignore_index.
        labels (Tensor[B, H, W] of int64): superpixels in [0, K); -1 leaves a pixel out.
        num_superpixels (int): K. num_classes (int). ignore_index (int): default 255.

    Returns:
        Tensor[B, K, num_classes] of int64.
    """
    fn = "superpixel_histogram"
    _check_target(fn, target, labels, num_classes, ignore_index)
    K = _check_num("num_superpixels", fn, num_superpixels)
    return torch.ops.spl.superpixel_histogram(target, labels, K, int(num_classes), int(ignore_index))


def consistency_weights(target: torch.Tensor, labels: torch.Tensor, num_superpixels: int, num_classes: int,
                        tau: float = 0.7, gamma: float = 1.0, ignore_index: int = 255):
    """Local superpixel transformation of a pseudo-label and its consistency weights.

    In each superpixel k with class histogram h_k and n_k labelled pixels: if the majority class
    m_k = argmax h_k (ties: the smaller class) has h_k(m_k) >= tau * n_k, every labelled pixel
    takes class m_k and weighs 1; otherwise the label stays and weighs h_k(Y_p) / n_k. Pixels with
    ignore_index, or with superpixel -1, keep ignore_index and weigh 0. One fused kernel: a pass
    to count, a pass to write.

    Args:
        target (Tensor[B, H, W] of int64): pseudo-labels in [0, num_classes), or ignore_index.
        labels (Tensor[B, H, W] of int64): superpixels in [0, K); -1 leaves a pixel out.
        num_superpixels (int): K. num_classes (int).
        tau (float): majority share in [0, 1] above which a superpixel is relabelled. Default 0.7.
        gamma (float): the weights are returned to this power (>= 0). Default 1.
        ignore_index (int): default 255.

    Returns:
        (weights Tensor[B, H, W] of float32, transformed target Tensor[B, H, W] of int64).
    """
    fn = "consistency_weights"
    _check_target(fn, target, labels, num_classes, ignore_index)
    K = _check_num("num_superpixels", fn, num_superpixels)
    # The op checks tau in [0, 1] and gamma finite >= 0 (csrc/ops/cpu/consistency_weights_kernel.cpp).
    tau, gamma = _as_float(fn, "tau", tau), _as_float(fn, "gamma", gamma)
    return torch.ops.spl.consistency_weights(target, labels, K, int(num_classes), tau, gamma, int(ignore_index))


# ---------------------------------------------------------------------------------------------
# Autograd: pool -> _superpixel_pool_backward (which is itself differentiable, for double
# backward); unpool -> pool "sum".

class Graph(NamedTuple):
    """The superpixel adjacency graph of a batch: the disjoint union of the images'
    graphs in CSR form. Image b owns nodes ``node_offset[b] .. node_offset[b + 1] - 1`` (its
    superpixel k is node ``node_offset[b] + k``); the neighbours of node i are
    ``indices[indptr[i]:indptr[i + 1]]``, sorted, without i itself, and j is a neighbour of i exactly
    when i is one of j. ``border[e]`` counts the 4-neighbour pixel pairs along the border of edge e
    (0 for edges added by ``hops`` > 1). All int64, on the device of the labels."""

    indptr: torch.Tensor
    indices: torch.Tensor
    border: torch.Tensor
    node_offset: torch.Tensor

    @property
    def num_nodes(self) -> int:
        return self.indptr.shape[0] - 1

    @property
    def num_edges(self) -> int:
        return self.indices.shape[0]

    def rows(self) -> torch.Tensor:
        """The source node of every edge (int64 [E])."""
        return torch.repeat_interleave(torch.arange(self.num_nodes, device=self.indptr.device),
                                       self.indptr.diff(), output_size=self.num_edges)  # no device sync


def _node_offset(fn: str, num_superpixels, batch: int, device) -> torch.Tensor:
    if isinstance(num_superpixels, torch.Tensor):
        counts = num_superpixels
        if counts.dtype != torch.int64 or counts.dim() != 1 or counts.shape[0] != batch:
            raise ValueError(f"{fn}: num_superpixels must be an int or an int64 tensor of shape [B] = [{batch}], "
                             f"got {counts.dtype} {list(counts.shape)}")
        counts = counts.to(device)
    else:
        K = _check_num("num_superpixels", fn, num_superpixels)
        counts = torch.full((batch,), K, dtype=torch.int64, device=device)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def superpixel_adjacency(labels: torch.Tensor, num_superpixels) -> Graph:
    """The graph of adjacent superpixels of a batch of label maps (4-neighbour pixel pairs across a border).

    Args:
        labels (Tensor[B, H, W] of int64): superpixel of each pixel; -1 leaves a pixel out.
        num_superpixels (int or Tensor[B] of int64): K, or the number of superpixels of each image
            (e.g. the counts of ``spl.slic(..., return_counts=True)``); labels of image b must be in
            [-1, K_b).

    Returns:
        Graph: edge (i, j) when some pixel of i and some pixel of j are 4-neighbours, with the number
        of such pixel pairs in ``border``. Built on the labels' device (on the GPU for GPU labels).

    Raises:
        TypeError / ValueError: labels not int64 [B, H, W], labels out of range, bad num_superpixels.
    """
    fn = "superpixel_adjacency"
    _check_labels(fn, labels)
    node_offset = _node_offset(fn, num_superpixels, labels.shape[0], labels.device)
    indptr, indices, border = torch.ops.spl.superpixel_adjacency(labels, node_offset)
    return Graph(indptr, indices, border, node_offset)


@contextlib.contextmanager
def _on_calling_thread(active: bool = True):
    """While active, torch ops of the calling thread run on it alone (torch.set_num_threads(1), a
    per-thread OpenMP setting, restored afterwards). For small work on the CPU: torch opens a
    parallel region for many small ops (repeat_interleave even for a few thousand elements), and
    on a busy machine each region's barrier waits for a descheduled thread (csrc/ops/cpu/parallel.h)."""
    threads = torch.get_num_threads() if active and not torch.compiler.is_compiling() else 1
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# sparse_propagate's checks and transition (torch ops over the edges) for a graph of at most this
# many nodes (some 3 million edges) run on the calling thread: a few ms at most, and torch would
# open parallel regions for them (repeat_interleave even for a few thousand elements), each costly
# on a busy machine. The kernel decides its own threads (csrc/ops/cpu/parallel.h).
_GRAPH_INLINE_NODES = 2**19


def _transition(graph: Graph, weight: torch.Tensor, self_weight: float):
    """T = D^-1 A with A = weight off the diagonal and self_weight on it: (edge values, diagonal).
    The row sums come from a segmented sum (one row at a time, in CSR order: deterministic, without
    atomics, independent of the other rows, hence of the batch) and are differentiable."""
    degree = torch.segment_reduce(weight, "sum", offsets=graph.indptr, unsafe=True) + self_weight
    rows = graph.rows()
    return weight / degree[rows], self_weight / degree


def _check_graph(fn: str, graph, device) -> None:
    """A Graph a user may have built by hand: field types and shapes, then the CSR structure that
    the row sums need (indptr non-decreasing from 0 to E, indices in [0, N), node_offset
    non-decreasing from 0 to N), in one device synchronisation. The kernels check the rest (every
    edge inside its image, a symmetric structure)."""
    if not isinstance(graph, Graph):
        raise TypeError(f"{fn}: graph must be a spl.Graph (from spl.superpixel_adjacency), got {type(graph).__name__}")
    for name in Graph._fields:
        t = getattr(graph, name)
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.dim() != 1:
            raise TypeError(f"{fn}: graph.{name} must be a 1-D int64 tensor, got "
                            + (f"{t.dtype} of shape {list(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__))
        if t.device != device:
            raise ValueError(f"{fn}: graph.{name} is on {t.device} but x is on {device}")
    if graph.indptr.numel() < 1 or graph.node_offset.numel() < 1:
        raise ValueError(f"{fn}: graph.indptr and graph.node_offset must have at least one entry (N + 1, B + 1)")
    N, E = graph.num_nodes, graph.num_edges
    if graph.border.numel() != E:
        raise ValueError(f"{fn}: graph.border must have one entry per edge (E = {E}), got {graph.border.numel()}")
    if torch.compiler.is_compiling():
        return
    ip, off, ix = graph.indptr, graph.node_offset, graph.indices
    facts = torch.stack([ip[0] == 0, ip[-1] == E, (ip.diff() >= 0).all(), off[0] == 0, off[-1] == N,
                         (off.diff() >= 0).all(),
                         (ix >= 0).all() & (ix < N).all() if E else torch.ones((), dtype=torch.bool, device=device)])
    ok = facts.tolist()
    if not all(ok[:3]):
        raise ValueError(f"{fn}: graph.indptr must be non-decreasing from 0 to the number of edges E = {E}")
    if not all(ok[3:6]):
        raise ValueError(f"{fn}: graph.node_offset must be non-decreasing from 0 to the number of nodes N = {N}")
    if not ok[6]:
        raise ValueError(f"{fn}: graph.indices must be node ids in [0, N) = [0, {N})")


def _propagate(graph: Graph, transition, x: torch.Tensor, iters: int, alpha: float) -> torch.Tensor:
    """``sparse_propagate`` with the transition of ``_transition`` computed once by the caller (ASAM's
    mean field walks the same graph many times). Private: x float32 or float64 like the transition,
    the graph from superpixel_adjacency, checked by the op."""
    edge_value, self_value = transition
    return torch.ops.spl.sparse_propagate(graph.indptr, graph.indices, graph.node_offset, edge_value, self_value, x,
                                          iters, float(alpha))


def _cam_unary(cam: torch.Tensor, labels: torch.Tensor, class_mask: torch.Tensor, num_superpixels: int,
               bg_threshold: float, floor: float) -> torch.Tensor:
    """ASAM's unary, pooled over superpixels in one pass over the CAM (csrc/ops/cam_unary.h):
    [B, 1 + C, K] float32, the mean over each superpixel of log max(s, floor * T) - log T for
    s = bg_threshold (row 0) and the present classes' scores (rows 1 + c; 0 for absent classes),
    T = bg_threshold + the sum of the present classes' scores. Private: asam_refine checks the CAM
    (finite, non-negative) and the labels ([-1, K)) first; the op checks shapes, dtypes, devices."""
    _check_device(cam, "_cam_unary")
    return torch.ops.spl._cam_unary(cam, labels, class_mask, num_superpixels, float(bg_threshold), float(floor))


def sparse_propagate(graph: Graph, weight: torch.Tensor, x: torch.Tensor, iters: int, alpha: float = 1.0,
                     *, self_weight: float = 1.0, _check_weight: bool = True) -> torch.Tensor:
    """Propagation over a superpixel graph: ``s <- alpha * T s + (1 - alpha) * x`` for ``iters`` rounds,
    starting from ``s = x``, with the transition ``T = D^-1 A`` (A: ``weight`` on the edges, ``self_weight``
    on the diagonal; D: the row sums of A). All rounds run in one op (one kernel launch on the GPU).

    Args:
        graph (Graph): from ``superpixel_adjacency``.
        weight (Tensor[E]): non-negative finite edge affinities (float), on the graph's device.
        x (Tensor[N, C]): node values (float16 / bfloat16 are computed in float32).
        iters (int): rounds, >= 0. alpha (float): in [0, 1]; 1 is a pure random walk.
        self_weight (float): the diagonal of A, > 0 (default 1: each node keeps a share of its own value).

    Returns:
        Tensor[N, C], the dtype of x. Differentiable to ``x`` and ``weight`` (the backward stores the
        ``iters`` intermediate states: iters * N * C values). Deterministic: a fixed summation order
        and no atomics; given the same transition values the CPU and CUDA kernels compute the same
        bits (the row sums of T come from torch's segment_reduce, which may round differently on
        the two devices).
    """
    fn = "sparse_propagate"
    _check_features(fn, x, 2)
    with _on_calling_thread(x.device.type == "cpu" and x.shape[0] <= _GRAPH_INLINE_NODES):
        _check_graph(fn, graph, x.device)
        edge_value, self_value, x_in = _propagate_inputs(fn, graph, weight, x, iters, alpha, self_weight,
                                                         _check_weight)
    out = torch.ops.spl.sparse_propagate(graph.indptr, graph.indices, graph.node_offset, edge_value, self_value, x_in,
                                         int(iters), float(alpha))
    return out.to(x.dtype)


def _propagate_inputs(fn, graph, weight, x, iters, alpha, self_weight, check_weight):
    """sparse_propagate's checks of its other arguments and its transition (edge and self values)."""
    if not isinstance(weight, torch.Tensor) or weight.dtype not in _FEATURE_DTYPES:
        raise TypeError(f"{fn}: weight must be a floating-point tensor")
    if weight.dim() != 1 or weight.shape[0] != graph.num_edges:
        raise ValueError(f"{fn}: weight must have shape [E] = [{graph.num_edges}], got {list(weight.shape)}")
    if x.shape[0] != graph.num_nodes:
        raise ValueError(f"{fn}: x must have shape [N, C] with N = {graph.num_nodes} nodes, got {list(x.shape)}")
    if weight.device != x.device:
        raise ValueError(f"{fn}: weight is on {weight.device} but x is on {x.device}")
    iters = _check_num("iters", fn, iters)
    if not (0.0 <= float(alpha) <= 1.0):
        raise ValueError(f"{fn}: alpha must be in [0, 1], got {alpha}")
    if not (float(self_weight) > 0.0 and math.isfinite(self_weight)):
        raise ValueError(f"{fn}: self_weight must be a finite number > 0, got {self_weight}")
    # (spl.asam_refine builds finite non-negative weights itself and skips this device sync.)
    if check_weight and not torch.compiler.is_compiling() and weight.numel() and not bool(
            (torch.isfinite(weight) & (weight >= 0)).all()):
        raise ValueError(f"{fn}: weight must be finite and >= 0")
    dtype = x.dtype if x.dtype == torch.float64 else torch.float32
    edge_value, self_value = _transition(graph, weight.to(dtype), float(self_weight))
    return edge_value, self_value, x.to(dtype)


def _propagate_setup_context(ctx, inputs, output):
    indptr, indices, node_offset, edge_value, self_value, x, iters, alpha = inputs
    ctx.iters, ctx.alpha = iters, alpha
    ctx.save_for_backward(indptr, indices, node_offset, edge_value, self_value, x)


def _propagate_backward(ctx, grad):
    indptr, indices, node_offset, edge_value, self_value, x = ctx.saved_tensors
    g_edge, g_self, g_x = torch.ops.spl._sparse_propagate_backward(
        grad.contiguous(), indptr, indices, node_offset, edge_value, self_value, x, ctx.iters, ctx.alpha)
    return None, None, None, g_edge, g_self, g_x, None, None


def _pool_setup_context(ctx, inputs, output):
    x, labels, num_superpixels, reduce = inputs
    ctx.height, ctx.width, ctx.reduce = x.shape[2], x.shape[3], reduce
    ctx.save_for_backward(labels, output[1])


def _pool_backward(ctx, grad, grad_aux):
    labels, aux = ctx.saved_tensors
    if grad is None or not ctx.needs_input_grad[0]:
        return None, None, None, None
    return torch.ops.spl._superpixel_pool_backward(grad, labels, aux, ctx.height, ctx.width, ctx.reduce), None, None, None


def _pool_backward_setup_context(ctx, inputs, output):
    grad, labels, aux, height, width, reduce = inputs
    ctx.reduce, ctx.num_superpixels = reduce, grad.shape[2]
    ctx.save_for_backward(labels, aux)


def _pool_backward_backward(ctx, gg):
    # _superpixel_pool_backward is linear in grad; its adjoint is the pooling itself.
    labels, aux = ctx.saved_tensors
    if ctx.reduce == "max":
        B, C = gg.shape[:2]
        flat = gg.flatten(2)
        picked = flat.gather(2, aux.clamp_min(0))
        out = torch.where(aux >= 0, picked, torch.zeros_like(picked))
    else:
        out = torch.ops.spl.superpixel_pool(gg, labels, ctx.num_superpixels, "sum")[0]
        if ctx.reduce == "mean":
            out = out / aux.clamp_min(1).unsqueeze(1).to(out.dtype)
    return out, None, None, None, None, None


def _unpool_setup_context(ctx, inputs, output):
    features, labels = inputs
    ctx.num_superpixels = features.shape[2]
    ctx.save_for_backward(labels)


def _unpool_backward(ctx, grad):
    (labels,) = ctx.saved_tensors
    return torch.ops.spl.superpixel_pool(grad, labels, ctx.num_superpixels, "sum")[0], None


torch.library.register_autograd("spl::superpixel_pool", _pool_backward, setup_context=_pool_setup_context)
torch.library.register_autograd("spl::_superpixel_pool_backward", _pool_backward_backward,
                                setup_context=_pool_backward_setup_context)
torch.library.register_autograd("spl::superpixel_unpool", _unpool_backward, setup_context=_unpool_setup_context)
torch.library.register_autograd("spl::sparse_propagate", _propagate_backward, setup_context=_propagate_setup_context)


def _cam_unary_setup_context(ctx, inputs, output):
    cam, labels, class_mask, num_superpixels, bg_threshold, floor = inputs
    ctx.save_for_backward(cam, labels, class_mask)
    ctx.args = (num_superpixels, bg_threshold, floor)


def _cam_unary_backward(ctx, grad):
    # ASAM runs without gradients; when one is asked for, it is the reference formula's (the same
    # function: max(cam, floor * T) / T is the reference's clamped probability), differentiated by
    # autograd. It costs the dense tensor passes the kernel avoids, on the backward only.
    from . import reference

    cam, labels, class_mask = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None, None, None, None, None, None
    with torch.enable_grad():
        leaf = cam.detach().requires_grad_()
        (g,) = torch.autograd.grad(reference.cam_unary(leaf, labels, class_mask, *ctx.args), leaf, grad)
    return g, None, None, None, None, None


torch.library.register_autograd("spl::_cam_unary", _cam_unary_backward, setup_context=_cam_unary_setup_context)


# ---------------------------------------------------------------------------------------------
# Fake kernels: output shapes follow from input shapes alone.

@torch.library.register_fake("spl::slic")
def _slic_fake(image, n_segments, compactness, max_num_iter, convert2lab, enforce_connectivity,
               min_size_factor, spacing, mask):
    torch._check(image.dim() == 4, lambda: "slic: image must have shape [B, C, H, W]")
    B, _, H, W = image.shape
    return (
        image.new_empty((B, H, W), dtype=torch.int64),
        image.new_empty((B,), dtype=torch.int64),
    )


@torch.library.register_fake("spl::enforce_connectivity")
def _enforce_connectivity_fake(labels, min_size):
    torch._check(labels.dim() == 3, lambda: "enforce_connectivity: labels must have shape [B, H, W]")
    return torch.empty_like(labels), labels.new_empty((labels.shape[0],))


@torch.library.register_fake("spl::superpixel_pool")
def _superpixel_pool_fake(x, labels, num_superpixels, reduce):
    torch._check(x.dim() == 4, lambda: "superpixel_pool: x must have shape [B, C, H, W]")
    B, C = x.shape[0], x.shape[1]
    aux_shape = (B, C, num_superpixels) if reduce == "max" else (B, num_superpixels)
    return x.new_empty((B, C, num_superpixels)), labels.new_empty(aux_shape)


@torch.library.register_fake("spl::_superpixel_pool_backward")
def _superpixel_pool_backward_fake(grad, labels, aux, height, width, reduce):
    return grad.new_empty((grad.shape[0], grad.shape[1], height, width))


@torch.library.register_fake("spl::superpixel_unpool")
def _superpixel_unpool_fake(features, labels):
    return features.new_empty((features.shape[0], features.shape[1], labels.shape[1], labels.shape[2]))


@torch.library.register_fake("spl::edge_aware_unpool")
def _edge_aware_unpool_fake(features, labels, guide, guide_means, sigma, radius):
    torch._check(features.dim() == 3, lambda: "edge_aware_unpool: features must have shape [B, C, K]")
    torch._check(labels.dim() == 3 and labels.dtype == torch.int64,
                 lambda: "edge_aware_unpool: labels must be int64 [B, H, W]")
    torch._check(guide.dim() == 4 and guide.dtype == torch.float32, lambda: "edge_aware_unpool: guide must be float32 [B, D, H, W]")
    torch._check(guide_means.dim() == 3 and guide_means.dtype == torch.float32,
                 lambda: "edge_aware_unpool: guide_means must be float32 [B, D, K]")
    return features.new_empty((features.shape[0], features.shape[1], labels.shape[1], labels.shape[2]))


@torch.library.register_fake("spl::superpixel_histogram")
def _superpixel_histogram_fake(target, labels, num_superpixels, num_classes, ignore_index):
    return target.new_empty((target.shape[0], num_superpixels, num_classes))


@torch.library.register_fake("spl::consistency_weights")
def _consistency_weights_fake(target, labels, num_superpixels, num_classes, tau, gamma, ignore_index):
    return target.new_empty(target.shape, dtype=torch.float32), torch.empty_like(target)


@torch.library.register_fake("spl::superpixel_adjacency")
def _superpixel_adjacency_fake(labels, node_offset):
    num_edges = torch.library.get_ctx().new_dynamic_size()
    num_nodes = torch.library.get_ctx().new_dynamic_size()
    return (labels.new_empty((num_nodes + 1,)), labels.new_empty((num_edges,)), labels.new_empty((num_edges,)))


@torch.library.register_fake("spl::_cam_unary")
def _cam_unary_fake(cam, labels, class_mask, num_superpixels, bg_threshold, floor):
    return cam.new_empty((cam.shape[0], cam.shape[1] + 1, num_superpixels), dtype=torch.float32)


@torch.library.register_fake("spl::sparse_propagate")
def _sparse_propagate_fake(indptr, indices, node_offset, edge_value, self_value, x, iters, alpha):
    return torch.empty_like(x)


@torch.library.register_fake("spl::_sparse_propagate_backward")
def _sparse_propagate_backward_fake(grad, indptr, indices, node_offset, edge_value, self_value, x, iters, alpha):
    return torch.empty_like(edge_value), torch.empty_like(self_value), torch.empty_like(x)
