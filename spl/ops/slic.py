"""spl.slic: SLIC superpixels of a batch of images (op ``spl::slic``; kernels csrc/ops/cpu/slic_kernel.cpp
and csrc/ops/cuda/slic_kernel.cu, arguments and shared math csrc/ops/slic.h)."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch

from .. import _checks
from ._common import FLOAT_DTYPES, MAX_BATCH_PIXELS, as_float, check_device

ArrayLike = Union[torch.Tensor, np.ndarray]


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
    image_t = _image_tensor(image)
    batched = image_t.dim() == 4
    image_t = image_t if batched else image_t.unsqueeze(0)
    B, C, H, W = image_t.shape
    # Types and int64 bounds here; the op checks every range itself (csrc/ops/slic.h: n_segments in
    # [1, H*W], compactness in [1e-6, 1e6], max_num_iter in [1, 10000], min_size_factor >= 0, spacing
    # two entries in [1e-3, 1e3]), with the same ValueError.
    n_segments = _checks.integer("slic", "n_segments", n_segments)
    compactness = as_float("slic", "compactness", compactness)
    max_num_iter = _checks.integer("slic", "max_num_iter", max_num_iter)
    if convert2lab is None:
        convert2lab = C == 3
    elif convert2lab and C != 3:
        raise ValueError(f"slic: convert2lab=True needs 3 (RGB) channels, got {C}")
    options = (
        n_segments,
        compactness,
        max_num_iter,
        bool(convert2lab),
        bool(enforce_connectivity),
        as_float("slic", "min_size_factor", min_size_factor),
        _spacing(spacing),
    )
    if mask is not None:
        mask = _as_bool_mask(mask, B, H, W, image_t.device)

    labels, counts = _run_in_chunks(image_t, mask, options)
    if not batched:
        labels, counts = labels[0], counts[0]
    if numpy_in:
        labels = labels.numpy()
        counts = int(counts)
    return (labels, counts) if return_counts else labels


def _image_tensor(image: ArrayLike) -> torch.Tensor:
    """The image as a [B, C, H, W] or [C, H, W] tensor of a supported dtype and device; a NumPy
    image (scikit-image's layout, (H, W) or (H, W, C)) becomes a [C, H, W] view or copy."""
    if isinstance(image, np.ndarray):
        image = _numpy_image(image)
    elif not isinstance(image, torch.Tensor):
        raise TypeError(f"slic: image must be a torch.Tensor or numpy.ndarray, got {type(image).__name__}")
    if image.dtype != torch.uint8 and image.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"slic: image must be uint8 (0..255) or floating point (0..1), got {image.dtype}; "
            "convert it first, e.g. image.float() / 65535 for uint16 data"
        )
    if image.dim() not in (3, 4):
        raise ValueError(f"slic: image must have shape [B, C, H, W] or [C, H, W], got {list(image.shape)}")
    if any(n < 1 for n in image.shape[-3:]):
        raise ValueError(f"slic: image must have at least one channel and one pixel, got shape {list(image.shape)}")
    check_device(image, "slic")
    return image


def _numpy_image(image: np.ndarray) -> torch.Tensor:
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
    return torch.from_numpy(arr).permute(2, 0, 1)


def _spacing(spacing) -> list:
    if spacing is None:
        return [1.0, 1.0]
    if isinstance(spacing, (str, bytes)) or not hasattr(spacing, "__len__"):
        raise TypeError(f"slic: spacing must be a pair of numbers (y, x), got {spacing!r}")
    return [as_float("slic", "spacing", s) for s in spacing]  # the op checks the count and the range


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
            f"slic: mask must have shape [B, H, W] = [{batch}, {height}, {width}] (or [H, W]), got {list(mask.shape)}"
        )
    if mask.device != device:
        raise ValueError(f"slic: mask is on {mask.device} but image is on {device}")
    return mask


def _run_in_chunks(image: torch.Tensor, mask: Optional[torch.Tensor], options: tuple):
    """torch.ops.spl.slic over the batch; on the GPU in chunks of fewer than 2^31 pixels (the CUDA
    kernels index a batch's pixels with int32)."""
    B, _, H, W = image.shape
    per_call = max(1, MAX_BATCH_PIXELS // (H * W))
    if image.device.type != "cuda" or B <= per_call:
        return torch.ops.spl.slic(image, *options, mask)
    parts = [
        torch.ops.spl.slic(image[i : i + per_call], *options, None if mask is None else mask[i : i + per_call])
        for i in range(0, B, per_call)
    ]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


@torch.library.register_fake("spl::slic")
def _slic_fake(
    image, n_segments, compactness, max_num_iter, convert2lab, enforce_connectivity, min_size_factor, spacing, mask
):
    # The dtype and shape checks of csrc/ops/slic.h (the values' ranges need the real op).
    if image.dtype != torch.uint8 and image.dtype not in FLOAT_DTYPES:
        raise TypeError(f"slic: image must be uint8 (0..255) or floating point (0..1), got {image.dtype}")
    if image.dim() != 4:
        raise ValueError(f"slic: image must have shape [B, C, H, W], got {list(image.shape)}")
    B, _, H, W = image.shape
    if mask is not None:
        _as_bool_mask(mask, B, H, W, image.device)
    return image.new_empty((B, H, W), dtype=torch.int64), image.new_empty((B,), dtype=torch.int64)
