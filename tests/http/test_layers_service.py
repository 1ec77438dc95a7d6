"""test_layers_service.py - the service's outside contract around the layer split: /metrics
parsed by the Prometheus client library's own text parser (every histogram complete, the GPU
queue's included), and a busy port refused unless sharing is asked for."""
import os
import socket
import subprocess
import sys
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import util  # noqa: E402

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # scripts/setup.sh test installs python3-prometheus-client
    text_string_to_metric_families = None


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def check_histogram(tc, fam):
    """Every series of fam: cumulative buckets ending in +Inf, _count equal to the +Inf bucket, a _sum."""
    series = {}
    for s in fam.samples:
        labels = {k: v for k, v in s.labels.items() if k != "le"}
        key = tuple(sorted(labels.items()))
        series.setdefault(key, {"buckets": [], "sum": None, "count": None})
        if s.name.endswith("_bucket"):
            series[key]["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_sum"):
            series[key]["sum"] = s.value
        elif s.name.endswith("_count"):
            series[key]["count"] = s.value
    tc.assertTrue(series, "histogram %s has no series" % fam.name)
    for key, s in series.items():
        b = sorted(s["buckets"])
        tc.assertTrue(b and b[-1][0] == float("inf"), "%s%s: no +Inf bucket" % (fam.name, key))
        values = [v for _, v in b]
        tc.assertEqual(values, sorted(values), "%s%s: buckets not cumulative" % (fam.name, key))
        tc.assertIsNotNone(s["sum"], "%s%s: no _sum" % (fam.name, key))
        tc.assertEqual(s["count"], b[-1][1], "%s%s: _count differs from the +Inf bucket" % (fam.name, key))
    return series


@unittest.skipIf(text_string_to_metric_families is None,
                 "python3-prometheus-client is missing (scripts/setup.sh test installs it)")
class MetricsParseTest(unittest.TestCase):
    def test_metrics_parse_with_gpu_histogram_complete(self):
        # --gpu-cpu-mode runs the GPU queue on the CPU, so its batch histogram fills without a GPU.
        with util.Server(["--gpu-cpu-mode", "--workers", "2"]) as srv:
            png = util.read_bytes(util.test_data("BrainProtonDensitySlice.png"))
            sid = srv.upload_ok(png)["id"]
            n = 12
            for k in range(1, n + 1):
                r = srv.get("/reconstruct?id=%s&k=%d" % (sid, k), headers={"Cache-Control": "no-cache"})
                self.assertEqual(r.status, 200, r.body[:200])
            r = srv.get("/metrics")
            self.assertEqual(r.status, 200)
            self.assertTrue(r.header("Content-Type", "").startswith("text/plain; version=0.0.4"))
            fams = families(r.body.decode("utf-8"))
            for name in ("svdslice_request_duration_seconds", "svdslice_gpu_batch_size"):
                self.assertIn(name, fams)
                self.assertEqual(fams[name].type, "histogram")
            gpu = check_histogram(self, fams["svdslice_gpu_batch_size"])[()]
            # Every reconstruction went through the queue: the batch sizes add up to the jobs.
            self.assertEqual(gpu["sum"], n)
            self.assertGreaterEqual(gpu["count"], 1)
            jobs = [s.value for s in fams["svdslice_gpu_jobs"].samples] if "svdslice_gpu_jobs" in fams else \
                [s.value for s in fams["svdslice_gpu_jobs_total"].samples]
            self.assertEqual(jobs, [n])
            lat = check_histogram(self, fams["svdslice_request_duration_seconds"])
            served = sum(s["count"] for s in lat.values())
            self.assertEqual(served, n)
            self.assertGreater(sum(s["sum"] for s in lat.values()), 0)
            reqs = fams["svdslice_requests"] if "svdslice_requests" in fams else fams["svdslice_requests_total"]
            self.assertEqual(reqs.type, "counter")
            recon = [s for s in reqs.samples
                     if s.labels.get("route") == "/reconstruct" and s.labels.get("status") == "200"]
            self.assertEqual([s.value for s in recon], [n])


def start(args):
    cmd = [util.BIN, "serve", "--bind", "127.0.0.1", "--data", util.tempfile.mkdtemp(prefix="svdslice-port-")] + args
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


class BusyPortTest(unittest.TestCase):
    def test_busy_port_is_refused_with_status_1(self):
        with util.Server() as first:
            p = start(["--port", str(first.port)])
            try:
                out, err = p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                self.fail("a second server on a busy port kept running")
            self.assertEqual(p.returncode, 1, err)
            self.assertIn(b"in use", err)
            self.assertNotIn(b"listening", out)
            self.assertEqual(first.get("/healthz").status, 200)

    def test_reuse_port_shares_on_purpose(self):
        with util.Server(["--reuse-port"]) as first:
            p = start(["--port", str(first.port), "--reuse-port"])
            try:
                line = p.stdout.readline().decode()
                self.assertRegex(line, r"listening on http://127\.0\.0\.1:%d" % first.port)
            finally:
                p.terminate()
                p.communicate(timeout=30)
            self.assertEqual(p.returncode, 0)

    def test_port_held_by_another_program_is_refused(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        try:
            p = start(["--port", str(s.getsockname()[1])])
            _, err = p.communicate(timeout=30)
            self.assertEqual(p.returncode, 1, err)
            self.assertIn(b"in use", err)
        finally:
            s.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
