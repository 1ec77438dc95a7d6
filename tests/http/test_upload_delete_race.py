"""test_upload_delete_race.py - uploads racing DELETEs of the same content never answer 5xx.

Ids are derived from the content, so re-uploading a slice while a client deletes it races
the two on one id. Either order is a valid outcome (201/200 for the upload, 204/404 for the
delete); a 500 "slice vanished" is not."""
import os
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import util  # noqa: E402

SECONDS = 6.0
UPLOADERS = 12
DELETERS = 4
BUSY = 6


class UploadDeleteRaceTest(unittest.TestCase):
    def test_upload_racing_delete_of_same_content_never_5xx(self):
        with util.Server(["--workers", "8"]) as srv:
            # Small, so each upload is quick and the race window is hit often.
            png = util.png_encode(util.phantom(24, 20, 8, seed=990))
            sid = srv.upload_ok(png)["id"]
            heavy = srv.upload_ok(util.png_encode(util.phantom(160, 160, 8, seed=991)))["id"]
            stop = time.monotonic() + SECONDS
            seen = {"upload": {}, "delete": {}}
            bad = []
            lock = threading.Lock()

            def note(kind, r):
                with lock:
                    seen[kind][r.status] = seen[kind].get(r.status, 0) + 1
                    if r.status >= 500 and len(bad) < 5:
                        bad.append((kind, r))

            def uploader():
                while time.monotonic() < stop:
                    r = srv.upload_raw(png)
                    note("upload", r)
                    if r.status in (200, 201):
                        body = r.json()
                        loc = r.header("Location") if r.status == 201 else "/slices/" + sid
                        if body.get("id") != sid or body.get("width") != 20 or loc != "/slices/" + sid:
                            with lock:
                                bad.append(("upload body", r))

            def deleter():
                while time.monotonic() < stop:
                    note("delete", srv.request("DELETE", "/slices/" + sid))

            def busy():
                # CPU-heavy reconstructions keep the cores oversubscribed, as under the mixed load of
                # the report, so threads are preempted at arbitrary points
                while time.monotonic() < stop:
                    srv.get("/reconstruct?id=%s&backend=loops3" % heavy, {"Cache-Control": "no-cache"})

            threads = [threading.Thread(target=uploader) for _ in range(UPLOADERS)]
            threads += [threading.Thread(target=busy) for _ in range(BUSY)]
            threads += [threading.Thread(target=deleter) for _ in range(DELETERS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.assertTrue(srv.alive(), srv.log_tail())
            self.assertEqual(bad, [], "%r\n%s" % (seen, srv.log_tail()))
            self.assertTrue(set(seen["upload"]) <= {200, 201}, seen)
            self.assertTrue(set(seen["delete"]) <= {204, 404}, seen)
            # both sides of the race happened
            self.assertIn(201, seen["upload"], seen)
            self.assertIn(204, seen["delete"], seen)
            print("outcomes: %r" % seen, file=sys.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
