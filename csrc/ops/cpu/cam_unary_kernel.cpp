// _cam_unary on the CPU (formula: ops/cam_unary.h). One task per image: the image's present
// classes are listed once, then each pixel reads only their planes, and adds its fixed-point
// log-probabilities to the int64 sums of its superpixel ([K][1 + present] per image, so that a
// pixel's additions are adjacent). Pixels are handled in chunks: the per-pixel arithmetic of a
// chunk runs over arrays (vectorisable), the logarithms in one vectorised loop per chunk (log_array).
#include "ops/cam_unary.h"
#include "ops/cpu/vector_math.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>
#include "ops/cpu/parallel.h"

namespace spl {
namespace cpu {
namespace {

constexpr int64_t kChunk = 512;

template <typename scalar_t>
void image_cam_unary(const scalar_t* cam, const int64_t* labels, const bool* present, int64_t C, int64_t HW, int64_t K,
                     scalar_t t, scalar_t floor, double scale, float* out) {
  std::vector<int64_t> classes;  // present classes of this image
  for (int64_t c = 0; c < C; ++c) {
    if (present[c]) classes.push_back(c);
  }
  const int64_t D = 1 + static_cast<int64_t>(classes.size());  // sums per superpixel: background, classes
  std::vector<int64_t> sums(K * D, 0), counts(K, 0);
  const scalar_t lower = std::log(floor) - scalar_t(1), upper = scalar_t(1);  // clamp: see cam_unary.h
  std::vector<scalar_t> total(kChunk), log_total(kChunk), value(kChunk), log_value(kChunk);
  for (int64_t start = 0; start < HW; start += kChunk) {
    const int64_t n = std::min(kChunk, HW - start);
    const int64_t* l = labels + start;
    for (int64_t i = 0; i < n; ++i) total[i] = t;
    for (const int64_t c : classes) {
      const scalar_t* x = cam + c * HW + start;
      for (int64_t i = 0; i < n; ++i) total[i] += x[i];
    }
    log_array(total.data(), log_total.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = l[i];
      if (k >= 0 && k < K) ++counts[k];
    }
    // Background (d = 0), then each present class (d = 1..).
    for (int64_t d = 0; d < D; ++d) {
      const scalar_t* x = d == 0 ? nullptr : cam + classes[d - 1] * HW + start;
      for (int64_t i = 0; i < n; ++i) value[i] = std::max(x ? x[i] : t, floor * total[i]);
      log_array(value.data(), log_value.data(), n);
      for (int64_t i = 0; i < n; ++i) value[i] = log_value[i] - log_total[i];
      for (int64_t i = 0; i < n; ++i) {
        const int64_t k = l[i];
        if (k < 0 || k >= K) continue;
        const scalar_t v = std::fmin(std::fmax(value[i], lower), upper);  // NaN -> lower
        sums[k * D + d] += static_cast<int64_t>(std::nearbyint(static_cast<double>(v) * scale));
      }
    }
  }
  // Means, [1 + C][K]; absent classes and empty superpixels stay 0.
  for (int64_t d = 0; d < D; ++d) {
    float* row = out + (d == 0 ? 0 : 1 + classes[d - 1]) * K;
    for (int64_t k = 0; k < K; ++k) {
      row[k] = counts[k] > 0
                   ? static_cast<float>(static_cast<double>(sums[k * D + d]) / scale / static_cast<double>(counts[k]))
                   : 0.0f;
    }
  }
}

at::Tensor cam_unary_cpu(const at::Tensor& cam, const at::Tensor& labels, const at::Tensor& class_mask, int64_t K,
                         double bg_threshold, double floor) {
  check_cam_unary_args(cam, labels, class_mask, K, bg_threshold, floor);
  const int64_t B = cam.size(0), C = cam.size(1), HW = cam.size(2) * cam.size(3);
  at::Tensor out = at::zeros({B, C + 1, K}, cam.options().dtype(at::kFloat));
  if (B == 0 || K == 0 || HW == 0) return out;
  const at::Tensor x = cam.contiguous(), l = labels.contiguous(), m = class_mask.contiguous();
  const double scale = cam_unary::fixed_scale(floor, HW);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cam_unary_cpu", [&] {
    // Estimated 1.5 ns per pixel and channel (parallel.h: only decides the splitting).
    parallel_work(B, 1.5 * static_cast<double>(C * HW), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        image_cam_unary<scalar_t>(x.const_data_ptr<scalar_t>() + b * C * HW, l.const_data_ptr<int64_t>() + b * HW,
                                  m.const_data_ptr<bool>() + b * C, C, HW, K, static_cast<scalar_t>(bg_threshold),
                                  static_cast<scalar_t>(floor), scale, out.mutable_data_ptr<float>() + b * (C + 1) * K);
      }
    });
  });
  return out;
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(spl, CPU, m) { m.impl("_cam_unary", &cpu::cam_unary_cpu); }

}  // namespace spl
