#!/usr/bin/env bash
# Fuzzes the reader: seeds from tests/data/kaldi-nnet1 (copied into a scratch corpus,
# never into the repo) plus fuzz/regressions/. Usage: fuzz/run.sh [RUNS] [JOBS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-1000000}"
JOBS="${2:-1}"
FIX="${SVDISTILL_FIXTURES:-$(pwd)/tests/data/kaldi-nnet1}"
CORPUS="${FUZZ_CORPUS:-/tmp/svdistill-fuzz-corpus}"
mkdir -p "$CORPUS"
# Seeds: each fixture model under each of the three delivery modes (first byte).
for f in "$FIX"/*.nnet.txt "$FIX"/*.nnet.bin "$FIX"/final.feature_transform* "$FIX"/edge/*.nnet "$FIX"/edge/*.bin; do
  [ -f "$f" ] || continue
  [ "$(stat -c %s "$f")" -le 65536 ] || continue
  b=$(basename "$f")
  for m in 0 1 2; do printf "\\x0$m" | cat - "$f" > "$CORPUS/$m-$b"; done
done
[ -x fuzz/fuzz_reader ] || fuzz/build.sh
JOBARGS=(); [ "$JOBS" -gt 1 ] && JOBARGS=(-jobs="$JOBS" -workers="$JOBS")
fuzz/fuzz_reader -runs="$RUNS" "${JOBARGS[@]}" -max_len="${FUZZ_MAX_LEN:-8192}" -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix=/tmp/svdistill-fuzz- "$CORPUS" fuzz/regressions
