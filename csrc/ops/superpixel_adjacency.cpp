// spl::superpixel_adjacency: its schema and its C++ API (through the dispatcher, so a call runs the kernel of
// the inputs' device: ops/cpu/superpixel_adjacency_kernel.cpp, ops/cuda/superpixel_adjacency_kernel.cu).
#include "ops/superpixel_adjacency.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace spl {

TORCH_LIBRARY_FRAGMENT(spl, m) {
  m.def("superpixel_adjacency(Tensor labels, Tensor node_offset) -> (Tensor indptr, Tensor indices, Tensor border)");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> superpixel_adjacency(const at::Tensor& labels,
                                                                    const at::Tensor& node_offset) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spl::superpixel_adjacency", "")
                       .typed<decltype(superpixel_adjacency)>();
  return op.call(labels, node_offset);
}

}  // namespace spl
