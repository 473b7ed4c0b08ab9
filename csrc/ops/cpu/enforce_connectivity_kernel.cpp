#include "ops/check.h"
#include "ops/cpu/enforce_connectivity_kernel.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "ops/enforce_connectivity.h"
#include "ops/cpu/target_clones.h"
#include "ops/cpu/parallel.h"
#include "ops/cpu/scratch_buffer.h"

namespace spl {
namespace cpu {
namespace {

using connectivity::pack_choice;
using connectivity::choice_target;

// Memory. On noise, k-means leaves a fragment every pixel or two, so whatever is kept per run, per
// region or per border is kept per pixel (this kernel used to keep about 200 bytes per pixel there:
// lists of runs, borders and candidate pairs in 8- to 16-byte entries). Now, at most:
//   - per run, 4 bytes (work): the union-find parent, then the region id; then the same buffer holds
//     the first pixel of each region, then of each small group;
//   - per region, 4 bytes (uf): its group (union-find parent) or, for a group, minus its size;
//   - per small region, 4 bytes (choice): its choice in the current round;
//   - per pixel, 4 bytes: the region map, in the int32 labels themselves when the caller lets them
//     be overwritten (slic), else in a buffer of its own;
//   - the search stack and the border table of one group at a time.
// slic also lends the features of each image, no longer needed, for work, uf and choice. Runs are
// found again from the labels wherever they are needed instead of being stored, and the border
// lengths of a small group are counted afresh in each round from its pixels (a search from its
// first pixel over the region map) instead of being stored per pair of regions.

// Map entries: the region id, its top bit marking the pixels searched in the current round (the
// meaning of the bit alternates between rounds, so it is never cleared); -1 outside every region.
constexpr uint32_t kIdBits = 0x7FFFFFFFu;
constexpr uint32_t kSearchedBit = 0x80000000u;

// Border lengths between one group and each of its neighbour groups: an open-addressing table
// (keys: group ids), load factor at most 1/2, cleared entry by entry after each group.
class BorderCounts {
 public:
  BorderCounts() { resize(64); }

  void add(int32_t group) {
    uint32_t i = slot(group);
    for (; key_[i] != group; i = (i + 1) & mask_) {
      if (key_[i] < 0) {
        key_[i] = group, count_[i] = 1, used_.push_back(i);
        if (2 * used_.size() > key_.size()) grow();
        return;
      }
    }
    ++count_[i];
  }

  // The best choice (enforce_connectivity.h: longest border, then smaller id), packed; 0 if there
  // is no neighbour. Empties the table.
  uint64_t take_best() {
    uint64_t best = 0;
    for (uint32_t i : used_) {
      best = std::max(best, pack_choice(count_[i], static_cast<uint32_t>(key_[i])));
      key_[i] = -1;
    }
    used_.clear();
    return best;
  }

  size_t bytes() const { return key_.capacity() * 8 + used_.capacity() * 4; }
  void release() {
    std::vector<int32_t>().swap(key_), std::vector<uint32_t>().swap(count_), std::vector<uint32_t>().swap(used_);
    resize(64);
  }

 private:
  uint32_t slot(int32_t group) const {
    return static_cast<uint32_t>((static_cast<uint64_t>(group) * 0x9E3779B97F4A7C15ull) >> 32) & mask_;
  }
  void resize(size_t n) {
    key_.assign(n, -1), count_.assign(n, 0);
    mask_ = static_cast<uint32_t>(n - 1);
  }
  void grow() {
    std::vector<std::pair<int32_t, uint32_t>> entries;
    entries.reserve(used_.size());
    for (uint32_t i : used_) entries.emplace_back(key_[i], count_[i]);
    resize(2 * key_.size());
    used_.clear();
    for (const auto& e : entries) {
      uint32_t i = slot(e.first);
      while (key_[i] >= 0) i = (i + 1) & mask_;
      key_[i] = e.first, count_[i] = e.second, used_.push_back(i);
    }
  }

  std::vector<int32_t> key_;  // -1: free
  std::vector<uint32_t> count_;
  std::vector<uint32_t> used_;  // occupied slots
  uint32_t mask_ = 0;
};

struct Scratch {
  std::vector<int32_t> starts[2];    // run starts of two rows
  Buffer<int32_t> work, uf, choice;  // see ImageMemory, when the caller has no spare memory
  Buffer<int32_t> map;               // per pixel, when the labels cannot be overwritten
  std::vector<int32_t> stack;        // pixels of the group being searched
  BorderCounts counts;

  void release_if_large() {
    const size_t total =
        work.bytes() + uf.bytes() + choice.bytes() + map.bytes() + stack.capacity() * 4 + counts.bytes();
    if (total > kMaxKeptBytes) {
      work.release(), uf.release(), choice.release(), map.release(), counts.release();
      std::vector<int32_t>().swap(stack);
    }
  }
};

Scratch& thread_scratch() {
  thread_local Scratch scratch;
  return scratch;
}

// Union-find over run indices; the root of a set is its smallest member (its first run).
int32_t find_root(int32_t* parent, int32_t a) {
  int32_t root = a;
  while (parent[root] != root) root = parent[root];
  while (parent[a] != root) {
    const int32_t next = parent[a];
    parent[a] = root;
    a = next;
  }
  return root;
}

void unite(int32_t* parent, int32_t a, int32_t b) {
  a = find_root(parent, a);
  b = find_root(parent, b);
  if (a < b) parent[b] = a;
  else if (b < a) parent[a] = b;
}

// Union-find over regions: uf[r] >= 0 is the parent of r, uf[r] < 0 makes r the id of a group of
// -uf[r] pixels. A parent always has a smaller id than its child, so a group's id is its smallest
// region, the one that comes first in the image.
inline int32_t find_group(int32_t* uf, int32_t r) {
  while (uf[r] >= 0) {
    const int32_t p = uf[r];
    if (uf[p] < 0) return p;
    uf[r] = uf[p];  // path halving
    r = uf[p];
  }
  return r;
}

void join_groups(int32_t* uf, int32_t a, int32_t b) {
  a = find_group(uf, a);
  b = find_group(uf, b);
  if (a == b) return;
  if (b < a) std::swap(a, b);
  uf[a] += uf[b];
  uf[b] = a;
}

// The starts of the runs of equal labels in one row (x = 0 first), then `width`; returns the
// number of runs. A label changes every few pixels, so a branch per pixel would mispredict once per
// run, and a store per pixel at a moving index serialises: each block of 64 pixels is compared at
// once into a bit mask (vectorised), then its set bits are listed.
template <typename label_t>
SPL_TARGET_CLONES int64_t row_run_starts(const label_t* row, int64_t width, int32_t* starts) {
  int64_t count = 1;
  starts[0] = 0;
  for (int64_t x0 = 1; x0 < width; x0 += 64) {
    const int64_t len = std::min<int64_t>(64, width - x0);
    uint64_t changed = 0;
    for (int64_t j = 0; j < len; ++j) changed |= static_cast<uint64_t>(row[x0 + j] != row[x0 + j - 1]) << j;
    for (; changed; changed &= changed - 1) starts[count++] = static_cast<int32_t>(x0 + __builtin_ctzll(changed));
  }
  starts[count] = static_cast<int32_t>(width);
  return count;
}

// Writes value to row[x0, x1), and maybe to a few of the entries after it (whole blocks of 8 while
// they stay within the row, then single entries): blocks are cheaper than an exact loop on short
// runs. The runs of a row are written in order, so the runs that follow overwrite the spill.
template <typename T>
inline void fill_run(T* row, int64_t x0, int64_t x1, int64_t width, T value) {
  int64_t x = x0;
  for (; x < x1 && x + 8 <= width; x += 8) {
    for (int k = 0; k < 8; ++k) row[x + k] = value;
  }
  for (; x < x1; ++x) row[x] = value;
}

// Where the buffers of one image live: memory the caller no longer needs while it is enough (the
// spare), else the thread's own buffers.
struct ImageMemory {
  Scratch& s;
  int32_t* spare;
  int64_t spare_size;
  int32_t* work = nullptr;    // per run, then per region, then per small group
  int32_t* uf = nullptr;      // per region
  int32_t* choice = nullptr;  // per small group
  int32_t* take(Buffer<int32_t>& own, int64_t n) {
    if (n > spare_size) return own.get(n);
    int32_t* p = spare;
    spare += n, spare_size -= n;
    return p;
  }
};

// Step 1: the regions (4-connected components of equal labels) of the runs, by union-find over
// the runs of consecutive rows; the runs of a row tile it, so a merge-like sweep meets exactly
// the overlapping pairs. On return work[r] is the region id of run r (-1 outside every region),
// regions numbered 0..M-1 in raster order of their first pixel; returns M.
template <typename label_t>
int32_t label_regions(const label_t* labels, int64_t height, int64_t width, ImageMemory& m) {
  int32_t* prev = m.s.starts[0].data();
  int32_t* cur = m.s.starts[1].data();
  int32_t* parent = m.work = m.take(m.s.work, height * width);
  int64_t prev_count = 0, prev_base = 0, runs = 0;
  for (int64_t y = 0; y < height; ++y) {
    const label_t* row = labels + y * width;
    const int64_t count = row_run_starts(row, width, cur);
    for (int64_t i = 0; i < count; ++i) {
      parent[runs + i] = row[cur[i]] >= 0 ? static_cast<int32_t>(runs + i) : -1;
    }
    if (y > 0) {
      const label_t* above = row - width;
      int64_t i = 0, j = 0;
      while (i < prev_count && j < count) {
        const label_t a = above[prev[i]];
        if (a >= 0 && a == row[cur[j]]) {
          unite(parent, static_cast<int32_t>(prev_base + i), static_cast<int32_t>(runs + j));
        }
        const int32_t a_end = prev[i + 1], b_end = cur[j + 1];
        i += a_end <= b_end;
        j += b_end <= a_end;
      }
    }
    std::swap(prev, cur);
    prev_count = count, prev_base = runs, runs += count;
  }
  // Parents come before their children, so one pass in order turns parents into region ids.
  int32_t regions = 0;
  for (int64_t r = 0; r < runs; ++r) {
    const int32_t p = parent[r];
    if (p >= 0) parent[r] = p == r ? regions++ : parent[p];
  }
  return regions;
}

// Step 2: writes the region map (may be `labels` itself: each row's runs are found before the row
// is overwritten), the size of each region into uf (as -size), and work[m] = the first pixel of
// region m (the first run of region m is run m or a later one, already read). Returns whether
// any pixel lies outside every region.
template <typename label_t>
bool write_region_map(const label_t* labels, int64_t height, int64_t width, int32_t regions, int32_t* map,
                      ImageMemory& m) {
  int32_t* cur = m.s.starts[1].data();
  int32_t* work = m.work;
  int32_t* uf = m.uf = m.take(m.s.uf, regions);
  std::fill(uf, uf + regions, 0);
  bool outside = false;
  int64_t r = 0;
  int32_t next_region = 0;
  for (int64_t y = 0; y < height; ++y) {
    const int64_t count = row_run_starts(labels + y * width, width, cur);
    int32_t* row = map + y * width;
    for (int64_t i = 0; i < count; ++i) {
      const int32_t id = work[r++];
      const int32_t x0 = cur[i], x1 = cur[i + 1];
      fill_run(row, x0, x1, width, id);
      if (id < 0) {
        outside = true;
        continue;
      }
      uf[id] -= x1 - x0;
      if (id == next_region) work[next_region++] = static_cast<int32_t>(y * width + x0);
    }
  }
  return outside;
}

// Step 3, the merge rounds of enforce_connectivity.h. work[0..n) are the first pixels of the small
// groups (in order, so their ids are in order too).
void merge_small_groups(int64_t height, int64_t width, int64_t min_size, int32_t* map, int64_t n, ImageMemory& m) {
  int32_t* live = m.work;
  int32_t* uf = m.uf;
  int32_t* choice = m.choice = m.take(m.s.choice, n);
  std::vector<int32_t>& stack = m.s.stack;
  BorderCounts& counts = m.s.counts;
  const int64_t last_row = (height - 1) * width;
  uint32_t searched = kSearchedBit;  // the value of the top bit that marks a pixel searched this round
  while (true) {
    // Choices: border lengths counted from each group's pixels, found by a search from its first
    // pixel over the pixels of the same group. Groups do not change until every group has chosen.
    int64_t sources = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int32_t first = live[i];
      const int32_t g = static_cast<int32_t>(static_cast<uint32_t>(map[first]) & kIdBits);
      int32_t cached_id = g, cached_group = g;  // neighbours often repeat a region
      auto visit = [&](int64_t q) {
        const int32_t v = map[q];
        if (v == -1) return;
        const int32_t id = static_cast<int32_t>(static_cast<uint32_t>(v) & kIdBits);
        if (id != cached_id) cached_id = id, cached_group = find_group(uf, id);
        if (cached_group != g) {
          counts.add(cached_group);
        } else if ((static_cast<uint32_t>(v) & kSearchedBit) != searched) {
          map[q] = static_cast<int32_t>(static_cast<uint32_t>(id) | searched);
          stack.push_back(static_cast<int32_t>(q));
        }
      };
      map[first] = static_cast<int32_t>(static_cast<uint32_t>(g) | searched);
      stack.push_back(first);
      while (!stack.empty()) {
        const int64_t p = stack.back();
        stack.pop_back();
        const int64_t x = static_cast<int64_t>(static_cast<uint32_t>(p) % static_cast<uint32_t>(width));
        if (p >= width) visit(p - width);
        if (x > 0) visit(p - 1);
        if (x + 1 < width) visit(p + 1);
        if (p < last_row) visit(p + width);
      }
      const uint64_t best = counts.take_best();
      choice[i] = best ? static_cast<int32_t>(choice_target(best)) : -1;
      sources += best != 0;
    }
    if (sources == 0) break;
    // Every group joins the group it chose: pairs that chose each other and chains become one
    // group, under the smallest id among them.
    for (int64_t i = 0; i < n; ++i) {
      if (choice[i] >= 0) {
        join_groups(uf, static_cast<int32_t>(static_cast<uint32_t>(map[live[i]]) & kIdBits), choice[i]);
      }
    }
    // The groups still small; a group never shrinks. A group without a neighbour (an island of a
    // mask) never gets one, and no group can choose it: it is left alone from now on.
    int64_t kept = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int32_t g = static_cast<int32_t>(static_cast<uint32_t>(map[live[i]]) & kIdBits);
      if (choice[i] >= 0 && uf[g] < 0 && -static_cast<int64_t>(uf[g]) < min_size) live[kept++] = live[i];
    }
    n = kept;
    searched ^= kSearchedBit;
  }
}

// Labels one image; `map` receives the region map and may be `labels` itself.
template <typename label_t>
int64_t connect_image(const label_t* labels, int64_t height, int64_t width, int64_t min_size, int32_t* map,
                      int64_t* out, ImageMemory& m) {
  m.s.starts[0].resize(width + 2);
  m.s.starts[1].resize(width + 2);
  const int32_t regions = label_regions(labels, height, width, m);
  const bool outside = write_region_map(labels, height, width, regions, map, m);
  int32_t* uf = m.uf;
  if (min_size > 1) {
    // The first pixels of the small regions, kept in place (entry r is read before any entry
    // after the first r is written).
    int32_t* first = m.work;
    int64_t n = 0;
    for (int32_t r = 0; r < regions; ++r) {
      if (-static_cast<int64_t>(uf[r]) < min_size) first[n++] = first[r];
    }
    if (n > 0) merge_small_groups(height, width, min_size, map, n, m);
  }
  // Final labels: the rank of each group's id, written run by run over the region map. Parents
  // come before their children, so one pass in order gives every region the rank of its group.
  int32_t count = 0;
  for (int32_t r = 0; r < regions; ++r) uf[r] = uf[r] < 0 ? count++ : uf[uf[r]];
  int32_t* cur = m.s.starts[1].data();
  for (int64_t y = 0; y < height; ++y) {
    const int32_t* row = map + y * width;
    int64_t* out_row = out + y * width;
    const int64_t runs = row_run_starts(row, width, cur);
    for (int64_t i = 0; i < runs; ++i) {
      const int32_t v = row[cur[i]];
      const int64_t value = outside && v == -1 ? int64_t{-1} : uf[static_cast<uint32_t>(v) & kIdBits];
      fill_run(out_row, cur[i], cur[i + 1], width, value);
    }
  }
  return count;
}

}  // namespace

int64_t connect_regions_in_place(int32_t* labels, int64_t height, int64_t width, int64_t min_size, int64_t* out,
                                 int32_t* spare, int64_t spare_size) {
  Scratch& s = thread_scratch();
  ImageMemory m{s, spare, spare ? spare_size : 0};
  const int64_t n = connect_image<int32_t>(labels, height, width, min_size, labels, out, m);
  s.release_if_large();
  return n;
}

template <typename label_t>
int64_t connect_regions(const label_t* labels, int64_t height, int64_t width, int64_t min_size, int64_t* out) {
  Scratch& s = thread_scratch();
  ImageMemory m{s, nullptr, 0};
  const int64_t n = connect_image<label_t>(labels, height, width, min_size, s.map.get(height * width), out, m);
  s.release_if_large();
  return n;
}

template int64_t connect_regions<int32_t>(const int32_t*, int64_t, int64_t, int64_t, int64_t*);
template int64_t connect_regions<int64_t>(const int64_t*, int64_t, int64_t, int64_t, int64_t*);

int64_t renumber_by_first_pixel(const int32_t* labels, int64_t num_labels, int64_t num_pixels, int64_t* out) {
  std::vector<int64_t> id(num_labels, -1);
  int64_t n = 0;
  for (int64_t p = 0; p < num_pixels; ++p) {
    const int32_t k = labels[p];
    if (k < 0) {
      out[p] = -1;
      continue;
    }
    if (id[k] < 0) id[k] = n++;
    out[p] = id[k];
  }
  return n;
}

namespace {

std::tuple<at::Tensor, at::Tensor> enforce_connectivity_cpu(const at::Tensor& labels, int64_t min_size) {
  check_enforce_connectivity_args(labels, min_size);
  const at::Tensor input = labels.contiguous();
  const int64_t B = input.size(0), H = input.size(1), W = input.size(2);
  at::Tensor out = at::empty({B, H, W}, input.options());
  at::Tensor counts = at::empty({B}, input.options());
  if (input.numel() == 0) {
    counts.zero_();
    return {out, counts};
  }
  SPL_CHECK_VALUE(all_in_range(input.const_data_ptr<int64_t>(), input.numel(), -1, std::numeric_limits<int64_t>::max()),
                  "enforce_connectivity: labels must be >= -1 (-1 marks pixels outside every region)");
  const int64_t* in_ptr = input.const_data_ptr<int64_t>();
  int64_t* out_ptr = out.mutable_data_ptr<int64_t>();
  int64_t* counts_ptr = counts.mutable_data_ptr<int64_t>();
  // Estimated 20 ns per pixel (parallel.h: only decides the splitting).
  parallel_work(B, 20.0 * static_cast<double>(H * W), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      counts_ptr[b] = connect_regions<int64_t>(in_ptr + b * H * W, H, W, min_size, out_ptr + b * H * W);
    }
  });
  return {out, counts};
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(spl, CPU, m) { m.impl("enforce_connectivity", &cpu::enforce_connectivity_cpu); }

}  // namespace spl
