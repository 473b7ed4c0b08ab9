"""What the op modules share: the device rule, the checks of labels and features (the same messages in
a wrapper and in its fake kernel), and running small CPU work on the calling thread."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from .. import _checks

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# CUDA kernels index the pixels of a batch with int32.
MAX_BATCH_PIXELS = 2**31 - 1


def has_cuda_kernels() -> bool:
    """True if this build of spl has CUDA kernels (it may still run on a machine without a GPU)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("spl::slic", "CUDA")


def as_float(fn: str, name: str, value) -> float:  # conversion only: the op checks the value
    return _checks.number(fn, name, value, finite=False)


def count(fn: str, name: str, value, minimum: int = 0) -> int:
    """A count (num_superpixels, num_classes, iters): an int >= minimum within int64."""
    return _checks.integer(fn, name, value, minimum)


def check_device(t: torch.Tensor, fn: str) -> None:
    if t.device.type == "cuda" and not has_cuda_kernels():
        raise RuntimeError(
            f"{fn}: got a CUDA tensor, but this build of spl has no CUDA kernels. Rebuild it on a "
            "machine with nvcc and a CUDA build of torch (see README, 'Building for CUDA')."
        )
    if t.device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"{fn}: tensors must be on a CPU or CUDA device, got {t.device}")


def check_labels(fn: str, labels, batch_hw=None, device=None, name: str = "labels") -> None:
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
        check_device(labels, fn)
    elif labels.device != device:
        raise ValueError(f"{fn}: {name} are on {labels.device} but the input is on {device}")


def check_features(fn: str, x, dims: int, name: str = "x") -> None:
    """A float16, bfloat16, float32 or float64 tensor of ``dims`` dimensions on a supported device."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{fn}: {name} must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if x.dim() != dims:
        raise ValueError(f"{fn}: {name} must have {dims} dimensions, got shape {list(x.shape)}")
    check_device(x, fn)


def check_int_arg(fn: str, name: str, value) -> int:
    """An int (ignore_index): any value, but an int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, torch.SymInt)):
        raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__}")
    return value


@contextlib.contextmanager
def on_calling_thread(active: bool = True):
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
