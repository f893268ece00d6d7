"""The ``svdistill`` command line: thin wrappers over the Python API.

Options follow Kaldi's habits: ``--opt=value`` or ``--opt value``, booleans as
``--binary=true|false``, ``-`` for stdin/stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import List, Optional

from . import __version__
from ._core import Error
from .info import format_info, info
from .io import ConversionWarning, iter_components, write


_TRUE = ("true", "t", "1", "yes")
_FALSE = ("false", "f", "0", "no")
_BOOL_FLAGS: set = set()


def _add_bool(p: argparse.ArgumentParser, name: str, help: str, default=None) -> None:
    """A Kaldi-style boolean: ``--name``, ``--name=true|false`` or ``--name true|false``."""
    dest = name.lstrip("-").replace("-", "_")
    _BOOL_FLAGS.add(name)
    p.add_argument(name, dest=dest, action="store_true", default=default,
                   help=help + " (--%s[=true|false])" % name.lstrip("-"))
    p.add_argument("--no-" + name.lstrip("-"), dest=dest, action="store_false", help=argparse.SUPPRESS)


def normalize_bools(argv: List[str]) -> List[str]:
    """Rewrites ``--flag=false`` / ``--flag false`` into the forms argparse knows."""
    out: List[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        name, eq, val = a.partition("=")
        if name in _BOOL_FLAGS:
            if not eq and i + 1 < len(argv) and argv[i + 1].lower() in _TRUE + _FALSE:
                val, eq = argv[i + 1], "="
                i += 1
            if eq:
                v = val.strip().lower()
                if v not in _TRUE + _FALSE:
                    print(f"svdistill: error: {name} expects true or false, got {val!r}", file=sys.stderr)
                    raise SystemExit(2)
                a = name if v in _TRUE else "--no-" + name[2:]
        out.append(a)
        i += 1
    return out


def cmd_info(a: argparse.Namespace) -> int:
    d = info(a.model)
    if a.json:
        sys.stdout.write(json.dumps(_json_safe(d), indent=1) + "\n")
    else:
        sys.stdout.write(format_info(d))
    return 0


def _json_safe(x):
    """JSON has no NaN: statistics of constant vectors become null."""
    if isinstance(x, float):
        return None if x != x or x in (float("inf"), float("-inf")) else x
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def cmd_copy(a: argparse.Namespace) -> int:
    write(iter_components(a.input), a.output, binary=a.binary, dialect=a.dialect, digits=a.digits)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="svdistill",
        description="Make large Kaldi nnet1 acoustic models small: read, inspect, copy and "
                    "convert models (Kaldi text, Kaldi binary, PDNN-style text).",
        epilog="Run 'svdistill COMMAND --help' for a command's options.")
    p.add_argument("--version", action="version", version=f"svdistill {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    pi = sub.add_parser("info", help="what nnet-info prints: dims, parameter counts and statistics",
                        description="Print what Kaldi's nnet-info prints for MODEL (any dialect; "
                                    "'-' reads stdin; gzip is detected).")
    pi.add_argument("model", metavar="MODEL")
    _add_bool(pi, "--json", "machine-readable JSON instead of nnet-info's text", default=False)
    pi.set_defaults(func=cmd_info)

    pc = sub.add_parser("copy", help="copy or convert a model (nnet-copy)",
                        description="Copy MODEL_IN to MODEL_OUT, converting encoding or dialect. "
                                    "The output appears atomically when complete; copying a "
                                    "file onto itself is safe.")
    pc.add_argument("input", metavar="MODEL_IN")
    pc.add_argument("output", metavar="MODEL_OUT")
    _add_bool(pc, "--binary", "write Kaldi binary (default: the input's encoding)")
    pc.add_argument("--dialect", choices=["kaldi", "pdnn"], default=None,
                    help="text dialect to write (default: the input's)")
    pc.add_argument("--digits", choices=["shortest", "kaldi"], default="shortest",
                    help="text numbers: 'shortest' round-trips float32 exactly (default); "
                         "'kaldi' writes nnet-copy's 7 significant digits byte for byte")
    pc.set_defaults(func=cmd_copy)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    a = parser.parse_args(normalize_bools(list(sys.argv[1:] if argv is None else argv)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shown: List[str] = []

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, ConversionWarning):
                shown.append(str(message))
                print(f"svdistill: note: {message}", file=sys.stderr)

        warnings.showwarning = show
        warnings.simplefilter("always", ConversionWarning)
        try:
            return a.func(a)
        except Error as e:
            print(f"svdistill: error: {e}", file=sys.stderr)
            return 2
        except BrokenPipeError:
            return 1
        except KeyboardInterrupt:
            print("svdistill: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
