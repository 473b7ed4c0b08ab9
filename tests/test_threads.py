"""Every parallel path of the CPU kernels gives the bits of one thread.

The kernels open a parallel region only for work worth several milliseconds (csrc/ops/cpu/parallel.h),
so on the small inputs of the other tests they run on the calling thread. Here a child process sets
SPL_INLINE_NS=0 and SPL_CHUNK_NS=0 (every region opens, chunks of one unit), and each op runs on
one image and on a batch with 1, 2 and 3 threads: the results must be identical, and match
spl.reference where the op has one."""

import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(r"""
    import numpy as np
    import torch
    import spl
    from spl import reference
    from conftest import collage

    def run(fn):
        out = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            r = fn()
            out.append(r if isinstance(r, tuple) else (r,))
        for a, b in zip(out[0], out[1]):
            assert torch.equal(a, b), fn
        for a, b in zip(out[0], out[2]):
            assert torch.equal(a, b), fn
        return out[0] if len(out[0]) > 1 else out[0][0]

    g = torch.Generator().manual_seed(0)
    for B in (1, 3):
        img = torch.from_numpy(np.stack([collage(s, size=56)[0] for s in range(B)])).permute(0, 3, 1, 2).contiguous()
        labels = run(lambda: spl.slic(img, n_segments=50, compactness=10.0))
        assert torch.equal(labels, reference.slic(img, n_segments=50, compactness=10.0))
        run(lambda: spl.slic(img.float() / 255, n_segments=50, compactness=10.0, convert2lab=False))
        noisy = torch.randint(-1, 40, (B, 56, 56), generator=g)
        run(lambda: spl.enforce_connectivity(noisy, 5))
        K = int(labels.max()) + 1
        x = torch.rand(B, 5, 56, 56, generator=g, dtype=torch.float64, requires_grad=True)
        for reduce in ("mean", "sum", "max"):
            def pool():
                x.grad = None
                y = spl.superpixel_pool(x, labels, K, reduce=reduce)
                (y * torch.arange(y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
                return y.detach(), x.grad.clone()
            y, _ = run(pool)
            assert torch.allclose(y, reference.superpixel_pool(x.detach(), labels, K, reduce=reduce))
        feats = torch.rand(B, 4, K, generator=g)
        run(lambda: spl.superpixel_unpool(feats, labels))
        guide = torch.rand(B, 3, 56, 56, generator=g)
        run(lambda: spl.edge_aware_unpool(feats, labels, guide, 0.2))
        target = torch.randint(0, 6, (B, 56, 56), generator=g)
        target[:, :3] = 255
        run(lambda: spl.superpixel_histogram(target, labels, K, 6))
        run(lambda: spl.consistency_weights(target, labels, K, 6))
        graph = run(lambda: spl.superpixel_adjacency(labels, K))
        w = torch.rand(graph.num_edges, generator=g, dtype=torch.float64, requires_grad=True)
        s = torch.rand(graph.num_nodes, 4, generator=g, dtype=torch.float64, requires_grad=True)
        def propagate():
            w.grad = s.grad = None
            y = spl.sparse_propagate(graph, w, s, 7, 0.8)
            (y * torch.arange(y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
            return y.detach(), w.grad.clone(), s.grad.clone()
        y, _, _ = run(propagate)
        assert torch.allclose(y, reference.sparse_propagate(graph.indptr, graph.indices, w.detach(), s.detach(), 7, 0.8))
        cam = torch.rand(B, 3, 14, 14, generator=g)
        run(lambda: spl.asam_refine(img, cam, n_segments=50))
        run(lambda: spl.asam_refine(img, cam, n_segments=50, mode="diffusion"))
    print("all equal")
""")


def test_every_parallel_path_gives_the_bits_of_one_thread():
    env = dict(os.environ, SPL_INLINE_NS="0", SPL_CHUNK_NS="0")
    result = subprocess.run(
        [sys.executable, "-c", CHILD],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=os.path.dirname(os.path.abspath(__file__)),
    )
    assert result.returncode == 0 and "all equal" in result.stdout, result.stderr[-4000:]
