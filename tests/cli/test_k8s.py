"""test_k8s.py - docker/k8s rendered with `kubectl kustomize` and checked offline (no API server).

Each overlay renders and passes scripts/k8s_check.py (the GPU one with --gpu); the checker fails
on each kind of mistake it is there to catch, made in a copy of a good render; every SVDSLICE_*
variable the manifests set is a flag `svdslice serve` knows; the Dockerfile has the CUDA build
argument the GPU overlay's image is built with.
Skips with exit code 77 only when no kubectl is installed (scripts/setup.sh test installs
Debian's kubernetes-client when none is on PATH).
"""
import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

SKIP = 77
ROOT = os.environ.get("SVDSLICE_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
K8S = os.path.join(ROOT, "docker", "k8s")
CHECK = os.path.join(ROOT, "scripts", "k8s_check.py")
KUBECTL = shutil.which("kubectl")
BIN = os.environ.get("SVDSLICE_BIN", "")
OVERLAYS = {"try-postgres": [], "external": [], "gpu": ["--gpu"]}


def render(overlay):
    p = subprocess.run([KUBECTL, "kustomize", os.path.join(K8S, "overlays", overlay)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if p.returncode != 0:
        raise AssertionError("kubectl kustomize %s: %s" % (overlay, p.stderr.decode()))
    return p.stdout.decode()


def run_check(text, *args):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    try:
        p = subprocess.run([sys.executable, CHECK] + list(args) + [f.name], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
    finally:
        os.unlink(f.name)
    return p.returncode, p.stdout.decode()


def find(docs, kind, name=None):
    for d in docs:
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name):
            return d
    raise KeyError((kind, name))


def container(docs):
    return find(docs, "Deployment", "svdslice")["spec"]["template"]["spec"]["containers"][0]


class K8s(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rendered = {o: render(o) for o in OVERLAYS}

    def test_every_overlay_renders_and_passes(self):
        for overlay, args in OVERLAYS.items():
            rc, out = run_check(self.rendered[overlay], *args)
            self.assertEqual(rc, 0, "%s:\n%s" % (overlay, out))
            docs = list(yaml.safe_load_all(self.rendered[overlay]))
            kinds = {d["kind"] for d in docs}
            self.assertTrue({"Deployment", "Service", "HorizontalPodAutoscaler", "Secret"} <= kinds, kinds)
            env = {e["name"] for e in container(docs)["env"]}
            self.assertTrue({"SVDSLICE_STORE", "SVDSLICE_API_KEY"} <= env, env)
        self.assertIn("StatefulSet", self.rendered["try-postgres"])

    def test_gpu_overlay_asks_for_a_gpu_and_the_cuda_image(self):
        c = container(list(yaml.safe_load_all(self.rendered["gpu"])))
        self.assertEqual(str(c["resources"]["limits"]["nvidia.com/gpu"]), "1")
        self.assertTrue(c["image"].startswith("svdslice-cuda:"), c["image"])
        rc, out = run_check(self.rendered["external"], "--gpu")  # the CPU render is no GPU render
        self.assertEqual(rc, 1, out)
        self.assertIn("nvidia.com/gpu", out)

    def test_the_checker_catches_each_mistake(self):
        good = list(yaml.safe_load_all(self.rendered["try-postgres"]))

        def no_probe(d):
            del container(d)["readinessProbe"]

        def wrong_secret_key(d):
            container(d)["env"][0]["valueFrom"]["secretKeyRef"]["key"] = "dsn"

        def no_secret(d):
            d.remove(find(d, "Secret", "svdslice"))

        def port_mismatch(d):
            find(d, "Service", "svdslice")["spec"]["ports"][0]["targetPort"] = "web"

        def probe_port(d):
            container(d)["livenessProbe"]["httpGet"]["port"] = 9090

        def latest(d):
            container(d)["image"] = "svdslice:latest"

        def unknown_image(d):
            container(d)["image"] = "someone/else:1.0"

        def no_limits(d):
            del container(d)["resources"]["limits"]

        def bad_api(d):
            find(d, "HorizontalPodAutoscaler")["apiVersion"] = "apps/v1"

        def hpa_target(d):
            find(d, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] = "svdslice-web"

        def selector(d):
            find(d, "Deployment", "svdslice")["spec"]["selector"]["matchLabels"] = {"app": "other"}

        def statefulset_service(d):
            find(d, "StatefulSet")["spec"]["serviceName"] = "postgres"

        def bad_base64(d):
            find(d, "Secret", "svdslice")["data"]["api-key"] = "not base64!"

        cases = {no_probe: "no readinessProbe", wrong_secret_key: "no key 'dsn'", no_secret: "Secret 'svdslice'",
                 port_mismatch: "targets 'web'", probe_port: "9090", latest: "not latest",
                 unknown_image: "not one this project", no_limits: "no limits.cpu",
                 bad_api: "does not serve kind", hpa_target: "scaleTargetRef", selector: "does not match",
                 statefulset_service: "headless Service", bad_base64: "not base64"}
        for mutate, want in cases.items():
            docs = copy.deepcopy(good)
            mutate(docs)
            rc, out = run_check(yaml.safe_dump_all(docs))
            self.assertEqual(rc, 1, "%s passed:\n%s" % (mutate.__name__, out))
            self.assertIn(want, out, mutate.__name__)

    @unittest.skipUnless(BIN, "SVDSLICE_BIN not set")
    def test_every_variable_set_is_a_serve_flag(self):
        helptext = subprocess.run([BIN, "serve", "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=30).stdout.decode()
        flags = set(re.findall(r"^\s+--([a-z0-9-]+)", helptext, re.M))
        self.assertIn("store", flags)
        for overlay in OVERLAYS:
            for e in container(list(yaml.safe_load_all(self.rendered[overlay])))["env"]:
                if e["name"].startswith("SVDSLICE_"):
                    flag = e["name"][len("SVDSLICE_"):].lower().replace("_", "-")
                    self.assertIn(flag, flags, "%s: %s is no serve flag" % (overlay, e["name"]))

    def test_dockerfile_has_the_cuda_build_argument(self):
        with open(os.path.join(ROOT, "Dockerfile")) as f:
            text = f.read()
        self.assertRegex(text, r"(?m)^ARG CUDA=OFF$")
        self.assertIn("-DSVDSLICE_CUDA=${CUDA}", text)
        self.assertRegex(text, r"(?m)^FROM \$\{RUNTIME_BASE\}$")


def main():
    if not KUBECTL:
        print("skipped: no kubectl (scripts/setup.sh test installs kubernetes-client)")
        sys.exit(SKIP)
    unittest.main(verbosity=2)


if __name__ == "__main__":
    main()
