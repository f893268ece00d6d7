"""The one progress display of svdistill's long operations (compress, forward, distill), drawn by tqdm.

One line on stderr: a label, then a bar over a known number of steps
(``compress:  43%|####      | 3/7 layers [00:05<00:07, component 4 2048x2048]``) or a count
with its rate (``epoch 2: 1,234,567 frames [00:03, 411,522 frames/s]``), then an optional note.
It is on only where stderr is a terminal, unless forced either way: a log file or a pipe never
gets carriage returns, and when off nothing at all is written. Closing clears the line, so that
what comes next -- an error message, the next row of a table -- starts at its beginning.
"""
from __future__ import annotations

import functools
import sys
import time
from typing import IO, Any, Dict, Optional

# Known total: percentage, bar, steps, elapsed < remaining. A count: the count, elapsed, rate.
# Counts are exact, with thousands separators (speech data are counted in frames).
_STEPS_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n}/{total} {unit} [{elapsed}<{remaining}{postfix}]"
_COUNT_FORMAT = "{desc}: {count} {unit} [{elapsed}, {per_second} {unit}/s{postfix}]"


@functools.lru_cache(maxsize=None)
def _bar_type() -> Any:
    """tqdm, as this display draws it; imported with the first line shown, not with svdistill."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    class _Bar(tqdm):
        # No monitor thread: a bar is redrawn by Progress.update alone (the library runs inside
        # other programs' processes, forks and torchrun workers).
        monitor_interval = 0

        @property
        def format_dict(self) -> Dict[str, Any]:
            # tqdm's documented extension point: fields of our own for bar_format.
            d = super().format_dict
            # An average since the phase began; none yet in its first moments (a meaningless ratio).
            rate = d["n"] / d["elapsed"] if d["elapsed"] >= self.mininterval else None
            d.update(count=f"{d['n']:,}", per_second="?" if rate is None else f"{rate:,.0f}")
            if d.get("ncols") == 0:  # a terminal that reports no width: ours, untrimmed, not tqdm's bar-less line
                d["ncols"] = None
            return d

    return _Bar


def _is_terminal(f: Any) -> bool:
    try:
        return bool(f.isatty())
    except (AttributeError, ValueError, OSError):  # None (pythonw), no isatty, closed
        return False


class Progress:
    """A progress line on stderr (``file``), shown while a long operation runs.

    ``label``/``total`` start the first phase at once (see :meth:`start`); ``unit`` names
    what is counted ("layers", "frames"). ``enabled``: None shows it when ``file`` is a
    terminal; False writes nothing, ever; True shows it anywhere.

    Use as a context manager, or call :meth:`close` in a ``finally``::

        with Progress("forward", unit="frames") as bar:
            for utts, frames in work():
                bar.update(frames, f"{utts:,} utterances")
    """

    #: Seconds between two redraws of a count (a bar over known steps is redrawn at every step).
    INTERVAL = 0.2

    def __init__(self, label: str = "", *, total: Optional[int] = None, unit: str = "steps",
                 enabled: Optional[bool] = None, file: Optional[IO[str]] = None) -> None:
        self.file = sys.stderr if file is None else file
        self.on = _is_terminal(self.file) if enabled is None else bool(enabled)
        self.unit = unit
        self._bar: Any = None  # the tqdm bar of the phase under way
        self._note: Optional[str] = None
        self._drawn: Optional[float] = None
        if label:
            self.start(label, total)

    def start(self, label: str, total: Optional[int] = None) -> None:
        """Begin a phase on the line: ``label``, over ``total`` steps (None: a count with its
        rate; 0: nothing to show), counting and timing from zero now."""
        self.close()
        if not self.on or total == 0:
            return
        self._bar = _bar_type()(total=total, desc=label, unit=self.unit, file=self.file,
                                leave=False, dynamic_ncols=True, mininterval=self.INTERVAL, smoothing=0,
                                bar_format=_COUNT_FORMAT if total is None else _STEPS_FORMAT)

    def update(self, done: int, note: Optional[str] = None) -> None:
        """``done`` steps (or items) so far in this phase; ``note`` (the step under way, a second
        count) replaces the last one. Redrawn at the first update, then at most every
        INTERVAL seconds; a bar over known steps also whenever a step is done."""
        bar = self._bar
        if bar is None:
            return
        step = bar.total is not None and done != bar.n
        bar.n = done
        if note is not None and note != self._note:
            self._note = note
            bar.set_postfix_str(note, refresh=False)
        now = time.monotonic()
        if step or self._drawn is None or now - self._drawn >= self.INTERVAL:
            self._drawn = now
            bar.refresh()

    def close(self) -> None:
        """Clear the line (the next phase, or whatever is written next, starts on a clean one)."""
        bar, self._bar = self._bar, None
        self._note = self._drawn = None
        if bar is not None:
            bar.close()
            try:
                self.file.flush()
            except (OSError, ValueError):
                pass

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
