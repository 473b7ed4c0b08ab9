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

#include "ops/graph.h"
#include "ops/cpu/parallel.h"

namespace spl {
namespace cpu {
namespace {

struct ImageGraph {
  std::vector<int64_t> degree;     // per local node
  std::vector<int64_t> neighbour;  // local ids, row by row
  std::vector<int64_t> border;
};

// Returns false if a label is outside [-1, K).
bool image_graph(const int64_t* l, int64_t H, int64_t W, int64_t K, ImageGraph& g) {
  for (int64_t p = 0; p < H * W; ++p) {
    if (l[p] < -1 || l[p] >= K) return false;
  }
  // Pass 1: how many crossing pairs start at each superpixel (both directions of each pair).
  std::vector<int64_t> start(K + 1, 0);
  auto visit = [&](auto&& emit) {
    for (int64_t y = 0; y < H; ++y) {
      const int64_t* row = l + y * W;
      for (int64_t x = 0; x < W; ++x) {
        const int64_t a = row[x];
        if (a < 0) continue;
        if (x + 1 < W && row[x + 1] != a && row[x + 1] >= 0) emit(a, row[x + 1]);
        if (y + 1 < H && row[x + W] != a && row[x + W] >= 0) emit(a, row[x + W]);
      }
    }
  };
  visit([&](int64_t a, int64_t b) {
    ++start[a + 1];
    ++start[b + 1];
  });
  for (int64_t k = 0; k < K; ++k) start[k + 1] += start[k];
  // Pass 2: fill the buckets.
  std::vector<int64_t> pairs(start[K]);
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  visit([&](int64_t a, int64_t b) {
    pairs[fill[a]++] = b;
    pairs[fill[b]++] = a;
  });
  g.degree.assign(K, 0);
  g.neighbour.clear();
  g.border.clear();
  for (int64_t k = 0; k < K; ++k) {
    int64_t* first = pairs.data() + start[k];
    int64_t* last = pairs.data() + start[k + 1];
    std::sort(first, last);
    for (int64_t* it = first; it != last;) {
      int64_t* run = it;
      while (run != last && *run == *it) ++run;
      g.neighbour.push_back(*it);
      g.border.push_back(run - it);
      ++g.degree[k];
      it = run;
    }
  }
  return true;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> superpixel_adjacency_cpu(const at::Tensor& labels,
                                                                        const at::Tensor& node_offset) {
  check_adjacency_args(labels, node_offset);
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
