"""The core's worker threads: started once and kept, one job at a time, and
safe across Python threads and fork."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import svdistill
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


def _task_ids() -> set:
    return set(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="lists /proc/self/task")
def test_workers_are_started_once_and_kept(text_model, threads):
    path, w = text_model
    threads(2)
    svdistill.read(path)
    kept = _task_ids()
    for _ in range(10):
        assert np.array_equal(svdistill.read(path).components[0].weight, w)
    # The same threads did the work: none started per call, none left over.
    assert _task_ids() == kept
    threads(4)  # (BLAS may start threads of its own here)
    before = _task_ids()
    assert np.array_equal(svdistill.read(path).components[0].weight, w)
    grown = _task_ids()
    assert len(grown - before) == 2 and before <= grown, "two more helpers for four threads"
    threads(2)
    for _ in range(3):
        assert np.array_equal(svdistill.read(path).components[0].weight, w)
    assert _task_ids() == grown


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
