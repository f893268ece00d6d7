"""Crash safety of writes: SIGKILL mid-write, a full disk, output onto the input.

A model file is either absent, the previous file, or complete: never partial.
"""
from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import svdistill
from conftest import stop_while_writing

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals and rlimits")


def _big_model(path: Path, hidden: int = 1024, layers: int = 4) -> None:
    rng = np.random.default_rng(0)
    dims = [440] + [hidden] * layers + [500]
    comps = []
    for i in range(len(dims) - 1):
        comps.append(svdistill.Component.affine(
            rng.standard_normal((dims[i + 1], dims[i])).astype(np.float32) * 0.05,
            rng.standard_normal(dims[i + 1]).astype(np.float32)))
        comps.append(svdistill.Component.activation("Sigmoid" if i < len(dims) - 2 else "Softmax", dims[i + 1]))
    svdistill.write(svdistill.Model(comps), path)


@pytest.fixture(scope="module")
def big_text(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("big") / "big.nnet"
    _big_model(p)
    return p


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "svdistill", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _temps(d: Path):
    return [p for p in d.iterdir() if ".svdistill-" in p.name]


@pytest.mark.parametrize("command", ["copy", "compress"])
def test_sigkill_mid_write_leaves_previous_target_intact(tmp_path, big_text, command):
    target = tmp_path / "out.nnet"
    previous = b"<Nnet> \n<Sigmoid> 3 3 \n<!EndOfComponent> \n</Nnet> \n"
    target.write_bytes(previous)
    args = ["copy", str(big_text), str(target)] if command == "copy" else \
        ["compress", "--rank-fraction", "0.5", str(big_text), str(target)]
    killed_while_writing = False
    for _attempt in range(5):
        proc = _cli(*args)
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            tmps = _temps(tmp_path)
            if tmps and tmps[0].stat().st_size > 0:
                if stop_while_writing(proc, lambda: bool(_temps(tmp_path))):
                    proc.send_signal(signal.SIGKILL)
                    killed_while_writing = True
                proc.send_signal(signal.SIGCONT)
                break
            time.sleep(0.001)
        proc.wait()
        if killed_while_writing:
            break
    assert killed_while_writing, "the writer finished before it could be killed"
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == previous  # the old file, untouched
    for t in _temps(tmp_path):  # what the kill left behind is only the temporary
        t.unlink()


def test_sigkill_without_previous_target_leaves_no_target(tmp_path, big_text):
    target = tmp_path / "out.nnet"
    proc = _cli("copy", "--binary=false", str(big_text), str(target))
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        tmps = _temps(tmp_path)
        if tmps and tmps[0].stat().st_size > 0:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    proc.wait()
    if proc.returncode == 0:
        pytest.skip("the copy finished before the kill")
    assert not target.exists()


def _limit_file_size(limit: int):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


@pytest.mark.parametrize("binary", ["true", "false"])
def test_full_disk_gives_clear_error_and_no_partial_file(tmp_path, big_text, binary):
    target = tmp_path / "out.nnet"
    proc = _cli("copy", f"--binary={binary}", str(big_text), str(target),
                preexec_fn=_limit_file_size(1 << 20))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    msg = err.decode()
    assert msg.startswith("svdistill: error:") and msg.count("\n") == 1
    assert "write failed" in msg and str(target) in msg
    assert "Traceback" not in msg
    assert not target.exists()
    assert not _temps(tmp_path)


def test_full_disk_keeps_existing_target(tmp_path, big_text):
    target = tmp_path / "out.nnet"
    target.write_bytes(b"previous")
    proc = _cli("compress", "--rank", "64", str(big_text), str(target),
                preexec_fn=_limit_file_size(1 << 20))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert target.read_bytes() == b"previous"
    assert not _temps(tmp_path)


@pytest.mark.parametrize("command", [["copy", "--binary=true"], ["compress", "--rank", "32"]])
def test_output_onto_input(tmp_path, big_text, command):
    p = tmp_path / "m.nnet"
    p.write_bytes(big_text.read_bytes())
    before = svdistill.read(p)
    r = subprocess.run([sys.executable, "-m", "svdistill", *command, str(p), str(p)],
                       capture_output=True)
    assert r.returncode == 0, r.stderr
    after = svdistill.read(p)
    assert after.input_dim == before.input_dim and after.output_dim == before.output_dim
    if command[0] == "copy":
        assert after.binary
        for a, b in zip(after, before):
            if a.weight is not None:
                assert np.array_equal(a.weight, b.weight)
    assert not _temps(tmp_path)
