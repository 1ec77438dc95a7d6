"""test_reconstruct.py - /reconstruct and /quality pixel by pixel against float64 references."""
import os
import re
import sys
import unittest

import numpy as np
from skimage import metrics

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import util  # noqa: E402

REAL = ["BrainProtonDensitySlice.png", "BrainMidSagittalSlice.png", "FatMRISlice.png"]


def server_timing(value, metric):
    m = re.search(r"(?:^|,)\s*%s\s*;[^,]*?dur=([0-9.eE+-]+)" % re.escape(metric), value or "")
    return float(m.group(1)) if m else None


def ks_for(rank):
    return sorted({1, 2, 17 if rank > 17 else rank, max(1, rank // 2), rank})


class ReconstructTest(unittest.TestCase):
    srv = None

    @classmethod
    def setUpClass(cls):
        cls.srv = util.Server().start()
        cls.slices = {}  # label -> (info, factors, original pixels)
        sources = [(name, util.read_bytes(util.test_data(name))) for name in REAL]
        sources += [("phantom8", util.png_encode(util.phantom(96, 80, 8, seed=1))),
                    ("phantom16", util.png_encode(util.phantom(90, 70, 16, seed=2))),
                    ("study16", util.png_encode(util.phantom(256, 170, 16, seed=3)))]
        for label, png in sources:
            info = cls.srv.upload_ok(png)
            r = cls.srv.get("/slices/%s/factors" % info["id"])
            assert r.status == 200, r
            f = util.parse_svd(r.body)
            r = cls.srv.get("/slices/%s/original" % info["id"])
            assert r.status == 200, r
            orig, _ = util.png_decode(r.body)
            f = util.with_factors(f, orig)  # the file keeps the original; factors are computed from it
            cls.slices[label] = (info, f, orig)
        cls.backends = {b["name"]: b for b in cls.srv.get("/backends").json()["backends"]}

    @classmethod
    def tearDownClass(cls):
        if cls.srv:
            cls.srv.stop()
            cls.srv.cleanup()

    def setUp(self):
        self.assertTrue(self.srv.alive(), "server died\n" + self.srv.log_tail())

    def recon(self, sid, k=None, backend=None, extra="", headers=None):
        q = "/reconstruct?id=" + sid
        if k is not None:
            q += "&k=%d" % k
        if backend is not None:
            q += "&backend=" + backend
        return self.srv.get(q + extra, headers)

    def recon_px(self, sid, k=None, backend=None, extra="", headers=None):
        r = self.recon(sid, k, backend, extra, headers)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("Content-Type"), "image/png")
        px, bits = util.png_decode(r.body)
        return px, bits, r

    # ------------------------------------------------------------ pixels
    def test_every_backend_and_auto_matches_float64_reference(self):
        available = [b for b in util.ALL_BACKENDS if self.backends[b]["available"]]
        gpu = [b for b in ("cuda", "cublas") if b in available]  # checked too where a GPU runs
        for label, (info, f, _) in self.slices.items():
            maxv = (1 << f["bit_depth"]) - 1
            for k in ks_for(f["rank"]):
                ref = util.reference_float(f, k)
                want = util.round_clamp(ref, maxv)
                for backend in util.CPU_BACKENDS + gpu + ["auto"]:
                    px, bits, r = self.recon_px(info["id"], k, backend)
                    self.assertEqual(bits, f["bit_depth"], "%s k=%d %s" % (label, k, backend))
                    self.assertEqual(px.shape, (f["m"], f["n"]))
                    err = np.abs(px - want).max()
                    if err > 1:
                        util.save_artifact("recon_%s_k%d_%s.png" % (label, k, backend), r.body)
                    self.assertLessEqual(err, 1, "%s k=%d %s: max error %d" % (label, k, backend, err))
                    ran = r.header("X-Backend")
                    if backend == "auto":
                        self.assertIn(ran, available, "auto ran %r" % ran)
                    else:
                        self.assertEqual(ran, backend)

    def test_k_defaults_to_rank_and_backend_to_auto(self):
        info, f, _ = self.slices["phantom8"]
        px, _, r = self.recon_px(info["id"])
        px2, _, _ = self.recon_px(info["id"], f["rank"], r.header("X-Backend"))
        np.testing.assert_array_equal(px, px2)

    def test_full_rank_of_8bit_phantom_is_the_original(self):
        info, f, orig = self.slices["phantom8"]
        for backend in util.CPU_BACKENDS:
            px, _, _ = self.recon_px(info["id"], f["rank"], backend)
            self.assertLessEqual(np.abs(px - orig).max(), 1, backend)

    def test_bits_conversions(self):
        for label in ("phantom16", "phantom8", "BrainMidSagittalSlice.png"):
            info, f, _ = self.slices[label]
            for k in (1, 9):
                src, sbits, _ = self.recon_px(info["id"], k, "blas")
                self.assertEqual(sbits, f["bit_depth"])
                p8, b8, _ = self.recon_px(info["id"], k, "blas", "&bits=8")
                p16, b16, _ = self.recon_px(info["id"], k, "blas", "&bits=16")
                self.assertEqual((b8, b16), (8, 16))
                if sbits == 16:
                    np.testing.assert_array_equal(p16, src)
                    np.testing.assert_array_equal(p8, np.floor(src / 257 + 0.5).astype(np.int64))
                else:
                    np.testing.assert_array_equal(p8, src)
                    np.testing.assert_array_equal(p16, src * 257)

    def test_window(self):
        cases = {"phantom16": [(30000, 20000), (10, 1), (65535, 500.5)],
                 "phantom8": [(128, 256), (100, 40), (0.5, 3)],
                 "FatMRISlice.png": [(60, 120), (200, 10)]}
        for label, windows in cases.items():
            info, f, _ = self.slices[label]
            src, _, _ = self.recon_px(info["id"], 7, "blocked")
            for c, w in windows:
                px, bits, _ = self.recon_px(info["id"], 7, "blocked", "&window-center=%r&window-width=%r" % (c, w))
                self.assertEqual(bits, 8, "window gives an 8-bit image")
                want = np.clip(np.floor((src - c + w / 2) / w * 255 + 0.5), 0, 255)
                diff = np.abs(px - want)
                self.assertLessEqual(diff.max(), 1, "%s window %r/%r" % (label, c, w))
                self.assertLessEqual((diff > 0).mean(), 0.01, "%s window %r/%r" % (label, c, w))

    # ------------------------------------------------------------ headers and caching
    def test_headers_etag_per_backend_and_304(self):
        info, _, _ = self.slices["BrainProtonDensitySlice.png"]
        etags = {}
        for backend in util.CPU_BACKENDS:
            _, _, r = self.recon_px(info["id"], 5, backend)
            et = r.header("ETag")
            self.assertTrue(et, "no ETag for %s" % backend)
            self.assertTrue(r.header("Cache-Control"), "no Cache-Control")
            self.assertEqual(r.header("X-Backend"), backend)
            st = r.header("Server-Timing")
            for metric in ("kernel", "encode"):
                v = server_timing(st, metric)
                self.assertIsNotNone(v, "Server-Timing %r lacks %s;dur=" % (st, metric))
                self.assertGreaterEqual(v, 0)
            etags[backend] = et
            # a matching If-None-Match: 304 without a body, a stale one: 200
            r304 = self.recon(info["id"], 5, backend, headers={"If-None-Match": et})
            self.assertEqual(r304.status, 304, r304)
            self.assertEqual(r304.body, b"")
            self.assertEqual(r304.header("ETag"), et)
            r200 = self.recon(info["id"], 5, backend, headers={"If-None-Match": '"not-this-one"'})
            self.assertEqual(r200.status, 200)
            r304 = self.recon(info["id"], 5, backend, headers={"If-None-Match": '"x", %s' % et})
            self.assertEqual(r304.status, 304, "If-None-Match with a list")
        self.assertEqual(len(set(etags.values())), len(etags), "ETags must differ per backend: %r" % etags)
        # and per k / bits
        _, _, r6 = self.recon_px(info["id"], 6, "blas")
        _, _, r5b = self.recon_px(info["id"], 5, "blas", "&bits=16")
        self.assertNotIn(r6.header("ETag"), etags.values())
        self.assertNotIn(r5b.header("ETag"), etags.values())
        # auto: its own ETag answers 304 too
        _, _, ra = self.recon_px(info["id"], 5, "auto")
        self.assertEqual(self.recon(info["id"], 5, "auto", headers={"If-None-Match": ra.header("ETag")}).status, 304)

    def test_no_cache_recomputes(self):
        info, f, _ = self.slices["study16"]
        want = util.round_clamp(util.reference_float(f, 40), 65535)

        def hits():
            s = util.parse_prometheus(self.srv.get("/metrics").body.decode())
            names = [n for n, _ in s if re.search(r"response.*cache.*hit|resp.*hit", n)]
            return sum(v for (n, _), v in s.items() if n in names) if names else None
        self.recon_px(info["id"], 40, "loops2")  # fills the cache
        h0 = hits()
        for _ in range(3):
            px, _, r = self.recon_px(info["id"], 40, "loops2", headers={"Cache-Control": "no-cache"})
            self.assertLessEqual(np.abs(px - want).max(), 1)
            self.assertIsNotNone(server_timing(r.header("Server-Timing"), "kernel"))
        h1 = hits()
        if h0 is not None:
            self.assertEqual(h1, h0, "no-cache requests were answered from the response cache")
            for _ in range(3):
                self.recon_px(info["id"], 40, "loops2")
            self.assertGreater(hits(), h1, "plain repeats never hit the response cache")

    # ------------------------------------------------------------ quality
    def check_quality(self, label, k, backend):
        info, f, orig = self.slices[label]
        r = self.srv.get("/quality?id=%s&k=%d&backend=%s" % (info["id"], k, backend))
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("Content-Type", "").startswith("application/json"))
        q = r.json()
        keys = {"id", "k", "backend", "rank", "original_kept", "mse", "psnr", "psnr_data_range", "ssim",
                "hausdorff", "energy", "float32_bytes_at_k"}
        self.assertTrue(keys <= set(q), keys - set(q))
        self.assertEqual((q["id"], q["k"]), (info["id"], k))
        if backend == "auto":
            self.assertIn(q["backend"], util.ALL_BACKENDS)
        else:
            self.assertEqual(q["backend"], backend)
        served, _, _ = self.recon_px(info["id"], k, q["backend"])
        rng = float((1 << f["bit_depth"]) - 1)
        a, b = orig.astype(np.float64), served.astype(np.float64)
        mse = metrics.mean_squared_error(a, b)
        self.assertTrue(np.isclose(q["mse"], mse, rtol=1e-6, atol=1e-12), "%s k=%d mse %r vs %r"
                        % (label, k, q["mse"], mse))
        if mse == 0:
            self.assertIsNone(q["psnr"], "psnr must be null when mse is 0")
        else:
            psnr = metrics.peak_signal_noise_ratio(a, b, data_range=rng)
            self.assertTrue(np.isclose(q["psnr"], psnr, rtol=1e-6), "psnr %r vs %r" % (q["psnr"], psnr))
            dr = float(a.max() - a.min())
            if dr > 0:
                psnr_dr = metrics.peak_signal_noise_ratio(a, b, data_range=dr)
                self.assertTrue(np.isclose(q["psnr_data_range"], psnr_dr, rtol=1e-6),
                                "psnr_data_range %r vs %r" % (q["psnr_data_range"], psnr_dr))
        if min(a.shape) < 7:
            self.assertIsNone(q["ssim"])
        else:
            ssim = metrics.structural_similarity(a, b, data_range=rng)
            self.assertTrue(np.isclose(q["ssim"], ssim, rtol=1e-6, atol=1e-9), "%s k=%d ssim %r vs %r"
                            % (label, k, q["ssim"], ssim))
        hd = metrics.hausdorff_distance(a, b)
        if np.isinf(hd):
            self.assertIsNone(q["hausdorff"])
        else:
            self.assertTrue(np.isclose(q["hausdorff"], hd, rtol=1e-6), "hausdorff %r vs %r" % (q["hausdorff"], hd))
        s2 = np.asarray(info["singular_values"], np.float64) ** 2
        self.assertTrue(np.isclose(q["energy"], s2[:k].sum() / s2.sum(), rtol=1e-5), "energy")
        w, h = info["width"], info["height"]
        self.assertEqual(q["float32_bytes_at_k"], 4 * k * (w + h + 1))
        self.assertNotIn("compression_ratio", q)
        self.assertEqual((q["rank"], q["original_kept"]), (info["rank"], True))
        return q

    def test_quality_matches_skimage(self):
        for label in ("BrainProtonDensitySlice.png", "FatMRISlice.png", "phantom16", "study16"):
            rank = self.slices[label][1]["rank"]
            for k, backend in ((1, "blas"), (10, "loops1"), (rank // 2, "auto"), (rank, "threads")):
                self.check_quality(label, k, backend)

    def test_quality_defaults_and_energy_monotone(self):
        info, f, _ = self.slices["phantom8"]
        q = self.srv.get("/quality?id=" + info["id"]).json()
        self.assertEqual(q["k"], f["rank"])
        self.assertTrue(np.isclose(q["energy"], 1.0, rtol=1e-6))
        energies = [self.check_quality("phantom8", k, "blas")["energy"] for k in (1, 5, 20, f["rank"])]
        self.assertEqual(energies, sorted(energies))

    def test_quality_nulls(self):
        # full rank of a small 8-bit image rebuilds it exactly: mse 0, psnr null
        q = self.check_quality("phantom8", self.slices["phantom8"][1]["rank"], "blas")
        self.assertEqual(q["mse"], 0)
        self.assertIsNone(q["psnr"])
        # a side below 7: ssim null
        thin = util.phantom(5, 40, 8, seed=7)
        thin[thin == 0] = 3
        info = self.srv.upload_ok(util.png_encode(thin))
        q = self.srv.get("/quality?id=%s&k=2" % info["id"]).json()
        self.assertIsNone(q["ssim"])
        self.assertIsNotNone(q["mse"])
        # rank 1 of a sparse 0/1 image rounds to all zeros: one empty image, hausdorff null
        for seed in range(50):
            sparse = (np.random.default_rng(seed).random((100, 100)) < 0.08).astype(np.uint8)
            u, s, vt = np.linalg.svd(sparse.astype(np.float64))
            if sparse.any() and np.abs(s[0] * np.outer(u[:, 0], vt[0])).max() < 0.42:
                break
        else:
            self.fail("no sparse test image found")
        info = self.srv.upload_ok(util.png_encode(sparse))
        r = self.srv.get("/reconstruct?id=%s&k=1&backend=blas" % info["id"])
        self.assertEqual(util.png_decode(r.body)[0].max(), 0)
        q = self.srv.get("/quality?id=%s&k=1&backend=blas" % info["id"]).json()
        self.assertIsNone(q["hausdorff"])
        self.assertTrue(np.isclose(q["mse"], sparse.mean(), rtol=1e-9))


if __name__ == "__main__":
    unittest.main(verbosity=2)
