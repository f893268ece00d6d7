"""Kaldi's rspecifiers and wspecifiers (``[options,]ark:NAME``, ``scp:NAME``,
``ark,scp:ARK,SCP``) parsed as Kaldi's ClassifyRspecifier/ClassifyWspecifier do, and what a
name in them is: a file, a command (``COMMAND |``, ``| COMMAND``) or stdin/stdout (``-``)."""
from __future__ import annotations

import re
from typing import List, NamedTuple, Optional, Tuple

from ..errors import Error

RSPECIFIER_HELP = ("an rspecifier is 'ark:FILE', 'scp:FILE' (lines 'KEY ARCHIVE:OFFSET'), 'ark:COMMAND |' "
                   "or 'ark:-' (stdin), optionally with Kaldi's options, e.g. 'ark,p:FILE'")
WSPECIFIER_HELP = ("a wspecifier is 'ark:FILE', 'ark,scp:FILE.ark,FILE.scp', 'ark:| COMMAND' or 'ark:-' "
                   "(stdout); 'ark,t:' writes text")

_READ_OPTIONS = {"b", "t", "o", "no", "p", "np", "s", "ns", "cs", "ncs", "bg"}
_WRITE_OPTIONS = {"b", "t", "f", "nf", "p"}


class RSpec(NamedTuple):
    kind: str          # "ark" or "scp"
    name: str          # the rxfilename: a path, "-" or "COMMAND |"
    permissive: bool   # ",p": stop (archive) or skip (scp) at an unreadable entry, with a warning
    text: str          # as given, for messages


class WSpec(NamedTuple):
    ark: str
    scp: Optional[str]
    binary: bool
    flush: bool
    text: str


def _options(spec: str, kind: str, help_text: str) -> Tuple[List[str], str]:
    article = "an" if kind == "rspecifier" else "a"
    if not isinstance(spec, str):
        raise Error(f"expected a Kaldi {kind} string, got {type(spec).__name__}; {help_text}")
    if ":" not in spec:
        raise Error(f"'{spec}' is not {article} {kind}: {help_text}")
    before, after = spec.split(":", 1)
    # Kaldi splits the options on commas and spaces, keeping empty ones (which it refuses).
    return re.split(r"[, ]", before), after


def parse_rspecifier(rspecifier: str) -> RSpec:
    """Kaldi's ClassifyRspecifier: ``[options,]ark:NAME`` or ``[options,]scp:NAME``."""
    opts, name = _options(rspecifier, "rspecifier", RSPECIFIER_HELP)
    kinds = [o for o in opts if o in ("ark", "scp")]
    bad = [o for o in opts if o not in ("ark", "scp") and o not in _READ_OPTIONS]
    if len(kinds) != 1 or bad:
        why = (f"unknown option '{bad[0]}'" if bad else
               "it names both 'ark' and 'scp'" if len(kinds) > 1 else "it names neither 'ark' nor 'scp'")
        raise Error(f"'{rspecifier}' is not a valid rspecifier ({why}): {RSPECIFIER_HELP}")
    if not name.strip():
        raise Error(f"'{rspecifier}': no file name after the colon: {RSPECIFIER_HELP}")
    permissive = False
    for o in opts:  # the last of p / np wins, as in Kaldi
        permissive = True if o == "p" else False if o == "np" else permissive
    return RSpec(kinds[0], name, permissive, rspecifier)


def parse_wspecifier(wspecifier: str) -> WSpec:
    """Kaldi's ClassifyWspecifier: ``ark:NAME`` or ``ark,scp:ARK,SCP`` with b/t/f/nf/p options."""
    opts, name = _options(wspecifier, "wspecifier", WSPECIFIER_HELP)
    kinds = [o for o in opts if o in ("ark", "scp")]
    bad = [o for o in opts if o not in ("ark", "scp") and o not in _WRITE_OPTIONS]
    if bad or kinds not in (["ark"], ["ark", "scp"]):
        why = (f"unknown option '{bad[0]}'" if bad else
               "writing only an scp is not supported: give 'ark,scp:FILE.ark,FILE.scp'" if kinds == ["scp"] else
               "'ark' must come before 'scp'" if kinds == ["scp", "ark"] else "it does not name 'ark'")
        raise Error(f"'{wspecifier}' is not a valid wspecifier ({why}): {WSPECIFIER_HELP}")
    binary, flush = True, False
    for o in opts:
        binary = True if o == "b" else False if o == "t" else binary
        flush = True if o == "f" else False if o == "nf" else flush
    scp = None
    if kinds == ["ark", "scp"]:
        if "," not in name:
            raise Error(f"'{wspecifier}': 'ark,scp:' needs two names, 'ark,scp:FILE.ark,FILE.scp'")
        name, scp = name.split(",", 1)
        if not scp.strip():
            raise Error(f"'{wspecifier}': no scp file name after the comma")
    if not name.strip():
        raise Error(f"'{wspecifier}': no file name after the colon: {WSPECIFIER_HELP}")
    return WSpec(name, scp, binary, flush, wspecifier)


def _is_command(name: str) -> bool:
    s = name.strip()
    return s.endswith("|") or s.startswith("|")


def _command_of(name: str) -> str:
    s = name.strip()
    return (s[:-1] if s.endswith("|") else s[1:]).strip()


def _is_std(name: str) -> bool:
    return name.strip() in ("-", "")


def output_files(wspecifier: str) -> List[str]:
    """The files a wspecifier writes (the archive, then the scp); none for commands and stdout.
    Raises Error for a wspecifier that is not valid."""
    spec = parse_wspecifier(wspecifier)
    return [n for n in (spec.ark, spec.scp) if n is not None and not _is_command(n) and not _is_std(n)]
