"""test_robustness.py - malformed requests, lying lengths, slow clients and fuzzed queries/PNGs
never crash the server: every answer is a JSON error or a success."""
import os
import random
import re
import socket
import sys
import time
import unittest
import urllib.parse

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import util  # noqa: E402

TIMEOUT_S = 2
KNOWN = {200, 201, 204, 304, 400, 401, 404, 405, 413, 415, 422, 431, 503, 507}


def status_of(raw):
    m = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    return int(m.group(1)) if m else None


def body_of(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


class RobustnessTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = util.Server(["--timeout", str(TIMEOUT_S), "--max-body-mb", "2"]).start()
        cls.png = util.read_bytes(util.test_data("BrainProtonDensitySlice.png"))
        cls.sid = cls.srv.upload_ok(cls.png)["id"]

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        cls.srv.cleanup()
        assert rc == 0, "exit code %r after SIGTERM" % rc

    def tearDown(self):
        self.assert_healthy()

    def assert_healthy(self):
        self.assertTrue(self.srv.alive(), "server died\n" + self.srv.log_tail())
        r = self.srv.get("/healthz")
        self.assertEqual(r.status, 200)

    def raw(self, data, timeout=10.0, shutdown=True):
        return util.raw_exchange(self.srv.host, self.srv.port, data, timeout, shutdown)

    def check_answer(self, r, what):
        """A response: success or an API.md JSON error, never 500."""
        self.assertIn(r.status, KNOWN, "%s -> %r" % (what, r))
        if r.status >= 400 and r.status != 431:
            util.assert_error(self, r, r.status)

    # ------------------------------------------------------------ multipart
    def test_bad_multipart_bodies(self):
        png = self.png
        b = "XyZ123"
        cases = [
            ("multipart/form-data", b"--%s\r\n" % b.encode() + png),  # no boundary parameter
            ("multipart/form-data; boundary=", b"----\r\n\r\n"),
            ("multipart/form-data; boundary=%s" % b, b"--other\r\nContent-Disposition: form-data; "
             b"name=\"file\"; filename=\"a.png\"\r\n\r\n" + png + b"\r\n--other--\r\n"),
            ("multipart/form-data; boundary=%s" % b, b"--XyZ123\r\nContent-Disposition: form-data; "
             b"name=\"file\"; filename=\"a.png\"\r\n\r\n" + png[:300]),  # unterminated part
            ("multipart/form-data; boundary=%s" % b, b"--XyZ123--\r\n"),  # no parts
            ("multipart/form-data; boundary=%s" % b, b""),
            ("multipart/form-data; boundary=%s" % b, b"--XyZ123\r\n\r\n\r\n--XyZ123--\r\n"),  # no headers
            ("multipart/form-data; boundary=%s" % ("b" * 300), b"--" + b"b" * 300 + b"\r\n" + png),
            ("multipart/form-data; boundary=%s" % b, (b"--XyZ123\r\nContent-Disposition: form-data; "
                                                     b"name=\"file\"\r\n\r\n" + b"A" * 100 + b"\r\n") * 50),
            ("multipart/mixed; boundary=%s" % b, b"--XyZ123\r\n\r\nxx\r\n--XyZ123--\r\n"),
            ("application/x-www-form-urlencoded", b"file=%89PNG"),
        ]
        for ctype, body in cases:
            r = self.srv.request("POST", "/slices", body, {"Content-Type": ctype})
            self.check_answer(r, "multipart %r" % ctype[:60])
            self.assertNotIn(r.status, (200, 201), "garbage multipart accepted: %r" % ctype[:60])
        # a file part whose own headers are huge
        body, ctype = util.multipart_encode([], [("file", "f" * 5000 + ".png", png, "image/png")])
        self.check_answer(self.srv.request("POST", "/slices", body, {"Content-Type": ctype}), "long filename")

    # ------------------------------------------------------------ lengths and limits
    def test_truncated_body_and_content_length_lies(self):
        # body shorter than Content-Length, then close: no answer needed, no crash
        self.raw(b"POST /slices HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n"
                 + self.png[:100], timeout=TIMEOUT_S + 5)
        # body longer than Content-Length: the rest is a bad next request
        out = self.raw(b"POST /slices HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 10\r\n\r\n"
                       + self.png[:500], timeout=TIMEOUT_S + 5)
        self.assertIsNotNone(status_of(out), out[:200])
        for cl in (b"-5", b"abc", b"99999999999999999999999", b"10, 20", b" "):
            out = self.raw(b"POST /slices HTTP/1.1\r\nHost: x\r\nContent-Length: " + cl + b"\r\n\r\nxyz",
                           timeout=TIMEOUT_S + 5)
            st = status_of(out)
            self.assertTrue(st is None or st in (400, 411, 413, 415, 422), "Content-Length %r -> %r" % (cl, out[:200]))
        # both Content-Length and chunked
        out = self.raw(b"POST /slices HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"3\r\nabc\r\n0\r\n\r\n", timeout=TIMEOUT_S + 5)
        self.assertNotIn(status_of(out), (200, 201, 500))

    def test_chunked_body_over_limit_is_refused(self):
        s = socket.create_connection((self.srv.host, self.srv.port), timeout=10)
        out = b""
        try:
            s.sendall(b"POST /slices HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
            chunk = b"\x89PNG\r\n\x1a\n" + os.urandom(64 * 1024 - 8)
            try:
                for _ in range(48):  # 3 MiB > --max-body-mb 2
                    s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                s.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the server may stop reading and close: also a refusal
            while True:
                try:
                    d = s.recv(65536)
                except OSError:
                    break
                if not d:
                    break
                out += d
        finally:
            s.close()
        st = status_of(out)
        self.assertTrue(st is None or st == 413, "chunked 3 MiB body -> %r" % out[:300])

    def test_huge_headers(self):
        for req in (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n",
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(5000))
                    + b"\r\n",
                    b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /reconstruct?" + b"k=1&" * 30000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"):
            out = self.raw(req, timeout=TIMEOUT_S + 5)
            st = status_of(out)
            self.assertTrue(st is None or 400 <= st < 500, "huge header -> %r" % out[:200])

    def test_garbage_requests(self):
        rng = random.Random(7)
        for req in [b"\x00" * 100, b"HELLO\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", b"\r\n\r\n\r\n",
                    b"GET /slices/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /slices/%2e%2e%2f%2e%2e%2fetc%2fpasswd HTTP/1.1\r\nHost: x\r\n\r\n"] + \
                   [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) for _ in range(20)]:
            out = self.raw(req, timeout=TIMEOUT_S + 5)
            self.assertNotIn(b"root:", out)
            self.assertNotIn(status_of(out), (500,), out[:200])

    def test_slowloris_is_cut_by_the_timeout(self):
        s = socket.create_connection((self.srv.host, self.srv.port), timeout=TIMEOUT_S * 5 + 10)
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
            t0 = time.monotonic()
            closed = False
            try:
                while True:
                    d = s.recv(4096)
                    if not d:
                        closed = True
                        break
            except ConnectionResetError:
                closed = True
            except socket.timeout:
                pass
            self.assertTrue(closed, "a half-sent request was held for %.0f s with --timeout %d"
                            % (time.monotonic() - t0, TIMEOUT_S))
        finally:
            s.close()
        # same for a body that never arrives
        s = socket.create_connection((self.srv.host, self.srv.port), timeout=TIMEOUT_S * 5 + 10)
        try:
            s.sendall(b"POST /slices HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
                      + self.png[:10])
            data = b""
            try:
                while True:
                    d = s.recv(4096)
                    if not d:
                        break
                    data += d
            except ConnectionResetError:
                pass
            except socket.timeout:
                self.fail("a POST whose body never arrives was held past the timeout")
        finally:
            s.close()

    # ------------------------------------------------------------ fuzz
    def test_fuzzed_query_strings(self):
        rng = random.Random(12345)
        routes = ["/reconstruct", "/quality", "/slices", "/slices/" + self.sid, "/slices/%s/original" % self.sid,
                  "/backends", "/healthz"]
        names = ["id", "k", "backend", "bits", "window-center", "window-width", "rank", "name", "x", "", "k[]",
                 "ID", "%00", "id%00"]
        values = [self.sid, "1", "2", "0", "-1", "181", "182", "1.5", "1e9", "abc", "", "auto", "blas", "loops3",
                  "cuda", "8", "16", "12", "nan", "inf", "-inf", "0x10", "%00", "%ff%fe", "%C3%A9", "+",
                  "99999999999999999999999999", "a" * 300, "../../etc/passwd", "%2e%2e%2f", "1;DROP", "\u00e9"]
        statuses = {}
        for i in range(500):
            route = rng.choice(routes)
            parts = []
            for _ in range(rng.randrange(0, 6)):
                n = rng.choice(names)
                v = rng.choice(values) if rng.random() < 0.85 else "".join(
                    chr(rng.randrange(33, 127)) for _ in range(rng.randrange(1, 12)))
                parts.append(n + "=" + urllib.parse.quote(v, safe="%+") if rng.random() < 0.9 else n)
            if route in ("/reconstruct", "/quality") and rng.random() < 0.6:
                parts.insert(0, "id=" + self.sid)
            q = route + ("?" + "&".join(parts) if parts else "")
            method = rng.choice(["GET", "GET", "GET", "HEAD", "POST", "DELETE"]) \
                if route not in ("/slices/" + self.sid,) else "GET"
            try:
                r = self.srv.request(method, q, b"" if method == "POST" else None)
            except Exception as e:
                self.fail("%s %s: %r\n%s" % (method, q, e, self.srv.log_tail()))
            statuses[r.status] = statuses.get(r.status, 0) + 1
            self.assertIn(r.status, KNOWN, "%s %s -> %r" % (method, q, r))
            if method != "HEAD":
                if r.status >= 400:
                    util.assert_error(self, r, r.status)
                elif r.status == 200 and route in ("/reconstruct", "/slices/%s/original" % self.sid):
                    util.png_decode(r.body)
                elif r.status == 200:
                    r.json()
        self.assertGreater(statuses.get(200, 0), 10, statuses)
        self.assertGreater(statuses.get(400, 0), 10, statuses)

    def test_fuzzed_paths(self):
        rng = random.Random(99)
        pieces = ["slices", self.sid, "original", "factors", "..", ".", "", "%2e", "%2f", "%00", "a" * 70,
                  "reconstruct", "quality", "index.html", "openapi.yaml", "%ff", "~", "healthz"]
        for _ in range(150):
            path = "/" + "/".join(rng.choice(pieces) for _ in range(rng.randrange(1, 5)))
            r = self.srv.get(path)
            self.assertIn(r.status, KNOWN, "%s -> %r" % (path, r))
            self.assertNotIn(b"root:", r.body)
            if r.status >= 400:
                util.assert_error(self, r, r.status)

    def test_fuzzed_png_uploads(self):
        rng = random.Random(2024)
        base = util.png_encode(util.phantom(40, 32, 8, seed=600))
        for i in range(120):
            data = bytearray(base)
            mode = i % 4
            if mode == 0:  # flip a few bytes anywhere past the signature
                for _ in range(rng.randrange(1, 5)):
                    data[rng.randrange(8, len(data))] ^= 1 << rng.randrange(8)
            elif mode == 1:  # truncate
                data = data[:rng.randrange(8, len(data))]
            elif mode == 2:  # IHDR dimensions set to something large or zero
                data[16:24] = bytes(rng.choice([0, 0x7F, 0xFF]) for _ in range(8))
            else:  # random chunk bytes inserted
                pos = rng.randrange(33, len(data))
                data[pos:pos] = os.urandom(rng.randrange(1, 64))
            r = self.srv.upload_raw(bytes(data))
            self.assertIn(r.status, (200, 201, 413, 415, 422), "mutation %d -> %r" % (i, r))
            if r.status >= 400:
                util.assert_error(self, r, r.status)


if __name__ == "__main__":
    unittest.main(verbosity=2)
