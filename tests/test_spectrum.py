"""svdistill.spectrum and `svdistill spectrum`: per-layer singular values and the ranks
they imply, checked against numpy's float64 SVD."""
from __future__ import annotations

import json

import numpy as np
import pytest

import svdistill
from svdistill import Component, Model

FRACTIONS = (0.5, 0.8, 0.9, 0.95, 0.99)


@pytest.fixture(scope="module")
def model(lowrank):
    random_lowrank_matrix = lowrank
    rng = np.random.default_rng(1)
    comps = []
    dims = [40, 96, 64, 30]
    for j, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        W, _ = random_lowrank_matrix(b, a, rng, kind="exp" if j == 1 else "power")
        comps.append(Component.affine(W, np.zeros(b, np.float32)))
        comps.append(Component.activation("Sigmoid" if j < 2 else "Softmax", b))
    return Model(comps)


@pytest.fixture(scope="module")
def model_path(model, tmp_path_factory):
    p = tmp_path_factory.mktemp("spec") / "m.nnet"
    svdistill.write(model, p, binary=True)
    return p


def ref_energy_rank(s, f):
    c = np.cumsum(s ** 2) / np.sum(s ** 2)
    return int(np.searchsorted(c, f * (1 - 1e-12))) + 1


def ref_nuclear_rank(s, f):
    c = np.cumsum(s) / np.sum(s)
    return int(np.searchsorted(c, f * (1 - 1e-12))) + 1


def check_layers(d, m: Model, indices):
    assert [L["index"] for L in d["layers"]] == indices
    assert [float(f) for f in d["fractions"]] == list(FRACTIONS)
    for L in d["layers"]:
        W = m[L["index"] - 1].weight.astype(np.float64)
        o, i = W.shape
        assert (L["out"], L["in"]) == (o, i)
        assert L["marker"].lower() == "<affinetransform>"
        s_ref = np.linalg.svd(W, compute_uv=False)
        s = np.asarray(L["singular_values"])
        assert s.shape == s_ref.shape
        assert np.max(np.abs(s - s_ref)) <= 1e-6 * s_ref[0]
        for f in FRACTIONS:
            assert L["energy_ranks"][str(f)] == ref_energy_rank(s_ref, f), (L["index"], f)
            assert L["nuclear_ranks"][str(f)] == ref_nuclear_rank(s_ref, f), (L["index"], f)
        # largest k with k(out+in) < out*in
        be = max(k for k in range(0, min(o, i) + 1) if k * (o + i) < o * i)
        assert L["break_even_rank"] == be


def test_spectrum_in_memory(model):
    d = svdistill.spectrum(model)
    check_layers(d, model, [1, 3, 5])


def test_spectrum_from_path_streams_the_same(model, model_path):
    a = svdistill.spectrum(model_path)
    b = svdistill.spectrum(model)
    check_layers(a, model, [1, 3, 5])
    assert a["layers"] == b["layers"]


def test_spectrum_layers_spec(model):
    d = svdistill.spectrum(model, layers="3,5")
    check_layers(d, model, [3, 5])
    with pytest.raises(svdistill.RankError):
        svdistill.spectrum(model, layers="2")


def test_spectrum_custom_fractions(model):
    d = svdistill.spectrum(model, fractions=[0.25, 1.0])
    for L in d["layers"]:
        s = np.asarray(L["singular_values"])
        assert L["energy_ranks"]["0.25"] == ref_energy_rank(s, 0.25)
        assert L["energy_ranks"]["1.0"] == len(s)


def test_spectrum_kaldi_fixture(fixtures_dir):
    m = svdistill.read(fixtures_dir / "dnn.nnet.txt")
    d = svdistill.spectrum(fixtures_dir / "dnn.nnet.bin")
    check_layers(d, m, [1, 3, 5, 7])


def test_spectrum_model_without_affine_layers(fixtures_dir):
    d = svdistill.spectrum(fixtures_dir / "final.feature_transform")
    assert d["layers"] == []


def test_spectrum_agrees_with_compress_energy(model):
    d = svdistill.spectrum(model)
    _, rep = svdistill.compress(model, energy=0.9, method="exact")
    want = {L["index"]: L["energy_ranks"]["0.9"] for L in d["layers"]}
    got = {L.index: L.rank for L in rep.layers}
    for i, k in want.items():
        be = [L for L in d["layers"] if L["index"] == i][0]["break_even_rank"]
        assert got[i] == (k if k <= be else None)


# ------------------------------------------------------------------ CLI

def test_cli_spectrum_json(model, model_path, run_cli):
    p = run_cli("spectrum", model_path, "--json")
    assert p.returncode == 0, p.stderr.decode()
    d = json.loads(p.stdout)
    check_layers(d, model, [1, 3, 5])


def test_cli_spectrum_table(model, model_path, run_cli):
    p = run_cli("spectrum", model_path)
    assert p.returncode == 0, p.stderr.decode()
    out = p.stdout.decode()
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["1", "3", "5"]
    for r in rows:
        W = model[int(r[0]) - 1].weight.astype(np.float64)
        s = np.linalg.svd(W, compute_uv=False)
        assert r[1] == f"{W.shape[0]}x{W.shape[1]}"
        assert [int(x) for x in r[2:7]] == [ref_energy_rank(s, f) for f in FRACTIONS]


def test_cli_spectrum_layers(model, model_path, run_cli, clean_cli_error):
    p = run_cli("spectrum", "--layers", "5", model_path, "--json")
    assert p.returncode == 0
    assert [L["index"] for L in json.loads(p.stdout)["layers"]] == [5]
    clean_cli_error(run_cli("spectrum", "--layers", "4", model_path), "Sigmoid")
    clean_cli_error(run_cli("spectrum", model_path.parent / "missing.nnet"))


def test_cli_spectrum_plot(model_path, tmp_path, run_cli):
    pytest.importorskip("matplotlib")
    png = tmp_path / "s.png"
    p = run_cli("spectrum", model_path, "--plot", png)
    assert p.returncode == 0, p.stderr.decode()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
