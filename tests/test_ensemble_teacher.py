"""distill(teacher_ensemble=...): a generalist and its specialists (ensemble.json) as the teacher,
on both engines; and the logits-teacher seam it goes through."""
from __future__ import annotations

import numpy as np
import pytest

import svdistill
from svdistill import Component, Error, Model
from svdistill.distill import distill
from svdistill.distill.engine import STAT_KEYS, CoreEngine, LogitsTeacher, train_options
from svdistill.specialists import Ensemble, specialists
from test_distill import _block_softmax
from test_specialists import TRAIN, blobs, small_generalist

TRAIN_NO_EPOCHS = {k: v for k, v in TRAIN.items() if k != "max_epochs"}


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    """(ensemble.json's path, the features, the generalist): 6 classes, 2 specialists."""
    tmp = tmp_path_factory.mktemp("ens")
    rng = np.random.default_rng(7)
    feats, labels = blobs(rng)
    g = small_generalist(rng, (6, 8, 6))
    g, _ = distill(g, feats, labels=labels, **TRAIN)
    g.write(str(tmp / "g.nnet"))
    specialists(str(tmp / "g.nnet"), feats, tmp / "out", num_specialists=2, classes_per_specialist=2, **TRAIN)
    return tmp / "out" / "ensemble.json", feats, g


def _softmax(z):
    z = z.astype(np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _kl_to(ens, student, feats):
    """KL(ensemble || student) per frame over ``feats``."""
    kl = n = 0.0
    for x in feats.values():
        p = ens(x).astype(np.float64)
        q = svdistill.forward(student, x).astype(np.float64)
        kl += float((p * (np.log(np.maximum(p, 1e-30)) - np.log(np.maximum(q, 1e-30)))).sum())
        n += len(x)
    return kl / n


def test_logits_are_log_q(ensemble):
    path, feats, _ = ensemble
    ens = Ensemble(path)
    x = np.concatenate(list(feats.values()))
    q = ens(x)
    z = ens.logits(x)  # no feature transform: the same frames
    assert z.dtype == np.float32 and np.isfinite(z).all()
    np.testing.assert_allclose(_softmax(z), q, rtol=1e-5, atol=1e-7)
    two = Ensemble(path, top_n=2)
    np.testing.assert_allclose(_softmax(two.logits(x)), two(x), rtol=1e-5, atol=1e-7)
    assert np.array_equal(two(x), ens(x, top_n=2))  # __call__ takes the ensemble's top_n by default
    with pytest.raises(Error, match="top_n"):
        Ensemble(path, top_n=7)


def test_distilling_the_ensemble_lowers_the_kl_to_it(ensemble):
    path, feats, g = ensemble
    ens = Ensemble(path)
    student = small_generalist(np.random.default_rng(11), (6, 8, 6))
    lines = []
    out, report = distill(student, feats, teacher_ensemble=path, optimizer="adam", learn_rate=0.01,
                          minibatch_size=16, max_epochs=4, log=lines.append)
    assert _kl_to(ens, out, feats) < 0.5 * _kl_to(ens, student, feats)
    assert report.teachers == 1 and report.teacher_ensemble == "1 generalist + 2 specialists"
    assert "teacher: an ensemble of 1 generalist + 2 specialists" in report.summary()
    assert report.best.cv_kl < report.initial.cv_kl
    # An Ensemble object does the same as its path.
    out2, _ = distill(student, feats, teacher_ensemble=ens, optimizer="adam", learn_rate=0.01, minibatch_size=16,
                      max_epochs=4)
    for a, b in zip(out.components, out2.components):
        for k in a.params:
            assert np.array_equal(a.params[k], b.params[k])


def test_both_engines_agree_for_one_step(ensemble):
    torch = pytest.importorskip("torch")  # noqa: F841
    from svdistill.distill.engine_torch import TorchEngine
    path, feats, _ = ensemble
    ens = Ensemble(path)
    teacher = LogitsTeacher(6, 6, ens.logits, "teacher ensemble")
    student = small_generalist(np.random.default_rng(12), (6, 8, 6)).components
    x = np.concatenate(list(feats.values()))[:64]
    y = np.zeros(64, np.int32)
    o = train_options(temperature=2.0, hard_weight=0.2)
    a, b = [c.copy() for c in student], [c.copy() for c in student]
    core, tor = CoreEngine(a, [teacher], None, o), TorchEngine(b, [teacher], None, o)
    sc = core.train(x, y, 0.05)
    st = tor.read(tor.train(tor.prepare(tor.host(x)), tor.labels(y), 0.05))
    for k in STAT_KEYS:
        assert st[k] == pytest.approx(sc[k], rel=1e-5, abs=1e-6), k
    assert sc["blocks"] == 64 and sc["kl_t"] > 0
    tor.result()
    for ca, cb, c0 in zip(a, b, student):
        for k in ca.params:
            da = ca.params[k].astype(np.float64) - c0.params[k]
            db = cb.params[k].astype(np.float64) - c0.params[k]
            assert np.abs(da).max() > 0 and np.abs(da - db).max() <= 1e-5 * np.abs(da).max(), k


def test_cuda_engine_distils_the_ensemble(ensemble):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    path, feats, _ = ensemble
    student = small_generalist(np.random.default_rng(11), (6, 8, 6))
    out, report = distill(student, feats, teacher_ensemble=path, optimizer="adam", learn_rate=0.01,
                          minibatch_size=16, max_epochs=4, device="cuda")
    assert report.engine == "torch" and report.device.startswith("cuda")
    ens = Ensemble(path)
    assert _kl_to(ens, out, feats) < 0.5 * _kl_to(ens, student, feats)


@pytest.mark.parametrize("engine", ["core", "torch"])
def test_a_nonfinite_ensemble_output_is_named(ensemble, engine):
    path, feats, _ = ensemble
    student = small_generalist(np.random.default_rng(13), (6, 8, 6)).components
    bad = LogitsTeacher(6, 6, lambda x: np.where(np.arange(len(x))[:, None] == 2, np.nan, x).astype(np.float32),
                        "teacher ensemble")
    if engine == "core":
        eng = CoreEngine([c.copy() for c in student], [bad], None, train_options())
    else:
        pytest.importorskip("torch")
        from svdistill.distill.engine_torch import TorchEngine
        eng = TorchEngine([c.copy() for c in student], [bad], None, train_options())
    x = next(iter(feats.values()))
    stage, frame, _ = eng.first_nonfinite(eng.host(x), len(x), slice(0, len(x)))
    assert (stage, frame) == ("the teacher ensemble outputs", 2)


def test_option_errors(ensemble, tmp_path):
    path, feats, g = ensemble
    student = small_generalist(np.random.default_rng(14), (6, 8, 6))
    ft = Model([Component.affine(np.eye(6, dtype=np.float32), np.zeros(6, np.float32))])

    def refused(match, **kw):
        with pytest.raises(Error, match=match) as e:
            distill(student, feats, max_epochs=1, **kw)
        return e.value

    e = refused("not both", teacher_ensemble=path, teacher=g)
    assert e.option == "teacher_ensemble"
    refused("names none: its models take the features as they are", teacher_ensemble=path, feature_transform=ft)
    small = small_generalist(np.random.default_rng(15), (6, 8, 5))
    with pytest.raises(Error, match="teacher ensemble maps 6 -> 6 dims"):
        distill(small, feats, teacher_ensemble=path, max_epochs=1)
    e = refused("one teacher model", teacher_ensemble=path, hint_weight=1.0)
    assert e.option == "hint_weight"
    refused("average_logits", teacher_ensemble=path, average_logits=True)
    refused("ensemble.json or an Ensemble", teacher_ensemble=3)
    # With a feature transform of its own, a given one must be the same model.
    import json
    spec = json.loads(path.read_text())
    ft.write(str(tmp_path / "ft.nnet"))
    spec["feature_transform"] = str(tmp_path / "ft.nnet")
    spec["generalist"] = str(path.parent.parent / "g.nnet")
    for sp in spec["specialists"]:
        sp["file"] = str(path.parent / sp["file"])
    (tmp_path / "ensemble.json").write_text(json.dumps(spec))
    other = Model([Component.affine(2 * np.eye(6, dtype=np.float32), np.zeros(6, np.float32))])
    refused("differs from the one teacher_ensemble names", teacher_ensemble=tmp_path / "ensemble.json",
            feature_transform=other)
    # The same model (given again) is fine, and so is leaving it out.
    distill(student, feats, teacher_ensemble=tmp_path / "ensemble.json", feature_transform=ft, max_epochs=0)
    distill(student, feats, teacher_ensemble=tmp_path / "ensemble.json", max_epochs=0)


def test_checkpoints_know_the_ensemble(ensemble, tmp_path):
    path, feats, _ = ensemble
    student = small_generalist(np.random.default_rng(16), (6, 8, 6))
    kw = dict(optimizer="adam", learn_rate=0.01, minibatch_size=16, checkpoint_dir=str(tmp_path / "ck"))
    distill(student, feats, teacher_ensemble=path, max_epochs=1, **kw)
    with pytest.raises(Error, match="top_n"):
        distill(student, feats, teacher_ensemble=Ensemble(path, top_n=2), max_epochs=2, resume=True, **kw)
    distill(student, feats, teacher_ensemble=path, max_epochs=2, resume=True, **kw)


def test_review_refusals(ensemble, tmp_path):
    """An Ensemble given as ``teacher``, a logits teacher without integer dims, a BlockSoftmax
    student against one distribution, checkpoints of a teacher that cannot say what it is:
    each a clear error, not a traceback or a silently different training."""
    path, feats, g = ensemble
    student = svdistill.compress(g, rank=3)[0]
    with pytest.raises(Error, match="teacher is an Ensemble: give it as teacher_ensemble") as e:
        distill(student, feats, teacher=Ensemble(path), max_epochs=0)
    assert e.value.option == "teacher"

    class NoDims:
        def logits(self, x):
            return np.zeros((len(x), 6), np.float32)
    with pytest.raises(Error, match="must have integer input_dim and output_dim, got None and None"):
        distill(student, feats, teacher=NoDims(), max_epochs=0)
    blocks = Model(student.components[:-1] + [_block_softmax([3, 3])])
    with pytest.raises(Error, match=r"blocks \[6\], the student's softmax over \[3, 3\]"):
        distill(blocks, feats, teacher_ensemble=path, max_epochs=0)
    net = svdistill.Network(g, no_softmax=True)
    anonymous = LogitsTeacher(6, 6, net)
    with pytest.raises(Error, match="checkpoint_dir needs a teacher that says what it is"):
        distill(student, feats, teacher=anonymous, checkpoint_dir=str(tmp_path / "ck"), **TRAIN)
    named = LogitsTeacher(6, 6, net, fingerprint="g-logits")
    distill(student, feats, teacher=named, checkpoint_dir=str(tmp_path / "ck"), **TRAIN)


def test_unconverged_frames_are_counted(ensemble):
    path, feats, g = ensemble
    student = svdistill.compress(g, rank=3)[0]
    with pytest.warns(UserWarning, match="stopped at max_iterations"):
        svdistill.compare(None, student, feats, teacher_ensemble=path, max_iterations=1)
    with pytest.warns(UserWarning, match="stopped at max_iterations"):
        distill(student, feats, teacher_ensemble=path, max_iterations=1, max_epochs=1, **TRAIN_NO_EPOCHS)


def test_specialists_refuse_hints_first(tmp_path):
    rng = np.random.default_rng(3)
    g = small_generalist(rng, (6, 8, 6))
    with pytest.raises(Error, match="hint_weight does not apply to specialists"):
        specialists(g, f"ark:{tmp_path / 'missing.ark'}", tmp_path / "o", hint_weight=1.0)
    assert not (tmp_path / "o").exists()
