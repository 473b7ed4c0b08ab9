// edge_aware_unpool on the CPU: rows of all images in parallel, each pixel by the shared rule of
// ops/edge_aware_unpool.h (no reduction across pixels: results do not depend on the thread count).
#include "ops/check.h"
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "ops/cpu/superpixel_helpers.h"
#include "ops/edge_aware_unpool.h"
#include "ops/cpu/parallel.h"

namespace spl {
namespace cpu {
namespace {

at::Tensor edge_aware_unpool_cpu(const at::Tensor& features, const at::Tensor& labels, const at::Tensor& guide,
                                 const at::Tensor& guide_means, double sigma, int64_t radius) {
  const char* op = "edge_aware_unpool";
  check_edge_aware_unpool_args(op, features, labels, guide, guide_means, sigma, radius);
  const int64_t B = features.size(0), C = features.size(1), K = features.size(2);
  const int64_t H = labels.size(1), W = labels.size(2), D = guide.size(1);
  const at::Tensor f = features.contiguous(), lc = labels.contiguous(), g = guide.contiguous(),
                   m = guide_means.contiguous();
  check_label_range(op, lc, K);
  at::Tensor out = at::empty({B, C, H, W}, features.options());
  if (out.numel() == 0) return out;
  const float inv_two_var = static_cast<float>(1.0 / (2.0 * sigma * sigma));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "edge_aware_unpool_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* fp = f.const_data_ptr<scalar_t>();
    const int64_t* lp = lc.const_data_ptr<int64_t>();
    const float* gp = g.const_data_ptr<float>();
    const float* mp = m.const_data_ptr<float>();
    scalar_t* op_ = out.mutable_data_ptr<scalar_t>();
    // Rows; estimated 1 ns per pixel, channel and window pixel (parallel.h: only decides the splitting).
    const double row_ns = static_cast<double>(W * (C + D) * (2 * radius + 1) * (2 * radius + 1));
    parallel_work(B * H, row_ns, [&](int64_t begin, int64_t end) {
      for (int64_t by = begin; by < end; ++by) {
        const int64_t b = by / H, y = by % H;
        for (int64_t x = 0; x < W; ++x) {
          edge_aware_unpool_pixel<scalar_t, acc_t>(fp + b * C * K, lp + b * H * W, gp + b * D * H * W, mp + b * D * K,
                                                   C, K, D, H, W, y, x, inv_two_var, radius,
                                                   op_ + b * C * H * W + y * W + x);
        }
      }
    });
  });
  return out;
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(spl, CPU, m) { m.impl("edge_aware_unpool", &cpu::edge_aware_unpool_cpu); }

}  // namespace spl
