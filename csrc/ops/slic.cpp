// spl::slic: its schema and its C++ API (through the dispatcher, so a call runs the kernel of
// the inputs' device: ops/cpu/slic_kernel.cpp, ops/cuda/slic_kernel.cu).
#include "ops/slic.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace spl {

TORCH_LIBRARY_FRAGMENT(spl, m) {
  m.def(
      "slic(Tensor image, int n_segments, float compactness, int max_num_iter, bool convert2lab, "
      "bool enforce_connectivity, float min_size_factor, float[] spacing, Tensor? mask) "
      "-> (Tensor labels, Tensor counts)");
}

std::tuple<at::Tensor, at::Tensor> slic(const at::Tensor& image, int64_t n_segments, double compactness,
                                        int64_t max_num_iter, bool convert2lab, bool enforce_connectivity,
                                        double min_size_factor, at::ArrayRef<double> spacing,
                                        const std::optional<at::Tensor>& mask) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("spl::slic", "").typed<decltype(slic)>();
  return op.call(image, n_segments, compactness, max_num_iter, convert2lab, enforce_connectivity, min_size_factor,
                 spacing, mask);
}

}  // namespace spl
