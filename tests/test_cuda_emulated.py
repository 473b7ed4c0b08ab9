"""spl's CUDA kernels, run on the CPU by the CUDA emulator (tests/cuda_emu), against the CPU kernels.

A machine without a GPU cannot run the CUDA code; the emulator can (runtime.h says how and what it
cannot see). Here every op's CUDA kernel is compared with its CPU kernel on random inputs and edge
cases, under several thread schedules (forward, reverse, shuffled with a switch at every atomic):
results promised deterministic must be bit-identical under all of them, whatever order the
threads run in. ``SPL_EMULATE_CUDA=1 python -m pytest`` runs the whole suite on the emulated kernels.
"""

import os
import subprocess
import sys

import pytest
import torch

import spl
from spl.ops.sparse_propagate import transition

import cuda_emu  # tests/cuda_emu, next to this file
from conftest import collage, emulating_cuda, natural_images
from cuda_emu import build as emu_build

# Under SPL_EMULATE_CUDA=1 the CPU kernels are the emulated ones: nothing to compare against.
pytestmark = pytest.mark.skipif(emulating_cuda, reason="compares the emulated kernels with the CPU kernels")

SCHEDULES = [("forward", 0, False), ("reverse", 0, False), ("shuffle", 1, True)]


@pytest.fixture(scope="module", autouse=True)
def emulator():
    emu_build.load()  # builds on first use (about a minute on two cores), then cached under build/
    yield
    cuda_emu.set_schedule("forward")


def emulated(name, *args, expect_launch=True):
    """The op's CUDA kernel under each schedule; asserts they agree bit for bit; returns one result."""
    op = getattr(torch.ops.spl_emu, name)
    results = []
    for order, seed, preempt in SCHEDULES:
        cuda_emu.set_schedule(order, seed, preempt)
        before = cuda_emu.launches()
        results.append(op(*args))
        if expect_launch and not _empty(args):
            assert cuda_emu.launches() > before, f"{name}: the emulator launched nothing"
    cuda_emu.set_schedule("forward")
    for other, schedule in zip(results[1:], SCHEDULES[1:]):
        _assert_identical(results[0], other, f"{name} under schedule {schedule}")
    return results[0]


def _empty(args):
    return any(isinstance(a, torch.Tensor) and a.numel() == 0 for a in args)


def _assert_identical(a, b, what):
    if isinstance(a, (tuple, list)):
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_identical(x, y, f"{what}, output {i}")
        return
    assert a.dtype == b.dtype and a.shape == b.shape, what
    assert torch.equal(
        a.view(torch.uint8) if a.is_floating_point() and a.numel() else a,
        b.view(torch.uint8) if b.is_floating_point() and b.numel() else b,
    ), f"{what}: not bit-identical"


def cpu(name, *args):
    return getattr(torch.ops.spl, name)(*args)


# ---------------------------------------------------------------------------------------------
# The emulator itself


def test_translate_rewrites_launches_shared_memory_and_registration():
    src = (
        "  kern<float, 4><<<grid, dim3(32, 2), bytes, stream>>>(a,\n      b);\n"
        "  extern __shared__ int64_t shared[];\n"
        'TORCH_LIBRARY_IMPL(spl, CUDA, m) { m.impl("x", &x); }\n'
    )
    out = emu_build.translate(src)
    assert "::spl_emu::launch([&] { kern<float, 4>(a,\n      b); }, grid, dim3(32, 2), bytes, stream);" in out
    assert "int64_t* shared = reinterpret_cast<int64_t*>(::spl_emu::dynamic_shared_memory());" in out
    assert "TORCH_LIBRARY_IMPL(spl_emu, CPU, m)" in out
    assert out.count("\n") == src.count("\n")  # line numbers survive, for compiler messages
    with pytest.raises(ValueError, match="launch"):
        emu_build.translate("k<<<1, 1>>>;")
    # clang-format breaks a long launch before its configuration: the kernel is the line before.
    src = "  if (x) {\n    kern<float, true>\n        <<<grid, block, 0, stream>>>(a, b);\n  }\n"
    out = emu_build.translate(src)
    assert "    ::spl_emu::launch([&] { kern<float, true>\n        (a, b); }, grid, block, 0, stream);\n" in out
    assert out.count("\n") == src.count("\n")
    with pytest.raises(ValueError, match="cannot parse the kernel"):
        emu_build.translate("  // a comment\n      <<<grid, block>>>(a);\n")


def test_barrier_makes_shared_writes_visible():
    for order, seed, preempt in SCHEDULES:
        cuda_emu.set_schedule(order, seed, preempt)
        out = torch.ops.spl_emu._emu_selftest("barrier")
        t = torch.arange(64)
        want = torch.stack([((t + 1) % 64) * 10 + b for b in range(3)]).int()
        assert torch.equal(out, want), order
    cuda_emu.set_schedule("forward")


def test_warp_collectives_match_cuda_semantics():
    for order, seed, preempt in SCHEDULES:
        cuda_emu.set_schedule(order, seed, preempt)
        out = torch.ops.spl_emu._emu_selftest("warp")
        for t in range(64):
            lane, base = t % 32, t - t % 32
            v = lambda lane_: 100 + base + lane_  # noqa: E731
            odd = 0xAAAAAAAA - (1 << 32)  # the ballot of odd lanes, as a signed int
            want = [
                v(3),
                v(lane - 1) if lane >= 1 else v(lane),
                v(lane + 2) if lane + 2 < 32 else v(lane),
                v(lane ^ 5),
                odd,
                1,
                v((lane & ~7) + 1),
            ]
            assert out[t].tolist() == want, (order, t)
    cuda_emu.set_schedule("forward")


def test_emulator_reports_exited_lanes_and_deadlocks():
    with pytest.raises(RuntimeError, match="lane 16, which has exited"):
        torch.ops.spl_emu._emu_selftest("exited_lane")
    with pytest.raises(RuntimeError, match="deadlock"):
        torch.ops.spl_emu._emu_selftest("deadlock")
    # ... and recovers: the next launch runs normally.
    assert torch.ops.spl_emu._emu_selftest("barrier").shape == (3, 64)


def test_launches_from_several_threads_take_turns():
    """One emulated GPU: kernels launched from several Python threads at once run one at a time
    (their __shared__ statics and the scheduler's state are process-wide) and give the same results."""
    from concurrent.futures import ThreadPoolExecutor

    x, labels, K = pool_inputs(12, B=3, C=5, H=40, W=50)
    want = torch.ops.spl_emu.superpixel_pool(x, labels, K, "max")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: torch.ops.spl_emu.superpixel_pool(x, labels, K, "max"), range(8)))
    for out, aux in results:
        assert torch.equal(out, want[0]) and torch.equal(aux, want[1])


@pytest.mark.skipif(os.environ.get("SPL_EMU_ASAN") != "1", reason="only with tools/cuda_emu_asan.sh")
def test_address_sanitizer_reports_an_out_of_bounds_write():
    """Under tools/cuda_emu_asan.sh the kernels are built with AddressSanitizer; a write past the end
    of a tensor (an illegal address on a GPU) must stop the process with ASan's report."""
    cxx = os.environ.get("CXX", "g++")
    preload = " ".join(
        subprocess.run([cxx, f"-print-file-name={lib}"], capture_output=True, text=True, check=True).stdout.strip()
        for lib in ("libasan.so", "libstdc++.so")
    )
    code = (
        "import sys; sys.path.insert(0, 'tests'); from cuda_emu import build; build.load(); import torch; "
        "torch.ops.spl_emu._emu_selftest('out_of_bounds')"
    )
    env = dict(os.environ, LD_PRELOAD=preload, ASAN_OPTIONS="detect_leaks=0")
    run = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert run.returncode != 0
    assert "heap-buffer-overflow" in run.stderr and "out_of_bounds_kernel" in run.stderr, run.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# SLIC and connectivity


def slic_args(image, n_segments=60, compactness=10.0, iters=10, lab=True, connect=True, mask=None):
    return (image, n_segments, compactness, iters, lab, connect, 0.25, [1.0, 1.0], mask)


@pytest.mark.parametrize("case", ["natural", "collage", "float_gray", "five_channels", "mask", "no_connectivity"])
def test_slic(case):
    g = torch.Generator().manual_seed(7)
    if case == "natural":
        args = slic_args(natural_images()[:2, :, :64, :80].contiguous(), 50)
    elif case == "collage":
        img = torch.from_numpy(collage(3, size=72)[0]).permute(2, 0, 1)[None].contiguous()
        args = slic_args(img, 40, compactness=5.0)
    elif case == "float_gray":
        args = slic_args(torch.rand(2, 1, 33, 47, generator=g), 30, lab=False)
    elif case == "five_channels":
        args = slic_args(torch.rand(1, 5, 40, 40, generator=g), 25, compactness=0.5, lab=False)
    elif case == "mask":
        img = natural_images()[:1, :, :48, :64].contiguous()
        mask = torch.rand(1, 48, 64, generator=g) > 0.2
        mask[:, :, :10] = False
        args = slic_args(img, 40, mask=mask)
    else:
        args = slic_args(natural_images()[:1, :, :48, :64].contiguous(), 40, connect=False)
    labels, counts = emulated("slic", *args)
    want_labels, want_counts = cpu("slic", *args)
    # The promise is that CPU and CUDA agree on >= 99.9% of pixels; the kernels share their arithmetic, so here
    # they agree exactly.
    assert torch.equal(labels, want_labels), (labels != want_labels).float().mean().item()
    assert torch.equal(counts, want_counts)


@pytest.mark.parametrize("seed", range(6))
def test_slic_odd_shapes_and_settings(seed):
    """Random corners of the parameter space: tiny and thin images, one segment or one per pixel,
    extreme compactness, one iteration, anisotropic spacing, images entirely masked out."""
    g = torch.Generator().manual_seed(100 + seed)
    H, W = [(1, 1), (1, 17), (17, 1), (5, 7), (31, 9), (40, 52)][seed]
    B = 1 + seed % 3
    C = [1, 3, 3, 2, 3, 4][seed]
    image = (
        (torch.rand(B, C, H, W, generator=g) * 255).to(torch.uint8) if seed % 2 else torch.rand(B, C, H, W, generator=g)
    )
    n_segments = [1, H * W, 3, H * W, 7, 30][seed]
    compactness = [10.0, 0.01, 1000.0, 1.0, 25.0, 0.2][seed]
    iters = [1, 1, 10, 3, 2, 10][seed]
    spacing = [[1.0, 1.0], [2.0, 0.5], [1.0, 3.0], [1.0, 1.0], [0.7, 1.3], [1.0, 1.0]][seed]
    mask = None
    if seed >= 3:
        mask = torch.rand(B, H, W, generator=g) > 0.3
        mask[0] = False  # an image with no pixel inside the mask
    for connect, min_size_factor in ((True, 0.25), (True, 0.0), (True, 1.0), (False, 0.25)):
        args = (image, n_segments, compactness, iters, C == 3, connect, min_size_factor, spacing, mask)
        labels, counts = emulated("slic", *args)
        want_labels, want_counts = cpu("slic", *args)
        assert torch.equal(labels, want_labels), (connect, min_size_factor)
        assert torch.equal(counts, want_counts), (connect, min_size_factor)


def test_enforce_connectivity():
    g = torch.Generator().manual_seed(3)
    coarse = torch.randint(0, 9, (3, 1, 9, 11), generator=g).float()
    labels = torch.nn.functional.interpolate(coarse, size=(45, 55), mode="nearest")[:, 0].long()
    labels[torch.rand(labels.shape, generator=g) < 0.08] = 4  # speckle: many one-pixel regions
    labels[0, :5, :5] = -1
    for min_size in (0, 1, 6, 40, 10_000):
        out, counts = emulated("enforce_connectivity", labels, min_size)
        want, want_counts = cpu("enforce_connectivity", labels, min_size)
        assert torch.equal(out, want), min_size
        assert torch.equal(counts, want_counts), min_size


# ---------------------------------------------------------------------------------------------
# Pooling, histogram, consistency weights


def pool_inputs(seed, B=2, C=3, H=17, W=23, K=12, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(B, C, H, W, generator=g) * 3).to(dtype)
    labels = torch.randint(-1, K - 1, (B, H, W), generator=g)  # K - 1 never used: an empty superpixel
    return x, labels, K


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_pool_forward_and_backward(dtype, reduce):
    x, labels, K = pool_inputs(1, dtype=dtype)
    out, aux = emulated("superpixel_pool", x, labels, K, reduce)
    want, want_aux = cpu("superpixel_pool", x, labels, K, reduce)
    torch.testing.assert_close(out, want, rtol=0, atol=0)  # exact sums (fixed point), same max
    assert torch.equal(aux, want_aux)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    got = emulated("_superpixel_pool_backward", grad, labels, aux, x.shape[2], x.shape[3], reduce)
    torch.testing.assert_close(
        got, cpu("_superpixel_pool_backward", grad, labels, aux, x.shape[2], x.shape[3], reduce), rtol=0, atol=0
    )


def test_pool_edge_cases():
    x, labels, K = pool_inputs(3)
    x[0, 0, 0, 0] = float("nan")
    x[1, 1, 2, 3] = float("inf")
    for reduce in ("sum", "mean", "max"):
        cases = (
            (x, labels, K),
            (x, labels, K + 5),
            (x[:0], labels[:0], K),
            (x[:, :0], labels, K),
            (x, torch.full_like(labels, -1), K),
            (x[:1, :1, :1, :1], labels[:1, :1, :1].clamp_min(0) * 0, 1),
        )
        for args in cases:
            out, aux = emulated("superpixel_pool", *args, reduce)
            want, want_aux = cpu("superpixel_pool", *args, reduce)
            torch.testing.assert_close(out, want, rtol=0, atol=0, equal_nan=True)
            assert torch.equal(aux, want_aux)


def test_pool_rejects_labels_out_of_range():
    x, labels, K = pool_inputs(4)
    labels[1, 3, 4] = K
    for reduce in ("sum", "max"):
        with pytest.raises(ValueError, match="labels"):
            torch.ops.spl_emu.superpixel_pool(x, labels, K, reduce)
    with pytest.raises(ValueError, match="labels"):
        torch.ops.spl_emu.superpixel_unpool(torch.zeros(2, 3, K), labels)


def test_pool_unpool_grid_stride_loops():
    """A plane longer than the x dimension of a plane grid covers (1024 blocks of 256 threads): the
    kernels' stride loops must take over. (More planes than the y dimension holds, 65535, would
    need 16.8 M emulated threads per launch, about a minute here: not in the suite.)"""
    g = torch.Generator().manual_seed(11)
    B, C, H, W = shape = (1, 1, 513, 513)
    K = 5
    x = torch.randn(shape, generator=g)
    labels = torch.randint(-1, K, (B, H, W), generator=g)
    for reduce in ("sum", "max"):  # (mean shares sum's kernels)
        out, aux = emulated("superpixel_pool", x, labels, K, reduce)
        want, want_aux = cpu("superpixel_pool", x, labels, K, reduce)
        torch.testing.assert_close(out, want, rtol=0, atol=0)
        assert torch.equal(aux, want_aux)
        grad = torch.randn(out.shape, generator=g)
        got = emulated("_superpixel_pool_backward", grad, labels, aux, H, W, reduce)
        assert torch.equal(got, cpu("_superpixel_pool_backward", grad, labels, aux, H, W, reduce)), reduce
    f = torch.randn(B, C, K, generator=g)
    assert torch.equal(emulated("superpixel_unpool", f, labels), cpu("superpixel_unpool", f, labels))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_unpool(dtype):
    g = torch.Generator().manual_seed(5)
    f = torch.randn(2, 4, 9, generator=g).to(dtype)
    labels = torch.randint(-1, 9, (2, 13, 19), generator=g)
    out = emulated("superpixel_unpool", f, labels)
    assert torch.equal(out, cpu("superpixel_unpool", f, labels))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("radius", [0, 1, 3])
def test_edge_aware_unpool(dtype, radius):
    g = torch.Generator().manual_seed(6 + radius)
    f = torch.randn(2, 4, 9, generator=g).to(dtype)
    labels = torch.randint(-1, 9, (2, 13, 19), generator=g)
    guide = torch.rand(2, 3, 13, 19, generator=g)
    means = torch.ops.spl.superpixel_pool(guide, labels, 9, "mean")[0]
    out = emulated("edge_aware_unpool", f, labels, guide, means, 0.25, radius)
    # expf on the device and the host may differ in the last bit: close, not identical.
    torch.testing.assert_close(
        out, cpu("edge_aware_unpool", f, labels, guide, means, 0.25, radius), rtol=1e-5, atol=1e-6
    )
    bad = labels.clone()
    bad[1, 5, 5] = 9
    with pytest.raises(ValueError, match="labels must be in"):
        torch.ops.spl_emu.edge_aware_unpool(f, bad, guide, means, 0.25, radius)


def test_histogram_and_consistency_weights():
    g = torch.Generator().manual_seed(6)
    B, H, W, K, n = 2, 21, 27, 15, 5
    labels = torch.randint(-1, K - 2, (B, H, W), generator=g)
    target = torch.randint(0, n, (B, H, W), generator=g)
    target[torch.rand(B, H, W, generator=g) < 0.1] = 255
    hist = emulated("superpixel_histogram", target, labels, K, n, 255)
    assert torch.equal(hist, cpu("superpixel_histogram", target, labels, K, n, 255))
    for tau, gamma in ((0.7, 1.0), (0.3, 2.5), (1.0, 0.0)):
        w, t = emulated("consistency_weights", target, labels, K, n, tau, gamma, 255)
        want_w, want_t = cpu("consistency_weights", target, labels, K, n, tau, gamma, 255)
        torch.testing.assert_close(w, want_w, rtol=0, atol=0)
        assert torch.equal(t, want_t)
    bad = target.clone()
    bad[0, 0, 0] = n  # a class out of range
    with pytest.raises(ValueError):
        torch.ops.spl_emu.superpixel_histogram(bad, labels, K, n, 255)


# ---------------------------------------------------------------------------------------------
# ASAM: adjacency, unary, propagation, and the whole refinement


def blob_labels(seed, B=3, H=23, W=31):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 14, (B, 1, H // 3 + 1, W // 4 + 1), generator=g).float()
    labels = torch.nn.functional.interpolate(coarse, size=(H, W), mode="nearest")[:, 0].long()
    labels[torch.rand(B, H, W, generator=g) < 0.05] = -1
    return labels, torch.full((B,), 15)


@pytest.mark.parametrize("seed", [0, 1])
def test_adjacency(seed):
    labels, counts = blob_labels(seed)
    offset = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    got = emulated("superpixel_adjacency", labels, offset)
    for a, b in zip(got, cpu("superpixel_adjacency", labels, offset)):
        assert torch.equal(a, b)


def test_cam_unary():
    g = torch.Generator().manual_seed(8)
    labels, _ = blob_labels(2, B=2)
    cam = torch.rand(2, 5, *labels.shape[1:], generator=g)
    cam[:, 2] = 0
    present = torch.rand(2, 5, generator=g) > 0.3
    for K in (15, 17):
        got = emulated("_cam_unary", cam, labels, present, K, 0.2, 1e-5)
        torch.testing.assert_close(got, cpu("_cam_unary", cam, labels, present, K, 0.2, 1e-5), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_propagate_and_backward(dtype):
    labels, counts = blob_labels(4)
    graph = spl.superpixel_adjacency(labels, counts)
    g = torch.Generator().manual_seed(9)
    weight = torch.rand(graph.num_edges, generator=g, dtype=dtype)
    x = torch.rand(graph.num_nodes, 6, generator=g, dtype=dtype)
    edge_value, self_value = transition(graph, weight, 1.0)
    args = (graph.indptr, graph.indices, graph.node_offset, edge_value, self_value, x)
    for iters, alpha in ((0, 1.0), (1, 0.5), (7, 0.9), (25, 1.0)):
        got = emulated("sparse_propagate", *args, iters, alpha)  # (iters = 0 still validates the graph)
        # Documented: given the same transition values, the CPU and CUDA kernels compute the same bits.
        assert torch.equal(got, cpu("sparse_propagate", *args, iters, alpha)), (iters, alpha)
        grad = torch.rand(x.shape, generator=g, dtype=dtype)
        back = emulated("_sparse_propagate_backward", grad, *args, iters, alpha, expect_launch=iters > 0)
        want = cpu("_sparse_propagate_backward", grad, *args, iters, alpha)
        for a, b in zip(back, want):
            torch.testing.assert_close(a, b, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-6)


def test_asam_refine_on_emulated_kernels():
    """The whole refinement (SLIC, pooling, adjacency, unary, propagation, unpooling) on the CUDA
    kernels, through spl's public API, against the same on the CPU kernels."""
    image = natural_images()[:2, :, :48, :64].contiguous()
    g = torch.Generator().manual_seed(10)
    cam = torch.rand(2, 3, 12, 16, generator=g) ** 3
    want = spl.asam_refine(image, cam, n_segments=60)
    before = cuda_emu.launches()
    with cuda_emu.emulated_kernels():
        got = spl.asam_refine(image, cam, n_segments=60)
    assert cuda_emu.launches() > before
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert torch.equal(spl.cam_to_mask(got, 0.3), spl.cam_to_mask(want, 0.3))
