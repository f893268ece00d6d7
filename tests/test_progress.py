"""svdistill.progress: the one progress line of compress, forward and distill (issue 16)."""
from __future__ import annotations

import fcntl
import io
import os
import struct
import subprocess
import sys
import termios
import time

import numpy as np
import pytest

from conftest import _cli_env
from svdistill import Component, Model
from svdistill.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _draws(text: str):
    """The successive states of the line: what each carriage return started."""
    return [d for d in text.split("\r") if d]


def _ends_cleared(text: str) -> None:
    """The line was blanked and the cursor put back at its start: the next write begins there."""
    assert text.endswith("\r"), repr(text)
    draws = _draws(text)
    assert draws[-1].strip() == "", repr(text)
    assert len(draws[-1]) >= max(len(d) for d in draws[:-1]), repr(text)  # wide enough to cover them


def test_off_writes_nothing():
    for kw in ({"enabled": False, "file": _Terminal()}, {"file": io.StringIO()}):  # forced off; not a terminal
        f = kw["file"]
        with Progress("compress", total=3, unit="layers", **kw) as bar:
            bar.update(0, "component 2")
            bar.update(1, "component 4")
            bar.start("again")
            bar.update(5)
        assert f.getvalue() == "" and not bar.on


def test_no_steps_show_nothing():
    f = _Terminal()
    with Progress("compress", total=0, unit="layers", file=f) as bar:
        bar.update(0, "component 2")
    assert f.getvalue() == ""


def test_on_by_default_only_on_a_terminal():
    assert Progress(file=_Terminal()).on and not Progress(file=io.StringIO()).on
    assert Progress(enabled=True, file=io.StringIO()).on


def test_a_bar_over_steps_shows_each_step_with_its_note():
    f = _Terminal()
    bar = Progress("compress", total=4, unit="layers", file=f)
    bar.update(0, "component 2 512x440")
    bar.update(1, "component 4 512x512")  # at once, although well within INTERVAL of the last
    bar.update(2, "component 6 512x512")
    draws = _draws(f.getvalue())
    assert "compress:" in draws[-1] and "2/4 layers" in draws[-1] and "component 6 512x512" in draws[-1], draws
    assert any("1/4 layers" in d and "component 4 512x512" in d for d in draws), draws
    assert " 50%" in draws[-1], draws
    bar.close()
    _ends_cleared(f.getvalue())


def test_a_count_shows_exact_numbers_and_its_rate_and_is_redrawn_at_most_every_interval():
    f = _Terminal()
    bar = Progress("forward", unit="frames", file=f)
    t0 = time.monotonic()
    for i in range(1, 2001):
        bar.update(1000 * i, f"{i:,} utterances")
    spent = time.monotonic() - t0
    draws = _draws(f.getvalue())
    # the first at once (the rate is not known yet), then at most one per INTERVAL
    assert "forward: 1,000 frames" in f.getvalue() and "? frames/s" in f.getvalue(), draws
    assert len(draws) <= 2 + spent / Progress.INTERVAL + 1, (len(draws), spent)
    time.sleep(Progress.INTERVAL)
    bar.update(2_500_000, "2,500 utterances")
    last = _draws(f.getvalue())[-1]
    assert "forward: 2,500,000 frames" in last and "2,500 utterances" in last, last
    rate = int(last.split(", ")[1].split(" frames/s")[0].replace(",", ""))
    assert 0 < rate <= 2_500_000 / Progress.INTERVAL, last
    bar.close()
    _ends_cleared(f.getvalue())


def test_start_begins_a_new_phase_on_the_same_line():
    f = _Terminal()
    bar = Progress(unit="frames", file=f)
    assert f.getvalue() == ""  # nothing until a phase starts
    bar.start("epoch 1")
    bar.update(4096)
    bar.start("cross-validation")  # the epoch's line is cleared, counting and timing anew
    bar.update(512)
    text = f.getvalue()
    assert "epoch 1: 4,096 frames" in text, text
    after = text[text.index("cross-validation"):]
    assert "4,096" not in after and "cross-validation: 512 frames" in after, text
    bar.close()
    bar.close()  # twice is fine
    size = len(f.getvalue())
    bar.update(1024)  # closed: nothing more
    assert len(f.getvalue()) == size
    _ends_cleared(f.getvalue())


def test_an_error_leaves_the_line_cleared():
    f = _Terminal()
    with pytest.raises(KeyError):
        with Progress("compress", total=2, unit="layers", file=f) as bar:
            bar.update(0, "component 2")
            raise KeyError("boom")
    _ends_cleared(f.getvalue())


def _run_on_a_terminal(*args: str) -> str:
    """``svdistill ARGS`` with stderr on a pseudo-terminal 100 columns wide: what it wrote there."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "svdistill", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave, env=_cli_env())
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    proc.wait(timeout=60)
    return out.decode("utf-8", "replace").replace("\r\n", "\n")


def test_forward_on_a_terminal_clears_its_line_before_the_summary_and_before_an_error(fx, tmp_path):
    err = _run_on_a_terminal("forward", fx / "tiny_mlp.nnet.bin", f"ark:{fx / 'feats.ark'}",
                             f"ark:{tmp_path / 'o.ark'}")
    assert "forward: " in err and " frames/s" in err, repr(err)
    # the summary starts at the beginning of a cleared line
    assert err.split("\r")[-1] == "svdistill forward: 3 utterances, 150 frames\n", repr(err)
    _ends_cleared(err[:err.rindex("\r") + 1])

    cut = tmp_path / "cut.ark"
    cut.write_bytes((fx / "feats.ark").read_bytes()[:12000])  # inside utt2
    err = _run_on_a_terminal("forward", fx / "tiny_mlp.nnet.bin", f"ark:{cut}", f"ark:{tmp_path / 'p.ark'}")
    assert "50 frames" in err and "1 utterance" in err, repr(err)
    last = err.split("\r")[-1]
    assert last.startswith("svdistill: error: ") and "utt2" in last and last.count("\n") == 1, repr(err)
    _ends_cleared(err[:err.rindex("\r") + 1])


def _clusters(seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (4, 10))
    feats, labels = {}, {}
    for u in range(40):
        y = rng.integers(0, 4, 40)
        feats[f"u{u}"] = (centers[y] + rng.normal(size=(40, 10))).astype(np.float32)
        labels[f"u{u}"] = y
    model = Model([Component.affine(rng.normal(0, 0.3, (4, 10)).astype(np.float32), np.zeros(4, np.float32)),
                   Component.activation("Softmax", 4)])
    return feats, labels, model


def test_distill_shows_its_epochs_and_leaves_the_line_cleared(capsys):
    from svdistill.distill import distill
    feats, labels, model = _clusters()
    distill(model, feats, labels=labels, minibatch_size=32, max_epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1: " in err and "epoch 2: " in err and " frames/s" in err, repr(err)
    _ends_cleared(err)
    distill(model, feats, labels=labels, minibatch_size=32, max_epochs=1, progress=False)
    assert capsys.readouterr().err == ""


def test_tqdm_is_imported_only_for_a_line_shown():
    code = ("import sys\nfrom svdistill.progress import Progress\nimport svdistill.cli\n"
            "with Progress('x', total=2, enabled=False) as bar:\n    bar.update(1)\n"
            "print('tqdm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_cli_env(), timeout=60)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
