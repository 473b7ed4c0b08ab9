"""spl.superpixel_pool: features pooled over superpixels (ops ``spl::superpixel_pool`` and its backward
``spl::_superpixel_pool_backward``; kernels csrc/ops/{cpu,cuda}/superpixel_pool_kernel.*, arguments
csrc/ops/superpixel_pool.h). The backward is itself differentiable (double backward)."""

from __future__ import annotations

import torch

from ._common import check_features, check_labels, count

_REDUCTIONS = ("sum", "mean", "max")


def superpixel_pool(x: torch.Tensor, labels: torch.Tensor, num_superpixels: int, reduce: str = "mean") -> torch.Tensor:
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
    K = _check_args(x, labels, num_superpixels, reduce)
    return torch.ops.spl.superpixel_pool(x, labels, K, reduce)[0]


def _check_args(x, labels, num_superpixels, reduce) -> int:
    """Dtypes, shapes and devices (the wrapper and the fake kernel); the kernels check the labels' values."""
    fn = "superpixel_pool"
    check_features(fn, x, 4)
    check_labels(fn, labels, (x.shape[0], x.shape[2], x.shape[3]), x.device)
    K = count(fn, "num_superpixels", num_superpixels)
    if reduce not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduce must be one of {_REDUCTIONS}, got {reduce!r}")
    return K


def _pool_setup_context(ctx, inputs, output):
    x, labels, num_superpixels, reduce = inputs
    ctx.height, ctx.width, ctx.reduce = x.shape[2], x.shape[3], reduce
    ctx.save_for_backward(labels, output[1])


def _pool_backward(ctx, grad, grad_aux):
    labels, aux = ctx.saved_tensors
    if grad is None or not ctx.needs_input_grad[0]:
        return None, None, None, None
    return (
        torch.ops.spl._superpixel_pool_backward(grad, labels, aux, ctx.height, ctx.width, ctx.reduce),
        None,
        None,
        None,
    )


def _pool_backward_setup_context(ctx, inputs, output):
    grad, labels, aux, height, width, reduce = inputs
    ctx.reduce, ctx.num_superpixels = reduce, grad.shape[2]
    ctx.save_for_backward(labels, aux)


def _pool_backward_backward(ctx, gg):
    # _superpixel_pool_backward is linear in grad; its adjoint is the pooling itself.
    labels, aux = ctx.saved_tensors
    if ctx.reduce == "max":
        flat = gg.flatten(2)
        picked = flat.gather(2, aux.clamp_min(0))
        out = torch.where(aux >= 0, picked, torch.zeros_like(picked))
    else:
        out = torch.ops.spl.superpixel_pool(gg, labels, ctx.num_superpixels, "sum")[0]
        if ctx.reduce == "mean":
            out = out / aux.clamp_min(1).unsqueeze(1).to(out.dtype)
    return out, None, None, None, None, None


torch.library.register_autograd("spl::superpixel_pool", _pool_backward, setup_context=_pool_setup_context)
torch.library.register_autograd(
    "spl::_superpixel_pool_backward", _pool_backward_backward, setup_context=_pool_backward_setup_context
)


@torch.library.register_fake("spl::superpixel_pool")
def _superpixel_pool_fake(x, labels, num_superpixels, reduce):
    _check_args(x, labels, num_superpixels, reduce)
    B, C = x.shape[0], x.shape[1]
    aux_shape = (B, C, num_superpixels) if reduce == "max" else (B, num_superpixels)
    return x.new_empty((B, C, num_superpixels)), labels.new_empty(aux_shape)


@torch.library.register_fake("spl::_superpixel_pool_backward")
def _superpixel_pool_backward_fake(grad, labels, aux, height, width, reduce):
    fn = "_superpixel_pool_backward"
    check_features(fn, grad, 3, "grad")
    check_labels(fn, labels, (grad.shape[0], height, width), grad.device)
    if reduce not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduce must be one of {_REDUCTIONS}, got {reduce!r}")
    return grad.new_empty((grad.shape[0], grad.shape[1], height, width))
