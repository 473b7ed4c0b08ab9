// edge_aware_unpool on the GPU: one thread per pixel over a (image, pixel) grid, each pixel by the
// shared rule of ops/edge_aware_unpool.h; labels out of range raise a flag that is read once.
#include "ops/check.h"
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "ops/cuda/cuda_helpers.h"
#include "ops/edge_aware_unpool.h"

namespace spl {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t>
__global__ void edge_aware_unpool_kernel(const scalar_t* features, const int64_t* labels, const float* guide,
                                         const float* means, int64_t B, int64_t C, int64_t K, int64_t D, int64_t H,
                                         int64_t W, float inv_two_var, int64_t radius, scalar_t* out, int* error) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t HW = H * W;
  SPL_CUDA_PLANES(b, B) {
    const int64_t* lb = labels + b * HW;
    SPL_CUDA_PLANE_PIXELS(p, HW) {
      const int64_t l = lb[p];
      if (l < -1 || l >= K) {  // a bad label anywhere in the window would be read: stop here
        atomicExch(error, 1);
        continue;
      }
      // The window's labels are checked by their own threads; a bad one is skipped here (the flag
      // makes the op raise).
      const int64_t y = p / W, x = p - y * W;
      bool window_ok = true;
      for (int64_t yy = (y - radius < 0 ? 0 : y - radius); yy <= (y + radius >= H ? H - 1 : y + radius); ++yy)
        for (int64_t xx = (x - radius < 0 ? 0 : x - radius); xx <= (x + radius >= W ? W - 1 : x + radius); ++xx)
          window_ok &= lb[yy * W + xx] >= -1 && lb[yy * W + xx] < K;
      if (!window_ok) continue;
      edge_aware_unpool_pixel<scalar_t, acc_t>(features + b * C * K, lb, guide + b * D * HW, means + b * D * K, C, K, D,
                                               H, W, y, x, inv_two_var, radius, out + b * C * HW + p);
    }
  }
}

at::Tensor edge_aware_unpool_cuda(const at::Tensor& features, const at::Tensor& labels, const at::Tensor& guide,
                                  const at::Tensor& guide_means, double sigma, int64_t radius) {
  const char* op = "edge_aware_unpool";
  check_edge_aware_unpool_args(op, features, labels, guide, guide_means, sigma, radius);
  const int64_t B = features.size(0), C = features.size(1), K = features.size(2);
  const int64_t H = labels.size(1), W = labels.size(2), D = guide.size(1);
  c10::cuda::CUDAGuard device_guard(features.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor f = features.contiguous(), lc = labels.contiguous(), g = guide.contiguous(),
                   m = guide_means.contiguous();
  // Zeros: a pixel skipped for a bad label in its window leaves 0 (the op raises anyway).
  at::Tensor out = at::zeros({B, C, H, W}, features.options());
  if (out.numel() == 0) return out;
  at::Tensor error = at::zeros({1}, features.options().dtype(at::kInt));
  const float inv_two_var = static_cast<float>(1.0 / (2.0 * sigma * sigma));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "edge_aware_unpool_cuda", [&] {
    edge_aware_unpool_kernel<scalar_t><<<plane_blocks(B, H * W, kThreads), kThreads, 0, stream>>>(
        f.const_data_ptr<scalar_t>(), lc.const_data_ptr<int64_t>(), g.const_data_ptr<float>(),
        m.const_data_ptr<float>(), B, C, K, D, H, W, inv_two_var, radius, out.data_ptr<scalar_t>(),
        error.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  SPL_CHECK_VALUE(read_scalar(error.const_data_ptr<int>(), stream) == 0, op, ": ", label_range_message(),
                  ", with num_superpixels = ", K);
  return out;
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(spl, CUDA, m) { m.impl("edge_aware_unpool", &cuda::edge_aware_unpool_cuda); }

}  // namespace spl
