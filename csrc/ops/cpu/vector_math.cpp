// Vectorised elementwise math for the CPU kernels (see vector_math.h).
#include "ops/cpu/vector_math.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "ops/cpu/target_clones.h"

namespace spl {
namespace cpu {

// out[i] = log(in[i]) for float32, in a loop the compiler vectorises (glibc's logf is a call per
// value): the mantissa's logarithm by the polynomial of Cephes' logf, plus the exponent times
// log 2 in two parts. At most 1 ulp from logf over normal and subnormal inputs; 0 -> -inf,
// negative or NaN -> NaN, +inf -> +inf. Plain float arithmetic (no FMA contraction), so every
// clone gives the same bits.
SPL_TARGET_CLONES void log_array(const float* __restrict in, float* __restrict out, int64_t n) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) {
    const float x = in[i];
    const bool tiny = x < 1.17549435e-38f;  // subnormal: scaled by 2^23 into the normal range
    const float xs = tiny ? x * 8388608.0f : x;
    int32_t bits;
    std::memcpy(&bits, &xs, sizeof bits);
    int32_t e = ((bits >> 23) & 0xff) - 126 - (tiny ? 23 : 0);
    const int32_t mantissa_bits = (bits & 0x007fffff) | 0x3f000000;  // x = m * 2^e, m in [0.5, 1)
    float m;
    std::memcpy(&m, &mantissa_bits, sizeof m);
    const bool low = m < 0.707106781186547524f;  // m in [sqrt(1/2), sqrt(2)) after this
    e -= low ? 1 : 0;
    m = low ? (m + m) - 1.0f : m - 1.0f;
    const float z = m * m;
    float y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    const float fe = static_cast<float>(e);
    y += -2.12194440e-4f * fe;  // log 2 = 0.693359375 - 2.12194440e-4 (the first part exact)
    y += -0.5f * z;
    float r = m + y;
    r += 0.693359375f * fe;
    r = x > 0.0f ? r : (x == 0.0f ? -kInf : std::numeric_limits<float>::quiet_NaN());
    out[i] = x < kInf ? r : x;
  }
}

void log_array(const double* in, double* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = std::log(in[i]);
}

}  // namespace cpu
}  // namespace spl
