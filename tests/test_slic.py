import numpy as np
import pytest
import torch

import spl
from spl import metrics, reference

from conftest import collage, cpu_and_cuda, label_agreement, natural_images, needs_cuda

# --------------------------------------------------------------------------------------------------
# Exact labels on piecewise-constant images


def quadrants(channels_values, size=64, dtype=torch.uint8):
    """[1, C, size, size] with four constant quadrants (values per quadrant in channels_values)."""
    v = torch.tensor(channels_values, dtype=torch.float64)  # [4, C]
    img = torch.empty(v.shape[1], size, size, dtype=torch.float64)
    h = size // 2
    img[:, :h, :h] = v[0, :, None, None]
    img[:, :h, h:] = v[1, :, None, None]
    img[:, h:, :h] = v[2, :, None, None]
    img[:, h:, h:] = v[3, :, None, None]
    return img.to(dtype)[None]


def expected_quadrants(size=64):
    h = size // 2
    out = torch.empty(size, size, dtype=torch.long)
    out[:h, :h], out[:h, h:], out[h:, :h], out[h:, h:] = 0, 1, 2, 3
    return out[None]


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_rgb_quadrants(device):
    img = quadrants([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]]).to(device)
    labels, counts = spl.slic(img, n_segments=4, return_counts=True)
    assert labels.dtype == torch.int64 and labels.shape == (1, 64, 64)
    assert torch.equal(labels.cpu(), expected_quadrants())
    assert counts.tolist() == [4]


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_grayscale_quadrants(device):
    img = quadrants([[0.1], [0.4], [0.7], [0.95]], dtype=torch.float32).to(device)
    labels = spl.slic(img, n_segments=4, compactness=0.01)
    assert torch.equal(labels.cpu(), expected_quadrants())


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_five_channel_quadrants(device):
    values = [[10, 200, 30, 40, 50], [200, 10, 90, 0, 255], [0, 0, 0, 250, 5], [128, 128, 255, 128, 0]]
    img = quadrants(values).to(device)
    labels = spl.slic(img, n_segments=4, compactness=0.01)
    assert torch.equal(labels.cpu(), expected_quadrants())


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("transpose", [False, True])
def test_stripes_off_the_grid_snap_to_colour_edges(device, transpose):
    # 4 cells of 16 rows; stripe edges at rows 20, 36, 52: superpixels follow the colours.
    edges = [0, 20, 36, 52, 64]
    colours = [[250, 20, 20], [20, 250, 20], [20, 20, 250], [240, 240, 240]]
    img = torch.zeros(3, 64, 16, dtype=torch.uint8)
    expected = torch.zeros(64, 16, dtype=torch.long)
    for i in range(4):
        img[:, edges[i] : edges[i + 1]] = torch.tensor(colours[i], dtype=torch.uint8)[:, None, None]
        expected[edges[i] : edges[i + 1]] = i
    if transpose:
        img, expected = img.transpose(1, 2).contiguous(), expected.t().contiguous()
    labels = spl.slic(img[None].to(device), n_segments=4, compactness=1.0)
    assert torch.equal(labels[0].cpu(), expected)


def test_single_segment_and_one_pixel_per_segment():
    img = torch.randint(0, 256, (1, 3, 9, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels, n = spl.slic(img, n_segments=1, return_counts=True)
    assert n.tolist() == [1] and bool((labels == 0).all())
    labels, n = spl.slic(img, n_segments=63, enforce_connectivity=False, return_counts=True)
    assert labels.shape == (1, 9, 7) and 1 <= int(n) <= 63
    assert torch.equal(torch.unique(labels), torch.arange(int(n)))


# --------------------------------------------------------------------------------------------------
# Properties on random and natural images


def check_properties(labels, counts, n_segments, min_size_factor=0.25):
    from skimage.measure import label as components

    B, H, W = labels.shape
    cells_y, cells_x, _ = reference.slic_grid(H, W, n_segments)
    min_size = int(min_size_factor * H * W / n_segments)
    for b in range(B):
        lab = labels[b].cpu()
        n = int(counts[b])
        # contiguous 0..n-1, numbered in raster order of first pixel
        assert torch.equal(torch.unique(lab), torch.arange(n))
        first = torch.full((n,), H * W).scatter_reduce(0, lab.flatten(), torch.arange(H * W), "amin")
        assert bool((first[1:] > first[:-1]).all())
        # every label is one 4-connected region
        assert components(lab.numpy() + 1, connectivity=1, background=0).max() == n
        # no region below the minimum size unless it is the whole image
        sizes = torch.bincount(lab.flatten(), minlength=n)
        assert n == 1 or int(sizes.min()) >= min_size
        # about one segment per grid cell
        assert 0.5 <= n / (cells_y * cells_x) <= 1.6


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_properties_natural_images(device):
    img = natural_images().to(device)
    for n_segments in (50, 300):
        labels, counts = spl.slic(img, n_segments, return_counts=True)
        check_properties(labels, counts, n_segments)
        again = spl.slic(img, n_segments)
        assert torch.equal(labels, again), "not deterministic"


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_properties_random_images(device, seed):
    g = torch.Generator().manual_seed(seed)
    B, C = 2, int(torch.randint(1, 6, (1,), generator=g))
    H, W = (int(v) for v in torch.randint(20, 90, (2,), generator=g))
    img = torch.randint(0, 256, (B, C, H, W), dtype=torch.uint8, generator=g)
    n_segments = int(torch.randint(5, 120, (1,), generator=g))
    labels, counts = spl.slic(
        img.to(device), n_segments, compactness=float(torch.rand(1, generator=g)) * 20 + 0.1, return_counts=True
    )
    check_properties(labels, counts, n_segments)


def test_batch_equals_single_images_and_thread_count_does_not_matter():
    img = natural_images()
    batch = spl.slic(img, 200)
    for b in range(img.shape[0]):
        assert torch.equal(spl.slic(img[b], 200), batch[b])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single_thread = spl.slic(img, 200)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single_thread, batch)


def test_layouts_and_dtypes_give_the_same_labels():
    img = natural_images()
    expected = spl.slic(img, 150)
    assert torch.equal(spl.slic(img.contiguous(memory_format=torch.channels_last), 150), expected)
    wide = torch.zeros(3, 3, 128, 320, dtype=torch.uint8)
    wide[..., ::2] = img
    assert torch.equal(spl.slic(wide[..., ::2], 150), expected)  # non-contiguous
    # float in 0..1 is the same image as uint8 / 255: same labels
    assert torch.equal(spl.slic(img.float() / 255, 150), expected)
    assert torch.equal(spl.slic(img.double() / 255, 150), expected)
    for dtype in (torch.float16, torch.bfloat16):  # rounded inputs: nearly the same labels
        assert label_agreement(spl.slic(img.to(dtype) / 255, 150), expected) > 0.97


def test_numpy_in_numpy_out():
    img = natural_images()[0].permute(1, 2, 0).numpy()
    labels, n = spl.slic(img, 100, return_counts=True)
    assert isinstance(labels, np.ndarray) and labels.shape == img.shape[:2] and isinstance(n, int)
    assert np.array_equal(labels, spl.slic(torch.from_numpy(img).permute(2, 0, 1), 100).numpy())
    gray = spl.slic(img[..., 0], 100, compactness=0.1)
    assert gray.shape == img.shape[:2]


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_mask(device):
    img = natural_images()[:2].to(device)
    mask = torch.zeros(2, 128, 160, dtype=torch.bool, device=device)
    mask[0, 20:100, 30:150] = True
    mask[1, :, :80] = True
    mask[1, 60:70, 100:110] = True  # an island
    labels, counts = spl.slic(img, 100, mask=mask, return_counts=True)
    assert bool((labels[~mask] == -1).all()) and bool((labels[mask] >= 0).all())
    for b in range(2):
        inside = labels[b][mask[b]]
        assert torch.equal(torch.unique(inside).cpu(), torch.arange(int(counts[b])))
    # NaN outside the mask is ignored
    noisy = img.float() / 255
    noisy[0, :, ~mask[0]] = float("nan")
    assert torch.equal(spl.slic(noisy, 100, mask=mask), labels)
    # an empty mask gives no segments
    empty = spl.slic(img, 100, mask=torch.zeros_like(mask), return_counts=True)
    assert bool((empty[0] == -1).all()) and empty[1].tolist() == [0, 0]
    # a [H, W] mask applies to every image
    assert torch.equal(spl.slic(img, 100, mask=mask[0]), spl.slic(img, 100, mask=mask[0].expand(2, -1, -1)))


def test_spacing_and_no_connectivity():
    img = natural_images()[:1]
    tall = spl.slic(img, 100, spacing=(4.0, 1.0), compactness=30)
    # heavier vertical distance: superpixels get flatter (wider than tall)
    ys, xs = torch.meshgrid(torch.arange(128), torch.arange(160), indexing="ij")
    lab = tall[0]
    n = int(lab.max()) + 1

    def extent(coord):
        lo = torch.full((n,), 10**6).scatter_reduce(0, lab.flatten(), coord.flatten(), "amin")
        hi = torch.zeros(n, dtype=torch.long).scatter_reduce(0, lab.flatten(), coord.flatten(), "amax")
        return (hi - lo + 1).float().mean()

    assert extent(xs) > 1.5 * extent(ys)
    raw, n_raw = spl.slic(img, 100, enforce_connectivity=False, return_counts=True)
    assert torch.equal(torch.unique(raw), torch.arange(int(n_raw)))


# --------------------------------------------------------------------------------------------------
# Against the reference, across devices, against scikit-image


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_agrees_with_reference_before_connectivity(device, channels):
    g = torch.Generator().manual_seed(1234 + channels)
    img = natural_images()[:2]
    if channels != 3:
        extra = torch.randint(0, 256, (2, channels, 128, 160), dtype=torch.uint8, generator=g)
        img = torch.cat([img, extra], 1)[:, :channels].contiguous()
    compactness = 10.0 if channels == 3 else 0.2
    kernel = spl.slic(img.to(device), 150, compactness=compactness, enforce_connectivity=False)
    ref = reference.slic(img, 150, compactness=compactness, enforce_connectivity=False)
    # Labels are numbered by first pixel, so one early flip renumbers whole segments: compare up
    # to renaming.
    agreement = label_agreement(kernel.cpu(), ref)
    assert agreement >= 0.99, agreement


def test_connectivity_matches_reference_on_slic_output():
    img = natural_images()
    raw = spl.slic(img, 250, enforce_connectivity=False)
    min_size = int(0.25 * 128 * 160 / 250)
    out, counts = spl.enforce_connectivity(raw, min_size, return_counts=True)
    ref, ref_counts = reference.enforce_connectivity(raw, min_size, return_counts=True)
    assert torch.equal(out, ref) and torch.equal(counts, ref_counts)
    assert torch.equal(out, spl.slic(img, 250))


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_cpu_and_cuda_agree(dtype):
    img = natural_images()
    img = img if dtype == torch.uint8 else img.float() / 255
    for kwargs in ({}, {"enforce_connectivity": False}, {"n_segments": 40, "compactness": 3.0}):
        args = {"n_segments": 300, **kwargs}
        cpu = spl.slic(img, **args)
        cuda = spl.slic(img.cuda(), **args).cpu()
        assert label_agreement(cpu, cuda) >= 0.999
        if dtype == torch.uint8:  # same arithmetic on both devices: same labels
            assert torch.equal(cpu, cuda)


@needs_cuda
def test_cuda_deterministic_and_large_batch():
    img = natural_images().cuda().repeat(8, 1, 1, 1)
    first = spl.slic(img, 500)
    for _ in range(3):
        assert torch.equal(spl.slic(img, 500), first)
    assert torch.equal(first[0], first[3])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quality_at_least_scikit_image(seed):
    from skimage.segmentation import slic as sk_slic

    image, truth = collage(seed)
    for n in (100, 400):
        ours = metrics.superpixel_scores(spl.slic(image, n), truth)
        theirs = metrics.superpixel_scores(sk_slic(image, n_segments=n, compactness=10, start_label=0), truth)
        assert ours["boundary_recall"] >= theirs["boundary_recall"] - 0.01, (ours, theirs)
        assert ours["undersegmentation_error"] <= theirs["undersegmentation_error"] + 0.005, (ours, theirs)


# --------------------------------------------------------------------------------------------------
# Bad inputs: clear exceptions naming the argument


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: torch.zeros(2, 3), ValueError, "shape"),
        (lambda: torch.zeros(1, 1, 3, 8, 8), ValueError, "shape"),
        (lambda: torch.zeros(1, 3, 0, 8, dtype=torch.uint8), ValueError, "at least one"),
        (lambda: torch.zeros(1, 0, 8, 8, dtype=torch.uint8), ValueError, "at least one"),
        (lambda: torch.zeros(1, 3, 8, 8, dtype=torch.int32), TypeError, "uint8"),
        (lambda: torch.zeros(1, 3, 8, 8, dtype=torch.int16), TypeError, "uint8"),
        (lambda: torch.zeros(1, 3, 8, 8, dtype=torch.bool), TypeError, "uint8"),
        (lambda: [[1, 2]], TypeError, "image"),
    ],
)
def test_bad_images(make, exc, match):
    with pytest.raises(exc, match=match):
        spl.slic(make(), 4)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_image(value):
    img = torch.rand(1, 3, 16, 16)
    img[0, 0, 3, 4] = value
    with pytest.raises(ValueError, match="NaN or infinite"):
        spl.slic(img, 4)
    with pytest.raises(ValueError, match="NaN or infinite"):
        spl.slic(img[:, :1], 4)  # the non-Lab path too
    with pytest.raises(ValueError, match="NaN or infinite"):
        torch.ops.spl.slic(img, 4, 10.0, 10, True, True, 0.25, [1.0, 1.0], None)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"n_segments": 0}, ValueError, "n_segments"),
        ({"n_segments": 257}, ValueError, "n_segments"),
        ({"n_segments": 4.5}, TypeError, "n_segments"),
        ({"compactness": 0.0}, ValueError, "compactness"),
        ({"compactness": 1e-9}, ValueError, "compactness"),
        ({"compactness": 2e6}, ValueError, "compactness"),
        ({"compactness": float("nan")}, ValueError, "compactness"),
        ({"max_num_iter": 0}, ValueError, "max_num_iter"),
        ({"convert2lab": True, "image": torch.zeros(1, 2, 16, 16)}, ValueError, "convert2lab"),
        ({"min_size_factor": -1.0}, ValueError, "min_size_factor"),
        ({"spacing": (1.0,)}, ValueError, "spacing"),
        ({"spacing": (0.0, 1.0)}, ValueError, "spacing"),
        ({"mask": torch.ones(16, 15, dtype=torch.bool)}, ValueError, "mask"),
        ({"mask": torch.ones(16, 16)}, TypeError, "mask"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    args = {"image": torch.zeros(1, 3, 16, 16, dtype=torch.uint8), "n_segments": 4, **kwargs}
    with pytest.raises(exc, match=match):
        spl.slic(**args)


def test_op_checks_arguments_itself():
    # Called directly (bypassing the wrapper), the kernel still refuses bad input with a message.
    img = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="n_segments"):
        torch.ops.spl.slic(img, 0, 10.0, 10, True, True, 0.25, [1.0, 1.0], None)
    with pytest.raises(ValueError, match="mask"):
        torch.ops.spl.slic(img, 4, 10.0, 10, True, True, 0.25, [1.0, 1.0], torch.ones(1, 8, 7, dtype=torch.bool))
    with pytest.raises(TypeError, match="uint8"):
        torch.ops.spl.slic(img.int(), 4, 10.0, 10, False, True, 0.25, [1.0, 1.0], None)


def test_empty_batch():
    labels, counts = spl.slic(torch.zeros(0, 3, 8, 8, dtype=torch.uint8), 4, return_counts=True)
    assert labels.shape == (0, 8, 8) and counts.shape == (0,)


# --------------------------------------------------------------------------------------------------
# Custom-op machinery


def test_opcheck():
    img = natural_images()[:1, :, :32, :40].contiguous()
    mask = torch.ones(1, 32, 40, dtype=torch.bool)
    torch.library.opcheck(torch.ops.spl.slic.default, (img, 20, 10.0, 5, True, True, 0.25, [1.0, 1.0], None))
    torch.library.opcheck(
        torch.ops.spl.slic.default, (img.float() / 255, 20, 10.0, 5, True, False, 0.25, [1.0, 2.0], mask)
    )


def test_torch_compile_fullgraph():
    img = natural_images()[:1]

    @torch.compile(fullgraph=True, backend="eager")
    def segment(x):
        return spl.slic(x, 100)

    assert torch.equal(segment(img), spl.slic(img, 100))
    out = torch.ops.spl.slic(img.to("meta"), 100, 10.0, 10, True, True, 0.25, [1.0, 1.0], None)
    assert out[0].shape == (1, 128, 160) and out[0].dtype == torch.int64 and out[1].shape == (1,)


def test_cuda_input_without_cuda_kernels_is_a_clear_error(monkeypatch):
    from spl.ops import _common

    monkeypatch.setattr(_common, "has_cuda_kernels", lambda: False)
    fake = torch.zeros(1, 3, 8, 8, dtype=torch.uint8, device="meta")
    monkeypatch.setattr(fake.__class__, "device", property(lambda self: torch.device("cuda")), raising=False)
    with pytest.raises(RuntimeError, match="no CUDA kernels"):
        _common.check_device(fake, "slic")


def test_docstring_examples():
    import doctest
    import pkgutil
    import sys

    attempted = 0
    for module in pkgutil.iter_modules(spl.ops.__path__):  # one module per op
        result = doctest.testmod(sys.modules[f"spl.ops.{module.name}"], verbose=False)
        assert result.failed == 0, module.name
        attempted += result.attempted
    assert attempted > 0
