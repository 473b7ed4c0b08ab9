// The spl extension: the Python module stub and the library that owns the `spl` namespace.
//
// Every op is found the same way: csrc/ops/<op>.h (what the CPU and CUDA kernels share: the checks,
// the per-element rule, the C++ API's declaration), csrc/ops/<op>.cpp (the schema, a
// TORCH_LIBRARY_FRAGMENT, and the C++ API), csrc/ops/cpu/<op>_kernel.cpp and
// csrc/ops/cuda/<op>_kernel.cu (the kernels, registered per backend, so a build without CUDA simply
// has no CUDA kernels), and spl/ops/<op>.py (the Python function, the autograd formula, the fake
// kernel). Private ops (names starting with "_": backwards, ASAM's unary) have no C++ API.
#include <torch/library.h>

#ifdef WITH_CUDA
#include <cuda_runtime_api.h>
#endif

// `import spl._C` only has to load this library so the registrations run; the module has no
// Python functions of its own. (PyMODINIT_FUNC exports the symbol despite -fvisibility=hidden.)
// The CMake build (a plain libtorch library, no Python) leaves it out.
#ifndef SPL_NO_PYTHON_MODULE
#include <Python.h>
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
#endif

namespace spl {
namespace {

// CUDA runtime version the extension was compiled with (e.g. 13000), or 0 for a CPU-only build.
int64_t cuda_version() {
#ifdef WITH_CUDA
  return CUDART_VERSION;
#else
  return 0;
#endif
}

}  // namespace

TORCH_LIBRARY(spl, m) { m.def("_cuda_version() -> int", &cuda_version); }

}  // namespace spl
