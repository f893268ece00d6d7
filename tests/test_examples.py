"""The shipped examples run and tell the story the README shows."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_digits_distillation_example(tmp_path):
    pytest.importorskip("sklearn", reason="examples/digits.py needs scikit-learn (the [bench] extra)")
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "digits.py"), "--seeds", "0",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    acc = {}
    for name in ("teacher", "SVD to 10%", "SVD + distillation", "same size, labels only"):
        m = re.search(re.escape(name) + r".*?([\d,]+)\s+([\d.]+)%", p.stdout)
        assert m, p.stdout
        acc[name] = float(m.group(2)) / 100
    assert acc["teacher"] > 0.9 and acc["SVD + distillation"] > 0.9, acc
    assert (tmp_path / "teacher.nnet").is_file() and (tmp_path / "distilled.nnet").is_file()
