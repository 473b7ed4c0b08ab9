"""Shared test helpers: devices (CUDA cases skip without a GPU), seeds, synthetic images."""

import os

import numpy as np
import pytest
import torch

import spl

cuda_ok = torch.cuda.is_available() and spl.has_cuda_kernels()

# SPL_EMULATE_CUDA=1: the CPU cases run spl's CUDA kernels in the CUDA emulator (tests/cuda_emu),
# so a machine without a GPU still exercises the CUDA code against every check of the suite.
emulating_cuda = os.environ.get("SPL_EMULATE_CUDA") == "1"


@pytest.fixture(autouse=True, scope="session")
def _emulated_cuda_kernels():
    if not emulating_cuda:
        yield
        return
    from cuda_emu import emulated_kernels

    with emulated_kernels():
        yield


def pytest_addoption(parser):
    parser.addoption("--fuzz-cases", type=int, default=5000, help="cases of tests/test_fuzz.py (default 5000)")
    parser.addoption("--fuzz-seed", type=int, default=0, help="seed of tests/test_fuzz.py (default 0)")


def pytest_report_header(config):
    if emulating_cuda:
        return "spl: the CPU cases run the CUDA kernels in the CUDA emulator (SPL_EMULATE_CUDA=1)"


def pytest_terminal_summary(terminalreporter):
    if emulating_cuda:
        from cuda_emu import launches

        terminalreporter.write_line(f"spl CUDA emulator: {launches()} kernel launches in this run")


needs_cuda = pytest.mark.skipif(not cuda_ok, reason="needs a CUDA GPU and spl's CUDA kernels")


def cpu_and_cuda():
    return ("cpu", pytest.param("cuda", marks=needs_cuda))


def collage(seed: int, size: int = 192, regions: int = 7):
    """An image made of smooth random regions, each filled with a crop of a different scikit-image
    sample photo: natural texture with a known segmentation. Returns (uint8 [H, W, 3], int64 [H, W])."""
    from skimage import filters

    from spl.apps.scenes import sample_photos

    rng = np.random.default_rng(seed)
    sources = sample_photos(6)  # the first six: the collages the tests were written on
    fields = np.stack([filters.gaussian(rng.standard_normal((size, size)), sigma=size / 10) for _ in range(regions)])
    truth = fields.argmax(0)
    image = np.zeros((size, size, 3), np.uint8)
    for r in range(regions):
        src = sources[rng.integers(len(sources))]
        y, x = rng.integers(0, src.shape[0] - size), rng.integers(0, src.shape[1] - size)
        image[truth == r] = src[y : y + size, x : x + size, :3][truth == r]
    return image, truth.astype(np.int64)


def natural_images():
    """A few scikit-image sample images as a uint8 batch [B, 3, 128, 160]."""
    from skimage import data, transform

    imgs = [data.astronaut(), data.coffee(), data.chelsea()]
    out = [(transform.resize(im, (128, 160), anti_aliasing=True) * 255).astype(np.uint8) for im in imgs]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def refine_args(out, *extra, images, cams, workers=0):
    """spl refine's arguments as the tests run it: on the CPU, 60 superpixels, quiet; extra last.
    workers=None leaves --workers at its default."""
    workers = [] if workers is None else ["--workers", str(workers)]
    args = ["refine", "--images", str(images), "--cams", str(cams), "--out", str(out), "--device", "cpu"]
    return args + ["--n-segments", "60", "--quiet", *workers, *extra]


def train_args(data, out, *extra, labels=None, workers=0):
    """spl train's arguments as the tests run it: the tiny DeepLab on the CPU, 48-pixel crops, batches of 2,
    40 superpixels, quiet, on data/images, data/labels (or labels) and data/train.txt; extra last."""
    args = ["train", "--images", str(data / "images"), "--pseudo-labels", str(labels or data / "labels")]
    args += ["--list", str(data / "train.txt"), "--out", str(out), "--model", "deeplabv2-tiny", "--crop-size", "48"]
    args += ["--batch-size", "2", "--lr", "0.02", "--device", "cpu", "--workers", str(workers), "--n-segments", "40"]
    return args + ["--quiet", *extra]


def label_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of pixels on which two label maps ([H, W] or [B, H, W]) agree, up to renaming: each label of a is mapped
    to the label of b it overlaps most, and vice versa; the smaller of the two fractions."""

    def one_way(x, y):
        x, y = x.flatten().long(), y.flatten().long()
        nx, ny = int(x.max()) + 2, int(y.max()) + 2
        joint = torch.bincount((x + 1) * ny + (y + 1), minlength=nx * ny).view(nx, ny)
        return joint.max(dim=1).values.sum().item() / x.numel()

    if a.dim() == 3:  # labels restart in every image: compare image by image
        return sum(label_agreement(x, y) for x, y in zip(a, b)) / a.shape[0]
    return min(one_way(a, b), one_way(b, a))


# Processes of a job, from /proc (Linux): the kill tests of spl refine and spl train.
def descendants(pid):
    """Every live process below ``pid`` (from /proc's parent links)."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parent[int(entry)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found += kids
        frontier += kids
    return found


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
