// spl::superpixel_unpool: its schema and its C++ API (through the dispatcher, so a call runs the kernel of
// the inputs' device: ops/cpu/superpixel_unpool_kernel.cpp, ops/cuda/superpixel_unpool_kernel.cu).
#include "ops/superpixel_unpool.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace spl {

TORCH_LIBRARY_FRAGMENT(spl, m) { m.def("superpixel_unpool(Tensor features, Tensor labels) -> Tensor"); }

at::Tensor superpixel_unpool(const at::Tensor& features, const at::Tensor& labels) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("spl::superpixel_unpool", "").typed<decltype(superpixel_unpool)>();
  return op.call(features, labels);
}

}  // namespace spl
