"""read_table: the (key, array) of an rspecifier in table order, an archive read as it arrives
(a file, stdin or a command), an scp through ScpTable; every fault one error naming the table,
the utterance and the byte."""
from __future__ import annotations

import warnings
from typing import Generator, Optional, Tuple

import numpy as np

from ..errors import Error
from .faults import _Bad, _format_error
from .inputs import OpenInputs, _Input
from .matrices import _read_key, _read_object, check_finite
from .scp import ScpTable
from .specifiers import parse_rspecifier


def _locate(spec: str, key: Optional[str], last: Optional[str], pos: int, origin: str) -> str:
    if key is not None:
        after = f"after utterance {last}" if last is not None else "the first utterance"
        return f"{spec}: utterance {key} (byte {pos:,} {origin}, {after})"
    after = f"after utterance {last}" if last is not None else "before any utterance"
    return f"{spec} (byte {pos:,} {origin}, {after})"


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
