"""In-memory models: zero-copy parameter views, checked setters, constructors."""
from __future__ import annotations

import gc
import io
import os
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest

import svdistill
from svdistill import Component, Model
from svdistill.io import ConversionWarning


def _bytes_of(model, **kw) -> bytes:
    buf = io.BytesIO()
    svdistill.write(model, buf, **kw)
    return buf.getvalue()


def _roundtrip(model, binary, **kw):
    return svdistill.read(io.BytesIO(_bytes_of(model, binary=binary, **kw)))


# ------------------------------------------------------------- zero copy

def test_weight_is_a_view_of_the_model(fixtures_dir):
    m = svdistill.read(fixtures_dir / "tiny_mlp.nnet.bin")
    c = m.components[0]
    w = c.weight
    assert w.dtype == np.float32 and w.shape == (64, 40)
    assert w.flags["C_CONTIGUOUS"] and w.flags["WRITEABLE"] and not w.flags["OWNDATA"]
    assert np.shares_memory(w, c.weight)
    assert np.shares_memory(w, c.params["linearity"])
    assert np.shares_memory(c.bias, c.params["bias"])
    assert not np.shares_memory(w, c.bias)


@pytest.mark.parametrize("binary", [True, False])
def test_in_place_edits_change_what_is_written(fixtures_dir, binary):
    m = svdistill.read(fixtures_dir / "tiny_mlp.nnet.bin")
    original = (fixtures_dir / "tiny_mlp.nnet.bin").read_bytes()
    c = m.components[2]
    c.weight[5, 7] = 123.5          # through the property
    w = c.weight
    w[0, :] *= 0                    # through a kept view
    c.bias[:] = np.arange(64, dtype=np.float32)
    m.components[4].params["linearity"][9, 63] = -7.25
    out = _bytes_of(m, binary=binary)
    assert out != (original if binary else (fixtures_dir / "tiny_mlp.nnet.txt").read_bytes())
    back = svdistill.read(io.BytesIO(out))
    b = back.components[2]
    assert b.weight[5, 7] == 123.5
    assert not b.weight[0].any()
    assert np.array_equal(b.bias, np.arange(64, dtype=np.float32))
    assert back.components[4].weight[9, 63] == -7.25
    # everything else untouched
    ref = svdistill.read(fixtures_dir / "tiny_mlp.nnet.bin")
    assert np.array_equal(back.components[0].weight, ref.components[0].weight)
    mask = np.ones((64, 64), bool)
    mask[5, 7] = mask[0, :] = False
    assert np.array_equal(b.weight[mask], ref.components[2].weight[mask])
    if binary:  # the patched float sits where Kaldi's layout says it does
        start = [i for i in range(len(out)) if out.startswith(b"FM ", i)][1] + 13
        assert struct.unpack_from("<f", out, start + 4 * (5 * 64 + 7))[0] == 123.5


def test_view_outlives_model(fixtures_dir):
    ref = svdistill.read(fixtures_dir / "tiny_mlp.nnet.bin").components[0].weight.copy()
    w = svdistill.read(fixtures_dir / "tiny_mlp.nnet.bin").components[0].weight
    gc.collect()
    junk = [np.random.default_rng(i).random((64, 40), dtype=np.float32) for i in range(50)]
    assert np.array_equal(w, ref)
    del junk


def test_streamed_component_views(fixtures_dir):
    """Components from iter_components are independent of the stream's later components."""
    comps = list(svdistill.iter_components(fixtures_dir / "dnn.nnet.bin"))
    ws = [c.weight for c in comps if c.kind == "AffineTransform"]
    ref = svdistill.read(fixtures_dir / "dnn.nnet.txt")
    for w, c in zip(ws, [c for c in ref if c.kind == "AffineTransform"]):
        assert np.array_equal(w, c.weight)
    for a in range(len(ws)):
        for b in range(a + 1, len(ws)):
            assert not np.shares_memory(ws[a], ws[b])


@pytest.mark.parametrize("binary", [False, True])
def test_large_blocks_are_aligned_and_never_shared(binary, tmp_path):
    """Blocks of 2 MB and more come from their own 2 MB-aligned mappings (huge
    pages, full-speed reads), and the allocator hands the last freed one to the
    next large allocation: a block still in use must never be handed out again."""
    rng = np.random.default_rng(0)
    comps = []
    for out, inp in [(1024, 600), (700, 1024), (1024, 700), (1024, 1024)]:  # 2.3-4 MB
        comps += [Component.affine(rng.standard_normal((out, inp), dtype=np.float32),
                                   rng.standard_normal(out, dtype=np.float32)),
                  Component.activation("Sigmoid", out)]
    model = Model(comps[:-1])
    path = tmp_path / ("m.bin" if binary else "m.txt")
    svdistill.write(model, path, binary=binary)
    ref = [c.weight.copy() for c in model if c.kind == "AffineTransform"]

    kept = []  # (layer, weight): every other layer's weight outlives its component
    for _ in range(2):
        layer = 0
        for c in svdistill.iter_components(path):  # each component freed as the next is read
            if c.kind == "AffineTransform":
                if layer % 2 == 0:
                    kept.append((layer, c.weight))
                layer += 1
        gc.collect()
    kept += list(enumerate(c.weight for c in svdistill.read(path) if c.kind == "AffineTransform"))
    for layer, w in kept:
        assert np.array_equal(w, ref[layer])
        if sys.platform.startswith("linux"):
            assert w.ctypes.data % (2 << 20) == 0
    for a in range(len(kept)):
        for b in range(a + 1, len(kept)):
            assert not np.shares_memory(kept[a][1], kept[b][1])


# ----------------------------------------------------------------- setters

def test_weight_setter_copies_with_shape_check(fixtures_dir):
    m = svdistill.read(fixtures_dir / "tiny_mlp.nnet.bin")
    c = m.components[4]  # 10 x 64
    view = c.weight
    new = np.linspace(-1, 1, 640).reshape(10, 64)  # float64: cast to float32
    c.weight = new
    assert np.array_equal(c.weight, new.astype(np.float32))
    assert np.shares_memory(view, c.weight)  # same storage, values copied in
    assert np.array_equal(view, new.astype(np.float32))
    kept = c.weight.copy()
    new[0, 0] = 99.0
    assert c.weight[0, 0] != 99.0  # the setter copied
    for bad in [np.zeros((64, 10)), np.zeros((10, 63)), np.zeros(640), np.zeros((1, 10, 64)), np.zeros((0, 0))]:
        with pytest.raises(svdistill.Error, match=r"shape \(10, 64\)"):
            c.weight = bad
    assert np.array_equal(c.weight, kept)  # a refused assignment changes nothing
    with pytest.raises(svdistill.Error, match=r"shape \(10,\)"):
        c.bias = np.zeros(11)
    c.bias = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert c.bias.tolist() == list(range(1, 11))


def test_setters_on_kinds_without_that_parameter():
    s = Component.activation("Sigmoid", 4)
    assert s.weight is None and s.bias is None and s.params == {}
    with pytest.raises(svdistill.Error, match="no parameter"):
        s.weight = np.zeros((4, 4))
    lin = Component.linear(np.eye(3, 2, dtype=np.float32))
    assert lin.bias is None
    with pytest.raises(svdistill.Error):
        lin.bias = np.zeros(3)
    assert s.learn_rate_coef is None
    with pytest.raises(svdistill.Error, match="no coefficient"):
        s.learn_rate_coef = 0.5


def test_coefficient_setters(fixtures_dir):
    m = svdistill.read(fixtures_dir / "tiny_mlp.nnet.txt")
    c = m.components[0]
    c.learn_rate_coef, c.bias_learn_rate_coef, c.max_norm = 0.5, 0.25, 2.5
    assert c.coefs == {"<LearnRateCoef>": 0.5, "<BiasLearnRateCoef>": 0.25, "<MaxNorm>": 2.5}
    text = _bytes_of(m, digits="kaldi")
    assert b"<AffineTransform> 64 40 \n<LearnRateCoef> 0.5 <BiasLearnRateCoef> 0.25 <MaxNorm> 2.5 \n" in text
    back = svdistill.read(io.BytesIO(_bytes_of(m, binary=True)))
    assert back.components[0].coefs == c.coefs


# ------------------------------------------------------------ constructors

W = (np.arange(12, dtype=np.float32).reshape(4, 3) - 5.5) / 3
B = np.array([0.5, -0.25, 1e-3, 3.0], np.float32)


def test_affine_constructor():
    c = Component.affine(W, B, learn_rate_coef=0.5, bias_learn_rate_coef=0.1, max_norm=2.0)
    assert c.kind == "AffineTransform" and c.marker == "<AffineTransform>"
    assert (c.input_dim, c.output_dim, c.num_params) == (3, 4, 16)
    assert np.array_equal(c.weight, W) and np.array_equal(c.bias, B)
    assert not np.shares_memory(c.weight, W)
    assert (c.learn_rate_coef, c.bias_learn_rate_coef, c.max_norm) == (0.5, np.float32(0.1), 2.0)
    z = Component.affine(W)
    assert np.array_equal(z.bias, np.zeros(4, np.float32))
    assert z.coefs == {"<LearnRateCoef>": 1.0, "<BiasLearnRateCoef>": 1.0, "<MaxNorm>": 0.0}
    with pytest.raises(svdistill.Error):
        Component.affine(np.zeros(3))
    with pytest.raises(svdistill.Error):
        Component.affine(W, np.zeros(3))


def test_linear_and_activation_constructors():
    c = Component.linear(W.T, learn_rate_coef=0.25)
    assert c.kind == "LinearTransform" and (c.input_dim, c.output_dim) == (4, 3)
    assert c.coefs == {"<LearnRateCoef>": 0.25} and c.num_params == 12
    for kind in ["Sigmoid", "Tanh", "Softmax", "HiddenSoftmax", "LengthNormComponent", "Relu", "Linear"]:
        a = Component.activation(kind, 5)
        assert a.kind == kind and (a.input_dim, a.output_dim, a.num_params) == (5, 5, 0)
    for bad in ["AffineTransform", "Splice", "BlockSoftmax", "NoSuchKind"]:
        with pytest.raises(svdistill.Error):
            Component.activation(bad, 5)
    # Kinds with one parameter vector per dim start from Kaldi's initial values.
    shift, scale = Component.activation("AddShift", 3), Component.activation("Rescale", 3)
    prelu = Component.activation("ParametricRelu", 3)
    assert shift.params["shift_data"].tolist() == [0, 0, 0] and scale.params["scale_data"].tolist() == [1, 1, 1]
    assert prelu.params["alpha"].tolist() == [1, 1, 1] and prelu.params["beta"].tolist() == [0, 0, 0]
    assert Component.activation("Dropout", 4).coefs == {"<DropoutRate>": 0.5}
    m = Model([shift, scale, prelu, Component.activation("Dropout", 3)])
    import io
    for binary in (False, True):
        buf = io.BytesIO()
        svdistill.write(m, buf, binary=binary)
        back = svdistill.read(io.BytesIO(buf.getvalue()))
        assert [c.kind for c in back] == ["AddShift", "Rescale", "ParametricRelu", "Dropout"]


def _built_model():
    return Model([
        Component.linear(W.T.copy(), learn_rate_coef=0.25),  # 4 -> 3
        Component.affine(W, B, learn_rate_coef=0.5, bias_learn_rate_coef=0.1, max_norm=2.0),  # 3 -> 4
        Component.activation("Sigmoid", 4),
        Component.affine(W.T.copy() * np.float32(1e-7), B[:3]),  # 4 -> 3 (tiny values)
        Component.activation("Tanh", 3),
        Component.affine(np.full((2, 3), -0.0, np.float32)),  # 3 -> 2, negative zeros
        Component.activation("Softmax", 2),
    ])


@pytest.mark.parametrize("binary", [False, True])
def test_constructed_model_round_trips(models_equal, binary):
    m = _built_model()
    assert (m.input_dim, m.output_dim, len(m)) == (4, 2, 7)
    assert m.num_params == 12 + 16 + 15 + 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = _roundtrip(m, binary)
    assert back.binary is binary and back.dialect == "kaldi"
    models_equal(back, m, exact_marker=True)
    assert np.signbit(back.components[5].weight).all()  # -0.0 survives


def test_constructed_model_kaldi_text_layout():
    m = Model([Component.affine(np.array([[1, 2], [3, 4], [5, 6]], np.float32), np.array([0.5, -0.5, 1e-3])),
               Component.activation("Sigmoid", 3)])
    assert _bytes_of(m, digits="kaldi") == (
        b"<Nnet> \n<AffineTransform> 3 2 \n<LearnRateCoef> 1 <BiasLearnRateCoef> 1 <MaxNorm> 0 \n"
        b" [\n  1 2 \n  3 4 \n  5 6 ]\n [ 0.5 -0.5 0.001 ]\n<!EndOfComponent> \n"
        b"<Sigmoid> 3 3 \n<!EndOfComponent> \n</Nnet> \n")


@pytest.mark.parametrize("binary", [False, True])
def test_relu_and_linear_activations_round_trip(binary):
    m = Model([Component.affine(W, B), Component.activation("Relu", 4), Component.activation("Linear", 4)])
    if binary:
        with pytest.warns(ConversionWarning):
            back = _roundtrip(m, True)
        assert [c.kind for c in back] == ["AffineTransform", "ParametricRelu"]
    else:
        back = _roundtrip(m, False, dialect="pdnn")
        assert [c.kind for c in back] == ["AffineTransform", "Relu", "Linear"]
        assert back.dialect == "pdnn"


def test_write_iterable_of_components(models_equal):
    m = _built_model()
    out = io.BytesIO()
    svdistill.write(iter(m.components), out)  # a plain iterable: Kaldi text by default
    assert out.getvalue().startswith(b"<Nnet> \n")
    models_equal(svdistill.read(io.BytesIO(out.getvalue())), m)


def test_component_copy_is_deep(fixtures_dir):
    c = svdistill.read(fixtures_dir / "lrcoef.nnet.bin").components[2]
    d = c.copy()
    assert d.kind == c.kind and d.coefs == c.coefs
    assert np.array_equal(d.weight, c.weight) and not np.shares_memory(d.weight, c.weight)
    d.weight[0, 0] += 1
    d.max_norm = 7.0
    assert d.weight[0, 0] != c.weight[0, 0]
    assert c.max_norm == 2.5 and d.max_norm == 7.0


def test_model_sequence_protocol(fixtures_dir):
    m = svdistill.read(fixtures_dir / "extras.nnet.bin")
    assert len(m) == 9 and m[0].kind == "Splice" and [c.kind for c in m][-1] == "HiddenSoftmax"
    assert [c.kind for c in m[1:3]] == ["AddShift", "Rescale"]
    assert m[0].ints.tolist() == [-2, 0, 2]
    assert m[3].ints.tolist() == list(range(1, 120, 2))  # Copy: 1-based, as in the file
    assert m[1].params["shift_data"].shape == (120,)
    assert m[0].weight is None and m[0].raw is None
    assert "Splice" in repr(m)


def test_unknown_component_kept_as_raw_bytes():
    src = b"<Nnet>\n<Foo> 3 3 bar <Baz> 1 2\n<!EndOfComponent>\n<Sigmoid> 3 3\n</Nnet>\n"
    m = svdistill.read(io.BytesIO(src))
    u = m.components[0]
    assert (u.kind, u.marker, u.input_dim, u.output_dim) == ("Unknown", "<Foo>", 3, 3)
    assert u.num_params is None and u.raw == b" bar <Baz> 1 2\n"
    assert m.components[1].kind == "Sigmoid"
    with pytest.warns(ConversionWarning, match="does not know"):
        out = _bytes_of(m)
    assert b"<Foo> 3 3 bar <Baz> 1 2\n<!EndOfComponent> \n<Sigmoid> 3 3 \n" in out
    d = svdistill.info(io.BytesIO(out))
    assert d["num_params"] == m.num_params == 0 and d["uncounted"] == m.uncounted == [1]
    with pytest.raises(svdistill.Error, match="raw"):
        _bytes_of(m, binary=True)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_large_blocks_and_threads_after_fork(tmp_path):
    """A forked child (as data loaders make) reads models through its own idle
    block slot and its own worker threads (the parent's do not exist in the
    child): no deadlock, same values, and the parent goes on as before."""
    script = r'''
import os, sys, numpy as np, svdistill
from svdistill import linalg
binary, text = sys.argv[1:]
rng = np.random.default_rng(0)
w = rng.standard_normal((1024, 1024), dtype=np.float32)
svdistill.write(svdistill.Model([svdistill.Component.affine(w)]), binary, binary=True)
svdistill.write(svdistill.Model([svdistill.Component.affine(w)]), text, binary=False)
linalg.set_num_threads(2)
for path in (binary, text):
    for _ in range(3):
        svdistill.read(path)  # leaves a freed block idle; starts the workers
pid = os.fork()
if pid == 0:
    ok = all(np.array_equal(svdistill.read(p).components[0].weight, w) for p in (binary, text) * 3)
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert all(np.array_equal(svdistill.read(p).components[0].weight, w) for p in (binary, text))
print("ok")
'''
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "m.nnet"), str(tmp_path / "m.txt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_dropped_model_memory_goes_back_to_the_system(tmp_path):
    """Freed weight blocks are kept for reuse only while a reader runs: a model
    dropped afterwards returns its memory at once (no block left idle)."""
    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4096, 2048), dtype=np.float32)  # 32 MB
    path = tmp_path / "big.nnet"
    svdistill.write(Model([Component.affine(w)]), path, binary=True)
    del w
    gc.collect()
    m = svdistill.read(path)
    assert m.components[0].weight.shape == (4096, 2048)
    before = rss_mb()
    del m
    gc.collect()
    assert before - rss_mb() >= 28, (before, rss_mb())
