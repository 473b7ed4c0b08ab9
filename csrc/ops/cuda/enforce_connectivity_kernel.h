// CUDA building blocks of connectivity enforcement, shared by the enforce_connectivity and slic
// CUDA kernels. The rule is in ops/enforce_connectivity.h; results equal the CPU kernel's.
#pragma once

#include <ATen/core/Tensor.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace spl {
namespace cuda {

// labels: [B, H, W] on the device (negative: outside every region), B*H*W < 2^31. Writes labels
// 0..n_b-1 per image (raster order of each region's first pixel, -1 outside) to out [B, H, W] and
// n_b to counts [B]. Regions smaller than min_size are merged.
template <typename label_t>
void connect_regions(const label_t* labels, int64_t batch, int64_t height, int64_t width, int64_t min_size,
                     int64_t* out, int64_t* counts, const at::Device& device, cudaStream_t stream);

// labels: [B, H*W] in [0, num_labels) or -1. Renumbers each image's labels 0..n_b-1 in raster
// order of their first pixel (no connectivity).
void renumber_by_first_pixel(const int32_t* labels, int64_t batch, int64_t pixels, int64_t num_labels, int64_t* out,
                             int64_t* counts, const at::Device& device, cudaStream_t stream);

}  // namespace cuda
}  // namespace spl
