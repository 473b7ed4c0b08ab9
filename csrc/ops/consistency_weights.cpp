// spl::consistency_weights: its schema and its C++ API (through the dispatcher, so a call runs the kernel of
// the inputs' device: ops/cpu/consistency_weights_kernel.cpp, ops/cuda/consistency_weights_kernel.cu).
#include "ops/consistency_weights.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace spl {

TORCH_LIBRARY_FRAGMENT(spl, m) {
  m.def(
      "consistency_weights(Tensor target, Tensor labels, SymInt num_superpixels, int num_classes, float tau, "
      "float gamma, int ignore_index) -> (Tensor weights, Tensor transformed)");
}

std::tuple<at::Tensor, at::Tensor> consistency_weights(const at::Tensor& target, const at::Tensor& labels,
                                                       int64_t num_superpixels, int64_t num_classes, double tau,
                                                       double gamma, int64_t ignore_index) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spl::consistency_weights", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, c10::SymInt,
                                                                 int64_t, double, double, int64_t)>();
  return op.call(target, labels, c10::SymInt(num_superpixels), num_classes, tau, gamma, ignore_index);
}

}  // namespace spl
