"""Checkpoints and resume: a run that dies and resumes ends with the model of a run that did not."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import svdistill
from conftest import signal_once_accepted, synthetic_feats
from svdistill.distill import checkpoint as ckpt_mod
from svdistill.distill import distill
from test_distill import _clusters

ENGINES = ["core", pytest.param("torch", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("torch") is None, reason="torch not installed"))]


class _Died(BaseException):
    """Stands for a SIGKILL right after a checkpoint was written."""


@pytest.fixture(scope="module")
def setup(fixtures_dir):
    teacher = svdistill.read(fixtures_dir / "dnn.nnet.bin")
    ft = svdistill.read(fixtures_dir / "final.feature_transform")
    student, _ = svdistill.compress(teacher, rank=16)
    feats = synthetic_feats(ft, 24, 100, seed=5)
    return teacher, ft, student, feats


def _kw(setup, **more):
    teacher, ft, _, _ = setup
    return {**dict(teacher=teacher, feature_transform=ft, max_epochs=4, minibatch_size=64, momentum=0.5,
                   randomizer_size=500, start_halving_impr=0.5), **more}


def _same(a, b, exact: bool):
    for x, y in zip(a.components, b.components):
        for k in x.params:
            if exact:
                assert np.array_equal(x.params[k], y.params[k]), (x.kind, k)
            else:  # torch's CPU GEMMs (MKL) round by memory alignment: runs differ in the last bits,
                # and momentum carries that through the epochs
                a, b = x.params[k].astype(np.float64), y.params[k].astype(np.float64)
                assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(a), (x.kind, k)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("die_after", [1, 2, 4, 7])
def test_resume_after_dying_gives_the_uninterrupted_model(setup, tmp_path, monkeypatch, engine, die_after):
    """Dies after the n-th checkpoint (the initial one, mid-epoch ones every 640 frames, epoch ends)."""
    _, _, student, feats = setup
    ref, ref_rep = distill(student, feats, engine=engine, **_kw(setup))
    saves = []
    real_save = ckpt_mod.Checkpoints.save

    def save_then_die(self, *a, **k):
        path = real_save(self, *a, **k)
        saves.append(os.path.basename(path))
        if len(saves) == die_after:
            raise _Died()
        return path

    monkeypatch.setattr(ckpt_mod.Checkpoints, "save", save_then_die)
    kw = _kw(setup, checkpoint_dir=str(tmp_path / "ck"), checkpoint_every=640)
    with pytest.raises(_Died):
        distill(student, feats, engine=engine, **kw)
    monkeypatch.setattr(ckpt_mod.Checkpoints, "save", real_save)
    lines = []
    out, rep = distill(student, feats, engine=engine, resume=True, log=lines.append, **kw)
    assert lines[0].startswith("resuming from") and saves[-1] in lines[0]
    _same(ref, out, exact=engine == "core")
    assert [e.accepted for e in rep.epochs] == [e.accepted for e in ref_rep.epochs]
    assert rep.best_epoch == ref_rep.best_epoch and rep.stopped == ref_rep.stopped
    kept = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert len(kept) == ckpt_mod.KEEP and all(p.startswith("checkpoint-") for p in kept)


@pytest.mark.parametrize("engine", ENGINES)
def test_sigkill_and_resume_through_the_cli(setup, fixtures_dir, tmp_path, engine):
    """A real SIGKILL in the middle of training; the resumed run writes the same bytes (core) or
    the same model to float rounding (torch)."""
    import kaldiio
    _, ft, student, feats = setup
    student.write(tmp_path / "s.nnet", binary=True)
    kaldiio.save_ark(str(tmp_path / "f.ark"), synthetic_feats(ft, 40, 150, seed=6))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", SVDISTILL_NUM_THREADS="2")

    def cli(out, *extra):
        return [sys.executable, "-m", "svdistill", "distill", "--teacher", str(fixtures_dir / "dnn.nnet.bin"),
                "--feature-transform", str(fixtures_dir / "final.feature_transform"), "--max-epochs", "6",
                "--start-halving-impr", "0", "--end-halving-impr", "0", "--momentum", "0.9",
                "--minibatch-size", "128", "--engine", engine, str(tmp_path / "s.nnet"),
                f"ark:{tmp_path / 'f.ark'}", str(out), *extra]

    subprocess.run(cli(tmp_path / "ref.nnet"), check=True, env=env, capture_output=True, timeout=300)
    ck = ["--checkpoint-dir", str(tmp_path / "ck"), "--checkpoint-every", "1000"]
    rc, _ = signal_once_accepted(cli(tmp_path / "out.nnet", *ck), signal.SIGKILL, env)
    assert rc == -signal.SIGKILL
    assert not (tmp_path / "out.nnet").exists()
    done = subprocess.run(cli(tmp_path / "out.nnet", *ck, "--resume"), env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    assert "resuming from" in done.stderr.decode()
    if engine == "core":
        assert (tmp_path / "out.nnet").read_bytes() == (tmp_path / "ref.nnet").read_bytes()
    else:
        _same(svdistill.read(tmp_path / "ref.nnet"), svdistill.read(tmp_path / "out.nnet"), exact=False)
    assert not [p for p in (tmp_path / "ck").iterdir() if p.name.endswith(".tmp")]


def test_resume_refuses_other_options_or_data(setup, tmp_path):
    _, _, student, feats = setup
    kw = _kw(setup, checkpoint_dir=str(tmp_path / "ck"))
    kw["max_epochs"] = 1
    distill(student, feats, **kw)
    with pytest.raises(svdistill.Error, match=r"made with learn_rate = 0\.008, this run has 0\.004"):
        distill(student, feats, resume=True, **{**kw, "learn_rate": 0.004})
    other = dict(feats)
    other[next(iter(other))] = other[next(iter(other))] + 1
    with pytest.raises(svdistill.Error, match="made with feats = 'dict of 24 utterances"):
        distill(student, other, resume=True, **kw)
    with pytest.raises(svdistill.Error, match="made with student"):
        s2, _ = svdistill.compress(setup[0], rank=8)
        distill(s2, feats, resume=True, **kw)
    # --max-epochs may grow: the run goes on where it stopped.
    _, rep = distill(student, feats, resume=True, **{**kw, "max_epochs": 2})
    assert len([e for e in rep.epochs if e.epoch]) == 2
    with pytest.raises(svdistill.Error, match="resume is set, but .* holds no checkpoint"):
        distill(student, feats, resume=True, **{**kw, "checkpoint_dir": str(tmp_path / "empty")})
    with pytest.raises(svdistill.Error, match="resume needs a checkpoint folder"):
        distill(student, feats, resume=True, max_epochs=1, teacher=setup[0], feature_transform=setup[1])


def test_a_corrupt_checkpoint_falls_back_then_is_a_clear_error(setup, tmp_path):
    _, _, student, feats = setup
    kw = _kw(setup, checkpoint_dir=str(tmp_path / "ck"), max_epochs=2)
    ref, _ = distill(student, feats, **kw)
    older, newest = sorted((tmp_path / "ck").iterdir())
    newest.write_bytes(newest.read_bytes()[:100])
    lines = []
    out, _ = distill(student, feats, resume=True, log=lines.append, **kw)  # from the one before
    assert lines[0].startswith("skipped") and "not a readable svdistill checkpoint" in lines[0]
    assert older.name in lines[1]
    _same(ref, out, exact=True)
    for p in (tmp_path / "ck").iterdir():
        p.write_bytes(b"junk")
    with pytest.raises(svdistill.Error, match="not a readable svdistill checkpoint"):
        distill(student, feats, resume=True, **kw)


def test_a_used_folder_is_not_taken_over_by_a_fresh_run(setup, tmp_path):
    _, _, student, feats = setup
    kw = _kw(setup, checkpoint_dir=str(tmp_path / "ck"), max_epochs=1)
    distill(student, feats, **kw)
    with pytest.raises(svdistill.Error, match="already holds checkpoints of a run: give (--)?resume"):
        distill(student, feats, **{**kw, "seed": 2})


def test_the_fingerprint_sees_coefficients_and_splice_offsets(setup):
    teacher, ft, student, _ = setup
    base = ckpt_mod.model_fingerprint(student)
    s2 = svdistill.Model([c.copy() for c in student.components])
    s2.components[0].learn_rate_coef = 0.5
    assert ckpt_mod.model_fingerprint(s2) != base
    s3 = svdistill.Model([c.copy() for c in student.components])
    s3.components[-2].max_norm = 2.0
    assert ckpt_mod.model_fingerprint(s3) != base
    import io
    a = svdistill.read(io.BytesIO(b"<Nnet>\n<Splice> 6 2\n[ -1 0 1 ]\n</Nnet>\n"))
    b = svdistill.read(io.BytesIO(b"<Nnet>\n<Splice> 6 2\n[ -2 0 2 ]\n</Nnet>\n"))
    assert ckpt_mod.model_fingerprint(a) != ckpt_mod.model_fingerprint(b)


def test_label_training_checkpoints_too(tmp_path):
    feats, labels, model = _clusters(8, classes=5, utterances=30, hidden=16)
    kw = dict(labels=labels, minibatch_size=32, max_epochs=3, checkpoint_dir=str(tmp_path / "ck"),
              optimizer="adam")
    a, _ = distill(model, feats, **kw)
    b, _ = distill(model, feats, resume=True, **kw)  # resumes the finished run: nothing left to train
    _same(a, b, exact=True)


def test_checkpoints_are_written_as_every_output_and_flushed_whatever_svdistill_fsync(tmp_path, monkeypatch):
    """One atomic-output mechanism: the usual mode (not mkstemp's 0600), a locked temporary that a
    later run removes once its writer is gone, and durable (fsync) even without SVDISTILL_FSYNC."""
    import fcntl
    import re
    import socket

    from svdistill import _core
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname() or "host")[:32]
    folder = tmp_path / "ck"
    folder.mkdir()
    stale = folder / f".checkpoint-0003-00000000.npz.svdistill-{host}.{os.getppid()}-zz9zz9"
    busy = folder / f".checkpoint-0004-00000000.npz.svdistill-{host}.2147483646-yy8yy8"
    old_style = folder / ".checkpoint-abc123.tmp"
    for p in (stale, busy, old_style):
        p.write_bytes(b"partial")
    holder = os.open(busy, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    calls = []
    real = _core.commit_output

    def commit(tmp, target, name, fd=-1, durable=False):
        calls.append(durable)
        return real(tmp, target, name, fd, durable)

    monkeypatch.setattr(_core, "commit_output", commit)
    monkeypatch.delenv("SVDISTILL_FSYNC", raising=False)
    try:
        c = ckpt_mod.Checkpoints(str(folder), {"x": 1})
        assert not stale.exists() and not old_style.exists() and busy.exists()
        path = c.save({"epoch": 1}, {"w": np.ones(3, np.float32)}, 1, 0)
    finally:
        os.close(holder)
    assert calls == [True]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    meta, arrays, _ = c.load_newest()
    assert meta["epoch"] == 1 and arrays["w"].tolist() == [1, 1, 1]
    assert sorted(p.name for p in folder.iterdir()) == [busy.name, "checkpoint-0001-00000000.npz"]
