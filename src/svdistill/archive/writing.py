"""TableWriter and write_table: (key, matrix) to a wspecifier, an archive and its scp all or
nothing, never over an input that is still needed."""
from __future__ import annotations

import struct
from typing import Iterable, Sequence, Tuple

import numpy as np

from ..errors import Error
from ..io import same_file
from .matrices import _SIZE_BYTE
from .outputs import _Output
from .scp import table_files
from .specifiers import WSpec, _is_command, _is_std, output_files, parse_rspecifier, parse_wspecifier


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
