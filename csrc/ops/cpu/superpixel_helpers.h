// CPU helpers shared by the superpixel pooling kernels.
#pragma once

#include "ops/check.h"
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/aminmax.h>

#include <atomic>
#include <cstdint>

#include "ops/superpixel_pool.h"

namespace spl {
namespace cpu {

// Raises a ValueError unless every label is in [-1, num_superpixels).
inline void check_label_range(const char* op, const at::Tensor& labels, int64_t num_superpixels) {
  if (labels.numel() == 0) return;
  const auto [lo, hi] = at::aminmax(labels);
  const int64_t min = lo.item<int64_t>(), max = hi.item<int64_t>();
  SPL_CHECK_VALUE(min >= -1 && max < num_superpixels, op, ": ", label_range_message(), ", with num_superpixels = ",
                    num_superpixels, "; got values in [", min, ", ", max, "]");
}

// Class histogram of one image: hist[k * num_classes + y] += 1 for labelled pixels of superpixel k.
// Returns false if a target value is neither a class nor ignore_index.
template <typename count_t>
bool image_histogram(const int64_t* target, const int64_t* labels, int64_t pixels, int64_t num_classes,
                     int64_t ignore_index, count_t* hist) {
  bool ok = true;
  for (int64_t p = 0; p < pixels; ++p) {
    const int64_t y = target[p], k = labels[p];
    if (y == ignore_index) continue;
    ok &= y >= 0 && y < num_classes;
    if (k >= 0 && y >= 0 && y < num_classes) ++hist[k * num_classes + y];
  }
  return ok;
}

}  // namespace cpu
}  // namespace spl
