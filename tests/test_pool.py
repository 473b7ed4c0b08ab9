import pytest
import torch

import spl
from spl import reference

from conftest import cpu_and_cuda, needs_cuda

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
TOL = {torch.float32: 1e-5, torch.float64: 1e-12, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def random_case(seed, B=2, C=3, H=7, W=9, K=6, device="cpu", dtype=torch.float32):
    """Random features and labels with -1 pixels and at least one empty superpixel (K - 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64).to(dtype)
    labels = torch.randint(-1, max(K - 1, 1), (B, H, W), generator=g)
    return x.to(device), labels.to(device)


def assert_close(actual, expected, dtype):
    tol = TOL[dtype]
    torch.testing.assert_close(actual.cpu().double(), expected.cpu().double(), rtol=tol, atol=tol)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("seed", [0, 1])
def test_pool_matches_reference(device, dtype, reduce, seed):
    x, labels = random_case(seed, device=device, dtype=dtype)
    out = spl.superpixel_pool(x, labels, 6, reduce)
    assert out.dtype == dtype and out.shape == (2, 3, 6) and out.device == x.device
    assert_close(out, reference.superpixel_pool(x.cpu(), labels.cpu(), 6, reduce), dtype)
    assert bool((out[..., 5] == 0).all())  # the empty superpixel


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("dtype", DTYPES)
def test_unpool_matches_reference(device, dtype):
    _, labels = random_case(3, device=device)
    f = torch.randn(2, 3, 6, dtype=torch.float64).to(dtype).to(device)
    out = spl.superpixel_unpool(f, labels)
    assert out.shape == (2, 3, 7, 9) and out.dtype == dtype
    assert torch.equal(out.cpu(), reference.superpixel_unpool(f.cpu(), labels.cpu()))
    assert bool((out.permute(1, 0, 2, 3)[:, labels < 0] == 0).all())


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("shape", [(0, 2, 4, 4, 3), (1, 1, 1, 1, 1), (2, 4, 5, 5, 1), (1, 2, 3, 3, 0)])
def test_edge_shapes(device, shape):
    B, C, H, W, K = shape
    x = torch.randn(B, C, H, W, device=device)
    labels = (
        torch.zeros(B, H, W, dtype=torch.long, device=device)
        if K > 0
        else torch.full((B, H, W), -1, dtype=torch.long, device=device)
    )
    for reduce in ("sum", "mean", "max"):
        out = spl.superpixel_pool(x, labels, K, reduce)
        assert out.shape == (B, C, K)
        assert_close(out, reference.superpixel_pool(x.cpu(), labels.cpu(), K, reduce), torch.float32)
    f = torch.randn(B, C, K, device=device)
    assert spl.superpixel_unpool(f, labels).shape == (B, C, H, W)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_max_ties_and_nan(device):
    x = torch.tensor([[[[1.0, 3.0, 3.0, 2.0]]]], device=device, requires_grad=True)
    labels = torch.zeros(1, 1, 4, dtype=torch.long, device=device)
    out = spl.superpixel_pool(x, labels, 1, "max")
    out.sum().backward()
    assert out.item() == 3.0 and x.grad.flatten().tolist() == [0.0, 1.0, 0.0, 0.0]  # the first maximum
    nan = torch.tensor([[[[1.0, float("nan"), 5.0]]]], device=device)
    assert torch.isnan(spl.superpixel_pool(nan, labels[..., :3], 1, "max")).all()
    assert torch.isnan(spl.superpixel_pool(nan, labels[..., :3], 1, "sum")).all()


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_gradients(device):
    x, labels = random_case(5, device=device, dtype=torch.float64)
    x.requires_grad_(True)
    for reduce in ("sum", "mean", "max"):
        assert torch.autograd.gradcheck(lambda t: spl.superpixel_pool(t, labels, 6, reduce), (x,))
        assert torch.autograd.gradgradcheck(lambda t: spl.superpixel_pool(t, labels, 6, reduce), (x,))
    f = torch.randn(2, 3, 6, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: spl.superpixel_unpool(t, labels), (f,))
    assert torch.autograd.gradgradcheck(lambda t: spl.superpixel_unpool(t, labels), (f,))


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_gradients_match_reference(device, reduce):
    x, labels = random_case(6, device=device)
    x1 = x.clone().requires_grad_(True)
    x2 = x.cpu().clone().requires_grad_(True)
    g = torch.randn(2, 3, 6)
    spl.superpixel_pool(x1, labels, 6, reduce).backward(g.to(device))
    reference.superpixel_pool(x2, labels.cpu(), 6, reduce).backward(g)
    torch.testing.assert_close(x1.grad.cpu(), x2.grad)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_backward_writes_every_element(device, reduce):
    # The sum/mean backward allocates its output uninitialised; a block freed just before, full of
    # NaN, is what the allocator usually hands it, so a pixel left unwritten (label -1) shows.
    x, labels = random_case(7, device=device)
    _, aux = torch.ops.spl.superpixel_pool(x, labels, 6, reduce)
    g = torch.randn(2, 3, 6).to(device)
    want = torch.ops.spl._superpixel_pool_backward(g, labels, aux, 7, 9, reduce)
    for _ in range(3):
        poison = torch.full_like(x, float("nan"))
        del poison
        grad_x = torch.ops.spl._superpixel_pool_backward(g, labels, aux, 7, 9, reduce)
        assert not grad_x.isnan().any()
        assert (grad_x[(labels < 0)[:, None].expand_as(grad_x)] == 0).all()
        assert torch.equal(grad_x, want)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_pool_is_deterministic(device):
    x, labels = random_case(7, B=3, C=5, H=64, W=48, K=40, device=device)
    first = spl.superpixel_pool(x, labels, 40, "sum")
    for _ in range(3):
        assert torch.equal(spl.superpixel_pool(x, labels, 40, "sum"), first)


@needs_cuda
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_cpu_and_cuda_agree(reduce):
    x, labels = random_case(8, B=2, C=4, H=40, W=50, K=30)
    cpu = spl.superpixel_pool(x, labels, 30, reduce)
    cuda = spl.superpixel_pool(x.cuda(), labels.cuda(), 30, reduce).cpu()
    torch.testing.assert_close(cpu, cuda, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_histogram_matches_reference(device):
    g = torch.Generator().manual_seed(9)
    target = torch.randint(0, 5, (3, 8, 11), generator=g)
    target[target == 4] = 255
    labels = torch.randint(-1, 7, (3, 8, 11), generator=g)
    out = spl.superpixel_histogram(target.to(device), labels.to(device), 8, 4)
    assert out.dtype == torch.int64 and out.shape == (3, 8, 4)
    assert torch.equal(out.cpu(), reference.superpixel_histogram(target, labels, 8, 4))
    assert int(out[:, 7].sum()) == 0


def test_opcheck():
    x, labels = random_case(10)
    target = torch.randint(0, 3, labels.shape)
    for reduce in ("sum", "mean", "max"):
        torch.library.opcheck(torch.ops.spl.superpixel_pool.default, (x.clone().requires_grad_(), labels, 6, reduce))
        torch.library.opcheck(torch.ops.spl.superpixel_pool.default, (x, labels, 6, reduce))
        out, aux = torch.ops.spl.superpixel_pool(x, labels, 6, reduce)
        torch.library.opcheck(
            torch.ops.spl._superpixel_pool_backward.default,
            (torch.randn_like(out).requires_grad_(), labels, aux, 7, 9, reduce),
        )
    torch.library.opcheck(torch.ops.spl.superpixel_unpool.default, (torch.randn(2, 3, 6, requires_grad=True), labels))
    torch.library.opcheck(torch.ops.spl.superpixel_histogram.default, (target, labels, 6, 3, 255))
    torch.library.opcheck(torch.ops.spl.consistency_weights.default, (target, labels, 6, 3, 0.7, 1.0, 255))


def test_compile():
    x, labels = random_case(11)

    @torch.compile(fullgraph=True, backend="eager")
    def f(t):
        return spl.superpixel_unpool(spl.superpixel_pool(t, labels, 6, "mean"), labels)

    torch.testing.assert_close(f(x), spl.superpixel_unpool(spl.superpixel_pool(x, labels, 6, "mean"), labels))


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_bad_inputs(device):
    x, labels = random_case(12, device=device)
    with pytest.raises(ValueError, match=r"labels must be in \[-1, num_superpixels\)"):
        spl.superpixel_pool(x, labels, 3, "sum")  # labels go up to 4
    with pytest.raises(ValueError, match="labels must be in"):
        spl.superpixel_pool(x, torch.full_like(labels, -2), 6, "sum")
    with pytest.raises(ValueError, match="labels must be in"):
        spl.superpixel_unpool(torch.randn(2, 3, 2, device=device), labels)
    with pytest.raises(ValueError, match="shape"):
        spl.superpixel_pool(x, labels[:, :-1], 6, "sum")
    with pytest.raises(TypeError, match="int64"):
        spl.superpixel_pool(x, labels.float(), 6, "sum")
    with pytest.raises(TypeError, match="float16"):
        spl.superpixel_pool(x.long(), labels, 6, "sum")
    with pytest.raises(ValueError, match="reduce"):
        spl.superpixel_pool(x, labels, 6, "median")
    with pytest.raises(ValueError, match="num_superpixels"):
        spl.superpixel_pool(x, labels, -1, "sum")
    with pytest.raises(ValueError, match="dimensions"):
        spl.superpixel_pool(x[0], labels, 6, "sum")
    target = torch.randint(0, 3, labels.shape, device=device)
    with pytest.raises(ValueError, match="class indices"):
        spl.superpixel_histogram(target, labels, 6, 2)  # classes up to 2 with num_classes = 2
    with pytest.raises(TypeError, match="target"):
        spl.superpixel_histogram(target.float(), labels, 6, 3)
    with pytest.raises(ValueError, match="labels must be in"):
        spl.consistency_weights(target, labels, 2, 3)
    with pytest.raises(ValueError, match="tau"):
        spl.consistency_weights(target, labels, 6, 3, tau=1.5)
    # the ops check too, when called directly
    with pytest.raises(ValueError, match="labels must be in"):
        torch.ops.spl.superpixel_pool(x, labels, 3, "sum")
    with pytest.raises(ValueError, match="class indices"):
        torch.ops.spl.consistency_weights(target, labels, 6, 2, 0.7, 1.0, 255)


@needs_cuda
def test_mixed_devices():
    x, labels = random_case(13)
    with pytest.raises(ValueError, match="cuda|cpu"):
        spl.superpixel_pool(x.cuda(), labels, 6, "sum")
    with pytest.raises(ValueError, match="cuda|cpu"):
        spl.consistency_weights(torch.zeros_like(labels).cuda(), labels, 6, 3)


def test_mixed_devices_without_gpu():
    x, labels = random_case(14)
    with pytest.raises(ValueError, match="meta"):
        spl.superpixel_pool(x, labels.to("meta"), 6, "sum")
    with pytest.raises(ValueError, match="meta"):
        spl.consistency_weights(torch.zeros_like(labels), labels.to("meta"), 6, 3)
    # (Called directly, torch.ops.spl.* with a meta input dispatches to the fake kernel; a CPU/CUDA
    # mix reaches the kernels' own device check, see test_mixed_devices.)
