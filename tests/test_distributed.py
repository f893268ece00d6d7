"""torchrun with several ranks (gloo on the CPU): the combined update equals one process's on the
same frames, the acceptance case passes, a failing rank stops the others."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import svdistill  # noqa: E402
from conftest import synthetic_feats  # noqa: E402
from svdistill import Component, Model  # noqa: E402
from svdistill.distill.engine import CoreEngine, train_options  # noqa: E402
from test_distill import _fidelity  # noqa: E402
from test_distill_torch import _step_case  # noqa: E402


def _torchrun(args, tmp_path, nproc=2, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(29500 + os.getpid() % 1000), *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, timeout=timeout, cwd=tmp_path)


STEP_SCRIPT = textwrap.dedent('''
    import sys
    import numpy as np
    from svdistill.distill.distributed import Dist
    from svdistill.distill.engine import train_options
    from svdistill.distill.engine_torch import TorchEngine
    from test_distill_torch import _step_case
    optimizer, out = sys.argv[1], sys.argv[2]
    student, teacher, x, y = _step_case(96)
    dist = Dist.from_env()
    dist.start("cpu")
    o = train_options(optimizer, temperature=2.0, hard_weight=0.3, average_logits=False,
                      momentum=0.7 if optimizer == "sgd" else 0.0, l2_penalty=1e-3)
    eng = TorchEngine([c.copy() for c in student], [teacher], None, o, dist=dist)
    # Uneven shards: rank 0 has two minibatches of 32 frames, rank 1 one.
    mine = [(0, 32), (32, 64)] if dist.rank == 0 else [(64, 96)]
    batches = [(eng.prepare(eng.host(x[a:b])), eng.labels(y[a:b]), b - a) for a, b in mine]
    stats = [eng.read(s) for _, s, _ in eng.steps(iter(batches), 0.05)]
    comps = eng.result()
    if dist.rank == 0:
        np.savez(out, *[v for c in comps for v in c.params.values()])
        import json
        json.dump(stats, open(out + ".json", "w"))
    dist.stop()
''')


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_two_ranks_make_the_update_of_one_process_on_the_same_frames(tmp_path, optimizer):
    (tmp_path / "step.py").write_text(STEP_SCRIPT)
    proc = _torchrun(["step.py", optimizer, tmp_path / "out.npz"], tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    got = np.load(tmp_path / "out.npz")
    stats = json.loads((tmp_path / "out.npz.json").read_text())
    # One process: step 1 on rank 0's first minibatch + rank 1's, step 2 on rank 0's second.
    student, teacher, x, y = _step_case(96)
    o = train_options(optimizer, temperature=2.0, hard_weight=0.3, average_logits=False,
                      momentum=0.7 if optimizer == "sgd" else 0.0, l2_penalty=1e-3)
    comps = [c.copy() for c in student]
    core = CoreEngine(comps, [teacher], None, o)
    want = []
    for idx in (np.r_[0:32, 64:96], np.r_[32:64]):
        want.append(core.train(x[idx], y[idx], 0.05))
    flat = [v for c in comps for v in c.params.values()]
    assert len(flat) == len(got.files)
    for i, v in enumerate(flat):
        np.testing.assert_allclose(got[f"arr_{i}"], v, rtol=1e-5, atol=1e-6)
    assert [s["frames"] for s in stats] == [64, 32]
    for s, w in zip(stats, want):
        assert s["objective"] == pytest.approx(w["objective"], rel=1e-5)
        assert s["agree"] == w["agree"] and s["labelled"] == w["labelled"]


def test_acceptance_case_on_two_ranks(fixtures_dir, tmp_path):
    import kaldiio
    teacher = svdistill.read(fixtures_dir / "dnn.nnet.bin")
    ft = svdistill.read(fixtures_dir / "final.feature_transform")
    student, _ = svdistill.compress(teacher, rank=24)
    student.write(tmp_path / "student.nnet", binary=True)
    kaldiio.save_ark(str(tmp_path / "train.ark"), synthetic_feats(ft, 100, 300, seed=1),
                     scp=str(tmp_path / "train.scp"))
    unseen = synthetic_feats(ft, 20, 300, seed=2)
    proc = _torchrun(["-m", "svdistill", "distill", "--engine", "torch", "--teacher", fixtures_dir / "dnn.nnet.bin",
                      "--feature-transform", fixtures_dir / "final.feature_transform",
                      "--report", tmp_path / "report.json", "--checkpoint-dir", tmp_path / "ck",
                      tmp_path / "student.nnet", f"scp:{tmp_path / 'train.scp'}", tmp_path / "out.nnet"], tmp_path,
                     timeout=600)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err[-3000:]
    assert err.count("best epoch") == 1  # one table: rank 0's
    out = svdistill.read(tmp_path / "out.nnet")
    before, after = _fidelity(teacher, student, ft, unseen), _fidelity(teacher, out, ft, unseen)
    assert after["kl"] * 5 <= before["kl"], (before, after)
    assert after["agree"] >= before["agree"] + 0.30, (before, after)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ranks"] == 2
    # Every epoch trained every training frame once over both ranks, less each rank's partial minibatch.
    n_train = 30_000 - report["cv_frames"]
    assert all(n_train - 2 * 256 < e["train_frames"] <= n_train for e in report["epochs"][1:])
    assert len([p for p in (tmp_path / "ck").iterdir() if p.suffix == ".npz"]) == 2


def test_a_failing_rank_stops_the_others(tmp_path):
    import kaldiio
    rng = np.random.default_rng(4)
    model = Model([Component.affine(rng.normal(size=(3, 4)).astype(np.float32)), Component.activation("Softmax", 3)])
    model.write(tmp_path / "m.nnet")
    feats = {f"u{i:03d}": rng.normal(size=(50, 4)).astype(np.float32) for i in range(40)}
    # One training utterance is unreadable for the student (7 dims): the rank that reads it fails.
    from svdistill.distill.data import cv_by_hash
    bad = next(k for k in feats if not cv_by_hash(k, 0.1))
    feats[bad] = rng.normal(size=(50, 7)).astype(np.float32)
    kaldiio.save_ark(str(tmp_path / "f.ark"), feats)
    proc = _torchrun(["-m", "svdistill", "distill", "--engine", "torch", "--teacher", tmp_path / "m.nnet",
                      tmp_path / "m.nnet", f"ark:{tmp_path / 'f.ark'}", tmp_path / "o.nnet"], tmp_path, timeout=180)
    err = proc.stderr.decode()
    assert proc.returncode != 0
    assert f"utterance {bad}: features have 7 dims" in err, err[-3000:]
    assert not (tmp_path / "o.nnet").exists()


def test_the_core_engine_refuses_several_ranks(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    rng = np.random.default_rng(1)
    model = Model([Component.affine(rng.normal(size=(3, 4)).astype(np.float32)), Component.activation("Softmax", 3)])
    with pytest.raises(svdistill.Error, match="several processes train with the torch engine only"):
        svdistill.distill(model, rng.normal(size=(50, 4)).astype(np.float32), teacher=model)
