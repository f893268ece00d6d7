"""svdistill.compress and `svdistill compress`: truncated-SVD restructuring of nnet1 models.

Expected ranks, errors and parameter counts are computed here from numpy's float64
SVD of the input weights; the factors are checked by multiplying them back.
"""
from __future__ import annotations

import json
import math
import sys
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pytest

import svdistill
from svdistill import Component, Model

# Layer coefficients of the test model: (LearnRateCoef, BiasLearnRateCoef, MaxNorm).
COEFS = {1: (0.5, 0.25, 2.5), 3: (1.0, 1.0, 0.0), 5: (2.0, 0.0, 0.0)}
AFFINE = [1, 3, 5]
SHAPES = {1: (96, 40), 3: (96, 96), 5: (30, 96)}  # (out, in)


def build_model(lowrank, seed: int = 0, coefs=COEFS) -> Model:
    """40 -> 96 -> 96 -> 30, Sigmoid, Sigmoid, Softmax; realistic weight spectra."""
    rng = np.random.default_rng(seed)
    dims = [40, 96, 96, 30]
    comps: List[Component] = []
    for j, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        W, _ = lowrank(b, a, rng)
        lr, blr, mn = coefs[2 * j + 1]
        comps.append(Component.affine(W, rng.standard_normal(b).astype(np.float32), learn_rate_coef=lr,
                                      bias_learn_rate_coef=blr, max_norm=mn))
        comps.append(Component.activation("Sigmoid" if j < 2 else "Softmax", b))
    return Model(comps)


@pytest.fixture(scope="module")
def model(lowrank) -> Model:
    return build_model(lowrank)


@pytest.fixture(scope="module")
def paths(model, tmp_path_factory) -> Dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    p = {"text": d / "m.nnet.txt", "bin": d / "m.nnet.bin", "pdnn": d / "m.pdnn.txt"}
    svdistill.write(model, p["text"], binary=False)
    svdistill.write(model, p["bin"], binary=True)
    plain = build_model_plain(model)
    svdistill.write(plain, p["pdnn"], binary=False, dialect="pdnn")
    return p


def build_model_plain(model: Model) -> Model:
    """The same weights with default coefficients (PDNN has none)."""
    comps = []
    for c in model:
        if c.kind == "AffineTransform":
            comps.append(Component.affine(c.weight.copy(), c.bias.copy()))
        else:
            comps.append(Component.activation(c.kind, c.output_dim))
    return Model(comps)


@pytest.fixture(scope="module")
def spectra(model) -> Dict[int, np.ndarray]:
    return {i: np.linalg.svd(model[i - 1].weight.astype(np.float64), compute_uv=False) for i in AFFINE}


# ----------------------------------------------------------------- helpers

def worth(k: int, out: int, inp: int, min_gain: float = 0.0) -> bool:
    """k(out+in) < out*in and k(out+in) <= (1 - min_gain) out*in, in exact arithmetic
    (min_gain read as the decimal the user typed)."""
    g = Fraction(str(min_gain))
    return k * (out + inp) < out * inp and k * (out + inp) <= (1 - g) * out * inp


def energy_k(s: np.ndarray, e: float) -> int:
    c = np.cumsum(s ** 2) / np.sum(s ** 2)
    return int(np.searchsorted(c, e * (1 - 1e-12))) + 1


def nuclear_k(s: np.ndarray, e: float) -> int:
    c = np.cumsum(s) / np.sum(s)
    return int(np.searchsorted(c, e * (1 - 1e-12))) + 1


def tail(s: np.ndarray, k: int) -> float:
    return float(np.sum(s[k:] ** 2))


def params_of(model: Model) -> int:
    """Parameter count from the arrays themselves."""
    return sum(int(sum(a.size for a in c.params.values())) for c in model)


def expand(src: Model, out: Model, factored: Sequence[int], dialect: str = "kaldi") -> Dict[int, List[Component]]:
    """Input component index -> the output components that replace it."""
    width = 2 if dialect == "kaldi" else 3
    res, j = {}, 0
    for i, _ in enumerate(src, 1):
        n = width if i in factored else 1
        res[i] = list(out.components[j:j + n])
        j += n
    assert j == len(out.components), (j, [c.kind for c in out])
    return res


def pair_product(parts: List[Component], dialect: str = "kaldi") -> np.ndarray:
    if dialect == "kaldi":
        first, second = parts
        assert first.kind == "LinearTransform" and second.kind == "AffineTransform"
    else:
        first, lin, second = parts
        assert first.kind == "AffineTransform" and lin.kind == "Linear" and second.kind == "AffineTransform"
    return second.weight.astype(np.float64) @ first.weight.astype(np.float64)


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint8), b.view(np.uint8))


def assert_same_component(x: Component, y: Component) -> None:
    # markers compared without case: '<affinetransform>' read from PDNN is '<AffineTransform>'
    assert x.kind == y.kind and x.marker.lower() == y.marker.lower()
    assert (x.input_dim, x.output_dim) == (y.input_dim, y.output_dim)
    assert x.coefs == y.coefs
    assert list(x.params) == list(y.params)
    for name in x.params:
        assert bits_equal(x.params[name], y.params[name]), name


def ranks_of(report) -> Dict[int, object]:
    return {L.index: L.rank for L in report.layers}


def check_factored(src: Model, out: Model, report, spectra_ref: Dict[int, np.ndarray],
                   dialect: str = "kaldi") -> Dict[int, List[Component]]:
    """Every factored layer: shapes, bias, error vs optimal and vs the report."""
    factored = [L.index for L in report.layers if L.rank is not None]
    parts = expand(src, out, factored, dialect)
    for L in report.layers:
        i = L.index
        W = src[i - 1].weight.astype(np.float64)
        if L.rank is None:
            assert len(parts[i]) == 1
            assert_same_component(parts[i][0], src[i - 1])
            assert L.params_after == L.params_before
            continue
        k = L.rank
        o, n = W.shape
        first, second = parts[i][0], parts[i][-1]
        assert (first.output_dim, first.input_dim) == (k, n)
        assert (second.output_dim, second.input_dim) == (o, k)
        assert bits_equal(second.bias, src[i - 1].bias)
        P = pair_product(parts[i], dialect)
        s = spectra_ref[i]
        opt = math.sqrt(tail(s, k))
        err = float(np.linalg.norm(W - P))
        assert err <= 1.01 * opt + 1e-6, f"layer {i}: {err / opt:.4f}x optimal"
        rel = err / np.linalg.norm(W)
        assert L.rel_error == pytest.approx(rel, abs=2e-4), (i, L.rel_error, rel)
        assert L.retained_energy == pytest.approx(1 - rel ** 2, abs=2e-4)
        assert L.params_after == k * (o + n) + o + (k if dialect == "pdnn" else 0)
    return parts


# --------------------------------------------------------------- structure

def test_kaldi_structure_and_coefficients(model, spectra):
    out, rep = svdistill.compress(model, rank=16)
    assert isinstance(out, Model) and isinstance(rep, svdistill.CompressReport)
    assert [c.kind for c in out] == ["LinearTransform", "AffineTransform", "Sigmoid",
                                     "LinearTransform", "AffineTransform", "Sigmoid",
                                     "LinearTransform", "AffineTransform", "Softmax"]
    assert ranks_of(rep) == {1: 16, 3: 16, 5: 16}
    parts = check_factored(model, out, rep, spectra)
    for i in AFFINE:
        lr, blr, mn = COEFS[i]
        lin, aff = parts[i]
        assert lin.marker == "<LinearTransform>" and aff.marker == "<AffineTransform>"
        assert lin.coefs == {"<LearnRateCoef>": lr}
        assert aff.coefs == {"<LearnRateCoef>": lr, "<BiasLearnRateCoef>": blr, "<MaxNorm>": mn}
    for i in (2, 4, 6):
        assert_same_component(parts[i][0], model[i - 1])
    assert rep.params_before == params_of(model) == model.num_params
    assert rep.params_after == params_of(out) == out.num_params
    assert rep.ratio == pytest.approx(rep.params_after / rep.params_before)


def test_coefficients_survive_a_file_round_trip(model, paths, tmp_path):
    out = tmp_path / "o.txt"
    res, rep = svdistill.compress(paths["text"], rank=8, output=out)
    assert res is None
    back = svdistill.read(out)
    coefs = [c.coefs for c in back if c.kind in ("LinearTransform", "AffineTransform")]
    assert coefs == [
        {"<LearnRateCoef>": 0.5}, {"<LearnRateCoef>": 0.5, "<BiasLearnRateCoef>": 0.25, "<MaxNorm>": 2.5},
        {"<LearnRateCoef>": 1.0}, {"<LearnRateCoef>": 1.0, "<BiasLearnRateCoef>": 1.0, "<MaxNorm>": 0.0},
        {"<LearnRateCoef>": 2.0}, {"<LearnRateCoef>": 2.0, "<BiasLearnRateCoef>": 0.0, "<MaxNorm>": 0.0},
    ]


def _chunks(data: bytes) -> List[bytes]:
    return data.split(b"<!EndOfComponent>")


@pytest.mark.parametrize("encoding", ["bin", "text"])
def test_untouched_components_byte_identical_kaldi_fixture(fixtures_dir, tmp_path, encoding):
    """lrcoef.nnet (AddShift, Rescale, LinearTransform, ParametricRelu, coefficients
    0.5/0.25/2.5, 0.1, 2.0/0.0) as Kaldi wrote it: factor component 3 and 8 only;
    every other component's bytes are copied (text: with --digits kaldi)."""
    src = fixtures_dir / ("lrcoef.nnet.bin" if encoding == "bin" else "lrcoef.nnet.txt")
    out = tmp_path / "o"
    kw = {} if encoding == "bin" else {"digits": "kaldi"}
    _, rep = svdistill.compress(src, rank=4, layers="3,8", output=out, **kw)
    assert ranks_of(rep) == {3: 4, 8: 4}
    a, b = _chunks(src.read_bytes()), _chunks(out.read_bytes())
    assert len(a) == 10 and len(b) == 12
    mapping = {1: [1], 2: [2], 3: [3, 4], 4: [5], 5: [6], 6: [7], 7: [8], 8: [9, 10], 9: [11], 10: [12]}
    for i, js in mapping.items():
        if i in (3, 8):
            continue
        assert [b[j - 1] for j in js] == [a[i - 1]], f"component {i} differs"
    m = svdistill.read(out)
    assert [c.kind for c in m] == ["AddShift", "Rescale", "LinearTransform", "AffineTransform", "Sigmoid",
                                   "LinearTransform", "AffineTransform", "ParametricRelu",
                                   "LinearTransform", "AffineTransform", "Softmax"]
    assert m[2].coefs == {"<LearnRateCoef>": 0.5}
    assert m[3].coefs == {"<LearnRateCoef>": 0.5, "<BiasLearnRateCoef>": 0.25, "<MaxNorm>": 2.5}
    assert m[8].coefs == {"<LearnRateCoef>": 2.0}
    assert m[9].coefs == {"<LearnRateCoef>": 2.0, "<BiasLearnRateCoef>": 0.0, "<MaxNorm>": 0.0}
    assert m.binary == (encoding == "bin")


def test_untouched_components_identical_in_own_model(model, paths, tmp_path):
    out = tmp_path / "o.bin"
    _, rep = svdistill.compress(paths["bin"], rank=12, layers="3", output=out)
    a, b = _chunks(paths["bin"].read_bytes()), _chunks(out.read_bytes())
    assert len(b) == len(a) + 1
    assert b[:2] == a[:2] and b[4:] == a[3:]
    back = svdistill.read(out)
    for i_in, i_out in [(1, 1), (2, 2), (4, 5), (5, 6), (6, 7)]:
        assert_same_component(back[i_out - 1], model[i_in - 1])


# ------------------------------------------------------------------ policies

def test_rank_policy_error_near_optimal(model, spectra):
    out, rep = svdistill.compress(model, rank=24)
    assert ranks_of(rep) == {1: 24, 3: 24, 5: None}  # 30x96 at 24: 3024 >= 2880
    check_factored(model, out, rep, spectra)
    assert "unchanged" in rep.layers[2].note


@pytest.mark.parametrize("method", ["exact", "randomized", "auto"])
def test_methods_all_near_optimal(model, spectra, method):
    out, rep = svdistill.compress(model, rank=20, method=method)
    check_factored(model, out, rep, spectra)
    if method != "auto":
        assert all(L.method == method for L in rep.layers)


def test_ranks_policy(model, spectra):
    out, rep = svdistill.compress(model, ranks=[5, 30, 12])
    assert ranks_of(rep) == {1: 5, 3: 30, 5: 12}
    check_factored(model, out, rep, spectra)


@pytest.mark.parametrize("f", [0.1, 0.25, 0.3, 0.45])
def test_rank_fraction_policy(model, spectra, f):
    out, rep = svdistill.compress(model, rank_fraction=f)
    expect = {}
    for i in AFFINE:
        o, n = SHAPES[i]
        k = max(1, round(f * min(o, n)))
        expect[i] = k if worth(k, o, n) else None
    assert ranks_of(rep) == expect
    check_factored(model, out, rep, spectra)


@pytest.mark.parametrize("e", [0.5, 0.8, 0.9, 0.95, 0.99])
@pytest.mark.parametrize("method", ["auto", "exact"])
def test_energy_policy(model, spectra, e, method):
    out, rep = svdistill.compress(model, energy=e, method=method)
    parts = check_factored(model, out, rep, spectra)
    for L in rep.layers:
        s = spectra[L.index]
        o, n = SHAPES[L.index]
        kopt = energy_k(s, e)
        if not worth(kopt, o, n):
            assert L.rank is None
            continue
        # A rank whose energy falls short of e by less than float32 rounding
        # (the core works on float32 data) counts as meeting it.
        assert energy_k(s, e - 1e-6) <= L.rank <= kopt + 2, (L.index, L.rank, kopt)
        W = model[L.index - 1].weight.astype(np.float64)
        kept = 1 - np.linalg.norm(W - pair_product(parts[L.index])) ** 2 / np.linalg.norm(W) ** 2
        assert kept >= e - 1e-5, (L.index, kept, e)
        assert L.retained_energy >= e - 1e-6


@pytest.mark.parametrize("e", [0.5, 0.9, 0.95])
def test_nuclear_policy(model, spectra, e):
    out, rep = svdistill.compress(model, nuclear=e)
    expect = {}
    for i in AFFINE:
        o, n = SHAPES[i]
        k = nuclear_k(spectra[i], e)
        expect[i] = k if worth(k, o, n) else None
    assert ranks_of(rep) == expect
    check_factored(model, out, rep, spectra)


# ------------------------------------------------------------ --param-budget

def budget_optimum(shapes, spectra_list, budget_weights):
    """Brute force over every rank combination (numpy grid)."""
    opts = []
    for (o, n), s in zip(shapes, spectra_list):
        L = [(o * n, 0.0, -1)] + [(k * (o + n), tail(s, k), k) for k in range(1, min(o, n) + 1)
                                   if worth(k, o, n)]
        opts.append(L)
    cost = np.zeros([len(L) for L in opts])
    err = np.zeros_like(cost)
    for d, L in enumerate(opts):
        shape = [1] * len(opts)
        shape[d] = len(L)
        cost = cost + np.array([c for c, _, _ in L]).reshape(shape)
        err = err + np.array([e for _, e, _ in L]).reshape(shape)
    err = np.where(cost <= budget_weights, err, np.inf)
    idx = np.unravel_index(np.argmin(err), err.shape)
    return float(err[idx]), [opts[d][idx[d]][2] for d in range(len(opts))]


def _budget_case(model, spectra, f):
    out, rep = svdistill.compress(model, param_budget=f)
    P = params_of(model)
    assert rep.params_before == P
    assert params_of(out) == rep.params_after <= f * P
    fixed = P - sum(o * n for o, n in SHAPES.values())
    best_err, best_ranks = budget_optimum([SHAPES[i] for i in AFFINE], [spectra[i] for i in AFFINE], f * P - fixed)
    got = ranks_of(rep)
    err = sum(0.0 if got[i] is None else tail(spectra[i], got[i]) for i in AFFINE)
    check_factored(model, out, rep, spectra)
    return err, best_err, got, best_ranks


@pytest.mark.parametrize("f", [0.2, 0.3, 0.5])
def test_param_budget_is_optimal_when_no_layer_can_stay_whole(model, spectra, f):
    err, best_err, got, best = _budget_case(model, spectra, f)
    assert err <= best_err * (1 + 1e-9), (got, best, err, best_err)


@pytest.mark.parametrize("f", [
    0.7,
    0.9,
])
def test_param_budget_matches_brute_force_with_whole_layers(model, spectra, f):
    err, best_err, got, best = _budget_case(model, spectra, f)
    assert err <= best_err * (1 + 1e-9), (got, best, err, best_err)


def _tiny_model(spec):
    comps = []
    rng = np.random.default_rng(0)
    for j, s in enumerate(spec):
        n = len(s)
        q1, _ = np.linalg.qr(rng.standard_normal((n, n)))
        q2, _ = np.linalg.qr(rng.standard_normal((n, n)))
        W = ((q1 * np.asarray(s)) @ q2.T).astype(np.float32)
        comps.append(Component.affine(W, np.zeros(n, np.float32)))
        comps.append(Component.activation("Sigmoid", n))
    return Model(comps)


def test_param_budget_tiny_model_brute_force():
    """Three small layers; the budget leaves no room to keep any layer whole."""
    spec = [[5.0, 3.0, 2.5, 1.0, 0.8, 0.5, 0.2, 0.1, 0.05, 0.01],
            [4.0, 3.9, 1.0, 0.9, 0.8, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01, 0.01],
            [6.0, 1.0, 0.9, 0.5, 0.4, 0.2, 0.1, 0.1]]
    m = _tiny_model(spec)
    S = [np.linalg.svd(c.weight.astype(np.float64), compute_uv=False) for c in m if c.kind == "AffineTransform"]
    shapes = [(len(s), len(s)) for s in spec]
    P = params_of(m)
    fixed = sum(len(s) for s in spec)
    for f in (0.35, 0.4, 0.45, 0.5):
        out, rep = svdistill.compress(m, param_budget=f)
        assert params_of(out) <= f * P
        ranks = [L.rank if L.rank is not None else -1 for L in rep.layers]
        err = sum(0.0 if k == -1 else tail(s, k) for k, s in zip(ranks, S))
        best_err, best = budget_optimum(shapes, S, f * P - fixed)
        assert err <= best_err * (1 + 1e-9) + 1e-12, (f, ranks, best)


def test_param_budget_tiny_counterexample():
    spec = [[8.3, 8.1, 4.5, 4.4, 4.3, 2.5], [7.6, 7.5, 7.0, 6.6, 6.4, 3.6]]
    m = _tiny_model(spec)
    S = [np.linalg.svd(c.weight.astype(np.float64), compute_uv=False) for c in m if c.kind == "AffineTransform"]
    f = 0.72  # 84 parameters -> 60.48 allowed, 12 of them biases: 48.48 for the weights
    out, rep = svdistill.compress(m, param_budget=f)
    assert params_of(out) <= f * params_of(m)
    ranks = [L.rank if L.rank is not None else -1 for L in rep.layers]
    err = sum(0.0 if k == -1 else tail(s, k) for k, s in zip(ranks, S))
    best_err, best = budget_optimum([(6, 6), (6, 6)], S, f * params_of(m) - 12)
    assert best == [1, -1]
    assert err <= best_err * (1 + 1e-6), (ranks, err, best, best_err)


def test_param_budget_with_min_gain_respects_budget():
    rng = np.random.default_rng(0)
    m = Model([Component.affine(rng.standard_normal((6, 6)).astype(np.float32)),
               Component.activation("Sigmoid", 6),
               Component.affine(rng.standard_normal((60, 60)).astype(np.float32))])
    f = 0.055
    try:
        out, rep = svdistill.compress(m, param_budget=f, min_gain=0.7)
    except svdistill.RankError:
        return  # refusing is also correct
    assert params_of(out) <= f * params_of(m), (params_of(out), f * params_of(m), ranks_of(rep))


def test_param_budget_too_small(model, paths, tmp_path):
    out = tmp_path / "o.txt"
    with pytest.raises(svdistill.RankError, match="param_budget"):
        svdistill.compress(paths["text"], param_budget=0.01, output=out)
    assert not out.exists()


def test_param_budget_streams_from_path_like_memory(model, paths):
    a, ra = svdistill.compress(paths["text"], param_budget=0.4)
    b, rb = svdistill.compress(model, param_budget=0.4)
    assert ranks_of(ra) == ranks_of(rb)
    for x, y in zip(a, b):
        assert_same_component(x, y)


# ------------------------------------------------------------------ modifiers

@pytest.mark.parametrize("g", [0.0, 0.25, 0.6, 0.66])
def test_min_gain(model, spectra, g):
    out, rep = svdistill.compress(model, rank=16, min_gain=g)
    expect = {i: (16 if worth(16, *SHAPES[i], g) else None) for i in AFFINE}
    assert ranks_of(rep) == expect
    check_factored(model, out, rep, spectra)
    for L in rep.layers:
        if L.rank is None:
            assert L.params_after == L.params_before and "unchanged" in L.note


def test_min_gain_exact_boundary(model):
    _, rep = svdistill.compress(model, rank=16, min_gain=0.3, layers="5")
    assert ranks_of(rep) == {5: 16}


@pytest.mark.parametrize("m_round", [1, 4, 8, 16])
def test_round_to_with_fixed_rank(model, spectra, m_round):
    out, rep = svdistill.compress(model, rank=10, round_to=m_round)
    for L in rep.layers:
        o, n = SHAPES[L.index]
        k = min(-(-10 // m_round) * m_round, o, n)
        assert L.rank == (k if worth(k, o, n) else None)
        if L.rank is not None:
            assert L.rank % m_round == 0
    check_factored(model, out, rep, spectra)


@pytest.mark.parametrize("m_round", [4, 8])
def test_round_to_with_energy(model, spectra, m_round):
    out, rep = svdistill.compress(model, energy=0.9, round_to=m_round)
    for L in rep.layers:
        kopt = energy_k(spectra[L.index], 0.9)
        assert L.rank % m_round == 0
        assert kopt <= L.rank < kopt + m_round + 2
        assert L.retained_energy >= 0.9 - 1e-6
    check_factored(model, out, rep, spectra)


@pytest.mark.parametrize("spec,selected", [("1,3", [1, 3]), ("5", [5]), ("1, 5", [1, 5]), ("3-3", [3]),
                                           ("5,1", [1, 5]), ("1,1", [1])])
def test_layers_spec(model, spectra, spec, selected):
    out, rep = svdistill.compress(model, rank=8, layers=spec)
    assert sorted(ranks_of(rep)) == selected
    assert all(L.rank == 8 for L in rep.layers)
    check_factored(model, out, rep, spectra)


def test_skip_output_layer(model, spectra):
    out, rep = svdistill.compress(model, rank=8, skip_output_layer=True)
    assert ranks_of(rep) == {1: 8, 3: 8}
    parts = check_factored(model, out, rep, spectra)
    assert_same_component(parts[5][0], model[4])
    out, rep = svdistill.compress(model, ranks=[4, 6], skip_output_layer=True)
    assert ranks_of(rep) == {1: 4, 3: 6}
    out, rep = svdistill.compress(model, rank=8, layers="3,5", skip_output_layer=True)
    assert ranks_of(rep) == {3: 8}


@pytest.mark.parametrize("split", ["sqrt", "left", "right"])
def test_split(model, spectra, split):
    k = 12
    out, rep = svdistill.compress(model, rank=k, split=split, method="exact")
    parts = check_factored(model, out, rep, spectra)
    for i in AFFINE:
        F = parts[i][0].weight.astype(np.float64)   # k x in
        G = parts[i][1].weight.astype(np.float64)   # out x k
        s = spectra[i][:k]
        FF, GG = F @ F.T, G.T @ G
        # both Gram matrices are diagonal; what is on the diagonal says where s went
        for M in (FF, GG):
            assert np.abs(M - np.diag(np.diag(M))).max() <= 1e-4 * np.abs(M).max()
        want = {"sqrt": (s, s), "left": (np.ones(k), s ** 2), "right": (s ** 2, np.ones(k))}[split]
        np.testing.assert_allclose(np.diag(FF), want[0], rtol=1e-4)
        np.testing.assert_allclose(np.diag(GG), want[1], rtol=1e-4)


def test_unfactorable_layers_stay_unchanged(model, spectra):
    out, rep = svdistill.compress(model, rank=30)
    assert ranks_of(rep) == {1: None, 3: 30, 5: None}  # 30*136 >= 3840, 30*126 >= 2880
    parts = check_factored(model, out, rep, spectra)
    assert_same_component(parts[1][0], model[0])
    assert_same_component(parts[5][0], model[4])


def test_full_rank_on_unfactorable_layer(model):
    out, rep = svdistill.compress(model, rank=40, layers="1")
    assert ranks_of(rep) == {1: None}
    assert len(out) == len(model)
    for x, y in zip(out, model):
        assert_same_component(x, y)
    assert rep.params_after == rep.params_before
    out, rep = svdistill.compress(model, rank_fraction=1.0)
    assert all(L.rank is None for L in rep.layers)


def test_break_even_boundary(lowrank):
    """10x10 layer: rank 4 (80 < 100) is factored, rank 5 (100 = 100) is not."""
    W, _ = lowrank(10, 10, np.random.default_rng(3))
    m = Model([Component.affine(W)])
    assert ranks_of(svdistill.compress(m, rank=4)[1]) == {1: 4}
    assert ranks_of(svdistill.compress(m, rank=5)[1]) == {1: None}


# ------------------------------------------------------------------ PDNN, encodings

def test_pdnn_output_layout(model, spectra, tmp_path):
    k = 10
    out, rep = svdistill.compress(model, rank=k, dialect="pdnn")
    assert out.dialect == "pdnn"
    parts = check_factored(model, out, rep, spectra, dialect="pdnn")
    for i in AFFINE:
        first, lin, second = parts[i]
        assert not np.any(first.bias)  # zero bias
        assert lin.kind == "Linear" and (lin.input_dim, lin.output_dim) == (k, k)
        assert bits_equal(second.bias, model[i - 1].bias)
    p = tmp_path / "o.pdnn"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        svdistill.write(out, p)
    markers = [line.split()[:3] for line in p.read_text().splitlines() if line.startswith("<") and
               not line.startswith("<LearnRateCoef>") and not line.startswith("<!")]
    assert markers == [
        ["<affinetransform>", "10", "40"], ["<linear>", "10", "10"], ["<affinetransform>", "96", "10"],
        ["<sigmoid>", "96", "96"],
        ["<affinetransform>", "10", "96"], ["<linear>", "10", "10"], ["<affinetransform>", "96", "10"],
        ["<sigmoid>", "96", "96"],
        ["<affinetransform>", "10", "96"], ["<linear>", "10", "10"], ["<affinetransform>", "30", "10"],
        ["<softmax>", "30", "30"],
    ]


def test_pdnn_input_gives_pdnn_output(paths, spectra, tmp_path):
    src = svdistill.read(paths["pdnn"])
    assert src.dialect == "pdnn"
    out, rep = svdistill.compress(paths["pdnn"], rank=8)
    assert out.dialect == "pdnn" and out.binary is False
    check_factored(src, out, rep, spectra, dialect="pdnn")
    # streamed to a file: PDNN text too
    p = tmp_path / "o.txt"
    svdistill.compress(paths["pdnn"], rank=8, output=p)
    text = p.read_text()
    assert text.startswith("<affinetransform> 8 40")
    assert "<Nnet>" not in text and "<LinearTransform>" not in text
    back = svdistill.read(p)
    assert back.dialect == "pdnn"
    for x, y in zip(back, out):
        assert_same_component(x, y)
    # ... unless Kaldi is asked for
    q = tmp_path / "k.txt"
    svdistill.compress(paths["pdnn"], rank=8, output=q, dialect="kaldi")
    kal = svdistill.read(q)
    assert kal.dialect == "kaldi"
    assert [c.kind for c in kal][:3] == ["LinearTransform", "AffineTransform", "Sigmoid"]


def test_binary_in_binary_out(model, paths, spectra, tmp_path):
    out, rep = svdistill.compress(paths["bin"], rank=8)
    assert out.binary is True and out.dialect == "kaldi"
    check_factored(model, out, rep, spectra)
    p = tmp_path / "o"
    svdistill.compress(paths["bin"], rank=8, output=p)
    assert p.read_bytes().startswith(b"\0B")
    back = svdistill.read(p)
    for x, y in zip(back, out):
        assert_same_component(x, y)
    # explicit text from binary
    q = tmp_path / "o.txt"
    svdistill.compress(paths["bin"], rank=8, output=q, binary=False)
    assert q.read_bytes().startswith(b"<Nnet>")
    # explicit binary from text
    r = tmp_path / "o.bin"
    svdistill.compress(paths["text"], rank=8, output=r, binary=True)
    assert r.read_bytes().startswith(b"\0B")
    for x, y in zip(svdistill.read(r), out):
        assert_same_component(x, y)


@pytest.mark.parametrize("kw", [dict(rank=16), dict(energy=0.9), dict(nuclear=0.8), dict(rank_fraction=0.25),
                                dict(param_budget=0.5), dict(rank=16, method="randomized", seed=5)])
def test_streaming_equals_in_memory(model, paths, tmp_path, kw):
    p = tmp_path / "o.txt"
    res, rep_s = svdistill.compress(paths["text"], output=p, **kw)
    assert res is None
    mem, rep_m = svdistill.compress(model, **kw)
    assert ranks_of(rep_s) == ranks_of(rep_m)
    back = svdistill.read(p)
    assert len(back) == len(mem)
    for x, y in zip(back, mem):
        assert_same_component(x, y)
    assert rep_s.params_after == rep_m.params_after == params_of(back)


def test_file_object_input(paths, model):
    with open(paths["bin"], "rb") as f:
        a, ra = svdistill.compress(f, rank=8)
    b, rb = svdistill.compress(model, rank=8)
    for x, y in zip(a, b):
        assert_same_component(x, y)


def test_seed_changes_randomized_factors(model):
    a, _ = svdistill.compress(model, rank=16, layers="3", method="randomized", seed=1)
    b, _ = svdistill.compress(model, rank=16, layers="3", method="randomized", seed=1)
    c, _ = svdistill.compress(model, rank=16, layers="3", method="randomized", seed=2)
    assert bits_equal(a[2].weight, b[2].weight)
    assert not np.array_equal(a[2].weight, c[2].weight)


# ------------------------------------------------------------------ errors

ERRORS = [
    (dict(), "no rank policy"),
    (dict(rank=4, energy=0.9), "conflicting"),
    (dict(rank_fraction=0.2, param_budget=0.5), "conflicting"),
    (dict(rank=41), "exceeds"),
    (dict(rank=97), "exceeds"),
    (dict(ranks=[4, 4]), "ranks has 2 values"),
    (dict(ranks=[4, 4, 4, 4]), "ranks has 4 values"),
    (dict(ranks=[50, 4, 4]), "exceeds"),  # 50 > min(96, 40)
    (dict(rank=4, layers="2"), "Sigmoid"),
    (dict(rank=4, layers="2-2"), "no <AffineTransform>"),
    (dict(rank=4, layers="7"), "does not exist"),
    (dict(rank=4, layers="0"), "layers"),
    (dict(rank=4, layers="x"), "layers"),
    (dict(param_budget=0.01), "param_budget"),
    (dict(rank=0), "rank"),
    (dict(energy=1.5), "energy"),
    (dict(energy=0.0), "energy"),
    (dict(rank=4, split="middle"), "split"),
    (dict(rank=4, min_gain=1.0), "min_gain"),
    (dict(rank=4, round_to=0), "round_to"),
]


@pytest.mark.parametrize("kw,phrase", ERRORS, ids=[str(k) for k, _ in ERRORS])
def test_errors_write_nothing(paths, tmp_path, kw, phrase):
    out = tmp_path / "o.txt"
    with pytest.raises(svdistill.RankError, match=phrase):
        svdistill.compress(paths["text"], output=out, **kw)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left either


def test_error_leaves_existing_output_untouched(paths, tmp_path):
    out = tmp_path / "o.txt"
    out.write_bytes(b"precious")
    with pytest.raises(svdistill.RankError):
        svdistill.compress(paths["text"], rank=1000, output=out)
    assert out.read_bytes() == b"precious"


def test_rank_error_is_an_error():
    assert issubclass(svdistill.RankError, svdistill.Error)


# ------------------------------------------------------------------ real fixtures

def test_kaldi_dnn_fixture_rank_32(fixtures_dir, tmp_path):
    src = fixtures_dir / "dnn.nnet.bin"
    m = svdistill.read(src)
    out = tmp_path / "dnn32.bin"
    res, rep = svdistill.compress(src, rank=32, output=out)
    assert res is None
    back = svdistill.read(out)
    assert back.binary
    assert [(c.kind, c.output_dim, c.input_dim) for c in back] == [
        ("LinearTransform", 32, 440), ("AffineTransform", 128, 32), ("Sigmoid", 128, 128),
        ("LinearTransform", 32, 128), ("AffineTransform", 128, 32), ("Sigmoid", 128, 128),
        ("LinearTransform", 32, 128), ("AffineTransform", 128, 32), ("Sigmoid", 128, 128),
        ("LinearTransform", 32, 128), ("AffineTransform", 500, 32), ("Softmax", 500, 500)]
    S = {i: np.linalg.svd(c.weight.astype(np.float64), compute_uv=False)
         for i, c in enumerate(m, 1) if c.kind == "AffineTransform"}
    check_factored(m, back, rep, S)
    # the output layer's bias learn-rate coefficient (0.1 from make_nnet_proto) survives
    assert back[10].coefs["<BiasLearnRateCoef>"] == pytest.approx(0.1)
    assert rep.params_before == 153972
    assert rep.params_after == params_of(back)


def test_tiny_mlp_fixture(fixtures_dir, tmp_path):
    src = fixtures_dir / "tiny_mlp.nnet.txt"
    m = svdistill.read(src)
    out = tmp_path / "t.txt"
    _, rep = svdistill.compress(src, rank=8, output=out)
    back = svdistill.read(out)
    assert not back.binary
    assert ranks_of(rep) == {1: 8, 3: 8, 5: 8}
    S = {i: np.linalg.svd(c.weight.astype(np.float64), compute_uv=False)
         for i, c in enumerate(m, 1) if c.kind == "AffineTransform"}
    check_factored(m, back, rep, S)
    assert back.input_dim == 40 and back.output_dim == 10


def test_mixed_fixture_only_affine_layers(fixtures_dir):
    """LinearTransform, ParametricRelu, Dropout, BlockSoftmax are left alone."""
    src = fixtures_dir / "mixed.nnet.txt"
    m = svdistill.read(src)
    out, rep = svdistill.compress(src, rank=6)
    assert sorted(ranks_of(rep)) == [2, 4, 7]
    S = {i: np.linalg.svd(c.weight.astype(np.float64), compute_uv=False)
         for i, c in enumerate(m, 1) if c.kind == "AffineTransform"}
    check_factored(m, out, rep, S)
    with pytest.raises(svdistill.RankError, match="LinearTransform"):
        svdistill.compress(src, rank=6, layers="1")


# ------------------------------------------------------------------ CLI

def test_cli_compress_report(paths, tmp_path, run_cli):
    out, rj = tmp_path / "o.txt", tmp_path / "r.json"
    p = run_cli("compress", "--rank-fraction", "0.25", paths["text"], out, "--report", rj)
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert "rank" in err and "model:" in err and "Traceback" not in err
    for i in AFFINE:  # one table row per layer
        o, n = SHAPES[i]
        assert f"{o}x{n}" in err
    assert p.stdout == b""
    d = json.loads(rj.read_text())
    layers = d["layers"]
    assert [L["index"] for L in layers] == AFFINE
    for L in layers:
        o, n = SHAPES[L["index"]]
        assert (L["out"], L["in"]) == (o, n)
        k = round(0.25 * min(o, n))
        assert L["rank"] == k
        assert L["params_before"] == o * n + o
        assert L["params_after"] == k * (o + n) + o
    back = svdistill.read(out)
    assert d["params_after"] == params_of(back)
    assert d["params_before"] == 16158
    assert d["ratio"] == pytest.approx(d["params_after"] / d["params_before"])


CLI_ERRORS = [
    ([], "no rank policy"),
    (["--rank", "4", "--energy", "0.9"], "conflicting"),
    (["--rank", "200"], "exceeds"),
    (["--ranks", "4,4"], "--ranks"),
    (["--rank", "4", "--layers", "2"], "Sigmoid"),
    (["--rank", "4", "--layers", "9"], "does not exist"),
    (["--param-budget", "0.01"], "param-budget"),
]


@pytest.mark.parametrize("args,phrase", CLI_ERRORS, ids=[" ".join(a) or "none" for a, _ in CLI_ERRORS])
def test_cli_compress_errors(paths, tmp_path, run_cli, clean_cli_error, args, phrase):
    out = tmp_path / "o.txt"
    p = run_cli("compress", *args, paths["text"], out)
    clean_cli_error(p, phrase)
    assert not out.exists()


def test_cli_compress_plot(paths, tmp_path, run_cli):
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "o.txt", tmp_path / "p.png"
    p = run_cli("compress", "--rank", "8", paths["text"], out, "--plot", png)
    assert p.returncode == 0, p.stderr.decode()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_compress_threads_and_seed(paths, tmp_path, run_cli):
    out = tmp_path / "o.bin"
    p = run_cli("compress", "--rank", "16", "--threads", "1", "--seed", "3", "--binary=true", paths["text"], out)
    assert p.returncode == 0, p.stderr.decode()
    assert out.read_bytes().startswith(b"\0B")


def test_cli_matches_api_with_modifiers(model, paths, tmp_path, run_cli):
    out = tmp_path / "o.txt"
    p = run_cli("compress", "--rank", "6", "--split", "left", "--round-to", "4", "--min-gain", "0.1",
                "--layers", "1,3,5", "--skip-output-layer", "--method", "randomized", "--seed", "9",
                "--threads", "1", paths["text"], out)
    assert p.returncode == 0, p.stderr.decode()
    from svdistill import linalg
    n = linalg.get_num_threads()
    linalg.set_num_threads(1)
    try:
        api, rep = svdistill.compress(model, rank=6, split="left", round_to=4, min_gain=0.1, layers="1,3,5",
                                      skip_output_layer=True, method="randomized", seed=9)
    finally:
        linalg.set_num_threads(n)
    assert ranks_of(rep) == {1: 8, 3: 8}
    back = svdistill.read(out)
    assert len(back) == len(api)
    for x, y in zip(back, api):
        assert_same_component(x, y)


def test_cli_stdin_to_stdout(paths, run_cli):
    p = run_cli("compress", "--param-budget", "0.5", "--binary=false", "-", "-", input=paths["bin"].read_bytes())
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.startswith(b"<Nnet>")
    assert b"model:" in p.stderr


def test_compress_independent_of_thread_count(fixtures_dir):
    from svdistill import linalg
    n = linalg.get_num_threads()
    res = []
    try:
        for t in (1, 2):
            linalg.set_num_threads(t)
            res.append(svdistill.compress(fixtures_dir / "dnn.nnet.bin", rank=32, method="randomized",
                                          seed=4)[0])
    finally:
        linalg.set_num_threads(n)
    # Bits may differ with the thread count (BLAS summation order); the models agree to rounding.
    for x, y in zip(*res):
        assert x.kind == y.kind and x.input_dim == y.input_dim and x.output_dim == y.output_dim
    prod = []
    for m in res:
        ws = [c.weight.astype(np.float64) for c in m if c.weight is not None]
        prod.append([ws[i + 1] @ ws[i] for i in range(0, len(ws) - 1, 2)])
    for p, q in zip(*prod):
        assert np.linalg.norm(p - q) <= 1e-3 * np.linalg.norm(p)


def test_cli_compress_check_runs_compare(tmp_path, fixtures_dir):
    import subprocess
    out = tmp_path / "dnn32.bin"
    report = tmp_path / "r.json"
    p = subprocess.run([sys.executable, "-m", "svdistill", "compress", "--rank", "32",
                        str(fixtures_dir / "dnn.nnet.bin"), str(out),
                        "--check", f"ark:{fixtures_dir / 'feats.ark'}",
                        "--feature-transform", str(fixtures_dir / "final.feature_transform"),
                        "--report", str(report)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "top-1 agreement" in p.stderr and "KL(teacher || student)" in p.stderr
    check = json.loads(report.read_text())["check"]
    direct = svdistill.compare(fixtures_dir / "dnn.nnet.bin", out, f"ark:{fixtures_dir / 'feats.ark'}",
                               feature_transform=fixtures_dir / "final.feature_transform")
    assert check["frames"] == 150 and check["kl"] == pytest.approx(direct["kl"], rel=1e-6)
    bad = subprocess.run([sys.executable, "-m", "svdistill", "compress", "--rank", "32", "-",
                          str(out), "--check", "ark:x.ark"], capture_output=True, text=True, input="")
    assert bad.returncode == 2 and bad.stderr.startswith("svdistill: error:")


# -- compress as one core operation ------------------------------------------------------

def _count_core_calls(monkeypatch, fn):
    """Runs fn() and returns the calls into svdistill._core it made: module functions,
    methods of the core's objects, and constructors of its classes (counted by a Python
    __init__ that forwards to the core's). Attribute reads and writes are not counted."""
    from svdistill import _core
    classes = tuple(v for v in vars(_core).values() if isinstance(v, type) and v.__module__ == _core.__name__
                    and not issubclass(v, BaseException))
    calls = []
    for cls in classes:
        def counting_init(self, *a, __init=cls.__init__, __name=cls.__name__, **k):
            calls.append(__name)
            __init(self, *a, **k)

        monkeypatch.setattr(cls, "__init__", counting_init)

    def profile(frame, event, arg):
        if event == "c_call" and (getattr(arg, "__module__", None) == _core.__name__
                                  or isinstance(getattr(arg, "__self__", None), classes)):
            calls.append(arg.__name__)

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize("to_file", [True, False])
def test_fixture_dnn_at_rank_32_needs_at_most_30_calls_into_the_core(fx, tmp_path, monkeypatch, to_file):
    src = fx / "dnn.nnet.txt"
    out = tmp_path / "o.nnet"
    calls = _count_core_calls(monkeypatch, lambda: svdistill.compress(src, rank=32, output=out if to_file else None))
    assert "compress_layer" in calls or "compress_stream" in calls, calls  # the counter sees the core
    assert "RankPolicy" in calls, calls  # and its constructors
    assert len(calls) <= 30, sorted(calls)


@pytest.mark.filterwarnings("ignore::svdistill.io.ConversionWarning")  # PDNN output of non-default coefficients
def test_the_streaming_compressor_writes_what_the_python_loop_writes(paths, tmp_path):
    # A path in and a path out run in the core in one pass; a Model in runs layer by layer.
    for name, kw in (("text", dict(rank=12)), ("bin", dict(energy=0.8, round_to=4)),
                     ("pdnn", dict(rank_fraction=0.3, split="left")), ("text", dict(nuclear=0.7, dialect="pdnn")),
                     ("bin", dict(ranks=[8, 90, 4], min_gain=0.2, spectra=True))):
        streamed = tmp_path / f"s-{name}"
        _, rep_s = svdistill.compress(paths[name], output=streamed, **kw)
        m, rep_m = svdistill.compress(svdistill.read(paths[name]), **kw)
        looped = tmp_path / f"m-{name}"
        svdistill.write(m, looped, binary=kw.get("dialect") != "pdnn" and name == "bin",
                        dialect=kw.get("dialect", "kaldi" if name != "pdnn" else "pdnn"))
        assert streamed.read_bytes() == looped.read_bytes(), (name, kw)
        strip = [dict(vars(L), seconds=0) for L in rep_s.layers], [dict(vars(L), seconds=0) for L in rep_m.layers]
        assert strip[0] == strip[1], (name, kw)
        assert (rep_s.params_before, rep_s.params_after, rep_s.spectra) == \
            (rep_m.params_before, rep_m.params_after, rep_m.spectra)


def test_a_failing_stream_leaves_no_output(paths, tmp_path):
    out = tmp_path / "o.nnet"
    out.write_bytes(b"old")
    bad = tmp_path / "bad.nnet.txt"
    text = paths["text"].read_text()
    bad.write_text(text[: len(text) * 2 // 3])  # cut inside the last affine layer
    with pytest.raises(svdistill.FormatError):
        svdistill.compress(bad, rank=4, output=out)
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("o.nnet")] == ["o.nnet"]


def test_core_option_structs_are_bound_with_reprs():
    from svdistill import _core
    p = _core.RankPolicy()
    p.rule, p.value, p.round_to = _core.RankRule.energy, 0.9, 8
    assert repr(p) == "RankPolicy(rule=energy, rank=0, value=0.90000000000000002, min_gain=0, round_to=8, " \
                      "always=False)"
    o = _core.SvdOptions()
    assert (o.method, o.oversamples, o.n_iter) == (_core.SvdMethod.auto, -1, -1)
    f = _core.FactorOptions()
    f.dialect = "pdnn"
    assert "dialect=pdnn" in repr(f)
    with pytest.raises(svdistill.Error, match="dialect"):
        f.dialect = "htk"
    assert _core.default_oversamples(512) == 128 and _core.default_oversamples(8) == 32
