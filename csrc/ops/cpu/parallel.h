// Parallel loops that pay for themselves, also on a busy machine.
//
// Every at::parallel_for opens an OpenMP parallel region that ends in a barrier. On an idle machine
// a region costs microseconds. When another process runs on the cores (DataLoader workers, a
// training job, a shared node), the barrier waits for whichever of our threads the OS has
// descheduled: a scheduler time slice, milliseconds, per region. A kernel that opens one region per
// round or per small plane then runs many times slower with two threads than with one. So every
// CPU kernel of spl parallelises through parallel_work below:
//   - work estimated under kInlineNs of one thread's time runs on the calling thread, no region;
//   - otherwise ONE region, whose threads take chunks of at least kChunkNs from a shared counter
//     (dynamic scheduling): a descheduled thread delays only the chunk it holds, and the others
//     take the rest;
//   - the natural unit is the largest independent one: an image of a batch, done start to finish
//     (every iteration, every round) by one thread, so no barrier separates its passes.
// Results never depend on the thread count or on which thread runs what: every unit writes only
// its own outputs, and sums run in a fixed order within a unit.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <utility>

namespace spl {
namespace cpu {

// Below this much work (estimated single-thread nanoseconds), a parallel region costs more than
// it saves on a busy machine: beside a busy torch process on 2 cores a region cost ~3.4 ms (SLIC on
// one VOC image, 21 regions: 88 ms with 2 threads, 16.5 ms with one), so a region must hold several
// times that to pay. An idle machine loses at most half of this per op (one VOC image's SLIC runs
// on one thread: 16 ms instead of 10); batches are split by image and keep their speed.
constexpr int64_t kInlineNs = 8'000'000;
// Each chunk a thread takes is worth at least this much work: the region's cost is amortised and
// the counter is not contended, while chunks stay small enough to balance a descheduled thread.
constexpr int64_t kChunkNs = 200'000;

// The thresholds in force: the constants above, unless the environment variables SPL_INLINE_NS /
// SPL_CHUNK_NS (read once) set others. The tests set both to 0, so that every parallel path runs on
// their small inputs (tests/test_threads.py); nothing else should need them.
inline int64_t threshold_from_env(const char* name, int64_t fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  char* end = nullptr;
  const long long parsed = std::strtoll(value, &end, 10);
  return (*end == '\0' && parsed >= 0) ? static_cast<int64_t>(parsed) : fallback;
}
inline int64_t inline_ns() {
  static const int64_t value = threshold_from_env("SPL_INLINE_NS", kInlineNs);
  return value;
}
inline int64_t chunk_ns() {
  static const int64_t value = threshold_from_env("SPL_CHUNK_NS", kChunkNs);
  return value;
}

// Single-thread costs of the simplest passes (ns per element, measured on a 2-core AVX2 EPYC;
// estimates only decide whether to split).
constexpr double kScanNs = 0.3;    // reading an int64 and comparing it
constexpr double kGatherNs = 0.8;  // out[p] = values[labels[p]]

// f(begin, end) over [0, n) in chunks; ns_per_unit is the estimated single-thread time of one unit
// (it only decides whether and how finely to split, never the result). Units of one chunk are
// consecutive; chunks are disjoint and cover [0, n).
template <typename F>
void parallel_work(int64_t n, double ns_per_unit, const F& f) {
  if (n <= 0) return;
  const double total = static_cast<double>(n) * std::max(ns_per_unit, 0.0);
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  if (threads <= 1 || n == 1 || total < static_cast<double>(inline_ns())) {
    f(int64_t{0}, n);
    return;
  }
  const int64_t chunk =
      std::clamp<int64_t>(static_cast<int64_t>(static_cast<double>(chunk_ns()) / std::max(ns_per_unit, 1e-3)), 1, n);
  const int64_t chunks = (n + chunk - 1) / chunk;
  const int64_t workers = std::min(threads, chunks);
  if (workers <= 1) {
    f(int64_t{0}, n);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, workers, 1, [&](int64_t first, int64_t last) {
    for (int64_t w = first; w < last; ++w) {
      for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < chunks;
           c = next.fetch_add(1, std::memory_order_relaxed)) {
        f(c * chunk, std::min(n, (c + 1) * chunk));
      }
    }
  });
}

// f(i) for every i in [0, n): independent items (the images of a batch), each by one thread.
template <typename F>
void parallel_items(int64_t n, double ns_per_item, const F& f) {
  parallel_work(n, ns_per_item, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) f(i);
  });
}

// True if every one of n int64 values lies in [low, high] (low <= high): one unsigned comparison per
// value, which vectorises (a min / max of int64 does not on AVX2).
inline bool all_in_range(const int64_t* v, int64_t n, int64_t low, int64_t high) {
  const uint64_t span = static_cast<uint64_t>(high) - static_cast<uint64_t>(low);
  std::atomic<bool> ok{true};
  parallel_work(n, kScanNs, [&](int64_t begin, int64_t end) {
    uint64_t outside = 0;
    for (int64_t i = begin; i < end; ++i)
      outside |= static_cast<uint64_t>(static_cast<uint64_t>(v[i]) - static_cast<uint64_t>(low) > span);
    if (outside) ok = false;
  });
  return ok.load();
}

// The smallest and largest of n int64 values (n >= 1), in one pass (for error messages).
inline std::pair<int64_t, int64_t> min_max(const int64_t* v, int64_t n) {
  int64_t lo = v[0], hi = v[0];
  for (int64_t i = 0; i < n; ++i) lo = std::min(lo, v[i]), hi = std::max(hi, v[i]);
  return {lo, hi};
}

}  // namespace cpu
}  // namespace spl
