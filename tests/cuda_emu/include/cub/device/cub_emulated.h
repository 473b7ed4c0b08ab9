// CUDA emulator stand-ins for the device-wide cub algorithms spl uses, with cub's signatures and
// results (stable radix sort on bits [begin_bit, end_bit) of the key, run-length encoding, reduce
// by key, exclusive scan). The temporary storage is sized (1 byte) and otherwise unused.
#pragma once
#include "../../../runtime.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

namespace cub {
namespace emu_detail {

// cub's radix order: unsigned keys as they are; signed keys with the sign bit flipped.
template <typename K>
uint64_t radix_bits(K k) {
  static_assert(std::is_integral_v<K>, "the emulated radix sort takes integer keys");
  using U = std::make_unsigned_t<K>;
  U u = static_cast<U>(k);
  if constexpr (std::is_signed_v<K>) u ^= U(1) << (sizeof(K) * 8 - 1);
  return static_cast<uint64_t>(u);
}

template <typename K>
uint64_t digit(K k, int begin_bit, int end_bit) {
  const uint64_t bits = radix_bits(k) >> begin_bit;
  const int width = end_bit - begin_bit;
  return width >= 64 ? bits : bits & ((uint64_t{1} << width) - 1);
}

inline bool sizing(void* temp, size_t& bytes) {
  if (temp == nullptr) {
    bytes = 1;
    return true;
  }
  return false;
}

// Where a DoubleBuffer sort leaves its result: cub's choice depends on the number of passes, so
// the emulator alternates between the two buffers from call to call (both branches get run) and
// fills the other buffer with junk (a read of it shows).
inline int next_selector_flip() {
  static int calls = 0;
  return calls++ & 1;
}

template <typename T>
void fill_junk(T* p, size_t n) {
  std::memset(static_cast<void*>(p), 0xA5, n * sizeof(T));
}

}  // namespace emu_detail

// cub::DoubleBuffer: a pair of buffers and which one holds the current data.
template <typename T>
struct DoubleBuffer {
  T* d_buffers[2] = {nullptr, nullptr};
  int selector = 0;
  DoubleBuffer() = default;
  DoubleBuffer(T* current, T* alternate) : d_buffers{current, alternate} {}
  T* Current() { return d_buffers[selector]; }
  T* Alternate() { return d_buffers[selector ^ 1]; }
};

struct DeviceRadixSort {
  template <typename K, typename N>
  static cudaError_t SortKeys(void* temp, size_t& bytes, DoubleBuffer<K>& keys, N n, int begin_bit = 0,
                              int end_bit = sizeof(K) * 8, cudaStream_t stream = nullptr) {
    if (emu_detail::sizing(temp, bytes)) return cudaSuccess;
    std::vector<K> sorted(static_cast<size_t>(n));
    SortKeys(temp, bytes, keys.Current(), sorted.data(), n, begin_bit, end_bit, stream);
    keys.selector ^= emu_detail::next_selector_flip();
    std::copy(sorted.begin(), sorted.end(), keys.Current());
    emu_detail::fill_junk(keys.Alternate(), sorted.size());
    return cudaSuccess;
  }
  template <typename K, typename V, typename N>
  static cudaError_t SortPairs(void* temp, size_t& bytes, DoubleBuffer<K>& keys, DoubleBuffer<V>& values, N n,
                               int begin_bit = 0, int end_bit = sizeof(K) * 8, cudaStream_t stream = nullptr) {
    if (emu_detail::sizing(temp, bytes)) return cudaSuccess;
    std::vector<K> k(static_cast<size_t>(n));
    std::vector<V> v(static_cast<size_t>(n));
    SortPairs(temp, bytes, keys.Current(), k.data(), values.Current(), v.data(), n, begin_bit, end_bit, stream);
    const int flip = emu_detail::next_selector_flip();
    keys.selector ^= flip, values.selector ^= flip;
    std::copy(k.begin(), k.end(), keys.Current());
    std::copy(v.begin(), v.end(), values.Current());
    emu_detail::fill_junk(keys.Alternate(), k.size());
    emu_detail::fill_junk(values.Alternate(), v.size());
    return cudaSuccess;
  }
  template <typename K, typename N>
  static cudaError_t SortKeys(void* temp, size_t& bytes, const K* in, K* out, N n, int begin_bit = 0,
                              int end_bit = sizeof(K) * 8, cudaStream_t = nullptr) {
    if (emu_detail::sizing(temp, bytes)) return cudaSuccess;
    std::vector<K> keys(in, in + n);
    std::stable_sort(keys.begin(), keys.end(), [&](K a, K b) {
      return emu_detail::digit(a, begin_bit, end_bit) < emu_detail::digit(b, begin_bit, end_bit);
    });
    std::copy(keys.begin(), keys.end(), out);
    return cudaSuccess;
  }
  template <typename K, typename V, typename N>
  static cudaError_t SortPairs(void* temp, size_t& bytes, const K* keys_in, K* keys_out, const V* values_in,
                               V* values_out, N n, int begin_bit = 0, int end_bit = sizeof(K) * 8,
                               cudaStream_t = nullptr) {
    if (emu_detail::sizing(temp, bytes)) return cudaSuccess;
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return emu_detail::digit(keys_in[a], begin_bit, end_bit) < emu_detail::digit(keys_in[b], begin_bit, end_bit);
    });
    std::vector<K> k(static_cast<size_t>(n));
    std::vector<V> v(static_cast<size_t>(n));
    for (size_t i = 0; i < order.size(); ++i) {
      k[i] = keys_in[order[i]];
      v[i] = values_in[order[i]];
    }
    std::copy(k.begin(), k.end(), keys_out);
    std::copy(v.begin(), v.end(), values_out);
    return cudaSuccess;
  }
};

struct DeviceRunLengthEncode {
  template <typename In, typename UniqueOut, typename CountOut, typename NumRunsOut, typename N>
  static cudaError_t Encode(void* temp, size_t& bytes, In in, UniqueOut unique_out, CountOut counts_out,
                            NumRunsOut num_runs_out, N n, cudaStream_t = nullptr) {
    if (emu_detail::sizing(temp, bytes)) return cudaSuccess;
    int64_t runs = 0;
    for (int64_t i = 0; i < static_cast<int64_t>(n);) {
      int64_t j = i + 1;
      while (j < static_cast<int64_t>(n) && in[j] == in[i]) ++j;
      unique_out[runs] = in[i];
      counts_out[runs] = static_cast<std::remove_reference_t<decltype(counts_out[0])>>(j - i);
      ++runs;
      i = j;
    }
    *num_runs_out = static_cast<std::remove_reference_t<decltype(*num_runs_out)>>(runs);
    return cudaSuccess;
  }
};

struct DeviceReduce {
  template <typename KeysIn, typename UniqueOut, typename ValuesIn, typename AggregatesOut, typename NumRunsOut,
            typename Op, typename N>
  static cudaError_t ReduceByKey(void* temp, size_t& bytes, KeysIn keys_in, UniqueOut unique_out, ValuesIn values_in,
                                 AggregatesOut aggregates_out, NumRunsOut num_runs_out, Op op, N n,
                                 cudaStream_t = nullptr) {
    if (emu_detail::sizing(temp, bytes)) return cudaSuccess;
    int64_t runs = 0;
    for (int64_t i = 0; i < static_cast<int64_t>(n);) {
      auto total = values_in[i];
      int64_t j = i + 1;
      for (; j < static_cast<int64_t>(n) && keys_in[j] == keys_in[i]; ++j) total = op(total, values_in[j]);
      unique_out[runs] = keys_in[i];
      aggregates_out[runs] = total;
      ++runs;
      i = j;
    }
    *num_runs_out = static_cast<std::remove_reference_t<decltype(*num_runs_out)>>(runs);
    return cudaSuccess;
  }
};

struct DeviceScan {
  template <typename In, typename Out, typename N>
  static cudaError_t ExclusiveSum(void* temp, size_t& bytes, In in, Out out, N n, cudaStream_t = nullptr) {
    return Sum(temp, bytes, in, out, n, false);
  }
  template <typename In, typename Out, typename N>
  static cudaError_t InclusiveSum(void* temp, size_t& bytes, In in, Out out, N n, cudaStream_t = nullptr) {
    return Sum(temp, bytes, in, out, n, true);
  }

 private:
  template <typename In, typename Out, typename N>
  static cudaError_t Sum(void* temp, size_t& bytes, In in, Out out, N n, bool inclusive) {
    if (emu_detail::sizing(temp, bytes)) return cudaSuccess;
    using T = std::remove_cv_t<std::remove_reference_t<decltype(out[0])>>;
    T sum = T(0);
    for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) {
      const T v = static_cast<T>(in[i]);  // read before the write: cub allows in == out
      out[i] = inclusive ? sum + v : sum;
      sum = sum + v;
    }
    return cudaSuccess;
  }
};

}  // namespace cub
