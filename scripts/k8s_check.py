#!/usr/bin/env python3
"""k8s_check.py [--gpu] [--image NAME ...] [FILE] - checks rendered Kubernetes manifests offline.

Reads the multi-document YAML that `kubectl kustomize DIR` prints (FILE, or stdin) and checks what
an API server would refuse or a cluster would trip over, without one: every object has an
apiVersion/kind pair the API serves and a name; workloads' selectors match their pod labels;
every container has an image with a tag (no `latest`) among the images this project builds or
names (--image adds more), CPU and memory requests and limits, and (unless it is a one-shot) a
liveness and a readiness probe whose port it declares; every Secret/ConfigMap key an env entry
or volume refers to exists in the render; Services select pods and target ports those pods
declare; StatefulSets name an existing headless Service; HorizontalPodAutoscalers scale an
existing workload whose containers request what they measure. --gpu: the svdslice containers
ask for nvidia.com/gpu in limits and run the CUDA image.
Exit 0 and "ok: N objects", or 1 and one line per problem.
"""
import base64
import re
import sys

import yaml

# What the API serves for the kinds used here (apiVersion -> kinds).
API = {
    "v1": {"Service", "Secret", "ConfigMap", "ServiceAccount", "PersistentVolumeClaim", "Namespace"},
    "apps/v1": {"Deployment", "StatefulSet", "DaemonSet"},
    "autoscaling/v2": {"HorizontalPodAutoscaler"},
    "policy/v1": {"PodDisruptionBudget"},
    "networking.k8s.io/v1": {"Ingress", "NetworkPolicy"},
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
# Images this project builds (README, docs/DEPLOY.md) or names for trying it.
KNOWN_IMAGES = {"svdslice", "svdslice-cuda", "postgres"}
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
IMAGE_RE = re.compile(r"^(?:[a-z0-9.-]+(?::\d+)?/)?([a-z0-9._/-]+):([A-Za-z0-9._-]+)$")


def pod_spec(obj):
    return ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}


def pod_labels(obj):
    return (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


def secret_keys(obj):
    keys = set((obj.get("data") or {}).keys()) | set((obj.get("stringData") or {}).keys())
    return keys


def check(docs, gpu=False, extra_images=()):
    errs = []
    known_images = KNOWN_IMAGES | set(extra_images)
    objs = [d for d in docs if d is not None]
    by_kind = {}
    for o in objs:
        where = "%s/%s" % (o.get("kind"), (o.get("metadata") or {}).get("name"))
        av, kind = o.get("apiVersion"), o.get("kind")
        if kind not in API.get(av, set()):
            errs.append("%s: apiVersion %r does not serve kind %r" % (where, av, kind))
        name = (o.get("metadata") or {}).get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            errs.append("%s: metadata.name missing or not a DNS name" % where)
        if (kind, name) in by_kind:
            errs.append("%s: defined twice" % where)
        by_kind[(kind, name)] = o
        if kind == "Secret":
            for k, v in (o.get("data") or {}).items():
                try:
                    base64.b64decode(re.sub(r"\s", "", v), validate=True)  # kustomize wraps lines; the API server skips newlines
                except (ValueError, TypeError):
                    errs.append("%s: data.%s is not base64" % (where, k))

    def exists(kind, name, key=None):
        o = by_kind.get((kind, name))
        if o is None:
            return False
        if key is None:
            return True
        return key in (secret_keys(o) if kind == "Secret" else set((o.get("data") or {}).keys()))

    for o in objs:
        kind, name = o.get("kind"), (o.get("metadata") or {}).get("name")
        where = "%s/%s" % (kind, name)
        if kind in WORKLOADS:
            sel = ((o.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            labels = pod_labels(o)
            if not sel or any(labels.get(k) != v for k, v in sel.items()):
                errs.append("%s: selector %r does not match the pod labels %r" % (where, sel, labels))
            spec = pod_spec(o)
            volumes = {v.get("name"): v for v in spec.get("volumes") or []}
            claim_names = {((c.get("metadata") or {}).get("name"))
                           for c in (o.get("spec") or {}).get("volumeClaimTemplates") or []}
            for v in volumes.values():
                if "secret" in v and not exists("Secret", v["secret"].get("secretName")):
                    errs.append("%s: volume %s: no Secret %s" % (where, v.get("name"), v["secret"].get("secretName")))
                if "configMap" in v and not exists("ConfigMap", v["configMap"].get("name")):
                    errs.append("%s: volume %s: no ConfigMap %s" % (where, v.get("name"), v["configMap"].get("name")))
            containers = spec.get("containers") or []
            if not containers:
                errs.append("%s: no containers" % where)
            for c in containers:
                cw = "%s container %s" % (where, c.get("name"))
                image = c.get("image") or ""
                m = IMAGE_RE.match(image)
                if not m:
                    errs.append("%s: image %r has no explicit tag" % (cw, image))
                else:
                    repo, tag = m.group(1), m.group(2)
                    if tag == "latest":
                        errs.append("%s: image %r: pin a tag, not latest" % (cw, image))
                    if repo.split("/")[-1] not in known_images:
                        errs.append("%s: image %r is not one this project builds or names" % (cw, image))
                res = c.get("resources") or {}
                for part in ("requests", "limits"):
                    for r in ("cpu", "memory"):
                        if r not in (res.get(part) or {}):
                            errs.append("%s: no %s.%s" % (cw, part, r))
                ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
                for probe in ("livenessProbe", "readinessProbe"):
                    p = c.get(probe)
                    if not p:
                        errs.append("%s: no %s" % (cw, probe))
                        continue
                    act = p.get("httpGet") or p.get("tcpSocket")
                    if act is not None:
                        port = act.get("port")
                        if port not in ports and port not in ports.values():
                            errs.append("%s: %s port %r is not a declared container port" % (cw, probe, port))
                    elif "exec" not in p and "grpc" not in p:
                        errs.append("%s: %s has no action" % (cw, probe))
                for e in c.get("env") or []:
                    ref = (e.get("valueFrom") or {})
                    if "secretKeyRef" in ref:
                        s = ref["secretKeyRef"]
                        if not s.get("optional") and not exists("Secret", s.get("name"), s.get("key")):
                            errs.append("%s: env %s: no key %r in Secret %r" % (cw, e.get("name"), s.get("key"),
                                                                                s.get("name")))
                    if "configMapKeyRef" in ref:
                        s = ref["configMapKeyRef"]
                        if not s.get("optional") and not exists("ConfigMap", s.get("name"), s.get("key")):
                            errs.append("%s: env %s: no key %r in ConfigMap %r" % (cw, e.get("name"), s.get("key"),
                                                                                   s.get("name")))
                for ef in c.get("envFrom") or []:
                    for k, kk in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                        if k in ef and not ef[k].get("optional") and not exists(kk, ef[k].get("name")):
                            errs.append("%s: envFrom: no %s %r" % (cw, kk, ef[k].get("name")))
                for vm in c.get("volumeMounts") or []:
                    if vm.get("name") not in volumes and vm.get("name") not in claim_names:
                        errs.append("%s: mounts unknown volume %r" % (cw, vm.get("name")))
                if gpu and image.split(":")[0].split("/")[-1].startswith("svdslice"):
                    if str((res.get("limits") or {}).get("nvidia.com/gpu", "")) in ("", "0"):
                        errs.append("%s: no nvidia.com/gpu limit" % cw)
                    if m and m.group(1).split("/")[-1] != "svdslice-cuda":
                        errs.append("%s: GPU replicas need the CUDA image (svdslice-cuda), not %r" % (cw, image))
            if kind == "StatefulSet":
                svc = by_kind.get(("Service", (o.get("spec") or {}).get("serviceName")))
                if svc is None or (svc.get("spec") or {}).get("clusterIP") != "None":
                    errs.append("%s: serviceName is not an existing headless Service" % where)
        elif kind == "Service":
            sel = (o.get("spec") or {}).get("selector") or {}
            pods = [w for w in objs if w.get("kind") in WORKLOADS
                    and sel and all(pod_labels(w).get(k) == v for k, v in sel.items())]
            if not pods:
                errs.append("%s: selector %r matches no workload's pods" % (where, sel))
            for p in (o.get("spec") or {}).get("ports") or []:
                tp = p.get("targetPort", p.get("port"))
                for w in pods:
                    declared = [(q.get("name"), q.get("containerPort"))
                                for c in pod_spec(w).get("containers") or [] for q in c.get("ports") or []]
                    if not any(tp == n or tp == num for n, num in declared):
                        errs.append("%s: port %r targets %r, which %s/%s does not declare"
                                    % (where, p.get("name"), tp, w.get("kind"), w["metadata"]["name"]))
        elif kind == "HorizontalPodAutoscaler":
            spec = o.get("spec") or {}
            ref = spec.get("scaleTargetRef") or {}
            target = by_kind.get((ref.get("kind"), ref.get("name")))
            if target is None or ref.get("apiVersion") != target.get("apiVersion"):
                errs.append("%s: scaleTargetRef %r is not a workload in the render" % (where, ref))
            if not 1 <= (spec.get("minReplicas") or 1) <= (spec.get("maxReplicas") or 0):
                errs.append("%s: want 1 <= minReplicas <= maxReplicas" % where)
            for met in spec.get("metrics") or []:
                r = (met.get("resource") or {}).get("name")
                if met.get("type") == "Resource" and target is not None:
                    for c in pod_spec(target).get("containers") or []:
                        if r not in ((c.get("resources") or {}).get("requests") or {}):
                            errs.append("%s: scales on %s, which container %s does not request"
                                        % (where, r, c.get("name")))
    return len(objs), errs


def main(argv):
    gpu = "--gpu" in argv
    extra, files, it = [], [], iter(a for a in argv if a != "--gpu")
    for a in it:
        if a == "--image":
            extra.append(next(it, ""))
        else:
            files.append(a)
    text = open(files[0]).read() if files else sys.stdin.read()
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        print("not YAML: %s" % e)
        return 1
    n, errs = check(docs, gpu, extra)
    if n == 0:
        errs.append("no objects")
    for e in errs:
        print(e)
    if not errs:
        print("ok: %d objects" % n)
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
