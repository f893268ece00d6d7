"""Kaldi tables (archives and scp files), read and written as Kaldi's own tools do.

One place for every table svdistill touches (features, posteriors, alignments):

* :func:`read_table` yields ``(key, array)`` from an rspecifier (``ark:FILE``,
  ``scp:FILE``, ``ark:COMMAND |``, ``ark:-``; options such as ``ark,p:``). Any
  failure -- a truncated or damaged archive, a wrong scp offset, an unreadable
  file, a command that fails -- is one :class:`~svdistill.Error` naming the
  table, the utterance (the failing one when its key was read, and the last
  complete one) and the byte offset. Features are checked to be finite when
  read (Kaldi's nnet-forward stops on NaN/inf the same way).
* :class:`ScpTable` gives the entries of an scp file, each loaded on demand.
* :class:`TableWriter` writes ``ark:``/``ark,t:``/``ark,scp:`` outputs. A file
  output is written to a temporary file beside it and renamed into place when
  complete, so an error, Ctrl-C or SIGTERM never leaves a partial archive and an
  output may name its own input (as ``copy X X`` may). An output that would
  invalidate an input it is read from (an archive an input scp points into) is
  refused. Commands (``ark:| gzip -c > f.gz``) and stdout cannot be atomic; a
  command that fails is reported with its exit status.

Commands run through ``/bin/sh`` (as Kaldi's popen); their exit status is checked
when the table is closed, as Kaldi does. The matrix encodings are Kaldi's: binary
``FM``/``DM`` and compressed ``CM``/``CM2``/``CM3`` (decoded by kaldiio), text
``[ ... ]``; integer vectors (alignments) binary or text.
"""
from __future__ import annotations

import io
import os
import re
import signal
import stat
import struct
import subprocess
import sys
import warnings
from typing import (IO, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Set, Tuple)

import numpy as np

from . import _core
from .errors import Error, FormatError

RSPECIFIER_HELP = ("an rspecifier is 'ark:FILE', 'scp:FILE' (lines 'KEY ARCHIVE:OFFSET'), 'ark:COMMAND |' "
                   "or 'ark:-' (stdin), optionally with Kaldi's options, e.g. 'ark,p:FILE'")
WSPECIFIER_HELP = ("a wspecifier is 'ark:FILE', 'ark,scp:FILE.ark,FILE.scp', 'ark:| COMMAND' or 'ark:-' "
                   "(stdout); 'ark,t:' writes text")

_READ_OPTIONS = {"b", "t", "o", "no", "p", "np", "s", "ns", "cs", "ncs", "bg"}
_WRITE_OPTIONS = {"b", "t", "f", "nf", "p"}
_MAX_KEY = 65536         # bytes without whitespace: not a key, not an archive
_MAX_LINE = 1 << 26      # one text row (a 440-dim float row is ~5 KB)
_CHUNK = 1 << 26         # pipes are read in chunks: a damaged size never allocates more than arrived
_SIZE_BYTE = b"\x04"     # Kaldi writes every binary int32 preceded by its size


# ----------------------------------------------------------------- specifiers


class RSpec(NamedTuple):
    kind: str          # "ark" or "scp"
    name: str          # the rxfilename: a path, "-" or "COMMAND |"
    permissive: bool   # ",p": stop (archive) or skip (scp) at an unreadable entry, with a warning
    text: str          # as given, for messages


class WSpec(NamedTuple):
    ark: str
    scp: Optional[str]
    binary: bool
    flush: bool
    text: str


def _options(spec: str, kind: str, help_text: str) -> Tuple[List[str], str]:
    if not isinstance(spec, str):
        raise Error(f"expected a Kaldi {kind} string, got {type(spec).__name__}; {help_text}")
    if ":" not in spec:
        raise Error(f"'{spec}' is not a {kind}: {help_text}")
    before, after = spec.split(":", 1)
    # Kaldi splits the options on commas and spaces, keeping empty ones (which it refuses).
    return re.split(r"[, ]", before), after


def parse_rspecifier(rspecifier: str) -> RSpec:
    """Kaldi's ClassifyRspecifier: ``[options,]ark:NAME`` or ``[options,]scp:NAME``."""
    opts, name = _options(rspecifier, "rspecifier", RSPECIFIER_HELP)
    kinds = [o for o in opts if o in ("ark", "scp")]
    bad = [o for o in opts if o not in ("ark", "scp") and o not in _READ_OPTIONS]
    if len(kinds) != 1 or bad:
        why = (f"unknown option '{bad[0]}'" if bad else
               "it names both 'ark' and 'scp'" if len(kinds) > 1 else "it names neither 'ark' nor 'scp'")
        raise Error(f"'{rspecifier}' is not a valid rspecifier ({why}): {RSPECIFIER_HELP}")
    if not name.strip():
        raise Error(f"'{rspecifier}': no file name after the colon: {RSPECIFIER_HELP}")
    permissive = False
    for o in opts:  # the last of p / np wins, as in Kaldi
        permissive = True if o == "p" else False if o == "np" else permissive
    return RSpec(kinds[0], name, permissive, rspecifier)


def parse_wspecifier(wspecifier: str) -> WSpec:
    """Kaldi's ClassifyWspecifier: ``ark:NAME`` or ``ark,scp:ARK,SCP`` with b/t/f/nf/p options."""
    opts, name = _options(wspecifier, "wspecifier", WSPECIFIER_HELP)
    kinds = [o for o in opts if o in ("ark", "scp")]
    bad = [o for o in opts if o not in ("ark", "scp") and o not in _WRITE_OPTIONS]
    if bad or kinds not in (["ark"], ["ark", "scp"]):
        why = (f"unknown option '{bad[0]}'" if bad else
               "writing only an scp is not supported: give 'ark,scp:FILE.ark,FILE.scp'" if kinds == ["scp"] else
               "'ark' must come before 'scp'" if kinds == ["scp", "ark"] else "it does not name 'ark'")
        raise Error(f"'{wspecifier}' is not a valid wspecifier ({why}): {WSPECIFIER_HELP}")
    binary, flush = True, False
    for o in opts:
        binary = True if o == "b" else False if o == "t" else binary
        flush = True if o == "f" else False if o == "nf" else flush
    scp = None
    if kinds == ["ark", "scp"]:
        if "," not in name:
            raise Error(f"'{wspecifier}': 'ark,scp:' needs two names, 'ark,scp:FILE.ark,FILE.scp'")
        name, scp = name.split(",", 1)
        if not scp.strip():
            raise Error(f"'{wspecifier}': no scp file name after the comma")
    if not name.strip():
        raise Error(f"'{wspecifier}': no file name after the colon: {WSPECIFIER_HELP}")
    return WSpec(name, scp, binary, flush, wspecifier)


def _is_command(name: str) -> bool:
    s = name.strip()
    return s.endswith("|") or s.startswith("|")


def _command_of(name: str) -> str:
    s = name.strip()
    return (s[:-1] if s.endswith("|") else s[1:]).strip()


def _is_std(name: str) -> bool:
    return name.strip() in ("-", "")


def describe_status(returncode: int) -> str:
    """An exit status in words: 'exit status 1', 'exit status 127: command not found', 'killed by SIGKILL'."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    hint = {126: ": the command cannot be executed", 127: ": command not found"}.get(returncode, "")
    return f"exit status {returncode}{hint}"


# ----------------------------------------------------------------- reading


class _Bad(Exception):
    """A fault in the bytes of a table; ``pos`` is the byte where it was found."""

    def __init__(self, detail: str, pos: int) -> None:
        super().__init__(detail)
        self.detail, self.pos = detail, pos


class _Input:
    """The bytes of an rxfilename (a file, stdin or a command's output), counting the position."""

    def __init__(self, name: str, where: str) -> None:
        self.name, self.pos, self.size = name, 0, None
        self.proc: Optional[subprocess.Popen] = None
        self._pending = b""
        self._own = True
        if _is_command(name):
            self.cmd = _command_of(name)
            if name.strip().startswith("|") or not self.cmd:
                raise Error(f"{where}: '{name}' is not an input command: write 'ark:COMMAND |'")
            try:
                self.proc = subprocess.Popen(self.cmd, shell=True, stdout=subprocess.PIPE)
            except OSError as e:
                raise Error(f"{where}: cannot run '{self.cmd}': {e.strerror or e}") from None
            self.f: IO[bytes] = self.proc.stdout  # type: ignore[assignment]
        elif _is_std(name):
            self.f, self._own = sys.stdin.buffer, False
        else:
            try:
                self.f = open(name, "rb")
            except OSError as e:
                raise Error(f"{where}: cannot open {name}: {e.strerror or e}") from None
            st = os.fstat(self.f.fileno())
            if stat.S_ISREG(st.st_mode):
                self.size = st.st_size

    @property
    def origin(self) -> str:
        """How to name a byte position: 'byte N of FILE' / 'of the command's output' / 'of stdin'."""
        return ("of the command's output" if self.proc is not None
                else "of stdin" if not self._own else "of " + self.name)

    def read(self, n: int) -> bytes:
        out = b""
        if self._pending:
            out, self._pending = self._pending[:n], self._pending[n:]
            n -= len(out)
        while n > 0:
            got = self.f.read(min(n, _CHUNK))
            if not got:
                break
            out += got
            n -= len(got)
        self.pos += len(out)
        return out

    def read_exact(self, n: int, what: str) -> bytearray:
        """``n`` bytes into a writable buffer, or _Bad saying how many of them the table holds."""
        start = self.pos
        if self.size is not None and not self._pending and start + n > self.size:
            raise _Bad(f"the data ends inside {what}: it needs {n:,} bytes, only {self.size - start:,} "
                       f"remain (the archive is truncated or damaged)", start)
        buf = bytearray(n)
        view = memoryview(buf)
        k = 0
        if self._pending:
            k = min(n, len(self._pending))
            view[:k] = self._pending[:k]
            self._pending = self._pending[k:]
        while k < n:
            got = self.f.readinto(view[k:k + _CHUNK])
            if not got:
                break
            k += got
        self.pos += k
        if k < n:
            raise _Bad(f"the data ends inside {what}: it needs {n:,} bytes, only {k:,} followed "
                       f"(the archive is truncated)", start)
        return buf

    def readline(self) -> bytes:
        if self._pending:
            nl = self._pending.find(b"\n")
            if nl >= 0:
                line, self._pending = self._pending[:nl + 1], self._pending[nl + 1:]
            else:
                line, self._pending = self._pending + self.f.readline(_MAX_LINE), b""
        else:
            line = self.f.readline(_MAX_LINE)
        self.pos += len(line)
        return line

    def unread(self, data: bytes) -> None:
        self._pending = data + self._pending
        self.pos -= len(data)

    def seek(self, offset: int) -> None:
        self._pending = b""
        self.f.seek(offset)
        self.pos = offset

    def finish(self) -> Optional[str]:
        """Close after reading all: for a command, how it failed (None if it exited 0)."""
        if self._own:
            self.f.close()
        if self.proc is None:
            return None
        rc = self.proc.wait()
        return None if rc == 0 else f"the command '{self.cmd}' failed ({describe_status(rc)})"

    def abandon(self, wait: float = 0.0) -> Optional[str]:
        """Close before the end (an error, or the reader stopped). With ``wait``: a command that
        had already failed by then is returned as finish() does, to explain damaged data."""
        failed = None
        if self.proc is not None and wait > 0:
            try:
                rc = self.proc.wait(timeout=wait)
                if rc != 0:
                    failed = f"the command '{self.cmd}' failed ({describe_status(rc)})"
            except subprocess.TimeoutExpired:
                pass
        if self._own:
            try:
                self.f.close()
            except OSError:
                pass
        if self.proc is not None and self.proc.poll() is None:
            # Its output is no longer read: it ends on SIGPIPE at its next write, or now.
            try:
                self.proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return failed


def _preview(data: bytes) -> str:
    text = data[:12]
    if all(32 <= b < 127 for b in text):
        return repr(text.decode("ascii"))
    return "bytes " + " ".join(f"{b:02x}" for b in text)


def _read_key(inp: _Input) -> Optional[str]:
    """The next key (whitespace skipped before it, one space or tab after it consumed), None at the end."""
    while True:
        c = inp.read(1)
        if not c:
            return None
        if c not in b" \t\r\n":
            break
    start = inp.pos - 1
    if start == 0 and c == b"\x1f":
        head = c + inp.read(1)
        if head == b"\x1f\x8b":
            raise _Bad("this is gzip-compressed data, not an archive: read it through a command, "
                       "e.g. 'ark:gunzip -c FILE |'", 0)
        inp.unread(head[1:])
    buf = bytearray(c)
    while True:
        c = inp.read(1)
        if not c:
            raise _Bad(f"the data ends after the key {_preview(bytes(buf))}: no matrix follows it "
                       "(the archive is truncated, or this is not a Kaldi archive)", start)
        if c in b" \t":
            break
        if c in b"\r\n":
            inp.unread(c)  # as Kaldi: a newline after a key is allowed and not consumed
            break
        buf += c
        if len(buf) > _MAX_KEY:
            raise _Bad(f"no utterance key ({_MAX_KEY:,} bytes without a space): this is not a Kaldi "
                       "archive, or it is damaged", start)
    try:
        key = buf.decode("utf-8")
    except UnicodeDecodeError:
        key = ""
    if not key or any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        raise _Bad(f"expected an utterance key, found {_preview(bytes(buf))}: this is not a Kaldi archive, "
                   "or it is damaged (or an scp offset is wrong)", start)
    return key


def _read_token(inp: _Input) -> str:
    start = inp.pos
    tok = bytearray()
    while len(tok) <= 4:
        c = inp.read(1)
        if not c:
            raise _Bad("the data ends inside a binary header (the archive is truncated)", start)
        if c == b" ":
            return tok.decode("latin-1")
        tok += c
    raise _Bad(f"expected a binary type (FM, DM, CM, CM2, CM3), found {_preview(bytes(tok))}", start)


def _int32(inp: _Input, what: str) -> int:
    start = inp.pos
    b = inp.read_exact(5, what)
    if b[:1] != _SIZE_BYTE:
        raise _Bad(f"corrupt binary header: {what} should be a 4-byte integer, found size byte {b[0]}", start)
    return struct.unpack("<i", bytes(b[1:]))[0]


_KINDS = {"FM": "a float matrix (FM)", "DM": "a double matrix (DM)", "CM": "a compressed matrix (CM)",
          "CM2": "a compressed matrix (CM2)", "CM3": "a compressed matrix (CM3)", "FV": "a float vector (FV)",
          "DV": "a double vector (DV)"}


def _read_binary_matrix(inp: _Input, obj: int) -> np.ndarray:
    tok = _read_token(inp)
    if tok in ("FM", "DM"):
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
        raise _Bad(f"expected a matrix (frames x dims), found {_KINDS[tok]}", obj)
    raise _Bad(f"unknown binary type {_preview(tok.encode('latin-1'))}: expected FM, DM, CM, CM2 or CM3", obj)


def _read_text_matrix(inp: _Input, obj: int) -> np.ndarray:
    line = inp.readline()
    while line and not line.strip():
        line = inp.readline()
    s = line.lstrip()
    if not s.startswith(b"["):
        if not s:
            raise _Bad("the data ends where a matrix should begin (the archive is truncated)", obj)
        raise _Bad(f"expected a matrix ('\\0B' binary or '[' text), found {_preview(s)}", obj)
    rest = s[1:]
    rows: List[np.ndarray] = []
    row_pos = obj
    while True:
        close = rest.find(b"]")
        part = rest if close < 0 else rest[:close]
        if part.strip():
            try:
                row = np.array(part.split(), dtype=np.float32)
            except ValueError:
                bad = next(t for t in part.split() if not _is_float(t))
                raise _Bad(f"row {len(rows)} of the text matrix: {_preview(bad)} is not a number", row_pos) from None
            if rows and row.size != rows[0].size:
                raise _Bad(f"ragged text matrix: row {len(rows)} has {row.size} numbers, row 0 has "
                           f"{rows[0].size}", row_pos)
            rows.append(row)
        if close >= 0:
            if rest[close + 1:].strip():
                raise _Bad(f"unexpected {_preview(rest[close + 1:].strip())} after the matrix's ']'", row_pos)
            break
        row_pos = inp.pos
        rest = inp.readline()
        if not rest:
            raise _Bad("the data ends inside the text matrix (no closing ']'; the archive is truncated)", row_pos)
    if not rows:
        return np.zeros((0, 0), np.float32)
    return np.stack(rows)


def _is_float(t: bytes) -> bool:
    try:
        float(t)
        return True
    except ValueError:
        return False


def _read_ints(inp: _Input, obj: int) -> np.ndarray:
    head = inp.read(2)
    if head == b"\0B":
        c = inp.read(1)
        if c != _SIZE_BYTE:
            inp.unread(c)
            tok = _read_token(inp)
            raise _Bad(f"expected an integer vector (ali-to-pdf output), found {_KINDS.get(tok, repr(tok))}", obj)
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
    toks = line.split()
    if toks[:1] == [b"["] and toks[-1:] == [b"]"]:
        toks = toks[1:-1]
    try:
        return np.array([int(t) for t in toks], dtype=np.int32)
    except ValueError:
        bad = next(t for t in toks if not t.lstrip(b"-").isdigit())
        raise _Bad(f"expected integers (pdf ids), found {_preview(bad)}", obj) from None


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


def _locate(spec: str, key: Optional[str], last: Optional[str], pos: int, origin: str) -> str:
    where = f"{spec}: utterance {key}" if key is not None else f"{spec}"
    after = f"after utterance {last}" if last is not None else "before any utterance"
    return f"{where} (byte {pos:,} {origin}, {after})"


def read_table(rspecifier: str, *, kind: str = "matrix", finite: bool = True) -> Iterator[Tuple[str, np.ndarray]]:
    """``(key, array)`` in table order: float32 (frames x dims) matrices, or int32 vectors with
    ``kind="ints"`` (alignments). ``finite``: matrices with NaN/inf are an error."""
    spec = parse_rspecifier(rspecifier)
    if spec.kind == "scp":
        table = ScpTable(rspecifier, kind=kind, finite=finite)
        try:
            for i in range(len(table)):
                try:
                    mat = table.load(i)
                except Error as e:
                    if not spec.permissive:
                        raise
                    warnings.warn(f"{e}; skipped ({spec.text}: permissive)", stacklevel=2)
                    continue
                yield table.keys[i], mat
        finally:
            table.close()
        return
    inp = _Input(spec.name, spec.text)
    last: Optional[str] = None
    ok = False
    try:
        while True:
            key = None
            try:
                key = _read_key(inp)
                if key is None:
                    break
                obj = inp.pos
                mat = _read_object(inp, kind)
            except (_Bad, OSError) as e:
                pos, detail = (e.pos, e.detail) if isinstance(e, _Bad) else (inp.pos, f"read error: {e.strerror or e}")
                why = inp.abandon(wait=1.0) if inp.proc is not None else None
                msg = f"{_locate(spec.text, key, last, pos, inp.origin)}: {detail}"
                if why:
                    msg += f"; {why}"
                if spec.permissive:
                    warnings.warn(f"{msg}; reading stops here ({spec.text}: permissive)", stacklevel=2)
                    ok = True
                    return
                raise FormatError(msg) from None
            if finite and kind == "matrix":
                check_finite(mat, f"{spec.text}: utterance {key} (byte {obj:,} {inp.origin})")
            yield key, mat
            last = key
        ok = True
        failed = inp.finish()
        if failed:
            read = f"the last utterance read was {last}" if last is not None else "no utterance was read"
            raise Error(f"{spec.text}: {failed}; {read}")
    finally:
        if not ok:
            inp.abandon()


class _ScpEntry(NamedTuple):
    key: str
    rx: str              # as written in the scp
    path: str            # the archive (or command, or file)
    offset: Optional[int]
    rows: Optional[slice]
    cols: Optional[slice]
    line: int


_RANGE = re.compile(r"^(.*)\[([^\[\]]*)\]$")
_OFFSET = re.compile(r"^(.*):(\d+)$")


def _parse_range(text: str) -> Tuple[Optional[slice], Optional[slice]]:
    """Kaldi's row/column range '[r1:r2]' or '[r1:r2,c1:c2]' (inclusive; an empty part is all)."""
    parts = text.split(",")
    if len(parts) > 2:
        raise ValueError(text)
    out: List[Optional[slice]] = []
    for p in parts:
        p = p.strip()
        if not p:
            out.append(None)
            continue
        a, b = p.split(":")
        lo, hi = int(a), int(b)
        if lo < 0 or hi < lo:
            raise ValueError(text)
        out.append(slice(lo, hi + 1))
    return out[0], out[1] if len(out) > 1 else None


def _parse_scp_line(line: str, n: int, where: str) -> _ScpEntry:
    parts = line.strip().split(None, 1)
    if len(parts) != 2:
        raise FormatError(f"{where}: line {n}: expected 'KEY ARCHIVE:OFFSET', found {line.strip()!r}")
    key, rx = parts[0], parts[1].strip()
    rows = cols = None
    path, offset = rx, None
    if not _is_command(rx):
        m = _RANGE.match(rx)
        if m:
            try:
                rows, cols = _parse_range(m.group(2))
            except ValueError:
                raise FormatError(f"{where}: line {n} (utterance {key}): bad range '[{m.group(2)}]': expected "
                                  "'[first:last]' or '[first:last,first:last]'") from None
            path = m.group(1)
        m = _OFFSET.match(path)
        if m:
            path, offset = m.group(1), int(m.group(2))
    return _ScpEntry(key, rx, path, offset, rows, cols, n)


def _read_scp_lines(spec: RSpec) -> List[_ScpEntry]:
    inp = _Input(spec.name, spec.text)
    entries: List[_ScpEntry] = []
    ok = False
    try:
        n = 0
        while True:
            raw = inp.readline()
            if not raw:
                break
            n += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise FormatError(f"{spec.text}: line {n} is not text: an scp file lists 'KEY ARCHIVE:OFFSET' "
                                  f"lines (is this an archive? then use 'ark:{spec.name}')") from None
            if line.strip():
                entries.append(_parse_scp_line(line, n, spec.text))
        ok = True
        failed = inp.finish()
        if failed:
            raise Error(f"{spec.text}: {failed}")
    except OSError as e:
        raise Error(f"{spec.text}: read error: {e.strerror or e}") from None
    finally:
        if not ok:
            inp.abandon()
    return entries


class ScpTable:
    """The entries of an scp file; ``load(i)`` reads entry ``i`` (keeping its archive open for the next)."""

    def __init__(self, rspecifier: str, *, kind: str = "matrix", finite: bool = True) -> None:
        spec = parse_rspecifier(rspecifier)
        if spec.kind != "scp":
            raise Error(f"'{rspecifier}' is not an scp rspecifier")
        self.spec, self.kind, self.finite = spec, kind, finite
        self.entries = _read_scp_lines(spec)
        self.keys = [e.key for e in self.entries]
        self._open: Optional[_Input] = None

    def __len__(self) -> int:
        return len(self.entries)

    def close(self) -> None:
        if self._open is not None:
            self._open.abandon()
            self._open = None

    def load(self, i: int) -> np.ndarray:
        e = self.entries[i]
        where = f"{self.spec.text}: utterance {e.key} (line {e.line}: {e.rx})"
        command = _is_command(e.path)
        inp = None
        try:
            if command:
                inp = _Input(e.path, where)
            else:
                if self._open is None or self._open.name != e.path:
                    self.close()
                    self._open = _Input(e.path, where)
                inp = self._open
                offset = e.offset or 0
                if inp.size is not None and offset >= inp.size:
                    raise _Bad(f"offset {offset:,} is at or past the end of {e.path} ({inp.size:,} bytes): the "
                               "scp does not match the archive (was it rewritten after the scp was made?)", offset)
                inp.seek(offset)
            mat = _read_object(inp, self.kind)
        except (_Bad, OSError) as err:
            if isinstance(err, _Bad):
                pos, detail = err.pos, err.detail
            else:
                pos, detail = (inp.pos if inp else 0), f"read error: {err.strerror or err}"
            if e.offset is not None and pos == e.offset and "found" in detail:
                detail += "; the scp offset does not point at the start of a matrix"
            msg = f"{where}: byte {pos:,} {inp.origin if inp else e.path}: {detail}"
            if command and inp is not None:
                why = inp.abandon(wait=1.0)
                msg += f"; {why}" if why else ""
            else:
                self.close()
            raise FormatError(msg) from None
        except BaseException:
            if command and inp is not None:
                inp.abandon()
            raise
        if command:
            failed = inp.finish()
            if failed:
                raise Error(f"{where}: {failed}")
        if e.rows is not None or e.cols is not None:
            if self.kind != "matrix":
                raise Error(f"{where}: a range applies to matrices only")
            for s, n, name in ((e.rows, mat.shape[0], "rows"), (e.cols, mat.shape[1], "columns")):
                if s is not None and s.stop > n:
                    raise Error(f"{where}: the range asks for {name} {s.start}..{s.stop - 1}, the matrix has {n}")
            mat = mat[e.rows if e.rows is not None else slice(None), e.cols if e.cols is not None else slice(None)]
        if self.finite and self.kind == "matrix":
            check_finite(mat, where)
        return mat


def table_files(rspecifier: str) -> Tuple[Set[str], Set[str]]:
    """(files the rspecifier reads directly, archives its scp points into): the files an output
    must not clobber. Commands and stdin are not files; an unreadable scp gives what it can."""
    try:
        spec = parse_rspecifier(rspecifier)
    except Error:
        return set(), set()
    if _is_command(spec.name) or _is_std(spec.name):
        return set(), set()
    direct = {spec.name}
    behind: Set[str] = set()
    if spec.kind == "scp":
        try:
            for e in _read_scp_lines(spec):
                if not _is_command(e.path) and not _is_std(e.path):
                    behind.add(e.path)
        except Error:
            pass
    return direct, behind


# ----------------------------------------------------------------- writing


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class _Output:
    """Bytes to a wxfilename: a file (temporary beside it, renamed on commit), stdout or a command."""

    def __init__(self, name: str, where: str) -> None:
        self.name, self.where, self.pos = name, where, 0
        self.proc: Optional[subprocess.Popen] = None
        self.tmp: Optional[str] = None
        if _is_command(name):
            self.cmd = _command_of(name)
            if not self.cmd:
                raise Error(f"{where}: an empty command: write 'ark:| COMMAND'")
            try:
                self.proc = subprocess.Popen(self.cmd, shell=True, stdin=subprocess.PIPE)
            except OSError as e:
                raise Error(f"{where}: cannot run '{self.cmd}': {e.strerror or e}") from None
            self.f: IO[bytes] = self.proc.stdin  # type: ignore[assignment]
        elif _is_std(name):
            self.f = sys.stdout.buffer
        else:
            # The one mechanism every output file shares (models, reports, plots): through
            # symlinks, a temporary beside the target with the target's mode, stale temporaries
            # of dead processes removed; a device or FIFO (/dev/null) is written in place.
            try:
                self.target, self.tmp = _core.prepare_output(name)
            except Error as e:
                raise Error(f"{where}: {e}") from None
            try:
                self.f = open(self.tmp if self.tmp is not None else self.target, "wb")
            except OSError as e:
                self.abort()
                raise Error(f"{where}: cannot write {name}: {e.strerror or e}") from None

    def _failed(self) -> str:
        rc = self.proc.wait()  # type: ignore[union-attr]
        return f"the command '{self.cmd}' failed ({describe_status(rc)})" if rc else \
            f"the command '{self.cmd}' stopped reading its input"

    def write(self, data: bytes) -> None:
        try:
            self.f.write(data)
        except BrokenPipeError:
            if self.proc is None:
                raise  # stdout closed by its reader ('| head'): the CLI stops quietly
            raise Error(f"{self.where}: {self._failed()} before all the output was written") from None
        except OSError as e:
            raise Error(f"{self.where}: cannot write {self.name}: {e.strerror or e}") from None
        self.pos += len(data)

    def flush(self) -> None:
        try:
            self.f.flush()
        except BrokenPipeError:
            if self.proc is None:
                raise
            raise Error(f"{self.where}: {self._failed()} before all the output was written") from None
        except OSError as e:
            raise Error(f"{self.where}: cannot write {self.name}: {e.strerror or e}") from None

    def commit(self) -> None:
        """Complete the output: a file appears (rename), a command must exit 0."""
        if self.proc is not None:
            try:
                self.f.close()
            except BrokenPipeError:
                raise Error(f"{self.where}: {self._failed()} before all the output was written") from None
            rc = self.proc.wait()
            if rc:
                raise Error(f"{self.where}: the command '{self.cmd}' failed ({describe_status(rc)})")
            return
        if self.tmp is None:
            self.flush()
            return
        try:
            self.f.close()
        except OSError as e:
            self.abort()
            raise Error(f"{self.where}: cannot write {self.name}: {e.strerror or e}") from None
        tmp, self.tmp = self.tmp, None
        try:
            _core.commit_output(tmp, self.target, self.name)  # fsync with SVDISTILL_FSYNC, rename
        except Error as e:
            raise Error(f"{self.where}: {e}") from None

    def abort(self) -> None:
        """Give up: a file output leaves nothing (an existing file is untouched); a command is stopped."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()  # so that it does not finish a partial output as if complete
            try:
                self.f.close()
            except OSError:
                pass
            self.proc.wait()
            return
        if self.tmp is not None:
            try:
                if getattr(self, "f", None) is not None:
                    self.f.close()
            except OSError:
                pass
            try:
                os.unlink(self.tmp)
            except OSError:
                pass
            self.tmp = None


class TableWriter:
    """Writes (key, matrix) to a Kaldi wspecifier; use as a context manager.

    On leaving the ``with`` block normally the output is completed (files
    renamed into place, commands checked); on any exception -- Ctrl-C included --
    it is abandoned and a file output leaves nothing behind.

    ``inputs``: the rspecifiers this output is computed from. An output archive
    that an input scp points into is refused (replacing it would leave that scp
    pointing at the wrong bytes); an output that is an input file itself is fine
    (it is replaced only when complete, after the input was read).
    """

    def __init__(self, wspecifier: str, *, inputs: Sequence[str] = ()) -> None:
        spec = parse_wspecifier(wspecifier)
        self.spec = spec
        self.count = 0
        files = [n for n in (spec.ark, spec.scp) if n is not None and not _is_command(n) and not _is_std(n)]
        if spec.scp is not None and len(files) == 2 and (files[0] == files[1] or _same_file(*files)):
            raise Error(f"{spec.text}: the archive and the scp are the same file")
        if not _is_command(spec.ark) and not _is_std(spec.ark):
            for rs in inputs:
                _, behind = table_files(rs)
                for path in behind:
                    if path == spec.ark or _same_file(path, spec.ark):
                        raise Error(f"{spec.text}: the output archive {spec.ark} is read through the input "
                                    f"{rs}: replacing it would leave that scp pointing at the wrong data; "
                                    "write to a new archive")
        if spec.scp is not None and (_is_command(spec.ark) or _is_std(spec.ark)):
            raise Error(f"{spec.text}: an scp needs the archive in a file (its offsets point into it)")
        self._ark = _Output(spec.ark, spec.text)
        try:
            self._scp = _Output(spec.scp, spec.text) if spec.scp is not None else None
        except BaseException:
            self._ark.abort()
            raise

    def write(self, key: str, mat: np.ndarray) -> None:
        if not isinstance(key, str) or not key or any(ch.isspace() for ch in key):
            raise Error(f"{self.spec.text}: utterance key {key!r}: keys must be non-empty and without "
                        "whitespace")
        mat = np.asarray(mat, dtype=np.float32)
        if mat.ndim != 2:
            raise Error(f"{self.spec.text}: utterance {key}: expected a 2-D matrix, got shape {mat.shape}")
        out = self._ark
        out.write(key.encode("utf-8") + b" ")
        offset = out.pos
        if self.spec.binary:
            out.write(b"\0BFM " + _SIZE_BYTE + struct.pack("<i", mat.shape[0]) + _SIZE_BYTE
                      + struct.pack("<i", mat.shape[1]))
            out.write(np.ascontiguousarray(mat, dtype="<f4").tobytes())
        else:
            rows = "".join("\n  " + " ".join(map(str, r)) + " " for r in mat)
            out.write((" [" + rows + "]\n").encode("ascii"))
        if self._scp is not None:
            self._scp.write(f"{key} {self.spec.ark}:{offset}\n".encode("utf-8"))
        if self.spec.flush:
            out.flush()
            if self._scp is not None:
                self._scp.flush()
        self.count += 1

    __call__ = write

    def commit(self) -> None:
        try:
            self._ark.commit()
        except BaseException:
            if self._scp is not None:
                self._scp.abort()
            raise
        if self._scp is not None:
            self._scp.commit()

    def abort(self) -> None:
        self._ark.abort()
        if self._scp is not None:
            self._scp.abort()

    def __enter__(self) -> "TableWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_table(wspecifier: str, items: Iterable[Tuple[str, np.ndarray]], *, inputs: Sequence[str] = ()) -> int:
    """Write every (key, matrix) of ``items``; returns how many. All or nothing for file outputs."""
    with TableWriter(wspecifier, inputs=inputs) as w:
        for k, m in items:
            w.write(k, m)
    return w.count
