// Text numbers as Kaldi reads them: exactly rounded float parsing (a fast
// path inline for the reader's inner loops, from_chars behind it), whole
// matrix rows, and integers. The writer's side is nnet1/number_format.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace svd {

enum class ParseStatus { Ok, NotANumber, OutOfRange };

// Parses a decimal float starting at p (a digit or '-', as Kaldi requires) and
// stopping at the first byte that cannot continue it. Sets *end past it.
// Correctly rounded (from_chars where the fast path below does not apply).
ParseStatus parse_float_slow(const char* p, const char* e, float* out, const char** end);

namespace number_detail {
// [exp10 + 10][negative]: the sign rides on the power of ten.
constexpr double kPow10d[21][2] = {
    {1e-10, -1e-10}, {1e-9, -1e-9}, {1e-8, -1e-8}, {1e-7, -1e-7}, {1e-6, -1e-6}, {1e-5, -1e-5},
    {1e-4, -1e-4},   {1e-3, -1e-3}, {1e-2, -1e-2}, {1e-1, -1e-1}, {1e0, -1e0},   {1e1, -1e1},
    {1e2, -1e2},     {1e3, -1e3},   {1e4, -1e4},   {1e5, -1e5},   {1e6, -1e6},   {1e7, -1e7},
    {1e8, -1e8},     {1e9, -1e9},   {1e10, -1e10}};
constexpr uint64_t kPow10u[] = {1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL,
                                1000000ULL, 10000000ULL, 100000000ULL};
}  // namespace number_detail

// Value of the 8 ASCII digits at p (p[0] most significant): the SWAR method.
inline uint64_t eight_digits(uint64_t w) {
  w -= 0x3030303030303030ULL;
  w = (w * 10) + (w >> 8);
  return (((w & 0x000000FF000000FFULL) * (100 + (1000000ULL << 32))) +
          (((w >> 16) & 0x000000FF000000FFULL) * (1 + (10000ULL << 32)))) >> 32;
}

// Value of the first n (1..8) digits of the 8 bytes w (little-endian load).
inline uint64_t leading_digits(uint64_t w, int n) {
  if (n < 8) w = (w << (8 * (8 - n))) | (0x3030303030303030ULL >> (8 * n));
  return eight_digits(w);
}

// Number of leading ASCII digits in the 16 bytes at p.
inline int digit_run16(const char* p) {
#if defined(__SSE2__)
  __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  __m128i d = _mm_sub_epi8(v, _mm_set1_epi8('0'));
  __m128i bad = _mm_subs_epu8(d, _mm_set1_epi8(9));
  unsigned mask = static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(bad, _mm_setzero_si128())));
  return __builtin_ctz(~mask | 0x10000u);
#else
  int n = 0;
  while (n < 16 && static_cast<unsigned>(p[n] - '0') < 10u) ++n;
  return n;
#endif
}

// m (an exact integer < 2^53) * 10^exp10 (|exp10| <= 10: exact for exp10 >= 0,
// correctly rounded below) in double is within 2 double ulps of the exact
// value; float rounding of it is then exact unless it lies within 8 ulps of a
// float rounding midpoint (the 29 discarded bits near 1000...0): false there,
// and the caller asks parse_float_slow. The sign is the power's, not a branch
// (signs of weights are random); m = 0 gives a signed zero.
inline bool round_to_float(double m, int exp10, bool neg, float* out) {
  const double d = m * number_detail::kPow10d[exp10 + 10][neg];
  uint64_t bits;
  std::memcpy(&bits, &d, 8);
  const uint64_t low = bits & ((uint64_t{1} << 29) - 1);
  if (low - ((uint64_t{1} << 28) - 8) < 16) return false;
  *out = static_cast<float>(d);
  return true;
}

// Fast path (Clinger): when the decimal mantissa and the power of ten are both
// exact in float, one correctly rounded multiply or divide gives the correctly
// rounded result. Kaldi's 7-digit text nearly always qualifies. Digit runs are
// converted eight at a time; anything unusual goes to parse_float_slow.
__attribute__((always_inline)) inline ParseStatus parse_float(const char* p, const char* e, float* out,
                                                              const char** end) {
  const char* q = p;
  const bool neg = q < e && *q == '-';
  q += neg;
  if (e - q < 40) return parse_float_slow(p, e, out, end);  // near the end: no wide loads
  uint64_t m;
  int exp10 = 0;
  int n = digit_run16(q);
  int digits = n;  // digits accumulated into m (at most 8 + 15: m may wrap; checked below)
  if (n == 0 || n > 8) {
    if (n == 0 && *q != '.') return ParseStatus::NotANumber;
    if (n > 8) return parse_float_slow(p, e, out, end);
    m = 0;
  } else {
    uint64_t w;
    std::memcpy(&w, q, 8);
    m = leading_digits(w, n);
  }
  q += n;
  if (*q == '.') {
    ++q;
    int f = digit_run16(q);
    if (f == 16) return parse_float_slow(p, e, out, end);
    if (f == 0 && n == 0) return ParseStatus::NotANumber;
    uint64_t w;
    std::memcpy(&w, q, 8);
    if (f <= 8) {
      if (f) m = m * number_detail::kPow10u[f] + leading_digits(w, f);
    } else {
      uint64_t w2;
      std::memcpy(&w2, q + 8, 8);
      m = (m * 100000000ULL + eight_digits(w)) * number_detail::kPow10u[f - 8] + leading_digits(w2, f - 8);
    }
    exp10 = -f;
    digits += f;
    q += f;
  }
  if (*q == 'e' || *q == 'E') {
    const char* r = q + 1;
    bool eneg = false;
    if (*r == '+' || *r == '-') eneg = *r++ == '-';
    int k = digit_run16(r);
    if (k > 0) {
      if (k > 4) return parse_float_slow(p, e, out, end);
      int ev = 0;
      for (int i = 0; i < k; ++i) ev = ev * 10 + (r[i] - '0');
      exp10 += eneg ? -ev : ev;
      q = r + k;
    }
  }
  // Up to 15 digits m < 10^15 < 2^53 is exact in a double (and cannot have wrapped).
  if (digits > 15 || exp10 < -10 || exp10 > 10 || m == 0) {
    if (m == 0 && digits <= 19) {  // a zero (more digits could be a wrapped m): exact
      *out = neg ? -0.f : 0.f;
      *end = q;
      return ParseStatus::Ok;
    }
    return parse_float_slow(p, e, out, end);
  }
  if (!round_to_float(static_cast<double>(m), exp10, neg, out)) return parse_float_slow(p, e, out, end);
  *end = q;
  return ParseStatus::Ok;
}

// One matrix row: exactly n numbers (each starting with a digit or '-')
// separated by blanks (' ', '\t', '\r') in [p, e), nothing else, parsed as
// parse_float would into dst. False on anything else, for the caller's exact
// parser to report. Bytes from e up to `readable` may be loaded (wide loads)
// but never count; where simd_level() (util/cpu.h) picks x86-64-v3, a
// branch-free AVX2 path per number.
bool parse_row(const char* p, const char* e, const char* readable, float* dst, int64_t n);

// Parses an optionally signed decimal int32; same contract.
ParseStatus parse_int(const char* p, const char* e, int32_t* out, const char** end);

}  // namespace svd
