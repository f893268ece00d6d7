#!/usr/bin/env bash
# GPU check of svdistill on a fresh NVIDIA H200 machine without network.
#
#   benchmarks/device_check.sh --fetch    HERE, with network: download the wheels the
#                                         device lacks and the test fixtures into .whl/
#   benchmarks/device_check.sh            ON THE DEVICE, from the repository root: install
#                                         the wheels, build svdistill, run the torch/CUDA
#                                         tests and benchmarks/bench_distill.py
#   benchmarks/device_check.sh --local    a dry run of the device mode on a dev machine
#
# The device has python3 3.12 (/opt/torch/.venv) with torch (CUDA), numpy, cmake, ninja,
# pybind11, scikit-build-core, pytest, onnx and onnxruntime, but not cmeel-eigen (+ cmeel),
# scipy-openblas32 or kaldiio: their wheels travel in .whl/ (ignored by git through
# .git/info/exclude, so they must be named in the run's `carry`), together with the
# fixture files the tests read (.whl/fixtures/kaldi-nnet1/: ../shared does not travel).
#
# Device mode: the wheels go into a target dir on PYTHONPATH (SVDISTILL_SITE, default
# /tmp/svdistill-site), svdistill is built from this checkout (pip --no-build-isolation,
# build dir SVDISTILL_BUILD_DIR, default /tmp/svdistill-build: the checkout's build/ is
# never touched) and installed there too; then the tests, then the benchmark
# (--json $OUT/bench_distill.json; OUT defaults to a temp dir), nvidia-smi, and every
# figure from the JSON. Every step has a timeout, and all of them share one deadline
# (SVDISTILL_DEADLINE_S, default 470 s), so a hang cannot eat the device budget; a
# failing step does not stop the later ones (except that without an importable build of
# this checkout nothing is tested); the exit status is 1 if any step failed.
#
# --local: for a machine whose PYTHON (default python3) already has those packages, e.g.
# a dev venv with an editable install. The wheels are not installed (add --wheels to
# install them anyway: they are py3-none, so that works on 3.11 too) and PYTHON's
# packages are reused through a throwaway venv that sees its site-packages as a plain
# path: .pth files there (an editable install's import hook) are not run, so the
# svdistill under test is the one this script built.
#
# Environment: PYTHON, OUT, SVDISTILL_SITE, SVDISTILL_BUILD_DIR (removed first unless
# SVDISTILL_KEEP_BUILD=1), SVDISTILL_DEADLINE_S, SVDISTILL_WHEELS (default .whl),
# BENCH_ARGS (extra arguments for bench_distill.py, e.g. "--gpu-frames 2000000").
#
# On the device (run tool): command "bash benchmarks/device_check.sh", carry [".whl"],
# timeout_s 540 or so; the figures come back in $OUT/bench_distill.json.
set -euo pipefail
export PYTHONUNBUFFERED=1

cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-python3}
WHL=${SVDISTILL_WHEELS:-$REPO/.whl}
FIX_OUT="$WHL/fixtures/kaldi-nnet1"
TESTS=(tests/test_distill_torch.py tests/test_torch_module.py tests/test_export.py tests/test_distributed.py)

MODE=device LOCAL=0 WHEELS=1
for arg in "$@"; do
  case "$arg" in
    --fetch) MODE=fetch ;;
    --local) LOCAL=1 WHEELS=0 ;;
    --wheels) WHEELS=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "device_check.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

# ---------------------------------------------------------------- fetch (here)
if [ "$MODE" = fetch ]; then
  pin() {  # NAME==VERSION as pinned in pyproject.toml's build requirements
    grep -o "\"$1==[^\"]*\"" pyproject.toml | head -1 | tr -d '"'
  }
  installed() {  # NAME==VERSION as installed for $PY, else the fallback
    local v
    v=$("$PY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null) || v=$2
    echo "$1==$v"
  }
  EIGEN=$(pin cmeel-eigen); OPENBLAS=$(pin scipy-openblas32)
  if [ -z "$EIGEN" ] || [ -z "$OPENBLAS" ]; then
    echo "cannot read the cmeel-eigen / scipy-openblas32 pins from pyproject.toml" >&2
    exit 1
  fi
  PINS=("$EIGEN" "$OPENBLAS" "$(installed kaldiio 2.18.1)" "$(installed cmeel 0.62.0)")
  echo "== downloading for CPython 3.12 manylinux x86_64: ${PINS[*]}"
  mkdir -p "$WHL"
  rm -f "$WHL"/*.whl
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHL" "${PINS[@]}"
  echo "== what the wheels require (every requirement must be a wheel here or on the device already)"
  "$PY" - "$WHL" <<'EOF'
import re, sys, zipfile
from pathlib import Path
try:
    from packaging.markers import Marker
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.markers import Marker
    from pip._vendor.packaging.requirements import Requirement
ON_DEVICE = {"numpy", "torch", "cmake", "ninja", "pybind11", "scikit-build-core", "pytest", "onnx", "onnxruntime"}
env = {"python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
       "platform_system": "Linux", "sys_platform": "linux", "platform_machine": "x86_64", "extra": ""}
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
wheels = sorted(Path(sys.argv[1]).glob("*.whl"))
have = {norm(w.name.split("-")[0]) for w in wheels}
missing = []
for w in wheels:
    with zipfile.ZipFile(w) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        reqs = [l.split(":", 1)[1].strip() for l in z.read(meta).decode().splitlines()
                if l.startswith("Requires-Dist:")]
    print(f"{w.name}: " + ("; ".join(reqs) or "no requirements"))
    for r in map(Requirement, reqs):
        if r.marker is not None and not r.marker.evaluate(env):
            continue
        if norm(r.name) not in have | ON_DEVICE:
            missing.append(f"{w.name} needs {r}")
if missing:
    sys.exit("missing on the device: " + "; ".join(missing))
print("all requirements are covered")
EOF
  echo "== fixtures the tests read -> $FIX_OUT"
  SRC=${SVDISTILL_FIXTURES:-$REPO/tests/data/kaldi-nnet1}
  rm -rf "$WHL/fixtures"
  mkdir -p "$FIX_OUT"
  "$PY" - "$SRC" "$FIX_OUT" "${TESTS[@]}" tests/conftest.py <<'EOF'
import shutil, sys
from pathlib import Path
src, dst, tests = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
text = "".join(Path(t).read_text() for t in tests)
names = ["MANIFEST.md"] + sorted(p.name for p in src.iterdir() if p.is_file() and p.name != "MANIFEST.md"
                                 and (f'"{p.name}"' in text or f"'{p.name}'" in text))
for n in names:
    shutil.copy(src / n, dst / n)
print(f"{len(names)} files from {src}: {' '.join(names)}")
EOF
  EXCLUDE=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$EXCLUDE")"
  if ! grep -qx '/.whl/' "$EXCLUDE" 2>/dev/null; then
    echo '/.whl/' >> "$EXCLUDE"
    echo "== added /.whl/ to $EXCLUDE"
  fi
  git check-ignore -q .whl/ && echo "== .whl/ is ignored by git: name it in the run's carry ([\".whl\"])"
  echo "== sizes"
  ls -l "$WHL"/*.whl | awk '{printf "%10d  %s\n", $5, $NF}'
  FIXB=$(du -sb "$WHL/fixtures" | cut -f1)
  TOTAL=$(du -sb "$WHL" | cut -f1)
  printf '%10d  %s\n' "$FIXB" "$WHL/fixtures/ ($(find "$WHL/fixtures" -type f | wc -l) files)"
  awk -v t="$TOTAL" 'BEGIN { printf "total %d bytes = %.1f MiB (the carry limit: 64 MiB for all carried paths)\n",
                              t, t / 1048576 }'
  [ "$TOTAL" -lt $((48 * 1048576)) ] || { echo "too large for the carry" >&2; exit 1; }
  exit 0
fi

# ---------------------------------------------------------------- device mode
T_START=$SECONDS
DEADLINE=${SVDISTILL_DEADLINE_S:-470}
SITE=${SVDISTILL_SITE:-/tmp/svdistill-site}
BUILD_DIR=${SVDISTILL_BUILD_DIR:-/tmp/svdistill-build}
OUT=${OUT:-$(mktemp -d /tmp/svdistill-out.XXXXXX)}
mkdir -p "$OUT"
declare -a SUMMARY=()
FAILED=0

# step NAME CAP_SECONDS COMMAND...: run with a timeout of min(CAP, time left before the deadline)
step() {
  local name=$1 cap=$2 left t0 rc
  shift 2
  left=$((DEADLINE - (SECONDS - T_START)))
  [ "$cap" -lt "$left" ] || cap=$left
  if [ "$cap" -lt 5 ]; then
    echo "== $name: SKIPPED (${left}s left before the ${DEADLINE}s deadline)"
    SUMMARY+=("$(printf '%-12s %7s  %s' "$name" "-" "skipped: deadline")")
    FAILED=1
    return 1
  fi
  echo
  echo "== $name (timeout ${cap}s; $((SECONDS - T_START))s elapsed)"
  t0=$SECONDS
  rc=0
  timeout --kill-after=10 "$cap" "$@" || rc=$?
  local took=$((SECONDS - t0)) what="ok"
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    what="TIMED OUT after ${cap}s"
  elif [ "$rc" -ne 0 ]; then
    what="FAILED (exit $rc)"
  fi
  echo "== $name: $what in ${took}s"
  SUMMARY+=("$(printf '%-12s %6ss  %s' "$name" "$took" "$what")")
  [ "$rc" -eq 0 ] || FAILED=1
  return "$rc"
}

summary() {
  echo
  echo "== summary (total $((SECONDS - T_START))s; outputs in $OUT)"
  printf '%s\n' "${SUMMARY[@]}"
}
trap summary EXIT

echo "== svdistill device check: $(date -Is) on $(hostname)"
echo "   repo $REPO ($(git rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
echo "   mode: $([ $LOCAL = 1 ] && echo 'local dry run' || echo device), python: $(command -v "$PY")"
echo "   site: $SITE, build: $BUILD_DIR, out: $OUT, deadline: ${DEADLINE}s"

if [ "$LOCAL" = 1 ]; then
  # A throwaway venv over PYTHON's site-packages, as a plain path (no .pth hooks run).
  VENV=${SVDISTILL_LOCAL_VENV:-/tmp/svdistill-local-venv}
  PURE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  rm -rf "$VENV"
  "$PY" -m venv --without-pip "$VENV"
  VPURE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$PURE" > "$VPURE/_svdistill_dev_env.pth"
  PY=$VENV/bin/python
  export PATH="$VENV/bin:$(dirname "$(command -v "${PYTHON:-python3}")"):$PATH"
  echo "   local: $PY sees $PURE without its .pth hooks"
fi

rm -rf "$SITE"
mkdir -p "$SITE"
if [ -f "$BUILD_DIR/CMakeCache.txt" ] && [ -z "${SVDISTILL_KEEP_BUILD:-}" ]; then
  rm -rf "$BUILD_DIR"  # a fresh build, as on a fresh device (SVDISTILL_KEEP_BUILD=1 reuses it)
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
if [ -d "$FIX_OUT" ]; then
  export SVDISTILL_FIXTURES=$FIX_OUT
fi
echo "   fixtures: ${SVDISTILL_FIXTURES:-tests/data/kaldi-nnet1 (default)}"

step environment 60 "$PY" -c '
import platform, sys
print("python", platform.python_version(), sys.executable)
import numpy; print("numpy", numpy.__version__)
import torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "available:", torch.cuda.is_available())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, sm {p.major}.{p.minor}")
' || true

if [ "$WHEELS" = 1 ]; then
  if ! ls "$WHL"/*.whl >/dev/null 2>&1; then
    echo "no wheels in $WHL: run benchmarks/device_check.sh --fetch first (with network), carry .whl" >&2
    exit 1
  fi
  step wheels 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHL"/*.whl || true
fi

# The whole build log goes to $OUT/build.log; shown: where CMake found Eigen and OpenBLAS
# (cmeel-eigen's and scipy-openblas32's in $SITE), or the log's tail on failure.
step build 270 bash -c '
  "$1" -m pip install -v --no-build-isolation --no-deps --no-index --no-compile \
    --target "$2" -C build-dir="$3" "$4" > "$5" 2>&1 && rc=0 || rc=$?
  grep -E "svdistill: (Eigen|OpenBLAS)|Build files have been written|Successfully installed" "$5" | sed "s/^/   /"
  [ "$rc" -eq 0 ] || tail -n 60 "$5"
  exit "$rc"' build "$PY" "$SITE" "$BUILD_DIR" "$REPO" "$OUT/build.log" || true

step import 30 "$PY" -c '
import os, sys
import svdistill, svdistill._core, kaldiio, scipy_openblas32
from svdistill import linalg
site = os.path.realpath(sys.argv[1])
for m in (svdistill, svdistill._core):
    print(m.__name__, m.__file__)
    assert os.path.realpath(m.__file__).startswith(site + os.sep), f"{m.__name__} is not the one built into {site}"
print("svdistill", svdistill.__version__, "| OpenBLAS kernel", linalg.blas_core(), "|",
      linalg.get_num_threads(), "threads | kaldiio", getattr(kaldiio, "__version__", "?"))
' "$SITE" || { echo "== the svdistill under test is not the one just built: no tests, no benchmark"; exit 1; }

step tests 200 "$PY" -m pytest -q -rs "${TESTS[@]}" || true

# shellcheck disable=SC2086
step bench 330 "$PY" benchmarks/bench_distill.py --json "$OUT/bench_distill.json" ${BENCH_ARGS:-} || true

if command -v nvidia-smi >/dev/null; then
  step nvidia-smi 30 nvidia-smi || true
else
  echo; echo "== nvidia-smi: not found on this machine"
fi

if [ -f "$OUT/bench_distill.json" ]; then
  step figures 30 "$PY" - "$OUT/bench_distill.json" <<'EOF' || true
import json, sys
d = json.load(open(sys.argv[1]))
print(f"{sys.argv[1]}{' (PARTIAL: the benchmark did not finish)' if d.get('partial') else ''}")
print(f"flop per frame {d['flop_per_frame']:,.0f}; teacher {d['teacher_weights']:,} weights, "
      f"student {d['student_weights']:,}")
print(f"cpu peak (numpy sgemm {d['cpu_peak']['n']}^3): {d['cpu_peak']['tflops']:.3f} TFLOP/s; gpu: {d.get('gpu')}")
for dev, v in d["data"].items():
    print(f"data {dev}: " + ", ".join(f"{k} {v[k]}" for k in ("train_frames", "cv_frames", "utterances", "bytes",
                                                              "generate_s")))
for r in d["results"]:
    if r["fps"] is None:
        print(f"{r['device']:4} {r['engine']:5} {r['precision']:4} mb {r['minibatch']:5}: FAILED: {r.get('error')}")
        continue
    peak = "-" if r["of_peak"] is None else f"{r['of_peak']:.2%}"
    vs = "-" if r.get("vs_plain") is None else f"{r['vs_plain']:.3f}x"
    wait = "-" if r["wait_share"] is None else f"{r['wait_share']:.2%}"
    print(f"{r['device']:4} {r['engine']:5} {r['precision']:4} mb {r['minibatch']:5}: median {r['fps']:12,.0f} frames/s "
          f"vs plain {vs:>7}  {r['tflops']:8.3f} TFLOP/s  of peak {peak:>7}  wait {wait:>6}")
    for i, x in enumerate(r["runs"]):
        w = "" if x["wait_share"] is None else f", wait {x['wait_share']:.2%}"
        print(f"      run {i + 1}: {x['fps']:12,.0f} frames/s, {x['train_frames']:,} frames in {x['seconds']:.2f} s{w}")
for g in d.get("goals", []):
    print(f"goal: {g['goal']}: {g['measured']} -> {g['met']}")
EOF
else
  echo; echo "== figures: no $OUT/bench_distill.json"
  FAILED=1
fi

exit "$FAILED"
