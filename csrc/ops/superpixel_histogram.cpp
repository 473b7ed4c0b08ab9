// spl::superpixel_histogram: its schema and its C++ API (through the dispatcher, so a call runs the kernel of
// the inputs' device: ops/cpu/superpixel_histogram_kernel.cpp, ops/cuda/superpixel_histogram_kernel.cu).
#include "ops/superpixel_histogram.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace spl {

TORCH_LIBRARY_FRAGMENT(spl, m) {
  m.def(
      "superpixel_histogram(Tensor target, Tensor labels, SymInt num_superpixels, int num_classes, int ignore_index) "
      "-> Tensor");
}

at::Tensor superpixel_histogram(const at::Tensor& target, const at::Tensor& labels, int64_t num_superpixels,
                                int64_t num_classes, int64_t ignore_index) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spl::superpixel_histogram", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, c10::SymInt, int64_t, int64_t)>();
  return op.call(target, labels, c10::SymInt(num_superpixels), num_classes, ignore_index);
}

}  // namespace spl
