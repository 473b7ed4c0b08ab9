"""Argument checks of the Python API: one rule for every public function, ``spl.*`` and the drivers.

- A value of the wrong type (a string or a bool for a number, a float for a count) raises TypeError.
- A value of the right type outside its range (NaN and infinities included) raises ValueError.
- Both messages start with the function's name and name the argument: ``"slic: compactness must ..."``.

The numeric ranges of an op's own arguments belong to the C++ op (csrc/ops/*.h: it raises the same
ValueError, whoever calls it); the Python wrappers only convert them, keeping Python integers within
int64 (which the op's schema cannot take beyond). Arguments that no op sees (ASAM's options, the loss's
eps) are checked here.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def integer(fn: str, name: str, value, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """``value`` as an int in [low, high] (a bound left None: only int64's)."""
    if isinstance(value, torch.SymInt):  # traced by torch.compile: checked by the op when it runs
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__}")
    value = int(value)
    lo = INT64_MIN if low is None else low
    hi = INT64_MAX if high is None else high
    if not lo <= value <= hi:
        if low is not None and high is not None:
            raise ValueError(f"{fn}: {name} must be in [{low}, {high}], got {value}")
        if value < lo:
            raise ValueError(f"{fn}: {name} must be >= {lo}, got {value}")
        raise ValueError(f"{fn}: {name} must be <= {hi}, got {value}")
    return value


def number(
    fn: str,
    name: str,
    value,
    low: Optional[float] = None,
    high: Optional[float] = None,
    *,
    low_open: bool = False,
    finite: bool = True,
) -> float:
    """``value`` as a float; with ``finite`` (default), finite and in [low, high] (``(low, high]`` with
    ``low_open``). ``finite=False`` only converts (the op checks the value)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: {name} must be a number, got {type(value).__name__}")
    v = float(value)
    if finite and (
        not math.isfinite(v)
        or (low is not None and (v < low or (low_open and v == low)))
        or (high is not None and v > high)
    ):
        bound = "" if low is None else (f" > {low}" if low_open else f" >= {low}")
        bound += "" if high is None else (" and" if low is not None else "") + f" <= {high}"
        raise ValueError(f"{fn}: {name} must be a finite number{bound}, got {value}")
    return v
