// spl::slic: batched SLIC superpixels. The per-pixel math and the checks shared by the CPU and CUDA
// kernels.
//
// Everything here is written so that the CPU and the GPU compute bit-identical numbers: plain
// IEEE +, -, *, / in a fixed order (the build turns off fused multiply-add contraction on both
// sides), no libm calls whose last bit differs between glibc and CUDA, and integer (fixed-point)
// sums for the cluster centres, so reduction order never matters. Identical distances and
// identical centres give identical labels, run after run and device after device.
#pragma once

#include "ops/check.h"
#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Optional.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>

// Full unrolling of short fixed-count loops, on both compilers.
#if defined(__CUDACC__)
#define SPL_UNROLL _Pragma("unroll")
#elif defined(__GNUC__) && !defined(__clang__)
#define SPL_UNROLL _Pragma("GCC unroll 16")
#else
#define SPL_UNROLL
#endif

namespace spl {
namespace slic_math {

// A pixel compares the centres of the 3x3 grid cells around its own cell; slot s in [0, 9) is
// the neighbour (dy, dx) = (s / 3 - 1, s % 3 - 1). Slot 4 is the pixel's own cell.
constexpr int kSlots = 9;
constexpr int kOwnSlot = 4;

// ---------------------------------------------------------------------------------------------
// Grid geometry: step S = sqrt(H*W / n_segments); round(H/S) x round(W/S) cells;
// cell i along an axis of extent n covers [ceil(i*n/cells), ceil((i+1)*n/cells)).
struct Grid {
  int64_t height = 0, width = 0;
  int64_t cells_y = 0, cells_x = 0;
  double step = 0.0;
  int64_t num_cells() const { return cells_y * cells_x; }
};

inline int64_t round_half_up_clamped(double v, int64_t hi) {
  int64_t r = static_cast<int64_t>(std::floor(v + 0.5));
  return r < 1 ? 1 : (r > hi ? hi : r);
}

inline Grid make_grid(int64_t height, int64_t width, int64_t n_segments) {
  Grid g;
  g.height = height;
  g.width = width;
  g.step = std::sqrt(static_cast<double>(height) * static_cast<double>(width) / static_cast<double>(n_segments));
  g.cells_y = round_half_up_clamped(static_cast<double>(height) / g.step, height);
  g.cells_x = round_half_up_clamped(static_cast<double>(width) / g.step, width);
  return g;
}

C10_HOST_DEVICE inline int64_t cell_of(int64_t coord, int64_t cells, int64_t extent) { return coord * cells / extent; }
C10_HOST_DEVICE inline int64_t cell_begin(int64_t cell, int64_t cells, int64_t extent) {
  return (cell * extent + cells - 1) / cells;
}

// Seed pixel of a cell: the pixel nearest the cell's middle, (2i+1)*n/(2*cells) rounded down,
// kept inside the cell (cells narrower than 2 px).
C10_HOST_DEVICE inline int64_t cell_seed(int64_t cell, int64_t cells, int64_t extent) {
  int64_t lo = cell_begin(cell, cells, extent);
  int64_t hi = cell_begin(cell + 1, cells, extent) - 1;
  int64_t mid = ((2 * cell + 1) * extent) / (2 * cells);
  return mid < lo ? lo : (mid > hi ? hi : mid);
}

// ---------------------------------------------------------------------------------------------
// Fixed-point features. Every feature value is stored as a float that is an exact multiple of
// 1/scale with |value * scale| < 2^22 (scale a power of two), so value * scale converts to an
// int32 exactly and a warp of 32 such ints still fits int32. Centre sums are int64 and exact.
constexpr float kLabScale = 65536.0f;     // |L|, |a|, |b| < 128 for RGB inputs in [0, 1]
constexpr float kUnitScale = 4194304.0f;  // 2^22: values in [0, 1] (uint8 / 255)
constexpr int kQuantBits = 22;

// Power-of-two scale for a channel whose largest magnitude is max_abs: the largest 2^k with
// max_abs * 2^k < 2^22. Exponents are clamped so the scale stays a normal float.
inline float scale_for_max_abs(float max_abs) {
  if (!(max_abs > 0.0f)) return 1.0f;
  int e = 0;
  std::frexp(max_abs, &e);  // max_abs < 2^e
  int k = kQuantBits - e;
  k = k > 100 ? 100 : (k < -100 ? -100 : k);
  return std::ldexp(1.0f, k);
}

C10_HOST_DEVICE inline float round_to_grid(float v, float scale) {
#ifdef __CUDA_ARCH__
  return rintf(v * scale) / scale;
#else
  return std::nearbyint(v * scale) / scale;
#endif
}

// ---------------------------------------------------------------------------------------------
// sRGB (D65) -> CIELAB, the constants scikit-image's rgb2lab uses.

C10_HOST_DEVICE inline uint32_t float_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}
C10_HOST_DEVICE inline float bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

// Cube root of t > 0.008856 by Newton iterations on t^(-1/3), multiplications only, so it is the
// same on every device and vectorises on the CPU. Three steps from the bit-trick seed are within
// 5e-7 relative error (a few ulp) for t in (0.0088, 2): far below a uint8 colour step.
C10_HOST_DEVICE inline float cbrt_positive(float t) {
  float y = bits_float(0x54a2fa8cu - float_bits(t) / 3u);
  for (int i = 0; i < 3; ++i) {
    y = y * (1.33333333f - 0.33333333f * t * y * y * y);
  }
  return t * y * y;
}

C10_HOST_DEVICE inline float lab_f(float t) {
  return t > 0.008856f ? cbrt_positive(t) : 7.787f * t + 0.137931034f;  // 16 / 116
}

// Linear RGB in [0, 1] -> L*a*b*.
C10_HOST_DEVICE inline void linear_rgb_to_lab(float r, float g, float b, float* L, float* A, float* B) {
  // x / 0.95047 and z / 1.08883 (the D65 white), as multiplications by the rounded reciprocals.
  const float x = (0.412453f * r + 0.357580f * g + 0.180423f * b) * 1.05211106f;
  const float y = 0.212671f * r + 0.715160f * g + 0.072169f * b;
  const float z = (0.019334f * r + 0.119193f * g + 0.950227f * b) * 0.91841702f;
  const float fx = lab_f(x), fy = lab_f(y), fz = lab_f(z);
  *L = 116.0f * fy - 16.0f;
  *A = 500.0f * (fx - fy);
  *B = 200.0f * (fy - fz);
}

// sRGB companding, in double so CPU and GPU agree except in the last bit of a double.
// The uint8 path never calls this on the GPU: it uses a table built on the host.
C10_HOST_DEVICE inline float srgb_to_linear(float v) {
  double c = v < 0.0f ? 0.0 : (v > 1.0f ? 1.0 : static_cast<double>(v));
  if (c > 0.04045) {
#ifdef __CUDA_ARCH__
    return static_cast<float>(::pow((c + 0.055) / 1.055, 2.4));
#else
    return static_cast<float>(std::pow((c + 0.055) / 1.055, 2.4));
#endif
  }
  return static_cast<float>(c / 12.92);
}

struct SrgbTable {
  float value[256];
};

inline SrgbTable make_srgb_table() {
  SrgbTable t;
  for (int i = 0; i < 256; ++i) t.value[i] = srgb_to_linear(static_cast<float>(i) / 255.0f);
  return t;
}

// ---------------------------------------------------------------------------------------------
// The SLIC distance D = |v - c|^2 + wy (y - cy)^2 + wx (x - cx)^2, with w = (m/S * spacing)^2.
//
// The argmin over candidates does not change when a term that is the same for every candidate is
// dropped, so the kernels evaluate D minus the pixel's own |v'|^2 + wy y'^2 + wx x'^2:
//     D'(p, k) = K_k + sum_j v'_j a_kj + y' b_ky + x' b_kx
// with K_k = |c'_k|^2 + wy cy'_k^2 + wx cx'_k^2, a = -2 c', b = -2 w c' (positions): C + 2 fused
// multiply-adds per pixel and candidate. Features are centred on the cell's own centre and
// positions taken from the cell's first pixel (the primes), which keeps every magnitude at the
// scale of the local spread, so the expansion loses no useful precision. Fused multiply-adds are
// correctly rounded on every device and the order of operations is fixed, so the CPU and CUDA
// kernels compute identical values. A missing candidate has K = +inf and zero coefficients.

C10_HOST_DEVICE inline float fused_multiply_add(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// Number of coefficients of an expanded candidate: a (C), b_y, b_x, K.
C10_HOST_DEVICE inline int64_t expanded_size(int64_t channels) { return channels + 3; }

// Coefficients of centre [C features, y, x] for the pixels of a cell whose first pixel is
// (y0, x0) and whose features are centred on `reference` (the cell's own centre).
C10_HOST_DEVICE inline void expand_candidate(const float* centre, bool alive, const float* reference, int64_t y0,
                                             int64_t x0, float weight_y, float weight_x, int64_t channels, float* out) {
  if (!alive) {
    for (int64_t j = 0; j < channels + 2; ++j) out[j] = 0.0f;
    out[channels + 2] = INFINITY;
    return;
  }
  float k = 0.0f;
  for (int64_t j = 0; j < channels; ++j) {
    const float c = centre[j] - reference[j];
    out[j] = -2.0f * c;
    k = j == 0 ? c * c : fused_multiply_add(c, c, k);
  }
  const float cy = centre[channels] - static_cast<float>(y0);
  const float cx = centre[channels + 1] - static_cast<float>(x0);
  const float wcy = weight_y * cy, wcx = weight_x * cx;
  k = fused_multiply_add(wcy, cy, k);
  k = fused_multiply_add(wcx, cx, k);
  out[channels] = -2.0f * wcy;
  out[channels + 1] = -2.0f * wcx;
  out[channels + 2] = k;
}

// D' of a pixel with centred features v' and cell-relative position (y', x').
template <int C>
C10_HOST_DEVICE inline float expanded_distance(const float* v, float y, float x, const float* candidate) {
  float d = candidate[C + 2];
  SPL_UNROLL
  for (int c = 0; c < C; ++c) d = fused_multiply_add(v[c], candidate[c], d);
  d = fused_multiply_add(y, candidate[C], d);
  return fused_multiply_add(x, candidate[C + 1], d);
}

// Mean of a fixed-point sum, rounded once: the same double division on CPU and GPU.
C10_HOST_DEVICE inline float fixed_mean(int64_t sum, int64_t count, float scale) {
  return static_cast<float>(static_cast<double>(sum) / static_cast<double>(count) / static_cast<double>(scale));
}

// New centre k of one image: the mean of the pixels that chose it, from the exact statistics
// stats[cell][slot][C+3] (feature sums, y sum, x sum, count) that the 9 cells around k wrote for
// it. The centre stays where it was if no pixel chose it. Sums are integers, so the order of
// additions does not matter.
constexpr int64_t kUpdateChunk = 16;  // statistics summed per pass (a local array)

C10_HOST_DEVICE inline void update_centre(const int64_t* stats, int64_t cells_y, int64_t cells_x, int64_t k,
                                          int64_t channels, const float* scales, float* centre) {
  const int64_t S = channels + 3;
  const int64_t ky = k / cells_x, kx = k % cells_x;
  const int64_t ny0 = ky > 0 ? ky - 1 : 0, ny1 = ky + 1 < cells_y ? ky + 1 : ky;
  const int64_t nx0 = kx > 0 ? kx - 1 : 0, nx1 = kx + 1 < cells_x ? kx + 1 : kx;
  // Sums of statistics [first, first + n), from the cells that can reach centre k.
  auto sum_range = [&](int64_t first, int64_t n, int64_t* out) {
    for (int64_t j = 0; j < n; ++j) out[j] = 0;
    for (int64_t ny = ny0; ny <= ny1; ++ny) {
      for (int64_t nx = nx0; nx <= nx1; ++nx) {
        const int64_t slot = (ky - ny + 1) * 3 + (kx - nx + 1);  // k as seen from cell (ny, nx)
        const int64_t* st = stats + ((ny * cells_x + nx) * kSlots + slot) * S + first;
        for (int64_t j = 0; j < n; ++j) out[j] += st[j];
      }
    }
  };
  int64_t sums[kUpdateChunk];
  sum_range(channels, 3, sums);  // y, x, count
  const int64_t count = sums[2];
  if (count == 0) return;
  centre[channels] = fixed_mean(sums[0], count, 1.0f);
  centre[channels + 1] = fixed_mean(sums[1], count, 1.0f);
  for (int64_t first = 0; first < channels; first += kUpdateChunk) {
    const int64_t n = channels - first < kUpdateChunk ? channels - first : kUpdateChunk;
    sum_range(first, n, sums);
    for (int64_t j = 0; j < n; ++j) centre[first + j] = fixed_mean(sums[j], count, scales[first + j]);
  }
}

}  // namespace slic_math

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
inline SlicConfig check_slic_args(const at::Tensor& image, int64_t n_segments, double compactness, int64_t max_num_iter,
                                  bool convert2lab, bool enforce_connectivity, double min_size_factor,
                                  at::ArrayRef<double> spacing, const std::optional<at::Tensor>& mask) {
  SPL_CHECK_VALUE(image.dim() == 4, "slic: image must have shape [B, C, H, W], got ", image.sizes());
  const auto dtype = image.scalar_type();
  SPL_CHECK_TYPE(
      dtype == at::kByte || dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
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
    SPL_CHECK_VALUE(std::isfinite(s) && s >= 1e-3 && s <= 1e3, "slic: spacing entries must be in [1e-3, 1e3], got ", s);
  }
  if (mask.has_value()) {
    const at::Tensor& m = *mask;
    SPL_CHECK_TYPE(m.scalar_type() == at::kBool, "slic: mask must be a bool tensor, got ", m.scalar_type());
    SPL_CHECK_VALUE(m.dim() == 3 && m.size(0) == B && m.size(1) == H && m.size(2) == W,
                    "slic: mask must have shape [B, H, W] = [", B, ", ", H, ", ", W, "], got ", m.sizes());
    SPL_CHECK_VALUE(m.device() == image.device(), "slic: mask is on ", m.device(), " but image is on ", image.device());
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
