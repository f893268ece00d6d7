"""scp files: lines 'KEY ARCHIVE:OFFSET' (or 'KEY COMMAND |', with Kaldi's '[r1:r2,c1:c2]'
ranges), each entry loaded on demand; and the files an rspecifier reads, directly or through
its scp."""
from __future__ import annotations

import re
from typing import List, NamedTuple, Optional, Set, Tuple

import numpy as np

from ..errors import Error
from .faults import _Bad, _format_error
from .inputs import OpenInputs, _Input
from .matrices import _read_object, check_finite
from .specifiers import RSpec, _is_command, _is_std, parse_rspecifier


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
