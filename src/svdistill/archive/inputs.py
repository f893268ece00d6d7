"""The bytes of an rxfilename -- a file, stdin or a command's output -- read through one buffer
that counts the byte position, and the inputs a reader has open, so that another thread can
stop it."""
from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import threading
from typing import IO, Optional, Set, Tuple

from ..errors import Error
from .commands import _kill_command, describe_status
from .faults import _Bad
from .specifiers import _command_of, _is_command, _is_std

_MAX_LINE = 1 << 26      # one text row (a 440-dim float row is ~5 KB)
_CHUNK = 1 << 26         # pipes are read in chunks: a damaged size never allocates more than arrived
_NEWLINE = re.compile(rb"\n")


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
