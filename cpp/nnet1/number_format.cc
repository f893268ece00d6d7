#include "nnet1/number_format.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

namespace svd {
namespace {

// Powers of ten that are exact in float (5^10 < 2^24).
constexpr float kPow10f[] = {1e0f, 1e1f, 1e2f, 1e3f, 1e4f, 1e5f,
                             1e6f, 1e7f, 1e8f, 1e9f, 1e10f};

inline bool is_digit(char c) { return static_cast<unsigned>(c - '0') < 10u; }

}  // namespace

ParseStatus parse_float(const char* p, const char* e, float* out, const char** end) {
  const char* s = p;
  bool neg = false;
  if (s < e && *s == '-') {
    neg = true;
    ++s;
  }
  // Fast path (Clinger): mantissa and power of ten both exact in float, so a
  // single correctly rounded multiply/divide gives the correctly rounded result.
  uint64_t m = 0;
  int digits = 0, exp10 = 0;
  const char* q = s;
  while (q < e && is_digit(*q)) {
    if (digits < 19) {
      m = m * 10 + static_cast<unsigned>(*q - '0');
      if (m) ++digits;
    } else {
      ++exp10;
    }
    ++q;
  }
  bool any = q > s;
  if (q < e && *q == '.') {
    ++q;
    const char* f = q;
    while (q < e && is_digit(*q)) {
      if (digits < 19) {
        m = m * 10 + static_cast<unsigned>(*q - '0');
        if (m) ++digits;
        --exp10;
      }
      ++q;
    }
    any = any || q > f;
  }
  if (!any) return ParseStatus::NotANumber;
  bool fast = true;
  if (q < e && (*q == 'e' || *q == 'E')) {
    const char* r = q + 1;
    bool eneg = false;
    if (r < e && (*r == '+' || *r == '-')) eneg = *r++ == '-';
    if (r < e && is_digit(*r)) {
      int ev = 0;
      while (r < e && is_digit(*r)) {
        if (ev < 100000) ev = ev * 10 + (*r - '0');
        ++r;
      }
      exp10 += eneg ? -ev : ev;
      q = r;
    }
  }
  if (digits > 19) fast = false;
  if (fast && m <= (1u << 24) && exp10 >= -10 && exp10 <= 10) {
    float v = static_cast<float>(m);
    v = exp10 < 0 ? v / kPow10f[-exp10] : v * kPow10f[exp10];
    *out = neg ? -v : v;
    *end = q;
    return ParseStatus::Ok;
  }
  float v = 0.f;
  auto res = std::from_chars(p, q, v);
  if (res.ec == std::errc::result_out_of_range) {
    // from_chars leaves v alone on underflow and overflow alike; strtof tells which.
    std::string tmp(p, q);
    double d = std::strtod(tmp.c_str(), nullptr);
    if (std::fabs(d) > 3.4028235677973366e38) return ParseStatus::OutOfRange;
    v = static_cast<float>(std::strtof(tmp.c_str(), nullptr));
  } else if (res.ec != std::errc() || res.ptr != q) {
    return ParseStatus::NotANumber;
  }
  *out = v;
  *end = q;
  return ParseStatus::Ok;
}

ParseStatus parse_int(const char* p, const char* e, int32_t* out, const char** end) {
  const char* s = p;
  if (s < e && *s == '+') ++s;  // istream >> int accepts a '+'
  auto res = std::from_chars(s, e, *out);
  if (res.ec == std::errc::result_out_of_range) return ParseStatus::OutOfRange;
  if (res.ec != std::errc()) return ParseStatus::NotANumber;
  *end = res.ptr;
  return ParseStatus::Ok;
}

size_t format_float(char* buf, float v, Digits digits) {
  std::to_chars_result r =
      digits == Digits::Shortest
          ? std::to_chars(buf, buf + 32, v)
          : std::to_chars(buf, buf + 32, v, std::chars_format::general, 7);
  return static_cast<size_t>(r.ptr - buf);
}

size_t format_int(char* buf, int64_t v) {
  return static_cast<size_t>(std::to_chars(buf, buf + 24, v).ptr - buf);
}

}  // namespace svd
