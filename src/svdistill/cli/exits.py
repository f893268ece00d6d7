"""How a command ends: its exit statuses, an Error said in the command's words, stop
signals, and a reader of standard output that went away."""
from __future__ import annotations

import argparse
from typing import List

from .._core import Error
from ..errors import option_text
from .options import _flag_of

#: The exit status of a distill that stopped early but wrote the best model of the epochs before.
DISTILL_STOPPED_EARLY = 3
#: The exit status when the reader of standard output goes away ('| head'): the command stops
#: quietly, as a Unix tool killed by SIGPIPE does, with the status a shell reports for that.
EXIT_READER_GONE = 128 + 13


# Signals that end the process the way Ctrl-C does (cleanup, distill's best
# model), with the exit status a shell reports for them (128 + signal).
_STOP_SIGNALS = ("SIGTERM", "SIGHUP")
_caught: List[int] = []


def _on_stop_signal(signum, frame) -> None:
    import os
    import signal
    if _caught:  # asked again while cleaning up: stop at once, as the signal's default does
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _caught.append(signum)
    raise KeyboardInterrupt


def _install_stop_handlers() -> dict:
    """SIGTERM/SIGHUP raise KeyboardInterrupt in the main thread (signals left ignored,
    as by nohup, stay ignored). Returns the previous handlers."""
    import signal
    _caught.clear()
    previous = {}
    for name in _STOP_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            if signal.getsignal(sig) == signal.SIG_IGN:
                continue
            previous[sig] = signal.signal(sig, _on_stop_signal)
        except ValueError:  # not the main thread: signals cannot be handled here
            break
    return previous


def _restore_handlers(previous: dict) -> None:
    import signal
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _error_text(parser: argparse.ArgumentParser, command: str, e: Error) -> str:
    """An Error as one line of the command's words: an API keyword said as its flag."""
    text = str(e)
    if getattr(e, "option", None):
        text = option_text(e, lambda keyword: _flag_of(parser, command, keyword))
    text = getattr(e, "cli_context", "") + text  # what the command had done before e
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def _reader_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it (poll says POLLERR)."""
    import select
    try:
        p = select.poll()
        p.register(1, select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in p.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _quiet_stdout() -> None:
    """The reader went away: what is left in Python's buffer must not fail again at exit."""
    import os
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
