// superpixel_pool on the CPU: one task per (image, channel), summed in a fixed order (double
// accumulators), so the result is deterministic and independent of the thread count.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu/superpixel_helpers.h"
#include "ops/superpixel_pool.h"

namespace spl {
namespace cpu {
namespace {

// Estimated single-thread cost per pixel of one plane (parallel.h: only decides the splitting).
constexpr double kCountNs = 0.8, kPoolNs = 1.6, kScatterNs = 1.5;

// Pixel counts of each superpixel, [B, K].
at::Tensor superpixel_counts(const at::Tensor& labels, int64_t K) {
  const int64_t B = labels.size(0), HW = labels.size(1) * labels.size(2);
  at::Tensor counts = at::zeros({B, K}, labels.options());
  const int64_t* l = labels.const_data_ptr<int64_t>();
  int64_t* n = counts.mutable_data_ptr<int64_t>();
  parallel_work(B, static_cast<double>(HW) * kCountNs, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t p = 0; p < HW; ++p) {
        const int64_t k = l[b * HW + p];
        if (k >= 0) ++n[b * K + k];
      }
    }
  });
  return counts;
}

template <typename scalar_t>
void pool_forward(const scalar_t* x, const int64_t* labels, const int64_t* counts, int64_t B, int64_t C, int64_t HW,
                  int64_t K, PoolReduce reduce, scalar_t* out, int64_t* argmax) {
  parallel_work(B * C, static_cast<double>(HW) * kPoolNs, [&](int64_t begin, int64_t end) {
    std::vector<double> acc(K), lanes(4 * K);
    for (int64_t bc = begin; bc < end; ++bc) {
      const int64_t b = bc / C;
      const scalar_t* plane = x + bc * HW;
      const int64_t* l = labels + b * HW;
      scalar_t* o = out + bc * K;
      if (reduce == PoolReduce::kMax) {
        int64_t* arg = argmax + bc * K;
        std::fill(acc.begin(), acc.end(), -std::numeric_limits<double>::infinity());
        std::fill(arg, arg + K, int64_t{-1});
        for (int64_t p = 0; p < HW; ++p) {
          const int64_t k = l[p];
          if (k < 0) continue;
          const double v = static_cast<double>(plane[p]);
          // The first maximum in raster order; a NaN wins (and stays), as in torch.amax.
          if (arg[k] < 0 || (!std::isnan(acc[k]) && (v > acc[k] || std::isnan(v)))) acc[k] = v, arg[k] = p;
        }
        for (int64_t k = 0; k < K; ++k) o[k] = static_cast<scalar_t>(arg[k] < 0 ? 0.0 : acc[k]);
        continue;
      }
      // Neighbouring pixels usually share a superpixel, so a single accumulator would chain every
      // addition on the previous one; four interleaved ones (pixel p into lane p % 4), added up in
      // a fixed order at the end, keep four additions in flight and the result deterministic.
      std::fill(lanes.begin(), lanes.end(), 0.0);
      double* a0 = lanes.data();
      double* a1 = a0 + K;
      double* a2 = a1 + K;
      double* a3 = a2 + K;
      int64_t p = 0;
      for (; p + 4 <= HW; p += 4) {
        const int64_t k0 = l[p], k1 = l[p + 1], k2 = l[p + 2], k3 = l[p + 3];
        if (k0 >= 0) a0[k0] += static_cast<double>(plane[p]);
        if (k1 >= 0) a1[k1] += static_cast<double>(plane[p + 1]);
        if (k2 >= 0) a2[k2] += static_cast<double>(plane[p + 2]);
        if (k3 >= 0) a3[k3] += static_cast<double>(plane[p + 3]);
      }
      for (; p < HW; ++p) {
        if (l[p] >= 0) a0[l[p]] += static_cast<double>(plane[p]);
      }
      for (int64_t k = 0; k < K; ++k) acc[k] = (a0[k] + a1[k]) + (a2[k] + a3[k]);
      const int64_t* n = counts + b * K;
      for (int64_t k = 0; k < K; ++k) {
        const double v = reduce == PoolReduce::kMean ? (n[k] > 0 ? acc[k] / static_cast<double>(n[k]) : 0.0) : acc[k];
        o[k] = static_cast<scalar_t>(v);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> superpixel_pool_cpu(const at::Tensor& x, const at::Tensor& labels, int64_t K,
                                                       c10::string_view reduce_name) {
  const char* op = "superpixel_pool";
  const PoolReduce reduce = check_superpixel_pool_args(x, labels, K, reduce_name);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const at::Tensor xc = x.contiguous(), lc = labels.contiguous();
  check_label_range(op, lc, K);
  at::Tensor out = at::empty({B, C, K}, x.options());
  at::Tensor aux = reduce == PoolReduce::kMax ? at::empty({B, C, K}, labels.options()) : superpixel_counts(lc, K);
  if (out.numel() == 0) return {out.zero_(), aux};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "superpixel_pool_cpu", [&] {
    pool_forward<scalar_t>(xc.const_data_ptr<scalar_t>(), lc.const_data_ptr<int64_t>(),
                           reduce == PoolReduce::kMax ? nullptr : aux.const_data_ptr<int64_t>(), B, C, H * W, K, reduce,
                           out.mutable_data_ptr<scalar_t>(),
                           reduce == PoolReduce::kMax ? aux.mutable_data_ptr<int64_t>() : nullptr);
  });
  return {out, aux};
}

// Gradient of the pooling with respect to x: for sum and mean a gather of each superpixel's
// gradient (divided by its size for mean, once per superpixel rather than per pixel: the same
// values); for max a scatter to the argmax pixel. Every element of grad_x is written by exactly one
// task, so it is deterministic.
at::Tensor superpixel_pool_backward_cpu(const at::Tensor& grad, const at::Tensor& labels, const at::Tensor& aux,
                                        int64_t H, int64_t W, c10::string_view reduce_name) {
  const PoolReduce reduce = parse_reduce(reduce_name);
  const int64_t B = grad.size(0), C = grad.size(1), K = grad.size(2), HW = H * W;
  const at::Tensor g = grad.contiguous(), lc = labels.contiguous(), ac = aux.contiguous();
  // Sum and mean write every element (the gather writes 0 where the label is -1): no zero fill.
  at::Tensor grad_x =
      reduce == PoolReduce::kMax ? at::zeros({B, C, H, W}, grad.options()) : at::empty({B, C, H, W}, grad.options());
  if (grad_x.numel() == 0) return grad_x;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "superpixel_pool_backward_cpu", [&] {
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const int64_t* a = ac.const_data_ptr<int64_t>();
    scalar_t* out = grad_x.mutable_data_ptr<scalar_t>();
    if (reduce == PoolReduce::kMax) {
      parallel_work(B * C, static_cast<double>(K) * kScatterNs, [&](int64_t begin, int64_t end) {
        for (int64_t bc = begin; bc < end; ++bc) {
          const scalar_t* gk = gp + bc * K;
          scalar_t* o = out + bc * HW;
          for (int64_t k = 0; k < K; ++k) {
            if (a[bc * K + k] >= 0) o[a[bc * K + k]] = gk[k];
          }
        }
      });
      return;
    }
    at::Tensor values = g;
    if (reduce == PoolReduce::kMean) {
      values = at::empty_like(g);
      scalar_t* v = values.mutable_data_ptr<scalar_t>();
      parallel_work(B * C, static_cast<double>(K) * kScatterNs, [&](int64_t begin, int64_t end) {
        for (int64_t bc = begin; bc < end; ++bc) {
          const int64_t* n = a + (bc / C) * K;
          for (int64_t k = 0; k < K; ++k) {
            v[bc * K + k] = static_cast<scalar_t>(static_cast<double>(gp[bc * K + k]) / static_cast<double>(n[k]));
          }
        }
      });
    }
    gather_by_label(values.const_data_ptr<scalar_t>(), lc.const_data_ptr<int64_t>(), B, C, HW, K, out);
  });
  return grad_x;
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(spl, CPU, m) {
  m.impl("superpixel_pool", &cpu::superpixel_pool_cpu);
  m.impl("_superpixel_pool_backward", &cpu::superpixel_pool_backward_cpu);
}

}  // namespace spl
