// C++ test of the spl library through its C++ API (the dispatcher), without Python.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "ops/consistency_weights.h"
#include "ops/cpu/vector_math.h"
#include "ops/edge_aware_unpool.h"
#include "ops/enforce_connectivity.h"
#include "ops/slic.h"
#include "ops/sparse_propagate.h"
#include "ops/superpixel_adjacency.h"
#include "ops/superpixel_histogram.h"
#include "ops/superpixel_pool.h"
#include "ops/superpixel_unpool.h"

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s  %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

bool throws_value_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const c10::ValueError&) {
    return true;
  } catch (...) {
    return false;
  }
  return false;
}

void test_slic_quadrants(const at::Device& device) {
  // Four coloured quadrants and 4 segments: labels are the quadrants, in raster order.
  at::Tensor image = at::zeros({1, 3, 64, 64}, at::kByte);
  image.index_put_({0, 0, at::indexing::Slice(0, 32), at::indexing::Slice(0, 32)}, 255);
  image.index_put_({0, 1, at::indexing::Slice(0, 32), at::indexing::Slice(32, 64)}, 255);
  image.index_put_({0, 2, at::indexing::Slice(32, 64), at::indexing::Slice(0, 32)}, 255);
  image.index_put_({0, at::indexing::Slice(0, 2), at::indexing::Slice(32, 64), at::indexing::Slice(32, 64)}, 255);
  const std::vector<double> spacing{1.0, 1.0};
  auto [labels, counts] = spl::slic(image.to(device), 4, 10.0, 10, true, true, 0.25, spacing, std::nullopt);
  labels = labels.cpu();
  at::Tensor expected = at::empty({1, 64, 64}, at::kLong);
  expected.index_put_({0, at::indexing::Slice(0, 32), at::indexing::Slice(0, 32)}, 0);
  expected.index_put_({0, at::indexing::Slice(0, 32), at::indexing::Slice(32, 64)}, 1);
  expected.index_put_({0, at::indexing::Slice(32, 64), at::indexing::Slice(0, 32)}, 2);
  expected.index_put_({0, at::indexing::Slice(32, 64), at::indexing::Slice(32, 64)}, 3);
  const std::string on = " on " + device.str();
  check(labels.equal(expected), "slic labels the four quadrants" + on);
  check(counts.cpu().item<int64_t>() == 4, "slic counts 4 segments" + on);
  check(throws_value_error([&] { spl::slic(image.to(device), 0, 10.0, 10, true, true, 0.25, spacing, std::nullopt); }),
        "slic rejects n_segments = 0 with a ValueError" + on);
}

void test_connectivity(const at::Device& device) {
  // 1 1 2 1      0 0 1 2
  // 1 2 2 1  ->  0 1 1 2   (min_size 0: the two pieces of label 1 split)
  // 3 3 3 3      3 3 3 3
  at::Tensor labels = at::tensor({1, 1, 2, 1, 1, 2, 2, 1, 3, 3, 3, 3}, at::kLong).view({1, 3, 4});
  at::Tensor expected = at::tensor({0, 0, 1, 2, 0, 1, 1, 2, 3, 3, 3, 3}, at::kLong).view({1, 3, 4});
  auto [out, counts] = spl::enforce_connectivity(labels.to(device), 0);
  const std::string on = " on " + device.str();
  check(out.cpu().equal(expected), "enforce_connectivity splits a label into its regions" + on);
  check(counts.cpu().item<int64_t>() == 4, "enforce_connectivity counts 4 regions" + on);
  // min_size 4: region 2 (the two right-hand pixels) borders region 1 along 2 pixel pairs and
  // region 3 along 1, so it joins region 1.
  auto merged = std::get<0>(spl::enforce_connectivity(labels.to(device), 4)).cpu();
  check(merged[0][0][3].item<int64_t>() == merged[0][0][2].item<int64_t>(),
        "small region merges along the longest border" + on);
  check(throws_value_error([&] { spl::enforce_connectivity(at::full({1, 2, 2}, -3, at::kLong).to(device), 0); }),
        "enforce_connectivity rejects labels below -1" + on);
}

void test_pooling(const at::Device& device) {
  // x = 0..5 on one row; superpixels 0 0 1 1 -1 1: means 0.5 and (2 + 3 + 5) / 3; unpool spreads them back.
  at::Tensor x = at::arange(6, at::kFloat).view({1, 1, 1, 6}).to(device);
  at::Tensor labels = at::tensor({0, 0, 1, 1, -1, 1}, at::kLong).view({1, 1, 6}).to(device);
  const std::string on = " on " + device.str();
  at::Tensor mean = std::get<0>(spl::superpixel_pool(x, labels, 2, "mean")).cpu();
  check(mean.allclose(at::tensor({0.5f, 10.0f / 3.0f}).view({1, 1, 2})), "superpixel_pool mean" + on);
  at::Tensor back = spl::superpixel_unpool(mean.to(device), labels).cpu();
  check(back[0][0][0][4].item<float>() == 0.0f && back[0][0][0][5].item<float>() == mean[0][0][1].item<float>(),
        "superpixel_unpool" + on);
  at::Tensor target = at::tensor({1, 1, 1, 2, 0, 255}, at::kLong).view({1, 1, 6}).to(device);
  auto [weights, transformed] = spl::consistency_weights(target, labels, 2, 3, 0.7, 1.0, 255);
  check(transformed.cpu().equal(at::tensor({1, 1, 1, 2, 255, 255}, at::kLong).view({1, 1, 6})),
        "consistency_weights labels" + on);
  check(weights.cpu().allclose(at::tensor({1.0f, 1.0f, 0.5f, 0.5f, 0.0f, 0.0f}).view({1, 1, 6})),
        "consistency_weights weights" + on);
  check(throws_value_error([&] { spl::superpixel_pool(x, labels, 1, "sum"); }),
        "superpixel_pool rejects labels >= num_superpixels" + on);
  at::Tensor hist = spl::superpixel_histogram(target, labels, 2, 3, 255).cpu();
  check(hist.equal(at::tensor({0, 2, 0, 0, 1, 1}, at::kLong).view({1, 2, 3})), "superpixel_histogram" + on);
  // guide 0 0 1 1 1 1: pixel 1 (guide 0) sits next to superpixel 1 (mean guide 1) and keeps its own value.
  at::Tensor guide = at::tensor({0.0f, 0.0f, 1.0f, 1.0f, 1.0f, 1.0f}).view({1, 1, 1, 6}).to(device);
  at::Tensor guide_means = at::tensor({0.0f, 1.0f}).view({1, 1, 2}).to(device);
  at::Tensor soft = spl::edge_aware_unpool(mean.to(device), labels, guide, guide_means, 0.05, 1).cpu();
  check(std::abs(soft[0][0][0][1].item<float>() - 0.5f) < 1e-6f && soft[0][0][0][4].item<float>() == 0.0f,
        "edge_aware_unpool" + on);
}

void test_graph(const at::Device& device) {
  // One image, superpixels 0 | 1 | 2 in three columns: a path 0 - 1 - 2 with borders of 2 pixel pairs.
  at::Tensor labels = at::tensor({0, 1, 2, 0, 1, 2}, at::kLong).view({1, 2, 3}).to(device);
  at::Tensor node_offset = at::tensor({0, 3}, at::kLong).to(device);
  const std::string on = " on " + device.str();
  auto [indptr, indices, border] = spl::superpixel_adjacency(labels, node_offset);
  check(indptr.cpu().equal(at::tensor({0, 1, 3, 4}, at::kLong)) &&
            indices.cpu().equal(at::tensor({1, 0, 2, 1}, at::kLong)) &&
            border.cpu().equal(at::tensor({2, 2, 2, 2}, at::kLong)),
        "superpixel_adjacency" + on);
  // T with edge values 1/2 and diagonal 1/2 (rows of the end nodes: 1/2 + 1/2) is a random walk;
  // a constant x stays constant, for any number of rounds.
  at::Tensor edge_value = at::full({4}, 0.5f, at::kFloat).to(device);
  at::Tensor self_value = at::tensor({0.5f, 0.0f, 0.5f}).to(device);
  at::Tensor x = at::full({3, 2}, 3.0f, at::kFloat).to(device);
  at::Tensor walked = spl::sparse_propagate(indptr, indices, node_offset, edge_value, self_value, x, 5, 1.0).cpu();
  check(walked.allclose(at::full({3, 2}, 3.0f, at::kFloat)), "sparse_propagate" + on);
  check(throws_value_error(
            [&] { spl::sparse_propagate(indptr, indices, node_offset, edge_value, self_value, x, 5, 2.0); }),
        "sparse_propagate rejects alpha > 1" + on);
}

}  // namespace

// The vectorised float32 logarithm of _cam_unary against logf: within 1 ulp on positive floats
// spread over the whole range (subnormals included; every one of them was checked once, offline),
// and logf's special values.
void test_log_array() {
  std::vector<float> x, y;
  for (uint32_t bits = 1; bits < 0x7f800000u; bits += 977) {  // every 977th positive finite float
    float v;
    std::memcpy(&v, &bits, sizeof v);
    x.push_back(v);
  }
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const size_t n = x.size();
  x.insert(x.end(), {0.0f, -0.0f, -1.0f, -inf, inf, nan, 1.0f});
  y.resize(x.size());
  spl::cpu::log_array(x.data(), y.data(), static_cast<int64_t>(x.size()));
  int64_t worst = 0;
  for (size_t i = 0; i < n; ++i) {
    const float want = std::log(x[i]);
    int32_t a, b;
    std::memcpy(&a, &y[i], sizeof a);
    std::memcpy(&b, &want, sizeof b);
    // ulp distance of two floats (through zero when the signs differ)
    const int64_t ia = a < 0 ? -int64_t(a & 0x7fffffff) : a, ib = b < 0 ? -int64_t(b & 0x7fffffff) : b;
    worst = std::max<int64_t>(worst, ia > ib ? ia - ib : ib - ia);
  }
  check(worst <= 1, "log_array within 1 ulp of logf (" + std::to_string(worst) + ")");
  const float* s = y.data() + n;
  check(s[0] == -inf && s[1] == -inf && std::isnan(s[2]) && std::isnan(s[3]) && s[4] == inf && std::isnan(s[5]) &&
            s[6] == 0.0f,
        "log_array special values as logf");
}

int main() {
  test_log_array();
  test_slic_quadrants(at::kCPU);
  test_connectivity(at::kCPU);
  test_pooling(at::kCPU);
  test_graph(at::kCPU);
  if (at::hasCUDA()) {
    test_slic_quadrants(at::Device(at::kCUDA, 0));
    test_connectivity(at::Device(at::kCUDA, 0));
    test_pooling(at::Device(at::kCUDA, 0));
    test_graph(at::Device(at::kCUDA, 0));
  }
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
