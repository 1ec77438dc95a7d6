"""test_cli.py - the svdslice command line against API.md: every command on real MRI slices,
pixels and metrics checked against numpy / scikit-image computed here, exit codes, bench and its SVG."""
import io
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import numpy as np
from PIL import Image
from skimage import metrics

BIN = os.environ.get("SVDSLICE_BIN", "")
DATA = os.environ.get("SVDSLICE_TEST_DATA", "")
BACKENDS = ["loops3", "loops2", "loops1", "blocked", "threads", "blas", "cuda", "cublas"]
SLICES = ["BrainProtonDensitySlice.png", "BrainMidSagittalSlice.png"]


def run(*args, timeout=120):
    p = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def source_pixels(src):
    """The pixels of a source: an array, or a PNG path read as libpng's gray (the palette and RGB
    slices here are gray-valued)."""
    if not isinstance(src, str):
        return np.asarray(src).astype(np.int64)
    with Image.open(src) as im:
        if im.mode in ("L", "I;16", "I;16B", "I"):
            return np.array(im).astype(np.int64)
        return np.array(im.convert("RGB"))[..., 0].astype(np.int64)


def read_svd(path, src=None):
    """Parses a .svd file of engine/svd.h. Version 1: header, then U, S, Vt, orig. Version 2 (what
    compress writes) with the original kept: header, S, the original compressed (JPEG-LS or
    filtered deflate), no factors: the factors are those of the original (the CLI computes them
    on load), so they come here from a float64 SVD of src, which must be the same pixels."""
    with open(path, "rb") as fh:
        buf = fh.read()
    assert buf[:8] == b"SVDSLICE", "bad magic"
    (version,) = struct.unpack_from("<I", buf, 8)
    hdr_size, m, n, bits, rank, nsv, flags = struct.unpack_from("<7I", buf, 12)
    (created,) = struct.unpack_from("<q", buf, 40)
    name = buf[48:48 + 256].split(b"\0")[0].decode()
    ident = buf[304:304 + 65].split(b"\0")[0].decode()
    off = hdr_size
    if version == 2:
        assert flags == 1, "compress keeps the original"
        S = np.frombuffer(buf, "<f4", nsv, off).astype(np.float64)
        orig = source_pixels(src)
        assert orig.shape == (m, n)
        U, _, Vt = np.linalg.svd(orig.astype(np.float64), full_matrices=False)
        return dict(m=m, n=n, bits=bits, rank=rank, nsv=nsv, created=created, name=name, id=ident,
                    U=U[:, :rank], S=S, Vt=Vt[:rank], orig=orig)
    U = np.frombuffer(buf, "<f4", m * rank, off).reshape(m, rank); off += 4 * m * rank
    S = np.frombuffer(buf, "<f4", nsv, off); off += 4 * nsv
    Vt = np.frombuffer(buf, "<f4", rank * n, off).reshape(rank, n); off += 4 * rank * n
    orig = np.frombuffer(buf, "<u2", m * n, off).reshape(m, n) if flags & 1 else None
    return dict(m=m, n=n, bits=bits, rank=rank, nsv=nsv, created=created, name=name, id=ident,
                U=U.astype(np.float64), S=S.astype(np.float64), Vt=Vt.astype(np.float64), orig=orig)


def rounded(R, bits):
    return np.clip(np.floor(R + 0.5), 0, 2 ** bits - 1)


def read_png(path):
    with Image.open(path) as im:
        return np.array(im).astype(np.int64)


def png_size(path):
    with Image.open(path) as im:
        return im.size


def png_mode(path):
    with Image.open(path) as im:
        return im.mode


class CliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        assert BIN and os.access(BIN, os.X_OK), "SVDSLICE_BIN must name the built svdslice"
        assert DATA and os.path.isdir(DATA), "SVDSLICE_TEST_DATA must name the MRI slice directory"
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dir = cls.tmp.name
        rc, out, _ = run("backends")
        assert rc == 0
        cls.available = [b["name"] for b in json.loads(out)["backends"] if b["available"]]

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.dir, name)

    def compress(self, slice_name, *extra):
        out = self.path(slice_name + ".%d.svd" % len(extra))
        rc, stdout, stderr = run("compress", os.path.join(DATA, slice_name), out, *extra)
        self.assertEqual(rc, 0, stderr)
        return json.loads(stdout), out

    def assertOneLineError(self, args, code):
        rc, out, err = run(*args)
        self.assertEqual(rc, code, "%s -> %d, stderr %r" % (args, rc, err))
        self.assertEqual(out, "", args)
        lines = err.strip("\n").split("\n")
        self.assertEqual(len(lines), 1, "%s: stderr %r" % (args, err))
        self.assertTrue(lines[0].strip(), args)

    # ---- help and version ------------------------------------------------------
    def test_help_and_version_exit_0_on_stdout(self):
        for args in (["--help"], ["compress", "--help"], ["reconstruct", "--help"], ["quality", "--help"],
                     ["bench", "--help"], ["backends", "--help"], ["help", "bench"]):
            rc, out, err = run(*args)
            self.assertEqual(rc, 0, args)
            self.assertIn("usage", out.lower(), args)
            self.assertEqual(err, "", args)
        rc, out, _ = run("--help")
        for cmd in ("serve", "compress", "reconstruct", "quality", "bench", "backends"):
            self.assertIn(cmd, out)
        rc, out, _ = run("--version")
        self.assertEqual(rc, 0)
        self.assertRegex(out.strip(), r"^svdslice \d+\.\d+\.\d+$")

    def test_serve_help_exits_0(self):
        rc, out, _ = run("serve", "--help", timeout=20)
        self.assertEqual(rc, 0)
        self.assertIn("usage", out.lower())

    # ---- compress ---------------------------------------------------------------
    def test_compress_prints_slice_info_matching_the_file(self):
        for name in SLICES:
            before = time.time()
            info, svd_path = self.compress(name)
            f = read_svd(svd_path, os.path.join(DATA, name))
            w, h = png_size(os.path.join(DATA, name))
            self.assertEqual((info["width"], info["height"], info["bit_depth"]), (w, h, 8))
            self.assertEqual(info["name"], name)
            self.assertEqual(info["rank"], min(w, h))
            self.assertEqual(info["original_bytes"], w * h)
            self.assertEqual(info["stored_bytes"], os.path.getsize(svd_path))  # what the file takes
            self.assertEqual(info["upload_bytes"], os.path.getsize(os.path.join(DATA, name)))
            self.assertLess(info["stored_bytes"], w * h)  # the original losslessly compressed, no factors
            self.assertNotIn("compression_ratio", info)
            self.assertRegex(info["id"], r"^[A-Za-z0-9_-]{1,64}$")
            self.assertRegex(info["created"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
            created = datetime.strptime(info["created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
            self.assertLessEqual(abs(created.timestamp() - before), 120)
            # the file holds what was printed
            self.assertEqual((f["m"], f["n"], f["rank"], f["id"], f["name"]), (h, w, info["rank"], info["id"], name))
            self.assertEqual(f["created"], int(created.timestamp()))
            # singular values: all min(w, h), non-increasing, those of the original pixels
            sv = np.array(info["singular_values"])
            self.assertEqual(len(sv), min(w, h))
            self.assertTrue(np.all(np.diff(sv) <= 0))
            ref = np.linalg.svd(f["orig"].astype(np.float64), compute_uv=False)
            np.testing.assert_allclose(sv, ref, rtol=0, atol=1e-4 * ref[0])
            # the same content gives the same id
            info2, _ = self.compress(name, "--rank", str(min(w, h)))
            self.assertEqual(info2["id"], info["id"])

    def test_compress_rank_keeps_fewer_components(self):
        info, svd_path = self.compress(SLICES[0], "--rank", "40")
        f = read_svd(svd_path, os.path.join(DATA, SLICES[0]))
        self.assertEqual((info["rank"], f["rank"]), (40, 40))
        self.assertEqual(info["stored_bytes"], os.path.getsize(svd_path))
        self.assertEqual(len(info["singular_values"]), min(info["width"], info["height"]))
        rc, _, _ = run("reconstruct", svd_path, self.path("r40.png"), "-k", "40")
        self.assertEqual(rc, 0)
        self.assertOneLineError(["reconstruct", svd_path, self.path("r41.png"), "-k", "41"], 1)

    # ---- reconstruct ------------------------------------------------------------
    def test_reconstruct_pixels_match_float64_products_of_the_factors(self):
        cpu = [b for b in self.available if b in BACKENDS[:6]]
        self.assertIn("blas", cpu)
        for name in SLICES:
            _, svd_path = self.compress(name)
            f = read_svd(svd_path, os.path.join(DATA, name))
            exact = np.linalg.svd(f["orig"].astype(np.float64), full_matrices=False)
            for k in (1, 10, 50, f["rank"]):
                R = f["U"][:, :k] @ (f["S"][:k, None] * f["Vt"][:k])
                for backend in ["auto"] + cpu:
                    out = self.path("r.png")
                    rc, stdout, err = run("reconstruct", svd_path, out, "-k", k, "--backend", backend)
                    self.assertEqual(rc, 0, err)
                    meta = json.loads(stdout)
                    self.assertEqual(meta["k"], k)
                    if backend != "auto":
                        self.assertEqual(meta["backend"], backend)
                    px = read_png(out)
                    self.assertEqual(px.shape, (f["m"], f["n"]))
                    diff = np.abs(px - rounded(R, 8)).max()
                    self.assertLessEqual(diff, 1, "%s k=%d %s" % (name, k, backend))
                # the stored factors are accurate: within +-1 of a float64 SVD's rank-k pixels
                Uf, Sf, Vf = exact
                Rf = Uf[:, :k] @ (Sf[:k, None] * Vf[:k])
                rc, _, err = run("reconstruct", svd_path, out, "-k", k)
                self.assertLessEqual(np.abs(read_png(out) - rounded(Rf, 8)).max(), 1, "%s k=%d" % (name, k))

    def test_k_flag_spellings_agree_and_k_defaults_to_rank(self):
        _, svd_path = self.compress(SLICES[1])
        outs = []
        for flag in (["-k", "20"], ["--k", "20"], ["--k=20"], ["-k20"]):
            out = self.path("k%d.png" % len(outs))
            rc, _, err = run("reconstruct", svd_path, out, *flag, "--backend", "blas")
            self.assertEqual(rc, 0, err)
            outs.append(read_png(out))
        for o in outs[1:]:
            np.testing.assert_array_equal(o, outs[0])
        rc, stdout, _ = run("reconstruct", svd_path, self.path("full.png"))
        self.assertEqual(json.loads(stdout)["k"], read_svd(svd_path, os.path.join(DATA, SLICES[1]))["rank"])

    def test_flags_anywhere_later_flag_wins(self):
        png = os.path.join(DATA, SLICES[1])
        svd_path = self.path("anywhere.svd")
        rc, stdout, err = run("compress", "--rank", "9", png, "--rank=30", svd_path)
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(stdout)["rank"], 30)
        for i, flags in enumerate((["-k=12"], ["-k", "99", "--backend", "nope", "-k12", "--backend=blas"])):
            out = self.path("later%d.png" % i)
            rc, stdout, err = run("reconstruct", *flags[:2], svd_path, *flags[2:], out)
            self.assertEqual(rc, 0, err)
            self.assertEqual(json.loads(stdout)["k"], 12)
        # "--" ends the flags: a file named like one is a positional
        p = subprocess.run([BIN, "compress", png, "--", "--rank"], cwd=self.dir, capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(read_svd(self.path("--rank"), png)["rank"], json.loads(p.stdout)["rank"])

    def test_bits_16_and_8_convert_as_api_says(self):
        _, svd_path = self.compress(SLICES[0])
        o8, o16 = self.path("b8.png"), self.path("b16.png")
        self.assertEqual(run("reconstruct", svd_path, o8, "-k", 30, "--backend", "blas")[0], 0)
        self.assertEqual(run("reconstruct", svd_path, o16, "-k", 30, "--backend", "blas", "--bits", 16)[0], 0)
        self.assertEqual(png_mode(o8), "L")
        self.assertIn(png_mode(o16), ("I;16", "I;16B", "I"))
        np.testing.assert_array_equal(read_png(o16), read_png(o8) * 257)
        # a 16-bit source, made here: default depth 16, --bits 8 is round(v/257)
        rng = np.random.default_rng(7)
        yy, xx = np.mgrid[0:64, 0:48]
        img = (30000 + 20000 * np.sin(xx / 7.0) * np.cos(yy / 5.0) + rng.integers(0, 500, (64, 48))).astype(np.uint16)
        src = self.path("src16.png")
        Image.fromarray(img).save(src)
        svd16 = self.path("src16.svd")
        rc, stdout, err = run("compress", src, svd16)
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(stdout)["bit_depth"], 16)
        f = read_svd(svd16, img)
        np.testing.assert_array_equal(f["orig"], img)
        R = rounded(f["U"][:, :12] @ (f["S"][:12, None] * f["Vt"][:12]), 16)
        self.assertEqual(run("reconstruct", svd16, o16, "-k", 12)[0], 0)
        self.assertLessEqual(np.abs(read_png(o16) - R).max(), 1)
        self.assertEqual(run("reconstruct", svd16, o8, "-k", 12, "--bits", 8)[0], 0)
        np.testing.assert_array_equal(read_png(o8), np.floor(read_png(o16) / 257 + 0.5))

    # ---- quality ----------------------------------------------------------------
    def test_quality_matches_scikit_image(self):
        for name in SLICES:
            info, svd_path = self.compress(name)
            f = read_svd(svd_path, os.path.join(DATA, name))
            sv = f["S"]
            for k in (3, 40, f["rank"]):
                rc, stdout, err = run("quality", os.path.join(DATA, name), "-k", k)
                self.assertEqual(rc, 0, err)
                q = json.loads(stdout)
                self.assertEqual(set(q), {"id", "k", "backend", "rank", "original_kept", "mse", "psnr",
                                          "psnr_data_range", "ssim", "hausdorff", "energy", "float32_bytes_at_k"})
                self.assertEqual((q["id"], q["k"]), (info["id"], k))
                self.assertIn(q["backend"], BACKENDS)
                # the pixels that backend serves for this k, from the same factors
                out = self.path("q.png")
                self.assertEqual(run("reconstruct", svd_path, out, "-k", k, "--backend", q["backend"])[0], 0)
                a, b = f["orig"].astype(np.float64), read_png(out).astype(np.float64)
                mse = metrics.mean_squared_error(a, b)
                self.assertTrue(np.isclose(q["mse"], mse, rtol=1e-6, atol=0), (name, k))
                if mse == 0:
                    self.assertIsNone(q["psnr"])
                else:
                    ref = metrics.peak_signal_noise_ratio(a, b, data_range=255)
                    self.assertTrue(np.isclose(q["psnr"], ref, rtol=1e-6, atol=0), (name, k))
                ref = metrics.structural_similarity(a, b, data_range=255)
                self.assertTrue(np.isclose(q["ssim"], ref, rtol=1e-6, atol=1e-12), (name, k, q["ssim"], ref))
                ref = metrics.hausdorff_distance(a, b)
                self.assertTrue(np.isclose(q["hausdorff"], ref, rtol=1e-6, atol=0), (name, k))
                self.assertTrue(np.isclose(q["energy"], np.sum(sv[:k] ** 2) / np.sum(sv ** 2), rtol=1e-6))
                self.assertEqual(q["float32_bytes_at_k"], 4 * k * (f["m"] + f["n"] + 1))
            rc, stdout, _ = run("quality", os.path.join(DATA, name), "--backend", "loops1")
            self.assertEqual(rc, 0)
            q = json.loads(stdout)
            self.assertEqual((q["k"], q["backend"]), (f["rank"], "loops1"))

    # ---- backends ---------------------------------------------------------------
    def test_backends_lists_the_eight(self):
        rc, stdout, _ = run("backends")
        self.assertEqual(rc, 0)
        doc = json.loads(stdout)
        self.assertEqual([b["name"] for b in doc["backends"]], BACKENDS)
        for b in doc["backends"]:
            self.assertEqual(set(b), {"name", "device", "available", "reason", "description"})
            self.assertEqual(b["device"], "gpu" if b["name"] in ("cuda", "cublas") else "cpu")
            self.assertIsInstance(b["available"], bool)
            self.assertTrue(b["description"])
            if b["available"]:
                self.assertIsNone(b["reason"])
            else:
                self.assertTrue(b["reason"])
        for name in BACKENDS[:6]:
            self.assertIn(name, self.available)

    # ---- exit codes -------------------------------------------------------------
    def test_usage_errors_exit_2_with_one_line(self):
        png = os.path.join(DATA, SLICES[0])
        _, svd_path = self.compress(SLICES[0])
        out = self.path("u.png")
        for args in ([], ["frobnicate"], ["--frobnicate"],
                     ["compress", png, self.path("x.svd"), "--frob"], ["compress", png],
                     ["compress", png, self.path("x.svd"), "--rank", "zero"],
                     ["compress", png, self.path("x.svd"), "--rank"],
                     ["reconstruct", svd_path, out, "-k", "0"], ["reconstruct", svd_path, out, "-k", "-3"],
                     ["reconstruct", svd_path, out, "--k", "abc"], ["reconstruct", svd_path, out, "--k", "1.5"],
                     ["reconstruct", svd_path, out, "--backend", "nope"],
                     ["reconstruct", svd_path, out, "--bits", "12"], ["reconstruct", svd_path],
                     ["quality", png, "-k", "x"], ["quality", png, "--backend", "gpu9"], ["quality"],
                     ["bench", "--k", "0"], ["bench", "--k", "10,x"], ["bench", "--backends", "blas,foo"],
                     ["bench", "--format", "xml"], ["bench", "--repeat", "0"], ["bench", "--threads", "-1"],
                     ["backends", "extra"], ["backends", "--all"]):
            self.assertOneLineError(args, 2)
        # nothing was written by a rejected command
        self.assertFalse(os.path.exists(out))

    def test_runtime_errors_exit_1_with_one_line(self):
        png = os.path.join(DATA, SLICES[0])
        info, svd_path = self.compress(SLICES[0])
        rank = info["rank"]
        text = self.path("not.png")
        with open(text, "w") as fh:
            fh.write("this is not an image\n")
        broken = self.path("broken.svd")
        with open(svd_path, "rb") as src, open(broken, "wb") as dst:
            dst.write(src.read()[:1000])
        out = self.path("e.png")
        cases = [["compress", self.path("missing.png"), self.path("m.svd")],
                 ["compress", text, self.path("t.svd")],
                 ["compress", png, os.path.join(self.dir, "no", "such", "dir", "x.svd")],
                 ["compress", png, self.path("r.svd"), "--rank", str(rank + 1)],
                 ["reconstruct", self.path("missing.svd"), out], ["reconstruct", broken, out],
                 ["reconstruct", png, out],
                 ["reconstruct", svd_path, out, "-k", str(rank + 1)],
                 ["reconstruct", svd_path, os.path.join(self.dir, "no", "dir", "x.png"), "-k", "3"],
                 ["quality", self.path("missing.png")], ["quality", text],
                 ["quality", png, "-k", "100000"],
                 ["bench", self.path("missing.png")], ["bench", "--k", "171", "--repeat", "1"]]
        for gpu in ("cuda", "cublas"):
            if gpu not in self.available:
                cases.append(["reconstruct", svd_path, out, "--backend", gpu])
                cases.append(["quality", png, "-k", "5", "--backend", gpu])
        for args in cases:
            self.assertOneLineError(args, 1)
        rc, _, err = run("reconstruct", svd_path, out, "-k", str(rank + 1))
        self.assertIn("rank", err)
        if "cuda" not in self.available:
            rc, _, err = run("reconstruct", svd_path, out, "--backend", "cuda")
            self.assertIn("unavailable", err)

    # ---- bench ------------------------------------------------------------------
    def test_bench_json_checks_and_times_every_backend(self):
        rc, stdout, err = run("bench", "--format", "json", "--repeat", "3", "--k", "20,60", timeout=300)
        self.assertEqual(rc, 0, err)
        rows = json.loads(stdout)
        keys = {"backend", "k", "height", "width", "repeat", "median_ms", "min_ms", "gflops", "max_abs_err"}
        self.assertEqual(sorted((r["backend"], r["k"]) for r in rows),
                         sorted((b, k) for b in BACKENDS + ["sgemm"] for k in (20, 60)))
        for r in rows:
            self.assertTrue(keys <= set(r), r)
            self.assertEqual((r["height"], r["width"], r["repeat"]), (256, 170, 3))
            if r["backend"] in self.available or r["backend"] == "sgemm":
                self.assertIn(r["status"], ("ok", "baseline"), r)
                self.assertGreater(r["median_ms"], 0)
                self.assertLessEqual(r["min_ms"], r["median_ms"])
                self.assertTrue(np.isclose(r["gflops"], 2 * 256 * 170 * r["k"] / (r["median_ms"] * 1e6), rtol=1e-6))
                self.assertLess(r["max_abs_err"], 0.5, r)
            else:
                self.assertEqual(r["status"], "skipped")
                self.assertIsNone(r["median_ms"])
                self.assertTrue(r["error"])

    def test_bench_on_a_real_slice_csv_and_table(self):
        png = os.path.join(DATA, SLICES[1])
        rc, stdout, err = run("bench", png, "--backends", "blas,blocked,auto", "--k", "30", "--repeat", "3",
                              "--format", "csv", "--no-baseline")
        self.assertEqual(rc, 0, err)
        lines = stdout.strip().split("\n")
        header = lines[0].split(",")
        self.assertEqual(header[:9], ["backend", "k", "height", "width", "repeat", "median_ms", "min_ms", "gflops",
                                      "max_abs_err"])
        rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
        self.assertEqual([r["backend"] for r in rows], ["blas", "blocked", "auto"])
        w, h = png_size(png)
        for r in rows:
            self.assertEqual((int(r["height"]), int(r["width"]), int(r["k"])), (h, w, 30))
            self.assertLess(float(r["max_abs_err"]), 0.5)
        self.assertTrue(np.isclose(float(rows[0]["ratio_to_blas"]), 1.0))
        rc, stdout, err = run("bench", "--backends", "blas", "--k", "10", "--repeat", "3")
        self.assertEqual(rc, 0, err)
        self.assertIn("x blas", stdout)
        self.assertIn("256x170", stdout)
        self.assertTrue(any(line.startswith("sgemm") for line in stdout.split("\n")))

    def test_bench_plot_is_svg_with_one_bar_per_timed_row(self):
        svg = self.path("bench.svg")
        rc, stdout, err = run("bench", "--format", "json", "--repeat", "3", "--k", "30,10",
                              "--backends", "blas,blocked,threads,loops1,cuda", "--plot", svg)
        self.assertEqual(rc, 0, err)
        rows = json.loads(stdout)
        timed = {(r["backend"], r["k"]) for r in rows if r["median_ms"] is not None}
        root = ET.parse(svg).getroot()
        self.assertEqual(root.tag, "{http://www.w3.org/2000/svg}svg")
        bars = [e for e in root.iter("{http://www.w3.org/2000/svg}rect") if e.get("class") == "bar"]
        got = [(e.get("data-backend"), int(e.get("data-k"))) for e in bars]
        self.assertEqual(len(got), len(set(got)))
        self.assertEqual(set(got), timed)
        texts = " ".join("".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text"))
        self.assertIn("256x170", texts)
        self.assertIn("k = 30", texts)
        self.assertRegex(texts, r"\b1 ms\b|\b0\.1 ms\b|\b10 ms\b")
        # log axis: bar height is affine in log10(median time), with a positive slope
        med = {(r["backend"], r["k"]): r["median_ms"] for r in rows}
        x = np.log10([med[g] for g in got])
        hts = np.array([float(e.get("height")) for e in bars])
        slope, icpt = np.polyfit(x, hts, 1)
        self.assertGreater(slope, 0)
        self.assertLess(np.abs(hts - (slope * x + icpt)).max(), 0.05)


if __name__ == "__main__":
    unittest.main(verbosity=2)
