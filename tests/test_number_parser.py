"""The fast text number parser against std::from_chars (correctly rounded), in C++."""
from __future__ import annotations

import pytest

from conftest import run_cpp_check


def _check_program(tmp_path, source: str, defines, arg: str) -> str:
    """Build fuzz/SOURCE with the core file it checks (parse_float_check.cc: number_parse.cc,
    format_float_check.cc: number_format.cc), run it with ARG, return its stdout."""
    def no_charconv(stderr: str):
        return "the compiler's library lacks std::from_chars / to_chars for float" if "charconv" in stderr else None
    core = "cpp/nnet1/number_parse.cc" if source.startswith("parse") else "cpp/nnet1/number_format.cc"
    return run_cpp_check(tmp_path, [f"fuzz/{source}", core], [arg],
                         flags=["-O2", *defines], skip_build=no_charconv).stdout


# The default build takes the AVX2 row path where the CPU has it; the second
# keeps the portable one (both must agree with from_chars everywhere).
@pytest.mark.parametrize("defines", [[], ["-DSVD_NO_MULTIVERSION"]], ids=["dispatched", "portable"])
def test_parse_float_matches_from_chars_bit_for_bit(tmp_path, defines):
    out = _check_program(tmp_path, "parse_float_check.cc", defines, "2000000")
    assert out.startswith("checked") and "bad 0; rows" in out and out.rstrip().endswith("bad 0")


def test_format_float_shortest_matches_to_chars_byte_for_byte(tmp_path):
    """The writer's shortest float32 text (Schubfach digits, its own layout)
    equals std::to_chars(float) on ~4M bit patterns spread over all 2^32 and
    on edge cases (powers of two and ten, integers, the fixed/scientific
    switch). `format_float_check all` checks every float by hand."""
    out = _check_program(tmp_path, "format_float_check.cc", [], "4000000")
    assert out.startswith("checked") and out.rstrip().endswith("bad 0"), out
