"""Pure-PyTorch references of every spl op: slow, obviously correct, runs on any device.

The kernels in ``torch.ops.spl`` are tested against these, and ``spl bench`` times them side by
side. Each is the plain formula stated in its docstring, vectorised over whole tensors, with no attempt at
speed beyond that. Where the kernels use tricks (fixed-point sums, cell-major layouts, run-length connectivity),
these functions use the plain formula, in float64 by default.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence, Tuple

import torch

__all__ = [
    "slic",
    "enforce_connectivity",
    "rgb_to_lab",
    "slic_grid",
    "superpixel_pool",
    "superpixel_unpool",
    "edge_aware_unpool",
    "superpixel_histogram",
    "consistency_weights",
    "superpixel_consistency_loss",
]

# --------------------------------------------------------------------------------------------------
# SLIC


def slic_grid(height: int, width: int, n_segments: int) -> Tuple[int, int, float]:
    """SLIC's seed grid: ``(cells_y, cells_x, step)``, ``step = sqrt(H*W / n_segments)``,
    ``floor(H / step + 0.5)`` x ``floor(W / step + 0.5)`` cells, each count clamped to [1, the image's size]."""
    step = math.sqrt(height * width / n_segments)
    cells_y = min(max(math.floor(height / step + 0.5), 1), height)
    cells_x = min(max(math.floor(width / step + 0.5), 1), width)
    return cells_y, cells_x, step


def _cell_begin(cell, cells: int, extent: int):
    return (cell * extent + cells - 1) // cells


def _cell_seed(cell: torch.Tensor, cells: int, extent: int) -> torch.Tensor:
    lo = _cell_begin(cell, cells, extent)
    hi = _cell_begin(cell + 1, cells, extent) - 1
    return torch.minimum(torch.maximum(((2 * cell + 1) * extent) // (2 * cells), lo), hi)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] (``[B, 3, H, W]``, values clamped) to CIELAB (D65), scikit-image's constants."""
    c = rgb.clamp(0, 1)
    lin = torch.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    r, g, b = lin[:, 0], lin[:, 1], lin[:, 2]
    x = (0.412453 * r + 0.357580 * g + 0.180423 * b) / 0.95047
    y = 0.212671 * r + 0.715160 * g + 0.072169 * b
    z = (0.019334 * r + 0.119193 * g + 0.950227 * b) / 1.08883

    def f(t):
        return torch.where(t > 0.008856, t.clamp_min(1e-12) ** (1.0 / 3.0), 7.787 * t + 16.0 / 116.0)

    fx, fy, fz = f(x), f(y), f(z)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def _features(image: torch.Tensor, convert2lab: bool, dtype: torch.dtype) -> torch.Tensor:
    x = image.to(dtype)
    if image.dtype == torch.uint8:
        x = x / 255.0
    return rgb_to_lab(x) if convert2lab else x


def slic(
    image: torch.Tensor,
    n_segments: int = 400,
    compactness: float = 10.0,
    max_num_iter: int = 10,
    *,
    convert2lab: Optional[bool] = None,
    enforce_connectivity: bool = True,
    min_size_factor: float = 0.25,
    spacing: Optional[Sequence[float]] = None,
    mask: Optional[torch.Tensor] = None,
    return_counts: bool = False,
    dtype: torch.dtype = torch.float64,
):
    """Reference SLIC of ``spl.slic`` for ``image`` ``[B, C, H, W]`` (same arguments)."""
    B, C, H, W = image.shape
    dev = image.device
    convert2lab = (C == 3) if convert2lab is None else convert2lab
    gy, gx, step = slic_grid(H, W, n_segments)
    K = gy * gx
    sy, sx = (1.0, 1.0) if spacing is None else (float(spacing[0]), float(spacing[1]))
    weight_y = (compactness / step * sy) ** 2
    weight_x = (compactness / step * sx) ** 2
    feat = _features(image, convert2lab, dtype)  # [B, C, H, W]
    inside = torch.ones(B, H, W, dtype=torch.bool, device=dev) if mask is None else mask.to(dev).bool()
    feat = torch.where(inside[:, None], feat, torch.zeros((), dtype=dtype, device=dev))

    ys = torch.arange(H, device=dev)
    xs = torch.arange(W, device=dev)
    cell_y = ys * gy // H  # cell row of each image row
    cell_x = xs * gx // W

    # Seeds: the middle pixel of each cell; with a mask, the nearest pixel of the cell inside it.
    ky = torch.arange(gy, device=dev)
    kx = torch.arange(gx, device=dev)
    seed_y = _cell_seed(ky, gy, H)[:, None].expand(gy, gx).reshape(K)
    seed_x = _cell_seed(kx, gx, W)[None, :].expand(gy, gx).reshape(K)
    pixel_cell = (cell_y[:, None] * gx + cell_x[None, :]).reshape(-1)  # [H*W]
    d2 = (ys[:, None] - seed_y.view(gy, gx)[cell_y][:, cell_x]) ** 2 + (
        xs[None, :] - seed_x.view(gy, gx)[cell_y][:, cell_x]
    ) ** 2  # [H, W]: distance of each pixel to its cell's middle
    order = d2.reshape(-1).long() * (H * W) + torch.arange(H * W, device=dev)  # ties: raster order
    key = torch.where(inside.reshape(B, -1), order[None], torch.full_like(order[None], 2**62))
    best = torch.full((B, K), 2**62, dtype=torch.long, device=dev).scatter_reduce(
        1, pixel_cell[None].expand(B, -1), key, "amin"
    )
    alive = best < 2**62
    seed = torch.where(alive, best % (H * W), torch.zeros_like(best))  # [B, K] pixel index
    flat = feat.reshape(B, C, H * W)
    centres = torch.cat(
        [
            flat.gather(2, seed[:, None].expand(B, C, K)),
            (seed // W).to(dtype)[:, None],
            (seed % W).to(dtype)[:, None],
        ],
        dim=1,
    ).transpose(1, 2)  # [B, K, C+2]

    yy = ys.to(dtype)[:, None].expand(H, W)
    xx = xs.to(dtype)[None, :].expand(H, W)
    batch = torch.arange(B, device=dev)[:, None, None]
    labels = None
    for it in range(max_num_iter):
        best_d = torch.full((B, H, W), math.inf, dtype=dtype, device=dev)
        labels = torch.zeros((B, H, W), dtype=torch.long, device=dev)
        for slot in range(9):
            ny = cell_y[:, None] + slot // 3 - 1
            nx = cell_x[None, :] + slot % 3 - 1
            valid = (ny >= 0) & (ny < gy) & (nx >= 0) & (nx < gx)  # [H, W]
            k = (ny.clamp(0, gy - 1) * gx + nx.clamp(0, gx - 1)).expand(H, W)
            c = centres[batch, k[None]]  # [B, H, W, C+2]
            d = ((feat.permute(0, 2, 3, 1) - c[..., :C]) ** 2).sum(-1)
            d = d + weight_y * (yy - c[..., C]) ** 2 + weight_x * (xx - c[..., C + 1]) ** 2
            d = torch.where(valid[None] & alive[batch, k[None]], d, torch.full_like(d, math.inf))
            better = d < best_d
            best_d = torch.where(better, d, best_d)
            labels = torch.where(better, k[None].expand(B, H, W), labels)
        labels = torch.where(inside, labels, torch.full_like(labels, -1))
        if it + 1 == max_num_iter:
            break
        # Update: mean of the pixels of each centre; a centre without pixels stays.
        g = (batch * K + labels).reshape(-1)
        keep = inside.reshape(-1)
        stats = torch.cat([feat.permute(0, 2, 3, 1), yy.expand(B, H, W)[..., None], xx.expand(B, H, W)[..., None]], -1)
        sums = torch.zeros(B * K, C + 2, dtype=dtype, device=dev).index_add_(0, g[keep], stats.reshape(-1, C + 2)[keep])
        counts = torch.zeros(B * K, dtype=dtype, device=dev).index_add_(
            0, g[keep], torch.ones_like(g[keep], dtype=dtype)
        )
        new = sums / counts.clamp_min(1)[:, None]
        centres = torch.where((counts > 0)[:, None], new, centres.reshape(B * K, C + 2)).view(B, K, C + 2)

    if enforce_connectivity:
        min_size = int(min_size_factor * H * W / n_segments)
        out, n = _connect(labels, min_size)
    else:
        out, n = _renumber_by_first_pixel(labels)
    return (out, n) if return_counts else out


# --------------------------------------------------------------------------------------------------
# Connectivity enforcement (the rule of csrc/ops/enforce_connectivity.h)


def _rank_regions(region: torch.Tensor, inside: torch.Tensor):
    """Labels 0..n-1 per image from region ids that are global pixel indices (first pixel of each
    region, so the order of ids is raster order); returns (labels, counts)."""
    B, H, W = region.shape
    N = H * W
    ids = torch.unique(region[inside])
    pos = torch.searchsorted(ids, region.clamp_min(0))
    base = torch.searchsorted(ids, torch.arange(B + 1, device=region.device) * N)
    labels = torch.where(inside, pos - base[:-1, None, None], torch.full_like(region, -1))
    return labels, base[1:] - base[:-1]


def _renumber_by_first_pixel(labels: torch.Tensor):
    B, H, W = labels.shape
    N = H * W
    inside = labels >= 0
    pixel = torch.arange(B * N, device=labels.device).view(B, H, W)
    # Make labels unique across the batch, then take each label's first pixel.
    key = torch.where(inside, torch.arange(B, device=labels.device)[:, None, None] * (labels.max() + 1) + labels, 0)
    _, inverse = torch.unique(key, return_inverse=True)
    first = torch.full((inverse.max() + 1,), B * N, device=labels.device).scatter_reduce(
        0, inverse[inside], pixel[inside], "amin"
    )
    region = torch.where(inside, first[inverse], torch.full_like(labels, -1))
    return _rank_regions(region, inside)


def _components(labels: torch.Tensor) -> torch.Tensor:
    """4-connected components of equal labels: each pixel gets the global index of the first pixel
    of its component (label propagation to the minimum, with pointer jumping); -1 outside."""
    B, H, W = labels.shape
    inside = labels >= 0
    big = B * H * W
    comp = torch.where(inside, torch.arange(big, device=labels.device).view(B, H, W), torch.full_like(labels, big))
    same_right = inside[:, :, 1:] & inside[:, :, :-1] & (labels[:, :, 1:] == labels[:, :, :-1])
    same_down = inside[:, 1:, :] & inside[:, :-1, :] & (labels[:, 1:, :] == labels[:, :-1, :])
    while True:
        new = comp.clone()
        new[:, :, 1:] = torch.where(same_right, torch.minimum(new[:, :, 1:], comp[:, :, :-1]), new[:, :, 1:])
        new[:, :, :-1] = torch.where(same_right, torch.minimum(new[:, :, :-1], comp[:, :, 1:]), new[:, :, :-1])
        new[:, 1:, :] = torch.where(same_down, torch.minimum(new[:, 1:, :], comp[:, :-1, :]), new[:, 1:, :])
        new[:, :-1, :] = torch.where(same_down, torch.minimum(new[:, :-1, :], comp[:, 1:, :]), new[:, :-1, :])
        flat = torch.cat([new.reshape(-1), torch.tensor([big], device=labels.device)])
        new = flat[flat[:-1]].view(B, H, W)  # pointer jumping: a pixel takes its root's root
        if torch.equal(new, comp):
            break
        comp = new
    return torch.where(inside, comp, torch.full_like(comp, -1))


def _connect(labels: torch.Tensor, min_size: int):
    B, H, W = labels.shape
    T = B * H * W
    dev = labels.device
    inside = labels >= 0
    comp = _components(labels)
    regions = torch.unique(comp[inside])
    size = torch.zeros(T, dtype=torch.long, device=dev).index_add_(0, comp[inside], torch.ones_like(comp[inside]))
    rep = torch.arange(T, device=dev)
    if min_size > 1 and regions.numel() > 0:
        # Directed borders between regions: one per 4-adjacent pixel pair and direction.
        a = torch.cat([comp[:, :, :-1].reshape(-1), comp[:, :-1, :].reshape(-1)])
        b = torch.cat([comp[:, :, 1:].reshape(-1), comp[:, 1:, :].reshape(-1)])
        keep = (a >= 0) & (b >= 0) & (a != b)
        src = torch.cat([a[keep], b[keep]])
        dst = torch.cat([b[keep], a[keep]])
        key, border = torch.unique(src * T + dst, return_counts=True)
        src, dst = key // T, key % T
        while True:
            gsize = torch.zeros(T, dtype=torch.long, device=dev).index_add_(0, rep[regions], size[regions])
            gs, gd = rep[src], rep[dst]
            keep = (gs != gd) & (gsize[gs] < min_size)
            if not bool(keep.any()):
                break
            pair, inverse = torch.unique(gs[keep] * T + gd[keep], return_inverse=True)
            total = torch.zeros(pair.numel(), dtype=torch.long, device=dev).index_add_(0, inverse, border[keep])
            ps, pd = pair // T, pair % T
            # 1. the neighbour with the longest border; ties: the smaller id
            score = total * T + (T - 1 - pd)
            best = torch.full((T,), -1, dtype=torch.long, device=dev).scatter_reduce(0, ps, score, "amax")
            sources = torch.unique(ps)
            target = torch.arange(T, device=dev)
            target[sources] = T - 1 - best[sources] % T
            # 2. a pair that chose each other joins under the smaller id
            t = target[sources]
            mutual = (target[t] == sources) & (sources < t)
            target[sources[mutual]] = sources[mutual]
            # 3. follow chains; each merged group takes its smallest member id
            while True:
                jumped = target[target]
                if torch.equal(jumped, target):
                    break
                target = jumped
            ids = torch.arange(T, device=dev)
            canon = ids.clone().scatter_reduce(0, target, ids, "amin")
            rep = canon[target[rep]]
    region = torch.where(inside, rep[comp.clamp_min(0)], torch.full_like(comp, -1))
    return _rank_regions(region, inside)


def enforce_connectivity(labels: torch.Tensor, min_size: int = 0, *, return_counts: bool = False):
    """Reference of ``spl.enforce_connectivity`` for int64 ``labels`` ``[B, H, W]``."""
    # No region exceeds the image: a larger min_size means the same as H * W + 1.
    out, counts = _connect(labels.long(), min(int(min_size), labels.shape[-2] * labels.shape[-1] + 1))
    return (out, counts) if return_counts else out


# --------------------------------------------------------------------------------------------------
# Superpixel pooling and the consistency loss


def superpixel_pool(x: torch.Tensor, labels: torch.Tensor, num_superpixels: int, reduce: str = "mean"):
    """Reference of ``spl.superpixel_pool`` (scatter_reduce in float64; -1 goes to a dropped bin)."""
    B, C = x.shape[:2]
    K = num_superpixels
    if C == 0 or K == 0:
        return torch.zeros(B, C, K, dtype=x.dtype, device=x.device)
    index = torch.where(labels < 0, K, labels).flatten(1).unsqueeze(1).expand(B, C, -1)
    src = x.flatten(2).double()
    counts = torch.zeros(B, K + 1, dtype=torch.float64, device=x.device).index_put_(
        (torch.arange(B, device=x.device)[:, None].expand_as(index[:, 0]), index[:, 0]),
        torch.ones_like(index[:, 0], dtype=torch.float64),
        accumulate=True,
    )[:, :K]
    if reduce == "max":
        out = torch.full((B, C, K + 1), -math.inf, dtype=torch.float64, device=x.device)
        out = out.scatter_reduce(2, index, src, "amax")[..., :K]
        out = torch.where(counts[:, None] > 0, out, torch.zeros_like(out))
    else:
        out = torch.zeros(B, C, K + 1, dtype=torch.float64, device=x.device).scatter_add(2, index, src)[..., :K]
        if reduce == "mean":
            out = out / counts.clamp_min(1)[:, None]
    return out.to(x.dtype)


def superpixel_unpool(features: torch.Tensor, labels: torch.Tensor):
    """Reference of ``spl.superpixel_unpool``."""
    B, C, K = features.shape
    if K == 0:  # every label is -1
        return features.new_zeros(B, C, *labels.shape[1:])
    index = labels.clamp_min(0).flatten(1).unsqueeze(1).expand(B, C, -1)
    out = features.gather(2, index).view(B, C, *labels.shape[1:])
    return torch.where((labels >= 0)[:, None], out, torch.zeros_like(out))


def edge_aware_unpool(
    features: torch.Tensor,
    labels: torch.Tensor,
    guide: torch.Tensor,
    guide_means: torch.Tensor,
    sigma: float,
    radius: int = 1,
) -> torch.Tensor:
    """``spl.edge_aware_unpool`` over whole tensors (float64): the distinct labels of each pixel's
    window, their guide distances and weights, the weighted mean."""
    B, C, K = features.shape
    _, H, W = labels.shape
    if K == 0 or C == 0:  # every label is -1
        return torch.zeros(B, C, H, W, dtype=features.dtype, device=features.device)
    r = radius
    size = 2 * r + 1
    padded = torch.nn.functional.pad(labels, [r, r, r, r], value=-1)
    # window[b, i, y, x] = label at (y + dy, x + dx) for the i-th offset in raster order.
    window = torch.stack([padded[:, dy : dy + H, dx : dx + W] for dy in range(size) for dx in range(size)], 1)
    window = torch.cat([labels[:, None], window], 1)  # the pixel's own label first
    first = window >= 0
    for i in range(1, window.shape[1]):
        first[:, i] &= (window[:, i : i + 1] != window[:, :i]).all(1)
    safe = window.clamp_min(0)
    g = guide.double()
    m = guide_means.double()
    means = torch.stack([m[b][:, safe[b]] for b in range(B)])  # [B, D, n, H, W]
    d = ((means - g[:, :, None]) ** 2).sum(1)  # [B, n, H, W]
    d = d.masked_fill(~first, float("inf"))
    w = torch.exp(-(d - d.amin(1, keepdim=True)) / (2 * sigma**2)) * first
    f = features.double()
    vals = torch.stack([f[b][:, safe[b]] for b in range(B)])  # [B, C, n, H, W]
    out = (vals * w[:, None]).sum(2) / w.sum(1)[:, None]
    out = torch.where(labels[:, None] >= 0, out, torch.zeros_like(out))
    return out.to(features.dtype)


def superpixel_histogram(target, labels, num_superpixels: int, num_classes: int, ignore_index: int = 255):
    """Reference of ``spl.superpixel_histogram``."""
    B = target.shape[0]
    K = num_superpixels
    keep = (labels >= 0) & (target != ignore_index)
    b = torch.arange(B, device=target.device)[:, None, None].expand_as(target)
    flat = (b * K + labels) * num_classes + target
    return torch.bincount(flat[keep], minlength=B * K * num_classes).view(B, K, num_classes)


def consistency_weights(
    target,
    labels,
    num_superpixels: int,
    num_classes: int,
    tau: float = 0.7,
    gamma: float = 1.0,
    ignore_index: int = 255,
):
    """Reference of ``spl.consistency_weights``: the transformation, then weights computed on the
    transformed labels with a second histogram."""
    if num_superpixels == 0:  # every label is -1: every pixel ignored
        return torch.zeros(target.shape, dtype=torch.float32, device=target.device), torch.full_like(
            target, ignore_index
        )
    hist = superpixel_histogram(target, labels, num_superpixels, num_classes, ignore_index)
    n = hist.sum(-1)
    best, majority = hist.max(-1)  # max returns the first (smallest) class among ties
    transform = (n > 0) & (best.double() >= tau * n.double())
    keep = (labels >= 0) & (target != ignore_index)
    b = torch.arange(target.shape[0], device=target.device)[:, None, None].expand_as(target)
    k = labels.clamp_min(0)
    transformed = torch.where(transform[b, k], majority[b, k], target)
    transformed = torch.where(keep, transformed, torch.full_like(target, ignore_index))
    hist2 = superpixel_histogram(transformed, labels, num_superpixels, num_classes, ignore_index)
    y = transformed.clamp(0, num_classes - 1)
    w = hist2[b, k, y].double() / hist2.sum(-1)[b, k].clamp_min(1).double()
    w = torch.where(keep, w**gamma, torch.zeros_like(w))
    return w.float(), transformed


def superpixel_consistency_loss(
    logits,
    target,
    superpixels,
    num_superpixels: int,
    num_classes: int,
    tau: float = 0.7,
    gamma: float = 1.0,
    ignore_index: int = 255,
    eps: float = 1e-8,
):
    """Reference of ``spl.SuperpixelConsistencyLoss`` (per-pixel loop-free, float64)."""
    import torch.nn.functional as F

    if tuple(logits.shape[-2:]) != tuple(target.shape[-2:]):
        logits = F.interpolate(logits, size=tuple(target.shape[-2:]), mode="bilinear", align_corners=False)
    w, yhat = consistency_weights(target, superpixels, num_superpixels, num_classes, tau, gamma, ignore_index)
    logp = torch.log_softmax(logits.double(), dim=1)
    y = yhat.clamp(0, num_classes - 1)
    ce = -logp.gather(1, y[:, None])[:, 0]
    w = w.double()
    return (w * ce).sum() / w.sum().clamp_min(eps)


# ---------------------------------------------------------------------------------------------
# ASAM: the adjacency graph, propagation and refinement


def superpixel_adjacency(labels: torch.Tensor, counts: torch.Tensor):
    """(indptr, indices, border, node_offset) of the batch graph, from a dense [K, K] matrix of
    border counts per image (simple, obviously right, quadratic in K)."""
    counts = counts.to(labels.device)
    node_offset = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    rows, cols, border = [], [], []
    for b in range(labels.shape[0]):
        K, lab = int(counts[b]), labels[b]
        dense = torch.zeros(K * K, dtype=torch.int64, device=labels.device)
        for a, c in ((lab[:, :-1], lab[:, 1:]), (lab[:-1, :], lab[1:, :])):
            keep = (a != c) & (a >= 0) & (c >= 0)
            a, c = a[keep], c[keep]
            dense += torch.bincount(a * K + c, minlength=K * K) + torch.bincount(c * K + a, minlength=K * K)
        i, j = torch.nonzero(dense.view(K, K), as_tuple=True)  # row-major: sorted by (i, j)
        rows.append(i + node_offset[b])
        cols.append(j + node_offset[b])
        border.append(dense.view(K, K)[i, j])
    N = int(node_offset[-1])
    rows = torch.cat(rows) if rows else labels.new_zeros(0)
    indptr = torch.cat([labels.new_zeros(1), torch.bincount(rows, minlength=N).cumsum(0)])
    return (
        indptr,
        torch.cat(cols) if cols else labels.new_zeros(0),
        torch.cat(border) if border else labels.new_zeros(0),
        node_offset,
    )


def sparse_propagate(indptr, indices, weight, x, iters: int, alpha: float, self_weight: float = 1.0):
    """The propagation with a dense transition matrix: s <- alpha T s + (1 - alpha) x, T = D^-1 A."""
    N = x.shape[0]
    rows = torch.repeat_interleave(torch.arange(N, device=x.device), indptr.diff())
    A = torch.zeros(N, N, dtype=x.dtype, device=x.device)
    A = A.index_put((rows, indices), weight.to(x.dtype), accumulate=True)
    A = A + self_weight * torch.eye(N, dtype=x.dtype, device=x.device)
    T = A / A.sum(1, keepdim=True)
    s = x
    for _ in range(iters):
        s = alpha * (T @ s) + (1 - alpha) * x
    return s


def cam_to_mask(cam: torch.Tensor, bg_threshold: float, class_mask: Optional[torch.Tensor] = None):
    """0 where no allowed class reaches the threshold, else 1 + the arg-max class."""
    if class_mask is not None:
        cam = cam.masked_fill(~class_mask[:, :, None, None], float("-inf"))
    top, arg = cam.max(1)
    return torch.where(top >= bg_threshold, arg + 1, torch.zeros_like(arg))


def cam_unary(
    cam: torch.Tensor,
    labels: torch.Tensor,
    class_mask: torch.Tensor,
    num_superpixels: int,
    bg_threshold: float,
    floor: float = 1e-6,
) -> torch.Tensor:
    """ASAM's unary [B, 1 + C, K] (spl.ops._cam_unary): per superpixel, the mean log-probability of
    [background, classes] with p = [t, cam_c for present c] / sum, floored at ``floor``; 0 for absent
    classes and empty superpixels. ``cam`` non-negative."""
    t = bg_threshold
    fg = cam * class_mask[:, :, None, None]
    prob = torch.cat([torch.full_like(cam[:, :1], t), fg], 1)
    prob = prob / prob.sum(1, keepdim=True)
    pooled = superpixel_pool(torch.log(prob.clamp_min(floor)), labels, num_superpixels).float()
    allowed = torch.cat([class_mask.new_ones(cam.shape[0], 1), class_mask], 1)
    return pooled * allowed[:, :, None]


def _transition_matrix(indptr, indices, a, N, device):
    """T = D^-1 (A + I) as a torch.sparse CSR matrix (rows sorted)."""
    rows = torch.repeat_interleave(torch.arange(N, device=device), indptr.diff())
    degree = torch.ones(N, device=device, dtype=a.dtype).index_add(0, rows, a)
    r = torch.cat([rows, torch.arange(N, device=device)])
    c = torch.cat([indices, torch.arange(N, device=device)])
    v = torch.cat([a / degree[rows], 1.0 / degree])
    order = torch.argsort(r * N + c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_coo_tensor(
            torch.stack([r[order], c[order]]), v[order], (N, N), check_invariants=False
        ).to_sparse_csr()


def _walk(T, x, iters: int, alpha: float):
    s = x
    for _ in range(iters):
        s = alpha * (T @ s) + (1 - alpha) * x
    return s


def asam_refine(
    image: torch.Tensor,
    cam: torch.Tensor,
    labels: torch.Tensor,
    class_mask: torch.Tensor,
    *,
    mode: str = "meanfield",
    thresholds: Sequence[float] = None,
    diffuse_iters: int = 10,
    diffuse_mix: float = 0.0,
    iters: int = 20,
    steps: int = 5,
    alpha: float = 1.0,
    weight: float = 10.0,
    sigma_c: float = 5.0,
    beta: float = 1.0,
    core: float = 0.9,
    floor: float = 1e-6,
):
    """The ASAM pipeline of ``spl.asam_refine`` in plain PyTorch, with every class as a channel (no
    slots) and each background threshold's mean field run on its own: reference pooling and adjacency,
    ``torch.sparse`` CSR products for the walks, then each node's threshold of turning to background.
    ``cam`` at the image's size, superpixels given, hops = 1, no deep features, plain unpooling."""
    B, C, H, W = cam.shape
    device = cam.device
    counts = labels.flatten(1).amax(1) + 1
    k_max = int(counts.max())
    valid_node = torch.arange(k_max, device=device)[None, :] < counts[:, None]
    nodes = lambda per_image: per_image.permute(0, 2, 1)[valid_node]  # noqa: E731
    image_of_node = torch.arange(B, device=device)[:, None].expand(B, k_max)[valid_node]
    mean_rgb = nodes(superpixel_pool(image.float(), labels, k_max))
    if image.dtype == torch.uint8:
        mean_rgb = mean_rgb / 255.0
    lab = rgb_to_lab(mean_rgb.double().T[None, :, :, None])[0, :, :, 0].T.float()
    cam = cam.float().clamp_min(0) * class_mask[:, :, None, None]
    pooled = nodes(superpixel_pool(cam, labels, k_max)).float()  # [N, C]
    allowed = class_mask[image_of_node]  # [N, C]
    indptr, indices, _, _ = superpixel_adjacency(labels, counts)
    N = pooled.shape[0]
    rows = torch.repeat_interleave(torch.arange(N, device=device), indptr.diff())
    a = torch.exp(-((lab[rows] - lab[indices]) ** 2).sum(1) / (2 * sigma_c**2)) ** beta
    T = _transition_matrix(indptr, indices, a, N, device)

    def image_max(x):  # [N, C] -> [N, C], the maximum over the node's image
        out = torch.stack(
            [x[image_of_node == b].amax(0) if bool((image_of_node == b).any()) else x.new_zeros(C) for b in range(B)]
        )
        return out[image_of_node]

    def diffuse(x, rounds, restart, peak=None):
        s = _walk(T, x, rounds, restart)
        return s * (image_max(x) if peak is None else peak) / image_max(s).clamp_min(1e-30)

    if mode == "diffusion":
        peak = cam.flatten(2).amax(2)[image_of_node] if cam.numel() else pooled.new_zeros(N, C)
        score = diffuse(pooled, iters, alpha, peak)
    else:
        s = (
            pooled
            if diffuse_mix == 0
            else (1 - diffuse_mix) * pooled + diffuse_mix * diffuse(pooled, diffuse_iters, 1.0)
        )
        if thresholds is None:
            from .asam import THRESHOLDS as thresholds  # spl.asam_refine's grid
        ts = list(thresholds)
        best = torch.empty(N, len(ts), device=device)
        odds = torch.empty(N, len(ts), C, device=device)
        for m, t in enumerate(ts):
            p = torch.cat([torch.full((N, 1), t, device=device), s], 1)
            unary = torch.log((p / p.sum(1, keepdim=True)).clamp_min(floor))
            unary = unary.masked_fill(~torch.cat([allowed.new_ones(N, 1), allowed], 1), float("-inf"))
            logits = unary
            for _ in range(steps):
                logits = unary + weight * _walk(T, torch.softmax(logits, 1), iters, alpha)
            odds[:, m] = logits[:, 1:] - logits[:, :1]
            best[:, m] = odds[:, m].amax(1)
        # Per node: the last grid threshold still foreground, m, and the turning threshold.
        M = len(ts)
        t = torch.tensor(ts, device=device)
        fg = best >= 0
        m = torch.where(fg, torch.arange(M, device=device), -1).amax(1)
        none, top = m < 0, m == M - 1
        m = m.clamp_min(0)
        nxt = (m + 1).clamp_max(M - 1)
        b0, b1 = best[torch.arange(N), m], best[torch.arange(N), nxt]
        crossing = t[m] + b0 / (b0 - b1) * (t[nxt] - t[m])
        turn = torch.where(
            none,
            t[0] * torch.exp(best[:, 0].clamp_max(0)),
            torch.where(top, t[m] + (1 - t[m]) * (1 - torch.exp(-b0)), crossing),
        )
        at = odds[torch.arange(N), m]  # the classes at that threshold, relative to the leader
        lead = at.masked_fill(~allowed, float("-inf")).amax(1, keepdim=True)
        score = torch.where(allowed, turn[:, None] * torch.exp(at - lead), torch.zeros_like(at))
        score = torch.where(allowed.any(1, keepdim=True), score, torch.zeros_like(score))
    if core <= 1.0:
        p = pooled.masked_fill(~allowed, -1.0)
        highest = image_max(p.clamp_min(0))
        lead, leader = p.max(1)
        is_core = torch.zeros_like(allowed)
        is_core[torch.arange(N, device=device), leader] = True
        is_core &= (lead[:, None] > 0) & (p >= core * highest)
        raised = torch.where(is_core, torch.maximum(score, p), torch.minimum(score, p.clamp_min(0)))
        score = torch.where(is_core.any(1, keepdim=True), raised, score)
    per_image = score.new_zeros(B, k_max, C)
    per_image[valid_node] = score
    return superpixel_unpool(per_image.permute(0, 2, 1), labels)
