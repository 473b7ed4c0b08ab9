// out[b, c, p] = values[b, c, labels[b, p]], 0 where the label is -1, over a (plane, pixel) grid
// (cuda_helpers.h: plane_blocks): superpixel_unpool (kCheck: labels outside [-1, K) set *error and
// give 0) and the backward of sum and mean pooling (labels already checked by the forward).
#pragma once

#include <cstdint>

#include "ops/cuda/cuda_helpers.h"

namespace spl {
namespace cuda {

template <typename scalar_t, bool kCheck>
__global__ void gather_by_label_kernel(const scalar_t* values, const int64_t* labels, int64_t batch, int64_t channels,
                                       int64_t pixels, int64_t K, scalar_t* out, int* error) {
  SPL_CUDA_PLANES(bc, batch * channels) {
    const int64_t* l = labels + (bc / channels) * pixels;  // one division per plane, not per element
    const scalar_t* v = values + bc * K;
    scalar_t* o = out + bc * pixels;
    SPL_CUDA_PLANE_PIXELS(p, pixels) {
      const int64_t k = l[p];
      if (kCheck && (k < -1 || k >= K)) {
        atomicOr(error, 1);
        o[p] = scalar_t(0);
        continue;
      }
      o[p] = k < 0 ? scalar_t(0) : v[k];
    }
  }
}

}  // namespace cuda
}  // namespace spl
