// edge_aware_unpool: superpixel values back to pixels, with soft, colour-guided boundaries.
//
// A pixel p of superpixel l takes a weighted mean of the values of the distinct superpixels found
// in the (2 radius + 1)^2 window around it (its own among them):
//     out[c, p] = sum_k w_k f[c, k] / sum_k w_k,   w_k = exp(-(d_k - d_min) / (2 sigma^2)),
//     d_k = |guide[:, p] - guide_means[:, k]|^2,  d_min = min_k d_k.
// Inside a superpixel (every label of the window equal) this is superpixel_unpool; at a boundary the
// pixel's own colour decides between the superpixels that meet there. Subtracting d_min keeps the
// weights finite (the closest superpixel weighs 1). Labels -1 give 0 and are never candidates.
// The per-pixel rule is written once, here, for the CPU and CUDA kernels.
#pragma once

#include "ops/check.h"
#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace spl {

constexpr int64_t kEdgeUnpoolMaxRadius = 3;
constexpr int kEdgeUnpoolMaxCandidates = (2 * kEdgeUnpoolMaxRadius + 1) * (2 * kEdgeUnpoolMaxRadius + 1);

// C++ API (through the dispatcher).
at::Tensor edge_aware_unpool(const at::Tensor& features, const at::Tensor& labels, const at::Tensor& guide,
                             const at::Tensor& guide_means, double sigma, int64_t radius);

// Shapes, dtypes and devices (values of labels are checked by the kernels).
inline void check_edge_aware_unpool_args(const char* op, const at::Tensor& features, const at::Tensor& labels,
                                         const at::Tensor& guide, const at::Tensor& guide_means, double sigma,
                                         int64_t radius) {
  const auto t = features.scalar_type();
  SPL_CHECK_TYPE(t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble, op,
                 ": features must be float16, bfloat16, float32 or float64, got ", t);
  SPL_CHECK_VALUE(features.dim() == 3, op, ": features must have shape [B, C, K], got ", features.sizes());
  SPL_CHECK_TYPE(labels.scalar_type() == at::kLong, op, ": labels must be an int64 tensor, got ", labels.scalar_type());
  SPL_CHECK_VALUE(labels.dim() == 3 && labels.size(0) == features.size(0), op,
                  ": labels must have shape [B, H, W] with B = ", features.size(0), ", got ", labels.sizes());
  SPL_CHECK_TYPE(guide.scalar_type() == at::kFloat && guide_means.scalar_type() == at::kFloat, op,
                 ": guide and guide_means must be float32, got ", guide.scalar_type(), " and ",
                 guide_means.scalar_type());
  SPL_CHECK_VALUE(guide.dim() == 4 && guide.size(0) == labels.size(0) && guide.size(2) == labels.size(1) &&
                      guide.size(3) == labels.size(2),
                  op, ": guide must have shape [B, D, H, W] matching labels ", labels.sizes(), ", got ", guide.sizes());
  SPL_CHECK_VALUE(guide_means.dim() == 3 && guide_means.size(0) == features.size(0) &&
                      guide_means.size(1) == guide.size(1) && guide_means.size(2) == features.size(2),
                  op, ": guide_means must have shape [B, D, K] = [", features.size(0), ", ", guide.size(1), ", ",
                  features.size(2), "], got ", guide_means.sizes());
  SPL_CHECK_VALUE(labels.device() == features.device() && guide.device() == features.device() &&
                      guide_means.device() == features.device(),
                  op, ": features, labels, guide and guide_means must be on one device");
  SPL_CHECK_VALUE(std::isfinite(sigma) && sigma > 0, op, ": sigma must be a finite number > 0, got ", sigma);
  SPL_CHECK_VALUE(radius >= 0 && radius <= kEdgeUnpoolMaxRadius, op, ": radius must be in [0, ", kEdgeUnpoolMaxRadius,
                  "], got ", radius);
}

// One pixel (y, x) of one image: writes out[c * HW] for c < C. f: [C, K] values, labels: [H, W],
// guide: [D, H, W], means: [D, K]. Labels are in [-1, K) (checked before).
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline void edge_aware_unpool_pixel(const scalar_t* f, const int64_t* labels, const float* guide,
                                                    const float* means, int64_t C, int64_t K, int64_t D, int64_t H,
                                                    int64_t W, int64_t y, int64_t x, float inv_two_var, int64_t radius,
                                                    scalar_t* out) {
  const int64_t HW = H * W, p = y * W + x;
  const int64_t own = labels[p];
  if (own < 0) {
    for (int64_t c = 0; c < C; ++c) out[c * HW] = scalar_t(0);
    return;
  }
  int64_t cand[kEdgeUnpoolMaxCandidates];
  int n = 0;
  cand[n++] = own;
  const int64_t y0 = y - radius < 0 ? 0 : y - radius, y1 = y + radius >= H ? H - 1 : y + radius;
  const int64_t x0 = x - radius < 0 ? 0 : x - radius, x1 = x + radius >= W ? W - 1 : x + radius;
  for (int64_t yy = y0; yy <= y1; ++yy) {
    for (int64_t xx = x0; xx <= x1; ++xx) {
      const int64_t l = labels[yy * W + xx];
      bool seen = l < 0;
      for (int i = 0; i < n && !seen; ++i) seen = cand[i] == l;
      if (!seen) cand[n++] = l;
    }
  }
  if (n == 1) {  // inside a superpixel
    for (int64_t c = 0; c < C; ++c) out[c * HW] = f[c * K + own];
    return;
  }
  float dist[kEdgeUnpoolMaxCandidates];
  float lowest = 0;
  for (int i = 0; i < n; ++i) {
    float d = 0;
    for (int64_t k = 0; k < D; ++k) {
      const float diff = guide[k * HW + p] - means[k * K + cand[i]];
      d += diff * diff;
    }
    dist[i] = d;
    lowest = (i == 0 || d < lowest) ? d : lowest;
  }
  float weight[kEdgeUnpoolMaxCandidates];
  float total = 0;
  for (int i = 0; i < n; ++i) {
    weight[i] = ::expf(-(dist[i] - lowest) * inv_two_var);
    total += weight[i];
  }
  for (int64_t c = 0; c < C; ++c) {
    acc_t s = 0;
    for (int i = 0; i < n; ++i) s += static_cast<acc_t>(weight[i]) * static_cast<acc_t>(f[c * K + cand[i]]);
    out[c * HW] = static_cast<scalar_t>(s / static_cast<acc_t>(total));
  }
}

}  // namespace spl
