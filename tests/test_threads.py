"""The core's worker threads: started once and kept, one job at a time, and
safe across Python threads and fork."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import svdistill
from conftest import run_cpp_check
from svdistill import Component, Model, linalg


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """A text model whose matrix (~5 MB of text) is parsed in pieces on all threads."""
    rng = np.random.default_rng(7)
    w = (0.05 * rng.standard_normal((1024, 512))).astype(np.float32)
    path = tmp_path_factory.mktemp("threads") / "m.txt"
    svdistill.write(Model([Component.affine(w)]), path, binary=False)
    return path, w


@pytest.fixture
def threads():
    yield linalg.set_num_threads
    linalg.set_num_threads(0)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="lists /proc/self/task")
def test_workers_are_started_once_and_kept(text_model):
    """In a fresh process (the pool lives as long as the process): the first
    parallel job starts the workers, later jobs reuse them, more threads add
    only the missing ones."""
    path, _ = text_model
    script = r'''
import os, sys, numpy as np, svdistill
from svdistill import linalg
path = sys.argv[1]
tasks = lambda: set(os.listdir("/proc/self/task"))
linalg.set_num_threads(2)  # (BLAS may start threads of its own here)
w = svdistill.read(path).components[0].weight
kept = tasks()
for _ in range(10):
    assert np.array_equal(svdistill.read(path).components[0].weight, w)
assert tasks() == kept, "a thread started or left per call"
linalg.set_num_threads(4)
before = tasks()
assert np.array_equal(svdistill.read(path).components[0].weight, w)
grown = tasks()
assert before <= grown and len(grown - before) == 2, (before, grown)
linalg.set_num_threads(2)
for _ in range(3):
    assert np.array_equal(svdistill.read(path).components[0].weight, w)
assert tasks() == grown
print("ok")
'''
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


def test_concurrent_callers_get_their_own_results(text_model, threads):
    """Python threads calling the core at once (the GIL is released): one job
    has the pool, the others run on threads of their own; all values right."""
    path, w = text_model
    threads(2)
    errors: list = []

    def reader(k: int) -> None:
        try:
            for _ in range(4):
                m = svdistill.read(path)
                assert np.array_equal(m.components[0].weight, w), k
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    workers = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in workers), "a reader hung"
    assert errors == []


def test_an_error_in_a_parallel_job_leaves_the_pool_working(text_model, threads, tmp_path):
    path, w = text_model
    threads(2)
    text = path.read_bytes()
    bad = bytearray(text)
    at = len(bad) // 2
    at = bad.index(b" ", at) + 1
    bad[at:at + 1] = b"x"
    bad_path = tmp_path / "bad.txt"
    bad_path.write_bytes(bytes(bad))
    for _ in range(3):
        with pytest.raises(svdistill.FormatError, match=r"bad.txt:\d+:\d+: component 1"):
            svdistill.read(bad_path)
        assert np.array_equal(svdistill.read(path).components[0].weight, w)


# Fork: tests/test_model.py::test_large_blocks_and_threads_after_fork.


@pytest.mark.parametrize("sanitizer", [None, "thread"], ids=["plain", "tsan"])
def test_parallel_for_in_cpp(tmp_path, sanitizer):
    """tests/cpp/threads_check.cc against cpp/util/threads.cc: every task once
    for 0-99 tasks on 1-4 threads, nested calls, exceptions, three callers at
    once, the workers' signal mask, fork (not under ThreadSanitizer, which
    does not support threads started after a fork)."""
    flags = ["-O2"] if sanitizer is None else ["-O1", "-g", f"-fsanitize={sanitizer}"]

    def no_sanitizer(stderr: str):
        return f"the compiler cannot build with -fsanitize={sanitizer}: {stderr[-200:]}" if sanitizer else None
    run = run_cpp_check(tmp_path, ["tests/cpp/threads_check.cc", "cpp/util/threads.cc"],
                        ["fork"] if sanitizer is None else [], flags=flags, skip_build=no_sanitizer)
    assert run.stdout.rstrip().endswith("failures 0"), run.stdout + run.stderr
    assert "WARNING: ThreadSanitizer" not in run.stderr, run.stderr
