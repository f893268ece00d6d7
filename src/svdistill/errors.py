"""The exception family: every error svdistill raises on purpose is an :class:`Error`.

A bad option value is reported through :func:`option_error`, which names the
option by its API keyword (``min_gain must lie in [0, 1), got 1.5``) and keeps
that keyword on the exception (``.option``, and the rest as ``.detail``), so the
command line can say the same thing in its own words (``--min-gain must ...``)
without a second copy of each check.
"""
from __future__ import annotations

from typing import Type

from ._core import Error, FormatError

__all__ = ["Error", "FormatError", "RankError", "option_error"]


class RankError(Error):
    """A rank policy that cannot be applied: missing or conflicting policies, a rank
    above min(out, in), a ``ranks`` list of the wrong length, a selected component
    that is not an affine layer."""


def option_error(option: str, detail: str, cls: Type[Error] = Error) -> Error:
    """An error about the value of the API keyword ``option``: ``"{option} {detail}"``.

    ``detail`` reads on from the option's name ("must be > 0, got -1"). Raise
    what this returns; the CLI rewrites the name as its flag.
    """
    e = cls(f"{option} {detail}")
    e.option = option
    e.detail = detail
    return e
