// The text number formatter (nnet1/number_format.h): the shortest text that
// reads back as the same float (and no shorter one does), its layout (fixed
// or scientific, as std::to_chars lays it out), Kaldi's %.7g digits, and
// integers. Reading back uses the parser (nnet1/number_parse.h): what the
// writer writes, the reader reads to the same bits.
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "nnet1/number_format.h"
#include "nnet1/number_parse.h"
#include "unit.h"

namespace {

using svd::Digits;

uint32_t bits_of(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return b;
}

float float_of(uint32_t b) {
  float v;
  std::memcpy(&v, &b, 4);
  return v;
}

std::string format(float v, Digits d = Digits::Shortest) {
  char buf[32];
  return std::string(buf, svd::format_float(buf, v, d));
}

// Reads text back the way the model reader does.
bool read_back(const std::string& s, float* v) {
  const std::string padded = s + std::string(64, ' ');
  const char* end = nullptr;
  return svd::parse_float(padded.data(), padded.data() + padded.size(), v, &end) == svd::ParseStatus::Ok &&
         end == padded.data() + s.size();
}

// The significant digits of a shortest text ("-0.00120" -> 2, "1.5e-05" -> 2,
// "12300" -> 3: trailing zeros of an integer are not significant here, as
// the formatter never writes more digits than it needs).
int significant_digits(const std::string& s) {
  std::string d;
  for (char c : s.substr(0, s.find('e')))
    if (c >= '0' && c <= '9') d += c;
  const size_t first = d.find_first_not_of('0');
  if (first == std::string::npos) return 1;
  const size_t last = d.find_last_not_of('0');
  return static_cast<int>(last - first + 1);
}

float random_finite(std::mt19937& rng) {
  for (;;) {
    const float v = float_of(static_cast<uint32_t>(rng()));
    if (std::isfinite(v)) return v;
  }
}

}  // namespace

TEST_CASE(shortest_known_texts) {
  CHECK_EQ(format(0.f), "0");
  CHECK_EQ(format(-0.f), "-0");
  CHECK_EQ(format(1.f), "1");
  CHECK_EQ(format(-2.5f), "-2.5");
  CHECK_EQ(format(0.1f), "0.1");
  CHECK_EQ(format(0.3f), "0.3");
  CHECK_EQ(format(1.f / 3.f), "0.33333334");
  CHECK_EQ(format(-0.0123f), "-0.0123");
  CHECK_EQ(format(0.001f), "0.001");
  CHECK_EQ(format(100.f), "100");
  CHECK_EQ(format(123456.7f), "123456.7");
  CHECK_EQ(format(12345678.f), "12345678");
  CHECK_EQ(format(16777216.f), "16777216");
  // Scientific where it is shorter than fixed (fixed on a tie).
  CHECK_EQ(format(1e7f), "1e+07");
  CHECK_EQ(format(1e10f), "1e+10");
  CHECK_EQ(format(0.0001f), "1e-04");
  CHECK_EQ(format(1.5e-5f), "1.5e-05");
  CHECK_EQ(format(-2.5e-6f), "-2.5e-06");
  CHECK_EQ(format(FLT_MAX), "3.4028235e+38");
  CHECK_EQ(format(FLT_MIN), "1.1754944e-38");
  CHECK_EQ(format(std::numeric_limits<float>::denorm_min()), "1e-45");
  CHECK_EQ(format(std::numeric_limits<float>::infinity()), "inf");
  CHECK_EQ(format(-std::numeric_limits<float>::infinity()), "-inf");
  CHECK_EQ(format(std::numeric_limits<float>::quiet_NaN()), "nan");
}

TEST_CASE(shortest_round_trips) {
  std::mt19937 rng(1);
  std::normal_distribution<float> weight(0.f, 0.05f);
  int bad = 0;
  for (int i = 0; i < 200000; ++i) {
    // Half typical weights, half any finite bit pattern (denormals included).
    const float v = i % 2 ? weight(rng) : random_finite(rng);
    const std::string s = format(v);
    float back = 0;
    if (!read_back(s, &back) || bits_of(back) != bits_of(v)) {
      if (++bad <= 5) CHECK_MSG(false, "'" << s << "' does not read back as " << bits_of(v));
    }
  }
  CHECK_EQ(bad, 0);
}

// From 2^24 on, where floats are integers, the fixed layout writes every digit
// of the integer (as std::to_chars does: "16777216", "153197068288") when that
// is shorter than the scientific text; below, the digits are the shortest.
bool digits_are_shortest(float v) { return std::fabs(v) < 16777216.f; }

TEST_CASE(shortest_has_no_shorter_round_trip) {
  // With one significant digit fewer, the nearest decimal (printf's correctly
  // rounded %.*e) does not read back as v. Powers of two are left out: their
  // rounding interval is lopsided, so the nearest shorter decimal is not the
  // only candidate there.
  std::mt19937 rng(2);
  int bad = 0;
  for (int i = 0; i < 100000; ++i) {
    const float v = random_finite(rng);
    if ((bits_of(v) & 0x7FFFFFu) == 0 || !digits_are_shortest(v)) continue;
    const std::string s = format(v);
    const int n = significant_digits(s);
    if (n <= 1) continue;
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*e", n - 2, static_cast<double>(v));
    if (std::strtof(buf, nullptr) == v && ++bad <= 5)
      CHECK_MSG(false, "'" << s << "' is longer than '" << buf << "', which reads back the same");
  }
  CHECK_EQ(bad, 0);
}

TEST_CASE(shortest_is_at_most_nine_digits) {
  std::mt19937 rng(4);
  int bad = 0;
  for (int i = 0; i < 100000; ++i) {
    const float v = random_finite(rng);
    const std::string s = format(v);
    // "-1.23456789e-38"; an integer's fixed text is at most as long.
    const bool ok = (!digits_are_shortest(v) || significant_digits(s) <= 9) && s.size() <= 15;
    if (!ok && ++bad <= 5) CHECK_MSG(false, s);
  }
  CHECK_EQ(bad, 0);
}

TEST_CASE(kaldi_digits_are_printf_7g) {
  std::mt19937 rng(3);
  std::normal_distribution<float> weight(0.f, 0.05f);
  for (float v : {0.f, -0.f, 1.f, 0.1f, 1e7f, 1e-5f, 123456.7f, FLT_MAX, FLT_MIN}) {
    char want[64];
    std::snprintf(want, sizeof want, "%.7g", static_cast<double>(v));
    CHECK_EQ(format(v, Digits::Kaldi), std::string(want));
  }
  int bad = 0;
  for (int i = 0; i < 100000; ++i) {
    const float v = i % 2 ? weight(rng) : random_finite(rng);
    char want[64];
    std::snprintf(want, sizeof want, "%.7g", static_cast<double>(v));
    if (format(v, Digits::Kaldi) != want && ++bad <= 5) CHECK_EQ(format(v, Digits::Kaldi), std::string(want));
  }
  CHECK_EQ(bad, 0);
}

TEST_CASE(integers) {
  auto fmt = [](int64_t v) {
    char buf[32];
    return std::string(buf, svd::format_int(buf, v));
  };
  CHECK_EQ(fmt(0), "0");
  CHECK_EQ(fmt(-1), "-1");
  CHECK_EQ(fmt(440), "440");
  CHECK_EQ(fmt(std::numeric_limits<int64_t>::max()), "9223372036854775807");
  CHECK_EQ(fmt(std::numeric_limits<int64_t>::min()), "-9223372036854775808");
}
