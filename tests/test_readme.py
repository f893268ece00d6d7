"""The README's main command, on the example model that ships with the repo."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import svdistill

ROOT = Path(__file__).resolve().parents[1]


def test_readme_main_command_runs_on_the_bundled_example(tmp_path):
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"pip install \. && (svdistill compress [^\n#]+?)\s+#", readme)
    assert m, "the README's first command is not where it was"
    args = m.group(1).split()[1:]
    assert args[-2] == "examples/small.nnet"
    args[-2] = str(ROOT / args[-2])
    args[-1] = str(tmp_path / args[-1])
    p = subprocess.run([sys.executable, "-m", "svdistill", *args], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "model: 30,016 ->" in p.stderr
    small = svdistill.read(args[-1])
    kinds = [c.kind for c in small]
    assert kinds.count("LinearTransform") == 3 and kinds.count("AffineTransform") == 3
    assert small.input_dim == 40 and small.output_dim == 64
