// SLIC on the GPU. Same steps, same arithmetic (ops/slic_common.h) and therefore the same labels
// as the CPU kernel (ops/cpu/slic_kernel.cpp):
//   1. features: one thread per pixel writes fixed-point int32 planes [B, C, H, W];
//   2. seeds: one thread per centre;
//   3. iterations: one block per grid cell assigns the cell's pixels to the 9 surrounding centres
//      and sums exact integer statistics per slot (warp sums, then 64-bit shared atomics: integer
//      addition, so the order of threads does not matter); one thread per centre then takes the
//      means. The last iteration writes labels instead;
//   4. labels: connectivity (or renumbering) on the device, ops/cuda/connectivity_kernel.cu.
// The whole batch runs in each launch; no label map ever goes to the host.
#include "ops/check.h"
#include <ATen/Dispatch.h>
#include <ATen/ops/from_blob.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "ops/cuda/connectivity_kernel.h"
#include "ops/cuda/cuda_helpers.h"
#include "ops/slic.h"
#include "ops/slic_common.h"

namespace spl {
namespace cuda {
namespace {

using namespace spl::slic_math;

constexpr int kThreads = 256;
constexpr int kCellThreads = 128;

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

__global__ void init_centres_kernel(const int32_t* q, const float* scales, const bool* mask, GridArgs g,
                                    int64_t batch, int64_t channels, float* centres, uint8_t* alive) {
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
      centre[c] = found ? static_cast<float>(q[(b * channels + c) * pixels + sy * g.width + sx]) /
                              scales[b * channels + c]
                        : INFINITY;
    }
    centre[channels] = found ? static_cast<float>(sy) : INFINITY;
    centre[channels + 1] = found ? static_cast<float>(sx) : INFINITY;
  }
}

// ---- 3. Iterations ---------------------------------------------------------------------------

// One block per (image, cell). kC: channels known at compile time (0: any). kLast: write labels
// instead of statistics. Shared memory: statistics [9][C+3] (int64), expanded candidates [9][C+3]
// and the cell's own centre [C] (slic_common.h: expand_candidate).
template <int kC, bool kLast>
__global__ void __launch_bounds__(kCellThreads)
    assign_kernel(const int32_t* q, const float* inv_scales, const bool* mask, const float* centres,
                  const uint8_t* alive, GridArgs g, int64_t channels, float weight_y, float weight_x,
                  int64_t* stats, int32_t* labels) {
  const int64_t C = kC > 0 ? kC : channels, D = C + 2, S = C + 3, E = C + 3;
  const int64_t K = g.cells_y * g.cells_x, pixels = g.height * g.width;
  const int64_t bk = blockIdx.x, b = bk / K, k = bk % K, cy = k / g.cells_x, cx = k % g.cells_x;
  extern __shared__ int64_t shared[];
  int64_t* acc = shared;                                            // [9][S]
  float* cand = reinterpret_cast<float*>(acc + kSlots * S);         // [9][E]
  float* reference = cand + kSlots * E;                             // [C]
  __shared__ int32_t centre_of_slot[kSlots];

  const int64_t y0 = cell_begin(cy, g.cells_y, g.height), y1 = cell_begin(cy + 1, g.cells_y, g.height);
  const int64_t x0 = cell_begin(cx, g.cells_x, g.width), x1 = cell_begin(cx + 1, g.cells_x, g.width);
  // Features are centred on the cell's own centre (when it has none, no pixel of the cell is
  // inside the mask).
  const bool own_alive = alive[bk];
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) reference[j] = own_alive ? centres[bk * D + j] : 0.0f;
  __syncthreads();
  if (threadIdx.x < kSlots) {
    const int slot = threadIdx.x;
    const int64_t ny = cy + slot / 3 - 1, nx = cx + slot % 3 - 1;
    const bool valid = ny >= 0 && ny < g.cells_y && nx >= 0 && nx < g.cells_x && alive[b * K + ny * g.cells_x + nx];
    const int64_t nk = valid ? ny * g.cells_x + nx : 0;
    expand_candidate(centres + (b * K + nk) * D, valid, reference, y0, x0, weight_y, weight_x, C, cand + slot * E);
    centre_of_slot[slot] = valid ? static_cast<int32_t>(nk) : -1;
  }
  if (!kLast) {
    for (int64_t t = threadIdx.x; t < kSlots * S; t += blockDim.x) acc[t] = 0;
  }
  __syncthreads();

  const int64_t w = x1 - x0, n = (y1 - y0) * w;
  const int32_t* qb = q + b * C * pixels;
  const float* inv = inv_scales + b * C;
  const int lane = threadIdx.x & 31;
  // All threads run the same number of rounds: the warp sums below need every lane.
  for (int64_t base = 0; base < n; base += blockDim.x) {
    const int64_t i = base + threadIdx.x;
    const int64_t ly = i / w, lx = i % w, y = y0 + ly, x = x0 + lx, p = y * g.width + x;
    int slot = -1;
    if (i < n && (!mask || mask[b * pixels + p])) {
      const float py = static_cast<float>(ly), px = static_cast<float>(lx);
      float best = INFINITY;
      slot = kOwnSlot;
      if constexpr (kC > 0) {
        float v[kC];
        SPL_UNROLL
        for (int c = 0; c < kC; ++c) v[c] = static_cast<float>(qb[c * pixels + p]) * inv[c] - reference[c];
        SPL_UNROLL
        for (int s = 0; s < kSlots; ++s) {
          const float d = expanded_distance<kC>(v, py, px, cand + s * E);
          if (d < best) best = d, slot = s;
        }
      } else {
        for (int s = 0; s < kSlots; ++s) {
          const float* coeff = cand + s * E;
          float d = coeff[C + 2];
          for (int64_t c = 0; c < C; ++c) {
            d = fused_multiply_add(static_cast<float>(qb[c * pixels + p]) * inv[c] - reference[c], coeff[c], d);
          }
          d = fused_multiply_add(px, coeff[C + 1], fused_multiply_add(py, coeff[C], d));
          if (d < best) best = d, slot = s;
        }
      }
    }
    if constexpr (kLast) {
      if (i < n) labels[b * pixels + p] = slot < 0 ? -1 : centre_of_slot[slot];
    } else {
      for (int s = 0; s < kSlots; ++s) {
        if (!__any_sync(kFullMask, slot == s)) continue;
        const bool mine = slot == s;
        for (int64_t j = 0; j < S; ++j) {
          int32_t value = 0;
          if (mine) {
            value = j < C ? qb[j * pixels + p] : (j == C ? static_cast<int32_t>(y) : (j == C + 1 ? static_cast<int32_t>(x) : 1));
          }
          const int32_t sum = warp_sum(value);
          if (lane == (j & 31) && sum != 0) {
            atomicAdd(reinterpret_cast<unsigned long long*>(acc + s * S + j),
                      static_cast<unsigned long long>(static_cast<int64_t>(sum)));
          }
        }
      }
    }
  }
  if (!kLast) {
    __syncthreads();
    int64_t* out = stats + bk * kSlots * S;
    for (int64_t t = threadIdx.x; t < kSlots * S; t += blockDim.x) out[t] = acc[t];
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

template <int kC, bool kLast>
void launch_assign(const SlicConfig& cfg, size_t shared_bytes, cudaStream_t stream, const int32_t* q,
                   const float* inv_scales, const bool* mask, const float* centres, const uint8_t* alive, GridArgs g,
                   int64_t* stats, int32_t* labels) {
  auto kernel = assign_kernel<kC, kLast>;
  if (shared_bytes > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(shared_bytes)));
  }
  kernel<<<static_cast<unsigned>(cfg.batch * cfg.num_centres()), kCellThreads, shared_bytes, stream>>>(
      q, inv_scales, mask, centres, alive, g, cfg.channels, cfg.weight_y, cfg.weight_x, stats, labels);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <int kC>
void run_iterations(const SlicConfig& cfg, size_t shared_bytes, cudaStream_t stream, const int32_t* q,
                    const float* scales, const float* inv_scales, const bool* mask, float* centres, const uint8_t* alive, GridArgs g,
                    int64_t* stats, int32_t* labels) {
  const int64_t BK = cfg.batch * cfg.num_centres();
  for (int64_t it = 0; it + 1 < cfg.iterations; ++it) {
    launch_assign<kC, false>(cfg, shared_bytes, stream, q, inv_scales, mask, centres, alive, g, stats, labels);
    update_kernel<<<blocks_for(BK, kThreads), kThreads, 0, stream>>>(stats, scales, alive, g, cfg.batch,
                                                                     cfg.channels, centres);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  launch_assign<kC, true>(cfg, shared_bytes, stream, q, inv_scales, mask, centres, alive, g, stats, labels);
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

  const size_t shared_bytes = sizeof(int64_t) * kSlots * (C + 3) + sizeof(float) * (kSlots * (C + 3) + C);
  int device_index = image.get_device(), optin = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device_index));
  SPL_CHECK_VALUE(shared_bytes <= static_cast<size_t>(optin), "slic: ", C,
                    " channels need more shared memory than this GPU has per block; reduce the channels (e.g. "
                    "PCA) or run on the CPU");

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
    channel_stats_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(img.const_data_ptr<scalar_t>(), mask_ptr, B * C,
                                                                    C, HW, max_bits, not_finite);
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
  at::Tensor scales_t = at::from_blob(scales.data(), {2 * B * C}, at::TensorOptions().dtype(at::kFloat))
                            .to(image.device());
  const float* scales_ptr = scales_t.const_data_ptr<float>();
  const float* inv_scales_ptr = scales_ptr + B * C;
  int32_t* q = q_t.data_ptr<int32_t>();

  const SrgbTable table = make_srgb_table();
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kByte, at::kHalf, at::kBFloat16, img.scalar_type(), "slic_cuda_features", [&] {
    const unsigned blocks = blocks_for(B * HW, kThreads);
    if (cfg.lab) {
      features_kernel<scalar_t, true><<<blocks, kThreads, 0, stream>>>(img.const_data_ptr<scalar_t>(), mask_ptr, B, C,
                                                                       HW, scales_ptr, table, q);
    } else {
      features_kernel<scalar_t, false><<<blocks, kThreads, 0, stream>>>(img.const_data_ptr<scalar_t>(), mask_ptr, B,
                                                                        C, HW, scales_ptr, table, q);
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
    run_iterations<3>(cfg, shared_bytes, stream, q, scales_ptr, inv_scales_ptr, mask_ptr, centres, alive, g, stats, labels);
  } else if (C == 1) {
    run_iterations<1>(cfg, shared_bytes, stream, q, scales_ptr, inv_scales_ptr, mask_ptr, centres, alive, g, stats, labels);
  } else {
    run_iterations<0>(cfg, shared_bytes, stream, q, scales_ptr, inv_scales_ptr, mask_ptr, centres, alive, g, stats, labels);
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
