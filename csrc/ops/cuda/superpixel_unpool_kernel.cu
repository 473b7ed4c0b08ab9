// superpixel_unpool on the GPU: a gather, out[b, c, p] = features[b, c, labels[b, p]]
// (gather_by_label.cuh), then one host read of the label-range flag.
#include "ops/check.h"
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "ops/cuda/cuda_helpers.h"
#include "ops/cuda/gather_by_label.cuh"
#include "ops/superpixel_unpool.h"

namespace spl {
namespace cuda {
namespace {

constexpr int kThreads = 256;

at::Tensor superpixel_unpool_cuda(const at::Tensor& features, const at::Tensor& labels) {
  const char* op = "superpixel_unpool";
  check_superpixel_unpool_args(features, labels);
  const int64_t B = features.size(0), C = features.size(1), K = features.size(2);
  const int64_t H = labels.size(1), W = labels.size(2), HW = H * W;
  c10::cuda::CUDAGuard guard(features.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor f = features.contiguous(), lc = labels.contiguous();
  at::Tensor out = at::empty({B, C, H, W}, features.options());
  if (out.numel() == 0) return out;
  at::Tensor error = at::zeros({1}, features.options().dtype(at::kInt));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "superpixel_unpool_cuda", [&] {
    gather_by_label_kernel<scalar_t, true><<<plane_blocks(B * C, HW, kThreads), kThreads, 0, stream>>>(
        f.const_data_ptr<scalar_t>(), lc.const_data_ptr<int64_t>(), B, C, HW, K, out.data_ptr<scalar_t>(),
        error.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  SPL_CHECK_VALUE(read_scalar(error.const_data_ptr<int>(), stream) == 0, op, ": ", label_range_message(),
                  ", with num_superpixels = ", K);
  return out;
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(spl, CUDA, m) { m.impl("superpixel_unpool", &cuda::superpixel_unpool_cuda); }

}  // namespace spl
