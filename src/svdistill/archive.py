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
import threading
import warnings
from typing import IO, Generator, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple

import numpy as np

from . import _core
from .errors import Error, FormatError
from .io import discard_output, same_file


def _format_error(message: str, file: str, offset: Optional[int] = None,
                  line: Optional[int] = None) -> FormatError:
    """A FormatError with the attributes the core's carry (file, offset, line, column,
    component_index, marker), so ``except FormatError as e: e.offset`` works for tables too."""
    e = FormatError(message)
    e.file, e.line = file, line
    e.offset = offset  # type: ignore[assignment]  # None: a line of an scp, no byte offset
    e.column = e.component_index = e.marker = None
    return e


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
    article = "an" if kind == "rspecifier" else "a"
    if not isinstance(spec, str):
        raise Error(f"expected a Kaldi {kind} string, got {type(spec).__name__}; {help_text}")
    if ":" not in spec:
        raise Error(f"'{spec}' is not {article} {kind}: {help_text}")
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

    def __init__(self, detail: str, pos: int, *, other_object: bool = False) -> None:
        super().__init__(detail)
        self.detail, self.pos = detail, pos
        self.other_object = other_object  # a whole object of another kind: not a wrong position


class _Input:
    """The bytes of an rxfilename (a file, stdin or a command's output), buffered, counting the position.

    ``pos`` is the position of the next byte the parser gets. Reads go through one
    buffer (keys and headers are parsed from it without a system call per byte);
    a matrix body is read in chunks of at most _CHUNK as it arrives, so a damaged
    size read from a pipe never allocates more than the data that came.
    """

    _BLOCK = 1 << 16

    def __init__(self, name: str, where: str) -> None:
        self.name, self.pos, self.size = name, 0, None
        self.proc: Optional[subprocess.Popen] = None
        self._buf = b""   # bytes read ahead; _buf[_off:] are not consumed yet
        self._off = 0
        self._own = True
        self._closed = False
        if _is_command(name):
            self.cmd = _command_of(name)
            if name.strip().startswith("|") or not self.cmd:
                raise Error(f"{where}: '{name}' is not an input command: write 'ark:COMMAND |'")
            try:
                # Its own session: the whole pipeline can be killed when reading stops early.
                self.proc = subprocess.Popen(self.cmd, shell=True, stdout=subprocess.PIPE,
                                             start_new_session=True)
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

    def _raw(self, n: int) -> bytes:
        """At most ``n`` bytes from the file: what is there (a pipe), without waiting for all ``n``."""
        read1 = getattr(self.f, "read1", None)
        return read1(n) if read1 is not None else self.f.read(n)

    def _more(self) -> bool:
        """Reads another block into the buffer; False at the end of the data."""
        got = self._raw(self._BLOCK)
        if not got:
            return False
        self._buf = self._buf[self._off:] + got if self._off < len(self._buf) else got
        self._off = 0
        return True

    def _take(self, n: int) -> bytes:
        out = self._buf[self._off:self._off + n]
        self._off += len(out)
        self.pos += len(out)
        return out

    def read(self, n: int) -> bytes:
        """At most ``n`` bytes (fewer only at the end of the data)."""
        while len(self._buf) - self._off < n and self._more():
            pass
        return self._take(n)

    def peek_until(self, pattern: "re.Pattern[bytes]", limit: int) -> Tuple[bytes, Optional["re.Match[bytes]"]]:
        """(the unconsumed buffer, the first match of ``pattern`` in it or None), reading
        more until it matches, the data end or ``limit`` bytes are buffered."""
        scanned = self._off
        while True:
            m = pattern.search(self._buf, scanned)
            if m is not None or len(self._buf) - self._off > limit:
                break
            scanned = max(self._off, len(self._buf) - 1)  # a match may need the byte before
            before = self._off
            if not self._more():
                break
            scanned -= before  # _more() moved the unconsumed bytes to the front
        return self._buf, m

    def skip_to(self, index: int) -> None:
        """Consume the buffer up to ``index`` (an index into what peek_until returned)."""
        self.pos += index - self._off
        self._off = index

    def read_exact(self, n: int, what: str) -> bytearray:
        """``n`` bytes into a writable buffer, or _Bad saying how many of them the table holds."""
        start = self.pos
        if n > sys.maxsize:
            raise _Bad(f"corrupt header: {what} would take {n:,} bytes, more than any memory "
                       "(the archive is damaged)", start)
        if self.size is not None and start + n > self.size:
            raise _Bad(f"the data ends inside {what}: it needs {n:,} bytes, only {self.size - start:,} "
                       f"remain (the archive is truncated or damaged)", start)
        have = min(n, len(self._buf) - self._off)
        if self.size is not None:
            # The file holds all n bytes: one buffer of the final size.
            buf = bytearray(n)
            buf[:have] = self._take(have)
            view = memoryview(buf)
            k = have
            while k < n:
                got = self.f.readinto(view[k:k + _CHUNK])  # type: ignore[attr-defined]
                if not got:
                    break
                k += got
            self.pos += k - have
        else:
            # A pipe or stdin: the size is only a claim until the bytes arrive.
            buf = bytearray(self._take(have))
            k = have
            while k < n:
                got = self._raw(min(n - k, _CHUNK))
                if not got:
                    break
                buf += got
                k += len(got)
            self.pos += k - have
        if k < n:
            raise _Bad(f"the data ends inside {what}: it needs {n:,} bytes, only {k:,} followed "
                       f"(the archive is truncated)", start)
        return buf

    def readline(self) -> bytes:
        """The next line with its newline (at most _MAX_LINE bytes; without a newline at the end)."""
        buf, m = self.peek_until(_NEWLINE, _MAX_LINE)
        end = m.end() if m is not None else min(len(buf), self._off + _MAX_LINE)
        return self._take(end - self._off)

    def peek_line(self) -> bytes:
        """The next line, left to be read again."""
        line = self.readline()
        self.unread(line)
        return line

    def unread(self, data: bytes) -> None:
        """Give back the ``data`` just read."""
        self._buf = data + self._buf[self._off:]
        self._off = 0
        self.pos -= len(data)

    def seek(self, offset: int) -> None:
        start = self.pos - self._off  # the file position of _buf[0]
        if start <= offset <= start + len(self._buf):
            self._off += offset - self.pos
            self.pos = offset
            return
        self._buf, self._off = b"", 0
        self.f.seek(offset)
        self.pos = offset

    def close(self) -> None:
        """Stop reading, from another thread: a command is killed (its whole process group),
        so that a reader blocked on its pipe gets the end of the data at once. A file or
        stdin is left to the reader (closing a descriptor under a blocked read does not
        wake it)."""
        self._closed = True
        if self.proc is not None and self.proc.poll() is None:
            _kill_command(self.proc)

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
        if self.proc is not None and wait > 0 and not self._closed:
            try:
                rc = self.proc.wait(timeout=wait)
                if rc != 0:
                    failed = f"the command '{self.cmd}' failed ({describe_status(rc)})"
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None and self.proc.poll() is None:
            # Its output is no longer read: it ends on SIGPIPE at its next write, or now.
            try:
                self.proc.wait(timeout=0 if self._closed else 1.0)
            except subprocess.TimeoutExpired:
                _kill_command(self.proc)
                self.proc.wait()
        if self._own:
            try:
                self.f.close()
            except OSError:
                pass
        return failed


def _kill_command(proc: subprocess.Popen) -> None:
    """SIGKILL to the command's whole process group (the shell and what it started: killing
    the shell alone leaves 'sleep 20' in 'cat f; sleep 20 |' holding the pipe open)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        try:
            proc.kill()
        except OSError:
            pass


def _preview(data: bytes) -> str:
    text = data[:12]
    if all(32 <= b < 127 for b in text):
        return repr(text.decode("ascii"))
    return "bytes " + " ".join(f"{b:02x}" for b in text)


_NOT_SPACE = re.compile(rb"[^ \t\r\n]")
_KEY_END = re.compile(rb"[ \t\r\n]")
_NEWLINE = re.compile(rb"\n")
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


def _locate(spec: str, key: Optional[str], last: Optional[str], pos: int, origin: str) -> str:
    if key is not None:
        after = f"after utterance {last}" if last is not None else "the first utterance"
        return f"{spec}: utterance {key} (byte {pos:,} {origin}, {after})"
    after = f"after utterance {last}" if last is not None else "before any utterance"
    return f"{spec} (byte {pos:,} {origin}, {after})"


class OpenInputs:
    """The inputs a reader has open, for another thread to stop it: :meth:`close` kills the
    input commands, so that a reader blocked on a command's pipe returns at once."""

    def __init__(self) -> None:
        self._open: Set[_Input] = set()
        self._lock = threading.Lock()
        self.closed = False

    def add(self, inp: _Input) -> None:
        with self._lock:
            self._open.add(inp)
            if self.closed:
                inp.close()

    def discard(self, inp: _Input) -> None:
        with self._lock:
            self._open.discard(inp)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            for inp in self._open:
                inp.close()


def read_table(rspecifier: str, *, kind: str = "matrix", finite: bool = True,
               inputs: Optional[OpenInputs] = None) -> Generator[Tuple[str, np.ndarray], None, None]:
    """``(key, array)`` in table order: float32 (frames x dims) matrices, or int32 vectors with
    ``kind="ints"`` (alignments). ``finite``: matrices with NaN/inf are an error. ``inputs``:
    where the files and commands it reads are registered while open (see OpenInputs)."""
    spec = parse_rspecifier(rspecifier)
    if spec.kind == "scp":
        table = ScpTable(rspecifier, kind=kind, finite=finite, inputs=inputs)
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
    if inputs is not None:
        inputs.add(inp)
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
                raise _format_error(msg, spec.name, pos) from None
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
        if inputs is not None:
            inputs.discard(inp)


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
        raise _format_error(f"{where}: line {n}: expected 'KEY ARCHIVE:OFFSET', found {line.strip()!r}",
                            where, line=n)
    key, rx = parts[0], parts[1].strip()
    rows = cols = None
    path, offset = rx, None
    if not _is_command(rx):
        m = _RANGE.match(rx)
        if m:
            try:
                rows, cols = _parse_range(m.group(2))
            except ValueError:
                raise _format_error(f"{where}: line {n} (utterance {key}): bad range '[{m.group(2)}]': "
                                    "expected '[first:last]' or '[first:last,first:last]'", where, line=n) from None
            path = m.group(1)
        m = _OFFSET.match(path)
        if m:
            path, offset = m.group(1), int(m.group(2))
    return _ScpEntry(key, rx, path, offset, rows, cols, n)


def _read_scp_lines(spec: RSpec, inputs: Optional[OpenInputs] = None) -> List[_ScpEntry]:
    inp = _Input(spec.name, spec.text)
    if inputs is not None:
        inputs.add(inp)
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
                raise _format_error(f"{spec.text}: line {n} is not text: an scp file lists 'KEY ARCHIVE:OFFSET' "
                                    f"lines (is this an archive? then use 'ark:{spec.name}')", spec.name,
                                    line=n) from None
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
        if inputs is not None:
            inputs.discard(inp)
    return entries


class ScpTable:
    """The entries of an scp file; ``load(i)`` reads entry ``i`` (keeping its archive open for the next)."""

    def __init__(self, rspecifier: str, *, kind: str = "matrix", finite: bool = True,
                 inputs: Optional[OpenInputs] = None) -> None:
        spec = parse_rspecifier(rspecifier)
        if spec.kind != "scp":
            raise Error(f"'{rspecifier}' is not an scp rspecifier")
        self.spec, self.kind, self.finite, self.inputs = spec, kind, finite, inputs
        self.entries = _read_scp_lines(spec, inputs)
        self.keys = [e.key for e in self.entries]
        self._open: Optional[_Input] = None

    def __len__(self) -> int:
        return len(self.entries)

    def _opened(self, inp: _Input) -> _Input:
        if self.inputs is not None:
            self.inputs.add(inp)
        return inp

    def _done(self, inp: _Input) -> None:
        if self.inputs is not None:
            self.inputs.discard(inp)

    def close(self) -> None:
        if self._open is not None:
            self._open.abandon()
            self._done(self._open)
            self._open = None

    def load(self, i: int) -> np.ndarray:
        e = self.entries[i]
        where = f"{self.spec.text}: utterance {e.key} (line {e.line}: {e.rx})"
        command = _is_command(e.path)
        inp = None
        try:
            if command:
                inp = self._opened(_Input(e.path, where))
            else:
                if self._open is None or self._open.name != e.path:
                    self.close()
                    self._open = self._opened(_Input(e.path, where))
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
            if e.offset is not None and pos == e.offset and "found" in detail \
                    and not getattr(err, "other_object", False):
                detail += "; the scp offset does not point at the start of a matrix"
            msg = f"{where}: byte {pos:,} {inp.origin if inp else e.path}: {detail}"
            if command and inp is not None:
                why = inp.abandon(wait=1.0)
                self._done(inp)
                msg += f"; {why}" if why else ""
            else:
                self.close()
            raise _format_error(msg, inp.name if inp else e.path, pos) from None
        except BaseException:
            if command and inp is not None:
                inp.abandon()
                self._done(inp)
            raise
        if command:
            self._done(inp)
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


def output_files(wspecifier: str) -> List[str]:
    """The files a wspecifier writes (the archive, then the scp); none for commands and stdout.
    Raises Error for a wspecifier that is not valid."""
    spec = parse_wspecifier(wspecifier)
    return [n for n in (spec.ark, spec.scp) if n is not None and not _is_command(n) and not _is_std(n)]


# ----------------------------------------------------------------- writing


class _Output:
    """Bytes to a wxfilename: a file (temporary beside it, renamed on commit), stdout or a command."""

    def __init__(self, name: str, where: str) -> None:
        self.name, self.where, self.pos = name, where, 0
        self.proc: Optional[subprocess.Popen] = None
        self.tmp: Optional[str] = None
        self._lock_fd = -1  # holds the temporary's lock until the rename
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
                self.target, self.tmp, self._lock_fd = _core.prepare_output(name)
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

    def finish(self) -> None:
        """A file output: every byte written and the temporary closed; commit() then renames it."""
        if self.proc is not None or self.tmp is None or self.f.closed:
            return
        try:
            self.f.close()
        except OSError as e:
            self.abort()
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
        self.finish()
        tmp, self.tmp = self.tmp, None
        try:
            # fsync with SVDISTILL_FSYNC, rename, let go of the temporary's lock
            _core.commit_output(tmp, self.target, self.name, self._lock_fd)
        except Error as e:
            raise Error(f"{self.where}: {e}") from None

    def keep_previous(self) -> "_Previous":
        """Before commit(): a way back to what the target holds now (see restore())."""
        prev = _Previous()
        if self.tmp is None or self.proc is not None:
            return prev
        try:
            st = os.lstat(self.target)
        except FileNotFoundError:
            prev.existed = False
            return prev
        except OSError:
            return prev
        if not stat.S_ISREG(st.st_mode):
            return prev
        try:
            # A second name for the current file (no copy): a temporary of the usual naming,
            # so that a crash here leaves nothing the next run does not clean up.
            _, path, fd = _core.prepare_output(self.name)
            assert path is not None  # the target is a regular file: a temporary was made
            os.unlink(path)
            os.link(self.target, path)
            prev.path, prev.fd = path, fd
        except (OSError, Error):
            prev.path = None
        return prev

    def restore(self, prev: "_Previous") -> None:
        """After commit(): put back what keep_previous() kept (the pair's second half failed)."""
        try:
            if prev.existed is False:
                os.unlink(self.target)
            elif prev.path is not None:
                os.replace(prev.path, self.target)
                prev.path = None
        except OSError:
            pass
        prev.drop()

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
            discard_output(self.tmp, self._lock_fd)
            self.tmp = None


class _Previous:
    """What a target held before a commit: ``existed`` False (none: restoring removes the new
    file), or a second name ``path`` for the old file (``fd`` holds its lock); neither: it
    cannot be restored."""

    def __init__(self) -> None:
        self.existed: Optional[bool] = None
        self.path: Optional[str] = None
        self.fd = -1

    def drop(self) -> None:
        if self.path is not None:
            discard_output(self.path, self.fd)
            self.path = None
        elif self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
        self.fd = -1


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
        files = output_files(wspecifier)
        if spec.scp is not None and len(files) == 2 and (files[0] == files[1] or same_file(*files)):
            raise Error(f"{spec.text}: the archive and the scp are the same file ({files[0]}); "
                        "give them two names, e.g. 'ark,scp:out.ark,out.scp'")
        for rs in inputs:
            _check_not_an_input(spec, rs)
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
        """The archive and its scp appear together: both are written out completely first, then
        renamed archive first (an scp never points into an archive that is not there yet). If
        the scp's rename fails, the archive's previous content is put back (or the new archive
        removed when there was none), so the pair is all or nothing. What POSIX cannot close:
        between the two renames (microseconds), and if the process dies there, a reader may see
        the new archive with the old scp."""
        if self._scp is None:
            self._ark.commit()
            return
        try:
            self._ark.finish()
            self._scp.finish()
        except BaseException:
            self.abort()
            raise
        previous = self._ark.keep_previous()
        try:
            self._ark.commit()
        except BaseException:
            self._scp.abort()
            previous.drop()
            raise
        try:
            self._scp.commit()
        except BaseException:
            self._ark.restore(previous)
            raise
        previous.drop()

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


def _check_not_an_input(spec: WSpec, rspecifier: str) -> None:
    """Refuses an output file that is a file of the input ``rspecifier``. Only the output archive
    may be an input archive read directly ('ark:f.ark' in and out, as 'copy X X'): the new one
    replaces it when complete, after it was read. An input's scp, or an archive an input scp
    points into, is refused (replacing either would leave that scp indexing other data), and so
    is an scp written over an input archive."""
    direct, behind = table_files(rspecifier)
    try:
        kind = parse_rspecifier(rspecifier).kind
    except Error:
        return
    for out, role in ((spec.ark, "archive"), (spec.scp, "scp")):
        if out is None or _is_command(out) or _is_std(out):
            continue
        for path in sorted(direct) + sorted(behind):
            if not (path == out or same_file(path, out)):
                continue
            if path in direct and kind == "ark" and role == "archive":
                continue
            if path not in direct:
                raise Error(f"{spec.text}: the output {role} {out} is read through the input {rspecifier}: "
                            "replacing it would leave that scp pointing at the wrong data; write to a new file")
            what = "the scp file" if kind == "scp" else "the archive"
            raise Error(f"{spec.text}: the output {role} {out} is {what} of the input {rspecifier}: refusing "
                        "to overwrite an input; write to a new file")


def write_table(wspecifier: str, items: Iterable[Tuple[str, np.ndarray]], *, inputs: Sequence[str] = ()) -> int:
    """Write every (key, matrix) of ``items``; returns how many. All or nothing for file outputs."""
    with TableWriter(wspecifier, inputs=inputs) as w:
        for k, m in items:
            w.write(k, m)
    return w.count
