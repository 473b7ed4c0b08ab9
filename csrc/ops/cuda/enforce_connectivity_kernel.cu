// Connectivity enforcement on the GPU. Same rule and same result as the CPU kernel, computed
// pixel-parallel: union-find labelling (each component's root is its first pixel), border lengths
// by sorting one key per 4-adjacent pixel pair, then the merge rounds of enforce_connectivity.h on
// the region graph. All integer work, so the result does not depend on thread order. Region ids
// are global pixel indices, so the whole batch is one problem.
#include "ops/check.h"
#include "ops/cuda/enforce_connectivity_kernel.h"

#include <torch/library.h>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_reduce.cuh>
#include <cub/device/device_run_length_encode.cuh>
#include <cub/device/device_scan.cuh>

#include <cuda/std/functional>

#include <algorithm>
#include <climits>

#include "ops/enforce_connectivity.h"
#include "ops/cuda/cuda_helpers.h"

namespace spl {
namespace cuda {
namespace {

using connectivity::choice_target;
using connectivity::pack_choice;
using connectivity::pack_pair;
using connectivity::pair_source;
using connectivity::pair_target;

constexpr int kThreads = 256;
constexpr uint64_t kNoPair = ~uint64_t{0};  // sorts after every real pair

// ---- Union-find labelling --------------------------------------------------------------------

// parent[] only ever decreases, so a stale read still points to an ancestor; reads bypass L1.
__device__ __forceinline__ int32_t find_root(const int32_t* parent, int32_t x) {
  int32_t next = __ldcg(parent + x);
  while (next != x) {
    x = next;
    next = __ldcg(parent + x);
  }
  return x;
}

// Hooks the larger root under the smaller; retries when another thread moved a root meanwhile.
__device__ void unite(int32_t* parent, int32_t a, int32_t b) {
  while (true) {
    a = find_root(parent, a);
    b = find_root(parent, b);
    if (a == b) return;
    if (a > b) {
      const int32_t t = a;
      a = b;
      b = t;
    }
    const int32_t old = atomicMin(parent + b, a);
    if (old == b) return;
    b = old;
  }
}

template <typename label_t>
__global__ void init_parent_kernel(const label_t* labels, int64_t n, int32_t* parent) {
  SPL_CUDA_1D_LOOP(p, n) { parent[p] = labels[p] >= 0 ? static_cast<int32_t>(p) : -1; }
}

template <typename label_t>
__global__ void union_kernel(const label_t* labels, int64_t n, int64_t height, int64_t width, int32_t* parent) {
  SPL_CUDA_1D_LOOP(p, n) {
    const label_t v = labels[p];
    if (v < 0) continue;
    const int64_t x = p % width, y = (p / width) % height;
    if (x > 0 && labels[p - 1] == v) unite(parent, static_cast<int32_t>(p), static_cast<int32_t>(p - 1));
    if (y > 0 && labels[p - width] == v) unite(parent, static_cast<int32_t>(p), static_cast<int32_t>(p - width));
  }
}

// After this, region[p] is the first pixel of p's component (-1 outside), and size[root] counts.
__global__ void flatten_kernel(int64_t n, int32_t* parent, int32_t* size) {
  SPL_CUDA_1D_LOOP(p, n) {
    if (parent[p] < 0) continue;
    const int32_t root = find_root(parent, static_cast<int32_t>(p));
    parent[p] = root;
    atomicAdd(size + root, 1);
  }
}

// ---- Borders of small regions ----------------------------------------------------------------

// Calls f(source, neighbour) for every 4-adjacent pixel pair of different regions, once in each
// direction whose source region is small.
template <typename F>
__device__ __forceinline__ void for_small_borders(int64_t p, const int32_t* region, const int32_t* size, int64_t height,
                                                  int64_t width, int32_t min_size, F&& f) {
  const int32_t a = region[p];
  if (a < 0) return;
  const int64_t x = p % width, y = (p / width) % height;
  const bool small_a = size[a] < min_size;
  if (x + 1 < width) {
    const int32_t b = region[p + 1];
    if (b >= 0 && b != a) {
      if (small_a) f(a, b);
      if (size[b] < min_size) f(b, a);
    }
  }
  if (y + 1 < height) {
    const int32_t b = region[p + width];
    if (b >= 0 && b != a) {
      if (small_a) f(a, b);
      if (size[b] < min_size) f(b, a);
    }
  }
}

// Adds a per-thread count to *total, one atomic per block.
__device__ void block_add(int32_t mine, unsigned long long* total) {
  __shared__ int32_t warp_totals[kThreads / 32];
  const int32_t warp_total = warp_sum(mine);
  if ((threadIdx.x & 31) == 0) warp_totals[threadIdx.x / 32] = warp_total;
  __syncthreads();
  if (threadIdx.x == 0) {
    long long sum = 0;
    for (int w = 0; w < kThreads / 32; ++w) sum += warp_totals[w];
    if (sum) atomicAdd(total, static_cast<unsigned long long>(sum));
  }
}

__global__ void count_borders_kernel(int64_t n, const int32_t* region, const int32_t* size, int64_t height,
                                     int64_t width, int32_t min_size, unsigned long long* total) {
  int32_t mine = 0;
  // Every thread runs the same number of rounds, so block_add sees the whole block.
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x; base < n;
       base += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t p = base + threadIdx.x;
    if (p < n) for_small_borders(p, region, size, height, width, min_size, [&](int32_t, int32_t) { ++mine; });
  }
  block_add(mine, total);
}

// One key per (small source, neighbour) pixel pair; key order is irrelevant, they get sorted.
// Each warp reserves its slots with one atomic.
__global__ void emit_borders_kernel(int64_t n, const int32_t* region, const int32_t* size, int64_t height,
                                    int64_t width, int32_t min_size, unsigned long long* cursor, uint64_t* keys) {
  const int lane = threadIdx.x & 31;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x; base < n;
       base += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t p = base + threadIdx.x;
    uint64_t mine[4];
    int count = 0;
    if (p < n) {
      for_small_borders(p, region, size, height, width, min_size, [&](int32_t a, int32_t b) {
        mine[count++] = pack_pair(static_cast<uint32_t>(a), static_cast<uint32_t>(b));
      });
    }
    int offset = count;  // inclusive scan over the warp
    for (int d = 1; d < 32; d *= 2) {
      const int t = __shfl_up_sync(kFullMask, offset, d);
      if (lane >= d) offset += t;
    }
    const int warp_total = __shfl_sync(kFullMask, offset, 31);
    offset -= count;
    unsigned long long start = 0;
    if (lane == 0 && warp_total > 0) start = atomicAdd(cursor, static_cast<unsigned long long>(warp_total));
    start = __shfl_sync(kFullMask, start, 0);
    for (int j = 0; j < count; ++j) keys[start + offset + j] = mine[j];
  }
}

// ---- Merge rounds (enforce_connectivity.h) ----------------------------------------------------

// Borders between groups, for the small groups: pair keys of the current groups, or kNoPair.
__global__ void group_pairs_kernel(int64_t n, const uint64_t* pair, const int32_t* border, const int32_t* rep,
                                   const int32_t* group_size, int32_t min_size, uint64_t* key, int32_t* value,
                                   unsigned long long* valid) {
  int32_t mine = 0;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x; base < n;
       base += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t i = base + threadIdx.x;
    if (i >= n) continue;
    const int32_t gs = rep[pair_source(pair[i])], gd = rep[pair_target(pair[i])];
    const bool ok = gs != gd && group_size[gs] < min_size;
    key[i] = ok ? pack_pair(static_cast<uint32_t>(gs), static_cast<uint32_t>(gd)) : kNoPair;
    value[i] = border[i];
    mine += ok;
  }
  block_add(mine, valid);
}

// The first entry of each source's run in a sorted list of pairs.
__device__ __forceinline__ bool first_of_source(const uint64_t* key, int64_t i) {
  return i == 0 || pair_source(key[i - 1]) != pair_source(key[i]);
}

// Step 1: best[source] = the neighbour with the longest border (ties: the smaller id).
__global__ void choose_kernel(const int32_t* count, const uint64_t* key, const int32_t* total, uint64_t* best) {
  const int64_t n = *count;
  SPL_CUDA_1D_LOOP(i, n) {
    if (key[i] == kNoPair) continue;
    atomicMax(reinterpret_cast<unsigned long long*>(best + pair_source(key[i])),
              static_cast<unsigned long long>(pack_choice(static_cast<uint32_t>(total[i]), pair_target(key[i]))));
  }
}

__device__ __forceinline__ int32_t target_of(const uint64_t* best, int32_t g) {
  const uint64_t b = best[g];
  return b ? static_cast<int32_t>(choice_target(b)) : g;
}

// Step 2: two groups that chose each other keep the smaller id as their root.
__global__ void next_kernel(const int32_t* count, const uint64_t* key, const uint64_t* best, int32_t* next) {
  const int64_t n = *count;
  SPL_CUDA_1D_LOOP(i, n) {
    if (key[i] == kNoPair || !first_of_source(key, i)) continue;
    const int32_t g = static_cast<int32_t>(pair_source(key[i]));
    const int32_t t = target_of(best, g);
    next[g] = (target_of(best, t) == g && g < t) ? g : t;
  }
}

// Step 3a: follow each chain to its root (no cycles remain); mark everything touched.
__global__ void root_kernel(const int32_t* count, const uint64_t* key, const uint64_t* best, const int32_t* next,
                            int32_t* root, int32_t* canon, uint8_t* touched) {
  const int64_t n = *count;
  SPL_CUDA_1D_LOOP(i, n) {
    if (key[i] == kNoPair || !first_of_source(key, i)) continue;
    const int32_t g = static_cast<int32_t>(pair_source(key[i]));
    int32_t r = g;
    while (best[r] && next[r] != r) r = next[r];
    root[g] = r;
    root[r] = r;   // a root that chose nobody; same value if r == g
    canon[r] = r;  // every writer writes the same value
    touched[g] = 1;
    touched[r] = 1;
  }
}

// Step 3b: each merged group takes the smallest id among its members.
__global__ void canon_kernel(const int32_t* count, const uint64_t* key, const int32_t* root, int32_t* canon) {
  const int64_t n = *count;
  SPL_CUDA_1D_LOOP(i, n) {
    if (key[i] == kNoPair || !first_of_source(key, i)) continue;
    const int32_t g = static_cast<int32_t>(pair_source(key[i]));
    atomicMin(canon + root[g], g);
  }
}

// rep[r] for every region r (entries of non-regions are their own index and never touched).
__global__ void relabel_groups_kernel(int64_t n, const uint8_t* touched, const int32_t* root, const int32_t* canon,
                                      int32_t* rep) {
  SPL_CUDA_1D_LOOP(p, n) {
    const int32_t g = rep[p];
    if (touched[g]) rep[p] = canon[root[g]];
  }
}

__global__ void group_size_kernel(int64_t n, const int32_t* region, const int32_t* size, const int32_t* rep,
                                  int32_t* group_size) {
  SPL_CUDA_1D_LOOP(p, n) {
    if (region[p] == p) atomicAdd(group_size + rep[p], size[p]);
  }
}

__global__ void reset_kernel(const int32_t* count, const uint64_t* key, const int32_t* root, uint64_t* best,
                             uint8_t* touched) {
  const int64_t n = *count;
  SPL_CUDA_1D_LOOP(i, n) {
    if (key[i] == kNoPair || !first_of_source(key, i)) continue;
    const int32_t g = static_cast<int32_t>(pair_source(key[i]));
    best[g] = 0;
    touched[g] = 0;
    touched[root[g]] = 0;
  }
}

__global__ void iota_kernel(int64_t n, int32_t* out) {
  SPL_CUDA_1D_LOOP(i, n) { out[i] = static_cast<int32_t>(i); }
}

// ---- Final numbering -------------------------------------------------------------------------

// flag[p] = 1 where p is the id of a final region (its first pixel); flag[n] = 0.
__global__ void id_flags_kernel(int64_t n, const int32_t* region, const int32_t* rep, int32_t* flag) {
  SPL_CUDA_1D_LOOP(p, n + 1) { flag[p] = p < n && region[p] == p && (rep == nullptr || rep[p] == p); }
}

__global__ void write_labels_kernel(int64_t n, int64_t pixels, const int32_t* region, const int32_t* rep,
                                    const int32_t* rank, int64_t* out) {
  SPL_CUDA_1D_LOOP(p, n) {
    const int32_t r = region[p];
    if (r < 0) {
      out[p] = -1;
      continue;
    }
    const int32_t id = rep ? rep[r] : r;
    out[p] = rank[id] - rank[(p / pixels) * pixels];
  }
}

__global__ void write_counts_kernel(int64_t batch, int64_t pixels, const int32_t* rank, int64_t* counts) {
  SPL_CUDA_1D_LOOP(b, batch) { counts[b] = rank[(b + 1) * pixels] - rank[b * pixels]; }
}

// Labels 0..n_b-1 from region ids (first pixels) and the group of each region (rep, or none).
void write_ranked_labels(const int32_t* region, const int32_t* rep, int64_t batch, int64_t pixels, int64_t* out,
                         int64_t* counts, const at::Device& device, cudaStream_t stream) {
  const int64_t n = batch * pixels;
  at::Tensor buffers = at::empty({2 * (n + 1)}, at::TensorOptions().dtype(at::kInt).device(device));
  int32_t* flag = buffers.data_ptr<int32_t>();
  int32_t* rank = flag + (n + 1);
  id_flags_kernel<<<blocks_for(n + 1, kThreads), kThreads, 0, stream>>>(n, region, rep, flag);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  size_t bytes = 0;
  C10_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, bytes, flag, rank, static_cast<int>(n + 1), stream));
  at::Tensor temp = device_bytes(static_cast<int64_t>(bytes), device);
  C10_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(temp.data_ptr(), bytes, flag, rank, static_cast<int>(n + 1), stream));
  write_labels_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(n, pixels, region, rep, rank, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  write_counts_kernel<<<1, 32, 0, stream>>>(batch, pixels, rank, counts);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// ---- Renumbering without connectivity ----------------------------------------------------------

__global__ void fill_kernel(int64_t n, int32_t value, int32_t* out) {
  SPL_CUDA_1D_LOOP(i, n) { out[i] = value; }
}

__global__ void first_pixel_kernel(int64_t n, int64_t pixels, int64_t num_labels, const int32_t* labels,
                                   int32_t* first) {
  SPL_CUDA_1D_LOOP(p, n) {
    const int32_t k = labels[p];
    if (k >= 0) atomicMin(first + (p / pixels) * num_labels + k, static_cast<int32_t>(p));
  }
}

__global__ void region_of_label_kernel(int64_t n, int64_t pixels, int64_t num_labels, const int32_t* labels,
                                       const int32_t* first, int32_t* region) {
  SPL_CUDA_1D_LOOP(p, n) {
    const int32_t k = labels[p];
    region[p] = k >= 0 ? first[(p / pixels) * num_labels + k] : -1;
  }
}

}  // namespace

void renumber_by_first_pixel(const int32_t* labels, int64_t batch, int64_t pixels, int64_t num_labels, int64_t* out,
                             int64_t* counts, const at::Device& device, cudaStream_t stream) {
  const int64_t n = batch * pixels;
  at::Tensor buffers = at::empty({batch * num_labels + n}, at::TensorOptions().dtype(at::kInt).device(device));
  int32_t* first = buffers.data_ptr<int32_t>();
  int32_t* region = first + batch * num_labels;
  fill_kernel<<<blocks_for(batch * num_labels, kThreads), kThreads, 0, stream>>>(batch * num_labels, INT_MAX, first);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  first_pixel_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(n, pixels, num_labels, labels, first);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  region_of_label_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(n, pixels, num_labels, labels, first,
                                                                           region);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  write_ranked_labels(region, nullptr, batch, pixels, out, counts, device, stream);
}

namespace {

// ---- connect_regions, step by step -----------------------------------------------------------

// Union-find labelling: region[p] becomes the first pixel of p's component (-1 outside), and
// size[r] (zeroed by the caller) the pixel count of region r.
template <typename label_t>
void label_components(const label_t* labels, int64_t n, int64_t height, int64_t width, int32_t* region, int32_t* size,
                      cudaStream_t stream) {
  const unsigned blocks = blocks_for(n, kThreads);
  init_parent_kernel<<<blocks, kThreads, 0, stream>>>(labels, n, region);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  union_kernel<<<blocks, kThreads, 0, stream>>>(labels, n, height, width, region);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  flatten_kernel<<<blocks, kThreads, 0, stream>>>(n, region, size);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The number of border keys (for_small_borders: one per 4-adjacent pixel pair of different regions
// and direction whose source region is small), counted in *total. Synchronises.
int64_t count_border_keys(const int32_t* region, const int32_t* size, int64_t n, int64_t height, int64_t width,
                          int32_t small, unsigned long long* total, cudaStream_t stream) {
  count_borders_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(n, region, size, height, width, small, total);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int64_t num_keys = static_cast<int64_t>(read_scalar(total, stream));
  SPL_CHECK(num_keys < INT_MAX, "connectivity: too many borders in one CUDA batch; split the batch");
  return num_keys;
}

// The distinct (small region, neighbour) pairs in increasing order and the length of each one's
// border. pair lies in pair_t and border in border_t, which also holds the device copy of
// num_pairs.
struct Borders {
  at::Tensor border_t, pair_t;
  const uint64_t* pair = nullptr;
  const int32_t* border = nullptr;
  int64_t num_pairs = 0;
};

// Sorts the keys (cub::DoubleBuffer: they end in keys.Current()), then writes each distinct key to
// keys.Alternate(), its run length to lengths and the number of distinct keys to *num_runs.
void sort_and_count_runs(cub::DoubleBuffer<uint64_t>& keys, int64_t num_keys, int32_t* lengths, int32_t* num_runs,
                         const at::Device& device, cudaStream_t stream) {
  const int num_bits = 2 * 32;
  size_t sort_bytes = 0, rle_bytes = 0;
  C10_CUDA_CHECK(
      cub::DeviceRadixSort::SortKeys(nullptr, sort_bytes, keys, static_cast<int>(num_keys), 0, num_bits, stream));
  C10_CUDA_CHECK(cub::DeviceRunLengthEncode::Encode(nullptr, rle_bytes, keys.Current(), keys.Alternate(), lengths,
                                                    num_runs, static_cast<int>(num_keys), stream));
  at::Tensor temp = device_bytes(static_cast<int64_t>(std::max(sort_bytes, rle_bytes)), device);
  C10_CUDA_CHECK(cub::DeviceRadixSort::SortKeys(temp.data_ptr(), sort_bytes, keys, static_cast<int>(num_keys), 0,
                                                num_bits, stream));
  C10_CUDA_CHECK(cub::DeviceRunLengthEncode::Encode(temp.data_ptr(), rle_bytes, keys.Current(), keys.Alternate(),
                                                    lengths, num_runs, static_cast<int>(num_keys), stream));
}

// Border lengths of (small region, neighbour) pairs: sort one key per pixel pair, count runs.
// Memory (on noise nearly every region is small, so there are about 3.5 keys per pixel): the sort
// ping-pongs between two buffers (cub::DoubleBuffer; cub's other form hides a copy of the keys in
// its temporary storage), the unique pairs go to the buffer the sorted keys are not in, and the
// sorted keys are freed (on return) before the merge rounds take memory of their own.
// Synchronises.
Borders border_lengths(const int32_t* region, const int32_t* size, int64_t n, int64_t height, int64_t width,
                       int32_t small, int64_t num_keys, unsigned long long* cursor, const at::Device& device,
                       cudaStream_t stream) {
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(device);
  at::Tensor key_buffers[2] = {at::empty({num_keys}, long_opts), at::empty({num_keys}, long_opts)};
  cub::DoubleBuffer<uint64_t> keys(reinterpret_cast<uint64_t*>(key_buffers[0].data_ptr<int64_t>()),
                                   reinterpret_cast<uint64_t*>(key_buffers[1].data_ptr<int64_t>()));
  emit_borders_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(n, region, size, height, width, small, cursor,
                                                                        keys.Current());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  Borders borders;
  borders.border_t = at::empty({num_keys + 1}, at::TensorOptions().dtype(at::kInt).device(device));
  int32_t* border = borders.border_t.data_ptr<int32_t>();
  int32_t* num_pairs_d = border + num_keys;
  sort_and_count_runs(keys, num_keys, border, num_pairs_d, device, stream);
  borders.num_pairs = read_scalar(num_pairs_d, stream);  // synchronises: the sorted keys can go
  borders.border = border;
  borders.pair = keys.Alternate();
  borders.pair_t = key_buffers[keys.selector ^ 1];
  return borders;
}

// Memory of the merge rounds. Group state, indexed by region id (a pixel index): rep (group of
// each region), group size, best choice, chain pointers, roots, canonical ids, touched flags. Per
// round: candidate pairs of groups, sorted (again ping-ponging between two buffers) and summed into
// the buffers the sorted ones are not in; cub's temporary storage for both.
struct MergeState {
  at::Tensor rep_t, group_size_t, state_t, best_t, touched_t, cand_t, val_t, round_temp;
  int32_t* rep = nullptr;
  int32_t* group_size = nullptr;
  int32_t* next = nullptr;
  int32_t* root = nullptr;
  int32_t* canon = nullptr;
  uint64_t* best = nullptr;
  uint8_t* touched = nullptr;
  uint64_t* cand_buffers[2] = {nullptr, nullptr};
  int32_t* val_buffers[2] = {nullptr, nullptr};
  int32_t* num_groups_d = nullptr;
  size_t pairs_bytes = 0, reduce_bytes = 0;
};

// Every region its own group (rep[r] = r), of its region's size.
MergeState make_merge_state(const at::Tensor& size_tensor, int64_t n, int64_t num_pairs, const at::Device& device,
                            cudaStream_t stream) {
  const auto int_opts = at::TensorOptions().dtype(at::kInt).device(device);
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(device);
  MergeState m;
  m.rep_t = at::empty({n}, int_opts);
  m.rep = m.rep_t.data_ptr<int32_t>();
  iota_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(n, m.rep);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  m.group_size_t = size_tensor.clone();
  m.state_t = at::empty({3 * n}, int_opts);
  m.best_t = at::zeros({n}, long_opts);
  m.touched_t = at::zeros({n}, at::TensorOptions().dtype(at::kByte).device(device));
  m.group_size = m.group_size_t.data_ptr<int32_t>();
  m.next = m.state_t.data_ptr<int32_t>();
  m.root = m.next + n;
  m.canon = m.root + n;
  m.best = reinterpret_cast<uint64_t*>(m.best_t.data_ptr<int64_t>());
  m.touched = m.touched_t.data_ptr<uint8_t>();
  m.cand_t = at::empty({2 * num_pairs}, long_opts);
  m.val_t = at::empty({2 * num_pairs + 1}, int_opts);
  m.cand_buffers[0] = reinterpret_cast<uint64_t*>(m.cand_t.data_ptr<int64_t>());
  m.cand_buffers[1] = reinterpret_cast<uint64_t*>(m.cand_t.data_ptr<int64_t>()) + num_pairs;
  m.val_buffers[0] = m.val_t.data_ptr<int32_t>();
  m.val_buffers[1] = m.val_t.data_ptr<int32_t>() + num_pairs;
  m.num_groups_d = m.val_buffers[1] + num_pairs;
  cub::DoubleBuffer<uint64_t> cand(m.cand_buffers[0], m.cand_buffers[1]);
  cub::DoubleBuffer<int32_t> val(m.val_buffers[0], m.val_buffers[1]);
  C10_CUDA_CHECK(
      cub::DeviceRadixSort::SortPairs(nullptr, m.pairs_bytes, cand, val, static_cast<int>(num_pairs), 0, 64, stream));
  C10_CUDA_CHECK(cub::DeviceReduce::ReduceByKey(nullptr, m.reduce_bytes, cand.Current(), cand.Alternate(),
                                                val.Current(), val.Alternate(), m.num_groups_d,
                                                ::cuda::std::plus<int32_t>(), static_cast<int>(num_pairs), stream));
  m.round_temp = device_bytes(static_cast<int64_t>(std::max(m.pairs_bytes, m.reduce_bytes)), device);
  return m;
}

// One merge round (enforce_connectivity.h: steps 1 to 3) on the groups of m.rep, then the new
// group sizes. Returns false, having merged nothing, when no small group has a neighbour group.
// Synchronises.
bool merge_round(MergeState& m, const Borders& borders, const int32_t* region, const int32_t* size, int64_t n,
                 int32_t small, unsigned long long* total, cudaStream_t stream) {
  const int64_t num_pairs = borders.num_pairs;
  const unsigned blocks = blocks_for(n, kThreads), pair_blocks = blocks_for(num_pairs, kThreads);
  cub::DoubleBuffer<uint64_t> cand(m.cand_buffers[0], m.cand_buffers[1]);
  cub::DoubleBuffer<int32_t> val(m.val_buffers[0], m.val_buffers[1]);
  C10_CUDA_CHECK(cudaMemsetAsync(total, 0, sizeof(unsigned long long), stream));
  group_pairs_kernel<<<pair_blocks, kThreads, 0, stream>>>(num_pairs, borders.pair, borders.border, m.rep, m.group_size,
                                                           small, cand.Current(), val.Current(), total);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (read_scalar(total, stream) == 0) return false;
  C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(m.round_temp.data_ptr(), m.pairs_bytes, cand, val,
                                                 static_cast<int>(num_pairs), 0, 64, stream));
  uint64_t* group_key = cand.Alternate();
  int32_t* group_total = val.Alternate();
  C10_CUDA_CHECK(cub::DeviceReduce::ReduceByKey(m.round_temp.data_ptr(), m.reduce_bytes, cand.Current(), group_key,
                                                val.Current(), group_total, m.num_groups_d,
                                                ::cuda::std::plus<int32_t>(), static_cast<int>(num_pairs), stream));
  choose_kernel<<<pair_blocks, kThreads, 0, stream>>>(m.num_groups_d, group_key, group_total, m.best);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  next_kernel<<<pair_blocks, kThreads, 0, stream>>>(m.num_groups_d, group_key, m.best, m.next);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  root_kernel<<<pair_blocks, kThreads, 0, stream>>>(m.num_groups_d, group_key, m.best, m.next, m.root, m.canon,
                                                    m.touched);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  canon_kernel<<<pair_blocks, kThreads, 0, stream>>>(m.num_groups_d, group_key, m.root, m.canon);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  relabel_groups_kernel<<<blocks, kThreads, 0, stream>>>(n, m.touched, m.root, m.canon, m.rep);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  C10_CUDA_CHECK(cudaMemsetAsync(m.group_size, 0, n * sizeof(int32_t), stream));
  group_size_kernel<<<blocks, kThreads, 0, stream>>>(n, region, size, m.rep, m.group_size);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  reset_kernel<<<pair_blocks, kThreads, 0, stream>>>(m.num_groups_d, group_key, m.root, m.best, m.touched);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

// The group of each region once the regions smaller than `small` pixels are merged (undefined: no
// small region has a neighbour, nothing to merge).
at::Tensor merge_small_regions(const int32_t* region, const at::Tensor& size_tensor, int64_t n, int64_t height,
                               int64_t width, int32_t small, const at::Device& device, cudaStream_t stream) {
  const int32_t* size = size_tensor.const_data_ptr<int32_t>();
  at::Tensor counter = at::zeros({2}, at::TensorOptions().dtype(at::kLong).device(device));
  auto* total = reinterpret_cast<unsigned long long*>(counter.data_ptr<int64_t>());
  const int64_t num_keys = count_border_keys(region, size, n, height, width, small, total, stream);
  if (num_keys == 0) return at::Tensor();
  const Borders borders = border_lengths(region, size, n, height, width, small, num_keys, total + 1, device, stream);
  MergeState m = make_merge_state(size_tensor, n, borders.num_pairs, device, stream);
  // Rounds repeat until no small group has a neighbour group (enforce_connectivity.h).
  while (merge_round(m, borders, region, size, n, small, total, stream)) {
  }
  return m.rep_t;
}

}  // namespace

template <typename label_t>
void connect_regions(const label_t* labels, int64_t batch, int64_t height, int64_t width, int64_t min_size,
                     int64_t* out, int64_t* counts, const at::Device& device, cudaStream_t stream) {
  const int64_t pixels = height * width, n = batch * pixels;
  const auto int_opts = at::TensorOptions().dtype(at::kInt).device(device);
  // region: the first pixel of each pixel's component; size: pixel count at each region id.
  at::Tensor region_t = at::empty({n}, int_opts);
  at::Tensor size_tensor = at::zeros({n}, int_opts);
  int32_t* region = region_t.data_ptr<int32_t>();
  label_components(labels, n, height, width, region, size_tensor.data_ptr<int32_t>(), stream);
  const int32_t small = static_cast<int32_t>(min_size < INT_MAX ? min_size : INT_MAX);
  const at::Tensor rep_t =
      small > 1 ? merge_small_regions(region, size_tensor, n, height, width, small, device, stream) : at::Tensor();
  write_ranked_labels(region, rep_t.defined() ? rep_t.data_ptr<int32_t>() : nullptr, batch, pixels, out, counts, device,
                      stream);
}

template void connect_regions<int32_t>(const int32_t*, int64_t, int64_t, int64_t, int64_t, int64_t*, int64_t*,
                                       const at::Device&, cudaStream_t);
template void connect_regions<int64_t>(const int64_t*, int64_t, int64_t, int64_t, int64_t, int64_t*, int64_t*,
                                       const at::Device&, cudaStream_t);

namespace {

__global__ void min_label_kernel(int64_t n, const int64_t* labels, unsigned long long* below) {
  SPL_CUDA_1D_LOOP(p, n) {
    if (labels[p] < -1) atomicAdd(below, 1ull);
  }
}

std::tuple<at::Tensor, at::Tensor> enforce_connectivity_cuda(const at::Tensor& labels, int64_t min_size) {
  check_enforce_connectivity_args(labels, min_size);
  c10::cuda::CUDAGuard guard(labels.device());
  const at::Tensor input = labels.contiguous();
  const int64_t B = input.size(0), H = input.size(1), W = input.size(2);
  SPL_CHECK_VALUE(B * H * W < (int64_t{1} << 31),
                  "enforce_connectivity: a CUDA batch must have fewer than 2^31 pixels; split the batch");
  at::Tensor out = at::empty({B, H, W}, input.options());
  at::Tensor counts = at::zeros({B}, input.options());
  if (input.numel() == 0) return {out, counts};
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor below = at::zeros({1}, input.options());
  min_label_kernel<<<blocks_for(input.numel(), kThreads), kThreads, 0, stream>>>(
      input.numel(), input.const_data_ptr<int64_t>(), reinterpret_cast<unsigned long long*>(below.data_ptr<int64_t>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  SPL_CHECK_VALUE(below.item<int64_t>() == 0,
                  "enforce_connectivity: labels must be >= -1 (-1 marks pixels outside every region)");
  connect_regions<int64_t>(input.const_data_ptr<int64_t>(), B, H, W, min_size, out.data_ptr<int64_t>(),
                           counts.data_ptr<int64_t>(), input.device(), stream);
  return {out, counts};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(spl, CUDA, m) { m.impl("enforce_connectivity", &cuda::enforce_connectivity_cuda); }

}  // namespace spl
