"""The exception family: every error svdistill raises on purpose is an :class:`Error`."""
from __future__ import annotations

from ._core import Error, FormatError

__all__ = ["Error", "FormatError", "RankError"]


class RankError(Error):
    """A rank policy that cannot be applied: missing or conflicting policies, a rank
    above min(out, in), a ``ranks`` list of the wrong length, a selected component
    that is not an affine layer."""
