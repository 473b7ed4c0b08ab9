// spl::superpixel_pool: features pooled over superpixels (sum, mean or max), and its private
// backward spl::_superpixel_pool_backward. The checks shared by the CPU and CUDA kernels.
#pragma once

#include "ops/check.h"
#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <string>
#include <tuple>

namespace spl {

enum class PoolReduce { kSum, kMean, kMax };

// C++ API (through the dispatcher). Returns (output [B, C, K], aux): aux holds the counts [B, K]
// (int64) for "sum" / "mean", the argmax pixel [B, C, K] (int64, -1: empty) for "max".
std::tuple<at::Tensor, at::Tensor> superpixel_pool(const at::Tensor& x, const at::Tensor& labels,
                                                   int64_t num_superpixels, c10::string_view reduce);

inline PoolReduce parse_reduce(c10::string_view reduce) {
  if (reduce == "sum") return PoolReduce::kSum;
  if (reduce == "mean") return PoolReduce::kMean;
  if (reduce == "max") return PoolReduce::kMax;
  SPL_CHECK_VALUE(false, "superpixel_pool: reduce must be 'sum', 'mean' or 'max', got '", std::string(reduce), "'");
}

// x: float [B, C, H, W]; labels: int64 [B, H, W] on x's device (values checked by the kernels).
inline PoolReduce check_superpixel_pool_args(const at::Tensor& x, const at::Tensor& labels, int64_t num_superpixels,
                                             c10::string_view reduce) {
  const char* op = "superpixel_pool";
  check_features(op, x, 4);
  const PoolReduce r = parse_reduce(reduce);
  check_labels(op, labels, x.size(0), x.size(2), x.size(3), x.device(), num_superpixels);
  return r;
}

}  // namespace spl
