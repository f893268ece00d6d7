"""The entries of an archive decoded as Kaldi writes them: the utterance key, then binary
``FM``/``DM`` matrices, compressed ``CM``/``CM2``/``CM3`` (decoded by kaldiio), text matrices
``[ ... ]``, or integer vectors (alignments) binary or text; and the check that features are
finite."""
from __future__ import annotations

import io
import re
import struct
from typing import List, Optional

import numpy as np

from ..errors import Error
from .faults import _Bad, _preview
from .inputs import _Input
from .text_numbers import _FLOAT, _FLOAT_ROW, _INT, _INT_ROW, _TOKEN, _strict_row

_MAX_KEY = 65536         # bytes without whitespace: not a key, not an archive
_SIZE_BYTE = b"\x04"     # Kaldi writes every binary int32 preceded by its size
_NOT_SPACE = re.compile(rb"[^ \t\r\n]")
_KEY_END = re.compile(rb"[ \t\r\n]")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def _read_key(inp: _Input) -> Optional[str]:
    """The next key (whitespace skipped before it, one space or tab after it consumed), None at the end."""
    while True:
        buf, m = inp.peek_until(_NOT_SPACE, _MAX_KEY)
        if m is not None:
            break
        inp.skip_to(len(buf))  # all whitespace
        if not inp._more():
            return None
    inp.skip_to(m.start())
    start = inp.pos
    if start == 0:
        head = inp.read(2)
        inp.unread(head)
        if head == b"\x1f\x8b":
            raise _Bad("this is gzip-compressed data, not an archive: read it through a command, "
                       "e.g. 'ark:gunzip -c FILE |'", 0)
    buf, m = inp.peek_until(_KEY_END, _MAX_KEY)
    end = m.start() if m is not None else len(buf)
    key_bytes = bytes(buf[inp._off:end])
    if end - inp._off > _MAX_KEY:
        raise _Bad(f"no utterance key ({_MAX_KEY:,} bytes without a space): this is not a Kaldi "
                   "archive, or it is damaged", start)
    if m is None:
        raise _Bad(f"the data ends after the key {_preview(key_bytes)}: no matrix follows it "
                   "(the archive is truncated, or this is not a Kaldi archive)", start)
    # One space or tab after the key is consumed; as in Kaldi, a newline is allowed and kept.
    inp.skip_to(end + 1 if buf[end:end + 1] in (b" ", b"\t") else end)
    try:
        key = key_bytes.decode("utf-8")
    except UnicodeDecodeError:
        key = ""
    if not key or _CONTROL.search(key_bytes):
        raise _Bad(f"expected an utterance key, found {_preview(key_bytes)}: this is not a Kaldi archive, "
                   "or it is damaged (or an scp offset is wrong)", start)
    return key


def _read_token(inp: _Input) -> str:
    start = inp.pos
    tok = inp.read(6)
    sp = tok.find(b" ")
    if sp < 0 or sp > 4:
        if sp < 0 and len(tok) < 5:
            raise _Bad("the data ends inside a binary header (the archive is truncated)", start)
        raise _Bad(f"expected a binary type (FM, DM, CM, CM2, CM3), found {_preview(tok[:5])}", start)
    inp.unread(tok[sp + 1:])
    return tok[:sp].decode("latin-1")


def _int32(inp: _Input, what: str) -> int:
    start = inp.pos
    b = inp.read_exact(5, what)
    if b[:1] != _SIZE_BYTE:
        raise _Bad(f"corrupt binary header: {what} should be a 4-byte integer, found size byte {b[0]}", start)
    return struct.unpack("<i", bytes(b[1:]))[0]


_ROWS_COLS = struct.Struct("<xixi")
_KINDS = {"FM": "a float matrix (FM)", "DM": "a double matrix (DM)", "CM": "a compressed matrix (CM)",
          "CM2": "a compressed matrix (CM2)", "CM3": "a compressed matrix (CM3)", "FV": "a float vector (FV)",
          "DV": "a double vector (DV)"}


def _read_binary_matrix(inp: _Input, obj: int) -> np.ndarray:
    first = inp.read(1)
    inp.unread(first)
    if first == _SIZE_BYTE:  # Kaldi's binary integer vector starts with the int32 size byte
        raise _Bad("expected a matrix (frames x dims), found an integer vector (an alignment, as ali-to-pdf "
                   "writes it?)", obj, other_object=True)
    tok = _read_token(inp)
    if tok in ("FM", "DM"):
        head = inp.read(10)
        if len(head) == 10 and head[0] == 4 and head[5] == 4:  # both sizes at once (the usual case)
            rows, cols = _ROWS_COLS.unpack(head)
        else:
            inp.unread(head)
            rows = _int32(inp, "the number of rows")
            cols = _int32(inp, "the number of columns")
        if rows < 0 or cols < 0:
            raise _Bad(f"corrupt matrix header: {rows} rows x {cols} columns", obj)
        width = 4 if tok == "FM" else 8
        buf = inp.read_exact(rows * cols * width, f"the {rows} x {cols} matrix")
        mat = np.frombuffer(buf, dtype="<f4" if tok == "FM" else "<f8").reshape(rows, cols)
        return mat if tok == "FM" else mat.astype(np.float32)
    if tok in ("CM", "CM2", "CM3"):
        from kaldiio.matio import read_matrix_or_vector
        head = bytes(inp.read_exact(16, "the compressed matrix's header"))
        rows, cols = struct.unpack("<ii", head[8:])
        if rows < 0 or cols < 0:
            raise _Bad(f"corrupt compressed matrix header: {rows} rows x {cols} columns", obj)
        body = {"CM": 8 * cols + rows * cols, "CM2": 2 * rows * cols, "CM3": rows * cols}[tok]
        data = inp.read_exact(body, f"the {rows} x {cols} compressed matrix")
        raw = b"\0B" + tok.encode() + b" " + head + bytes(data)
        try:
            mat = read_matrix_or_vector(io.BytesIO(raw))
        except Exception as e:  # noqa: BLE001 - kaldiio's decoder: any failure is damaged data
            raise _Bad(f"cannot decode the compressed matrix: {e or type(e).__name__}", obj) from None
        return np.array(mat, dtype=np.float32)
    if tok in _KINDS:
        raise _Bad(f"expected a matrix (frames x dims), found {_KINDS[tok]}", obj, other_object=True)
    raise _Bad(f"unknown binary type {_preview(tok.encode('latin-1'))}: expected FM, DM, CM, CM2 or CM3", obj)


def _read_text_matrix(inp: _Input, obj: int) -> np.ndarray:
    line_pos = inp.pos
    line = inp.readline()
    while line and not line.strip():
        line_pos = inp.pos
        line = inp.readline()
    s = line.lstrip()
    if not s.startswith(b"["):
        if not s:
            raise _Bad("the data ends where a matrix should begin (the archive is truncated)", obj)
        raise _Bad(f"expected a matrix ('\\0B' binary or '[' text), found {_preview(s)}", obj)
    rest = s[1:]
    rest_pos = line_pos + len(line) - len(rest)  # the byte where ``rest`` starts
    rows: List[np.ndarray] = []
    while True:
        close = rest.find(b"]")
        part = rest if close < 0 else rest[:close]
        if part.strip():
            row = _strict_row(part, lambda t: np.array(t.split(), dtype=np.float32), _FLOAT, _FLOAT_ROW,
                              rest_pos, f"row {len(rows)} of the text matrix: {{}} is not a number")
            if rows and row.size != rows[0].size:
                if close < 0 and row.size < rows[0].size and not inp.peek_line():
                    # A short last row where the data end: cut off, not ragged.
                    raise _Bad(f"the data ends inside row {len(rows)} of the text matrix ({row.size} of "
                               f"{rows[0].size} numbers, no closing ']'; the archive is truncated)", rest_pos)
                raise _Bad(f"ragged text matrix: row {len(rows)} has {row.size} numbers, row 0 has "
                           f"{rows[0].size}", rest_pos)
            rows.append(row)
        if close >= 0:
            if rest[close + 1:].strip():
                raise _Bad(f"unexpected {_preview(rest[close + 1:].strip())} after the matrix's ']'", rest_pos)
            break
        rest_pos = inp.pos
        rest = inp.readline()
        if not rest:
            raise _Bad("the data ends inside the text matrix (no closing ']'; the archive is truncated)", rest_pos)
    if not rows:
        return np.zeros((0, 0), np.float32)
    return np.stack(rows)


def _read_ints(inp: _Input, obj: int) -> np.ndarray:
    head = inp.read(2)
    if head == b"\0B":
        c = inp.read(1)
        if c != _SIZE_BYTE:
            inp.unread(c)
            tok = _read_token(inp)
            raise _Bad(f"expected an integer vector (ali-to-pdf output), found {_KINDS.get(tok, repr(tok))}", obj,
                       other_object=tok in _KINDS)
        inp.unread(c)
        n = _int32(inp, "the vector's length")
        if n < 0:
            raise _Bad(f"corrupt integer vector header: length {n}", obj)
        buf = inp.read_exact(5 * n, f"the vector of {n:,} integers")
        arr = np.frombuffer(buf, dtype=[("size", "u1"), ("value", "<i4")])
        if n and (arr["size"] != 4).any():
            i = int(np.argmax(arr["size"] != 4))
            raise _Bad(f"corrupt integer vector: element {i} has size byte {arr['size'][i]}, expected 4", obj)
        return arr["value"].astype(np.int32)
    inp.unread(head)
    line = inp.readline()
    body = line
    stripped = line.strip()
    if stripped.startswith(b"[") and stripped.endswith(b"]"):  # Kaldi's '[ 1 2 3 ]' form
        lo = line.index(b"[") + 1
        body = b" " * lo + line[lo:line.rindex(b"]")]
    values = _strict_row(body, lambda t: [int(x) for x in t.split()], _INT, _INT_ROW, obj,
                         "expected integers (pdf ids), found {}")
    if values and not -2**31 <= min(values) <= max(values) < 2**31:
        for m, v in zip(_TOKEN.finditer(body), values):
            if not -2**31 <= v < 2**31:
                raise _Bad(f"{v} does not fit a 32-bit integer (pdf ids are int32)", obj + m.start())
    return np.array(values, dtype=np.int32)


def _read_object(inp: _Input, kind: str) -> np.ndarray:
    obj = inp.pos
    if kind == "ints":
        return _read_ints(inp, obj)
    head = inp.read(2)
    if head == b"\0B":
        return _read_binary_matrix(inp, obj)
    inp.unread(head)
    return _read_text_matrix(inp, obj)


def check_finite(mat: np.ndarray, where: str, what: str = "features", why: Optional[str] = None) -> None:
    """Error ``where: frame r, column c of the {what} is nan (...)`` unless every value of the
    (frames x dims) ``mat`` is finite. ``why`` ends the message (default: they must be finite)."""
    if mat.size and not np.isfinite(mat).all():
        bad = ~np.isfinite(mat)
        r, c = (int(i) for i in np.argwhere(bad)[0])
        n = int(bad.sum())
        raise Error(f"{where}: frame {r}, column {c} of the {what} is {mat[r, c]} ({n:,} non-finite "
                    f"value{'s' if n > 1 else ''} in this utterance); {why or what + ' must be finite'}")
