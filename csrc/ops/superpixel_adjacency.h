// spl::superpixel_adjacency: the graph of adjacent superpixels of a batch of label maps (4-neighbour
// pixel pairs across a border). The checks shared by the CPU and CUDA kernels.
//
// A batch's graph is the disjoint union of per-image graphs in CSR form: node_offset [B + 1]
// (image b owns nodes node_offset[b] .. node_offset[b + 1] - 1), indptr [N + 1], indices [E] (global
// node ids, each row sorted, no self loops, symmetric structure), border [E] (4-neighbour pixel pairs
// along the shared border of the two superpixels).
#pragma once

#include "ops/check.h"
#include <ATen/core/Tensor.h>

#include <tuple>

namespace spl {

// C++ API (through the dispatcher). labels int64 [B, H, W] in [-1, K_b), node_offset [B + 1] (the
// prefix sums of the K_b). Returns (indptr [N + 1], indices [E], border [E]).
std::tuple<at::Tensor, at::Tensor, at::Tensor> superpixel_adjacency(const at::Tensor& labels,
                                                                    const at::Tensor& node_offset);

inline void check_superpixel_adjacency_args(const at::Tensor& labels, const at::Tensor& node_offset) {
  const char* op = "superpixel_adjacency";
  SPL_CHECK_TYPE(labels.scalar_type() == at::kLong, op, ": labels must be an int64 tensor, got ", labels.scalar_type());
  SPL_CHECK_VALUE(labels.dim() == 3, op, ": labels must have shape [B, H, W], got ", labels.sizes());
  check_node_offset(op, node_offset, labels.device());
  SPL_CHECK_VALUE(node_offset.size(0) == labels.size(0) + 1, op, ": node_offset must have B + 1 = ", labels.size(0) + 1,
                  " entries, got ", node_offset.size(0));
}

}  // namespace spl
