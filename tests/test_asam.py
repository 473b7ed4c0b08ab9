"""ASAM: superpixel_adjacency and sparse_propagate against their references, gradients, CPU vs CUDA,
asam_refine and cam_to_mask behaviour and bad inputs."""

import numpy as np
import pytest
import torch

import spl
from spl import reference
from spl.ops.cam_unary import cam_unary

from conftest import collage, cpu_and_cuda, cuda_ok, needs_cuda


def random_labels(seed, B=3, H=23, W=31, ignore=True, device="cpu"):
    """Blobby label maps (nearest-neighbour upsampled noise, relabelled 0..K_b-1) with some -1 pixels;
    returns (labels [B, H, W], counts [B])."""
    g = torch.Generator().manual_seed(seed)
    maps, counts = [], []
    for b in range(B):
        k = int(torch.randint(1, 12, (1,), generator=g))
        coarse = torch.randint(0, k, (1, 1, H // 3 + 1, W // 4 + 1), generator=g).float()
        lab = torch.nn.functional.interpolate(coarse, size=(H, W), mode="nearest")[0, 0].long()
        if ignore:
            lab[torch.rand(H, W, generator=g) < 0.05] = -1
        used = torch.unique(lab[lab >= 0])
        remap = torch.full((k,), -1, dtype=torch.int64)
        remap[used] = torch.arange(len(used))
        lab = torch.where(lab >= 0, remap[lab.clamp_min(0)], lab)
        extra = int(torch.randint(0, 2, (1,), generator=g))  # sometimes a superpixel without pixels
        maps.append(lab)
        counts.append(len(used) + extra)
    return torch.stack(maps).to(device), torch.tensor(counts, device=device)


# ---------------------------------------------------------------------------------------------
# superpixel_adjacency


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_adjacency_matches_reference(device, seed):
    labels, counts = random_labels(seed, device=device)
    g = spl.superpixel_adjacency(labels, counts)
    ref = reference.superpixel_adjacency(labels, counts)
    for got, want, name in zip(g, ref, ("indptr", "indices", "border", "node_offset")):
        assert got.device.type == device and got.dtype == torch.int64, name
        torch.testing.assert_close(got, want, msg=name)
    # Properties: rows sorted without duplicates, no self loops, symmetric with equal border counts.
    rows = g.rows()
    assert bool((rows != g.indices).all())
    key = rows * g.num_nodes + g.indices
    assert bool((key[1:] > key[:-1]).all())
    back = torch.sort(g.indices * g.num_nodes + rows)
    torch.testing.assert_close(back.values, key)
    torch.testing.assert_close(g.border[back.indices], g.border)
    assert bool((g.border > 0).all())


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_adjacency_by_hand(device):
    labels = torch.tensor([[[0, 0, 1], [2, 2, 1], [2, 3, 3]]], device=device)
    g = spl.superpixel_adjacency(labels, 4)
    assert g.indptr.tolist() == [0, 2, 5, 8, 10]
    assert g.indices.tolist() == [1, 2, 0, 2, 3, 0, 1, 3, 1, 2]
    # 0-1: (0,1)-(0,2); 0-2: two vertical pairs; 1-2: (1,1)-(1,2); 1-3: (1,2)-(2,2); 2-3: two pairs.
    assert g.border.tolist() == [1, 2, 1, 1, 1, 2, 1, 2, 1, 2]
    # Two images: the second one's nodes come after the first one's.
    g2 = spl.superpixel_adjacency(torch.cat([labels, labels]), torch.tensor([4, 4], device=device))
    assert g2.node_offset.tolist() == [0, 4, 8]
    assert g2.indices[10:].tolist() == [i + 4 for i in g.indices.tolist()]


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_adjacency_edge_cases(device):
    one = spl.superpixel_adjacency(torch.zeros(1, 5, 5, dtype=torch.int64, device=device), 1)
    assert one.indptr.tolist() == [0, 0] and one.num_edges == 0
    empty = spl.superpixel_adjacency(torch.zeros(0, 5, 5, dtype=torch.int64, device=device), 3)
    assert empty.indptr.tolist() == [0] and empty.node_offset.tolist() == [0]
    ignored = spl.superpixel_adjacency(torch.full((2, 3, 3), -1, dtype=torch.int64, device=device), 2)
    assert ignored.indptr.tolist() == [0] * 5 and ignored.num_edges == 0


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_adjacency_of_a_label_touching_thousands(device):
    # One label around 2,500 one-pixel labels (a row of 2,500 distinct neighbours: the CPU kernel
    # sorts long rows differently from short ones), beside ordinary blobs.
    labels = torch.zeros(1, 101, 101, dtype=torch.int64)
    labels[0, 1::2, 1::2] = torch.arange(1, 2501).view(50, 50)
    blobs, k = random_labels(7, B=1, H=101, W=101, ignore=True)
    labels = torch.cat([labels, torch.where(blobs >= 0, blobs + 2501, blobs)], 0).to(device)
    counts = torch.tensor([2501, 2501 + int(k[0])], device=device)
    g = spl.superpixel_adjacency(labels, counts)
    ref = reference.superpixel_adjacency(labels, counts)
    for got, want, name in zip(g, ref, ("indptr", "indices", "border", "node_offset")):
        torch.testing.assert_close(got, want, msg=name)
    assert int(g.indptr[1]) == 2500 and g.border[:2500].tolist() == [4] * 2500


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_adjacency_bad_inputs(device):
    labels, counts = random_labels(5, device=device)
    with pytest.raises(ValueError, match="labels of image"):
        spl.superpixel_adjacency(labels, labels.flatten(1).amax(1))  # the largest label is out of range
    with pytest.raises(ValueError, match=r"labels of image"):
        spl.superpixel_adjacency(torch.full_like(labels, -2), counts)
    with pytest.raises(TypeError, match="int64"):
        spl.superpixel_adjacency(labels.float(), counts)
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        spl.superpixel_adjacency(labels[0], counts)
    with pytest.raises(ValueError, match="num_superpixels"):
        spl.superpixel_adjacency(labels, counts[:2])
    with pytest.raises(ValueError, match="num_superpixels"):
        spl.superpixel_adjacency(labels, -1)


# ---------------------------------------------------------------------------------------------
# sparse_propagate


def random_graph(seed, device, dtype=torch.float64, C=4):
    labels, counts = random_labels(seed, device=device)
    g = spl.superpixel_adjacency(labels, counts)
    gen = torch.Generator().manual_seed(seed + 100)
    w = torch.rand(g.num_edges, generator=gen, dtype=dtype).to(device)
    x = torch.randn(g.num_nodes, C, generator=gen, dtype=dtype).to(device)
    return g, w, x


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("iters,alpha", [(0, 1.0), (1, 1.0), (7, 1.0), (12, 0.7), (5, 0.0)])
def test_propagate_matches_dense_reference(device, dtype, iters, alpha):
    seed = int(torch.randint(0, 10**6, (1,)))
    g, w, x = random_graph(seed, device, dtype)
    out = spl.sparse_propagate(g, w, x, iters, alpha)
    ref = reference.sparse_propagate(g.indptr, g.indices, w.double(), x.double(), iters, alpha)
    assert out.dtype == dtype and out.shape == x.shape
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.double(), ref, **tol, msg=f"seed {seed}")


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("C", [1, 3, 4, 5, 7, 8, 12, 16, 21, 33, 42, 63, 70])
def test_propagate_channel_counts(device, dtype, C):
    # The CPU kernel blocks channels by vector widths (32, 16, 8, 4 floats, then one by one): every
    # count goes through a different mix of blocks. Each channel's result must match the reference
    # and be bit-identical to propagating that channel alone (the blocking never changes the order
    # in which an element's terms are added).
    seed = int(torch.randint(0, 10**6, (1,)))
    g, w, x = random_graph(seed, device, dtype, C=C)
    out = spl.sparse_propagate(g, w, x, 6, 0.8)
    ref = reference.sparse_propagate(g.indptr, g.indices, w.double(), x.double(), 6, 0.8)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.double(), ref, **tol, msg=f"seed {seed}")
    for c in {0, C // 2, C - 1}:
        alone = spl.sparse_propagate(g, w, x[:, c : c + 1].contiguous(), 6, 0.8)
        assert torch.equal(alone[:, 0], out[:, c]), f"channel {c} of {C}, seed {seed}"


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_propagate_gradcheck(device):
    g, w, x = random_graph(7, device, C=3)
    w.requires_grad_(True)
    x.requires_grad_(True)
    for iters, alpha in [(3, 0.8), (1, 1.0)]:
        assert torch.autograd.gradcheck(lambda w, x: spl.sparse_propagate(g, w, x, iters, alpha), (w, x))
    # The gradient of a walk that conserves mass: sum over nodes of T s equals sum of s per column
    # only for symmetric T; here just check that the gradient of the dense reference matches.
    out = spl.sparse_propagate(g, w, x, 4, 0.9)
    grad = torch.randn_like(out)
    gw, gx = torch.autograd.grad(out, (w, x), grad)
    wr, xr = w.detach().clone().requires_grad_(True), x.detach().clone().requires_grad_(True)
    ref = reference.sparse_propagate(g.indptr, g.indices, wr, xr, 4, 0.9)
    rw, rx = torch.autograd.grad(ref, (wr, xr), grad)
    torch.testing.assert_close(gw, rw)
    torch.testing.assert_close(gx, rx)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_propagate_opcheck(device):
    g, w, x = random_graph(3, device, dtype=torch.float32)
    from spl.ops.sparse_propagate import transition as _transition

    ev, sv = _transition(g, w, 1.0)
    torch.library.opcheck(torch.ops.spl.sparse_propagate, (g.indptr, g.indices, g.node_offset, ev, sv, x, 5, 0.9))
    labels, counts = random_labels(3, device=device)
    offset = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    torch.library.opcheck(
        torch.ops.spl.superpixel_adjacency,
        (labels, offset),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )


@needs_cuda
def test_propagate_cpu_and_cuda_agree():
    g, w, x = random_graph(11, "cpu", dtype=torch.float32, C=21)
    gc = spl.Graph(*(t.cuda() for t in g))
    # Given the same transition values, the op computes the same bits on both devices (same order
    # of operations, no fused multiply-add on either).
    from spl.ops.sparse_propagate import transition as _transition

    ev, sv = _transition(g, w, 1.0)
    args = (g.indptr, g.indices, g.node_offset, ev, sv, x)
    out_cpu = torch.ops.spl.sparse_propagate(*args, 40, 0.95)
    out_gpu = torch.ops.spl.sparse_propagate(*(t.cuda() for t in args), 40, 0.95)
    assert torch.equal(out_cpu, out_gpu.cpu())
    # The row sums of the transition come from torch's segment_reduce, whose order differs by device.
    torch.testing.assert_close(
        spl.sparse_propagate(gc, w.cuda(), x.cuda(), 40, 0.95).cpu(),
        spl.sparse_propagate(g, w, x, 40, 0.95),
        rtol=1e-5,
        atol=1e-6,
    )
    w.requires_grad_(True)
    x.requires_grad_(True)
    grads_cpu = torch.autograd.grad(spl.sparse_propagate(g, w, x, 9, 0.9).square().sum(), (w, x))
    wc, xc = w.detach().cuda().requires_grad_(True), x.detach().cuda().requires_grad_(True)
    grads_gpu = torch.autograd.grad(spl.sparse_propagate(gc, wc, xc, 9, 0.9).square().sum(), (wc, xc))
    # Gradients sum over edges and rounds in a device-specific order: float32 rounding, not bits.
    for a, b in zip(grads_cpu, grads_gpu):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_propagate_is_deterministic(device):
    g, w, x = random_graph(13, device, dtype=torch.float32, C=21)
    w.requires_grad_(True)
    runs = []
    for _ in range(2):
        out = spl.sparse_propagate(g, w, x, 20, 0.9)
        runs.append((out, torch.autograd.grad(out.sum(), w)[0]))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_propagate_bad_inputs(device):
    g, w, x = random_graph(17, device, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"weight must have shape \[E\]"):
        spl.sparse_propagate(g, w[:-1], x, 3)
    with pytest.raises(ValueError, match="finite and >= 0"):
        spl.sparse_propagate(g, -w, x, 3)
    with pytest.raises(ValueError, match="finite and >= 0"):
        spl.sparse_propagate(g, torch.full_like(w, float("nan")), x, 3)
    with pytest.raises(ValueError, match=r"x must have shape \[N, C\]"):
        spl.sparse_propagate(g, w, x[1:], 3)
    with pytest.raises(ValueError, match="alpha"):
        spl.sparse_propagate(g, w, x, 3, 1.5)
    with pytest.raises(ValueError, match="iters"):
        spl.sparse_propagate(g, w, x, -1)
    with pytest.raises(TypeError, match="Graph"):
        spl.sparse_propagate(tuple(g), w, x, 3)
    with pytest.raises(TypeError, match="float16, bfloat16, float32 or float64"):
        spl.sparse_propagate(g, w, x.long(), 3)
    # An edge that leaves its image, and an asymmetric structure (checked by the backward).
    bad_indices = g.indices.clone()
    first = int(g.indptr[int(g.node_offset[1]) - 1]) if int(g.node_offset[1]) > 0 else 0
    bad_indices[:] = g.num_nodes - 1 - bad_indices  # mirrors nodes across images
    bad = spl.Graph(g.indptr, bad_indices, g.border, g.node_offset)
    if g.num_edges and g.node_offset.shape[0] > 2:
        with pytest.raises(ValueError, match="valid batch CSR"):
            spl.sparse_propagate(bad, w, x, 2)
    del first
    one_way = spl.Graph(
        torch.tensor([0, 1, 1], device=device),
        torch.tensor([1], device=device),
        torch.tensor([1], device=device),
        torch.tensor([0, 2], device=device),
    )
    wx = torch.ones(1, device=device, requires_grad=True)
    out = spl.sparse_propagate(one_way, wx, torch.ones(2, 1, device=device), 2)
    with pytest.raises(ValueError, match="symmetric"):
        out.sum().backward()


# ---------------------------------------------------------------------------------------------
# _cam_unary (ASAM's unary, pooled in one pass over the CAM)


def random_cam_case(seed, device, dtype=torch.float32, B=3, C=5, H=23, W=31):
    labels, counts = random_labels(seed, B, H, W, device=device)
    g = torch.Generator().manual_seed(seed + 200)
    cam = torch.rand(B, C, H, W, generator=g, dtype=dtype) * torch.rand(B, C, 1, 1, generator=g, dtype=dtype)
    cam[torch.rand(cam.shape, generator=g) < 0.3] = 0  # exact zeros: the floor decides there
    present = torch.rand(B, C, generator=g) < 0.5
    present[0] = False  # an image without any present class: background only
    return cam.to(device), labels, int(counts.max()), present.to(device)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cam_unary_matches_reference(device, dtype, seed):
    cam, labels, K, present = random_cam_case(seed, device, dtype)
    for t, floor in ((0.15, 1e-6), (0.4, 1e-2)):
        out = cam_unary(cam, labels, present, K + 1, t, floor)  # K + 1: an empty superpixel
        # The reference in float64: its float32 path rounds differently from run to run (torch's
        # vectorised reductions), by up to 1e-5 here.
        want = reference.cam_unary(cam.double(), labels, present, K + 1, t, floor).float()
        assert out.dtype == torch.float32 and out.shape == (cam.shape[0], cam.shape[1] + 1, K + 1)
        torch.testing.assert_close(out, want, atol=2e-6, rtol=1e-6)
        # Absent classes and empty superpixels are 0; every other value is a log-probability.
        assert bool((out[:, 1:][~present] == 0).all()) and bool((out[..., K] == 0).all())
        assert bool((out <= 1e-6).all()) and bool((out >= np.log(floor) - 1e-5).all())


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_cam_unary_is_deterministic_and_independent_of_threads(device):
    cam, labels, K, present = random_cam_case(7, device, B=4, H=64, W=80)
    first = cam_unary(cam, labels, present, K, 0.15, 1e-6)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = cam_unary(cam, labels, present, K, 0.15, 1e-6)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(first, single)
    # Each image on its own gives the same bits as in the batch.
    for b in range(cam.shape[0]):
        assert torch.equal(
            cam_unary(cam[b : b + 1], labels[b : b + 1], present[b : b + 1], K, 0.15, 1e-6), first[b : b + 1]
        )


@needs_cuda
def test_cam_unary_cpu_and_cuda_agree():
    cam, labels, K, present = random_cam_case(3, "cpu", B=4, H=64, W=80)
    cpu = cam_unary(cam, labels, present, K, 0.15, 1e-6)
    gpu = cam_unary(cam.cuda(), labels.cuda(), present.cuda(), K, 0.15, 1e-6)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-6, rtol=1e-6)  # logf differs in the last bit at most


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_cam_unary_edge_cases(device):
    cam, labels, K, present = random_cam_case(1, device)
    assert cam_unary(cam[:0], labels[:0], present[:0], K, 0.15, 1e-6).shape == (0, 6, K)
    assert cam_unary(cam, labels, present, 0, 0.15, 1e-6).shape == (3, 6, 0)
    ignored = cam_unary(cam, torch.full_like(labels, -1), present, K, 0.15, 1e-6)
    assert bool((ignored == 0).all())
    # One pixel, one present class: exact values.
    one = torch.tensor([[[[0.45]]]], device=device)
    out = cam_unary(
        one,
        torch.zeros(1, 1, 1, dtype=torch.int64, device=device),
        torch.ones(1, 1, dtype=torch.bool, device=device),
        1,
        0.15,
        1e-6,
    )
    torch.testing.assert_close(out.flatten().cpu(), torch.tensor([np.log(0.25), np.log(0.75)], dtype=torch.float32))


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_cam_unary_gradient(device):
    """The op's float32 output against finite differences (hence the loose tolerances), and the gradient
    reaching the CAM through asam_refine."""
    g = torch.Generator().manual_seed(0)
    cam = (0.2 + torch.rand(2, 3, 5, 6, generator=g, dtype=torch.float64)).to(device).requires_grad_()
    labels = torch.randint(-1, 4, (2, 5, 6), generator=g).to(device)
    present = torch.tensor([[True, False, True], [True, True, True]], device=device)
    assert torch.autograd.gradcheck(
        lambda c: cam_unary(c, labels, present, 5, 0.15, 1e-6).double(), (cam,), eps=1e-3, atol=2e-3, rtol=1e-2
    )
    img, cam2, _ = two_region_case(device, size=32)
    cam2.requires_grad_()
    spl.asam_refine(img, cam2, n_segments=20)[:, 1].sum().backward()
    assert cam2.grad is not None and bool(torch.isfinite(cam2.grad).all()) and bool((cam2.grad != 0).any())


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_cam_unary_opcheck(device):
    cam, labels, K, present = random_cam_case(2, device)
    torch.library.opcheck(torch.ops.spl._cam_unary.default, (cam, labels, present, K, 0.15, 1e-6))


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_cam_unary_bad_inputs(device):
    cam, labels, K, present = random_cam_case(4, device)
    unary = cam_unary
    with pytest.raises(TypeError, match="cam must be float32 or float64"):
        unary(cam.half(), labels, present, K, 0.15, 1e-6)
    with pytest.raises(ValueError, match=r"cam must have shape \[B, C, H, W\]"):
        unary(cam[0], labels, present, K, 0.15, 1e-6)
    with pytest.raises(ValueError, match="labels must have shape"):
        unary(cam, labels[:, 1:], present, K, 0.15, 1e-6)
    with pytest.raises(TypeError, match="labels must be an int64"):
        unary(cam, labels.int(), present, K, 0.15, 1e-6)
    with pytest.raises(TypeError, match="class_mask must be a bool"):
        unary(cam, labels, present.long(), K, 0.15, 1e-6)
    with pytest.raises(ValueError, match="class_mask must have shape"):
        unary(cam, labels, present[:, 1:], K, 0.15, 1e-6)
    with pytest.raises(ValueError, match="num_superpixels"):
        unary(cam, labels, present, -1, 0.15, 1e-6)
    with pytest.raises(ValueError, match="bg_threshold"):
        unary(cam, labels, present, K, 0.0, 1e-6)
    with pytest.raises(ValueError, match="floor"):
        unary(cam, labels, present, K, 0.15, 1.0)
    if device == "cuda":
        with pytest.raises(ValueError, match="one device"):
            unary(cam, labels.cpu(), present, K, 0.15, 1e-6)


# ---------------------------------------------------------------------------------------------
# asam_refine and cam_to_mask


def two_region_case(device="cpu", size=64):
    """An image of two flat colours split by a vertical edge at x = 28 (plus noise), and a CAM for
    class 1 that is a blurry blob centred in the left region: it spills across the edge and misses the
    left region's corners. Ground truth: class 1 (label 2) left of the edge."""
    g = torch.Generator().manual_seed(0)
    img = torch.zeros(1, 3, size, size)
    img[:, :, :, :28] = torch.tensor([0.8, 0.2, 0.2])[:, None, None]
    img[:, :, :, 28:] = torch.tensor([0.2, 0.3, 0.8])[:, None, None]
    img = (img + 0.03 * torch.randn(img.shape, generator=g)).clamp(0, 1)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    blob = torch.exp(-((xx - 14) ** 2 + (yy - 32) ** 2) / (2 * 14.0**2))
    cam = torch.zeros(1, 3, size, size)
    cam[0, 1] = blob
    truth = torch.zeros(size, size, dtype=torch.int64)
    truth[:, :28] = 2
    return img.to(device), cam.to(device), truth


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_refine_snaps_to_the_colour_edge(device):
    img, cam, truth = two_region_case(device)
    raw = spl.cam_to_mask(cam, 0.3)[0].cpu()
    out = spl.asam_refine(img, cam, bg_threshold=0.3, n_segments=100)
    assert out.shape == cam.shape and out.dtype == torch.float32
    refined = spl.cam_to_mask(out, 0.3)[0].cpu()
    acc_raw = (raw == truth).float().mean().item()
    acc_refined = (refined == truth).float().mean().item()
    assert acc_refined > 0.99 and acc_raw < 0.8, (acc_raw, acc_refined)
    assert torch.equal(out[:, [0, 2]], torch.zeros_like(out[:, [0, 2]]))  # absent classes stay 0


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_refine_options_and_determinism(device):
    img, cam, _ = two_region_case(device)
    base = spl.asam_refine(img, cam, n_segments=64)
    assert torch.equal(base, spl.asam_refine(img, cam, n_segments=64))
    small = torch.nn.functional.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False)
    assert spl.asam_refine(img, small, n_segments=64).shape == cam.shape
    feats = torch.randn(1, 8, 16, 16, device=device)
    for kw in (
        dict(hops=2),
        dict(features=feats, sigma_f=2.0),
        dict(beta=2.0, alpha=0.9),
        dict(steps=0),
        dict(iters=0),
        dict(mode="diffusion"),
        dict(diffuse_mix=0.5, diffuse_iters=3),
        dict(edge_sigma=0.1),
        dict(thresholds=(0.1, 0.5)),
        dict(bg_threshold=0.2),
        dict(core=0.5),
        dict(core=2.0),
    ):
        out = spl.asam_refine(img, cam, n_segments=64, **kw)
        assert out.shape == cam.shape and bool(torch.isfinite(out).all()), kw
        assert float(out.min()) >= 0 and float(out.max()) <= 1, kw
    out, labels = spl.asam_refine(img, cam, n_segments=64, return_labels=True)
    assert labels.shape == (1, 64, 64) and torch.equal(out, spl.asam_refine(img, cam, labels))


def test_refine_class_mask_excludes_absent_classes():
    img, cam, _ = two_region_case()
    cam[0, 2] = 0.9  # a strong score everywhere for class 2, absent from the image-level label
    mask = torch.tensor([[False, True, False]])
    out = spl.asam_refine(img, cam, class_mask=mask, n_segments=64)
    assert torch.equal(out[0, 2], torch.zeros_like(out[0, 2])) and torch.equal(out[0, 0], torch.zeros_like(out[0, 0]))
    labels = spl.cam_to_mask(out, 0.15, mask)
    assert set(torch.unique(labels).tolist()) <= {0, 2}
    assert 3 in torch.unique(spl.cam_to_mask(cam, 0.15)).tolist()  # without the mask class 2 wins


def test_refine_numpy_in_numpy_out():
    img, cam, _ = two_region_case()
    img_np = (img[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    out = spl.asam_refine(img_np, cam[0].numpy(), n_segments=64)
    assert isinstance(out, np.ndarray) and out.shape == (3, 64, 64) and out.dtype == np.float32
    mask = spl.cam_to_mask(out, 0.15)
    assert isinstance(mask, np.ndarray) and mask.shape == (64, 64) and mask.dtype == np.int64
    tensor_out = spl.asam_refine(torch.from_numpy(img_np).permute(2, 0, 1)[None], cam, n_segments=64)
    np.testing.assert_array_equal(out, tensor_out[0].numpy())


def test_refine_numpy_read_only_and_big_endian():
    # np.asarray of a PIL image is read-only (torch warns on such arrays), np.load may give big-endian
    # data: the same result, no warning.
    img, cam, _ = two_region_case()
    img_np = (img[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    want = spl.asam_refine(img_np, cam[0].numpy(), n_segments=64)
    img_np.flags.writeable = False
    cam_be = cam[0].numpy().astype(">f4")
    cam_be.flags.writeable = False
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = spl.asam_refine(img_np, cam_be, n_segments=64)
    np.testing.assert_array_equal(got, want)


@needs_cuda
def test_refine_cpu_and_cuda_agree():
    pairs = [collage(seed, size=96) for seed in range(3)]
    img = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).contiguous()
    truth = torch.from_numpy(np.stack([p[1] for p in pairs]))
    cam = torch.nn.functional.one_hot(truth, 7).permute(0, 3, 1, 2).float()[:, 1:]
    cam = torch.nn.functional.avg_pool2d(cam, 9, 1, 4)  # blurred
    labels = spl.slic(img, 200)
    out_cpu = spl.asam_refine(img, cam, labels)
    out_gpu = spl.asam_refine(img.cuda(), cam.cuda(), labels.cuda()).cpu()
    torch.testing.assert_close(out_gpu, out_cpu, rtol=1e-4, atol=1e-5)
    agree = (spl.cam_to_mask(out_cpu, 0.15) == spl.cam_to_mask(out_gpu, 0.15)).float().mean().item()
    assert agree > 0.999


@pytest.mark.parametrize("mode", ["meanfield", "diffusion"])
def test_refine_batch_equals_single_images(mode):
    # Several seeded CAMs: torch.softmax over the mean field's slots once differed in the last bit
    # with the batch in about 1 of 6 random batches (seed 3 among them).
    pairs = [collage(seed, size=64) for seed in range(2)]
    img = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).contiguous()
    for seed in range(12):
        cam = torch.rand(2, 4, 16, 16, generator=torch.Generator().manual_seed(seed))
        cam[1, 2] = 0  # class absent from the second image only
        batch = spl.asam_refine(img, cam, n_segments=100, mode=mode)
        for b in range(2):
            single = spl.asam_refine(img[b : b + 1], cam[b : b + 1], n_segments=100, mode=mode)
            assert torch.equal(batch[b : b + 1], single), (seed, b)
        assert torch.equal(batch[1, 2], torch.zeros_like(batch[1, 2]))


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_refine_small_calls_run_on_the_calling_thread(monkeypatch, two_threads):
    """A CPU call on at most INLINE_PIXELS pixels runs with one intra-op thread (asam.py: how
    asam_refine uses the CPU's threads), the caller's count restored afterwards, also after an error."""
    from spl import asam

    seen = []
    real = asam.propagate

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(asam, "propagate", spy)
    img = torch.from_numpy(np.stack([collage(s, size=40)[0] for s in range(2)])).permute(0, 3, 1, 2).contiguous()
    cam = torch.rand(2, 2, 10, 10)
    small = spl.asam_refine(img, cam, n_segments=40)
    assert set(seen) == {1} and torch.get_num_threads() == 2
    seen.clear()
    monkeypatch.setattr(asam, "INLINE_PIXELS", 100)  # now a large call: torch's threads
    large = spl.asam_refine(img, cam, n_segments=40)
    assert set(seen) == {2} and torch.equal(small, large)
    monkeypatch.setattr(asam, "INLINE_PIXELS", 2**18)
    cam[1, 1, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="asam_refine: cam"):
        spl.asam_refine(img, cam, n_segments=40)
    assert torch.get_num_threads() == 2


def test_cam_to_mask_by_hand():
    cam = torch.tensor([[[[0.1, 0.5], [0.3, 0.0]], [[0.2, 0.4], [0.6, 0.0]]]])
    assert spl.cam_to_mask(cam, 0.25).tolist() == [[[0, 1], [2, 0]]]
    assert spl.cam_to_mask(cam, 0.25, torch.tensor([[True, False]])).tolist() == [[[0, 1], [1, 0]]]
    with pytest.raises(ValueError, match="NaN"):
        spl.cam_to_mask(torch.full((1, 2, 2, 2), float("nan")), 0.2)
    with pytest.raises(ValueError, match="C >= 1"):
        spl.cam_to_mask(torch.zeros(1, 0, 2, 2), 0.2)
    with pytest.raises(ValueError, match="class_mask"):
        spl.cam_to_mask(cam, 0.2, torch.ones(1, 3, dtype=torch.bool))


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_refine_bad_inputs(device):
    img, cam, _ = two_region_case(device)
    with pytest.raises(ValueError, match="cam is 65x64 but the image is 64x64"):
        spl.asam_refine(img, torch.zeros(1, 3, 65, 64, device=device))
    with pytest.raises(ValueError, match="cam has 2 images but image has 1"):
        spl.asam_refine(img, cam.expand(2, -1, -1, -1))
    with pytest.raises(ValueError, match="C >= 1"):
        spl.asam_refine(img, cam[:, :0])
    nan_cam = cam.clone()
    nan_cam[0, 1, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="cam holds NaN"):
        spl.asam_refine(img, nan_cam)
    with pytest.raises(ValueError, match="cam holds NaN"):
        spl.asam_refine(img, torch.full_like(cam, float("inf")))
    with pytest.raises(TypeError, match="cam must be floating point"):
        spl.asam_refine(img, cam.long())
    labels = torch.zeros(1, 64, 64, dtype=torch.int64, device=device)
    with pytest.raises(ValueError, match="labels must be >= -1"):
        spl.asam_refine(img, cam, labels - 2)
    with pytest.raises(ValueError, match=r"labels must have shape \[B, H, W\]"):
        spl.asam_refine(img, cam, labels[:, :10])
    with pytest.raises(ValueError, match=r"image must have shape \[B, 3, H, W\]"):
        spl.asam_refine(img[:, :2], cam)
    with pytest.raises(ValueError, match="bg_threshold"):
        spl.asam_refine(img, cam, bg_threshold=0.0)
    with pytest.raises(ValueError, match="sigma_c"):
        spl.asam_refine(img, cam, sigma_c=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        spl.asam_refine(img, cam, alpha=2.0)
    with pytest.raises(TypeError, match="iters"):
        spl.asam_refine(img, cam, iters=2.5)
    with pytest.raises(ValueError, match=r"class_mask must have shape \[B, C\]"):
        spl.asam_refine(img, cam, class_mask=torch.ones(1, 5, dtype=torch.bool, device=device))
    if cuda_ok and device == "cpu":
        with pytest.raises(ValueError, match="cam is on cuda"):
            spl.asam_refine(img, cam.cuda())
    # B = 0 is an empty answer, not an error.
    assert spl.asam_refine(img[:0], cam[:0]).shape == (0, 3, 64, 64)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_expand_hops_matches_dense_reachability(device):
    from spl.asam import expand_hops

    labels, counts = random_labels(21, device=device)
    g = spl.superpixel_adjacency(labels, counts)
    N = g.num_nodes
    A = torch.zeros(N, N, dtype=torch.int64, device=device)
    A[g.rows(), g.indices] = 1
    step = A + torch.eye(N, dtype=torch.int64, device=device)
    for hops in (2, 3):
        reach = torch.linalg.matrix_power(step.double(), hops) > 0
        reach.fill_diagonal_(False)
        h = expand_hops(g, hops)
        i, j = torch.nonzero(reach, as_tuple=True)
        assert torch.equal(h.indices, j) and torch.equal(h.rows(), i)
        dense_border = torch.zeros(N, N, dtype=torch.int64, device=device)
        dense_border[g.rows(), g.indices] = g.border
        assert torch.equal(h.border, dense_border[i, j])


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_refine_matches_reference_pipeline(device):
    pairs = [collage(seed, size=80) for seed in range(2)]
    img = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).contiguous().to(device)
    truth = torch.from_numpy(np.stack([p[1] for p in pairs]))
    cam = torch.nn.functional.avg_pool2d(
        torch.nn.functional.one_hot(truth, 7).permute(0, 3, 1, 2).float()[:, 1:], 9, 1, 4
    ).to(device)
    mask = cam.flatten(2).amax(2) > 0
    labels = spl.slic(img, 150)
    names = ("mode", "diffuse_iters", "diffuse_mix", "iters", "steps", "alpha", "weight", "sigma_c", "beta", "core")
    for kw in (
        dict(),
        dict(diffuse_mix=0.5, diffuse_iters=5),
        dict(iters=7, steps=2, alpha=0.9, weight=4.0, sigma_c=9.0, beta=2.0, core=0.5),
        dict(mode="diffusion", iters=12, alpha=0.8),
    ):
        out = spl.asam_refine(img, cam, labels, class_mask=mask, **kw)
        settings = {**spl.asam.ASAM_DEFAULTS, **kw}
        ref = reference.asam_refine(
            img, cam, labels, mask, thresholds=spl.asam.THRESHOLDS, **{k: settings[k] for k in names}
        )
        torch.testing.assert_close(out, ref, rtol=2e-4, atol=1e-5)


def test_refine_negative_scores_count_as_zero():
    img, cam, _ = two_region_case()
    noisy = cam - 0.05 * (torch.arange(64.0) % 3 == 0).float()  # some negative scores
    assert bool((noisy < 0).any())
    out = spl.asam_refine(img, noisy, n_segments=100)
    assert torch.equal(out, spl.asam_refine(img, noisy.clamp_min(0), n_segments=100))


def test_refined_scores_are_the_mean_field_at_every_threshold():
    """The output contract: cam_to_mask(refined, t) is the mean field's labelling at background
    threshold t, for every t of the grid; scores in [0, 1]; the curve over t is not flat."""
    pairs = [collage(seed, size=72) for seed in range(2)]
    img = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).contiguous()
    truth = torch.from_numpy(np.stack([p[1] for p in pairs]))
    cam = (
        torch.nn.functional.avg_pool2d(
            torch.nn.functional.one_hot(truth, 7).permute(0, 3, 1, 2).float()[:, 1:], 15, 1, 7
        )
        * torch.linspace(0.3, 1.0, 6)[None, :, None, None]
    )
    mask = cam.flatten(2).amax(2) > 0
    labels = spl.slic(img, 120)
    out = spl.asam_refine(img, cam, labels, class_mask=mask)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    areas = []
    for t in spl.asam.THRESHOLDS:
        single = spl.asam_refine(img, cam, labels, class_mask=mask, bg_threshold=t)
        expected = spl.cam_to_mask(single, t, mask)
        got = spl.cam_to_mask(out, t, mask)
        # Nested masks: the mean field's foreground at t is foreground; a superpixel whose decision
        # is not monotone in t (background at t, foreground above) is foreground too. Rare.
        assert not bool(((expected > 0) & (got == 0)).any()), t
        assert ((got > 0) == (expected > 0)).float().mean() > 0.98, t
        # The class of a foreground superpixel is the one leading at its highest foreground threshold.
        both = (got > 0) & (expected > 0)
        assert not bool(both.any()) or (got[both] == expected[both]).float().mean() > 0.95, t
        areas.append(int((expected > 0).sum()))
    assert areas[0] > areas[len(areas) // 2] > areas[-1]  # foreground shrinks as t grows


def test_a_present_class_keeps_its_core():
    """A small object with a weak CAM beside a large one with a strong CAM: the mean field alone
    floods it; its confident core survives (up to its CAM score), and core > 1 turns that off."""
    img = torch.full((1, 3, 48, 48), 0.5)
    img[0, :, 16:24, 16:24] = torch.tensor([0.5, 0.5, 0.45])[:, None, None]  # nearly the same colour
    cam = torch.zeros(1, 2, 48, 48)
    cam[0, 0] = 1.0  # the large class around it
    cam[0, 0, 16:24, 16:24] = 0.3
    cam[0, 1, 16:24, 16:24] = 0.6  # the small one, weaker than the large one's peak
    labels = torch.arange(36).view(1, 6, 6).repeat_interleave(8, 1).repeat_interleave(8, 2).contiguous()
    kept = spl.asam_refine(img, cam, labels, weight=50.0)
    mask = spl.cam_to_mask(kept, 0.3)
    assert bool((mask[0, 16:24, 16:24] == 2).all())
    assert float(kept[0, 1, 20, 20]) >= 0.6 - 1e-6
    lost = spl.cam_to_mask(spl.asam_refine(img, cam, labels, weight=50.0, core=2.0), 0.3)
    assert not bool((lost == 2).any())


def test_diffusion_mode_keeps_the_cam_scale():
    img, cam, _ = two_region_case()
    out = spl.asam_refine(img, cam, mode="diffusion", n_segments=64)
    torch.testing.assert_close(out.flatten(2).amax(2), cam.flatten(2).amax(2), atol=1e-6, rtol=1e-5)


def test_refine_new_option_errors():
    img, cam, _ = two_region_case()
    with pytest.raises(ValueError, match="mode"):
        spl.asam_refine(img, cam, mode="crf")
    with pytest.raises(ValueError, match="thresholds must be increasing"):
        spl.asam_refine(img, cam, thresholds=(0.5, 0.2))
    with pytest.raises(ValueError, match="thresholds must be increasing"):
        spl.asam_refine(img, cam, thresholds=(0.5, 1.0))
    with pytest.raises(ValueError, match="not both"):
        spl.asam_refine(img, cam, thresholds=(0.5,), bg_threshold=0.2)
    with pytest.raises(ValueError, match="diffuse_mix"):
        spl.asam_refine(img, cam, diffuse_mix=1.5)
    with pytest.raises(ValueError, match="edge_sigma"):
        spl.asam_refine(img, cam, edge_sigma=0.0)
    with pytest.raises(ValueError, match="core"):
        spl.asam_refine(img, cam, core=0.0)
    with pytest.raises(ValueError, match="edge_sigma: the edge-aware step is not differentiable"):
        spl.asam_refine(img, cam.clone().requires_grad_(), edge_sigma=0.1)
    with torch.no_grad():
        assert spl.asam_refine(img, cam.clone().requires_grad_(), edge_sigma=0.1).shape == cam.shape


MALFORMED_GRAPHS = r"""
import torch, spl
g = spl.superpixel_adjacency(torch.tensor([[[0, 0, 1, 1], [2, 2, 3, 3]], [[0, 1, 1, 2], [0, 1, 2, 2]]]), 4)
gen = torch.Generator().manual_seed(0)
raised = 0
for case in range(300):
    fields = [t.clone() for t in g]
    which = case % 4
    t = fields[which]
    kind = (case // 4) % 5
    if kind == 0 and t.numel():
        t[torch.randint(t.numel(), (1,), generator=gen)] = torch.randint(-10**6, 10**6, (1,), generator=gen)
    elif kind == 1:
        fields[which] = t.flip(0)
    elif kind == 2:
        fields[which] = t[: torch.randint(t.numel() + 1, (1,), generator=gen).item()]
    elif kind == 3:
        fields[which] = t - 1
    else:
        fields[which] = torch.cat([t, t[-1:] + 3])
    try:
        graph = spl.Graph(*fields)
        spl.sparse_propagate(graph, torch.ones(graph.num_edges), torch.rand(graph.num_nodes, 3), 2)
    except (ValueError, TypeError) as e:
        assert "sparse_propagate" in str(e), e
        raised += 1
print("ok", raised)
"""


def test_malformed_graphs_raise_and_never_crash():
    """300 hand-broken graphs (an entry set to a huge or negative value, reversed, cut, shifted or
    extended, in each field): every one raises a ValueError / TypeError naming the op, in a child
    process so that a crash would show as one (a malformed indptr once reached a segfault)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", MALFORMED_GRAPHS], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok"), result.stdout
