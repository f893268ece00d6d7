"""Inputs the fuzzer (fuzz/fuzz_reader.cc) once found crashing, hanging or leaking.

Each file's first byte picked how the harness delivered the rest (0: memory-
mapped path, 1: read with a known size, 2: small reads of unknown size); here
the rest goes through a path and through a file object. Every case must be
refused with svdistill.Error or read as a model, quickly.
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest

import svdistill

REGRESSIONS = Path(__file__).resolve().parents[1] / "fuzz" / "regressions"
CASES = sorted(p for p in REGRESSIONS.glob("*") if p.is_file() and p.name != "README")


@pytest.mark.parametrize("case", CASES, ids=[p.name for p in CASES])
def test_fuzz_regression(case, tmp_path):
    data = case.read_bytes()[1:]
    path = tmp_path / "model"
    path.write_bytes(data)
    for src in (path, io.BytesIO(data)):
        try:
            model = svdistill.read(src)
        except svdistill.Error:
            continue
        buf = io.BytesIO()
        svdistill.write(model, buf, binary=True)
        assert svdistill.read(io.BytesIO(buf.getvalue())).input_dim == model.input_dim
