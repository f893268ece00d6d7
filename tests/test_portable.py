"""SVDISTILL_PORTABLE=1 forces the core's baseline x86-64 code paths (the
kernels and the text number parser), with the dispatched paths' results; the
build facts (svdistill.build_info(), ``svdistill --version``) say which run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pytest

import svdistill
from conftest import run_cpp_check

ENV = "SVDISTILL_PORTABLE"


def _env(portable: Optional[str]) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop(ENV, None)
    if portable is not None:
        env[ENV] = portable
    env["OPENBLAS_NUM_THREADS"] = "1"  # the same GEMM blocking in every run
    return env


def _child_build_info(portable: Optional[str]) -> dict:
    code = "import json, svdistill; print(json.dumps(svdistill.build_info()))"
    p = subprocess.run([sys.executable, "-c", code], env=_env(portable), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.parametrize("value, forced", [("1", True), ("yes", True), ("0", False), ("", False), (None, False)],
                         ids=["1", "yes", "0", "empty", "unset"])
def test_portable_env_selects_the_baseline(value, forced):
    b = _child_build_info(value)
    assert b["simd_forced_portable"] is forced
    if forced:
        assert b["simd"] == "baseline"
    else:
        # Dispatched: x86-64-v3 exactly where it is built and the CPU has it.
        v3 = b["cpu_x86_64_v3"] and "x86-64-v3" in b["simd_built"]
        assert b["simd"] == ("x86-64-v3" if v3 else "baseline")


def test_simd_level_is_decided_at_import():
    """Setting the variable after import changes nothing (one decision per process)."""
    code = ("import os, json, svdistill\n"
            "os.environ['SVDISTILL_PORTABLE'] = '1'\n"
            "m = svdistill.Model([svdistill.Component.activation('Sigmoid', 3)])\n"
            "svdistill.Network(m)(__import__('numpy').zeros((2, 3), 'float32'))\n"
            "print(json.dumps(svdistill.build_info()))")
    p = subprocess.run([sys.executable, "-c", code], env=_env(None), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["simd_forced_portable"] is False


def test_build_info_reports_the_build():
    b = svdistill.build_info()
    assert b["version"] == svdistill.__version__
    assert b["compiler"].split()[0] in ("GCC", "Clang", "MSVC") and any(c.isdigit() for c in b["compiler"])
    assert b["cxx_standard"].startswith("C++") and int(b["cxx_standard"][3:5]) >= 17
    assert isinstance(b["build_type"], str) and b["build_type"]
    assert b["blas_corename"] == svdistill.linalg.blas_core() and b["blas_corename"] != "unknown"
    assert b["blas"].startswith("OpenBLAS") and b["blas_config"].startswith("OpenBLAS")
    assert b["blas_package"].startswith("scipy-openblas32 ")
    assert isinstance(b["blas_threads"], int) and b["blas_threads"] >= 1
    assert b["blas_threading"] in ("pthreads", "openmp", "sequential")
    assert b["threads"] == svdistill.linalg.get_num_threads()
    assert b["zlib"] is svdistill._core.have_zlib
    assert (b["zlib_version"] is None) is (not b["zlib"])
    assert b["arch"] in ("x86_64", "aarch64", "other")
    assert b["simd"] in b["simd_built"] and b["simd_built"][0] == "baseline"
    assert isinstance(b["cpu_x86_64_v3"], bool) and isinstance(b["cpu_avx512f"], bool)
    assert b["simd_forced_portable"] is (os.environ.get(ENV, "") not in ("", "0"))


@pytest.mark.parametrize("portable", [None, "1"], ids=["dispatched", "portable"])
def test_version_prints_the_build_facts(portable):
    p = subprocess.run([sys.executable, "-m", "svdistill", "--version"], env=_env(portable),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and not p.stderr, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == f"svdistill {svdistill.__version__}"
    b = _child_build_info(portable)
    for fact in (b["compiler"], b["cxx_standard"], b["build_type"], b["blas_config"],
                 f"kernel {b['blas_corename']}", b["blas_package"]):
        assert fact in p.stdout, fact
    simd = next(line for line in lines if line.split()[0] == "SIMD")
    if portable:
        assert "baseline" in simd and "forced by SVDISTILL_PORTABLE" in simd
    else:
        assert b["simd"] in simd and "forced" not in simd


# ------------------------------------------------------- the same results

def _numbers_text(rng: np.random.Generator, n: int) -> list:
    """n float32 texts in the shapes text models hold: Kaldi's %.7g, shortest,
    %.9g, 15-17 digits (near float rounding midpoints), exponents, zeros."""
    v = (rng.standard_normal(n) * np.exp(rng.uniform(-12, -1, n))).astype(np.float32)
    out = []
    for i, x in enumerate(v):
        k = i % 7
        if k == 0:
            out.append("%.7g" % x)
        elif k == 1:
            out.append(str(np.float32(x)))
        elif k == 2:
            out.append("%.9g" % x)
        elif k == 3:  # the midpoint between x and the next float up, nudged
            up = np.nextafter(x, np.float32(np.inf))
            out.append("%.17g" % ((float(x) + float(up)) / 2 * (1 + (i % 3 - 1) * 1e-16)))
        elif k == 4:
            out.append("%.15g" % float(x))
        elif k == 5:
            out.append("%.6e" % x)
        else:
            out.append(["0", "-0", "1", "-1e-05", "-0.25", "1.17549435e-38", "1e-40"][i // 7 % 7])
    return out


def _write_generated_model(path: Path, rng: np.random.Generator) -> None:
    """A text model whose rows mix all those number shapes and separators; a
    wide softmax and Tanh so that the forward pass runs every vector width."""
    def matrix(rows: int, cols: int) -> str:
        lines = []
        for r in range(rows):
            toks = _numbers_text(rng, cols)
            seps = [" ", " ", " ", "  ", "\t"]
            lines.append("  " + "".join(t + seps[(r + j) % len(seps)] for j, t in enumerate(toks)).rstrip())
        return " [\n" + "\n".join(lines) + " ]\n"

    def vector(n: int) -> str:
        return " [ " + " ".join(_numbers_text(rng, n)) + " ]\n"

    text = ("<Nnet> \n<AffineTransform> 203 97 \n<LearnRateCoef> 1 <BiasLearnRateCoef> 1 <MaxNorm> 0 \n"
            + matrix(203, 97) + vector(203) + "<Tanh> 203 203 \n"
            "<AffineTransform> 61 203 \n<LearnRateCoef> 1 <BiasLearnRateCoef> 1 <MaxNorm> 0 \n"
            + matrix(61, 203) + vector(61) + "<Softmax> 61 61 \n</Nnet> \n")
    path.write_text(text)


_CHILD = r"""
import json, sys
import numpy as np
import svdistill
spec = json.load(open(sys.argv[1]))
feats = dict(np.load(spec["feats"]))
out = {}
for name, path in spec["parse"].items():
    for i, c in enumerate(svdistill.read(path).components):
        for p, v in c.params.items():
            out[f"parse/{name}/{i}/{p}"] = np.asarray(v)
for name, (path, ft) in spec["forward"].items():
    net = svdistill.Network(path, feature_transform=ft)
    for key, x in feats.items():
        if x.shape[1] == net.input_dim:
            out[f"forward/{name}/{key}"] = net(x)
np.savez(spec["out"], **out)
print(json.dumps(svdistill.build_info()))
"""


def _run_child(tmp_path: Path, spec: dict, portable: Optional[str]) -> tuple:
    tag = "portable" if portable else "dispatched"
    spec = dict(spec, out=str(tmp_path / f"{tag}.npz"))
    spec_path = tmp_path / f"{tag}.json"
    spec_path.write_text(json.dumps(spec))
    p = subprocess.run([sys.executable, "-c", _CHILD, str(spec_path)], env=_env(portable),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    with np.load(spec["out"]) as z:
        return json.loads(p.stdout), {k: z[k] for k in z.files}


def test_portable_paths_parse_and_forward_the_fixtures_alike(tmp_path, fixtures_dir, feats):
    rng = np.random.default_rng(15)
    gen = tmp_path / "generated.nnet.txt"
    _write_generated_model(gen, rng)
    text_models = {p.name: str(p) for p in sorted(fixtures_dir.glob("*.nnet.txt"))}
    text_models["final.feature_transform"] = str(fixtures_dir / "final.feature_transform")
    text_models["generated"] = str(gen)
    all_feats = dict(feats)
    all_feats["wide"] = (rng.standard_normal((37, 97)) * 3).astype(np.float32)
    np.savez(tmp_path / "feats.npz", **all_feats)
    forward = {n: [p, None] for n, p in text_models.items() if n != "final.feature_transform"}
    forward["dnn+ft"] = [text_models["dnn.nnet.txt"], text_models["final.feature_transform"]]
    spec = {"feats": str(tmp_path / "feats.npz"), "parse": text_models, "forward": forward}
    info_d, d = _run_child(tmp_path, spec, None)
    info_p, p = _run_child(tmp_path, spec, "1")
    assert info_p["simd"] == "baseline" and info_p["simd_forced_portable"]
    assert not info_d["simd_forced_portable"]
    assert sorted(d) == sorted(p)
    parsed = [k for k in d if k.startswith("parse/")]
    forwarded = [k for k in d if k.startswith("forward/")]
    assert any(k.startswith("parse/generated/") for k in parsed)
    assert sum(k.startswith("forward/generated/") for k in forwarded) == 1  # the "wide" features
    assert {k.split("/")[1] for k in forwarded} >= {"dnn+ft", "tiny_mlp.nnet.txt", "mixed.nnet.txt", "generated"}
    for k in parsed:  # the parser is exact on both paths: the same bits
        assert d[k].dtype == p[k].dtype and d[k].shape == p[k].shape, k
        assert np.array_equal(d[k].view(np.uint8), p[k].view(np.uint8)), k
    for k in forwarded:  # kernels may round differently (FMA, vector width): 1e-6 relative
        a, b = d[k].astype(np.float64), p[k].astype(np.float64)
        assert a.shape == b.shape and np.isfinite(a).all(), k
        assert np.abs(a - b).max() <= 1e-6 * np.abs(a).max(), (k, np.abs(a - b).max(), np.abs(a).max())


def test_portable_row_parser_matches_from_chars(tmp_path, monkeypatch):
    """The fuzz check of parse_row against from_chars, built with the dispatch
    and run with SVDISTILL_PORTABLE=1: the forced portable rows are exact too."""
    def no_charconv(stderr: str):
        return "the compiler's library lacks std::from_chars / to_chars for float" if "charconv" in stderr else None
    monkeypatch.setenv(ENV, "1")
    out = run_cpp_check(tmp_path, ["fuzz/parse_float_check.cc", "cpp/nnet1/number_parse.cc"], ["300000"],
                        flags=["-O2"], skip_build=no_charconv).stdout
    assert out.startswith("checked") and "bad 0; rows" in out and out.rstrip().endswith("bad 0")
