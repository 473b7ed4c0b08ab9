// SLIC on the GPU. Same steps, same arithmetic (ops/slic.h) and therefore the same labels
// as the CPU kernel (ops/cpu/slic_kernel.cpp):
//   1. features: one thread per pixel writes fixed-point int32 planes [B, C, H, W];
//   2. seeds: one thread per centre;
//   3. iterations: one block per grid cell assigns the cell's pixels to the 9 surrounding centres
//      and sums exact integer statistics per slot (sums in each thread, then warp sums kept per
//      warp in shared memory, then the block's sum: integer addition, so the order of threads does
//      not matter); one thread per centre then takes the means. The last iteration writes labels
//      instead;
//   4. labels: connectivity (or renumbering) on the device, ops/cuda/enforce_connectivity_kernel.cu.
// The whole batch runs in each launch; no label map ever goes to the host.
#include "ops/check.h"
#include <ATen/Dispatch.h>
#include <ATen/ops/from_blob.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "ops/cuda/enforce_connectivity_kernel.h"
#include "ops/cuda/cuda_helpers.h"
#include "ops/slic.h"

namespace spl {
namespace cuda {
namespace {

using namespace spl::slic_math;

constexpr int kThreads = 256;
constexpr int kMaxCellThreads = 256;  // threads of an assignment block, at most

struct GridArgs {
  int64_t height, width, cells_y, cells_x;
};

// ---- 1. Features -----------------------------------------------------------------------------

// Largest magnitude of each (image, channel) inside the mask, as float bits (non-negative floats
// order like their bits), and whether any value there is not finite.
template <typename scalar_t>
__global__ void channel_stats_kernel(const scalar_t* image, const bool* mask, int64_t planes, int64_t channels,
                                     int64_t pixels, unsigned* max_bits, int* not_finite) {
  for (int64_t bc = blockIdx.y; bc < planes; bc += gridDim.y) {  // gridDim.y is at most 65535
    const scalar_t* plane = image + bc * pixels;
    const bool* m = mask ? mask + (bc / channels) * pixels : nullptr;
    float local = 0.0f;
    bool bad = false;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < pixels;
         i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
      if (m && !m[i]) continue;
      const float v = static_cast<float>(plane[i]);
      bad |= !isfinite(v);
      local = fmaxf(local, fabsf(v));
    }
    if (bad) atomicExch(not_finite, 1);
    if (isfinite(local) && local > 0.0f) atomicMax(max_bits + bc, __float_as_uint(local));
  }
}

template <typename scalar_t, bool kLab>
__global__ void features_kernel(const scalar_t* image, const bool* mask, int64_t batch, int64_t channels,
                                int64_t pixels, const float* scales, SrgbTable table, int32_t* q) {
  __shared__ float lut[256];
  for (int i = threadIdx.x; i < 256; i += blockDim.x) lut[i] = table.value[i];
  __syncthreads();
  constexpr bool kUint8 = std::is_same<scalar_t, uint8_t>::value;
  SPL_CUDA_1D_LOOP(i, batch * pixels) {
    const int64_t b = i / pixels, p = i % pixels;
    const scalar_t* src = image + b * channels * pixels + p;
    int32_t* dst = q + b * channels * pixels + p;
    if (mask && !mask[i]) {
      for (int64_t c = 0; c < channels; ++c) dst[c * pixels] = 0;
      continue;
    }
    if constexpr (kLab) {
      float lin[3];
      for (int c = 0; c < 3; ++c) {
        if constexpr (kUint8) {
          lin[c] = lut[src[c * pixels]];
        } else {
          lin[c] = srgb_to_linear(static_cast<float>(src[c * pixels]));
        }
      }
      float l, a, bb;
      linear_rgb_to_lab(lin[0], lin[1], lin[2], &l, &a, &bb);
      dst[0] = static_cast<int32_t>(rintf(l * kLabScale));
      dst[pixels] = static_cast<int32_t>(rintf(a * kLabScale));
      dst[2 * pixels] = static_cast<int32_t>(rintf(bb * kLabScale));
    } else {
      for (int64_t c = 0; c < channels; ++c) {
        const float v = kUint8 ? static_cast<float>(src[c * pixels]) / 255.0f : static_cast<float>(src[c * pixels]);
        dst[c * pixels] = static_cast<int32_t>(rintf(v * scales[b * channels + c]));
      }
    }
  }
}

// ---- 2. Seeds --------------------------------------------------------------------------------

__global__ void init_centres_kernel(const int32_t* q, const float* scales, const bool* mask, GridArgs g, int64_t batch,
                                    int64_t channels, float* centres, uint8_t* alive) {
  const int64_t K = g.cells_y * g.cells_x, pixels = g.height * g.width;
  SPL_CUDA_1D_LOOP(bk, batch * K) {
    const int64_t b = bk / K, k = bk % K, cy = k / g.cells_x, cx = k % g.cells_x;
    const int64_t my = cell_seed(cy, g.cells_y, g.height), mx = cell_seed(cx, g.cells_x, g.width);
    const bool* m = mask ? mask + b * pixels : nullptr;
    int64_t sy = my, sx = mx;
    bool found = !m || m[sy * g.width + sx];
    if (!found) {
      // The pixel of the cell inside the mask nearest to the middle (ties: raster order).
      int64_t best = INT64_MAX;
      for (int64_t y = cell_begin(cy, g.cells_y, g.height); y < cell_begin(cy + 1, g.cells_y, g.height); ++y) {
        for (int64_t x = cell_begin(cx, g.cells_x, g.width); x < cell_begin(cx + 1, g.cells_x, g.width); ++x) {
          const int64_t d = (y - my) * (y - my) + (x - mx) * (x - mx);
          if (m[y * g.width + x] && d < best) best = d, sy = y, sx = x, found = true;
        }
      }
    }
    alive[bk] = found;
    float* centre = centres + bk * (channels + 2);
    for (int64_t c = 0; c < channels; ++c) {
      centre[c] =
          found ? static_cast<float>(q[(b * channels + c) * pixels + sy * g.width + sx]) / scales[b * channels + c]
                : INFINITY;
    }
    centre[channels] = found ? static_cast<float>(sy) : INFINITY;
    centre[channels + 1] = found ? static_cast<float>(sx) : INFINITY;
  }
}

// ---- 3. Iterations ---------------------------------------------------------------------------

// One block per (image, cell); each thread takes up to kPixelsPerThread pixels of the cell per
// round (the cell's pixels i, i + blockDim, ...), so their feature loads are in flight together
// and their statistics are summed in the thread before the warp sums. kC: channels known at
// compile time (0: any). kLast: write labels instead of statistics.
//
// Statistics: each warp sums a slot's values over its lanes (integer warp reductions) and keeps
// the running totals in its own row of shared memory, written by one lane: no atomics. The block
// then adds the rows of its warps. Integer sums, so the result does not depend on how pixels are
// spread over threads and warps, and equals the CPU kernel's.
//
// Shared memory (dynamic): per-warp statistics [warps][9][S] (int64), expanded candidates [9][E]
// and the cell's own centre [C] (floats; slic.h: expand_candidate).
constexpr int kPixelsPerThread = 4;
// |q| <= 2^23 (slic.h), so a warp's int32 sum of 32 * kPixelsPerThread of them fits.
static_assert(32 * kPixelsPerThread * (int64_t{1} << 23) < (int64_t{1} << 31), "warp feature sums overflow int32");

// Exact warp sum of int64 values of magnitude < 2^40 (pixel positions: a thread's sum of
// kPixelsPerThread coordinates < 2^31), as two int32 warp sums of the high and low 16 bits.
__device__ __forceinline__ int64_t warp_sum_wide(int64_t v) {
  const int32_t high = static_cast<int32_t>(v >> 16);    // arithmetic shift: v = high * 2^16 + low
  const int32_t low = static_cast<int32_t>(v & 0xFFFF);  // in [0, 2^16): 32 of them sum below 2^21
  return static_cast<int64_t>(warp_sum(high)) * 65536 + warp_sum(low);
}

// The block's cell: its first row y0 and column x0 in an image `width` pixels wide.
struct Cell {
  int64_t y0, x0, width;
  // Index in the image of the cell-local pixel (ly, lx).
  __device__ __forceinline__ int64_t pixel(uint32_t ly, uint32_t lx) const { return (y0 + ly) * width + x0 + lx; }
};

// One value per pixel of a thread's round.
template <typename T>
using PerPixel = T[kPixelsPerThread];
// Features of a round's pixels held in registers (kC > 0 only).
template <int kC>
using RawFeatures = PerPixel<int32_t[(kC > 0 ? kC : 1)]>;

// Features are centred on the cell's own centre (when it has none, no pixel of the cell is inside
// the mask).
__device__ __forceinline__ void load_reference(const float* centres, const uint8_t* alive, int64_t bk, int64_t C,
                                               int64_t D, float* reference) {
  const bool own_alive = alive[bk];
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) reference[j] = own_alive ? centres[bk * D + j] : 0.0f;
}

// The 9 centres around cell (cy, cx), one slot per thread of threads 0..8, expanded against the
// reference (slic.h: expand_candidate), and each slot's centre index (-1: none).
__device__ __forceinline__ void expand_candidates(const float* centres, const uint8_t* alive, const GridArgs& g,
                                                  int64_t b, int64_t cy, int64_t cx, int64_t y0, int64_t x0,
                                                  float weight_y, float weight_x, int64_t C, int64_t D, int64_t E,
                                                  const float* reference, float* cand, int32_t* centre_of_slot) {
  if (threadIdx.x >= kSlots) return;
  const int64_t K = g.cells_y * g.cells_x;
  const int slot = threadIdx.x;
  const int64_t ny = cy + slot / 3 - 1, nx = cx + slot % 3 - 1;
  const bool valid = ny >= 0 && ny < g.cells_y && nx >= 0 && nx < g.cells_x && alive[b * K + ny * g.cells_x + nx];
  const int64_t nk = valid ? ny * g.cells_x + nx : 0;
  expand_candidate(centres + (b * K + nk) * D, valid, reference, y0, x0, weight_y, weight_x, C, cand + slot * E);
  centre_of_slot[slot] = valid ? static_cast<int32_t>(nk) : -1;
}

// Cell-local positions of a thread's pixels in the round from base: the first by one division, the
// others advanced by whole rows and a remainder (no division per pixel).
__device__ __forceinline__ void round_positions(uint32_t base, uint32_t w, uint32_t step_y, uint32_t step_x,
                                                PerPixel<uint32_t>& ly, PerPixel<uint32_t>& lx) {
  ly[0] = (base + threadIdx.x) / w;
  lx[0] = (base + threadIdx.x) - ly[0] * w;
  SPL_UNROLL
  for (int r = 1; r < kPixelsPerThread; ++r) {
    ly[r] = ly[r - 1] + step_y, lx[r] = lx[r - 1] + step_x;
    if (lx[r] >= w) lx[r] -= w, ++ly[r];
  }
}

// Which pixels of the round are in the cell (i < n) and inside the mask, then, for kC > 0, every
// feature load of the round at once, so that the loads are in flight together.
template <int kC>
__device__ __forceinline__ void load_round(const Cell& cell, const int32_t* qb, const bool* mb, int64_t pixels,
                                           uint32_t base, uint32_t step, uint32_t n, const PerPixel<uint32_t>& ly,
                                           const PerPixel<uint32_t>& lx, PerPixel<bool>& inside, RawFeatures<kC>& raw) {
  SPL_UNROLL
  for (int r = 0; r < kPixelsPerThread; ++r) {
    const uint32_t i = base + r * step + threadIdx.x;
    const int64_t p = cell.pixel(ly[r], lx[r]);
    inside[r] = i < n && (!mb || mb[p]);
    if constexpr (kC > 0) {
      SPL_UNROLL
      for (int c = 0; c < kC; ++c) raw[r][c] = inside[r] ? qb[c * pixels + p] : 0;
    }
  }
}

// The slot of the candidate nearest to each pixel of the round inside the mask (-1 for the others;
// ties: the first slot; kOwnSlot if no distance is below infinity), by the expanded distances of
// slic.h. kC > 0: from the features in raw; otherwise loaded from qb. (The loop over the
// round's pixels is in here: around a per-pixel helper, nvcc unrolls the kC = 0 path less.)
template <int kC>
__device__ __forceinline__ void nearest_slots(const Cell& cell, const PerPixel<uint32_t>& ly,
                                              const PerPixel<uint32_t>& lx, const PerPixel<bool>& inside,
                                              const RawFeatures<kC>& raw, const int32_t* qb, int64_t pixels,
                                              const float* inv, const float* reference, const float* cand, int64_t C,
                                              int64_t E, PerPixel<int>& slot) {
  SPL_UNROLL
  for (int r = 0; r < kPixelsPerThread; ++r) {
    slot[r] = -1;
    if (!inside[r]) continue;
    const int64_t p = cell.pixel(ly[r], lx[r]);
    const float py = static_cast<float>(ly[r]), px = static_cast<float>(lx[r]);
    float best = INFINITY;
    slot[r] = kOwnSlot;
    if constexpr (kC > 0) {
      float v[kC];
      SPL_UNROLL
      for (int c = 0; c < kC; ++c) v[c] = static_cast<float>(raw[r][c]) * inv[c] - reference[c];
      SPL_UNROLL
      for (int s = 0; s < kSlots; ++s) {
        const float d = expanded_distance<kC>(v, py, px, cand + s * E);
        if (d < best) best = d, slot[r] = s;
      }
    } else {
      for (int s = 0; s < kSlots; ++s) {
        const float* coeff = cand + s * E;
        float d = coeff[C + 2];
        for (int64_t c = 0; c < C; ++c) {
          d = fused_multiply_add(static_cast<float>(qb[c * pixels + p]) * inv[c] - reference[c], coeff[c], d);
        }
        d = fused_multiply_add(px, coeff[C + 1], fused_multiply_add(py, coeff[C], d));
        if (d < best) best = d, slot[r] = s;
      }
    }
  }
}

// The last iteration: each pixel of the round in the cell gets its slot's centre (-1: none, or
// outside the mask). labels: the image's [H * W].
__device__ __forceinline__ void write_round_labels(const Cell& cell, uint32_t base, uint32_t step, uint32_t n,
                                                   const PerPixel<uint32_t>& ly, const PerPixel<uint32_t>& lx,
                                                   const PerPixel<int>& slot, const int32_t* centre_of_slot,
                                                   int32_t* labels) {
  SPL_UNROLL
  for (int r = 0; r < kPixelsPerThread; ++r) {
    const uint32_t i = base + r * step + threadIdx.x;
    if (i < n) labels[cell.pixel(ly[r], lx[r])] = slot[r] < 0 ? -1 : centre_of_slot[slot[r]];
  }
}

// Slot s's feature sums over the warp's pixels of the round: per channel j, an int32 warp sum
// (static_assert above), added to out[j] by lane j % 32.
template <int kC>
__device__ __forceinline__ void add_feature_sums(int s, const PerPixel<int>& slot, const RawFeatures<kC>& raw,
                                                 const Cell& cell, const PerPixel<uint32_t>& ly,
                                                 const PerPixel<uint32_t>& lx, const int32_t* qb, int64_t pixels,
                                                 int64_t C, int lane, int64_t* out) {
  if constexpr (kC > 0) {
    SPL_UNROLL
    for (int j = 0; j < kC; ++j) {
      int32_t value = 0;
      SPL_UNROLL
      for (int r = 0; r < kPixelsPerThread; ++r) value += slot[r] == s ? raw[r][j] : 0;
      const int32_t sum = warp_sum(value);
      if (lane == (j & 31)) out[j] += sum;
    }
  } else {
    for (int64_t j = 0; j < C; ++j) {
      int32_t value = 0;
      SPL_UNROLL
      for (int r = 0; r < kPixelsPerThread; ++r) {
        if (slot[r] == s) value += qb[j * pixels + cell.pixel(ly[r], lx[r])];
      }
      const int32_t sum = warp_sum(value);
      if (lane == (j & 31)) out[j] += sum;
    }
  }
}

// Slot s's sums of pixel rows and columns (image coordinates) and its pixel count over the warp's
// pixels of the round, added to out[C], out[C + 1] and out[C + 2] by lane 0.
__device__ __forceinline__ void add_position_sums(int s, const PerPixel<int>& slot, const Cell& cell,
                                                  const PerPixel<uint32_t>& ly, const PerPixel<uint32_t>& lx, int64_t C,
                                                  int lane, int64_t* out) {
  int64_t sy = 0, sx = 0;
  int32_t count = 0;
  SPL_UNROLL
  for (int r = 0; r < kPixelsPerThread; ++r) {
    if (slot[r] == s) sy += cell.y0 + ly[r], sx += cell.x0 + lx[r], ++count;
  }
  const int64_t total_y = warp_sum_wide(sy), total_x = warp_sum_wide(sx);
  const int32_t total_count = warp_sum(count);
  if (lane == 0) out[C] += total_y, out[C + 1] += total_x, out[C + 2] += total_count;
}

// The round's statistics, added to the warp's row of shared memory [9][S], slot by slot (slots no
// lane of the warp took are skipped). Warp collectives: every lane of the warp calls it.
template <int kC>
__device__ __forceinline__ void add_round_statistics(const PerPixel<int>& slot, const RawFeatures<kC>& raw,
                                                     const Cell& cell, const PerPixel<uint32_t>& ly,
                                                     const PerPixel<uint32_t>& lx, const int32_t* qb, int64_t pixels,
                                                     int64_t C, int64_t S, int lane, int64_t* warp_row) {
  for (int s = 0; s < kSlots; ++s) {
    bool mine = false;
    SPL_UNROLL
    for (int r = 0; r < kPixelsPerThread; ++r) mine |= slot[r] == s;
    if (!__any_sync(kFullMask, mine)) continue;
    int64_t* out = warp_row + s * S;
    add_feature_sums<kC>(s, slot, raw, cell, ly, lx, qb, pixels, C, lane, out);
    add_position_sums(s, slot, cell, ly, lx, C, lane, out);
  }
}

// The block's statistics [9][S]: the sums of its warps' rows (complete: called after a barrier).
__device__ __forceinline__ void write_block_statistics(const int64_t* partial, int warps, int64_t S, int64_t* out) {
  for (int64_t t = threadIdx.x; t < kSlots * S; t += blockDim.x) {
    int64_t sum = 0;
    for (int v = 0; v < warps; ++v) sum += partial[v * kSlots * S + t];
    out[t] = sum;
  }
}

template <int kC, bool kLast>
__global__ void __launch_bounds__(kMaxCellThreads)
    assign_kernel(const int32_t* q, const float* inv_scales, const bool* mask, const float* centres,
                  const uint8_t* alive, GridArgs g, int64_t channels, float weight_y, float weight_x, int64_t* stats,
                  int32_t* labels) {
  constexpr int P = kPixelsPerThread;
  const int64_t C = kC > 0 ? kC : channels, D = C + 2, S = C + 3, E = C + 3;
  const int64_t K = g.cells_y * g.cells_x, pixels = g.height * g.width;
  const int64_t bk = blockIdx.x, b = bk / K, k = bk % K, cy = k / g.cells_x, cx = k % g.cells_x;
  const int warps = static_cast<int>(blockDim.x) / 32, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  extern __shared__ int64_t shared[];
  int64_t* partial = shared;                                             // [warps][9][S]
  float* cand = reinterpret_cast<float*>(partial + warps * kSlots * S);  // [9][E]
  float* reference = cand + kSlots * E;                                  // [C]
  __shared__ int32_t centre_of_slot[kSlots];

  const int64_t y0 = cell_begin(cy, g.cells_y, g.height), y1 = cell_begin(cy + 1, g.cells_y, g.height);
  const int64_t x0 = cell_begin(cx, g.cells_x, g.width), x1 = cell_begin(cx + 1, g.cells_x, g.width);
  const Cell cell{y0, x0, g.width};
  load_reference(centres, alive, bk, C, D, reference);
  __syncthreads();
  expand_candidates(centres, alive, g, b, cy, cx, y0, x0, weight_y, weight_x, C, D, E, reference, cand, centre_of_slot);
  if (!kLast) {
    for (int64_t t = threadIdx.x; t < warps * kSlots * S; t += blockDim.x) partial[t] = 0;
  }
  __syncthreads();

  // Cell-local indices in 32-bit unsigned arithmetic (a cell has < 2^31 pixels, so base + P * blockDim
  // cannot wrap): no 64-bit division per pixel.
  const uint32_t w = static_cast<uint32_t>(x1 - x0), n = static_cast<uint32_t>((y1 - y0) * (x1 - x0));
  const uint32_t step = blockDim.x, step_y = step / w, step_x = step % w;
  const int32_t* qb = q + b * C * pixels;
  const bool* mb = mask ? mask + b * pixels : nullptr;
  const float* inv = inv_scales + b * C;
  // All threads run the same number of rounds: the warp sums of add_round_statistics need every lane.
  for (uint32_t base = 0; base < n; base += P * step) {
    PerPixel<uint32_t> ly, lx;
    PerPixel<bool> inside;
    RawFeatures<kC> raw;
    PerPixel<int> slot;
    round_positions(base, w, step_y, step_x, ly, lx);
    load_round<kC>(cell, qb, mb, pixels, base, step, n, ly, lx, inside, raw);
    nearest_slots<kC>(cell, ly, lx, inside, raw, qb, pixels, inv, reference, cand, C, E, slot);
    if constexpr (kLast) {
      write_round_labels(cell, base, step, n, ly, lx, slot, centre_of_slot, labels + b * pixels);
    } else {
      add_round_statistics<kC>(slot, raw, cell, ly, lx, qb, pixels, C, S, lane, partial + warp * kSlots * S);
    }
  }
  if (!kLast) {
    __syncthreads();
    write_block_statistics(partial, warps, S, stats + bk * kSlots * S);
  }
}

__global__ void update_kernel(const int64_t* stats, const float* scales, const uint8_t* alive, GridArgs g,
                              int64_t batch, int64_t channels, float* centres) {
  const int64_t K = g.cells_y * g.cells_x, S = channels + 3;
  SPL_CUDA_1D_LOOP(bk, batch * K) {
    if (!alive[bk]) continue;
    const int64_t b = bk / K, k = bk % K;
    update_centre(stats + b * K * kSlots * S, g.cells_y, g.cells_x, k, channels, scales + b * channels,
                  centres + bk * (channels + 2));
  }
}

// Block shape of the assignment: enough threads for the largest cell at kPixelsPerThread pixels
// each (whole warps, at most kMaxCellThreads), fewer if the per-warp statistics would not fit the
// GPU's shared memory (many channels).
struct AssignLaunch {
  unsigned threads = 0;
  size_t shared_bytes = 0;
};

size_t assign_shared_bytes(unsigned threads, int64_t C) {
  return sizeof(int64_t) * (threads / 32) * kSlots * (C + 3) + sizeof(float) * (kSlots * (C + 3) + C);
}

AssignLaunch assign_launch(const Grid& grid, int64_t C, int device_index) {
  const int64_t largest_cell = ceil_div(grid.height, grid.cells_y) * ceil_div(grid.width, grid.cells_x);
  AssignLaunch launch;
  launch.threads = static_cast<unsigned>(
      std::min<int64_t>(kMaxCellThreads, 32 * ceil_div(ceil_div(largest_cell, kPixelsPerThread), 32)));
  int optin = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device_index));
  while (launch.threads > 32 && assign_shared_bytes(launch.threads, C) > static_cast<size_t>(optin))
    launch.threads -= 32;
  launch.shared_bytes = assign_shared_bytes(launch.threads, C);
  SPL_CHECK_VALUE(launch.shared_bytes <= static_cast<size_t>(optin), "slic: ", C,
                  " channels need more shared memory than this GPU has per block; reduce the channels (e.g. "
                  "PCA) or run on the CPU");
  return launch;
}

template <int kC, bool kLast>
void launch_assign(const SlicConfig& cfg, const AssignLaunch& launch, cudaStream_t stream, const int32_t* q,
                   const float* inv_scales, const bool* mask, const float* centres, const uint8_t* alive, GridArgs g,
                   int64_t* stats, int32_t* labels) {
  auto kernel = assign_kernel<kC, kLast>;
  if (launch.shared_bytes > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(launch.shared_bytes)));
  }
  kernel<<<static_cast<unsigned>(cfg.batch * cfg.num_centres()), launch.threads, launch.shared_bytes, stream>>>(
      q, inv_scales, mask, centres, alive, g, cfg.channels, cfg.weight_y, cfg.weight_x, stats, labels);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <int kC>
void run_iterations(const SlicConfig& cfg, const AssignLaunch& launch, cudaStream_t stream, const int32_t* q,
                    const float* scales, const float* inv_scales, const bool* mask, float* centres,
                    const uint8_t* alive, GridArgs g, int64_t* stats, int32_t* labels) {
  const int64_t BK = cfg.batch * cfg.num_centres();
  for (int64_t it = 0; it + 1 < cfg.iterations; ++it) {
    launch_assign<kC, false>(cfg, launch, stream, q, inv_scales, mask, centres, alive, g, stats, labels);
    update_kernel<<<blocks_for(BK, kThreads), kThreads, 0, stream>>>(stats, scales, alive, g, cfg.batch, cfg.channels,
                                                                     centres);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  launch_assign<kC, true>(cfg, launch, stream, q, inv_scales, mask, centres, alive, g, stats, labels);
}

std::tuple<at::Tensor, at::Tensor> slic_cuda(const at::Tensor& image, int64_t n_segments, double compactness,
                                             int64_t max_num_iter, bool convert2lab, bool enforce_connectivity,
                                             double min_size_factor, at::ArrayRef<double> spacing,
                                             const std::optional<at::Tensor>& mask) {
  const SlicConfig cfg = check_slic_args(image, n_segments, compactness, max_num_iter, convert2lab,
                                         enforce_connectivity, min_size_factor, spacing, mask);
  c10::cuda::CUDAGuard guard(image.device());
  const Grid& grid = cfg.grid;
  const int64_t B = cfg.batch, C = cfg.channels, H = grid.height, W = grid.width, HW = H * W, K = cfg.num_centres();
  SPL_CHECK_VALUE(B * HW < (int64_t{1} << 31),
                  "slic: a CUDA batch must have fewer than 2^31 pixels (spl.slic splits larger batches)");
  const auto long_opts = image.options().dtype(at::kLong);
  at::Tensor out = at::empty({B, H, W}, long_opts);
  at::Tensor counts = at::zeros({B}, long_opts);
  if (B == 0) return {out, counts};

  const AssignLaunch launch = assign_launch(grid, C, image.get_device());

  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor img = image.contiguous();
  const at::Tensor m = mask.has_value() ? mask->contiguous() : at::Tensor();
  const bool* mask_ptr = m.defined() ? m.const_data_ptr<bool>() : nullptr;
  const auto int_opts = image.options().dtype(at::kInt);
  at::Tensor q_t = at::empty({B, C, HW}, int_opts);
  at::Tensor labels_t = at::empty({B, HW}, int_opts);
  at::Tensor stats_t = at::empty({B * K * kSlots * (C + 3)}, long_opts);
  at::Tensor centres_t = at::empty({B * K * (C + 2)}, image.options().dtype(at::kFloat));
  at::Tensor alive_t = at::empty({B * K}, image.options().dtype(at::kByte));

  // Fixed-point scales, computed on the host with the CPU kernel's function; float images also
  // need their largest magnitudes (and are checked for NaN/inf) first.
  std::vector<float> scales(B * C, cfg.lab ? kLabScale : kUnitScale);
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kByte, at::kHalf, at::kBFloat16, img.scalar_type(), "slic_cuda_scales", [&] {
    if (std::is_same<scalar_t, uint8_t>::value) return;
    at::Tensor stats = at::zeros({B * C + 1}, int_opts);
    unsigned* max_bits = reinterpret_cast<unsigned*>(stats.data_ptr<int32_t>());
    int* not_finite = stats.data_ptr<int32_t>() + B * C;
    const dim3 blocks(static_cast<unsigned>(std::min<int64_t>(ceil_div(HW, kThreads), 64)),
                      static_cast<unsigned>(std::min<int64_t>(B * C, 65535)));
    channel_stats_kernel<scalar_t>
        <<<blocks, kThreads, 0, stream>>>(img.const_data_ptr<scalar_t>(), mask_ptr, B * C, C, HW, max_bits, not_finite);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const at::Tensor host = stats.cpu();
    SPL_CHECK_VALUE(host.const_data_ptr<int32_t>()[B * C] == 0,
                    "slic: image contains NaN or infinite values (at pixels inside the mask)");
    if (!cfg.lab) {
      const auto* bits = reinterpret_cast<const uint32_t*>(host.const_data_ptr<int32_t>());
      for (int64_t i = 0; i < B * C; ++i) scales[i] = scale_for_max_abs(bits_float(bits[i]));
    }
  });
  scales.resize(2 * B * C);  // scales, then their inverses (exact: powers of two)
  for (int64_t i = 0; i < B * C; ++i) scales[B * C + i] = 1.0f / scales[i];
  at::Tensor scales_t =
      at::from_blob(scales.data(), {2 * B * C}, at::TensorOptions().dtype(at::kFloat)).to(image.device());
  const float* scales_ptr = scales_t.const_data_ptr<float>();
  const float* inv_scales_ptr = scales_ptr + B * C;
  int32_t* q = q_t.data_ptr<int32_t>();

  const SrgbTable table = make_srgb_table();
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kByte, at::kHalf, at::kBFloat16, img.scalar_type(), "slic_cuda_features", [&] {
    const unsigned blocks = blocks_for(B * HW, kThreads);
    if (cfg.lab) {
      features_kernel<scalar_t, true>
          <<<blocks, kThreads, 0, stream>>>(img.const_data_ptr<scalar_t>(), mask_ptr, B, C, HW, scales_ptr, table, q);
    } else {
      features_kernel<scalar_t, false>
          <<<blocks, kThreads, 0, stream>>>(img.const_data_ptr<scalar_t>(), mask_ptr, B, C, HW, scales_ptr, table, q);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });

  const GridArgs g{H, W, grid.cells_y, grid.cells_x};
  float* centres = centres_t.data_ptr<float>();
  uint8_t* alive = alive_t.data_ptr<uint8_t>();
  init_centres_kernel<<<blocks_for(B * K, kThreads), kThreads, 0, stream>>>(q, scales_ptr, mask_ptr, g, B, C, centres,
                                                                            alive);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  int64_t* stats = stats_t.data_ptr<int64_t>();
  int32_t* labels = labels_t.data_ptr<int32_t>();
  if (C == 3) {
    run_iterations<3>(cfg, launch, stream, q, scales_ptr, inv_scales_ptr, mask_ptr, centres, alive, g, stats, labels);
  } else if (C == 1) {
    run_iterations<1>(cfg, launch, stream, q, scales_ptr, inv_scales_ptr, mask_ptr, centres, alive, g, stats, labels);
  } else {
    run_iterations<0>(cfg, launch, stream, q, scales_ptr, inv_scales_ptr, mask_ptr, centres, alive, g, stats, labels);
  }

  if (cfg.connect) {
    connect_regions<int32_t>(labels, B, H, W, cfg.min_size, out.data_ptr<int64_t>(), counts.data_ptr<int64_t>(),
                             image.device(), stream);
  } else {
    renumber_by_first_pixel(labels, B, HW, K, out.data_ptr<int64_t>(), counts.data_ptr<int64_t>(), image.device(),
                            stream);
  }
  return {out, counts};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(spl, CUDA, m) { m.impl("slic", &cuda::slic_cuda); }

}  // namespace spl
