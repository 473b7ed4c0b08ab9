#include "ops/connectivity.h"

#include <ATen/core/dispatch/Dispatcher.h>

namespace spl {

std::tuple<at::Tensor, at::Tensor> enforce_connectivity(const at::Tensor& labels, int64_t min_size) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spl::enforce_connectivity", "")
                       .typed<decltype(enforce_connectivity)>();
  return op.call(labels, min_size);
}

}  // namespace spl
