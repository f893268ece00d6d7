"""The shipped examples run and tell the story the README shows."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import svdistill

ROOT = Path(__file__).resolve().parents[1]


def _digits_tables(stdout: str) -> dict:
    """{(table, budget, label): [cells after the parameter count]} from digits.py's
    printed tables: table 0 is test accuracy, 1 agreement with the teacher; budget is
    the section's heading ('10%', '5%') or None above the first one."""
    out: dict = {}
    table, budget = -1, None
    for line in stdout.splitlines():
        if line.startswith(("Test accuracy", "Agreement with the teacher")):
            table, budget = table + 1, None
            continue
        m = re.fullmatch(r"([\d.]+%) of the parameters .*:", line)
        if m:
            budget = m.group(1)
            continue
        m = re.fullmatch(r"\s*(\S.*?)\s{2,}(\d[\d,-]*)\s+(\S.*)", line)
        if m and table >= 0:
            out[table, budget, m.group(1)] = m.group(3).split()
    return out


def _pct(cell: str) -> float:
    assert cell.endswith("%"), cell
    return float(cell[:-1]) / 100


def test_digits_distillation_example(tmp_path):
    pytest.importorskip("sklearn", reason="examples/digits.py needs scikit-learn (the [bench] extra)")
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "digits.py"), "--seeds", "0",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    t = _digits_tables(p.stdout)
    rows = ["plain SVD (output layer kept whole)", "plain SVD + distillation", "plain's ranks, labels only",
            "calibrated SVD (every layer)", "calibrated SVD + distillation", "calibrated's ranks, labels only"]
    for table in (0, 1):
        for budget in ("10%", "5%"):
            for row in rows:
                assert (table, budget, row) in t, (table, budget, row, p.stdout)
    # One seed: its cell, then the mean over the seeds (the same); agreement adds the mean KL.
    acc = {k[1:]: _pct(v[-1]) for k, v in t.items() if k[0] == 0}
    agree = {k[1:]: _pct(v[-2]) for k, v in t.items() if k[0] == 1}
    assert acc[None, "teacher 64-256-256-10, from labels"] > 0.9, p.stdout
    assert acc["10%", "plain SVD + distillation"] > 0.9, p.stdout
    assert acc["10%", "calibrated SVD + distillation"] > 0.9, p.stdout
    # The calibrated student's story at 5% (README): it agrees with its teacher far more
    # often than the plain one of the same budget, before distillation and after.
    for row in ("SVD (every layer)", "SVD + distillation"):
        plain = row.replace("(every layer)", "(output layer kept whole)")
        assert agree["5%", "calibrated " + row] > agree["5%", "plain " + plain] + 0.1, p.stdout
    for budget in ("10%", "5%"):
        limit = {"10%": 8_500, "5%": 4_250}[budget]
        for kind in ("plain", "calibrated"):
            name = tmp_path / f"{kind}-{budget[:-1]}pct"
            for path in (name.with_suffix(".nnet"), Path(f"{name}.distilled.nnet")):
                assert path.is_file(), path
            assert svdistill.read(name.with_suffix(".nnet")).num_params <= limit
    assert (tmp_path / "teacher.nnet").is_file()


def _markdown_rows(stdout: str) -> dict:
    """{first cell (and second, when it is a number): [other cells]} of printed Markdown tables."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0] if not re.fullmatch(r"[\d.]+", cells[1]) else (cells[0], cells[1])] = cells[1:]
    return rows


def test_hints_example():
    """examples/hints.py runs, and tells the README's story on one seed: hints help a
    random-weight student of 10% (lower held-out KL), and it never needs more epochs than
    without them to reach their CV KL."""
    pytest.importorskip("sklearn", reason="examples/hints.py needs scikit-learn (the [bench] extra)")
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "hints.py"), "--seeds", "0", "--budget", "0.1",
                        "--weights", "1", "--markdown"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = _markdown_rows(p.stdout)
    plain, hinted = rows["10% same ranks, random weights", "0"], rows["10% same ranks, random weights", "1"]
    assert float(hinted[3]) < float(plain[3]), p.stdout
    assert hinted[1] != "never" and int(hinted[1]) <= int(plain[1]), p.stdout
    assert ("10% SVD of the teacher", "0") in rows and ("10% SVD of the teacher", "1") in rows, p.stdout


def test_specialists_example(tmp_path):
    """examples/specialists.py runs on one seed: the ensemble and the distilled students score
    as a working product would (well above chance; within a few points of the generalist)."""
    pytest.importorskip("sklearn", reason="examples/specialists.py needs scikit-learn (the [bench] extra)")
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "specialists.py"), "--seeds", "0", "--configs",
                        "3:0", "--out", str(tmp_path), "--markdown"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = _markdown_rows(p.stdout)
    g = _pct(rows["generalist 64-256-256-10"][-1])
    assert g > 0.9, p.stdout
    for label in ("+ 3 specialists, overlap 0, top-1", "10% student distilled from generalist",
                  "10% student distilled from ensemble (3:0)"):
        assert _pct(rows[label][-1]) > g - 0.05, (label, p.stdout)
    assert (tmp_path / "seed0-k3-o0" / "ensemble.json").is_file()
