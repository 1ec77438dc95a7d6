"""test_store_faults.py - what the server answers when a store file call fails, and what survives.

The server fails the N-th call of one file operation when started with the test-only
SVDSLICE_TEST_FAULT=OP:N[:ERR] (server/store_dir.h). Counts start at the store's open, where
`open` #1 is the data directory; a put then makes open, write, fsync (file), close, rename,
fsync (directory), and a delete unlink, fsync (directory). So with one slice uploaded first,
the second upload is open #3, write #2, fsync #3 and #4, close #2, rename #2.
"""
import os
import shutil
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import util  # noqa: E402

# The second upload's steps, failing: (spec, status, error code)
PUT_FAULTS = [
    ("open:3", 500, "internal"),
    ("write:2", 500, "internal"),
    ("fsync:3", 500, "internal"),  # the file
    ("close:2", 500, "internal"),
    ("rename:2", 500, "internal"),
    ("fsync:4", 500, "internal"),  # the directory, after the rename
    ("write:2:ENOSPC", 507, "insufficient_storage"),
    ("open:3:EDQUOT", 507, "insufficient_storage"),
]


class StoreFaultTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="svdslice-faults-")
        self.servers = []
        self.seed = 700

    def tearDown(self):
        for s in self.servers:
            if s.alive():
                s.kill()
            s.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, fault=None):
        s = util.Server([], data_dir=self.dir, env={"SVDSLICE_TEST_FAULT": fault} if fault else None)
        self.servers.append(s)
        return s.start()

    def png(self):
        self.seed += 1
        return util.png_encode(util.phantom(36, 28, 8, seed=self.seed))

    def listed(self, srv):
        r = srv.get("/slices")
        self.assertEqual(r.status, 200, r)
        return {s["id"] for s in r.json()["slices"]}

    def files(self):
        return sorted(f for f in os.listdir(self.dir) if f != ".lock")  # the store's lock file stays

    def test_failed_uploads_answer_500_or_507_and_leave_nothing(self):
        acked = set()
        for spec, status, code in PUT_FAULTS:
            srv = self.start(spec)
            acked.add(srv.upload_ok(self.png())["id"])
            failed = self.png()
            r = srv.upload_raw(failed)
            util.assert_error(self, r, status, code)
            self.assertEqual(self.listed(srv), acked, spec)
            self.assertEqual(self.files(), sorted(i + ".svd" for i in acked), "%s left a file behind" % spec)
            # the store still works, and the refused slice is not half there
            info = srv.upload_ok(failed)
            acked.add(info["id"])
            self.assertEqual(srv.get("/slices/%s/original" % info["id"]).status, 200)
            self.assertEqual(srv.stop(), 0, spec + "\n" + srv.log_tail())
        srv = self.start()
        self.assertEqual(self.listed(srv), acked)
        self.assertEqual(len(acked), 2 * len(PUT_FAULTS))

    def test_failed_delete_answers_500(self):
        # unlink #1 fails: the slice stays; fsync #6 (the directory, after the second
        # delete's unlink) fails: the file is gone, so the slice is gone too.
        srv = self.start("unlink:1,fsync:6")
        a = srv.upload_ok(self.png())["id"]
        b = srv.upload_ok(self.png())["id"]
        util.assert_error(self, srv.request("DELETE", "/slices/" + a), 500, "internal")
        self.assertEqual(srv.get("/slices/" + a).status, 200, "a failed delete lost the slice")
        self.assertEqual(srv.get("/slices/%s/original" % a).status, 200)
        self.assertEqual(self.listed(srv), {a, b})
        self.assertEqual(srv.request("DELETE", "/slices/" + a).status, 204)
        util.assert_error(self, srv.request("DELETE", "/slices/" + a), 404, "not_found")
        util.assert_error(self, srv.request("DELETE", "/slices/" + b), 500, "internal")
        util.assert_error(self, srv.get("/slices/" + b), 404, "not_found")
        self.assertEqual(self.listed(srv), set())
        self.assertEqual(srv.stop(), 0)
        srv = self.start()
        self.assertEqual(self.listed(srv), set())

    def test_unreadable_store_refuses_to_start_and_read_errors_are_500(self):
        srv = self.start()
        a = srv.upload_ok(self.png())["id"]
        self.assertEqual(srv.stop(), 0)
        # a listing that fails must not look like an empty store
        for spec in ("list:1", "bogus"):
            with self.assertRaisesRegex(RuntimeError, "exited with 1 before listening"):
                self.start(spec)
        # the index reads parts of files (readrange); read #1 is the first load of the factors
        srv = self.start("readrange:1")
        self.assertEqual(self.listed(srv), set(), "an unreadable slice is listed")
        self.assertEqual(srv.stop(), 0)
        srv = self.start("read:1")
        util.assert_error(self, srv.get("/slices/%s/original" % a), 500, "internal")
        self.assertEqual(srv.get("/slices/%s/original" % a).status, 200)
        self.assertEqual(self.listed(srv), {a})


if __name__ == "__main__":
    unittest.main(verbosity=2)
