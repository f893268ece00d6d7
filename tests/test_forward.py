"""svdistill forward: nnet-forward-exact inference (issue 5).

References: Kaldi's own ``nnet-forward`` outputs in ``tests/data/kaldi-nnet1/*.fwd*.ark``
(MANIFEST.md gives the exact commands), and a plain numpy implementation of every component
kind written here, independent of svdistill (only the parameters are taken from the models).
"""
from __future__ import annotations

import io
import threading
import warnings
from pathlib import Path
from typing import Dict, List

import kaldiio
import numpy as np
import pytest

import svdistill
from svdistill import Component, Model

FLT_MAX = float(np.finfo(np.float32).max)

# ------------------------------------------------------------------ helpers


def load_ark(path) -> Dict[str, np.ndarray]:
    """An archive as an ordered {key: matrix} dict (kaldiio, not svdistill)."""
    return {k: np.asarray(v) for k, v in kaldiio.load_ark(str(path))}


def assert_matches_ref(ours: Dict[str, np.ndarray], ref: Dict[str, np.ndarray], rel: float = 1e-4,
                       atol: float = 1e-5) -> None:
    """Same keys in the same order; per utterance max |ours - ref| <= rel * max |ref|; and
    every element within ``atol`` absolutely."""
    assert list(ours) == list(ref)
    for k in ref:
        y, r = np.asarray(ours[k]), np.asarray(ref[k], dtype=np.float64)
        assert y.shape == r.shape, (k, y.shape, r.shape)
        assert np.all(np.isfinite(y)), k
        d = np.abs(y.astype(np.float64) - r)
        scale = np.abs(r).max()
        assert d.max() <= rel * scale, f"utterance {k}: max |diff| {d.max():.3g} > {rel} x {scale:.3g}"
        assert d.max() <= atol, f"utterance {k}: max |diff| {d.max():.3g} > {atol}"


def np_sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def np_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_splice(x, offsets):
    """Kaldi's Splice, frame by frame: out[t] = concat(x[clamp(t + o, 0, T-1)] for o in offsets)."""
    T = x.shape[0]
    rows = []
    for t in range(T):
        parts = []
        for o in offsets:
            s = min(max(t + int(o), 0), T - 1)
            parts.append(x[s])
        rows.append(np.concatenate(parts) if parts else np.zeros(0))
    return np.array(rows, dtype=np.float64).reshape(T, -1)


def np_component(c: Component, x: np.ndarray) -> np.ndarray:
    """One component in float64 numpy (Kaldi's semantics, see MANIFEST 'Semantics worth matching')."""
    k, p = c.kind, {n: v.astype(np.float64) for n, v in c.params.items()}
    x = np.asarray(x, dtype=np.float64)
    if k == "AffineTransform":
        return x @ p["linearity"].T + p["bias"]
    if k == "LinearTransform":
        return x @ p["linearity"].T
    if k == "Sigmoid":
        return np_sigmoid(x)
    if k == "Tanh":
        return np.tanh(x)
    if k in ("Softmax", "HiddenSoftmax"):
        return np_softmax(x)
    if k == "BlockSoftmax":
        out, c0 = np.empty_like(x), 0
        for w in c.ints:
            out[:, c0:c0 + w] = np_softmax(x[:, c0:c0 + w])
            c0 += int(w)
        assert c0 == x.shape[1]
        return out
    if k == "ParametricRelu":  # alpha for x >= 0, beta for x < 0 (as nnet-forward computes it)
        return np.where(x >= 0, p["alpha"] * x, p["beta"] * x)
    if k == "Relu":
        return np.maximum(x, 0.0)
    if k in ("Dropout", "Linear"):  # dropout is off in nnet-forward
        return x.copy()
    if k == "LengthNormComponent":
        return x / np.sqrt((x * x).sum(axis=1, keepdims=True))
    if k == "Splice":
        return np_splice(x, c.ints)
    if k == "Copy":  # 1-based indices in the file
        return x[:, np.asarray(c.ints) - 1]
    if k == "AddShift":
        return x + p["shift_data"]
    if k == "Rescale":
        return x * p["scale_data"]
    raise AssertionError(f"no numpy reference for {k}")


def np_forward(comps, x):
    for c in comps:
        x = np_component(c, x)
    return x


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------ fixtures


# (id, model file, API options, CLI options, reference archive)
CASES = [
    ("tiny_mlp", "tiny_mlp.nnet.bin", {}, [], "tiny_mlp.fwd.ark"),
    ("tiny_mlp-apply_log", "tiny_mlp.nnet.bin", {"apply_log": True}, ["--apply-log=true"],
     "tiny_mlp.fwd_log.ark"),
    ("tiny_mlp-no_softmax", "tiny_mlp.nnet.bin", {"no_softmax": True}, ["--no-softmax=true"],
     "tiny_mlp.fwd_nosoftmax.ark"),
    ("dnn-ft", "dnn.nnet.bin", {"feature_transform": "final.feature_transform"},
     ["--feature-transform=final.feature_transform"], "dnn.fwd.ark"),
    ("dnn-ft-apply_log", "dnn.nnet.bin", {"feature_transform": "final.feature_transform", "apply_log": True},
     ["--feature-transform=final.feature_transform", "--apply-log=true"], "dnn.fwd_log.ark"),
    ("dnn_with_ft", "dnn_with_ft.nnet.bin", {}, [], "dnn.fwd.ark"),
    ("mixed", "mixed.nnet.bin", {}, [], "mixed.fwd.ark"),
    ("mixed-no_softmax", "mixed.nnet.bin", {"no_softmax": True}, ["--no-softmax=true"],
     "mixed.fwd_nosoftmax.ark"),
    ("lrcoef", "lrcoef.nnet.bin", {}, [], "lrcoef.fwd.ark"),
    ("extras", "extras.nnet.bin", {}, [], "extras.fwd.ark"),
]
CASE_IDS = [c[0] for c in CASES]


def _api_opts(fx: Path, opts: dict) -> dict:
    o = dict(opts)
    if "feature_transform" in o:
        o["feature_transform"] = str(fx / o["feature_transform"])
    return o


def _cli_opts(fx: Path, opts: List[str]) -> List[str]:
    out = []
    for a in opts:
        if a.startswith("--feature-transform="):
            a = "--feature-transform=" + str(fx / a.split("=", 1)[1])
        out.append(a)
    return out


# ============================================== 1. against Kaldi's nnet-forward


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_api_matches_nnet_forward(case, fx, feats):
    _, model, opts, _, ref = case
    ours = {k: svdistill.forward(str(fx / model), m, **_api_opts(fx, opts)) for k, m in feats.items()}
    for y in ours.values():
        assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.ndim == 2
    assert_matches_ref(ours, load_ark(fx / ref))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cli_matches_nnet_forward(case, fx, tmp_path, run_cli):
    _, model, _, cli, ref = case
    out = tmp_path / "out.ark"
    p = run_cli("forward", *_cli_opts(fx, cli), fx / model, f"ark:{fx / 'feats.ark'}", f"ark:{out}")
    assert p.returncode == 0, p.stderr.decode()
    assert b"Traceback" not in p.stderr
    assert_matches_ref(load_ark(out), load_ark(fx / ref))


def test_api_accepts_loaded_models_and_binary_feature_transform(fx, feats):
    model = svdistill.read(fx / "dnn.nnet.bin")
    ft_bin = svdistill.read(fx / "final.feature_transform.bin")
    ref = load_ark(fx / "dnn.fwd.ark")
    ours = {k: svdistill.forward(model, m, feature_transform=ft_bin) for k, m in feats.items()}
    assert_matches_ref(ours, ref)
    # the text and the binary feature transform hold the same floats: identical outputs
    for k, m in feats.items():
        a = svdistill.forward(model, m, feature_transform=str(fx / "final.feature_transform"))
        assert np.array_equal(a, ours[k])


@pytest.mark.parametrize("name", ["tiny_mlp", "dnn", "mixed", "lrcoef", "extras"])
def test_text_model_gives_the_same_output_as_binary(name, fx, feats):
    ft = str(fx / "final.feature_transform") if name == "dnn" else None
    for k, m in feats.items():
        a = svdistill.forward(str(fx / f"{name}.nnet.bin"), m, feature_transform=ft)
        b = svdistill.forward(str(fx / f"{name}.nnet.txt"), m, feature_transform=ft)
        assert np.array_equal(a, b), (name, k)


def test_cli_text_model_and_text_output(fx, tmp_path, run_cli):
    """A text model, ``ark,t:`` output: the same numbers as Kaldi's (text) archive."""
    out = tmp_path / "out.txt"
    p = run_cli("forward", fx / "tiny_mlp.nnet.txt", f"ark:{fx / 'feats.ark'}", f"ark,t:{out}")
    assert p.returncode == 0, p.stderr.decode()
    text = out.read_text()
    assert text.startswith("utt1  [") or text.startswith("utt1 [")
    ours = load_ark(out)
    assert_matches_ref(ours, load_ark(fx / "tiny_mlp.fwd.ark"))
    assert_matches_ref(ours, load_ark(fx / "tiny_mlp.fwd.txt"))  # Kaldi's own text archive
    # text features in, too
    out2 = tmp_path / "out2.ark"
    p = run_cli("forward", "--apply-log=true", fx / "tiny_mlp.nnet.txt", f"ark:{fx / 'feats.txt'}",
                f"ark:{out2}")
    assert p.returncode == 0, p.stderr.decode()
    assert_matches_ref(load_ark(out2), load_ark(fx / "tiny_mlp.fwd_log.ark"))


def test_cli_scp_input_and_ark_scp_output(fx, feats, tmp_path, run_cli):
    # an scp over a re-written archive, utterances in a different order
    order = ["utt3", "utt1", "utt2"]
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path / 'a.ark'},{tmp_path / 'a.scp'}") as w:
        for k in order:
            w(k, feats[k])
    out_ark, out_scp = tmp_path / "o.ark", tmp_path / "o.scp"
    p = run_cli("forward", "--feature-transform", fx / "final.feature_transform", fx / "dnn.nnet.bin",
                f"scp:{tmp_path / 'a.scp'}", f"ark,scp:{out_ark},{out_scp}")
    assert p.returncode == 0, p.stderr.decode()
    ref = load_ark(fx / "dnn.fwd.ark")
    ref = {k: ref[k] for k in order}
    assert_matches_ref(load_ark(out_ark), ref)
    scp = kaldiio.load_scp(str(out_scp))
    assert list(scp.keys()) == order
    assert_matches_ref({k: scp[k] for k in order}, ref)


def test_cli_stdin_and_stdout(fx, run_cli):
    p = run_cli("forward", "--no-softmax", fx / "mixed.nnet.bin", "ark:-", "ark:-",
                input=(fx / "feats.ark").read_bytes())
    assert p.returncode == 0, p.stderr.decode()
    ours = {k: np.asarray(v) for k, v in kaldiio.load_ark(io.BytesIO(p.stdout))}
    assert_matches_ref(ours, load_ark(fx / "mixed.fwd_nosoftmax.ark"))
    # the summary goes to stderr, never into the archive
    assert b"3 utterances, 150 frames" in p.stderr


# ============================================== 2. each component against numpy


def _rng(seed=0):
    return np.random.default_rng(seed)


def _check_single(comp: Component, x: np.ndarray, rtol=1e-6, atol=1e-6):
    y = svdistill.forward(Model([comp]), x)
    r = np_component(comp, x)
    assert y.dtype == np.float32 and y.shape == r.shape, (y.shape, r.shape)
    np.testing.assert_allclose(y, r, rtol=rtol, atol=atol, err_msg=comp.kind)
    return y


def test_affine_against_numpy():
    r = _rng(1)
    w = r.standard_normal((7, 5)).astype(np.float32)
    b = r.standard_normal(7).astype(np.float32)
    x = r.standard_normal((11, 5)).astype(np.float32)
    c = Component.affine(w, b)
    y = _check_single(c, x, rtol=1e-5, atol=1e-5)
    # orientation: a one-hot input picks a weight column plus the bias
    e = np.zeros((1, 5), np.float32)
    e[0, 2] = 1
    np.testing.assert_allclose(svdistill.forward(Model([c]), e)[0], w[:, 2] + b, rtol=1e-6)
    assert y.shape == (11, 7)


def test_linear_transform_against_numpy():
    r = _rng(2)
    w = r.standard_normal((3, 6)).astype(np.float32)
    x = r.standard_normal((9, 6)).astype(np.float32)
    _check_single(Component.linear(w), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["Sigmoid", "Tanh", "Softmax", "HiddenSoftmax", "Relu", "Linear",
                                  "LengthNormComponent"])
def test_parameter_free_kind_against_numpy(kind):
    r = _rng(3)
    x = (r.standard_normal((13, 8)) * 4).astype(np.float32)
    x[0] = 0.0 if kind != "LengthNormComponent" else 1.0
    x[1, :4] = -x[1, 4:]
    _check_single(Component.activation(kind, 8), x, rtol=1e-6, atol=2e-7)


EXTREMES = np.array([-100.0, 100.0, 0.0, -88.0, 88.0, -1e4, 1e4, -1e30, 1e30, -30.0, 30.0,
                     -1e-6, 1e-6], dtype=np.float32)


def _grid():
    return np.linspace(-30, 30, 1201, dtype=np.float32)


def test_sigmoid_precision_and_saturation():
    net = Model([Component.activation("Sigmoid", 1)])
    x = _grid()[:, None]
    y = svdistill.forward(net, x)
    r = np_sigmoid(x)
    np.testing.assert_allclose(y, r, rtol=1e-6, atol=0)  # relative, even at 1e-13
    ye = svdistill.forward(net, EXTREMES[:, None])[:, 0]
    assert np.all(np.isfinite(ye)) and np.all(ye >= 0) and np.all(ye <= 1)
    re = np_sigmoid(EXTREMES)
    np.testing.assert_allclose(ye, re, rtol=1e-6, atol=1e-30)
    assert ye[2] == 0.5
    assert ye[1] == 1.0 and ye[6] == 1.0 and ye[8] == 1.0
    assert ye[0] < 1e-30 and ye[5] < 1e-30 and ye[7] < 1e-30
    # monotone over the grid
    assert np.all(np.diff(y[:, 0]) >= 0)


def test_tanh_precision_and_saturation():
    net = Model([Component.activation("Tanh", 1)])
    x = _grid()[:, None]
    y = svdistill.forward(net, x)
    # Kaldi's own formula, 1 - 2/(1 + e^2x), has an absolute float32 error ~ulp(1) near 0;
    # relative 1e-6 elsewhere
    np.testing.assert_allclose(y, np.tanh(x.astype(np.float64)), rtol=1e-6, atol=1.5e-7)
    ye = svdistill.forward(net, EXTREMES[:, None])[:, 0]
    assert np.all(np.isfinite(ye))
    np.testing.assert_allclose(ye, np.tanh(EXTREMES.astype(np.float64)), rtol=1e-6, atol=1.5e-7)
    assert ye[2] == 0.0
    assert ye[0] == -1.0 and ye[1] == 1.0 and ye[7] == -1.0 and ye[8] == 1.0
    assert np.all(np.abs(y) <= 1.0)
    # odd
    np.testing.assert_allclose(y[::-1, 0], -y[:, 0], atol=1.5e-7)


@pytest.mark.parametrize("kind", ["Softmax", "HiddenSoftmax"])
def test_softmax_precision_and_saturation(kind):
    r = _rng(4)
    x = r.uniform(-30, 30, size=(64, 12)).astype(np.float32)
    net = Model([Component.activation(kind, 12)])
    y = svdistill.forward(net, x)
    # x - max(x) is rounded in float32 (as Kaldi does): ulp(60) ~ 4e-6 relative after exp
    np.testing.assert_allclose(y, np_softmax(x), rtol=5e-6, atol=1e-30)
    # with that one rounding replayed, exp and normalisation are within 1e-6
    shifted = (x - x.max(1, keepdims=True)).astype(np.float32)
    np.testing.assert_allclose(y, np_softmax(shifted), rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(y.sum(1), 1.0, rtol=2e-6)
    ext = np.array([[-100, 0, 100], [0, 0, 0], [100, 100, -100], [-1e4, 1e4, 0], [1e30, -1e30, 0],
                    [-100, -100, -100], [30, -30, 0]], dtype=np.float32)
    net3 = Model([Component.activation(kind, 3)])
    ye = svdistill.forward(net3, ext)
    assert np.all(np.isfinite(ye)) and np.all(ye >= 0)
    np.testing.assert_allclose(ye, np_softmax(ext), rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(ye.sum(1), 1.0, rtol=2e-6)
    assert ye[0, 2] == 1.0 and ye[3, 1] == 1.0 and ye[4, 0] == 1.0
    np.testing.assert_allclose(ye[1], 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(ye[2, :2], 0.5, rtol=1e-6)
    np.testing.assert_allclose(ye[5], 1 / 3, rtol=1e-6)


def _fixture_component(fx: Path, model: str, index: int, kind: str) -> Component:
    c = svdistill.read(fx / model).components[index]
    assert c.kind == kind, (model, index, c.kind)
    return c


# (model, 0-based index, kind, a check on the parameters the fixture's proto promises)
FIXTURE_COMPONENTS = [
    ("extras.nnet.bin", 0, "Splice", lambda c: list(c.ints) == [-2, 0, 2]),
    ("extras.nnet.bin", 1, "AddShift", lambda c: np.allclose(c.params["shift_data"], -0.1)),
    ("extras.nnet.bin", 2, "Rescale", lambda c: np.allclose(c.params["scale_data"], 0.5)),
    ("extras.nnet.bin", 3, "Copy", lambda c: list(c.ints) == list(range(1, 120, 2))),
    ("extras.nnet.bin", 6, "LengthNormComponent", lambda c: True),
    ("extras.nnet.bin", 8, "HiddenSoftmax", lambda c: True),
    ("mixed.nnet.bin", 2, "Tanh", lambda c: True),
    ("mixed.nnet.bin", 4, "ParametricRelu",
     lambda c: np.all(c.params["alpha"] == 1) and np.all(c.params["beta"] == 0.25)),
    ("mixed.nnet.bin", 5, "Dropout", lambda c: True),
    ("mixed.nnet.bin", 7, "BlockSoftmax", lambda c: list(c.ints) == [10, 14]),
    ("lrcoef.nnet.bin", 0, "AddShift", lambda c: np.allclose(c.params["shift_data"], -0.5)),
    ("lrcoef.nnet.bin", 1, "Rescale", lambda c: np.allclose(c.params["scale_data"], 0.75)),
    ("lrcoef.nnet.bin", 6, "ParametricRelu",
     lambda c: np.all(c.params["alpha"] == 1) and np.allclose(c.params["beta"], 0.1)),
    ("final.feature_transform", 0, "Splice", lambda c: list(c.ints) == list(range(-5, 6))),
    ("final.feature_transform", 1, "AddShift", lambda c: True),
    ("final.feature_transform", 2, "Rescale", lambda c: True),
]


@pytest.mark.parametrize("spec", FIXTURE_COMPONENTS, ids=[f"{m.split('.')[0]}-{i + 1}-{k}"
                                                          for m, i, k, _ in FIXTURE_COMPONENTS])
def test_fixture_component_alone_against_numpy(spec, fx):
    model, index, kind, check = spec
    c = _fixture_component(fx, model, index, kind)
    assert check(c), (model, index, kind)
    r = _rng(5 + index)
    x = (r.standard_normal((17, c.input_dim)) * 3).astype(np.float32)
    x[3] = np.abs(x[3])   # a row all >= 0
    x[4] = -np.abs(x[4])  # a row all < 0
    _check_single(c, x, rtol=1e-6, atol=1e-6)


def test_parametric_relu_uses_alpha_for_positive_beta_for_negative(fx):
    c = _fixture_component(fx, "mixed.nnet.bin", 4, "ParametricRelu")
    x = np.array([[2.0] * 48, [-2.0] * 48, [0.0] * 48], dtype=np.float32)
    y = svdistill.forward(Model([c]), x)
    assert np.all(y[0] == 2.0) and np.all(y[1] == -0.5) and np.all(y[2] == 0.0)


def test_block_softmax_blocks_sum_to_one(fx):
    c = _fixture_component(fx, "mixed.nnet.bin", 7, "BlockSoftmax")
    x = (_rng(6).standard_normal((9, 24)) * 5).astype(np.float32)
    y = svdistill.forward(Model([c]), x)
    np.testing.assert_allclose(y[:, :10].sum(1), 1.0, rtol=2e-6)
    np.testing.assert_allclose(y[:, 10:].sum(1), 1.0, rtol=2e-6)


def test_dropout_is_identity_at_inference(fx):
    c = _fixture_component(fx, "mixed.nnet.bin", 5, "Dropout")
    x = _rng(7).standard_normal((20, 48)).astype(np.float32)
    assert np.array_equal(svdistill.forward(Model([c]), x), x)


PREFIX_MODELS = ["tiny_mlp.nnet.bin", "mixed.nnet.bin", "lrcoef.nnet.bin", "extras.nnet.bin",
                 "final.feature_transform", "dnn_with_ft.nnet.bin"]


@pytest.mark.parametrize("model", PREFIX_MODELS)
def test_every_prefix_of_fixture_models_against_numpy(model, fx, feats):
    """Model(components[:N]) for every N, on the real features, against numpy on the same params."""
    comps = svdistill.read(fx / model).components
    x = feats["utt2"]
    ref = x.astype(np.float64)
    for n in range(1, len(comps) + 1):
        ref = np_component(comps[n - 1], ref)
        y = svdistill.forward(Model(comps[:n]), x)
        assert y.shape == ref.shape, (model, n)
        scale = max(np.abs(ref).max(), 1e-30)
        err = np.abs(y - ref).max()
        assert err <= 1e-5 * scale, f"{model}: first {n} components ({comps[n - 1].kind}): " \
                                    f"max |diff| {err:.3g}, max |ref| {scale:.3g}"


def test_numpy_reference_itself_reproduces_nnet_forward(fx, feats):
    """Sanity of the reference: numpy on every fixture equals Kaldi's archives."""
    for model, ft, ref in [("extras.nnet.bin", None, "extras.fwd.ark"), ("mixed.nnet.bin", None, "mixed.fwd.ark"),
                           ("lrcoef.nnet.bin", None, "lrcoef.fwd.ark"),
                           ("dnn.nnet.bin", "final.feature_transform", "dnn.fwd.ark")]:
        comps = list(svdistill.read(fx / model).components)
        if ft:
            comps = list(svdistill.read(fx / ft).components) + comps
        ours = {k: np_forward(comps, m) for k, m in feats.items()}
        assert_matches_ref(ours, load_ark(fx / ref))


# ============================================== 3. Splice at utterance edges


def splice_model(tmp_path: Path, offsets, in_dim: int) -> Model:
    body = " ".join(str(o) for o in offsets)
    p = write_text(tmp_path / "splice.nnet",
                   f"<Nnet>\n<Splice> {in_dim * len(offsets)} {in_dim}\n[ {body} ]\n"
                   f"<!EndOfComponent>\n</Nnet>\n")
    m = svdistill.read(p)
    assert m.components[0].kind == "Splice" and list(m.components[0].ints) == list(offsets)
    return m


def test_splice_three_frames_offsets_minus5_to_5(tmp_path):
    m = splice_model(tmp_path, range(-5, 6), 2)
    x = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.float32)
    y = svdistill.forward(m, x)
    assert y.shape == (3, 22)
    # frame 0: offsets -5..0 -> frame 0 (repeated first), 1 -> frame 1, 2..5 -> frame 2 (repeated last)
    first = [1, 2] * 6 + [3, 4] + [5, 6] * 4
    mid = [1, 2] * 5 + [3, 4] + [5, 6] * 5
    last = [1, 2] * 4 + [3, 4] + [5, 6] * 6
    assert y.tolist() == [first, mid, last]
    assert np.array_equal(y, np_splice(x, range(-5, 6)))


def test_splice_one_frame_utterance(tmp_path):
    m = splice_model(tmp_path, range(-5, 6), 3)
    x = np.array([[0.5, -1.5, 7.0]], dtype=np.float32)
    y = svdistill.forward(m, x)
    assert np.array_equal(y, np.tile(x, (1, 11)))


@pytest.mark.parametrize("offsets", [[-3, 1, 7], [0], [4, -4], [-20, 20], [2, 2, -1]])
@pytest.mark.parametrize("frames", [1, 2, 5, 30])
def test_splice_asymmetric_offsets(tmp_path, offsets, frames):
    m = splice_model(tmp_path, offsets, 4)
    x = _rng(frames).standard_normal((frames, 4)).astype(np.float32)
    assert np.array_equal(svdistill.forward(m, x), np_splice(x, offsets).astype(np.float32))


def test_feature_transform_on_short_utterances(fx):
    """The real feature transform (Splice -5..5 + CMVN) on 1- and 3-frame utterances."""
    ft = svdistill.read(fx / "final.feature_transform")
    x = load_ark(fx / "feats.ark")["utt1"]
    for n in (1, 3):
        y = svdistill.forward(ft, x[:n])
        r = np_forward(ft.components, x[:n])
        np.testing.assert_allclose(y, r, rtol=1e-5, atol=1e-5 * np.abs(r).max())
        # the dnn on a short utterance is still a distribution per frame
        p = svdistill.forward(fx / "dnn.nnet.bin", x[:n], feature_transform=ft)
        assert p.shape == (n, 500)
        np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)


def test_short_utterance_equals_splice_of_padded_frames(fx, feats):
    """Splice edge semantics, checked through the whole dnn: a 3-frame utterance equals the
    middle frame of that utterance padded by repeating the first/last frame 5 times."""
    x = feats["utt3"][:3]
    padded = np.concatenate([np.repeat(x[:1], 5, 0), x, np.repeat(x[-1:], 5, 0)])
    ft = str(fx / "final.feature_transform")
    a = svdistill.forward(str(fx / "dnn.nnet.bin"), x, feature_transform=ft)
    b = svdistill.forward(str(fx / "dnn.nnet.bin"), padded, feature_transform=ft)[5:8]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)


def test_zero_frame_utterance(fx):
    y = svdistill.forward(fx / "extras.nnet.bin", np.zeros((0, 40), np.float32))
    assert y.shape == (0, 16) and y.dtype == np.float32


# ============================================== 4. unsupported components

FOO_MODEL = ("<Nnet>\n<AffineTransform> 2 2\n[ 1 0\n 0 1 ]\n[ 0 0 ]\n<Foo> 2 2\n<!EndOfComponent>\n"
             "</Nnet>\n")
LSTM_MODEL = ("<Nnet>\n<AffineTransform> 2 2\n[ 1 0\n 0 1 ]\n[ 0 0 ]\n<!EndOfComponent>\n"
              "<LstmProjected> 4 2\n<CellDim> 3 <LearnRateCoef> 1 <BiasLearnRateCoef> 1 "
              "<CellClip> 50 <DiffClip> 1 <GradClip> 250\n<!EndOfComponent>\n</Nnet>\n")


@pytest.mark.parametrize("text,marker", [(FOO_MODEL, "<Foo>"), (LSTM_MODEL, "<LstmProjected>")],
                         ids=["Foo", "LstmProjected"])
def test_unsupported_component_api(text, marker, tmp_path):
    p = write_text(tmp_path / "m.nnet", text)
    x = np.zeros((3, 2), np.float32)
    for model in (str(p), svdistill.read(p)):
        with pytest.raises(svdistill.Error) as ei:
            svdistill.forward(model, x)
        msg = str(ei.value)
        assert "component 2" in msg and marker in msg, msg
        with pytest.raises(svdistill.Error, match="component 2"):
            svdistill.Network(model)


@pytest.mark.parametrize("text,marker", [(FOO_MODEL, "<Foo>"), (LSTM_MODEL, "<LstmProjected>")],
                         ids=["Foo", "LstmProjected"])
def test_unsupported_component_cli(text, marker, tmp_path, run_cli, clean_cli_error):
    p = write_text(tmp_path / "m.nnet", text)
    with kaldiio.WriteHelper(f"ark:{tmp_path / 'f.ark'}") as w:
        w("u1", np.zeros((4, 2), np.float32))
    out = tmp_path / "out.ark"
    proc = run_cli("forward", p, f"ark:{tmp_path / 'f.ark'}", f"ark:{out}")
    clean_cli_error(proc, "component 2", marker)
    assert not out.exists() or out.stat().st_size == 0  # never wrong numbers


def test_unsupported_component_index_is_the_models_own_with_feature_transform(fx, tmp_path):
    foo = svdistill.read(write_text(tmp_path / "foo.nnet",
                                    "<Nnet>\n<Foo> 4 4\n<!EndOfComponent>\n</Nnet>\n")).components[0]
    m = Model([Component.affine(np.zeros((4, 440), np.float32)), foo])
    with pytest.raises(svdistill.Error) as ei:
        svdistill.forward(m, np.zeros((2, 40), np.float32),
                          feature_transform=str(fx / "final.feature_transform"))
    assert "component 2 <Foo>" in str(ei.value), str(ei.value)


# ============================================== 5. options


def test_apply_log_with_no_softmax_is_an_error(fx, feats, run_cli, clean_cli_error, tmp_path):
    with pytest.raises(svdistill.Error, match="no_softmax|no-softmax"):
        svdistill.forward(str(fx / "tiny_mlp.nnet.bin"), feats["utt1"], apply_log=True, no_softmax=True)
    out = tmp_path / "o.ark"
    p = run_cli("forward", "--apply-log=true", "--no-softmax=true", fx / "tiny_mlp.nnet.bin",
                f"ark:{fx / 'feats.ark'}", f"ark:{out}")
    clean_cli_error(p, "apply-log", "no-softmax")
    assert not out.exists()


def test_no_softmax_keeps_a_last_component_that_is_not_softmax(fx, feats):
    """extras ends with <HiddenSoftmax>: --no-softmax keeps it (nnet-forward: 'NOT-REMOVED' warning)."""
    ref = load_ark(fx / "extras.fwd.ark")
    with pytest.warns(UserWarning, match="HiddenSoftmax"):
        ours = {k: svdistill.forward(str(fx / "extras.nnet.bin"), m, no_softmax=True) for k, m in feats.items()}
    assert_matches_ref(ours, ref)
    with pytest.warns(UserWarning):
        net = svdistill.Network(str(fx / "extras.nnet.bin"), no_softmax=True)
    assert net.output_dim == 16
    # a model without softmax at all: no change, a warning
    m = svdistill.read(fx / "tiny_mlp.nnet.bin")
    trunc = Model(m.components[:-1])
    with pytest.warns(UserWarning):
        a = svdistill.forward(trunc, feats["utt1"], no_softmax=True)
    assert np.array_equal(a, svdistill.forward(trunc, feats["utt1"]))


def test_no_softmax_removes_only_the_last_softmax(fx, feats):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net = svdistill.Network(str(fx / "mixed.nnet.bin"), no_softmax=True)  # BlockSoftmax: no warning
        assert net.output_dim == 24
        y = net(feats["utt1"])
    assert_matches_ref({"utt1": y}, {"utt1": load_ark(fx / "mixed.fwd_nosoftmax.ark")["utt1"]})
    # the model object is not modified
    assert svdistill.read(fx / "mixed.nnet.bin").components[-1].kind == "BlockSoftmax"


def test_cli_no_softmax_on_non_softmax_output(fx, tmp_path, run_cli):
    out = tmp_path / "o.ark"
    p = run_cli("forward", "--no-softmax=true", fx / "extras.nnet.bin", f"ark:{fx / 'feats.ark'}", f"ark:{out}")
    assert p.returncode == 0, p.stderr.decode()
    assert_matches_ref(load_ark(out), load_ark(fx / "extras.fwd.ark"))


def test_cli_no_softmax_warns_when_nothing_is_removed(fx, tmp_path, run_cli):
    out = tmp_path / "o.ark"
    p = run_cli("forward", "--no-softmax=true", fx / "extras.nnet.bin", f"ark:{fx / 'feats.ark'}", f"ark:{out}")
    assert p.returncode == 0
    assert b"HiddenSoftmax" in p.stderr, p.stderr.decode()


COUNTS = [10, 20, 0, 70, 5, 1e-9, 33, 1, 2.5, 400]  # 1e-9 / total < 1e-10: floored like a zero


def kaldi_log_priors(counts) -> np.ndarray:
    """nnet1 PdfPrior: log(c / sum + 1e-20); relative frequency < 1e-10 -> sqrt(FLT_MAX); float32."""
    c = np.asarray(counts, dtype=np.float64)
    rel = c / c.sum()
    lp = np.log(rel + 1e-20)
    lp[rel < 1e-10] = np.sqrt(FLT_MAX)
    return lp.astype(np.float32)


def test_kaldi_log_priors_reference():
    lp = kaldi_log_priors(COUNTS)
    assert lp[2] == lp[5] == np.float32(np.sqrt(FLT_MAX))
    assert lp[2] == pytest.approx(1.8446743e19, rel=1e-6)
    assert lp[0] == pytest.approx(np.log(10 / sum(COUNTS)), rel=1e-6)


def _counts_file(tmp_path: Path) -> Path:
    return write_text(tmp_path / "counts", "[ " + " ".join(f"{c:g}" for c in COUNTS) + " ]\n")


@pytest.mark.parametrize("apply_log,scale", [(True, 1.0), (True, 0.5), (False, 1.0), (True, 0.0)])
def test_class_frame_counts_api(fx, feats, tmp_path, apply_log, scale):
    ref_post = load_ark(fx / "tiny_mlp.fwd.ark")
    lp = kaldi_log_priors(COUNTS).astype(np.float64)
    expect = {}
    for k, p in ref_post.items():
        base = np.log(p.astype(np.float64) + 1e-20) if apply_log else p.astype(np.float64)
        expect[k] = base - scale * lp
    counts = _counts_file(tmp_path)
    for cfc in (str(counts), counts, np.asarray(COUNTS)):
        ours = {k: svdistill.forward(str(fx / "tiny_mlp.nnet.bin"), m, apply_log=apply_log,
                                     class_frame_counts=cfc, prior_scale=scale) for k, m in feats.items()}
        for k in expect:
            np.testing.assert_allclose(ours[k], expect[k], rtol=2e-6, atol=2e-6, err_msg=k)
        if scale:
            # floored classes get -scale * sqrt(FLT_MAX)
            assert np.all(ours["utt1"][:, [2, 5]] < -0.9 * scale * np.sqrt(FLT_MAX))
            assert np.all(np.isfinite(ours["utt1"]))


def test_class_frame_counts_cli(fx, tmp_path, run_cli):
    counts = _counts_file(tmp_path)
    out = tmp_path / "o.ark"
    p = run_cli("forward", "--apply-log=true", f"--class-frame-counts={counts}", "--prior-scale", "0.8",
                fx / "tiny_mlp.nnet.bin", f"ark:{fx / 'feats.ark'}", f"ark:{out}")
    assert p.returncode == 0, p.stderr.decode()
    lp = kaldi_log_priors(COUNTS).astype(np.float64)
    ref_log = load_ark(fx / "tiny_mlp.fwd_log.ark")
    expect = {k: v.astype(np.float64) - 0.8 * lp for k, v in ref_log.items()}
    ours = load_ark(out)
    assert list(ours) == list(expect)
    for k in expect:
        np.testing.assert_allclose(ours[k], expect[k], rtol=2e-6, atol=2e-6, err_msg=k)
    # with --no-softmax (pre-softmax minus log priors, as nnet-forward allows)
    out2 = tmp_path / "o2.ark"
    p = run_cli("forward", "--no-softmax=true", f"--class-frame-counts={counts}", fx / "tiny_mlp.nnet.bin",
                f"ark:{fx / 'feats.ark'}", f"ark:{out2}")
    assert p.returncode == 0, p.stderr.decode()
    ref_ns = load_ark(fx / "tiny_mlp.fwd_nosoftmax.ark")
    for k, v in load_ark(out2).items():
        np.testing.assert_allclose(v, ref_ns[k].astype(np.float64) - lp, rtol=2e-6, atol=5e-6, err_msg=k)


def test_class_frame_counts_wrong_length(fx, feats, tmp_path, run_cli, clean_cli_error):
    bad = write_text(tmp_path / "counts", "[ 1 2 3 ]\n")
    with pytest.raises(svdistill.Error, match="3"):
        svdistill.forward(str(fx / "tiny_mlp.nnet.bin"), feats["utt1"], class_frame_counts=str(bad))
    p = run_cli("forward", f"--class-frame-counts={bad}", fx / "tiny_mlp.nnet.bin", f"ark:{fx / 'feats.ark'}",
                f"ark:{tmp_path / 'o.ark'}")
    clean_cli_error(p)


def test_wrong_feature_dims_api(fx):
    with pytest.raises(svdistill.Error, match="40"):
        svdistill.forward(str(fx / "tiny_mlp.nnet.bin"), np.zeros((5, 13), np.float32))
    with pytest.raises(svdistill.Error):
        svdistill.forward(str(fx / "tiny_mlp.nnet.bin"), np.zeros((5,), np.float32))


def test_wrong_feature_dims_names_the_utterance(fx, feats, tmp_path, run_cli, clean_cli_error):
    ark = tmp_path / "f.ark"
    with kaldiio.WriteHelper(f"ark:{ark}") as w:
        w("good_utt", feats["utt1"])
        w("bad_utt_7", np.zeros((6, 13), np.float32))
    from svdistill.forward import forward_archive
    with pytest.raises(svdistill.Error, match="bad_utt_7"):
        forward_archive(str(fx / "tiny_mlp.nnet.bin"), f"ark:{ark}", f"ark:{tmp_path / 'x.ark'}")
    p = run_cli("forward", fx / "tiny_mlp.nnet.bin", f"ark:{ark}", f"ark:{tmp_path / 'o.ark'}")
    line = clean_cli_error(p, "bad_utt_7")
    assert "13" in line and "40" in line


def test_feature_transform_dim_mismatch(fx, feats, run_cli, clean_cli_error, tmp_path):
    with pytest.raises(svdistill.Error, match="440"):
        svdistill.forward(str(fx / "tiny_mlp.nnet.bin"), feats["utt1"],
                          feature_transform=str(fx / "final.feature_transform"))
    p = run_cli("forward", "--feature-transform", fx / "final.feature_transform", fx / "tiny_mlp.nnet.bin",
                f"ark:{fx / 'feats.ark'}", f"ark:{tmp_path / 'o.ark'}")
    clean_cli_error(p, "440")


def test_cli_missing_feature_archive(fx, tmp_path, run_cli, clean_cli_error):
    p = run_cli("forward", fx / "tiny_mlp.nnet.bin", f"ark:{tmp_path / 'nope.ark'}", f"ark:{tmp_path / 'o.ark'}")
    clean_cli_error(p, "nope.ark")


# ============================================== 6. Network


def test_network_reuse_equals_forward(fx, feats):
    ft = svdistill.read(fx / "final.feature_transform")
    dnn = svdistill.read(fx / "dnn.nnet.bin")
    net = svdistill.Network(str(fx / "dnn.nnet.bin"), feature_transform=ft)
    assert (net.input_dim, net.output_dim) == (40, 500)
    for _ in range(2):
        for k, m in feats.items():
            a = net(m)
            b = svdistill.forward(net, m)
            c = svdistill.forward(dnn, m, feature_transform=ft)
            assert np.array_equal(a, b) and np.array_equal(a, c), k
            la = svdistill.forward(net, m, apply_log=True)
            assert np.array_equal(la, np.log(a + np.float32(1e-20)))
    plain = svdistill.Network(dnn)
    assert (plain.input_dim, plain.output_dim) == (440, 500)
    tiny = svdistill.Network(str(fx / "tiny_mlp.nnet.bin"), no_softmax=True)
    assert (tiny.input_dim, tiny.output_dim) == (40, 10)
    assert_matches_ref({k: tiny(m) for k, m in feats.items()}, load_ark(fx / "tiny_mlp.fwd_nosoftmax.ark"))
    copy = svdistill.Network(str(fx / "extras.nnet.bin"))
    assert (copy.input_dim, copy.output_dim) == (40, 16)


def test_network_does_not_modify_its_input(fx, feats):
    net = svdistill.Network(str(fx / "mixed.nnet.bin"))
    x = feats["utt2"].copy()
    net(x)
    assert np.array_equal(x, feats["utt2"])


def test_network_accepts_non_contiguous_and_float64_input(fx, feats):
    net = svdistill.Network(str(fx / "tiny_mlp.nnet.bin"))
    x = feats["utt1"]
    ref = net(x)
    np.testing.assert_allclose(net(np.asfortranarray(x)), ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(net(x.astype(np.float64)), ref, rtol=1e-6, atol=1e-7)
    big = np.zeros((50, 80), np.float32)
    big[:, ::2] = x
    np.testing.assert_allclose(net(big[:, ::2]), ref, rtol=1e-6, atol=1e-7)
    with pytest.raises(svdistill.Error):
        net(x[0])


def test_network_concurrent_calls(fx, feats):
    """The GIL is released in the core: concurrent calls on one Network give the serial results."""
    net = svdistill.Network(str(fx / "dnn.nnet.bin"), feature_transform=str(fx / "final.feature_transform"))
    x = np.concatenate(list(feats.values()) * 4)
    expect = net(x)
    results: list = [None] * 4
    errors: list = []

    def work(i):
        try:
            results[i] = net(x)
        except Exception as e:  # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    for r in results:
        np.testing.assert_allclose(r, expect, rtol=1e-6, atol=1e-9)


def test_batch_of_frames_is_independent_of_utterance_grouping(fx, feats):
    """Without Splice every frame is independent: one long matrix == utterance by utterance."""
    m = str(fx / "mixed.nnet.bin")
    whole = svdistill.forward(m, np.concatenate(list(feats.values())))
    parts = np.concatenate([svdistill.forward(m, v) for v in feats.values()])
    np.testing.assert_allclose(whole, parts, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("model", ["extras.nnet.bin", "mixed.nnet.bin", "lrcoef.nnet.bin", "dnn_with_ft.nnet.bin"])
def test_large_batch_threaded_kernels_against_numpy(model, fx, feats):
    """Enough frames that every elementwise kernel splits its rows over threads."""
    comps = svdistill.read(fx / model).components
    # 6000 frames: rows x cols >= 2 x 2^15 for every kernel, even the 12-dim softmax
    x = np.concatenate([v[::-1] if i % 2 else v for i, v in enumerate(list(feats.values()) * 40)])
    x = (x + _rng(9).standard_normal(x.shape).astype(np.float32) * 0.1).astype(np.float32)
    assert x.shape[0] == 6000
    y = svdistill.forward(Model(comps), x)
    r = np_forward(comps, x)
    err = np.abs(y - r).max()
    assert err <= 1e-5 * np.abs(r).max(), (model, err)


def test_cli_garbage_feature_archive_is_one_error_line(fx, tmp_path, run_cli, clean_cli_error):
    g = write_text(tmp_path / "g.ark", "garbage")
    p = run_cli("forward", fx / "tiny_mlp.nnet.bin", f"ark:{g}", f"ark:{tmp_path / 'o.ark'}")
    clean_cli_error(p, "g.ark")


def test_nan_input_gives_nan_output_not_a_silent_answer():
    """exp clamps its argument for speed; a nan must still come out as a nan."""
    rng = np.random.default_rng(3)
    for act in ("Sigmoid", "Tanh"):
        m = svdistill.Model([svdistill.Component.affine(rng.normal(size=(6, 5)).astype(np.float32)),
                             svdistill.Component.activation(act, 6),
                             svdistill.Component.affine(rng.normal(size=(4, 6)).astype(np.float32)),
                             svdistill.Component.activation("Softmax", 4)])
        x = rng.normal(size=(3, 5)).astype(np.float32)
        x[1, 2] = np.nan
        y = svdistill.forward(m, x)
        assert np.isnan(y[1]).all()
        assert np.isfinite(y[[0, 2]]).all()


# ---- the API checks nnet-forward's output options as the CLI does (issue 19: found by a new-user trial)

@pytest.mark.parametrize("kw,match", [
    (dict(class_frame_counts="zeros"), "positive sum"),
    (dict(class_frame_counts="negative"), "non-negative"),
    (dict(class_frame_counts="ones", prior_scale="a"), "prior_scale must be a finite number"),
    (dict(class_frame_counts="ones", prior_scale=float("nan")), "prior_scale must be a finite number"),
    (dict(apply_log="no"), "apply_log must be True or False"),
    (dict(no_softmax=1), "no_softmax must be True or False"),
    (dict(class_frame_counts="text"), "expected a counts file or a vector of counts"),
])
def test_forward_api_checks_output_options(fixtures_dir, kw, match):
    m = svdistill.read(fixtures_dir / "tiny_mlp.nnet.bin")
    x = np.random.default_rng(0).standard_normal((3, m.input_dim)).astype(np.float32)
    counts = {"zeros": [0.0] * m.output_dim, "negative": [-1.0] * m.output_dim,
              "ones": [1.0] * m.output_dim, "text": object()}
    if isinstance(kw.get("class_frame_counts"), str):
        kw = dict(kw, class_frame_counts=counts[kw["class_frame_counts"]])
    with pytest.raises(svdistill.Error, match=match):
        svdistill.forward(m, x, **kw)


@pytest.mark.parametrize("feats", [{"u": np.zeros((3, 4), np.float32)}, "ark:feats.ark"])
def test_forward_api_names_what_it_got_instead_of_an_array(fixtures_dir, feats):
    m = svdistill.read(fixtures_dir / "tiny_mlp.nnet.bin")
    with pytest.raises(svdistill.Error, match=f"got a {type(feats).__name__}; .*forward_archive"):
        svdistill.forward(m, feats)


def test_singular_values_of_an_empty_matrix_is_quiet(capfd):
    for shape in [(0, 5), (5, 0), (0, 0)]:
        assert svdistill.linalg.singular_values(np.zeros(shape, np.float32)).size == 0
    assert "illegal value" not in capfd.readouterr().err
