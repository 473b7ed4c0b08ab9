"""Timing: medians of synchronised calls within a budget, and the device's copy bandwidth (the floor)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, List

import torch

# --------------------------------------------------------------------------------------------- timing


@dataclass
class Timing:
    median: float  # seconds per call
    low: float
    high: float
    runs: int


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(fn: Callable[[int], object], device: str, repeats: int, budget_s: float) -> Timing:
    """Times ``fn(r)`` (r: the call's number, for rotating inputs): one warm-up call, then up to
    ``repeats`` calls, fewer when they would pass ``budget_s`` (at least 3, or 1 for calls slower
    than the budget). Wall-clock time with the device synchronised before and after each call."""

    def once(r: int) -> float:
        _sync(device)
        start = time.perf_counter()
        fn(r)
        _sync(device)
        return time.perf_counter() - start

    first = once(0)
    least = 3 if 3 * first <= budget_s else 1
    times: List[float] = []
    for r in range(1, repeats + 1):
        times.append(once(r))
        if len(times) >= least and sum(times) > budget_s:
            break
    return Timing(statistics.median(times), min(times), max(times), len(times))


def copy_bandwidth(device: str) -> float:
    """Bytes per second of a large device-to-device copy, read and write counted."""
    n = (512 if device.startswith("cuda") else 128) * 2**20
    a = torch.empty(n, dtype=torch.uint8, device=device).fill_(1)
    b = torch.empty_like(a)
    t = measure(lambda r: b.copy_(a), device, 10, 2.0)
    return 2 * n / t.median
