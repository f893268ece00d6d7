"""Faults of compress/spectrum found trying them as a new user would (issue 19, items 6,
7, 12, 14, 15): budgets in the output's dialect, the smallest --energy/--nuclear rank,
layer specs, option values.

Expected values come from numpy's float64 SVD and from reading the written model back.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import svdistill
from svdistill import Component, Model, linalg
from svdistill.compress import factor_layer, factored_params


def mlp(dims, seed=0, act="Sigmoid", decay=True) -> Model:
    """Affine layers with a decaying (or flat) spectrum, each followed by ``act``."""
    rng = np.random.default_rng(seed)
    comps = []
    for j, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        W = rng.standard_normal((b, a))
        if decay:
            U, _, Vt = np.linalg.svd(W, full_matrices=False)
            W = (U * np.exp(-np.arange(min(a, b)) / 12.0)) @ Vt
        comps.append(Component.affine(W.astype(np.float32), rng.standard_normal(b).astype(np.float32)))
        comps.append(Component.activation(act if j < len(dims) - 2 else "Softmax", b))
    return Model(comps)


def written_params(path) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return svdistill.read(path).num_params


def np_energy_k(W, e):
    s = np.linalg.svd(W.astype(np.float64), compute_uv=False)
    c = np.cumsum(s ** 2) / np.sum(W.astype(np.float64) ** 2)
    return int(np.searchsorted(c, e * (1 - 1e-12))) + 1


def np_nuclear_k(W, e):
    s = np.linalg.svd(W.astype(np.float64), compute_uv=False)
    c = np.cumsum(s) / np.sum(s)
    return int(np.searchsorted(c, e * (1 - 1e-12))) + 1


def one_layer(W) -> Model:
    return Model([Component.affine(np.asarray(W, np.float32), np.zeros(W.shape[0], np.float32))])


# ------------------------------------------------ item 6: budget as written

@pytest.fixture(scope="module")
def small_pdnn(tmp_path_factory) -> Path:
    """A small PDNN model: the issue's case (0.3 -> 2,241 written vs a limit of 2,230)."""
    p = tmp_path_factory.mktemp("pdnn") / "small.pdnn"
    svdistill.write(mlp([20, 48, 48, 24], seed=3), p, binary=False, dialect="pdnn")
    return p


@pytest.mark.parametrize("fraction", [0.2, 0.3, 0.45, 0.6, 0.8])
@pytest.mark.parametrize("out_form", ["pdnn", "kaldi-text", "kaldi-bin"])
def test_param_budget_holds_as_written_from_pdnn(small_pdnn, tmp_path, fraction, out_form):
    kw = {"pdnn": {}, "kaldi-text": dict(dialect="kaldi"), "kaldi-bin": dict(binary=True)}[out_form]
    out = tmp_path / "o.nnet"
    _, rep = svdistill.compress(small_pdnn, param_budget=fraction, output=out, **kw)
    n_in = svdistill.read(small_pdnn).num_params
    got = written_params(out)
    assert got <= fraction * n_in, (got, fraction * n_in, [L.rank for L in rep.layers])
    assert rep.params_after == got and rep.params_before == n_in


@pytest.mark.parametrize("fraction", [0.25, 0.4, 0.7])
@pytest.mark.parametrize("out_form", ["text", "bin", "pdnn"])
def test_param_budget_holds_as_written_from_kaldi(tmp_path, fraction, out_form):
    src = tmp_path / "m.nnet"
    svdistill.write(mlp([24, 64, 64, 40], seed=1), src, binary=True)
    kw = {"text": dict(binary=False), "bin": {}, "pdnn": dict(binary=False, dialect="pdnn")}[out_form]
    out = tmp_path / "o.nnet"
    _, rep = svdistill.compress(src, param_budget=fraction, output=out, **kw)
    got = written_params(out)
    assert got <= fraction * svdistill.read(src).num_params
    assert rep.params_after == got


@pytest.mark.parametrize("kw", [dict(round_to=8), dict(skip_output_layer=True), dict(min_gain=0.3),
                                dict(round_to=4, skip_output_layer=True, layers="1-4")])
def test_param_budget_with_modifiers_pdnn(small_pdnn, tmp_path, kw):
    out = tmp_path / "o.pdnn"
    try:
        _, rep = svdistill.compress(small_pdnn, param_budget=0.5, output=out, **kw)
    except svdistill.RankError as e:  # refusing is also correct, in the output's terms
        assert "pdnn dialect" in str(e)
        return
    assert written_params(out) <= 0.5 * svdistill.read(small_pdnn).num_params
    if kw.get("round_to"):
        assert all(L.rank is None or L.rank % kw["round_to"] == 0 for L in rep.layers)


def test_param_budget_relu_pdnn_to_kaldi_counts_parametric_relu(tmp_path):
    """PDNN's <relu> is written as Kaldi's <ParametricRelu> (2 x dim parameters)."""
    src = tmp_path / "relu.pdnn"
    svdistill.write(mlp([16, 64, 64, 10], seed=2, act="Relu"), src, binary=False, dialect="pdnn")
    out = tmp_path / "o.bin"
    _, rep = svdistill.compress(src, param_budget=0.5, output=out, binary=True)
    got = written_params(out)
    assert got <= 0.5 * svdistill.read(src).num_params
    assert rep.params_after == got


def test_impossible_budget_quotes_the_written_count(small_pdnn, tmp_path):
    m = svdistill.read(small_pdnn)
    # rank 1 everywhere in PDNN: k(out+in+1) + out per layer; the rest has no parameters
    need = sum(factored_params(1, c.output_dim, c.input_dim, "pdnn") for c in m if c.kind == "AffineTransform")
    with pytest.raises(svdistill.RankError, match=f"needs {need:,} as written in the pdnn dialect"):
        svdistill.compress(small_pdnn, param_budget=0.01, output=tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("dialect", ["kaldi", "pdnn"])
@pytest.mark.parametrize("k,out,inp", [(1, 5, 7), (3, 8, 8), (6, 30, 12)])
def test_factored_params_counts_what_factor_layer_makes(dialect, k, out, inp):
    W = np.random.default_rng(0).standard_normal((out, inp)).astype(np.float32)
    parts = factor_layer(Component.affine(W, np.ones(out, np.float32)), k, dialect=dialect)
    assert sum(c.num_params or 0 for c in parts) == factored_params(k, out, inp, dialect)


def test_spectrum_break_even_follows_the_dialect(small_pdnn):
    d = svdistill.spectrum(small_pdnn)
    assert d["dialect"] == "pdnn"
    for L in d["layers"]:
        o, i, be = L["out"], L["in"], L["break_even_rank"]
        assert be * (o + i + 1) < o * i <= (be + 1) * (o + i + 1)
    # compress keeps a PDNN layer whole exactly above that rank
    L = d["layers"][1]
    _, rep = svdistill.compress(small_pdnn, rank=L["break_even_rank"] + 1, layers=str(L["index"]))
    assert rep.layers[0].rank is None
    _, rep = svdistill.compress(small_pdnn, rank=L["break_even_rank"], layers=str(L["index"]))
    assert rep.layers[0].rank == L["break_even_rank"]


# ------------------------------------------------ item 7: the smallest k

def _matrices():
    rng = np.random.default_rng(7)
    flat = rng.standard_normal((600, 500))  # flat spectrum: a sketch underestimates most
    U, _, Vt = np.linalg.svd(rng.standard_normal((200, 200)))
    geometric = (U * 0.97 ** np.arange(200)) @ Vt
    lowrank = rng.standard_normal((180, 12)) @ rng.standard_normal((12, 150)) + 0.01 * rng.standard_normal((180, 150))
    plateau = (U * np.repeat([4.0, 2.0, 1.0, 0.5], 50)) @ Vt  # repeated singular values
    return {"flat": flat, "geometric": geometric, "lowrank+noise": lowrank, "plateau": plateau}


MATS = _matrices()


@pytest.mark.parametrize("name", list(MATS))
@pytest.mark.parametrize("e", [0.3, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("method", ["auto", "randomized", "exact"])
def test_energy_rank_is_the_smallest(name, e, method):
    """exact: the smallest k; the adaptive sketch: never below it, at most 5% above
    (the README's bound, measured), and always at least E kept."""
    W = MATS[name].astype(np.float32)
    k = np_energy_k(W, e)
    _, rep = svdistill.compress(one_layer(W), energy=e, method=method, min_gain=0.0)
    L = rep.layers[0]
    o, i = W.shape
    if method == "exact":
        assert L.rank == (k if k * (o + i) < o * i else None), (name, e, L.rank, k)
    elif L.rank is not None:
        assert k <= L.rank <= max(k + 1, int(np.ceil(1.05 * k))), (name, e, L.rank, k)
    else:
        assert k * (o + i) >= o * i or np.ceil(1.05 * k) * (o + i) >= o * i
    if L.rank is not None:
        assert L.retained_energy >= e - 1e-6


@pytest.mark.parametrize("name", list(MATS))
@pytest.mark.parametrize("e", [0.3, 0.6, 0.9])
def test_nuclear_rank_is_the_smallest(name, e):
    W = MATS[name].astype(np.float32)
    k = np_nuclear_k(W, e)
    _, rep = svdistill.compress(one_layer(W), nuclear=e, method="randomized")
    o, i = W.shape
    assert rep.layers[0].rank == (k if k * (o + i) < o * i else None), (name, e, rep.layers[0].rank, k)


def test_energy_matches_spectrum_table():
    W = MATS["flat"].astype(np.float32)
    d = svdistill.spectrum(one_layer(W), fractions=[0.2, 0.4])
    for f in (0.2, 0.4):
        _, rep = svdistill.compress(one_layer(W), energy=f, method="exact")
        assert rep.layers[0].rank == d["layers"][0]["energy_ranks"][str(f)]
        _, rep = svdistill.compress(one_layer(W), energy=f, method="randomized")
        assert rep.layers[0].rank >= d["layers"][0]["energy_ranks"][str(f)]


@pytest.mark.parametrize("e", [0.999999, 1.0])
def test_energy_near_one(e):
    rng = np.random.default_rng(1)
    W = np.zeros((60, 50), np.float32)
    W[:20, :20] = rng.standard_normal((20, 20))  # rank 20, exactly
    _, rep = svdistill.compress(one_layer(W), energy=e)
    assert rep.layers[0].rank == np_energy_k(W, e) <= 20
    full = rng.standard_normal((60, 50)).astype(np.float32)
    _, rep = svdistill.compress(one_layer(full), energy=e)
    assert rep.layers[0].rank is None  # the full rank saves nothing


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (2, 3), (3, 3)])
@pytest.mark.parametrize("policy", [dict(energy=0.5), dict(nuclear=0.5), dict(energy=1.0), dict(rank=1)])
def test_tiny_matrices(shape, policy):
    W = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out, rep = svdistill.compress(one_layer(W), **policy)
    (name, value), = policy.items()
    k = {"energy": np_energy_k, "nuclear": np_nuclear_k, "rank": lambda W, v: v}[name](W, value)
    o, i = shape
    assert rep.layers[0].rank == (k if k * (o + i) < o * i else None)
    assert out.num_params == rep.params_after


# ------------------------------------------------ items 12 and 15: layer specs

@pytest.fixture(scope="module")
def small_nnet() -> Path:
    return Path(__file__).resolve().parents[1] / "examples" / "small.nnet"


@pytest.mark.parametrize("layers,want", [([1, 3], [1, 3]), ((5,), [5]), (3, [3]), (np.array([5, 1]), [1, 5]),
                                         ("1,3-6", [1, 3, 5]), ("2-6", [3, 5]), ("1-6", [1, 3, 5]),
                                         ("3,3", [3]), ("1, 3-4", [1, 3])])
def test_layers_forms_small_nnet(small_nnet, layers, want):
    _, rep = svdistill.compress(small_nnet, rank=4, layers=layers)
    assert [L.index for L in rep.layers] == want
    d = svdistill.spectrum(small_nnet, layers=layers)
    assert [L["index"] for L in d["layers"]] == want


def test_readme_layers_example_on_fixture_dnn(fixtures_dir, tmp_path, run_cli):
    p = run_cli("compress", "--rank", "8", "--layers", "1,3-6", fixtures_dir / "dnn.nnet.txt", tmp_path / "o",
                "--report", tmp_path / "r.json")
    assert p.returncode == 0, p.stderr.decode()
    import json
    assert [L["index"] for L in json.loads((tmp_path / "r.json").read_text())["layers"]] == [1, 3, 5]


@pytest.mark.parametrize("layers,phrase", [
    ("2", "component 2, a <Sigmoid>"), ([1, 2], "component 2, a <Sigmoid>"), ("2,3", "<Sigmoid>"),
    ("2-2", "contains no <AffineTransform>"), ("6-6", "contains no"), ("0", "1-based"), ("-1", "1-based"),
    ([0], "1-based"), ("3-", "needs both ends"), ("5-3", "backwards"), ("9", "does not exist"),
    ("1-9", "does not exist"), ([7], "does not exist"), ("x", "cannot read"), ("", "selects no component"),
    ([], "selects no component"), (1.5, "list of 1-based"), ([1.0], "list of 1-based"), (True, "list of 1-based"),
    ({"a": 1}, "list of 1-based"), ([1, "3"], "list of 1-based"),
])
def test_bad_layers_name_the_keyword(small_nnet, tmp_path, layers, phrase):
    for call in (lambda: svdistill.compress(small_nnet, rank=4, layers=layers, output=tmp_path / "o"),
                 lambda: svdistill.spectrum(small_nnet, layers=layers)):
        with pytest.raises(svdistill.RankError, match="^layers ") as ei:
            call()
        assert phrase in str(ei.value)
        assert ei.value.option == "layers"
    assert not (tmp_path / "o").exists()


# ------------------------------------------------ item 14: option values

BAD_COMPRESS = [
    (dict(rank=4, n_iter=-1, method="randomized"), "n_iter"),
    (dict(rank=4, oversamples=-5), "oversamples"),
    (dict(rank=4, n_iter=1.5), "n_iter"),
    (dict(rank=4, seed=-3), "seed"),
    (dict(rank=4, seed="a"), "seed"),
    (dict(rank=4.0), "rank"), (dict(rank="4"), "rank"), (dict(rank=True), "rank"), (dict(rank=-2), "rank"),
    (dict(ranks=[4, 0, 4]), "ranks"), (dict(ranks=[4, 2.5, 4]), "ranks"), (dict(ranks="4,4,4"), "ranks"),
    (dict(ranks=[]), "ranks"), (dict(ranks=5), "ranks"),
    (dict(rank_fraction=0), "rank_fraction"), (dict(rank_fraction=1.2), "rank_fraction"),
    (dict(energy="0.9"), "energy"), (dict(energy=float("nan")), "energy"), (dict(nuclear=-0.1), "nuclear"),
    (dict(param_budget=1.5), "param_budget"), (dict(param_budget=float("inf")), "param_budget"),
    (dict(rank=4, min_gain=-0.1), "min_gain"), (dict(rank=4, min_gain="0.2"), "min_gain"),
    (dict(rank=4, round_to=2.5), "round_to"), (dict(rank=4, round_to=0), "round_to"),
    (dict(rank=4, split="middle"), "split"), (dict(rank=4, dialect="PDNN"), "dialect"),
    (dict(rank=4, method="lanczos"), "method"),
    (dict(rank=50), "rank"), (dict(ranks=[60, 4, 4]), "ranks"),
]


@pytest.mark.parametrize("kw,option", BAD_COMPRESS, ids=[str(k) for k, _ in BAD_COMPRESS])
def test_compress_option_errors_name_the_keyword(small_nnet, tmp_path, kw, option):
    with pytest.raises(svdistill.Error) as ei:
        svdistill.compress(small_nnet, output=tmp_path / "o", **kw)
    assert getattr(ei.value, "option", None) == option, str(ei.value)
    assert str(ei.value).startswith(option + " ")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fractions", [[1.5, 0.5], [0, 0.5], [0.5, -1], [], "0.9", 0.9, [0.5, "x"], [True]])
def test_spectrum_fractions_checked(small_nnet, fractions):
    with pytest.raises(svdistill.Error, match="^fractions "):
        svdistill.spectrum(small_nnet, fractions=fractions)


@pytest.mark.parametrize("n", [-2, -1, 1.5, "2", 10 ** 6, True])
def test_set_num_threads_checked(n):
    before = linalg.get_num_threads()
    with pytest.raises(svdistill.Error, match="^threads "):
        linalg.set_num_threads(n)
    assert linalg.get_num_threads() == before


@pytest.mark.parametrize("kw,option", [(dict(rank=2.7), "rank"), (dict(rank="3"), "rank"),
                                       (dict(rank=3, n_iter=-1), "n_iter"),
                                       (dict(rank=3, oversamples=-30), "oversamples"),
                                       (dict(rank=3, seed=-1), "seed"),
                                       (dict(rank=3, seed=object()), "seed"),
                                       (dict(rank=3, method="x"), "method")])
def test_truncated_svd_arguments_checked(kw, option):
    A = np.random.default_rng(0).standard_normal((100, 80)).astype(np.float32)
    kw = dict(kw)
    with pytest.raises(svdistill.Error) as ei:
        linalg.truncated_svd(A, kw.pop("rank"), method=kw.pop("method", "randomized"), **kw)
    assert ei.value.option == option


@pytest.mark.parametrize("args,flag", [
    (["--rank", "4", "--threads", "-2"], "--threads must"),
    (["--rank", "4", "--n-iter", "-1"], "--n-iter must"),
    (["--rank", "4", "--oversamples", "-5"], "--oversamples must"),
    (["--rank", "4", "--seed", "-1"], "--seed must"),
    (["--rank", "4", "--layers", "2"], "--layers names component 2"),
    (["--rank", "4", "--layers", "0"], "--layers takes 1-based"),
    (["--ranks", "4,0,4"], "--ranks must"),
    (["--rank", "99"], "--rank 99 exceeds"),
    (["--energy", "0"], "--energy must"),
    (["--param-budget", "0.01"], "--param-budget 0.01 allows"),
])
def test_cli_speaks_in_flags(small_nnet, tmp_path, run_cli, clean_cli_error, args, flag):
    clean_cli_error(run_cli("compress", *args, small_nnet, tmp_path / "o"), flag)
    assert list(tmp_path.iterdir()) == []


def test_cli_spectrum_threads_and_layers(small_nnet, run_cli, clean_cli_error):
    clean_cli_error(run_cli("spectrum", "--threads", "-1", small_nnet), "--threads must")
    clean_cli_error(run_cli("spectrum", "--layers", "4", small_nnet), "--layers names component 4")
    p = run_cli("spectrum", "--layers", "2-6", "--json", small_nnet)
    assert p.returncode == 0, p.stderr.decode()


# ---------------------------------------------------------------- second new-user trial


@pytest.mark.parametrize("args, flags", [
    (["--rank", "4", "--energy", "0.9"], "--rank and --energy are conflicting rank policies"),
    (["--rank", "4", "--nuclear", "0.5", "--param-budget", "0.5"],
     "--rank and --nuclear and --param-budget are conflicting rank policies"),
])
def test_conflicting_policies_are_said_in_the_callers_words(small_nnet, tmp_path, run_cli, clean_cli_error,
                                                            args, flags):
    line = clean_cli_error(run_cli("compress", *args, small_nnet, tmp_path / "o"), flags)
    assert "param_budget" not in line and "(--" not in line
    with pytest.raises(svdistill.RankError) as info:
        svdistill.compress(small_nnet, rank=4, energy=0.9)
    assert str(info.value) == "rank and energy are conflicting rank policies: give exactly one"


@pytest.mark.parametrize("kw, phrase", [
    (dict(layers="5", skip_output_layer=True), "skip_output_layer leaves no layer to compress: layers 5 selects "
                                               "only the output layer (component 5; affine layers: 1, 3, 5)"),
    (dict(layers=[5], skip_output_layer=True), "layers [5] selects only the output layer"),
])
def test_a_selection_that_leaves_no_layer_is_an_error(fixtures_dir, tmp_path, kw, phrase):
    """Nothing to factor: writing the model unchanged would pass for a compression."""
    with pytest.raises(svdistill.RankError) as info:
        svdistill.compress(fixtures_dir / "tiny_mlp.nnet.txt", rank=4, output=tmp_path / "o", **kw)
    assert phrase in str(info.value) and info.value.option == "skip_output_layer"
    assert list(tmp_path.iterdir()) == []


def test_a_selection_that_leaves_no_layer_cli(fixtures_dir, tmp_path, run_cli, clean_cli_error):
    clean_cli_error(run_cli("compress", "--rank", "4", "--skip-output-layer", "--layers", "5",
                            fixtures_dir / "tiny_mlp.nnet.txt", tmp_path / "o"),
                    "--skip-output-layer leaves no layer to compress: --layers 5 selects only the output layer")
    assert list(tmp_path.iterdir()) == []


def test_one_layer_model_with_skip_output_layer_and_no_affine_model(tmp_path):
    W = np.ones((3, 4), np.float32)
    with pytest.raises(svdistill.RankError, match=r"only <AffineTransform> \(component 1\) is its output layer"):
        svdistill.compress(one_layer(W), rank=1, skip_output_layer=True)
    with pytest.raises(svdistill.RankError, match="the model has no <AffineTransform>"):
        svdistill.compress(Model([Component.activation("Sigmoid", 4)]), rank=1)


def test_feature_transform_without_check_is_refused(fixtures_dir, tmp_path, run_cli, clean_cli_error):
    clean_cli_error(run_cli("compress", "--rank", "4", "--feature-transform", fixtures_dir / "final.feature_transform",
                            fixtures_dir / "tiny_mlp.nnet.txt", tmp_path / "o"),
                    "--feature-transform is the feature transform of --calibration and --check, and neither "
                    "was given")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_check_says_the_model_was_written(fixtures_dir, tmp_path, run_cli, clean_cli_error):
    """The check runs after MODEL_OUT was written: the error says so (and the help documents it)."""
    out = tmp_path / "cc.bin"
    p = run_cli("compress", "--rank", "4", "--report", tmp_path / "r.json", "--check",
                f"ark:cat {fixtures_dir / 'feats.ark'}; false |", fixtures_dir / "tiny_mlp.nnet.bin", out)
    line = p.stderr.decode().splitlines()[-1]  # after the per-layer table
    assert p.returncode == 2 and "Traceback" not in p.stderr.decode(), p.stderr.decode()
    assert line.startswith(f"svdistill: error: MODEL_OUT {out} was written (--report not); the check failed: "), line
    assert "failed (exit status 1)" in line
    assert svdistill.read(out).num_params < svdistill.read(fixtures_dir / "tiny_mlp.nnet.bin").num_params
    assert not (tmp_path / "r.json").exists()
    helptext = run_cli("compress", "--help").stdout.decode()
    assert "was written; the check failed" in " ".join(helptext.split())


def test_a_bad_check_rspecifier_is_refused_before_compressing(fixtures_dir, tmp_path, run_cli, clean_cli_error):
    clean_cli_error(run_cli("compress", "--rank", "4", "--check", "feats.ark", fixtures_dir / "tiny_mlp.nnet.bin",
                            tmp_path / "o"), "--check 'feats.ark' is not")
    assert list(tmp_path.iterdir()) == []


def test_energy_help_says_what_the_randomized_method_gives(run_cli):
    text = " ".join(run_cli("compress", "--help").stdout.decode().split())
    i = text.index("--energy E ")
    energy = text[i:text.index("--nuclear", i)]
    assert "--method exact the smallest such rank" in energy and "never below the smallest" in energy, energy


@pytest.mark.parametrize("kw, flag", [(dict(n_iter=3), "--n-iter 3"), (dict(oversamples=8), "--oversamples 8")])
def test_randomized_settings_with_the_exact_method_are_refused(small_nnet, tmp_path, run_cli, clean_cli_error,
                                                               kw, flag):
    (name, value), = kw.items()
    with pytest.raises(svdistill.Error, match=f"{name} {value} applies to the randomized SVD, and method is exact"):
        svdistill.compress(small_nnet, rank=4, method="exact", **kw)
    clean_cli_error(run_cli("compress", "--rank", "4", "--method", "exact", *flag.split(), small_nnet, tmp_path / "o"),
                    f"{flag} applies to the randomized SVD, and --method is exact")
    svdistill.compress(small_nnet, rank=4, method="randomized", **kw)  # where they apply
