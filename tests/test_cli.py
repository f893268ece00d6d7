"""The svdistill command line, run as a subprocess (python -m svdistill)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import svdistill

INFO_MODELS = [
    ("tiny_mlp.nnet.bin", "tiny_mlp.info.txt"),
    ("dnn.nnet.txt", "dnn.info.txt"),
    ("mixed.nnet.bin", "mixed.info.txt"),
    ("lrcoef.nnet.txt", "lrcoef.info.txt"),
    ("extras.nnet.bin", "extras.info.txt"),
    ("final.feature_transform", "final.feature_transform.info.txt"),
    ("dnn_with_ft.nnet.bin", "dnn_with_ft.info.txt"),
    ("edge/lowercase_nowrapper.nnet", "edge/lowercase_nowrapper.info.txt"),
    ("edge/empty.nnet", "edge/empty.info.txt"),
]


@pytest.mark.parametrize("model,ref", INFO_MODELS, ids=[m for m, _ in INFO_MODELS])
def test_info_text_is_nnet_info(fixtures_dir, run_cli, info_checks, model, ref):
    assert_text, _, _ = info_checks
    p = run_cli("info", fixtures_dir / model)
    assert p.returncode == 0, p.stderr
    assert p.stderr == b""
    assert_text(p.stdout.decode(), (fixtures_dir / ref).read_text())


def test_info_json(fixtures_dir, run_cli, info_checks):
    _, _, parse = info_checks
    p = run_cli("info", "--json=true", fixtures_dir / "mixed.nnet.bin")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    ref = parse((fixtures_dir / "mixed.info.txt").read_text())
    assert {"num_components", "input_dim", "output_dim", "num_params", "components"} <= set(d)
    assert d["num_components"] == ref["num_components"] == 8
    assert (d["input_dim"], d["output_dim"]) == (ref["input_dim"], ref["output_dim"]) == (40, 24)
    assert d["num_params"] == 6488 and "%g" % (d["num_params"] / 1e6) == ref["millions"]
    assert d["binary"] is True and d["dialect"] == "kaldi"
    assert len(d["components"]) == 8
    for c, r in zip(d["components"], ref["components"]):
        assert {"kind", "input_dim", "output_dim", "num_params"} <= set(c)
        assert "<" + c["kind"] + ">" == r["marker"]
        assert (c["input_dim"], c["output_dim"]) == (r["input_dim"], r["output_dim"])
    kinds = {c["kind"]: c for c in d["components"]}
    assert kinds["Dropout"]["num_params"] == 0
    assert kinds["ParametricRelu"]["num_params"] == 96
    assert d["components"][0]["num_params"] == 32 * 40
    assert d["components"][1]["num_params"] == 48 * 32 + 48
    assert kinds["BlockSoftmax"]["ints"] == [10, 14]
    # NaN statistics (constant vectors) are JSON null, not the invalid token NaN.
    assert b"NaN" not in p.stdout
    assert kinds["ParametricRelu"]["stats"]["alpha"]["skewness"] is None


def test_info_json_flag_after_model(fixtures_dir, run_cli):
    p = run_cli("info", fixtures_dir / "tiny_mlp.nnet.bin", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["num_params"] == 7434


def test_info_json_flag_before_model(fixtures_dir, run_cli):
    p = run_cli("info", "--json", fixtures_dir / "tiny_mlp.nnet.bin")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["num_params"] == 7434


def test_info_json_false_is_text(fixtures_dir, run_cli):
    p = run_cli("info", "--json", "false", fixtures_dir / "tiny_mlp.nnet.bin")
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == (fixtures_dir / "tiny_mlp.info.txt").read_text()


@pytest.mark.parametrize("form", ["equals", "space"])
def test_copy_option_forms(fixtures_dir, run_cli, tmp_path, form):
    def opt(name, value):
        return [f"--{name}={value}"] if form == "equals" else [f"--{name}", value]

    src_txt, src_bin = fixtures_dir / "lrcoef.nnet.txt", fixtures_dir / "lrcoef.nnet.bin"
    out = tmp_path / "a"
    p = run_cli("copy", *opt("binary", "true"), src_txt, out)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == src_bin.read_bytes()
    p = run_cli("copy", *opt("binary", "false"), *opt("digits", "kaldi"), src_bin, out)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == src_txt.read_bytes()
    p = run_cli("copy", *opt("binary", "false"), *opt("dialect", "pdnn"), src_bin, out)
    assert p.returncode == 0, p.stderr
    text = out.read_bytes()
    assert b"<Nnet>" not in text and b"<affinetransform> 32 40\n" in text
    assert p.stderr.decode().startswith("svdistill: note: kept non-default learn-rate coefficients")


def test_copy_kaldi_boolean_spellings(fixtures_dir, run_cli, tmp_path):
    out = tmp_path / "b"
    for spelling in ["True", "t", "1"]:
        p = run_cli("copy", f"--binary={spelling}", fixtures_dir / "tiny_mlp.nnet.txt", out)
        assert p.returncode == 0, p.stderr
        assert out.read_bytes() == (fixtures_dir / "tiny_mlp.nnet.bin").read_bytes()
    p = run_cli("copy", "--binary=maybe", fixtures_dir / "tiny_mlp.nnet.txt", out)
    assert p.returncode == 2 and b"Traceback" not in p.stderr
    assert b"expects true or false" in p.stderr


@pytest.mark.parametrize("args", [["--help"], ["info", "--help"], ["copy", "--help"], ["-h"]])
def test_help(run_cli, args):
    p = run_cli(*args)
    assert p.returncode == 0
    assert p.stdout.decode().startswith("usage: svdistill")
    assert p.stderr == b""


def test_help_mentions_options(run_cli):
    text = run_cli("copy", "--help").stdout.decode()
    for opt in ["--binary", "--dialect", "--digits", "MODEL_IN", "MODEL_OUT"]:
        assert opt in text
    assert "--json" in run_cli("info", "--help").stdout.decode()
    top = run_cli("--help").stdout.decode()
    for var in ["SVDISTILL_NUM_THREADS", "SVDISTILL_FSYNC", "SVDISTILL_HUGEPAGES"]:
        assert var in top


def test_version(run_cli):
    import svdistill
    p = run_cli("--version")
    assert p.returncode == 0
    assert p.stdout.decode().splitlines()[0] == f"svdistill {svdistill.__version__}"


@pytest.mark.parametrize("args", [[], ["info"], ["copy", "x"], ["frobnicate"], ["copy", "--digits=9", "a", "b"]])
def test_usage_errors_exit_2(run_cli, args):
    p = run_cli(*args)
    assert p.returncode == 2
    assert b"Traceback" not in p.stderr
    assert b"usage: svdistill" in p.stderr


def _bad_inputs(fixtures_dir, tmp_path):
    garbage = tmp_path / "garbage.nnet"
    garbage.write_bytes(b"hello world\n")
    cut = tmp_path / "cut.bin"
    cut.write_bytes((fixtures_dir / "tiny_mlp.nnet.bin").read_bytes()[:1000])
    return {
        "missing": (tmp_path / "missing.nnet", "cannot open"),
        "directory": (tmp_path, "directory"),
        "garbage": (garbage, "expected a component marker"),
        "truncated": (cut, "byte "),
        "ragged": (fixtures_dir / "edge" / "ragged_rows.nnet", "ragged"),
        "nan": (fixtures_dir / "edge" / "nan_weight_binary.bin", "non-finite"),
        "chain": (fixtures_dir / "edge" / "chain_mismatch.nnet", "does not match"),
    }


@pytest.mark.parametrize("command", ["info", "copy"])
@pytest.mark.parametrize("case", ["missing", "directory", "garbage", "truncated", "ragged", "nan", "chain"])
def test_bad_input_is_one_clean_line(fixtures_dir, tmp_path, run_cli, clean_cli_error, command, case):
    path, phrase = _bad_inputs(fixtures_dir, tmp_path)[case]
    if command == "info":
        p = run_cli("info", path)
    else:
        p = run_cli("copy", "--binary=true", path, tmp_path / "out.bin")
        assert not (tmp_path / "out.bin").exists()
    clean_cli_error(p, str(path), phrase)
    assert p.stdout == b""


def test_bad_output_is_one_clean_line(fixtures_dir, tmp_path, run_cli, clean_cli_error):
    target = tmp_path / "nope" / "out.nnet"
    p = run_cli("copy", fixtures_dir / "tiny_mlp.nnet.bin", target)
    clean_cli_error(p, str(target))
    p = run_cli("copy", fixtures_dir / "tiny_mlp.nnet.bin", tmp_path)
    clean_cli_error(p, str(tmp_path), "directory")
    p = run_cli("copy", "--binary=true", "--dialect=pdnn", fixtures_dir / "tiny_mlp.nnet.txt", tmp_path / "o")
    line = clean_cli_error(p, "--dialect pdnn is text only")
    assert "binary=False" not in line and "dialect=" not in line  # the CLI's words, not the API's
    assert not (tmp_path / "o").exists()


def test_non_utf8_marker_is_one_clean_line(tmp_path, run_cli, clean_cli_error):
    p = tmp_path / "bad.nnet"
    p.write_bytes(b"<Affine\xffTransform> 2 x\n")
    clean_cli_error(run_cli("info", p), str(p))


def test_copy_writes_nothing_to_stdout_on_error(run_cli, clean_cli_error, tmp_path):
    p = tmp_path / "x.nnet"
    p.write_bytes(b"<Nnet>\n<Sigmoid> 3 3\n<Sigmoid> 2 2\n</Nnet>\n")
    r = run_cli("copy", p, "-")
    clean_cli_error(r, str(p), "does not match")
    assert r.stdout == b""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("threads", ["1", "2"])
def test_cli_full_disk_is_one_clean_error(tmp_path, threads, clean_cli_error):
    """Writing to a full device (stdout on /dev/full) fails with the system's
    reason, once, whichever of the writer's threads hit it."""
    rng = np.random.default_rng(0)
    model = svdistill.Model([svdistill.Component.affine(rng.standard_normal((1000, 600), dtype=np.float32))])
    src = tmp_path / "m.nnet"
    svdistill.write(model, src, binary=True)
    env = dict(os.environ, SVDISTILL_NUM_THREADS=threads)
    with open("/dev/full", "wb") as full:
        proc = subprocess.run([sys.executable, "-m", "svdistill", "copy", "--binary=false", str(src), "-"],
                              stdout=full, stderr=subprocess.PIPE, env=env, timeout=60)
    err = clean_cli_error(proc, "No space left on device")
    assert "already closed" not in err
