#include "nnet1/number_format.h"

#include <charconv>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
// Checks svd::parse_float (the fast text parser) against std::from_chars<float>
// (correctly rounded) on random and adversarial decimal strings: float32 bit
// patterns printed shortest, weight-like values, random digit strings with
// exponents, and values next to float rounding midpoints with 9-15 digits.
// Built and run by tests/test_number_parser.py; by hand:
//   g++ -O2 -std=c++17 -Icpp fuzz/parse_float_check.cc cpp/nnet1/number_format.cc -o /tmp/pfc && /tmp/pfc 30000000
#include <cmath>
#include <cstdlib>

int main(int argc, char** argv) {
  const long cases = argc > 1 ? std::atol(argv[1]) : 3000000;
  std::mt19937_64 rng(42);
  long bad = 0, fast = 0, total = 0;
  char buf[128];
  for (long it = 0; it < cases; ++it) {
    int len;
    int mode = it % 5;
    if (mode == 0) {  // random float32 bits, shortest
      uint32_t u = static_cast<uint32_t>(rng());
      float f; std::memcpy(&f, &u, 4);
      if (!std::isfinite(f)) continue;
      auto r = std::to_chars(buf, buf + 64, f); len = r.ptr - buf;
    } else if (mode == 1) {  // weights-like: N(0, 0.05) shortest and %.9g
      std::normal_distribution<float> nd(0.f, 0.05f);
      float f = nd(rng);
      if (it & 4) { auto r = std::to_chars(buf, buf + 64, f); len = r.ptr - buf; }
      else len = std::snprintf(buf, 64, "%.9g", f);
    } else if (mode == 4) {  // near float rounding midpoints, 9-15 significant digits
      std::normal_distribution<float> nd(0.f, 0.05f);
      float f = nd(rng);
      double mid = (static_cast<double>(f) + static_cast<double>(std::nextafter(f, 1.f))) / 2;
      int prec = 9 + int(rng() % 7);
      len = std::snprintf(buf, 64, "%.*f", prec + 2, mid);
      if (rng() & 1) len = std::snprintf(buf, 64, "%.*g", prec, mid);
    } else {  // random digit strings: up to 8 int digits, up to 16 fraction digits, maybe exponent
      int n = rng() % 9, fr = rng() % 17;
      std::string s;
      if (rng() & 1) s += '-';
      for (int i = 0; i < n; ++i) s += char('0' + rng() % 10);
      if (n == 0) s += '0';
      if (fr) { s += '.'; for (int i = 0; i < fr; ++i) s += char('0' + rng() % 10); }
      if (mode == 3 && (rng() % 3 == 0)) { s += 'e'; int ev = int(rng() % 25) - 12; s += std::to_string(ev); }
      len = std::snprintf(buf, 64, "%s", s.c_str());
    }
    std::memset(buf + len, ' ', 64);
    buf[len + 64] = 0;
    float a, b;
    const char* end;
    if (svd::parse_float(buf, buf + len + 64, &a, &end) != svd::ParseStatus::Ok) { ++bad; continue; }
    auto r = std::from_chars(buf, buf + len, b);
    if (r.ec != std::errc()) continue;  // out of range etc.
    ++total;
    uint32_t ua, ub; std::memcpy(&ua, &a, 4); std::memcpy(&ub, &b, 4);
    if (ua != ub) { if (bad < 10) std::printf("MISMATCH %.*s -> %.9g vs %.9g\n", len, buf, a, b); ++bad; }
  }
  std::printf("checked %ld, bad %ld\n", total, bad);
  return bad != 0;
}
