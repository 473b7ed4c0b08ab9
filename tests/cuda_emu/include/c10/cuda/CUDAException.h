// CUDA emulator stand-in for c10/cuda/CUDAException.h.
#pragma once
#include "../../../runtime.h"
#include <c10/util/Exception.h>

#define C10_CUDA_CHECK(expr)                                                                  \
  do {                                                                                        \
    const cudaError_t spl_emu_err = (expr);                                                   \
    TORCH_CHECK(spl_emu_err == cudaSuccess, "CUDA error: ", cudaGetErrorString(spl_emu_err)); \
  } while (0)
#define C10_CUDA_KERNEL_LAUNCH_CHECK() C10_CUDA_CHECK(cudaGetLastError())
