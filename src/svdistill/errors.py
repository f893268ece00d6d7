"""The exception family: every error svdistill raises on purpose is an :class:`Error`.

A bad option value is reported through :func:`option_error`, which names the
option by its API keyword (``min_gain must lie in [0, 1), got 1.5``) and keeps
that keyword on the exception (``.option``, and the rest as ``.detail``), so the
command line can say the same thing in its own words (``--min-gain must ...``)
without a second copy of each check.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence, Type

from ._core import Error, FormatError

__all__ = ["Error", "FormatError", "RankError", "option_error", "option_text"]

#: The default of a deprecated keyword: left out.
NOT_GIVEN: Any = object()


class RankError(Error):
    """A rank policy that cannot be applied: missing or conflicting policies, a rank
    above min(out, in), a ``ranks`` list of the wrong length, a selected component
    that is not an affine layer."""


def option_error(option: str, detail: str, cls: Type[Error] = Error, others: Sequence[str] = ()) -> Error:
    """An error about the value of the API keyword ``option``: ``"{option} {detail}"``.

    ``detail`` reads on from the option's name ("must be > 0, got -1"). Other
    keywords it names are written as ``{keyword}`` placeholders and listed in
    ``others`` ("is 5, more than {max_epochs} (2)", others=["max_epochs"]):
    ``str()`` says each as its keyword, the CLI as its flag. Raise what this
    returns.
    """
    others = tuple(others)
    e = cls(f"{option} {_fill(detail, others, str)}")
    # Instance attributes: the core's Error class declares none (see _core.pyi).
    e.option = option  # type: ignore[attr-defined]
    e.detail = detail  # type: ignore[attr-defined]
    e.others = others  # type: ignore[attr-defined]
    return e


def _fill(detail: str, others: Sequence[str], name: Callable[[str], str]) -> str:
    for keyword in others:
        detail = detail.replace("{" + keyword + "}", name(keyword))
    return detail


def option_text(e: Error, name: Callable[[str], str]) -> str:
    """An :func:`option_error` as it reads when each keyword is said as ``name(keyword)``."""
    return f"{name(e.option)} {_fill(e.detail, getattr(e, 'others', ()), name)}"  # type: ignore[attr-defined]


def renamed(func: str, old: str, new: str, value: Any, new_value: Any, new_default: Any) -> Any:
    """The value of a keyword given by its old name, with a DeprecationWarning (for one
    release); ``new_value`` is the new name's, ``new_default`` (the very object) when that
    was left out. Both given is an error."""
    if new_value is not new_default:
        raise option_error(old, f"is the old name of {{{new}}}, and both were given: give {{{new}}} only",
                           others=[new])
    warnings.warn(f"{func}(): {old}= is deprecated, use {new}=", DeprecationWarning, stacklevel=3)
    return value
