"""Kaldi tables under faults (issue 19 items 1, 5, 8, 9, 10, 11, 12, 13): outputs that would
destroy their input, truncated and damaged archives, wrong scp offsets, failing commands,
NaN/inf, BlockSoftmax agreement, and the messages of each.

Archives are written here with kaldiio (independent of svdistill's writer) or by hand.
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import kaldiio
import numpy as np
import pytest

import svdistill
from svdistill import Component, Model
from test_forward import load_ark

# ------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def tiny(fx) -> str:
    return str(fx / "tiny_mlp.nnet.bin")


def forward_ref(model, feats):
    return {k: svdistill.forward(model, v) for k, v in feats.items()}


def forward_archive(*args, **kw):
    from svdistill.forward import forward_archive as f
    return f(*args, **kw)


def dir_listing(d: Path):
    return sorted(p.name for p in d.iterdir())


def error_of(fn, *args, **kw) -> str:
    with pytest.raises(svdistill.Error) as ei:
        fn(*args, **kw)
    return str(ei.value)


# ============================================================ data loss (item 1, 9)


def test_forward_output_is_its_input_archive(fx, tiny, feats, tmp_path, run_cli):
    """`forward M ark:f.ark ark:f.ark`: as `copy X X`, the input is read whole before it is replaced."""
    f = tmp_path / "f.ark"
    f.write_bytes((fx / "feats.ark").read_bytes())
    p = run_cli("forward", tiny, f"ark:{f}", f"ark:{f}")
    assert p.returncode == 0, p.stderr.decode()
    out = load_ark(f)
    ref = forward_ref(tiny, feats)
    assert list(out) == list(ref)
    for k in ref:
        np.testing.assert_allclose(out[k], ref[k], rtol=1e-6, atol=1e-7)
    assert dir_listing(tmp_path) == ["f.ark"]


def test_forward_output_archive_behind_the_input_scp_is_refused(fx, tiny, feats, tmp_path, run_cli,
                                                                 clean_cli_error):
    """`forward M scp:g.scp ark:g.ark`: renaming cannot help (g.scp would point at posteriors)."""
    ark, scp = tmp_path / "g.ark", tmp_path / "g.scp"
    kaldiio.save_ark(str(ark), feats, scp=str(scp))
    before = ark.read_bytes()
    clean_cli_error(run_cli("forward", tiny, f"scp:{scp}", f"ark:{ark}"), "g.ark", "g.scp")
    with pytest.raises(svdistill.Error, match="read through the input"):
        forward_archive(tiny, f"scp:{scp}", f"ark,scp:{ark},{tmp_path / 'o.scp'}")
    assert ark.read_bytes() == before
    assert dir_listing(tmp_path) == ["g.ark", "g.scp"]
    # a new archive into the input's scp, or the input's scp as the archive: refused as well
    # (the features' index would then index the posteriors)
    scp_before = scp.read_bytes()
    for out in (f"ark,scp:{tmp_path / 'o.ark'},{scp}", f"ark,scp:{scp},{tmp_path / 'o.scp'}", f"ark:{scp}"):
        line = clean_cli_error(run_cli("forward", tiny, f"scp:{scp}", out), "is the scp file of the input",
                               "refusing to overwrite an input")
        assert str(scp) in line
    assert scp.read_bytes() == scp_before and ark.read_bytes() == before
    assert dir_listing(tmp_path) == ["g.ark", "g.scp"]


def test_failed_forward_leaves_no_output_and_keeps_the_old_one(fx, tiny, feats, tmp_path):
    """An error at the second utterance: the old output file is untouched, no temporary is left."""
    ark = tmp_path / "in.ark"
    kaldiio.save_ark(str(ark), {"a": feats["utt1"], "b": np.zeros((3, 13), np.float32)})
    out = tmp_path / "out.ark"
    out.write_bytes(b"old")
    with pytest.raises(svdistill.Error, match="utterance b"):
        forward_archive(tiny, f"ark:{ark}", f"ark,scp:{out},{tmp_path / 'out.scp'}")
    assert out.read_bytes() == b"old"
    assert dir_listing(tmp_path) == ["in.ark", "out.ark"]


def test_interrupted_forward_leaves_no_output(fx, tiny, tmp_path):
    """Ctrl-C (and SIGTERM, which the CLI turns into the same) in the middle: nothing written."""
    out = tmp_path / "out.ark"

    def progress(utts, frames):
        if utts == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        forward_archive(tiny, f"ark:{fx / 'feats.ark'}", f"ark:{out}", progress=progress)
    assert dir_listing(tmp_path) == []


def test_truncated_input_leaves_no_partial_output(fx, tiny, tmp_path, run_cli, clean_cli_error):
    ark = tmp_path / "t.ark"
    ark.write_bytes((fx / "feats.ark").read_bytes()[:12000])
    out = tmp_path / "o.ark"
    line = clean_cli_error(run_cli("forward", tiny, f"ark:{ark}", f"ark:{out}"), "t.ark", "utt2", "byte 8,040",
                           "truncated")
    assert "utt1" in line  # the last complete utterance
    assert not out.exists() and dir_listing(tmp_path) == ["t.ark"]


def test_failing_input_command_after_all_data_leaves_no_output(fx, tiny, tmp_path, run_cli, clean_cli_error):
    out = tmp_path / "o.ark"
    clean_cli_error(run_cli("forward", tiny, f"ark:cat {fx / 'feats.ark'}; exit 3 |", f"ark:{out}"),
                    "exit status 3", "utt3")
    assert not out.exists()


def test_output_through_a_symlink_keeps_the_link(fx, tiny, tmp_path):
    real = tmp_path / "real.ark"
    real.write_bytes(b"old")
    os.chmod(real, 0o640)
    link = tmp_path / "link.ark"
    link.symlink_to(real)
    forward_archive(tiny, f"ark:{fx / 'feats.ark'}", f"ark:{link}")
    assert link.is_symlink() and list(load_ark(real)) == ["utt1", "utt2", "utt3"]
    assert (real.stat().st_mode & 0o777) == 0o640  # an existing file keeps its mode
    assert sorted(dir_listing(tmp_path)) == ["link.ark", "real.ark"]


def test_new_output_gets_the_usual_mode_and_scp_names_the_final_archive(fx, tiny, tmp_path):
    mask = os.umask(0o022)
    try:
        forward_archive(tiny, f"ark:{fx / 'feats.ark'}", f"ark,scp:{tmp_path / 'o.ark'},{tmp_path / 'o.scp'}")
    finally:
        os.umask(mask)
    assert (tmp_path / "o.ark").stat().st_mode & 0o777 == 0o644
    lines = (tmp_path / "o.scp").read_text().splitlines()
    assert [ln.split()[1].rsplit(":", 1)[0] for ln in lines] == [str(tmp_path / "o.ark")] * 3
    got = {k: np.asarray(v) for k, v in kaldiio.load_scp(str(tmp_path / "o.scp")).items()}
    assert list(got) == ["utt1", "utt2", "utt3"]


# ============================================================ wrong results (items 5, 8)


def _nan_ark(feats, path, value=np.nan, utt="utt2", frame=7, col=3):
    d = {k: v.copy() for k, v in feats.items()}
    d[utt][frame, col] = value
    kaldiio.save_ark(str(path), d)
    return path


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_an_error_in_forward(value, tiny, feats, tmp_path, run_cli, clean_cli_error):
    ark = _nan_ark(feats, tmp_path / "nan.ark", value)
    out = tmp_path / "o.ark"
    clean_cli_error(run_cli("forward", tiny, f"ark:{ark}", f"ark:{out}"), "nan.ark", "utt2", "frame 7",
                    "column 3")
    assert not out.exists()


def test_non_finite_features_are_an_error_in_compare(tiny, feats, tmp_path, run_cli, clean_cli_error):
    ark = _nan_ark(feats, tmp_path / "nan.ark", np.inf, "utt3", 0, 39)
    clean_cli_error(run_cli("compare", tiny, tiny, f"ark:{ark}"), "utt3", "frame 0", "column 39", "inf")
    d = {k: v.copy() for k, v in feats.items()}
    d["utt1"][49, 0] = np.nan
    assert "frame 49" in error_of(svdistill.compare, tiny, tiny, d)


def test_non_finite_features_are_an_error_in_distill(tiny, feats, tmp_path):
    """distill reads through Source: the utterance and frame are named before any training."""
    ark = _nan_ark(feats, tmp_path / "nan.ark")
    labels = {k: np.zeros(len(v), np.int32) for k, v in feats.items()}
    msg = error_of(svdistill.distill, tiny, f"ark:{ark}", labels=labels, max_epochs=1)
    assert "utt2" in msg and "frame 7" in msg
    d = {k: v.copy() for k, v in feats.items()}
    d["utt3"][2, 5] = np.nan
    msg = error_of(svdistill.distill, tiny, d, labels=labels, max_epochs=1)
    assert "utt3" in msg and "frame 2" in msg and "column 5" in msg


def test_non_finite_features_in_a_text_archive_and_an_scp(feats, tmp_path):
    txt = tmp_path / "f.txt"
    txt.write_text("u1  [\n  1 2 \n  3 nan ]\nu2  [\n  1 2 ]\n")
    from svdistill.forward import iter_archive
    msg = error_of(lambda: list(iter_archive(f"ark,t:{txt}")))
    assert "u1" in msg and "frame 1, column 1" in msg
    ark, scp = tmp_path / "n.ark", tmp_path / "n.scp"
    d = {k: v.copy() for k, v in feats.items()}
    d["utt2"][3, 4] = -np.inf
    kaldiio.save_ark(str(ark), d, scp=str(scp))
    msg = error_of(lambda: list(iter_archive(f"scp:{scp}")))
    assert "utt2" in msg and "frame 3, column 4" in msg and "-inf" in msg


def test_non_finite_network_output_is_an_error(fx, feats, tmp_path, run_cli, clean_cli_error):
    """Finite features, a model that overflows: nnet-forward's 'NaN or inf found in final output'."""
    w = np.full((4, 40), 3e38, np.float32)
    m = Model([Component.affine(w, np.zeros(4, np.float32)), Component.activation("Softmax", 4)])
    path = tmp_path / "big.nnet"
    svdistill.write(m, str(path))
    out = tmp_path / "o.ark"
    clean_cli_error(run_cli("forward", path, f"ark:{fx / 'feats.ark'}", f"ark:{out}"),
                    "utt1", "network output", "frame 0")
    assert not out.exists()
    assert "teacher's output" in error_of(svdistill.compare, m, m, feats)


def _perturbed(model: Model, seed: int = 1, scale: float = 0.6) -> Model:
    rng = np.random.default_rng(seed)
    comps = []
    for c in model.components:
        c = c.copy()
        if c.kind == "AffineTransform":
            c.weight = (c.weight + rng.normal(scale=scale, size=c.weight.shape)).astype(np.float32)
        comps.append(c)
    return Model(comps)


def test_block_softmax_agreement_is_per_block_as_distill_computes_it(fx, feats):
    """compare and distill: one definition of agreement (per (frame, block)) and of KL (sum of the
    blocks' KLs), checked against the C++ trainer's own statistics and a numpy count."""
    from svdistill.distill.engine import core_trainer
    teacher = svdistill.read(fx / "mixed.nnet.bin")
    assert teacher.components[-1].kind == "BlockSoftmax" and list(teacher.components[-1].ints) == [10, 14]
    student = _perturbed(teacher)
    d = svdistill.compare(teacher, student, feats)
    x = np.concatenate(list(feats.values()))
    st = core_trainer(list(student.components), [svdistill.Network(teacher)]).evaluate(
        x, None, svdistill._core.LossOptions())
    assert d["top1_agreement"] == pytest.approx(st["agree"] / st["blocks"], abs=1e-12)
    assert d["kl"] == pytest.approx(st["kl"] / st["frames"], rel=1e-4)
    p, q = svdistill.forward(teacher, x), svdistill.forward(student, x)
    per_block = np.mean([(p[:, a:b].argmax(1) == q[:, a:b].argmax(1)).mean() for a, b in ((0, 10), (10, 24))])
    whole = (p.argmax(1) == q.argmax(1)).mean()
    assert d["top1_agreement"] == pytest.approx(per_block)
    assert abs(whole - per_block) > 0.01  # the two definitions differ here: the test tells them apart


def test_compare_refuses_different_softmax_blocks_and_non_posteriors(fx, feats):
    teacher = svdistill.read(fx / "mixed.nnet.bin")
    comps = list(teacher.components)
    plain = Model(comps[:-1] + [Component.activation("Softmax", 24)])
    assert "blocks" in error_of(svdistill.compare, teacher, plain, feats)
    no_softmax = Model(comps[:-1])
    assert "posteriors" in error_of(svdistill.compare, no_softmax, no_softmax, feats)


# ============================================================ crashes and silent failures (items 9, 10, 13)


def _all_truncations(data: bytes, step: int):
    return sorted(set(list(range(1, len(data), step)) + [len(data) - 1, 5, 6, 7, 8, 12, 17, 18]))


@pytest.mark.parametrize("compress", [None, 2, 3, 5], ids=["FM", "CM", "CM2", "CM3"])
def test_every_truncation_of_a_binary_archive_is_one_error(compress, feats, tmp_path):
    from svdistill.forward import iter_archive
    full = tmp_path / "full.ark"
    kaldiio.save_ark(str(full), feats, compression_method=compress)
    data = full.read_bytes()
    ark = tmp_path / "t.ark"
    for n in _all_truncations(data, 97):
        ark.write_bytes(data[:n])
        with pytest.raises(svdistill.Error) as ei:
            list(iter_archive(f"ark:{ark}"))
        msg = str(ei.value)
        assert "t.ark" in msg and "byte" in msg, (n, msg)
        assert "Traceback" not in msg and "codec" not in msg, (n, msg)


def test_truncation_through_a_command_names_the_utterance(feats, tmp_path):
    from svdistill.forward import iter_archive
    full = tmp_path / "full.ark"
    kaldiio.save_ark(str(full), feats)
    msg = error_of(lambda: list(iter_archive(f"ark:head -c 9000 {full} |")))
    assert "utt2" in msg and "utt1" in msg and "command's output" in msg


def test_every_truncation_of_a_text_archive_is_an_error_or_a_shorter_complete_archive(fx, tmp_path):
    """A text archive cut at a line end can be a valid shorter archive (as in Kaldi); anywhere
    else it is an error naming the file, never a traceback or a silently wrong matrix."""
    from svdistill.forward import iter_archive
    data = (fx / "feats.txt").read_bytes()
    ref = load_ark(fx / "feats.ark")
    ark = tmp_path / "t.txt"
    for n in _all_truncations(data, 331):
        ark.write_bytes(data[:n])
        try:
            got = dict(iter_archive(f"ark:{ark}"))
        except svdistill.Error as e:
            assert "t.txt" in str(e) and "byte" in str(e), (n, str(e))
            continue
        for k, v in got.items():  # what was read is whole and right
            np.testing.assert_array_equal(v, ref[k])


def test_gzip_archive_garbage_and_models_are_one_error(fx, feats, tmp_path, tiny, run_cli, clean_cli_error):
    gz = tmp_path / "f.ark.gz"
    gz.write_bytes(gzip.compress((fx / "feats.ark").read_bytes()))
    clean_cli_error(run_cli("forward", tiny, f"ark:{gz}", f"ark:{tmp_path / 'o.ark'}"), "gunzip -c")
    # through a command it reads, and a truncated gzip names the failing command
    p = run_cli("forward", tiny, f"ark:gunzip -c {gz} |", f"ark:{tmp_path / 'o.ark'}")
    assert p.returncode == 0, p.stderr.decode()
    cut = tmp_path / "cut.ark.gz"
    cut.write_bytes(gz.read_bytes()[:3000])
    p = run_cli("forward", tiny, f"ark:gunzip -c {cut} |", f"ark:{tmp_path / 'o2.ark'}")
    assert p.returncode == 2 and b"exit status 1" in p.stderr and b"Traceback" not in p.stderr
    assert not (tmp_path / "o2.ark").exists()
    rng = np.random.default_rng(0)
    for i in range(20):
        g = tmp_path / "g.ark"
        g.write_bytes(rng.integers(0, 256, size=int(rng.integers(1, 3000)), dtype=np.uint8).tobytes())
        from svdistill.forward import iter_archive
        with pytest.raises(svdistill.Error):
            list(iter_archive(f"ark:{g}"))
    clean_cli_error(run_cli("forward", tiny, f"ark:{fx / 'tiny_mlp.nnet.bin'}", f"ark:{tmp_path / 'o.ark'}"),
                    "byte 0", "not a Kaldi archive")


def test_damaged_binary_headers_are_named(feats, tmp_path):
    from svdistill.forward import iter_archive
    ark = tmp_path / "d.ark"
    rows = struct.pack("<i", -5)
    ark.write_bytes(b"u1 \0BFM \x04" + rows + b"\x04" + struct.pack("<i", 40))
    assert "-5 rows" in error_of(lambda: list(iter_archive(f"ark:{ark}")))
    ark.write_bytes(b"u1 \0BXY \x04")
    assert "unknown binary type" in error_of(lambda: list(iter_archive(f"ark:{ark}")))
    kaldiio.save_ark(str(ark), {"v": np.zeros(4, np.float32)})
    assert "vector" in error_of(lambda: list(iter_archive(f"ark:{ark}")))
    # a huge claimed size is refused from the file size, without allocating it
    ark.write_bytes(b"u1 \0BFM \x04" + struct.pack("<i", 2**30) + b"\x04" + struct.pack("<i", 2**30))
    assert "remain" in error_of(lambda: list(iter_archive(f"ark:{ark}")))


@pytest.mark.parametrize("change", ["into_data", "past_end", "one_off", "into_key"])
def test_bad_scp_offsets_are_named(change, feats, tmp_path, tiny, run_cli, clean_cli_error):
    ark, scp = tmp_path / "a.ark", tmp_path / "a.scp"
    kaldiio.save_ark(str(ark), feats, scp=str(scp))
    lines = scp.read_text().splitlines()
    key, where = lines[1].split()
    off = int(where.rsplit(":", 1)[1])
    new = {"into_data": off + 1000, "past_end": 10**9, "one_off": off + 1, "into_key": off - 3}[change]
    lines[1] = f"{key} {ark}:{new}"
    scp.write_text("\n".join(lines) + "\n")
    line = clean_cli_error(run_cli("forward", tiny, f"scp:{scp}", f"ark:{tmp_path / 'o.ark'}"), "utt2",
                           "line 2", f"byte {new:,}" if change != "past_end" else "past the end")
    assert "codec" not in line
    assert not (tmp_path / "o.ark").exists()


def test_scp_faults(feats, tmp_path):
    from svdistill.forward import iter_archive
    scp = tmp_path / "s.scp"
    scp.write_text("utt1\n")
    assert "line 1" in error_of(lambda: list(iter_archive(f"scp:{scp}")))
    scp.write_text(f"utt1 {tmp_path / 'missing.ark'}:5\n")
    assert "missing.ark" in error_of(lambda: list(iter_archive(f"scp:{scp}")))
    scp.write_bytes(b"\x00B\x8d\xff garbage\n")
    assert "not text" in error_of(lambda: list(iter_archive(f"scp:{scp}")))
    ark = tmp_path / "a.ark"
    kaldiio.save_ark(str(ark), feats, scp=str(scp))
    # Kaldi's row ranges (inclusive) are applied; out of range is named
    off = scp.read_text().splitlines()[0].split()[1]
    scp.write_text(f"x {off}[2:4]\ny {off}[0:1,5:6]\nz {off}[10:99]\n")
    it = iter_archive(f"scp:{scp}")
    np.testing.assert_array_equal(next(it)[1], feats["utt1"][2:5])
    np.testing.assert_array_equal(next(it)[1], feats["utt1"][0:2, 5:7])
    with pytest.raises(svdistill.Error, match="range"):
        next(it)


@pytest.mark.parametrize("cmd,status", [("false", "exit status 1"), ("nonexistcmd_svd", "exit status 127"),
                                        ("exit 4", "exit status 4"), ("kill -9 $$", "SIGKILL")])
def test_failing_input_commands_are_errors(cmd, status, tiny, tmp_path, run_cli, clean_cli_error):
    spec = f"ark:{cmd} |"
    for args in (("forward", tiny, spec, f"ark:{tmp_path / 'o.ark'}"), ("compare", tiny, tiny, spec)):
        p = run_cli(*args)
        lines = [ln for ln in p.stderr.decode().splitlines() if ln.startswith("svdistill")]
        assert p.returncode == 2 and len(lines) == 1, p.stderr.decode()
        assert cmd in lines[0] and status in lines[0], lines[0]
    assert not (tmp_path / "o.ark").exists()
    # distill's readers: features and labels
    with pytest.raises(svdistill.Error, match=status):
        svdistill.distill(tiny, spec, labels={"u": np.zeros(3, np.int32)}, max_epochs=1)
    from svdistill.distill.data import load_labels
    with pytest.raises(svdistill.Error, match=status):
        load_labels(spec, "labels")


@pytest.mark.parametrize("where", ["trailing", "leading"])
def test_failing_output_command_is_an_error(where, fx, tiny, run_cli, clean_cli_error):
    cmd = "cat > /nonexistent/dir/x"
    spec = f"ark:{cmd} |" if where == "trailing" else f"ark:| {cmd}"
    p = run_cli("forward", tiny, f"ark:{fx / 'feats.ark'}", spec)
    lines = [ln for ln in p.stderr.decode().splitlines() if ln.startswith("svdistill")]
    assert p.returncode == 2 and len(lines) == 1 and "exit status" in lines[0] and cmd in lines[0], p.stderr
    assert b"utterances" not in p.stderr


def test_output_command_that_succeeds_gets_everything(fx, tiny, tmp_path):
    out = tmp_path / "o.ark.gz"
    forward_archive(tiny, f"ark:{fx / 'feats.ark'}", f"ark:| gzip -c > {out}")
    got = {k: np.asarray(v) for k, v in kaldiio.load_ark(gzip.open(out))}
    assert list(got) == ["utt1", "utt2", "utt3"]


def test_labels_faults(feats, tmp_path):
    from svdistill.distill.data import load_labels
    ali = tmp_path / "ali.ark"
    kaldiio.save_ark(str(ali), {"a": np.array([1, 2, 3], np.int32), "b": np.array([], np.int32)})
    got = load_labels(f"ark:{ali}", "labels")
    assert list(got) == ["a", "b"] and got["a"].tolist() == [1, 2, 3]
    txt = tmp_path / "ali.txt"
    txt.write_text("a 1 2 3\nb 4\n")
    assert load_labels(f"ark,t:{txt}", "labels")["b"].tolist() == [4]
    txt.write_text("a 1 x 3\n")
    assert "'x'" in error_of(load_labels, f"ark:{txt}", "labels")
    ali.write_bytes(ali.read_bytes()[:20])
    msg = error_of(load_labels, f"ark:{ali}", "labels")
    assert "ali.ark" in msg and "byte" in msg and "utterance a" in msg
    kaldiio.save_ark(str(ali), {"f": feats["utt1"]})
    assert "integer vector" in error_of(load_labels, f"ark:{ali}", "labels")


# ============================================================ messages and API (items 11, 12, 13)


def test_rspecifier_without_ark_says_what_an_rspecifier_is(fx, tiny, tmp_path, run_cli, clean_cli_error):
    line = clean_cli_error(run_cli("forward", tiny, fx / "feats.ark", f"ark:{tmp_path / 'o.ark'}"),
                           "rspecifier", "ark:")
    assert "output file" not in line
    clean_cli_error(run_cli("compare", tiny, tiny, fx / "feats.ark"), "rspecifier")
    clean_cli_error(run_cli("forward", tiny, "scp,ark:x", f"ark:{tmp_path / 'o.ark'}"), "rspecifier")
    clean_cli_error(run_cli("forward", tiny, f"ark:{fx / 'feats.ark'}", tmp_path / "o.ark"), "wspecifier")
    clean_cli_error(run_cli("forward", tiny, f"ark:{fx / 'feats.ark'}", "scp:o.scp"), "wspecifier", "ark,scp")
    assert "rspecifier" in error_of(svdistill.distill, tiny, "feats.ark", labels={"u": [1]})


def test_empty_archives_are_an_explicit_outcome(tiny, tmp_path, run_cli, clean_cli_error):
    empty = tmp_path / "e.ark"
    empty.write_bytes(b"")
    out = tmp_path / "o.ark"
    clean_cli_error(run_cli("forward", tiny, f"ark:{empty}", f"ark:{out}"), "no utterances")
    assert not out.exists()
    clean_cli_error(run_cli("compare", tiny, tiny, f"ark:{empty}"), "no utterances")
    scp = tmp_path / "e.scp"
    scp.write_text("")
    clean_cli_error(run_cli("compare", tiny, tiny, f"scp:{scp}"), "no utterances")


def test_compare_accepts_features_as_distill_does(fx, tiny, feats, run_cli):
    """An rspecifier, a dict of arrays or one 2-D array: the same numbers."""
    s = svdistill.compress(svdistill.read(fx / "dnn.nnet.bin"), rank=8)[0]
    t = str(fx / "dnn.nnet.bin")
    ft = str(fx / "final.feature_transform")
    a = svdistill.compare(t, s, f"ark:{fx / 'feats.ark'}", feature_transform=ft)
    b = svdistill.compare(t, s, feats, feature_transform=ft)
    assert a == b
    c = svdistill.compare(t, s, feats["utt2"], feature_transform=ft)
    assert c["utterances"] == 1 and c["frames"] == 50
    assert c == svdistill.compare(t, s, {"x": feats["utt2"]}, feature_transform=ft)
    assert "expected a Kaldi rspecifier" in error_of(svdistill.compare, t, s, 3)
    assert "2-D" in error_of(svdistill.compare, t, s, {"u": feats["utt1"][0]})
    # stdin is fine for compare (one pass), unlike distill
    p = run_cli("compare", "--json", tiny, tiny, "ark:-", input=(fx / "feats.ark").read_bytes())
    assert p.returncode == 0 and b'"frames": 150' in p.stdout, p.stderr.decode()


def test_distill_features_from_stdin_say_why(tiny):
    msg = error_of(svdistill.distill, tiny, "ark:-", labels={"u": [1]})
    assert "stdin" in msg and "once per epoch" in msg


# ------------------------------------------------------------ review of the issue-19 fixes


def _huge_header(rows: int, cols: int) -> bytes:
    return b"utt1 \0BFM \x04" + struct.pack("<i", rows) + b"\x04" + struct.pack("<i", cols) + b"\0" * 100


@pytest.mark.parametrize("rows,cols,says", [(2**31 - 1, 2**31 - 1, "more than any memory"),
                                            (200_000_000, 40, "only 100 followed")])
@pytest.mark.parametrize("how", ["command", "stdin"])
def test_a_damaged_size_read_from_a_pipe_allocates_nothing(rows, cols, says, how, tmp_path, run_cli,
                                                           clean_cli_error):
    """A pipe's size is unknown: the declared size is only a claim until the bytes arrive (before:
    an OverflowError traceback, or 'out of memory' after allocating and zeroing 32 GB)."""
    bad = tmp_path / "bad.ark"
    bad.write_bytes(_huge_header(rows, cols))
    model = Path(__file__).resolve().parent.parent / "examples" / "small.nnet"
    if how == "command":
        proc = run_cli("forward", model, f"ark:cat {bad} |", f"ark:{tmp_path / 'o.ark'}")
    else:
        proc = run_cli("forward", model, "ark:-", f"ark:{tmp_path / 'o.ark'}", input=bad.read_bytes())
    line = clean_cli_error(proc, "utterance utt1", "byte 20", says)
    assert f"{rows} x {cols}" in line
    assert not (tmp_path / "o.ark").exists()


@pytest.mark.parametrize("text,kind,bad,offset", [
    (b"u1 1 2 --5\n", "ints", "'--5'", 7),
    (b"u1 1 2 1_0\n", "ints", "'1_0'", 7),
    (b"u1 [ 1 2 ]\nu2 +3 x7\n", "ints", "'x7'", 17),
    (b"u1 [\n 1 2\n 3 1_0 ]\n", "matrix", "'1_0'", 13),
    (b"u1 [ 1 2 0x10 ]\n", "matrix", "'0x10'", 9),
    (b"u1 [ 1e5 .5 ]\nu2 [ 1 2. 3e ]\n", "matrix", "'3e'", 24),
])
def test_malformed_numbers_in_text_are_named_with_their_offset(text, kind, bad, offset, tmp_path):
    """Kaldi's number syntax, strictly (Python's int/float also take '1_0'); before, '--5' ended in
    'RuntimeError: generator raised StopIteration'."""
    from svdistill.archive import read_table
    ark = tmp_path / "t.ark"
    ark.write_bytes(text)
    msg = error_of(lambda: list(read_table(f"ark:{ark}", kind=kind)))
    assert bad in msg and f"byte {offset} " in msg, msg
    assert ("utterance u2" if b"u2" in text else "utterance u1") in msg


def test_text_numbers_kaldi_writes_are_read(tmp_path):
    from svdistill.archive import read_table
    ark = tmp_path / "t.ark"
    ark.write_bytes(b"u1 [ 1 -2.5e-3 +.5 7. 1E+2 ]\nu2 [\n 0 -0 ]\n")
    got = dict(read_table(f"ark:{ark}"))
    np.testing.assert_array_equal(got["u1"], np.array([[1, -2.5e-3, 0.5, 7, 100]], np.float32))
    ark.write_bytes(b"u1 [ 1 +2 -3 ]\nu2 2147483647 -2147483648\n")
    got = dict(read_table(f"ark:{ark}", kind="ints"))
    assert got["u1"].tolist() == [1, 2, -3] and got["u2"].tolist() == [2**31 - 1, -2**31]
    ark.write_bytes(b"u1 2147483648\n")
    assert "does not fit a 32-bit integer" in error_of(lambda: list(read_table(f"ark:{ark}", kind="ints")))


def test_keys_are_read_in_blocks_and_split_anywhere(feats, tmp_path):
    """Keys and headers come from a buffer: the same table whether it arrives at once or a
    byte at a time through a pipe (keys, headers and data split across reads)."""
    from svdistill.archive import read_table
    ark = tmp_path / "k.ark"
    long_keys = {f"spk{i:06d}-utterance-{i:015d}": v for i, v in enumerate(feats.values())}
    kaldiio.save_ark(str(ark), long_keys)
    trickle = tmp_path / "trickle.py"
    trickle.write_text("import sys, time\ndata = open(sys.argv[1], 'rb').read()\n"
                       "for i in range(0, len(data), 7):\n"
                       "    sys.stdout.buffer.write(data[i:i + 7]); sys.stdout.buffer.flush()\n")
    import sys
    for spec in (f"ark:{ark}", f"ark:{sys.executable} {trickle} {ark} |"):
        got = dict(read_table(spec))
        assert list(got) == list(long_keys)
        assert all(np.array_equal(got[k], long_keys[k]) for k in long_keys)


def test_an_output_is_never_an_input_scp_or_the_scp_over_an_input_archive(fx, tiny, feats, tmp_path):
    """Only the output archive may replace an input archive read directly ('copy X X')."""
    ark, scp = tmp_path / "g.ark", tmp_path / "g.scp"
    kaldiio.save_ark(str(ark), feats, scp=str(scp))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for rs, ws, says in [
        (f"scp:{scp}", f"ark,scp:{tmp_path / 'o.ark'},{scp}", "the output scp"),
        (f"scp:{scp}", f"ark:{scp}", "the output archive"),
        (f"ark:{ark}", f"ark,scp:{tmp_path / 'o.ark'},{ark}", "the output scp"),
    ]:
        msg = error_of(forward_archive, tiny, rs, ws)
        assert says in msg and "refusing to overwrite an input" in msg, msg
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    msg = error_of(forward_archive, tiny, f"ark:{ark}", f"ark,scp:{tmp_path / 'o.ark'},{tmp_path / 'o.ark'}")
    assert "the archive and the scp are the same file" in msg
    # the archive replacing itself is still fine
    forward_archive(tiny, f"ark:{ark}", f"ark:{ark}")
    assert list(load_ark(ark)) == list(feats)


def test_archive_and_scp_are_all_or_nothing_when_the_scp_cannot_be_renamed(tiny, feats, tmp_path, monkeypatch):
    """The scp's rename fails after the archive's: the archive's previous content is put back
    (a new archive is removed), so no new archive stands beside a stale scp."""
    from svdistill import _core, archive
    real = _core.commit_output

    def failing(tmp, target, name, fd=-1, durable=False):
        if target.endswith(".scp"):
            os.unlink(tmp)
            if fd >= 0:
                os.close(fd)
            raise svdistill.Error(f"{name}: cannot rename the finished output into place: Disk quota exceeded")
        return real(tmp, target, name, fd, durable)

    src = tmp_path / "f.ark"
    kaldiio.save_ark(str(src), feats)
    monkeypatch.setattr(archive._core, "commit_output", failing)
    out_ark, out_scp = tmp_path / "o.ark", tmp_path / "o.scp"
    # no previous pair: nothing is left
    with pytest.raises(svdistill.Error, match="Disk quota"):
        forward_archive(tiny, f"ark:{src}", f"ark,scp:{out_ark},{out_scp}")
    assert dir_listing(tmp_path) == ["f.ark"]
    # a previous pair: both stay as they were
    out_ark.write_bytes(b"old archive")
    out_scp.write_bytes(b"old scp")
    with pytest.raises(svdistill.Error, match="Disk quota"):
        forward_archive(tiny, f"ark:{src}", f"ark,scp:{out_ark},{out_scp}")
    assert out_ark.read_bytes() == b"old archive" and out_scp.read_bytes() == b"old scp"
    assert dir_listing(tmp_path) == ["f.ark", "o.ark", "o.scp"]


def _host_tag() -> str:
    import re
    import socket
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname() or "host")[:32]


def test_stale_temporaries_are_judged_by_their_lock_not_their_pid(tmp_path):
    """A pid says nothing across PID namespaces (containers sharing a hostname and a volume):
    a temporary someone holds locked is being written, whatever its pid; one nobody holds is
    stale, even if its pid is alive here."""
    import fcntl

    from svdistill.io import atomic_output
    target = tmp_path / "t.nnet"
    host = _host_tag()
    # pid 2147483646 runs nowhere here: a writer in another PID namespace, holding its lock
    busy = tmp_path / f".t.nnet.svdistill-{host}.2147483646-a1b2c3"
    # our parent is alive, but nobody holds this one: left by a killed writer elsewhere
    stale = tmp_path / f".t.nnet.svdistill-{host}.{os.getppid()}-d4e5f6"
    other = tmp_path / f".u.nnet.svdistill-{host}.2147483646-a1b2c3"  # another target's: not judged
    for p in (busy, stale, other):
        p.write_bytes(b"partial")
    holder = os.open(busy, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with atomic_output(target) as tmp:
            assert os.path.basename(tmp).startswith(f".t.nnet.svdistill-{host}.{os.getpid()}-")
            Path(tmp).write_bytes(b"new")
        assert target.read_bytes() == b"new"
        assert busy.exists() and other.exists() and not stale.exists()
    finally:
        os.close(holder)
    # once its writer is gone, the busy one is stale too
    with atomic_output(target) as tmp:
        Path(tmp).write_bytes(b"newer")
    assert not busy.exists() and dir_listing(tmp_path) == [other.name, "t.nnet"]


def test_a_temporary_being_written_is_locked_until_its_rename(tmp_path):
    import fcntl

    from svdistill.io import atomic_output
    target = tmp_path / "t.json"
    with atomic_output(target) as tmp:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        Path(tmp).write_text("{}")
    assert target.read_text() == "{}" and dir_listing(tmp_path) == ["t.json"]


# ---------------------------------------------------------------- second new-user trial


def test_a_float_vector_as_the_first_utterance_is_said_without_contradiction(tmp_path):
    path = tmp_path / "fv.ark"
    kaldiio.save_ark(str(path), {"utt1": np.ones(40, np.float32), "utt2": np.ones(40, np.float32)})
    from svdistill.archive import read_table
    msg = error_of(lambda: list(read_table(f"ark:{path}")))
    assert msg == (f"ark:{path}: utterance utt1 (byte 5 of {path}, the first utterance): expected a matrix "
                   "(frames x dims), found a float vector (FV)"), msg


def _text_feats(fx, tmp_path) -> bytes:
    from svdistill.archive import read_table, write_table
    path = tmp_path / "feats.txt"
    write_table(f"ark,t:{path}", read_table(f"ark:{fx / 'feats.ark'}"))
    return path.read_bytes()


def test_a_text_archive_cut_anywhere_in_a_row_is_truncated_not_ragged(fx, tmp_path):
    """The data end inside a row (with or without its newline): truncation, as at a row's end."""
    from svdistill.archive import read_table
    data = _text_feats(fx, tmp_path)
    second = data.index(b"utt2")
    row = data.index(b"\n", data.index(b"\n", second + 10) + 1)  # the end of utt2's second row
    cuts = [row - 5, row - 30, row, row + 1, row + 12]
    for cut in cuts:
        for tail in (b"", b"\n"):
            path = tmp_path / "cut.txt"
            path.write_bytes(data[:cut] + tail)
            msg = error_of(lambda: list(read_table(f"ark:{path}")))
            assert "utterance utt2" in msg and "the archive is truncated" in msg and "ragged" not in msg, (cut, msg)


def test_a_short_row_followed_by_more_data_is_still_ragged(fx, tmp_path):
    from svdistill.archive import read_table
    data = _text_feats(fx, tmp_path)
    lines = data.split(b"\n")
    lines[3] = b" ".join(lines[3].split()[:2])
    path = tmp_path / "rag.txt"
    path.write_bytes(b"\n".join(lines))
    msg = error_of(lambda: list(read_table(f"ark:{path}")))
    assert "ragged text matrix: row 2 has 2 numbers, row 0 has 40" in msg, msg


def test_an_alignment_given_as_features_is_named_as_what_it_is(tmp_path):
    from svdistill.archive import read_table
    kaldiio.save_ark(str(tmp_path / "ali.ark"), {"utt1": np.zeros(50, np.int32)}, scp=str(tmp_path / "ali.scp"))
    for spec in (f"ark:{tmp_path / 'ali.ark'}", f"scp:{tmp_path / 'ali.scp'}"):
        msg = error_of(lambda: list(read_table(spec)))
        assert "expected a matrix (frames x dims), found an integer vector (an alignment" in msg, msg
        assert "scp offset" not in msg, msg


def test_another_object_at_an_scp_offset_does_not_blame_the_offset(tmp_path):
    """The offset points at a whole object, of another kind: the scp is right, the data are not features."""
    from svdistill.archive import read_table
    kaldiio.save_ark(str(tmp_path / "fv.ark"), {"utt1": np.ones(40, np.float32)}, scp=str(tmp_path / "fv.scp"))
    msg = error_of(lambda: list(read_table(f"scp:{tmp_path / 'fv.scp'}")))
    assert msg.endswith("found a float vector (FV)"), msg
    kaldiio.save_ark(str(tmp_path / "m.ark"), {"utt1": np.ones((2, 3), np.float32)}, scp=str(tmp_path / "m.scp"))
    msg = error_of(lambda: list(read_table(f"scp:{tmp_path / 'm.scp'}", kind="ints")))
    assert msg.endswith("found a float matrix (FM)"), msg
    (tmp_path / "off.scp").write_text(f"utt1 {tmp_path / 'm.ark'}:7\n")  # inside the header: the offset is wrong
    msg = error_of(lambda: list(read_table(f"scp:{tmp_path / 'off.scp'}")))
    assert msg.endswith("the scp offset does not point at the start of a matrix"), msg


def test_table_format_errors_carry_the_core_attributes(tmp_path):
    """A FormatError from a table has what the core's have (file, offset, line, ...): code that
    reads e.offset works whatever raised it (found by the typed stubs' review)."""
    from svdistill.archive import read_table
    ark = tmp_path / "cut.ark"
    kaldiio.save_ark(str(ark), {"u1": np.ones((5, 4), np.float32)})
    ark.write_bytes(ark.read_bytes()[:-7])
    scp = tmp_path / "bad.scp"
    scp.write_text("u1\n")
    for spec, offset, line in ((f"ark:{ark}", True, None), (f"scp:{scp}", False, 1)):
        with pytest.raises(svdistill.FormatError) as info:
            list(read_table(spec))
        e = info.value
        assert e.file and (e.offset is not None) == offset and e.line == line
        assert e.column is None and e.component_index is None and e.marker is None
