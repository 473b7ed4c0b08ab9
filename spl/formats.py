"""The files of the WSSS ecosystem: data sets (class names, palettes), label PNGs and CAM formats.

Used by ``spl refine``, ``spl eval`` and ``spl train``.

CAM formats (``detect_format`` looks at each file; every one is read exactly as its code base
writes it with ``np.save``):

  irn     IRN / ReCAM (``make_cam.py``): dict ``{"keys": 0-based foreground classes (a torch tensor or an
          array), "high_res": float32 [n, H, W], "cam": torch tensor [n, ceil(H/4), ceil(W/4)]}``.
          ``high_res`` is used when present, else ``cam`` at output stride 4, upsampled the way IRN
          makes ``high_res`` (bilinear to 4x its size, then cropped to the image).
  amn     AMN (``make_amn_cam.py``): the same keys, but ``high_res`` and ``cam`` hold n + 1 maps, the
          background first (softmax, then min-max per map); the background map is dropped.
  clipes  CLIP-ES (``generate_cams_*.py``): ``{"keys": 0-based classes, "attn_highres": float16 [n, H, W]}``;
          an image without classes has keys ``[-1]`` (and placeholder maps).
  eps     EPS / L2G / PSA: dict ``{0-based class index: map [H, W]}``.
  array   ``.npy`` array ``[C, h, w]`` of foreground scores (C = the data set's foreground classes), or
          ``[C + 1, h, w]`` with the background first (dropped).
  png     label PNG (0 background, k for class k, 255 ignored): one-hot scores.

Data sets: ``voc`` (PASCAL VOC 2012: 20 classes + background) and ``coco`` (MS-COCO 2014 as WSSS uses
it: 80 classes + background, label PNGs 0..80, 255 ignored).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
# The 80 COCO categories in the order of their ids (WSSS numbers them 1..80 in this order).
COCO_CLASSES = (
    "background",
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)
DATASETS = {"voc": VOC_CLASSES, "coco": COCO_CLASSES}
FORMATS = ("auto", "irn", "amn", "clipes", "eps", "array", "png")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")
IGNORE = 255  # the ignored label of ground truth and of pseudo-labels


def class_names(dataset: str, num_classes: int) -> List[str]:
    """Background + ``num_classes`` foreground names: the data set's when its class count matches, else
    ``class1 .. classN``."""
    names = DATASETS[dataset]
    if num_classes == len(names) - 1:
        return list(names)
    return ["background"] + [f"class{k}" for k in range(1, num_classes + 1)]


def voc_palette() -> List[int]:
    """The PASCAL VOC colour map (768 values), as the VOC devkit builds it: 256 distinct colours, so it
    also colours COCO's 81 labels (and 255, ignored)."""
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
# Files


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


def _load_npy(path: str):
    try:
        # allow_pickle: the dict formats are pickles (IRN's and AMN's "cam" is a torch tensor, which
        # unpickling rebuilds with torch).
        data = np.load(path, allow_pickle=True)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, ImportError, AttributeError, RuntimeError) as e:
        raise ValueError(f"{path}: not a readable .npy file ({type(e).__name__}: {e})") from None
    if isinstance(data, np.ndarray) and data.dtype == object and data.shape == ():
        data = data.item()
    if not isinstance(data, (dict, np.ndarray)):
        raise ValueError(f"{path}: expected a dict or an array, got {type(data).__name__}")
    return data


_EXPECTED = (
    "one of: IRN/ReCAM {'keys', 'high_res' or 'cam'}; AMN (the same, background map first); CLIP-ES "
    "{'keys', 'attn_highres'}; EPS {class index: map}; an array [C, H, W]; a label PNG"
)


def _dict_format(path: str, data: dict) -> str:
    if "keys" in data:
        if "attn_highres" in data:
            return "clipes"
        maps = data.get("high_res", data.get("cam"))
        if maps is not None:
            n_keys = int(np.asarray(_numpy(data["keys"])).reshape(-1).shape[0])
            n_maps = int(np.shape(_numpy(maps))[0]) if np.ndim(_numpy(maps)) == 3 else -1
            return "amn" if n_maps == n_keys + 1 else "irn"
        raise ValueError(
            f"{path}: a dict with 'keys' but no maps (its keys: {sorted(map(str, data))}); expected {_EXPECTED}"
        )
    if all(isinstance(k, (int, np.integer)) for k in data):  # {} too: an image without classes
        return "eps"
    raise ValueError(
        f"{path}: a dict that matches no CAM format (its keys: {sorted(map(str, data))[:8]}); expected {_EXPECTED}"
    )


def detect_format(path: str) -> str:
    if path.lower().endswith(".png"):
        return "png"
    data = _load_npy(path)
    return _dict_format(path, data) if isinstance(data, dict) else "array"


def _numpy(x):
    """A torch tensor (as IRN and AMN store keys and "cam") as a NumPy array; anything else as is."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x


def _finite(path: str, scores) -> np.ndarray:
    try:
        scores = np.asarray(_numpy(scores), dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: CAM maps must be numbers ({e})") from None
    if not np.isfinite(scores).all():
        raise ValueError(f"{path}: the CAM holds NaN or infinite values")
    return scores


@dataclass
class Cam:
    """A CAM as read from its file: ``scores`` float32 [num_classes, h, w] (zeros for absent classes),
    ``present`` bool [num_classes], and ``stride`` (4 for IRN / AMN ``cam`` maps, whose grid is the
    image's at output stride 4; 0 for maps on the image's grid or smaller and upsampled)."""

    scores: np.ndarray
    present: np.ndarray
    stride: int = 0
    format: str = ""


def _keyed_maps(path: str, fmt: str, data, num_classes: int) -> Tuple[list, int]:
    """[(class index, map)] and the stride of an irn / amn / clipes dict."""
    if not isinstance(data, dict) or "keys" not in data:
        raise ValueError(f"{path}: --format {fmt} expects a dict with 'keys'; expected {_EXPECTED}")
    try:
        keys = np.asarray(_numpy(data["keys"])).astype(np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: 'keys' must be class indices ({e})") from None
    if fmt == "clipes":
        if "attn_highres" not in data:
            raise ValueError(f"{path}: a CLIP-ES CAM must be a dict with 'keys' and 'attn_highres'")
        if keys.size and (keys < 0).all():  # CLIP-ES writes keys [-1] for an image without classes
            return [], 0
        maps, stride = _finite(path, data["attn_highres"]), 0
    else:
        if "high_res" in data:
            maps, stride = _finite(path, data["high_res"]), 0
        elif "cam" in data:
            maps, stride = _finite(path, data["cam"]), 4
        else:
            raise ValueError(f"{path}: an {fmt.upper()} CAM must be a dict with 'keys' and 'high_res' (or 'cam')")
    if maps.ndim != 3:
        raise ValueError(f"{path}: CAM maps must have shape [n, H, W], got {list(maps.shape)}")
    expected = keys.shape[0] + (1 if fmt == "amn" else 0)
    if maps.shape[0] != expected:
        hint = ""
        if fmt == "irn" and maps.shape[0] == keys.shape[0] + 1:
            hint = " (one more map than keys: an AMN CAM, background first? use --format amn or auto)"
        elif fmt == "amn" and maps.shape[0] == keys.shape[0]:
            hint = " (as many maps as keys: an IRN CAM? use --format irn or auto)"
        raise ValueError(f"{path}: {keys.shape[0]} keys but {maps.shape[0]} maps, expected {expected}{hint}")
    if fmt == "amn":
        maps = maps[1:]  # AMN's background map comes first
    return list(zip(keys.tolist(), maps)), stride


def read_cam(path: str, fmt: str, num_classes: int) -> Cam:
    """Reads a CAM file of format ``fmt`` (one of FORMATS; "auto" detects it)."""
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
        return Cam(scores, present, 0, fmt)
    data = _load_npy(path)
    stride = 0
    if fmt in ("irn", "amn", "clipes"):
        items, stride = _keyed_maps(path, fmt, data, num_classes)
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
            raise ValueError(
                f"{path}: an array CAM must have shape [C, H, W]"
                + ("" if isinstance(data, np.ndarray) else f"; expected {_EXPECTED}")
            )
        maps = _finite(path, data)
        if maps.shape[0] == num_classes + 1:
            maps = maps[1:]  # background first
        if maps.shape[0] != num_classes:
            raise ValueError(
                f"{path}: an array CAM must have {num_classes} (or {num_classes + 1}) channels, got {maps.shape[0]}"
            )
        return Cam(maps, maps.reshape(num_classes, -1).max(1) > 0, 0, fmt)
    else:
        raise ValueError(f"unknown CAM format {fmt!r} (one of {FORMATS})")
    if not items:
        return Cam(np.zeros((num_classes, 1, 1), np.float32), present, 0, fmt)
    shape = items[0][1].shape
    scores = np.zeros((num_classes,) + shape, np.float32)
    for k, m in items:
        if not 0 <= k < num_classes:
            raise ValueError(
                f"{path}: class index {k} outside [0, {num_classes}) (is --dataset / --num-classes right?)"
            )
        scores[k] = m
        present[k] = True
    return Cam(scores, present, stride, fmt)


def to_image_grid(path: str, maps: torch.Tensor, stride: int, height: int, width: int) -> torch.Tensor:
    """Maps [n, h, w] of a CAM file as maps [n, h', w'] no larger than the image: stride-4 maps are
    upsampled to 4x their size and cropped to the image (IRN's geometry: cell i covers pixels 4i ..
    4i + 3); others are returned as they are (checked to be no larger than the image)."""
    h, w = maps.shape[-2:]
    if stride:
        want = (-(-height // stride), -(-width // stride))
        if (h, w) != want:
            raise ValueError(
                f"{path}: maps of {h}x{w} at output stride {stride} for an image of {height}x{width} "
                f"(expected {want[0]}x{want[1]})"
            )
        if maps.shape[0]:
            maps = F.interpolate(maps[None], size=(h * stride, w * stride), mode="bilinear", align_corners=False)[
                0, :, :height, :width
            ].contiguous()
        return maps
    if maps.shape[0] and (h > height or w > width or h < 1 or w < 1):
        raise ValueError(
            f"{path}: CAM of {h}x{w} for an image of {height}x{width}; a CAM must have the image's "
            "size or a smaller one, at least 1x1"
        )
    return maps


def list_names(folder: str, list_file: Optional[str], extensions: Sequence[str] = IMAGE_EXTENSIONS) -> List[str]:
    """Names from a list file (one per line, the first word; paths and extensions dropped), or of the
    files of ``folder`` with one of ``extensions``."""
    if list_file:
        with open(list_file) as f:
            names = [line.split()[0] for line in f if line.strip() and not line.startswith("#")]
        return [os.path.splitext(os.path.basename(n))[0] for n in names]
    return sorted({os.path.splitext(f)[0] for f in os.listdir(folder) if f.lower().endswith(tuple(extensions))})
