// sparse_propagate on the GPU. Forward: one launch validates the graph (a block per image), then
// one grid-wide launch per round, a thread per (row, channel) of the whole batch. (A first version
// ran every round inside one block per image: one launch, but a batch of 32 images kept only 32 of
// an H100's 132 SMs busy, and the rounds' latency added up; 40 launches cost ~0.1 ms instead.)
// The round kernels check the validation flag on the device, so no host synchronisation is needed
// before them. Each output element sums its terms in the CPU kernel's order with --fmad=false, so
// CPU and GPU agree to the last bit. The backward (training only) recomputes and stores the states
// s^0 .. s^{iters-1} in one block per image, then runs the rounds in reverse with T^T; each edge's
// gradient is accumulated by the one thread that owns its row: no atomics anywhere, deterministic.
#include "ops/check.h"
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <tuple>

#include "ops/cuda/cuda_helpers.h"
#include "ops/sparse_propagate.h"

namespace spl {
namespace cuda {
namespace {

constexpr int kThreads = 1024;      // validation and backward: one block per image
constexpr int kRoundThreads = 256;  // forward rounds: a thread per (row, channel)

// Block-wide check of image b's part of the graph: indptr non-decreasing, edges inside the image.
// With want_reverse, also finds each edge's reverse (binary search in the sorted target row).
__device__ bool image_graph_ok(const int64_t* ip, const int64_t* ix, const int64_t* off, int64_t B, int64_t N,
                               int64_t E, bool want_reverse, int64_t* rev) {
  __shared__ int bad;
  const int64_t b = blockIdx.x;
  if (threadIdx.x == 0) {
    bad = 0;
    if (b == 0 && (ip[0] != 0 || ip[N] != E || off[0] != 0 || off[B] != N)) bad = 1;
  }
  __syncthreads();
  const int64_t r0 = off[b], r1 = off[b + 1];
  if (r0 < 0 || r1 < r0 || r1 > N) {
    bad = 1;  // every thread sees the same values: a benign identical write
  } else {
    for (int64_t i = r0 + threadIdx.x; i < r1; i += blockDim.x) {
      if (ip[i + 1] < ip[i] || ip[i] < 0 || ip[i + 1] > E) {
        bad = 1;
        continue;
      }
      for (int64_t e = ip[i]; e < ip[i + 1]; ++e) {
        const int64_t j = ix[e];
        if (j < r0 || j >= r1) {
          bad = 1;
          break;
        }
        if (want_reverse) {
          int64_t lo = ip[j], hi = ip[j + 1];  // first position in row j with ix >= i
          while (lo < hi) {
            const int64_t mid = (lo + hi) / 2;
            if (ix[mid] < i) lo = mid + 1;
            else hi = mid;
          }
          if (lo == ip[j + 1] || ix[lo] != i) bad = 1;
          else rev[e] = lo;
        }
      }
    }
  }
  __syncthreads();
  return bad == 0;
}

// Element (i, c) of one round: alpha * (d_i src_ic + sum_e v_e src_jc) + (1 - alpha) x_ic, its terms
// summed in the CPU kernel's order (with --fmad=false: the same bits). Forward and backward share it.
template <typename scalar_t>
__device__ __forceinline__ scalar_t propagate_element(int64_t i, int64_t c, int64_t C, const int64_t* ip,
                                                      const int64_t* ix, const scalar_t* ev, const scalar_t* sv,
                                                      const scalar_t* src, const scalar_t* x, scalar_t alpha) {
  scalar_t acc = sv[i] * src[i * C + c];
  for (int64_t e = ip[i]; e < ip[i + 1]; ++e) acc += ev[e] * src[ix[e] * C + c];
  return alpha * acc + (scalar_t(1) - alpha) * x[i * C + c];
}

// One round over the rows [r0, r1) of one image, by the threads of one block (the backward).
template <typename scalar_t>
__device__ void propagate_block(int64_t r0, int64_t r1, int64_t C, const int64_t* ip, const int64_t* ix,
                                const scalar_t* ev, const scalar_t* sv, const scalar_t* src, const scalar_t* x,
                                scalar_t alpha, scalar_t* dst) {
  for (int64_t k = threadIdx.x; k < (r1 - r0) * C; k += blockDim.x) {
    const int64_t i = r0 + k / C, c = k % C;
    dst[i * C + c] = propagate_element(i, c, C, ip, ix, ev, sv, src, x, alpha);
  }
}

__global__ void validate_graph_kernel(const int64_t* ip, const int64_t* ix, const int64_t* off, int64_t B, int64_t N,
                                      int64_t E, int* error) {
  if (!image_graph_ok(ip, ix, off, B, N, E, false, nullptr) && threadIdx.x == 0) atomicOr(error, 1);
}

// One round over every row of the batch (the forward), a thread per element.
template <typename scalar_t>
__global__ void propagate_round_kernel(const int64_t* ip, const int64_t* ix, const scalar_t* ev, const scalar_t* sv,
                                       const scalar_t* src, const scalar_t* x, int64_t N, int64_t C, scalar_t alpha,
                                       const int* error, scalar_t* dst) {
  if (*error) return;  // an invalid graph: its indices must not be followed
  SPL_CUDA_1D_LOOP(k, N * C) dst[k] = propagate_element(k / C, k % C, C, ip, ix, ev, sv, src, x, alpha);
}

template <typename scalar_t>
__global__ void propagate_backward_kernel(const scalar_t* grad, const int64_t* ip, const int64_t* ix,
                                          const int64_t* off, const scalar_t* ev, const scalar_t* sv, const scalar_t* x,
                                          int64_t B, int64_t N, int64_t E, int64_t C, int64_t iters, scalar_t alpha,
                                          int64_t* rev, scalar_t* states, scalar_t* g0, scalar_t* g1, scalar_t* ge,
                                          scalar_t* gs, scalar_t* dx, int* error) {
  if (!image_graph_ok(ip, ix, off, B, N, E, true, rev)) {
    if (threadIdx.x == 0) atomicOr(error, 1);
    return;
  }
  const int64_t r0 = off[blockIdx.x], r1 = off[blockIdx.x + 1];
  const int64_t NC = N * C;
  const scalar_t keep = scalar_t(1) - alpha;
  // Forward: states[t] = s^t.
  for (int64_t k = r0 * C + threadIdx.x; k < r1 * C; k += blockDim.x) {
    states[k] = x[k];
    g0[k] = grad[k];
  }
  __syncthreads();
  for (int64_t t = 0; t + 1 < iters; ++t) {
    propagate_block(r0, r1, C, ip, ix, ev, sv, states + t * NC, x, alpha, states + (t + 1) * NC);
    __syncthreads();
  }
  scalar_t* g = g0;
  scalar_t* gn = g1;
  for (int64_t t = iters - 1; t >= 0; --t) {
    const scalar_t* s = states + t * NC;
    for (int64_t i = r0 + threadIdx.x; i < r1; i += blockDim.x) {  // gradients of row i's T entries
      const scalar_t* gi = g + i * C;
      scalar_t dot = 0;
      for (int64_t c = 0; c < C; ++c) dot += gi[c] * s[i * C + c];
      gs[i] += alpha * dot;
      for (int64_t e = ip[i]; e < ip[i + 1]; ++e) {
        const scalar_t* sj = s + ix[e] * C;
        scalar_t d = 0;
        for (int64_t c = 0; c < C; ++c) d += gi[c] * sj[c];
        ge[e] += alpha * d;
      }
    }
    for (int64_t k = threadIdx.x; k < (r1 - r0) * C; k += blockDim.x) {  // g <- alpha T^T g
      const int64_t i = r0 + k / C, c = k % C;
      scalar_t acc = sv[i] * g[i * C + c];
      for (int64_t e = ip[i]; e < ip[i + 1]; ++e) acc += ev[rev[e]] * g[ix[e] * C + c];
      dx[i * C + c] += keep * g[i * C + c];
      gn[i * C + c] = acc * alpha;
    }
    __syncthreads();
    scalar_t* tmp = g;
    g = gn;
    gn = tmp;
  }
  for (int64_t k = r0 * C + threadIdx.x; k < r1 * C; k += blockDim.x) dx[k] += g[k];
}

at::Tensor sparse_propagate_cuda(const at::Tensor& indptr, const at::Tensor& indices, const at::Tensor& node_offset,
                                 const at::Tensor& edge_value, const at::Tensor& self_value, const at::Tensor& x,
                                 int64_t iters, double alpha) {
  const char* op = "sparse_propagate";
  check_sparse_propagate_args(op, indptr, indices, node_offset, edge_value, self_value, x, iters, alpha);
  c10::cuda::CUDAGuard guard(x.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor ip = indptr.contiguous(), ix = indices.contiguous(), off = node_offset.contiguous();
  const at::Tensor ev = edge_value.contiguous(), sv = self_value.contiguous(), xc = x.contiguous();
  const int64_t N = xc.size(0), C = xc.size(1), E = ix.size(0), B = off.size(0) - 1;
  at::Tensor out = at::empty_like(xc), other = at::empty_like(xc);
  at::Tensor error = at::zeros({1}, x.options().dtype(at::kInt));
  if (B == 0) {
    SPL_CHECK_VALUE(N == 0 && E == 0, op, ": ", graph_structure_message());
    return out;
  }
  if (iters == 0) out.copy_(xc);
  validate_graph_kernel<<<static_cast<unsigned>(B), kThreads, 0, stream>>>(
      ip.const_data_ptr<int64_t>(), ix.const_data_ptr<int64_t>(), off.const_data_ptr<int64_t>(), B, N, E,
      error.mutable_data_ptr<int>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "sparse_propagate_cuda", [&] {
    // Round t writes `out` when iters - 1 - t is even, so the last round writes `out`.
    const scalar_t* src = xc.const_data_ptr<scalar_t>();
    for (int64_t t = 0; t < iters; ++t) {
      scalar_t* dst = ((iters - 1 - t) % 2 == 0 ? out : other).mutable_data_ptr<scalar_t>();
      propagate_round_kernel<scalar_t><<<blocks_for(N * C, kRoundThreads), kRoundThreads, 0, stream>>>(
          ip.const_data_ptr<int64_t>(), ix.const_data_ptr<int64_t>(), ev.const_data_ptr<scalar_t>(),
          sv.const_data_ptr<scalar_t>(), src, xc.const_data_ptr<scalar_t>(), N, C, static_cast<scalar_t>(alpha),
          error.const_data_ptr<int>(), dst);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      src = dst;
    }
  });
  SPL_CHECK_VALUE(read_scalar(error.const_data_ptr<int>(), stream) == 0, op, ": ", graph_structure_message());
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sparse_propagate_backward_cuda(
    const at::Tensor& grad, const at::Tensor& indptr, const at::Tensor& indices, const at::Tensor& node_offset,
    const at::Tensor& edge_value, const at::Tensor& self_value, const at::Tensor& x, int64_t iters, double alpha) {
  const char* op = "sparse_propagate (backward)";
  check_sparse_propagate_args(op, indptr, indices, node_offset, edge_value, self_value, x, iters, alpha);
  SPL_CHECK_VALUE(grad.sizes() == x.sizes() && grad.scalar_type() == x.scalar_type() && grad.device() == x.device(), op,
                  ": grad must match x in shape, dtype and device");
  c10::cuda::CUDAGuard guard(x.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor ip = indptr.contiguous(), ix = indices.contiguous(), off = node_offset.contiguous();
  const at::Tensor ev = edge_value.contiguous(), sv = self_value.contiguous(), xc = x.contiguous();
  const at::Tensor gc = grad.contiguous();
  const int64_t N = xc.size(0), C = xc.size(1), E = ix.size(0), B = off.size(0) - 1;
  at::Tensor grad_edge = at::zeros({E}, xc.options()), grad_self = at::zeros({N}, xc.options());
  at::Tensor grad_x = at::zeros_like(xc);
  if (B == 0) {
    SPL_CHECK_VALUE(N == 0 && E == 0, op, ": ", graph_structure_message());
    return {grad_edge, grad_self, grad_x};
  }
  if (iters == 0) {
    grad_x.copy_(gc);
    return {grad_edge, grad_self, grad_x};
  }
  at::Tensor rev = at::empty({E}, ip.options());
  at::Tensor states = at::empty({iters, N, C}, xc.options());
  at::Tensor g0 = at::empty_like(xc), g1 = at::empty_like(xc);
  at::Tensor error = at::zeros({1}, x.options().dtype(at::kInt));
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "sparse_propagate_backward_cuda", [&] {
    propagate_backward_kernel<scalar_t><<<static_cast<unsigned>(B), kThreads, 0, stream>>>(
        gc.const_data_ptr<scalar_t>(), ip.const_data_ptr<int64_t>(), ix.const_data_ptr<int64_t>(),
        off.const_data_ptr<int64_t>(), ev.const_data_ptr<scalar_t>(), sv.const_data_ptr<scalar_t>(),
        xc.const_data_ptr<scalar_t>(), B, N, E, C, iters, static_cast<scalar_t>(alpha), rev.mutable_data_ptr<int64_t>(),
        states.mutable_data_ptr<scalar_t>(), g0.mutable_data_ptr<scalar_t>(), g1.mutable_data_ptr<scalar_t>(),
        grad_edge.mutable_data_ptr<scalar_t>(), grad_self.mutable_data_ptr<scalar_t>(),
        grad_x.mutable_data_ptr<scalar_t>(), error.mutable_data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  SPL_CHECK_VALUE(read_scalar(error.const_data_ptr<int>(), stream) == 0, op, ": ", graph_structure_message(),
                  " (each row sorted)");
  return {grad_edge, grad_self, grad_x};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(spl, CUDA, m) {
  m.impl("sparse_propagate", &cuda::sparse_propagate_cuda);
  m.impl("_sparse_propagate_backward", &cuda::sparse_propagate_backward_cuda);
}

}  // namespace spl
