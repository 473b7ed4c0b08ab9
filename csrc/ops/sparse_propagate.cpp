// spl::sparse_propagate: its schema (and its private backward's) and its C++ API (through the dispatcher, so a call
// runs the kernel of the inputs' device: ops/cpu/sparse_propagate_kernel.cpp, ops/cuda/sparse_propagate_kernel.cu).
#include "ops/sparse_propagate.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace spl {

TORCH_LIBRARY_FRAGMENT(spl, m) {
  m.def(
      "sparse_propagate(Tensor indptr, Tensor indices, Tensor node_offset, Tensor edge_value, Tensor self_value, "
      "Tensor x, int iters, float alpha) -> Tensor");
  // Private (no C++ API): called by autograd (spl/ops/sparse_propagate.py) with the forward's inputs.
  m.def(
      "_sparse_propagate_backward(Tensor grad, Tensor indptr, Tensor indices, Tensor node_offset, "
      "Tensor edge_value, Tensor self_value, Tensor x, int iters, float alpha) "
      "-> (Tensor grad_edge_value, Tensor grad_self_value, Tensor grad_x)");
}

at::Tensor sparse_propagate(const at::Tensor& indptr, const at::Tensor& indices, const at::Tensor& node_offset,
                            const at::Tensor& edge_value, const at::Tensor& self_value, const at::Tensor& x,
                            int64_t iters, double alpha) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("spl::sparse_propagate", "").typed<decltype(sparse_propagate)>();
  return op.call(indptr, indices, node_offset, edge_value, self_value, x, iters, alpha);
}

}  // namespace spl
