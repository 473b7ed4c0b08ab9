// spl's CUDA emulator: runs the kernels of csrc/ops/cuda/*.cu on the CPU, for tests on machines
// without a GPU.
//
// The kernel files are compiled as C++: tests/cuda_emu/build.py rewrites `k<<<g, b, s, t>>>(...)`
// into `spl_emu::launch(...)` and registers the kernels as the CPU kernels of a separate op library,
// `spl_emu`. This header, included first, supplies what nvcc and the CUDA runtime would; the
// folder include/ stands in for the c10/cuda and cub headers.
//
// Execution model. The blocks of a grid run one after another. The threads of a block are fibers
// on one OS thread (a few instructions per switch on x86-64, runtime.cpp; ucontext elsewhere): a
// thread runs until it reaches a barrier (__syncthreads, or a warp collective such as __shfl_sync),
// then the next runnable thread runs. So every barrier is real, `__shared__` memory is a
// function-local static (one block at a time uses it), and atomics are plain read-modify-writes.
// What it checks beyond the arithmetic:
//   - a warp collective must be reached by every lane of its mask, with the same mask; a lane that
//     has exited, or a lane that does not exist (partial warp), named in the mask is an error;
//   - a block that can make no progress (threads waiting on different barriers) is an error;
//   - launch configurations are checked as the driver would (no grid dimension of 0, at most 1024
//     threads per block, at most 227 KiB of dynamic shared memory);
//   - the order in which threads and blocks run is a knob (SPL_EMU_ORDER=forward|reverse|shuffle,
//     SPL_EMU_SEED, or torch.ops.spl_emu._emu_schedule), and SPL_EMU_PREEMPT=1 switches threads at
//     every atomic: a kernel whose result depends on either has a race or an order-dependent
//     reduction, which the tests look for by running each op under several schedules;
//   - built with AddressSanitizer (SPL_EMU_ASAN=1, tools/cuda_emu_asan.sh), out-of-bounds accesses.
// Errors surface as a C++ exception from the launch, i.e. a RuntimeError in Python.
//
// What it cannot see: the memory model (every access is immediately visible), the real warp
// scheduler, the device branches of `#ifdef __CUDA_ARCH__` (the host branch is compiled), timing.
// Launches from several OS threads take turns (one lock): there is one emulated GPU.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

// ---- Language ----------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The kernel-side built-in variables; the scheduler sets them before it resumes a thread. (Plain
// globals, not thread_local, which costs a call per access in a shared library: launches take
// turns, see launch_impl.)
inline uint3 threadIdx{0, 0, 0};
inline uint3 blockIdx{0, 0, 0};
inline dim3 blockDim{1, 1, 1};
inline dim3 gridDim{1, 1, 1};
constexpr int warpSize = 32;

// ---- Runtime API -------------------------------------------------------------------------------
using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidValue = 1;
struct CUstream_st;
using cudaStream_t = CUstream_st*;
enum cudaMemcpyKind {
  cudaMemcpyHostToHost,
  cudaMemcpyHostToDevice,
  cudaMemcpyDeviceToHost,
  cudaMemcpyDeviceToDevice,
  cudaMemcpyDefault
};
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin = 97, cudaDevAttrMultiProcessorCount = 16 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
#define CUDART_VERSION 13000

inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated CUDA error"; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t = nullptr) {
  if (bytes) std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return cudaMemcpyAsync(dst, src, bytes, kind);
}
inline cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t = nullptr) {
  if (bytes) std::memset(dst, value, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
// An H100's figures, so launch configurations come out as they would there.
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  *value = attr == cudaDevAttrMaxSharedMemoryPerBlockOptin ? 232448 : attr == cudaDevAttrMultiProcessorCount ? 132 : 0;
  return cudaSuccess;
}
template <typename F>
cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) {
  return cudaSuccess;
}

namespace spl_emu {

[[noreturn]] inline void fail(const std::string& what) { throw std::runtime_error("spl CUDA emulator: " + what); }

// ---- Scheduler ---------------------------------------------------------------------------------
enum class Order { forward, reverse, shuffle };

struct Settings {
  Order order = Order::forward;
  uint64_t seed = 0;
  bool preempt = false;
};

inline Settings& settings() {
  static Settings s = [] {
    Settings r;
    if (const char* o = std::getenv("SPL_EMU_ORDER")) {
      const std::string v(o);
      r.order = v == "reverse" ? Order::reverse : v == "shuffle" ? Order::shuffle : Order::forward;
    }
    if (const char* s = std::getenv("SPL_EMU_SEED")) r.seed = std::strtoull(s, nullptr, 10);
    if (const char* p = std::getenv("SPL_EMU_PREEMPT")) r.preempt = std::string(p) == "1";
    return r;
  }();
  return s;
}

enum class State { ready, waiting_block, waiting_warp, done };

struct Warp {
  // Values of the collective in progress, and each lane's copy of the values of the last one it
  // took part in (a lane reads its copy after it wakes; only its own next collective replaces it).
  uint64_t collecting[32] = {};
  uint64_t result[32][32] = {};
  unsigned arrived = 0;  // lanes that reached the collective in progress
  unsigned mask = 0;     // its mask
};

struct Block {
  std::vector<State> state;
  std::vector<Warp> warps;
  int threads = 0, alive = 0, block_arrived = 0;
  int current = -1;
};

// Context switch between the scheduler and the threads of a block. On x86-64, a few instructions
// (runtime.cpp: callee-saved registers, MXCSR and the x87 control word); elsewhere
// ucontext, whose swapcontext also saves the signal mask with a system call per switch.
#if defined(__SANITIZE_ADDRESS__)
// AddressSanitizer must be told about every stack switch (and where the new stack lies).
extern "C" void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, size_t size);
extern "C" void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old, size_t* size_old);
extern "C" void __asan_unpoison_memory_region(void const volatile* addr, size_t size);
#endif

#if defined(__x86_64__)
extern "C" void spl_emu_switch(void** save_sp, void* load_sp);
struct Context {
  void* sp = nullptr;
  const void* stack_bottom = nullptr;  // for AddressSanitizer; null: the OS thread's own stack
  size_t stack_bytes = 0;
};
inline void switch_to(Context& from, Context& to) {
#if defined(__SANITIZE_ADDRESS__)
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(&fake_stack, to.stack_bottom, to.stack_bytes);
  spl_emu_switch(&from.sp, to.sp);
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#else
  spl_emu_switch(&from.sp, to.sp);
#endif
}
inline void start_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
#if defined(__SANITIZE_ADDRESS__)
  // The last thread on this stack never returned from its frames: clear their redzones.
  __asan_unpoison_memory_region(stack, bytes);
#endif
  uintptr_t top = reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15};
  uint64_t* frame = reinterpret_cast<uint64_t*>(top);
  frame[-1] = 0;                                  // entry's (never used) return address
  frame[-2] = reinterpret_cast<uint64_t>(entry);  // where the first switch returns to
  for (int r = 3; r <= 8; ++r) frame[-r] = 0;     // rbp, rbx, r12-r15
  frame[-9] = 0x1F80ull | (0x037Full << 32);      // MXCSR, x87 control word: the defaults
  c.sp = frame - 9;
  c.stack_bottom = stack;
  c.stack_bytes = bytes;
}
#else
struct Context {
  ucontext_t uc;
};
inline void switch_to(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
inline void start_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
#endif

struct Machine {
  static constexpr size_t kStackBytes = 256 * 1024;
  std::vector<std::unique_ptr<char[]>> stacks;
  std::vector<Context> contexts;
  Context scheduler{};
  Block block;
  std::function<void()>* body = nullptr;
  std::exception_ptr error;
  std::vector<unsigned char> dynamic_shared;
  bool running = false;
  int64_t launches = 0;  // kernels launched so far (tests check that the emulator ran at all)
};

inline Machine& machine() {
  static Machine m;
  return m;
}

inline void set_thread_index(int t) {
  threadIdx = uint3{static_cast<unsigned>(t) % blockDim.x, (static_cast<unsigned>(t) / blockDim.x) % blockDim.y,
                    static_cast<unsigned>(t) / (blockDim.x * blockDim.y)};
}

// Back to the scheduler; returns when this thread is resumed.
inline void yield() {
  Machine& m = machine();
  switch_to(m.contexts[m.block.current], m.scheduler);
}

[[noreturn]] inline void thread_entry() {
  Machine& m = machine();
#if defined(__SANITIZE_ADDRESS__) && defined(__x86_64__)
  // A new thread's first switch ends here, not in switch_to; it came from the scheduler, on the OS
  // thread's stack, whose bounds AddressSanitizer now reports.
  __sanitizer_finish_switch_fiber(nullptr, &m.scheduler.stack_bottom, &m.scheduler.stack_bytes);
#endif
  try {
    (*m.body)();
  } catch (...) {
    if (!m.error) m.error = std::current_exception();
  }
  Block& b = m.block;
  b.state[b.current] = State::done;
  --b.alive;
  switch_to(m.contexts[b.current], m.scheduler);
  std::abort();  // a finished thread is never resumed
}

inline int lane_id() {
  const Block& b = machine().block;
  return b.current & 31;
}

// __syncthreads: every thread of the block that has not exited must arrive.
inline void block_barrier() {
  Machine& m = machine();
  if (!m.running) fail("__syncthreads outside a kernel");
  Block& b = m.block;
  if (++b.block_arrived == b.alive) {
    b.block_arrived = 0;
    for (int t = 0; t < b.threads; ++t)
      if (b.state[t] == State::waiting_block) b.state[t] = State::ready;
    return;
  }
  b.state[b.current] = State::waiting_block;
  yield();
}

// A warp collective: every lane of `mask` deposits `value`; returns the values of all 32 lanes.
inline const uint64_t* warp_exchange(unsigned mask, uint64_t value, const char* what) {
  Machine& m = machine();
  if (!m.running) fail(std::string(what) + " outside a kernel");
  Block& b = m.block;
  const int lane = b.current & 31;
  Warp& w = b.warps[b.current / 32];
  const int warp_base = (b.current / 32) * 32;
  if (!(mask >> lane & 1u)) fail(std::string(what) + ": the calling lane is not in its own mask");
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    if (warp_base + l >= b.threads)
      fail(std::string(what) + ": mask names lane " + std::to_string(l) + ", which does not exist (partial warp)");
    if (b.state[warp_base + l] == State::done)
      fail(std::string(what) + ": mask names lane " + std::to_string(l) + ", which has exited");
  }
  if (w.arrived == 0) {
    w.mask = mask;
  } else if (w.mask != mask) {
    // Either a real bug (lanes of one collective passing different masks) or two disjoint groups
    // of lanes in collectives at once, which this emulator does not model; spl's kernels do neither.
    fail(std::string(what) + ": lanes of one warp are in collectives with different masks");
  }
  w.collecting[lane] = value;
  w.arrived |= 1u << lane;
  if (w.arrived == mask) {
    w.arrived = 0;
    for (int l = 0; l < 32; ++l) {
      if (!(mask >> l & 1u)) continue;
      std::copy(std::begin(w.collecting), std::end(w.collecting), std::begin(w.result[l]));
      if (l != lane) b.state[warp_base + l] = State::ready;
    }
    return w.result[lane];
  }
  b.state[b.current] = State::waiting_warp;
  yield();
  return w.result[lane];
}

inline void maybe_preempt() {
  Machine& m = machine();
  if (m.running && settings().preempt) yield();
}

inline void* dynamic_shared_memory() { return machine().dynamic_shared.data(); }

inline std::vector<int> schedule(int n, uint64_t salt) {
  std::vector<int> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  const Settings& s = settings();
  if (s.order == Order::reverse) std::reverse(order.begin(), order.end());
  if (s.order == Order::shuffle) {
    std::mt19937_64 rng(s.seed * 0x9E3779B97F4A7C15ull + salt);
    std::shuffle(order.begin(), order.end(), rng);
  }
  return order;
}

inline void run_block(Machine& m, int threads) {
  Block& b = m.block;
  b.threads = threads;
  b.alive = threads;
  b.block_arrived = 0;
  b.state.assign(threads, State::ready);
  // (Only the bookkeeping of a warp is reset: its 8 KB of values are always written before read,
  // and zeroing them per block dominated launches of many small blocks.)
  b.warps.resize((threads + 31) / 32);
  for (Warp& w : b.warps) w.arrived = w.mask = 0;
  if (m.contexts.size() < static_cast<size_t>(threads)) m.contexts.resize(threads);
  while (m.stacks.size() < static_cast<size_t>(threads)) m.stacks.emplace_back(new char[Machine::kStackBytes]);
  for (int t = 0; t < threads; ++t) start_context(m.contexts[t], m.stacks[t].get(), Machine::kStackBytes, thread_entry);
  const std::vector<int> order = schedule(threads, static_cast<uint64_t>(blockIdx.x) * 7919u + blockIdx.y);
  while (b.alive > 0) {
    bool progress = false;
    for (int t : order) {
      if (b.state[t] != State::ready) continue;
      progress = true;
      b.current = t;
      set_thread_index(t);
      switch_to(m.scheduler, m.contexts[t]);
      if (m.error) return;
      if (b.state[t] == State::done) {
        const Warp& w = b.warps[t / 32];
        if (w.arrived != 0 && (w.mask >> (t & 31) & 1u)) {
          try {
            fail("a warp collective's mask names lane " + std::to_string(t & 31) +
                 ", which has exited while the other lanes wait for it");
          } catch (...) {
            m.error = std::current_exception();
          }
          return;
        }
      }
    }
    // A thread that exits can complete a __syncthreads the others wait at.
    if (b.alive > 0 && b.block_arrived > 0 && b.block_arrived == b.alive) {
      b.block_arrived = 0;
      for (int t = 0; t < threads; ++t)
        if (b.state[t] == State::waiting_block) b.state[t] = State::ready;
      progress = true;
    }
    if (!progress) {
      int at_block = 0, at_warp = 0;
      for (int t = 0; t < threads; ++t) {
        at_block += b.state[t] == State::waiting_block;
        at_warp += b.state[t] == State::waiting_warp;
      }
      fail("deadlock in block (" + std::to_string(blockIdx.x) + ", " + std::to_string(blockIdx.y) +
           "): " + std::to_string(at_block) + " threads wait at __syncthreads, " + std::to_string(at_warp) +
           " at a warp collective, " + std::to_string(b.alive) + " of " + std::to_string(threads) + " alive");
    }
  }
}

inline void launch_impl(std::function<void()> body, dim3 grid, dim3 block, size_t shared_bytes) {
  // One emulated GPU: launches from several OS threads take turns.
  static std::recursive_mutex one_launch_at_a_time;
  std::lock_guard<std::recursive_mutex> lock(one_launch_at_a_time);
  Machine& m = machine();
  if (m.running) fail("kernel launch from inside a kernel");
  ++m.launches;
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64)
    fail("invalid block size " + std::to_string(block.x) + "x" + std::to_string(block.y) + "x" +
         std::to_string(block.z));
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535)
    fail("invalid grid size " + std::to_string(grid.x) + "x" + std::to_string(grid.y) + "x" + std::to_string(grid.z));
  if (shared_bytes > 232448)
    fail("dynamic shared memory of " + std::to_string(shared_bytes) + " bytes exceeds 227 KiB");
  // Poisoned, as real shared memory holds whatever the last block left.
  m.dynamic_shared.assign(shared_bytes + 16, 0xA5);
  m.body = &body;
  m.error = nullptr;
  m.running = true;
  struct Stop {  // whatever happens (a deadlock is thrown from here), the next launch starts afresh
    Machine& m;
    ~Stop() {
      m.running = false;
      m.body = nullptr;
    }
  } stop{m};
  gridDim = grid;
  blockDim = block;
  const uint64_t blocks = uint64_t{grid.x} * grid.y * grid.z;
  std::vector<int> block_order = schedule(static_cast<int>(std::min<uint64_t>(blocks, INT32_MAX)), 12345);
  for (int i : block_order) {
    const uint64_t id = static_cast<uint64_t>(i);
    blockIdx = uint3{static_cast<unsigned>(id % grid.x), static_cast<unsigned>((id / grid.x) % grid.y),
                     static_cast<unsigned>(id / (uint64_t{grid.x} * grid.y))};
    run_block(m, static_cast<int>(threads));
    if (m.error) break;
  }
  if (m.error) std::rethrow_exception(m.error);
}

inline dim3 to_dim3(dim3 d) { return d; }
template <typename I, typename = std::enable_if_t<std::is_integral_v<I>>>
dim3 to_dim3(I n) {
  if (n < 0 || static_cast<uint64_t>(n) > UINT32_MAX) fail("launch dimension out of range: " + std::to_string(n));
  return dim3(static_cast<unsigned>(n));
}

// k<<<grid, block[, shared[, stream]]>>>(args...) becomes launch([&] { k(args...); }, grid, block, ...).
template <typename F, typename G, typename B>
void launch(F&& body, G grid, B block, size_t shared_bytes = 0, cudaStream_t = nullptr) {
  launch_impl(std::function<void()>(body), to_dim3(grid), to_dim3(block), shared_bytes);
}

// ---- Bits --------------------------------------------------------------------------------------
template <typename T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp collectives move up to 8 bytes");
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <typename T>
T from_bits(uint64_t u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}

}  // namespace spl_emu

// ---- Synchronisation and warp intrinsics ----------------------------------------------------------
inline void __syncthreads() { spl_emu::block_barrier(); }
inline void __syncwarp(unsigned mask = 0xFFFFFFFFu) { spl_emu::warp_exchange(mask, 0, "__syncwarp"); }
inline void __threadfence() {}
inline void __threadfence_block() {}

namespace spl_emu {
// The four shuffles differ only in the lane they read: source(lane) gives it, or -1 where the lane
// keeps its own value (outside its width segment).
template <typename T, typename Source>
T shuffle(unsigned mask, T v, const char* what, Source source) {
  const int lane = lane_id();
  const uint64_t* all = warp_exchange(mask, to_bits(v), what);
  const int from = source(lane);
  if (from < 0) return v;
  if (!(mask >> from & 1u)) fail(std::string(what) + " reads lane " + std::to_string(from) + ", outside the mask");
  return from_bits<T>(all[from]);
}
}  // namespace spl_emu

template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return spl_emu::shuffle(mask, v, "__shfl_sync",
                          [=](int lane) { return (lane & ~(width - 1)) + (src & (width - 1)); });
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int d = static_cast<int>(delta);
  return spl_emu::shuffle(mask, v, "__shfl_up_sync",
                          [=](int lane) { return (lane & (width - 1)) < d ? -1 : lane - d; });
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int d = static_cast<int>(delta);
  return spl_emu::shuffle(mask, v, "__shfl_down_sync",
                          [=](int lane) { return (lane & (width - 1)) + d >= width ? -1 : lane + d; });
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return spl_emu::shuffle(mask, v, "__shfl_xor_sync", [=](int lane) {
    const int from = lane ^ lane_mask;
    return (from & ~(width - 1)) != (lane & ~(width - 1)) ? -1 : from;
  });
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  const uint64_t* all = spl_emu::warp_exchange(mask, predicate ? 1 : 0, "__ballot_sync");
  unsigned r = 0;
  for (int l = 0; l < 32; ++l)
    if ((mask >> l & 1u) && all[l]) r |= 1u << l;
  return r;
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) == mask; }
inline unsigned __reduce_add_sync(unsigned mask, unsigned v) {
  const uint64_t* all = spl_emu::warp_exchange(mask, v, "__reduce_add_sync");
  unsigned r = 0;
  for (int l = 0; l < 32; ++l)
    if (mask >> l & 1u) r += static_cast<unsigned>(all[l]);
  return r;
}
inline int __reduce_add_sync(unsigned mask, int v) {
  return static_cast<int>(__reduce_add_sync(mask, static_cast<unsigned>(v)));
}

// ---- Atomics (plain read-modify-writes: one thread runs at a time) ------------------------------
namespace spl_emu {
template <typename T, typename F>
T atomic_update(T* p, F next) {
  maybe_preempt();
  const T old = *p;
  *p = next(old);
  return old;
}
}  // namespace spl_emu

template <typename T>
T atomicAdd(T* p, T v) {
  return spl_emu::atomic_update(p, [v](T old) { return static_cast<T>(old + v); });
}
template <typename T>
T atomicMax(T* p, T v) {
  return spl_emu::atomic_update(p, [v](T old) { return v > old ? v : old; });
}
template <typename T>
T atomicMin(T* p, T v) {
  return spl_emu::atomic_update(p, [v](T old) { return v < old ? v : old; });
}
template <typename T>
T atomicOr(T* p, T v) {
  return spl_emu::atomic_update(p, [v](T old) { return static_cast<T>(old | v); });
}
template <typename T>
T atomicAnd(T* p, T v) {
  return spl_emu::atomic_update(p, [v](T old) { return static_cast<T>(old & v); });
}
template <typename T>
T atomicExch(T* p, T v) {
  return spl_emu::atomic_update(p, [v](T) { return v; });
}
template <typename T>
T atomicCAS(T* p, T compare, T v) {
  return spl_emu::atomic_update(p, [=](T old) { return old == compare ? v : old; });
}

// ---- Loads and bit casts -------------------------------------------------------------------------
template <typename T>
T __ldg(const T* p) {
  return *p;
}
template <typename T>
T __ldcg(const T* p) {
  return *p;
}
template <typename T>
T __ldcs(const T* p) {
  return *p;
}
template <typename T>
void __stcs(T* p, T v) {
  *p = v;
}
inline unsigned __float_as_uint(float f) { return spl_emu::from_bits<unsigned>(spl_emu::to_bits(f)); }
inline int __float_as_int(float f) { return spl_emu::from_bits<int>(spl_emu::to_bits(f)); }
inline float __uint_as_float(unsigned u) { return spl_emu::from_bits<float>(spl_emu::to_bits(u)); }
inline float __int_as_float(int u) { return spl_emu::from_bits<float>(spl_emu::to_bits(u)); }
inline long long __double_as_longlong(double d) { return spl_emu::from_bits<long long>(spl_emu::to_bits(d)); }
inline double __longlong_as_double(long long u) { return spl_emu::from_bits<double>(spl_emu::to_bits(u)); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }

// CUDA's device code has min/max overloads at global scope.
template <typename A, typename B>
auto min(A a, B b) -> std::common_type_t<A, B> {
  return b < a ? b : a;
}
template <typename A, typename B>
auto max(A a, B b) -> std::common_type_t<A, B> {
  return a < b ? b : a;
}
using std::isfinite;
using std::isinf;
using std::isnan;
