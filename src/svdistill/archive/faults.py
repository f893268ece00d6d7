"""A fault in the bytes of a table, as the readers raise it inside (_Bad, at a byte) and as
they report it (a FormatError carrying the file and the byte, like the core's)."""
from __future__ import annotations

from typing import Optional

from ..errors import FormatError


class _Bad(Exception):
    """A fault in the bytes of a table; ``pos`` is the byte where it was found."""

    def __init__(self, detail: str, pos: int, *, other_object: bool = False) -> None:
        super().__init__(detail)
        self.detail, self.pos = detail, pos
        self.other_object = other_object  # a whole object of another kind: not a wrong position


def _format_error(message: str, file: str, offset: Optional[int] = None,
                  line: Optional[int] = None) -> FormatError:
    """A FormatError with the attributes the core's carry (file, offset, line, column,
    component_index, marker), so ``except FormatError as e: e.offset`` works for tables too."""
    e = FormatError(message)
    e.file, e.line = file, line
    e.offset = offset  # type: ignore[assignment]  # None: a line of an scp, no byte offset
    e.column = e.component_index = e.marker = None
    return e


def _preview(data: bytes) -> str:
    text = data[:12]
    if all(32 <= b < 127 for b in text):
        return repr(text.decode("ascii"))
    return "bytes " + " ".join(f"{b:02x}" for b in text)
