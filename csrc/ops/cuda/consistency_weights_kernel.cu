// consistency_weights on the GPU: a histogram pass (integer counts), a per-superpixel decision,
// a per-pixel write (ops/consistency_weights.h, the same code as the CPU kernel).
#include "ops/check.h"
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>

#include "ops/consistency_weights.h"
#include "ops/cuda/cuda_helpers.h"
#include "ops/cuda/superpixel_histogram_kernel.h"

namespace spl {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// Per superpixel: its total count, majority class and whether it is relabelled.
__global__ void decide_kernel(const int32_t* hist, int64_t superpixels, int64_t num_classes, double tau, int32_t* total,
                              int32_t* majority, uint8_t* transform) {
  SPL_CUDA_1D_LOOP(i, superpixels) {
    int64_t n = 0, m = 0;
    bool tr = false;
    consistency::decide(hist + i * num_classes, num_classes, tau, &n, &m, &tr);
    total[i] = static_cast<int32_t>(n);
    majority[i] = static_cast<int32_t>(m);
    transform[i] = tr;
  }
}

__global__ void write_kernel(const int64_t* target, const int64_t* labels, const int32_t* hist, const int32_t* total,
                             const int32_t* majority, const uint8_t* transform, int64_t n, int64_t pixels, int64_t K,
                             int64_t num_classes, double gamma, int64_t ignore_index, float* weights,
                             int64_t* transformed) {
  SPL_CUDA_1D_LOOP(i, n) {
    const int64_t k = labels[i], y = target[i];
    if (k < 0 || y == ignore_index) {
      weights[i] = 0.0f;
      transformed[i] = ignore_index;
      continue;
    }
    const int64_t s = (i / pixels) * K + k;
    transformed[i] = transform[s] ? majority[s] : y;
    weights[i] = consistency::weight(hist[s * num_classes + y], total[s], transform[s], gamma);
  }
}

std::tuple<at::Tensor, at::Tensor> consistency_weights_cuda(const at::Tensor& target, const at::Tensor& labels,
                                                            int64_t K, int64_t num_classes, double tau, double gamma,
                                                            int64_t ignore_index) {
  const char* op = "consistency_weights";
  check_consistency_weights_args(target, labels, K, num_classes, tau, gamma);
  const int64_t B = target.size(0), H = target.size(1), W = target.size(2), HW = H * W;
  c10::cuda::CUDAGuard guard(target.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor t = target.contiguous(), lc = labels.contiguous();
  at::Tensor weights = at::empty({B, H, W}, target.options().dtype(at::kFloat));
  at::Tensor transformed = at::empty({B, H, W}, target.options());
  if (t.numel() == 0) return {weights, transformed};
  const auto int_opts = target.options().dtype(at::kInt);
  at::Tensor hist = at::zeros({B * K * num_classes}, int_opts);
  at::Tensor error = at::zeros({1}, int_opts);
  class_histogram(t.const_data_ptr<int64_t>(), lc.const_data_ptr<int64_t>(), B, HW, K, num_classes, ignore_index,
                  hist.data_ptr<int32_t>(), error.data_ptr<int>(), stream);
  raise_histogram_errors(op, error, K, num_classes, ignore_index, stream);
  at::Tensor decision = at::empty({2 * B * K}, int_opts);
  at::Tensor transform = at::empty({B * K}, target.options().dtype(at::kByte));
  int32_t* total = decision.data_ptr<int32_t>();
  int32_t* majority = total + B * K;
  if (B * K > 0) {
    decide_kernel<<<blocks_for(B * K, kThreads), kThreads, 0, stream>>>(
        hist.const_data_ptr<int32_t>(), B * K, num_classes, tau, total, majority, transform.data_ptr<uint8_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  write_kernel<<<blocks_for(B * HW, kThreads), kThreads, 0, stream>>>(
      t.const_data_ptr<int64_t>(), lc.const_data_ptr<int64_t>(), hist.const_data_ptr<int32_t>(), total, majority,
      transform.const_data_ptr<uint8_t>(), B * HW, HW, K, num_classes, gamma, ignore_index, weights.data_ptr<float>(),
      transformed.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {weights, transformed};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(spl, CUDA, m) { m.impl("consistency_weights", &cuda::consistency_weights_cuda); }

}  // namespace spl
