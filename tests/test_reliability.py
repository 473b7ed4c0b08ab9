"""Bad inputs found by fuzzing and by hand (issue 19): each raises a clear error naming the function
and the argument, or is handled, instead of crashing or giving silently wrong output."""
import os

import numpy as np
import pytest
import torch

import spl


def test_slic_huge_min_size_factor_merges_instead_of_overflowing():
    # min_size_factor * H*W / n_segments beyond int64 used to wrap around: nothing merged.
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (1, 3, 24, 32), dtype=torch.uint8, generator=g)
    labels, counts = spl.slic(img, 20, min_size_factor=1e30, return_counts=True)
    assert counts.tolist() == [1] and bool((labels == 0).all())
    _, some = spl.slic(img, 20, min_size_factor=0.25, return_counts=True)
    assert int(some[0]) > 1


def test_slic_numpy_byte_order_uint16_and_spacing():
    rng = np.random.default_rng(1)
    img = rng.random((20, 30, 3))
    native = spl.slic(img.astype(np.float32), 10)
    np.testing.assert_array_equal(spl.slic(img.astype(">f4"), 10), native)  # big-endian: same labels
    with pytest.raises(TypeError, match="slic: a uint16 image must be scaled"):
        spl.slic((img * 65535).astype(np.uint16), 10)
    with pytest.raises(TypeError, match="slic: spacing must be a pair"):
        spl.slic(img, 10, spacing="ab")
    with pytest.raises(TypeError, match="slic: spacing must be a number"):
        spl.slic(img, 10, spacing=(1, "a"))
    with pytest.raises(TypeError, match="slic: compactness must be a number"):
        spl.slic(img, 10, compactness="10")


def test_enforce_connectivity_batched_numpy():
    labels = np.zeros((2, 5, 6), np.int64)
    labels[1, :, 3:] = 7
    out, counts = spl.enforce_connectivity(labels, return_counts=True)
    assert isinstance(out, np.ndarray) and out.shape == (2, 5, 6)
    assert counts.tolist() == [1, 2]


def test_loss_rejects_infinite_settings_and_stray_labels():
    for kw in (dict(gamma=float("inf")), dict(tau=float("nan")), dict(eps=float("inf")), dict(gamma="1")):
        with pytest.raises(ValueError, match="SuperpixelConsistencyLoss: .* must be a finite number"):
            spl.SuperpixelConsistencyLoss(21, **kw)
    loss = spl.SuperpixelConsistencyLoss(3)
    sp = torch.zeros(1, 4, 4, dtype=torch.int64)
    sp[0, 0, 0] = 10**12  # one stray id: K would be 10^12 superpixels
    with pytest.raises(ValueError, match="SuperpixelConsistencyLoss: superpixels hold a label"):
        loss(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.int64), sp)


def test_asam_stray_labels_huge_float64_and_small_images():
    img = torch.randint(0, 256, (1, 3, 20, 20), dtype=torch.uint8)
    cam = torch.rand(1, 2, 20, 20)
    labels = torch.zeros(1, 20, 20, dtype=torch.int64)
    labels[0, 0, 0] = 10**12
    with pytest.raises(ValueError, match="asam_refine: labels hold an id not below the number of pixels"):
        spl.asam_refine(img, cam, labels)
    huge = cam.double()
    huge[0, 0, 0, 0] = 1e300
    with pytest.raises(ValueError, match="asam_refine: cam holds .* beyond float32's range"):
        spl.asam_refine(img, huge)
    # 400 pixels, fewer than the default n_segments: SLIC takes one segment per pixel at most.
    out = spl.asam_refine(img, cam)
    assert out.shape == cam.shape and bool(torch.isfinite(out).all())
    tiny = spl.asam_refine(img[..., :1, :1], cam[..., :1, :1])
    assert tiny.shape == (1, 2, 1, 1)


def test_round_counts_are_bounded():
    # The fuzzer's only hang (seed 0, case 1642): steps=10**30 was accepted and looped for ever.
    img = torch.randint(0, 256, (1, 3, 14, 2), dtype=torch.uint8)
    cam = torch.rand(1, 2, 14, 2)
    for name in ("steps", "iters", "diffuse_iters"):
        with pytest.raises(ValueError, match=f"asam_refine: {name} must be in \\[0, 10000\\]"):
            spl.asam_refine(img, cam, **{name: 10**30})
    with pytest.raises(ValueError, match="asam_refine: hops must be in"):
        spl.asam_refine(img, cam, hops=1000)
    for junk in ("ab", ["0.3", "x"], 3):  # a string iterated as characters reached float('a')
        with pytest.raises(TypeError, match="asam_refine: thresholds must be a sequence of numbers"):
            spl.asam_refine(img, cam, thresholds=junk)
    g = spl.superpixel_adjacency(torch.tensor([[[0, 0, 1, 1], [2, 2, 3, 3]]]), 4)
    # beyond int64: the schema's cast error named neither the op nor the argument
    with pytest.raises(ValueError, match="sparse_propagate: iters must be <= "):
        spl.sparse_propagate(g, torch.ones(g.num_edges), torch.rand(4, 3), 10**30)


def test_refine_reads_16_bit_grayscale_scaled(tmp_path):
    from PIL import Image

    from spl.refine import read_image

    a = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "g.png")
    rgb = read_image(os.fspath(tmp_path / "g.png"))
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    assert rgb.min() == 0 and rgb.max() == 255 and 120 < rgb[24, 32, 0] < 136  # not all white
