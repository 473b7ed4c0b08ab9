"""ASAM's unary pooled over superpixels straight from the CAM: the private op ``spl::_cam_unary``
(kernels csrc/ops/{cpu,cuda}/cam_unary_kernel.*, the formula csrc/ops/cam_unary.h). Its gradient is
the reference formula's (spl.reference.cam_unary), differentiated by autograd."""

from __future__ import annotations

import torch

from ._common import check_device, check_labels


def cam_unary(
    cam: torch.Tensor,
    labels: torch.Tensor,
    class_mask: torch.Tensor,
    num_superpixels: int,
    bg_threshold: float,
    floor: float,
) -> torch.Tensor:
    """ASAM's unary, pooled over superpixels in one pass over the CAM (csrc/ops/cam_unary.h):
    [B, 1 + C, K] float32, the mean over each superpixel of log max(s, floor * T) - log T for
    s = bg_threshold (row 0) and the present classes' scores (rows 1 + c; 0 for absent classes),
    T = bg_threshold + the sum of the present classes' scores. Private: asam_refine checks the CAM
    (finite, non-negative) and the labels ([-1, K)) first; the op checks shapes, dtypes, devices."""
    check_device(cam, "_cam_unary")
    return torch.ops.spl._cam_unary(cam, labels, class_mask, num_superpixels, float(bg_threshold), float(floor))


def _cam_unary_setup_context(ctx, inputs, output):
    cam, labels, class_mask, num_superpixels, bg_threshold, floor = inputs
    ctx.save_for_backward(cam, labels, class_mask)
    ctx.args = (num_superpixels, bg_threshold, floor)


def _cam_unary_backward(ctx, grad):
    # ASAM runs without gradients; when one is asked for, it is the reference formula's (the same
    # function: max(cam, floor * T) / T is the reference's clamped probability), differentiated by
    # autograd. It costs the dense tensor passes the kernel avoids, on the backward only.
    from .. import reference

    cam, labels, class_mask = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None, None, None, None, None, None
    with torch.enable_grad():
        leaf = cam.detach().requires_grad_()
        (g,) = torch.autograd.grad(reference.cam_unary(leaf, labels, class_mask, *ctx.args), leaf, grad)
    return g, None, None, None, None, None


torch.library.register_autograd("spl::_cam_unary", _cam_unary_backward, setup_context=_cam_unary_setup_context)


@torch.library.register_fake("spl::_cam_unary")
def _cam_unary_fake(cam, labels, class_mask, num_superpixels, bg_threshold, floor):
    fn = "_cam_unary"
    if cam.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{fn}: cam must be float32 or float64, got {cam.dtype}")
    if cam.dim() != 4:
        raise ValueError(f"{fn}: cam must have shape [B, C, H, W], got {list(cam.shape)}")
    B, C, H, W = cam.shape
    check_labels(fn, labels, (B, H, W), cam.device)
    if class_mask.dtype != torch.bool:
        raise TypeError(f"{fn}: class_mask must be a bool tensor, got {class_mask.dtype}")
    if tuple(class_mask.shape) != (B, C) or class_mask.device != cam.device:
        raise ValueError(
            f"{fn}: class_mask must have shape [B, C] = [{B}, {C}] on {cam.device}, got "
            f"{list(class_mask.shape)} on {class_mask.device}"
        )
    return cam.new_empty((B, C + 1, num_superpixels), dtype=torch.float32)
