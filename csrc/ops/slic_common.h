// Per-pixel SLIC math shared by the CPU and CUDA kernels.
//
// Everything here is written so that the CPU and the GPU compute bit-identical numbers: plain
// IEEE +, -, *, / in a fixed order (the build turns off fused multiply-add contraction on both
// sides), no libm calls whose last bit differs between glibc and CUDA, and integer (fixed-point)
// sums for the cluster centres, so reduction order never matters. Identical distances and
// identical centres give identical labels, run after run and device after device.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <cstring>

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
// Grid geometry (SPEC section 1): step S = sqrt(H*W / n_segments); round(H/S) x round(W/S) cells;
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
  g.step = std::sqrt(static_cast<double>(height) * static_cast<double>(width) /
                     static_cast<double>(n_segments));
  g.cells_y = round_half_up_clamped(static_cast<double>(height) / g.step, height);
  g.cells_x = round_half_up_clamped(static_cast<double>(width) / g.step, width);
  return g;
}

C10_HOST_DEVICE inline int64_t cell_of(int64_t coord, int64_t cells, int64_t extent) {
  return coord * cells / extent;
}
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
constexpr float kLabScale = 65536.0f;        // |L|, |a|, |b| < 128 for RGB inputs in [0, 1]
constexpr float kUnitScale = 4194304.0f;     // 2^22: values in [0, 1] (uint8 / 255)
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
C10_HOST_DEVICE inline void linear_rgb_to_lab(float r, float g, float b, float* L, float* A,
                                              float* B) {
  const float x = (0.412453f * r + 0.357580f * g + 0.180423f * b) / 0.95047f;
  const float y = 0.212671f * r + 0.715160f * g + 0.072169f * b;
  const float z = (0.019334f * r + 0.119193f * g + 0.950227f * b) / 1.08883f;
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
// The SLIC distance D = |v - c|^2 + (m/S)^2 |xy - xy_c|^2, written as
// |v - c|^2 + ((y - y_c) * scale_y)^2 + ((x - x_c) * scale_x)^2 with scale = m/S * spacing.
// Differences are taken before scaling, so two centres at the same distance from a pixel give
// exactly the same D (the tie then goes to the lower slot, as in the reference). Fused
// multiply-adds are explicit (correctly rounded on every device, vectorised on the CPU); the
// order of operations is part of the contract between the CPU and CUDA kernels.

C10_HOST_DEVICE inline float fused_multiply_add(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// Adds the position term of pixel (y, x) and centre (cy, cx) to a colour distance d.
C10_HOST_DEVICE inline float add_position_distance(float d, float y, float x, float cy, float cx, float scale_y,
                                                   float scale_x) {
  const float ty = (y - cy) * scale_y;
  d = fused_multiply_add(ty, ty, d);
  const float tx = (x - cx) * scale_x;
  return fused_multiply_add(tx, tx, d);
}

// centre: [C features, y, x].
template <int C>
C10_HOST_DEVICE inline float slic_distance(const float* v, const float* centre, float y, float x, float scale_y,
                                           float scale_x) {
  float t = v[0] - centre[0];
  float d = t * t;
  SPL_UNROLL
  for (int c = 1; c < C; ++c) {
    t = v[c] - centre[c];
    d = fused_multiply_add(t, t, d);
  }
  return add_position_distance(d, y, x, centre[C], centre[C + 1], scale_y, scale_x);
}

// Mean of a fixed-point sum, rounded once: the same double division on CPU and GPU.
C10_HOST_DEVICE inline float fixed_mean(int64_t sum, int64_t count, float scale) {
  return static_cast<float>(static_cast<double>(sum) / static_cast<double>(count) /
                            static_cast<double>(scale));
}

// New centre k of one image: the mean of the pixels that chose it, from the exact statistics
// stats[cell][slot][C+3] (feature sums, y sum, x sum, count) that the 9 cells around k wrote for
// it. The centre stays where it was if no pixel chose it.
C10_HOST_DEVICE inline void update_centre(const int64_t* stats, int64_t cells_y, int64_t cells_x, int64_t k,
                                          int64_t channels, const float* scales, float* centre) {
  const int64_t S = channels + 3;
  const int64_t ky = k / cells_x, kx = k % cells_x;
  auto total = [&](int64_t j) {
    int64_t sum = 0;
    for (int64_t ny = ky - 1; ny <= ky + 1; ++ny) {
      for (int64_t nx = kx - 1; nx <= kx + 1; ++nx) {
        if (ny < 0 || ny >= cells_y || nx < 0 || nx >= cells_x) continue;
        const int64_t slot = (ky - ny + 1) * 3 + (kx - nx + 1);  // k as seen from cell (ny, nx)
        sum += stats[((ny * cells_x + nx) * kSlots + slot) * S + j];
      }
    }
    return sum;
  };
  const int64_t count = total(channels + 2);
  if (count == 0) return;
  for (int64_t c = 0; c < channels; ++c) centre[c] = fixed_mean(total(c), count, scales[c]);
  centre[channels] = fixed_mean(total(channels), count, 1.0f);
  centre[channels + 1] = fixed_mean(total(channels + 1), count, 1.0f);
}

}  // namespace slic_math
}  // namespace spl
