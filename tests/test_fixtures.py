"""svdistill against genuine Kaldi outputs (see MANIFEST.md of the fixtures).

Every fixture model: text -> binary byte-identical to nnet-copy's binary;
binary -> text (digits='kaldi') byte-identical to nnet-copy's text; info equal
to nnet-info (statistics numerically, everything else exactly); the default
shortest digits re-read to the very same float32 values.
"""
from __future__ import annotations

import io
import re
import struct
from pathlib import Path

import numpy as np
import pytest

import svdistill
from svdistill.info import format_info

# name: (text file or None, binary file, nnet-info output)
MODELS = {
    "tiny_mlp": ("tiny_mlp.nnet.txt", "tiny_mlp.nnet.bin", "tiny_mlp.info.txt"),
    "dnn": ("dnn.nnet.txt", "dnn.nnet.bin", "dnn.info.txt"),
    "mixed": ("mixed.nnet.txt", "mixed.nnet.bin", "mixed.info.txt"),
    "lrcoef": ("lrcoef.nnet.txt", "lrcoef.nnet.bin", "lrcoef.info.txt"),
    "extras": ("extras.nnet.txt", "extras.nnet.bin", "extras.info.txt"),
    "feature_transform": ("final.feature_transform", "final.feature_transform.bin",
                          "final.feature_transform.info.txt"),
    "dnn_with_ft": (None, "dnn_with_ft.nnet.bin", "dnn_with_ft.info.txt"),
}
WITH_TEXT = [k for k, v in MODELS.items() if v[0]]

# What the MANIFEST says each model is (kinds in order).
EXPECTED_KINDS = {
    "tiny_mlp": ["AffineTransform", "Sigmoid", "AffineTransform", "Sigmoid", "AffineTransform", "Softmax"],
    "dnn": ["AffineTransform", "Sigmoid"] * 3 + ["AffineTransform", "Softmax"],
    "mixed": ["LinearTransform", "AffineTransform", "Tanh", "AffineTransform", "ParametricRelu",
              "Dropout", "AffineTransform", "BlockSoftmax"],
    "lrcoef": ["AddShift", "Rescale", "AffineTransform", "Sigmoid", "LinearTransform",
               "AffineTransform", "ParametricRelu", "AffineTransform", "Softmax"],
    "extras": ["Splice", "AddShift", "Rescale", "Copy", "AffineTransform", "Sigmoid",
               "LengthNormComponent", "AffineTransform", "HiddenSoftmax"],
    "feature_transform": ["Splice", "AddShift", "Rescale"],
    "dnn_with_ft": ["Splice", "AddShift", "Rescale"] + ["AffineTransform", "Sigmoid"] * 3
                   + ["AffineTransform", "Softmax"],
}


def _bytes_of(model, **kw) -> bytes:
    buf = io.BytesIO()
    svdistill.write(model, buf, **kw)
    return buf.getvalue()


def _paths(fixtures_dir: Path, name: str):
    t, b, i = MODELS[name]
    return (fixtures_dir / t if t else None), fixtures_dir / b, fixtures_dir / i


@pytest.mark.parametrize("name", WITH_TEXT)
def test_text_to_binary_is_kaldi_binary(fixtures_dir, name):
    txt, binf, _ = _paths(fixtures_dir, name)
    m = svdistill.read(txt)
    assert m.binary is False
    assert _bytes_of(m, binary=True) == binf.read_bytes()


@pytest.mark.parametrize("name", WITH_TEXT)
def test_binary_to_text_kaldi_digits_is_kaldi_text(fixtures_dir, name):
    txt, binf, _ = _paths(fixtures_dir, name)
    m = svdistill.read(binf)
    assert m.binary is True and m.dialect == "kaldi"
    assert _bytes_of(m, binary=False, digits="kaldi") == txt.read_bytes()


@pytest.mark.parametrize("name", WITH_TEXT)
def test_streamed_copies_are_kaldi_bytes(fixtures_dir, name, tmp_path):
    """Same through iter_components -> write to a path (the CLI's route)."""
    txt, binf, _ = _paths(fixtures_dir, name)
    out_b, out_t = tmp_path / "o.bin", tmp_path / "o.txt"
    svdistill.write(svdistill.iter_components(txt), out_b, binary=True)
    svdistill.write(svdistill.iter_components(binf), out_t, binary=False, digits="kaldi")
    assert out_b.read_bytes() == binf.read_bytes()
    assert out_t.read_bytes() == txt.read_bytes()


@pytest.mark.parametrize("name", list(MODELS))
def test_same_encoding_copy_is_identity(fixtures_dir, name):
    txt, binf, _ = _paths(fixtures_dir, name)
    assert _bytes_of(svdistill.read(binf)) == binf.read_bytes()  # default: the input's encoding
    if txt:
        assert _bytes_of(svdistill.read(txt), digits="kaldi") == txt.read_bytes()


def test_dnn_with_ft_text_is_the_concatenation(fixtures_dir):
    """nnet-concat(final.feature_transform, dnn): its text is the two texts joined."""
    m = svdistill.read(fixtures_dir / "dnn_with_ft.nnet.bin")
    ft = (fixtures_dir / "final.feature_transform").read_bytes()
    dnn = (fixtures_dir / "dnn.nnet.txt").read_bytes()
    assert ft.endswith(b"</Nnet> \n") and dnn.startswith(b"<Nnet> \n")
    expected = ft[: -len(b"</Nnet> \n")] + dnn[len(b"<Nnet> \n"):]
    assert _bytes_of(m, binary=False, digits="kaldi") == expected
    # ... and back to binary gives nnet-concat's bytes.
    again = svdistill.read(io.BytesIO(expected))
    assert _bytes_of(again, binary=True) == (fixtures_dir / "dnn_with_ft.nnet.bin").read_bytes()


@pytest.mark.parametrize("name,encoding", [(n, "bin") for n in MODELS] + [(n, "txt") for n in WITH_TEXT])
def test_info_matches_nnet_info(fixtures_dir, info_checks, name, encoding):
    assert_text, assert_dict, _ = info_checks
    txt, binf, inf = _paths(fixtures_dir, name)
    src = binf if encoding == "bin" else txt
    ref = inf.read_text()
    d = svdistill.info(src)
    assert d["binary"] is (encoding == "bin")
    assert d["dialect"] == "kaldi"
    assert_dict(d, ref)
    assert_text(format_info(d), ref)


@pytest.mark.parametrize("name", list(MODELS))
def test_model_attributes(fixtures_dir, info_checks, name):
    _, _, parse = info_checks
    txt, binf, inf = _paths(fixtures_dir, name)
    ref = parse(inf.read_text())
    for src in filter(None, [binf, txt]):
        m = svdistill.read(src)
        assert [c.kind for c in m.components] == EXPECTED_KINDS[name]
        assert [c.marker for c in m.components] == [c["marker"] for c in ref["components"]]
        assert len(m) == ref["num_components"]
        assert m.input_dim == ref["input_dim"] and m.output_dim == ref["output_dim"]
        # Parameter count computed here from the arrays themselves.
        n = sum(int(p.size) for c in m.components for p in c.params.values())
        assert m.num_params == n
        assert "%g" % (n / 1e6) == ref["millions"]
        assert m.binary is (src == binf)
        assert m.dialect == "kaldi"
        for c in m.components:
            assert c.num_params == sum(int(p.size) for p in c.params.values())
            if c.kind in ("AffineTransform", "LinearTransform"):
                assert c.weight.shape == (c.output_dim, c.input_dim)
                assert c.weight.dtype == np.float32
            if c.kind == "AffineTransform":
                assert c.bias.shape == (c.output_dim,)


@pytest.mark.parametrize("name", list(MODELS))
def test_iter_components_matches_read(fixtures_dir, models_equal, name):
    _, binf, _ = _paths(fixtures_dir, name)
    stream = svdistill.iter_components(binf)
    assert stream.binary is True
    comps = list(stream)
    assert stream.dialect == "kaldi"
    models_equal(svdistill.Model(comps), svdistill.read(binf), exact_marker=True)


@pytest.mark.parametrize("name", WITH_TEXT)
def test_text_and_binary_hold_the_same_floats(fixtures_dir, models_equal, name):
    """MANIFEST: every X.nnet.txt re-reads to exactly X.nnet.bin."""
    txt, binf, _ = _paths(fixtures_dir, name)
    models_equal(svdistill.read(txt), svdistill.read(binf), exact_marker=True)


@pytest.mark.filterwarnings("ignore::svdistill.io.ConversionWarning")
@pytest.mark.parametrize("dialect", ["kaldi", "pdnn"])
@pytest.mark.parametrize("name", list(MODELS))
def test_shortest_digits_round_trip_exactly(fixtures_dir, models_equal, name, dialect):
    _, binf, _ = _paths(fixtures_dir, name)
    m = svdistill.read(binf)
    text = _bytes_of(m, binary=False, dialect=dialect)  # digits='shortest' is the default
    assert not text.startswith(b"\0B")
    back = svdistill.read(io.BytesIO(text))
    assert back.binary is False
    models_equal(back, m)
    # and the binary written from the re-read text is the original binary.
    assert _bytes_of(back, binary=True, dialect="kaldi") == binf.read_bytes()


def test_shortest_digits_are_exact_where_kaldi_digits_are_not(models_equal):
    """Floats that need 8-9 significant digits: 'shortest' keeps them, 'kaldi' rounds to 7."""
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**32, size=40000, dtype=np.uint64).astype(np.uint32)
    vals = bits.view(np.float32)
    vals = vals[np.isfinite(vals)]
    special = np.array([0.0, -0.0, 1e-45, -1e-45, 1.17549435e-38, 3.4028235e38, -3.4028235e38,
                        1 / 3, 0.1, 16777217.0, 123456789.0, 1e-10, 9.999999e-11, 2.5e-8],
                       dtype=np.float32)
    vals = np.concatenate([special, vals])
    n = len(vals) // 100 * 100
    w = vals[:n].reshape(-1, 100)
    m = svdistill.Model([svdistill.Component.affine(w, np.zeros(w.shape[0], np.float32))])
    back = svdistill.read(io.BytesIO(_bytes_of(m, binary=False)))
    assert np.array_equal(back.components[0].weight.view(np.uint32), w.view(np.uint32))
    k = svdistill.read(io.BytesIO(_bytes_of(m, binary=False, digits="kaldi"))).components[0].weight
    assert not np.array_equal(k, w)  # 7 digits do lose information ...
    np.testing.assert_allclose(k, w, rtol=6e-7, atol=0)  # ... but only in the 7th digit


# ----------------------------------------- independent parses with numpy

def _parse_tiny_text(text: str):
    """The <AffineTransform> blocks of a Kaldi text model, parsed with re + numpy only."""
    pat = re.compile(
        r"<AffineTransform> (\d+) (\d+) \n"
        r"<LearnRateCoef> (\S+) <BiasLearnRateCoef> (\S+) <MaxNorm> (\S+) \n"
        r" \[\n(.*?)\]\n"
        r" \[ (.*?) \]\n<!EndOfComponent> \n", re.S)
    out = []
    for m in pat.finditer(text):
        rows, cols = int(m.group(1)), int(m.group(2))
        lines = m.group(6).rstrip().split("\n")
        assert len(lines) == rows
        assert all(len(line.split()) == cols for line in lines)
        w = np.array([[np.float32(float(v)) for v in line.split()] for line in lines], dtype=np.float32)
        b = np.array([np.float32(float(v)) for v in m.group(7).split()], dtype=np.float32)
        out.append(dict(w=w, b=b, coefs=tuple(float(np.float32(m.group(i))) for i in (3, 4, 5))))
    return out


def _parse_tiny_binary(data: bytes):
    """Kaldi binary (Affine/Sigmoid/Softmax only) parsed with struct + numpy only."""
    assert data[:2] == b"\0B"
    pos = 2

    def tok():
        nonlocal pos
        end = data.index(b" ", pos)
        t = data[pos:end].decode()
        pos = end + 1
        return t

    def basic(fmt):
        nonlocal pos
        assert data[pos] == 4
        v = struct.unpack_from(fmt, data, pos + 1)[0]
        pos += 5
        return v

    def block(kind):
        nonlocal pos
        assert tok() == kind
        r = basic("<i") if kind == "FM" else 1
        c = basic("<i")
        a = np.frombuffer(data, dtype="<f4", count=r * c, offset=pos).astype(np.float32)
        pos += 4 * r * c
        return a.reshape(r, c) if kind == "FM" else a

    assert tok() == "<Nnet>"
    comps = []
    while True:
        t = tok()
        if t == "</Nnet>":
            break
        out_dim, in_dim = basic("<i"), basic("<i")
        c = dict(marker=t, out=out_dim, inp=in_dim)
        if t == "<AffineTransform>":
            coefs = []
            for name in ("<LearnRateCoef>", "<BiasLearnRateCoef>", "<MaxNorm>"):
                assert tok() == name
                coefs.append(float(basic("<f")))
            c.update(coefs=tuple(coefs), w=block("FM"), b=block("FV"))
        assert tok() == "<!EndOfComponent>"
        comps.append(c)
    assert pos == len(data)
    return comps


def test_tiny_mlp_weights_equal_independent_parses(fixtures_dir):
    text_blocks = _parse_tiny_text((fixtures_dir / "tiny_mlp.nnet.txt").read_text())
    bin_comps = _parse_tiny_binary((fixtures_dir / "tiny_mlp.nnet.bin").read_bytes())
    bin_blocks = [c for c in bin_comps if c["marker"] == "<AffineTransform>"]
    assert [c["marker"] for c in bin_comps] == ["<AffineTransform>", "<Sigmoid>"] * 2 + [
        "<AffineTransform>", "<Softmax>"]
    assert len(text_blocks) == len(bin_blocks) == 3
    for src in ("tiny_mlp.nnet.txt", "tiny_mlp.nnet.bin"):
        m = svdistill.read(fixtures_dir / src)
        affines = [c for c in m.components if c.kind == "AffineTransform"]
        assert len(affines) == 3
        for c, t, b in zip(affines, text_blocks, bin_blocks):
            assert c.weight.shape == t["w"].shape == b["w"].shape == (c.output_dim, c.input_dim)
            assert np.array_equal(c.weight, t["w"]) and np.array_equal(c.weight, b["w"])
            assert np.array_equal(c.bias, t["b"]) and np.array_equal(c.bias, b["b"])
            coefs = (c.learn_rate_coef, c.bias_learn_rate_coef, c.max_norm)
            assert coefs == t["coefs"] == b["coefs"]
    assert [c["out"] for c in bin_comps] == [64, 64, 64, 64, 10, 10]
    assert bin_blocks[-1]["coefs"] == (1.0, float(np.float32(0.1)), 0.0)


def _read_text_ark(path: Path):
    out = {}
    for m in re.finditer(r"(\S+)\s+\[\s*(.*?)\]", path.read_text(), re.S):
        rows = [list(map(float, line.split())) for line in m.group(2).strip().split("\n")]
        out[m.group(1)] = np.array(rows)
    return out


def test_tiny_mlp_weights_reproduce_nnet_forward(fixtures_dir):
    """Weights are (out, in) and biases line up: a numpy forward pass matches nnet-forward."""
    m = svdistill.read(fixtures_dir / "tiny_mlp.nnet.bin")
    feats = _read_text_ark(fixtures_dir / "feats.txt")
    ref = _read_text_ark(fixtures_dir / "tiny_mlp.fwd.txt")
    assert sorted(feats) == sorted(ref) == ["utt1", "utt2", "utt3"]
    for utt, x in feats.items():
        h = x
        for c in m.components:
            if c.kind == "AffineTransform":
                h = h @ c.weight.astype(np.float64).T + c.bias
            elif c.kind == "Sigmoid":
                h = 1 / (1 + np.exp(-h))
            elif c.kind == "Softmax":
                e = np.exp(h - h.max(axis=1, keepdims=True))
                h = e / e.sum(axis=1, keepdims=True)
        assert h.shape == ref[utt].shape == (50, 10)
        np.testing.assert_allclose(h, ref[utt], atol=2e-6, rtol=0)
