"""Builds spl's CUDA kernels for the CUDA emulator (runtime.h) and loads them as ``torch.ops.spl_emu``.

The kernel sources are copied with three rewrites (``translate``):
  - ``kernel<<<grid, block, shared, stream>>>(args);`` becomes
    ``::spl_emu::launch([&] { kernel(args); }, grid, block, shared, stream);`` (the kernel may also
    stand alone on the line before ``<<<``, as clang-format breaks a long launch),
  - ``extern __shared__ T name[];`` becomes a pointer to the launch's dynamic shared memory,
  - ``TORCH_LIBRARY_IMPL(spl, CUDA, m)`` becomes ``TORCH_LIBRARY_IMPL(spl_emu, CPU, m)``,
and are compiled as C++ with runtime.h included first; the schemas (csrc/spl.cpp and every op's
TORCH_LIBRARY_FRAGMENT in csrc/ops/<op>.cpp) are registered again under ``spl_emu``. So
``torch.ops.spl_emu.<op>(cpu tensors)`` runs the CUDA kernel of ``<op>`` on the CPU, next to
``torch.ops.spl.<op>``, the CPU kernel.

Usage: ``python -m tests.cuda_emu.build`` (or ``load()`` from a test). The build is cached under
build/cuda_emu, keyed by the sources, and takes a few minutes the first time on two cores.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CSRC = os.path.join(ROOT, "csrc")

_LAUNCH = re.compile(r"<<<")

# SPL_EMU_ASAN=1: AddressSanitizer in the emulated kernels, so that an out-of-bounds access (an
# "illegal memory access" on a GPU) stops with a report. Python must then start with the ASan
# runtime preloaded: see tools/cuda_emu_asan.sh.
ASAN_FLAGS = ["-fsanitize=address", "-fno-omit-frame-pointer"]


def _matching(text: str, start: int, open_ch: str, close_ch: str) -> int:
    """Index just past the bracket that closes the one at ``start``."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_ch:
            depth += 1
        elif text[i] == close_ch:
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError(f"unbalanced {open_ch}{close_ch} from offset {start}")


def translate(text: str, name: str = "<source>") -> str:
    """The three rewrites of the module docstring; line numbers are kept."""
    out = []
    pos = 0
    while True:
        m = _LAUNCH.search(text, pos)
        if m is None:
            out.append(text[pos:])
            break
        line_start = text.rfind("\n", 0, m.start()) + 1
        if not text[line_start : m.start()].strip() and line_start > 0:
            # clang-format may break a long launch before the configuration, ``kernel<T>`` on one line
            # and ``<<<grid, ...>>>(args);`` on the next: the kernel is then the previous line.
            line_start = text.rfind("\n", 0, line_start - 1) + 1
        indent = len(text[line_start : m.start()]) - len(text[line_start : m.start()].lstrip())
        kernel = text[line_start + indent : m.start()]  # kept as it is, line break included: line numbers
        if not kernel.strip() or not re.fullmatch(r"[\w:<>, \t]+(\n[ \t]*)?", kernel):
            raise ValueError(f"{name}: cannot parse the kernel of the launch at offset {m.start()}: {kernel!r}")
        config_end = text.index(">>>", m.end())
        config = text[m.end() : config_end]
        args_start = config_end + 3
        while text[args_start].isspace():
            args_start += 1
        if text[args_start] != "(":
            raise ValueError(f"{name}: launch without arguments at offset {m.start()}")
        args_end = _matching(text, args_start, "(", ")")
        if text[args_end] != ";":
            raise ValueError(f"{name}: launch not followed by ';' at offset {args_end}")
        out.append(text[pos : line_start + indent])
        out.append(f"::spl_emu::launch([&] {{ {kernel}{text[args_start:args_end]}; }}, {config});")
        pos = args_end + 1
    text = "".join(out)
    text = re.sub(
        r"extern\s+__shared__\s+([\w:]+)\s+(\w+)\s*\[\s*\]\s*;",
        r"\1* \2 = reinterpret_cast<\1*>(::spl_emu::dynamic_shared_memory());",
        text,
    )
    text = re.sub(r"TORCH_LIBRARY_IMPL\(\s*spl\s*,\s*CUDA\s*,", "TORCH_LIBRARY_IMPL(spl_emu, CPU,", text)
    if "<<<" in text or "TORCH_LIBRARY_IMPL(spl," in text:
        raise ValueError(f"{name}: untranslated launch or registration left")
    return text


def _sources_digest() -> str:
    h = hashlib.sha256()
    files = sorted(glob.glob(os.path.join(CSRC, "**", "*"), recursive=True)) + sorted(
        glob.glob(os.path.join(HERE, "**", "*"), recursive=True)
    )
    for f in files:
        cpu_kernel = os.path.relpath(f, CSRC).startswith(os.path.join("ops", "cpu"))  # not built here
        if os.path.isfile(f) and not cpu_kernel and not f.endswith(".pyc") and "__pycache__" not in f:
            h.update(os.path.relpath(f, ROOT).encode())
            with open(f, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()[:16]


def _write_if_changed(path: str, text: str) -> None:
    """Leaves an unchanged file alone, so that ninja does not rebuild it."""
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def emulated_schemas() -> str:
    """The `spl` library under the name `spl_emu`: csrc/spl.cpp (which owns the namespace) followed by
    every op's ``TORCH_LIBRARY_FRAGMENT(spl, m) { ... }`` block from csrc/ops/<op>.cpp. Only the
    blocks are taken: the rest of an op's .cpp is its C++ API, which calls the `spl` ops."""
    with open(os.path.join(CSRC, "spl.cpp")) as f:
        library = re.sub(r"TORCH_LIBRARY\(\s*spl\s*,", "TORCH_LIBRARY(spl_emu,", f.read())
    parts = ["#define SPL_NO_PYTHON_MODULE\n", library]
    fragment = re.compile(r"TORCH_LIBRARY_FRAGMENT\(\s*spl\s*,\s*m\s*\)\s*\{")
    for path in sorted(glob.glob(os.path.join(CSRC, "ops", "*.cpp"))):
        with open(path) as f:
            text = f.read()
        blocks = list(fragment.finditer(text))
        if not blocks:
            raise RuntimeError(f"{path}: no TORCH_LIBRARY_FRAGMENT(spl, m) block (every op's .cpp holds its schema)")
        for match in blocks:
            body_end = _matching(text, match.end() - 1, "{", "}")
            body = text[match.end() : body_end - 1]
            parts.append(f"\n// {os.path.relpath(path, ROOT)}\nTORCH_LIBRARY_FRAGMENT(spl_emu, m) {{{body}}}\n")
    return "".join(parts)


def prepare(build_root: str) -> list:
    """Writes the translated tree under build_root; returns the C++ sources to compile."""
    tree = os.path.join(build_root, "csrc")
    sources = []
    for path in sorted(glob.glob(os.path.join(CSRC, "**", "*"), recursive=True)):
        rel = os.path.relpath(path, CSRC)
        if not os.path.isfile(path) or rel.startswith("ops" + os.sep + "cpu"):
            continue
        with open(path) as f:
            text = f.read()
        if rel.startswith(os.path.join("ops", "cuda")):
            text = translate(text, rel)
            if rel.endswith(".cu"):
                rel += ".cpp"
                sources.append(os.path.join(tree, rel))
        _write_if_changed(os.path.join(tree, rel), text)
    schema_file = os.path.join(tree, "spl_emu_schemas.cpp")
    _write_if_changed(schema_file, emulated_schemas())
    sources.append(schema_file)
    with open(os.path.join(HERE, "selftest.cu")) as f:
        _write_if_changed(os.path.join(tree, "emu_selftest.cu.cpp"), translate(f.read(), "selftest.cu"))
    sources.append(os.path.join(tree, "emu_selftest.cu.cpp"))
    sources.append(os.path.join(HERE, "runtime.cpp"))
    return sources


def load(verbose: bool = False):
    """Builds (if needed) and loads the emulated CUDA kernels; afterwards torch.ops.spl_emu holds them."""
    import torch
    from torch.utils import cpp_extension

    if hasattr(torch.ops, "spl_emu") and hasattr(torch.ops.spl_emu, "slic"):
        return
    asan = os.environ.get("SPL_EMU_ASAN") == "1"
    if asan:
        # This process runs with the ASan runtime preloaded; the compiler it starts must not.
        os.environ.pop("LD_PRELOAD", None)
    digest = _sources_digest()
    build_root = os.path.join(ROOT, "build", "cuda_emu", digest + ("-asan" if asan else ""))
    for old in glob.glob(os.path.join(ROOT, "build", "cuda_emu", "*")):
        if not os.path.basename(old).startswith(digest):  # builds of older sources
            shutil.rmtree(old, ignore_errors=True)
    os.makedirs(build_root, exist_ok=True)
    sources = prepare(os.path.join(build_root, "src"))
    tree = os.path.join(build_root, "src", "csrc")
    cpp_extension.load(
        name="spl_cuda_emu",
        sources=sources,
        extra_cflags=[
            "-O1",
            "-DWITH_CUDA",
            "-ffp-contract=off",
            "-include",
            os.path.join(HERE, "runtime.h"),
            "-Wno-unused-function",
            "-Wno-unused-variable",
        ]
        + ASAN_FLAGS * asan,
        extra_ldflags=ASAN_FLAGS * asan,
        extra_include_paths=[os.path.join(HERE, "include"), tree],
        build_directory=build_root,
        is_python_module=False,
        verbose=verbose,
    )


if __name__ == "__main__":
    load(verbose="-v" in sys.argv)
    import torch

    print("spl_emu ops:", sorted(n for n in dir(torch.ops.spl_emu) if not n.startswith("_") or n.startswith("_c")))
