// SLIC on the CPU. The structure mirrors the CUDA kernel (ops/cuda/slic_kernel.cu):
//   1. features: image -> fixed-point int32 planes (CIELAB for RGB), stored cell by cell so that
//      the pixels of a grid cell are contiguous;
//   2. seeds: one centre per grid cell;
//   3. iterations: every cell assigns its pixels to the best of the 9 surrounding centres and
//      writes exact integer statistics per (cell, slot); every centre then sums the 9 cells that
//      can reach it and takes the mean. The last iteration writes labels instead;
//   4. labels: connectivity enforcement (or a plain renumbering) gives labels 0..n-1.
// Threads take whole images when there are enough images, else the cells of one image; integer
// statistics make the result independent of that choice.
#include "ops/check.h"
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <atomic>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "ops/cpu/enforce_connectivity_kernel.h"
#include "ops/cpu/parallel.h"
#include "ops/cpu/scratch_buffer.h"
#include "ops/cpu/target_clones.h"
#include "ops/slic.h"

// The hot loops are compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time
// (target_clones.h); the labels are the same in every clone.

namespace spl {
namespace {

using namespace spl::slic_math;
using cpu::inline_ns;
using cpu::parallel_items;
using cpu::parallel_work;

// Estimated single-thread costs (ns; measured on a 2-core AVX2 EPYC, uint8 RGB). They only decide how
// the work is split among threads (parallel.h), never the result.
constexpr double kPlaneScanNs = 0.5;  // per value: finiteness, channel maxima
constexpr double kConvertNs = 3.0;    // per pixel and channel: conversion to fixed-point features
constexpr double kAssignNs = 2.0;     // per pixel and feature dimension, one iteration's assignment
constexpr double kUpdateNs = 10.0;    // per centre and statistic: a centre's update
constexpr double kConnectNs = 15.0;   // per pixel: connectivity enforcement

// One iteration's assignment of one image.
inline double assign_ns(const SlicConfig& cfg) {
  return kAssignNs * static_cast<double>(cfg.centre_dims() * cfg.grid.height * cfg.grid.width);
}

// Pixels of a cell are processed in chunks of at most this many, so per-chunk int32 sums of
// 22-bit fixed-point values cannot overflow (256 * 2^22 = 2^30).
constexpr int64_t kChunk = 256;

// ------------------------------------------------------------------------------------------------
// Cell-major layout: the pixels of cell (cy, cx) are stored contiguously, in raster order within
// the cell, starting at pixel offset y0 * W + (y1 - y0) * x0.
struct Cell {
  int64_t y0, y1, x0, x1;
  int64_t width() const { return x1 - x0; }
  int64_t size() const { return (y1 - y0) * (x1 - x0); }
  int64_t offset(int64_t image_width) const { return y0 * image_width + (y1 - y0) * x0; }
};

Cell cell_at(const Grid& g, int64_t cy, int64_t cx) {
  return {cell_begin(cy, g.cells_y, g.height), cell_begin(cy + 1, g.cells_y, g.height),
          cell_begin(cx, g.cells_x, g.width), cell_begin(cx + 1, g.cells_x, g.width)};
}

// Calls f(i, y, x, len) for the row segments of the cell's pixels [start, start + n), where i is
// the position in that range and (y, x) the first pixel of the segment.
template <typename F>
inline void for_segments(const Cell& cell, int64_t start, int64_t n, F&& f) {
  const int64_t w = cell.width();
  int64_t y = cell.y0 + start / w, x = cell.x0 + start % w;
  for (int64_t i = 0; i < n;) {
    const int64_t len = std::min(cell.x1 - x, n - i);
    f(i, y, x, len);
    i += len;
    x = cell.x0;
    ++y;
  }
}

// ------------------------------------------------------------------------------------------------
// Scratch memory reused from call to call (scratch_buffer.h).
using cpu::Buffer;
using cpu::kMaxKeptBytes;

struct Workspace {
  Buffer<int32_t> q, labels;
  Buffer<int64_t> stats;
  Buffer<int8_t> slots;
  bool large() const { return q.bytes() + labels.bytes() + stats.bytes() + slots.bytes() > kMaxKeptBytes; }
};

Workspace& thread_workspace() {
  thread_local Workspace workspace;
  return workspace;
}

// ------------------------------------------------------------------------------------------------
// 1. Features.

template <typename scalar_t>
float to_float(scalar_t v) {
  return static_cast<float>(v);
}

C10_ALWAYS_INLINE int32_t quantize(float v, float scale) { return static_cast<int32_t>(std::nearbyint(v * scale)); }

// uint8 sRGB -> fixed-point L*a*b*. Indices are int32 so that the table lookups vectorise as
// gathers (AVX2/AVX-512), in the same loop as the arithmetic.
SPL_TARGET_CLONES
void lab_from_uint8(int64_t n, const int32_t* __restrict r, const int32_t* __restrict g, const int32_t* __restrict b,
                    const float* __restrict table, int32_t* __restrict L, int32_t* __restrict A,
                    int32_t* __restrict B) {
  for (int64_t i = 0; i < n; ++i) {
    float l, a, bb;
    linear_rgb_to_lab(table[r[i]], table[g[i]], table[b[i]], &l, &a, &bb);
    L[i] = quantize(l, kLabScale);
    A[i] = quantize(a, kLabScale);
    B[i] = quantize(bb, kLabScale);
  }
}

// Linear RGB -> fixed-point L*a*b* (float images: the sRGB curve is evaluated per pixel first).
SPL_TARGET_CLONES
void lab_from_linear(int64_t n, const float* __restrict r, const float* __restrict g, const float* __restrict b,
                     int32_t* __restrict L, int32_t* __restrict A, int32_t* __restrict B) {
  for (int64_t i = 0; i < n; ++i) {
    float l, a, bb;
    linear_rgb_to_lab(r[i], g[i], b[i], &l, &a, &bb);
    L[i] = quantize(l, kLabScale);
    A[i] = quantize(a, kLabScale);
    B[i] = quantize(bb, kLabScale);
  }
}

// True if every value of the image that a pixel inside the mask uses is finite.
template <typename scalar_t>
bool all_finite(const scalar_t* img, const bool* mask, int64_t B, int64_t C, int64_t HW) {
  std::atomic<bool> ok{true};
  parallel_work(B * C, kPlaneScanNs * static_cast<double>(HW), [&](int64_t begin, int64_t end) {
    for (int64_t bc = begin; bc < end; ++bc) {
      const scalar_t* p = img + bc * HW;
      const bool* m = mask ? mask + (bc / C) * HW : nullptr;
      bool good = true;
      for (int64_t i = 0; i < HW; ++i) good &= (m && !m[i]) || std::isfinite(to_float(p[i]));
      if (!good) ok = false;
    }
  });
  return ok;
}

// Fixed-point scales [B, C]: CIELAB and uint8 have fixed ranges; other floats are scaled by the
// largest magnitude of their channel (inside the mask).
template <typename scalar_t>
void feature_scales(const SlicConfig& cfg, const scalar_t* img, const bool* mask, float* scales) {
  const int64_t B = cfg.batch, C = cfg.channels, HW = cfg.grid.height * cfg.grid.width;
  if (cfg.lab || std::is_same<scalar_t, uint8_t>::value) {
    std::fill(scales, scales + B * C, cfg.lab ? kLabScale : kUnitScale);
    return;
  }
  parallel_work(B * C, kPlaneScanNs * static_cast<double>(HW), [&](int64_t begin, int64_t end) {
    for (int64_t bc = begin; bc < end; ++bc) {
      const scalar_t* src = img + bc * HW;
      const bool* m = mask ? mask + (bc / C) * HW : nullptr;
      float max_abs = 0.0f;
      for (int64_t i = 0; i < HW; ++i) {
        if (!m || m[i]) max_abs = std::max(max_abs, std::abs(to_float(src[i])));
      }
      scales[bc] = scale_for_max_abs(max_abs);
    }
  });
}

// Converts the pixels of one cell to fixed-point features q [C][HW] (cell-major). Pixels outside
// the mask get 0: they may hold anything, even NaN, and are never used.
template <typename scalar_t>
void convert_cell(const SlicConfig& cfg, const Cell& cell, const scalar_t* img, const bool* mask, const float* scales,
                  const SrgbTable& table, int32_t* q) {
  const int64_t C = cfg.channels, W = cfg.grid.width, HW = cfg.grid.height * W;
  const int64_t base = cell.offset(W);
  float lin[3][kChunk];
  int32_t index[3][kChunk];
  for (int64_t start = 0; start < cell.size(); start += kChunk) {
    const int64_t n = std::min(kChunk, cell.size() - start);
    int32_t* out = q + base + start;
    if (cfg.lab) {
      for_segments(cell, start, n, [&](int64_t i, int64_t y, int64_t x, int64_t len) {
        for (int64_t c = 0; c < 3; ++c) {
          const scalar_t* src = img + c * HW + y * W + x;
          for (int64_t j = 0; j < len; ++j) {
            if constexpr (std::is_same<scalar_t, uint8_t>::value) {
              index[c][i + j] = src[j];
            } else {
              lin[c][i + j] = srgb_to_linear(to_float(src[j]));
            }
          }
        }
      });
      if constexpr (std::is_same<scalar_t, uint8_t>::value) {
        lab_from_uint8(n, index[0], index[1], index[2], table.value, out, out + HW, out + 2 * HW);
      } else {
        lab_from_linear(n, lin[0], lin[1], lin[2], out, out + HW, out + 2 * HW);
      }
    } else {
      for (int64_t c = 0; c < C; ++c) {
        const float scale = scales[c];
        for_segments(cell, start, n, [&](int64_t i, int64_t y, int64_t x, int64_t len) {
          const scalar_t* src = img + c * HW + y * W + x;
          for (int64_t j = 0; j < len; ++j) {
            const float v = std::is_same<scalar_t, uint8_t>::value ? to_float(src[j]) / 255.0f : to_float(src[j]);
            out[c * HW + i + j] = quantize(v, scale);
          }
        });
      }
    }
    if (mask) {
      for_segments(cell, start, n, [&](int64_t i, int64_t y, int64_t x, int64_t len) {
        for (int64_t j = 0; j < len; ++j) {
          if (!mask[y * W + x + j]) {
            for (int64_t c = 0; c < C; ++c) out[c * HW + i + j] = 0;
          }
        }
      });
    }
  }
}

// ------------------------------------------------------------------------------------------------
// 2. Seeds. The seed of a cell is its middle pixel; with a mask, the pixel of the cell inside the
// mask nearest to the middle (ties: first in raster order); a cell without one has no centre.
void init_centres(const SlicConfig& cfg, const Cell& cell, int64_t cy, int64_t cx, const int32_t* q,
                  const float* scales, const bool* mask, float* centre, uint8_t* alive) {
  const Grid& g = cfg.grid;
  const int64_t C = cfg.channels, HW = g.height * g.width;
  const int64_t my = cell_seed(cy, g.cells_y, g.height), mx = cell_seed(cx, g.cells_x, g.width);
  int64_t sy = my, sx = mx;
  bool found = !mask || mask[sy * g.width + sx];
  if (!found) {
    int64_t best = std::numeric_limits<int64_t>::max();
    for (int64_t y = cell.y0; y < cell.y1; ++y) {
      for (int64_t x = cell.x0; x < cell.x1; ++x) {
        const int64_t d = (y - my) * (y - my) + (x - mx) * (x - mx);
        if (mask[y * g.width + x] && d < best) best = d, sy = y, sx = x, found = true;
      }
    }
  }
  *alive = found;
  const int64_t at = cell.offset(g.width) + (sy - cell.y0) * cell.width() + (sx - cell.x0);
  for (int64_t c = 0; c < C; ++c) centre[c] = found ? static_cast<float>(q[c * HW + at]) / scales[c] : INFINITY;
  centre[C] = found ? static_cast<float>(sy) : INFINITY;
  centre[C + 1] = found ? static_cast<float>(sx) : INFINITY;
}

// ------------------------------------------------------------------------------------------------
// 3. Assignment. The candidates of a cell are its 9 neighbouring centres, expanded into
// coefficients [9][C+3] (slic.h: expand_candidate); a missing one has distance +inf.
// Finds for each pixel of a chunk the candidate with the smallest distance (ties: lower slot).
// (ys, xs) are the pixels' positions relative to the cell's first pixel; `reference` is the cell's
// own centre, on which features are centred.

// Few channels: pixels outermost, the 9 candidates unrolled, so the pixel loop vectorises.
template <int kC>
SPL_TARGET_CLONES void assign_chunk_unrolled(int64_t n, const int32_t* const* planes, const float* inv_scale,
                                             const float* reference, const float* __restrict ys,
                                             const float* __restrict xs, const float* __restrict cand,
                                             int32_t* __restrict best_slot) {
  const int32_t* __restrict p[kC];
  float inv[kC], ref[kC];
  for (int c = 0; c < kC; ++c) p[c] = planes[c], inv[c] = inv_scale[c], ref[c] = reference[c];
  for (int64_t i = 0; i < n; ++i) {
    float v[kC];
    for (int c = 0; c < kC; ++c) v[c] = static_cast<float>(p[c][i]) * inv[c] - ref[c];
    float best = std::numeric_limits<float>::infinity();
    int32_t slot = kOwnSlot;
    SPL_UNROLL
    for (int s = 0; s < kSlots; ++s) {
      const float d = expanded_distance<kC>(v, ys[i], xs[i], cand + s * (kC + 3));
      const bool better = d < best;
      best = better ? d : best;
      slot = better ? s : slot;
    }
    best_slot[i] = slot;
  }
}

// Any channel count: candidates outermost, the sum accumulated plane by plane (the same
// operations, in the same order, as expanded_distance).
SPL_TARGET_CLONES
void assign_chunk_planes(int64_t n, int64_t C, const int32_t* const* planes, const float* inv_scale,
                         const float* reference, const float* __restrict ys, const float* __restrict xs,
                         const float* __restrict cand, float* __restrict best, float* __restrict dist,
                         int32_t* __restrict best_slot) {
  for (int64_t i = 0; i < n; ++i) best[i] = std::numeric_limits<float>::infinity(), best_slot[i] = kOwnSlot;
  for (int s = 0; s < kSlots; ++s) {
    const float* coeff = cand + s * (C + 3);
    for (int64_t i = 0; i < n; ++i) dist[i] = coeff[C + 2];
    for (int64_t c = 0; c < C; ++c) {
      const int32_t* __restrict pc = planes[c];
      const float inv = inv_scale[c], ref = reference[c], a = coeff[c];
      for (int64_t i = 0; i < n; ++i) {
        dist[i] = fused_multiply_add(static_cast<float>(pc[i]) * inv - ref, a, dist[i]);
      }
    }
    const float by = coeff[C], bx = coeff[C + 1];
    for (int64_t i = 0; i < n; ++i) {
      const float d = fused_multiply_add(xs[i], bx, fused_multiply_add(ys[i], by, dist[i]));
      const bool better = d < best[i];
      best[i] = better ? d : best[i];
      best_slot[i] = better ? s : best_slot[i];
    }
  }
}

// Adds the statistics of the chunk's pixels assigned to `slot` to stats[0..C+3): feature sums,
// y sum, x sum, count; (ys, xs) are relative to (y0, x0). Per-chunk int32 sums cannot overflow
// (kChunk * 2^22).
template <int kC>
SPL_TARGET_CLONES void accumulate_slot(int64_t n, int64_t channels, const int32_t* const* planes,
                                       const int32_t* __restrict ys, const int32_t* __restrict xs, int64_t y0,
                                       int64_t x0, const int32_t* __restrict best_slot, int slot, int64_t* stats) {
  const int64_t C = kC > 0 ? kC : channels;
  int32_t count = 0, sy = 0, sx = 0;
  if (kC > 0) {
    constexpr int kN = kC > 0 ? kC : 1;
    const int32_t* __restrict p[kN];
    int32_t sum[kN] = {};
    for (int c = 0; c < kN; ++c) p[c] = planes[c];
    for (int64_t i = 0; i < n; ++i) {
      const bool hit = best_slot[i] == slot;
      count += hit ? 1 : 0;
      sy += hit ? ys[i] : 0;
      sx += hit ? xs[i] : 0;
      for (int c = 0; c < kN; ++c) sum[c] += hit ? p[c][i] : 0;
    }
    for (int c = 0; c < kN; ++c) stats[c] += sum[c];
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const bool hit = best_slot[i] == slot;
      count += hit ? 1 : 0;
      sy += hit ? ys[i] : 0;
      sx += hit ? xs[i] : 0;
    }
    for (int64_t c = 0; c < C; ++c) {
      const int32_t* __restrict pc = planes[c];
      int32_t sum = 0;
      for (int64_t i = 0; i < n; ++i) sum += best_slot[i] == slot ? pc[i] : 0;
      stats[c] += sum;
    }
  }
  stats[C] += sy + count * y0;
  stats[C + 1] += sx + count * x0;
  stats[C + 2] += count;
}

// Positions of the pixels of a cell of a given shape relative to its first pixel, in cell-major
// order: the same for every cell of that shape (an image has at most four shapes).
struct CellCoordinates {
  int64_t height = -1, width = -1;
  std::vector<float> y, x;      // for distances
  std::vector<int32_t> yi, xi;  // for statistics
};

struct Scratch {
  std::vector<const int32_t*> planes;
  std::vector<float> cand;       // 9 * (C + 3) expanded candidates
  std::vector<float> reference;  // C: the cell's own centre
  float best[kChunk], dist[kChunk];
  int32_t best_slot[kChunk], inside[kChunk];
  CellCoordinates shapes[4];
  int next_shape = 0;
  explicit Scratch(int64_t C) : planes(C), cand(kSlots * (C + 3)), reference(C) {}

  const CellCoordinates& coordinates(int64_t height, int64_t width) {
    for (const CellCoordinates& c : shapes) {
      if (c.height == height && c.width == width) return c;
    }
    CellCoordinates& c = shapes[next_shape++ % 4];
    c.height = height, c.width = width;
    c.y.resize(height * width), c.x.resize(height * width), c.yi.resize(height * width), c.xi.resize(height * width);
    for (int64_t i = 0; i < height * width; ++i) {
      c.yi[i] = static_cast<int32_t>(i / width), c.xi[i] = static_cast<int32_t>(i % width);
      c.y[i] = static_cast<float>(c.yi[i]), c.x[i] = static_cast<float>(c.xi[i]);
    }
    return c;
  }
};

// What process_cell does with the assignment of its pixels.
enum class CellOutput {
  kFirstStats,  // the statistics of every slot, from scratch; remembers each pixel's slot
  kStats,       // updates the statistics with the pixels whose slot changed since last time
  kLabels,      // the centre index of every pixel (-1 outside the mask), in raster order
};

// The image a thread works on: features, centres and statistics of one image.
struct ImageState {
  const int32_t* q;         // [C][HW] cell-major fixed-point features
  const float* scales;      // [C]
  const float* inv_scales;  // [C]
  const bool* mask;         // [H, W] or null
  float* centres;           // [K][C+2]
  const uint8_t* alive;     // [K]
  int64_t* stats;           // [K][9][C+3]
  int8_t* slots;            // [HW] cell-major: each pixel's slot in the previous iteration
  int32_t* labels;          // [H, W]
};

// One cell, one iteration: assigns the cell's pixels to the 9 candidate centres and writes labels
// or the exact (integer) statistics of each slot. After the first iteration only a few pixels
// change slot, so the statistics are updated by moving those pixels alone.
template <int kC>
SPL_TARGET_CLONES void process_cell(const SlicConfig& cfg, int64_t k, const ImageState& im, CellOutput output,
                                    Scratch& s) {
  const Grid& g = cfg.grid;
  const int64_t C = cfg.channels, D = cfg.centre_dims(), S = cfg.stat_dims(), HW = g.height * g.width;
  const int64_t cy = k / g.cells_x, cx = k % g.cells_x;
  const Cell cell = cell_at(g, cy, cx);
  // Features are centred on the cell's own centre (when it has none, the cell has no pixel to
  // assign: every pixel is outside the mask).
  for (int64_t j = 0; j < C; ++j) s.reference[j] = im.alive[k] ? im.centres[k * D + j] : 0.0f;
  int64_t centre_of_slot[kSlots];
  for (int slot = 0; slot < kSlots; ++slot) {
    const int64_t ny = cy + slot / 3 - 1, nx = cx + slot % 3 - 1;
    const bool valid = ny >= 0 && ny < g.cells_y && nx >= 0 && nx < g.cells_x && im.alive[ny * g.cells_x + nx];
    centre_of_slot[slot] = valid ? ny * g.cells_x + nx : -1;
    expand_candidate(im.centres + (valid ? centre_of_slot[slot] : 0) * D, valid, s.reference.data(), cell.y0, cell.x0,
                     cfg.weight_y, cfg.weight_x, C, s.cand.data() + slot * (C + 3));
  }
  int64_t* stats = im.stats + k * kSlots * S;
  if (output == CellOutput::kFirstStats) std::fill(stats, stats + kSlots * S, int64_t{0});

  const int64_t base = cell.offset(g.width);
  const CellCoordinates& local = s.coordinates(cell.y1 - cell.y0, cell.width());
  const int32_t y0 = static_cast<int32_t>(cell.y0), x0 = static_cast<int32_t>(cell.x0);
  for (int64_t start = 0; start < cell.size(); start += kChunk) {
    const int64_t n = std::min(kChunk, cell.size() - start);
    for (int64_t c = 0; c < C; ++c) s.planes[c] = im.q + c * HW + base + start;
    const int32_t* const* planes = s.planes.data();
    const float* ys = local.y.data() + start;
    const float* xs = local.x.data() + start;
    const int32_t* yi = local.yi.data() + start;
    const int32_t* xi = local.xi.data() + start;
    if (im.mask) {
      for_segments(cell, start, n, [&](int64_t i, int64_t y, int64_t x, int64_t len) {
        for (int64_t j = 0; j < len; ++j) s.inside[i + j] = im.mask[y * g.width + x + j];
      });
    }
    if constexpr (kC > 0) {
      assign_chunk_unrolled<kC>(n, planes, im.inv_scales, s.reference.data(), ys, xs, s.cand.data(), s.best_slot);
    } else {
      assign_chunk_planes(n, C, planes, im.inv_scales, s.reference.data(), ys, xs, s.cand.data(), s.best, s.dist,
                          s.best_slot);
    }
    if (im.mask) {
      for (int64_t i = 0; i < n; ++i) s.best_slot[i] = s.inside[i] ? s.best_slot[i] : -1;
    }
    if (output == CellOutput::kLabels) {
      for_segments(cell, start, n, [&](int64_t i, int64_t y, int64_t x, int64_t len) {
        int32_t* row = im.labels + y * g.width + x;
        for (int64_t j = 0; j < len; ++j) {
          const int32_t slot = s.best_slot[i + j];
          row[j] = slot < 0 ? -1 : static_cast<int32_t>(centre_of_slot[slot]);
        }
      });
      continue;
    }
    int8_t* previous = im.slots + base + start;
    if (output == CellOutput::kFirstStats) {
      uint32_t present = 0;
      for (int64_t i = 0; i < n; ++i) present |= s.best_slot[i] >= 0 ? (1u << s.best_slot[i]) : 0u;
      for (int slot = 0; slot < kSlots; ++slot) {
        if (present & (1u << slot)) {
          accumulate_slot<kC>(n, C, planes, yi, xi, y0, x0, s.best_slot, slot, stats + slot * S);
        }
      }
      for (int64_t i = 0; i < n; ++i) previous[i] = static_cast<int8_t>(s.best_slot[i]);
      continue;
    }
    // Pixels outside the mask keep slot -1 and never move. Compacting the changed pixels first
    // (no branches) is cheaper than testing each pixel: changes are few but scattered.
    for (int64_t block = 0; block < n; block += 64) {
      const int64_t len = std::min<int64_t>(64, n - block);
      uint64_t changed = 0;
      for (int64_t j = 0; j < len; ++j) {
        changed |= static_cast<uint64_t>(previous[block + j] != s.best_slot[block + j]) << j;
      }
      for (; changed; changed &= changed - 1) {
        const int64_t i = block + __builtin_ctzll(changed);
        const int32_t from = previous[i], to = s.best_slot[i];
        int64_t* out = stats + from * S;
        int64_t* in = stats + to * S;
        const int64_t channels = kC > 0 ? kC : C;  // a constant when the channel count is
        for (int64_t c = 0; c < channels; ++c) out[c] -= planes[c][i], in[c] += planes[c][i];
        out[channels] -= y0 + yi[i], in[channels] += y0 + yi[i];
        out[channels + 1] -= x0 + xi[i], in[channels + 1] += x0 + xi[i];
        out[channels + 2] -= 1, in[channels + 2] += 1;
        previous[i] = static_cast<int8_t>(to);
      }
    }
  }
}

// New centres [begin, end) of one image: the same sums and means as slic.h's update_centre
// (so the same bits as the GPU), with the statistics of the 9 cells summed in one sweep, the
// channel count known at compile time where it is (kC > 0), and no division per centre.
template <int kC>
void update_centres(const SlicConfig& cfg, const ImageState& im, int64_t begin, int64_t end) {
  constexpr int64_t kMaxStats = kC > 0 ? kC + 3 : kUpdateChunk;
  const Grid& g = cfg.grid;
  const int64_t C = kC > 0 ? kC : cfg.channels, S = C + 3, D = C + 2;
  if (kC == 0 && S > kMaxStats) {  // many channels: the shared function sums them in chunks
    for (int64_t k = begin; k < end; ++k) {
      if (im.alive[k]) update_centre(im.stats, g.cells_y, g.cells_x, k, C, im.scales, im.centres + k * D);
    }
    return;
  }
  int64_t ky = begin / g.cells_x, kx = begin % g.cells_x;
  for (int64_t k = begin; k < end; ++k) {
    if (im.alive[k]) {
      int64_t sums[kMaxStats] = {};
      const int64_t ny0 = ky > 0 ? ky - 1 : 0, ny1 = ky + 1 < g.cells_y ? ky + 1 : ky;
      const int64_t nx0 = kx > 0 ? kx - 1 : 0, nx1 = kx + 1 < g.cells_x ? kx + 1 : kx;
      for (int64_t ny = ny0; ny <= ny1; ++ny) {
        for (int64_t nx = nx0; nx <= nx1; ++nx) {
          const int64_t slot = (ky - ny + 1) * 3 + (kx - nx + 1);  // k as seen from cell (ny, nx)
          const int64_t* st = im.stats + ((ny * g.cells_x + nx) * kSlots + slot) * S;
          for (int64_t j = 0; j < S; ++j) sums[j] += st[j];
        }
      }
      const int64_t count = sums[C + 2];
      if (count > 0) {
        float* centre = im.centres + k * D;
        centre[C] = fixed_mean(sums[C], count, 1.0f);
        centre[C + 1] = fixed_mean(sums[C + 1], count, 1.0f);
        for (int64_t j = 0; j < C; ++j) centre[j] = fixed_mean(sums[j], count, im.scales[j]);
      }
    }
    if (++kx == g.cells_x) kx = 0, ++ky;
  }
}

// All iterations for one image. With parallel_cells, the cells of each iteration are shared among
// threads; otherwise the calling thread does everything, with one scratch for all iterations.
template <int kC>
void slic_image(const SlicConfig& cfg, const ImageState& im, bool parallel_cells) {
  const int64_t K = cfg.num_centres();
  const double cell_ns = assign_ns(cfg) / static_cast<double>(K);
  std::unique_ptr<Scratch> own_scratch = parallel_cells ? nullptr : std::make_unique<Scratch>(cfg.channels);
  for (int64_t it = 0; it < cfg.iterations; ++it) {
    const bool last = it + 1 == cfg.iterations;
    const CellOutput output = last ? CellOutput::kLabels : (it == 0 ? CellOutput::kFirstStats : CellOutput::kStats);
    auto assign = [&](int64_t begin, int64_t end, Scratch& scratch) {
      for (int64_t k = begin; k < end; ++k) process_cell<kC>(cfg, k, im, output, scratch);
    };
    if (parallel_cells) {
      parallel_work(K, cell_ns, [&](int64_t begin, int64_t end) {
        Scratch scratch(cfg.channels);
        assign(begin, end, scratch);
      });
    } else {
      assign(0, K, *own_scratch);
    }
    if (!last) {
      if (parallel_cells) {
        parallel_work(K, kUpdateNs * static_cast<double>(cfg.channels + 3),
                      [&](int64_t begin, int64_t end) { update_centres<kC>(cfg, im, begin, end); });
      } else {
        update_centres<kC>(cfg, im, 0, K);
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor> slic_cpu(const at::Tensor& image, int64_t n_segments, double compactness,
                                            int64_t max_num_iter, bool convert2lab, bool enforce_connectivity,
                                            double min_size_factor, at::ArrayRef<double> spacing,
                                            const std::optional<at::Tensor>& mask) {
  const SlicConfig cfg = check_slic_args(image, n_segments, compactness, max_num_iter, convert2lab,
                                         enforce_connectivity, min_size_factor, spacing, mask);
  const Grid& g = cfg.grid;
  const int64_t B = cfg.batch, C = cfg.channels, H = g.height, W = g.width, HW = H * W, K = cfg.num_centres();
  const int64_t D = cfg.centre_dims(), S = cfg.stat_dims();
  const auto long_opts = image.options().dtype(at::kLong);
  at::Tensor out = at::empty({B, H, W}, long_opts);
  at::Tensor counts = at::empty({B}, long_opts);
  if (B == 0) return {out, counts};

  const at::Tensor img = image.contiguous();
  const at::Tensor m = mask.has_value() ? mask->contiguous() : at::Tensor();
  const bool* mask_ptr = m.defined() ? m.const_data_ptr<bool>() : nullptr;
  Workspace& ws = thread_workspace();
  int32_t* q = ws.q.get(B * C * HW);
  int32_t* labels = ws.labels.get(B * HW);
  int64_t* stats = ws.stats.get(B * K * kSlots * S);
  int8_t* slots = ws.slots.get(B * HW);
  std::vector<float> scales(B * C), inv_scales(B * C), centres(B * K * D);
  std::vector<uint8_t> alive(B * K);

  AT_DISPATCH_FLOATING_TYPES_AND3(at::kByte, at::kHalf, at::kBFloat16, img.scalar_type(), "slic_cpu", [&] {
    const scalar_t* src = img.const_data_ptr<scalar_t>();
    if (!std::is_same<scalar_t, uint8_t>::value) {
      SPL_CHECK_VALUE(all_finite(src, mask_ptr, B, C, HW),
                      "slic: image contains NaN or infinite values (at pixels inside the mask)");
    }
    feature_scales<scalar_t>(cfg, src, mask_ptr, scales.data());
    const SrgbTable table = make_srgb_table();
    const double cell_ns = kConvertNs * static_cast<double>(C * HW) / static_cast<double>(K);
    parallel_work(B * K, cell_ns, [&](int64_t begin, int64_t end) {
      for (int64_t bk = begin; bk < end; ++bk) {
        const int64_t b = bk / K, k = bk % K;
        const Cell cell = cell_at(g, k / g.cells_x, k % g.cells_x);
        const bool* mb = mask_ptr ? mask_ptr + b * HW : nullptr;
        convert_cell<scalar_t>(cfg, cell, src + b * C * HW, mb, scales.data() + b * C, table, q + b * C * HW);
        init_centres(cfg, cell, k / g.cells_x, k % g.cells_x, q + b * C * HW, scales.data() + b * C, mb,
                     centres.data() + bk * D, alive.data() + bk);
      }
    });
  });
  for (int64_t i = 0; i < B * C; ++i) inv_scales[i] = 1.0f / scales[i];

  auto state = [&](int64_t b) {
    return ImageState{q + b * C * HW,
                      scales.data() + b * C,
                      inv_scales.data() + b * C,
                      mask_ptr ? mask_ptr + b * HW : nullptr,
                      centres.data() + b * K * D,
                      alive.data() + b * K,
                      stats + b * K * kSlots * S,
                      slots + b * HW,
                      labels + b * HW};
  };
  auto run = [&](auto kc) {
    constexpr int kC = decltype(kc)::value;
    // Each image all its iterations on one thread, no barrier between them; the cells of an image
    // shared among threads (a region per pass) only when there are fewer images than threads and
    // an iteration of the batch is worth a region.
    if (B >= at::get_num_threads() || assign_ns(cfg) * static_cast<double>(B) < static_cast<double>(inline_ns())) {
      parallel_items(B, cfg.iterations * assign_ns(cfg), [&](int64_t b) { slic_image<kC>(cfg, state(b), false); });
    } else {
      for (int64_t b = 0; b < B; ++b) slic_image<kC>(cfg, state(b), true);
    }
  };
  if (C == 3) run(std::integral_constant<int, 3>());
  else if (C == 1) run(std::integral_constant<int, 1>());
  else run(std::integral_constant<int, 0>());

  // Connectivity enforcement takes the labels and, when the buffers are kept for the next call,
  // the features of each image as scratch memory; buffers that are not kept go as soon as they are
  // no longer needed, before connectivity enforcement takes memory of its own.
  const bool release = ws.large();
  if (release) ws.q.release(), ws.stats.release(), ws.slots.release();
  int64_t* out_ptr = out.mutable_data_ptr<int64_t>();
  int64_t* counts_ptr = counts.mutable_data_ptr<int64_t>();
  parallel_items(B, kConnectNs * static_cast<double>(HW), [&](int64_t b) {
    int32_t* spare = release ? nullptr : q + b * C * HW;
    counts_ptr[b] = cfg.connect ? cpu::connect_regions_in_place(labels + b * HW, H, W, cfg.min_size, out_ptr + b * HW,
                                                                spare, C * HW)
                                : cpu::renumber_by_first_pixel(labels + b * HW, K, HW, out_ptr + b * HW);
  });
  if (release) ws.labels.release();
  return {out, counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(spl, CPU, m) { m.impl("slic", &slic_cpu); }

}  // namespace spl
