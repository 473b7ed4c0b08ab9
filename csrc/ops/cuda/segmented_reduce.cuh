// Warp-level segmented reductions for scattering pixel values into per-superpixel accumulators.
//
// The 32 lanes of a warp hold consecutive pixels. Lanes with equal keys (image * K + superpixel)
// in a contiguous run form a segment; each segment is reduced with shuffles and only its last
// lane touches global memory. Superpixels are spatially coherent, so a warp usually holds 1-3
// segments and the number of atomics drops ~10x. Callers add integers (or take maxima), so the
// result does not depend on the order of the atomics.
#pragma once

#include <cstdint>

#include "ops/cuda/cuda_helpers.h"

namespace spl {
namespace cuda {

struct WarpSegment {
  int first;  // the lane where this lane's segment starts
  bool last;  // the last lane of its segment: the one that writes
};

// Every lane of the warp must call this (uniform control flow). key < 0: no segment of its own.
__device__ __forceinline__ WarpSegment warp_segment(int64_t key) {
  const int lane = threadIdx.x & 31;
  const int64_t previous = __shfl_up_sync(kFullMask, key, 1);
  const int64_t next = __shfl_down_sync(kFullMask, key, 1);
  const bool head = lane == 0 || previous != key || key < 0;
  const unsigned heads = __ballot_sync(kFullMask, head);
  WarpSegment s;
  s.first = 31 - __clz(heads & ((2u << lane) - 1u));  // the nearest head at or below this lane
  const bool next_head = lane == 31 || next != key || next < 0;
  s.last = next_head;
  return s;
}

// Inclusive scan of v within segments (lanes are combined only with lanes of the same segment).
// A segment is a run of lanes, so lane - offset is in it exactly when lane - offset >= seg.first:
// no shuffle of segment ids, and callers reducing several channels find the segments once.
template <typename T, typename Op>
__device__ __forceinline__ T segmented_scan(T v, const WarpSegment& seg, Op op) {
  const int lane = threadIdx.x & 31;
  for (int offset = 1; offset < 32; offset *= 2) {
    const T other = __shfl_up_sync(kFullMask, v, offset);
    if (lane - offset >= seg.first) v = op(v, other);
  }
  return v;
}

// Inclusive sum within segments.
template <typename T>
__device__ __forceinline__ T segment_sum(T v, const WarpSegment& seg) {
  return segmented_scan(v, seg, [](T a, T b) { return a + b; });
}

// Floats (as double) to unsigned integers that order like the values; NaN above everything.
__device__ __forceinline__ uint64_t ordered_key(double v) {
  if (isnan(v)) return ~uint64_t{0};
  const uint64_t u = static_cast<uint64_t>(__double_as_longlong(v));
  return (u >> 63) ? ~u : (u | (uint64_t{1} << 63));
}

__device__ __forceinline__ double ordered_value(uint64_t key) {
  if (key == ~uint64_t{0}) return __longlong_as_double(0x7FF8000000000000LL);  // NaN
  const uint64_t u = (key >> 63) ? (key & ~(uint64_t{1} << 63)) : ~key;
  return __longlong_as_double(static_cast<long long>(u));
}

}  // namespace cuda
}  // namespace spl
