#include "nn/kernels.h"

#include <cmath>

#include "util/cpu.h"

// A kernel's body is inlined into both of its variants: always_inline makes
// a body that could not be inlined a build error, not a v3 variant that
// silently calls the baseline code.
#if defined(__GNUC__) || defined(__clang__)
#define SVD_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define SVD_ALWAYS_INLINE inline
#endif

namespace svd {
namespace {

// log(x) for float x > 0 (Cephes' logf polynomial), written to vectorise.
// x is clamped to the smallest normal float, so log(0) is finite (-87.3).
inline float fast_log(float x) {
  x = std::max(x, 1.17549435e-38f);
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  float e = static_cast<float>(static_cast<int32_t>((bits >> 23) & 0xff) - 127);
  bits = (bits & 0x007fffffu) | 0x3f800000u;  // mantissa in [1, 2)
  float m;
  std::memcpy(&m, &bits, 4);
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1.f : e;
  const float f = m - 1.f, z = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return f + y + 0.693359375f * e;
}

inline float max_floats(const float* p, int64_t n) {
  float acc[8];
  for (int k = 0; k < 8; ++k) acc[k] = p[0];
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] = acc[k] > p[i + k] ? acc[k] : p[i + k];
  float m = acc[0];
  for (int k = 1; k < 8; ++k) m = m > acc[k] ? m : acc[k];
  for (; i < n; ++i) m = m > p[i] ? m : p[i];
  return m;
}

SVD_ALWAYS_INLINE void sigmoid_span_body(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = 1.f / (1.f + fast_exp(-x[i]));
}

SVD_ALWAYS_INLINE void tanh_span_body(const float* x, float* y, int64_t n) {
  // tanh(x) = 1 - 2 / (exp(2x) + 1); exact at the saturated ends.
  for (int64_t i = 0; i < n; ++i) y[i] = 1.f - 2.f / (fast_exp(2.f * x[i]) + 1.f);
}

SVD_ALWAYS_INLINE void softmax_span_body(const float* x, float* y, int64_t n) {
  const float m = max_floats(x, n);
  for (int64_t j = 0; j < n; ++j) y[j] = fast_exp(x[j] - m);
  const float inv = 1.f / sum_floats(y, n);
  for (int64_t j = 0; j < n; ++j) y[j] *= inv;
}

SVD_ALWAYS_INLINE int64_t argmax_span_body(const float* p, int64_t n) {
  const float m = max_floats(p, n);
  for (int64_t j = 0; j < n; ++j)
    if (p[j] == m) return j;
  return 0;  // NaNs only
}

SVD_ALWAYS_INLINE float exp_sum_span_body(const float* z, float m, float scale, float* e, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const float v = (z[j] - m) * scale;
    e[j] = v < kExpFloor ? 0.f : fast_exp(v);
  }
  return sum_floats(e, n);
}

SVD_ALWAYS_INLINE float kl_span_body(const float* q, const float* z, float m, float scale, float log_s, int64_t n) {
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; ++k)
      acc[k] += q[j + k] * (fast_log(q[j + k]) - ((z[j + k] - m) * scale - log_s));
  float s = 0.f;
  for (; j < n; ++j) s += q[j] * (fast_log(q[j]) - ((z[j] - m) * scale - log_s));
  return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

SVD_ALWAYS_INLINE void soft_grad_span_body(const float* e, float inv_s, const float* q, float a, float* g, int64_t n) {
  for (int64_t j = 0; j < n; ++j) g[j] = a * (e[j] * inv_s - q[j]);
}

SVD_ALWAYS_INLINE void sigmoid_grad_span_body(const float* y, float* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] *= y[i] * (1.f - y[i]);
}

SVD_ALWAYS_INLINE void tanh_grad_span_body(const float* y, float* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] *= 1.f - y[i] * y[i];
}

SVD_ALWAYS_INLINE void relu_grad_span_body(const float* y, float* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = y[i] > 0.f ? d[i] : 0.f;
}

}  // namespace

// Each kernel: its body compiled for x86-64-v3 as <name>_v3 and, inlined, into
// the public function, which hands the call to <name>_v3 when simd_level()
// says so: one cached test per call, outside the loops.
#if SVD_HAVE_X86_64_V3
#define SVD_KERNEL(ret, name, params, args)                              \
  namespace {                                                            \
  SVD_TARGET_X86_64_V3 ret name##_v3 params { return name##_body args; } \
  }                                                                      \
  ret name params {                                                      \
    if (simd_level() == SimdLevel::X86_64_V3) return name##_v3 args;     \
    return name##_body args;                                             \
  }
#else
#define SVD_KERNEL(ret, name, params, args) \
  ret name params { return name##_body args; }
#endif

SVD_KERNEL(void, sigmoid_span, (const float* x, float* y, int64_t n), (x, y, n))
SVD_KERNEL(void, tanh_span, (const float* x, float* y, int64_t n), (x, y, n))
SVD_KERNEL(void, softmax_span, (const float* x, float* y, int64_t n), (x, y, n))
SVD_KERNEL(int64_t, argmax_span, (const float* p, int64_t n), (p, n))
SVD_KERNEL(float, exp_sum_span, (const float* z, float m, float scale, float* e, int64_t n), (z, m, scale, e, n))
SVD_KERNEL(float, kl_span, (const float* q, const float* z, float m, float scale, float log_s, int64_t n),
           (q, z, m, scale, log_s, n))
SVD_KERNEL(void, soft_grad_span, (const float* e, float inv_s, const float* q, float a, float* g, int64_t n),
           (e, inv_s, q, a, g, n))
SVD_KERNEL(void, sigmoid_grad_span, (const float* y, float* d, int64_t n), (y, d, n))
SVD_KERNEL(void, tanh_grad_span, (const float* y, float* d, int64_t n), (y, d, n))
SVD_KERNEL(void, relu_grad_span, (const float* y, float* d, int64_t n), (y, d, n))

}  // namespace svd
