#!/usr/bin/env bash
# run.sh - HTTP load bench: svdslice serve against the study's pipeline as a Python web
# service, and against bare libmicrohttpd as the ceiling for the cached path.
#
# Usage: bench/load/run.sh [SVDSLICE_BIN]        (default: $SVDSLICE_BIN, else build/svdslice)
# Env:   DURATION=10s  CONNS=16  THREADS=2  (wrk -t THREADS -c CONNS -d DURATION)
#        SVDSLICE_TEST_DATA  dir of Debian's insighttoolkit4-examples slices (default: the package's)
#        BACKEND             backend for the computed runs (default: auto)
#        RESULTS             also write the results as JSON to this file
# Needs: wrk, gunicorn (Debian's, runs /usr/bin/python3), cc + libmicrohttpd-dev, curl,
#        /usr/bin/python3 with numpy and PIL. Loopback only; every run is bounded by DURATION.
#
# Runs, one after the other (nothing else of ours running meanwhile):
#   1. ours computed:  /reconstruct?id=..&k=1..170 rotating, Cache-Control: no-cache
#   2. ours cached:    one repeated /reconstruct URL (response cache + ETag path)
#   3. bare_mhd:       libmicrohttpd answering the same PNG body from memory (same daemon set-up)
#   4. python:         pyservice.py (numpy SVD at start, np.dot + Pillow per request) under
#                      gunicorn with one worker per core, the same rotating-k load
# The slice is a real MRI slice (BrainProtonDensitySlice.png) resized with PIL to the study's
# 256x170 (height x width). wrk runs on the same cores as the servers: absolute figures are
# lower than on a separate load generator, ratios are what matter.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${1:-${SVDSLICE_BIN:-$ROOT/build/svdslice}}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-16}
THREADS=${THREADS:-2}
BACKEND=${BACKEND:-auto}
DATA=${SVDSLICE_TEST_DATA:-/usr/share/doc/insighttoolkit4-examples/examples/Data}
PY=/usr/bin/python3
NPROC=$(nproc)

for tool in wrk gunicorn cc curl pkg-config; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing (scripts/setup.sh all)" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "run.sh: no svdslice binary at $BIN" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits for "... listening on ...:PORT" / "... listening on PORT" as the first line of $1.
wait_listen() {
  local out=$1 i
  for i in $(seq 1 300); do
    if [ -s "$out" ] && head -1 "$out" | grep -q "listening on"; then
      head -1 "$out" | sed -E 's/.*[: ]([0-9]+)[[:space:]]*$/\1/'
      return 0
    fi
    sleep 0.1
  done
  echo "run.sh: server did not start: $(cat "$out")" >&2
  return 1
}

stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# run_wrk LABEL SCRIPT URL -> prints wrk's output, stores the RESULT json in $WORK/LABEL.json
run_wrk() {
  local label=$1 script=$2 url=$3
  echo "== $label: wrk -t$THREADS -c$CONNS -d$DURATION $url ($script)"
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$HERE/$script" "$url" | tee "$WORK/$label.out"
  grep '^RESULT ' "$WORK/$label.out" | sed 's/^RESULT //' > "$WORK/$label.json"
}

echo "== machine"
lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket|L2|L3)' || true
echo "svdslice: $("$BIN" --version 2>/dev/null || echo '?')"

# ---- the slice: a real one at the study's 256x170 -----------------------------------------
SLICE=$WORK/slice.png
$PY - "$DATA/BrainProtonDensitySlice.png" "$SLICE" <<'EOF'
import sys
from PIL import Image
im = Image.open(sys.argv[1]).convert("L").resize((170, 256), Image.LANCZOS)  # (width, height)
im.save(sys.argv[2])
EOF

# ---- bare_mhd -------------------------------------------------------------------------------
cc -O2 -o "$WORK/bare_mhd" "$HERE/bare_mhd.c" $(pkg-config --cflags --libs libmicrohttpd)

# ---- svdslice ---------------------------------------------------------------------------------
"$BIN" serve --bind 127.0.0.1 --port 0 --data "$WORK/data" >"$WORK/serve.out" 2>"$WORK/serve.err" &
SPID=$!; PIDS+=("$SPID")
SPORT=$(wait_listen "$WORK/serve.out")
BASE=http://127.0.0.1:$SPORT
ID=$(curl -sS -H 'Content-Type: image/png' --data-binary @"$SLICE" "$BASE/slices?name=bench256x170" |
     $PY -c 'import json,sys; i=json.load(sys.stdin); assert (i["height"], i["width"]) == (256, 170), i; print(i["id"])')
FIXED="/reconstruct?id=$ID&k=50&backend=$BACKEND"
curl -sS -o "$WORK/body.png" -D "$WORK/body.hdr" "$BASE$FIXED"
grep -qi '^x-backend' "$WORK/body.hdr" && echo "auto/backend ran: $(grep -i '^x-backend' "$WORK/body.hdr" | tr -d '\r')"
echo "cached body: $(stat -c %s "$WORK/body.png") bytes"

export SLICE_ID=$ID KMAX=170 BACKEND
DURATION_SAVE=$DURATION; DURATION=2s
run_wrk warmup rotate_k.lua "$BASE" >/dev/null
DURATION=$DURATION_SAVE
run_wrk ours_computed rotate_k.lua "$BASE"
FIXED_PATH=$FIXED run_wrk ours_cached fixed.lua "$BASE"
stop "$SPID"

# ---- bare libmicrohttpd with the same body ---------------------------------------------------
"$WORK/bare_mhd" "$WORK/body.png" 0 >"$WORK/bare.out" &
BPID=$!; PIDS+=("$BPID")
BPORT=$(wait_listen "$WORK/bare.out")
FIXED_PATH=$FIXED run_wrk bare_cached fixed.lua "http://127.0.0.1:$BPORT"
stop "$BPID"

# ---- the study's pipeline in Python (gunicorn, one worker per core) -------------------------
PPORT=$(free_port)
(cd "$HERE" && OPENBLAS_NUM_THREADS=1 SLICE_PNG=$SLICE exec gunicorn -w "$NPROC" -b "127.0.0.1:$PPORT" \
   --log-level warning pyservice:app) &
PPID_=$!; PIDS+=("$PPID_")
for i in $(seq 1 300); do
  curl -sf -o /dev/null "http://127.0.0.1:$PPORT/reconstruct?k=5" && break
  sleep 0.1
done
curl -sf -o "$WORK/py.png" "http://127.0.0.1:$PPORT/reconstruct?k=50"
run_wrk python_computed rotate_k.lua "http://127.0.0.1:$PPORT"
stop "$PPID_"

# ---- summary ----------------------------------------------------------------------------------
$PY - "$WORK" "${RESULTS:-}" "$CONNS" <<'EOF'
import json, os, sys
work, out, conns = sys.argv[1], sys.argv[2], sys.argv[3]
rows = {}
for label in ("ours_computed", "ours_cached", "bare_cached", "python_computed"):
    with open(os.path.join(work, label + ".json")) as f:
        rows[label] = json.load(f)
print("\n| run (c=%s) | req/s | p50 ms | p99 ms | non-200 | socket errors |" % conns)
print("|---|---:|---:|---:|---:|---:|")
for label, r in rows.items():
    print("| %s | %.0f | %.2f | %.2f | %d | %d |" % (label, r["rps"], r["p50_ms"], r["p99_ms"],
                                                   r["non200"], r["socket_errors"]))
comp = rows["ours_computed"]["rps"] / rows["python_computed"]["rps"]
cach = rows["ours_cached"]["rps"] / rows["bare_cached"]["rps"]
print("\nours computed / python: %.1fx (goal >= 10x)" % comp)
print("ours cached / bare libmicrohttpd: %.2fx (goal >= 0.8x)" % cach)
if out:
    rows["ratio_computed_vs_python"] = comp
    rows["ratio_cached_vs_bare"] = cach
    with open(out, "w") as f:
        json.dump(rows, f, indent=2)
EOF
