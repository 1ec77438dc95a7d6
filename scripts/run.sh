#!/usr/bin/env bash
# run.sh - Quick start: install what is missing, build, and serve on http://127.0.0.1:8080 with a demo
# slice loaded. Arguments go to `svdslice serve` (e.g. --port 9000 --data /srv/slices).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh all
scripts/build.sh
PORT=8080
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  [ "${args[$i]}" = "--port" ] && PORT=${args[$((i + 1))]}
done
DEMO=/usr/share/doc/insighttoolkit4-examples/examples/Data/BrainProtonDensitySlice.png
# Load the demo slice once the server answers (an upload of the same slice is idempotent).
(
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  if [ -f "$DEMO" ]; then
    curl -fsS -F "file=@$DEMO" "http://127.0.0.1:$PORT/slices?name=demo-brain-pd" >/dev/null &&
      echo "demo slice loaded: open http://127.0.0.1:$PORT/"
  fi
) &
exec build/svdslice serve --port "$PORT" "$@"
