#!/usr/bin/env bash
# run.sh - the attacks of docs/ATTACKS.md, each against a fresh `svdslice serve` with default
# flags, while a well-behaved probe from 127.0.0.1 measures its latency (p50/p99/max).
#
# Usage: bench/attack/run.sh [SVDSLICE_BIN] [attack.py options]
#        (default binary: $SVDSLICE_BIN, else build/svdslice; build it as Release, no sanitizers)
# Env:   DURATION=30    probe window per scenario, seconds (each scenario takes ~DURATION + 20 s)
#        SCENARIOS="none slow-headers dribble bomb idle"
#        RESULTS        also write the results as JSON to this file
# Needs: Linux (attackers bind 127.0.0.2 and up, all routed to lo), /usr/bin/python3 (standard
#        library only). Loopback only; every scenario is bounded.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${1:-${SVDSLICE_BIN:-$ROOT/build/svdslice}}
if [ $# -gt 0 ]; then shift; fi
DURATION=${DURATION:-30}
SCENARIOS=${SCENARIOS:-none slow-headers dribble bomb idle}
[ -x "$BIN" ] || { echo "run.sh: no svdslice binary at $BIN" >&2; exit 1; }

# 2000 attack sockets plus the server's: more descriptors than the usual 1024.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

args=()
for s in $SCENARIOS; do args+=(--scenario "$s"); done
[ -n "${RESULTS:-}" ] && args+=(--json "$RESULTS")
exec /usr/bin/python3 "$HERE/attack.py" "$BIN" --duration "$DURATION" "${args[@]}" "$@"
