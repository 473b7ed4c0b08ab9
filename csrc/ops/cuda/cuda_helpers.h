// Small helpers shared by the CUDA kernels.
//
// Kernel files include only c10/cuda headers (CUDAGuard, CUDAStream, CUDAException) and cub, never
// ATen/cuda/CUDAContext.h: that header pulls in cuBLAS and cuSPARSE, which a toolkit without those
// libraries (and the compile check in CI) does not have.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>

namespace spl {
namespace cuda {

constexpr unsigned kFullMask = 0xFFFFFFFFu;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid size for a grid-stride loop over n items.
inline unsigned blocks_for(int64_t n, int threads) {
  const int64_t blocks = ceil_div(n, threads);
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > (int64_t{1} << 20) ? (int64_t{1} << 20) : blocks));
}

#define SPL_CUDA_1D_LOOP(i, n)                                                           \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// A 2-D grid over `planes` planes (image x channel) of `pixels` elements: blockIdx.y walks the
// planes, blockIdx.x and the threads walk a plane. Kernels over every element of a [B, C, H, W]
// tensor then find plane and pixel without a 64-bit division per element (one such division and
// modulo cost more instructions than the element's loads and store).
inline dim3 plane_blocks(int64_t planes, int64_t pixels, int threads) {
  const int64_t x = ceil_div(pixels, threads);
  return dim3(static_cast<unsigned>(x < 1 ? 1 : (x > 1024 ? 1024 : x)),
              static_cast<unsigned>(planes < 1 ? 1 : (planes > 65535 ? 65535 : planes)));
}

#define SPL_CUDA_PLANES(plane, planes) for (int64_t plane = blockIdx.y; plane < (planes); plane += gridDim.y)
#define SPL_CUDA_PLANE_PIXELS(p, pixels)                                                      \
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < (pixels); \
       p += static_cast<int64_t>(blockDim.x) * gridDim.x)

// Exact integer sum over a full warp (every lane must call it).
__device__ __forceinline__ int32_t warp_sum(int32_t v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  return __reduce_add_sync(kFullMask, v);
#else
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
#endif
}

// Device memory for cub's temporary storage and other scratch, from torch's caching allocator.
inline at::Tensor device_bytes(int64_t bytes, const at::Device& device) {
  return at::empty({bytes > 0 ? bytes : 1}, at::TensorOptions().dtype(at::kByte).device(device));
}

// Copies a few values to the host (synchronises the stream).
template <typename T>
T read_scalar(const T* device_ptr, cudaStream_t stream) {
  T value;
  C10_CUDA_CHECK(cudaMemcpyAsync(&value, device_ptr, sizeof(T), cudaMemcpyDeviceToHost, stream));
  C10_CUDA_CHECK(cudaStreamSynchronize(stream));
  return value;
}

}  // namespace cuda
}  // namespace spl
