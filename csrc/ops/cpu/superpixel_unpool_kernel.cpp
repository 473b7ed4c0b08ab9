// superpixel_unpool on the CPU: out[b, c, p] = features[b, c, labels[b, p]] (0 where the label is -1).
#include "ops/check.h"
#include <ATen/Dispatch.h>
#include <algorithm>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "ops/cpu/superpixel_helpers.h"
#include "ops/superpixel_unpool.h"

namespace spl {
namespace cpu {
namespace {

at::Tensor superpixel_unpool_cpu(const at::Tensor& features, const at::Tensor& labels) {
  const char* op = "superpixel_unpool";
  check_superpixel_unpool_args(features, labels);
  const int64_t B = features.size(0), C = features.size(1), K = features.size(2);
  const int64_t H = labels.size(1), W = labels.size(2), HW = H * W;
  const at::Tensor f = features.contiguous(), lc = labels.contiguous();
  check_label_range(op, lc, K);
  at::Tensor out = at::empty({B, C, H, W}, features.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "superpixel_unpool_cpu", [&] {
    gather_by_label(f.const_data_ptr<scalar_t>(), lc.const_data_ptr<int64_t>(), B, C, HW, K,
                    out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(spl, CPU, m) { m.impl("superpixel_unpool", &cpu::superpixel_unpool_cpu); }

}  // namespace spl
