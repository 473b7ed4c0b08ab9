// _cam_unary on the GPU (formula: ops/cam_unary.h). One thread per pixel of the batch: it reads the
// present classes' CAM values of its pixel (only those planes), and for the background and each
// present class adds its fixed-point log-probability to its superpixel's int64 sum. Lanes of a
// warp on the same superpixel are summed first (segmented_reduce.cuh; the segments are found once
// per pixel, not per channel), so about one atomic per run of pixels; integer atomics commute, so
// the sums, and the means, do not depend on thread order.
#include "ops/cam_unary.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "ops/cuda/cuda_helpers.h"
#include "ops/cuda/segmented_reduce.cuh"

namespace spl {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t>
__global__ void cam_unary_sum_kernel(const scalar_t* cam, const int64_t* labels, const bool* class_mask, int64_t batch,
                                     int64_t channels, int64_t pixels, int64_t K, scalar_t t, scalar_t floor,
                                     double scale, unsigned long long* sums, unsigned long long* counts) {
  const int64_t n = batch * pixels;
  const scalar_t lower = log(floor) - scalar_t(1), upper = scalar_t(1);  // clamp: see cam_unary.h
  // Every thread runs the same number of rounds and channels (the warp shuffles need all lanes).
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x; base < n;
       base += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t i = base + threadIdx.x;
    const int64_t b = i < n ? i / pixels : 0, p = i - b * pixels;
    const int64_t k = i < n ? labels[i] : -1;
    const int64_t key = k >= 0 && k < K ? b * K + k : -1;
    const WarpSegment seg = warp_segment(key);
    const scalar_t* x = cam + b * channels * pixels + p;
    const bool* present = class_mask + b * channels;
    scalar_t total = t;
    if (key >= 0) {
      for (int64_t c = 0; c < channels; ++c) {
        if (present[c]) total += x[c * pixels];
      }
    }
    const scalar_t log_total = log(total);
    const unsigned long long count = segment_sum<unsigned long long>(key >= 0 ? 1ull : 0ull, seg);
    if (seg.last && key >= 0) atomicAdd(counts + key, count);
    for (int64_t c = -1; c < channels; ++c) {  // -1: the background
      // Lanes of one segment share the image, so they agree on `active`.
      const bool active = key >= 0 && (c < 0 || present[c]);
      if (!__any_sync(kFullMask, active)) continue;
      long long fixed = 0;
      if (active) {
        const scalar_t score = c < 0 ? t : x[c * pixels];
        const scalar_t v = log(score > floor * total ? score : floor * total) - log_total;
        const scalar_t clamped = fmin(fmax(v, lower), upper);  // NaN -> lower
        fixed = llrint(static_cast<double>(clamped) * scale);
      }
      const long long sum = segment_sum<long long>(fixed, seg);
      if (seg.last && active && sum != 0) {
        atomicAdd(sums + ((b * (channels + 1)) + c + 1) * K + (key - b * K), static_cast<unsigned long long>(sum));
      }
    }
  }
}

__global__ void cam_unary_mean_kernel(const long long* sums, const long long* counts, int64_t batch, int64_t rows,
                                      int64_t K, double scale, float* out) {
  SPL_CUDA_1D_LOOP(i, batch * rows * K) {
    const int64_t b = i / (rows * K), k = i % K;
    const long long n = counts[b * K + k];
    out[i] = n > 0 ? static_cast<float>(static_cast<double>(sums[i]) / scale / static_cast<double>(n)) : 0.0f;
  }
}

at::Tensor cam_unary_cuda(const at::Tensor& cam, const at::Tensor& labels, const at::Tensor& class_mask, int64_t K,
                          double bg_threshold, double floor) {
  check_cam_unary_args(cam, labels, class_mask, K, bg_threshold, floor);
  c10::cuda::CUDAGuard guard(cam.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t B = cam.size(0), C = cam.size(1), HW = cam.size(2) * cam.size(3);
  at::Tensor out = at::empty({B, C + 1, K}, cam.options().dtype(at::kFloat));
  if (B == 0 || K == 0 || HW == 0) return out.zero_();
  const at::Tensor x = cam.contiguous(), l = labels.contiguous(), m = class_mask.contiguous();
  const double scale = cam_unary::fixed_scale(floor, HW);
  at::Tensor sums = at::zeros({B, C + 1, K}, labels.options());
  at::Tensor counts = at::zeros({B, K}, labels.options());
  auto* sp = reinterpret_cast<unsigned long long*>(sums.data_ptr<int64_t>());
  auto* cp = reinterpret_cast<unsigned long long*>(counts.data_ptr<int64_t>());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cam_unary_cuda", [&] {
    cam_unary_sum_kernel<scalar_t><<<blocks_for(B * HW, kThreads), kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), l.const_data_ptr<int64_t>(), m.const_data_ptr<bool>(), B, C, HW, K,
        static_cast<scalar_t>(bg_threshold), static_cast<scalar_t>(floor), scale, sp, cp);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  cam_unary_mean_kernel<<<blocks_for(B * (C + 1) * K, kThreads), kThreads, 0, stream>>>(
      reinterpret_cast<const long long*>(sp), reinterpret_cast<const long long*>(cp), B, C + 1, K, scale,
      out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(spl, CUDA, m) { m.impl("_cam_unary", &cuda::cam_unary_cuda); }

}  // namespace spl
