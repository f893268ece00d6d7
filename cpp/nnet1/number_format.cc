#include "nnet1/number_format.h"

#include <charconv>
#include <cstring>

namespace svd {

// Shortest float32 output. For normal floats below 2^24 in magnitude (every
// weight a model holds, in practice) the digits come from Giulietti's
// Schubfach algorithm ("The Schubfach way to render doubles", 2020; float
// variant): three 64x64-bit products with a table of 10^e, no loop over
// digits, no branch on which candidate wins. They are then laid out exactly
// as std::to_chars(float) does (fixed or scientific, whichever is shorter,
// fixed on a tie): 29 vs 39 ns per N(0, 0.05) weight written into a buffer
// with libstdc++'s to_chars (1.34x).
// Everything else goes to std::to_chars. fuzz/format_float_check.cc compares
// the two over every float (all 2^32 bit patterns agreed byte for byte).
namespace {

// g(e) = floor(10^e / 2^r) + 1 with r = floor(log2(10^e)) - 62, so that
// 2^62 < g <= 2^63: an upper approximation of 10^e. e = -31..45 covers
// every k the float exponents need (printed by tools/gen_pow10_table.py,
// exact rationals).
constexpr int kPow10Min = -31;
constexpr uint64_t kPow10[] = {
    0x40E7599625A1FE7BULL,  // e = -31
    0x51212FFBAF0A7E19ULL,  // e = -30
    0x65697BFA9ACD1DA0ULL,  // e = -29
    0x7EC3DAF941806507ULL,  // e = -28
    0x4F3A68DBC8F03F25ULL,  // e = -27
    0x63090312BB2C4EEEULL,  // e = -26
    0x7BCB43D769F762A9ULL,  // e = -25
    0x4D5F0A66A23A9DAAULL,  // e = -24
    0x60B6CD004AC94514ULL,  // e = -23
    0x78E480405D7B9659ULL,  // e = -22
    0x4B8ED0283A6D3DF8ULL,  // e = -21
    0x5E72843249088D76ULL,  // e = -20
    0x760F253EDB4AB0D3ULL,  // e = -19
    0x49C97747490EAE84ULL,  // e = -18
    0x5C3BD5191B525A25ULL,  // e = -17
    0x734ACA5F6226F0AEULL,  // e = -16
    0x480EBE7B9D58566DULL,  // e = -15
    0x5A126E1A84AE6C08ULL,  // e = -14
    0x709709A125DA070AULL,  // e = -13
    0x465E6604B7A84466ULL,  // e = -12
    0x57F5FF85E5925580ULL,  // e = -11
    0x6DF37F675EF6EAE0ULL,  // e = -10
    0x44B82FA09B5A52CCULL,  // e = -9
    0x55E63B88C230E77FULL,  // e = -8
    0x6B5FCA6AF2BD215FULL,  // e = -7
    0x431BDE82D7B634DBULL,  // e = -6
    0x53E2D6238DA3C212ULL,  // e = -5
    0x68DB8BAC710CB296ULL,  // e = -4
    0x4189374BC6A7EF9EULL,  // e = -3
    0x51EB851EB851EB86ULL,  // e = -2
    0x6666666666666667ULL,  // e = -1
    0x4000000000000001ULL,  // e = 0
    0x5000000000000001ULL,  // e = 1
    0x6400000000000001ULL,  // e = 2
    0x7D00000000000001ULL,  // e = 3
    0x4E20000000000001ULL,  // e = 4
    0x61A8000000000001ULL,  // e = 5
    0x7A12000000000001ULL,  // e = 6
    0x4C4B400000000001ULL,  // e = 7
    0x5F5E100000000001ULL,  // e = 8
    0x7735940000000001ULL,  // e = 9
    0x4A817C8000000001ULL,  // e = 10
    0x5D21DBA000000001ULL,  // e = 11
    0x746A528800000001ULL,  // e = 12
    0x48C2739500000001ULL,  // e = 13
    0x5AF3107A40000001ULL,  // e = 14
    0x71AFD498D0000001ULL,  // e = 15
    0x470DE4DF82000001ULL,  // e = 16
    0x58D15E1762800001ULL,  // e = 17
    0x6F05B59D3B200001ULL,  // e = 18
    0x4563918244F40001ULL,  // e = 19
    0x56BC75E2D6310001ULL,  // e = 20
    0x6C6B935B8BBD4001ULL,  // e = 21
    0x43C33C1937564801ULL,  // e = 22
    0x54B40B1F852BDA01ULL,  // e = 23
    0x69E10DE76676D081ULL,  // e = 24
    0x422CA8B0A00A4251ULL,  // e = 25
    0x52B7D2DCC80CD2E5ULL,  // e = 26
    0x6765C793FA10079EULL,  // e = 27
    0x409F9CBC7C4A04C3ULL,  // e = 28
    0x50C783EB9B5C85F3ULL,  // e = 29
    0x64F964E68233A770ULL,  // e = 30
    0x7E37BE2022C0914CULL,  // e = 31
    0x4EE2D6D415B85ACFULL,  // e = 32
    0x629B8C891B267183ULL,  // e = 33
    0x7B426FAB61F00DE4ULL,  // e = 34
    0x4D0985CB1D3608AFULL,  // e = 35
    0x604BE73DE4838ADAULL,  // e = 36
    0x785EE10D5DA46D91ULL,  // e = 37
    0x4B3B4CA85A86C47BULL,  // e = 38
    0x5E0A1FD271287599ULL,  // e = 39
    0x758CA7C70D7292FFULL,  // e = 40
    0x4977E8DC68679BE0ULL,  // e = 41
    0x5BD5E313828182D7ULL,  // e = 42
    0x72CB5BD86321E38DULL,  // e = 43
    0x47BF19673DF52E38ULL,  // e = 44
    0x59AEDFC10D7279C6ULL,  // e = 45
};

inline int floor_log10_pow2(int q) { return static_cast<int>((int64_t{q} * 661971961083LL) >> 41); }
inline int floor_log10_three_quarters_pow2(int q) {
  return static_cast<int>((int64_t{q} * 661971961083LL - 274743187321LL) >> 41);
}
inline int floor_log2_pow10(int e) { return static_cast<int>((int64_t{e} * 913124641741LL) >> 38); }

// g * cp / 2^95, rounded to odd (floor, with the lowest bit set if inexact):
// keeps every comparison the algorithm makes with multiples of 4 exact.
inline uint64_t round_to_odd(uint64_t g, uint64_t cp) {
  const uint64_t x = static_cast<uint64_t>((static_cast<unsigned __int128>(g) * cp) >> 64);
  return (x >> 31) | (((x & 0x7FFFFFFFu) + 0x7FFFFFFFu) >> 31);
}

// v = c * 2^q (normal: 2^23 <= c < 2^24) -> the shortest decimal s * 10^k
// that reads back as v, the closest such one on a tie of lengths.
inline void schubfach(int q, uint64_t c, uint64_t* digits, int* exp10) {
  const uint64_t out = c & 1;  // odd significand: the interval's ends are excluded
  const uint64_t cb = c << 2, cbr = cb + 2;
  uint64_t cbl;
  int k;
  if (c != (uint64_t{1} << 23) || q == -149) {
    cbl = cb - 2;
    k = floor_log10_pow2(q);
  } else {  // the float below v is closer than the one above
    cbl = cb - 1;
    k = floor_log10_three_quarters_pow2(q);
  }
  const int h = q + floor_log2_pow10(-k) + 33;
  const uint64_t g = kPow10[-k - kPow10Min];
  const uint64_t vb = round_to_odd(g, cb << h);
  const uint64_t vbl = round_to_odd(g, cbl << h);
  const uint64_t vbr = round_to_odd(g, cbr << h);
  const uint64_t s = vb >> 2;
  // Both candidate choices are computed and one is selected without a branch
  // (which one applies is a coin toss for random weights: branches on it
  // were mispredicted half the time and cost more than the arithmetic).
  // One digit fewer: a multiple of 10 inside the interval (s >= 100).
  const uint64_t sp10 = 10 * (s / 10), tp10 = sp10 + 10;
  const bool upin = vbl + out <= sp10 << 2;
  const bool wpin = (tp10 << 2) + out <= vbr;
  const bool shorter = (upin != wpin) & (s >= 100);
  // Else s or s + 1: the one inside the interval, the closer (the even one
  // on a tie) when both are.
  const uint64_t t = s + 1;
  const bool uin = vbl + out <= s << 2;
  const bool win = (t << 2) + out <= vbr;
  const int64_t cmp = static_cast<int64_t>(vb) - static_cast<int64_t>((s + t) << 1);
  const bool closer_s = (cmp < 0) | ((cmp == 0) & ((s & 1) == 0));
  const bool take_s = (uin != win) ? uin : closer_s;
  const uint64_t full = t - static_cast<uint64_t>(take_s);
  const uint64_t few = upin ? sp10 : tp10;
  *digits = shorter ? few : full;
  *exp10 = k;
}

// Digits of s (below 10^10 here): length from the bit length; the digits
// as ten, zero-padded, two at a time from a table without branches.
constexpr uint64_t kPow10Int[] = {1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull,
                                  10000000ull, 100000000ull, 1000000000ull, 10000000000ull};
inline int decimal_length(uint64_t v) {
  const int bits = 64 - __builtin_clzll(v | 1);
  const int t = (bits * 1233) >> 12;  // floor(log10) or one more
  return t - (v < kPow10Int[t]) + 1;
}

constexpr char kDigitPairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

inline void put_pair(char* p, uint32_t v) { std::memcpy(p, kDigitPairs + 2 * v, 2); }

// v < 10^10 as exactly ten digits (leading zeros) into d[0..10).
inline void ten_digits(char* d, uint64_t v) {
  const uint32_t hi = static_cast<uint32_t>(v / 100000000);    // 0..99
  const uint32_t lo = static_cast<uint32_t>(v - uint64_t{hi} * 100000000);
  const uint32_t a = lo / 10000, b = lo % 10000;
  put_pair(d, hi);
  put_pair(d + 2, a / 100);
  put_pair(d + 4, a % 100);
  put_pair(d + 6, b / 100);
  put_pair(d + 8, b % 100);
}

size_t format_shortest(char* buf, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  const uint32_t biased = (bits >> 23) & 0xFF;
  // Normal and |v| < 2^24 (biased exponent < 127 + 24); else the library.
  if (biased == 0 || biased >= 127 + 24) return static_cast<size_t>(std::to_chars(buf, buf + 32, v).ptr - buf);
  const uint64_t c = (bits & 0x7FFFFFu) | 0x800000u;
  const int q = static_cast<int>(biased) - 150;  // v = c * 2^q with -149 <= q <= 0 here
  uint64_t s;
  int k;
  if (q > -24 && ((c >> -q) << -q) == c) {  // an integer: exact
    s = c >> -q;
    k = 0;
  } else {
    schubfach(q, c, &s, &k);
  }
  while (s % 10 == 0) {  // s > 0 here
    s /= 10;
    ++k;
  }
  const int n = decimal_length(s);
  const int x = k + n - 1;  // scientific exponent: d.ddd x 10^x
  // The n digits, then zeros: the 16-byte copies below read past the digits
  // (what they copy there is never part of the output).
  char d[32] = {};
  ten_digits(d, s);
  const char* dig = d + 10 - n;
  char* p = buf;
  *p = '-';
  p += bits >> 31;
  // Lengths without the sign: fixed "0.000ddd" / "dd.dd" / "ddd00";
  // scientific "d.ddde-05" (a two-digit exponent for every float here).
  // Fixed takes x >= -4 (x >= -3 for one digit) and x <= 7, so the zeros
  // and copies below stay within the 32 bytes the caller provides.
  const int fixed_len = x < 0 ? n + 1 - x : (n > x + 1 ? n + 1 : x + 1);
  const int sci_len = n + (n > 1 ? 1 : 0) + 4;
  if (fixed_len <= sci_len) {
    if (x < 0) {
      std::memcpy(p, "0.0000", 6);
      std::memcpy(p + 1 - x, dig, 16);
    } else if (n > x + 1) {
      std::memcpy(p, dig, 16);
      std::memcpy(p + x + 2, dig + x + 1, 16);
      p[x + 1] = '.';
    } else {
      std::memcpy(p, dig, 16);
      std::memcpy(p + n, "00000000", 8);
    }
    p += fixed_len;
  } else {
    p[0] = dig[0];
    p[1] = '.';
    std::memcpy(p + 2, dig + 1, 16);
    p += n > 1 ? n + 1 : 1;
    const int ax = x < 0 ? -x : x;
    p[0] = 'e';
    p[1] = x < 0 ? '-' : '+';
    put_pair(p + 2, static_cast<uint32_t>(ax));
    p += 4;
  }
  return static_cast<size_t>(p - buf);
}

}  // namespace

size_t format_float(char* buf, float v, Digits digits) {
  if (digits == Digits::Shortest) return format_shortest(buf, v);
  return static_cast<size_t>(std::to_chars(buf, buf + 32, v, std::chars_format::general, 7).ptr - buf);
}

size_t format_int(char* buf, int64_t v) {
  return static_cast<size_t>(std::to_chars(buf, buf + 24, v).ptr - buf);
}

}  // namespace svd
