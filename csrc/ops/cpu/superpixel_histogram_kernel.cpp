// superpixel_histogram on the CPU: integer counts, one task per image.
#include "ops/check.h"
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <atomic>

#include "ops/cpu/superpixel_helpers.h"
#include "ops/superpixel_histogram.h"
#include "ops/cpu/parallel.h"

namespace spl {
namespace cpu {
namespace {

at::Tensor superpixel_histogram_cpu(const at::Tensor& target, const at::Tensor& labels, int64_t K, int64_t num_classes,
                                    int64_t ignore_index) {
  const char* op = "superpixel_histogram";
  check_superpixel_histogram_args(target, labels, K, num_classes);
  const int64_t B = target.size(0), H = target.size(1), W = target.size(2), HW = H * W;
  const at::Tensor t = target.contiguous(), lc = labels.contiguous();
  check_label_range(op, lc, K);
  at::Tensor hist = at::zeros({B, K, num_classes}, target.options());
  std::atomic<bool> ok{true};
  // Estimated 3 ns per pixel (parallel.h: only decides the splitting).
  parallel_work(B, 3.0 * static_cast<double>(HW), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      if (!image_histogram(t.const_data_ptr<int64_t>() + b * HW, lc.const_data_ptr<int64_t>() + b * HW, HW, num_classes,
                           ignore_index, hist.mutable_data_ptr<int64_t>() + b * K * num_classes)) {
        ok = false;
      }
    }
  });
  SPL_CHECK_VALUE(ok, op, ": ", target_range_message(), " (num_classes = ", num_classes,
                  ", ignore_index = ", ignore_index, ")");
  return hist;
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(spl, CPU, m) { m.impl("superpixel_histogram", &cpu::superpixel_histogram_cpu); }

}  // namespace spl
