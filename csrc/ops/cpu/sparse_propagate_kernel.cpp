// sparse_propagate on the CPU: s^{t+1} = alpha * T s^t + (1 - alpha) * x for `iters` rounds, T given
// as CSR off-diagonal values plus a diagonal. The images of a batch in parallel, each running all
// its rounds (one large image: rows in parallel within a round); each output element
// sums its terms in a fixed order (diagonal first, then the row's edges in CSR order), so results
// do not depend on the thread count. The backward stores every state s^0 .. s^{iters-1}, then runs
// the rounds in reverse with T^T (the reverse edge of (i, j) is found in row j by binary search: the
// structure is symmetric); each edge's gradient is accumulated by the one thread that owns its row.
#include "ops/check.h"
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <tuple>

#include "ops/cpu/parallel.h"
#include "ops/cpu/target_clones.h"
#include "ops/sparse_propagate.h"

namespace spl {
namespace cpu {
namespace {

// Estimated single-thread cost of one (row or edge) x channel term of a round (parallel.h: only
// decides the splitting).
constexpr double kEdgeNs = 0.6;

// Checks indptr, node_offset and that every edge stays inside the image of its row.
void check_structure(const char* op, const at::Tensor& indptr, const at::Tensor& indices, const at::Tensor& node_offset,
                     int64_t N) {
  const int64_t* ip = indptr.const_data_ptr<int64_t>();
  const int64_t* ix = indices.const_data_ptr<int64_t>();
  const int64_t* off = node_offset.const_data_ptr<int64_t>();
  const int64_t B = node_offset.size(0) - 1, E = indices.size(0);
  bool ok = ip[0] == 0 && ip[N] == E && off[0] == 0 && off[B] == N;
  for (int64_t i = 0; ok && i < N; ++i) ok = ip[i + 1] >= ip[i];
  for (int64_t b = 0; ok && b < B; ++b) ok = off[b + 1] >= off[b];
  std::atomic<bool> inside{true};
  if (ok) {
    parallel_items(B, kScanNs * static_cast<double>(E) / std::max<int64_t>(B, 1), [&](int64_t b) {
      for (int64_t e = ip[off[b]]; e < ip[off[b + 1]]; ++e) {
        if (ix[e] < off[b] || ix[e] >= off[b + 1]) inside = false;
      }
    });
  }
  SPL_CHECK_VALUE(ok && inside.load(), op, ": ", graph_structure_message());
}

// Rows shared among threads within each round (a region, and a barrier, per round) only when there
// are fewer images than threads and a round of the batch is worth a region; otherwise each image
// runs all its rounds on one thread.
bool rows_per_round(int64_t images, double image_round_ns) {
  return images < at::get_num_threads() &&
         image_round_ns * static_cast<double>(images) >= static_cast<double>(inline_ns());
}

// Channels [c0, c0 + kVectors * lanes) of row i, as GCC vector types (V: 16 or 32 bytes, or the
// scalar type itself): the sums stay in registers over all the row's edges instead of a load and
// a store of dst per edge and channel (as plain loops over an array they did not vectorise). Every
// element's terms are added in the same order (diagonal, then the edges in CSR order) whatever the
// blocking or the clone (no FMA contraction), so the bits do not depend on it.
template <typename V, int kVectors, typename scalar_t>
C10_ALWAYS_INLINE void propagate_block(int64_t c0, int64_t e0, int64_t e1, int64_t C, const int64_t* ix,
                                       const scalar_t* ev, scalar_t d, const scalar_t* self, const scalar_t* src,
                                       const scalar_t* xi, scalar_t alpha, scalar_t keep, scalar_t* out) {
  constexpr int64_t kLanes = sizeof(V) / sizeof(scalar_t);
  // Loads through memcpy (unaligned, no aliasing issue) into a variable, not a returned value: a
  // 32-byte vector returned in the baseline clone would change the ABI (-Wpsabi).
  V acc[kVectors], t;
  for (int j = 0; j < kVectors; ++j) __builtin_memcpy(&t, self + c0 + j * kLanes, sizeof(V)), acc[j] = t * d;
  for (int64_t e = e0; e < e1; ++e) {
    const scalar_t v = ev[e];
    const scalar_t* nb = src + ix[e] * C + c0;
    for (int j = 0; j < kVectors; ++j) __builtin_memcpy(&t, nb + j * kLanes, sizeof(V)), acc[j] = acc[j] + t * v;
  }
  for (int j = 0; j < kVectors; ++j) {
    __builtin_memcpy(&t, xi + c0 + j * kLanes, sizeof(V));
    const V r = acc[j] * alpha + t * keep;
    __builtin_memcpy(out + c0 + j * kLanes, &r, sizeof(V));
  }
}

// dst_i = alpha * (d_i src_i + sum_e v_e src_j) + (1 - alpha) * x_i for rows [begin, end): channels
// in blocks of four, two and one 32-byte vectors, one 16-byte vector, then one by one (ASAM
// propagates 21-63 float channels: 16 + 4 + 1, 32 + 8 + 2, ...).
template <typename scalar_t>
SPL_TARGET_CLONES void propagate_rows(int64_t begin, int64_t end, int64_t C, const int64_t* ip, const int64_t* ix,
                                      const scalar_t* ev, const scalar_t* sv, const scalar_t* src, const scalar_t* x,
                                      scalar_t alpha, scalar_t* dst) {
  typedef scalar_t V32 __attribute__((vector_size(32)));
  typedef scalar_t V16 __attribute__((vector_size(16)));
  constexpr int64_t k32 = 32 / sizeof(scalar_t), k16 = 16 / sizeof(scalar_t);
  const scalar_t keep = scalar_t(1) - alpha;
  for (int64_t i = begin; i < end; ++i) {
    const int64_t e0 = ip[i], e1 = ip[i + 1];
    const scalar_t d = sv[i];
    const scalar_t* self = src + i * C;
    const scalar_t* xi = x + i * C;
    scalar_t* out = dst + i * C;
    int64_t c = 0;
    for (; c + 4 * k32 <= C; c += 4 * k32) {
      propagate_block<V32, 4>(c, e0, e1, C, ix, ev, d, self, src, xi, alpha, keep, out);
    }
    if (c + 2 * k32 <= C)
      propagate_block<V32, 2>(c, e0, e1, C, ix, ev, d, self, src, xi, alpha, keep, out), c += 2 * k32;
    if (c + k32 <= C) propagate_block<V32, 1>(c, e0, e1, C, ix, ev, d, self, src, xi, alpha, keep, out), c += k32;
    if (c + k16 <= C) propagate_block<V16, 1>(c, e0, e1, C, ix, ev, d, self, src, xi, alpha, keep, out), c += k16;
    for (; c < C; ++c) propagate_block<scalar_t, 1>(c, e0, e1, C, ix, ev, d, self, src, xi, alpha, keep, out);
  }
}

at::Tensor sparse_propagate_cpu(const at::Tensor& indptr, const at::Tensor& indices, const at::Tensor& node_offset,
                                const at::Tensor& edge_value, const at::Tensor& self_value, const at::Tensor& x,
                                int64_t iters, double alpha) {
  const char* op = "sparse_propagate";
  check_sparse_propagate_args(op, indptr, indices, node_offset, edge_value, self_value, x, iters, alpha);
  const at::Tensor ip = indptr.contiguous(), ix = indices.contiguous(), off = node_offset.contiguous();
  const at::Tensor ev = edge_value.contiguous(), sv = self_value.contiguous(), xc = x.contiguous();
  const int64_t N = xc.size(0), C = xc.size(1);
  check_structure(op, ip, ix, off, N);
  at::Tensor out = xc.clone();
  if (iters == 0 || xc.numel() == 0) return out;
  at::Tensor other = at::empty_like(xc);
  const int64_t* ipp = ip.const_data_ptr<int64_t>();
  const int64_t* ixp = ix.const_data_ptr<int64_t>();
  const int64_t* offp = off.const_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "sparse_propagate_cpu", [&] {
    // Ping-pong so that the last round writes into `out`.
    scalar_t* buf[2] = {out.mutable_data_ptr<scalar_t>(), other.mutable_data_ptr<scalar_t>()};
    if (iters % 2 == 1) {
      std::swap(buf[0], buf[1]);
      std::copy(xc.const_data_ptr<scalar_t>(), xc.const_data_ptr<scalar_t>() + N * C, buf[0]);
    }
    auto rounds = [&](int64_t t0, int64_t t1, int64_t begin, int64_t end) {  // rows [begin, end), rounds [t0, t1)
      for (int64_t t = t0; t < t1; ++t) {
        propagate_rows<scalar_t>(begin, end, C, ipp, ixp, ev.const_data_ptr<scalar_t>(), sv.const_data_ptr<scalar_t>(),
                                 buf[t % 2], xc.const_data_ptr<scalar_t>(), static_cast<scalar_t>(alpha),
                                 buf[1 - t % 2]);
      }
    };
    const int64_t B = off.size(0) - 1;
    const double image_round_ns = static_cast<double>(N + ix.size(0)) * C * kEdgeNs / std::max<int64_t>(B, 1);
    if (!rows_per_round(B, image_round_ns)) {
      // Edges never leave their image: each image runs all its rounds on one thread, no barrier
      // between rounds (and graphs that fit in cache stay on the calling thread).
      parallel_items(B, image_round_ns * iters, [&](int64_t b) { rounds(0, iters, offp[b], offp[b + 1]); });
    } else {
      // One large graph: its rows are shared among threads, a region (and a barrier) per round.
      const double row_ns = image_round_ns / std::max<int64_t>(N, 1);
      for (int64_t t = 0; t < iters; ++t) {
        parallel_work(N, row_ns, [&](int64_t begin, int64_t end) { rounds(t, t + 1, begin, end); });
      }
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sparse_propagate_backward_cpu(
    const at::Tensor& grad, const at::Tensor& indptr, const at::Tensor& indices, const at::Tensor& node_offset,
    const at::Tensor& edge_value, const at::Tensor& self_value, const at::Tensor& x, int64_t iters, double alpha) {
  const char* op = "sparse_propagate (backward)";
  check_sparse_propagate_args(op, indptr, indices, node_offset, edge_value, self_value, x, iters, alpha);
  SPL_CHECK_VALUE(grad.sizes() == x.sizes() && grad.scalar_type() == x.scalar_type(), op,
                  ": grad must match x in shape and dtype");
  const at::Tensor ip_t = indptr.contiguous(), ix_t = indices.contiguous(), off = node_offset.contiguous();
  const at::Tensor ev_t = edge_value.contiguous(), sv_t = self_value.contiguous(), xc = x.contiguous();
  const int64_t N = xc.size(0), C = xc.size(1), E = ix_t.size(0);
  check_structure(op, ip_t, ix_t, off, N);
  at::Tensor grad_edge = at::zeros({E}, xc.options()), grad_self = at::zeros({N}, xc.options());
  at::Tensor grad_x = at::zeros_like(xc);
  if (iters == 0 || xc.numel() == 0) {
    grad_x.copy_(grad);
    return {grad_edge, grad_self, grad_x};
  }
  const int64_t* ip = ip_t.const_data_ptr<int64_t>();
  const int64_t* ix = ix_t.const_data_ptr<int64_t>();
  // The reverse of every edge.
  at::Tensor rev_t = at::empty({E}, ip_t.options());
  int64_t* rev = rev_t.mutable_data_ptr<int64_t>();
  std::atomic<bool> symmetric{true};
  parallel_work(N, 20.0 * static_cast<double>(E) / std::max<int64_t>(N, 1), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t e = ip[i]; e < ip[i + 1]; ++e) {
        const int64_t j = ix[e];
        const int64_t* found = std::lower_bound(ix + ip[j], ix + ip[j + 1], i);
        if (found == ix + ip[j + 1] || *found != i) {
          symmetric = false;
          rev[e] = e;
        } else {
          rev[e] = found - ix;
        }
      }
    }
  });
  SPL_CHECK_VALUE(symmetric.load(), op, ": ", graph_structure_message(), " (each row sorted)");

  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "sparse_propagate_backward_cpu", [&] {
    const scalar_t* ev = ev_t.const_data_ptr<scalar_t>();
    const scalar_t* sv = sv_t.const_data_ptr<scalar_t>();
    const scalar_t* xp = xc.const_data_ptr<scalar_t>();
    const scalar_t a = static_cast<scalar_t>(alpha), keep = scalar_t(1) - a;
    // states[t] = s^t, t = 0 .. iters - 1.
    at::Tensor states_t = at::empty({iters, N, C}, xc.options());
    scalar_t* states = states_t.mutable_data_ptr<scalar_t>();
    std::copy(xp, xp + N * C, states);
    at::Tensor g_t = grad.contiguous().clone(), gn_t = at::empty_like(xc);
    scalar_t* ge = grad_edge.mutable_data_ptr<scalar_t>();
    scalar_t* gs = grad_self.mutable_data_ptr<scalar_t>();
    scalar_t* dx = grad_x.mutable_data_ptr<scalar_t>();
    auto forward = [&](int64_t t, int64_t begin, int64_t end) {  // s^{t+1} of rows [begin, end)
      propagate_rows<scalar_t>(begin, end, C, ip, ix, ev, sv, states + t * N * C, xp, a, states + (t + 1) * N * C);
    };
    // Round t backwards for rows [begin, end): reads the gradient g (of s^{t+1}), writes gn (of s^t).
    auto backward = [&](int64_t t, int64_t begin, int64_t end) {
      const scalar_t* s = states + t * N * C;
      const scalar_t* g = (iters - 1 - t) % 2 == 0 ? g_t.const_data_ptr<scalar_t>() : gn_t.const_data_ptr<scalar_t>();
      scalar_t* gn = (iters - 1 - t) % 2 == 0 ? gn_t.mutable_data_ptr<scalar_t>() : g_t.mutable_data_ptr<scalar_t>();
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t* gi = g + i * C;
        scalar_t dot = 0;
        for (int64_t c = 0; c < C; ++c) dot += gi[c] * s[i * C + c];
        gs[i] += a * dot;
        scalar_t* out = gn + i * C;
        for (int64_t c = 0; c < C; ++c) out[c] = sv[i] * gi[c];
        for (int64_t e = ip[i]; e < ip[i + 1]; ++e) {
          const scalar_t* sj = s + ix[e] * C;
          const scalar_t* gj = g + ix[e] * C;
          const scalar_t back = ev[rev[e]];
          scalar_t d = 0;
          for (int64_t c = 0; c < C; ++c) {
            d += gi[c] * sj[c];
            out[c] += back * gj[c];
          }
          ge[e] += a * d;
        }
        for (int64_t c = 0; c < C; ++c) {
          dx[i * C + c] += keep * gi[c];
          out[c] *= a;
        }
      }
    };
    const int64_t* offp = off.const_data_ptr<int64_t>();
    const int64_t B = off.size(0) - 1;
    const double image_round_ns = 3.0 * static_cast<double>(N + E) * C * kEdgeNs / std::max<int64_t>(B, 1);
    if (!rows_per_round(B, image_round_ns)) {  // as the forward: each image all its rounds
      parallel_items(B, image_round_ns * iters, [&](int64_t b) {
        for (int64_t t = 0; t + 1 < iters; ++t) forward(t, offp[b], offp[b + 1]);
        for (int64_t t = iters - 1; t >= 0; --t) backward(t, offp[b], offp[b + 1]);
      });
    } else {
      const double row_ns = image_round_ns / std::max<int64_t>(N, 1);
      for (int64_t t = 0; t + 1 < iters; ++t) {
        parallel_work(N, row_ns, [&](int64_t begin, int64_t end) { forward(t, begin, end); });
      }
      for (int64_t t = iters - 1; t >= 0; --t) {
        parallel_work(N, row_ns, [&](int64_t begin, int64_t end) { backward(t, begin, end); });
      }
    }
    // After `iters` rounds the gradient of s^0 is in g_t when iters is even, else in gn_t.
    const scalar_t* g = iters % 2 == 0 ? g_t.const_data_ptr<scalar_t>() : gn_t.const_data_ptr<scalar_t>();
    for (int64_t k = 0; k < N * C; ++k) dx[k] += g[k];
  });
  return {grad_edge, grad_self, grad_x};
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(spl, CPU, m) {
  m.impl("sparse_propagate", &cpu::sparse_propagate_cpu);
  m.impl("_sparse_propagate_backward", &cpu::sparse_propagate_backward_cpu);
}

}  // namespace spl
