// spl::slic: batched SLIC superpixels (the rule: ops/slic_common.h).
#pragma once

#include "ops/check.h"
#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Optional.h>

#include <cmath>
#include <tuple>

#include "ops/slic_common.h"

namespace spl {

// C++ API (goes through the dispatcher). Returns (labels int64 [B, H, W], counts int64 [B]).
std::tuple<at::Tensor, at::Tensor> slic(const at::Tensor& image, int64_t n_segments, double compactness,
                                        int64_t max_num_iter, bool convert2lab, bool enforce_connectivity,
                                        double min_size_factor, at::ArrayRef<double> spacing,
                                        const std::optional<at::Tensor>& mask);

// Everything a kernel needs to know besides the tensors.
struct SlicConfig {
  slic_math::Grid grid;
  int64_t batch = 0, channels = 0;
  int64_t iterations = 0;
  float weight_y = 0.0f, weight_x = 0.0f;  // (compactness / S * spacing)^2
  bool lab = false;
  bool connect = false;
  int64_t min_size = 0;
  int64_t num_centres() const { return grid.num_cells(); }
  int64_t centre_dims() const { return channels + 2; }  // features, y, x
  int64_t stat_dims() const { return channels + 3; }    // feature sums, y sum, x sum, count
};

// Validates the arguments (c10::ValueError / TypeError with a message naming the argument) and
// derives the configuration. Shared by the CPU and CUDA kernels.
inline SlicConfig check_slic_args(const at::Tensor& image, int64_t n_segments, double compactness,
                                  int64_t max_num_iter, bool convert2lab, bool enforce_connectivity,
                                  double min_size_factor, at::ArrayRef<double> spacing,
                                  const std::optional<at::Tensor>& mask) {
  SPL_CHECK_VALUE(image.dim() == 4, "slic: image must have shape [B, C, H, W], got ", image.sizes());
  const auto dtype = image.scalar_type();
  SPL_CHECK_TYPE(dtype == at::kByte || dtype == at::kFloat || dtype == at::kDouble ||
                       dtype == at::kHalf || dtype == at::kBFloat16,
                   "slic: image must be uint8 (0..255) or floating point (0..1), got ", dtype);
  const int64_t B = image.size(0), C = image.size(1), H = image.size(2), W = image.size(3);
  SPL_CHECK_VALUE(C >= 1 && H >= 1 && W >= 1, "slic: image must have at least one channel and one pixel, got shape ",
                    image.sizes());
  SPL_CHECK_VALUE(H * W < (int64_t{1} << 31), "slic: images of 2^31 pixels or more are not supported");
  SPL_CHECK_VALUE(n_segments >= 1 && n_segments <= H * W, "slic: n_segments must be in [1, H*W] = [1, ", H * W,
                    "], got ", n_segments);
  SPL_CHECK_VALUE(std::isfinite(compactness) && compactness >= 1e-6 && compactness <= 1e6,
                    "slic: compactness must be in [1e-6, 1e6], got ", compactness);
  SPL_CHECK_VALUE(max_num_iter >= 1 && max_num_iter <= 10000, "slic: max_num_iter must be in [1, 10000], got ",
                    max_num_iter);
  SPL_CHECK_VALUE(!convert2lab || C == 3, "slic: convert2lab needs 3 (RGB) channels, got ", C);
  SPL_CHECK_VALUE(std::isfinite(min_size_factor) && min_size_factor >= 0.0,
                    "slic: min_size_factor must be a finite number >= 0, got ", min_size_factor);
  SPL_CHECK_VALUE(spacing.size() == 2, "slic: spacing must have 2 entries (y, x), got ", spacing.size());
  for (double s : spacing) {
    SPL_CHECK_VALUE(std::isfinite(s) && s >= 1e-3 && s <= 1e3, "slic: spacing entries must be in [1e-3, 1e3], got ",
                      s);
  }
  if (mask.has_value()) {
    const at::Tensor& m = *mask;
    SPL_CHECK_TYPE(m.scalar_type() == at::kBool, "slic: mask must be a bool tensor, got ", m.scalar_type());
    SPL_CHECK_VALUE(m.dim() == 3 && m.size(0) == B && m.size(1) == H && m.size(2) == W,
                      "slic: mask must have shape [B, H, W] = [", B, ", ", H, ", ", W, "], got ", m.sizes());
    SPL_CHECK_VALUE(m.device() == image.device(), "slic: mask is on ", m.device(), " but image is on ",
                      image.device());
  }

  SlicConfig cfg;
  cfg.grid = slic_math::make_grid(H, W, n_segments);
  cfg.batch = B;
  cfg.channels = C;
  cfg.iterations = max_num_iter;
  const double scale_y = compactness / cfg.grid.step * spacing[0];
  const double scale_x = compactness / cfg.grid.step * spacing[1];
  cfg.weight_y = static_cast<float>(scale_y * scale_y);
  cfg.weight_x = static_cast<float>(scale_x * scale_x);
  cfg.lab = convert2lab;
  cfg.connect = enforce_connectivity;
  // A region can never be larger than the image: clamping the threshold to H * W + 1 ("merge every
  // region that has a neighbour") keeps the conversion to int64 defined for any finite factor (a
  // huge factor overflowed it, and nothing was merged).
  const double min_size = min_size_factor * static_cast<double>(H * W) / static_cast<double>(n_segments);
  cfg.min_size = min_size >= static_cast<double>(H * W) ? H * W + 1 : static_cast<int64_t>(min_size);
  return cfg;
}

}  // namespace spl
