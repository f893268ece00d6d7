"""What is checked before any work: every output can be written and is neither an input nor
another output, standard input feeds one argument at most, and a closed standard stream is
an error when the command uses it."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Tuple

from .._core import Error
from ..io import output_target, same_file
from .options import _flag_of


def _check_output_path(opt: str, path: Optional[str]) -> None:
    """Fail before hours of work, not after: the output's folder must exist and be writable,
    the output must not be a folder or a symbolic-link loop."""
    if path and path != "-":
        try:
            output_target(path)
        except Error as e:
            raise Error(f"{opt} {e}") from None


# Arguments naming files a command reads: model paths, and rspecifiers.
_INPUTS = ("input", "model", "student", "teacher", "feature_transform", "class_frame_counts",
           "calibration", "ensemble", "teacher_ensemble", "generalist", "init",
           "feats", "check", "labels", "cv_feats", "cv_labels")
# Those of them that are Kaldi rspecifiers.
_RSPECIFIERS = ("feats", "check", "labels", "cv_feats", "cv_labels", "calibration")
# Files a command writes (forward's output is a wspecifier: see _files_of).
_OUTPUTS = ("output", "report", "plot")
# Model outputs that may be their input: the input is read in full, or streamed
# from a descriptor that the atomic rename leaves intact ('copy X X').
_MAY_REPLACE = {"copy": ("input",), "compress": ("input",), "distill": ("student",)}
# Pairs the API itself refuses (in its own words): not checked twice.
_API_CHECKED = {"export": ("model", "feature_transform")}


def _files_of(value: str, specifier: str = "") -> List[Tuple[str, bool]]:
    """The plain files an argument names, each with whether it is read only through an scp:
    a path, or the files a Kaldi ``specifier`` ("r" or "w") reads or writes -- for an input
    scp, the scp and every archive its lines point into. None for pipes and '-' (nor for a
    specifier that is not valid: the command itself says why)."""
    if not value or value == "-":
        return []
    if not specifier:
        return [(value, False)]
    from ..archive import output_files, table_files
    try:
        if specifier == "w":
            return [(f, False) for f in output_files(value)]
        direct, behind = table_files(value)
    except Error:
        return []
    return [(f, False) for f in sorted(direct)] + [(f, True) for f in sorted(behind - direct)]


def _check_outputs(parser: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Before any work: every output can be written, and none is an input or another output."""
    import os
    cmd = a.command
    outputs = []  # (name, path as given, file)
    for dest in _OUTPUTS:
        value = getattr(a, dest, None)
        if not value:
            continue
        name = _flag_of(parser, cmd, dest)
        if cmd == "forward" and dest == "output":  # an archive (and its scp): its writer checks them
            outputs += [(name, value, f) for f, _ in _files_of(value, "w")]
            continue
        if value != "-":
            _check_output_path(name, value)
            outputs.append((name, value, value))
    inputs = []
    for dest in _INPUTS:
        values = getattr(a, dest, None)
        for v in ([] if values is None else values if isinstance(values, list) else [values]):
            spec = "r" if dest in _RSPECIFIERS else ""
            inputs += [(dest, v, f, behind) for f, behind in _files_of(v, spec)]

    def where(path: str) -> str:
        try:
            return os.path.realpath(output_target(path))
        except Error:
            return os.path.realpath(path)

    for i, (name, value, f) in enumerate(outputs):
        for dest, v, g, behind in inputs:
            if cmd == "forward" and dest == "feats":
                continue  # output archive = input archive: forward's own writer decides
            if name == _flag_of(parser, cmd, "output") and dest in _API_CHECKED.get(cmd, ()):
                continue
            replaceable = dest in _MAY_REPLACE.get(cmd, ()) and name == _flag_of(parser, cmd, "output")
            if replaceable and same_file(f, g) and getattr(a, "check", None):
                raise Error(f"{name} {value} is {_flag_of(parser, cmd, dest)}: --check would compare the "
                            f"output with itself; write it to another file")
            if replaceable:
                continue
            if same_file(f, g) and behind:
                raise Error(f"{name} {value} is an archive that {_flag_of(parser, cmd, dest)} {v} reads from: "
                            f"refusing to overwrite an input")
            if same_file(f, g):
                raise Error(f"{name} {value} is the same file as {_flag_of(parser, cmd, dest)} {v}: "
                            f"refusing to overwrite an input")
        for other, ovalue, g in outputs[:i]:
            if other != name and where(f) == where(g):  # (an archive and its scp: the writer's check)
                raise Error(f"{name} {value} and {other} {ovalue} are the same file: give each output its own")


def _stdout_user(parser: argparse.ArgumentParser, a: argparse.Namespace) -> Optional[str]:
    """What of this command writes to standard output (as its help names it), or None."""
    if a.command in ("info", "spectrum", "compare"):
        return f"'svdistill {a.command}'"
    out = getattr(a, "output", None)
    if a.command == "forward":
        from ..archive import _is_std, parse_wspecifier
        try:
            to_stdout = _is_std(parse_wspecifier(a.output).ark)  # forward's OUT_WSPECIFIER: required
        except Error:
            return None
        return f"{_flag_of(parser, a.command, 'output')} {out}" if to_stdout else None
    return f"{_flag_of(parser, a.command, 'output')} '-'" if out == "-" else None


def _closed(fd: int) -> bool:
    import os
    try:
        os.fstat(fd)
        return False
    except OSError:
        return True


def _stdin_user(parser: argparse.ArgumentParser, a: argparse.Namespace) -> Optional[str]:
    """Which argument of this command reads standard input (as its help names it), or None.
    Two that would both read it are an error: the first would take all of it."""
    users = _stdin_users(parser, a)
    if len(users) > 1:
        raise Error(f"{users[0]} and {users[1]} both read standard input; one stream cannot feed both: "
                    "give one of them a file")
    return users[0] if users else None


def _stdin_users(parser: argparse.ArgumentParser, a: argparse.Namespace) -> List[str]:
    from ..archive import _is_std, parse_rspecifier
    users = []
    for dest in _INPUTS:
        values = getattr(a, dest, None)
        for v in ([] if values is None else values if isinstance(values, list) else [values]):
            if dest in _RSPECIFIERS:
                try:
                    if not _is_std(parse_rspecifier(v).name):
                        continue
                except Error:
                    continue
            elif v != "-":
                continue
            users.append(f"{_flag_of(parser, a.command, dest)} {v}")
    return users


def _check_std_streams(parser: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """A closed standard input or output ('<&-', '>&-') is an error when the command uses it.
    Either way the descriptor is held by /dev/null, so that no file the command opens becomes
    descriptor 0 or 1 (where anything printed would land in it)."""
    import os
    for fd, mode, flags, attr, user, message in (
            (0, "r", os.O_RDONLY, "stdin", _stdin_user,
             "standard input is closed, and {} reads from it: give it a file or a pipe"),
            (1, "w", os.O_WRONLY, "stdout", _stdout_user,
             "standard output is closed, and {} writes to it: redirect it to a file (or to /dev/null to "
             "discard it)")):
        if not _closed(fd):
            continue
        held = os.open(os.devnull, flags)
        if held != fd:
            os.dup2(held, fd)
            os.close(held)
        setattr(sys, attr, open(fd, mode, closefd=False))
        name = user(parser, a)
        if name:
            raise Error(message.format(name))
