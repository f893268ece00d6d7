"""The hand-written edge cases of the fixtures (edge/*.nnet, edge/nan_weight_binary.bin).

svdistill accepts and rejects exactly what Kaldi does (NAME.result.txt), with
two deliberate deviations: PDNN's <relu> (unknown_relu, unknown_relu_wrapped)
is a first-class activation, written to Kaldi as <ParametricRelu> alpha 1 beta 0.
"""
from __future__ import annotations

import io
import re
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

import svdistill
from svdistill.info import format_info
from svdistill.io import ConversionWarning

EDGE_INPUTS = [
    "chain_mismatch.nnet", "dim_mismatch.nnet", "empty.nnet", "inf_weight.nnet",
    "inline_bracket.nnet", "linear_transform.nnet", "lowercase_eoc.nnet",
    "lowercase_learnratecoef.nnet", "lowercase_nnet_wrapper.nnet", "lowercase_nowrapper.nnet",
    "nan_weight.nnet", "nan_weight_binary.bin", "no_end_tag.nnet", "ragged_rows.nnet",
    "reordered_coefs.nnet", "softmax_only.nnet", "unknown_relu.nnet", "unknown_relu_wrapped.nnet",
]
DEVIATIONS = {"unknown_relu", "unknown_relu_wrapped"}  # Kaldi rejects, svdistill accepts on purpose
KALDI_ACCEPTED = ["empty", "inline_bracket", "linear_transform", "lowercase_nowrapper",
                  "no_end_tag", "reordered_coefs", "softmax_only"]
KALDI_REJECTED = ["chain_mismatch", "dim_mismatch", "inf_weight", "lowercase_eoc",
                  "lowercase_learnratecoef", "lowercase_nnet_wrapper", "nan_weight",
                  "nan_weight_binary", "ragged_rows"]

# What the FormatError must say and where (line/column as an editor counts them).
REJECT = {
    "chain_mismatch": dict(phrases=["does not match", "input dim 2", "output dim 3"],
                           line=6, column=1, component=2, marker="<Sigmoid>"),
    "dim_mismatch": dict(phrases=["2 rows", "header says 3"], line=3, component=1,
                         marker="<AffineTransform>"),
    "inf_weight": dict(phrases=["non-finite", "'inf'"], line=5, column=4, component=1,
                       marker="<AffineTransform>"),
    "lowercase_eoc": dict(phrases=["<!EndOfComponent>", "<!endofcomponent>"], line=7, column=1,
                          component=1, marker="<AffineTransform>"),
    "lowercase_learnratecoef": dict(phrases=["unknown token", "<learnratecoef>"], line=3,
                                    component=1, marker="<AffineTransform>"),
    "lowercase_nnet_wrapper": dict(phrases=["case-sensitive", "<Nnet>"], line=2, column=1,
                                   component=1, marker="<nnet>"),
    "nan_weight": dict(phrases=["non-finite", "'nan'"], line=5, column=4, component=1,
                       marker="<AffineTransform>"),
    "ragged_rows": dict(phrases=["ragged"], line=3, column=6, component=1, marker="<AffineTransform>"),
    "nan_weight_binary": dict(phrases=["non-finite", "nan", "row 1, column 2"], component=1,
                              marker="<AffineTransform>"),
}


def _input(edge_dir: Path, stem: str) -> Path:
    return edge_dir / (stem + (".bin" if stem == "nan_weight_binary" else ".nnet"))


def _kaldi_rcs(edge_dir: Path, stem: str):
    rcs = [int(x) for x in re.findall(r"^rc=(\d+)$", (edge_dir / f"{stem}.result.txt").read_text(), re.M)]
    assert rcs, f"no rc= lines in {stem}.result.txt"
    return rcs


def _bytes_of(model, **kw) -> bytes:
    buf = io.BytesIO()
    svdistill.write(model, buf, **kw)
    return buf.getvalue()


def test_edge_inputs_are_the_known_ones(edge_dir):
    """The lists here cover every edge input (a new fixture must be classified)."""
    present = sorted(p.name for p in edge_dir.iterdir()
                     if p.suffix == ".nnet" or p.name == "nan_weight_binary.bin")
    assert present == sorted(EDGE_INPUTS)
    stems = {n.rsplit(".", 1)[0] for n in EDGE_INPUTS}
    assert stems == set(KALDI_ACCEPTED) | set(KALDI_REJECTED) | DEVIATIONS
    for stem in stems:  # the classification above agrees with Kaldi's exit codes
        accepted = all(rc == 0 for rc in _kaldi_rcs(edge_dir, stem))
        assert accepted == (stem in KALDI_ACCEPTED), stem


@pytest.mark.parametrize("stem", sorted(n.rsplit(".", 1)[0] for n in EDGE_INPUTS))
def test_accept_or_reject_like_kaldi(edge_dir, stem):
    path = _input(edge_dir, stem)
    kaldi_ok = all(rc == 0 for rc in _kaldi_rcs(edge_dir, stem))
    if stem in DEVIATIONS:
        assert not kaldi_ok
        kaldi_ok = True  # deliberate deviation: PDNN <relu> is accepted
    if kaldi_ok:
        m = svdistill.read(path)
        info = svdistill.info(path)
        assert info["num_components"] == len(m)
    else:
        with pytest.raises(svdistill.FormatError):
            svdistill.read(path)
        with pytest.raises(svdistill.FormatError):
            svdistill.info(path)
        with pytest.raises(svdistill.FormatError):
            list(svdistill.iter_components(path))


@pytest.mark.parametrize("stem", KALDI_ACCEPTED)
def test_accepted_copies_match_nnet_copy(edge_dir, stem):
    path = _input(edge_dir, stem)
    m = svdistill.read(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing here needs converting
        got_bin = _bytes_of(m, binary=True)
        got_txt = _bytes_of(m, binary=False, dialect="kaldi", digits="kaldi")
    assert got_bin == (edge_dir / f"{stem}.copy.bin").read_bytes()
    assert got_txt == (edge_dir / f"{stem}.copy.txt").read_bytes()
    # Shortest digits give the same text for these short decimals.
    assert _bytes_of(m, binary=False, dialect="kaldi") == got_txt


@pytest.mark.parametrize("stem", KALDI_ACCEPTED)
def test_accepted_copies_via_paths_and_streams(edge_dir, stem, tmp_path):
    path = _input(edge_dir, stem)
    out = tmp_path / "out.bin"
    svdistill.write(svdistill.iter_components(path), out, binary=True)
    assert out.read_bytes() == (edge_dir / f"{stem}.copy.bin").read_bytes()
    out = tmp_path / "out.txt"
    svdistill.write(svdistill.iter_components(path), out, binary=False, dialect="kaldi", digits="kaldi")
    assert out.read_bytes() == (edge_dir / f"{stem}.copy.txt").read_bytes()


@pytest.mark.parametrize("stem", KALDI_ACCEPTED)
def test_accepted_info_matches_nnet_info(edge_dir, info_checks, stem):
    assert_text, assert_dict, _ = info_checks
    ref = (edge_dir / f"{stem}.info.txt").read_text()
    d = svdistill.info(_input(edge_dir, stem))
    assert_dict(d, ref)
    assert_text(format_info(d), ref)
    # Kaldi's copies give the same info as the input.
    assert_text(format_info(svdistill.info(edge_dir / f"{stem}.copy.bin")), ref)
    assert_text(format_info(svdistill.info(edge_dir / f"{stem}.copy.txt")), ref)


def test_accepted_values_and_dialects(edge_dir):
    m = svdistill.read(edge_dir / "inline_bracket.nnet")
    assert m.components[0].bias.tolist() == [0.5, -0.5, np.float32(1e-3)]
    assert m.components[0].weight.tolist() == [[1, 2], [3, 4], [5, 6]]
    m = svdistill.read(edge_dir / "reordered_coefs.nnet")
    c = m.components[0]
    assert (c.learn_rate_coef, c.bias_learn_rate_coef, c.max_norm) == (0.25, 0.5, 3.0)
    assert list(c.coefs) == ["<LearnRateCoef>", "<BiasLearnRateCoef>", "<MaxNorm>"]
    m = svdistill.read(edge_dir / "lowercase_nowrapper.nnet")
    assert m.dialect == "pdnn"
    assert [c.marker for c in m.components] == ["<affinetransform>", "<sigmoid>", "<affinetransform>", "<softmax>"]
    assert [c.learn_rate_coef for c in m.components] == [1.0, None, 1.0, None]
    for stem in ["empty", "inline_bracket", "linear_transform", "no_end_tag", "reordered_coefs", "softmax_only"]:
        assert svdistill.read(_input(edge_dir, stem)).dialect == "kaldi", stem
    m = svdistill.read(edge_dir / "empty.nnet")
    assert len(m) == 0 and m.input_dim == 0 and m.output_dim == 0 and m.num_params == 0


@pytest.mark.parametrize("stem", KALDI_REJECTED)
def test_rejection_message(edge_dir, stem):
    path = _input(edge_dir, stem)
    spec = REJECT[stem]
    with pytest.raises(svdistill.FormatError) as ei:
        svdistill.read(path)
    e = ei.value
    msg = str(e)
    assert isinstance(e, svdistill.Error)
    assert e.file == str(path)
    assert msg.startswith(str(path) + ":"), msg
    for p in spec["phrases"]:
        assert p in msg, f"{p!r} not in {msg!r}"
    assert e.component_index == spec["component"]
    assert e.marker == spec["marker"]
    assert f"component {spec['component']} {spec['marker']}" in msg
    if path.suffix == ".bin":
        assert e.line is None and e.column is None
        assert f": byte {e.offset}:" in msg
    else:
        assert e.line == spec["line"], msg
        assert re.match(re.escape(str(path)) + rf":{e.line}:{e.column}: ", msg), msg
        if "column" in spec:
            assert e.column == spec["column"], msg
        # offset agrees with line:column
        text = path.read_bytes()
        line_start = 0 if e.line == 1 else [i for i, b in enumerate(text) if b == 10][e.line - 2] + 1
        assert e.offset == line_start + e.column - 1, (e.offset, e.line, e.column)


def test_nan_weight_binary_points_at_the_nan(edge_dir):
    path = edge_dir / "nan_weight_binary.bin"
    data = path.read_bytes()
    # W[0][1]: FM + size-byte int rows + size-byte int cols, then row-major float32.
    fm = data.index(b"FM ")
    assert data[fm + 3] == 4 and data[fm + 8] == 4
    rows, cols = struct.unpack_from("<i", data, fm + 4)[0], struct.unpack_from("<i", data, fm + 9)[0]
    assert (rows, cols) == (3, 2)
    nan_at = fm + 3 + 10 + 4 * 1
    assert np.isnan(np.frombuffer(data, "<f4", 1, nan_at)[0])
    with pytest.raises(svdistill.FormatError) as ei:
        svdistill.read(path)
    assert ei.value.offset == nan_at
    assert f"byte {nan_at}" in str(ei.value)


def test_unknown_token_column_points_at_the_token(edge_dir):
    with pytest.raises(svdistill.FormatError) as ei:
        svdistill.read(edge_dir / "lowercase_learnratecoef.nnet")
    assert (ei.value.line, ei.value.column) == (3, 1), str(ei.value)


# ------------------------------------------- the deliberate deviation: <relu>

PRELU_TXT = (b"<ParametricRelu> 3 3 \n<AlphaLearnRateCoef> 0 <BetaLearnRateCoef> 0 \n"
             b" [ 1 1 1 ]\n [ 0 0 0 ]\n<!EndOfComponent> \n")


def _i32(v):
    return b"\x04" + struct.pack("<i", v)


def _f32(v):
    return b"\x04" + struct.pack("<f", v)


PRELU_BIN = (b"<ParametricRelu> " + _i32(3) + _i32(3)
             + b"<AlphaLearnRateCoef> " + _f32(0) + b"<BetaLearnRateCoef> " + _f32(0)
             + b"FV " + _i32(3) + struct.pack("<3f", 1, 1, 1)
             + b"FV " + _i32(3) + struct.pack("<3f", 0, 0, 0)
             + b"<!EndOfComponent> ")
SIGMOID_TXT = b"<Sigmoid> 3 3 \n<!EndOfComponent> \n"
SIGMOID_BIN = b"<Sigmoid> " + _i32(3) + _i32(3) + b"<!EndOfComponent> "


@pytest.mark.parametrize("stem", sorted(DEVIATIONS))
def test_pdnn_relu_is_read(edge_dir, stem):
    m = svdistill.read(edge_dir / f"{stem}.nnet")
    relu = m.components[1]
    assert relu.kind == "Relu"
    assert relu.marker == "<relu>"
    assert (relu.input_dim, relu.output_dim) == (3, 3)
    assert relu.num_params == 0 and relu.params == {}
    assert m.dialect == ("pdnn" if stem == "unknown_relu" else "kaldi")
    assert [c.kind for c in m.components] == (
        ["AffineTransform", "Relu", "AffineTransform", "Softmax"] if stem == "unknown_relu"
        else ["AffineTransform", "Relu"])


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("stem", sorted(DEVIATIONS))
def test_relu_written_as_kaldi_parametric_relu(edge_dir, stem, binary):
    m = svdistill.read(edge_dir / f"{stem}.nnet")
    with pytest.warns(ConversionWarning, match=r"converted 1 PDNN <relu> component to Kaldi's "
                                               r"<ParametricRelu> with alpha 1, beta 0"):
        out = _bytes_of(m, binary=binary, dialect="kaldi", digits="kaldi")
    assert b"<relu>" not in out
    back = svdistill.read(io.BytesIO(out))
    assert back.dialect == "kaldi" and back.binary is binary
    p = back.components[1]
    assert p.kind == "ParametricRelu" and p.marker == "<ParametricRelu>"
    assert (p.input_dim, p.output_dim) == (3, 3)
    assert set(p.params) == {"alpha", "beta"}
    assert p.params["alpha"].shape == p.params["beta"].shape == (3,)
    assert np.all(p.params["alpha"] == 1.0)
    assert np.all(p.params["beta"] == 0.0)
    assert p.coefs == {"<AlphaLearnRateCoef>": 0.0, "<BetaLearnRateCoef>": 0.0}
    # The Kaldi output is a plain Kaldi model: writing it again converts nothing.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _bytes_of(back, binary=binary, dialect="kaldi", digits="kaldi") == out
    # Byte for byte what nnet-copy writes for the same net with a ParametricRelu:
    # the Sigmoid twin (lowercase_nowrapper) / no_end_tag with a component added.
    if stem == "unknown_relu":
        twin = (edge_dir / ("lowercase_nowrapper.copy." + ("bin" if binary else "txt"))).read_bytes()
        expected = twin.replace(SIGMOID_BIN if binary else SIGMOID_TXT, PRELU_BIN if binary else PRELU_TXT)
    else:
        base = (edge_dir / ("no_end_tag.copy." + ("bin" if binary else "txt"))).read_bytes()
        end = b"</Nnet> " if binary else b"</Nnet> \n"
        assert base.endswith(end)
        expected = base[: -len(end)] + (PRELU_BIN if binary else PRELU_TXT) + end
    assert out == expected


def test_relu_default_dialects(edge_dir):
    """unknown_relu is PDNN: written in its own dialect it stays <relu>; the wrapped one is Kaldi."""
    m = svdistill.read(edge_dir / "unknown_relu.nnet")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = _bytes_of(m)
    assert out == (edge_dir / "unknown_relu.nnet").read_bytes()
    m = svdistill.read(edge_dir / "unknown_relu_wrapped.nnet")
    with pytest.warns(ConversionWarning, match="<relu>"):
        out = _bytes_of(m)  # default = the input's dialect, Kaldi
    assert b"<ParametricRelu> 3 3" in out and b"<relu>" not in out


def test_relu_info(edge_dir):
    d = svdistill.info(edge_dir / "unknown_relu.nnet")
    assert d["num_components"] == 4 and d["num_params"] == 17
    assert [c["kind"] for c in d["components"]] == ["AffineTransform", "Relu", "AffineTransform", "Softmax"]
    text = format_info(d)
    assert "component 2 : <relu>, input-dim 3, output-dim 3, \n" in text
