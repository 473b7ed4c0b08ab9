// The local superpixel transformation and consistency weight, shared by the CPU
// and CUDA kernels of consistency_weights.
//
// With h_k the class histogram of superpixel k and n_k its number of labelled pixels:
//   majority m_k = argmax_c h_k(c) (ties: the smaller class); transformed when h_k(m_k) >= tau n_k.
// A labelled pixel p of a transformed superpixel takes class m_k; since the weight is computed on
// the transformed labels, where every labelled pixel of k has class m_k, its weight is 1.
// Otherwise its label stays and its weight is h_k(Y_p) / n_k. Weights are returned to the power
// gamma. Pixels with ignore_index or superpixel -1 keep ignore_index and weigh 0.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace spl {
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
