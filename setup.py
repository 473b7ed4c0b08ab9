"""Build spl: one extension module, ``spl._C``, holding every ``torch.ops.spl.*`` kernel.

CPU kernels are always built. CUDA kernels (csrc/ops/cuda/*.cu) are added when torch was built
with CUDA and nvcc is found, or when FORCE_CUDA=1 (e.g. a CUDA build on a machine without a GPU).
Environment knobs: FORCE_CUDA=1, FORCE_CPU=1 (skip CUDA even if available), DEBUG=1 (-O0 -g),
NVCC_FLAGS (extra nvcc flags), TORCH_CUDA_ARCH_LIST (GPU architectures, torch's convention).

Build with ``pip install --no-build-isolation .`` so the torch already installed is the one the
extension is compiled against.
"""

import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # pragma: no cover - exercised by hand
    sys.exit(
        "spl: PyTorch is not installed in this environment, and spl's C++/CUDA kernels are "
        "compiled against it.\n"
        "  Install torch first (for example `pip install torch==2.13.0`), then build spl with\n"
        "  `pip install --no-build-isolation .` (without --no-build-isolation pip builds in a\n"
        "  fresh environment that has no torch, or a different one)."
    )


def env_flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def cuda_config():
    """Decide whether to build CUDA kernels; returns (with_cuda, reason)."""
    if env_flag("FORCE_CPU"):
        return False, "FORCE_CPU=1"
    if torch.version.cuda is None:
        if env_flag("FORCE_CUDA"):
            sys.exit(
                f"spl: FORCE_CUDA=1 but the installed torch {torch.__version__} was built without "
                "CUDA, so there is no CUDA runtime to link against. Install a CUDA build of torch."
            )
        return False, f"torch {torch.__version__} has no CUDA"
    if CUDA_HOME is None:
        if env_flag("FORCE_CUDA"):
            sys.exit(
                "spl: FORCE_CUDA=1 but nvcc was not found. Set CUDA_HOME to the CUDA toolkit "
                "(the folder holding bin/nvcc) or put nvcc on the PATH."
            )
        return False, "nvcc not found (set CUDA_HOME)"
    if env_flag("FORCE_CUDA"):
        return True, "FORCE_CUDA=1"
    return True, f"torch CUDA {torch.version.cuda}, nvcc in {CUDA_HOME}"


def extensions():
    debug = env_flag("DEBUG")
    with_cuda, reason = cuda_config()

    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/ops/*.cpp") + glob.glob("csrc/ops/cpu/*.cpp"))
    cuda_sources = sorted(glob.glob("csrc/ops/cuda/*.cu"))

    # -ffp-contract=off / --fmad=false: the SLIC distance must be computed with the same
    # roundings on CPU and GPU (no fused multiply-add contraction), so both give the same labels.
    # -fno-trapping-math / -fno-math-errno change no value; they let GCC vectorise loops with
    # float compares and selects.
    cxx = ["-O0", "-g"] if debug else ["-O3"]
    cxx += ["-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno", "-fvisibility=hidden"]
    # at::parallel_for is OpenMP in torch's CPU builds and expands in our own files: without
    # -fopenmp it silently runs on one thread. libgomp.so.1 is the one torch already loaded.
    cxx += ["-fopenmp"]
    nvcc = ["-O0", "-g", "-G"] if debug else ["-O3", "-lineinfo"]
    nvcc += ["--fmad=false", "--expt-relaxed-constexpr", "-Xcompiler", "-ffp-contract=off"]
    nvcc += os.environ.get("NVCC_FLAGS", "").split()
    define_macros = []  # py_limited_api=True below defines Py_LIMITED_API
    if with_cuda:
        define_macros.append(("WITH_CUDA", None))

    print("spl build configuration:")
    print(f"  torch          {torch.__version__} ({os.path.dirname(torch.__file__)})")
    print(f"  CPU kernels    {len(sources)} C++ files")
    print(
        f"  CUDA kernels   {'yes' if with_cuda else 'no'} ({reason})"
        + (
            f", {len(cuda_sources)} .cu files, arch list {os.environ.get('TORCH_CUDA_ARCH_LIST', 'torch default')}"
            if with_cuda
            else ""
        )
    )
    print(f"  debug          {debug}")

    ext_cls = CUDAExtension if with_cuda else CppExtension
    return [
        ext_cls(
            "spl._C",
            sources + (cuda_sources if with_cuda else []),
            include_dirs=[os.path.join(ROOT, "csrc")],
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=["-fopenmp"],
            py_limited_api=True,
        )
    ]


setup(
    name="spl",
    version="0.1.0",
    description="Superpixels for weakly supervised semantic segmentation: batched SLIC, "
    "superpixel pooling and losses, ASAM refinement, as PyTorch custom ops (CPU and CUDA)",
    packages=find_packages(include=["spl", "spl.*"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension},
    python_requires=">=3.9",
    install_requires=["torch>=2.4", "numpy", "scikit-image>=0.19", "pillow", "tqdm"],
    # bench: the plots of `spl bench`; test: the suite (which draws those plots too, and builds the
    # CUDA emulator of tests/cuda_emu with torch.utils.cpp_extension, which needs ninja)
    extras_require={"test": ["pytest", "matplotlib", "ninja"], "bench": ["matplotlib"]},
    entry_points={"console_scripts": ["spl = spl.cli:main"]},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
