// Small elementwise building blocks shared by the forward and training code.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "util/threads.h"

namespace svd {

// exp(x) for float, ~1 ulp on [-86, 88], written so compilers vectorise it:
// 2^(x log2 e) split into an integer power (exponent bits) and a degree-6
// polynomial on the remainder. Below -86 it returns exp(-86) = 4.5e-38: never
// a denormal (denormal arithmetic is 100x slower on x86).
inline float fast_exp(float x) {
  x = x > 88.0f ? 88.0f : x;  // written so that a nan stays a nan (std::min/max would clamp it)
  x = x < -86.0f ? -86.0f : x;
  const float t = x * 1.44269504088896341f;
  const float fi = (t + 12582912.f) - 12582912.f;  // round to nearest, SSE2-friendly
  const float f = x - fi * 0.693145751953125f - fi * 1.428606765330187045e-06f;
  float p = 1.9875691500e-4f;
  p = p * f + 1.3981999507e-3f;
  p = p * f + 8.3334519073e-3f;
  p = p * f + 4.1665795894e-2f;
  p = p * f + 1.6666665459e-1f;
  p = p * f + 5.0000001201e-1f;
  p = p * f * f + f + 1.0f;
  int32_t e = static_cast<int32_t>(fi) + 127;
  float scale;
  uint32_t bits = static_cast<uint32_t>(std::max(1, std::min(254, e))) << 23;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

// Sum of n floats with eight independent partial sums: the compiler can
// vectorise it without -ffast-math (a plain `s += p[i]` loop stays scalar).
inline float sum_floats(const float* p, int64_t n) {
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += p[i + k];
  float s = 0.f;
  for (; i < n; ++i) s += p[i];
  return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// Splits rows into blocks across the core's threads when the work is large
// enough to pay for it; f(begin, end) runs on each block.
template <class F>
inline void for_rows(int64_t rows, int64_t cols, F&& f) {
  const int64_t work = rows * std::max<int64_t>(cols, 1);
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(num_threads(), work >> 17));
  parallel_for(blocks, [&](int64_t b) { f(rows * b / blocks, rows * (b + 1) / blocks); });
}

// The span kernels below are compiled for the baseline and for x86-64-v3
// (AVX2 + FMA); each call takes the variant simd_level() (util/cpu.h) picks.
// Spans: n contiguous floats, one thread. y may equal x unless stated.
void sigmoid_span(const float* x, float* y, int64_t n);
void tanh_span(const float* x, float* y, int64_t n);
// y = softmax(x) over one row of n.
void softmax_span(const float* x, float* y, int64_t n);
// Index of the first largest element (n >= 1).
int64_t argmax_span(const float* p, int64_t n);
// Below this exponent exp_sum_span gives exactly 0 (e^-69 = 1e-30): its
// results, even divided by a partition sum, stay clear of denormals.
constexpr float kExpFloor = -69.f;
// e_j = exp((z_j - m) * scale) (0 below kExpFloor); returns the sum of e.
float exp_sum_span(const float* z, float m, float scale, float* e, int64_t n);
// sum_j q_j (log q_j - ((z_j - m) * scale - log_s)): KL(q || softmax(z * scale)) with
// m the row maximum and log_s the log of the partition sum.
float kl_span(const float* q, const float* z, float m, float scale, float log_s, int64_t n);
// g_j = a * (e_j * inv_s - q_j)
void soft_grad_span(const float* e, float inv_s, const float* q, float a, float* g, int64_t n);
// Backward through activations, in place on the gradient d (y: the outputs).
void sigmoid_grad_span(const float* y, float* d, int64_t n);
void tanh_grad_span(const float* y, float* d, int64_t n);
void relu_grad_span(const float* y, float* d, int64_t n);

}  // namespace svd
