#!/usr/bin/python3
"""attack.py - the attacks of docs/ATTACKS.md against a fresh `svdslice serve` each, with a
well-behaved probe measured meanwhile. Standard library only; loopback only; every run bounded.

    attack.py BIN [--scenario NAME]... [--duration S] [--server-arg ARG]... [--json FILE]

For each scenario: start `BIN serve --bind 127.0.0.1 --port 0` with default flags (plus any
--server-arg), upload a slice, warm one /reconstruct into the response cache, start the
attackers in a child process (from 127.0.0.2 and up; Linux routes all of 127/8 to lo), let
them settle (every connection made and its first bytes sent, at most 15 s), then
for --duration seconds a probe from 127.0.0.1 asks GET /healthz and the cached /reconstruct in
turn, each on a new connection, one at a time. After the attack stops, a client from an
attacker address asks /healthz once ("after": how long until it is answered).
"""
import argparse
import heapq
import json
import os
import random
import resource
import select
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

PROBE_TIMEOUT = 10.0  # a probe not answered by then counts as failed, at this latency


# ---------------------------------------------------------------- PNGs

def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)


def png_gray8(w, h, rows):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    raw = b"".join(b"\0" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw, 6))
            + png_chunk(b"IEND", b""))


def phantom_png(w=256, h=170, seed=1):
    """A head-like 8-bit slice: a bright ellipse, a darker one inside, mild noise."""
    rnd = random.Random(seed)
    rows = []
    for y in range(h):
        row = bytearray(w)
        for x in range(w):
            dy, dx = (y - h / 2) / (0.45 * h), (x - w / 2) / (0.42 * w)
            r = dy * dy + dx * dx
            v = 0 if r > 1 else (140 if r > 0.8 else 90 + (40 if (x // 16 + y // 16) % 3 == 0 else 0))
            row[x] = max(0, min(255, v + (rnd.randint(-6, 6) if v else 0)))
        rows.append(bytes(row))
    return png_gray8(w, h, rows)


def bomb_png(target_bytes=8 << 20):
    """A 16x16 gray PNG whose IDAT is ~target_bytes of deflated zeros (~1000:1, so gigabytes
    inflated). Built from one flushed piece repeated: each copy is whole deflate blocks ending
    on a byte boundary (Z_FULL_FLUSH), so the copies chain into one valid stream."""
    piece_in = 16 << 20
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = c.compress(bytes(piece_in)) + c.flush(zlib.Z_FULL_FLUSH)
    copies = max(1, target_bytes // len(piece))
    tail = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)  # an empty final block
    total = copies * piece_in
    adler = ((total % 65521) << 16) | 1  # Adler-32 of `total` zero bytes
    idat = b"\x78\xda" + piece * copies + tail + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


# ---------------------------------------------------------------- HTTP

def http_once(port, method, path, body=b"", headers=(), src="127.0.0.1", timeout=PROBE_TIMEOUT):
    """One request on a new connection from src; returns (status or None, seconds, error)."""
    t0 = time.monotonic()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % (method, path)
        for h in headers:
            head += h + "\r\n"
        if body:
            head += "Content-Length: %d\r\n" % len(body)
        s.sendall(head.encode() + b"\r\n" + body)
        buf = b""
        while True:
            left = timeout - (time.monotonic() - t0)
            if left <= 0:
                raise socket.timeout()
            s.settimeout(left)
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            hdr, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                cl = [ln for ln in hdr.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                if cl and len(rest) >= int(cl[0].split(b":")[1]):
                    break
        if not buf.startswith(b"HTTP/1."):
            return None, time.monotonic() - t0, "closed without an answer"
        return int(buf[9:12]), time.monotonic() - t0, None
    except (OSError, ValueError) as e:
        return None, time.monotonic() - t0, type(e).__name__
    finally:
        s.close()


class Server:
    def __init__(self, binary, args):
        self.data = tempfile.mkdtemp(prefix="svdslice-attack-")
        self.log = tempfile.NamedTemporaryFile(prefix="svdslice-attack-", suffix=".log", delete=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SVDSLICE_")}
        cmd = [binary, "serve", "--bind", "127.0.0.1", "--port", "0", "--data", self.data] + list(args)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, env=env)
        line = self.proc.stdout.readline().decode()
        if "listening on" not in line:
            raise RuntimeError("server did not start: %r (log %s)" % (line, self.log.name))
        self.port = int(line.rsplit(":", 1)[1])
        threading.Thread(target=lambda: self.proc.stdout.read(), daemon=True).start()

    def stop(self):
        self.proc.terminate()
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        subprocess.run(["rm", "-rf", self.data])
        return rc

    def log_tail(self, n=2000):
        with open(self.log.name, "rb") as f:
            return f.read()[-n:].decode("utf-8", "replace")


# ---------------------------------------------------------------- attackers

class Attacker:
    """Non-blocking attack connections on one selector thread. Each connection: connect from
    its source address, send `first` (then, while `line` is set, `line` every `interval`
    seconds); a connection the server drops is opened again after `reconnect` seconds
    (a slowloris tool re-creates dropped sockets the same way)."""

    def __init__(self, port, n, addrs, first, line, interval, reconnect):
        self.port, self.n, self.addrs = port, n, addrs
        self.first, self.line, self.interval, self.reconnect = first, line, interval, reconnect
        self.sel = selectors.DefaultSelector()
        self.timers = []  # (time, seq, slot, generation)
        self.seq = 0
        self.gen = [0] * n  # a slot's timers from before its last drop are stale
        self.conn = [None] * n  # slot -> [sock, pending memoryview, connected]
        self.stats = {"connects": 0, "dropped": 0, "send_errors": 0, "answered": 0, "bytes": 0}
        self.stop_flag = False
        self.thread = threading.Thread(target=self.run, daemon=True)

    def src(self, slot):
        return "127.0.0.%d" % (2 + slot % self.addrs)

    def at(self, t, slot):
        self.seq += 1
        heapq.heappush(self.timers, (t, self.seq, slot, self.gen[slot]))

    def open(self, slot):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.bind((self.src(slot), 0))
            s.connect_ex(("127.0.0.1", self.port))
        except OSError:
            s.close()
            self.at(time.monotonic() + max(self.reconnect, 0.5), slot)
            return
        self.conn[slot] = [s, memoryview(self.first), False]
        self.sel.register(s, selectors.EVENT_WRITE | selectors.EVENT_READ, slot)

    def drop(self, slot, why):
        c = self.conn[slot]
        if c is None:
            return
        self.sel.unregister(c[0])
        c[0].close()
        self.conn[slot] = None
        self.gen[slot] += 1
        self.stats[why] += 1
        self.at(time.monotonic() + self.reconnect, slot)

    def flush(self, slot):
        c = self.conn[slot]
        while len(c[1]):
            try:
                k = c[0].send(c[1][:1 << 20])
            except BlockingIOError:
                break
            except OSError:
                self.drop(slot, "send_errors")
                return
            c[1] = c[1][k:]
            self.stats["bytes"] += k
        ev = selectors.EVENT_READ | (selectors.EVENT_WRITE if len(c[1]) else 0)
        self.sel.modify(c[0], ev, slot)

    def connected(self):
        return sum(1 for c in self.conn if c is not None and c[2])

    def sent_all(self):
        return all(c is not None and c[2] and not len(c[1]) for c in self.conn)

    def run(self):
        now = time.monotonic()
        for slot in range(self.n):
            self.at(now + slot * 0.0005, slot)  # ~2000 connects/s at the start
        while not self.stop_flag:
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, slot, gen = heapq.heappop(self.timers)
                if gen != self.gen[slot]:
                    continue
                c = self.conn[slot]
                if c is None:
                    self.open(slot)
                elif c[2] and self.line:
                    c[1] = memoryview(bytes(c[1]) + self.line)
                    self.flush(slot)
                    if self.conn[slot] is not None:
                        self.at(now + self.interval, slot)
            wait = min(0.2, max(0.0, self.timers[0][0] - now)) if self.timers else 0.2
            for key, ev in self.sel.select(wait):
                slot = key.data
                c = self.conn[slot]
                if c is None:
                    continue
                if not c[2] and ev & selectors.EVENT_WRITE:
                    if c[0].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        self.drop(slot, "send_errors")
                        continue
                    c[2] = True
                    self.stats["connects"] += 1
                    if self.line:
                        self.at(time.monotonic() + self.interval * (0.5 + random.random() / 2), slot)
                if ev & selectors.EVENT_READ:
                    try:
                        data = c[0].recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    self.drop(slot, "answered" if data else "dropped")
                    continue
                if c[2]:
                    self.flush(slot)
        for c in self.conn:
            if c is not None:
                c[0].close()

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stats["open_at_end"] = self.connected()
        self.stop_flag = True
        self.thread.join(10)


class Bomber:
    """`n` threads uploading the same body from one address in a loop."""

    def __init__(self, port, n, body, src="127.0.0.2"):
        self.port, self.body, self.src = port, body, src
        self._stats = {"answered": 0, "in_flight": 0, "statuses": {}}
        self.stop_flag = False
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(n)]

    @property
    def stats(self):
        """A snapshot: uploads answered (by status) and still in flight."""
        with self.lock:
            return {"answered": self._stats["answered"], "in_flight": self._stats["in_flight"],
                    "statuses": dict(self._stats["statuses"])}

    def run(self):
        while not self.stop_flag:
            with self.lock:
                self._stats["in_flight"] += 1
            st, _, err = http_once(self.port, "POST", "/slices", self.body, ["Content-Type: image/png"],
                                   src=self.src, timeout=120)
            with self.lock:
                self._stats["in_flight"] -= 1
                if self.stop_flag:
                    break  # cut short by the end of the scenario: not an answer
                self._stats["answered"] += 1
                key = str(st or err)
                self._stats["statuses"][key] = self._stats["statuses"].get(key, 0) + 1

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def connected(self):
        return len(self.threads)

    def sent_all(self):
        return True

    def stop(self):
        self.stop_flag = True  # the uploads in flight finish on their own (daemon threads)


# ---------------------------------------------------------------- attackers in a child process

# The probe and the attackers must not share a Python interpreter: under a busy attack loop the
# probe thread waited for the GIL for seconds, which is no latency of the server's.

def conns_spec(n, addrs, first, line, interval, reconnect, pad=0, settle_s=15.0):
    """Attack connections (see Attacker): `first` then `pad` zero bytes, then `line` every
    `interval` s. Bytes travel as latin-1 text."""
    return {"kind": "conns", "n": n, "addrs": addrs, "first": first.decode("latin-1"), "pad": pad,
            "line": None if line is None else line.decode("latin-1"), "interval": interval,
            "reconnect": reconnect, "settle_s": settle_s}


def _make(spec, port):
    if spec["kind"] == "bomb":
        return Bomber(port, spec["n"], bomb_png(), spec.get("src", "127.0.0.2"))
    line = spec["line"]
    return Attacker(port, spec["n"], spec["addrs"], spec["first"].encode("latin-1") + bytes(spec.get("pad", 0)),
                    None if line is None else line.encode("latin-1"), spec["interval"], spec["reconnect"])


def _child(port):
    """attack.py --child PORT: reads a spec line, attacks, prints {"ready": ...} once settled
    (every connection made and its first bytes sent, or settle_s), and on any stdin line (or
    EOF) stops and prints the stats."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    spec = json.loads(sys.stdin.readline())
    att = _make(spec, port).start()
    end = time.monotonic() + spec.get("settle_s", 15.0)
    want = spec.get("n", 0) if spec["kind"] == "conns" else 0
    while time.monotonic() < end and not (att.connected() >= want and att.sent_all()):
        time.sleep(0.1)
    print(json.dumps({"ready": True, "connected": att.connected()}), flush=True)
    sys.stdin.readline()
    att.stop()
    print(json.dumps(att.stats), flush=True)
    os._exit(0)  # bomb uploads still in flight are abandoned, not waited for


class Remote:
    """An attack run by `attack.py --child` against port; start() returns once it has settled."""

    def __init__(self, port, spec):
        self.port, self.spec = port, spec
        self.proc = None
        self.stats = {}

    def start(self, timeout=60.0):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", str(self.port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.proc.stdin.write(json.dumps(self.spec) + "\n")
        self.proc.stdin.flush()
        self.ready = self._line(timeout)
        return self

    def _line(self, timeout):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if r else ""
        if not line:
            self.proc.kill()
            raise RuntimeError("attacker %r gave no answer in %.0f s" % (self.spec["kind"], timeout))
        return json.loads(line)

    def stop(self, timeout=30.0):
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.stdin.write("stop\n")
                self.proc.stdin.flush()
                self.stats = self._line(timeout)
            finally:
                self.proc.kill()
                self.proc.wait()
        return self.stats

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------- scenarios

def slow_headers(args):
    # One header line every 10 s keeps a connection under --timeout 30 for ever; a dropped
    # one is reopened at its next line's time, as a slowloris tool re-creates its sockets.
    return conns_spec(args.conns, args.addrs, b"GET /healthz HTTP/1.1\r\nHost: a\r\n", b"X-a: b\r\n",
                      10.0, 10.0)


def slow_headers_churn(args):
    # The same, but a dropped connection is reopened at once: a connection flood.
    return conns_spec(args.conns, args.addrs, b"GET /healthz HTTP/1.1\r\nHost: a\r\n", b"X-a: b\r\n",
                      10.0, 0.0)


def dribble(args):
    # 17 MB of a 30 MB body (a PNG signature first, so the server keeps it), then 1 byte / 20 s.
    first = (b"POST /slices HTTP/1.1\r\nHost: a\r\nContent-Type: image/png\r\nContent-Length: 30000000\r\n\r\n"
             b"\x89PNG\r\n\x1a\n")
    return conns_spec(8, 8, first, b"\0", 20.0, 1.0, pad=17_000_000 - 8)


def bomb(args):
    return {"kind": "bomb", "n": 3, "src": "127.0.0.2"}


def idle(args):
    # Connect and say nothing; reconnect 10 s after a drop.
    return conns_spec(args.conns, args.addrs, b"", None, 10.0, 10.0)


SCENARIOS = {
    "none": (None, "no attack (baseline)"),
    "slow-headers": (slow_headers, "2000 conns from 40 addresses, 1 header line / 10 s"),
    "dribble": (dribble, "8 conns: 17 MB of a 30 MB body, then 1 byte / 20 s"),
    "bomb": (bomb, "3 parallel uploads of a 16x16 PNG with ~8 MB deflated zeros, one address"),
    "idle": (idle, "2000 idle connects from 40 addresses"),
    "churn": (slow_headers_churn, "slow-headers, a dropped connection reopened at once (not by default)"),
}
DEFAULT = ["none", "slow-headers", "dribble", "bomb", "idle"]


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def run_scenario(binary, name, args):
    make, _ = SCENARIOS[name]
    srv = Server(binary, args.server_arg)
    res = {"scenario": name}
    try:
        png = phantom_png()
        st, _, err = http_once(srv.port, "POST", "/slices", png, ["Content-Type: image/png"], timeout=60)
        if st not in (200, 201):
            raise RuntimeError("upload failed: %r %r\n%s" % (st, err, srv.log_tail()))
        # the id is content-derived: ask the list for it
        sid = json_get(srv.port, "/slices")["slices"][0]["id"]
        recon = "/reconstruct?id=%s&k=20" % sid
        for _ in range(2):  # the second is served from the response cache
            http_once(srv.port, "GET", recon, timeout=60)
        att = Remote(srv.port, make(args)).start() if make else None
        if att:
            time.sleep(1.0)
        lat = {"healthz": [], "reconstruct": []}
        fails = []
        end = time.monotonic() + args.duration
        i = 0
        while time.monotonic() < end:
            kind = "healthz" if i % 2 == 0 else "reconstruct"
            st, dt, err = http_once(srv.port, "GET", "/healthz" if kind == "healthz" else recon)
            lat[kind].append(dt)
            if st != 200:
                fails.append("%s: %s" % (kind, st or err))
            i += 1
            time.sleep(args.probe_gap)
        if att:
            res["attack"] = att.stop()
        st, dt, err = http_once(srv.port, "GET", "/healthz", src="127.0.0.2", timeout=60)
        res["after_s"] = dt if st == 200 else None
        all_lat = lat["healthz"] + lat["reconstruct"]
        res.update(probes=len(all_lat), failed=len(fails), fail_examples=fails[:3],
                   p50_ms=pct(all_lat, 0.5) * 1e3, p99_ms=pct(all_lat, 0.99) * 1e3, max_ms=max(all_lat) * 1e3,
                   healthz_p99_ms=pct(lat["healthz"], 0.99) * 1e3,
                   reconstruct_p99_ms=pct(lat["reconstruct"], 0.99) * 1e3)
        res["server_alive"] = srv.proc.poll() is None
    finally:
        res["exit"] = srv.stop()
    return res


def json_get(port, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % path).encode())
        buf = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            buf += c
    finally:
        s.close()
    return json.loads(buf.partition(b"\r\n\r\n")[2])


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        return _child(int(sys.argv[2]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--scenario", action="append", choices=list(SCENARIOS))
    ap.add_argument("--duration", type=float, default=30.0, help="probe window per scenario, seconds")
    ap.add_argument("--probe-gap", type=float, default=0.05, help="pause between probes, seconds")
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--addrs", type=int, default=40)
    ap.add_argument("--server-arg", action="append", default=[], help="extra flag for serve (repeat)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.conns + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    names = args.scenario or DEFAULT
    results = []
    print("%-13s %-70s %6s %6s %9s %9s %9s %9s  %s" % ("scenario", "attack", "probes", "failed", "p50 ms",
                                                         "p99 ms", "max ms", "after s", "attackers"))
    for name in names:
        r = run_scenario(args.binary, name, args)
        results.append(r)
        a = r.get("attack", {})
        brief = ", ".join("%s %s" % (k, v) for k, v in a.items() if k != "bytes")
        after = "%.2f" % r["after_s"] if r["after_s"] is not None else "never"
        print("%-13s %-70s %6d %6d %9.1f %9.1f %9.1f %9s  %s" % (
            name, SCENARIOS[name][1], r["probes"], r["failed"], r["p50_ms"], r["p99_ms"], r["max_ms"], after,
            brief), flush=True)
        if not r["server_alive"]:
            print("  server died during %s" % name)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
