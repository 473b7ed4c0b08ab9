// CUDA emulator stand-in for c10/cuda/CUDAStream.h: one stream, the null stream.
#pragma once
#include "../../../runtime.h"

namespace c10 {
namespace cuda {
struct CUDAStream {
  cudaStream_t stream() const { return nullptr; }
  operator cudaStream_t() const { return nullptr; }
};
inline CUDAStream getCurrentCUDAStream(int = -1) { return {}; }
}  // namespace cuda
}  // namespace c10
