"""test_volume_cli.py - compress-volume / reconstruct-volume / bench --volume against nibabel, numpy
and scikit-image: Debian's real volumes (ITK's examples, nibabel's test data) and generated phantoms
of odd shapes, every accepted data type, with scaling, along every axis."""
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np

try:
    import nibabel as nib
    from skimage import metrics
except ImportError as e:  # the test set's packages (scripts/setup.sh test) are missing
    print(f"skipped: {e}")
    sys.exit(77)

BIN = os.environ.get("SVDSLICE_BIN", "")
DATA = os.environ.get("SVDSLICE_TEST_DATA", "/usr/share/doc/insighttoolkit4-examples/examples/Data")
NIB_DATA = os.path.join(os.path.dirname(nib.__file__), "tests", "data")
REAL = {
    "int16_itk": os.path.join(DATA, "KmeansTest_T1UCharRaw.nii.gz"),
    "uint8_itk": os.path.join(DATA, "KmeansTest_T1RawSkullStrip.nii.gz"),
    "bigendian": os.path.join(NIB_DATA, "anatomical.nii"),
    "nifti2_4d": os.path.join(NIB_DATA, "example_nifti2.nii.gz"),
}
FLOATS = ("float32", "float64")
RANGES = {"uint8": (0, 255), "int8": (-128, 127), "int16": (-32768, 32767), "uint16": (0, 65535),
          "int32": (-2147483648, 2147483647)}


def run(*args, timeout=300):
    p = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def raw_volume(path, t=0):
    """The stored (unscaled) values of volume t, native order, and the effective slope/inter."""
    img = nib.load(path)
    raw = np.asanyarray(img.dataobj.get_unscaled())
    if raw.ndim == 4:
        raw = raw[..., t]
    slope, inter = img.dataobj.slope, img.dataobj.inter
    if not np.isfinite(slope) or slope == 0 or not np.isfinite(inter):
        slope, inter = 1.0, 0.0
    return img, raw.astype(raw.dtype.newbyteorder("=")), float(slope), float(inter)


def slice_of(vol, axis, s):
    """The slice layout of engine/volume.h: rows along the higher remaining axis, columns along the lower."""
    return np.take(vol, s, axis=axis).T


def reference_at_k(raw, slope, inter, axis, k):
    """float64 numpy SVD of each scaled slice, truncated at k, back to stored values as svdslice rounds them."""
    y = raw.astype(np.float64) * slope + inter
    out = np.empty(raw.shape, np.float64)
    for s in range(raw.shape[axis]):
        a = slice_of(y, axis, s)
        kk = min(k, min(a.shape))
        if kk >= min(a.shape):
            r = slice_of(raw.astype(np.float64), axis, s)
        else:
            U, S, Vt = np.linalg.svd(a, full_matrices=False)
            r = (U[:, :kk] * S[:kk]) @ Vt[:kk] - inter
            r = r / slope
        idx = [slice(None)] * 3
        idx[axis] = s
        out[tuple(idx)] = r.T
    name = raw.dtype.name
    if name in FLOATS:
        return out
    lo, hi = RANGES[name]
    return np.clip(np.sign(out) * np.floor(np.abs(out) + 0.5), lo, hi)


def data_range(raw):
    if raw.dtype == np.uint8:
        return 255.0
    if raw.dtype == np.uint16:
        return 65535.0
    r = float(raw.max()) - float(raw.min())
    return r if r > 0 else 1.0


def patch_scaling(path, slope, inter, version):
    """Sets scl_slope / scl_inter in a .nii written by nibabel (which manages them itself on save)."""
    with open(path, "r+b") as fh:
        if version == 1:
            fh.seek(112)
            fh.write(struct.pack("<ff", slope, inter))
        else:
            fh.seek(176)
            fh.write(struct.pack("<dd", slope, inter))


def phantom(shape, dtype, seed):
    """A smooth head-like blob plus noise, spread over a good part of the type's range."""
    rng = np.random.default_rng(seed)
    g = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r2 = sum(c * c for c in g)
    base = np.exp(-2.5 * r2) + 0.3 * np.cos(3 * g[0]) * np.sin(2 * g[1] + g[2])
    base = base + 0.05 * rng.standard_normal(shape)
    base = (base - base.min()) / (base.max() - base.min())
    if dtype in FLOATS:
        return (base * 1700.0 - 450.0).astype(dtype)
    lo, hi = RANGES[dtype]
    lo, hi = max(lo, -3000), min(hi, 4000)
    return np.round(lo + base * (hi - lo)).astype(dtype)


class VolumeCliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not BIN or not os.access(BIN, os.X_OK):
            raise unittest.SkipTest("SVDSLICE_BIN not set")
        cls.tmp = tempfile.TemporaryDirectory(prefix="svdslice-vol-")
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def path(self, name):
        VolumeCliTest.n += 1
        return os.path.join(self.tmp.name, f"{VolumeCliTest.n}-{name}")

    def compress(self, src, *extra):
        svv = self.path("v.svv")
        rc, out, err = run("compress-volume", src, svv, *extra)
        self.assertEqual(rc, 0, err)
        return svv, json.loads(out)

    def rebuild(self, svv, k, *extra):
        out = self.path(f"k{k}.nii.gz")
        rc, so, err = run("reconstruct-volume", svv, out, "--k", k, *extra)
        self.assertEqual(rc, 0, err)
        return out, json.loads(so)

    def check_header_round_trip(self, src, ours):
        a, b = nib.load(src), nib.load(ours)
        self.assertEqual(type(a.header).__name__, type(b.header).__name__)
        self.assertEqual(a.shape[:3], b.shape)
        self.assertEqual(a.get_data_dtype().newbyteorder("="), b.get_data_dtype())
        np.testing.assert_array_equal(a.affine, b.affine)
        for h in (a.header, b.header):
            self.assertIsNotNone(h)
        self.assertEqual(int(a.header["qform_code"]), int(b.header["qform_code"]))
        self.assertEqual(int(a.header["sform_code"]), int(b.header["sform_code"]))
        np.testing.assert_array_equal(a.header.get_qform(), b.header.get_qform())
        np.testing.assert_array_equal(a.header.get_sform(), b.header.get_sform())
        self.assertEqual(a.header.get_zooms()[:3], b.header.get_zooms()[:3])
        # nibabel moves the scaling from the loaded header into dataobj
        self.assertEqual((a.dataobj.slope, a.dataobj.inter), (b.dataobj.slope, b.dataobj.inter))

    def check_volume(self, src, ks, axis=2, t=0, extra=()):
        """Full rank equals the input exactly; each k equals the float64 reference within a unit."""
        img, raw, slope, inter = raw_volume(src, t)
        svv, info = self.compress(src, "--axis", axis, "--t", t, *extra)
        self.assertEqual(info["dims"], list(raw.shape))
        self.assertEqual(info["datatype"], raw.dtype.name)
        self.assertEqual(info["axis"], axis)
        self.assertEqual(info["slices"], raw.shape[axis])
        full, _ = self.rebuild(svv, 1 << 20)
        self.check_header_round_trip(src, full)
        got = np.asanyarray(nib.load(full).dataobj.get_unscaled())
        self.assertEqual(got.dtype, raw.dtype)
        np.testing.assert_array_equal(got, raw, err_msg=f"{src} axis {axis}: full rank is not the input")
        tol = 1e-4 * (float(raw.max()) - float(raw.min())) if raw.dtype.name in FLOATS else 1.0
        for k in ks:
            ours, _ = self.rebuild(svv, k)
            got = np.asanyarray(nib.load(ours).dataobj.get_unscaled()).astype(np.float64)
            ref = reference_at_k(raw, slope, inter, axis, k)
            err = np.abs(got - ref).max()
            self.assertLessEqual(err, tol, f"{src} axis {axis} k {k}: off the float64 reference by {err}")
        return svv, raw

    # ---- Debian's real volumes ---------------------------------------------------

    def test_real_volumes_dtypes_are_as_the_issue_says(self):
        self.assertEqual(nib.load(REAL["int16_itk"]).get_data_dtype(), np.int16)
        self.assertEqual(nib.load(REAL["uint8_itk"]).get_data_dtype(), np.uint8)
        self.assertEqual(nib.load(REAL["bigendian"]).get_data_dtype().byteorder, ">")
        self.assertEqual(nib.load(REAL["nifti2_4d"]).header.sizeof_hdr, 540)
        self.assertEqual(len(nib.load(REAL["nifti2_4d"]).shape), 4)

    def test_itk_int16_and_uint8_volumes(self):
        self.check_volume(REAL["int16_itk"], [1, 20, 50])
        self.check_volume(REAL["uint8_itk"], [5, 50], axis=0)

    def test_big_endian_anatomical(self):
        for axis in (0, 1, 2):
            self.check_volume(REAL["bigendian"], [1, 7], axis=axis)

    def test_nifti2_4d_takes_volume_t(self):
        for t in (0, 1):
            self.check_volume(REAL["nifti2_4d"], [2, 6], t=t)
        svv, info = self.compress(REAL["nifti2_4d"], "--t", 1)
        svv0, info0 = self.compress(REAL["nifti2_4d"])
        self.assertNotEqual(info["id"], info0["id"])
        rc, _, err = run("compress-volume", REAL["nifti2_4d"], self.path("x.svv"), "--t", 2)
        self.assertEqual(rc, 1)
        self.assertIn("t = 2", err)

    # ---- phantoms --------------------------------------------------------------------

    def test_phantoms_every_dtype_odd_shapes_each_axis(self):
        shapes = [(23, 17, 11), (9, 31, 8)]
        for i, dtype in enumerate(["uint8", "int8", "int16", "uint16", "int32", "float32", "float64"]):
            shape = shapes[i % 2]
            for version, cls in ((1, nib.Nifti1Image), (2, nib.Nifti2Image)):
                vol = phantom(shape, dtype, seed=i)
                affine = np.array([[0.9, 0.1, 0, -10], [0, 1.1, 0.2, 12], [0.05, 0, 1.7, -3], [0, 0, 0, 1]])
                img = cls(vol, affine)
                img.header.set_qform(affine, code=1)
                img.header.set_sform(affine, code=4)
                p = self.path(f"ph-{dtype}-{version}.nii")
                img.to_filename(p)
                # Scaling on the integer types (and one float type), as the header says.
                if dtype not in ("float64",):
                    patch_scaling(p, 0.5 if dtype != "float32" else 2.0, 10.0 if dtype != "int8" else -3.0, version)
                if version == 2:  # gzipped NIfTI-2
                    with open(p, "rb") as fh, gzip.open(p + ".gz", "wb") as gz:
                        gz.write(fh.read())
                    p = p + ".gz"
                for axis in (0, 1, 2):
                    self.check_volume(p, [1, 3], axis=axis)

    def test_same_file_same_id_gz_or_not(self):
        vol = phantom((12, 10, 9), "int16", seed=7)
        p = self.path("id.nii")
        nib.Nifti1Image(vol, np.eye(4)).to_filename(p)
        with open(p, "rb") as fh, gzip.open(p + ".gz", "wb") as gz:
            gz.write(fh.read())
        a = self.compress(p)[1]["id"]
        self.assertEqual(a, self.compress(p)[1]["id"])
        self.assertEqual(a, self.compress(p + ".gz")[1]["id"])
        self.assertEqual(len(a), 64)
        self.assertNotEqual(a, self.compress(p, "--axis", 1)[1]["id"])
        vol[3, 4, 5] += 1
        q = self.path("id2.nii")
        nib.Nifti1Image(vol, np.eye(4)).to_filename(q)
        self.assertNotEqual(a, self.compress(q)[1]["id"])

    # ---- quality ---------------------------------------------------------------------

    def test_quality_matches_numpy_and_skimage(self):
        for src, k in ((REAL["int16_itk"], 20), (REAL["bigendian"], 5)):
            _, raw, _, _ = raw_volume(src)
            svv, _ = self.compress(src)
            out, doc = self.rebuild(svv, k, "--quality")
            ours = np.asanyarray(nib.load(out).dataobj.get_unscaled()).astype(np.float64)
            a = raw.astype(np.float64)
            R = data_range(raw)
            q = doc["quality"]["volume"]
            mse = np.mean((a - ours) ** 2)
            self.assertAlmostEqual(q["mse"], mse, delta=1e-9 * max(1, mse))
            self.assertAlmostEqual(q["psnr"], 10 * np.log10(R * R / mse), delta=1e-6)
            ssim = metrics.structural_similarity(a, ours, data_range=R)
            self.assertAlmostEqual(q["ssim"], ssim, delta=1e-7)
            self.assertGreater(q["energy"], 0.5)
            self.assertLessEqual(q["energy"], 1.0)
            slices = doc["quality"]["slices"]
            self.assertEqual(len(slices), raw.shape[2])
            for s in (0, raw.shape[2] // 2, raw.shape[2] - 1):
                e = slices[s]
                self.assertEqual(e["index"], s)
                sa, sb = slice_of(a, 2, s), slice_of(ours, 2, s)
                smse = np.mean((sa - sb) ** 2)
                self.assertAlmostEqual(e["mse"], smse, delta=1e-9 * max(1, smse))
                if smse == 0:
                    self.assertIsNone(e["psnr"])
                if min(sa.shape) >= 7:
                    self.assertAlmostEqual(e["ssim"], metrics.structural_similarity(sa, sb, data_range=R), delta=1e-7)
                S = np.linalg.svd(slice_of(a, 2, s), compute_uv=False)
                if (S ** 2).sum() > 0:
                    self.assertAlmostEqual(e["energy"], (S[:k] ** 2).sum() / (S ** 2).sum(), delta=1e-5)

    # ---- slice PNGs ------------------------------------------------------------------

    def test_slice_png_layout_and_pixel_map(self):
        from PIL import Image
        src = REAL["bigendian"]  # int16: the 16-bit linear map
        _, raw, slope, inter = raw_volume(src)
        svv, _ = self.compress(src)
        lo, hi = float(raw.min()), float(raw.max())
        for axis, idx in ((0, 5), (1, 20), (2, 12)):
            p = self.path(f"s{axis}.png")
            rc, so, err = run("reconstruct-volume", svv, p, "--k", 100000, "--axis", axis, "--index", idx)
            self.assertEqual(rc, 0, err)
            with Image.open(p) as im:
                px = np.array(im).astype(np.int64)
            want = np.clip(np.floor((slice_of(raw, axis, idx) - lo) / (hi - lo) * 65535 + 0.5), 0, 65535)
            self.assertEqual(px.shape, want.shape)
            np.testing.assert_array_equal(px, want)
        # uint8 data: 8-bit, values as they are; a window gives 8 bits of the scaled values.
        _, raw8, _, _ = raw_volume(REAL["uint8_itk"])
        svv8, _ = self.compress(REAL["uint8_itk"], "--axis", 1)
        p = self.path("u8.png")
        rc, so, err = run("reconstruct-volume", svv8, p, "--k", 100000, "--index", 40)
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(so)["bits"], 8)
        with Image.open(p) as im:
            self.assertEqual(im.mode, "L")
            np.testing.assert_array_equal(np.array(im), slice_of(raw8, 1, 40))
        p = self.path("w.png")
        rc, so, err = run("reconstruct-volume", svv8, p, "--k", 100000, "--index", 40, "--window", "100,80")
        self.assertEqual(rc, 0, err)
        with Image.open(p) as im:
            want = np.clip(np.floor((slice_of(raw8, 1, 40).astype(float) - 100 + 40) / 80 * 255 + 0.5), 0, 255)
            np.testing.assert_array_equal(np.array(im), want)

    # ---- errors and the bench -----------------------------------------------------------

    def test_bad_inputs_exit_1_with_one_clear_line(self):
        junk = self.path("junk.nii")
        with open(junk, "wb") as fh:
            fh.write(b"not a nifti file at all" * 40)
        rc, _, err = run("compress-volume", junk, self.path("j.svv"))
        self.assertEqual(rc, 1)
        self.assertIn("not a NIfTI", err)
        self.assertEqual(len(err.strip().splitlines()), 1)
        with open(REAL["int16_itk"], "rb") as fh:
            data = fh.read()
        cut = self.path("cut.nii.gz")
        with open(cut, "wb") as fh:
            fh.write(data[: len(data) // 2])
        rc, _, err = run("compress-volume", cut, self.path("c.svv"))
        self.assertEqual(rc, 1)
        self.assertIn("truncated", err)
        svv, _ = self.compress(REAL["bigendian"])
        with open(svv, "rb") as fh:
            blob = bytearray(fh.read())
        blob[len(blob) // 2] ^= 0x40
        bad = self.path("bad.svv")
        with open(bad, "wb") as fh:
            fh.write(blob)
        rc, _, err = run("reconstruct-volume", bad, self.path("o.nii.gz"), "--k", 3)
        self.assertEqual(rc, 1)
        self.assertIn("checksum", err)
        rc, _, err = run("reconstruct-volume", svv, self.path("o.nii.gz"), "--k", 0)
        self.assertEqual(rc, 2)
        rc, _, err = run("reconstruct-volume", svv, self.path("o.nii.gz"), "--k", 3, "--backend", "nope")
        self.assertEqual(rc, 2)
        rc, _, err = run("compress-volume", REAL["bigendian"], self.path("o.svv"), "--axis", 3)
        self.assertEqual(rc, 2)

    def test_bench_volume_json(self):
        rc, out, err = run("bench", "--volume", REAL["bigendian"], "--k", "3,10", "--repeat", 2, "--format", "json",
                           "--backends", "blas,loops1,threads,cuda", "--threads", 2)
        self.assertEqual(rc, 0, err)
        doc = json.loads(out)
        self.assertEqual(doc["dims"], [33, 41, 25])
        self.assertGreater(doc["nifti_write_mb_per_s"], 0)
        rows = doc["rows"]
        self.assertEqual(len(rows), 2 * 5)
        for r in rows:
            if r["backend"] == "sgemm":
                self.assertEqual(r["status"], "baseline")
                self.assertGreater(r["gflops"], 0)
            elif r["backend"] == "cuda":
                self.assertIn(r["status"], ("skipped", "ok"))
                if r["status"] == "skipped":
                    self.assertTrue(r["error"])
            else:
                self.assertEqual(r["status"], "ok", r)
                self.assertLessEqual(r["max_diff"], 1)
                self.assertGreater(r["slices_per_s"], 0)
                self.assertGreater(r["ratio_to_sgemm"], 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
