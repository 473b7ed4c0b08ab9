#include "ops/check.h"
#include "ops/cpu/connectivity_kernel.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "ops/connectivity.h"
#include "ops/connectivity_common.h"
#include "ops/cpu/target_clones.h"

namespace spl {
namespace cpu {
namespace {

using connectivity::choice_target;
using connectivity::pack_choice;
using connectivity::pack_pair;
using connectivity::pair_source;
using connectivity::pair_target;

// A horizontal run of equal labels, [x0, x1) in row y.
struct Run {
  int32_t y, x0, x1;
};

// A 4-adjacent pair of runs with different labels: a border of `length` pixel pairs between
// runs (later: regions) a and b.
struct Border {
  int32_t a, b, length;
};

struct Edge {
  uint64_t key;  // pack_pair(source group, neighbour group)
  int64_t border;
};

// Memory reused from call to call by each thread: fresh memory costs a page fault per page,
// which here costs more than the algorithm itself.
struct Scratch {
  // Regions.
  std::vector<Run> runs;
  std::vector<int64_t> run_label;
  std::vector<int32_t> row_begin, starts, parent, region;
  std::vector<int64_t> region_size;
  std::vector<Border> borders;
  // Border lists of the small regions (CSR): neighbours of small region i are
  // target[begin[i] .. begin[i + 1]), with their border lengths.
  std::vector<int32_t> small_region, small_index, target;
  std::vector<int64_t> begin, fill, length;
  // Merge rounds.
  std::vector<int64_t> group_size;
  std::vector<uint64_t> best;
  std::vector<int32_t> next, root, canon, final_id, sources, touched_list, live, rep;
  std::vector<uint8_t> touched;
  std::vector<Edge> candidates;
  std::vector<int64_t> rank;
};

Scratch& thread_scratch() {
  thread_local Scratch scratch;
  return scratch;
}

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

// Splits the labels into runs and their regions (4-connected components of equal labels, numbered
// 0..M-1 in raster order of their first pixel); records every border between runs. Returns
// whether any pixel lies outside every region (negative label).
template <typename label_t>
bool find_regions(const label_t* labels, int64_t height, int64_t width, Scratch& s) {
  s.runs.clear();
  s.run_label.clear();
  s.borders.clear();
  s.row_begin.resize(height + 1);
  // Runs, row by row; horizontally adjacent runs always differ in label, so they are borders.
  bool outside = false;
  s.starts.resize(width + 2);
  int32_t* starts = s.starts.data();
  for (int64_t y = 0; y < height; ++y) {
    s.row_begin[y] = static_cast<int32_t>(s.runs.size());
    const label_t* row = labels + y * width;
    const int64_t count = row_run_starts(row, width, starts);
    bool previous_inside = false;
    for (int64_t i = 0; i < count; ++i) {
      const int64_t x0 = starts[i], x = starts[i + 1];
      const label_t v = row[x0];
      if (v >= 0) {
        const int32_t r = static_cast<int32_t>(s.runs.size());
        if (previous_inside) s.borders.push_back({r - 1, r, 1});
        s.runs.push_back({static_cast<int32_t>(y), static_cast<int32_t>(x0), static_cast<int32_t>(x)});
        s.run_label.push_back(v);
      } else {
        outside = true;
      }
      previous_inside = v >= 0;
    }
  }
  s.row_begin[height] = static_cast<int32_t>(s.runs.size());
  const int32_t R = static_cast<int32_t>(s.runs.size());

  // One sweep over vertically overlapping runs: equal labels join (union-find; the root of a
  // component is its first run, hence its first pixel), different labels are borders.
  s.parent.resize(R);
  int32_t* parent = s.parent.data();
  std::iota(parent, parent + R, 0);
  const Run* runs = s.runs.data();
  const int64_t* run_label = s.run_label.data();
  for (int64_t y = 1; y < height; ++y) {
    int32_t i = s.row_begin[y - 1], j = s.row_begin[y];
    const int32_t i_end = s.row_begin[y], j_end = s.row_begin[y + 1];
    while (i < i_end && j < j_end) {
      const Run& a = runs[i];
      const Run& b = runs[j];
      const int32_t overlap = std::min(a.x1, b.x1) - std::max(a.x0, b.x0);
      if (overlap > 0) {
        if (run_label[i] == run_label[j]) unite(parent, i, j);
        else s.borders.push_back({i, j, overlap});
      }
      if (a.x1 <= b.x1) ++i;
      else ++j;
    }
  }
  s.region.resize(R);
  s.region_size.clear();
  for (int32_t r = 0; r < R; ++r) {
    const int32_t root = parent[r] == r ? r : find_root(parent, r);
    if (root == r) {
      s.region[r] = static_cast<int32_t>(s.region_size.size());
      s.region_size.push_back(0);
    } else {
      s.region[r] = s.region[root];
    }
    s.region_size[s.region[r]] += runs[r].x1 - runs[r].x0;
  }
  return outside;
}

// The border lists of the regions smaller than min_size (see Scratch), aggregated by neighbour.
// Returns false if there is no small region.
bool small_region_borders(int64_t min_size, Scratch& s) {
  const size_t M = s.region_size.size();
  s.small_region.clear();
  s.small_index.assign(M, -1);
  for (size_t m = 0; m < M; ++m) {
    if (s.region_size[m] < min_size) {
      s.small_index[m] = static_cast<int32_t>(s.small_region.size());
      s.small_region.push_back(static_cast<int32_t>(m));
    }
  }
  const size_t n = s.small_region.size();
  if (n == 0) return false;
  // Counting sort, by small source region, of the borders that touch a small region (the others,
  // between two large regions, are dropped on the way).
  s.begin.assign(n + 1, 0);
  const int32_t* small_index = s.small_index.data();
  size_t kept = 0;
  for (const Border& run_border : s.borders) {
    Border e{s.region[run_border.a], s.region[run_border.b], run_border.length};
    const bool small_a = small_index[e.a] >= 0, small_b = small_index[e.b] >= 0;
    if (!small_a && !small_b) continue;
    if (small_a) ++s.begin[small_index[e.a] + 1];
    if (small_b) ++s.begin[small_index[e.b] + 1];
    s.borders[kept++] = e;
  }
  s.borders.resize(kept);
  for (size_t i = 0; i < n; ++i) s.begin[i + 1] += s.begin[i];
  s.fill.assign(s.begin.begin(), s.begin.end() - 1);
  s.target.resize(s.begin.back());
  s.length.resize(s.begin.back());
  for (const Border& e : s.borders) {
    if (small_index[e.a] >= 0) s.target[s.fill[small_index[e.a]]] = e.b, s.length[s.fill[small_index[e.a]]++] = e.length;
    if (small_index[e.b] >= 0) s.target[s.fill[small_index[e.b]]] = e.a, s.length[s.fill[small_index[e.b]]++] = e.length;
  }
  // Aggregate each list by neighbour (lists are short: a small region has a short border).
  int64_t out = 0;
  for (size_t i = 0; i < n; ++i) {
    const int64_t first = s.begin[i], last = s.begin[i + 1];
    s.begin[i] = out;
    for (int64_t e = first; e < last; ++e) {
      int64_t f = s.begin[i];
      while (f < out && s.target[f] != s.target[e]) ++f;
      if (f < out) s.length[f] += s.length[e];
      else s.target[out] = s.target[e], s.length[out++] = s.length[e];
    }
  }
  s.begin[n] = out;
  return true;
}

// The merge rounds of connectivity_common.h on the region graph. On return rep[m] is the id of the
// merged region holding region m.
void merge_small_regions(int64_t min_size, Scratch& s) {
  const size_t M = s.region_size.size();
  s.group_size = s.region_size;
  s.best.assign(M, 0);  // packed choice of each small group in this round
  s.touched.assign(M, 0);
  s.next.resize(M), s.root.resize(M), s.canon.resize(M), s.final_id.resize(M);
  // Small regions whose group may still be small; a group never shrinks, so the list only shrinks.
  s.live.resize(s.small_region.size());
  std::iota(s.live.begin(), s.live.end(), 0);
  int64_t* group_size = s.group_size.data();
  uint64_t* best = s.best.data();
  int32_t* rep = s.rep.data();
  int32_t* next = s.next.data();

  for (int round = 0;; ++round) {
    s.sources.clear();
    if (round == 0) {
      // Every group is a single region and its border list is already aggregated.
      for (size_t i = 0; i < s.small_region.size(); ++i) {
        uint64_t choice = 0;
        for (int64_t e = s.begin[i]; e < s.begin[i + 1]; ++e) {
          choice = std::max(choice, pack_choice(static_cast<uint32_t>(s.length[e]), s.target[e]));
        }
        if (choice) best[s.small_region[i]] = choice, s.sources.push_back(s.small_region[i]);
      }
    } else {
      s.candidates.clear();
      size_t kept = 0;
      for (int32_t i : s.live) {
        const int32_t gs = rep[s.small_region[i]];
        if (group_size[gs] >= min_size) continue;
        s.live[kept++] = i;
        for (int64_t e = s.begin[i]; e < s.begin[i + 1]; ++e) {
          const int32_t gd = rep[s.target[e]];
          if (gd != gs) s.candidates.push_back({pack_pair(gs, gd), s.length[e]});
        }
      }
      s.live.resize(kept);
      std::sort(s.candidates.begin(), s.candidates.end(), [](const Edge& a, const Edge& b) { return a.key < b.key; });
      for (size_t e = 0; e < s.candidates.size();) {
        const uint64_t key = s.candidates[e].key;
        int64_t total = 0;
        for (; e < s.candidates.size() && s.candidates[e].key == key; ++e) total += s.candidates[e].border;
        const uint32_t gs = pair_source(key);
        if (best[gs] == 0) s.sources.push_back(static_cast<int32_t>(gs));
        best[gs] = std::max(best[gs], pack_choice(static_cast<uint32_t>(total), pair_target(key)));
      }
    }
    if (s.sources.empty()) break;

    // Step 2: a pair that chose each other keeps the smaller id as its root.
    auto target = [&](int32_t g) { return best[g] ? static_cast<int32_t>(choice_target(best[g])) : g; };
    for (int32_t g : s.sources) {
      const int32_t t = target(g);
      next[g] = (target(t) == g && g < t) ? g : t;
    }
    // Step 3: follow chains (no cycles remain) and give each group its smallest member id.
    s.touched_list.clear();
    auto touch = [&](int32_t g) {
      if (!s.touched[g]) s.touched[g] = 1, s.touched_list.push_back(g);
    };
    for (int32_t g : s.sources) touch(g), touch(target(g));
    auto root_of = [&](int32_t g) {
      int32_t r = g;
      while (best[r] && next[r] != r) r = next[r];
      while (best[g] && next[g] != g) {  // path compression
        const int32_t n = next[g];
        next[g] = r;
        g = n;
      }
      return r;
    };
    // Every chain ends at a touched group, so roots and members are all in touched_list.
    for (int32_t g : s.touched_list) s.root[g] = root_of(g), s.canon[g] = g;
    for (int32_t g : s.touched_list) s.canon[s.root[g]] = std::min(s.canon[s.root[g]], g);
    for (int32_t g : s.touched_list) s.final_id[g] = s.canon[s.root[g]];
    for (int32_t g : s.touched_list) s.canon[g] = static_cast<int32_t>(group_size[g]), group_size[g] = 0;
    for (int32_t g : s.touched_list) group_size[s.final_id[g]] += s.canon[g];
    for (size_t m = 0; m < M; ++m) {
      if (s.touched[rep[m]]) rep[m] = s.final_id[rep[m]];
    }
    for (int32_t g : s.touched_list) s.touched[g] = 0, best[g] = 0;
  }
}

}  // namespace

template <typename label_t>
int64_t connect_regions(const label_t* labels, int64_t height, int64_t width, int64_t min_size,
                        int64_t* out) {
  Scratch& s = thread_scratch();
  const bool outside = find_regions(labels, height, width, s);
  const size_t M = s.region_size.size();
  s.rep.resize(M);
  std::iota(s.rep.begin(), s.rep.end(), 0);
  if (min_size > 1 && small_region_borders(min_size, s)) merge_small_regions(min_size, s);

  // Final labels: rank of each merged region's id, written run by run.
  s.rank.assign(M, -1);
  int64_t n = 0;
  for (size_t m = 0; m < M; ++m) {
    if (s.rep[m] == static_cast<int32_t>(m)) s.rank[m] = n++;
  }
  if (outside) std::fill(out, out + height * width, int64_t{-1});
  const Run* runs = s.runs.data();
  for (size_t r = 0; r < s.runs.size(); ++r) {
    const int64_t value = s.rank[s.rep[s.region[r]]];
    int64_t* row = out + static_cast<int64_t>(runs[r].y) * width;
    for (int32_t x = runs[r].x0; x < runs[r].x1; ++x) row[x] = value;
  }
  return n;
}

template int64_t connect_regions<int32_t>(const int32_t*, int64_t, int64_t, int64_t, int64_t*);
template int64_t connect_regions<int64_t>(const int64_t*, int64_t, int64_t, int64_t, int64_t*);

int64_t renumber_by_first_pixel(const int32_t* labels, int64_t num_labels, int64_t num_pixels,
                                int64_t* out) {
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
  SPL_CHECK_VALUE(input.min().item<int64_t>() >= -1,
                    "enforce_connectivity: labels must be >= -1 (-1 marks pixels outside every region)");
  const int64_t* in_ptr = input.const_data_ptr<int64_t>();
  int64_t* out_ptr = out.mutable_data_ptr<int64_t>();
  int64_t* counts_ptr = counts.mutable_data_ptr<int64_t>();
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
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
