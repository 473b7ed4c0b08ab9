// spl::enforce_connectivity: relabel a label map into 4-connected regions, merging small ones.
#pragma once

#include "ops/check.h"
#include <ATen/core/Tensor.h>

#include <tuple>

namespace spl {

// C++ API (goes through the dispatcher, so it runs the CPU or CUDA kernel of `labels`).
std::tuple<at::Tensor, at::Tensor> enforce_connectivity(const at::Tensor& labels, int64_t min_size);

// Checks shared by the kernels; raise c10::ValueError / c10::TypeError with messages for people.
inline void check_enforce_connectivity_args(const at::Tensor& labels, int64_t min_size) {
  SPL_CHECK_TYPE(labels.scalar_type() == at::kLong,
                   "enforce_connectivity: labels must be an int64 tensor, got ", labels.scalar_type());
  SPL_CHECK_VALUE(labels.dim() == 3, "enforce_connectivity: labels must have shape [B, H, W], got ",
                    labels.sizes());
  SPL_CHECK_VALUE(labels.size(1) * labels.size(2) < (int64_t{1} << 31),
                    "enforce_connectivity: images of 2^31 pixels or more are not supported");
  SPL_CHECK_VALUE(min_size >= 0, "enforce_connectivity: min_size must be >= 0, got ", min_size);
}

}  // namespace spl
