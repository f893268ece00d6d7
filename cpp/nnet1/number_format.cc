#include "nnet1/number_format.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

namespace svd {
ParseStatus parse_float_slow(const char* p, const char* e, float* out, const char** end) {
  // The extent of the number as istream >> float would take it.
  const char* q = p;
  if (q < e && *q == '-') ++q;
  const char* s = q;
  while (q < e && static_cast<unsigned>(*q - '0') < 10u) ++q;
  bool any = q > s;
  if (q < e && *q == '.') {
    const char* f = ++q;
    while (q < e && static_cast<unsigned>(*q - '0') < 10u) ++q;
    any = any || q > f;
  }
  if (!any) return ParseStatus::NotANumber;
  if (q < e && (*q == 'e' || *q == 'E')) {
    const char* r = q + 1;
    if (r < e && (*r == '+' || *r == '-')) ++r;
    if (r < e && static_cast<unsigned>(*r - '0') < 10u) {
      while (r < e && static_cast<unsigned>(*r - '0') < 10u) ++r;
      q = r;
    }
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
