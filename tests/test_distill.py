"""Distillation and frame-level training: gradients, update rules, schedule, end to end."""
from __future__ import annotations

import json
from typing import Dict, List

import numpy as np
import pytest

import svdistill
from conftest import assert_clean_cli_error, signal_once_accepted, synthetic_feats
from svdistill import Component, Model, _core
from svdistill.distill import distill
from svdistill.distill.engine import train_options

# ----------------------------------------------------------------- helpers

def _rng(seed=0):
    return np.random.default_rng(seed)


def _affine(rng, i, o, scale=0.5, **kw):
    return Component.affine(rng.normal(0, scale, (o, i)).astype(np.float32),
                            rng.normal(0, 0.1, o).astype(np.float32), **kw)


def _linear(rng, i, o, scale=0.5, **kw):
    return Component.linear(rng.normal(0, scale, (o, i)).astype(np.float32), **kw)


def _vector(kind, values, coef=1.0):
    c = Component.activation(kind, len(values))
    key = {"AddShift": "shift_data", "Rescale": "scale_data"}[kind]
    c.params[key][...] = values
    c.learn_rate_coef = coef
    return c


def _prelu(rng, dim):
    c = Component.activation("ParametricRelu", dim)
    c.params["alpha"][...] = rng.uniform(0.5, 1.5, dim)
    c.params["beta"][...] = rng.uniform(0.05, 0.3, dim)
    return c


def _block_softmax(dims: List[int]) -> Component:
    text = ("<Nnet>\n<BlockSoftmax> %d %d\n[ %s ]\n<!EndOfComponent>\n</Nnet>\n"
            % (sum(dims), sum(dims), " ".join(map(str, dims))))
    import io
    return svdistill.read(io.BytesIO(text.encode())).components[0]


def _trainable_blocks(comps) -> List[np.ndarray]:
    """The parameter blocks the trainer updates, in its order (coef > 0 only)."""
    out = []
    for c in comps:
        if c.kind == "AffineTransform":
            if c.learn_rate_coef:
                out.append(c.weight)
            if c.bias_learn_rate_coef:
                out.append(c.bias)
        elif c.kind == "LinearTransform" and c.learn_rate_coef:
            out.append(c.weight)
        elif c.kind == "ParametricRelu":
            if c.coefs["<AlphaLearnRateCoef>"]:
                out.append(c.params["alpha"])
            if c.coefs["<BetaLearnRateCoef>"]:
                out.append(c.params["beta"])
        elif c.kind in ("AddShift", "Rescale") and c.learn_rate_coef:
            out.append(next(iter(c.params.values())))
    return out


def _loss(**values) -> "_core.LossOptions":
    """The core's loss options: ``values`` (as distill() names them), the rest at their defaults."""
    return train_options(**values).loss


def _fd_check(trainer, comps, x, labels, kw, h=3e-3, probes=12, rng=None):
    """Central differences of the summed objective against trainer.gradients()."""
    rng = rng or _rng(5)
    grads, _, _ = trainer.gradients(x, labels, _loss(**kw))
    blocks = _trainable_blocks(comps)
    assert len(grads) == len(blocks)
    num, ana = [], []
    for b, g in zip(blocks, grads):
        flat = b.reshape(-1)
        assert g.shape == flat.shape
        for idx in rng.choice(flat.size, size=min(probes, flat.size), replace=False):
            old = flat[idx]
            flat[idx] = old + h
            fp = trainer.evaluate(x, labels, _loss(**kw))["objective"]
            flat[idx] = old - h
            fm = trainer.evaluate(x, labels, _loss(**kw))["objective"]
            flat[idx] = old
            num.append((fp - fm) / (2 * h))
            ana.append(g[idx])
    num, ana = np.array(num), np.array(ana)
    err = np.linalg.norm(num - ana) / max(np.linalg.norm(num), 1e-6)
    assert err < 2e-2, (err, num[:6], ana[:6])


# --------------------------------------------------- gradients, per kind

HIDDEN_KINDS = ["Sigmoid", "Tanh", "Relu", "ParametricRelu", "AddShift", "Rescale", "Dropout", "Linear"]


def _net_with(kind: str, rng) -> List[Component]:
    d = 6
    if kind == "ParametricRelu":
        mid = _prelu(rng, d)
        mid._set_coef("<AlphaLearnRateCoef>", 1.0)
        mid._set_coef("<BetaLearnRateCoef>", 1.0)
    elif kind == "AddShift":
        mid = _vector("AddShift", rng.normal(0, 0.3, d))
    elif kind == "Rescale":
        mid = _vector("Rescale", rng.uniform(0.5, 1.5, d))
    else:
        mid = Component.activation(kind, d)
    return [_affine(rng, 5, d), mid, _linear(rng, d, 3), _affine(rng, 3, 4), Component.activation("Softmax", 4)]


@pytest.mark.parametrize("kind", HIDDEN_KINDS)
@pytest.mark.parametrize("loss", ["soft", "hard", "mixed"])
def test_parameter_gradients_match_finite_differences(kind, loss):
    rng = _rng(1)
    comps = _net_with(kind, rng)
    teacher = svdistill.Network(Model([_affine(rng, 5, 7), Component.activation("Sigmoid", 7),
                                       _affine(rng, 7, 4, scale=1.5), Component.activation("Softmax", 4)]))
    x = rng.normal(size=(9, 5)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, -1, 2, 1, 0, 3], np.int32)
    teachers = [] if loss == "hard" else [teacher._net]
    trainer = _core.Trainer([c._c for c in comps], teachers)
    kw = {"soft": dict(temperature=2.0), "hard": dict(), "mixed": dict(temperature=3.0, hard_weight=0.3)}[loss]
    _fd_check(trainer, comps, x, None if loss == "soft" else labels, kw)


@pytest.mark.parametrize("kind", HIDDEN_KINDS)
def test_input_gradient_matches_finite_differences(kind):
    rng = _rng(2)
    comps = _net_with(kind, rng)
    trainer = _core.Trainer([c._c for c in comps], [])
    x = rng.normal(size=(5, 5)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 1], np.int32)
    _, dx, _ = trainer.gradients(x, labels, _loss())
    h = 1e-2
    num = np.zeros_like(dx)
    for r in range(x.shape[0]):
        for j in range(x.shape[1]):
            old = x[r, j]
            x[r, j] = old + h
            fp = trainer.evaluate(x, labels, _loss())["objective"]
            x[r, j] = old - h
            fm = trainer.evaluate(x, labels, _loss())["objective"]
            x[r, j] = old
            num[r, j] = (fp - fm) / (2 * h)
    assert np.linalg.norm(num - dx) / np.linalg.norm(num) < 2e-2


def test_block_softmax_and_teacher_ensembles():
    rng = _rng(3)
    blocks = [3, 4]
    comps = [_affine(rng, 5, 6), Component.activation("Sigmoid", 6), _affine(rng, 6, 7), _block_softmax(blocks)]

    def teacher(seed):
        r = _rng(seed)
        return svdistill.Network(Model([_affine(r, 5, 7, scale=1.0), _block_softmax(blocks)]))._net

    t1, t2 = teacher(10), teacher(11)
    x = rng.normal(size=(8, 5)).astype(np.float32)
    labels = np.array([0, 4, 2, 6, -1, 3, 1, 5], np.int32)
    for teachers, kw in [([t1], dict(temperature=2.0)), ([t1, t2], dict(temperature=2.0)),
                         ([t1, t2], dict(temperature=2.0, average_logits=True)),
                         ([t1], dict(temperature=1.5, hard_weight=0.5))]:
        trainer = _core.Trainer([c._c for c in comps], teachers)
        _fd_check(trainer, comps, x, labels, kw)



def test_teacher_logits_given_by_the_caller_act_as_that_teacher():
    """A trainer whose soft targets come from the caller (external_targets) updates, evaluates and
    differentiates bit-identically to one given the teacher network that computes those logits."""
    rng = _rng(7)
    student = [_affine(rng, 5, 6), Component.activation("Sigmoid", 6), _affine(rng, 6, 4),
               Component.activation("Softmax", 4)]
    model = Model([_affine(rng, 5, 7), Component.activation("Tanh", 7), _affine(rng, 7, 4, scale=1.5),
                   Component.activation("Softmax", 4)])
    teacher = svdistill.Network(model)
    x = rng.normal(size=(16, 5)).astype(np.float32)
    labels = rng.integers(-1, 4, 16).astype(np.int32)
    logits = svdistill.Network(model, no_softmax=True)(x)
    lo = _loss(temperature=2.0, hard_weight=0.3)
    a, b = [c.copy() for c in student], [c.copy() for c in student]
    net = _core.Trainer([c._c for c in a], [teacher._net])
    ext = _core.Trainer([c._c for c in b], [], True)
    assert ext.num_teachers == 1
    opt = train_options(momentum=0.5).optimizer
    for _ in range(3):
        assert net.train(x, labels, opt, lo) == ext.train(x, labels, opt, lo, logits)
    for ca, cb in zip(a, b):
        for k in ca.params:
            assert np.array_equal(ca.params[k], cb.params[k]), k
    assert net.evaluate(x, labels, lo) == ext.evaluate(x, labels, lo, logits)
    ga, gb = net.gradients(x, labels, lo), ext.gradients(x, labels, lo, logits)
    assert all(np.array_equal(u, v) for u, v in zip(ga[0], gb[0])) and np.array_equal(ga[1], gb[1])
    with pytest.raises(svdistill.Error, match="give teacher_logits"):
        ext.evaluate(x, labels, lo)
    with pytest.raises(svdistill.Error, match="teacher_logits given"):
        net.evaluate(x, labels, lo, logits)
    with pytest.raises(svdistill.Error, match="16 frames x 4 outputs"):
        ext.evaluate(x, labels, lo, logits[:, :3])
    with pytest.raises(svdistill.Error, match="not both"):
        _core.Trainer([c._c for c in b], [teacher._net], True)

def test_loss_values_match_numpy():
    rng = _rng(4)
    comps = [_affine(rng, 5, 6), Component.activation("Tanh", 6), _affine(rng, 6, 4),
             Component.activation("Softmax", 4)]
    tmodel = Model([_affine(rng, 5, 4, scale=1.0), Component.activation("Softmax", 4)])
    trainer = _core.Trainer([c._c for c in comps], [svdistill.Network(tmodel)._net])
    x = rng.normal(size=(10, 5)).astype(np.float64)
    labels = rng.integers(0, 4, 10).astype(np.int32)
    T, a = 2.5, 0.25
    st = trainer.evaluate(x.astype(np.float32), labels, _loss(temperature=T, hard_weight=a))

    def logits(model, x):
        h = x
        for c in model[:-1]:
            h = h @ c.weight.T.astype(np.float64) + c.bias if c.weight is not None else np.tanh(h)
        return h

    def log_softmax(z):
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    zs, zt = logits(comps, x), logits(tmodel.components, x)
    q = np.exp(log_softmax(zt / T))
    kl_t = (q * (np.log(q) - log_softmax(zs / T))).sum()
    ce = -log_softmax(zs)[np.arange(10), labels].sum()
    q1 = np.exp(log_softmax(zt))
    kl1 = (q1 * (np.log(q1) - log_softmax(zs))).sum()
    assert st["kl_t"] == pytest.approx(kl_t, rel=1e-4)
    assert st["hard_ce"] == pytest.approx(ce, rel=1e-4)
    assert st["kl"] == pytest.approx(kl1, rel=1e-4)
    assert st["objective"] == pytest.approx((1 - a) * T * T * kl_t + a * ce, rel=1e-4)
    assert st["agree"] == int((zs.argmax(1) == zt.argmax(1)).sum())
    assert st["correct"] == int((zs.argmax(1) == labels).sum())


# ---------------------------------------------------------- update rules

def _copy_params(comps) -> List[np.ndarray]:
    return [b.copy() for b in _trainable_blocks(comps)]


def test_sgd_follows_kaldi_update_rules():
    """Momentum, per-layer coefficients, L2 on weights only, MaxNorm, frozen layers, summed gradients."""
    rng = _rng(6)
    comps = [_affine(rng, 5, 6, learn_rate_coef=0.5, bias_learn_rate_coef=0.1),
             Component.activation("Sigmoid", 6),
             _affine(rng, 6, 6, learn_rate_coef=0.0, bias_learn_rate_coef=0.0),  # frozen
             Component.activation("Sigmoid", 6),
             _affine(rng, 6, 4, scale=2.0, max_norm=1.0),
             Component.activation("Softmax", 4)]
    frozen = comps[2].weight.copy()
    trainer = _core.Trainer([c._c for c in comps], [])
    x = rng.normal(size=(16, 5)).astype(np.float32)
    labels = rng.integers(0, 4, 16).astype(np.int32)
    lr, mom, l2 = 0.05, 0.7, 1e-3
    coefs = [0.5, 0.1, 1.0, 1.0]  # w1, b1, w3, b3
    decays = [True, False, True, False]
    acc = None
    for step in range(3):
        before = _copy_params(comps)
        grads, _, _ = trainer.gradients(x, labels, _loss())
        acc = [g.copy() for g in grads] if acc is None else [mom * a + g for a, g in zip(acc, grads)]
        opts = train_options(learn_rate=lr, momentum=mom, l2_penalty=l2)
        trainer.train(x, labels, opts.optimizer, opts.loss)
        for i, (b, a_, c, d) in enumerate(zip(before, acc, coefs, decays)):
            want = b.reshape(-1) * (1 - lr * c * l2 * 16 if d else 1) - lr * c * a_
            if i == 2:  # MaxNorm: rows shrunk onto the sphere of radius 1
                w = want.reshape(4, 6)
                norms = np.linalg.norm(w, axis=1, keepdims=True)
                want = (w / np.maximum(norms, 1.0)).reshape(-1)
            got = _trainable_blocks(comps)[i].reshape(-1)
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    assert np.array_equal(comps[2].weight, frozen)
    assert np.linalg.norm(comps[4].weight, axis=1).max() <= 1.0 + 1e-5


def test_adam_update():
    rng = _rng(7)
    comps = [_affine(rng, 5, 4), Component.activation("Softmax", 4)]
    trainer = _core.Trainer([c._c for c in comps], [])
    x = rng.normal(size=(8, 5)).astype(np.float32)
    labels = rng.integers(0, 4, 8).astype(np.int32)
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    m = v = None
    for t in range(1, 4):
        before = _copy_params(comps)
        grads, _, _ = trainer.gradients(x, labels, _loss())
        g = [gr / 8 for gr in grads]
        m = [(1 - b1) * gi for gi in g] if m is None else [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        v = [(1 - b2) * gi ** 2 for gi in g] if v is None else [b2 * vi + (1 - b2) * gi ** 2 for vi, gi in zip(v, g)]
        opts = train_options("adam", learn_rate=lr)
        trainer.train(x, labels, opts.optimizer, opts.loss)
        for b, mi, vi, got in zip(before, m, v, _trainable_blocks(comps)):
            want = b.reshape(-1) - lr * (mi / (1 - b1 ** t)) / (np.sqrt(vi / (1 - b2 ** t)) + eps)
            np.testing.assert_allclose(got.reshape(-1), want, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------- data sets

def _fidelity(teacher, student, ft, feats) -> Dict[str, float]:
    t = svdistill.Network(teacher, feature_transform=ft)
    s = svdistill.Network(student, feature_transform=ft)
    kl = agree = n = 0.0
    for mat in feats.values():
        p = t(mat).astype(np.float64)
        q = s(mat).astype(np.float64)
        kl += float((p * (np.log(p + 1e-20) - np.log(q + 1e-20))).sum())
        agree += float((p.argmax(1) == q.argmax(1)).sum())
        n += len(mat)
    return {"kl": kl / n, "agree": agree / n}


@pytest.fixture(scope="module")
def dnn(fixtures_dir):
    teacher = svdistill.read(fixtures_dir / "dnn.nnet.bin")
    ft = svdistill.read(fixtures_dir / "final.feature_transform")
    return teacher, ft


def test_end_to_end_rank24_student_with_cli_defaults(dnn, fixtures_dir, tmp_path, run_cli):
    """The issue's acceptance check: label-free, ~30k frames, default settings."""
    import kaldiio
    teacher, ft = dnn
    student, _ = svdistill.compress(teacher, rank=24)
    student.write(tmp_path / "student.nnet", binary=True)
    train = synthetic_feats(ft, 100, 300, seed=1)  # 30,000 frames
    unseen = synthetic_feats(ft, 20, 300, seed=2)
    kaldiio.save_ark(str(tmp_path / "train.ark"), train, scp=str(tmp_path / "train.scp"))
    proc = run_cli("distill", "--teacher", fixtures_dir / "dnn.nnet.bin",
                   "--feature-transform", fixtures_dir / "final.feature_transform",
                   tmp_path / "student.nnet", f"scp:{tmp_path / 'train.scp'}", tmp_path / "out.nnet",
                   "--report", tmp_path / "report.json", timeout=600)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "epoch" in err and "accepted" in err
    out = svdistill.read(tmp_path / "out.nnet")
    assert out.binary  # encoding follows STUDENT_IN
    assert [c.kind for c in out.components] == [c.kind for c in student.components]
    assert [c.output_dim for c in out.components] == [c.output_dim for c in student.components]
    before = _fidelity(teacher, student, ft, unseen)
    after = _fidelity(teacher, out, ft, unseen)
    assert after["kl"] * 5 <= before["kl"], (before, after)
    assert after["agree"] >= before["agree"] + 0.30, (before, after)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["epochs"][0]["accepted"] is None
    assert report["best_epoch"] >= 1
    assert report["cv_source"] == "0.1 of the utterances"


def test_same_seed_same_model_and_seed_matters(dnn):
    teacher, ft = dnn
    student, _ = svdistill.compress(teacher, rank=16)
    feats = synthetic_feats(ft, 12, 120, seed=3)
    kw = dict(teacher=teacher, feature_transform=ft, max_epochs=2, minibatch_size=64)
    a, _ = distill(student, feats, seed=1, **kw)
    b, _ = distill(student, feats, seed=1, **kw)
    c, _ = distill(student, feats, seed=2, **kw)
    for x, y in zip(a.components, b.components):
        if x.weight is not None:
            assert np.array_equal(x.weight, y.weight)
    assert any(not np.array_equal(x.weight, y.weight)
               for x, y in zip(a.components, c.components) if x.weight is not None)
    # The input model is never modified.
    s2, _ = svdistill.compress(teacher, rank=16)
    assert all(np.array_equal(x.weight, y.weight) for x, y in zip(student.components, s2.components)
               if x.weight is not None)


def test_best_epoch_is_returned_and_schedule_follows_newbob(dnn):
    teacher, ft = dnn
    student, _ = svdistill.compress(teacher, rank=16)
    feats = synthetic_feats(ft, 20, 100, seed=4)
    model, rep = distill(student, feats, teacher=teacher, feature_transform=ft, max_epochs=12,
                         learn_rate=0.02, start_halving_impr=0.5, end_halving_impr=0.01, cv_fraction=0.3)
    assert rep.cv_source == "0.3 of the utterances"
    lrs = [e.learn_rate for e in rep.epochs[1:]]
    # Halving starts once the relative improvement drops under 0.5, then halves every epoch.
    first = next(i for i in range(1, len(lrs)) if lrs[i] < lrs[i - 1])
    assert all(lrs[i] == pytest.approx(lrs[i - 1] / 2) for i in range(first, len(lrs)))
    best = min(range(len(rep.epochs)), key=lambda i: rep.epochs[i].cv_objective)
    assert rep.best_epoch == best
    # The returned model is the best epoch's: re-evaluating it on the CV part gives its objective.
    t = _core.Trainer([c.copy()._c for c in model.components], [svdistill.Network(teacher)._net])
    net_ft = svdistill.Network(ft)
    from svdistill.distill.data import cv_by_hash
    tot = frames = 0.0
    for k, v in feats.items():
        if cv_by_hash(k, 0.3):
            s = t.evaluate(net_ft(v), None, _loss(temperature=2.0))
            tot += s["objective"]
            frames += s["frames"]
    assert tot / frames == pytest.approx(rep.best.cv_objective, rel=1e-5)


def _clusters(seed, classes, utterances, hidden):
    """Gaussian clusters in 10 dims (40 frames per utterance) and a fresh sigmoid MLP for them."""
    rng = _rng(seed)
    centers = rng.normal(0, 3, (classes, 10))
    feats, labels = {}, {}
    for u in range(utterances):
        y = rng.integers(0, classes, 40)
        feats[f"u{u}"] = (centers[y] + rng.normal(size=(40, 10))).astype(np.float32)
        labels[f"u{u}"] = y
    model = Model([_affine(rng, 10, hidden, scale=0.3), Component.activation("Sigmoid", hidden),
                   _affine(rng, hidden, classes, scale=0.3), Component.activation("Softmax", classes)])
    return feats, labels, model


def test_label_training_learns_a_separable_problem():
    feats, labels, model = _clusters(8, classes=5, utterances=60, hidden=32)
    out, rep = distill(model, feats, labels=labels, minibatch_size=32)
    assert rep.best.cv_accuracy > 0.95
    assert rep.initial.cv_accuracy < 0.6
    assert rep.hard_weight == 1.0 and rep.teachers == 0


def test_divergence_halves_the_learning_rate_and_goes_on():
    feats, labels, model = _clusters(12, classes=4, utterances=40, hidden=64)
    lines = []
    out, rep = distill(model, feats, labels=labels, minibatch_size=32, learn_rate=20.0, max_epochs=4,
                       log=lines.append)
    diverged = [e for e in rep.epochs if e.diverged]
    assert diverged and all(b.learn_rate == a.learn_rate / 2 for a, b in zip(rep.epochs[1:], rep.epochs[2:])
                            if a.diverged)
    assert sum(1 for e in rep.epochs[1:] if not e.diverged) == 4  # diverged epochs do not count
    assert rep.best.cv_accuracy > 0.9
    assert any(line.rstrip().endswith("diverged") for line in lines)
    # Non-finite outputs from the start: a clear error naming where, not a schedule of nans.
    bad = model.copy() if hasattr(model, "copy") else Model([c.copy() for c in model.components])
    bad.components[2].params["linearity"][0, 0] = np.nan
    with pytest.raises(svdistill.Error, match=r"utterance u\d+, frame 0: the student outputs nan"):
        distill(bad, feats, labels=labels)


def test_labels_with_teacher_mix_and_length_tolerance(dnn):
    teacher, ft = dnn
    student, _ = svdistill.compress(teacher, rank=16)
    feats = synthetic_feats(ft, 10, 50, seed=5)
    tnet = svdistill.Network(teacher, feature_transform=ft)
    labels = {k: tnet(v).argmax(1) for k, v in feats.items()}
    keys = list(labels)
    labels[keys[0]] = labels[keys[0]][:-3]  # within Kaldi's 5-frame tolerance: trimmed
    labels[keys[1]] = labels[keys[1]][:-9]  # beyond it: frames unlabelled (a teacher is there)
    del labels[keys[2]]
    _, rep = distill(student, feats, teacher=teacher, feature_transform=ft, labels=labels,
                     max_epochs=1, cv_fraction=0.3, minibatch_size=32)
    assert rep.hard_weight == pytest.approx(0.1)
    assert rep.epochs[1].train_accuracy is not None
    assert rep.unlabelled_utterances == 2 and "2 utterances without usable labels" in rep.summary()
    # Without a teacher, utterances without usable labels are skipped.
    _, rep2 = distill(student, feats, feature_transform=ft, labels=labels, max_epochs=1, cv_fraction=0.3,
                      minibatch_size=32)
    assert rep2.skipped_utterances == 2 and "2 utterances skipped" in rep2.summary()


def test_tail_split_when_hashing_leaves_cv_empty(dnn):
    teacher, ft = dnn
    student, _ = svdistill.compress(teacher, rank=16)
    feats = synthetic_feats(ft, 1, 400, seed=6)
    _, rep = distill(student, feats, teacher=teacher, feature_transform=ft, max_epochs=1)
    assert rep.cv_source == "last 0.1 of each utterance"
    assert rep.cv_frames == 40
    one, rep1 = distill(student, feats[next(iter(feats))], teacher=teacher, feature_transform=ft,
                        max_epochs=1)  # one array: one utterance
    assert rep1.cv_frames == 40


def test_pdnn_student_stays_pdnn(tmp_path):
    rng = _rng(9)
    model = Model([_affine(rng, 4, 8), Component.activation("Relu", 8), _affine(rng, 8, 3),
                   Component.activation("Softmax", 3)], dialect="pdnn")
    model.write(tmp_path / "s.txt", dialect="pdnn")
    feats = {f"u{i}": rng.normal(size=(30, 4)).astype(np.float32) for i in range(20)}
    labels = {k: rng.integers(0, 3, 30) for k in feats}
    distill(tmp_path / "s.txt", feats, labels=labels, max_epochs=1, output=tmp_path / "o.txt",
            minibatch_size=16)
    text = (tmp_path / "o.txt").read_text()
    assert "<relu>" in text and "<Nnet>" not in text


# ------------------------------------------------------------------ errors

def _tiny_student(rng):
    return Model([_affine(rng, 4, 3), Component.activation("Softmax", 3)])


@pytest.mark.parametrize("case, message", [
    ("no_softmax", "must end in a <Softmax>"),
    ("splice", "belong in the feature transform"),
    ("lstm_teacher", "cannot run"),
    ("dims", "maps 5 -> 3 dims, the student 4 -> 3"),
    ("nothing", "nothing to learn from"),
    ("hard_no_labels", "needs labels"),
    ("frozen", "nothing to train"),
    ("stdin", "stdin cannot be read twice"),
    ("label_range", "pdf id 3 is outside the student's 3 outputs"),
    ("label_negative", "pdf id -2 is outside"),
    ("label_float", "expected integer pdf ids"),
    ("seed", "seed must be an integer >= 0, got -1"),
    ("feat_dims", "features have 7 dims"),
])
@pytest.mark.parametrize("engine", ["core", "torch"])
def test_errors_are_clear(case, message, engine):
    """Every engine refuses the same inputs with the same words."""
    if engine == "torch":
        pytest.importorskip("torch")
    rng = _rng(10)
    feats = {f"u{i}": rng.normal(size=(20, 4)).astype(np.float32) for i in range(10)}
    student = _tiny_student(rng)
    kw: dict = dict(teacher=_tiny_student(rng), max_epochs=1)
    if case == "no_softmax":
        student = Model([_affine(rng, 4, 3)])
    elif case == "splice":
        import io
        sp = svdistill.read(io.BytesIO(b"<Nnet>\n<Splice> 12 4\n[ -1 0 1 ]\n</Nnet>\n")).components[0]
        student = Model([sp, _affine(rng, 12, 3), Component.activation("Softmax", 3)])
        kw["teacher"] = Model([sp, _affine(rng, 12, 3), Component.activation("Softmax", 3)])
    elif case == "lstm_teacher":
        import io
        kw["teacher"] = svdistill.read(io.BytesIO(
            b"<Nnet>\n<LstmProjected> 3 4\n<CellDim> 2 [ ]\n<!EndOfComponent>\n</Nnet>\n"))
    elif case == "dims":
        kw["teacher"] = Model([_affine(rng, 5, 3), Component.activation("Softmax", 3)])
    elif case == "nothing":
        kw["teacher"] = []
    elif case == "hard_no_labels":
        kw["hard_weight"] = 0.5
    elif case == "frozen":
        student.components[0].learn_rate_coef = 0.0
        student.components[0].bias_learn_rate_coef = 0.0
    elif case == "stdin":
        feats = "ark:-"
    elif case == "label_range":
        kw["labels"] = {k: np.full(20, 3) for k in feats}
    elif case == "label_negative":
        kw["labels"] = {k: np.full(20, -2) for k in feats}
    elif case == "seed":
        kw["seed"] = -1
    elif case == "label_float":
        kw["labels"] = {k: np.full(20, 1.0) for k in feats}
    elif case == "feat_dims":
        feats = {f"u{i}": rng.normal(size=(20, 7)).astype(np.float32) for i in range(10)}
    with pytest.raises(svdistill.Error, match=message):
        distill(student, feats, engine=engine, **kw)


def test_cli_errors_before_training(dnn, fixtures_dir, tmp_path, run_cli):
    teacher = fixtures_dir / "dnn.nnet.bin"
    feats = f"ark:{fixtures_dir / 'feats.ark'}"
    proc = run_cli("distill", "--teacher", teacher, teacher, feats, tmp_path / "no" / "out.nnet")
    assert_clean_cli_error(proc, "does not exist")
    import shutil
    shutil.copy(teacher, tmp_path / "t.nnet")  # never the fixture itself
    proc = run_cli("distill", "--teacher", tmp_path / "t.nnet", teacher, feats, tmp_path / "t.nnet")
    assert_clean_cli_error(proc, "is the same file as --teacher")
    proc = run_cli("distill", teacher, feats, tmp_path / "o.nnet")
    assert_clean_cli_error(proc, "nothing to learn from")
    proc = run_cli("distill", "--teacher", teacher, teacher, "ark:-", tmp_path / "o.nnet")
    assert_clean_cli_error(proc, "stdin")


def test_cli_on_kaldi_fixture_archive(dnn, fixtures_dir, tmp_path, run_cli):
    """Real Kaldi features (feats.ark) through the real feature transform, labels from the teacher."""
    import kaldiio
    teacher, ft = dnn
    net = svdistill.Network(teacher, feature_transform=ft)
    ali = {k: net(np.asarray(v, np.float32)).argmax(1).astype(np.int32)
           for k, v in kaldiio.load_ark(str(fixtures_dir / "feats.ark"))}
    kaldiio.save_ark(str(tmp_path / "ali.ark"), ali)
    student, _ = svdistill.compress(teacher, rank=32)
    student.write(tmp_path / "s.txt", binary=False)
    proc = run_cli("distill", "--teacher", fixtures_dir / "dnn.nnet.bin", "--feature-transform",
                   fixtures_dir / "final.feature_transform", "--labels", f"ark:{tmp_path / 'ali.ark'}",
                   "--hard-weight", "0.2", "--max-epochs", "2", "--minibatch-size", "32",
                   "--cv-fraction", "0.5", tmp_path / "s.txt", f"ark:{fixtures_dir / 'feats.ark'}",
                   tmp_path / "o.txt", timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    out = svdistill.read(tmp_path / "o.txt")
    assert not out.binary


def test_ctrl_c_keeps_the_best_model_so_far(dnn, fixtures_dir, tmp_path):
    import os
    import signal
    import sys

    import kaldiio
    teacher, ft = dnn
    student, _ = svdistill.compress(teacher, rank=16)
    student.write(tmp_path / "s.nnet")
    kaldiio.save_ark(str(tmp_path / "f.ark"), synthetic_feats(ft, 60, 300, seed=7))
    out = tmp_path / "o.nnet"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    rc, err = signal_once_accepted(
        [sys.executable, "-m", "svdistill", "distill", "--teacher", str(fixtures_dir / "dnn.nnet.bin"),
         "--feature-transform", str(fixtures_dir / "final.feature_transform"), "--max-epochs", "200",
         "--start-halving-impr", "0", "--end-halving-impr", "0", "--learn-rate", "0.0001",
         str(tmp_path / "s.nnet"), f"ark:{tmp_path / 'f.ark'}", str(out)], signal.SIGINT, env)
    assert rc == 130, err
    assert "the best model so far (epoch" in err and "svdistill: interrupted" in err, err
    assert "Traceback" not in err
    got = svdistill.read(out)
    assert [c.kind for c in got] == [c.kind for c in student]


def test_scp_ark_and_dict_inputs_train_the_same_model(dnn, tmp_path):
    import kaldiio
    teacher, ft = dnn
    student, _ = svdistill.compress(teacher, rank=16)
    feats = synthetic_feats(ft, 30, 60, seed=8)
    kaldiio.save_ark(str(tmp_path / "f.ark"), feats, scp=str(tmp_path / "f.scp"))
    kw = dict(teacher=teacher, feature_transform=ft, max_epochs=2, minibatch_size=64, cv_fraction=0.2)
    models = [distill(student, src, **kw)[0] for src in
              (feats, f"scp:{tmp_path / 'f.scp'}", f"ark:{tmp_path / 'f.ark'}")]
    for m in models[1:]:
        for x, y in zip(models[0].components, m.components):
            if x.weight is not None:
                assert np.array_equal(x.weight, y.weight)
    # An scp entry whose archive is gone: a clear error naming the utterance.
    (tmp_path / "g.scp").write_text((tmp_path / "f.scp").read_text().replace("f.ark", "missing.ark"))
    with pytest.raises(svdistill.Error, match="utterance s8u00"):
        distill(student, f"scp:{tmp_path / 'g.scp'}", **kw)


@pytest.mark.slow
def test_distill_a_large_generated_model(tmp_path, run_cli):
    """A 440-1024x3-3000 model from gen_nnet.py (realistic spectra, Kaldi
    text), compressed to rank 128 and distilled for two epochs through the CLI."""
    import subprocess
    import sys

    import kaldiio

    from conftest import BENCH
    gen = BENCH / "gen_nnet.py"
    model = tmp_path / "big.nnet"
    subprocess.run([sys.executable, str(gen), "--dims", "440,1024,1024,1024,3000", "--style", "kaldi",
                    "--seed", "3", "--out", str(model)], check=True, capture_output=True)
    teacher = svdistill.read(model)
    svdistill.compress(teacher, rank=128, output=tmp_path / "small.nnet")
    student = svdistill.read(tmp_path / "small.nnet")
    rng = _rng(11)
    feats = {f"u{i:03d}": rng.normal(size=(200, 440)).astype(np.float32) for i in range(100)}
    kaldiio.save_ark(str(tmp_path / "f.ark"), feats, scp=str(tmp_path / "f.scp"))
    proc = run_cli("distill", "--teacher", model, "--max-epochs", "2", "--report", tmp_path / "r.json",
                   tmp_path / "small.nnet", f"scp:{tmp_path / 'f.scp'}", tmp_path / "out.nnet", timeout=900)
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads((tmp_path / "r.json").read_text())
    first, best = report["epochs"][0], report["epochs"][report["best_epoch"]]
    assert report["best_epoch"] >= 1
    assert best["cv_kl"] < 0.8 * first["cv_kl"], (first, best)
    out = svdistill.read(tmp_path / "out.nnet")
    assert not out.binary and out.num_params == student.num_params
