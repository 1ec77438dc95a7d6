"""test_smoke.py - the HTTP server's own smoke tests: start `svdslice serve`, exercise the paths
that the API tests reach only indirectly (GPU queue hand-off in CPU mode, response cache, deadlines,
overload, chunked bodies, preflight, env config, clean SIGTERM with jobs in flight)."""
import http.client
import json
import os
import re
import signal
import struct
import subprocess
import tempfile
import shutil
import threading
import time
import unittest
import zlib

BIN = os.environ.get("SVDSLICE_BIN", "svdslice")
DATA = os.environ.get("SVDSLICE_TEST_DATA", "")


def png_gray8(w, h, seed=1):
    """A small deterministic 8-bit grayscale PNG written by hand (no PIL needed)."""
    rows = b""
    x = seed
    for _ in range(h):
        row = bytearray()
        for _ in range(w):
            x = (1103515245 * x + 12345) & 0x7FFFFFFF
            row.append((x >> 16) & 0xFF)
        rows += b"\x00" + bytes(row)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


class Server:
    def __init__(self, args=(), env=None):
        self.dir = tempfile.mkdtemp(prefix="svdslice-smoke-")
        e = {k: v for k, v in os.environ.items() if not k.startswith("SVDSLICE_") or k == "SVDSLICE_BIN"}
        e.update(env or {})
        self.err = open(os.path.join(self.dir, "stderr.log"), "wb")
        self.proc = subprocess.Popen([BIN, "serve", "--port", "0", "--data", os.path.join(self.dir, "d")]
                                     + list(args), stdout=subprocess.PIPE, stderr=self.err, env=e)
        line = self.proc.stdout.readline().decode()
        m = re.match(r"^svdslice listening on http://127\.0\.0\.1:(\d+)\n$", line)
        if not m:
            self.proc.kill()
            raise RuntimeError("bad listening line %r: %s" % (line, self.log()))
        self.port = int(m.group(1))

    def log(self):
        self.err.flush()
        with open(os.path.join(self.dir, "stderr.log"), "rb") as f:
            return f.read().decode(errors="replace")[-3000:]

    def req(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        c.close()
        return r.status, hdrs, data

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = None
        self.err.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *a):
        if self.proc.poll() is None:
            self.stop()


def upload(srv, png, query=""):
    st, h, body = srv.req("POST", "/slices" + query, png, {"Content-Type": "image/png"})
    assert st in (200, 201), (st, body)
    return json.loads(body)


def metric(text, name):
    total = None
    for ln in text.splitlines():
        if ln.startswith(name + " ") or ln.startswith(name + "{"):
            total = (total or 0) + float(ln.rsplit(" ", 1)[1])
    return total


class SmokeTest(unittest.TestCase):
    def test_gpu_queue_path_in_cpu_mode_gives_the_pool_result(self):
        png = png_gray8(40, 30, seed=3)
        with Server() as a, Server(["--gpu-cpu-mode"]) as b:
            ia, ib = upload(a, png), upload(b, png)
            self.assertEqual(ia["id"], ib["id"])
            for k in (1, 7, 29):  # k = 30 = min(w, h) serves the kept original, no kernel
                q = "/reconstruct?id=%s&k=%d&backend=blas" % (ia["id"], k)
                sa, ha, pa = a.req("GET", q, headers={"Cache-Control": "no-cache"})
                sb, hb, pb = b.req("GET", q, headers={"Cache-Control": "no-cache"})
                self.assertEqual((sa, sb), (200, 200), b.log())
                self.assertEqual(pa, pb, "k=%d differs through the GPU queue" % k)
                self.assertIn("kernel;dur=", hb["server-timing"])
            st, _, body = b.req("GET", "/quality?id=%s&k=5&backend=loops2" % ib["id"])
            self.assertEqual(st, 200, body)
            self.assertEqual(json.loads(body)["backend"], "loops2")
            _, _, m = b.req("GET", "/metrics")
            self.assertGreaterEqual(metric(m.decode(), "svdslice_gpu_jobs_total"), 4)

    def test_response_cache_hits_and_delete_purges(self):
        with Server() as s:
            info = upload(s, png_gray8(33, 21, seed=5))
            q = "/reconstruct?id=%s&k=4" % info["id"]
            st1, h1, p1 = s.req("GET", q)
            st2, h2, p2 = s.req("GET", q)
            self.assertEqual((st1, st2), (200, 200))
            self.assertEqual(p1, p2)
            self.assertEqual(h1["etag"], h2["etag"])
            self.assertIn("cache;desc=hit", h2["server-timing"])
            _, _, m = s.req("GET", "/metrics")
            self.assertEqual(metric(m.decode(), "svdslice_response_cache_hits_total"), 1)
            self.assertEqual(s.req("GET", q, headers={"If-None-Match": h1["etag"]})[0], 304)
            self.assertEqual(s.req("DELETE", "/slices/" + info["id"])[0], 204)
            st, _, body = s.req("GET", q)
            self.assertEqual(st, 404, body)
            _, _, m = s.req("GET", "/metrics")
            self.assertEqual(metric(m.decode(), "svdslice_response_cache_entries"), 0)

    def test_full_queue_answers_503_with_retry_after(self):
        # one worker, a queue of one: a burst of no-cache requests on a big slice must overflow
        with Server(["--workers", "1", "--queue", "1"]) as s:
            info = upload(s, png_gray8(512, 512, seed=9))
            results = []

            def hit(i):
                results.append(s.req("GET", "/reconstruct?id=%s&k=%d&backend=loops3" % (info["id"], 400 + i),
                                     headers={"Cache-Control": "no-cache"}))
            ts = [threading.Thread(target=hit, args=(i,)) for i in range(8)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            codes = sorted(r[0] for r in results)
            self.assertIn(200, codes)
            self.assertIn(503, codes, codes)
            for st, h, body in results:
                if st == 503:
                    self.assertEqual(json.loads(body)["error"]["code"], "overloaded")
                    self.assertIn("retry-after", h)

    def test_job_deadline_gives_503(self):
        with Server(["--workers", "1", "--job-deadline-ms", "1"]) as s:
            info = upload(s, png_gray8(512, 512, seed=11))
            results = []

            def hit(i):
                results.append(s.req("GET", "/quality?id=%s&k=%d&backend=loops3" % (info["id"], 300 + i))[0])
            ts = [threading.Thread(target=hit, args=(i,)) for i in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            self.assertIn(503, results, "no queued job passed a 1 ms deadline behind loops3 jobs")

    def test_chunked_body_over_limit_is_413(self):
        with Server(["--max-body-bytes", "5000"]) as s:
            c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
            c.putrequest("POST", "/slices")
            c.putheader("Transfer-Encoding", "chunked")
            c.putheader("Content-Type", "image/png")
            c.endheaders()
            chunk = b"\x89PNG\r\n\x1a\n" + b"x" * 992
            for _ in range(10):
                c.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            c.send(b"0\r\n\r\n")
            r = c.getresponse()
            body = r.read()
            self.assertEqual(r.status, 413, body)
            self.assertEqual(json.loads(body)["error"]["code"], "too_large")
            st, _, _ = s.req("GET", "/healthz")
            self.assertEqual(st, 200)

    def test_env_config_and_flag_wins(self):
        env = {"SVDSLICE_API_KEY": "envkey", "SVDSLICE_CORS_ORIGIN": "https://a.example"}
        with Server(["--api-key", "flagkey"], env=env) as s:
            png = png_gray8(20, 20)
            self.assertEqual(s.req("POST", "/slices", png, {"Authorization": "Bearer envkey"})[0], 401)
            st, h, _ = s.req("POST", "/slices", png, {"Authorization": "Bearer flagkey"})
            self.assertEqual(st, 201)
            self.assertEqual(h["access-control-allow-origin"], "https://a.example")
            st, h, _ = s.req("OPTIONS", "/reconstruct", headers={
                "Origin": "https://a.example", "Access-Control-Request-Method": "GET"})
            self.assertEqual(st, 204)
            self.assertIn("GET", h["access-control-allow-methods"])
            self.assertIn("If-None-Match", h["access-control-allow-headers"])
            self.assertIn("X-Backend", h["access-control-expose-headers"])

    def test_bad_flags_exit_2(self):
        for args in (["--nope"], ["--port", "x"], ["--auth-reads"], ["--workers"]):
            p = subprocess.run([BIN, "serve"] + args, capture_output=True, timeout=30)
            self.assertEqual(p.returncode, 2, args)
            self.assertTrue(p.stderr.strip(), args)
        p = subprocess.run([BIN, "serve", "--help"], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0)
        self.assertIn(b"--max-body-mb", p.stdout)

    def test_sigterm_answers_jobs_in_flight_and_exits_0(self):
        s = Server(["--workers", "1"])
        info = upload(s, png_gray8(512, 512, seed=13))
        results = []

        def hit(i):
            try:
                results.append(s.req("GET", "/reconstruct?id=%s&k=%d&backend=loops3" % (info["id"], 200 + i),
                                     headers={"Cache-Control": "no-cache"})[0])
            except (OSError, http.client.HTTPException) as e:
                results.append(repr(e))
        ts = [threading.Thread(target=hit, args=(i,)) for i in range(4)]
        for t in ts:
            t.start()
        time.sleep(0.3)
        log = s.log()
        self.assertEqual(s.stop(), 0, log)
        for t in ts:
            t.join()
        self.assertEqual(len(results), 4)
        for r in results:  # every request got an answer: done, or refused while stopping
            self.assertIn(r, (200, 503), results)


if __name__ == "__main__":
    unittest.main(verbosity=2)
