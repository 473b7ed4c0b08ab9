// CUDA emulator stand-in for c10/cuda/CUDAGuard.h: there is one (emulated) device.
#pragma once
#include "../../../runtime.h"
#include <c10/core/Device.h>

namespace c10 {
namespace cuda {
struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
  explicit CUDAGuard(int) {}
};
struct OptionalCUDAGuard {
  OptionalCUDAGuard() = default;
  explicit OptionalCUDAGuard(c10::Device) {}
};
}  // namespace cuda
}  // namespace c10
