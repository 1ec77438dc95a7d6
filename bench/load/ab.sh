#!/usr/bin/env bash
# ab.sh - wrk A/B of two svdslice binaries, alternated in one run so drift hits both alike.
#
# Usage: bench/load/ab.sh BIN_A BIN_B [ROUNDS]      (default 3 rounds)
# Env:   DURATION=5s  CONNS=16  THREADS=2  SVDSLICE_TEST_DATA (Debian's ITK example slices)
#        UPLOAD_QUERY (e.g. "?rank=100&keep-original=false", the same for both; then set KMAX=100)
# Each round runs, for A then B: a repeated URL (response cache, fixed.lua) and rotating k
# (computed, rotate_k.lua), each against a fresh server holding the same 256x170 real slice.
# Prints req/s per run, then the median per binary and scenario and the B/A ratio.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
A=${1:?usage: ab.sh BIN_A BIN_B [ROUNDS]}
B=${2:?usage: ab.sh BIN_A BIN_B [ROUNDS]}
ROUNDS=${3:-3}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-16}
THREADS=${THREADS:-2}
DATA=${SVDSLICE_TEST_DATA:-/usr/share/doc/insighttoolkit4-examples/examples/Data}
PY=/usr/bin/python3
command -v wrk >/dev/null || { echo "ab.sh: wrk is missing (scripts/setup.sh all)" >&2; exit 1; }

WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
$PY - "$DATA/BrainProtonDensitySlice.png" "$WORK/slice.png" <<'PYEOF'
import sys
from PIL import Image
Image.open(sys.argv[1]).convert("L").resize((170, 256), Image.LANCZOS).save(sys.argv[2])
PYEOF

# serve BIN -> sets PID, PORT, SLICE_ID
serve() {
  rm -rf "$WORK/data" "$WORK/out" "$WORK/err" # a stale listening line would be read before the new server truncates it
  "$1" serve --port 0 --data "$WORK/data" >"$WORK/out" 2>"$WORK/err" &
  PID=$!
  for _ in $(seq 1 300); do grep -q listening "$WORK/out" 2>/dev/null && break; sleep 0.05; done
  PORT=$(head -1 "$WORK/out" | sed -E -n 's/.*:([0-9]+)$/\1/p')
  [ -n "$PORT" ] || { echo "ab.sh: $1 did not start: $(cat "$WORK/out" "$WORK/err")" >&2; exit 1; }
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
  SLICE_ID=$(curl -fsS --data-binary @"$WORK/slice.png" -H 'Content-Type: image/png' \
    "http://127.0.0.1:$PORT/slices${UPLOAD_QUERY:-}" | $PY -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  export SLICE_ID
}
stop() { kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=; }
rps() { wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s "$HERE/$1" "$2" | awk '/^Requests\/sec/ {print $2}'; }

: >"$WORK/results"
for r in $(seq 1 "$ROUNDS"); do
  for which in A B; do
    bin=$A; [ "$which" = B ] && bin=$B
    serve "$bin"
    export FIXED_PATH="/reconstruct?id=$SLICE_ID&k=50"
    cached=$(rps fixed.lua "http://127.0.0.1:$PORT")
    computed=$(rps rotate_k.lua "http://127.0.0.1:$PORT/")
    stop
    echo "round $r $which cached $cached computed $computed" | tee -a "$WORK/results"
  done
done
$PY - "$WORK/results" <<'PYEOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    _, _, which, _, cached, _, computed = line.split()
    runs.setdefault(which, {"cached": [], "computed": []})
    runs[which]["cached"].append(float(cached))
    runs[which]["computed"].append(float(computed))
print("| scenario | A median req/s (min-max) | B median req/s (min-max) | B/A |")
print("|---|---:|---:|---:|")
for s in ("cached", "computed"):
    a, b = runs["A"][s], runs["B"][s]
    ma, mb = statistics.median(a), statistics.median(b)
    print("| %s | %.0f (%.0f-%.0f) | %.0f (%.0f-%.0f) | %.3f |" % (s, ma, min(a), max(a), mb, min(b), max(b), mb / ma))
PYEOF
