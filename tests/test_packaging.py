"""How the package is installed and tested: the compiled core finds its BLAS in
any site-packages layout, CI tests the installed wheel (not src/), and CI
fails when a test that reads the repository's data skips."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import svdistill
from svdistill import _core

REPO = Path(__file__).resolve().parents[1]

# A short workload that goes through the core's BLAS (gemm in forward).
_BLAS_SMOKE = textwrap.dedent("""
    import sys
    import numpy as np
    import svdistill
    assert svdistill.__file__.startswith(sys.argv[1]), svdistill.__file__
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    m = svdistill.Model([svdistill.Component.affine(w, b)])
    x = rng.standard_normal((5, 8)).astype(np.float32)
    y = svdistill.forward(m, x)
    np.testing.assert_allclose(y, x @ w.T + b, rtol=1e-5, atol=1e-5)
    print("ok")
""")


def _copy_package(dest: Path) -> Path:
    """The imported svdistill (Python files and the built _core) copied to DEST/svdistill."""
    src = Path(svdistill.__file__).resolve().parent
    pkg = dest / "svdistill"
    shutil.copytree(src, pkg, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd"))
    shutil.copy2(_core.__file__, pkg / Path(_core.__file__).name)
    return pkg


def _run_apart(tmp_path: Path, first_dirs=()) -> subprocess.CompletedProcess:
    """Import a copy of svdistill from its own directory (pip --target, PYTHONPATH, a user site)
    with its dependencies in others, and run _BLAS_SMOKE. The core's RUNPATH
    ($ORIGIN/../scipy_openblas32/lib) points at nothing there."""
    import kaldiio
    import numpy
    import scipy_openblas32

    target = tmp_path / "target"
    _copy_package(target)
    assert not (target / "scipy_openblas32").exists()
    # -S: no site processing, so no editable-install finder or .pth file redirects svdistill;
    # the dependencies come from the directories they were imported from, after the target.
    dep_dirs = sorted({str(Path(m.__file__).resolve().parents[1]) for m in (numpy, kaldiio, scipy_openblas32)})
    code = "import sys; sys.path[1:1] = sys.argv[2:]; sys.argv = sys.argv[:2]\n" + _BLAS_SMOKE
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH", "LD_PRELOAD")}
    return subprocess.run([sys.executable, "-S", "-c", code, str(target / "svdistill"), *map(str, first_dirs),
                           str(target), *dep_dirs], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)


@pytest.mark.skipif(sys.platform != "linux", reason="ELF RUNPATH and sonames")
def test_core_finds_openblas_installed_apart(tmp_path):
    proc = _run_apart(tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="ELF RUNPATH and sonames")
def test_core_loads_openblas_by_path_not_by_import_side_effect(tmp_path):
    """Importing scipy_openblas32 happens to dlopen its library today; the core must not depend
    on that: a scipy_openblas32 that only tells where its library lies must do."""
    import scipy_openblas32

    shim = tmp_path / "shim" / "scipy_openblas32"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(textwrap.dedent(f"""
        import os
        def get_lib_dir():
            return {scipy_openblas32.get_lib_dir()!r}
        def get_library(fullname=False):
            return {scipy_openblas32.get_library(fullname=True)!r} if fullname else {scipy_openblas32.get_library()!r}
    """))
    proc = _run_apart(tmp_path, first_dirs=[shim.parent])
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


@pytest.mark.skipif(os.environ.get("SVDISTILL_EXPECT_INSTALLED") != "1",
                    reason="set SVDISTILL_EXPECT_INSTALLED=1 where the suite tests an installed wheel (CI)")
def test_suite_runs_against_installed_package():
    """CI's wheel pass must test the installed wheel, not the source tree beside the tests."""
    here = Path(svdistill.__file__).resolve()
    assert REPO / "src" not in here.parents, f"svdistill imported from the source tree: {here}"
    assert any(p.name in ("site-packages", "dist-packages") for p in here.parents), here
    assert Path(_core.__file__).resolve().parent == here.parent, (_core.__file__, here)


# ------------------------------------------------------- data-skips in CI

_DATA_SKIP_TESTS = textwrap.dedent('''
    import pytest
    from conftest import skip_missing_data

    def test_edge_fixture(edge_dir):                 # fixture folder without edge/
        pass

    def test_helper():
        skip_missing_data("feats.ark")

    @pytest.mark.skipif(True, reason="missing test data: a marker")
    def test_marker():
        pass

    def test_cuda_only():                            # not about data: stays a skip
        pytest.skip("no CUDA device")

    @pytest.mark.xfail(reason="missing test data: an expected failure", strict=True)
    def test_xfail():
        assert False
''')
_DATA_SKIP_MODULE = textwrap.dedent('''
    import pytest
    pytest.skip("missing test data: a whole module", allow_module_level=True)

    def test_never():
        pass
''')


def _summary(out: str) -> dict:
    import re
    line = out.strip().splitlines()[-1]
    return {("error" if k == "errors" else k): int(n) for n, k in re.findall(r"(\d+) (\w+)", line.split(" in ")[0])}


@pytest.mark.parametrize("env, strict", [
    ({}, False),
    ({"CI": "true"}, True),
    ({"SVDISTILL_REQUIRE_DATA": "1"}, True),
    ({"CI": "true", "SVDISTILL_REQUIRE_DATA": "0"}, False),
])
def test_data_skips_fail_where_data_are_required(tmp_path, env, strict):
    """A test that skips for want of the repository's data (the skip_missing_data helper, a skip
    whose reason names the fixture folder, a module-level skip) fails under CI; other skips and
    expected failures stay as they are."""
    fx = tmp_path / "fixtures"
    fx.mkdir()
    (fx / "MANIFEST.md").write_text("test fixture folder without edge/\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    shutil.copy2(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_data_skips.py").write_text(_DATA_SKIP_TESTS)
    (tmp_path / "test_data_module.py").write_text(_DATA_SKIP_MODULE)
    base = {k: v for k, v in os.environ.items()
            if k not in ("CI", "SVDISTILL_REQUIRE_DATA", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    base["SVDISTILL_FIXTURES"] = str(fx)
    run = lambda *files: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", *files],
        capture_output=True, text=True, cwd=tmp_path, env={**base, **env}, timeout=120)
    proc = run("test_data_skips.py")
    got = _summary(proc.stdout)
    if strict:
        assert proc.returncode == 1, proc.stdout + proc.stderr
        # edge_dir and the skipif marker skip in setup (errors), the helper in the call (a failure)
        assert got == {"failed": 1, "error": 2, "skipped": 1, "xfailed": 1}, proc.stdout
        failed = {ln.split()[1].split("::")[1] for ln in proc.stdout.splitlines()
                  if ln.startswith(("FAILED ", "ERROR "))}
        assert failed == {"test_edge_fixture", "test_helper", "test_marker"}, proc.stdout
        assert proc.stdout.count("makes that a failure: Skipped: missing test data: ") >= 3, proc.stdout
        assert "is missing from the reference fixtures" in proc.stdout
    else:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert got == {"skipped": 4, "xfailed": 1}, proc.stdout
    proc = run("test_data_module.py")
    if strict:
        assert proc.returncode != 0 and "a whole module" in proc.stdout, proc.stdout + proc.stderr
    else:
        # 5: no test ran (the only module skipped), not 1 (a failure)
        assert proc.returncode == 5 and _summary(proc.stdout) == {"skipped": 1}, proc.stdout + proc.stderr


@pytest.mark.skipif(not os.environ.get("SVDISTILL_WHEEL"),
                    reason="set SVDISTILL_WHEEL to a built wheel to check its contents (CI)")
def test_wheel_contents():
    """The repaired wheel: a manylinux tag, every module of src/svdistill, the core, and no copy
    of the OpenBLAS that the scipy-openblas32 dependency (which it must declare) provides."""
    import re
    import zipfile

    wheel = Path(os.environ["SVDISTILL_WHEEL"])
    assert re.search(r"-manylinux_\d+_\d+_(x86_64|aarch64)\.whl$", wheel.name), wheel.name
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert not [n for n in names if "openblas" in n.lower() or ".libs/" in n], sorted(names)
    assert [n for n in names if re.fullmatch(r"svdistill/_core\..*\.so", n)], sorted(names)
    src = REPO / "src" / "svdistill"
    expected = {f"svdistill/{p.relative_to(src).as_posix()}" for p in src.rglob("*")
                if p.is_file() and p.suffix in (".py", ".pyi", ".typed")}
    assert expected <= names, sorted(expected - names)
    assert re.search(r"^Requires-Dist: scipy-openblas32\b", meta, re.M), meta


@pytest.mark.skipif(os.environ.get("SVDISTILL_PORTABLE", "") in ("", "0"),
                    reason="the portable pass of CI sets SVDISTILL_PORTABLE=1")
def test_portable_pass_runs_the_portable_paths():
    """CI's second pass is only worth its time if the variable reaches the core."""
    facts = svdistill.build_info()
    assert facts["simd_forced_portable"] is True and facts["simd"] == "baseline", facts
