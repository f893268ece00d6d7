"""The command line's option conventions, Kaldi's: booleans as ``--name[=true|false]``, each
default declared once (by the API keyword an option sets), and a keyword said as its flag."""
from __future__ import annotations

import argparse
import inspect
import sys
from typing import Any, Dict, List

_TRUE = ("true", "t", "1", "yes")
_FALSE = ("false", "f", "0", "no")
_BOOL_FLAGS: set = set()


def _add_bool(p: "argparse._ActionsContainer", name: str, help: str, default=None) -> None:
    """A Kaldi-style boolean: ``--name``, ``--name=true|false`` or ``--name true|false``."""
    dest = name.lstrip("-").replace("-", "_")
    _BOOL_FLAGS.add(name)
    p.add_argument(name, dest=dest, action="store_true", default=default,
                   help=help + " (--%s[=true|false])" % name.lstrip("-"))
    p.add_argument("--no-" + name.lstrip("-"), dest=dest, action="store_false", help=argparse.SUPPRESS)


def _defaults_of(p: argparse.ArgumentParser, func, passed_to=None) -> None:
    """The default of each option of ``p`` that is a keyword of ``func`` (the API function the
    command calls) is the keyword's: each default is declared once, in the API (whose own
    defaults come from the core's option structs where it has them). tests/test_options.py
    checks that every option is such a keyword, or a documented command-line-only one.
    ``passed_to``: the function that ``func``'s ``**options`` go to, whose keywords are the
    other options'."""
    import inspect
    params = dict(inspect.signature(passed_to).parameters) if passed_to is not None else {}
    params.update(inspect.signature(func).parameters)
    for action in p._actions:
        param = params.get(action.dest)
        if not action.option_strings or param is None or param.default is param.empty:
            continue
        hidden = action.help == argparse.SUPPRESS  # _add_bool's --no-NAME (store_false: default True)
        if not hidden and action.default is not None and action.default != param.default:
            raise AssertionError(f"{action.option_strings[0]}: default {action.default!r} here, "
                                 f"{param.default!r} in {func.__name__}(): declare it in the API only")
        action.default = param.default



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


def _ints(text: str) -> List[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _flag_of(parser: argparse.ArgumentParser, command: str, keyword: str) -> str:
    """How ``command``'s help names what sets ``keyword``: an API keyword or an argparse
    dest (--flag, or METAVAR for a positional argument): the same name, as every flag is its
    API keyword with dashes (tests/test_options.py)."""
    dest = keyword
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices[command]._actions:
        if action.dest == dest and action.help != argparse.SUPPRESS:
            if action.option_strings:
                return action.option_strings[0]
            return action.metavar or dest.upper()
    return keyword


def keywords_of(a: argparse.Namespace, *funcs) -> Dict[str, Any]:
    """The parsed values of the keywords of ``funcs``: each flag's dest is its API keyword
    (tests/test_options.py), so a command passes every option of its function without listing
    them again, and a flag added to the parser cannot be left behind."""
    names = set().union(*(inspect.signature(f).parameters for f in funcs))
    return {k: v for k, v in vars(a).items() if k in names}
