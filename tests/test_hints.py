"""Hints (FitNets): distill(hint_weight=B, hint_layers=...) matches the student's activations after
each matching nonlinearity to the teacher's, each layer normalised by the teacher's activation
variance. The core's gradients against finite differences and the hint value against numpy; the
torch engine against the core; B = 0 changes nothing; the refusals; a short real distillation."""
from __future__ import annotations

from typing import List

import numpy as np
import pytest

import svdistill
from conftest import synthetic_feats
from svdistill import Component, Error, Model, _core
from svdistill.distill import distill
from svdistill.distill.engine import STAT_KEYS, CoreEngine, hint_pairs, nonlinearities, train_options
from test_distill import _affine, _fd_check, _linear, _loss, _rng

HINT_FLOOR = 1e-4  # nn/loss.cc's kHintVarianceFloor


def _pair(rng):
    """(student, teacher): a Sigmoid and a Tanh of 8 dims in both, the student's second layer low-rank
    (a LinearTransform of rank 3 before its affine)."""
    student = [_affine(rng, 5, 8), Component.activation("Sigmoid", 8), _linear(rng, 8, 3), _affine(rng, 3, 8),
               Component.activation("Tanh", 8), _affine(rng, 8, 6), Component.activation("Softmax", 6)]
    teacher = Model([_affine(rng, 5, 8, scale=1.0), Component.activation("Sigmoid", 8),
                     _affine(rng, 8, 8, scale=1.0), Component.activation("Tanh", 8), _affine(rng, 8, 6, scale=1.5),
                     Component.activation("Softmax", 6)])
    return student, teacher


def _hint_numpy(student: List[Component], teacher: Model, x: np.ndarray, pairs) -> float:
    """The hint term summed over frames, in float64 from the float32 activations."""
    def acts(comps):
        out, h = [], x
        for c in comps[:-1]:
            h = svdistill.forward(Model([c]), h)
            out.append(h.astype(np.float64))
        return out
    s, t = acts(student), acts(teacher.components)
    total = 0.0
    for si, ti in pairs:
        v = max(t[ti].var(axis=0).mean(), HINT_FLOOR)
        total += ((s[si] - t[ti]) ** 2).sum() / (s[si].shape[1] * v)
    return total


def test_pairs_follow_the_kind_table():
    student, teacher = _pair(_rng(0))
    assert nonlinearities(student) == [1, 4]  # activations before the final softmax
    assert nonlinearities(teacher.components) == [1, 3]
    assert hint_pairs(student, teacher, None) == [(1, 1), (4, 3)]
    assert hint_pairs(student, teacher, "2") == [(4, 3)]
    assert hint_pairs(student, teacher, "1-2") == hint_pairs(student, teacher, "2,1") == [(1, 1), (4, 3)]


@pytest.mark.parametrize("loss", [dict(temperature=2.0), dict(temperature=1.0, hard_weight=0.4)])
def test_gradients_match_finite_differences_and_the_value_numpy(loss):
    rng = _rng(1)
    student, teacher = _pair(rng)
    pairs = hint_pairs(student, teacher, None)
    x = rng.normal(size=(12, 5)).astype(np.float32)
    labels = rng.integers(0, 6, 12).astype(np.int32)
    trainer = _core.Trainer([c._c for c in student], [svdistill.Network(teacher)._net], False, pairs)
    kw = dict(loss, hint_weight=3.0)
    # Central differences of the objective, summed in float64 over float32 activations: with
    # h = 3e-3, truncation (h^2 x the third derivative) and rounding (float32 eps x |objective| / h,
    # ~1e-5 relative here) stay far below the 2e-2 relative error the check allows.
    _fd_check(trainer, student, x, labels if "hard_weight" in loss else None, kw, probes=16)
    st = trainer.evaluate(x, labels, _loss(**kw))
    no_hint = trainer.evaluate(x, labels, _loss(**loss))
    want = _hint_numpy(student, teacher, x, pairs)
    assert st["hint"] == pytest.approx(want, rel=1e-5)
    assert no_hint["hint"] == st["hint"]  # reported unweighted, whatever the weight
    assert st["objective"] == pytest.approx(no_hint["objective"] + 3.0 * want, rel=1e-6)
    # The hint's share of the gradients is not negligible: the check above tested it.
    g3 = trainer.gradients(x, labels, _loss(**kw))[0]
    g0 = trainer.gradients(x, labels, _loss(**loss))[0]
    assert max(np.abs(a - b).max() / np.abs(a).max() for a, b in zip(g3, g0)) > 0.1


def test_a_dead_teacher_layer_is_floored():
    rng = _rng(2)
    student, teacher = _pair(rng)
    teacher.components[0].weight[...] = 0  # the teacher's first Sigmoid is constant over frames
    pairs = hint_pairs(student, teacher, "1")
    x = rng.normal(size=(10, 5)).astype(np.float32)
    trainer = _core.Trainer([c._c for c in student], [svdistill.Network(teacher)._net], False, pairs)
    st = trainer.evaluate(x, None, _loss(hint_weight=1.0))
    assert np.isfinite(st["objective"])
    assert st["hint"] == pytest.approx(_hint_numpy(student, teacher, x, pairs), rel=1e-5)


def test_weight_zero_is_bit_identical_to_no_hints():
    rng = _rng(3)
    student, teacher = _pair(rng)
    x = rng.normal(size=(32, 5)).astype(np.float32)
    a, b = [c.copy() for c in student], [c.copy() for c in student]
    net = svdistill.Network(teacher)._net
    plain = _core.Trainer([c._c for c in a], [net])
    hinted = _core.Trainer([c._c for c in b], [net], False, hint_pairs(student, teacher, None))
    o = train_options(momentum=0.5)
    lo = _loss(hint_weight=0.0)
    for _ in range(3):
        sa, sb = plain.train(x, None, o.optimizer, lo), hinted.train(x, None, o.optimizer, lo)
        assert sa["hint"] == 0 and sb["hint"] > 0
        assert {k: v for k, v in sa.items() if k != "hint"} == {k: v for k, v in sb.items() if k != "hint"}
    for ca, cb in zip(a, b):
        for k in ca.params:
            assert np.array_equal(ca.params[k], cb.params[k])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_torch_engine_step_equals_the_core(optimizer):
    pytest.importorskip("torch")
    from svdistill.distill.engine_torch import TorchEngine
    rng = _rng(4)
    student, teacher = _pair(rng)
    pairs = hint_pairs(student, teacher, None)
    x = rng.normal(size=(48, 5)).astype(np.float32)
    y = rng.integers(-1, 6, 48).astype(np.int32)
    o = train_options(optimizer, temperature=2.0, hard_weight=0.2, hint_weight=2.0)
    a, b = [c.copy() for c in student], [c.copy() for c in student]
    core = CoreEngine(a, [teacher], None, o, hints=pairs)
    tor = TorchEngine(b, [teacher], None, o, hints=pairs)
    lr = 0.05 if optimizer == "sgd" else 0.01
    sc = core.train(x, y, lr)
    st = tor.read(tor.train(tor.prepare(tor.host(x)), tor.labels(y), lr))
    for k in STAT_KEYS:
        assert st[k] == pytest.approx(sc[k], rel=1e-5, abs=1e-6), k
    assert sc["hint"] > 0
    ec, et = core.evaluate(x, y), tor.read(tor.evaluate(tor.prepare(tor.host(x)), tor.labels(y)))
    for k in STAT_KEYS:
        assert et[k] == pytest.approx(ec[k], rel=1e-5, abs=1e-6), k
    tor.result()
    for ca, cb, c0 in zip(a, b, student):
        for k in ca.params:
            da = ca.params[k].astype(np.float64) - c0.params[k]
            db = cb.params[k].astype(np.float64) - c0.params[k]
            assert np.abs(da).max() > 0, (ca.kind, k)
            assert np.abs(da - db).max() <= 1e-5 * np.abs(da).max(), (ca.kind, k)


def _feats(n=6, frames=20, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    return {f"u{i}": rng.normal(size=(frames, dim)).astype(np.float32) for i in range(n)}


@pytest.mark.parametrize("kw, option, match", [
    (dict(hint_weight=-1.0), "hint_weight", "must be >= 0"),
    (dict(hint_weight=float("nan")), "hint_weight", "finite"),
    (dict(hint_weight="1"), "hint_weight", "must be a number"),
    (dict(hint_layers="1"), "hint_layers", "hint_weight"),
    (dict(hint_weight=1.0, hint_layers="0"), "hint_layers", "numbered from 1"),
    (dict(hint_weight=1.0, hint_layers="2-1"), "hint_layers", "numbered from 1"),
    (dict(hint_weight=1.0, hint_layers="x"), "hint_layers", "such as '1,3'"),
    (dict(hint_weight=1.0, hint_layers="3"), "hint_layers", "2 matching nonlinearities"),
    # the form is checked before the models are read, without building the range
    (dict(hint_weight=1.0, hint_layers="1-1000000000000", halving_factor=2.0), "halving_factor", "(0, 1)"),
    (dict(hint_weight=1.0, minibatch_size=1), "minibatch_size", "at least 2 with hint_weight > 0"),
])
def test_option_errors(kw, option, match):
    student, teacher = _pair(_rng(5))
    with pytest.raises(Error, match=match) as e:
        distill(Model(student), _feats(), teacher=teacher, max_epochs=1, **kw)
    assert e.value.option == option


def test_model_errors():
    rng = _rng(6)
    student, teacher = _pair(rng)
    feats = _feats()
    labels = {k: np.zeros(len(v), np.int32) for k, v in feats.items()}
    with pytest.raises(Error, match="one {?teacher}? model, and 0 were given"):
        distill(Model(student), feats, labels=labels, hint_weight=1.0, max_epochs=1)
    with pytest.raises(Error, match="and 2 were given"):
        distill(Model(student), feats, teacher=[teacher, teacher], hint_weight=1.0, max_epochs=1)
    # Counts differ: every pair cannot be matched in order, a chosen one can.
    extra = Model(teacher.components[:4] + [Component.activation("Relu", 8), _affine(rng, 8, 6),
                                            Component.activation("Softmax", 6)])
    with pytest.raises(Error, match="student has 2 nonlinearities before its softmax and the teacher 3"):
        distill(Model(student), feats, teacher=extra, hint_weight=1.0, max_epochs=1)
    distill(Model(student), feats, teacher=extra, hint_weight=1.0, hint_layers="1-2", max_epochs=0)
    # Dims differ in a chosen pair: named, with both dims.
    wide = Model([_affine(rng, 5, 9), Component.activation("Sigmoid", 9), _affine(rng, 9, 8),
                  Component.activation("Tanh", 8), _affine(rng, 8, 6), Component.activation("Softmax", 6)])
    with pytest.raises(Error, match=r"layer 1: the student's nonlinearity \(component 2 <Sigmoid>\) has 8 dims, "
                                    r"the teacher's \(component 2 <Sigmoid>\) 9"):
        distill(Model(student), feats, teacher=wide, hint_weight=1.0, max_epochs=1)
    distill(Model(student), feats, teacher=wide, hint_weight=1.0, hint_layers="2", max_epochs=0)
    # The core refuses what Python would not give it.
    with pytest.raises(Error, match="8 dims, the teacher's 9"):
        _core.Trainer([c._c for c in student], [svdistill.Network(wide)._net], False, [(1, 1)])
    with pytest.raises(Error, match="not a nonlinearity"):
        _core.Trainer([c._c for c in student], [svdistill.Network(teacher)._net], False, [(0, 1)])
    with pytest.raises(Error, match="one teacher network"):
        _core.Trainer([c._c for c in student], [], True, [(1, 1)])


@pytest.fixture(scope="module")
def dnn(fixtures_dir):
    return svdistill.read(fixtures_dir / "dnn.nnet.bin"), svdistill.read(fixtures_dir / "final.feature_transform")


def test_rank24_student_with_hints(dnn):
    """The fixture DNN's rank-24 student (3 Sigmoids, as its teacher) with hints on every layer."""
    teacher, ft = dnn
    student, _ = svdistill.compress(teacher, rank=24)
    feats = synthetic_feats(ft, 30, 200, seed=1)
    lines: List[str] = []
    _, report = distill(student, feats, teacher=teacher, feature_transform=ft, hint_weight=1.0, max_epochs=2,
                        log=lines.append)
    assert report.hint_weight == 1.0
    assert "train hint" in lines[0] and "cv hint" in lines[0]
    first, best = report.initial, report.best
    assert report.best_epoch >= 1
    assert first.cv_hint is not None and best.cv_hint < first.cv_hint
    assert best.train_hint is not None and best.train_hint > 0
    assert best.cv_kl < first.cv_kl
    assert "hint" in report.summary()
    # Without hints the table has no hint column.
    lines.clear()
    distill(student, feats, teacher=teacher, feature_transform=ft, max_epochs=0, log=lines.append)
    assert "hint" not in lines[0]


def test_checkpoints_know_the_hints(tmp_path):
    student, teacher = _pair(_rng(7))
    feats = _feats(n=10)
    kw = dict(teacher=teacher, minibatch_size=16, checkpoint_dir=str(tmp_path / "ck"))
    distill(Model(student), feats, hint_weight=1.0, max_epochs=1, **kw)
    for other in (dict(hint_weight=2.0), dict(hint_weight=1.0, hint_layers="2"), dict()):
        with pytest.raises(Error, match="hints"):
            distill(Model(student), feats, max_epochs=2, resume=True, **other, **kw)
    _, report = distill(Model(student), feats, hint_weight=1.0, max_epochs=2, resume=True, **kw)
    assert len(report.epochs) == 3 and all(e.cv_hint is not None for e in report.epochs)


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda(), reason="no CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_engine_trains_with_hints(dnn, precision):
    teacher, ft = dnn
    student, _ = svdistill.compress(teacher, rank=24)
    feats = synthetic_feats(ft, 30, 200, seed=1)
    _, report = distill(student, feats, teacher=teacher, feature_transform=ft, hint_weight=1.0, max_epochs=2,
                        device="cuda", precision=precision)
    assert report.engine == "torch" and report.best_epoch >= 1
    assert report.best.cv_hint < report.initial.cv_hint
