import pytest
import torch
import torch.nn.functional as F

import spl
from spl import reference

from conftest import cpu_and_cuda, needs_cuda


def case(seed, B=2, H=12, W=10, K=7, classes=4, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, classes, (B, H, W), generator=g)
    target[torch.rand(B, H, W, generator=g) < 0.1] = 255
    labels = torch.randint(-1, K - 1, (B, H, W), generator=g)
    # make some superpixels nearly uniform in class so that the transformation triggers
    target[labels == 0] = 1
    target[(labels == 1) & (torch.rand(B, H, W, generator=g) < 0.8)] = 2
    return target.to(device), labels.to(device)


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("tau, gamma", [(0.7, 1.0), (0.5, 2.0), (0.0, 0.5), (1.0, 1.0), (0.7, 0.0)])
def test_consistency_weights_match_reference(device, tau, gamma):
    target, labels = case(0, device=device)
    w, y = spl.consistency_weights(target, labels, 7, 4, tau, gamma)
    wr, yr = reference.consistency_weights(target.cpu(), labels.cpu(), 7, 4, tau, gamma)
    assert w.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(y.cpu(), yr)
    torch.testing.assert_close(w.cpu(), wr)
    ignored = (target == 255) | (labels < 0)
    assert bool((w[ignored] == 0).all()) and bool((y[ignored] == 255).all())
    assert bool((w[~ignored] > 0).all()) and bool((w <= 1).all())


def test_consistency_weights_by_hand():
    # superpixel 0: classes 1,1,1,2 -> majority 1 (share 0.75); superpixel 1: classes 0,3 -> tie, share 0.5
    target = torch.tensor([[[1, 1, 1, 2, 0, 3, 255]]])
    labels = torch.tensor([[[0, 0, 0, 0, 1, 1, 1]]])
    w, y = spl.consistency_weights(target, labels, 2, 4, tau=0.7)
    assert y.tolist() == [[[1, 1, 1, 1, 0, 3, 255]]]  # superpixel 0 relabelled; 1 unchanged
    assert w.tolist() == [[[1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.0]]]
    w, y = spl.consistency_weights(target, labels, 2, 4, tau=0.5)  # now the tie in 1 goes to class 0
    assert y.tolist() == [[[1, 1, 1, 1, 0, 0, 255]]] and w[0, 0, 4:6].tolist() == [1.0, 1.0]
    w, y = spl.consistency_weights(target, labels, 2, 4, tau=0.8, gamma=2.0)  # nothing relabelled
    assert y.tolist() == target.tolist()
    assert w.tolist() == [[[0.5625, 0.5625, 0.5625, 0.0625, 0.25, 0.25, 0.0]]]


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("low_res", [False, True])
def test_loss_matches_reference_and_gradcheck(device, low_res):
    target, labels = case(1, device=device)
    shape = (2, 4, 6, 5) if low_res else (2, 4, 12, 10)
    logits = torch.randn(*shape, dtype=torch.float64, device=device, requires_grad=True)
    loss_fn = spl.SuperpixelConsistencyLoss(4, tau=0.6, gamma=1.5)
    loss = loss_fn(logits, target, labels, 7)
    ref = reference.superpixel_consistency_loss(logits, target, labels, 7, 4, tau=0.6, gamma=1.5)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    assert loss_fn(logits, target, labels).item() == pytest.approx(loss.item())  # K from the labels

    def float64_loss(t):
        w, y = spl.consistency_weights(target, labels, 7, 4, 0.6, 1.5)
        up = F.interpolate(t, size=(12, 10), mode="bilinear", align_corners=False) if low_res else t
        ce = F.cross_entropy(up, y, ignore_index=255, reduction="none")
        return (w.double() * ce).sum() / w.double().sum()

    # On CUDA, F.interpolate's bilinear backward uses float atomics (torch's, not spl's): allow
    # rounding-level differences between two backward passes there.
    nondet_tol = 1e-12 if low_res and device == "cuda" else 0.0
    assert torch.autograd.gradcheck(float64_loss, (logits,), nondet_tol=nondet_tol)
    loss.backward()
    logits2 = logits.detach().clone().requires_grad_(True)
    float64_loss(logits2).backward()
    torch.testing.assert_close(logits.grad, logits2.grad, rtol=1e-4, atol=1e-6)


def test_all_ignored_gives_zero():
    target = torch.full((1, 4, 4), 255)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = spl.SuperpixelConsistencyLoss(3)(logits, target, labels, 1)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_amp_logits(dtype):
    target, labels = case(2)
    logits = torch.randn(2, 4, 6, 5, dtype=dtype, requires_grad=True)
    loss = spl.SuperpixelConsistencyLoss(4)(logits, target, labels, 7)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert logits.grad.dtype == dtype and torch.isfinite(logits.grad.float()).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        conv = torch.nn.Conv2d(3, 4, 1)
        x = torch.randn(2, 3, 6, 5)
        loss = spl.SuperpixelConsistencyLoss(4)(conv(x), target, labels, 7)
    loss.backward()
    assert torch.isfinite(conv.weight.grad).all()


def test_compile_fullgraph():
    target, labels = case(3)
    logits = torch.randn(2, 4, 6, 5, requires_grad=True)
    loss_fn = spl.SuperpixelConsistencyLoss(4)

    @torch.compile(fullgraph=True)
    def step(t):
        return loss_fn(t, target, labels, 7)

    loss = step(logits)
    loss.backward()
    torch.testing.assert_close(loss, loss_fn(logits, target, labels, 7))


def test_bad_inputs():
    target, labels = case(4)
    loss_fn = spl.SuperpixelConsistencyLoss(4)
    with pytest.raises(ValueError, match="logits"):
        loss_fn(torch.randn(2, 3, 12, 10), target, labels, 7)
    with pytest.raises(TypeError, match="floating"):
        loss_fn(torch.zeros(2, 4, 12, 10, dtype=torch.long), target, labels, 7)
    with pytest.raises(ValueError, match="labels must be in"):
        loss_fn(torch.randn(2, 4, 12, 10), target, labels, 3)
    with pytest.raises(ValueError, match="class indices"):
        loss_fn(torch.randn(2, 4, 12, 10), target.clamp(max=5) + 1, labels, 7)
    with pytest.raises(ValueError, match="tau"):
        spl.SuperpixelConsistencyLoss(4, tau=2.0)


@needs_cuda
def test_cpu_and_cuda_agree():
    target, labels = case(5, B=3, H=40, W=30, K=25)
    w, y = spl.consistency_weights(target, labels, 25, 4, 0.6, 2.0)
    wc, yc = spl.consistency_weights(target.cuda(), labels.cuda(), 25, 4, 0.6, 2.0)
    assert torch.equal(y, yc.cpu()) and torch.equal(w, wc.cpu())


def test_weighted_loss_resists_noisy_labels():
    """Per-pixel logits fitted to noisy pseudo-labels (patches of wrong class and boundaries shifted
    outwards, as CAMs err): the consistency loss ends closer to the clean labels than plain
    cross-entropy, which fits the noise."""
    torch.manual_seed(0)
    H = W = 64
    clean = torch.zeros(H, W, dtype=torch.long)
    clean[8:40, 10:44] = 1
    clean[30:60, 36:62] = 2
    colours = torch.tensor([[40, 60, 200], [220, 40, 40], [40, 200, 60]], dtype=torch.float)
    image = colours[clean].permute(2, 0, 1) + 12 * torch.randn(3, H, W)
    image = image.clamp(0, 255).to(torch.uint8)[None]
    noisy = clean.clone()
    g = torch.Generator().manual_seed(1)
    for _ in range(12):  # patches of a wrong class
        y, x = (int(v) for v in torch.randint(0, H - 6, (2,), generator=g))
        noisy[y : y + 6, x : x + 6] = (clean[y + 3, x + 3] + 1) % 3
    grown = F.max_pool2d((clean == 1).float()[None, None], 5, 1, 2)[0, 0] > 0  # class 1 leaks outwards
    noisy[grown & (clean == 0)] = 1
    superpixels, n = spl.slic(image, n_segments=60, compactness=20, return_counts=True)

    def fit(loss_fn):
        logits = torch.zeros(1, 3, H, W, requires_grad=True)
        opt = torch.optim.Adam([logits], lr=0.2)
        for _ in range(150):
            opt.zero_grad()
            loss_fn(logits).backward()
            opt.step()
        return (logits.argmax(1)[0] == clean).float().mean().item()

    ce_accuracy = fit(lambda t: F.cross_entropy(t, noisy[None]))
    sp_loss = spl.SuperpixelConsistencyLoss(3, tau=0.6)
    sp_accuracy = fit(lambda t: sp_loss(t, noisy[None], superpixels, int(n[0])))
    noise_accuracy = (noisy == clean).float().mean().item()
    assert ce_accuracy == pytest.approx(noise_accuracy, abs=0.01)  # CE memorises the noise
    assert sp_accuracy > ce_accuracy + 0.05, (sp_accuracy, ce_accuracy)
