"""Specialist ensembles (svdistill.specialists): clustering, the dustbin, the section 5.3
combination against a direct numerical minimisation, ensemble.json, and training."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import svdistill
from svdistill import Component, Error, Model
from svdistill.specialists import (
    DEFAULT_TOLERANCE,
    Ensemble,
    cluster_classes,
    combine,
    dustbin_model,
    dustbin_teacher,
    specialists,
)

# -- clustering -------------------------------------------------------------------

def planted_covariance(blocks, rng, noise=0.02):
    """A covariance whose classes covary within planted blocks, shuffled."""
    C = sum(blocks)
    perm = rng.permutation(C)
    cov = np.zeros((C, C))
    start = 0
    groups = []
    for b in blocks:
        idx = perm[start:start + b]
        cov[np.ix_(idx, idx)] = 1.0
        groups.append(sorted(int(i) for i in idx))
        start += b
    cov += noise * rng.standard_normal((C, C))
    return (cov + cov.T) / 2, groups


def test_clustering_recovers_planted_blocks():
    rng = np.random.default_rng(0)
    cov, groups = planted_covariance([4, 5, 3], rng)
    clusters = cluster_classes(cov, 3, seed=1)
    assert sorted(clusters) == sorted(groups)
    assert cluster_classes(cov, 3, seed=1) == clusters  # seeded: the same every time


def test_clustering_overlap_and_fixed_size():
    rng = np.random.default_rng(1)
    cov, groups = planted_covariance([4, 4, 4, 4], rng)
    # Blocks 0 and 1 covary a little, and 2 and 3: each block's second-nearest cluster is its pair's.
    for a, b in ((0, 1), (2, 3)):
        cov[np.ix_(groups[a], groups[b])] = cov[np.ix_(groups[b], groups[a])] = 0.4
    plain = cluster_classes(cov, 4, seed=0)
    assert sorted(plain) == sorted(groups)
    wide = cluster_classes(cov, 4, overlap=1, seed=0)
    pairs = sorted(sorted(groups[a] + groups[b]) for a, b in ((0, 1), (2, 3)))
    assert sorted(wide) == sorted(pairs * 2)
    fixed = cluster_classes(cov, 4, classes_per_specialist=2, seed=0)
    assert all(len(c) == 2 for c in fixed)
    assert all(any(set(c) <= set(g) for g in groups) for c in fixed)


@pytest.mark.parametrize("kw, word", [(dict(num_specialists=0), "num_specialists"),
                                      (dict(num_specialists=13), "num_specialists"),
                                      (dict(num_specialists=2, classes_per_specialist=12), "classes_per_specialist"),
                                      (dict(num_specialists=2, classes_per_specialist=0), "classes_per_specialist"),
                                      (dict(num_specialists=2, overlap=2), "overlap"),
                                      (dict(num_specialists=2, classes_per_specialist=3, overlap=1), "overlap"),
                                      (dict(num_specialists=1), "dustbin")])
def test_clustering_refuses(kw, word):
    cov, _ = planted_covariance([6, 6], np.random.default_rng(2))
    k = kw.pop("num_specialists")
    with pytest.raises(Error, match=word):
        cluster_classes(cov, k, **kw)


# -- the dustbin ----------------------------------------------------------------

def small_generalist(rng, dims=(6, 8, 5)):
    w1 = rng.standard_normal((dims[1], dims[0])).astype(np.float32)
    w2 = rng.standard_normal((dims[2], dims[1])).astype(np.float32)
    return Model([Component.affine(w1, rng.standard_normal(dims[1]).astype(np.float32)),
                  Component.activation("Sigmoid", dims[1]),
                  Component.affine(w2, rng.standard_normal(dims[2]).astype(np.float32)),
                  Component.activation("Softmax", dims[2])])


def test_dustbin_model_keeps_rows_and_fits_log_sum_exp():
    rng = np.random.default_rng(3)
    g = small_generalist(rng)
    x = rng.standard_normal((500, 6)).astype(np.float32)
    h = svdistill.forward(Model(g.components[:2]), x)
    m, rms = dustbin_model(g, [3, 1], h)
    assert m.output_dim == 3
    np.testing.assert_array_equal(m.components[-2].weight[:2], g.components[-2].weight[[3, 1]])
    pg, pm = svdistill.forward(g, x), svdistill.forward(m, x)
    # Ratios among kept classes are exact; the dustbin carries the others' mass up to the fit.
    np.testing.assert_allclose(pm[:, 0] / pm[:, 1], pg[:, 3] / pg[:, 1], rtol=1e-4)
    err = np.abs(pm[:, 2] - pg[:, [0, 2, 4]].sum(1))
    assert rms < 0.5 and err.mean() < 0.05
    # Where the others' log-sum-exp is affine in h (one other class), the fit is exact.
    m1, rms1 = dustbin_model(g, [0, 1, 2, 3], h)
    assert rms1 < 1e-4
    np.testing.assert_allclose(svdistill.forward(m1, x)[:, 4], pg[:, 4], atol=1e-5)



def test_dustbin_teacher_is_the_generalist_regrouped():
    """The soft targets a specialist trains on are the generalist's posteriors regrouped (its
    classes, then the sum of the others), to float precision, at T = 1 and, as softmax(log / T)
    of them, at any T; and distill() trains on exactly these logits."""
    rng = np.random.default_rng(4)
    g = small_generalist(rng)
    g.components[-2].weight[...] *= 8  # confident: the others' sum spans many orders of magnitude
    x = rng.standard_normal((300, 6)).astype(np.float32)
    cls = [3, 1]
    t = dustbin_teacher(g, cls)
    assert (t.input_dim, t.output_dim) == (6, 3)
    z = t.logits(x)
    assert z.dtype == np.float32 and z.shape == (300, 3)
    pg = svdistill.forward(g, x).astype(np.float64)
    want = np.column_stack([pg[:, 3], pg[:, 1], pg[:, [0, 2, 4]].sum(1)])
    zz = z.astype(np.float64)
    q = np.exp(zz - zz.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    np.testing.assert_allclose(q, want, rtol=1e-5, atol=1e-7)
    # The trainer's soft targets are these: a student that outputs log(want) has KL 0 at T = 1.
    from svdistill.distill.engine import CoreEngine, train_options
    logw = np.log(np.maximum(want, 1e-30)).astype(np.float32)
    student = [Component.affine(np.eye(3, dtype=np.float32), np.zeros(3, np.float32)),
               Component.activation("Softmax", 3)]

    class Given:  # the dustbin teacher on x, for a student whose input (and logits) is log(want)
        input_dim, output_dim = 3, 3

        @staticmethod
        def logits(frames):
            assert len(frames) == len(x)
            return t.logits(x)

    eng = CoreEngine(student, [Given()], None, train_options(temperature=1.0))
    st = eng.evaluate(logw, None)
    assert st["kl"] / st["frames"] < 1e-6 and st["kl_t"] / st["frames"] < 1e-6
    with pytest.raises(Error, match="distinct ids"):
        dustbin_teacher(g, [0, 1, 2, 3, 4])

def test_dustbin_relabelling_and_refusals():
    rng = np.random.default_rng(4)
    g = small_generalist(rng)
    h = rng.random((50, 8)).astype(np.float32)
    for bad in ([], [0, 1, 2, 3, 4], [5], [-1], [1, 1]):
        with pytest.raises(Error, match="classes must be distinct"):
            dustbin_model(g, bad, h)
    no_softmax = Model(g.components[:3])
    with pytest.raises(Error, match="must end in <Softmax>"):
        dustbin_model(no_softmax, [0], h)


# -- the combination (section 5.3) ---------------------------------------------

def objective(q, pg, ps, classes):
    f = np.sum(pg * (np.log(pg) - np.log(q)))
    for p, c in zip(ps, classes):
        qm = np.append(q[c], 1 - q[c].sum())
        f += np.sum(p * (np.log(p) - np.log(qm)))
    return f


def direct_minimum(pg, ps, classes, steps=20000, lr=0.5):
    """Gradient descent on z (q = softmax z) in float64, to the precision of the test."""
    z = np.log(pg).copy()
    for _ in range(steps):
        q = np.exp(z - z.max())
        q /= q.sum()
        grad = q - pg
        for p, c in zip(ps, classes):
            inside = np.zeros(len(q), bool)
            inside[c] = True
            a, Q = p[:-1].sum(), q[inside].sum()
            g = np.where(inside, 0.0, q * (a - Q) / (1 - Q))
            g[c] = q[c] - p[:-1]
            grad += g
        z -= lr * grad
    q = np.exp(z - z.max())
    return q / q.sum()


def random_case(rng, C=7, classes=((0, 2), (2, 3, 5), (6,))):
    pg = rng.dirichlet(np.ones(C))
    ps = [rng.dirichlet(np.ones(len(c) + 1)) for c in classes]
    return pg, ps, [list(c) for c in classes]


def test_combination_matches_direct_minimisation():
    rng = np.random.default_rng(5)
    for _ in range(5):
        pg, ps, classes = random_case(rng)
        # top_n = C: every specialist is active
        q, info = combine(pg[None], [p[None] for p in ps], classes, top_n=7, tolerance=1e-9, return_info=True)
        ref = direct_minimum(pg, ps, classes)
        np.testing.assert_allclose(q[0], ref, atol=2e-6)
        assert info["active"][0] == 3 and info["unconverged"] == 0
        assert objective(q[0].astype(np.float64), pg, ps, classes) <= objective(pg, pg, ps, classes)


def test_combination_one_specialist_closed_form_and_inactive_frames():
    pg = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], np.float32)
    ps = [np.array([[0.9, 0.1], [0.5, 0.5]], np.float32)]
    q, info = combine(pg, ps, [[0]], top_n=1, return_info=True)
    # One specialist: its class gets the mean of both, the rest keep the generalist's ratios.
    np.testing.assert_allclose(q[0], [0.7, 0.18, 0.12], atol=1e-6)
    np.testing.assert_array_equal(q[1], pg[1])  # class 0 is not the generalist's top class: p_g stays
    assert list(info["active"]) == [1, 0] and info["iterations"][1] == 0
    np.testing.assert_allclose(combine(pg, ps, [[0]], apply_log=True), np.log(q + 1e-20), rtol=1e-6)


def test_top_n_selects_specialists():
    pg = np.array([[0.6, 0.3, 0.1]], np.float32)
    ps = [np.array([[0.2, 0.8]], np.float32)]  # holds class 1, the generalist's second
    q1, i1 = combine(pg, ps, [[1]], top_n=1, return_info=True)
    q2, i2 = combine(pg, ps, [[1]], top_n=2, return_info=True)
    assert i1["active"][0] == 0 and i2["active"][0] == 1
    np.testing.assert_array_equal(q1, pg)
    assert q2[0, 1] < pg[0, 1]


def test_convergence_tolerance():
    rng = np.random.default_rng(6)
    pg, ps, classes = random_case(rng)
    ref = direct_minimum(pg, ps, classes)
    args = (pg[None], [p[None] for p in ps], classes)
    coarse, ic = combine(*args, top_n=7, tolerance=1e-3, return_info=True)
    fine, jf = combine(*args, top_n=7, tolerance=1e-10, return_info=True)
    assert ic["iterations"][0] < jf["iterations"][0]
    assert np.abs(fine[0] - ref).max() < np.abs(coarse[0] - ref).max()
    assert np.abs(fine[0] - ref).max() < 1e-6
    assert np.abs(coarse[0] - ref).max() < 1e-2  # the tolerance bounds the error, not only the step
    capped, ip = combine(*args, top_n=7, tolerance=1e-12, max_iterations=2, return_info=True)
    assert ip["iterations"][0] == 2 and ip["unconverged"] == 1
    assert DEFAULT_TOLERANCE > 0


def test_combination_refusals():
    pg = np.full((2, 4), 0.25, np.float32)
    ok = [np.full((2, 2), 0.5, np.float32)]
    with pytest.raises(Error, match="out of range"):
        combine(pg, ok, [[4]], top_n=4)
    with pytest.raises(Error, match="listed twice"):
        combine(pg, [np.full((2, 3), 1 / 3, np.float32)], [[1, 1]], top_n=4)
    with pytest.raises(Error, match="its classes and the dustbin"):
        combine(pg, [np.full((2, 3), 1 / 3, np.float32)], [[1]])
    with pytest.raises(Error, match="between 1 and 3"):
        combine(pg, [np.full((2, 5), 0.2, np.float32)], [[0, 1, 2, 3]])
    with pytest.raises(Error, match="top_n"):
        combine(pg, ok, [[1]], top_n=5)
    with pytest.raises(Error, match="tolerance"):
        combine(pg, ok, [[1]], tolerance=0)
    with pytest.raises(Error, match="2 class lists"):
        combine(pg, ok, [[1], [2]])


# -- training and ensemble.json -------------------------------------------------

def blobs(rng, C=6, per=40, dim=6):
    centres = 3 * rng.standard_normal((C, dim))
    y = np.repeat(np.arange(C), per)
    x = (centres[y] + rng.standard_normal((len(y), dim))).astype(np.float32)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    keys = range(0, len(x), 8)
    return {f"u{i:03d}": x[i:i + 8] for i in keys}, {f"u{i:03d}": y[i:i + 8] for i in keys}


TRAIN = dict(optimizer="adam", learn_rate=0.01, minibatch_size=16, max_epochs=2)


def test_specialists_train_and_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    feats, labels = blobs(rng)
    g = small_generalist(rng, (6, 8, 6))
    g, _ = svdistill.distill(g, feats, labels=labels, **TRAIN)
    gpath = str(tmp_path / "g.nnet")
    g.write(gpath)
    out = tmp_path / "ens"
    res = specialists(gpath, feats, out, num_specialists=2, classes_per_specialist=2, **TRAIN)
    spec = json.loads((out / "ensemble.json").read_text())
    assert spec["generalist"] == os.path.abspath(gpath) and spec["num_classes"] == 6
    assert [s["classes"] for s in spec["specialists"]] == res.classes
    assert sorted(os.listdir(out)) == ["ensemble.json", "specialist-0.nnet", "specialist-1.nnet"]
    assert set(res.reports) == {0, 1}
    ens = Ensemble(out / "ensemble.json")
    assert ens.classes == res.classes
    for i, m in enumerate(ens.specialists):
        assert m.output_dim == len(res.classes[i]) + 1
    x = np.concatenate(list(feats.values()))
    q, info = ens(x, top_n=1, return_info=True)
    assert q.shape == (len(x), 6) and info["unconverged"] == 0
    np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-5)
    # Two specialists of two classes leave classes to the generalist alone: its frames keep p_g.
    off = info["active"] == 0
    assert 0 < off.sum() < len(x)
    np.testing.assert_allclose(q[off], svdistill.forward(g, x)[off], atol=1e-6)
    assert not np.allclose(q[~off], svdistill.forward(g, x)[~off], atol=1e-3)


def test_only_trains_one_and_in_memory_models(tmp_path):
    rng = np.random.default_rng(8)
    feats, labels = blobs(rng)
    g = small_generalist(rng, (6, 8, 6))
    g, _ = svdistill.distill(g, feats, labels=labels, **TRAIN)
    ft = Model([Component.activation("Rescale", 6)])
    ft.components[0].params["scale_data"][...] = 1.0
    res = specialists(g, feats, tmp_path, feature_transform=ft, num_specialists=3, only=1, labels=labels, **TRAIN)
    assert set(res.reports) == {1}
    assert sorted(os.listdir(tmp_path)) == ["ensemble.json", "feature_transform.nnet", "generalist.nnet",
                                            "specialist-1.nnet"]
    spec = json.loads((tmp_path / "ensemble.json").read_text())
    assert spec["generalist"] == "generalist.nnet" and spec["feature_transform"] == "feature_transform.nnet"
    # The clustering is the same in another call: specialists can be trained apart.
    res0 = specialists(g, feats, tmp_path, feature_transform=ft, num_specialists=3, only=0, labels=labels, **TRAIN)
    assert res0.classes == res.classes
    assert "specialist-0.nnet" in os.listdir(tmp_path)
    # The clustering written first is the one every later --only run uses, even where its own
    # would differ (another machine's rounding): here, a hand-edited one.
    spec["specialists"][0]["classes"], spec["specialists"][1]["classes"] = \
        spec["specialists"][1]["classes"], spec["specialists"][0]["classes"]
    (tmp_path / "ensemble.json").write_text(json.dumps(spec))
    res2 = specialists(g, feats, tmp_path, feature_transform=ft, num_specialists=3, only=2, labels=labels, **TRAIN)
    assert res2.classes == [res.classes[1], res.classes[0], res.classes[2]]
    with pytest.raises(Error, match="was made with other settings"):
        specialists(g, feats, tmp_path, feature_transform=ft, num_specialists=3, only=2, seed=5, labels=labels,
                    **TRAIN)


def test_specialists_refusals(tmp_path):
    rng = np.random.default_rng(9)
    feats, labels = blobs(rng)
    g = small_generalist(rng, (6, 8, 6))
    with pytest.raises(Error, match="num_specialists"):
        specialists(g, feats, tmp_path, num_specialists=0)
    with pytest.raises(Error, match="num_specialists"):
        specialists(g, feats, tmp_path, num_specialists=7)
    with pytest.raises(Error, match="only"):
        specialists(g, feats, tmp_path, num_specialists=2, only=2)
    with pytest.raises(Error, match="classes_per_specialist"):
        specialists(g, feats, tmp_path, num_specialists=2, classes_per_specialist=6)
    with pytest.raises(Error, match="teacher"):
        specialists(g, feats, tmp_path, teacher=g)
    with pytest.raises(Error, match="must end in <Softmax>"):
        specialists(Model(g.components[:3]), feats, tmp_path)
    # distill's options are checked before the pass over the data (here: data that cannot be read).
    for kw, word in ((dict(minibatch_size=0), "minibatch_size must be an integer >= 1"),
                     (dict(momentum=0.5, optimizer="adam"), "momentum 0.5 applies to optimizer sgd"),
                     (dict(no_such_option=1), "no_such_option")):
        with pytest.raises((Error, TypeError), match=word):
            specialists(g, f"ark:{tmp_path / 'missing.ark'}", tmp_path, num_specialists=2, **kw)
    bad = {k: v + 6 for k, v in labels.items()}
    with pytest.raises(Error, match=r"pdf ids must lie in \[0, 6\)"):
        specialists(g, feats, tmp_path, labels=bad, num_specialists=2)
    assert not os.listdir(tmp_path)


def test_ensemble_refuses_bad_files(tmp_path):
    p = tmp_path / "ensemble.json"
    p.write_text("{")
    with pytest.raises(Error, match="not JSON"):
        Ensemble(p)
    p.write_text(json.dumps({"format": "other"}))
    with pytest.raises(Error, match="not an ensemble"):
        Ensemble(p)
    with pytest.raises(Error, match="cannot read"):
        Ensemble(tmp_path / "missing.json")


def test_init_keeps_its_structure_and_bad_ensemble_classes(tmp_path):
    rng = np.random.default_rng(10)
    feats, labels = blobs(rng)
    g = small_generalist(rng, (6, 8, 6))
    g, _ = svdistill.distill(g, feats, labels=labels, **TRAIN)
    small, _ = svdistill.compress(g, rank=3)
    kinds = [c.kind for c in small.components]
    assert "LinearTransform" in kinds
    res = specialists(g, feats, tmp_path, init=small, num_specialists=2, only=0, **TRAIN)
    s0 = svdistill.read(res.files[0])
    assert [c.kind for c in s0.components] == kinds and s0.output_dim == len(res.classes[0]) + 1
    with pytest.raises(Error, match="init: maps"):
        specialists(g, feats, tmp_path, init=small_generalist(rng, (6, 8, 5)), num_specialists=2)
    # A hand-edited ensemble.json naming a class the generalist lacks.
    spec = json.loads((tmp_path / "ensemble.json").read_text())
    spec["specialists"] = [{"file": "specialist-0.nnet", "classes": [c + 6 for c in res.classes[0]]}]
    (tmp_path / "ensemble.json").write_text(json.dumps(spec))
    with pytest.raises(Error, match=r"classes must be distinct ids in \[0, 6\)"):
        Ensemble(tmp_path / "ensemble.json")


@pytest.mark.parametrize("seed", range(12))
def test_classes_never_predicted_leave_no_specialist_empty(seed):
    """Classes the generalist never predicts have identical (zero) covariance columns: K-means
    must still give every specialist a class (an empty-cluster repair that took the only
    member of another cluster, or a nearest-centroid tie, used to leave one empty)."""
    rng = np.random.default_rng(seed)
    C = int(rng.integers(4, 9))
    A = rng.standard_normal((C, 6))
    A[rng.choice(C, size=C // 2, replace=False)] = 0.0
    clusters = cluster_classes(A @ A.T, C)
    assert all(clusters), clusters
    assert sorted(c for cl in clusters for c in cl) == list(range(C))


def test_specialist_data_is_read_again_not_held():
    """A specialist's data (_Picked) are the chosen frames, after a feature transform that
    runs on whole utterances (a <Splice> sees each frame's neighbours), in order, in chunks
    of _CHUNK frames: what slicing the whole transformed corpus in memory gives; each pass
    reads the features again; features that change between passes are an error."""
    import io

    from svdistill.distill.data import Source
    from svdistill.forward import Network
    from svdistill.specialists import _CHUNK, _Picked
    rng = np.random.default_rng(4)
    feats = {f"u{i}": rng.normal(size=(int(n), 3)).astype(np.float32) for i, n in enumerate([5, 90, 1, 200, 33])}
    splice = svdistill.read(io.BytesIO(b"<Nnet>\n<Splice> 9 3\n[ -1 0 1 ]\n<!EndOfComponent>\n</Nnet>\n"))
    ft = Network(splice)
    lengths = np.array([len(v) for v in feats.values()])
    chosen = rng.random(lengths.sum()) < 0.6
    passes = []

    class Counting(dict):
        def items(self):
            passes.append(1)
            return super().items()

    picked = _Picked(Source(Counting(feats), "features"), ft, list(feats), lengths, chosen, "p-")
    want = np.concatenate([ft(v) for v in feats.values()])[chosen]
    for _ in range(2):
        got = list(picked.items())
        assert [k for k, _ in got] == [f"p-{j:07d}" for j in range(len(got))]
        assert all(len(x) == _CHUNK for _, x in got[:-1]) and len(got) == len(picked)
        assert np.array_equal(np.concatenate([x for _, x in got]), want)
    assert len(passes) == 2
    changed = dict(feats, u3=feats["u3"][:-1])
    with pytest.raises(Error, match="utterance u3 has 199 frames, 200 in the first pass"):
        list(_Picked(Source(changed, "features"), ft, list(feats), lengths, chosen, "p-").items())
