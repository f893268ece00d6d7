"""svdistill.torch: nnet1 models as PyTorch modules, and parameters written back.

The module's outputs are compared with ``svdistill.forward`` (the C++ core, itself
checked against Kaldi's ``nnet-forward`` in test_forward.py) and directly with
Kaldi's own ``nnet-forward`` outputs in ``tests/data/kaldi-nnet1/*.fwd*.ark``.
"""
from __future__ import annotations

import io
import subprocess
import sys
from typing import Dict

import numpy as np
import pytest

torch = pytest.importorskip("torch")


import svdistill  # noqa: E402
from svdistill import Component, Model  # noqa: E402
from svdistill.torch import NnetModule, forward_module, to_module, update_model  # noqa: E402
from test_forward import load_ark  # noqa: E402

REL = 1e-5  # module vs svdistill.forward / nnet-forward: max |diff| <= REL x max |ref| per utterance

# ------------------------------------------------------------------ helpers


def rel_err(ours, ref) -> float:
    r = np.asarray(ref, dtype=np.float64)
    return float(np.abs(np.asarray(ours, dtype=np.float64) - r).max() / np.abs(r).max())


def assert_close(ours: np.ndarray, ref: np.ndarray, where: str, rel: float = REL) -> None:
    assert ours.shape == ref.shape, (where, ours.shape, ref.shape)
    assert ours.dtype == np.float32, (where, ours.dtype)
    assert np.all(np.isfinite(ours)), where
    e = rel_err(ours, ref)
    assert e <= rel, f"{where}: max |diff| / max |ref| = {e:.3g} > {rel}"


def run(module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        y = module(torch.from_numpy(np.array(x, dtype=np.float32)))  # a writable copy
    return y.numpy()


def counts_for(dim: int, seed: int = 7) -> np.ndarray:
    """A class-frame-counts vector (what analyze-counts writes), all classes seen."""
    return np.random.default_rng(seed).integers(1, 5000, size=dim).astype(np.float64)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def models(fx):
    """Each fixture file read once per module (svdistill.read)."""
    cache: Dict[str, Model] = {}

    def get(name: str) -> Model:
        if name not in cache:
            cache[name] = svdistill.read(fx / name)
        return cache[name]

    return get


# (id, model file, feature transform file or None); both encodings where the text exists
MODELS = [
    ("tiny_mlp-bin", "tiny_mlp.nnet.bin", None),
    ("tiny_mlp-txt", "tiny_mlp.nnet.txt", None),
    ("dnn-bin-ft_txt", "dnn.nnet.bin", "final.feature_transform"),
    ("dnn-txt-ft_bin", "dnn.nnet.txt", "final.feature_transform.bin"),
    ("dnn_with_ft-bin", "dnn_with_ft.nnet.bin", None),
    ("mixed-bin", "mixed.nnet.bin", None),
    ("mixed-txt", "mixed.nnet.txt", None),
    ("lrcoef-bin", "lrcoef.nnet.bin", None),
    ("lrcoef-txt", "lrcoef.nnet.txt", None),
    ("extras-bin", "extras.nnet.bin", None),
    ("extras-txt", "extras.nnet.txt", None),
]
MODEL_IDS = [m[0] for m in MODELS]

# nnet-forward's options; "priors" gets a counts vector of the model's output dim
OPTIONS = {
    "default": {},
    "no_softmax": {"no_softmax": True},
    "apply_log": {"apply_log": True},
    "priors": {"priors": 0.7},
    "apply_log-priors": {"apply_log": True, "priors": 1.0},
}


def _options(opts: dict, out_dim: int) -> dict:
    o = dict(opts)
    if "priors" in o:
        o["prior_scale"] = o.pop("priors")
        o["class_frame_counts"] = counts_for(out_dim)
    return o


@pytest.mark.filterwarnings("ignore:--no-softmax")  # extras ends in HiddenSoftmax: kept, with a warning
@pytest.mark.parametrize("opt", list(OPTIONS))
@pytest.mark.parametrize("case", MODELS, ids=MODEL_IDS)
def test_module_matches_svdistill_forward(case, opt, models, feats):
    _, name, ft_name = case
    model = models(name)
    ft = models(ft_name) if ft_name else None
    o = _options(OPTIONS[opt], model.output_dim)
    module = forward_module(model, ft, **o)
    for k, x in feats.items():
        ref = svdistill.forward(model, x, feature_transform=ft, **o)
        assert_close(run(module, x), ref, f"{name} {opt} {k}")


# (model, feature transform, options, Kaldi's nnet-forward output); both encodings of each model
KALDI = [
    ("tiny_mlp.nnet.{enc}", None, {}, "tiny_mlp.fwd.ark"),
    ("tiny_mlp.nnet.{enc}", None, {"apply_log": True}, "tiny_mlp.fwd_log.ark"),
    ("tiny_mlp.nnet.{enc}", None, {"no_softmax": True}, "tiny_mlp.fwd_nosoftmax.ark"),
    ("dnn.nnet.{enc}", "final.feature_transform", {}, "dnn.fwd.ark"),
    ("dnn.nnet.{enc}", "final.feature_transform.bin", {"apply_log": True}, "dnn.fwd_log.ark"),
    ("dnn_with_ft.nnet.bin", None, {}, "dnn.fwd.ark"),
    ("mixed.nnet.{enc}", None, {}, "mixed.fwd.ark"),
    ("mixed.nnet.{enc}", None, {"no_softmax": True}, "mixed.fwd_nosoftmax.ark"),
    ("lrcoef.nnet.{enc}", None, {}, "lrcoef.fwd.ark"),
    ("extras.nnet.{enc}", None, {}, "extras.fwd.ark"),
]
KALDI_CASES = [(m.format(enc=enc), ft, o, ref) for m, ft, o, ref in KALDI
               for enc in (("bin", "txt") if "{enc}" in m else ("bin",))]


@pytest.mark.parametrize("case", KALDI_CASES, ids=[f"{c[0]}-{c[3]}" for c in KALDI_CASES])
def test_module_matches_kaldi_nnet_forward(case, fx, models, feats):
    name, ft_name, opts, ref_name = case
    module = forward_module(models(name), models(ft_name) if ft_name else None, **opts)
    ref = load_ark(fx / ref_name)
    assert list(ref) == list(feats)
    for k, x in feats.items():
        assert_close(run(module, x), ref[k], f"{name} vs Kaldi {ref_name} {k}")


def test_module_accepts_paths_and_logits_stop_before_the_softmax(fx, models, feats):
    by_path = forward_module(str(fx / "dnn.nnet.bin"), fx / "final.feature_transform")
    by_model = forward_module(models("dnn.nnet.bin"), models("final.feature_transform"))
    x = feats["utt2"]
    assert np.array_equal(run(by_path, x), run(by_model, x))
    net = to_module(models("mixed.nnet.bin"))
    assert isinstance(net, NnetModule) and net.ends_in_softmax
    assert (net.input_dim, net.output_dim) == (40, 24)
    with torch.no_grad():
        logits = net.logits(torch.tensor(x)).numpy()
    assert_close(logits, svdistill.forward(models("mixed.nnet.bin"), x, no_softmax=True), "logits")


def test_floored_prior_is_subtracted_as_nnet_forward_does(models, feats):
    """A class never seen (count 0) gets Kaldi's sqrt(FLT_MAX) log prior; the others the usual one."""
    model = models("tiny_mlp.nnet.bin")
    counts = counts_for(model.output_dim)
    counts[3] = 0.0
    o = {"apply_log": True, "class_frame_counts": counts, "prior_scale": 0.5}
    y = run(forward_module(model, **o), feats["utt1"])
    ref = svdistill.forward(model, feats["utt1"], **o)
    seen = np.arange(model.output_dim) != 3
    assert_close(y[:, seen], ref[:, seen], "seen classes")
    assert np.array_equal(y[:, 3], ref[:, 3])
    assert np.all(y[:, 3] < -1e18)


def test_counts_of_the_wrong_length_are_an_error(models):
    with pytest.raises(svdistill.Error, match="class frame counts have 3 entries but the network outputs 10"):
        forward_module(models("tiny_mlp.nnet.bin"), class_frame_counts=np.ones(3))


def test_apply_log_with_no_softmax_is_an_error(models):
    with pytest.raises(svdistill.Error, match="apply_log and no_softmax"):
        forward_module(models("tiny_mlp.nnet.bin"), apply_log=True, no_softmax=True)


def test_no_softmax_keeps_a_final_hidden_softmax_with_a_warning(models, feats):
    model = models("extras.nnet.bin")
    assert model.components[-1].kind == "HiddenSoftmax"
    with pytest.warns(UserWarning, match="not a softmax; it is kept"):
        module = forward_module(model, no_softmax=True)
    assert np.array_equal(run(module, feats["utt1"]), run(forward_module(model), feats["utt1"]))


# ---------------------------------------------------------------- PDNN text


def _pdnn_text(rng) -> bytes:
    """A PDNN-style model (lowercase markers, no <Nnet> wrapper, no coefficients) with <relu>/<linear>."""
    def affine(out_d, in_d):
        w = rng.standard_normal((out_d, in_d)) * 0.4
        b = rng.standard_normal(out_d) * 0.2
        rows = "\n".join(" ".join("%.6f" % v for v in r) for r in w)
        return (f"<affinetransform> {out_d} {in_d}\n[\n{rows}\n]\n[ " + " ".join("%.6f" % v for v in b)
                + " ]\n")
    return (affine(24, 40) + "<relu> 24 24\n" + affine(16, 24) + "<linear> 16 16\n" + affine(12, 16)
            + "<relu> 12 12\n" + affine(8, 12) + "<softmax> 8 8\n").encode()


@pytest.mark.parametrize("opt", list(OPTIONS))
def test_pdnn_relu_and_linear(opt, feats):
    model = svdistill.read(io.BytesIO(_pdnn_text(np.random.default_rng(5))))
    assert model.dialect == "pdnn"
    assert [c.kind for c in model] == ["AffineTransform", "Relu", "AffineTransform", "Linear",
                                       "AffineTransform", "Relu", "AffineTransform", "Softmax"]
    o = _options(OPTIONS[opt], model.output_dim)
    module = forward_module(model, **o)
    for k, x in feats.items():
        ref = svdistill.forward(model, x, **o)
        assert_close(run(module, x), ref, f"pdnn {opt} {k}")
    # and against plain numpy: relu = max(0, .), linear = identity
    if opt == "default":
        h = feats["utt1"].astype(np.float64)
        for c in model:
            if c.kind == "AffineTransform":
                h = h @ c.weight.T.astype(np.float64) + c.bias
            elif c.kind == "Relu":
                h = np.maximum(h, 0)
            elif c.kind == "Softmax":
                e = np.exp(h - h.max(1, keepdims=True))
                h = e / e.sum(1, keepdims=True)
        assert_close(run(module, feats["utt1"]), h, "pdnn vs numpy")


# ------------------------------------------------------------------ Splice


def _np_splice(x: np.ndarray, offsets) -> np.ndarray:
    T = x.shape[0]
    return np.concatenate([x[[min(max(t + int(o), 0), T - 1) for t in range(T)]] for o in offsets], axis=1)


@pytest.mark.parametrize("frames", [1, 3])
def test_splice_repeats_the_edge_frames_of_short_utterances(frames, models, feats):
    """A +/-5 splice (the feature transform) and -2,0,2 (extras) on utterances shorter than the context."""
    x = feats["utt3"][:frames]
    ft = models("final.feature_transform")
    splice = ft.components[0]
    assert splice.kind == "Splice" and list(splice.ints) == list(range(-5, 6))
    only = to_module(Model([splice]))
    y = run(only, x)
    assert y.shape == (frames, 440)
    assert np.array_equal(y, _np_splice(x, splice.ints))
    assert np.array_equal(y, svdistill.forward(Model([splice]), x))
    if frames == 1:
        assert np.array_equal(y, np.tile(x, (1, 11)))
    else:  # frame 0 sees 6 x x0, x1, 4 x x2; frame 2: 4 x x0, x1, 6 x x2
        assert np.array_equal(y[0].reshape(11, 40), x[[0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 2]])
        assert np.array_equal(y[2].reshape(11, 40), x[[0, 0, 0, 0, 1, 2, 2, 2, 2, 2, 2]])
    # whole models with Splice in the feature transform / in the model
    cases = [(models("dnn.nnet.bin"), ft), (models("dnn_with_ft.nnet.bin"), None),
             (models("extras.nnet.bin"), None)]
    for model, t in cases:
        ref = svdistill.forward(model, x, feature_transform=t)
        assert_close(run(forward_module(model, t), x), ref, f"{frames} frames")


def test_module_is_one_utterance_per_call(models, feats):
    """Splice: one call on two utterances stacked is not two calls (the edges differ)."""
    module = forward_module(models("extras.nnet.bin"))
    a, b = feats["utt1"], feats["utt2"]
    both = run(module, np.concatenate([a, b]))
    assert_close(both[:48], run(module, a)[:48], "inside utt1")
    assert not np.allclose(both[48:50], run(module, a)[48:50])


# ------------------------------------------------------------------ update_model


def _perturb(module, seed=3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.layers.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))


def _coefs(model: Model):
    return [(c.kind, c.marker, c.input_dim, c.output_dim, c.coefs,
             None if c.ints is None else list(c.ints)) for c in model]


@pytest.mark.parametrize("name", ["lrcoef.nnet.bin", "mixed.nnet.txt", "extras.nnet.bin", "dnn_with_ft.nnet.bin"])
def test_update_model_round_trip(name, fx, feats, tmp_path):
    model = svdistill.read(fx / name)  # a private copy: it is changed in place
    before = {i: {n: v.copy() for n, v in c.params.items()} for i, c in enumerate(model)}
    structure = _coefs(model)
    module = to_module(model)
    _perturb(module)
    # the module holds copies: the model is unchanged until update_model
    for i, c in enumerate(model):
        for n, v in c.params.items():
            assert np.array_equal(v, before[i][n])
    assert update_model(model, module) is model
    assert _coefs(model) == structure  # kinds, markers, dims, LearnRateCoef/BiasLearnRateCoef/MaxNorm, ints
    from svdistill.torch import _named_params
    n_params = 0
    for i, (c, layer) in enumerate(zip(model, module.layers)):
        for n, t in _named_params(layer):
            assert np.array_equal(c.params[n], t.detach().numpy()), (i, n)
            assert not np.array_equal(c.params[n], before[i][n]), (i, n)
            n_params += 1
        assert sorted(n for n, _ in _named_params(layer)) == sorted(c.params), i
    assert n_params > 0
    # the model now computes what the module computes, also after a write and a read
    x = feats["utt1"]
    assert_close(svdistill.forward(model, x), run(module, x), f"{name} updated")
    out = tmp_path / "updated.nnet"
    svdistill.write(model, out)
    back = svdistill.read(out)
    assert _coefs(back) == structure
    for c, d in zip(model, back):
        for n in c.params:
            assert np.array_equal(c.params[n], d.params[n])


def test_lrcoef_coefficients_survive_update(fx):
    model = svdistill.read(fx / "lrcoef.nnet.bin")
    aff = model.components[2]
    assert aff.kind == "AffineTransform"
    assert (aff.learn_rate_coef, aff.bias_learn_rate_coef, aff.max_norm) == (0.5, 0.25, 2.5)
    module = to_module(model)
    assert module.layers[2].coefs == aff.coefs
    _perturb(module)
    update_model(model, module)
    aff = model.components[2]
    assert (aff.learn_rate_coef, aff.bias_learn_rate_coef, aff.max_norm) == (0.5, 0.25, 2.5)
    prelu = model.components[6]
    assert prelu.coefs == svdistill.read(fx / "lrcoef.nnet.bin").components[6].coefs


def test_feature_transform_is_frozen(fx, feats):
    ft = svdistill.read(fx / "final.feature_transform")
    model = svdistill.read(fx / "dnn.nnet.bin")
    module = to_module(model, ft)
    tp = list(module.transform.parameters())
    assert len(tp) == 2 and not any(p.requires_grad for p in tp)  # AddShift, Rescale
    assert all(p.requires_grad for p in module.layers.parameters())
    # gradients reach the model's layers, not the transform
    module(torch.tensor(feats["utt1"])).logsumexp(1).sum().backward()
    assert all(p.grad is None for p in tp)
    assert all(p.grad is not None for p in module.layers.parameters())
    # update_model writes the model's layers only; the feature transform is left alone
    ft_before = {i: {n: v.copy() for n, v in c.params.items()} for i, c in enumerate(ft)}
    _perturb(module)
    update_model(model, module)
    for i, c in enumerate(ft):
        for n, v in c.params.items():
            assert np.array_equal(v, ft_before[i][n])


def _small(rng, act="Sigmoid", out_d=3) -> Model:
    return Model([Component.affine(rng.standard_normal((5, 4)).astype(np.float32),
                                   rng.standard_normal(5).astype(np.float32)),
                  Component.activation(act, 5),
                  Component.affine(rng.standard_normal((out_d, 5)).astype(np.float32),
                                   np.zeros(out_d, np.float32))])


@pytest.mark.parametrize("case, message", [
    ("count", "the module has 8 layers, the model 3 components"),
    ("kind", "component 2: the model has <Sigmoid> 5 -> 5, the module <Tanh> 5 -> 5"),
    ("dims", "component 3: the model has <AffineTransform> 5 -> 3, the module <AffineTransform> 5 -> 4"),
    ("shape", "component 1 <AffineTransform>: the module's bias has shape (1,), the model's (5,)"),
    ("nan", "component 3 <AffineTransform>: the module's linearity is not finite"),
    ("not_a_model", "update_model writes into a svdistill.Model, got str"),
])
def test_update_model_structure_mismatch_is_a_clear_error(case, message, fx):
    rng = np.random.default_rng(0)
    model = _small(rng)
    before = [{n: v.copy() for n, v in c.params.items()} for c in model]
    module = to_module(_small(np.random.default_rng(1)))
    target = model
    if case == "count":
        module = to_module(svdistill.read(fx / "mixed.nnet.bin"))
    elif case == "kind":
        module = to_module(_small(rng, act="Tanh"))
    elif case == "dims":
        module = to_module(_small(rng, out_d=4))
    elif case == "shape":
        module.layers[0].bias = torch.nn.Parameter(torch.zeros(1))
    elif case == "nan":
        with torch.no_grad():
            module.layers[2].weight[0, 0] = float("nan")
    elif case == "not_a_model":
        target = "model.nnet"
    with pytest.raises(svdistill.Error) as ei:
        update_model(target, module)
    assert message in str(ei.value)
    # nothing was written: an error leaves the model as it was
    for c, b in zip(model, before):
        for n, v in c.params.items():
            assert np.array_equal(v, b[n])


# ------------------------------------------------------------------ errors


LSTM = b"<Nnet>\n<LstmProjected> 3 4\n<CellDim> 2 [ ]\n<!EndOfComponent>\n</Nnet>\n"


def test_unsupported_kind_is_an_error_naming_the_component():
    lstm = svdistill.read(io.BytesIO(LSTM))
    assert lstm.components[0].kind == "LstmProjected"
    with pytest.raises(svdistill.Error, match=r"^component 1 <LstmProjected>: .*cannot run LstmProjected"):
        to_module(lstm)
    with pytest.raises(svdistill.Error, match="component 1 <LstmProjected>"):
        forward_module(lstm)
    # in a feature transform, named as such
    ok = Model([Component.activation("Sigmoid", 3)])
    with pytest.raises(svdistill.Error, match=r"^feature transform component 1 <LstmProjected>"):
        to_module(ok, lstm)


def test_empty_model_and_transform_mismatch_are_errors(models):
    with pytest.raises(svdistill.Error, match="no components"):
        to_module(Model([]))
    with pytest.raises(svdistill.Error, match="the feature transform outputs 440 dims but the model expects 40"):
        to_module(models("tiny_mlp.nnet.bin"), models("final.feature_transform"))


def test_import_svdistill_does_not_import_torch():
    code = ("import svdistill, sys; assert 'torch' not in sys.modules, 'torch imported'; "
            "from svdistill import export; assert callable(export); "
            "assert 'torch' not in sys.modules, 'torch imported by svdistill.export'")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
