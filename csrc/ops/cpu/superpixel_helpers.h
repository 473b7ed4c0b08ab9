// CPU helpers shared by the superpixel pooling kernels.
#pragma once

#include "ops/check.h"
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "ops/cpu/parallel.h"

namespace spl {
namespace cpu {

// Raises a ValueError unless every label is in [-1, num_superpixels). labels is contiguous. One
// vectorised pass on the calling thread (or chunks in one region for very large batches):
// at::aminmax would open a region of its own per call, costly on a busy machine.
inline void check_label_range(const char* op, const at::Tensor& labels, int64_t num_superpixels) {
  const int64_t n = labels.numel();
  if (n == 0) return;
  const int64_t* l = labels.const_data_ptr<int64_t>();
  if (num_superpixels >= 0 && all_in_range(l, n, -1, num_superpixels - 1)) return;
  const auto [min, max] = min_max(l, n);
  SPL_CHECK_VALUE(min >= -1 && max < num_superpixels, op, ": ", label_range_message(),
                  ", with num_superpixels = ", num_superpixels, "; got values in [", min, ", ", max, "]");
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

// out[b, c, p] = values[b, c, labels[b, p]], 0 where the label is -1 (labels already checked):
// superpixel_unpool, and the backward of sum and mean pooling. Tiles of pixels, every channel of a
// tile in turn: the tile's labels stay in L1 and are read from memory once, not once per channel
// (int64 labels outweigh a float channel).
template <typename scalar_t>
void gather_by_label(const scalar_t* values, const int64_t* labels, int64_t B, int64_t C, int64_t HW, int64_t K,
                     scalar_t* out) {
  constexpr int64_t kTile = 2048;
  const int64_t tiles = (HW + kTile - 1) / kTile;
  parallel_work(B * tiles, static_cast<double>(kTile * C) * kGatherNs, [&](int64_t begin, int64_t end) {
    for (int64_t bt = begin; bt < end; ++bt) {
      const int64_t b = bt / tiles, p0 = (bt % tiles) * kTile, p1 = std::min(HW, p0 + kTile);
      const int64_t* lb = labels + b * HW;
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* fk = values + (b * C + c) * K;
        scalar_t* ob = out + (b * C + c) * HW;
        for (int64_t p = p0; p < p1; ++p) ob[p] = lb[p] >= 0 ? fk[lb[p]] : scalar_t(0);
      }
    }
  });
}

}  // namespace cpu
}  // namespace spl
