"""test_persist.py - slices acknowledged with 201 survive restarts, kill -9, corrupt files and quotas."""
import glob
import os
import shutil
import sys
import tempfile
import unittest

import numpy as np

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import util  # noqa: E402


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def durable(info):
    """Slice info as it must read after a restart: all of it (the .svd file carries the upload's
    size since version 2; docs/API.md)."""
    return dict(info)


def snapshot(srv, sid):
    """Everything a client can read about a slice, as bytes/JSON to compare after a restart."""
    out = {}
    r = srv.get("/slices/" + sid)
    out["info"] = (r.status, durable(r.json()) if r.status == 200 else None)
    for part in ("original", "factors"):
        r = srv.get("/slices/%s/%s" % (sid, part))
        out[part] = (r.status, r.body if r.status == 200 else None)
    r = srv.get("/reconstruct?id=%s&k=3&backend=blas" % sid)
    out["recon"] = (r.status, util.png_decode(r.body)[0].tobytes() if r.status == 200 else None)
    return out


class PersistTest(util.OneDataDir, unittest.TestCase):
    dir_prefix = "svdslice-persist-"

    def svd_files(self):
        return sorted(glob.glob(os.path.join(self.dir, "**", "*.svd"), recursive=True))

    def test_slices_survive_a_clean_restart(self):
        srv = self.start()
        pngs = [util.png_encode(util.phantom(40 + i, 30, 8 if i % 2 else 16, seed=300 + i)) for i in range(3)]
        ids = [srv.upload_ok(p)["id"] for p in pngs]
        ids.append(srv.upload_ok(util.read_bytes(util.test_data("BrainT1Slice.png")), "?name=t1&rank=50")["id"])
        before = {sid: snapshot(srv, sid) for sid in ids}
        listed = [s["id"] for s in srv.get("/slices").json()["slices"]]
        self.assertEqual(srv.stop(), 0, "SIGTERM exit code\n" + srv.log_tail())
        srv = self.start()
        self.assertEqual([s["id"] for s in srv.get("/slices").json()["slices"]], listed, "list order changed")
        for sid in ids:
            self.assertEqual(snapshot(srv, sid), before[sid], sid)
        # an upload after the restart is still recognised as existing
        self.assertEqual(srv.upload_raw(pngs[0]).status, 200)

    def test_second_process_on_one_directory_is_refused(self):
        """The index, quota and temp clean-up are one process's: a second one on the same
        directory (a replica on a shared volume) must not start, and says why."""
        first = self.start()
        sid = first.upload_ok(util.png_encode(util.phantom(30, 40, 8, seed=7)))["id"]
        second = util.Server([], data_dir=self.dir)
        with self.assertRaises(RuntimeError) as cm:
            second.start()
        self.assertIn("in use by another svdslice process", str(cm.exception))
        self.assertIn("--store postgres://", str(cm.exception))
        second.cleanup()
        self.assertEqual(first.get("/slices/%s" % sid).status, 200)
        first.kill()  # a crashed owner releases the lock with its last descriptor
        third = self.start()
        self.assertEqual(third.get("/slices/%s" % sid).status, 200)

    def test_store_flag_names_the_directory_and_refuses_other_stores(self):
        other = tempfile.mkdtemp(prefix="svdslice-store-")
        try:
            srv = self.start(["--store", "dir:" + other])  # wins over the --data the helper passes
            sid = srv.upload_ok(util.png_encode(util.phantom(30, 40, 8, seed=8)))["id"]
            self.assertTrue(os.path.exists(os.path.join(other, sid + ".svd")))
            self.assertEqual(self.svd_files(), [])
            srv.stop()
        finally:
            shutil.rmtree(other, ignore_errors=True)
        for bad in ("mysql://x", "dir:", "/data"):
            with self.assertRaises(RuntimeError) as cm:
                self.start(["--store", bad])
            self.assertIn("want dir:PATH or postgres://", str(cm.exception))

    def test_slices_survive_kill_9_right_after_201(self):
        srv = self.start()
        n = 8
        pngs = [util.png_encode(util.phantom(48, 36 + i, 8, seed=320 + i)) for i in range(n)]
        infos = []
        for p in pngs:
            r = srv.upload_raw(p)
            self.assertEqual(r.status, 201, r)
            infos.append(r.json())
        srv.kill()  # immediately after the last 201: nothing may be lost
        srv = self.start()
        listed = {s["id"] for s in srv.get("/slices").json()["slices"]}
        for p, info in zip(pngs, infos):
            self.assertIn(info["id"], listed)
            r = srv.get("/slices/" + info["id"])
            self.assertEqual(r.status, 200, r)
            self.assertEqual(durable(r.json()), durable(info))
            self.assertEqual(r.json()["upload_bytes"], len(p))  # the .svd file carries it
            orig, _ = util.png_decode(srv.get("/slices/%s/original" % info["id"]).body)
            np.testing.assert_array_equal(orig, util.png_decode(p)[0])
            f = util.parse_svd(srv.get("/slices/%s/factors" % info["id"]).body)
            self.assertEqual(f["id"], info["id"])
        # no temp files are mistaken for slices
        self.assertEqual(len(listed), n)

    def test_delete_survives_restart(self):
        srv = self.start()
        a = srv.upload_ok(util.png_encode(util.phantom(30, 30, 8, seed=340)))["id"]
        b = srv.upload_ok(util.png_encode(util.phantom(30, 31, 8, seed=341)))["id"]
        self.assertEqual(srv.request("DELETE", "/slices/" + a).status, 204)
        srv.kill()  # right after the 204
        srv = self.start()
        self.assertEqual(srv.get("/slices/" + a).status, 404)
        self.assertEqual(srv.get("/slices/" + b).status, 200)
        self.assertEqual([s["id"] for s in srv.get("/slices").json()["slices"]], [b])
        self.assertEqual(srv.request("DELETE", "/slices/" + b).status, 204)
        self.assertEqual(srv.stop(), 0)
        srv = self.start()
        self.assertEqual(srv.get("/slices").json()["slices"], [])

    def test_corrupt_svd_files_are_skipped(self):
        srv = self.start()
        ids = [srv.upload_ok(util.png_encode(util.phantom(40, 33, 8, seed=360 + i)))["id"] for i in range(3)]
        good = snapshot(srv, ids[2])
        self.assertEqual(srv.stop(), 0)
        files = self.svd_files()
        self.assertEqual(len(files), 3, files)
        by_id = {}
        for p in files:
            by_id[util.parse_svd(util.read_bytes(p))["id"]] = p
        # ids[0]: header byte flipped; ids[1]: payload byte flipped (header still verifies)
        data = bytearray(util.read_bytes(by_id[ids[0]]))
        data[60] ^= 0x5A
        write(by_id[ids[0]], bytes(data))
        data = bytearray(util.read_bytes(by_id[ids[1]]))
        data[len(data) // 2] ^= 0x01
        write(by_id[ids[1]], bytes(data))
        # plus junk: a truncated copy and a random file with the extension
        d = os.path.dirname(by_id[ids[2]])
        write(os.path.join(d, "truncated.svd"), util.read_bytes(by_id[ids[2]])[:500])
        write(os.path.join(d, "random.svd"), os.urandom(4096))
        srv = self.start()
        listed = [s["id"] for s in srv.get("/slices").json()["slices"]]
        self.assertNotIn(ids[0], listed, "a slice whose header fails its checksum is listed")
        self.assertIn(ids[2], listed)
        self.assertEqual(snapshot(srv, ids[2]), good)
        # the payload-corrupted slice must never be served as pixels
        for path in ("/slices/%s/original" % ids[1], "/reconstruct?id=%s&k=2" % ids[1],
                     "/quality?id=%s&k=2" % ids[1]):
            r = srv.get(path)
            self.assertNotEqual(r.status, 200, "corrupt %s served" % path)
            util.assert_error(self, r, r.status)
        self.assertEqual(srv.get("/healthz").status, 200)
        self.assertTrue(srv.alive())

    def test_quota_gives_507_and_keeps_earlier_slices(self):
        srv = self.start(["--quota-mb", "1"])
        kept = []
        got507 = None
        for i in range(8):  # ~360 KB per 512x384 16-bit noise slice kept losslessly: hit by the third
            px = np.random.default_rng(380 + i).integers(0, 65536, (384, 512), dtype=np.uint16)
            png = util.png_encode(px)
            r = srv.upload_raw(png)
            if r.status == 507:
                got507 = r
                break
            self.assertEqual(r.status, 201, r)
            kept.append((r.json(), png))
        self.assertIsNotNone(got507, "never refused with --quota-mb 1")
        util.assert_error(self, got507, 507, "insufficient_storage")
        self.assertTrue(kept, "the first slice must fit")
        snaps = {info["id"]: snapshot(srv, info["id"]) for info, _ in kept}
        listed = {s["id"] for s in srv.get("/slices").json()["slices"]}
        self.assertEqual(listed, set(snaps), "the refused slice must not be listed")
        for info, kept_png in kept:
            np.testing.assert_array_equal(util.png_decode(snaps[info["id"]]["original"][1])[0],
                                          util.png_decode(kept_png)[0])
        self.assertEqual(len(self.svd_files()), len(kept), "the refused upload left a file behind")
        # deleting frees room again
        self.assertEqual(srv.request("DELETE", "/slices/" + kept[0][0]["id"]).status, 204)
        self.assertEqual(srv.upload_raw(png).status, 201, "the refused slice fits after a delete")
        self.assertEqual(srv.stop(), 0)
        srv = self.start(["--quota-mb", "1"])
        for info, _ in kept[1:]:
            self.assertEqual(snapshot(srv, info["id"]), snaps[info["id"]])


if __name__ == "__main__":
    unittest.main(verbosity=2)
