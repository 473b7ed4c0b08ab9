// Class histograms per superpixel on the GPU, shared by superpixel_histogram and consistency_weights.
#pragma once

#include <ATen/core/Tensor.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace spl {
namespace cuda {

constexpr int kBadLabelFlag = 1;
constexpr int kBadTargetFlag = 2;

// hist [B, K, num_classes] (int32 or int64, zeroed) += counts; sets error flags for labels outside
// [-1, K) and targets outside [0, num_classes) that are not ignore_index.
template <typename count_t>
void class_histogram(const int64_t* target, const int64_t* labels, int64_t batch, int64_t pixels, int64_t K,
                     int64_t num_classes, int64_t ignore_index, count_t* hist, int* error, cudaStream_t stream);

// Raises a ValueError for the flags set by class_histogram (synchronises the stream).
void raise_histogram_errors(const char* op, const at::Tensor& error, int64_t K, int64_t num_classes,
                            int64_t ignore_index, cudaStream_t stream);

}  // namespace cuda
}  // namespace spl
