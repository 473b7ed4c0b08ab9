// Superpixel pooling ops: superpixel_pool (+ backward), superpixel_unpool,
// superpixel_histogram, consistency_weights. Argument checks shared by the CPU and CUDA kernels.
#pragma once

#include "ops/check.h"
#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <string>
#include <tuple>

namespace spl {

enum class PoolReduce { kSum, kMean, kMax };

// C++ API (through the dispatcher).
std::tuple<at::Tensor, at::Tensor> superpixel_pool(const at::Tensor& x, const at::Tensor& labels,
                                                   int64_t num_superpixels, c10::string_view reduce);
at::Tensor superpixel_unpool(const at::Tensor& features, const at::Tensor& labels);
at::Tensor superpixel_histogram(const at::Tensor& target, const at::Tensor& labels, int64_t num_superpixels,
                                int64_t num_classes, int64_t ignore_index);
std::tuple<at::Tensor, at::Tensor> consistency_weights(const at::Tensor& target, const at::Tensor& labels,
                                                       int64_t num_superpixels, int64_t num_classes, double tau,
                                                       double gamma, int64_t ignore_index);

inline PoolReduce parse_reduce(c10::string_view reduce) {
  if (reduce == "sum") return PoolReduce::kSum;
  if (reduce == "mean") return PoolReduce::kMean;
  if (reduce == "max") return PoolReduce::kMax;
  SPL_CHECK_VALUE(false, "superpixel_pool: reduce must be 'sum', 'mean' or 'max', got '", std::string(reduce), "'");
}

// labels: int64 [B, H, W] on `device`, values in [-1, K) (the range is checked by the kernels).
inline void check_labels(const char* op, const at::Tensor& labels, int64_t batch, int64_t height, int64_t width,
                         const at::Device& device, int64_t num_superpixels) {
  SPL_CHECK_TYPE(labels.scalar_type() == at::kLong, op, ": labels must be an int64 tensor, got ",
                   labels.scalar_type());
  SPL_CHECK_VALUE(labels.dim() == 3 && labels.size(0) == batch && labels.size(1) == height &&
                        labels.size(2) == width,
                    op, ": labels must have shape [B, H, W] = [", batch, ", ", height, ", ", width, "], got ",
                    labels.sizes());
  SPL_CHECK_VALUE(labels.device() == device, op, ": labels are on ", labels.device(), " but the input is on ",
                    device);
  SPL_CHECK_VALUE(num_superpixels >= 0, op, ": num_superpixels must be >= 0, got ", num_superpixels);
}

inline void check_features(const char* op, const at::Tensor& x, int64_t dims) {
  const auto t = x.scalar_type();
  SPL_CHECK_TYPE(t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble, op,
                   ": input must be float16, bfloat16, float32 or float64, got ", t);
  SPL_CHECK_VALUE(x.dim() == dims, op, ": input must have ", dims, " dimensions, got shape ", x.sizes());
}

// target: int64 [B, H, W]; classes in [0, num_classes) or ignore_index (checked by the kernels).
inline void check_target(const char* op, const at::Tensor& target, int64_t num_classes) {
  SPL_CHECK_TYPE(target.scalar_type() == at::kLong, op, ": target must be an int64 tensor, got ",
                   target.scalar_type());
  SPL_CHECK_VALUE(target.dim() == 3, op, ": target must have shape [B, H, W], got ", target.sizes());
  SPL_CHECK_VALUE(num_classes >= 1, op, ": num_classes must be >= 1, got ", num_classes);
}

// Messages for values out of range, found by the kernels.
inline const char* label_range_message() {
  return "labels must be in [-1, num_superpixels) (-1: ignored pixel)";
}
inline const char* target_range_message() {
  return "target must hold class indices in [0, num_classes) or ignore_index";
}

}  // namespace spl
