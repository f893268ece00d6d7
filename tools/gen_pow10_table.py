#!/usr/bin/env python3
"""Print kPow10, the table of cpp/nnet1/number_format.cc's shortest float32 formatter.

For each e the float exponents need, g(e) = floor(10^e / 2^r) + 1 with
r = floor(log2(10^e)) - 62, so 2^62 < g <= 2^63 (an upper approximation of
10^e, as the Schubfach algorithm requires). Exact rational arithmetic; also
checks the integer floor-log formulas the C++ uses over the exponents they see.

    python tools/gen_pow10_table.py > /tmp/table.inc
"""
from fractions import Fraction
import math


def flog10pow2(q: int) -> int:
    return (q * 661971961083) >> 41


def flog10_three_quarters_pow2(q: int) -> int:
    return (q * 661971961083 - 274743187321) >> 41


def flog2pow10(e: int) -> int:
    return (e * 913124641741) >> 38


def floor_log(x: Fraction, base: int) -> int:
    n = 0
    if x >= 1:
        while Fraction(base) ** (n + 1) <= x:
            n += 1
    else:
        while Fraction(base) ** n > x:
            n -= 1
    return n


def main() -> None:
    for q in range(-160, 120):
        assert flog10pow2(q) == floor_log(Fraction(2) ** q, 10), q
        assert flog10_three_quarters_pow2(q) == floor_log(Fraction(3, 4) * Fraction(2) ** q, 10), q
    for e in range(-60, 60):
        assert flog2pow10(e) == floor_log(Fraction(10) ** e, 2), e
    ks = {f(q) for q in range(-149, 105) for f in (flog10pow2, flog10_three_quarters_pow2)}
    for e in range(-max(ks), -min(ks) + 1):
        r = flog2pow10(e) - 62
        g = math.floor(Fraction(10) ** e / Fraction(2) ** r) + 1
        assert 2 ** 62 < g <= 2 ** 63, e
        print(f"    0x{g:016X}ULL,  // e = {e}")


if __name__ == "__main__":
    main()
