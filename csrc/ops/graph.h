// Superpixel graphs: superpixel_adjacency and sparse_propagate.
// Argument checks shared by the CPU and CUDA kernels.
//
// A batch's graph is the disjoint union of per-image graphs in CSR form: node_offset [B + 1]
// (image b owns nodes node_offset[b] .. node_offset[b + 1] - 1), indptr [N + 1], indices [E] (global
// node ids, each row sorted, no self loops, symmetric structure), border [E] (4-neighbour pixel pairs
// along the shared border of the two superpixels).
#pragma once

#include "ops/check.h"
#include <ATen/core/Tensor.h>

namespace spl {

inline void check_node_offset(const char* op, const at::Tensor& node_offset, const at::Device& device) {
  SPL_CHECK_TYPE(node_offset.scalar_type() == at::kLong, op, ": node_offset must be an int64 tensor, got ",
                   node_offset.scalar_type());
  SPL_CHECK_VALUE(node_offset.dim() == 1 && node_offset.size(0) >= 1, op,
                    ": node_offset must have shape [B + 1], got ", node_offset.sizes());
  SPL_CHECK_VALUE(node_offset.device() == device, op, ": node_offset is on ", node_offset.device(),
                    " but the labels / features are on ", device);
}

inline void check_adjacency_args(const at::Tensor& labels, const at::Tensor& node_offset) {
  const char* op = "superpixel_adjacency";
  SPL_CHECK_TYPE(labels.scalar_type() == at::kLong, op, ": labels must be an int64 tensor, got ",
                   labels.scalar_type());
  SPL_CHECK_VALUE(labels.dim() == 3, op, ": labels must have shape [B, H, W], got ", labels.sizes());
  check_node_offset(op, node_offset, labels.device());
  SPL_CHECK_VALUE(node_offset.size(0) == labels.size(0) + 1, op, ": node_offset must have B + 1 = ",
                    labels.size(0) + 1, " entries, got ", node_offset.size(0));
}

// The transition matrix T of sparse_propagate: off-diagonal values per CSR edge, diagonal per node.
inline void check_propagate_args(const char* op, const at::Tensor& indptr, const at::Tensor& indices,
                                 const at::Tensor& node_offset, const at::Tensor& edge_value,
                                 const at::Tensor& self_value, const at::Tensor& x, int64_t iters, double alpha) {
  const auto t = x.scalar_type();
  SPL_CHECK_TYPE(t == at::kFloat || t == at::kDouble, op, ": x must be float32 or float64, got ", t);
  SPL_CHECK_VALUE(x.dim() == 2, op, ": x must have shape [N, C], got ", x.sizes());
  const int64_t N = x.size(0);
  const at::Device device = x.device();
  SPL_CHECK_TYPE(indptr.scalar_type() == at::kLong && indices.scalar_type() == at::kLong, op,
                   ": indptr and indices must be int64 tensors");
  SPL_CHECK_VALUE(indptr.dim() == 1 && indptr.size(0) == N + 1, op, ": indptr must have shape [N + 1] = [",
                    N + 1, "], got ", indptr.sizes());
  SPL_CHECK_VALUE(indices.dim() == 1, op, ": indices must be 1-D, got ", indices.sizes());
  check_node_offset(op, node_offset, device);
  SPL_CHECK_VALUE(edge_value.dim() == 1 && edge_value.size(0) == indices.size(0), op,
                    ": edge values must have shape [E] = [", indices.size(0), "], got ", edge_value.sizes());
  SPL_CHECK_VALUE(self_value.dim() == 1 && self_value.size(0) == N, op, ": self values must have shape [N] = [",
                    N, "], got ", self_value.sizes());
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
