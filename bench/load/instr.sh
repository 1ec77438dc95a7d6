#!/bin/bash
# instr.sh - instructions a server spends on requests, counted by callgrind (repeatable on a noisy
# machine, unlike req/s). Usage: bench/load/instr.sh BIN N [cached]
# Starts BIN under callgrind with one worker, uploads a 256x170 real slice, sends N cached
# /reconstruct requests (k=50) then, unless "cached", N computed ones (k rotating, no-cache) on one
# keep-alive connection, stops it and prints the program's total. Run it with N=0 for the start-up
# and upload baseline; (total(N) - total(0)) / requests is the cost of one request.
set -euo pipefail
BIN=$1; N=$2; MODE=${3:-both}; W=$(mktemp -d)
/usr/bin/python3 -c "
from PIL import Image; Image.open('/usr/share/doc/insighttoolkit4-examples/examples/Data/BrainProtonDensitySlice.png').convert('L').resize((170,256)).save('$W/s.png')"
valgrind --tool=callgrind --callgrind-out-file=$W/cg.out "$BIN" serve --port 0 --data $W/d --workers 1 > $W/out 2>$W/err &
PID=$!
for i in $(seq 1 600); do grep -q listening $W/out 2>/dev/null && break; sleep 0.1; done
PORT=$(sed -n -E 's/.*:([0-9]+)$/\1/p' $W/out)
/usr/bin/python3 - $PORT $N $W/s.png $MODE <<'PY'
import http.client, json, sys
port, n, png = int(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3],'rb').read()
c = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
c.request('POST', '/slices', png, {'Content-Type': 'image/png'}); sid = json.loads(c.getresponse().read())['id']
for i in range(n):
    c.request('GET', '/reconstruct?id=%s&k=50' % sid); r = c.getresponse(); r.read(); assert r.status == 200
for i in range(n if sys.argv[4] != 'cached' else 0):
    c.request('GET', '/reconstruct?id=%s&k=%d' % (sid, 1 + i % 170), headers={'Cache-Control': 'no-cache'}); r = c.getresponse(); r.read(); assert r.status == 200
PY
kill -TERM $PID; wait $PID || true
callgrind_annotate $W/cg.out 2>/dev/null | grep -m1 'PROGRAM TOTALS'
rm -rf $W
