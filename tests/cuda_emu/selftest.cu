// Kernels that check the CUDA emulator itself (tests/test_cuda_emulated.py): that barriers and warp
// collectives behave as on a GPU, and that it reports what it promises to report. Compiled only into
// the emulator's library, as torch.ops.spl_emu._emu_selftest(case).
#include <ATen/core/Tensor.h>
#include <ATen/ops/full.h>
#include <torch/library.h>

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

namespace spl_emu_selftest {

// Each thread writes its index to shared memory, then reads its right neighbour's after the
// barrier: without a real barrier, a thread that runs first would read a stale value.
__global__ void barrier_kernel(int* out) {
  __shared__ int slot[256];
  slot[threadIdx.x] = static_cast<int>(threadIdx.x) * 10 + static_cast<int>(blockIdx.x);
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = slot[(threadIdx.x + 1) % blockDim.x];
}

// Per lane: shfl from lane 3, shfl_up by 1, shfl_down by 2, shfl_xor 5, ballot of odd lanes, any,
// and a shfl with width 8.
__global__ void warp_kernel(int* out) {
  const int lane = threadIdx.x & 31;
  const int v = 100 + static_cast<int>(threadIdx.x);
  int* o = out + threadIdx.x * 7;
  o[0] = __shfl_sync(0xFFFFFFFFu, v, 3);
  o[1] = __shfl_up_sync(0xFFFFFFFFu, v, 1);
  o[2] = __shfl_down_sync(0xFFFFFFFFu, v, 2);
  o[3] = __shfl_xor_sync(0xFFFFFFFFu, v, 5);
  o[4] = static_cast<int>(__ballot_sync(0xFFFFFFFFu, lane & 1));
  o[5] = __any_sync(0xFFFFFFFFu, lane == 31);
  o[6] = __shfl_sync(0xFFFFFFFFu, v, 1, 8);
}

// Half the warp exits, the other half then shuffles with the full mask: undefined on a GPU.
__global__ void exited_lane_kernel(int* out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_sync(0xFFFFFFFFu, static_cast<int>(threadIdx.x), 0);
}

// Lane 0 waits at __syncthreads while the rest of its warp waits for it in a shuffle: a deadlock.
__global__ void deadlock_kernel(int* out) {
  if (threadIdx.x == 0) {
    __syncthreads();
  } else {
    out[threadIdx.x] = __shfl_sync(0xFFFFFFFFu, 1, 0);
  }
}

// One thread too many writes past the end of its output: an illegal address on a GPU, and for the
// AddressSanitizer build of the emulator (tools/cuda_emu_asan.sh) a heap-buffer-overflow. Only that
// build may run it (tests/test_cuda_emulated.py does, in a child process).
__global__ void out_of_bounds_kernel(int* out) { out[threadIdx.x] = 1; }

at::Tensor selftest(std::string which) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (which == "barrier") {
    at::Tensor out = at::full({3 * 64}, -1, at::kInt);
    barrier_kernel<<<3, 64, 0, stream>>>(out.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out.view({3, 64});
  }
  if (which == "warp") {
    at::Tensor out = at::full({64 * 7}, -1, at::kInt);
    warp_kernel<<<1, 64, 0, stream>>>(out.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out.view({64, 7});
  }
  at::Tensor out = at::full({32}, -1, at::kInt);
  if (which == "exited_lane") {
    exited_lane_kernel<<<1, 32, 0, stream>>>(out.data_ptr<int>());
  } else if (which == "out_of_bounds") {
    out_of_bounds_kernel<<<1, 33, 0, stream>>>(out.data_ptr<int>());
  } else if (which == "deadlock") {
    deadlock_kernel<<<1, 32, 0, stream>>>(out.data_ptr<int>());
  } else {
    TORCH_CHECK(false, "_emu_selftest: unknown case ", which);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace spl_emu_selftest

TORCH_LIBRARY_FRAGMENT(spl_emu, m) { m.def("_emu_selftest(str which) -> Tensor", &spl_emu_selftest::selftest); }
