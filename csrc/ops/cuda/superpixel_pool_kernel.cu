// superpixel_pool on the GPU, deterministic without a sort:
//   sum / mean: each (image, channel) plane is summed in 64-bit fixed point, with the largest
//     power-of-two scale at which no superpixel's sum can overflow; integer atomics commute, so
//     the sum is exact and does not depend on thread order. Non-finite values set flags that give
//     NaN / +inf / -inf as IEEE addition would.
//   max: order-preserving integer keys and atomicMax (commutative), then the first pixel in raster
//     order that reaches the maximum (atomicMin).
// Warp-segmented reductions (segmented_reduce.cuh) cut the atomics to about one per run of pixels
// of the same superpixel. The backward is a gather (sum, mean) or a one-to-one scatter (max).
#include "ops/check.h"
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "ops/cuda/cuda_helpers.h"
#include "ops/cuda/gather_by_label.cuh"
#include "ops/cuda/segmented_reduce.cuh"
#include "ops/superpixel_pool.h"

namespace spl {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBadLabel = 1;
constexpr int kNaN = 1, kPosInf = 2, kNegInf = 4;  // non-finite flags of a pooled value

// The superpixel key of pixel i (image * K + label), or -1; flags labels outside [-1, K).
__device__ __forceinline__ int64_t pixel_key(const int64_t* labels, int64_t i, int64_t n, int64_t pixels, int64_t K,
                                             int* error) {
  if (i >= n) return -1;
  const int64_t k = labels[i];
  if (k < -1 || k >= K) {
    atomicOr(error, kBadLabel);
    return -1;
  }
  return k < 0 ? -1 : (i / pixels) * K + k;
}

// Largest finite magnitude of each (image, channel) plane over labelled pixels, as ordered bits.
template <typename scalar_t>
__global__ void plane_max_abs_kernel(const scalar_t* x, const int64_t* labels, int64_t planes, int64_t channels,
                                     int64_t pixels, unsigned long long* max_abs) {
  for (int64_t bc = blockIdx.y; bc < planes; bc += gridDim.y) {
    const scalar_t* plane = x + bc * pixels;
    const int64_t* l = labels + (bc / channels) * pixels;
    double local = 0.0;
    for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < pixels;
         p += static_cast<int64_t>(blockDim.x) * gridDim.x) {
      const double v = static_cast<double>(plane[p]);
      if (l[p] >= 0 && isfinite(v)) local = fmax(local, fabs(v));
    }
    // Non-negative doubles order like their bit patterns: reduce the bits over the block, then one
    // atomic per block and plane (one per thread made thousands of same-address atomics per plane).
    unsigned long long bits = static_cast<unsigned long long>(__double_as_longlong(local));
    for (int offset = 16; offset > 0; offset /= 2) {
      const unsigned long long other = __shfl_xor_sync(kFullMask, bits, offset);
      bits = other > bits ? other : bits;
    }
    __shared__ unsigned long long warp_max[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_max[warp] = bits;
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 1; w < static_cast<int>(blockDim.x + 31) / 32; ++w) bits = warp_max[w] > bits ? warp_max[w] : bits;
      if (bits > 0) atomicMax(max_abs + bc, bits);
    }
    __syncthreads();  // warp_max is reused by the next plane
  }
}

// Fixed-point exponent s of each plane: x * 2^s is an integer of magnitude <= 2^62 / (pixels + 1),
// so the sum of up to `pixels` of them fits int64.
__global__ void plane_exponent_kernel(const unsigned long long* max_abs, int64_t planes, int64_t pixels,
                                      int* exponent) {
  SPL_CUDA_1D_LOOP(bc, planes) {
    const double m = __longlong_as_double(static_cast<long long>(max_abs[bc]));
    int e = 0;
    if (m > 0.0) frexp(m, &e);  // m < 2^e
    int count_bits = 0;
    while ((int64_t{1} << count_bits) < pixels + 1) ++count_bits;
    exponent[bc] = m > 0.0 ? 62 - e - count_bits : 0;
  }
}

// v * 2^e. A multiplication by the double 2^e where that is a normal number (every float32 plane's
// exponent is): exact, or for results too small to be normal rounded as ldexp rounds them (and
// they round to 0 in the fixed point anyway). ldexp for the extreme exponents of float64 planes.
__device__ __forceinline__ double scale_by_power_of_two(double v, int e) {
  if (e >= -1022 && e <= 1023) return v * __longlong_as_double(static_cast<long long>(1023 + e) << 52);
  return ldexp(v, e);
}

// Sums (fixed point), counts and non-finite flags of every (image, channel, superpixel).
template <typename scalar_t>
__global__ void pool_sum_kernel(const scalar_t* x, const int64_t* labels, int64_t batch, int64_t channels,
                                int64_t pixels, int64_t K, const int* exponent, long long* sums, long long* counts,
                                int* flags, int* error) {
  const int64_t n = batch * pixels;
  // Every thread runs the same number of rounds (the warp shuffles need all lanes); i may be >= n.
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x; base < n;
       base += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t i = base + threadIdx.x;
    const int64_t key = pixel_key(labels, i, n, pixels, K, error);
    const WarpSegment seg = warp_segment(key);  // the same segments for every channel
    const long long count = segment_sum<long long>(key >= 0 ? 1 : 0, seg);
    if (seg.last && key >= 0)
      atomicAdd(reinterpret_cast<unsigned long long*>(counts + key), static_cast<unsigned long long>(count));
    const int64_t b = i < n ? i / pixels : 0, p = i - b * pixels;
    for (int64_t c = 0; c < channels; ++c) {
      long long fixed = 0;
      if (key >= 0) {
        const double v = static_cast<double>(x[(b * channels + c) * pixels + p]);
        if (isfinite(v)) {
          fixed = llrint(scale_by_power_of_two(v, exponent[b * channels + c]));
        } else {
          atomicOr(flags + (b * channels + c) * K + (key - b * K), isnan(v) ? kNaN : (v > 0 ? kPosInf : kNegInf));
        }
      }
      const long long sum = segment_sum<long long>(fixed, seg);
      if (seg.last && key >= 0 && sum != 0) {
        atomicAdd(reinterpret_cast<unsigned long long*>(sums + (b * channels + c) * K + (key - b * K)),
                  static_cast<unsigned long long>(sum));
      }
    }
  }
}

template <typename scalar_t>
__global__ void pool_sum_finish_kernel(const long long* sums, const long long* counts, const int* flags,
                                       const int* exponent, int64_t batch, int64_t channels, int64_t K, bool mean,
                                       scalar_t* out) {
  SPL_CUDA_1D_LOOP(i, batch * channels * K) {
    const int64_t bc = i / K, k = i % K, b = bc / channels;
    const int f = flags[i];
    double v;
    if (f & kNaN || (f & kPosInf && f & kNegInf)) {
      v = __longlong_as_double(0x7FF8000000000000LL);
    } else if (f & (kPosInf | kNegInf)) {
      v = f & kPosInf ? INFINITY : -INFINITY;
    } else {
      v = ldexp(static_cast<double>(sums[i]), -exponent[bc]);
    }
    const long long n = counts[b * K + k];
    if (mean) v = n > 0 ? v / static_cast<double>(n) : 0.0;
    out[i] = static_cast<scalar_t>(n > 0 ? v : 0.0);
  }
}

// Maximum (as an ordered key) of every (image, channel, superpixel).
template <typename scalar_t>
__global__ void pool_max_kernel(const scalar_t* x, const int64_t* labels, int64_t batch, int64_t channels,
                                int64_t pixels, int64_t K, unsigned long long* best, int* error) {
  const int64_t n = batch * pixels;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x; base < n;
       base += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t i = base + threadIdx.x;
    const int64_t key = pixel_key(labels, i, n, pixels, K, error);
    const WarpSegment seg = warp_segment(key);
    const int64_t b = i < n ? i / pixels : 0, p = i - b * pixels;
    for (int64_t c = 0; c < channels; ++c) {
      const unsigned long long v =
          key >= 0 ? ordered_key(static_cast<double>(x[(b * channels + c) * pixels + p])) : 0ull;
      const unsigned long long m =
          segmented_scan(v, seg, [](unsigned long long a, unsigned long long q) { return a > q ? a : q; });
      if (seg.last && key >= 0) atomicMax(best + (b * channels + c) * K + (key - b * K), m);
    }
  }
}

// The first pixel (raster order) of each superpixel whose value equals the maximum.
template <typename scalar_t>
__global__ void pool_argmax_kernel(const scalar_t* x, const int64_t* labels, int64_t batch, int64_t channels,
                                   int64_t pixels, int64_t K, const unsigned long long* best, long long* argmax) {
  SPL_CUDA_PLANES(bc, batch * channels) {
    const int64_t* l = labels + (bc / channels) * pixels;
    const scalar_t* plane = x + bc * pixels;
    SPL_CUDA_PLANE_PIXELS(p, pixels) {
      const int64_t k = l[p];
      if (k < 0 || k >= K) continue;
      if (ordered_key(static_cast<double>(plane[p])) == best[bc * K + k]) {
        atomicMin(argmax + bc * K + k, static_cast<long long>(p));
      }
    }
  }
}

template <typename scalar_t>
__global__ void pool_max_finish_kernel(const unsigned long long* best, int64_t total, long long* argmax,
                                       scalar_t* out) {
  SPL_CUDA_1D_LOOP(i, total) {
    const bool empty = argmax[i] == LLONG_MAX;
    if (empty) argmax[i] = -1;
    out[i] = static_cast<scalar_t>(empty ? 0.0 : ordered_value(best[i]));
  }
}

void raise_if_bad_labels(const at::Tensor& error, const char* op, int64_t K, cudaStream_t stream) {
  const int flags = read_scalar(error.const_data_ptr<int>(), stream);
  SPL_CHECK_VALUE(!(flags & kBadLabel), op, ": ", label_range_message(), ", with num_superpixels = ", K);
}

std::tuple<at::Tensor, at::Tensor> superpixel_pool_cuda(const at::Tensor& x, const at::Tensor& labels, int64_t K,
                                                        c10::string_view reduce_name) {
  const char* op = "superpixel_pool";
  const PoolReduce reduce = check_superpixel_pool_args(x, labels, K, reduce_name);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), HW = H * W;
  c10::cuda::CUDAGuard guard(x.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor xc = x.contiguous(), lc = labels.contiguous();
  const auto long_opts = labels.options();
  at::Tensor out = at::empty({B, C, K}, x.options());
  at::Tensor error = at::zeros({1}, x.options().dtype(at::kInt));
  at::Tensor aux;
  if (reduce == PoolReduce::kMax) {
    aux = at::full({B, C, K}, LLONG_MAX, long_opts);
  } else {
    aux = at::zeros({B, K}, long_opts);
  }
  if (B * HW == 0 || K == 0) {
    // Still check the labels of pixels (K == 0 allows only -1).
    if (K == 0 && lc.numel() > 0) {
      SPL_CHECK_VALUE(lc.max().item<int64_t>() == -1 && lc.min().item<int64_t>() == -1, op, ": ", label_range_message(),
                      ", with num_superpixels = 0");
    }
    if (reduce == PoolReduce::kMax) aux.fill_(-1);
    return {out.zero_(), aux};
  }
  const unsigned pixel_blocks = blocks_for(B * HW, kThreads);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "superpixel_pool_cuda", [&] {
    const scalar_t* xp = xc.const_data_ptr<scalar_t>();
    const int64_t* lp = lc.const_data_ptr<int64_t>();
    int* err = error.data_ptr<int>();
    if (reduce == PoolReduce::kMax) {
      at::Tensor best = at::zeros({B, C, K}, long_opts);
      auto* bp = reinterpret_cast<unsigned long long*>(best.data_ptr<int64_t>());
      pool_max_kernel<scalar_t><<<pixel_blocks, kThreads, 0, stream>>>(xp, lp, B, C, HW, K, bp, err);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      raise_if_bad_labels(error, op, K, stream);
      auto* ap = reinterpret_cast<long long*>(aux.data_ptr<int64_t>());
      pool_argmax_kernel<scalar_t>
          <<<plane_blocks(B * C, HW, kThreads), kThreads, 0, stream>>>(xp, lp, B, C, HW, K, bp, ap);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      pool_max_finish_kernel<scalar_t>
          <<<blocks_for(B * C * K, kThreads), kThreads, 0, stream>>>(bp, B * C * K, ap, out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    at::Tensor max_abs = at::zeros({B * C}, long_opts);
    at::Tensor sums = at::zeros({B, C, K}, long_opts);
    at::Tensor flags = at::zeros({B, C, K}, x.options().dtype(at::kInt));
    auto* mp = reinterpret_cast<unsigned long long*>(max_abs.data_ptr<int64_t>());
    // (C == 0 still runs pool_sum_kernel below, for the counts and the label check; a grid
    // dimension of 0 would be an invalid launch.)
    const dim3 plane_grid(static_cast<unsigned>(std::min<int64_t>(ceil_div(HW, kThreads), 64)),
                          static_cast<unsigned>(std::clamp<int64_t>(B * C, 1, 65535)));
    plane_max_abs_kernel<scalar_t><<<plane_grid, kThreads, 0, stream>>>(xp, lp, B * C, C, HW, mp);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    at::Tensor exponent = at::empty({B * C}, x.options().dtype(at::kInt));
    plane_exponent_kernel<<<blocks_for(B * C, kThreads), kThreads, 0, stream>>>(mp, B * C, HW,
                                                                                exponent.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    auto* sp = reinterpret_cast<long long*>(sums.data_ptr<int64_t>());
    auto* cp = reinterpret_cast<long long*>(aux.data_ptr<int64_t>());
    pool_sum_kernel<scalar_t><<<pixel_blocks, kThreads, 0, stream>>>(
        xp, lp, B, C, HW, K, exponent.const_data_ptr<int>(), sp, cp, flags.data_ptr<int>(), err);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    raise_if_bad_labels(error, op, K, stream);
    pool_sum_finish_kernel<scalar_t><<<blocks_for(B * C * K, kThreads), kThreads, 0, stream>>>(
        sp, cp, flags.const_data_ptr<int>(), exponent.const_data_ptr<int>(), B, C, K, reduce == PoolReduce::kMean,
        out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, aux};
}

// The gradient of each pooled value as its pixels receive it: g (sum) or g / n (mean), rounded to
// scalar_t. Once per (image, channel, superpixel) rather than per pixel: a float64 division costs
// more than the gather itself, and the value, hence every bit, is the same.
template <typename scalar_t>
__global__ void pool_backward_values_kernel(const scalar_t* grad, const int64_t* counts, int64_t batch,
                                            int64_t channels, int64_t K, scalar_t* values) {
  SPL_CUDA_1D_LOOP(i, batch * channels * K) {
    const int64_t b = i / (channels * K), k = i % K;
    values[i] = static_cast<scalar_t>(static_cast<double>(grad[i]) / static_cast<double>(counts[b * K + k]));
  }
}

template <typename scalar_t>
__global__ void pool_backward_max_kernel(const scalar_t* grad, const int64_t* argmax, int64_t planes, int64_t pixels,
                                         int64_t K, scalar_t* grad_x) {
  SPL_CUDA_1D_LOOP(i, planes * K) {
    const int64_t a = argmax[i];
    if (a >= 0) grad_x[(i / K) * pixels + a] = grad[i];  // one superpixel per pixel: no collisions
  }
}

at::Tensor superpixel_pool_backward_cuda(const at::Tensor& grad, const at::Tensor& labels, const at::Tensor& aux,
                                         int64_t H, int64_t W, c10::string_view reduce_name) {
  const PoolReduce reduce = parse_reduce(reduce_name);
  c10::cuda::CUDAGuard guard(grad.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t B = grad.size(0), C = grad.size(1), K = grad.size(2), HW = H * W;
  const at::Tensor g = grad.contiguous(), lc = labels.contiguous(), ac = aux.contiguous();
  at::Tensor grad_x =
      reduce == PoolReduce::kMax ? at::zeros({B, C, H, W}, grad.options()) : at::empty({B, C, H, W}, grad.options());
  if (grad_x.numel() == 0) return grad_x;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "superpixel_pool_backward_cuda", [&] {
    if (reduce == PoolReduce::kMax) {
      pool_backward_max_kernel<scalar_t><<<blocks_for(B * C * K, kThreads), kThreads, 0, stream>>>(
          g.const_data_ptr<scalar_t>(), ac.const_data_ptr<int64_t>(), B * C, HW, K, grad_x.data_ptr<scalar_t>());
    } else {
      at::Tensor values = g;
      if (reduce == PoolReduce::kMean) {
        values = at::empty_like(g);
        pool_backward_values_kernel<scalar_t><<<blocks_for(B * C * K, kThreads), kThreads, 0, stream>>>(
            g.const_data_ptr<scalar_t>(), ac.const_data_ptr<int64_t>(), B, C, K, values.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      gather_by_label_kernel<scalar_t, false><<<plane_blocks(B * C, HW, kThreads), kThreads, 0, stream>>>(
          values.const_data_ptr<scalar_t>(), lc.const_data_ptr<int64_t>(), B, C, HW, K, grad_x.data_ptr<scalar_t>(),
          nullptr);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_x;
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(spl, CUDA, m) {
  m.impl("superpixel_pool", &cuda::superpixel_pool_cuda);
  m.impl("_superpixel_pool_backward", &cuda::superpixel_pool_backward_cuda);
}

}  // namespace spl
