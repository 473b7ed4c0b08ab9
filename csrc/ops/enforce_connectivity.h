// spl::enforce_connectivity: relabel a label map into 4-connected regions, merging small ones. The
// merge rule and the checks shared by the CPU and CUDA kernels (which slic's kernels use too).
//
// Regions are the 4-connected components of equal labels. A region is identified by its first
// pixel in raster order, so "smaller region id" means "comes first in the image" and is also the
// order of the final contiguous labels. Merging runs in rounds; in each round, simultaneously:
//   1. every region smaller than min_size that has a neighbour picks the neighbour with which it
//      shares the longest border (number of 4-adjacent pixel pairs; ties: the smaller id);
//   2. two regions that picked each other join, under the smaller id;
//   3. chains are followed to their end, and each merged group takes the smallest id among its
//      members.
// Rounds repeat until no region smaller than min_size has a neighbour. A region is never merged
// otherwise, so a small region survives only where it has no neighbour at all (a whole image, or
// an island of a mask).
#pragma once

#include "ops/check.h"
#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <cstdint>
#include <tuple>

namespace spl {

// C++ API (goes through the dispatcher, so it runs the CPU or CUDA kernel of `labels`).
std::tuple<at::Tensor, at::Tensor> enforce_connectivity(const at::Tensor& labels, int64_t min_size);

// Checks shared by the kernels; raise c10::ValueError / c10::TypeError with messages for people.
inline void check_enforce_connectivity_args(const at::Tensor& labels, int64_t min_size) {
  SPL_CHECK_TYPE(labels.scalar_type() == at::kLong, "enforce_connectivity: labels must be an int64 tensor, got ",
                 labels.scalar_type());
  SPL_CHECK_VALUE(labels.dim() == 3, "enforce_connectivity: labels must have shape [B, H, W], got ", labels.sizes());
  SPL_CHECK_VALUE(labels.size(1) * labels.size(2) < (int64_t{1} << 31),
                  "enforce_connectivity: images of 2^31 pixels or more are not supported");
  SPL_CHECK_VALUE(min_size >= 0, "enforce_connectivity: min_size must be >= 0, got ", min_size);
}

namespace connectivity {

// A candidate merge target packed so that the larger packed value is the better choice:
// longer border first, then smaller target id.
C10_HOST_DEVICE inline uint64_t pack_choice(uint32_t border, uint32_t target) {
  return (static_cast<uint64_t>(border) << 32) | static_cast<uint64_t>(0xFFFFFFFFu - target);
}
C10_HOST_DEVICE inline uint32_t choice_target(uint64_t packed) {
  return 0xFFFFFFFFu - static_cast<uint32_t>(packed & 0xFFFFFFFFull);
}

C10_HOST_DEVICE inline uint64_t pack_pair(uint32_t source, uint32_t target) {
  return (static_cast<uint64_t>(source) << 32) | static_cast<uint64_t>(target);
}
C10_HOST_DEVICE inline uint32_t pair_source(uint64_t key) { return static_cast<uint32_t>(key >> 32); }
C10_HOST_DEVICE inline uint32_t pair_target(uint64_t key) { return static_cast<uint32_t>(key & 0xFFFFFFFFull); }

}  // namespace connectivity
}  // namespace spl
