"""Rows of numbers in Kaldi's text syntax, parsed strictly: what Kaldi's text reader refuses is
refused here, at the byte of the first token that is not a number."""
from __future__ import annotations

import re
from typing import Tuple

from .faults import _Bad, _preview

# Numbers as Kaldi's text reader takes them (C++ stream syntax, and inf/nan as Kaldi writes
# them): Python's float() and int() also take '1_0', which Kaldi refuses.
_FLOAT = (rb"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
          rb"|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])")
_INT = rb"[+-]?[0-9]+"
_FLOAT_ROW = re.compile(rb"\s*(?:" + _FLOAT + rb"\s+)*(?:" + _FLOAT + rb")?\s*")
_INT_ROW = re.compile(rb"\s*(?:" + _INT + rb"\s+)*(?:" + _INT + rb")?\s*")
_TOKEN = re.compile(rb"\S+")


def _strict_row(text: bytes, parse, number: bytes, row: "re.Pattern[bytes]", where: int, what: str):
    """``parse(text)`` for a row of Kaldi numbers; otherwise a _Bad at the first token that is
    not a ``number`` (``what`` formats it). Python's float()/int() take Kaldi's syntax and one
    thing more, '1_0': the regex, slower, runs only when parsing fails or a '_' is there."""
    if b"_" not in text:
        try:
            return parse(text)
        except ValueError:
            pass
    if row.fullmatch(text):
        return parse(text)
    at, bad = _first_bad(text, number)
    raise _Bad(what.format(_preview(bad)), where + at)


def _first_bad(text: bytes, number: bytes) -> Tuple[int, bytes]:
    """(offset in ``text``, token) of the first token of ``text`` that is not a ``number``."""
    whole = re.compile(number)
    for m in _TOKEN.finditer(text):
        if not whole.fullmatch(m.group()):
            return m.start(), m.group()
    raise AssertionError("every token is a number")  # the caller's row pattern said otherwise
