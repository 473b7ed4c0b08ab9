// superpixel_adjacency on the CPU: images in parallel; in each, the 4-neighbour pixel pairs that
// cross a superpixel border are bucketed by their first superpixel (a counting sort), then each
// small bucket is sorted and run-length encoded into (neighbour, border count). O(pixels + pairs)
// plus a tiny sort per superpixel; no global sort.
#include "ops/check.h"
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <tuple>
#include <vector>

#include "ops/superpixel_adjacency.h"
#include "ops/cpu/parallel.h"
#include "ops/cpu/target_clones.h"

namespace spl {
namespace cpu {
namespace {

struct ImageGraph {
  std::vector<int64_t> degree;     // per local node
  std::vector<int64_t> neighbour;  // local ids, row by row
  std::vector<int64_t> border;
};

// Calls emit(a, b) for every 4-neighbour pixel pair (right and down) of different labels, both
// >= 0. Labels change every few pixels, so a branch per pixel would mispredict once per border: each
// block of 64 pixels is compared at once into a bit mask (vectorised), then its set bits are visited.
template <typename Emit>
SPL_TARGET_CLONES void crossing_pairs(const int64_t* l, int64_t H, int64_t W, Emit&& emit) {
  for (int64_t y = 0; y < H; ++y) {
    const int64_t* row = l + y * W;
    const bool has_below = y + 1 < H;
    for (int64_t x0 = 0; x0 < W; x0 += 64) {
      const int64_t len = std::min<int64_t>(64, W - x0);
      uint64_t right = 0, down = 0;
      const int64_t right_len = std::min<int64_t>(len, W - 1 - x0);  // the last pixel has no right neighbour
      for (int64_t j = 0; j < right_len; ++j) right |= static_cast<uint64_t>(row[x0 + j] != row[x0 + j + 1]) << j;
      if (has_below) {
        for (int64_t j = 0; j < len; ++j) down |= static_cast<uint64_t>(row[x0 + j] != row[x0 + j + W]) << j;
      }
      for (; right; right &= right - 1) {
        const int64_t x = x0 + __builtin_ctzll(right);
        if (row[x] >= 0 && row[x + 1] >= 0) emit(row[x], row[x + 1]);
      }
      for (; down; down &= down - 1) {
        const int64_t x = x0 + __builtin_ctzll(down);
        if (row[x] >= 0 && row[x + W] >= 0) emit(row[x], row[x + W]);
      }
    }
  }
}

// Returns false if a label is outside [-1, K).
bool image_graph(const int64_t* l, int64_t H, int64_t W, int64_t K, ImageGraph& g) {
  if (!all_in_range(l, H * W, -1, K - 1)) return false;
  // Pass 1: how many crossing pairs start at each superpixel (both directions of each pair).
  std::vector<int64_t> start(K + 1, 0);
  crossing_pairs(l, H, W, [&](int64_t a, int64_t b) {
    ++start[a + 1];
    ++start[b + 1];
  });
  for (int64_t k = 0; k < K; ++k) start[k + 1] += start[k];
  // Pass 2: fill the buckets.
  std::vector<int64_t> pairs(start[K]);
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  crossing_pairs(l, H, W, [&](int64_t a, int64_t b) {
    pairs[fill[a]++] = b;
    pairs[fill[b]++] = a;
  });
  // Each bucket holds a superpixel's border pixels' neighbours, a few distinct ones each repeated
  // along the border: counted with a per-neighbour slot stamped by the bucket (instead of sorting
  // the bucket), then the few distinct neighbours sorted.
  g.degree.assign(K, 0);
  g.neighbour.clear();
  g.border.clear();
  std::vector<int64_t> stamp(K, -1), slot(K);
  for (int64_t k = 0; k < K; ++k) {
    const size_t first = g.neighbour.size();
    for (int64_t e = start[k]; e < start[k + 1]; ++e) {
      const int64_t n = pairs[e];
      if (stamp[n] != k) {
        stamp[n] = k, slot[n] = static_cast<int64_t>(g.neighbour.size());
        g.neighbour.push_back(n), g.border.push_back(1);
      } else {
        ++g.border[slot[n]];
      }
    }
    // The (neighbour, count) pairs of this row sorted by neighbour: by insertion when there are few
    // (the rule for superpixels), else by std::sort (a label touching thousands of others).
    const size_t last = g.neighbour.size();
    if (last - first <= 32) {
      for (size_t i = first + 1; i < last; ++i) {
        const int64_t n = g.neighbour[i], c = g.border[i];
        size_t j = i;
        for (; j > first && g.neighbour[j - 1] > n; --j)
          g.neighbour[j] = g.neighbour[j - 1], g.border[j] = g.border[j - 1];
        g.neighbour[j] = n, g.border[j] = c;
      }
    } else {
      std::vector<std::pair<int64_t, int64_t>> row(last - first);
      for (size_t i = first; i < last; ++i) row[i - first] = {g.neighbour[i], g.border[i]};
      std::sort(row.begin(), row.end());
      for (size_t i = first; i < last; ++i) g.neighbour[i] = row[i - first].first, g.border[i] = row[i - first].second;
    }
    g.degree[k] = static_cast<int64_t>(g.neighbour.size() - first);
  }
  return true;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> superpixel_adjacency_cpu(const at::Tensor& labels,
                                                                        const at::Tensor& node_offset) {
  check_superpixel_adjacency_args(labels, node_offset);
  const at::Tensor lc = labels.contiguous(), oc = node_offset.contiguous();
  const int64_t B = lc.size(0), H = lc.size(1), W = lc.size(2);
  const int64_t* off = oc.const_data_ptr<int64_t>();
  SPL_CHECK_VALUE(off[0] == 0, "superpixel_adjacency: node_offset must start at 0, got ", off[0]);
  for (int64_t b = 0; b < B; ++b) {
    SPL_CHECK_VALUE(off[b + 1] >= off[b], "superpixel_adjacency: node_offset must be non-decreasing");
  }
  const int64_t N = off[B];
  std::vector<ImageGraph> graphs(B);
  std::atomic<int64_t> bad_image{-1};
  const int64_t* l = lc.const_data_ptr<int64_t>();
  // Estimated 15 ns per pixel (parallel.h: only decides the splitting).
  parallel_work(B, 15.0 * static_cast<double>(H * W), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      if (!image_graph(l + b * H * W, H, W, off[b + 1] - off[b], graphs[b])) bad_image = b;
    }
  });
  const int64_t bad = bad_image.load();
  SPL_CHECK_VALUE(bad < 0, "superpixel_adjacency: labels of image ", bad, " must be in [-1, ",
                  bad < 0 ? 0 : off[bad + 1] - off[bad], ") (its number of superpixels; -1: ignored pixel)");
  int64_t E = 0;
  for (const auto& g : graphs) E += static_cast<int64_t>(g.neighbour.size());
  const auto opts = labels.options();
  at::Tensor indptr = at::empty({N + 1}, opts), indices = at::empty({E}, opts), border = at::empty({E}, opts);
  int64_t* ip = indptr.mutable_data_ptr<int64_t>();
  int64_t* ix = indices.mutable_data_ptr<int64_t>();
  int64_t* bd = border.mutable_data_ptr<int64_t>();
  ip[0] = 0;
  int64_t e = 0;
  for (int64_t b = 0; b < B; ++b) {
    const ImageGraph& g = graphs[b];
    for (int64_t k = 0; k < off[b + 1] - off[b]; ++k) ip[off[b] + k + 1] = ip[off[b] + k] + g.degree[k];
    for (size_t i = 0; i < g.neighbour.size(); ++i, ++e) {
      ix[e] = g.neighbour[i] + off[b];
      bd[e] = g.border[i];
    }
  }
  return {indptr, indices, border};
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(spl, CPU, m) { m.impl("superpixel_adjacency", &cpu::superpixel_adjacency_cpu); }

}  // namespace spl
