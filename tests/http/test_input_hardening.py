"""test_input_hardening.py - hostile input over HTTP: PNG decompression bombs, an image LAPACK
cannot factorise, a NUL hidden in the path, content ids (SHA-256) and slices stored under the
old ids.

Every attack is bounded in time: a request that the server does not answer in time fails
the test instead of hanging it."""
import glob
import hashlib
import os
import re
import socket
import struct
import sys
import threading
import time
import unittest
import zlib

import numpy as np

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import util  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
# Written by the server before ids became SHA-256 (legacy-slice.png uploaded with name=legacy).
LEGACY_ID = "7a5f544193b5365ff62fae5cc325009a"
KEY = "k3y-for-nul-tests"
ANSWER_S = 2.0  # a hostile upload must be answered within this (generous: it takes ~50 ms)
MiB = 1 << 20


# ---------------------------------------------------------------- PNG bombs

def chunk(ctype, data):
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def zeros_zlib(total):
    """A zlib stream of `total` zero bytes, built without deflating them all: 1 MiB of zeros
    deflated once and ended with a full flush (byte-aligned, no reference back) is repeated."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    seg = c.compress(bytes(MiB)) + c.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(total, MiB)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = c.compress(bytes(rest)) + c.flush(zlib.Z_FINISH)
    adler = ((total % 65521) << 16) | 1  # Adler-32 of zeros: a stays 1, b counts the bytes
    return b"\x78\xda" + seg * whole + tail + struct.pack(">I", adler)


def bomb_png(side=16, extra=8 << 30, ancillary=b""):
    """A side x side all-black 8-bit gray PNG whose one zlib stream goes on for `extra` more
    zero bytes after the image (8 GiB: an ~8.4 MB file), in 256 KiB IDAT chunks."""
    z = zeros_zlib(side * (side + 1) + extra)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
    out += ancillary
    for i in range(0, len(z), 256 << 10):
        out += chunk(b"IDAT", z[i:i + (256 << 10)])
    return out + chunk(b"IEND", b"")


class BombTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = util.Server(["--max-body-mb", "16", "--workers", "2"]).start()
        cls.bomb = bomb_png()

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        cls.srv.cleanup()
        assert rc == 0, "exit code %r after SIGTERM" % rc

    def upload_timed(self, png, timeout=10.0):
        t0 = time.monotonic()
        r = util.request(self.srv.host, self.srv.port, "POST", "/slices", png,
                         {"Content-Type": "image/png"}, timeout=timeout)
        return r, time.monotonic() - t0

    def assert_refused_fast(self, r, took):
        self.assertIn(r.status, (413, 422), r)
        util.assert_error(self, r, r.status)
        self.assertLess(took, ANSWER_S, "bomb answered after %.1f s" % took)

    def test_idat_bomb_is_refused_fast(self):
        self.assertGreater(len(self.bomb), 8 * 10**6)
        before = self.srv.get("/slices").json()["slices"]
        r, took = self.upload_timed(self.bomb)
        self.assert_refused_fast(r, took)
        self.assertEqual(r.json()["error"]["code"], "invalid_png")
        self.assertEqual(self.srv.get("/slices").json()["slices"], before)

    def test_three_bombs_do_not_hold_the_workers(self):
        out = [None] * 3

        def one(i):
            try:
                out[i] = self.upload_timed(self.bomb)
            except Exception as e:  # noqa: BLE001 - reported below
                out[i] = e

        threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        for res in out:
            self.assertIsInstance(res, tuple, "bomb upload failed: %r" % (res,))
            self.assertIn(res[0].status, (413, 422), res[0])
        # the workers are free again: a real slice is factorised right away
        png = util.png_encode(util.phantom(40, 32, 8, seed=920))
        r, took = self.upload_timed(png)
        self.assertIn(r.status, (200, 201), r)
        self.assertLess(took, ANSWER_S)

    def test_small_trailing_data_is_still_accepted(self):
        # 1 MiB of zeros after the image: ~1 KB of compressed tail, well within the bound
        r, _ = self.upload_timed(bomb_png(side=24, extra=MiB))
        self.assertIn(r.status, (200, 201), r)
        self.assertEqual(r.json()["width"], 24)

    def test_compressed_ancillary_chunks_stay_cheap(self):
        # 200 zTXt chunks of 8 MiB of zeros each and a 64 MiB iCCP profile: libpng stops each at
        # png_set_chunk_malloc_max and keeps at most png_set_chunk_cache_max text chunks
        z = zeros_zlib(8 * MiB)
        anc = b"".join(chunk(b"zTXt", b"k%d\0\0" % i + z) for i in range(200))
        anc = chunk(b"iCCP", b"p\0\0" + zeros_zlib(64 * MiB)) + anc
        r, took = self.upload_timed(bomb_png(side=20, extra=0, ancillary=anc))
        self.assertIn(r.status, (200, 201), r)
        self.assertLess(took, ANSWER_S, "ancillary chunks took %.1f s" % took)


class LapackLimitTest(unittest.TestCase):
    def test_an_image_lapack_cannot_count_is_413(self):
        # 20600 x 20600 (--max-side allows up to 65535): LAPACK's 32-bit workspace count would
        # wrap. The all-black PNG is ~420 KB; the server decodes it (~850 MB for a moment) and
        # must refuse it before the SVD allocates anything.
        side = 20600
        z = zeros_zlib(side * (side + 1))
        png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
        png += chunk(b"IDAT", z) + chunk(b"IEND", b"")
        with util.Server(["--max-side", "65535", "--workers", "1"]) as srv:
            r = util.request(srv.host, srv.port, "POST", "/slices", png, {"Content-Type": "image/png"},
                             timeout=60)
            util.assert_error(self, r, 413, "too_large")
            self.assertIn("LAPACK", r.json()["error"]["message"])
            self.assertTrue(srv.alive())


# ---------------------------------------------------------------- NUL bytes

def raw_status(raw):
    m = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    return int(m.group(1)) if m else None


class NulTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = util.Server(["--api-key", KEY]).start()
        png = util.png_encode(util.phantom(30, 26, 8, seed=930))
        r = cls.srv.upload_raw(png, headers={"Authorization": "Bearer " + KEY})
        assert r.status == 201, r
        cls.sid = r.json()["id"]

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        cls.srv.cleanup()
        assert rc == 0, "exit code %r after SIGTERM" % rc

    def tearDown(self):
        self.assertTrue(self.srv.alive(), "server died\n" + self.srv.log_tail())
        self.assertEqual(self.srv.get("/healthz").status, 200)

    def raw(self, data):
        return util.raw_exchange(self.srv.host, self.srv.port, data, timeout=5.0)

    def test_nul_in_the_path_is_no_route(self):
        for path in ["/slices/%s%%00.svd" % self.sid, "/slices/%s%%00" % self.sid,
                     "/slices/%s%%00/original" % self.sid, "/slices/%s/factors%%00.txt" % self.sid,
                     "/slices%00", "/healthz%00x", "/reconstruct%%00?id=%s&k=2" % self.sid,
                     "/%00index.html"]:
            for method in ("GET", "HEAD", "DELETE"):
                r = self.srv.request(method, path, headers={"Authorization": "Bearer " + KEY})
                self.assertEqual(r.status, 404, "%s %s -> %r" % (method, path, r))
                if method == "GET":
                    util.assert_error(self, r, 404, "not_found")
        # nothing was deleted through a truncated path
        self.assertEqual(self.srv.get("/slices/" + self.sid).status, 200)
        # a NUL in the query is still the parameters' business (400, not 404)
        r = self.srv.get("/reconstruct?id=%s%%00&k=2" % self.sid)
        util.assert_error(self, r, 400)

    def test_nul_path_cut_before_the_headers_end(self):
        # the request line is parsed, then the client goes away before on_request runs
        for tail in (b"", b"Host: x\r\n"):
            s = socket.create_connection((self.srv.host, self.srv.port), timeout=5)
            s.sendall(b"GET /slices/%s%%00.svd HTTP/1.1\r\n" % self.sid.encode() + tail)
            time.sleep(0.1)
            s.close()
        for line in (b"GET\r\n", b"GET \r\n", b"GET  HTTP/1.1\r\n"):  # no URI for the check to see
            self.raw(line + b"Host: x\r\n\r\n")
        raw = self.raw(b"POST /slices%00 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                       b"Connection: close\r\n\r\nhello")
        self.assertEqual(raw_status(raw), 404, raw[:300])


# ---------------------------------------------------------------- content ids

def sha256_id(gray, bit_depth, rank):
    """The documented content id: SHA-256, in hex, of "svdslice-id-2", the height, width, bit
    depth and rank as little-endian u32, then the samples as little-endian u16, row by row."""
    h, w = gray.shape
    data = b"svdslice-id-2" + struct.pack("<4I", h, w, bit_depth, rank) + gray.astype("<u2").tobytes()
    return hashlib.sha256(data).hexdigest()


class ContentIdTest(util.OneDataDir, unittest.TestCase):
    dir_prefix = "svdslice-ids-"

    def svd_files(self):
        return sorted(os.path.basename(p) for p in glob.glob(os.path.join(self.dir, "*.svd")))

    def test_ids_are_sha256_of_the_pixels(self):
        srv = self.start()
        for h, w, bits, rank in [(40, 31, 8, 0), (33, 47, 16, 0), (40, 31, 8, 7)]:
            gray = util.phantom(h, w, bits, seed=940 + h)
            info = srv.upload_ok(util.png_encode(gray), "?rank=%d" % rank if rank else "")
            want = sha256_id(gray.astype(np.int64), bits, rank or min(h, w))
            self.assertEqual(info["id"], want)
            self.assertRegex(info["id"], r"^[0-9a-f]{64}$")
            self.assertEqual(srv.get("/slices/" + want).status, 200)
        self.assertEqual(srv.stop(), 0)

    def put_legacy(self, pixel_change=None):
        data = bytearray(util.read_bytes(os.path.join(FIXTURES, LEGACY_ID + ".svd")))
        if pixel_change is not None:  # the file then holds other pixels than its id says
            i, v = pixel_change
            hsize = struct.unpack_from("<I", data, 12)[0]
            off = len(data) - 2 * (20 * 24) + 2 * i  # orig is the payload's tail, u16 each
            struct.pack_into("<H", data, off, v)
            struct.pack_into("<I", data, 384, zlib.crc32(bytes(data[hsize:])))
            struct.pack_into("<I", data, 388, zlib.crc32(bytes(data[:388])))
        with open(os.path.join(self.dir, LEGACY_ID + ".svd"), "wb") as f:
            f.write(bytes(data))

    def test_slices_stored_under_old_ids_keep_working(self):
        self.put_legacy()
        png = util.read_bytes(os.path.join(FIXTURES, "legacy-slice.png"))
        gray = util.load_gray(os.path.join(FIXTURES, "legacy-slice.png"))
        srv = self.start()
        self.assertEqual([s["id"] for s in srv.get("/slices").json()["slices"]], [LEGACY_ID])
        info = srv.get("/slices/" + LEGACY_ID).json()
        self.assertEqual((info["name"], info["width"], info["height"], info["rank"]), ("legacy", 24, 20, 20))
        r = srv.get("/slices/%s/original" % LEGACY_ID)
        self.assertEqual(r.status, 200)
        np.testing.assert_array_equal(util.png_decode(r.body)[0], gray)
        r = srv.get("/reconstruct?id=%s&k=20&backend=blas" % LEGACY_ID)
        self.assertEqual(r.status, 200)
        self.assertLessEqual(np.abs(util.png_decode(r.body)[0] - gray).max(), 1)
        self.assertEqual(srv.get("/slices/%s/factors" % LEGACY_ID).body,
                         util.read_bytes(os.path.join(FIXTURES, LEGACY_ID + ".svd")))

        # the same content again: the slice it already is (idempotent), nothing written
        r = srv.upload_raw(png)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["id"], LEGACY_ID)
        self.assertEqual(self.svd_files(), [LEGACY_ID + ".svd"])
        # another rank of it is another slice, under its SHA-256 id
        r = srv.upload_raw(png, query="?rank=5")
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["id"], sha256_id(gray, 8, 5))
        self.assertEqual(srv.stop(), 0)
        srv = self.start()
        self.assertEqual(sorted(s["id"] for s in srv.get("/slices").json()["slices"]),
                         sorted([LEGACY_ID, sha256_id(gray, 8, 5)]))
        self.assertEqual(srv.get("/slices/" + LEGACY_ID).status, 200)

    def test_an_old_id_is_reused_only_for_the_same_pixels(self):
        # A file whose old id is that of legacy-slice.png but whose pixels differ: what an old-id
        # collision would look like. The upload must not be answered with that slice.
        self.put_legacy(pixel_change=(7, 3))
        png = util.read_bytes(os.path.join(FIXTURES, "legacy-slice.png"))
        gray = util.load_gray(os.path.join(FIXTURES, "legacy-slice.png"))
        self.assertNotEqual(gray.reshape(-1)[7], 3)
        srv = self.start()
        r = srv.upload_raw(png)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["id"], sha256_id(gray, 8, 20))
        self.assertEqual(len(self.svd_files()), 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
