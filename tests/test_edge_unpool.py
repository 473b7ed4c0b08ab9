"""spl.edge_aware_unpool: against its reference, edge cases, bad inputs, CPU = CUDA."""

import pytest
import torch

import spl
from spl import reference

from conftest import cpu_and_cuda, needs_cuda

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
TOL = {torch.float32: 1e-5, torch.float64: 1e-6, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def random_case(seed, B=2, C=3, H=11, W=13, K=7, D=3, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(-1, K, (B, H, W), generator=g)
    f = torch.randn(B, C, K, generator=g, dtype=torch.float64).to(dtype)
    guide = torch.rand(B, D, H, W, generator=g)
    return f.to(device), labels.to(device), guide.to(device)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("radius", [0, 1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference(device, dtype, radius, seed):
    f, labels, guide = random_case(seed + 10 * radius, device=device, dtype=dtype)
    out = spl.edge_aware_unpool(f, labels, guide, 0.3, radius)
    assert out.dtype == dtype and out.shape == (2, 3, 11, 13) and out.device == f.device
    means = spl.superpixel_pool(guide.cpu(), labels.cpu(), 7, "mean")
    expected = reference.edge_aware_unpool(f.cpu().double(), labels.cpu(), guide.cpu(), means, 0.3, radius)
    tol = TOL[dtype]
    torch.testing.assert_close(out.cpu().double(), expected, rtol=tol, atol=tol)
    assert bool((out.cpu()[labels.cpu()[:, None].expand_as(out) < 0] == 0).all())  # -1: 0


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_inside_a_superpixel_it_is_unpool_and_radius_0_is_unpool(device):
    f, labels, guide = random_case(3, device=device)
    assert torch.equal(spl.edge_aware_unpool(f, labels, guide, 0.5, 0), spl.superpixel_unpool(f, labels))
    blocks = torch.arange(4, device=device).view(1, 2, 2).repeat_interleave(6, 1).repeat_interleave(6, 2)
    vals = torch.randn(1, 2, 4, device=device)
    out = spl.edge_aware_unpool(vals, blocks.contiguous(), torch.rand(1, 3, 12, 12, device=device), 0.2, 1)
    plain = spl.superpixel_unpool(vals, blocks.contiguous())
    interior = torch.ones(12, 12, dtype=torch.bool)
    interior[5:7, :] = False
    interior[:, 5:7] = False
    assert torch.equal(out[..., interior], plain[..., interior])


def test_the_pixels_colour_decides_at_a_boundary():
    # Two superpixels split at column 4 of 8, colours 0 and 1; the pixels next to the split are
    # coloured like the OTHER side: they take (almost) the other side's value.
    labels = torch.zeros(1, 4, 8, dtype=torch.int64)
    labels[..., 4:] = 1
    guide = torch.zeros(1, 1, 4, 8)
    guide[..., 4:] = 1.0
    guide[..., 3] = 1.0  # left superpixel, right colour
    means = torch.tensor([[[0.0, 1.0]]])
    out = spl.edge_aware_unpool(torch.tensor([[[0.0, 1.0]]]), labels, guide, 0.1, 1, guide_means=means)
    assert bool((out[..., 3] > 0.99).all()) and bool((out[..., :3] == 0).all()) and bool((out[..., 4:] == 1).all())
    # A large sigma blends the two evenly (weights equal).
    out = spl.edge_aware_unpool(torch.tensor([[[0.0, 1.0]]]), labels, guide, 1e6, 1, guide_means=means)
    torch.testing.assert_close(out[..., 3], torch.full((1, 1, 4), 0.5))


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_empty_and_deterministic(device):
    f, labels, guide = random_case(4, device=device)
    assert spl.edge_aware_unpool(f[:0], labels[:0], guide[:0], 0.3).shape == (0, 3, 11, 13)
    assert spl.edge_aware_unpool(f[:, :0], labels, guide, 0.3).shape == (2, 0, 11, 13)
    a = spl.edge_aware_unpool(f, labels, guide, 0.3)
    torch.set_num_threads(1)
    try:
        b = spl.edge_aware_unpool(f, labels, guide, 0.3)
    finally:
        torch.set_num_threads(2)
    assert torch.equal(a, b)
    assert torch.equal(a[1:], spl.edge_aware_unpool(f[1:], labels[1:], guide[1:], 0.3))  # batch-invariant


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_bad_inputs(device):
    f, labels, guide = random_case(5, device=device)
    with pytest.raises(ValueError, match=r"labels must be in \[-1, num_superpixels\)"):
        spl.edge_aware_unpool(f, labels.clamp_min(0) + 7, guide, 0.3)
    with pytest.raises(ValueError, match="sigma"):
        spl.edge_aware_unpool(f, labels, guide, 0.0)
    with pytest.raises(ValueError, match="sigma"):
        spl.edge_aware_unpool(f, labels, guide, float("nan"))
    with pytest.raises(ValueError, match="radius"):
        spl.edge_aware_unpool(f, labels, guide, 0.3, radius=4)
    with pytest.raises(ValueError, match=r"guide must have shape"):
        spl.edge_aware_unpool(f, labels, guide[..., :5], 0.3)
    with pytest.raises(TypeError, match="features must be float"):
        spl.edge_aware_unpool(f.long(), labels, guide, 0.3)
    with pytest.raises(TypeError, match="labels must be an int64"):
        spl.edge_aware_unpool(f, labels.int(), guide, 0.3)
    bad = guide.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="guide holds NaN"):
        spl.edge_aware_unpool(f, labels, bad, 0.3)
    with pytest.raises(ValueError, match="guide_means must be"):
        spl.edge_aware_unpool(f, labels, guide, 0.3, guide_means=torch.zeros(2, 3, 6, device=device))
    with pytest.raises(ValueError, match="not differentiable"):
        spl.edge_aware_unpool(f.requires_grad_(), labels, guide, 0.3)


def test_opcheck():
    f, labels, guide = random_case(6)
    means = spl.superpixel_pool(guide, labels, 7, "mean")
    torch.library.opcheck(
        torch.ops.spl.edge_aware_unpool,
        (f, labels, guide, means, 0.3, 1),
        test_utils=("test_schema", "test_faketensor"),
    )


@needs_cuda
def test_cpu_and_cuda_agree():
    f, labels, guide = random_case(7, B=3, H=64, W=80, K=40)
    out = spl.edge_aware_unpool(f, labels, guide, 0.2, 2)
    torch.testing.assert_close(
        spl.edge_aware_unpool(f.cuda(), labels.cuda(), guide.cuda(), 0.2, 2).cpu(), out, rtol=1e-5, atol=1e-6
    )
