"""Shared fixtures for the svdistill test suite.

The Kaldi reference data travel with the repository: ``tests/data/kaldi-nnet1``
(files written by Kaldi's own tools, bytes unchanged; its MANIFEST.md gives the
exact commands), or the directory named by ``SVDISTILL_FIXTURES``.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, NoReturn, Optional, Sequence, Tuple

import pytest

FIXTURES_ENV = "SVDISTILL_FIXTURES"


def fixtures_root() -> Path:
    env = os.environ.get(FIXTURES_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parent / "data" / "kaldi-nnet1"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The Kaldi nnet1 reference data directory (read in place, never copied)."""
    d = fixtures_root()
    if not (d / "MANIFEST.md").is_file():  # part of the repository: missing means a broken checkout
        pytest.fail(f"Kaldi nnet1 reference fixtures not found at {d} (tests/data/kaldi-nnet1 of the "
                    f"repository, or {FIXTURES_ENV})")
    return d


@pytest.fixture(scope="session")
def fx(fixtures_dir: Path) -> Path:
    """Short name of fixtures_dir, for tests that read many fixture files."""
    return fixtures_dir


@pytest.fixture(scope="session")
def feats(fixtures_dir: Path) -> Dict[str, Any]:
    """feats.ark (Kaldi-written, three 50 x 40 utterances) as an ordered {key: matrix} dict."""
    import kaldiio
    import numpy as np
    d = {k: np.asarray(v) for k, v in kaldiio.load_ark(str(fixtures_dir / "feats.ark"))}
    assert list(d) == ["utt1", "utt2", "utt3"] and all(v.shape == (50, 40) for v in d.values())
    return d


@pytest.fixture(scope="session")
def edge_dir(fixtures_dir: Path) -> Path:
    d = fixtures_dir / "edge"
    if not d.is_dir():
        skip_missing_data(f"{d} is missing from the reference fixtures")
    return d


# ------------------------------------------------ skips for missing data

#: tests/data travels with the repository and its sdist, so a test that skips for want of data
#: there means a broken checkout or package. Where this is set (CI sets it; CI=true implies it
#: unless it is 0), such a skip fails instead.
REQUIRE_DATA_ENV = "SVDISTILL_REQUIRE_DATA"
#: Reason prefix of skip_missing_data. A skip whose reason names the fixture folder or
#: tests/data counts too, whoever raised it.
MISSING_DATA = "missing test data: "
DATA_DIR = Path(__file__).resolve().parent / "data"


def require_data() -> bool:
    v = os.environ.get(REQUIRE_DATA_ENV)
    if v is not None:
        return v.strip().lower() not in ("", "0", "false", "no")
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def skip_missing_data(what: str) -> NoReturn:
    """Skip a test whose input data are missing; a failure where require_data()."""
    pytest.skip(MISSING_DATA + what)


def _missing_data_reason(longrepr) -> Optional[str]:
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    if MISSING_DATA in reason or any(str(p) in reason for p in {fixtures_root(), DATA_DIR}):
        return reason
    return None


def _fail_missing_data_skip(rep) -> None:
    if not rep.skipped or hasattr(rep, "wasxfail") or not require_data():
        return
    reason = _missing_data_reason(rep.longrepr)
    if reason is not None:
        rep.outcome = "failed"
        rep.longrepr = (f"a test that needs the repository's data skipped, and {REQUIRE_DATA_ENV} "
                        f"(or CI=true) makes that a failure: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_missing_data_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_missing_data_skip(outcome.get_result())


# --------------------------------------------------------------------- CLI

def _cli_env() -> Dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


@pytest.fixture(scope="session")
def run_cli():
    """Run ``python -m svdistill ARGS`` and return the CompletedProcess (bytes)."""

    def run(*args: str, input: Optional[bytes] = None, cwd=None, timeout: float = 60):
        return subprocess.run([sys.executable, "-m", "svdistill", *map(str, args)],
                              input=input, capture_output=True, cwd=cwd, env=_cli_env(),
                              timeout=timeout)

    return run


def assert_clean_cli_error(proc, *must_contain: str) -> str:
    """The CLI's error contract: exit 2, exactly one stderr line 'svdistill: error: ...', no traceback."""
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, f"exit code {proc.returncode}, stderr:\n{err}"
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    assert lines[0].startswith("svdistill: error: "), err
    for s in must_contain:
        assert s in lines[0], f"{s!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture(scope="session")
def clean_cli_error():
    return assert_clean_cli_error


# ------------------------------------------------------- nnet-info parsing

# nnet-info prints parameter statistics as ' ( min a, max b, mean c, stddev d,
# skewness e, kurtosis f ) '. Their last digits depend on OpenBLAS's summation
# order, so they are compared numerically; every other byte exactly.
STATS_RE = re.compile(r"\( (min [^()]*?) \)")
STAT_KEYS = ["min", "max", "mean", "stddev", "skewness", "kurtosis"]


def parse_stats(text: str) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for part in text.split(", "):
        k, v = part.split(" ")
        out[k] = float(v)  # '-nan' parses as nan
    assert list(out) == STAT_KEYS, text
    return out


def stat_close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= max(1e-5, 1e-3 * abs(b))


def assert_stats_close(ours: Dict[str, float], ref: Dict[str, float], where: str = "") -> None:
    assert set(STAT_KEYS) <= set(ours), where
    for k in STAT_KEYS:
        assert stat_close(float(ours[k]), ref[k]), f"{where}: {k} {ours[k]!r} vs nnet-info {ref[k]!r}"


def assert_info_text_equal(ours: str, ref: str) -> None:
    """Exact comparison of nnet-info text except the statistics (numeric, rtol 1e-3 / abs 1e-5)."""
    assert ours.endswith("\n") == ref.endswith("\n")
    ol, rl = ours.split("\n"), ref.split("\n")
    assert len(ol) == len(rl), f"{len(ol)} lines vs nnet-info's {len(rl)}\n--- ours\n{ours}--- nnet-info\n{ref}"
    for i, (a, b) in enumerate(zip(ol, rl), 1):
        pa, pb = STATS_RE.split(a), STATS_RE.split(b)
        assert len(pa) == len(pb), f"line {i}:\n ours: {a!r}\n ref:  {b!r}"
        for j, (x, y) in enumerate(zip(pa, pb)):
            if j % 2 == 0:
                assert x == y, f"line {i} (outside the statistics):\n ours: {a!r}\n ref:  {b!r}"
            else:
                assert_stats_close(parse_stats(x), parse_stats(y), f"line {i} {b!r}")


COMPONENT_LINE_RE = re.compile(r"^component (\d+) : (<[^>]+>), input-dim (\d+), output-dim (\d+), (.*)$")


def parse_nnet_info(text: str) -> Dict:
    """nnet-info's stdout as a dict (independent of svdistill.info)."""
    lines = text.split("\n")
    assert lines[-1] == ""
    lines = lines[:-1]
    d: Dict = {"num_components": int(re.fullmatch(r"num-components (\d+)", lines[0]).group(1)),
               "components": []}
    if d["num_components"] == 0:
        assert len(lines) == 1
        return d
    d["input_dim"] = int(re.fullmatch(r"input-dim (\d+)", lines[1]).group(1))
    d["output_dim"] = int(re.fullmatch(r"output-dim (\d+)", lines[2]).group(1))
    d["millions"] = re.fullmatch(r"number-of-parameters (\S+) millions", lines[3]).group(1)
    cur: Optional[Dict] = None
    for line in lines[4:]:
        m = COMPONENT_LINE_RE.match(line)
        if m:
            cur = {"index": int(m.group(1)), "marker": m.group(2), "input_dim": int(m.group(3)),
                   "output_dim": int(m.group(4)), "stats": {}, "coefs": {}, "extra": []}
            tail = m.group(5)
            if tail.startswith("<DropoutRate> "):
                cur["coefs"]["DropoutRate"] = tail.split(" ")[1]
            else:
                assert tail == "", line
            d["components"].append(cur)
            continue
        assert cur is not None and line.startswith("  "), line
        body = line[2:]
        sm = re.fullmatch(r"(\w+) \( (min [^()]*?) \) , (.*)", body)
        if sm:
            name = sm.group(1)
            cur["stats"][name] = parse_stats(sm.group(2))
            for kv in sm.group(3).split(", "):
                k, v = kv.rsplit(" ", 1)
                cur["coefs"][(name, k)] = v
        else:
            cur["extra"].append(body)
    assert len(d["components"]) == d["num_components"]
    return d


def _g(x: float) -> str:
    return "%g" % x


def assert_info_dict_matches(d: Dict, ref_text: str) -> None:
    """svdistill.info()'s dict against nnet-info's text, field by field."""
    ref = parse_nnet_info(ref_text)
    assert d["num_components"] == ref["num_components"]
    assert len(d["components"]) == ref["num_components"]
    if ref["num_components"] == 0:
        return
    assert d["input_dim"] == ref["input_dim"]
    assert d["output_dim"] == ref["output_dim"]
    assert d["num_params"] is not None
    assert _g(d["num_params"] / 1e6) == ref["millions"], (d["num_params"], ref["millions"])
    assert d["num_params"] == sum(c["num_params"] for c in d["components"])
    for c, r in zip(d["components"], ref["components"]):
        where = f"component {r['index']} {r['marker']}"
        assert "<" + c["kind"] + ">" == r["marker"], where
        assert (c["input_dim"], c["output_dim"]) == (r["input_dim"], r["output_dim"]), where
        assert sorted(c.get("stats", {})) == sorted(r["stats"]), where
        for name, st in r["stats"].items():
            assert_stats_close(c["stats"][name], st, f"{where} {name}")
        coefs = c.get("coefs", {})
        kind = c["kind"]
        expect: Dict[str, str] = {}
        rc = r["coefs"]
        if kind == "AffineTransform":
            expect = {"LearnRateCoef": rc[("linearity", "lr-coef")],
                      "MaxNorm": rc[("linearity", "max-norm")],
                      "BiasLearnRateCoef": rc[("bias", "lr-coef")]}
        elif kind == "LinearTransform":
            expect = {"LearnRateCoef": rc[("linearity", "lr-coef")]}
        elif kind == "ParametricRelu":
            expect = {"AlphaLearnRateCoef": rc[("alpha", "alpha-lr-coef")],
                      "BetaLearnRateCoef": rc[("beta", "beta-lr-coef")]}
        elif kind in ("AddShift", "Rescale"):
            name = "shift_data" if kind == "AddShift" else "scale_data"
            expect = {"LearnRateCoef": rc[(name, "lr-coef")]}
        elif kind == "Dropout":
            expect = {"DropoutRate": rc["DropoutRate"]}
        assert {k: _g(v) for k, v in coefs.items()} == expect, where
        extra = r["extra"]
        if kind == "Splice":
            assert extra == ["frame_offsets [ " + " ".join(map(str, c["ints"])) + " ]"], where
        elif kind == "Copy":
            assert extra == [f"min {min(c['ints']) - 1}, max {max(c['ints']) - 1}"], where
        elif kind == "BlockSoftmax":
            assert extra == ["softmax-dims " + "".join(f"{v} " for v in c["ints"])], where
        else:
            assert extra == [], where


@pytest.fixture(scope="session")
def info_checks():
    """(assert_info_text_equal, assert_info_dict_matches, parse_nnet_info)."""
    return assert_info_text_equal, assert_info_dict_matches, parse_nnet_info


# ---------------------------------------------------------- model compare

def assert_models_equal(a, b, exact_marker: bool = False) -> None:
    """Same components: kinds, dims, coefficients, parameters (bit for bit), ints, raw bytes."""
    import numpy as np

    assert len(a.components) == len(b.components), ([c.kind for c in a], [c.kind for c in b])
    for i, (x, y) in enumerate(zip(a.components, b.components), 1):
        where = f"component {i} {x.kind}"
        assert x.kind == y.kind, where
        if exact_marker:
            assert x.marker == y.marker, where
        assert (x.input_dim, x.output_dim) == (y.input_dim, y.output_dim), where
        assert x.coefs == y.coefs, where
        px, py = x.params, y.params
        assert list(px) == list(py), where
        for name in px:
            assert px[name].dtype == np.float32 and py[name].dtype == np.float32
            assert px[name].shape == py[name].shape, (where, name)
            assert np.array_equal(px[name].view(np.uint32), py[name].view(np.uint32)), (where, name)
        if x.ints is None:
            assert y.ints is None, where
        else:
            assert np.array_equal(x.ints, y.ints), where
        assert x.raw == y.raw, where


@pytest.fixture(scope="session")
def models_equal():
    return assert_models_equal


#: Where gen_nnet.py (the project's generator of models with realistic spectra, a copy of
#: ../shared/bench/gen_nnet.py, bytes unchanged; see tests/data/README.md) lies.
BENCH = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session", autouse=True)
def _numpy_blas_one_thread():
    """numpy's own OpenBLAS (the reference side of many tests) on one thread: its
    spinning workers and the core's would otherwise fight over two cores."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        yield
        return
    ctl = ThreadpoolController()
    libs = [lib.filepath for lib in ctl.lib_controllers if "numpy" in (lib.filepath or "")]
    if not libs:
        yield
        return
    with ctl.select(filepath=libs).limit(limits=1):
        yield


@pytest.fixture(scope="session")
def lowrank():
    """gen_nnet.random_lowrank_matrix (realistic DNN weight spectra)."""
    bench = str(BENCH)
    if bench not in sys.path:
        sys.path.insert(0, bench)
    from gen_nnet import random_lowrank_matrix
    return random_lowrank_matrix


REPO = Path(__file__).resolve().parents[1]


def run_cpp_check(tmp_path: Path, sources: Sequence[str], args: Sequence[str], flags: Sequence[str] = ("-O2",),
                  skip_build: Optional[Callable[[str], Optional[str]]] = None) -> subprocess.CompletedProcess:
    """Build a C++ check program from SOURCES (paths in the repository, with
    cpp/ on the include path) and run it with ARGS; returns the finished run,
    asserted to exit 0. Skips without a compiler, or when skip_build(stderr)
    gives a reason for a failed build (a library or sanitizer missing)."""
    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    exe = tmp_path / Path(sources[0]).stem
    build = subprocess.run([cxx, *flags, "-std=c++17", "-pthread", f"-I{REPO / 'cpp'}",
                            *(str(REPO / s) for s in sources), "-o", str(exe)],
                           capture_output=True, text=True)
    if build.returncode != 0 and skip_build is not None:
        reason = skip_build(build.stderr)
        if reason:
            pytest.skip(reason)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def synthetic_feats(ft, n_utt: int, frames: int, seed: int,
                    key: Callable[[int, int], str] = lambda seed, u: f"s{seed}u{u:04d}"):
    """Smooth random 40-dim features (an AR(1) process) that the fixture's CMVN feature
    transform maps to about unit scale: {key(seed, u): frames x 40 float32}."""
    import numpy as np
    shift = ft.components[1].params["shift_data"][:40]
    scale = ft.components[2].params["scale_data"][:40]
    rng = np.random.default_rng(seed)
    out = {}
    for u in range(n_utt):
        e = rng.normal(size=(frames, 40))
        z = np.zeros_like(e)
        for t in range(frames):
            z[t] = (0.8 * z[t - 1] if t else 0) + 0.6 * e[t]
        out[key(seed, u)] = (-shift + z / scale).astype(np.float32)
    return out


def signal_once_accepted(cmd: Sequence[str], sig: int, env: Optional[Dict[str, str]] = None,
                         timeout: float = 120) -> Tuple[int, str]:
    """Runs a ``svdistill distill`` command, sends ``sig`` once its table shows an accepted
    epoch, waits for it: (exit status, everything it wrote on stderr)."""
    import subprocess
    proc = subprocess.Popen(list(cmd), stderr=subprocess.PIPE, env=env, text=True)
    lines = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "accepted" in line:
                proc.send_signal(sig)
                break
        _, rest = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, "".join(lines) + (rest or "")


def stop_while_writing(proc, writing) -> bool:
    """Stops ``proc`` (SIGSTOP; the caller sends SIGCONT) and says whether it is still
    writing (``writing()``, e.g. its temporary output exists): a signal sent now reaches it
    mid-write. Without stopping it, the writer can finish (and exit 0) between a look and
    a signal."""
    import signal
    import time
    proc.send_signal(signal.SIGSTOP)
    stat = f"/proc/{proc.pid}/stat"
    if not os.path.exists("/proc/self/stat"):
        time.sleep(0.05)  # no /proc: a moment for the stop to take effect
    else:
        for _ in range(2000):  # until its state is T (stopped), or Z (it had exited)
            try:
                with open(stat) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] in ("T", "t", "Z"):
                        break
            except (OSError, IndexError):
                break
            time.sleep(0.0005)
    return proc.poll() is None and writing()
