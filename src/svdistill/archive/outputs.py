"""The bytes of a wxfilename: a file (written to a temporary beside it and renamed into place
on commit, or left untouched on abort), stdout, or a command whose exit status is checked."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from typing import IO, Optional

from .. import _core
from ..errors import Error
from ..io import discard_output
from .commands import describe_status
from .specifiers import _command_of, _is_command, _is_std


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
