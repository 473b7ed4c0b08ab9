// spl::superpixel_unpool: per-superpixel features back to the pixels, out[b, :, p] =
// features[b, :, labels[b, p]] (0 where the label is -1). The checks shared by the CPU and CUDA kernels.
#pragma once

#include "ops/check.h"
#include <ATen/core/Tensor.h>

namespace spl {

// C++ API (through the dispatcher). Returns [B, C, H, W].
at::Tensor superpixel_unpool(const at::Tensor& features, const at::Tensor& labels);

// features: float [B, C, K]; labels: int64 [B, H, W] on the features' device (values checked by the kernels).
inline void check_superpixel_unpool_args(const at::Tensor& features, const at::Tensor& labels) {
  const char* op = "superpixel_unpool";
  check_features(op, features, 3);
  SPL_CHECK_VALUE(labels.dim() == 3, op, ": labels must have shape [B, H, W], got ", labels.sizes());
  check_labels(op, labels, features.size(0), labels.size(1), labels.size(2), features.device(), features.size(2));
}

}  // namespace spl
