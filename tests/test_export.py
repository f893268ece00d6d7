"""svdistill export: ONNX (run by onnxruntime) and TorchScript (torch.jit.load) files that
compute what ``svdistill forward`` computes, for whole utterances of any length.

References: ``svdistill.forward`` (checked against Kaldi in test_forward.py) with the
same options, and Kaldi's own ``nnet-forward`` outputs (``*.fwd*.ark``) where they exist.
"""
from __future__ import annotations

import io
import os
import sys
import warnings
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

torch = pytest.importorskip("torch")


import svdistill  # noqa: E402
from conftest import assert_clean_cli_error  # noqa: E402
from test_torch_module import OPTIONS, _options, assert_close, counts_for, load_ark  # noqa: E402

# ------------------------------------------------------------------ helpers


def onnx_runner(path):
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(["out"], {"feats": np.ascontiguousarray(x, dtype=np.float32)})[0]


def torchscript_runner(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load's notice
        m = torch.jit.load(str(path))

    def run(x):
        with torch.no_grad():
            return m(torch.tensor(np.asarray(x, dtype=np.float32))).numpy()
    return run


RUNNERS = {"onnx": onnx_runner, "torchscript": torchscript_runner}


def write_counts(path: Path, counts: np.ndarray) -> Path:
    path.write_text("[ " + " ".join("%d" % c for c in counts) + " ]\n")  # analyze-counts' format
    return path


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def utterances(feats) -> Dict[str, np.ndarray]:
    """The three utterances, and shorter ones: 1, 2, 3 frames (less than a splice context), 7
    (the length the graph is traced on), 11, 64 (longer than any fixture utterance)."""
    u = dict(feats)
    u["1f"] = feats["utt3"][:1]
    u["2f"] = feats["utt2"][10:12]
    u["3f"] = feats["utt1"][:3]
    u["7f"] = feats["utt2"][20:27]
    u["11f"] = feats["utt3"][30:41]
    u["64f"] = np.concatenate([feats["utt1"], feats["utt2"][:14]])
    return u


@pytest.fixture(scope="module")
def spliced(fx, utterances) -> Dict[str, np.ndarray]:
    """The utterances through the feature transform: the input of dnn.nnet.bin alone."""
    ft = svdistill.read(fx / "final.feature_transform")
    return {k: svdistill.forward(ft, x) for k, x in utterances.items()}


# (id, model file, feature transform, input: "feats" or "spliced")
MODELS = [
    ("tiny_mlp", "tiny_mlp.nnet.bin", None, "feats"),
    ("dnn-ft", "dnn.nnet.bin", "final.feature_transform", "feats"),
    ("dnn-no_ft", "dnn.nnet.txt", None, "spliced"),
    ("dnn_with_ft", "dnn_with_ft.nnet.bin", None, "feats"),
    ("mixed", "mixed.nnet.bin", None, "feats"),
    ("lrcoef", "lrcoef.nnet.txt", None, "feats"),
    ("extras", "extras.nnet.bin", None, "feats"),
]
MODEL_IDS = [m[0] for m in MODELS]

# Kaldi's nnet-forward outputs on feats.ark: (model id, option) -> archive
KALDI = {
    ("tiny_mlp", "default"): "tiny_mlp.fwd.ark",
    ("tiny_mlp", "apply_log"): "tiny_mlp.fwd_log.ark",
    ("tiny_mlp", "no_softmax"): "tiny_mlp.fwd_nosoftmax.ark",
    ("dnn-ft", "default"): "dnn.fwd.ark",
    ("dnn-ft", "apply_log"): "dnn.fwd_log.ark",
    ("dnn_with_ft", "default"): "dnn.fwd.ark",
    ("mixed", "default"): "mixed.fwd.ark",
    ("mixed", "no_softmax"): "mixed.fwd_nosoftmax.ark",
    ("lrcoef", "default"): "lrcoef.fwd.ark",
    ("extras", "default"): "extras.fwd.ark",
}


@pytest.mark.filterwarnings("ignore:--no-softmax")  # extras ends in HiddenSoftmax: kept, with a warning
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("opt", list(OPTIONS))
@pytest.mark.parametrize("case", MODELS, ids=MODEL_IDS)
def test_export_matches_svdistill_forward(case, opt, fmt, fx, utterances, spliced, tmp_path):
    mid, name, ft_name, inp = case
    if fmt == "onnx":
        pytest.importorskip("onnx")
    model = svdistill.read(fx / name)
    ft = str(fx / ft_name) if ft_name else None
    o = _options(OPTIONS[opt], model.output_dim)
    out = tmp_path / f"m.{fmt}"
    d = svdistill.export(str(fx / name), out, format=fmt, feature_transform=ft, **o)
    assert d["path"] == str(out) and d["format"] == fmt and d["bytes"] == out.stat().st_size > 0
    assert d["output_dim"] == model.output_dim
    assert d["input_dim"] == (40 if inp == "feats" else 440)
    assert (d["opset"] is None) == (fmt == "torchscript")
    assert sorted(os.listdir(tmp_path)) == [out.name]  # no temporary file left behind
    runner = RUNNERS[fmt](out)
    inputs = utterances if inp == "feats" else spliced
    for k, x in inputs.items():
        ref = svdistill.forward(model, x, feature_transform=ft, **o)
        assert_close(runner(x), ref, f"{mid} {opt} {fmt} {k} ({x.shape[0]} frames)")
    kaldi = KALDI.get((mid, opt))
    if kaldi:
        ref = load_ark(fx / kaldi)
        for k in ("utt1", "utt2", "utt3"):
            assert_close(runner(utterances[k]), ref[k], f"{mid} {opt} {fmt} {k} vs Kaldi {kaldi}")


def test_onnx_graph_has_named_float_io_and_a_dynamic_frame_axis(fx, tmp_path):
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "dnn.onnx"
    d = svdistill.export(fx / "dnn.nnet.bin", out, feature_transform=fx / "final.feature_transform.bin")
    m = onnx.load(str(out))
    onnx.checker.check_model(m)
    (i,), (o,) = m.graph.input, m.graph.output
    assert (i.name, o.name) == ("feats", "out")
    for v, dim in ((i, 40), (o, 500)):
        t = v.type.tensor_type
        assert t.elem_type == onnx.TensorProto.FLOAT
        d0, d1 = t.shape.dim
        assert d0.dim_param == "frames" and not d0.HasField("dim_value")
        assert d1.dim_value == dim
    assert d["opset"] == next(x.version for x in m.opset_import if x.domain in ("", "ai.onnx"))
    assert d["output_kind"] == "posteriors"


def test_onnx_opset(fx, feats, tmp_path):
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "x.onnx"
    d = svdistill.export(fx / "extras.nnet.bin", out, opset=17)
    assert d["opset"] == 17
    assert [x.version for x in onnx.load(str(out)).opset_import if x.domain in ("", "ai.onnx")] == [17]
    assert_close(onnx_runner(out)(feats["utt1"]), svdistill.forward(fx / "extras.nnet.bin", feats["utt1"]),
                 "opset 17")


@pytest.mark.filterwarnings("ignore:Setting .keep_initializers_as_inputs")  # opset 7: torch notes it
def test_onnx_exporter_failure_is_one_clean_error(fx, tmp_path, capfd, run_cli):
    """PyTorch's exporter prints the whole Torch IR graph to stdout when it fails: held back."""
    pytest.importorskip("onnx")
    capfd.readouterr()
    # ParametricRelu's Where exists from opset 9 on
    with pytest.raises(svdistill.Error, match="could not export the model to ONNX at opset 7: "
                                              "ONNX export failed on where"):
        svdistill.export(fx / "mixed.nnet.bin", tmp_path / "m.onnx", opset=7)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert os.listdir(tmp_path) == []
    p = run_cli("export", "--opset=7", fx / "mixed.nnet.bin", tmp_path / "m.onnx")
    assert_clean_cli_error(p, "ONNX export failed on where")
    assert p.stdout == b"" and os.listdir(tmp_path) == []
    # an opset the exporter does not write at all: said before it runs
    with pytest.raises(svdistill.Error, match=r"opset 99 is not one PyTorch's ONNX exporter \(dynamo=False\) "
                                              r"writes: 7 to \d+"):
        svdistill.export(fx / "mixed.nnet.bin", tmp_path / "m.onnx", opset=99)
    assert capfd.readouterr() == ("", "")


def test_torchscript_needs_no_svdistill(fx, feats, tmp_path):
    """The TorchScript file runs in a Python that has never imported svdistill."""
    import subprocess
    out = tmp_path / "dnn.pt"
    svdistill.export(fx / "dnn_with_ft.nnet.bin", out, format="torchscript", apply_log=True)
    np.save(tmp_path / "x.npy", feats["utt2"][:5])
    code = ("import sys, warnings, numpy as np, torch; warnings.simplefilter('ignore'); "
            f"m = torch.jit.load({str(out)!r}); y = m(torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r}))); "
            f"np.save({str(tmp_path / 'y.npy')!r}, y.detach().numpy()); "
            "assert not any(k.startswith('svdistill') for k in sys.modules), 'svdistill imported'")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    ref = svdistill.forward(fx / "dnn_with_ft.nnet.bin", feats["utt2"][:5], apply_log=True)
    assert_close(np.load(tmp_path / "y.npy"), ref, "torchscript in a fresh python")


def test_floored_prior_in_the_export(fx, feats, tmp_path):
    """A class never seen gets nnet-forward's sqrt(FLT_MAX) log prior in the exported graph too."""
    counts = counts_for(10)
    counts[4] = 0
    o = {"apply_log": True, "class_frame_counts": counts, "prior_scale": 1.0}
    out = tmp_path / "t.pt"
    d = svdistill.export(fx / "tiny_mlp.nnet.bin", out, format="torchscript", **o)
    assert d["output_kind"] == "pseudo log-likelihoods"
    y = torchscript_runner(out)(feats["utt1"])
    ref = svdistill.forward(fx / "tiny_mlp.nnet.bin", feats["utt1"], **o)
    seen = np.arange(10) != 4
    assert_close(y[:, seen], ref[:, seen], "seen classes")
    assert np.array_equal(y[:, 4], ref[:, 4]) and np.all(y[:, 4] < -1e18)


def test_export_accepts_loaded_models(fx, feats, tmp_path):
    model = svdistill.read(fx / "dnn.nnet.bin")
    ft = svdistill.read(fx / "final.feature_transform")
    out = tmp_path / "m.pt"
    svdistill.export(model, out, format="torchscript", feature_transform=ft)
    assert_close(torchscript_runner(out)(feats["utt3"]),
                 svdistill.forward(model, feats["utt3"], feature_transform=ft), "loaded models")


# ------------------------------------------------------------------ atomic output


def test_failed_export_leaves_the_old_output_and_no_temporary_file(fx, tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old contents")
    os.chmod(out, 0o640)

    def broken_export(module, args, f, **kw):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("simulated exporter failure")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(svdistill.Error, match="could not export the model to ONNX: simulated exporter failure"):
        svdistill.export(fx / "tiny_mlp.nnet.bin", out)
    assert out.read_bytes() == b"old contents"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]

    def interrupted_save(m, f, *a, **kw):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.jit, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        svdistill.export(fx / "tiny_mlp.nnet.bin", out, format="torchscript")
    assert out.read_bytes() == b"old contents"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]
    monkeypatch.undo()
    # a successful export replaces it, keeping the file's mode
    svdistill.export(fx / "tiny_mlp.nnet.bin", out, format="torchscript")
    assert out.read_bytes() != b"old contents" and (out.stat().st_mode & 0o777) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_a_trace_that_bakes_in_the_utterance_length_is_refused(fx, tmp_path, monkeypatch):
    """The TorchScript trace is checked on other lengths: a Splice whose index computation
    became a constant of the traced length is an error, not a silently wrong file."""
    import svdistill.torch as st

    def baked(self, x):
        t = int(x.shape[0])  # a Python int: the tracer records the traced length as a constant
        idx = (torch.arange(t).unsqueeze(1) + self.offsets.unsqueeze(0)).clamp(0, t - 1)
        return x[idx.reshape(-1)].reshape(t, -1)

    monkeypatch.setattr(st.Splice, "forward", baked)
    with pytest.raises(svdistill.Error, match="does not reproduce the model at other utterance lengths"):
        svdistill.export(fx / "extras.nnet.bin", tmp_path / "m.pt", format="torchscript")
    assert os.listdir(tmp_path) == []


def test_new_output_gets_the_umask_mode(fx, tmp_path):
    old = os.umask(0o027)
    try:
        out = tmp_path / "m.pt"
        svdistill.export(fx / "tiny_mlp.nnet.bin", out, format="torchscript")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o640


# ------------------------------------------------------------------ errors


LSTM = b"<Nnet>\n<LstmProjected> 3 4\n<CellDim> 2 [ ]\n<!EndOfComponent>\n</Nnet>\n"


@pytest.mark.parametrize("case, message", [
    ("log_and_no_softmax", "apply_log and no_softmax cannot both be set"),
    ("no_folder", "cannot write the export: the folder"),
    ("output_is_model", "is the model: refusing to overwrite it"),
    ("output_is_ft", "is the feature transform: refusing to overwrite it"),
    ("output_is_dir", "is a directory"),
    ("stdout", "an exported model cannot go to stdout"),
    ("format", "format must be onnx or torchscript, got 'tflite'"),
    ("opset_torchscript", "opset applies to the onnx format only"),
    ("lstm", "component 1 <LstmProjected>: svdistill.torch cannot run LstmProjected"),
    ("counts", "class frame counts have 3 entries but the network outputs 500"),
    ("ft_dims", "the feature transform outputs 440 dims but the model expects 40"),
])
def test_export_errors(case, message, fx, tmp_path):
    model_copy = tmp_path / "model.nnet"
    model_copy.write_bytes((fx / "tiny_mlp.nnet.bin").read_bytes())
    args = [model_copy, tmp_path / "out.pt"]
    kw: dict = {"format": "torchscript"}  # the same checks as onnx, and no need for the onnx package
    if case == "log_and_no_softmax":
        kw.update(apply_log=True, no_softmax=True)
    elif case == "no_folder":
        args[1] = tmp_path / "missing" / "out.pt"
    elif case == "output_is_model":
        args[1] = tmp_path / "." / "model.nnet"
    elif case == "output_is_ft":
        args[0] = fx / "dnn.nnet.bin"
        args[1] = model_copy
        kw["feature_transform"] = str(model_copy)
    elif case == "output_is_dir":
        args[1] = tmp_path
    elif case == "stdout":
        args[1] = "-"
    elif case == "format":
        kw["format"] = "tflite"
    elif case == "opset_torchscript":
        kw["opset"] = 17
    elif case == "lstm":
        args[0] = svdistill.read(io.BytesIO(LSTM))
    elif case == "counts":
        args[0] = fx / "dnn_with_ft.nnet.bin"
        kw["class_frame_counts"] = np.ones(3)
    elif case == "ft_dims":
        kw["feature_transform"] = fx / "final.feature_transform"
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(svdistill.Error) as ei:
        svdistill.export(*args, **kw)
    assert message in str(ei.value)
    assert sorted(os.listdir(tmp_path)) == before  # nothing written, no temporary file
    assert model_copy.read_bytes() == (fx / "tiny_mlp.nnet.bin").read_bytes()


@pytest.mark.parametrize("missing, message", [
    ("torch", "pip install 'svdistill[torch]'"),
    ("onnx", "pip install onnx"),
])
def test_missing_dependency_is_a_clear_error(missing, message, fx, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, missing, None)  # 'import torch' / 'import onnx' now fails
    with pytest.raises(svdistill.Error) as ei:
        svdistill.export(fx / "tiny_mlp.nnet.bin", tmp_path / "out.onnx")
    assert message in str(ei.value)
    assert os.listdir(tmp_path) == []


def test_torchscript_needs_no_onnx(fx, feats, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    out = tmp_path / "m.pt"
    svdistill.export(fx / "mixed.nnet.bin", out, format="torchscript")
    monkeypatch.undo()
    assert_close(torchscript_runner(out)(feats["utt1"]), svdistill.forward(fx / "mixed.nnet.bin", feats["utt1"]),
                 "torchscript without onnx")


# ------------------------------------------------------------------ CLI


def test_cli_onnx_round_trip(fx, feats, tmp_path, run_cli):
    pytest.importorskip("onnx")
    out = tmp_path / "dnn.onnx"
    p = run_cli("export", "--format", "onnx", "--feature-transform", fx / "final.feature_transform",
                "--apply-log=true", fx / "dnn.nnet.bin", out)
    err = p.stderr.decode()
    assert p.returncode == 0, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    size = out.stat().st_size
    assert lines[0].startswith("svdistill export: onnx (opset ")
    assert "feats frames x 40 -> out frames x 500 (log-posteriors)" in lines[0]
    assert f"{size:,} bytes" in lines[0] and lines[0].endswith(str(out))
    assert p.stdout == b""
    run = onnx_runner(out)
    ref = load_ark(fx / "dnn.fwd_log.ark")
    for k, x in feats.items():
        assert_close(run(x), svdistill.forward(fx / "dnn.nnet.bin", x, apply_log=True,
                                               feature_transform=fx / "final.feature_transform"), k)
        assert_close(run(x), ref[k], f"{k} vs Kaldi")
    assert sorted(os.listdir(tmp_path)) == ["dnn.onnx"]


def test_cli_torchscript_with_priors_matches_cli_forward(fx, feats, tmp_path, run_cli):
    counts = write_counts(tmp_path / "counts.txt", counts_for(24))
    opts = ["--apply-log", f"--class-frame-counts={counts}", "--prior-scale", "0.5"]
    out = tmp_path / "mixed.pt"
    p = run_cli("export", "--format=torchscript", *opts, fx / "mixed.nnet.bin", out)
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert err.startswith("svdistill export: torchscript, feats frames x 40 -> out frames x 24 "
                          "(pseudo log-likelihoods), ") and len(err.splitlines()) == 1, err
    ark = tmp_path / "fwd.ark"
    q = run_cli("forward", *opts, fx / "mixed.nnet.bin", f"ark:{fx / 'feats.ark'}", f"ark:{ark}")
    assert q.returncode == 0, q.stderr.decode()
    ref = load_ark(ark)
    run = torchscript_runner(out)
    for k, x in feats.items():
        assert_close(run(x), ref[k], k)


@pytest.mark.parametrize("case, message", [
    ("log_and_no_softmax", "--apply-log and --no-softmax cannot both be set"),
    ("no_folder", "the folder"),
    ("output_is_input", "is the model: refusing to overwrite it"),
    ("lstm", "component 1 <LstmProjected>: svdistill.torch cannot run LstmProjected"),
    ("format", "invalid choice: 'tflite'"),
    ("opset_torchscript", "--opset applies to the onnx --format only"),
])
def test_cli_errors(case, message, fx, tmp_path, run_cli):
    model = tmp_path / "model.nnet"
    model.write_bytes((fx / "tiny_mlp.nnet.bin").read_bytes())
    args = [model, tmp_path / "out.onnx"]
    opts: list = []
    if case == "log_and_no_softmax":
        opts = ["--apply-log", "--no-softmax=true"]
    elif case == "no_folder":
        args[1] = tmp_path / "missing" / "out.onnx"
    elif case == "output_is_input":
        args[1] = model
    elif case == "lstm":
        model.write_bytes(LSTM)
        opts = ["--format", "torchscript"]
    elif case == "format":
        opts = ["--format", "tflite"]
    elif case == "opset_torchscript":
        opts = ["--format", "torchscript", "--opset", "17"]
    before = sorted(os.listdir(tmp_path))
    p = run_cli("export", *opts, *args)
    if case == "format":  # argparse's own usage error: exit 2, usage + message
        assert p.returncode == 2 and message in p.stderr.decode()
    else:
        assert_clean_cli_error(p, message)
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("missing, message", [
    ("torch", "export needs PyTorch: pip install 'svdistill[torch]'"),
    ("onnx", "needs the onnx package: pip install onnx"),
])
def test_cli_missing_dependency(missing, message, fx, tmp_path, run_cli, monkeypatch):
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / f"{missing}.py").write_text(f"raise ModuleNotFoundError('no module named {missing}')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")]))
    p = run_cli("export", fx / "tiny_mlp.nnet.bin", tmp_path / "out.onnx")
    assert_clean_cli_error(p, message)
    assert sorted(os.listdir(tmp_path)) == ["blocked"]
