#include "nnet1/number_parse.h"

#include <charconv>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>
// Checks svd::parse_float (the fast text parser) against std::from_chars<float>
// (correctly rounded) on random and adversarial decimal strings: float32 bit
// patterns printed shortest, weight-like values, random digit strings with
// exponents, and values next to float rounding midpoints with 9-15 digits.
// Each string also goes through svd::parse_row as a one-value row, and random
// rows (Kaldi's %.7g, shortest, %.9g, odd and invalid tokens, tabs, CRs, runs
// of blanks, wrong counts, rows cut inside a number, rows that end where the
// readable memory ends) against a token-by-token parse_float_slow.
// Built and run by tests/test_number_parser.py (also with -DSVD_NO_MULTIVERSION,
// the portable row path); by hand:
//   g++ -O2 -std=c++17 -Icpp fuzz/parse_float_check.cc cpp/nnet1/number_parse.cc -o /tmp/pfc && /tmp/pfc 30000000
#include <cmath>
#include <cstdlib>

#if defined(__unix__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace {

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

bool same_bits(float a, float b) {
  uint32_t ua, ub;
  std::memcpy(&ua, &a, 4);
  std::memcpy(&ub, &b, 4);
  return ua == ub;
}

// What parse_row must do, one token at a time with the exact parser.
bool reference_row(const char* p, const char* e, int64_t n, std::vector<float>* out) {
  out->clear();
  for (;;) {
    while (p < e && is_blank(*p)) ++p;
    if (p == e) return static_cast<int64_t>(out->size()) == n;
    const char* t = p;
    while (t < e && !is_blank(*t)) ++t;
    if (!(*p == '-' || static_cast<unsigned>(*p - '0') < 10u)) return false;
    float v;
    const char* end;
    if (svd::parse_float_slow(p, t, &v, &end) != svd::ParseStatus::Ok || end != t) return false;
    out->push_back(v);
    p = t;
  }
}

const char* const kOddTokens[] = {
    "0", "-0", "0.0", "-0.000", "00.5", "1", "-1", "12345", "5.", "-5.", "-.5", "1e5", "1E-5",
    "1e+05", "-1.5e-10", "1.5e10", "1.5e11", "9.999999e-11", "1e-45", "1e-50", "-0e99", "3.4028235e38",
    "123456789012345", "1234567890123456", "0.00000000000001", "-0.000000000000001", "1e0005",
    "1e00005", "1.17549435e-38", "0.000123456789", "-9.99999999e-05", "1.00000005",
    // refused: by parse_float, or (".5", "+1") by the row's first-byte rule
    ".5", "+1", "1.2.3", "--1", "-", "1e", "1e+", "1e-", "nan", "inf", "-inf", "1x", "1,5", "0x10",
    "3.5e38", "-1e39", "1e99999", "1-", "1.5e5.5", "e5", "."};

std::string random_token(std::mt19937_64& rng) {
  char buf[64];
  std::normal_distribution<float> nd(0.f, 0.05f);
  switch (rng() % 8) {
    case 0: case 1: case 2: return std::string(buf, std::snprintf(buf, 64, "%.7g", nd(rng)));  // Kaldi
    case 3: { float f = nd(rng); return std::string(buf, std::to_chars(buf, buf + 64, f).ptr); }
    case 4: return std::string(buf, std::snprintf(buf, 64, "%.9g", nd(rng)));
    case 5: {  // any finite float32, shortest
      float f;
      do {
        uint32_t u = static_cast<uint32_t>(rng());
        std::memcpy(&f, &u, 4);
      } while (!std::isfinite(f));
      return std::string(buf, std::to_chars(buf, buf + 64, f).ptr);
    }
    case 6: {  // %e forms and exponents near the fast path's limits
      float f = nd(rng) * std::pow(10.f, static_cast<float>(static_cast<int>(rng() % 24) - 12));
      return std::string(buf, std::snprintf(buf, 64, rng() & 1 ? "%.6e" : "%.8E", f));
    }
    default: return kOddTokens[rng() % (sizeof(kOddTokens) / sizeof(kOddTokens[0]))];
  }
}

// Random rows, each placed so that the readable memory ends 0-64 bytes after
// it (a PROT_NONE page follows where mmap exists: a read past it crashes).
long check_rows(std::mt19937_64& rng, long rows) {
  const size_t span = 1 << 16;
  char* region;
#if defined(__unix__)
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t mapped = (span + page - 1) / page * page;
  void* m = mmap(nullptr, mapped + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return 1;
  region = static_cast<char*>(m);
  mprotect(region + mapped, page, PROT_NONE);
  char* const limit = region + mapped;
#else
  std::vector<char> storage(span);
  region = storage.data();
  char* const limit = region + span;
#endif
  long bad = 0;
  std::vector<float> want, got;
  static const char kBlanks[] = {' ', ' ', ' ', '\t', '\r'};
  for (long it = 0; it < rows; ++it) {
    const int tokens = static_cast<int>(rng() % 40);
    const bool kaldi = rng() % 3 != 0;  // single spaces, "  " before, " " after
    const bool odd = rng() % 4 == 0;
    std::string row = kaldi ? "  " : "";
    for (int t = 0; t < tokens; ++t) {
      if (t) {
        if (kaldi) row += ' ';
        else for (int b = 1 + static_cast<int>(rng() % 3); b > 0; --b) row += kBlanks[rng() % 5];
      }
      row += odd && rng() % 8 == 0 ? kOddTokens[rng() % (sizeof(kOddTokens) / sizeof(kOddTokens[0]))]
                                   : random_token(rng);
    }
    if (kaldi) row += ' ';
    if (rng() % 4 == 0) row += '\r';
    int64_t n = tokens;
    if (rng() % 16 == 0) n += rng() & 1 ? 1 : -1;
    // What follows the row: usually a newline and more numbers, which must
    // not count; sometimes the row is cut inside its last token.
    size_t len = row.size();
    if (rng() % 8 == 0 && len > 0) len -= rng() % std::min<size_t>(len, 4);
    std::string after = rng() % 4 == 0 ? "" : "\n  12345.678 -0.0123456 9.87654e-05 1 2 3 4 5 6 7 8 9";
    if (len < row.size()) after = row.substr(len) + after;
    after.resize(std::min<size_t>(after.size(), rng() % 65));
    const size_t total = len + after.size();
    char* p = limit - total;
    std::memcpy(p, row.data(), len);
    std::memcpy(p + len, after.data(), after.size());
    const bool want_ok = reference_row(p, p + len, n, &want);
    got.assign(static_cast<size_t>(std::max<int64_t>(n, 0)) + 1, 7.f);
    const bool got_ok = n >= 0 && svd::parse_row(p, p + len, limit, got.data(), n);
    bool same = want_ok == got_ok;
    for (size_t k = 0; same && want_ok && k < want.size(); ++k) same = same_bits(want[k], got[k]);
    if (same && got_ok && !same_bits(got[static_cast<size_t>(n)], 7.f)) same = false;  // wrote past n
    if (!same) {
      if (bad < 10)
        std::printf("ROW MISMATCH (n=%lld, reference %d, parse_row %d): '%.*s'\n", static_cast<long long>(n),
                    want_ok, got_ok, static_cast<int>(len), p);
      ++bad;
    }
  }
#if defined(__unix__)
  munmap(region, mapped + page);
#endif
  return bad;
}

}  // namespace

int main(int argc, char** argv) {
  const long cases = argc > 1 ? std::atol(argv[1]) : 3000000;
  std::mt19937_64 rng(42);
  long bad = 0, total = 0;
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
    float a, b, c = 7.f;
    const char* end;
    if (svd::parse_float(buf, buf + len + 64, &a, &end) != svd::ParseStatus::Ok) { ++bad; continue; }
    auto r = std::from_chars(buf, buf + len, b);
    if (r.ec != std::errc()) continue;  // out of range etc.
    ++total;
    if (!same_bits(a, b)) { if (bad < 10) std::printf("MISMATCH %.*s -> %.9g vs %.9g\n", len, buf, a, b); ++bad; }
    if (!svd::parse_row(buf, buf + len, buf + len + 64, &c, 1) || !same_bits(c, b)) {
      if (bad < 10) std::printf("ROW MISMATCH %.*s -> %.9g vs %.9g\n", len, buf, c, b);
      ++bad;
    }
  }
  const long row_bad = check_rows(rng, cases / 10);
  std::printf("checked %ld, bad %ld; rows %ld, bad %ld\n", total, bad, cases / 10, row_bad);
  return bad != 0 || row_bad != 0;
}
