#!/usr/bin/env bash
# Runs pytest on the CUDA kernels in the CUDA emulator with AddressSanitizer: an out-of-bounds read
# or write in a kernel (an "illegal memory access" on a GPU) stops the run with ASan's report.
# Usage: tools/cuda_emu_asan.sh [pytest arguments; default: tests/test_cuda_emulated.py]
# (pytest runs with -s: ASan writes its report to stderr and aborts, so a captured report is lost.)
set -euo pipefail
cd "$(dirname "$0")/.."
asan=$(${CXX:-g++} -print-file-name=libasan.so)
[ -f "$asan" ] || { echo "cuda_emu_asan: libasan not found (g++ -print-file-name=libasan.so)" >&2; exit 1; }
# libstdc++ preloaded too: Python itself does not link it, and ASan's exception interceptor needs
# the real __cxa_throw when it starts (the emulator reports its errors as C++ exceptions).
stdcxx=$(${CXX:-g++} -print-file-name=libstdc++.so)
# Leaks of the Python process are not the kernels' business; torch's own code is not instrumented.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:halt_on_error=1}
export SPL_EMU_ASAN=1
LD_PRELOAD="$asan $stdcxx" python -m pytest -p no:cacheprovider -s "${@:-tests/test_cuda_emulated.py}"
