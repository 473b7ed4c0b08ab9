// consistency_weights on the CPU: per image, one pass to histogram the pseudo-labels per
// superpixel, one to write weights and transformed labels (ops/consistency_weights.h).
#include "ops/check.h"
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <vector>

#include "ops/consistency_weights.h"
#include "ops/cpu/superpixel_helpers.h"
#include "ops/cpu/parallel.h"

namespace spl {
namespace cpu {
namespace {

std::tuple<at::Tensor, at::Tensor> consistency_weights_cpu(const at::Tensor& target, const at::Tensor& labels,
                                                           int64_t K, int64_t num_classes, double tau, double gamma,
                                                           int64_t ignore_index) {
  const char* op = "consistency_weights";
  check_consistency_weights_args(target, labels, K, num_classes, tau, gamma);
  const int64_t B = target.size(0), H = target.size(1), W = target.size(2), HW = H * W;
  const at::Tensor t = target.contiguous(), lc = labels.contiguous();
  check_label_range(op, lc, K);
  at::Tensor weights = at::empty({B, H, W}, target.options().dtype(at::kFloat));
  at::Tensor transformed = at::empty({B, H, W}, target.options());
  std::atomic<bool> ok{true};
  // Estimated 8 ns per pixel (parallel.h: only decides the splitting).
  parallel_work(B, 8.0 * static_cast<double>(HW), [&](int64_t begin, int64_t end) {
    std::vector<int32_t> hist(K * num_classes);
    std::vector<int64_t> total(K), majority(K);
    std::vector<uint8_t> transform(K);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t* y = t.const_data_ptr<int64_t>() + b * HW;
      const int64_t* l = lc.const_data_ptr<int64_t>() + b * HW;
      std::fill(hist.begin(), hist.end(), 0);
      if (!image_histogram(y, l, HW, num_classes, ignore_index, hist.data())) {
        ok = false;
        continue;
      }
      for (int64_t k = 0; k < K; ++k) {
        bool tr;
        consistency::decide(hist.data() + k * num_classes, num_classes, tau, &total[k], &majority[k], &tr);
        transform[k] = tr;
      }
      float* w = weights.mutable_data_ptr<float>() + b * HW;
      int64_t* out = transformed.mutable_data_ptr<int64_t>() + b * HW;
      for (int64_t p = 0; p < HW; ++p) {
        const int64_t k = l[p], yp = y[p];
        if (k < 0 || yp == ignore_index) {
          w[p] = 0.0f, out[p] = ignore_index;
          continue;
        }
        out[p] = transform[k] ? majority[k] : yp;
        w[p] = consistency::weight(hist[k * num_classes + yp], total[k], transform[k], gamma);
      }
    }
  });
  SPL_CHECK_VALUE(ok, op, ": ", target_range_message(), " (num_classes = ", num_classes,
                  ", ignore_index = ", ignore_index, ")");
  return {weights, transformed};
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(spl, CPU, m) { m.impl("consistency_weights", &cpu::consistency_weights_cpu); }

}  // namespace spl
