"""test_volume_display.py - what the viewer reads from volume info: cal_min/cal_max (the file's own
display window) and orientation (where voxel axes i, j, k point), against nibabel for Debian's real
volumes and for files made here (NIfTI-1 and -2, sform, qform only, neither, cal set and unset)."""
import gzip
import io
import json
import os
import sys
import time
import unittest

import numpy as np

sys.dont_write_bytecode = True  # keep the source tree clean
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import util  # noqa: E402

try:
    import nibabel as nib
except ImportError as e:  # the test set's packages (scripts/setup.sh test) are missing
    print(f"skipped: {e}")
    sys.exit(77)

# nibabel's axis codes name the end an axis points to; the API says "from>to".
TO = {"L": "R>L", "R": "L>R", "A": "P>A", "P": "A>P", "S": "I>S", "I": "S>I"}
REAL = ["KmeansTest_T1UCharRaw.nii.gz", "KmeansTest_T1RawSkullStrip.nii.gz"]


def made(version=1, cal=None, sform=True, qform=True, affine=None):
    """A small uint8 NIfTI (gzip) by nibabel: cal_min/cal_max and the form codes as asked."""
    rng = np.random.default_rng(7 + version)
    arr = rng.integers(0, 250, size=(12, 10, 8), dtype=np.uint8)
    cls = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    aff = affine if affine is not None else np.array([[0, 0, -2.0, 10], [1.5, 0, 0, -5], [0, 1.0, 0, 3], [0, 0, 0, 1]])
    img = cls(arr, aff)
    img.header.set_data_dtype(np.uint8)
    img.set_sform(aff, code=1 if sform else 0)
    img.set_qform(aff, code=1 if qform else 0)
    if cal:
        img.header["cal_min"], img.header["cal_max"] = cal
    bio = io.BytesIO()
    fh = nib.FileHolder(fileobj=bio)
    img.to_file_map({"image": fh, "header": fh})
    return gzip.compress(bio.getvalue(), 1), img


class VolumeDisplay(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = util.Server().start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        cls.srv.cleanup()

    def info(self, data, name):
        r = self.srv.request("POST", "/volumes?name=" + name, body=data)
        self.assertIn(r.status, (200, 202), r.body)
        vid = r.json()["id"]
        deadline = time.monotonic() + 60
        while True:
            info = self.srv.get("/volumes/" + vid).json()
            if info["state"] == "ready" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(info["state"], "ready", info)
        return info

    def check(self, info, img):
        h = img.header
        cmin, cmax = float(h["cal_min"]), float(h["cal_max"])
        if cmax > cmin:
            self.assertAlmostEqual(info["cal_min"], cmin, places=5)
            self.assertAlmostEqual(info["cal_max"], cmax, places=5)
        else:
            self.assertIsNone(info["cal_min"])
            self.assertIsNone(info["cal_max"])
        scode, qcode = int(h["sform_code"]), int(h["qform_code"])
        if scode > 0:
            want = [TO[c] for c in nib.aff2axcodes(h.get_sform())]
        elif qcode > 0:
            want = [TO[c] for c in nib.aff2axcodes(h.get_qform())]
        else:
            want = [None, None, None]
        self.assertEqual(info["orientation"], want)

    def test_real_volumes(self):
        for name in REAL:
            with self.subTest(name=name):
                path = util.test_data(name)
                img = nib.load(path)
                self.check(self.info(util.read_bytes(path), name.split(".")[0]), img)
        # Known from the file (nibabel says L, S, A): i runs R to L, j I to S, k P to A.
        info = self.info(util.read_bytes(util.test_data(REAL[0])), "again")
        self.assertEqual(info["orientation"], ["R>L", "I>S", "P>A"])

    def test_made_files(self):
        cases = [
            dict(version=1, cal=(40, 200)),
            dict(version=2, cal=(-3.5, 1000.25)),
            dict(version=1, cal=(10, 10)),            # cal_max <= cal_min: no window
            dict(version=1, sform=False),             # the qform alone
            dict(version=2, sform=False, qform=False),  # neither: unknown
            dict(version=1, affine=np.diag([-1.0, -2.0, 3.0, 1.0])),
        ]
        for i, case in enumerate(cases):
            with self.subTest(case=str(case)):
                data, img = made(**case)
                info = self.info(data, f"made{i}")
                self.check(info, img)
        # The OpenAPI document the server serves describes the new fields.
        doc = self.srv.get("/openapi.json")
        if doc.status == 200:
            text = json.dumps(doc.json())
            self.assertIn("cal_min", text)
            self.assertIn("orientation", text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
