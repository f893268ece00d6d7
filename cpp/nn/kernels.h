// Small elementwise building blocks shared by the forward and training code.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "util/threads.h"

namespace svd {

// exp(x) for float, ~1 ulp on [-87, 88], written so compilers vectorise it:
// 2^(x log2 e) split into an integer power (exponent bits) and a degree-6
// polynomial on the remainder.
inline float fast_exp(float x) {
  x = std::min(88.0f, std::max(-87.3365447504f, x));
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

// Splits rows into blocks across the core's threads when the work is large
// enough to pay for it; f(begin, end) runs on each block.
template <class F>
inline void for_rows(int64_t rows, int64_t cols, F&& f) {
  const int64_t work = rows * std::max<int64_t>(cols, 1);
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(num_threads(), work >> 15));
  parallel_for(blocks, [&](int64_t b) { f(rows * b / blocks, rows * (b + 1) / blocks); });
}

}  // namespace svd
