// superpixel_histogram on the GPU: integer counts, warp-segmented over runs of pixels with the same
// (superpixel, class), so the result is exact and the atomics few.
#include "ops/check.h"
#include "ops/cuda/superpixel_histogram_kernel.h"

#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "ops/cuda/cuda_helpers.h"
#include "ops/cuda/segmented_reduce.cuh"
#include "ops/superpixel_histogram.h"

namespace spl {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ void add_count(int32_t* p, int32_t v) { atomicAdd(p, v); }
__device__ __forceinline__ void add_count(int64_t* p, int32_t v) {
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}

template <typename count_t>
__global__ void histogram_kernel(const int64_t* target, const int64_t* labels, int64_t n, int64_t pixels, int64_t K,
                                 int64_t num_classes, int64_t ignore_index, count_t* hist, int* error) {
  // Every thread runs the same number of rounds (the warp shuffles need all lanes); i may be >= n.
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x; base < n;
       base += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t i = base + threadIdx.x;
    int64_t key = -1;  // (image * K + superpixel) * num_classes + class
    if (i < n) {
      const int64_t k = labels[i], y = target[i];
      const bool bad_label = k < -1 || k >= K;
      const bool bad_target = y != ignore_index && (y < 0 || y >= num_classes);
      if (bad_label || bad_target) atomicOr(error, (bad_label ? kBadLabelFlag : 0) | (bad_target ? kBadTargetFlag : 0));
      if (!bad_label && !bad_target && k >= 0 && y != ignore_index) key = ((i / pixels) * K + k) * num_classes + y;
    }
    const WarpSegment seg = warp_segment(key);
    const int32_t count = segment_sum<int32_t>(key >= 0 ? 1 : 0, seg);
    if (seg.last && key >= 0) add_count(hist + key, count);
  }
}

at::Tensor superpixel_histogram_cuda(const at::Tensor& target, const at::Tensor& labels, int64_t K, int64_t num_classes,
                                     int64_t ignore_index) {
  const char* op = "superpixel_histogram";
  check_superpixel_histogram_args(target, labels, K, num_classes);
  const int64_t B = target.size(0), H = target.size(1), W = target.size(2);
  c10::cuda::CUDAGuard guard(target.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor t = target.contiguous(), lc = labels.contiguous();
  at::Tensor hist = at::zeros({B, K, num_classes}, target.options());
  if (t.numel() == 0) return hist;
  at::Tensor error = at::zeros({1}, target.options().dtype(at::kInt));
  class_histogram(t.const_data_ptr<int64_t>(), lc.const_data_ptr<int64_t>(), B, H * W, K, num_classes, ignore_index,
                  hist.data_ptr<int64_t>(), error.data_ptr<int>(), stream);
  raise_histogram_errors(op, error, K, num_classes, ignore_index, stream);
  return hist;
}

}  // namespace

template <typename count_t>
void class_histogram(const int64_t* target, const int64_t* labels, int64_t batch, int64_t pixels, int64_t K,
                     int64_t num_classes, int64_t ignore_index, count_t* hist, int* error, cudaStream_t stream) {
  const int64_t n = batch * pixels;
  histogram_kernel<count_t><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(target, labels, n, pixels, K, num_classes,
                                                                              ignore_index, hist, error);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template void class_histogram<int32_t>(const int64_t*, const int64_t*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                       int32_t*, int*, cudaStream_t);
template void class_histogram<int64_t>(const int64_t*, const int64_t*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                       int64_t*, int*, cudaStream_t);

void raise_histogram_errors(const char* op, const at::Tensor& error, int64_t K, int64_t num_classes,
                            int64_t ignore_index, cudaStream_t stream) {
  const int flags = read_scalar(error.const_data_ptr<int>(), stream);
  SPL_CHECK_VALUE(!(flags & kBadLabelFlag), op, ": ", label_range_message(), ", with num_superpixels = ", K);
  SPL_CHECK_VALUE(!(flags & kBadTargetFlag), op, ": ", target_range_message(), " (num_classes = ", num_classes,
                  ", ignore_index = ", ignore_index, ")");
}

}  // namespace cuda

TORCH_LIBRARY_IMPL(spl, CUDA, m) { m.impl("superpixel_histogram", &cuda::superpixel_histogram_cuda); }

}  // namespace spl
