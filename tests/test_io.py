"""Where models come from and go to: pipes, gzip, Python file objects, the PDNN
dialect, and the atomic write (temp file beside the target, then rename)."""
from __future__ import annotations

import gzip
import io
import os
import re
import stat
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


# ------------------------------------------------------- stdin / stdout

def test_cli_pipe_text_to_binary(fixtures_dir, run_cli):
    p = run_cli("copy", "--binary=true", "-", "-", input=(fixtures_dir / "tiny_mlp.nnet.txt").read_bytes())
    assert p.returncode == 0, p.stderr
    assert p.stdout == (fixtures_dir / "tiny_mlp.nnet.bin").read_bytes()
    assert p.stderr == b""


def test_cli_pipe_binary_to_text(fixtures_dir, run_cli):
    p = run_cli("copy", "--binary=false", "--digits=kaldi", "-", "-",
                input=(fixtures_dir / "mixed.nnet.bin").read_bytes())
    assert p.returncode == 0, p.stderr
    assert p.stdout == (fixtures_dir / "mixed.nnet.txt").read_bytes()


def test_cli_pipe_keeps_encoding_by_default(fixtures_dir, run_cli):
    data = (fixtures_dir / "extras.nnet.bin").read_bytes()
    p = run_cli("copy", "-", "-", input=data)
    assert p.returncode == 0, p.stderr
    assert p.stdout == data


def test_cli_info_from_stdin(fixtures_dir, run_cli, info_checks):
    assert_text, _, _ = info_checks
    p = run_cli("info", "-", input=(fixtures_dir / "lrcoef.nnet.bin").read_bytes())
    assert p.returncode == 0, p.stderr
    assert_text(p.stdout.decode(), (fixtures_dir / "lrcoef.info.txt").read_text())


def test_cli_bad_stdin(run_cli, clean_cli_error):
    p = run_cli("copy", "-", "-", input=b"<AffineTransform> 3 2\n[ 1 2\n")
    clean_cli_error(p, "<stdin>")
    assert p.stdout == b""


# ---------------------------------------------------------------- gzip

@pytest.fixture
def gz_models(fixtures_dir, tmp_path):
    out = {}
    for name in ["tiny_mlp.nnet.txt", "tiny_mlp.nnet.bin"]:
        p = tmp_path / (name + ".gz")
        p.write_bytes(gzip.compress((fixtures_dir / name).read_bytes()))
        out[name] = p
    # no .gz suffix: detection is by content
    q = tmp_path / "plain-name.nnet"
    q.write_bytes(gzip.compress((fixtures_dir / "tiny_mlp.nnet.bin").read_bytes()))
    out["noext"] = q
    return out


def test_gzip_paths(fixtures_dir, gz_models, models_equal):
    ref = svdistill.read(fixtures_dir / "tiny_mlp.nnet.bin")
    t = svdistill.read(gz_models["tiny_mlp.nnet.txt"])
    assert t.binary is False
    models_equal(t, ref, exact_marker=True)
    b = svdistill.read(gz_models["tiny_mlp.nnet.bin"])
    assert b.binary is True
    models_equal(b, ref, exact_marker=True)
    models_equal(svdistill.read(gz_models["noext"]), ref, exact_marker=True)
    assert _bytes_of(t, binary=True) == (fixtures_dir / "tiny_mlp.nnet.bin").read_bytes()


def test_gzip_cli_and_stdin(fixtures_dir, gz_models, run_cli, tmp_path):
    out = tmp_path / "o.bin"
    p = run_cli("copy", "--binary=true", gz_models["tiny_mlp.nnet.txt"], out)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == (fixtures_dir / "tiny_mlp.nnet.bin").read_bytes()
    p = run_cli("copy", "--binary=false", "--digits=kaldi", "-", "-",
                input=gz_models["tiny_mlp.nnet.bin"].read_bytes())
    assert p.returncode == 0, p.stderr
    assert p.stdout == (fixtures_dir / "tiny_mlp.nnet.txt").read_bytes()


def test_concatenated_gzip_members(fixtures_dir, tmp_path):
    data = (fixtures_dir / "tiny_mlp.nnet.txt").read_bytes()
    p = tmp_path / "two.gz"
    p.write_bytes(gzip.compress(data[:1000]) + gzip.compress(data[1000:]))
    assert _bytes_of(svdistill.read(p), digits="kaldi") == data


def test_truncated_gzip(fixtures_dir, tmp_path):
    z = gzip.compress((fixtures_dir / "tiny_mlp.nnet.bin").read_bytes())
    p = tmp_path / "cut.gz"
    p.write_bytes(z[: len(z) // 2])
    with pytest.raises(svdistill.Error) as ei:
        svdistill.read(p)
    assert str(p) in str(ei.value)


def test_corrupt_gzip(fixtures_dir, tmp_path):
    z = bytearray(gzip.compress((fixtures_dir / "tiny_mlp.nnet.bin").read_bytes()))
    z[len(z) // 2: len(z) // 2 + 64] = b"\xa5" * 64
    p = tmp_path / "bad.gz"
    p.write_bytes(bytes(z))
    with pytest.raises(svdistill.Error) as ei:
        svdistill.read(p)
    assert str(p) in str(ei.value)


def test_gzip_file_object(fixtures_dir, gz_models, models_equal):
    with open(gz_models["tiny_mlp.nnet.bin"], "rb") as f:
        m = svdistill.read(f)
    models_equal(m, svdistill.read(fixtures_dir / "tiny_mlp.nnet.bin"))


# ------------------------------------------------------ Python file objects

def test_read_from_file_objects(fixtures_dir, models_equal):
    ref = svdistill.read(fixtures_dir / "mixed.nnet.bin")
    for name in ["mixed.nnet.bin", "mixed.nnet.txt"]:
        data = (fixtures_dir / name).read_bytes()
        m = svdistill.read(io.BytesIO(data))
        assert m.binary is name.endswith(".bin")
        models_equal(m, ref, exact_marker=True)
        with open(fixtures_dir / name, "rb") as f:
            models_equal(svdistill.read(f), ref, exact_marker=True)


def test_read_text_mode_file_object_is_an_error(fixtures_dir):
    with open(fixtures_dir / "tiny_mlp.nnet.txt", "r") as f:
        with pytest.raises(svdistill.Error, match="binary mode"):
            svdistill.read(f)


def test_read_wrong_type():
    with pytest.raises(svdistill.Error, match="expected a model: a path, '-' .* got int"):
        svdistill.read(12345)


def test_write_to_file_objects(fixtures_dir, tmp_path):
    m = svdistill.read(fixtures_dir / "lrcoef.nnet.txt")
    buf = io.BytesIO()
    svdistill.write(m, buf, binary=True)
    assert buf.getvalue() == (fixtures_dir / "lrcoef.nnet.bin").read_bytes()
    with open(tmp_path / "o.txt", "wb") as f:
        svdistill.write(svdistill.read(fixtures_dir / "lrcoef.nnet.bin"), f, binary=False, digits="kaldi")
    assert (tmp_path / "o.txt").read_bytes() == (fixtures_dir / "lrcoef.nnet.txt").read_bytes()
    # a stream straight from one file object into another
    out = io.BytesIO()
    svdistill.write(svdistill.iter_components(io.BytesIO((fixtures_dir / "lrcoef.nnet.txt").read_bytes())),
                    out, binary=True)
    assert out.getvalue() == (fixtures_dir / "lrcoef.nnet.bin").read_bytes()


def test_model_write_method(fixtures_dir, tmp_path):
    m = svdistill.read(fixtures_dir / "tiny_mlp.nnet.txt")
    m.write(tmp_path / "m.bin", binary=True)
    assert (tmp_path / "m.bin").read_bytes() == (fixtures_dir / "tiny_mlp.nnet.bin").read_bytes()


# ----------------------------------------------------------------- PDNN

def test_pdnn_layout(fixtures_dir):
    m = svdistill.read(fixtures_dir / "tiny_mlp.nnet.bin")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConversionWarning)  # the 0.1 bias learn-rate is kept
        text = _bytes_of(m, binary=False, dialect="pdnn").decode()
    lines = text.split("\n")
    assert "<Nnet>" not in text and "</Nnet>" not in text
    assert "<!EndOfComponent>" not in text
    markers = re.findall(r"^(<[^>]+>) (\d+) (\d+)$", text, re.M)
    assert markers == [("<affinetransform>", "64", "40"), ("<sigmoid>", "64", "64"),
                       ("<affinetransform>", "64", "64"), ("<sigmoid>", "64", "64"),
                       ("<affinetransform>", "10", "64"), ("<softmax>", "10", "10")]
    # matrices: '[' and ']' alone on their lines, one row per line
    assert lines.count("[") == 3 and lines.count("]") == 3
    i = lines.index("<affinetransform> 64 40")
    assert lines[i + 1] == "["
    assert all(len(lines[i + 2 + r].split()) == 40 for r in range(64))
    assert lines[i + 66] == "]"
    assert re.fullmatch(r"\[( \S+){64} \]", lines[i + 67])
    # only the non-default coefficient survives, and is read back
    assert text.count("<LearnRateCoef>") == 1 and "<BiasLearnRateCoef> 0.1 " in text
    back = svdistill.read(io.BytesIO(text.encode()))
    assert back.dialect == "pdnn" and back.binary is False
    assert back.components[4].bias_learn_rate_coef == np.float32(0.1)


@pytest.mark.parametrize("stem", ["lowercase_nowrapper", "unknown_relu"])
def test_pdnn_writer_reproduces_pdnn_input(edge_dir, stem):
    src = (edge_dir / f"{stem}.nnet").read_bytes()
    m = svdistill.read(io.BytesIO(src))
    assert m.dialect == "pdnn"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _bytes_of(m) == src  # the input's dialect by default
        assert _bytes_of(m, dialect="pdnn", binary=False) == src


@pytest.mark.filterwarnings("ignore::svdistill.io.ConversionWarning")
@pytest.mark.parametrize("name", ["tiny_mlp", "mixed", "lrcoef", "extras"])
def test_pdnn_round_trip(fixtures_dir, models_equal, name):
    m = svdistill.read(fixtures_dir / f"{name}.nnet.bin")
    text = _bytes_of(m, binary=False, dialect="pdnn")
    assert not re.search(rb"<[A-Z][a-zA-Z]*(Transform|Softmax|Relu|Shift|Rescale|Splice|Copy|Sigmoid|Tanh)>", text)
    back = svdistill.read(io.BytesIO(text))
    assert back.dialect == "pdnn"
    models_equal(back, m)
    # and to Kaldi binary again: byte-identical to the fixture
    assert _bytes_of(back, binary=True) == (fixtures_dir / f"{name}.nnet.bin").read_bytes()


def test_pdnn_is_text_only(fixtures_dir):
    m = svdistill.read(fixtures_dir / "tiny_mlp.nnet.txt")
    with pytest.raises(svdistill.Error, match="text only"):
        _bytes_of(m, binary=True, dialect="pdnn")


def test_bad_write_options(fixtures_dir):
    m = svdistill.read(fixtures_dir / "tiny_mlp.nnet.txt")
    with pytest.raises(svdistill.Error, match="dialect"):
        _bytes_of(m, dialect="htk")
    with pytest.raises(svdistill.Error, match="digits"):
        _bytes_of(m, digits="9")


def _linear_model():
    w1 = np.arange(6, dtype=np.float32).reshape(3, 2) / 4
    w2 = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
    return Model([Component.affine(w1, np.array([1, 2, 3], np.float32)),
                  Component.activation("Linear", 3),
                  Component.affine(w2, np.array([-1, 1], np.float32)),
                  Component.activation("Softmax", 2)])


def test_pdnn_linear_written_and_read():
    m = _linear_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = _bytes_of(m, dialect="pdnn")
    assert b"<linear> 3 3\n" in text
    back = svdistill.read(io.BytesIO(text))
    assert back.dialect == "pdnn"
    assert [c.kind for c in back] == ["AffineTransform", "Linear", "AffineTransform", "Softmax"]


@pytest.mark.parametrize("binary", [False, True])
def test_pdnn_to_kaldi_drops_linear(binary, models_equal):
    m = _linear_model()
    with pytest.warns(ConversionWarning, match=r"dropped 1 PDNN <linear> component"):
        out = _bytes_of(m, dialect="kaldi", binary=binary)
    assert b"<linear>" not in out.lower()
    back = svdistill.read(io.BytesIO(out))
    assert back.dialect == "kaldi"
    assert [c.kind for c in back] == ["AffineTransform", "AffineTransform", "Softmax"]
    models_equal(back, Model([m.components[0], m.components[2], m.components[3]]))
    if not binary:
        assert out.startswith(b"<Nnet> \n<AffineTransform> 3 2 \n") and out.endswith(b"</Nnet> \n")


def test_pdnn_stream_to_kaldi_via_cli(edge_dir, run_cli, tmp_path):
    out = tmp_path / "k.nnet"
    p = run_cli("copy", "--dialect=kaldi", edge_dir / "unknown_relu.nnet", out)
    assert p.returncode == 0, p.stderr
    assert p.stderr.decode().startswith("svdistill: note: converted 1 PDNN <relu> component")
    m = svdistill.read(out)
    assert [c.kind for c in m] == ["AffineTransform", "ParametricRelu", "AffineTransform", "Softmax"]


# ------------------------------------------------------------ atomic write

def _affine(out, inp, value=1.0):
    return Component.affine(np.full((out, inp), value, np.float32))


def test_copy_onto_itself(fixtures_dir, tmp_path, run_cli):
    p = tmp_path / "model.nnet"
    p.write_bytes((fixtures_dir / "tiny_mlp.nnet.txt").read_bytes())
    r = run_cli("copy", "--binary=true", p, p)
    assert r.returncode == 0, r.stderr
    assert p.read_bytes() == (fixtures_dir / "tiny_mlp.nnet.bin").read_bytes()
    r = run_cli("copy", "--binary=false", "--digits=kaldi", p, p)
    assert r.returncode == 0, r.stderr
    assert p.read_bytes() == (fixtures_dir / "tiny_mlp.nnet.txt").read_bytes()
    assert os.listdir(tmp_path) == ["model.nnet"]


def test_stream_onto_its_own_input(fixtures_dir, tmp_path):
    p = tmp_path / "model.bin"
    p.write_bytes((fixtures_dir / "dnn.nnet.bin").read_bytes())
    svdistill.write(svdistill.iter_components(p), p, binary=False, digits="kaldi")
    assert p.read_bytes() == (fixtures_dir / "dnn.nnet.txt").read_bytes()
    assert os.listdir(tmp_path) == ["model.bin"]


@pytest.mark.parametrize("binary", [False, True])
def test_failed_write_leaves_nothing(tmp_path, binary):
    bad = Model([_affine(3, 2), Component.activation("Sigmoid", 3), _affine(4, 5)])  # 3 -> 5: no chain
    target = tmp_path / "out.nnet"
    with pytest.raises(svdistill.Error, match="does not match") as ei:
        svdistill.write(bad, target, binary=binary)
    assert str(target) in str(ei.value)
    assert "component 3" in str(ei.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("binary", [False, True])
def test_failed_write_keeps_existing_target(tmp_path, binary):
    target = tmp_path / "out.nnet"
    target.write_bytes(b"precious bytes")
    os.chmod(target, 0o640)
    before = os.stat(target)
    bad = Model([_affine(3, 2), _affine(4, 5)])
    with pytest.raises(svdistill.Error):
        svdistill.write(bad, target, binary=binary)
    assert target.read_bytes() == b"precious bytes"
    after = os.stat(target)
    assert (after.st_ino, after.st_mtime_ns, stat.S_IMODE(after.st_mode)) == (
        before.st_ino, before.st_mtime_ns, 0o640)
    assert os.listdir(tmp_path) == ["out.nnet"]


def test_non_finite_weight_is_not_written(tmp_path):
    w = np.ones((3, 2), np.float32)
    w[1, 1] = np.nan
    target = tmp_path / "nan.nnet"
    with pytest.raises(svdistill.Error, match="non-finite"):
        svdistill.write(Model([Component.affine(w)]), target)
    assert os.listdir(tmp_path) == []


def test_failed_read_during_copy_keeps_target(fixtures_dir, tmp_path, run_cli, clean_cli_error):
    src = tmp_path / "cut.nnet"
    src.write_bytes((fixtures_dir / "tiny_mlp.nnet.txt").read_bytes()[:50000])
    target = tmp_path / "out.nnet"
    target.write_bytes(b"old model")
    p = run_cli("copy", "--binary=true", src, target)
    clean_cli_error(p, str(src))
    assert target.read_bytes() == b"old model"
    assert sorted(os.listdir(tmp_path)) == ["cut.nnet", "out.nnet"]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_file_mode_follows_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        svdistill.write(Model([_affine(3, 2)]), tmp_path / "new.nnet")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.nnet").st_mode) == mode


def test_existing_file_keeps_its_mode(tmp_path):
    target = tmp_path / "old.nnet"
    target.write_bytes(b"x")
    os.chmod(target, 0o600)
    svdistill.write(Model([_affine(3, 2)]), target, binary=True)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert target.read_bytes().startswith(b"\0B<Nnet> ")


def test_write_into_missing_directory(tmp_path):
    target = tmp_path / "no" / "such" / "dir" / "out.nnet"
    with pytest.raises(svdistill.Error) as ei:
        svdistill.write(Model([_affine(3, 2)]), target)
    assert str(target) in str(ei.value)
    assert not (tmp_path / "no").exists()


def test_write_onto_a_directory(tmp_path):
    with pytest.raises(svdistill.Error, match="directory") as ei:
        svdistill.write(Model([_affine(3, 2)]), tmp_path)
    assert str(tmp_path) in str(ei.value)
    assert os.listdir(tmp_path) == []


def test_large_binary_matrix_read_in_parallel_pieces(tmp_path):
    """Blocks >= 8 MB are read with pread in pieces across threads: same values, same errors."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1500, 1600)).astype(np.float32)  # 9.6 MB
    m = svdistill.Model([svdistill.Component.affine(w, np.zeros(1500, np.float32)),
                         svdistill.Component.activation("Sigmoid", 1500)])
    path = tmp_path / "big.bin"
    m.write(path, binary=True)
    back = svdistill.read(path)
    assert np.array_equal(back.components[0].weight, w)
    data = bytearray(path.read_bytes())
    start = data.index(b"FM ") + 3 + 10  # after "FM " and the two 5-byte integers
    for row, col in [(0, 0), (1499, 1599), (777, 3)]:
        bad = bytearray(data)
        off = start + 4 * (row * 1600 + col)
        bad[off:off + 4] = np.array([np.nan], np.float32).tobytes()
        (tmp_path / "nan.bin").write_bytes(bad)
        with pytest.raises(svdistill.FormatError, match=f"byte {off}: .*row {row + 1}, column {col + 1}"):
            svdistill.read(tmp_path / "nan.bin")
    (tmp_path / "cut.bin").write_bytes(data[:start + 4 * 1600 * 1000])
    with pytest.raises(svdistill.FormatError, match="only 6400013 bytes of input remain"):
        svdistill.read(tmp_path / "cut.bin")
    # Through a pipe (no mapping, size unknown): read as it arrives, same values.
    with open(path, "rb") as f:
        assert np.array_equal(svdistill.read(f).components[0].weight, w)


# ------------------------------------------------------- large text matrices

def _matrix_text(rng, rows: int, cols: int) -> list:
    """Row strings as Kaldi and others write them: %.7g, shortest, %.9g, %e,
    integers, signed zeros, forms the fast path leaves to the exact parser
    (17 digits, exponents beyond 1e+-10, a denormal), and odd blanks."""
    x = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
    kind = rng.integers(0, 20, size=(rows, cols))
    odd = ["0", "-0", "1", "-5", "-0.000", "12345678901234567", "1.5e-12", "-2.5e11", "1e-45",
           "0.000000000001234", "3.4028234e38", "-.5", "7."]
    lines = []
    for i in range(rows):
        toks = []
        for j in range(cols):
            v, k = x[i, j], kind[i, j]
            if k < 10:
                toks.append("%.7g" % v)
            elif k < 14:
                toks.append(str(v))
            elif k < 17:
                toks.append("%.9g" % v)
            elif k < 19:
                toks.append("%.6e" % v)
            else:
                toks.append(odd[(i * cols + j) % len(odd)])
        if i % 7 == 3:  # tabs, runs of blanks, a CR line end
            line = "\t" + "  \t".join(toks) + " \r"
        else:
            line = "  " + " ".join(toks) + " "
        lines.append(line)
    return lines


def test_large_text_matrix_bulk_and_exact_paths_agree(tmp_path):
    """Rows of a large text matrix go through the bulk row parser (one or two
    threads, several pieces); a ';' ending every line leaves each row to the
    exact serial parser instead. Same bits (signed zeros too), same errors."""
    rng = np.random.default_rng(3)
    rows, cols = 700, 600
    lines = _matrix_text(rng, rows, cols)

    def model_text(lines, end=""):
        body = "\n".join(ln + end for ln in lines)
        return ("<Nnet>\n<AffineTransform> %d %d\n<LearnRateCoef> 1 <BiasLearnRateCoef> 1 <MaxNorm> 0 [\n"
                "%s ]\n [ %s ]\n<!EndOfComponent>\n</Nnet>\n" % (rows, cols, body, " ".join(["0.5"] * rows)))

    def read_bits(text, threads):
        path = tmp_path / "m.nnet"
        path.write_text(text)
        svdistill.linalg.set_num_threads(threads)
        try:
            return svdistill.read(path).components[0].weight.view(np.uint32)
        finally:
            svdistill.linalg.set_num_threads(0)

    exact = read_bits(model_text(lines, end=" ;"), 1)
    # Lines the bulk parser leaves to the exact one, which then hands back.
    detours = [ln + " ;" if i in (100, 101, 500) else ln.replace(" ", "\v", 1) if i == 650 else ln
               for i, ln in enumerate(lines)]
    for threads in (1, 2):
        assert np.array_equal(read_bits(model_text(lines), threads), exact)
        assert np.array_equal(read_bits(model_text(detours), threads), exact)
        # A file object: no mapping, the destination grows as blocks arrive.
        svdistill.linalg.set_num_threads(threads)
        try:
            for text in (model_text(lines), model_text(detours)):
                got = svdistill.read(io.BytesIO(text.encode())).components[0].weight.view(np.uint32)
                assert np.array_equal(got, exact)
        finally:
            svdistill.linalg.set_num_threads(0)
    ref = np.array([[float(t) for t in ln.split()] for ln in lines])
    assert np.allclose(exact.view(np.float32), ref, rtol=2.0 ** -24, atol=1e-45)  # bits: test_number_parser
    assert np.signbit(exact.view(np.float32)).sum() == (np.signbit(ref) & (ref == ref)).sum()

    # Errors in the middle of the bulk: the same message from every path.
    for row, bad, what in [(100, "0.1.2", "expected a number"), (351, "nan", "non-finite"),
                           (650, "1e39", "outside the float range")]:
        broken = list(lines)
        toks = broken[row].split(" ")
        toks[5] = bad
        broken[row] = " ".join(toks)
        messages = set()
        for end, threads in [("", 1), ("", 2), (" ;", 1)]:
            with pytest.raises(svdistill.FormatError, match=what) as err:
                read_bits(model_text(broken, end), threads)
            messages.add(str(err.value))
        assert len(messages) == 1, messages
    ragged = list(lines)
    ragged[400] = ragged[400].rstrip() + " 0.25"
    for threads in (1, 2):
        with pytest.raises(svdistill.FormatError, match="ragged matrix: row 401 has more than 600 values"):
            read_bits(model_text(ragged), threads)
    # A row broken in two near the end: one line too many, so the bulk path
    # hands its last piece (rows > 0) back to the exact parser, which must
    # still call the short row ragged, as it does reading from row 0.
    toks = lines[690].split(" ")
    split = lines[:690] + [" ".join(toks[:528]), " ".join(toks[528:])] + lines[691:]
    messages = set()
    for end, threads in [("", 1), ("", 2), ("", 5), (" ;", 1)]:
        ragged = r"ragged matrix: row 691 has \d+ values, the rows before it have 600"
        with pytest.raises(svdistill.FormatError, match=ragged) as err:
            read_bits(model_text(split, end), threads)
        messages.add(str(err.value) + end)  # (" ;" moves the row's end one column)
    assert len(messages) == 2, messages

    # Blank lines (counted as lines by the bulk path, skipped by the exact one)
    # and one row too many: the same outcome on every path.
    blanks = lines[:200] + ["", "   "] + lines[200:]
    for threads in (1, 2):
        assert np.array_equal(read_bits(model_text(blanks), threads), exact)
    extra = lines + [lines[0]]
    messages = set()
    for end, threads in [("", 1), ("", 2), (" ;", 1)]:
        with pytest.raises(svdistill.FormatError, match="more than 700 rows") as err:
            read_bits(model_text(extra, end), threads)
        messages.add(str(err.value))
    assert len(messages) == 1, messages
