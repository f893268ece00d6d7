"""The commands of a table ('ark:COMMAND |', 'ark:| COMMAND'), run through /bin/sh as Kaldi's
popen runs them: an exit status in words, and a reading command stopped with everything it
started."""
from __future__ import annotations

import os
import signal
import subprocess


def describe_status(returncode: int) -> str:
    """An exit status in words: 'exit status 1', 'exit status 127: command not found', 'killed by SIGKILL'."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    hint = {126: ": the command cannot be executed", 127: ": command not found"}.get(returncode, "")
    return f"exit status {returncode}{hint}"


def _kill_command(proc: subprocess.Popen) -> None:
    """SIGKILL to the command's whole process group (the shell and what it started: killing
    the shell alone leaves 'sleep 20' in 'cat f; sleep 20 |' holding the pipe open)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        try:
            proc.kill()
        except OSError:
            pass
