#include "nnet1/number_parse.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "util/cpu.h"

// The row parser's AVX2 path exists where the kernels' x86-64-v3 variants do
// (not with SVD_NO_MULTIVERSION) and runs where simd_level() picks them.
#if SVD_HAVE_X86_64_V3
#include <immintrin.h>
#endif

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
    // from_chars leaves v alone on underflow and overflow alike; strtof tells
    // which: infinity when the number rounds beyond the largest float (refused,
    // as istream >> float refuses it), else the nearest float towards zero.
    v = std::strtof(std::string(p, q).c_str(), nullptr);
    if (std::isinf(v)) return ParseStatus::OutOfRange;
  } else if (res.ec != std::errc() || res.ptr != q) {
    return ParseStatus::NotANumber;
  }
  *out = v;
  *end = q;
  return ParseStatus::Ok;
}

namespace {

inline bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }
inline bool is_digit(char c) { return static_cast<unsigned>(c - '0') < 10u; }

enum class RowStep { Number, End, Bad };

// One exact step through a row: blanks, then one number (a digit or '-'
// first, a blank or the row's end after it) into *dst, at most up to last.
// End: the row ended after exactly its values; Bad: anything else.
inline RowStep row_step(const char** p, const char* e, float** dst, const float* last) {
  const char* q = *p;
  while (q < e && is_blank(*q)) ++q;
  *p = q;
  if (q == e) return *dst == last ? RowStep::End : RowStep::Bad;
  if (*dst == last || !(*q == '-' || is_digit(*q))) return RowStep::Bad;
  const char* end;
  if (parse_float(q, e, *dst, &end) != ParseStatus::Ok) return RowStep::Bad;
  if (end < e && !is_blank(*end)) return RowStep::Bad;
  ++*dst;
  *p = end;
  return RowStep::Number;
}

bool parse_row_portable(const char* p, const char* e, float* dst, int64_t n) {
  const float* const last = dst + n;
  for (;;) {
    const RowStep s = row_step(&p, e, &dst, last);
    if (s != RowStep::Number) return s == RowStep::End;
  }
}

#if SVD_HAVE_X86_64_V3
#define SVD_TARGET_V3 SVD_TARGET_X86_64_V3

// pshufb indices and decimal exponents by mantissa shape, key len * 16 + d
// (len: mantissa bytes with the sign, at most 15; d: the dot's offset, len if
// none). Lane i takes digit i - (16 - n) of the n digits, skipping the dot,
// so that they end right-aligned; lanes before the first digit get a
// negative index (pshufb gives 0) or the sign's.
struct GatherTable {
  int8_t idx[256][16];
  int8_t exp10[256];
};

constexpr GatherTable make_gather_table() {
  GatherTable t{};
  for (int len = 0; len < 16; ++len) {
    for (int d = 0; d <= len && d < 16; ++d) {
      const int has_dot = d < len;
      for (int i = 0; i < 16; ++i) {
        int src = i + len - has_dot - 16;
        if (src >= d) ++src;
        t.idx[len * 16 + d][i] = static_cast<int8_t>(src < 0 ? -1 : src);
      }
      t.exp10[len * 16 + d] = static_cast<int8_t>(d + has_dot - len);
    }
  }
  return t;
}

alignas(16) constexpr GatherTable kGather = make_gather_table();

// The common shape [-]digits[.digits][e[+-]digits] with 1-15 digits, found
// from one 16-byte load: the digits are gathered right-aligned without the
// dot and summed by multiply-adds, so that the varying lengths of Kaldi's
// numbers cost no branches. Needs 32 readable bytes at p; returns the end of
// the number, or nullptr when parse_float must decide.
SVD_TARGET_V3 inline const char* parse_float_v3(const char* p, float* out) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  // '0'..'9' + 0x50 are the signed bytes -128..-119, and no other byte is.
  const __m128i is_dig = _mm_cmpgt_epi8(_mm_set1_epi8(-118), _mm_add_epi8(v, _mm_set1_epi8(0x50)));
  const unsigned digits = static_cast<unsigned>(_mm_movemask_epi8(is_dig));
  const unsigned dots = static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('.'))));
  const unsigned neg = p[0] == '-';
  const unsigned len = _tzcnt_u32(~(digits | dots | neg));  // mantissa bytes, sign included
  const unsigned dot = _bzhi_u32(dots, len);
  // Left to parse_float: len 16 (the mantissa may go on; below that, at most
  // 15 digits, exact in a double), two dots, and a first byte after the sign
  // that is not a digit (".5" is refused there, "-.5" is not).
  if ((len >> 4) | _blsr_u32(dot) | (~digits >> neg & 1)) return nullptr;
  const unsigned key = len * 16 + _tzcnt_u32(dot | (1u << len));
  const __m128i idx = _mm_load_si128(reinterpret_cast<const __m128i*>(kGather.idx[key]));
  // Lanes before the first digit are 0 or the sign, which saturates to 0.
  __m128i t = _mm_subs_epu8(_mm_shuffle_epi8(v, idx), _mm_set1_epi8('0'));
  t = _mm_maddubs_epi16(t, _mm_set1_epi16(0x010A));    // 10 * a + b: 2-digit groups
  t = _mm_madd_epi16(t, _mm_set1_epi32(0x00010064));   // 4-digit groups
  t = _mm_packus_epi32(t, t);
  t = _mm_madd_epi16(t, _mm_set1_epi32(0x00012710));   // 8-digit groups
  // Both halves are exact in double, and so is high * 10^8 + low (< 10^15).
  const __m128d halves = _mm_cvtepi32_pd(t);
  const double m = _mm_cvtsd_f64(halves) * 1e8 + _mm_cvtsd_f64(_mm_unpackhi_pd(halves, halves));
  int exp10 = kGather.exp10[key];
  const char* q = p + len;
  if ((*q | 0x20) == 'e') {
    const char* r = q + 1;
    const bool eneg = *r == '-';
    r += eneg || *r == '+';
    int ev = 0, k = 0;
    for (; k < 4 && is_digit(r[k]); ++k) ev = ev * 10 + (r[k] - '0');
    if (is_digit(r[k])) return nullptr;
    if (k) {
      exp10 += eneg ? -ev : ev;
      q = r + k;
    }
  }
  if (static_cast<unsigned>(exp10 + 10) > 20 || !round_to_float(m, exp10, neg, out)) return nullptr;
  return q;
}

// Numbers each followed by one space, the usual row, for as long as they come
// (up to fast_end, and n values); returns where that stops. A function without
// calls, so that its vector constants stay in registers.
SVD_TARGET_V3 __attribute__((noinline)) const char* parse_spaced_v3(const char* p, const char* e, uintptr_t fast_end,
                                                                    float** dst, float* last) {
  float* d = *dst;
  while (reinterpret_cast<uintptr_t>(p) < fast_end && d != last) {
    const char* q = parse_float_v3(p, d);
    if (!q || q >= e || *q != ' ') break;
    ++d;
    p = q + 1;
  }
  *dst = d;
  return p;
}

SVD_TARGET_V3 bool parse_row_v3(const char* p, const char* e, const char* readable, float* dst, int64_t n) {
  float* const last = dst + n;
  // Numbers that start before fast_end have the kernel's 32 bytes readable.
  const uintptr_t fast_end = std::min(reinterpret_cast<uintptr_t>(e), reinterpret_cast<uintptr_t>(readable) - 31);
  for (;;) {
    p = parse_spaced_v3(p, e, fast_end, &dst, last);
    // The kernel starts only on a number: a blank is stepped over and the
    // kernel tried again (a step would also take the next number the slow
    // way, and leave the blank after it for the next round: every number).
    if (p < e && is_blank(*p)) {
      ++p;
      continue;
    }
    // Anything else (a number the kernel refused, the row's end): one exact
    // step, as parse_row_portable takes them.
    const RowStep s = row_step(&p, e, &dst, last);
    if (s != RowStep::Number) return s == RowStep::End;
  }
}
#endif

}  // namespace

bool parse_row(const char* p, const char* e, const char* readable, float* dst, int64_t n) {
#if SVD_HAVE_X86_64_V3
  if (simd_level() == SimdLevel::X86_64_V3) return parse_row_v3(p, e, readable, dst, n);
#endif
  (void)readable;
  return parse_row_portable(p, e, dst, n);
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

}  // namespace svd
