// Vectorised elementwise math for the CPU kernels.
#pragma once

#include <cstdint>

namespace spl {
namespace cpu {

// out[i] = log(in[i]), n values. float32: a loop the compiler vectorises (AVX-512 / AVX2 clones),
// within 1 ulp of logf, with logf's special values (0 -> -inf, negative or NaN -> NaN, +inf -> +inf,
// subnormals exact to 1 ulp too); the same bits in every clone. float64: std::log.
void log_array(const float* in, float* out, int64_t n);
void log_array(const double* in, double* out, int64_t n);

}  // namespace cpu
}  // namespace spl
