"""``main()``: parse the arguments, run the checks and the command, and turn what it raises
into a message and an exit status."""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import List, Optional

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
from .options import normalize_bools
from .parser import build_parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    a = parser.parse_args(normalize_bools(list(sys.argv[1:] if argv is None else argv)))
    previous = _install_stop_handlers()
    try:
        return _run(parser, a)
    finally:
        _restore_handlers(previous)


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
