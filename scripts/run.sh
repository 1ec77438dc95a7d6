#!/usr/bin/env bash
# run.sh - Quick start: install what building and serving need, build, and serve on
# http://127.0.0.1:8080 with a demo slice loaded. Arguments go to `svdslice serve`
# (e.g. --port 9000 --data /srv/slices). The test tools (Chromium, Node, Python) are
# scripts/test.sh's business, not this one's.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh run
# Only the server: the tests are built by scripts/test.sh.
TARGET=svdslice scripts/build.sh
PORT=8080
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --port) PORT=${args[$((i + 1))]:-$PORT} ;;
    --port=*) PORT=${args[$i]#--port=} ;;
  esac
done
DEMO=/usr/share/doc/insighttoolkit4-examples/examples/Data/BrainProtonDensitySlice.png
# Load the demo slice once the server answers (an upload of the same slice is idempotent).
(
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  if [ ! -f "$DEMO" ]; then
    echo "run.sh: no demo slice ($DEMO); upload your own at http://127.0.0.1:$PORT/"
  elif curl -fsS -F "file=@$DEMO" "http://127.0.0.1:$PORT/slices?name=demo-brain-pd" >/dev/null; then
    echo "run.sh: demo slice loaded: open http://127.0.0.1:$PORT/"
  else
    echo "run.sh: could not load the demo slice into http://127.0.0.1:$PORT/" >&2
  fi
) &
exec build/svdslice serve --port "$PORT" "$@"
