// spl::enforce_connectivity: its schema and its C++ API (through the dispatcher, so a call runs the kernel of
// the inputs' device: ops/cpu/enforce_connectivity_kernel.cpp, ops/cuda/enforce_connectivity_kernel.cu).
#include "ops/enforce_connectivity.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace spl {

TORCH_LIBRARY_FRAGMENT(spl, m) {
  m.def("enforce_connectivity(Tensor labels, int min_size) -> (Tensor labels, Tensor counts)");
}

std::tuple<at::Tensor, at::Tensor> enforce_connectivity(const at::Tensor& labels, int64_t min_size) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spl::enforce_connectivity", "")
                       .typed<decltype(enforce_connectivity)>();
  return op.call(labels, min_size);
}

}  // namespace spl
