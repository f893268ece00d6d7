"""The PyTorch engine of distill: the core's update rules and statistics, the acceptance case,
the same refusals; CUDA cases run where a GPU is present."""
from __future__ import annotations

import json
from typing import List

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import svdistill  # noqa: E402
from conftest import synthetic_feats  # noqa: E402
from svdistill import Component, Model  # noqa: E402
from svdistill.distill import distill  # noqa: E402
from svdistill.distill.engine import STAT_KEYS, CoreEngine, train_options  # noqa: E402
from svdistill.distill.engine_torch import TorchEngine  # noqa: E402
from test_distill import _affine, _block_softmax, _fidelity, _linear, _prelu, _vector  # noqa: E402

CUDA = torch.cuda.is_available()


def _student(rng) -> List[Component]:
    """Every trainable kind, coefficients below and above 1, a frozen layer, MaxNorm."""
    prelu = _prelu(rng, 8)
    prelu._set_coef("<AlphaLearnRateCoef>", 0.5)
    prelu._set_coef("<BetaLearnRateCoef>", 1.0)
    frozen = _affine(rng, 8, 8, learn_rate_coef=0.0, bias_learn_rate_coef=0.0)
    return [_vector("AddShift", rng.normal(0, 0.3, 5)), _vector("Rescale", rng.uniform(0.5, 1.5, 5), coef=2.0),
            _affine(rng, 5, 8, learn_rate_coef=0.5, bias_learn_rate_coef=0.1), Component.activation("Sigmoid", 8),
            _linear(rng, 8, 3), _affine(rng, 3, 8), prelu, frozen, Component.activation("Tanh", 8),
            _affine(rng, 8, 6, scale=2.0, max_norm=1.0), Component.activation("Softmax", 6)]


def _step_case(frames: int):
    """(student, teacher, features, labels with some -1) for the update-rule comparisons."""
    rng = np.random.default_rng(0)
    student = _student(rng)
    teacher = Model([_affine(rng, 5, 6), Component.activation("Softmax", 6)])
    x = rng.normal(size=(frames, 5)).astype(np.float32)
    y = rng.integers(-1, 6, frames).astype(np.int32)
    return student, teacher, x, y


def _engines(student, teachers, device=None, **opts):
    o = train_options(**{**dict(temperature=2.0, hard_weight=0.3, average_logits=False, optimizer="sgd",
                                momentum=0.0, l2_penalty=0.0), **opts})
    ca, cb = [c.copy() for c in student], [c.copy() for c in student]
    return ca, CoreEngine(ca, teachers, None, o), cb, TorchEngine(cb, teachers, None, o, device=device)


def _assert_same_update(before, core_comps, torch_comps, rel=1e-5):
    changed = 0
    for i, (a, b, bf) in enumerate(zip(core_comps, torch_comps, before)):
        for k in a.params:
            da = a.params[k].astype(np.float64) - bf[k]
            db = b.params[k].astype(np.float64) - bf[k]
            scale = np.abs(da).max()
            if scale == 0:
                assert np.abs(db).max() == 0, (i, a.kind, k)  # frozen on both
                continue
            changed += 1
            assert np.abs(da - db).max() <= rel * scale, (i, a.kind, k, np.abs(da - db).max() / scale)
    return changed


@pytest.mark.parametrize("optimizer, momentum, l2", [("sgd", 0.0, 0.0), ("sgd", 0.7, 1e-3), ("adam", 0.0, 1e-2)])
def test_one_step_equals_the_core_update(optimizer, momentum, l2):
    student, teacher, x, y = _step_case(32)
    before = [{k: v.astype(np.float64) for k, v in c.params.items()} for c in student]
    ca, core, cb, tor = _engines(student, [teacher], optimizer=optimizer, momentum=momentum, l2_penalty=l2)
    for _ in range(3):  # momentum and Adam's moments need more than one step to show
        sc = core.train(x, y, 0.05)
        st = tor.read(tor.train(tor.prepare(tor.host(x)), tor.labels(y), 0.05))
        for k in STAT_KEYS:
            assert st[k] == pytest.approx(sc[k], rel=1e-5, abs=1e-6), k
    tor.result()
    assert _assert_same_update(before, ca, cb) == 11  # every trainable block moved, frozen ones did not


@pytest.mark.parametrize("teachers, average_logits", [(1, False), (2, False), (2, True), (0, False)])
def test_statistics_equal_the_core_on_block_softmax(teachers, average_logits):
    rng = np.random.default_rng(3)
    blocks = [3, 4]
    student = [_affine(rng, 5, 6), Component.activation("Sigmoid", 6), _affine(rng, 6, 7), _block_softmax(blocks)]
    tlist = [Model([_affine(rng, 5, 7, scale=1.5), _block_softmax(blocks)]) for _ in range(teachers)]
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = rng.integers(-1, 7, 40).astype(np.int32)
    opts = dict(hard_weight=0.3 if teachers else 1.0, average_logits=average_logits)
    ca, core, cb, tor = _engines(student, tlist, **opts)
    sc = core.evaluate(x, y)
    st = tor.read(tor.evaluate(tor.prepare(tor.host(x)), tor.labels(y)))
    for k in STAT_KEYS:
        assert st[k] == pytest.approx(sc[k], rel=1e-5, abs=1e-6), k
    before = [{k: v.astype(np.float64) for k, v in c.params.items()} for c in student]
    core.train(x, y, 0.02)
    tor.train(tor.prepare(tor.host(x)), tor.labels(y), 0.02)
    tor.result()
    _assert_same_update(before, ca, cb)


@pytest.fixture(scope="module")
def dnn(fixtures_dir):
    return svdistill.read(fixtures_dir / "dnn.nnet.bin"), svdistill.read(fixtures_dir / "final.feature_transform")


def test_acceptance_case_on_the_torch_engine(dnn, fixtures_dir, tmp_path, run_cli):
    """The core engine's acceptance case (rank-24 student, label-free, defaults) through the CLI."""
    import kaldiio
    teacher, ft = dnn
    student, _ = svdistill.compress(teacher, rank=24)
    student.write(tmp_path / "student.nnet", binary=True)
    train = synthetic_feats(ft, 100, 300, seed=1)
    unseen = synthetic_feats(ft, 20, 300, seed=2)
    kaldiio.save_ark(str(tmp_path / "train.ark"), train, scp=str(tmp_path / "train.scp"))
    proc = run_cli("distill", "--engine", "torch", "--teacher", fixtures_dir / "dnn.nnet.bin",
                   "--feature-transform", fixtures_dir / "final.feature_transform",
                   tmp_path / "student.nnet", f"scp:{tmp_path / 'train.scp'}", tmp_path / "out.nnet",
                   "--report", tmp_path / "report.json", timeout=600)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "wait" in err.splitlines()[0] and "accepted" in err
    out = svdistill.read(tmp_path / "out.nnet")
    assert out.binary
    assert [c.kind for c in out] == [c.kind for c in student]
    before = _fidelity(teacher, student, ft, unseen)
    after = _fidelity(teacher, out, ft, unseen)
    assert after["kl"] * 5 <= before["kl"], (before, after)
    assert after["agree"] >= before["agree"] + 0.30, (before, after)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["engine"] == "torch" and report["device"] == "cpu"
    assert all(0 <= e["wait_share"] < 1 for e in report["epochs"][1:] if e["wait_share"] is not None)


def test_both_engines_train_the_same_model(dnn):
    """Same data, seed and schedule: the same epochs, and weights equal to float rounding."""
    teacher, ft = dnn
    student, _ = svdistill.compress(teacher, rank=16)
    feats = synthetic_feats(ft, 12, 120, seed=3)
    kw = dict(teacher=teacher, feature_transform=ft, max_epochs=2, minibatch_size=64, momentum=0.5)
    a, ra = distill(student, feats, engine="core", **kw)
    b, rb = distill(student, feats, engine="torch", **kw)
    assert [e.accepted for e in ra.epochs] == [e.accepted for e in rb.epochs]
    for ea, eb in zip(ra.epochs, rb.epochs):
        assert eb.cv_objective == pytest.approx(ea.cv_objective, rel=1e-4)
    for x, y in zip(a.components, b.components):
        if x.weight is not None:
            np.testing.assert_allclose(y.weight, x.weight, rtol=1e-4, atol=1e-5)
    assert rb.engine == "torch" and ra.engine == "core"


def test_divergence_and_labels_on_the_torch_engine():
    from test_distill import _clusters
    feats, labels, model = _clusters(12, classes=4, utterances=40, hidden=64)
    out, rep = distill(model, feats, labels=labels, minibatch_size=32, learn_rate=20.0, max_epochs=4,
                       engine="torch")
    assert any(e.diverged for e in rep.epochs)
    assert rep.best.cv_accuracy > 0.9


@pytest.mark.parametrize("kw, message", [
    (dict(engine="torch", precision="bf16"), "needs a CUDA device"),
    (dict(engine="core", device="cuda"), "the core engine runs on the CPU"),
    (dict(engine="core", precision="tf32"), "the core engine trains in fp32"),
    (dict(engine="gpu"), "engine must be 'core' or 'torch'"),
    (dict(engine="torch", device="tpu"), "device must be cpu, cuda or cuda:N"),
] + ([] if CUDA else [(dict(device="cuda"), "PyTorch sees no CUDA device")]))
def test_engine_options_are_checked(kw, message):
    rng = np.random.default_rng(1)
    model = Model([_affine(rng, 4, 3), Component.activation("Softmax", 3)])
    feats = {f"u{i}": rng.normal(size=(20, 4)).astype(np.float32) for i in range(10)}
    with pytest.raises(svdistill.Error, match=message):
        distill(model, feats, teacher=model, max_epochs=1, **kw)


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_cuda_engine_trains(dnn, precision):
    teacher, ft = dnn
    student, _ = svdistill.compress(teacher, rank=24)
    feats = synthetic_feats(ft, 40, 300, seed=1)
    unseen = synthetic_feats(ft, 10, 300, seed=2)
    out, rep = distill(student, feats, teacher=teacher, feature_transform=ft, device="cuda",
                       precision=precision, max_epochs=4)
    assert rep.engine == "torch" and rep.device.startswith("cuda") and rep.precision == precision
    before = _fidelity(teacher, student, ft, unseen)
    after = _fidelity(teacher, out, ft, unseen)
    assert after["kl"] * 3 <= before["kl"], (before, after)


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_cuda_step_equals_the_core_update():
    student, teacher, x, y = _step_case(64)
    before = [{k: v.astype(np.float64) for k, v in c.params.items()} for c in student]
    ca, core, cb, tor = _engines(student, [teacher], device="cuda", momentum=0.5, l2_penalty=1e-3)
    torch.backends.cuda.matmul.allow_tf32 = False
    for _ in range(2):
        core.train(x, y, 0.05)
        tor.train(tor.prepare(tor.host(x)), tor.labels(y), 0.05)
    tor.result()
    _assert_same_update(before, ca, cb, rel=1e-4)
