import numpy as np
import pytest
import torch

import spl
from spl import reference

from conftest import cpu_and_cuda


def grid(rows):
    """Label map from strings: one character per pixel, '.' = -1."""
    return torch.tensor([[-1 if c == "." else int(c, 36) for c in row] for row in rows], dtype=torch.long)[None]


def run(labels, min_size, device="cpu"):
    out, counts = spl.enforce_connectivity(labels.to(device), min_size, return_counts=True)
    ref, ref_counts = reference.enforce_connectivity(labels, min_size, return_counts=True)
    assert torch.equal(out.cpu(), ref) and torch.equal(counts.cpu(), ref_counts), "kernel and reference differ"
    return out.cpu()


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_splits_disconnected_labels_and_numbers_in_raster_order(device):
    labels = grid(["1121", "1221", "3333"])
    # the two pieces of label 1 become separate regions (4-connectivity); the 2s are one
    assert torch.equal(run(labels, 0, device), grid(["0012", "0112", "3333"]))
    # diagonal contact does not connect
    assert torch.equal(run(grid(["10", "01"]), 0, device), grid(["01", "23"]))


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_merges_into_longest_border(device):
    # the single 'x' touches 'a' on 1 side and 'b' on 3 sides (left, right, below)
    labels = grid(["aaaaa", "bbxbb", "bbbbb"])
    assert torch.equal(run(labels, 2, device), grid(["00000", "11111", "11111"]))


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_tie_goes_to_smaller_label(device):
    # 'x' shares 2 pixel pairs with 'a' (region 0) and 2 with 'b' (region 1): it joins 'a'
    labels = grid(["aab", "axb", "cxb", "ccb"])
    out = run(labels, 3, device)
    assert out[0, 1, 1] == out[0, 0, 0]


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_small_regions_that_choose_each_other_merge_and_chains_follow(device):
    # 'x' and 'y' are small and share their longest borders with each other: they join (and,
    # still small, join 'a' in the next round).
    labels = grid(["aaaaaa", "aaxyaa", "aaxyaa", "aaaaaa"])
    assert torch.equal(run(labels, 5, device), torch.zeros_like(labels))
    # a small region whose only neighbour is another small region: both end in the big one
    labels = grid(["zzzzzz", "zzzzzz", "zzzzyx"])
    assert torch.equal(run(labels, 3, device), torch.zeros_like(labels))


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_isolated_small_regions_stay(device):
    labels = grid(["11..2", "11..2", "....."])
    out = run(labels, 10, device)
    assert torch.equal(out, grid(["00..1", "00..1", "....."]))
    # a whole image smaller than min_size is one region
    assert torch.equal(run(grid(["33", "33"]), 100, device), torch.zeros(1, 2, 2, dtype=torch.long))


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("seed", range(8))
def test_random_maps_match_reference(device, seed):
    g = torch.Generator().manual_seed(seed)
    B = int(torch.randint(1, 4, (1,), generator=g))
    H, W = (int(v) for v in torch.randint(1, 40, (2,), generator=g))
    levels = int(torch.randint(2, 8, (1,), generator=g))
    labels = torch.randint(-1, levels, (B, H, W), generator=g)
    # smooth some of them so that regions come in all sizes
    if seed % 2:
        labels = labels.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, :H, :W].contiguous()
    for min_size in (0, 2, 5, 17, 1000):
        run(labels, min_size, device)
    # no region smaller than min_size, unless it has no neighbour
    out = run(labels, 5, device)
    assert bool((out[labels < 0] == -1).all()) and bool((out[labels >= 0] >= 0).all())


def test_large_label_values_and_dtypes():
    labels = grid(["1122", "1122"]) * 10**12
    assert torch.equal(spl.enforce_connectivity(labels, 0), grid(["0011", "0011"]))
    assert np.array_equal(
        spl.enforce_connectivity((labels[0] // 10**6).numpy().astype(np.int32), 0), grid(["0011", "0011"])[0].numpy()
    )
    assert torch.equal(
        spl.enforce_connectivity(labels.int() * 0 + grid(["1122", "1122"]).int(), 0), grid(["0011", "0011"])
    )


def test_empty_and_bad_inputs():
    out, counts = spl.enforce_connectivity(torch.zeros(0, 4, 4, dtype=torch.long), 3, return_counts=True)
    assert out.shape == (0, 4, 4) and counts.shape == (0,)
    with pytest.raises(TypeError, match="integer"):
        spl.enforce_connectivity(torch.zeros(1, 4, 4), 0)
    with pytest.raises(ValueError, match="shape"):
        spl.enforce_connectivity(torch.zeros(4, dtype=torch.long), 0)
    with pytest.raises(ValueError, match=">= -1"):
        spl.enforce_connectivity(torch.full((1, 2, 2), -5), 0)
    with pytest.raises(ValueError, match="min_size"):
        spl.enforce_connectivity(torch.zeros(1, 2, 2, dtype=torch.long), -1)
    with pytest.raises(TypeError, match="int64"):
        torch.ops.spl.enforce_connectivity(torch.zeros(1, 2, 2, dtype=torch.int32), 0)


def test_opcheck_and_compile():
    labels = torch.randint(0, 3, (2, 9, 11), generator=torch.Generator().manual_seed(0))
    torch.library.opcheck(torch.ops.spl.enforce_connectivity.default, (labels, 4))

    @torch.compile(fullgraph=True, backend="eager")
    def f(x):
        return spl.enforce_connectivity(x, 4)

    assert torch.equal(f(labels), spl.enforce_connectivity(labels, 4))
