"""test_event_loop.py - heavy reads never run on the one event-loop thread.

libmicrohttpd runs every connection on one polling thread: whatever a handler does there
delays every other client. Encoding the original PNG of a slice, reading a .svd file, or
loading factors for the GPU queue must happen on a worker, so /healthz on a fresh connection
stays quick while many clients ask for those. Each probe is bounded generously; before
these moved off the loop, probes waited behind every queued encode or load."""
import json
import os
import subprocess
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import util  # noqa: E402

CLIENTS = 48
ROUNDS = 2
# /healthz answers in well under 1 ms when the loop is free; generous for sanitizer builds on
# busy cores. Before, the largest probe here was 0.8-1.5 s (one such per burst).
PROBE_WITHIN_S = 0.5
# Clients queue behind each other on the workers; slow (sanitizer) builds must not hit the deadline.
DEADLINE = ["--job-deadline-ms", "120000"]


# The prober runs in its own process: in this one it would wait for the GIL behind the
# load's threads, which is not the server's latency.
PROBER = r"""
import http.client, json, sys, threading, time
host, port = sys.argv[1], int(sys.argv[2])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
out = []
while not stop.is_set():
    t0 = time.monotonic()
    c = http.client.HTTPConnection(host, port, timeout=30)
    try:
        c.request("GET", "/healthz")
        r = c.getresponse()
        r.read()
        out.append([time.monotonic() - t0, r.status])
    except OSError as e:
        out.append([time.monotonic() - t0, repr(e)])
    finally:
        c.close()
    time.sleep(0.01)
print(json.dumps(out))
"""


def probe_while(srv, load, clients=CLIENTS, rounds=ROUNDS):
    """Runs load(i) in `rounds` bursts on each of `clients` threads while /healthz is probed
    from new connections; returns (probe latencies, failures)."""
    failures = []
    prober = subprocess.Popen([sys.executable, "-c", PROBER, srv.host, str(srv.port)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    time.sleep(0.2)  # probing before the load starts

    together = threading.Barrier(clients)

    def client(i):
        for n in range(rounds):
            together.wait(120)  # each round a burst: every request arrives at once
            try:
                err = load(i * rounds + n)
            except Exception as e:  # noqa: BLE001 - recorded and asserted by the caller
                err = repr(e)
            if err:
                failures.append(err)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    out, _ = prober.communicate(b"", timeout=60)
    probes = json.loads(out.decode())
    failures += ["healthz %r" % (st,) for _, st in probes if st != 200]
    return [t for t, _ in probes], failures


class EventLoopTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # 2048x2048 16-bit with noise: its PNG is ~5 MB, its .svd (rank 64, with the original) ~9 MB
        cls.png = util.png_encode(util.phantom(2048, 2048, 16, seed=600))

    def check_probes(self, srv, lat, failures):
        self.assertEqual(failures[:5], [], srv.log_tail())
        self.assertGreater(len(lat), 3, "too few probes ran")
        lat = sorted(lat)
        slow = [round(x, 3) for x in lat if x >= PROBE_WITHIN_S]
        print("healthz probes: %d, median %.1f ms, max %.1f ms" % (
            len(lat), lat[len(lat) // 2] * 1e3, lat[-1] * 1e3), file=sys.stderr)
        self.assertEqual(slow, [], "%d of %d /healthz probes took %.1f s or more (median %.1f ms)" % (
            len(slow), len(lat), PROBE_WITHIN_S, lat[len(lat) // 2] * 1e3))

    def test_original_and_factors_do_not_block_the_event_loop(self):
        with util.Server(DEADLINE) as srv:
            sid = srv.upload_ok(self.png, "?rank=64")["id"]
            want = util.png_decode(srv.get("/slices/%s/original" % sid).body)[0]

            def load(n):
                if n % 4 == 1:
                    r = srv.get("/slices/%s/factors" % sid)
                    if r.status != 200 or util.parse_svd(r.body)["id"] != sid:
                        return "factors %r" % r
                    return None
                r = srv.get("/slices/%s/original" % sid)
                if r.status != 200 or r.header("Content-Type") != "image/png":
                    return "original %r" % r
                if n == 0 and not (util.png_decode(r.body)[0] == want).all():
                    return "original pixels differ"
                return None
            lat, failures = probe_while(srv, load)
            self.check_probes(srv, lat, failures)

    def test_gpu_queue_factor_loads_do_not_block_the_event_loop(self):
        # CPU mode routes reconstructions through the GPU queue; with no factors cache every
        # request loads (reads, verifies and decodes) the .svd file first: the quantised factors
        # here (with the original kept, each load would be a 2048x2048 SVD: docs/COMPRESSION.md)
        with util.Server(["--gpu-cpu-mode", "--cache-mb", "0"] + DEADLINE) as srv:
            sid = srv.upload_ok(self.png, "?rank=64&keep-original=false")["id"]

            def load(n):
                r = srv.get("/reconstruct?id=%s&k=%d&backend=blas" % (sid, 1 + n % 64),
                            {"Cache-Control": "no-cache"})
                return None if r.status == 200 else "reconstruct %r" % r
            lat, failures = probe_while(srv, load)
            self.check_probes(srv, lat, failures)


if __name__ == "__main__":
    unittest.main(verbosity=2)
