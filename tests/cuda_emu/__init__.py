"""spl's CUDA kernels, run on the CPU by an emulator (runtime.h, build.py), for machines without a GPU.

``emulated_kernels()`` makes the emulated CUDA kernels the CPU kernels of ``torch.ops.spl`` for as
long as the context lasts: then every spl function on CPU tensors (autograd, ``asam_refine``, the
references comparisons of the test suite) runs the CUDA code. ``SPL_EMULATE_CUDA=1 python -m pytest``
runs the whole suite that way (tests/conftest.py).
"""

from __future__ import annotations

import contextlib

from .build import load


def op_names():
    import torch

    load()
    names = []
    for schema in torch._C._jit_get_all_schemas():
        if (
            schema.name.startswith("spl_emu::")
            and not schema.name.startswith("spl_emu::_emu")
            and schema.name != "spl_emu::_cuda_version"
        ):
            names.append(schema.name.split("::", 1)[1])
    return sorted(set(names))


def set_schedule(order: str = "forward", seed: int = 0, preempt: bool = False) -> None:
    """Order of the emulated threads and blocks: forward, reverse or shuffle (seeded); with
    ``preempt`` a thread also yields at every atomic."""
    import torch

    load()
    torch.ops.spl_emu._emu_schedule(order, seed, preempt)


def launches() -> int:
    """Kernels the emulator has launched in this process (on this thread)."""
    import torch

    load()
    return int(torch.ops.spl_emu._emu_launches())


@contextlib.contextmanager
def emulated_kernels():
    """Within the context, torch.ops.spl's CPU kernels are the emulated CUDA kernels."""
    import warnings

    import torch

    names = op_names()
    lib = torch.library.Library("spl", "IMPL")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "overriding a previously registered kernel": that is the point
        for name in names:
            lib.impl(name, getattr(torch.ops.spl_emu, name).default, "CPU")
    try:
        yield names
    finally:
        lib._destroy()
