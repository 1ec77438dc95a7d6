#!/usr/bin/python3
"""run.py - the measurements of docs/DEPLOY.md, in one run on this machine.

1. wrk through nginx (hash on the id) against 1, 2 and 3 replicas on one PostgreSQL store, for
   computed reconstructions (Cache-Control: no-cache) and cached ones, plus one replica without
   nginx; 2. a factors-cache miss (--cache-mb 0, no response cache) on the directory store and
   on the PostgreSQL store, for a small and a large slice.
Uses the PostgreSQL and nginx helpers of tests/http/test_scaleout.py. Env: SVDSLICE_BIN,
DURATION (wrk seconds per run, default 5), CONNS (default 8), ROUNDS (default 3; medians reported).
Usage: SVDSLICE_BIN=build/svdslice /usr/bin/python3 bench/scaleout/run.py
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "http"))
import test_scaleout as ts  # noqa: E402
import util  # noqa: E402

DURATION = os.environ.get("DURATION", "5")
CONNS = os.environ.get("CONNS", "8")
ROUNDS = int(os.environ.get("ROUNDS", "3"))


def wrk(port, ids, compute, conns=CONNS, duration=DURATION):
    env = dict(os.environ, SLICE_IDS=",".join(ids), CACHED="0" if compute else "1", KMAX="60")
    p = subprocess.run(["wrk", "-t", str(min(2, int(conns))), "-c", str(conns), "-d", duration + "s", "-s",
                        os.path.join(HERE, "..", "load", "rotate_k.lua"), "http://127.0.0.1:%d" % port],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=120)
    out = p.stdout.decode()
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if not line:
        raise RuntimeError(out)
    return json.loads(line[0][7:])


def median_run(runs):
    runs = sorted(runs, key=lambda r: r["rps"])
    out = dict(runs[len(runs) // 2])
    out["rps_all"] = [r["rps"] for r in runs]
    return out


def main():
    results = {"cpus": os.cpu_count(), "rounds": ROUNDS, "duration_s": int(DURATION), "conns": int(CONNS)}
    pg = ts.Postgres(ts.pg_bindir())
    pg.start()
    reps, nginxes = [], []
    try:
        reps = [util.Server(["--store", pg.dsn]).start() for _ in range(3)]
        ids = [reps[0].upload_ok(ts.phantom_png(100 + i, 256))["id"] for i in range(12)]
        nginxes = [ts.Nginx([r.port for r in reps[:n]]) for n in (1, 2, 3)]
        targets = {"direct_1": reps[0].port}
        targets.update({"nginx_%d" % (i + 1): ng.port for i, ng in enumerate(nginxes)})
        scale = {}
        for compute in (True, False):
            kind = "computed" if compute else "cached"
            for port in targets.values():  # warm-up: every replica's index and caches
                wrk(port, ids, compute, duration="1")
            runs = {t: [] for t in targets}
            for _ in range(ROUNDS):  # alternated, so drift on a shared machine hits all alike
                for t, port in targets.items():
                    runs[t].append(wrk(port, ids, compute))
            scale[kind] = {t: median_run(r) for t, r in runs.items()}
        results["scale"] = scale
        for ng in nginxes:
            ng.stop()
        nginxes = []
        for r in reps:
            r.stop()
        reps = []
        # A cache miss: every request loads the slice from the store (no factors or response cache).
        with tempfile.TemporaryDirectory() as d:
            args = ["--cache-mb", "0", "--response-cache-mb", "0", "--workers", "1"]
            servers = {"dir": util.Server(args + ["--store", "dir:" + d]).start(),
                       "postgres": util.Server(args + ["--store", pg.dsn]).start()}
            reps = list(servers.values())
            sids = {size: [srv.upload_ok(ts.phantom_png(200 + size, size))["id"] for srv in reps][0]
                    for size in (256, 1024)}
            runs = {}
            for _ in range(ROUNDS):
                for size, sid in sids.items():
                    for store, srv in servers.items():
                        runs.setdefault("%s_%d" % (store, size), []).append(wrk(srv.port, [sid], True, conns=1))
            results["miss"] = {k: median_run(v) for k, v in runs.items()}
    finally:
        for ng in nginxes:
            ng.stop()
        for r in reps:
            r.kill()
            r.cleanup()
        pg.cleanup()
    json.dump(results, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
