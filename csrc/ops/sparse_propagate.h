// spl::sparse_propagate: iters rounds of s <- alpha * T s + (1 - alpha) * x over a superpixel graph
// (the batch CSR of ops/superpixel_adjacency.h), T = off-diagonal values per CSR edge + a diagonal;
// and its private backward spl::_sparse_propagate_backward. The checks shared by the CPU and CUDA
// kernels (of both).
#pragma once

#include "ops/check.h"
#include <ATen/core/Tensor.h>

namespace spl {

// C++ API (through the dispatcher). Returns [N, C], the dtype of x (float32 or float64).
at::Tensor sparse_propagate(const at::Tensor& indptr, const at::Tensor& indices, const at::Tensor& node_offset,
                            const at::Tensor& edge_value, const at::Tensor& self_value, const at::Tensor& x,
                            int64_t iters, double alpha);

// The transition matrix T of sparse_propagate: off-diagonal values per CSR edge, diagonal per node.
inline void check_sparse_propagate_args(const char* op, const at::Tensor& indptr, const at::Tensor& indices,
                                        const at::Tensor& node_offset, const at::Tensor& edge_value,
                                        const at::Tensor& self_value, const at::Tensor& x, int64_t iters,
                                        double alpha) {
  const auto t = x.scalar_type();
  SPL_CHECK_TYPE(t == at::kFloat || t == at::kDouble, op, ": x must be float32 or float64, got ", t);
  SPL_CHECK_VALUE(x.dim() == 2, op, ": x must have shape [N, C], got ", x.sizes());
  const int64_t N = x.size(0);
  const at::Device device = x.device();
  SPL_CHECK_TYPE(indptr.scalar_type() == at::kLong && indices.scalar_type() == at::kLong, op,
                 ": indptr and indices must be int64 tensors");
  SPL_CHECK_VALUE(indptr.dim() == 1 && indptr.size(0) == N + 1, op, ": indptr must have shape [N + 1] = [", N + 1,
                  "], got ", indptr.sizes());
  SPL_CHECK_VALUE(indices.dim() == 1, op, ": indices must be 1-D, got ", indices.sizes());
  check_node_offset(op, node_offset, device);
  SPL_CHECK_VALUE(edge_value.dim() == 1 && edge_value.size(0) == indices.size(0), op,
                  ": edge values must have shape [E] = [", indices.size(0), "], got ", edge_value.sizes());
  SPL_CHECK_VALUE(self_value.dim() == 1 && self_value.size(0) == N, op, ": self values must have shape [N] = [", N,
                  "], got ", self_value.sizes());
  SPL_CHECK_TYPE(edge_value.scalar_type() == t && self_value.scalar_type() == t, op,
                 ": edge and self values must have the dtype of x (", t, ")");
  for (const at::Tensor* a : {&indptr, &indices, &edge_value, &self_value}) {
    SPL_CHECK_VALUE(a->device() == device, op, ": every tensor must be on ", device, ", got one on ", a->device());
  }
  SPL_CHECK_VALUE(iters >= 0, op, ": iters must be >= 0, got ", iters);
  SPL_CHECK_VALUE(alpha >= 0.0 && alpha <= 1.0, op, ": alpha must be in [0, 1], got ", alpha);
}

inline const char* graph_structure_message() {
  return "the graph must be a valid batch CSR: indptr non-decreasing from 0 to E, node_offset non-decreasing from "
         "0 to N, every edge inside its own image, and the structure symmetric";
}

}  // namespace spl
