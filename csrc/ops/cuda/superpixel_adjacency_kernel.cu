// superpixel_adjacency on the GPU, without leaving the device: one pass counts the 4-neighbour pixel
// pairs that cross a superpixel border (checking the labels on the way), a second writes both
// directed keys (i * N + j) of each pair, then a sort with run-length counts (torch's unique) gives
// the edges in CSR order with their border counts, and a binary search gives indptr. The order in
// which the second pass writes keys varies, but the sort makes the result deterministic.
#include "ops/check.h"
#include <ATen/ops/_unique2.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/div.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/remainder.h>
#include <ATen/ops/searchsorted.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <tuple>

#include "ops/cuda/cuda_helpers.h"
#include "ops/superpixel_adjacency.h"

namespace spl {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// For pixel p of image b: its global node id, or -1; flags labels outside [-1, K_b).
__device__ __forceinline__ int64_t node_of(const int64_t* labels, const int64_t* off, int64_t b, int64_t p,
                                           int* error) {
  const int64_t k = labels[p], K = off[b + 1] - off[b];
  if (k < -1 || k >= K) {
    atomicOr(error, 1);
    return -1;
  }
  return k < 0 ? -1 : off[b] + k;
}

// keys == nullptr: count the crossing pairs into *count. Else write both directed keys of each pair.
__global__ void border_pairs_kernel(const int64_t* labels, const int64_t* off, int64_t B, int64_t H, int64_t W,
                                    int64_t N, unsigned long long* count, int64_t* keys, int* error) {
  const int64_t HW = H * W;
  unsigned long long local = 0;
  SPL_CUDA_1D_LOOP(p, B * HW) {
    const int64_t b = p / HW, y = (p % HW) / W, x = p % W;
    const int64_t a = node_of(labels, off, b, p, error);
    if (a < 0) continue;
    int64_t nb[2] = {-1, -1};
    if (x + 1 < W) nb[0] = node_of(labels, off, b, p + 1, error);
    if (y + 1 < H) nb[1] = node_of(labels, off, b, p + W, error);
    for (int d = 0; d < 2; ++d) {
      if (nb[d] < 0 || nb[d] == a) continue;
      if (keys == nullptr) {
        local += 2;
      } else {
        const unsigned long long slot = atomicAdd(count, 2ull);
        keys[slot] = a * N + nb[d];
        keys[slot + 1] = nb[d] * N + a;
      }
    }
  }
  if (keys == nullptr && local > 0) atomicAdd(count, local);
}

__global__ void check_offsets_kernel(const int64_t* off, int64_t B, int* error) {
  SPL_CUDA_1D_LOOP(b, B) {
    if (off[b + 1] < off[b] || (b == 0 && off[0] != 0)) atomicOr(error, 2);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> superpixel_adjacency_cuda(const at::Tensor& labels,
                                                                         const at::Tensor& node_offset) {
  const char* op = "superpixel_adjacency";
  check_superpixel_adjacency_args(labels, node_offset);
  c10::cuda::CUDAGuard guard(labels.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor lc = labels.contiguous(), off = node_offset.contiguous();
  const int64_t B = lc.size(0), H = lc.size(1), W = lc.size(2);
  const auto opts = labels.options();
  at::Tensor error = at::zeros({1}, opts.dtype(at::kInt));
  if (B > 0) {
    check_offsets_kernel<<<blocks_for(B, kThreads), kThreads, 0, stream>>>(off.const_data_ptr<int64_t>(), B,
                                                                           error.mutable_data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  SPL_CHECK_VALUE(read_scalar(error.const_data_ptr<int>(), stream) == 0, op,
                  ": node_offset must start at 0 and be non-decreasing");
  const int64_t N = read_scalar(off.const_data_ptr<int64_t>() + B, stream);
  SPL_CHECK_VALUE(N < (int64_t{1} << 31), op, ": at most 2^31 superpixels in a batch, got ", N);
  at::Tensor count = at::zeros({1}, opts);
  const unsigned blocks = blocks_for(B * H * W, kThreads);
  auto* count_ptr = reinterpret_cast<unsigned long long*>(count.mutable_data_ptr<int64_t>());
  if (B * H * W > 0) {
    border_pairs_kernel<<<blocks, kThreads, 0, stream>>>(lc.const_data_ptr<int64_t>(), off.const_data_ptr<int64_t>(), B,
                                                         H, W, N, count_ptr, nullptr, error.mutable_data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  SPL_CHECK_VALUE(read_scalar(error.const_data_ptr<int>(), stream) == 0, op,
                  ": labels of image b must be in [-1, node_offset[b + 1] - node_offset[b]) (its number of "
                  "superpixels; -1: ignored pixel)");
  const int64_t pairs = read_scalar(count.const_data_ptr<int64_t>(), stream);
  at::Tensor keys = at::empty({pairs}, opts);
  if (pairs > 0) {
    count.zero_();
    border_pairs_kernel<<<blocks, kThreads, 0, stream>>>(lc.const_data_ptr<int64_t>(), off.const_data_ptr<int64_t>(), B,
                                                         H, W, N, count_ptr, keys.mutable_data_ptr<int64_t>(),
                                                         error.mutable_data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  // Sorted unique keys with their multiplicities: the edges in CSR order and their border counts.
  auto [unique, inverse, border] = at::_unique2(keys, /*sorted=*/true, /*return_inverse=*/false,
                                                /*return_counts=*/true);
  at::Tensor rows = at::div(unique, N, "floor");
  at::Tensor indices = at::remainder(unique, N);
  at::Tensor indptr = at::searchsorted(rows, at::arange(N + 1, opts));
  return {indptr, indices, border};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(spl, CUDA, m) { m.impl("superpixel_adjacency", &cuda::superpixel_adjacency_cuda); }

}  // namespace spl
