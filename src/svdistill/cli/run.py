"""``main()``: parse the arguments, run the checks and the command, and turn what it raises
into a message and an exit status."""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import List, Optional, Sequence

from .._core import Error
from ..io import ConversionWarning
from .checks import _check_outputs, _check_std_streams, _stdin_user, _stdout_user
from .exits import (
    DISTILL_STOPPED_EARLY,
    EXIT_READER_GONE,
    _caught,
    _error_text,
    _install_stop_handlers,
    _quiet_stdout,
    _reader_gone,
    _restore_handlers,
)
from .options import _flag_of, normalize_bools
from .parser import build_parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    a, extra = parser.parse_known_args(normalize_bools(list(sys.argv[1:] if argv is None else argv)))
    _model_or_ensemble(parser, a, extra)
    previous = _install_stop_handlers()
    try:
        return _run(parser, a)
    finally:
        _restore_handlers(previous)


# Commands whose first positional argument an ensemble.json can replace: their positional
# arguments (optional to argparse), and the option that names the ensemble.
_ENSEMBLE_REPLACES = {"forward": (("model", "feats", "output"), "ensemble"),
                      "compare": (("teacher", "student", "feats"), "teacher_ensemble")}


def _model_or_ensemble(parser: argparse.ArgumentParser, a: argparse.Namespace, extra: List[str]) -> None:
    """The positional arguments of a command that takes a model or an ensemble: the values
    given, in order, go to all of them, or to all but the model with the ensemble. Both or
    neither, or too few or too many values, are usage errors; so is anything else argparse
    did not recognise (as parse_args says it).

    argparse (before Python 3.12) gives optional positionals their values only up to the first
    option: the rest of ``forward M --apply-log F O`` comes back in ``extra``, in order."""
    if a.command not in _ENSEMBLE_REPLACES:
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return
    # "--" ends the options: what follows is positional, even if it starts with "-".
    cut = extra.index("--") if "--" in extra else len(extra)
    unknown = [x for x in extra[:cut] if x.startswith("-") and x != "-"]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    extra = extra[:cut] + extra[cut + 1:]
    names: Sequence[str]
    names, ensemble = _ENSEMBLE_REPLACES[a.command]
    sub = next(x for x in parser._actions if isinstance(x, argparse._SubParsersAction)).choices[a.command]
    metavars = [_flag_of(parser, a.command, n) for n in names]
    flag = _flag_of(parser, a.command, ensemble)
    given = [getattr(a, n) for n in names if getattr(a, n) is not None] + list(extra)
    if getattr(a, ensemble) is not None:
        if len(given) == len(names):
            sub.error(f"{flag} is in place of {metavars[0]}: give one of them, not both")
        want: Sequence[str] = names[1:]
    else:
        want = names
        if len(given) == len(names) - 1:  # which one is missing cannot be told
            sub.error(f"expected {' '.join(metavars)}, or {flag} ENSEMBLE.json {' '.join(metavars[1:])}; got "
                      f"{len(given)} arguments: {' '.join(given)}")
    if len(given) < len(want):
        sub.error("the following arguments are required: " + ", ".join(metavars[len(names) - len(want) + len(given):]))
    if len(given) > len(want):
        sub.error(f"unrecognized arguments: {' '.join(given[len(want):])}")
    for name in names:
        setattr(a, name, None)
    for name, value in zip(want, given):
        setattr(a, name, value)


def _run(parser: argparse.ArgumentParser, a: argparse.Namespace) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")

        def show(message, category, filename, lineno, file=None, line=None):
            kind = "note" if issubclass(category, ConversionWarning) else "warning"
            print(f"svdistill: {kind}: {message}", file=sys.stderr)

        warnings.showwarning = show
        warnings.simplefilter("always", ConversionWarning)
        warnings.filterwarnings("always", category=UserWarning, module=r"svdistill(\..*)?")
        from ..distill import TrainingStopped
        try:
            _check_std_streams(parser, a)
            _stdin_user(parser, a)  # two arguments on stdin are refused
            _check_outputs(parser, a)
            rc = a.func(a)
            if sys.stdout is not None:
                sys.stdout.flush()  # here, where a reader that went away is seen, not at exit
            return rc
        except TrainingStopped as e:  # not an error: the best model of the epochs before was kept
            kept = (f"the best model, epoch {e.report.best_epoch}, was written to {e.written}"
                    if e.written is not None else f"the best model is epoch {e.report.best_epoch}; not written here")
            print(f"svdistill: stopped early: {_error_text(parser, a.command, e.cause)} ({kept})", file=sys.stderr)
            return DISTILL_STOPPED_EARLY
        except Error as e:
            if _stdout_user(parser, a) and _reader_gone():  # the core's write to stdout failed
                _quiet_stdout()
                return EXIT_READER_GONE
            print(f"svdistill: error: {_error_text(parser, a.command, e)}", file=sys.stderr)
            return 2
        except BrokenPipeError:
            # The reader of stdout went away (e.g. '| head'): stop quietly, as Unix tools do.
            _quiet_stdout()
            return EXIT_READER_GONE
        except OSError as e:  # e.g. --report into a folder that does not exist
            where = f"{e.filename}: " if e.filename else ""
            print(f"svdistill: error: {where}{e.strerror or e}", file=sys.stderr)
            return 2
        except MemoryError:
            print("svdistill: error: out of memory", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            if _caught:
                print("svdistill: terminated", file=sys.stderr)
                return 128 + int(_caught[0])
            print("svdistill: interrupted", file=sys.stderr)
            return 128 + 2  # SIGINT
