"""util.py - shared helpers for the HTTP integration tests: a started server, HTTP, PNG, .svd.

Everything here talks to the real `svdslice serve` over loopback; nothing is mocked.
Environment (set by ctest): SVDSLICE_BIN, SVDSLICE_TEST_DATA, SVDSLICE_ARTIFACTS.
"""
import http.client
import io
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
import uuid
import zlib

import numpy as np
from PIL import Image

BIN = os.environ.get("SVDSLICE_BIN", "svdslice")
TEST_DATA = os.environ.get("SVDSLICE_TEST_DATA", "")
ARTIFACTS = os.environ.get("SVDSLICE_ARTIFACTS", "")

START_TIMEOUT = 30.0   # generous: sanitizer builds on 2 busy cores start slowly
REQ_TIMEOUT = 60.0

CPU_BACKENDS = ["loops3", "loops2", "loops1", "blocked", "threads", "blas"]
ALL_BACKENDS = CPU_BACKENDS + ["cuda", "cublas"]
ERROR_STATUS = {  # API.md's error table: code -> status
    "invalid_k": 400, "invalid_backend": 400, "invalid_id": 400, "invalid_parameter": 400,
    "unauthorized": 401, "not_found": 404, "original_not_kept": 404, "method_not_allowed": 405, "too_large": 413,
    "unsupported_media_type": 415, "invalid_png": 422, "backend_unavailable": 503,
    "not_ready": 409, "invalid_nifti": 422, "unsupported_nifti": 422,
    "overloaded": 503, "store_unavailable": 503, "insufficient_storage": 507, "internal": 500,
}
LISTEN_RE = re.compile(r"^svdslice listening on http://(\[[^\]]+\]|[^:/]+):(\d+)\s*$")


def test_data(name):
    """Path of a real MRI slice shipped by Debian's insighttoolkit4-examples."""
    return os.path.join(TEST_DATA, name)


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


# ---------------------------------------------------------------- server process

class Server:
    """`svdslice serve --port 0 --data DIR ARGS...` on 127.0.0.1.

    The data dir is a fresh temp dir unless given (then it is kept, for restarts).
    Use as a context manager or call start()/stop(). stderr goes to a log file whose
    tail is shown by log_tail() when a test fails."""

    def __init__(self, args=(), data_dir=None, env=None):
        self.args = list(args)
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="svdslice-http-")
        self.env = dict(os.environ)
        self.env.update(env or {})
        # A stray SVDSLICE_* in the caller's environment would change the server's flags.
        for key in list(self.env):
            if key.startswith("SVDSLICE_") and key not in (env or {}) and key not in (
                    "SVDSLICE_BIN", "SVDSLICE_TEST_DATA", "SVDSLICE_SOURCE_DIR", "SVDSLICE_ARTIFACTS"):
                del self.env[key]
        self.proc = None
        self.host = "127.0.0.1"
        self.port = None
        self.log_path = None
        self._drain = None

    def start(self):
        fd, self.log_path = tempfile.mkstemp(prefix="svdslice-serve-", suffix=".log")
        log = os.fdopen(fd, "wb")
        cmd = [BIN, "serve", "--bind", "127.0.0.1", "--port", "0", "--data", self.data_dir] + self.args
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=self.env)
        log.close()
        line = self._first_line()
        m = LISTEN_RE.match(line)
        if not m:
            self.kill()
            raise RuntimeError("unexpected first stdout line %r from %s\n%s" % (line, cmd, self.log_tail()))
        self.host = m.group(1).strip("[]")
        self.port = int(m.group(2))
        # Keep reading stdout so the server can never block on a full pipe.
        self._drain = threading.Thread(target=self._drain_stdout, daemon=True)
        self._drain.start()
        return self

    def _first_line(self):
        deadline = time.monotonic() + START_TIMEOUT
        buf = b""
        fd = self.proc.stdout.fileno()
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise RuntimeError("server did not print its listening line in %.0fs\n%s"
                                   % (START_TIMEOUT, self.log_tail()))
            r, _, _ = select.select([fd], [], [], min(left, 0.5))
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    rc = self.proc.wait()
                    raise RuntimeError("server exited with %d before listening\n%s" % (rc, self.log_tail()))
                buf += chunk
        return buf.split(b"\n", 1)[0].decode("utf-8", "replace")

    def _drain_stdout(self):
        try:
            while self.proc.stdout.read(4096):
                pass
        except (OSError, ValueError):
            pass

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=20.0):
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self._finish()

    def kill(self):
        """SIGKILL (a crash as far as the data dir is concerned). Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        return self._finish()

    def _finish(self):
        rc = self.proc.returncode
        if self.proc.stdout:
            self.proc.stdout.close()
        if self._drain:
            self._drain.join(2)
        return rc

    def cleanup(self):
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.log_path and os.path.exists(self.log_path):
            os.unlink(self.log_path)

    def log_tail(self, n=4000):
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
            return "--- server stderr (tail) ---\n" + data[-n:].decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        self.cleanup()

    # -- HTTP
    def request(self, method, path, body=None, headers=None, timeout=REQ_TIMEOUT):
        return request(self.host, self.port, method, path, body, headers, timeout)

    def get(self, path, headers=None):
        return self.request("GET", path, headers=headers)

    def upload_raw(self, png, query="", content_type="image/png", headers=None):
        h = {"Content-Type": content_type} if content_type else {}
        h.update(headers or {})
        return self.request("POST", "/slices" + query, png, h)

    def upload_multipart(self, png, filename="slice.png", query="", headers=None, field="file"):
        body, ctype = multipart_encode([], [(field, filename, png, "image/png")])
        h = {"Content-Type": ctype}
        h.update(headers or {})
        return self.request("POST", "/slices" + query, body, h)

    def upload_ok(self, png, query=""):
        """Uploads and returns the info dict; fails loudly unless 200/201."""
        r = self.upload_raw(png, query)
        if r.status not in (200, 201):
            raise AssertionError("upload failed: %d %r" % (r.status, r.body[:300]))
        return r.json()


class OneDataDir:
    """unittest mixin for tests that restart servers on one data dir: self.dir, self.start(args)
    (a started Server on it), and every server killed and the dir removed after each test."""
    dir_prefix = "svdslice-dir-"

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix=self.dir_prefix)
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            if s.alive():
                s.kill()
            s.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, args=()):
        s = Server(list(args), data_dir=self.dir).start()
        self.servers.append(s)
        return s


class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # http.client.HTTPMessage: case-insensitive get()
        self.body = body

    def header(self, name, default=None):
        return self.headers.get(name, default)

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<%d %s %r>" % (self.status, dict(self.headers.items()), self.body[:200])


def request(host, port, method, path, body=None, headers=None, timeout=REQ_TIMEOUT):
    """One request on a fresh connection; the whole body is read (HEAD: none)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, r.reason, r.headers, data)
    finally:
        conn.close()


def raw_exchange(host, port, data, timeout=10.0, shutdown=True):
    """Sends raw bytes on a socket and returns everything read until close/timeout."""
    import socket
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.sendall(data)
        if shutdown:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def multipart_encode(fields, files, boundary=None):
    """fields: [(name, value)], files: [(name, filename, bytes, ctype)] -> (body, content_type)."""
    boundary = boundary or ("----svdslice" + uuid.uuid4().hex)
    out = io.BytesIO()
    for name, value in fields:
        out.write(("--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n" % (boundary, name)).encode())
        out.write(value.encode() if isinstance(value, str) else value)
        out.write(b"\r\n")
    for name, filename, data, ctype in files:
        out.write(("--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
                   "Content-Type: %s\r\n\r\n" % (boundary, name, filename, ctype)).encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(("--%s--\r\n" % boundary).encode())
    return out.getvalue(), "multipart/form-data; boundary=%s" % boundary


# ---------------------------------------------------------------- PNG

def png_encode(arr, bits=None, mode=None):
    """Encodes a 2D uint8/uint16 array as a gray PNG (8 or 16 bits), or an HxWx3/4 uint8
    array as RGB/RGBA when mode is given."""
    arr = np.asarray(arr)
    buf = io.BytesIO()
    if mode is not None:
        Image.fromarray(arr.astype(np.uint8), mode).save(buf, "PNG")
    elif (bits or (16 if arr.dtype == np.uint16 else 8)) == 16:
        Image.fromarray(arr.astype(np.uint16)).save(buf, "PNG")  # mode I;16 -> 16-bit gray
    else:
        Image.fromarray(arr.astype(np.uint8), "L").save(buf, "PNG")
    data = buf.getvalue()
    want = bits or (16 if arr.dtype == np.uint16 else 8)
    if mode is None:
        assert png_info(data)[2] == want, "PIL wrote an unexpected bit depth"
    return data


def png_info(data):
    """(width, height, bit_depth, color_type) from the IHDR of PNG bytes."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    w, h, depth, ctype = struct.unpack(">IIBB", data[16:26])
    return w, h, depth, ctype


def png_decode(data):
    """Gray PNG bytes -> (2D int64 array, bit_depth). Only gray images are expected back
    from the server; anything else is an error the caller should see."""
    w, h, depth, ctype = png_info(data)
    if ctype != 0:
        raise ValueError("server PNG is not grayscale (color type %d)" % ctype)
    im = Image.open(io.BytesIO(data))
    im.load()
    a = np.array(im).astype(np.int64)
    if a.shape != (h, w):
        raise ValueError("decoded shape %r != IHDR %r" % (a.shape, (h, w)))
    return a, depth


def load_gray(path):
    """A test-data PNG as the gray pixels libpng gives for it (palette/RGB slices here are
    gray-valued, R == G == B, so the luma is exactly that value)."""
    im = Image.open(path)
    im.load()
    if im.mode in ("L", "I;16", "I"):
        return np.array(im).astype(np.int64)
    rgb = np.array(im.convert("RGB")).astype(np.int64)
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0]
    return luma709(rgb)


def luma709(rgb):
    """libpng's default rgb_to_gray coefficients (6968, 23434, 2366)/32768, rounded."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return (6968 * r + 23434 * g + 2366 * b + 16384) >> 15


def phantom(h, w, bits, seed=0):
    """A head-like test image: ellipses of different intensity plus mild noise, values
    spanning most of the 2^bits range, background 0 (so Hausdorff is meaningful)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    img = np.zeros((h, w))
    img[((y - cy) / (0.45 * h)) ** 2 + ((x - cx) / (0.42 * w)) ** 2 <= 1] = 0.55
    img[((y - cy) / (0.40 * h)) ** 2 + ((x - cx) / (0.37 * w)) ** 2 <= 1] = 0.35
    img[((y - cy * 0.8) / (0.12 * h)) ** 2 + ((x - cx * 0.7) / (0.08 * w)) ** 2 <= 1] = 0.9
    img[((y - cy * 1.2) / (0.10 * h)) ** 2 + ((x - cx * 1.3) / (0.09 * w)) ** 2 <= 1] = 0.7
    inside = img > 0
    img[inside] += rng.normal(0, 0.03, inside.sum())
    maxv = (1 << bits) - 1
    return np.clip(np.round(img * maxv), 0, maxv).astype(np.uint16 if bits == 16 else np.uint8)


# ---------------------------------------------------------------- .svd files

SVD_MAGIC = b"SVDSLICE"


def parse_svd(data):
    """Parses a .svd file: version 2 (what the store writes) or version 1 (parse_svd_v1)."""
    if data[:8] != SVD_MAGIC:
        raise ValueError("bad .svd magic")
    version, hsize, m, n, bit_depth, rank, nsv, flags = struct.unpack_from("<8I", data, 8)
    if version == 1:
        return parse_svd_v1(data)
    if version != 2 or hsize != 424:
        raise ValueError("unknown .svd version %d / header %d" % (version, hsize))
    (created,) = struct.unpack_from("<q", data, 40)
    name = data[48:48 + 256].split(b"\0", 1)[0].decode("utf-8", "replace")
    sid = data[304:304 + 65].split(b"\0", 1)[0].decode("ascii", "replace")
    upload, fact_len, orig_len, codec, reserved, plen, pcrc, hcrc = struct.unpack_from("<QQQIIQII", data, 376)
    if hcrc != zlib.crc32(data[:420]) & 0xFFFFFFFF:
        raise ValueError("header crc mismatch")
    if plen != 4 * nsv + fact_len + orig_len or len(data) != hsize + plen or reserved:
        raise ValueError("section sizes disagree")
    payload = data[hsize:]
    if pcrc != zlib.crc32(payload) & 0xFFFFFFFF:
        raise ValueError("payload crc mismatch")
    if flags not in (1, 2) or (flags == 1) != (orig_len > 0) or (flags == 2) != (fact_len > 0):
        raise ValueError("bad flags %d" % flags)
    S = np.frombuffer(payload, dtype="<f4", count=nsv, offset=0)
    # The sections (JPEG-LS or filtered deflate; range-coded factors) are not decoded here: the
    # server serves the original at /slices/{id}/original; with_factors() adds float64 factors.
    return {"version": 2, "m": m, "n": n, "bit_depth": bit_depth, "rank": rank, "nsv": nsv,
            "flags": flags, "created": created, "name": name, "id": sid, "upload_bytes": upload,
            "orig_kept": flags == 1, "orig_codec": codec, "factor_bytes": fact_len, "orig_bytes": orig_len,
            "U": None, "S": S, "Vt": None, "orig": None}


def with_factors(f, orig):
    """f with the float64 SVD of orig at f's rank as its factors (and orig): what a version-2 file
    that keeps the original stands for (the server factorises the original when it loads it)."""
    U, S, Vt = np.linalg.svd(np.asarray(orig, np.float64), full_matrices=False)
    g = dict(f)
    g.update(U=U[:, :f["rank"]], S=S, Vt=Vt[:f["rank"]], orig=np.asarray(orig))
    return g


def parse_svd_v1(data):
    """Parses the version-1 .svd format of engine/svd.h (little-endian):
    magic, u32 version, u32 header size, u32 m, n, bit_depth, rank, nsv, flags,
    i64 created, name[256], id[65 padded], u64 payload bytes, u32 payload crc32,
    u32 header crc32; payload U (m*rank f32), S (nsv f32), Vt (rank*n f32), orig (m*n u16)?
    The payload is located by the header-size field and its length/crc are checked."""
    if data[:8] != SVD_MAGIC:
        raise ValueError("bad .svd magic")
    version, hsize, m, n, bit_depth, rank, nsv, flags = struct.unpack_from("<8I", data, 8)
    (created,) = struct.unpack_from("<q", data, 40)
    name = data[48:48 + 256].split(b"\0", 1)[0].decode("utf-8", "replace")
    sid = data[304:304 + 65].split(b"\0", 1)[0].decode("ascii", "replace")
    payload_bytes, payload_crc, header_crc = struct.unpack_from("<QII", data, hsize - 16)
    if header_crc != zlib.crc32(data[:hsize - 4]) & 0xFFFFFFFF:
        # The header crc may cover the header with its own field zeroed instead.
        alt = data[:hsize - 4] + b"\0\0\0\0"
        if header_crc != zlib.crc32(alt) & 0xFFFFFFFF:
            raise ValueError("header crc mismatch")
    has_orig = bool(flags & 1)
    want = 4 * (m * rank + nsv + rank * n) + (2 * m * n if has_orig else 0)
    if payload_bytes != want or len(data) != hsize + want:
        raise ValueError("payload size %d (file %d) != expected %d" % (payload_bytes, len(data) - hsize, want))
    payload = data[hsize:]
    if payload_crc != zlib.crc32(payload) & 0xFFFFFFFF:
        raise ValueError("payload crc mismatch")
    off = 0

    def take(count, dtype, size):
        nonlocal off
        a = np.frombuffer(payload, dtype=dtype, count=count, offset=off)
        off += count * size
        return a

    U = take(m * rank, "<f4", 4).reshape(m, rank)
    S = take(nsv, "<f4", 4)
    Vt = take(rank * n, "<f4", 4).reshape(rank, n)
    orig = take(m * n, "<u2", 2).reshape(m, n) if has_orig else None
    return {"version": version, "m": m, "n": n, "bit_depth": bit_depth, "rank": rank, "nsv": nsv,
            "flags": flags, "created": created, "name": name, "id": sid,
            "U": U, "S": S, "Vt": Vt, "orig": orig}


def reference_float(f, k):
    """U[:, :k] diag(S[:k]) Vt[:k] in float64 from the stored float32 factors."""
    U = f["U"][:, :k].astype(np.float64)
    W = f["S"][:k].astype(np.float64)[:, None] * f["Vt"][:k].astype(np.float64)
    return U @ W


def round_clamp(x, maxval):
    """Round half away from zero (values are clamped at 0 anyway), clamp to 0..maxval."""
    return np.clip(np.floor(x + 0.5), 0, maxval).astype(np.int64)


def reference_pixels(f, k):
    return round_clamp(reference_float(f, k), (1 << f["bit_depth"]) - 1)


# ---------------------------------------------------------------- misc

def assert_error(tc, r, status, code=None):
    """Asserts an API.md error response: status, JSON {"error": {"code", "message"}}."""
    tc.assertEqual(r.status, status, "expected %d, got %r" % (status, r))
    ctype = r.header("Content-Type", "")
    tc.assertTrue(ctype.startswith("application/json"), "error Content-Type %r" % ctype)
    body = r.json()
    tc.assertIsInstance(body, dict)
    tc.assertIn("error", body, body)
    err = body["error"]
    tc.assertIsInstance(err.get("code"), str, body)
    tc.assertIsInstance(err.get("message"), str, body)
    tc.assertTrue(err["message"], "empty error message")
    if code is not None:
        tc.assertEqual(err["code"], code, body)
    tc.assertEqual(ERROR_STATUS.get(err["code"]), status, "code %r does not go with %d" % (err["code"], status))
    return err


def parse_prometheus(text):
    """Parses Prometheus text exposition 0.0.4 strictly enough to catch malformed output.
    Returns {(name, frozenset(labels.items())): value}."""
    samples = {}
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?$')
    label_re = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 2 and parts[1] in ("HELP", "TYPE"):
                if len(parts) < 3:
                    raise ValueError("bad comment line %r" % line)
                if parts[1] == "TYPE" and (len(parts) < 4 or parts[3].strip() not in (
                        "counter", "gauge", "histogram", "summary", "untyped")):
                    raise ValueError("bad TYPE line %r" % line)
            continue
        m = line_re.match(line)
        if not m:
            raise ValueError("bad sample line %r" % line)
        labels = {}
        if m.group(3):
            rest = m.group(3)
            pos = 0
            while pos < len(rest):
                lm = label_re.match(rest, pos)
                if not lm:
                    raise ValueError("bad labels in %r" % line)
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        v = m.group(4)
        value = float(v.replace("Inf", "inf").replace("NaN", "nan"))
        samples[(m.group(1), frozenset(labels.items()))] = value
    return samples


def metric_sum(samples, name):
    return sum(v for (n, _), v in samples.items() if n == name)


def free_port():
    """A loopback port free right now (for helpers started next to the server: proxies)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc, timeout=10.0):
    """SIGTERM, then SIGKILL if proc has not exited within timeout."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(pred, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def save_artifact(name, data):
    """Keeps a file for inspection after a failure (SVDSLICE_ARTIFACTS)."""
    if not ARTIFACTS:
        return
    os.makedirs(ARTIFACTS, exist_ok=True)
    with open(os.path.join(ARTIFACTS, name), "wb") as f:
        f.write(data)
