"""test_auth_cors.py - --api-key, --auth-reads, SVDSLICE_API_KEY and --cors-origin."""
import os
import sys
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import util  # noqa: E402

KEY = "s3cr3t-key_42"
ORIGIN = "https://viewer.example.org"


def bearer(key):
    return {"Authorization": "Bearer " + key}


class AuthTest(unittest.TestCase):
    def assert_401(self, r):
        util.assert_error(self, r, 401, "unauthorized")
        self.assertTrue((r.header("WWW-Authenticate") or "").startswith("Bearer"), r)

    def wrong_auth(self):
        return [{}, bearer("nope"), bearer(KEY + "x"), bearer(KEY[:-1]), {"Authorization": KEY},
                {"Authorization": "Basic " + KEY}, bearer("")]

    def writes_need_key(self, srv, key):
        png = util.png_encode(util.phantom(30, 25, 8, seed=500))
        for h in self.wrong_auth():
            self.assert_401(srv.upload_raw(png, headers=h))
            self.assert_401(srv.upload_multipart(png, headers=h))
        r = srv.upload_raw(png, headers=bearer(key))
        self.assertEqual(r.status, 201, r)
        sid = r.json()["id"]
        self.assertEqual(srv.get("/slices/" + sid, bearer(key)).status, 200)
        for h in self.wrong_auth():
            self.assert_401(srv.request("DELETE", "/slices/" + sid, headers=h))
        self.assertEqual(srv.get("/slices/" + sid, bearer(key)).status, 200, "a refused DELETE deleted")
        return sid

    def read_paths(self, sid):
        return ["/slices", "/slices/" + sid, "/slices/%s/original" % sid, "/slices/%s/factors" % sid,
                "/reconstruct?id=%s&k=2" % sid, "/quality?id=%s&k=2" % sid, "/metrics"]

    def test_api_key_guards_writes_reads_stay_open(self):
        with util.Server(["--api-key", KEY]) as srv:
            sid = self.writes_need_key(srv, KEY)
            for p in self.read_paths(sid) + ["/", "/healthz", "/openapi.yaml", "/backends"]:
                self.assertEqual(srv.get(p).status, 200, p)
                self.assertEqual(srv.request("HEAD", p).status, 200, "HEAD " + p)
            self.assertEqual(srv.request("DELETE", "/slices/" + sid, headers=bearer(KEY)).status, 204)

    def test_auth_reads_closes_reads_but_not_public_routes(self):
        with util.Server(["--api-key", KEY, "--auth-reads"]) as srv:
            sid = self.writes_need_key(srv, KEY)
            for p in self.read_paths(sid):
                for h in self.wrong_auth():
                    self.assert_401(srv.get(p, h))
                h = srv.request("HEAD", p)
                self.assertEqual(h.status, 401, "HEAD " + p)
                self.assertTrue((h.header("WWW-Authenticate") or "").startswith("Bearer"))
                self.assertEqual(srv.get(p, bearer(KEY)).status, 200, p)
            for p in ("/", "/healthz", "/openapi.yaml"):
                self.assertEqual(srv.get(p).status, 200, p)
            for p in ("/slices", "/reconstruct?id=%s" % sid, "/healthz"):
                r = srv.request("OPTIONS", p)
                self.assertNotEqual(r.status, 401, "OPTIONS %s needs no key" % p)
                self.assertLess(r.status, 500)

    def test_env_key_and_flag_wins(self):
        with util.Server(env={"SVDSLICE_API_KEY": "from-env"}) as srv:
            self.writes_need_key(srv, "from-env")
        with util.Server(["--api-key", KEY], env={"SVDSLICE_API_KEY": "from-env"}) as srv:
            png = util.png_encode(util.phantom(30, 26, 8, seed=510))
            self.assert_401(srv.upload_raw(png, headers=bearer("from-env")))
            self.assertEqual(srv.upload_raw(png, headers=bearer(KEY)).status, 201)

    def test_env_auth_reads(self):
        with util.Server(env={"SVDSLICE_API_KEY": KEY, "SVDSLICE_AUTH_READS": "1"}) as srv:
            self.assert_401(srv.get("/slices"))
            self.assertEqual(srv.get("/slices", bearer(KEY)).status, 200)
            self.assertEqual(srv.get("/healthz").status, 200)


class CorsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = util.Server(["--cors-origin", ORIGIN, "--api-key", KEY, "--auth-reads"]).start()
        r = cls.srv.upload_raw(util.png_encode(util.phantom(40, 30, 8, seed=520)), headers=bearer(KEY))
        assert r.status == 201, r
        cls.sid = r.json()["id"]

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        cls.srv.cleanup()

    @staticmethod
    def tokens(value):
        return {t.strip().lower() for t in (value or "").split(",") if t.strip()}

    def test_preflight(self):
        for path, method in (("/reconstruct?id=%s&k=3" % self.sid, "GET"), ("/slices", "POST"),
                             ("/slices/" + self.sid, "DELETE")):
            r = self.srv.request("OPTIONS", path, headers={
                "Origin": ORIGIN, "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization, content-type"})
            self.assertIn(r.status, (200, 204), r)  # no key needed for a preflight
            self.assertEqual(r.header("Access-Control-Allow-Origin"), ORIGIN)
            self.assertIn(method.lower(), self.tokens(r.header("Access-Control-Allow-Methods")), r)
            allowed = self.tokens(r.header("Access-Control-Allow-Headers"))
            self.assertTrue({"authorization", "content-type"} <= allowed, allowed)

    def test_responses_carry_origin_and_expose_headers(self):
        r = self.srv.get("/reconstruct?id=%s&k=3" % self.sid, {"Origin": ORIGIN, **bearer(KEY)})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("Access-Control-Allow-Origin"), ORIGIN)
        exposed = self.tokens(r.header("Access-Control-Expose-Headers"))
        self.assertTrue({"etag", "x-backend", "server-timing"} <= exposed, exposed)
        r = self.srv.get("/slices", {"Origin": ORIGIN, **bearer(KEY)})
        self.assertEqual(r.header("Access-Control-Allow-Origin"), ORIGIN)
        # a browser can read the error too (401 without the key)
        r = self.srv.get("/slices", {"Origin": ORIGIN})
        self.assertEqual(r.status, 401)
        self.assertEqual(r.header("Access-Control-Allow-Origin"), ORIGIN)

    def test_no_cors_headers_without_the_flag(self):
        with util.Server() as srv:
            r = srv.get("/healthz", {"Origin": ORIGIN})
            self.assertEqual(r.status, 200)
            self.assertIsNone(r.header("Access-Control-Allow-Origin"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
