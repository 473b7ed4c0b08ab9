// spl::superpixel_histogram: counts of pseudo-label classes inside each superpixel, [B, K, num_classes].
// The checks shared by the CPU and CUDA kernels.
#pragma once

#include "ops/check.h"
#include <ATen/core/Tensor.h>

namespace spl {

// C++ API (through the dispatcher). Returns int64 [B, K, num_classes].
at::Tensor superpixel_histogram(const at::Tensor& target, const at::Tensor& labels, int64_t num_superpixels,
                                int64_t num_classes, int64_t ignore_index);

// target, labels: int64 [B, H, W] on one device (values checked by the kernels).
inline void check_superpixel_histogram_args(const at::Tensor& target, const at::Tensor& labels, int64_t num_superpixels,
                                            int64_t num_classes) {
  const char* op = "superpixel_histogram";
  check_target(op, target, num_classes);
  check_labels(op, labels, target.size(0), target.size(1), target.size(2), target.device(), num_superpixels);
}

}  // namespace spl
