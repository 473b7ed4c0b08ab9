#!/usr/bin/env bash
# Compile-checks every CUDA file with nvcc, without a GPU and without a CUDA build of torch.
#
# The CUDA kernels include only c10/cuda headers (CUDAGuard, CUDAStream, CUDAException) and cub.
# torch's CPU wheels ship those headers but not the generated c10/cuda/impl/cuda_cmake_macros.h
# that CUDAMacros.h includes; we generate that one-line shim in a temporary include folder.
# Usage: tools/check_cuda_compile.sh [arch, default sm_90]
set -euo pipefail
arch=${1:-sm_90}
root=$(cd "$(dirname "$0")/.." && pwd)
nvcc=${NVCC:-nvcc}
command -v "$nvcc" >/dev/null || { echo "check_cuda_compile: nvcc not found" >&2; exit 1; }
torch_include=$(python -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'include'))")
std=$(python -c "import torch.utils.cpp_extension as c, inspect; print('c++20' if 'c++20' in inspect.getsource(c) else 'c++17')")
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
mkdir -p "$shim/c10/cuda/impl"
printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$shim/c10/cuda/impl/cuda_cmake_macros.h"
status=0
for f in "$root"/csrc/ops/cuda/*.cu; do
  echo "nvcc -arch=$arch $(basename "$f")"
  if ! "$nvcc" -c -std="$std" -arch="$arch" --fmad=false --expt-relaxed-constexpr -O2 -DWITH_CUDA \
      -diag-suppress 3306 -Xcompiler -Wno-c++20-extensions \
      -I"$shim" -I"$root/csrc" -I"$torch_include" -I"$torch_include/torch/csrc/api/include" \
      -o "$shim/$(basename "$f").o" "$f"; then
    status=1
  fi
done
[ $status -eq 0 ] && echo "check_cuda_compile: all CUDA files compile for $arch"
exit $status
