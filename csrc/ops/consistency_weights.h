// spl::consistency_weights: the local superpixel transformation of a pseudo-label and its
// consistency weights. The rule and the checks shared by the CPU and CUDA kernels.
//
// With h_k the class histogram of superpixel k and n_k its number of labelled pixels:
//   majority m_k = argmax_c h_k(c) (ties: the smaller class); transformed when h_k(m_k) >= tau n_k.
// A labelled pixel p of a transformed superpixel takes class m_k; since the weight is computed on
// the transformed labels, where every labelled pixel of k has class m_k, its weight is 1.
// Otherwise its label stays and its weight is h_k(Y_p) / n_k. Weights are returned to the power
// gamma. Pixels with ignore_index or superpixel -1 keep ignore_index and weigh 0.
#pragma once

#include "ops/check.h"
#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <tuple>

namespace spl {

// C++ API (through the dispatcher). Returns (weights float32 [B, H, W], transformed int64 [B, H, W]).
std::tuple<at::Tensor, at::Tensor> consistency_weights(const at::Tensor& target, const at::Tensor& labels,
                                                       int64_t num_superpixels, int64_t num_classes, double tau,
                                                       double gamma, int64_t ignore_index);

// target, labels: int64 [B, H, W] on one device (values checked by the kernels); tau in [0, 1];
// gamma finite >= 0.
inline void check_consistency_weights_args(const at::Tensor& target, const at::Tensor& labels, int64_t num_superpixels,
                                           int64_t num_classes, double tau, double gamma) {
  const char* op = "consistency_weights";
  check_target(op, target, num_classes);
  SPL_CHECK_VALUE(std::isfinite(tau) && tau >= 0.0 && tau <= 1.0, op, ": tau must be in [0, 1], got ", tau);
  SPL_CHECK_VALUE(std::isfinite(gamma) && gamma >= 0.0, op, ": gamma must be a finite number >= 0, got ", gamma);
  check_labels(op, labels, target.size(0), target.size(1), target.size(2), target.device(), num_superpixels);
}
namespace consistency {

template <typename count_t>
C10_HOST_DEVICE inline void decide(const count_t* hist, int64_t num_classes, double tau, int64_t* total,
                                   int64_t* majority, bool* transform) {
  int64_t n = 0, m = 0;
  for (int64_t c = 0; c < num_classes; ++c) {
    n += hist[c];
    if (hist[c] > hist[m]) m = c;
  }
  *total = n;
  *majority = m;
  *transform = n > 0 && static_cast<double>(hist[m]) >= tau * static_cast<double>(n);
}

// Weight of a labelled pixel whose class has count_y pixels in a superpixel of total pixels.
C10_HOST_DEVICE inline float weight(int64_t count_y, int64_t total, bool transform, double gamma) {
  const float w = transform ? 1.0f : static_cast<float>(count_y) / static_cast<float>(total);
  if (gamma == 1.0) return w;
#ifdef __CUDA_ARCH__
  return static_cast<float>(::pow(static_cast<double>(w), gamma));
#else
  return static_cast<float>(std::pow(static_cast<double>(w), gamma));
#endif
}

}  // namespace consistency
}  // namespace spl
