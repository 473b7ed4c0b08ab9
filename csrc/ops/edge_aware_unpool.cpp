// spl::edge_aware_unpool: its schema and its C++ API (through the dispatcher, so a call runs the kernel of
// the inputs' device: ops/cpu/edge_aware_unpool_kernel.cpp, ops/cuda/edge_aware_unpool_kernel.cu).
#include "ops/edge_aware_unpool.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace spl {

TORCH_LIBRARY_FRAGMENT(spl, m) {
  m.def(
      "edge_aware_unpool(Tensor features, Tensor labels, Tensor guide, Tensor guide_means, float sigma, int radius) "
      "-> Tensor");
}

at::Tensor edge_aware_unpool(const at::Tensor& features, const at::Tensor& labels, const at::Tensor& guide,
                             const at::Tensor& guide_means, double sigma, int64_t radius) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("spl::edge_aware_unpool", "").typed<decltype(edge_aware_unpool)>();
  return op.call(features, labels, guide, guide_means, sigma, radius);
}

}  // namespace spl
