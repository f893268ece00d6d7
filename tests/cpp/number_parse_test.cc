// The text number parser (nnet1/number_parse.h): Kaldi's number syntax, where
// a number ends, what it refuses, correct rounding at float midpoints and
// range limits, whole rows, and integers. Each string is parsed twice: inside
// a long buffer (the fast path's wide loads apply) and at the very end of an
// exact-size one (the exact path), and both must give the same answer.
// CTest runs it twice, the second time with SVDISTILL_PORTABLE=1 (parse_row's
// baseline path where the AVX2 one would run).
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "nnet1/number_parse.h"
#include "unit.h"

namespace {

using svd::ParseStatus;

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

struct Parsed {
  ParseStatus status = ParseStatus::NotANumber;
  float value = 0;
  size_t length = 0;  // bytes consumed (Ok only)
};

Parsed parse_in(const char* p, const char* e) {
  Parsed r;
  const char* end = nullptr;
  r.status = svd::parse_float(p, e, &r.value, &end);
  if (r.status == ParseStatus::Ok) r.length = static_cast<size_t>(end - p);
  return r;
}

// Parses s both ways; records a failure if they disagree.
Parsed parse(const std::string& s) {
  std::string padded = s + std::string(64, ' ');
  const Parsed wide = parse_in(padded.data(), padded.data() + padded.size());
  std::vector<char> exact(s.begin(), s.end());
  const Parsed tight = parse_in(exact.data(), exact.data() + exact.size());
  CHECK_MSG(wide.status == tight.status && bits_of(wide.value) == bits_of(tight.value) &&
                wide.length == tight.length,
            "'" << s << "': padded and exact-size buffers disagree");
  return wide;
}

void expect_value(const std::string& s, float want, size_t length) {
  const Parsed r = parse(s);
  CHECK_MSG(r.status == ParseStatus::Ok, "'" << s << "' refused");
  CHECK_MSG(bits_of(r.value) == bits_of(want), "'" << s << "' gave " << r.value << ", want " << want);
  CHECK_MSG(r.length == length, "'" << s << "' consumed " << r.length << " bytes, want " << length);
}

void expect_value(const std::string& s, float want) { expect_value(s, want, s.size()); }

void expect_status(const std::string& s, ParseStatus want) {
  const Parsed r = parse(s);
  CHECK_MSG(r.status == want, "'" << s << "' gave status " << static_cast<int>(r.status) << ", want "
                                  << static_cast<int>(want));
}

}  // namespace

TEST_CASE(kaldi_number_syntax) {
  // What Kaldi's writers produce (%g-style and shortest text) and istream reads.
  expect_value("0", 0.f);
  expect_value("3", 3.f);
  expect_value("-7", -7.f);
  expect_value("0.1", 0.1f);
  expect_value("-0.0123", -0.0123f);
  expect_value("1.", 1.f);
  expect_value("1.5e-05", 1.5e-5f);
  expect_value("1e+10", 1e10f);
  expect_value("2E3", 2000.f);
  expect_value("-4.25e2", -425.f);
  expect_value("0.33333334", 1.f / 3.f);
  expect_value("123456.7", 123456.7f);
  expect_value("00012.50", 12.5f);
  expect_value("3.4028235e+38", FLT_MAX);
  expect_value("1.1754944e-38", FLT_MIN);
  expect_value("1e-45", std::numeric_limits<float>::denorm_min());
  // More digits than a float holds, and more than the fast path takes.
  expect_value("0.1000000000000000055511151231257827", 0.1f);
  expect_value("3.14159265358979323846264338327950288", 3.14159265f);
  expect_value("100000000000000000000000000000", 1e29f);
}

TEST_CASE(signed_zeros) {
  const Parsed neg = parse("-0");
  CHECK(neg.status == ParseStatus::Ok && bits_of(neg.value) == 0x80000000u);
  const Parsed neg2 = parse("-0.000e5");
  CHECK(neg2.status == ParseStatus::Ok && bits_of(neg2.value) == 0x80000000u);
  const Parsed pos = parse("0.0");
  CHECK(pos.status == ParseStatus::Ok && bits_of(pos.value) == 0u);
}

TEST_CASE(where_a_number_ends) {
  expect_value("12 34", 12.f, 2);
  expect_value("1.5e", 1.5f, 3);     // an 'e' without digits is not part of it
  expect_value("1.5e+", 1.5f, 3);
  expect_value("1.5e-x", 1.5f, 3);
  expect_value("2e3x", 2000.f, 3);
  expect_value("-8]", -8.f, 2);
  expect_value("7.25\n", 7.25f, 4);
  expect_value("1.2.3", 1.2f, 3);
}

TEST_CASE(refused) {
  for (const char* s : {"", "-", ".", "-.", "+1", "e5", "inf", "-inf", "nan", " 1", "x1", "[", "--1"})
    expect_status(s, ParseStatus::NotANumber);
}

TEST_CASE(out_of_range) {
  expect_status("1e39", ParseStatus::OutOfRange);
  expect_status("-1e39", ParseStatus::OutOfRange);
  expect_status("3.5e38", ParseStatus::OutOfRange);
  expect_status("1e400", ParseStatus::OutOfRange);
  expect_status("999999999999999999999999999999999999999999", ParseStatus::OutOfRange);
  // Just below the midpoint between FLT_MAX and 2^128: rounds to FLT_MAX.
  expect_value("3.4028235677973365e38", FLT_MAX);
  // The midpoint itself and a hair above round to infinity (the tie goes to
  // the even significand, 2^128): out of range, not an infinite weight.
  expect_status("340282356779733661637539395458142568448", ParseStatus::OutOfRange);
  expect_status("3.40282356779733661637539395458142568448e38", ParseStatus::OutOfRange);
  expect_status("3.4028235677973367e38", ParseStatus::OutOfRange);
  expect_status("-3.4028235677973367e38", ParseStatus::OutOfRange);
  // Underflow is not an error: the nearest float, down to zero.
  expect_value("1e-46", 0.f);
  expect_value("-1e-50", -0.f);
  expect_value("8e-46", std::numeric_limits<float>::denorm_min());
}

TEST_CASE(correct_rounding_at_midpoints) {
  // Integers past 2^24: ties go to the even significand.
  expect_value("16777217", 16777216.f);
  expect_value("16777219", 16777220.f);
  expect_value("16777217.000000001", 16777218.f);
  // 1 + 2^-24 is the midpoint between 1 and the next float.
  expect_value("1.000000059604644775390625", 1.f);
  expect_value("1.000000059604644775390626", float_of(0x3F800001u));
  expect_value("1.000000059604644775390624", 1.f);
  // The midpoint above 1 + 2^-23 ties up to the even 1 + 2^-22.
  expect_value("1.000000178813934326171875", float_of(0x3F800002u));
  // Midpoints between random neighbouring floats, written out exactly (glibc
  // prints a double's exact decimal expansion; the midpoint of two floats is
  // exact in double), and a hair either side of them.
  std::mt19937 rng(5);
  for (int i = 0; i < 2000; ++i) {
    const uint32_t b = 0x00800000u + rng() % (0x7F000000u - 0x00800000u);  // normal, below FLT_MAX
    const float lo = float_of(b), hi = float_of(b + 1);
    const double mid = (static_cast<double>(lo) + static_cast<double>(hi)) / 2;
    char buf[256];
    std::snprintf(buf, sizeof buf, "%.160e", mid);
    std::string exact = buf;
    const size_t e = exact.find('e');
    const size_t last = exact.find_last_not_of('0', e - 1);  // the last nonzero digit
    std::string above = exact.substr(0, e) + "1" + exact.substr(e);
    std::string below = exact.substr(0, last) + static_cast<char>(exact[last] - 1) + "999" + exact.substr(e);
    const Parsed at = parse(exact), up = parse(above), down = parse(below);
    const float even = (b & 1) ? hi : lo;
    CHECK_MSG(at.status == ParseStatus::Ok && bits_of(at.value) == bits_of(even), exact << " gave " << at.value);
    CHECK_MSG(up.status == ParseStatus::Ok && bits_of(up.value) == bits_of(hi), above << " gave " << up.value);
    CHECK_MSG(down.status == ParseStatus::Ok && bits_of(down.value) == bits_of(lo), below << " gave " << down.value);
  }
}

TEST_CASE(agrees_with_strtof_on_random_text) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> digits(1, 12), exp10(-45, 38), sign(0, 1), form(0, 2);
  for (int i = 0; i < 20000; ++i) {
    std::string s = sign(rng) ? "-" : "";
    const int n = digits(rng);
    const int dot = form(rng) ? static_cast<int>(rng() % static_cast<unsigned>(n + 1)) : -1;
    for (int d = 0; d < n; ++d) {
      if (d == dot) s += d == 0 ? "0." : ".";
      s += static_cast<char>('0' + rng() % 10);
    }
    if (form(rng) == 0) s += "e" + std::to_string(exp10(rng));
    const float want = std::strtof(s.c_str(), nullptr);
    if (std::isinf(want)) continue;
    const Parsed r = parse(s);
    CHECK_MSG(r.status == ParseStatus::Ok && bits_of(r.value) == bits_of(want) && r.length == s.size(),
              "'" << s << "' gave " << r.value << ", strtof " << want);
  }
}

TEST_CASE(rows) {
  auto row = [](const std::string& s, int64_t n, std::vector<float>* out) {
    std::string buf = s + std::string(64, ' ');
    out->assign(static_cast<size_t>(n) + 1, -99.f);
    return svd::parse_row(buf.data(), buf.data() + s.size(), buf.data() + buf.size(), out->data(), n);
  };
  std::vector<float> v;
  CHECK(row("1 -2.5 3e2", 3, &v));
  CHECK(v[0] == 1.f && v[1] == -2.5f && v[2] == 300.f && v[3] == -99.f);
  CHECK(row("  0.1\t-0.2\r 0.3  ", 3, &v));
  CHECK(v[0] == 0.1f && v[1] == -0.2f && v[2] == 0.3f);
  CHECK(row("", 0, &v));
  CHECK(row("   ", 0, &v));
  CHECK(!row("1 2 3", 2, &v));   // too many values
  CHECK(!row("1 2", 3, &v));     // too few
  CHECK(!row("1 x 3", 3, &v));
  CHECK(!row("1,2", 2, &v));
  CHECK(!row(".5 1", 2, &v));    // Kaldi's numbers start with a digit or '-'
  CHECK(!row("+5 1", 2, &v));
  CHECK(!row("1e39 1", 2, &v));  // out of range
  CHECK(!row("1 2]", 2, &v));    // the bracket is the caller's
  // A long row of random shortest-text weights, as the writer lays them out.
  std::mt19937 rng(3);
  std::normal_distribution<float> w(0.f, 0.05f);
  std::string s;
  std::vector<float> want(1000);
  for (float& x : want) {
    x = w(rng);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.9g ", x);
    s += buf;
  }
  CHECK(row(s, 1000, &v));
  bool same = true;
  for (size_t i = 0; i < want.size(); ++i) same = same && bits_of(v[i]) == bits_of(want[i]);
  CHECK(same);
}

TEST_CASE(integers) {
  auto parse_int = [](const std::string& s, int32_t* v, size_t* length) {
    const char* end = nullptr;
    const ParseStatus st = svd::parse_int(s.data(), s.data() + s.size(), v, &end);
    if (st == ParseStatus::Ok) *length = static_cast<size_t>(end - s.data());
    return st;
  };
  int32_t v = 0;
  size_t n = 0;
  CHECK(parse_int("42", &v, &n) == ParseStatus::Ok && v == 42 && n == 2);
  CHECK(parse_int("+5", &v, &n) == ParseStatus::Ok && v == 5 && n == 2);  // istream >> int takes a '+'
  CHECK(parse_int("-7 ", &v, &n) == ParseStatus::Ok && v == -7 && n == 2);
  CHECK(parse_int("12ab", &v, &n) == ParseStatus::Ok && v == 12 && n == 2);
  CHECK(parse_int("2147483647", &v, &n) == ParseStatus::Ok && v == 2147483647);
  CHECK(parse_int("-2147483648", &v, &n) == ParseStatus::Ok && v == INT32_MIN);
  CHECK(parse_int("2147483648", &v, &n) == ParseStatus::OutOfRange);
  CHECK(parse_int("-2147483649", &v, &n) == ParseStatus::OutOfRange);
  CHECK(parse_int("x", &v, &n) == ParseStatus::NotANumber);
  CHECK(parse_int("", &v, &n) == ParseStatus::NotANumber);
  CHECK(parse_int("1.5", &v, &n) == ParseStatus::Ok && v == 1 && n == 1);
}
