// spl::superpixel_pool: its schema (and its private backward's) and its C++ API (through the dispatcher, so a call runs
// the kernel of the inputs' device: ops/cpu/superpixel_pool_kernel.cpp, ops/cuda/superpixel_pool_kernel.cu).
#include "ops/superpixel_pool.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace spl {

TORCH_LIBRARY_FRAGMENT(spl, m) {
  // aux: counts [B, K] (int64) for "sum"/"mean", the argmax pixel [B, C, K] (int64, -1: empty) for "max".
  m.def("superpixel_pool(Tensor x, Tensor labels, SymInt num_superpixels, str reduce) -> (Tensor output, Tensor aux)");
  // Private (no C++ API): called by autograd (spl/ops/superpixel_pool.py) with the forward's labels and aux.
  m.def(
      "_superpixel_pool_backward(Tensor grad, Tensor labels, Tensor aux, SymInt height, SymInt width, str reduce) "
      "-> Tensor");
}

std::tuple<at::Tensor, at::Tensor> superpixel_pool(const at::Tensor& x, const at::Tensor& labels,
                                                   int64_t num_superpixels, c10::string_view reduce) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spl::superpixel_pool", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, c10::SymInt,
                                                                 c10::string_view)>();
  return op.call(x, labels, c10::SymInt(num_superpixels), reduce);
}

}  // namespace spl
