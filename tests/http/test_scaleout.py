"""test_scaleout.py - three `svdslice serve` replicas on one PostgreSQL store, behind nginx.

A real PostgreSQL (initdb into a temporary directory, run as the `postgres` user when the test
runs as root, listening on a unix socket only) and Debian's nginx with its own config (hash on
the slice id, so each replica's caches stay warm). Checks: an upload through nginx is read from
every replica directly; a delete through nginx is gone everywhere (also from each replica's
response cache); two replicas storing the same upload at once give one row; with a replica
killed nginx keeps answering; with PostgreSQL stopped the replicas answer 503 store_unavailable
(never 500, never a hang) and within 10 s of its return requests succeed with nothing
acknowledged lost. The OpenAPI document of a replica lists store_unavailable.
Volumes too: a real NIfTI uploaded through nginx is stored as one head row and one row per
section, served byte-identically by every replica, stored once when two replicas factorise it at
once, deleted through nginx -> 404 on every replica, 503 store_unavailable with PostgreSQL down and
served again after; a replica's --quota-mb counts the volumes every replica stored.

Skips with exit code 77 (ctest: SKIP_RETURN_CODE) only when PostgreSQL's or nginx's binaries are
not installed (scripts/setup.sh test installs postgresql and nginx).
"""
import glob
import gzip
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import util  # noqa: E402

SKIP = 77
REPLICAS = 3


def pg_bindir():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    for d in reversed(dirs):
        if all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "pg_ctl", "psql")):
            return d
    return None


NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


class Postgres:
    """A throwaway cluster: trust auth, unix socket only, user `svdslice`."""

    def __init__(self, bindir):
        self.bindir = bindir
        self.root = tempfile.mkdtemp(prefix="svdslice-pg-")
        os.chmod(self.root, 0o755)
        self.data = os.path.join(self.root, "data")
        self.sock = os.path.join(self.root, "sock")
        self.log = os.path.join(self.root, "pg.log")
        self.port = util.free_port()
        self.as_user = []
        os.mkdir(self.sock)
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            os.chown(self.sock, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.run("initdb", "-D", self.data, "-U", "svdslice", "-A", "trust", "--no-sync", "-E", "UTF8")
        self.dsn = "postgresql://svdslice@/postgres?host=%s&port=%d" % (self.sock, self.port)

    def run(self, tool, *args, check=True):
        p = subprocess.run(self.as_user + [os.path.join(self.bindir, tool)] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        if check and p.returncode != 0:
            raise RuntimeError("%s %s failed: %s" % (tool, args, p.stdout.decode("utf-8", "replace")[-2000:]))
        return p

    def start(self):
        opts = "-c listen_addresses='' -k %s -p %d" % (self.sock, self.port)
        self.run("pg_ctl", "-D", self.data, "-l", self.log, "-o", opts, "-w", "-t", "30", "start")

    def stop(self):
        self.run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "30", "stop", check=False)

    def sql(self, query, db="postgres"):
        p = subprocess.run([os.path.join(self.bindir, "psql"), "-h", self.sock, "-p", str(self.port),
                            "-U", "svdslice", "-d", db, "-tAc", query],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        if p.returncode != 0:
            raise RuntimeError("psql %r: %s" % (query, p.stdout.decode()))
        return p.stdout.decode().strip()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
pid %(root)s/nginx.pid;
error_log %(root)s/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %(root)s/body;
    proxy_temp_path %(root)s/proxy;
    fastcgi_temp_path %(root)s/fastcgi;
    uwsgi_temp_path %(root)s/uwsgi;
    scgi_temp_path %(root)s/scgi;
    client_max_body_size 64m;
    client_body_buffer_size 64m;
    # The slice or volume id picks the replica (path /slices/ID..., /volumes/ID... or ?id=ID), so
    # each one's factors and response caches stay warm; requests without an id (uploads, listings)
    # spread.
    map $uri $path_id { ~^/(?:slices|volumes)/(?<sid>[A-Za-z0-9_-]+) $sid; default ""; }
    map "$path_id$arg_id" $slice_key { "" $request_id; default "$path_id$arg_id"; }
    upstream svdslice {
        hash $slice_key consistent;
%(servers)s
        keepalive 16;  # reuse connections to the replicas: a connect per request costs more than a cached answer
    }
    server {
        listen 127.0.0.1:%(port)d;
        location / {
            proxy_pass http://svdslice;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
        }
    }
}
"""


class Nginx:
    def __init__(self, ports):
        self.root = tempfile.mkdtemp(prefix="svdslice-nginx-")
        os.chmod(self.root, 0o755)
        self.port = util.free_port()
        servers = "\n".join("        server 127.0.0.1:%d max_fails=1 fail_timeout=30s;" % p for p in ports)
        self.conf = os.path.join(self.root, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(NGINX_CONF % {"root": self.root, "servers": servers, "port": self.port})
        self.proc = subprocess.Popen([NGINX, "-p", self.root, "-c", self.conf, "-e", self.root + "/error.log"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not util.wait_until(self.listening, 15):
            why = self.log_tail()
            self.stop()
            raise RuntimeError("nginx did not listen: %s" % why)

    def listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def request(self, method, path, body=None, headers=None):
        return util.request("127.0.0.1", self.port, method, path, body, headers, timeout=30)

    def log_tail(self):
        try:
            with open(os.path.join(self.root, "error.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def stop(self):
        util.stop_process(self.proc)
        shutil.rmtree(self.root, ignore_errors=True)


def phantom_png(seed, size=96):
    return util.png_encode(util.phantom(size, size + 8, 8, seed=seed))


# Debian's ITK example: 128x128x62 uint8, skull-stripped.
NII_PATH = util.test_data("KmeansTest_T1RawSkullStrip.nii.gz")
NII = util.read_bytes(NII_PATH) if os.path.exists(NII_PATH) else None  # main() says why it is missing
NII_TYPE = {"Content-Type": "application/gzip"}
READY_S = 120


def svv_sections(blob):
    """The .svv's index table (engine/volume.h): [(offset, length, crc32)], checked to be back to back
    from the end of the table to the end of the blob."""
    nslices = int.from_bytes(blob[32:36], "little")  # after magic and 6 u32s
    first = 1024 + (nslices + 1) * 24 + 4
    out, at = [], first
    for i in range(nslices + 1):
        off, n, crc = (int.from_bytes(blob[1024 + 24 * i + a:1024 + 24 * i + b], "little")
                       for a, b in ((0, 8), (8, 16), (16, 20)))
        assert off == at, (i, off, at)
        out.append((off, n, crc))
        at += n
    assert at == len(blob), (at, len(blob))
    return first, out


class ScaleOut(unittest.TestCase):
    """One cluster for the whole class; the tests run in name order and build on each other."""

    @classmethod
    def setUpClass(cls):
        cls.pg = Postgres(pg_bindir())
        cls.pg.start()
        cls.replicas = []
        try:
            for _ in range(REPLICAS):
                cls.replicas.append(util.Server(["--store", cls.pg.dsn, "--store-connections", "4",
                                                 "--workers", "2"]).start())
            cls.nginx = Nginx([r.port for r in cls.replicas])
        except Exception:
            cls.tearDownClass()
            raise
        cls.acknowledged = {}  # id -> the upload's PNG, for "nothing acknowledged lost"

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "nginx", None):
            cls.nginx.stop()
        for r in cls.replicas:
            if r.alive():
                r.kill()
            r.cleanup()
        cls.pg.cleanup()

    def live(self):
        return [r for r in self.replicas if r.alive()]

    def logs(self):
        return "\n".join(r.log_tail(1500) for r in self.replicas)

    def assert_same_pixels(self, png_a, png_b):
        (a, da), (b, db) = util.png_decode(png_a), util.png_decode(png_b)
        self.assertEqual(da, db)
        self.assertTrue(util.np.array_equal(a, b), "stored original differs from the upload")

    def upload_nginx(self, png):
        r = self.nginx.request("POST", "/slices", png, {"Content-Type": "image/png"})
        self.assertIn(r.status, (200, 201), "%r\n%s" % (r, self.logs()))
        sid = r.json()["id"]
        self.acknowledged[sid] = png
        return sid

    def at_once_on_two(self, upload, statuses):
        """upload(replica) on replicas 0 and 1 at the same moment; both answer one of statuses with
        the same id, which is returned."""
        barrier = threading.Barrier(2)
        out = [None, None]

        def up(i):
            barrier.wait()
            out[i] = upload(self.replicas[i])

        threads = [threading.Thread(target=up, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for r in out:
            self.assertIsNotNone(r)
            self.assertIn(r.status, statuses, r)
        ids = {r.json()["id"] for r in out}
        self.assertEqual(len(ids), 1, ids)
        return ids.pop()

    def test_1_upload_through_nginx_read_from_every_replica(self):
        sid = self.upload_nginx(phantom_png(1))
        self.assertEqual(self.pg.sql("SELECT count(*) FROM svdslice_slices WHERE id = '%s'" % sid), "1")
        pngs = set()
        for rep in self.replicas:
            info = rep.get("/slices/%s" % sid)
            self.assertEqual(info.status, 200, "%r\n%s" % (info, rep.log_tail()))
            self.assertEqual(info.json()["id"], sid)
            self.assertEqual(info.json()["upload_bytes"], len(self.acknowledged[sid]))  # kept in the row
            metrics = util.parse_prometheus(rep.get("/metrics").body.decode())
            self.assertEqual(util.metric_sum(metrics, "svdslice_slices"), len(self.acknowledged))
            self.assertIn(sid, [s["id"] for s in rep.get("/slices").json()["slices"]])
            rec = rep.get("/reconstruct?id=%s&k=4" % sid)
            self.assertEqual(rec.status, 200, rec)
            pngs.add(rec.body)
            orig = rep.get("/slices/%s/original" % sid)
            self.assertEqual(orig.status, 200, orig)
            self.assert_same_pixels(orig.body, self.acknowledged[sid])
        self.assertEqual(len(pngs), 1, "replicas rebuilt different images from one row")
        # A slice stored directly in PostgreSQL by another replica is found on a cache miss too.
        listed = self.nginx.request("GET", "/slices").json()["slices"]
        self.assertEqual(sorted(s["id"] for s in listed), sorted(self.acknowledged))

    def test_1b_without_the_original_every_replica_says_so(self):
        # what a slice keeps comes from its stored header: every replica reads the same
        png = phantom_png(11)
        r = self.replicas[0].upload_raw(png, "?psnr=40&keep-original=false")
        self.assertEqual(r.status, 201, r)
        info = r.json()
        for rep in self.replicas:
            got = rep.get("/slices/" + info["id"]).json()
            self.assertEqual((got["original_kept"], got["upload_bytes"], got["stored_bytes"], got["rank"]),
                             (False, len(png), info["stored_bytes"], info["rank"]))
            listed = {s["id"]: s for s in rep.get("/slices").json()["slices"]}
            self.assertFalse(listed[info["id"]]["original_kept"])
            util.assert_error(self, rep.get("/slices/%s/original" % info["id"]), 404, "original_not_kept")
            self.assertEqual(rep.get("/reconstruct?id=" + info["id"]).status, 200)
        kept = self.replicas[1].upload_ok(phantom_png(12))
        for rep in self.replicas:
            self.assertTrue(rep.get("/slices/" + kept["id"]).json()["original_kept"])
            self.assertEqual(rep.get("/slices/%s/original" % kept["id"]).status, 200)
        for sid in (info["id"], kept["id"]):
            self.assertEqual(self.replicas[0].request("DELETE", "/slices/" + sid).status, 204)

    def test_2_delete_through_nginx_is_gone_everywhere(self):
        sid = self.upload_nginx(phantom_png(2))
        for rep in self.replicas:  # warm every replica's index, factors and response caches
            for _ in range(2):
                self.assertEqual(rep.get("/reconstruct?id=%s&k=3" % sid).status, 200)
        t0 = time.monotonic()
        r = self.nginx.request("DELETE", "/slices/%s" % sid)
        self.assertEqual(r.status, 204, r)
        # every replica acknowledged its purge (a missing ack would hold the answer for 2 s)
        print("delete through nginx, every replica confirmed: %.1f ms" % ((time.monotonic() - t0) * 1e3),
              file=sys.stderr)
        self.assertLess(time.monotonic() - t0, 1.5, "the delete waited out its acknowledgements\n" + self.logs())
        del self.acknowledged[sid]
        for rep in self.replicas:
            for path in ("/slices/%s" % sid, "/reconstruct?id=%s&k=3" % sid, "/slices/%s/factors" % sid):
                util.assert_error(self, rep.get(path), 404, "not_found")
            self.assertNotIn(sid, [s["id"] for s in rep.get("/slices").json()["slices"]])
        self.assertEqual(self.pg.sql("SELECT count(*) FROM svdslice_slices WHERE id = '%s'" % sid), "0")
        util.assert_error(self, self.nginx.request("DELETE", "/slices/%s" % sid), 404, "not_found")

    def test_3_same_upload_on_two_replicas_at_once_is_one_row(self):
        png = phantom_png(3)
        sid = self.at_once_on_two(lambda rep: rep.upload_raw(png), (200, 201))
        self.acknowledged[sid] = png
        self.assertEqual(self.pg.sql("SELECT count(*) FROM svdslice_slices WHERE id = '%s'" % sid), "1")
        self.assertEqual(self.pg.sql("SELECT count(*) - count(DISTINCT id) FROM svdslice_slices"), "0")
        for rep in self.replicas:
            self.assertEqual(rep.get("/slices/%s" % sid).status, 200)

    def wait_volume(self, ask, vid, ok=(200,), timeout=READY_S):
        """Polls ask(path) until the volume is ready or failed; statuses in ok are tolerated meanwhile
        (through nginx: 404 from replicas that learn of it only once it is stored)."""
        deadline = time.monotonic() + timeout
        while True:
            r = ask("/volumes/" + vid)
            self.assertIn(r.status, ok + (200,), "%r\n%s" % (r, self.logs()))
            if r.status == 200 and r.json()["state"] in ("ready", "failed"):
                return r.json()
            self.assertLess(time.monotonic(), deadline, "volume %s not ready: %r" % (vid, r))
            time.sleep(0.05)

    def volume_rows(self, vid):
        return (int(self.pg.sql("SELECT count(*) FROM svdslice_volumes WHERE id = '%s'" % vid)),
                int(self.pg.sql("SELECT count(*) FROM svdslice_volume_sections WHERE volume_id = '%s'" % vid)))

    def test_3a_volume_through_nginx_served_by_every_replica(self):
        r = self.nginx.request("POST", "/volumes?name=brain", NII, NII_TYPE)
        self.assertIn(r.status, (200, 202), "%r\n%s" % (r, self.logs()))
        vid = r.json()["id"]
        info = self.wait_volume(lambda path: self.nginx.request("GET", path), vid, ok=(404,))
        self.assertEqual(info["state"], "ready", info)
        type(self).volume = vid
        nslices = info["slices_total"]
        self.assertEqual(nslices, 62)
        # One head row, one row per section (0 the voxels, 1 + s slice s), the metadata in columns.
        self.assertEqual(self.volume_rows(vid), (1, nslices + 1))
        self.assertEqual(self.pg.sql("SELECT min(section) || ' ' || max(section) FROM svdslice_volume_sections"
                                     " WHERE volume_id = '%s'" % vid), "0 %d" % nslices)
        self.assertEqual(self.pg.sql("SELECT nx || 'x' || ny || 'x' || nz || ' ' || datatype || ' ' || axis || ' '"
                                     " || nslices || ' ' || name FROM svdslice_volumes WHERE id = '%s'" % vid),
                         "128x128x62 2 2 62 brain")
        # The rows rejoin into the blob: head + sections in order, each section's checksum as indexed.
        head = bytes.fromhex(self.pg.sql("SELECT encode(head, 'hex') FROM svdslice_volumes WHERE id = '%s'" % vid))
        secs = [bytes.fromhex(h) for h in self.pg.sql(
            "SELECT encode(data, 'hex') FROM svdslice_volume_sections WHERE volume_id = '%s' ORDER BY section"
            % vid).split()]
        blob = head + b"".join(secs)
        first, index = svv_sections(blob)
        self.assertEqual(len(head), first)
        self.assertEqual([len(x) for x in secs], [n for _, n, _ in index])
        self.assertEqual([zlib.crc32(x) for x in secs], [c for _, _, c in index])
        self.assertEqual(int(self.pg.sql("SELECT bytes FROM svdslice_volumes WHERE id = '%s'" % vid)), len(blob))
        self.assertEqual(info["stored_bytes"], len(blob))
        # Every replica directly: listed, shown, its slices and its .nii.gz byte-identical.
        import nibabel as nib  # Debian's /usr/bin/python3 has it (the test set)
        orig = nib.Nifti1Image.from_bytes(gzip.decompress(NII)).get_fdata()
        pngs, niis = set(), set()
        for rep in self.replicas:
            self.assertIn(vid, [v["id"] for v in rep.get("/volumes").json()["volumes"]], rep.log_tail())
            got = rep.get("/volumes/" + vid)
            self.assertEqual(got.status, 200, got)
            self.assertEqual((got.json()["state"], got.json()["stored_bytes"]), ("ready", len(blob)))
            png = rep.get("/volumes/%s/reconstruct?k=5&axis=2&index=31" % vid)
            self.assertEqual(png.status, 200, "%r\n%s" % (png, rep.log_tail()))
            pngs.add(png.body)
            full = rep.get("/volumes/%s/reconstruct?k=128&format=nifti" % vid)
            self.assertEqual(full.status, 200, full)
            niis.add(full.body)
        self.assertEqual(len(pngs), 1, "replicas rebuilt different slices from one volume")
        self.assertEqual(len(niis), 1, "replicas wrote different .nii.gz from one volume")
        back = nib.Nifti1Image.from_bytes(gzip.decompress(niis.pop())).get_fdata()
        self.assertTrue(util.np.array_equal(back, orig), "the volume at full rank is not the upload")
        # The same file again, through nginx to any replica: 200 and the same id, nothing stored twice.
        again = self.nginx.request("POST", "/volumes?name=brain", NII, NII_TYPE)
        self.assertEqual((again.status, again.json()["id"]), (200, vid), again)
        self.assertEqual(self.volume_rows(vid), (1, nslices + 1))

    def test_3b_same_volume_on_two_replicas_at_once_is_one_copy(self):
        vid = self.at_once_on_two(lambda rep: rep.request("POST", "/volumes?axis=1", NII, NII_TYPE), (200, 202))
        type(self).volume_axis1 = vid
        infos = [self.wait_volume(self.replicas[i].get, vid) for i in range(2)]
        for info in infos:
            self.assertEqual(info["state"], "ready", "%r\n%s" % (info, self.logs()))
        self.assertEqual(infos[0]["stored_bytes"], infos[1]["stored_bytes"])
        self.assertEqual(self.volume_rows(vid), (1, 128 + 1))
        self.assertEqual(self.pg.sql("SELECT count(*) - count(DISTINCT (volume_id, section))"
                                     " FROM svdslice_volume_sections"), "0")
        bodies = {rep.get("/volumes/%s/reconstruct?k=3&index=64" % vid).body for rep in self.replicas}
        self.assertEqual(len(bodies), 1)

    def test_3bb_volume_without_its_original_on_every_replica(self):
        """keep-original=false: an empty voxel section (a row of 0 bytes) and quantised slices;
        every replica serves the same stored ranks and says the original was not kept."""
        r = self.nginx.request("POST", "/volumes?psnr=40&keep-original=false", NII, NII_TYPE)
        self.assertIn(r.status, (200, 202), "%r\n%s" % (r, self.logs()))
        vid = r.json()["id"]
        info = self.wait_volume(lambda path: self.nginx.request("GET", path), vid, ok=(404,))
        self.assertEqual(info["state"], "ready", info)
        self.assertEqual(self.volume_rows(vid), (1, 62 + 1))
        self.assertEqual(self.pg.sql("SELECT length(data) FROM svdslice_volume_sections"
                                     " WHERE volume_id = '%s' AND section = 0" % vid), "0")
        self.assertEqual(int(self.pg.sql("SELECT bytes FROM svdslice_volumes WHERE id = '%s'" % vid)),
                         info["stored_bytes"])
        niis = set()
        for rep in self.replicas:
            got = rep.get("/volumes/" + vid).json()
            self.assertEqual((got["original_kept"], got["target"], got["upload_bytes"]), (False, {"psnr": 40}, len(NII)))
            full = rep.get("/volumes/%s/reconstruct?k=128&format=nifti" % vid)
            self.assertEqual(full.status, 200, "%r\n%s" % (full, rep.log_tail()))
            niis.add(full.body)
        self.assertEqual(len(niis), 1, "replicas wrote different .nii.gz from one volume")
        self.assertEqual(self.nginx.request("DELETE", "/volumes/" + vid).status, 204)

    def test_3c_volume_delete_through_nginx_is_gone_everywhere(self):
        vid = self.volume_axis1
        for rep in self.replicas:  # warm every replica's index, decoded volume and response cache
            for _ in range(2):
                self.assertEqual(rep.get("/volumes/%s/reconstruct?k=4&index=10" % vid).status, 200)
        t0 = time.monotonic()
        r = self.nginx.request("DELETE", "/volumes/" + vid)
        self.assertEqual(r.status, 204, "%r\n%s" % (r, self.logs()))
        print("volume delete through nginx, every replica confirmed: %.1f ms" % ((time.monotonic() - t0) * 1e3),
              file=sys.stderr)
        self.assertLess(time.monotonic() - t0, 1.5, "the delete waited out its acknowledgements\n" + self.logs())
        self.assertEqual(self.volume_rows(vid), (0, 0))
        for rep in self.replicas:
            for path in ("/volumes/" + vid, "/volumes/%s/reconstruct?k=4&index=10" % vid,
                         "/volumes/%s/reconstruct?k=4&format=nifti" % vid):
                util.assert_error(self, rep.get(path), 404, "not_found")
            self.assertNotIn(vid, [v["id"] for v in rep.get("/volumes").json()["volumes"]])
            self.assertIn(self.volume, [v["id"] for v in rep.get("/volumes").json()["volumes"]])
        util.assert_error(self, self.nginx.request("DELETE", "/volumes/" + vid), 404, "not_found")

    def test_4_a_killed_replica_leaves_nginx_answering(self):
        sids = [self.upload_nginx(phantom_png(40 + i)) for i in range(4)]
        self.replicas[0].kill()
        for sid in list(self.acknowledged) + sids:
            r = self.nginx.request("GET", "/reconstruct?id=%s&k=2" % sid)
            self.assertEqual(r.status, 200, "%s: %r\n%s" % (sid, r, self.nginx.log_tail()))
        self.upload_nginx(phantom_png(50))

    def test_5_postgres_down_is_503_then_recovers_within_10s(self):
        live = self.live()
        self.assertEqual(len(live), REPLICAS - 1)
        before = dict(self.acknowledged)
        self.pg.stop()
        try:
            for rep in live:
                t0 = time.monotonic()
                util.assert_error(self, rep.upload_raw(phantom_png(60)), 503, "store_unavailable")
                self.assertLess(time.monotonic() - t0, 8, "an upload with PostgreSQL down took too long")
                # reads too, once the replica has noticed (its watcher connection dropped)
                for sid in before:
                    self.assertTrue(util.wait_until(lambda: rep.get("/slices/%s" % sid).status == 503, 5),
                                    "%s still answered %r" % (sid, rep.get("/slices/%s" % sid)))
                    r = rep.get("/reconstruct?id=%s&k=2" % sid)
                    util.assert_error(self, r, 503, "store_unavailable")
                    self.assertEqual(r.header("Retry-After"), "1")
                util.assert_error(self, rep.get("/slices"), 503, "store_unavailable")
                vid = self.volume
                for path in ("/volumes", "/volumes/" + vid, "/volumes/%s/reconstruct?k=5&index=31" % vid,
                             "/volumes/%s/reconstruct?k=5&format=nifti" % vid):
                    r = rep.get(path)
                    util.assert_error(self, r, 503, "store_unavailable")
                util.assert_error(self, rep.request("POST", "/volumes?axis=0", NII, NII_TYPE), 503,
                                  "store_unavailable")
                util.assert_error(self, rep.request("DELETE", "/volumes/" + vid), 503, "store_unavailable")
                self.assertEqual(rep.get("/healthz").status, 200, "liveness must not follow the store")
            for rep in live:
                self.assertTrue(rep.alive(), rep.log_tail())
        finally:
            self.pg.start()
        t0 = time.monotonic()
        ok = util.wait_until(lambda: all(rep.get("/slices").status == 200 for rep in live), 10, 0.1)
        recovered = time.monotonic() - t0
        self.assertTrue(ok, "not recovered 10 s after PostgreSQL came back\n" + self.logs())
        print("recovered %.2f s after PostgreSQL came back" % recovered, file=sys.stderr)
        for rep in live:
            for sid, png in before.items():
                orig = rep.get("/slices/%s/original" % sid)
                self.assertEqual(orig.status, 200, "%s lost: %r\n%s" % (sid, orig, self.logs()))
                self.assert_same_pixels(orig.body, png)
            self.assertEqual(rep.get("/volumes/" + self.volume).json()["state"], "ready")
            self.assertEqual(rep.get("/volumes/%s/reconstruct?k=5&axis=2&index=31" % self.volume).status, 200)
        self.assertEqual(self.volume_rows(self.volume), (1, 63))
        self.upload_nginx(phantom_png(61))
        self.assertEqual(int(self.pg.sql("SELECT count(*) FROM svdslice_slices")), len(self.acknowledged))

    def test_7_a_replica_started_before_postgres_waits_for_it(self):
        self.pg.stop()
        late = util.Server(["--store", self.pg.dsn])
        self.replicas.append(late)  # killed and cleaned up with the others
        started = []
        t = threading.Thread(target=lambda: started.append(late.start()))
        try:
            t.start()
            self.assertTrue(util.wait_until(lambda: late.log_path and "retrying" in late.log_tail(), 15),
                            late.log_tail())
        finally:
            self.pg.start()
        t.join(40)
        self.assertEqual(len(started), 1, late.log_tail())
        sid = next(iter(self.acknowledged))
        self.assertEqual(late.get("/slices/%s" % sid).status, 200)
        self.assertEqual(late.get("/volumes/" + self.volume).json()["state"], "ready")

    def test_8_quota_counts_what_every_replica_stored(self):
        quota = util.Server(["--store", self.pg.dsn, "--quota-mb", "1"]).start()
        self.replicas.append(quota)
        seed = 80
        while int(self.pg.sql("SELECT coalesce(sum(file_bytes), 0) FROM svdslice_slices")) < 1 << 20:
            self.upload_nginx(phantom_png(seed, 200))  # through the other replicas only
            seed += 1
        small = util.png_encode(util.phantom(30, 40, 8, seed=81))
        util.assert_error(self, quota.upload_raw(small), 507, "insufficient_storage")
        r = self.live()[0].upload_raw(small)  # no quota there: the same slice is stored
        self.assertEqual(r.status, 201, r)
        self.acknowledged[r.json()["id"]] = small
        # Volumes count too, and a volume over the quota fails with the reason, storing nothing.
        r = quota.request("POST", "/volumes?axis=0", NII, NII_TYPE)
        self.assertEqual(r.status, 202, r)
        vid = r.json()["id"]
        info = self.wait_volume(quota.get, vid)
        self.assertEqual(info["state"], "failed", info)
        self.assertIn("quota", info["error"])
        self.assertEqual(self.volume_rows(vid), (0, 0))
        util.assert_error(self, quota.get("/volumes/%s/reconstruct?k=2" % vid), 409, "not_ready")
        # the store's sums count what every replica stored: with the volumes, not without
        self.assertGreater(int(self.pg.sql("SELECT sum(bytes) FROM svdslice_volumes")), 0)

    def test_9_a_version_1_schema_is_migrated_to_volumes(self):
        """A database made by the first PostgreSQL store (schema version 1: slices only) gains the
        volume tables at a replica's start and keeps its slices."""
        self.pg.sql("CREATE DATABASE old")
        self.pg.sql("CREATE TABLE svdslice_schema (version integer NOT NULL); INSERT INTO svdslice_schema VALUES (1);"
                    "CREATE TABLE svdslice_slices (id text PRIMARY KEY, name text NOT NULL, width integer NOT NULL,"
                    " height integer NOT NULL, bit_depth integer NOT NULL, rank integer NOT NULL,"
                    " nsv integer NOT NULL, created bigint NOT NULL, file_bytes bigint NOT NULL,"
                    " upload_bytes bigint, singular_values bytea NOT NULL, svd bytea NOT NULL,"
                    " stored_at timestamptz NOT NULL DEFAULT now())", db="old")
        srv = util.Server(["--store", self.pg.dsn.replace("/postgres?", "/old?")])
        self.replicas.append(srv)
        srv.start()
        self.assertEqual(self.pg.sql("SELECT version FROM svdslice_schema", db="old"), "2")
        self.assertEqual(self.pg.sql("SELECT count(*) FROM svdslice_volume_sections", db="old"), "0")
        r = srv.request("POST", "/volumes", NII, NII_TYPE)
        self.assertEqual(r.status, 202, r)
        self.assertEqual(self.wait_volume(srv.get, r.json()["id"])["state"], "ready")
        self.assertEqual(self.pg.sql("SELECT count(*) FROM svdslice_volume_sections", db="old"), "63")
        sid = srv.upload_ok(phantom_png(90))["id"]
        self.assertEqual(self.pg.sql("SELECT count(*) FROM svdslice_slices WHERE id = '%s'" % sid, db="old"), "1")

    def test_6_openapi_lists_store_unavailable(self):
        doc = self.live()[0].get("/openapi.json").json()
        for path in ("/slices/{id}", "/volumes/{id}", "/volumes/{id}/reconstruct"):
            desc = doc["paths"][path]["get"]["responses"]["503"]["description"]
            self.assertIn("store_unavailable", desc)


def main():
    missing = [n for n, ok in (("postgresql (initdb, pg_ctl, psql)", pg_bindir()), ("nginx", NGINX),
                               ("ITK's example volumes (insighttoolkit4-examples)", NII)) if not ok]
    if os.geteuid() == 0 and not shutil.which("runuser"):
        missing.append("runuser (util-linux), to run PostgreSQL as a non-root user")
    if missing:
        print("skipped: %s not installed (scripts/setup.sh test installs them)" % ", ".join(missing))
        sys.exit(SKIP)
    unittest.main(verbosity=2)


if __name__ == "__main__":
    main()
