// superpixel_unpool on the CPU: out[b, c, p] = features[b, c, labels[b, p]] (0 where the label is -1).
#include "ops/check.h"
#include <ATen/Dispatch.h>
#include <algorithm>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "ops/cpu/superpixel_helpers.h"
#include "ops/superpixel_pool.h"

namespace spl {
namespace cpu {
namespace {

at::Tensor superpixel_unpool_cpu(const at::Tensor& features, const at::Tensor& labels) {
  const char* op = "superpixel_unpool";
  check_features(op, features, 3);
  SPL_CHECK_VALUE(labels.dim() == 3, op, ": labels must have shape [B, H, W], got ", labels.sizes());
  const int64_t B = features.size(0), C = features.size(1), K = features.size(2);
  const int64_t H = labels.size(1), W = labels.size(2), HW = H * W;
  check_labels(op, labels, B, H, W, features.device(), K);
  const at::Tensor f = features.contiguous(), lc = labels.contiguous();
  check_label_range(op, lc, K);
  at::Tensor out = at::empty({B, C, H, W}, features.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "superpixel_unpool_cpu", [&] {
    const scalar_t* fp = f.const_data_ptr<scalar_t>();
    const int64_t* l = lc.const_data_ptr<int64_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    // Tiles of pixels, every channel of a tile in turn: the tile's labels stay in L1 and are read
    // from memory once, not once per channel (int64 labels outweigh a float channel).
    constexpr int64_t kTile = 2048;
    const int64_t tiles = (HW + kTile - 1) / kTile;
    at::parallel_for(0, B * tiles, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bt = begin; bt < end; ++bt) {
        const int64_t b = bt / tiles, p0 = (bt % tiles) * kTile, p1 = std::min(HW, p0 + kTile);
        const int64_t* lb = l + b * HW;
        for (int64_t c = 0; c < C; ++c) {
          const scalar_t* fk = fp + (b * C + c) * K;
          scalar_t* ob = o + (b * C + c) * HW;
          for (int64_t p = p0; p < p1; ++p) ob[p] = lb[p] >= 0 ? fk[lb[p]] : scalar_t(0);
        }
      }
    });
  });
  return out;
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(spl, CPU, m) { m.impl("superpixel_unpool", &cpu::superpixel_unpool_cpu); }

}  // namespace spl
