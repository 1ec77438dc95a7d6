"""test_openapi.py - the served OpenAPI document against the routes table (api/http.c), the error
table (docs/API.md, util.ERROR_STATUS) and the running server, in each access mode.

The document is generated at start from api/openapi.base.json plus the tables, so these check the
generator's promises: every route and method of the table is an operation and nothing else is,
HEAD mirrors GET, every operation has 405 with Allow and a `default` (500), each error status
carries exactly the codes that go with it and their headers, `security` follows --api-key and
--auth-reads, and the server answers what the document says (Allow, 401, preflights, uploads of
any Content-Type)."""
import json
import os
import re
import subprocess
import sys
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import util  # noqa: E402

import yaml  # noqa: E402  (python3-yaml, a test dependency in scripts/setup.sh)

SOURCE_DIR = os.environ.get("SVDSLICE_SOURCE_DIR",
                            os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
KEY = "openapi-test-key"
ORIGIN = "https://viewer.example"
DOC_METHODS = {"M_GET": "get", "M_POST": "post", "M_DELETE": "delete"}
ALLOW_ORDER = ["GET", "HEAD", "POST", "DELETE", "OPTIONS"]  # the order the server lists them in
ROUTER_BODY_CODES = {"too_large", "unsupported_media_type", "overloaded"}  # the upload layer's (R_BODY)


def parse_routes():
    """The routes table as http.c spells it: [(pattern, {M_*}, {R_*}, {error codes})]."""
    with open(os.path.join(SOURCE_DIR, "api", "http.c"), encoding="utf-8") as f:
        src = f.read()
    m = re.search(r"const ss_route \w+\[\] = \{(.*?)\n\};", src, re.S)
    if not m:
        raise AssertionError("no routes table (ss_route ...[]) in api/http.c")
    rows = []
    for row in re.finditer(r'\{\s*"([^"]*)",\s*([^,]+),\s*(\w+),\s*([^,]+),\s*((?:"[^"]*"\s*)+)\}', m.group(1)):
        pattern, methods, _handler, flags, errors = row.groups()
        rows.append((pattern, {x.strip() for x in methods.split("|")}, {x.strip() for x in flags.split("|")},
                     set("".join(re.findall(r'"([^"]*)"', errors)).split())))
    if len(rows) < 10:
        raise AssertionError("parsed only %d routes from api/http.c" % len(rows))
    return rows


def asset_paths():
    return {"/" + n for n in os.listdir(os.path.join(SOURCE_DIR, "api", "web"))
            if os.path.isfile(os.path.join(SOURCE_DIR, "api", "web", n))}


def expected_paths(routes):
    """{path: ({M_*} allowed, [route rows])}, "/{asset}" expanded to the embedded files."""
    out = {}
    for row in routes:
        for p in (sorted(asset_paths()) if row[0] == "/{asset}" else [row[0]]):
            methods, rows = out.setdefault(p, (set(), []))
            methods |= row[1]
            rows.append(row)
    return out


def allow_value(methods):
    names = {m[2:] for m in methods} | {"OPTIONS"}
    return ", ".join(n for n in ALLOW_ORDER if n in names)


def response_codes(doc, resp):
    """The error codes a response's JSON schema allows ($ref to a per-code schema, or oneOf them)."""
    schema = resp["content"]["application/json"]["schema"]
    refs = [s["$ref"] for s in schema["oneOf"]] if "oneOf" in schema else [schema["$ref"]]
    codes = set()
    for ref in refs:
        name = ref.rsplit("/", 1)[1]
        codes |= set(doc["components"]["schemas"][name]["properties"]["error"]["properties"]["code"]["enum"])
    return codes


def operations(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method != "parameters":
                yield path, method, op


def concrete(path, sid="nosuchslice"):
    return path.replace("{id}", sid)


class OpenApiDocTest(unittest.TestCase):
    servers = {}

    @classmethod
    def setUpClass(cls):
        cls.routes = parse_routes()
        cls.paths = expected_paths(cls.routes)
        modes = {"public": [], "keyed": ["--api-key", KEY], "reads": ["--api-key", KEY, "--auth-reads"],
                 "cors": ["--cors-origin", ORIGIN]}
        for name, args in modes.items():
            cls.servers[name] = util.Server(args).start()
        cls.docs = {name: cls.fetch_doc(srv) for name, srv in cls.servers.items()}

    @classmethod
    def tearDownClass(cls):
        for srv in cls.servers.values():
            srv.stop()
            srv.cleanup()

    @staticmethod
    def fetch_doc(srv):
        r = srv.get("/openapi.json")
        assert r.status == 200, r
        return r.json()

    def route_of(self, path, method):
        """The routes table row serving method on path (method: M_GET, ...)."""
        for row in self.paths[path][1]:
            if method in row[1]:
                return row
        self.fail("no route for %s %s" % (method, path))

    # ------------------------------------------------------------ the two serialisations
    def test_yaml_and_json_are_the_same_document(self):
        for name, srv in self.servers.items():
            y = srv.get("/openapi.yaml")
            self.assertEqual(y.status, 200, y)
            self.assertEqual(y.header("Content-Type"), "application/yaml")
            j = srv.get("/openapi.json")
            self.assertEqual(j.header("Content-Type"), "application/json")
            # safe_load is YAML 1.1: a string the writer left unquoted that 1.1 reads as a bool,
            # number or date would differ here.
            self.assertEqual(yaml.safe_load(y.body.decode("utf-8")), j.json(), name)
            self.assertTrue(str(j.json()["openapi"]).startswith("3.0"))
            for p in ("/openapi.yaml", "/openapi.json"):
                h = srv.request("HEAD", p)
                self.assertEqual((h.status, h.body), (200, b""), p)

    # ------------------------------------------------------------ routes table <-> operations
    def test_operations_are_exactly_the_routes_table(self):
        for name, doc in self.docs.items():
            self.assertEqual(set(doc["paths"]), set(self.paths), name)
            for path, (methods, _rows) in self.paths.items():
                want = {DOC_METHODS[m] for m in methods if m in DOC_METHODS} | {"options"}
                if "M_GET" in methods and "M_HEAD" in methods:
                    want.add("head")
                have = set(doc["paths"][path]) - {"parameters"}
                self.assertEqual(have, want, "%s %s" % (name, path))
            ids = [op["operationId"] for _p, _m, op in operations(doc)]
            self.assertEqual(len(ids), len(set(ids)), "operationIds repeat")

    def test_head_mirrors_get(self):
        doc = self.docs["reads"]
        for path, item in doc["paths"].items():
            if "get" not in item:
                continue
            get, head = item["get"], item["head"]
            self.assertEqual(set(head["responses"]), set(get["responses"]), path)
            self.assertEqual(head.get("security"), get.get("security"), path)
            self.assertEqual(head.get("parameters"), get.get("parameters"), path)
            for status, resp in head["responses"].items():
                self.assertNotIn("content", resp, "HEAD %s %s has a body" % (path, status))
                self.assertEqual(resp.get("headers"), get["responses"][status].get("headers"), (path, status))

    def test_every_operation_has_405_with_allow_and_a_default(self):
        for name, doc in self.docs.items():
            for path, method, op in operations(doc):
                resp = op["responses"]
                self.assertIn("default", resp, (path, method))
                if method != "head":
                    self.assertEqual(response_codes(doc, resp["default"]), {"internal"}, (path, method))
                if method == "options":
                    continue
                allow = resp["405"]["headers"]["Allow"]
                self.assertTrue(allow["required"], (path, method))
                self.assertEqual(allow["schema"]["enum"], [allow_value(self.paths[path][0])], (path, method))

    def test_server_answers_405_and_options_as_documented(self):
        srv, doc = self.servers["public"], self.docs["public"]
        for path, item in doc["paths"].items():
            allow = item["options"]["responses"]["204"]["headers"]["Allow"]["schema"]["enum"][0]
            r = srv.request("OPTIONS", concrete(path))
            self.assertEqual((r.status, r.header("Allow")), (204, allow), path)
            for method in ("GET", "POST", "DELETE", "PUT", "PATCH"):
                if method.lower() in item:
                    continue
                r = srv.request(method, concrete(path), b"" if method in ("POST", "PUT", "PATCH") else None)
                util.assert_error(self, r, 405, "method_not_allowed")
                self.assertEqual(r.header("Allow"), allow, "%s %s" % (method, path))
                self.assertEqual(r.header("Allow"), item["get" if "get" in item else "post"]["responses"]["405"]
                                 ["headers"]["Allow"]["schema"]["enum"][0])

    # ------------------------------------------------------------ error statuses and codes
    def test_error_responses_carry_the_codes_of_the_route(self):
        self.assertEqual(set(self.docs["public"]["components"]["schemas"]["Error"]["properties"]["error"]
                             ["properties"]["code"]["enum"]), set(util.ERROR_STATUS))
        for name, doc in self.docs.items():
            auth_mode = name in ("keyed", "reads")
            for path, method, op in operations(doc):
                if method in ("head", "options"):
                    continue
                pattern, _methods, flags, errors = self.route_of(path, "M_" + method.upper())
                want = set(errors) | {"method_not_allowed"}
                if "R_BODY" in flags:
                    want |= ROUTER_BODY_CODES
                if auth_mode and ("R_AUTH_WRITE" in flags or ("R_AUTH_READ" in flags and name == "reads")):
                    want.add("unauthorized")
                have = set()
                for status, resp in op["responses"].items():
                    if status == "default" or int(status) < 400:
                        continue
                    codes = response_codes(doc, resp)
                    for c in codes:
                        self.assertEqual(util.ERROR_STATUS[c], int(status), "%s %s: %s under %s"
                                         % (method, path, c, status))
                    have |= codes
                self.assertEqual(have, want, "%s %s %s (route %s)" % (name, method, path, pattern))

    def test_required_response_headers(self):
        doc = self.docs["keyed"]
        p = doc["paths"]

        def required(resp, header):
            h = resp.get("headers", {}).get(header)
            return bool(h and h.get("required"))

        self.assertTrue(required(p["/slices"]["post"]["responses"]["201"], "Location"))
        for method in ("get", "head"):
            rec = p["/reconstruct"][method]["responses"]
            for h in ("ETag", "X-Backend", "Server-Timing", "Cache-Control"):
                self.assertTrue(required(rec["200"], h), (method, h))
            for h in ("ETag", "X-Backend", "Cache-Control"):
                self.assertTrue(required(rec["304"], h), (method, h))
            # 503 is backend_unavailable or overloaded there: Retry-After only with the latter
            self.assertIn("Retry-After", rec["503"]["headers"])
            self.assertFalse(required(rec["503"], "Retry-After"))
        # an upload's 503 is only ever overloaded
        self.assertTrue(required(p["/slices"]["post"]["responses"]["503"], "Retry-After"))
        for path, method in (("/slices", "post"), ("/slices/{id}", "delete")):
            r401 = p[path][method]["responses"]["401"]
            self.assertTrue(required(r401, "WWW-Authenticate"))
            self.assertEqual(r401["headers"]["WWW-Authenticate"]["schema"]["enum"], ["Bearer"])
        # and the server sends them
        srv = self.servers["keyed"]
        png = util.png_encode(util.phantom(24, 20, 8, seed=901))
        up = srv.upload_raw(png, headers={"Authorization": "Bearer " + KEY})
        self.assertEqual(up.status, 201, up)
        self.assertEqual(up.header("Location"), "/slices/" + up.json()["id"])
        rec = srv.get("/reconstruct?id=%s&k=3" % up.json()["id"])
        for h in ("ETag", "X-Backend", "Server-Timing", "Cache-Control"):
            self.assertTrue(rec.header(h), h)
        r = srv.upload_raw(png, headers={"Authorization": "Bearer wrong"})
        util.assert_error(self, r, 401, "unauthorized")
        self.assertEqual(r.header("WWW-Authenticate"), "Bearer")

    # ------------------------------------------------------------ security per mode
    def test_security_follows_the_flags(self):
        for name, doc in self.docs.items():
            self.assertIn("bearer", doc["components"]["securitySchemes"])
            self.assertNotIn("security", doc, "no document-wide requirement")
            for path, method, op in operations(doc):
                if method == "options":
                    want = False
                else:
                    _p, _m, flags, _e = self.route_of(path, "M_" + ("GET" if method == "head" else method.upper()))
                    want = name in ("keyed", "reads") and (
                        "R_AUTH_WRITE" in flags or ("R_AUTH_READ" in flags and name == "reads"))
                sec = op.get("security")
                self.assertEqual(sec, [{"bearer": []}] if want else None, "%s %s %s" % (name, method, path))
                self.assertEqual("401" in op["responses"], want, "%s %s %s 401" % (name, method, path))

    def test_server_asks_for_the_key_where_the_document_says(self):
        for name in ("public", "keyed", "reads"):
            srv, doc = self.servers[name], self.docs[name]
            for path, method, op in operations(doc):
                body = b"" if method == "post" else None
                r = srv.request(method.upper(), concrete(path), body)
                if op.get("security"):
                    self.assertEqual(r.status, 401, "%s %s %s" % (name, method, path))
                    self.assertEqual(r.header("WWW-Authenticate"), "Bearer")
                    ok = srv.request(method.upper(), concrete(path), body, {"Authorization": "Bearer " + KEY})
                    self.assertNotEqual(ok.status, 401, "%s %s %s with the key" % (name, method, path))
                else:
                    self.assertNotEqual(r.status, 401, "%s %s %s: %r" % (name, method, path, r))

    # ------------------------------------------------------------ uploads, CORS
    def test_upload_accepts_any_media_type(self):
        content = self.docs["public"]["paths"]["/slices"]["post"]["requestBody"]["content"]
        self.assertTrue({"image/png", "multipart/form-data", "*/*"} <= set(content), content)
        srv = self.servers["public"]
        png = util.png_encode(util.phantom(26, 22, 8, seed=902))
        # curl --data-binary's default type, and none at all
        for i, ctype in enumerate(("application/x-www-form-urlencoded", "application/octet-stream", None)):
            r = srv.upload_raw(png, query="?name=t%d" % i, content_type=ctype)
            self.assertIn(r.status, (200, 201), "%s: %r" % (ctype, r))

    def test_cors_preflight_headers_are_documented_and_sent(self):
        doc, srv = self.docs["cors"], self.servers["cors"]
        for path, item in doc["paths"].items():
            headers = item["options"]["responses"]["204"]["headers"]
            for h in ("Allow", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
                      "Access-Control-Max-Age"):
                self.assertTrue(headers[h]["required"], (path, h))
            r = srv.request("OPTIONS", concrete(path), headers={"Origin": ORIGIN,
                                                                "Access-Control-Request-Method": "GET"})
            self.assertEqual(r.status, 204, path)
            for h in headers:
                self.assertTrue(r.header(h), (path, h))
            self.assertEqual(r.header("Access-Control-Allow-Methods"),
                             headers["Access-Control-Allow-Methods"]["schema"]["enum"][0])
        for path in self.docs["public"]["paths"]:
            self.assertNotIn("Access-Control-Allow-Methods",
                             self.docs["public"]["paths"][path]["options"]["responses"]["204"]["headers"])

    def test_document_keeps_its_hand_written_parts(self):
        doc = self.docs["public"]
        with open(os.path.join(SOURCE_DIR, "api", "openapi.base.json"), encoding="utf-8") as f:
            base = json.load(f)
        for path, item in base["paths"].items():
            for method, op in item.items():
                if method == "parameters":
                    continue
                served = doc["paths"][path][method]
                for key in ("summary", "operationId", "parameters", "requestBody"):
                    self.assertEqual(served.get(key), op.get(key), (path, method, key))
                for status, resp in op["responses"].items():
                    self.assertEqual(served["responses"][status], resp, (path, method, status))
        # the version is the server's, not the base's
        out = subprocess.run([util.BIN, "--version"], capture_output=True, text=True, check=True).stdout
        self.assertIn(doc["info"]["version"], out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
