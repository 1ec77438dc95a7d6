"""test_routes.py - every route, status and error code of API.md against a started server."""
import datetime
import os
import re
import socket
import sys
import time
import unittest

import numpy as np

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import util  # noqa: E402

MAX_BODY_MB = 1
MAX_SIDE = 300
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
RFC3339_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]00:00)$")
INFO_KEYS = {"id", "name", "width", "height", "bit_depth", "rank", "original_kept", "stored_bytes",
             "upload_bytes", "stored_vs_upload", "original_bytes", "file_bytes", "singular_values", "created"}


def parse_created(s):
    s = s.replace("Z", "+00:00")
    if "." in s:  # fromisoformat in 3.11 wants 3 or 6 fraction digits: drop them
        head, tail = s.split(".", 1)
        s = head + tail[tail.index("+") if "+" in tail else tail.index("-"):]
    return datetime.datetime.fromisoformat(s)


class RoutesTest(unittest.TestCase):
    srv = None

    @classmethod
    def setUpClass(cls):
        cls.srv = util.Server(["--max-body-mb", str(MAX_BODY_MB), "--max-side", str(MAX_SIDE)]).start()
        cls.mid = util.read_bytes(util.test_data("BrainMidSagittalSlice.png"))      # 8-bit gray
        cls.pd = util.read_bytes(util.test_data("BrainProtonDensitySlice.png"))     # palette
        cls.t1 = util.read_bytes(util.test_data("BrainT1Slice.png"))                # RGB

    @classmethod
    def tearDownClass(cls):
        if cls.srv:
            rc = cls.srv.stop()
            cls.srv.cleanup()
            assert rc == 0, "server exit code %r after SIGTERM" % rc

    def setUp(self):
        self.assertTrue(self.srv.alive(), "server died\n" + self.srv.log_tail())

    # ------------------------------------------------------------ helpers
    def check_info(self, info, w, h, bits, rank=None, with_sv=True):
        keys = set(info)
        want = INFO_KEYS if with_sv else INFO_KEYS - {"singular_values"}
        self.assertTrue(want <= keys, "missing %s" % (want - keys))
        if not with_sv:
            self.assertNotIn("singular_values", info)
        self.assertRegex(info["id"], ID_RE)
        self.assertEqual((info["width"], info["height"], info["bit_depth"]), (w, h, bits))
        nsv = min(w, h)
        self.assertEqual(info["rank"], rank if rank else nsv)
        self.assertEqual(info["original_bytes"], w * h * bits // 8)
        self.assertNotIn("compression_ratio", info)  # dropped: it read as a gain where the store grew
        self.assertEqual(info["stored_bytes"], info["file_bytes"])
        if info["upload_bytes"] is None:
            self.assertIsNone(info["stored_vs_upload"])
        else:
            self.assertAlmostEqual(info["stored_vs_upload"], info["stored_bytes"] / info["upload_bytes"],
                                   delta=1e-9 * info["stored_vs_upload"])
        if with_sv:
            sv = info["singular_values"]
            self.assertEqual(len(sv), nsv)
            self.assertTrue(all(isinstance(x, (int, float)) for x in sv))
            self.assertTrue(all(sv[i] >= sv[i + 1] for i in range(nsv - 1)), "not non-increasing")
            self.assertGreaterEqual(sv[-1], 0)
            self.assertGreater(sv[0], 0)
        self.assertRegex(info["created"], RFC3339_RE)
        created = parse_created(info["created"])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.assertLess(abs((now - created).total_seconds()), 600, "created %s far from now" % info["created"])

    def upload(self, png, query=""):
        r = self.srv.upload_raw(png, query)
        self.assertIn(r.status, (200, 201), r)
        return r.json()

    def original(self, sid):
        r = self.srv.get("/slices/%s/original" % sid)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("Content-Type"), "image/png")
        return util.png_decode(r.body)

    # ------------------------------------------------------------ uploads
    def test_raw_upload_201_location_then_200_same_info(self):
        png = util.png_encode(util.phantom(40, 30, 8, seed=101))
        r = self.srv.upload_raw(png)
        self.assertEqual(r.status, 201, r)
        info = r.json()
        self.check_info(info, 30, 40, 8)
        self.assertEqual(r.header("Location"), "/slices/" + info["id"])
        self.assertEqual(info["name"], info["id"], "name defaults to the id")
        r2 = self.srv.upload_raw(png)
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(r2.json(), info, "repeat upload must return the existing info")

    def test_raw_upload_recognised_by_signature_whatever_content_type(self):
        for i, ctype in enumerate(["application/octet-stream", "text/plain", "image/jpeg", None]):
            png = util.png_encode(util.phantom(24, 20, 8, seed=110 + i))
            r = self.srv.upload_raw(png, content_type=ctype)
            self.assertEqual(r.status, 201, "Content-Type %r: %r" % (ctype, r))
            self.check_info(r.json(), 20, 24, 8)

    def test_multipart_upload_uses_filename_as_name(self):
        png = util.png_encode(util.phantom(33, 27, 8, seed=120))
        r = self.srv.upload_multipart(png, filename="brain_slice_07.png")
        self.assertEqual(r.status, 201, r)
        info = r.json()
        self.check_info(info, 27, 33, 8)
        self.assertEqual(info["name"], "brain_slice_07.png")
        self.assertEqual(r.header("Location"), "/slices/" + info["id"])
        # the same pixels again, multipart: 200 and the existing info
        r2 = self.srv.upload_multipart(png, filename="other.png")
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(r2.json()["id"], info["id"])

    def test_multipart_with_other_fields_and_name_query_wins(self):
        png = util.png_encode(util.phantom(31, 29, 8, seed=121))
        body, ctype = util.multipart_encode([("comment", "hello"), ("k", "3")],
                                            [("file", "ignored.png", png, "image/png")])
        r = self.srv.request("POST", "/slices?name=from-query", body, {"Content-Type": ctype})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["name"], "from-query")

    def test_multipart_without_file_field_is_rejected(self):
        png = util.png_encode(util.phantom(31, 29, 8, seed=122))
        r = self.srv.upload_multipart(png, field="notfile")
        self.assertGreaterEqual(r.status, 400, r)
        self.assertLess(r.status, 500, r)
        util.assert_error(self, r, r.status)

    def test_name_query_parameter(self):
        png = util.png_encode(util.phantom(26, 22, 8, seed=130))
        info = self.upload(png, "?name=T1%20coronal%20%C3%A9")
        self.assertEqual(info["name"], "T1 coronal \u00e9")

    def test_same_pixels_in_another_encoding_give_the_same_id(self):
        # the id derives from the decoded pixels: palette PNG and its gray re-encoding agree
        a = self.upload(self.pd)
        gray = util.load_gray(util.test_data("BrainProtonDensitySlice.png"))
        b = self.srv.upload_raw(util.png_encode(gray.astype(np.uint8)))
        self.assertEqual(b.status, 200, b)
        self.assertEqual(b.json()["id"], a["id"])

    def test_rank_query_keeps_fewer_components(self):
        png = util.png_encode(util.phantom(50, 40, 8, seed=140))
        full = self.upload(png)
        r = self.srv.upload_raw(png, "?rank=12")
        self.assertEqual(r.status, 201, "a different rank is a different slice: %r" % r)
        info = r.json()
        self.check_info(info, 40, 50, 8, rank=12)
        self.assertNotEqual(info["id"], full["id"])
        self.assertEqual(len(info["singular_values"]), 40, "all min(w,h) singular values")
        np.testing.assert_allclose(info["singular_values"], full["singular_values"], rtol=1e-4, atol=1e-3)
        # k is limited by the stored rank, not by min(w, h)
        util.assert_error(self, self.srv.get("/reconstruct?id=%s&k=13" % info["id"]), 400, "invalid_k")
        self.assertEqual(self.srv.get("/reconstruct?id=%s&k=12" % info["id"]).status, 200)
        r = self.srv.get("/reconstruct?id=%s" % info["id"])  # k defaults to the rank
        self.assertEqual(r.status, 200, r)

    def test_info_route_and_real_slice_fields(self):
        for png, (w, h) in ((self.mid, (217, 180)), (self.pd, (181, 217)), (self.t1, (181, 217))):
            info = self.upload(png)
            r = self.srv.get("/slices/" + info["id"])
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.header("Content-Type", "").startswith("application/json"))
            got = r.json()
            self.check_info(got, w, h, 8)
            self.assertEqual(got, info)

    def test_list_newest_first_without_singular_values(self):
        ids = []
        for i in range(3):
            ids.append(self.upload(util.png_encode(util.phantom(20, 18, 8, seed=150 + i)))["id"])
            time.sleep(1.1)  # created has (at least) second resolution
        r = self.srv.get("/slices")
        self.assertEqual(r.status, 200, r)
        slices = r.json()["slices"]
        listed = [s["id"] for s in slices]
        for s in slices:
            self.check_info(s, s["width"], s["height"], s["bit_depth"], rank=s["rank"], with_sv=False)
        pos = [listed.index(i) for i in ids]
        self.assertEqual(pos, sorted(pos, reverse=True), "newest first: %r in %r" % (ids, listed))
        created = [parse_created(s["created"]) for s in slices]
        self.assertEqual(created, sorted(created, reverse=True))
        self.assertEqual(len(set(listed)), len(listed), "duplicates in the list")

    # ------------------------------------------------------------ original pixels
    def test_original_8bit_gray_round_trips_exactly(self):
        info = self.upload(self.mid)
        px, bits = self.original(info["id"])
        self.assertEqual(bits, 8)
        np.testing.assert_array_equal(px, util.load_gray(util.test_data("BrainMidSagittalSlice.png")))

    def test_original_16bit_round_trips_exactly(self):
        img = util.phantom(70, 55, 16, seed=160)
        info = self.upload(util.png_encode(img))
        self.check_info(info, 55, 70, 16)
        px, bits = self.original(info["id"])
        self.assertEqual(bits, 16)
        np.testing.assert_array_equal(px, img)

    def test_original_of_palette_and_rgb_is_their_gray(self):
        for name in ("BrainProtonDensitySlice.png", "BrainT1Slice.png", "FatMRISlice.png"):
            info = self.upload(util.read_bytes(util.test_data(name)))
            px, bits = self.original(info["id"])
            self.assertEqual(bits, 8)
            np.testing.assert_array_equal(px, util.load_gray(util.test_data(name)), name)

    def test_original_of_colour_rgb_is_libpng_luma(self):
        rng = np.random.default_rng(170)
        rgb = rng.integers(0, 256, (30, 25, 3), dtype=np.uint8)
        info = self.upload(util.png_encode(rgb, mode="RGB"))
        px, bits = self.original(info["id"])
        self.assertEqual(bits, 8)
        diff = np.abs(px - util.luma709(rgb))
        self.assertLessEqual(diff.max(), 1, "RGB -> gray off libpng's rgb_to_gray by %d" % diff.max())

    def test_original_of_gray_alpha_is_composited_on_black(self):
        rng = np.random.default_rng(171)
        la = np.stack([rng.integers(0, 256, (21, 19)), rng.integers(0, 256, (21, 19))], -1).astype(np.uint8)
        info = self.upload(util.png_encode(la, mode="LA"))
        px, _ = self.original(info["id"])
        want = np.round(la[..., 0].astype(float) * la[..., 1] / 255)
        self.assertLessEqual(np.abs(px - want).max(), 2)

    def test_original_of_1bit_gray_is_expanded(self):
        name = "BrainProtonDensitySliceBorder20Mask.png"
        info = self.upload(util.read_bytes(util.test_data(name)))
        px, bits = self.original(info["id"])
        self.assertEqual(bits, 8)
        np.testing.assert_array_equal(px, util.load_gray(util.test_data(name)))
        self.assertEqual(set(np.unique(px)) - {0, 255}, set())

    # ------------------------------------------------------------ factors
    def test_factors_parse_and_reconstruct(self):
        info = self.upload(self.mid)
        r = self.srv.get("/slices/%s/factors" % info["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("Content-Type"), "application/octet-stream")
        f = util.parse_svd(r.body)
        self.assertEqual((f["m"], f["n"], f["bit_depth"], f["rank"], f["nsv"]), (180, 217, 8, 180, 180))
        self.assertEqual(f["id"], info["id"])
        np.testing.assert_array_equal(f["S"], np.asarray(info["singular_values"], np.float32))
        orig, _ = self.original(info["id"])
        # the defaults keep the original (losslessly compressed) and no factors: far below the
        # float32 factors' 4*rank*(w+h+1) bytes
        self.assertTrue(f["orig_kept"])
        self.assertEqual(f["factor_bytes"], 0)
        self.assertEqual(len(r.body), info["stored_bytes"])
        self.assertLess(len(r.body), 4 * 180 * (180 + 217 + 1) / 5)
        # full rank serves the original exactly ...
        px, _ = util.png_decode(self.srv.get("/reconstruct?id=" + info["id"]).body)
        np.testing.assert_array_equal(px, orig)
        # ... and rank k agrees with a float64 SVD's rank k within +-1 (API.md: accurate factors)
        U, S, Vt = np.linalg.svd(orig.astype(np.float64), full_matrices=False)
        np.testing.assert_allclose(f["S"], S, rtol=1e-5, atol=1e-3)
        for k in (1, 10, 60):
            ref64 = util.round_clamp((U[:, :k] * S[:k]) @ Vt[:k], 255)
            px, _ = util.png_decode(self.srv.get("/reconstruct?id=%s&k=%d" % (info["id"], k)).body)
            self.assertLessEqual(np.abs(px.astype(np.int64) - ref64).max(), 1, "k=%d" % k)

    # ------------------------------------------------------------ delete
    def test_delete_204_then_404(self):
        info = self.upload(util.png_encode(util.phantom(22, 21, 8, seed=180)))
        sid = info["id"]
        r = self.srv.request("DELETE", "/slices/" + sid)
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.body, b"")
        for path in ("/slices/" + sid, "/slices/%s/original" % sid, "/slices/%s/factors" % sid,
                     "/reconstruct?id=" + sid, "/quality?id=" + sid):
            util.assert_error(self, self.srv.get(path), 404, "not_found")
        util.assert_error(self, self.srv.request("DELETE", "/slices/" + sid), 404, "not_found")
        self.assertNotIn(sid, [s["id"] for s in self.srv.get("/slices").json()["slices"]])
        # and it can be uploaded again
        self.assertEqual(self.srv.upload_raw(util.png_encode(util.phantom(22, 21, 8, seed=180))).status, 201)

    # ------------------------------------------------------------ HEAD, 405, 404
    def test_head_matches_get_without_body(self):
        sid = self.upload(self.mid)["id"]
        paths = ["/slices", "/slices/" + sid, "/slices/%s/original" % sid, "/slices/%s/factors" % sid,
                 "/reconstruct?id=%s&k=5&backend=blas" % sid, "/quality?id=%s&k=5&backend=blas" % sid,
                 "/backends", "/healthz", "/metrics", "/", "/openapi.yaml", "/nope"]
        for p in paths:
            g = self.srv.get(p)
            h = self.srv.request("HEAD", p)
            self.assertEqual(h.status, g.status, p)
            self.assertEqual(h.body, b"", "HEAD %s has a body" % p)
            self.assertEqual(h.header("Content-Type"), g.header("Content-Type"), p)
            if p != "/metrics":  # its counters move between the two requests
                cl = h.header("Content-Length")
                if cl is not None:
                    self.assertEqual(int(cl), len(g.body), "HEAD %s Content-Length" % p)
            for name in ("ETag", "X-Backend", "Cache-Control"):
                if p.startswith("/reconstruct"):
                    self.assertEqual(h.header(name), g.header(name), "HEAD %s %s" % (p, name))

    def test_405_with_allow(self):
        sid = self.upload(self.mid)["id"]
        cases = [("PUT", "/slices", {"GET", "POST"}), ("DELETE", "/slices", {"GET", "POST"}),
                 ("POST", "/slices/" + sid, {"GET", "DELETE"}), ("PUT", "/slices/" + sid, {"GET", "DELETE"}),
                 ("POST", "/slices/%s/original" % sid, {"GET"}), ("DELETE", "/slices/%s/factors" % sid, {"GET"}),
                 ("POST", "/reconstruct?id=" + sid, {"GET"}), ("DELETE", "/quality", {"GET"}),
                 ("POST", "/backends", {"GET"}), ("PUT", "/healthz", {"GET"}), ("PATCH", "/metrics", {"GET"}),
                 ("POST", "/", {"GET"}), ("DELETE", "/openapi.yaml", {"GET"})]
        for method, path, allowed in cases:
            r = self.srv.request(method, path, b"" if method in ("PUT", "POST", "PATCH") else None)
            util.assert_error(self, r, 405, "method_not_allowed")
            allow = {a.strip().upper() for a in (r.header("Allow") or "").split(",") if a.strip()}
            self.assertTrue(allowed <= allow, "%s %s: Allow %r lacks %r" % (method, path, allow, allowed))
            self.assertNotIn(method, allow, "%s %s" % (method, path))

    def test_404_unknown_paths_and_ids(self):
        for p in ("/nope", "/slices/abc/nope", "/slices/abc/original/x", "/reconstruct/x", "/index.php",
                  "/slices/" + "a" * 64):
            util.assert_error(self, self.srv.get(p), 404, "not_found")
        for p in ("/slices/doesnotexist", "/slices/doesnotexist/original", "/slices/doesnotexist/factors",
                  "/reconstruct?id=doesnotexist", "/quality?id=doesnotexist&k=1"):
            util.assert_error(self, self.srv.get(p), 404, "not_found")
        util.assert_error(self, self.srv.request("DELETE", "/slices/doesnotexist"), 404, "not_found")

    # ------------------------------------------------------------ 400s
    def test_invalid_id(self):
        for bad in ("bad.id", "a%20b", "x" * 65, "%2e%2e", "caf%C3%A9", "a~b"):
            for p in ("/slices/" + bad, "/slices/%s/original" % bad, "/slices/%s/factors" % bad,
                      "/reconstruct?id=" + bad, "/quality?id=" + bad):
                util.assert_error(self, self.srv.get(p), 400, "invalid_id")
            util.assert_error(self, self.srv.request("DELETE", "/slices/" + bad), 400, "invalid_id")
        for bad in ("a%2Fb", "..%2F..%2Fetc%2Fpasswd", "%2e%2e"):  # separators can only reach queries
            for p in ("/reconstruct?id=" + bad, "/quality?id=" + bad):
                util.assert_error(self, self.srv.get(p), 400, "invalid_id")
        for p in ("/reconstruct", "/quality", "/reconstruct?id=", "/reconstruct?k=3"):
            r = self.srv.get(p)
            err = util.assert_error(self, r, 400)
            self.assertIn(err["code"], ("invalid_id", "invalid_parameter"), p)

    def test_invalid_k(self):
        info = self.upload(self.mid)
        sid, rank = info["id"], info["rank"]
        for k in ("0", str(rank + 1), "abc", "1.5", "-1", "", "99999999999999999999", "0x10", "5abc"):
            for route in ("reconstruct", "quality"):
                r = self.srv.get("/%s?id=%s&k=%s" % (route, sid, k))
                util.assert_error(self, r, 400, "invalid_k")
        self.assertEqual(self.srv.get("/reconstruct?id=%s&k=%d" % (sid, rank)).status, 200)
        self.assertEqual(self.srv.get("/reconstruct?id=%s&k=1" % sid).status, 200)

    def test_invalid_backend_lists_names(self):
        sid = self.upload(self.mid)["id"]
        for route in ("reconstruct", "quality"):
            for b in ("nope", "BLAS", "auto2", ""):
                r = self.srv.get("/%s?id=%s&k=3&backend=%s" % (route, sid, b))
                err = util.assert_error(self, r, 400, "invalid_backend")
                for name in util.ALL_BACKENDS:
                    self.assertIn(name, err["message"])

    def test_invalid_parameter(self):
        sid = self.upload(self.mid)["id"]
        for q in ("bits=12", "bits=abc", "bits=0", "bits=", "window-center=100", "window-width=50",
                  "window-center=100&window-width=0", "window-center=100&window-width=-5",
                  "window-center=abc&window-width=10", "window-center=10&window-width=nan"):
            r = self.srv.get("/reconstruct?id=%s&k=3&%s" % (sid, q))
            util.assert_error(self, r, 400, "invalid_parameter")
        png = util.png_encode(util.phantom(30, 20, 8, seed=190))
        for q in ("?rank=0", "?rank=21", "?rank=100000", "?rank=abc", "?rank=-3", "?rank=2.5",
                  "?name=" + "n" * 300, "?name=%FF%FE", "?name=a%00b"):
            util.assert_error(self, self.srv.upload_raw(png, q), 400, "invalid_parameter")
        self.assertEqual(self.srv.upload_raw(png, "?rank=20").status, 201)  # = min(w, h) is fine

    # ------------------------------------------------------------ 413, 415, 422
    def test_413_body_over_max_body(self):
        size = MAX_BODY_MB * 1024 * 1024 + 100 * 1024
        body = b"\x89PNG\r\n\x1a\n" + os.urandom(size - 8)
        status, raw = self.post_big(body)
        self.assertEqual(status, 413, raw[:300])
        self.assertIn(b'"too_large"', raw)
        self.assertTrue(self.srv.get("/healthz").status == 200)

    def post_big(self, body):
        """POSTs a body the server should refuse from its Content-Length: headers first,
        then the body only if no answer came, so an early 413 and close is read reliably."""
        s = socket.create_connection((self.srv.host, self.srv.port), timeout=10)
        try:
            s.sendall(("POST /slices HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                       "Content-Length: %d\r\n\r\n" % len(body)).encode())
            s.settimeout(3)
            out = b""
            try:
                out = s.recv(65536)
            except socket.timeout:
                s.settimeout(10)
                try:
                    s.sendall(body)
                except OSError:
                    pass
            s.settimeout(10)
            while True:
                try:
                    chunk = s.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
        finally:
            s.close()
        m = re.match(rb"HTTP/1\.[01] (\d{3})", out)
        self.assertIsNotNone(m, "no HTTP response: %r" % out[:200])
        return int(m.group(1)), out

    def test_413_image_over_max_side(self):
        for h, w in ((MAX_SIDE + 1, 8), (8, MAX_SIDE + 1)):
            png = util.png_encode(np.zeros((h, w), np.uint8) + 7)
            util.assert_error(self, self.srv.upload_raw(png), 413, "too_large")
        self.assertEqual(self.srv.upload_raw(util.png_encode(np.eye(MAX_SIDE, 9, dtype=np.uint8) * 200)).status,
                         201)

    def test_415_not_a_png(self):
        for body, ctype in ((b"hello, this is text", "text/plain"), (b'{"a": 1}', "application/json"),
                            (b"GIF89a....", "image/png"), (b"", "image/png"), (b"\x89PNG", "image/png")):
            util.assert_error(self, self.srv.upload_raw(body, content_type=ctype), 415,
                              "unsupported_media_type")
        body, ctype = util.multipart_encode([], [("file", "x.txt", b"plain text here", "text/plain")])
        util.assert_error(self, self.srv.request("POST", "/slices", body, {"Content-Type": ctype}), 415,
                          "unsupported_media_type")

    def test_422_png_that_does_not_decode(self):
        sig = b"\x89PNG\r\n\x1a\n"
        for body in (sig + os.urandom(500), sig + b"\0" * 100, self.mid[:200], self.mid[:len(self.mid) // 2],
                     self.mid[:33] + b"\0" * 64):
            util.assert_error(self, self.srv.upload_raw(body), 422, "invalid_png")
        body, ctype = util.multipart_encode([], [("file", "x.png", sig + os.urandom(300), "image/png")])
        util.assert_error(self, self.srv.request("POST", "/slices", body, {"Content-Type": ctype}), 422,
                          "invalid_png")

    # ------------------------------------------------------------ backends
    def test_backends_lists_the_eight(self):
        r = self.srv.get("/backends")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("Content-Type", "").startswith("application/json"))
        bs = r.json()["backends"]
        self.assertEqual([b["name"] for b in bs], util.ALL_BACKENDS)
        for b in bs:
            self.assertTrue({"name", "device", "available", "reason", "description"} <= set(b), b)
            self.assertEqual(b["device"], "gpu" if b["name"] in ("cuda", "cublas") else "cpu", b)
            self.assertIsInstance(b["available"], bool)
            self.assertIsInstance(b["description"], str)
            self.assertTrue(b["description"])
            if b["available"]:
                self.assertIsNone(b["reason"], b)
            else:
                self.assertIsInstance(b["reason"], str, b)
                self.assertTrue(b["reason"], b)
            if b["device"] == "cpu":
                self.assertTrue(b["available"], b)

    def test_unavailable_backend_503_with_reason(self):
        sid = self.upload(self.mid)["id"]
        bs = {b["name"]: b for b in self.srv.get("/backends").json()["backends"]}
        unavailable = [n for n in ("cuda", "cublas") if not bs[n]["available"]]
        if not unavailable:
            self.skipTest("a GPU is available here: cuda and cublas run")
        for name in unavailable:
            for route in ("reconstruct", "quality"):
                r = self.srv.get("/%s?id=%s&k=3&backend=%s" % (route, sid, name))
                err = util.assert_error(self, r, 503, "backend_unavailable")
                self.assertIn(bs[name]["reason"], err["message"])

    # ------------------------------------------------------------ service routes
    def test_healthz(self):
        r = self.srv.get("/healthz")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {"status": "ok"})

    def test_metrics_is_prometheus_text_and_counters_increase(self):
        def scrape():
            r = self.srv.get("/metrics")
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.header("Content-Type", "").startswith("text/plain"), r.header("Content-Type"))
            text = r.body.decode("utf-8")
            counters = {ln.split()[2] for ln in text.splitlines()
                        if ln.startswith("# TYPE") and ln.split()[3] == "counter"}
            samples = util.parse_prometheus(text)
            return samples, counters
        s1, counters = scrape()
        self.assertTrue(counters, "no counter declared")
        self.assertTrue(s1, "no samples")
        sid = self.upload(self.mid)["id"]
        for k in (1, 2, 3):
            self.srv.get("/reconstruct?id=%s&k=%d" % (sid, k))
        self.srv.get("/nope")
        s2, _ = scrape()

        def total(s):
            return sum(v for (n, _), v in s.items()
                       if n in counters or n.rsplit("_total", 1)[0] in counters)
        self.assertGreater(total(s2), total(s1), "counters did not increase")
        if "svdslice_requests_total" in {n for n, _ in s2}:
            self.assertGreaterEqual(util.metric_sum(s2, "svdslice_requests_total"),
                                    util.metric_sum(s1, "svdslice_requests_total") + 5)
        for (n, _), v in s2.items():
            if n in counters:
                self.assertGreaterEqual(v, 0, n)

    def test_openapi_yaml_covers_every_route(self):
        r = self.srv.get("/openapi.yaml")
        self.assertEqual(r.status, 200, r)
        text = r.body.decode("utf-8")
        try:
            import yaml
        except ImportError:  # python3-yaml missing: a structural check of the top level only
            self.assertRegex(text, r"(?m)^openapi: ['\"]?3\.")
            self.assertRegex(text, r"(?m)^paths:")
            paths = {m.group(1): {} for m in re.finditer(r"(?m)^  (/[^:]*):", text)}
            spec = {"openapi": "3", "paths": paths}
        else:
            spec = yaml.safe_load(text)
        self.assertTrue(str(spec["openapi"]).startswith("3."), spec.get("openapi"))
        norm = {re.sub(r"\{[^}]+\}", "{}", p): ops for p, ops in spec["paths"].items()}
        want = {"/slices": {"get", "post"}, "/slices/{}": {"get", "delete"}, "/slices/{}/original": {"get"},
                "/slices/{}/factors": {"get"}, "/reconstruct": {"get"}, "/quality": {"get"},
                "/backends": {"get"}, "/healthz": {"get"}, "/metrics": {"get"}, "/": {"get"},
                "/openapi.yaml": {"get"}}
        for p, methods in want.items():
            self.assertIn(p, norm, "openapi.yaml lacks %s" % p)
            if "yaml" in sys.modules:
                self.assertTrue(methods <= {m.lower() for m in norm[p]}, "%s: %r" % (p, list(norm[p])))

    def test_root_is_html(self):
        r = self.srv.get("/")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("Content-Type", "").startswith("text/html"), r.header("Content-Type"))
        self.assertIn(b"<html", r.body.lower())


if __name__ == "__main__":
    unittest.main(verbosity=2)
