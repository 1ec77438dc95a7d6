"""test_concurrency.py - many parallel clients with every response checked; the queue-full path."""
import os
import random
import sys
import threading
import unittest

import numpy as np

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import util  # noqa: E402

THREADS = 32
PER_THREAD = 100


class MixedLoadTest(unittest.TestCase):
    def test_32_threads_mixed_requests_all_correct(self):
        with util.Server() as srv:
            pngs = [util.read_bytes(util.test_data("BrainProtonDensitySlice.png")),
                    util.read_bytes(util.test_data("BrainMidSagittalSlice.png")),
                    util.png_encode(util.phantom(64, 50, 16, seed=400)),
                    util.png_encode(util.phantom(40, 72, 8, seed=401))]
            infos = [srv.upload_ok(p) for p in pngs]
            factors = [util.with_factors(util.parse_svd(srv.get("/slices/%s/factors" % i["id"]).body),
                                         util.png_decode(srv.get("/slices/%s/original" % i["id"]).body)[0])
                       for i in infos]
            available = [b["name"] for b in srv.get("/backends").json()["backends"] if b["available"]]
            cpu = [b for b in util.CPU_BACKENDS if b in available]
            refs = {}
            refs_lock = threading.Lock()
            failures = []

            def reference(si, k):
                with refs_lock:
                    if (si, k) not in refs:
                        refs[(si, k)] = util.reference_pixels(factors[si], k)
                    return refs[(si, k)]

            def fail(msg):
                failures.append(msg)

            def worker(tid):
                rng = random.Random(1000 + tid)
                for n in range(PER_THREAD):
                    si = rng.randrange(len(infos))
                    info = infos[si]
                    kind = rng.choices(["upload", "recon", "quality", "list", "info"], [8, 55, 12, 10, 15])[0]
                    try:
                        if kind == "upload":
                            r = srv.upload_raw(pngs[si]) if rng.random() < 0.5 else srv.upload_multipart(pngs[si])
                            if r.status != 200 or r.json()["id"] != info["id"]:
                                fail("upload %d: %r" % (si, r))
                        elif kind == "recon":
                            k = rng.randint(1, info["rank"])
                            b = rng.choice(cpu + ["auto"])
                            hdr = {"Cache-Control": "no-cache"} if rng.random() < 0.3 else None
                            r = srv.get("/reconstruct?id=%s&k=%d&backend=%s" % (info["id"], k, b), hdr)
                            if r.status != 200:
                                fail("recon %s k=%d %s: %r" % (info["id"], k, b, r))
                                continue
                            ran = r.header("X-Backend")
                            if (b != "auto" and ran != b) or ran not in available:
                                fail("recon X-Backend %r for %s" % (ran, b))
                            if n % 4 == 0:  # decode a sample against the float64 reference
                                px, bits = util.png_decode(r.body)
                                if bits != info["bit_depth"]:
                                    fail("recon bits %d" % bits)
                                elif np.abs(px - reference(si, k)).max() > 1:
                                    fail("recon %s k=%d %s: pixels off" % (info["id"], k, b))
                            elif r.body[:8] != b"\x89PNG\r\n\x1a\n":
                                fail("recon body is not a PNG")
                        elif kind == "quality":
                            k = rng.randint(1, info["rank"])
                            r = srv.get("/quality?id=%s&k=%d" % (info["id"], k))
                            q = r.json() if r.status == 200 else None
                            if not q or q["k"] != k or q["id"] != info["id"] or q["mse"] < 0 or \
                                    q["float32_bytes_at_k"] != 4 * k * (info["width"] + info["height"] + 1):
                                fail("quality k=%d: %r" % (k, r))
                        elif kind == "list":
                            r = srv.get("/slices")
                            if r.status != 200 or {i["id"] for i in infos} - {s["id"] for s in r.json()["slices"]}:
                                fail("list: %r" % r)
                        else:
                            r = srv.get("/slices/" + info["id"])
                            if r.status != 200 or r.json() != info:
                                fail("info: %r" % r)
                    except Exception as e:  # a reset or malformed response is a failure too
                        fail("%s: %s: %r" % (kind, type(e).__name__, e))

            threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.assertTrue(srv.alive(), srv.log_tail())
            self.assertEqual(failures, [], "%d of %d requests failed, e.g. %s\n%s" % (
                len(failures), THREADS * PER_THREAD, failures[:5], srv.log_tail()))
            self.assertEqual(srv.get("/healthz").status, 200)


class QueueFullTest(unittest.TestCase):
    def test_full_queue_answers_503_overloaded_with_retry_after(self):
        with util.Server(["--workers", "1", "--queue", "1"]) as srv:
            # 512x512 at full rank with loops3: ~1.3e8 multiply-adds per request keeps the worker busy
            big = util.phantom(512, 512, 8, seed=410)
            info = srv.upload_ok(util.png_encode(big))
            clients = 16
            barrier = threading.Barrier(clients)
            results = []
            lock = threading.Lock()

            def client(c):
                barrier.wait()
                for j in range(2):
                    k = info["rank"] - c * 2 - j
                    try:
                        r = srv.get("/reconstruct?id=%s&k=%d&backend=loops3" % (info["id"], k),
                                    {"Cache-Control": "no-cache"})
                    except Exception as e:
                        r = e
                    with lock:
                        results.append(r)

            threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            errors = [r for r in results if isinstance(r, Exception)]
            self.assertEqual(errors, [], "connection errors")
            statuses = sorted(r.status for r in results)
            self.assertTrue(set(statuses) <= {200, 503}, statuses)
            self.assertIn(503, statuses, "a queue of 1 with 16 parallel heavy clients never overflowed")
            self.assertIn(200, statuses)
            for r in results:
                if r.status == 503:
                    util.assert_error(self, r, 503, "overloaded")
                    ra = r.header("Retry-After")
                    self.assertIsNotNone(ra, "503 overloaded without Retry-After")
                    self.assertTrue(ra.strip().isdigit(), ra)
                else:
                    self.assertEqual(r.header("Content-Type"), "image/png")
            # healthy afterwards: a normal request is served
            self.assertEqual(srv.get("/healthz").status, 200)
            r = srv.get("/reconstruct?id=%s&k=3&backend=blas" % info["id"])
            self.assertEqual(r.status, 200, r)
            self.assertTrue(srv.alive())


if __name__ == "__main__":
    unittest.main(verbosity=2)
