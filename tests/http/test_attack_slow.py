"""test_attack_slow.py - slow clients cannot hold the server: headers dribbled a line at a time
from many addresses, a body dribbled a byte at a time, connections closed by clients the server
did not notice. Meanwhile a well-behaved client from 127.0.0.1 is answered within 2 s.

The attackers are bench/attack/attack.py's, from 127.0.0.2 and up (Linux routes all of 127/8
to lo). Each test runs its own server and is bounded to a few seconds. The new limits are set
through the environment (SVDSLICE_HEADER_TIMEOUT, ...), which also checks their names."""
import os
import socket
import sys
import time
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench", "attack"))
import attack  # noqa: E402
import util  # noqa: E402

WELL_BEHAVED_S = 2.0  # a well-behaved request must be answered within this
MAX_CONN = 64


def limits(header=2, min_rate=4096, window=2):
    return {"SVDSLICE_HEADER_TIMEOUT": str(header), "SVDSLICE_MIN_RATE": str(min_rate),
            "SVDSLICE_RATE_WINDOW": str(window)}


def connect_from(src, port, timeout=5.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def closed_by_server(s, until):
    """Polls s until the server closes it (EOF or reset) or `until`; returns the time or None."""
    while time.monotonic() < until:
        s.settimeout(max(0.01, min(0.2, until - time.monotonic())))
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic()
        if not data:
            return time.monotonic()
    return None


def close_wait_sockets(port):
    """Server-side sockets of `port` in CLOSE_WAIT (peer closed, server has not): /proc/net/tcp."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if int(parts[1].split(":")[1], 16) == port and parts[3] == "08":
                n += 1
    return n


class SlowAttackTest(unittest.TestCase):
    srv = None

    def start(self, args=(), env=None):
        self.srv = util.Server(["--max-connections", str(MAX_CONN)] + list(args), env=env).start()
        return self.srv

    def tearDown(self):
        if self.srv:
            alive = self.srv.alive()
            tail = self.srv.log_tail()
            rc = self.srv.stop()
            self.srv.cleanup()
            self.assertTrue(alive, "server died\n" + tail)
            self.assertEqual(rc, 0, "exit code after SIGTERM\n" + tail)

    def cached_reconstruct(self):
        sid = self.srv.upload_ok(util.read_bytes(util.test_data("BrainProtonDensitySlice.png")))["id"]
        path = "/reconstruct?id=%s&k=20" % sid
        for _ in range(2):  # the second is a response-cache hit
            self.assertEqual(self.srv.get(path).status, 200)
        return path

    def probe(self, path, src="127.0.0.1"):
        """A new connection, answered 200 within WELL_BEHAVED_S."""
        st, dt, err = attack.http_once(self.srv.port, "GET", path, src=src, timeout=WELL_BEHAVED_S)
        self.assertEqual(st, 200, "%s from %s: %s after %.2f s\n%s" % (path, src, err, dt, self.srv.log_tail()))
        return dt

    def metric(self, name):
        text = self.srv.get("/metrics").body.decode()
        return util.parse_prometheus(text).get((name[0], frozenset(name[1].items())), 0)

    # ------------------------------------------------------------ headers
    def test_header_deadline_closes_a_dribbling_connection(self):
        srv = self.start(env=limits(header=2))
        s = connect_from("127.0.0.2", srv.port)
        t0 = time.monotonic()
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
        closed = None
        try:
            while closed is None and time.monotonic() < t0 + 8:  # a header line every 0.5 s
                closed = closed_by_server(s, time.monotonic() + 0.5)
                if closed is None:
                    try:
                        s.sendall(b"X-a: b\r\n")
                    except OSError:
                        closed = time.monotonic()
        finally:
            s.close()
        self.assertIsNotNone(closed, "a header line every 0.5 s kept the connection open for 8 s "
                                     "(--header-timeout 2)\n" + srv.log_tail())
        self.assertGreaterEqual(closed - t0, 1.5, "closed before its header deadline")
        self.assertGreaterEqual(self.metric(("svdslice_connections_closed_total", {"reason": "header_timeout"})), 1)

    def test_slow_headers_from_many_addresses_leave_room(self):
        srv = self.start(env=limits(header=2))
        recon = self.cached_reconstruct()
        # 150 connections (15 from each of 10 addresses, under --per-ip-connections 64) for
        # 64 slots, one header line a second each, each reopened half a second after a drop.
        spec = attack.conns_spec(150, 10, b"GET /healthz HTTP/1.1\r\nHost: a\r\n", b"X-a: b\r\n", 1.0, 0.5,
                                 settle_s=5)
        with attack.Remote(srv.port, spec) as att:  # its own process: no GIL shared with the probe
            time.sleep(1.0)
            end = time.monotonic() + 8
            i = 0
            while time.monotonic() < end:
                self.probe("/healthz" if i % 2 == 0 else recon)
                i += 1
                time.sleep(0.1)
        self.assertGreater(att.stats["connects"], MAX_CONN, "the attack never filled the server")

    # ------------------------------------------------------------ bodies
    def test_body_dribble_is_cut_off(self):
        srv = self.start(env=limits(min_rate=4096, window=2))
        s = connect_from("127.0.0.2", srv.port)
        try:
            s.sendall(b"POST /slices HTTP/1.1\r\nHost: a\r\nContent-Type: image/png\r\nContent-Length: 1000000\r\n\r\n"
                      b"\x89PNG\r\n\x1a\n" + bytes(300000))
            t0 = time.monotonic()
            closed = None
            while closed is None and time.monotonic() < t0 + 10:  # then a byte every 0.5 s
                self.probe("/healthz")
                closed = closed_by_server(s, time.monotonic() + 0.5)
                if closed is None:
                    try:
                        s.sendall(b"\0")
                    except OSError:
                        closed = time.monotonic()
        finally:
            s.close()
        self.assertIsNotNone(closed, "a body byte every 0.5 s kept the upload open for 10 s "
                                     "(--min-rate 4096 --rate-window 2)\n" + srv.log_tail())
        self.assertGreaterEqual(self.metric(("svdslice_connections_closed_total", {"reason": "slow_body"})), 1)

    def test_a_slow_steady_upload_still_succeeds(self):
        srv = self.start(env=limits(min_rate=4096, window=2))
        png = util.png_encode(util.phantom(256, 256, 16, seed=3))
        self.assertGreater(len(png), 40000, "the test needs a body that takes several windows")
        rate = len(png) / 5.0  # spread over 5 s: 2.5 windows, at several times --min-rate
        self.assertGreater(rate, 2 * 4096)
        s = connect_from("127.0.0.2", srv.port, timeout=30)
        try:
            s.sendall(b"POST /slices HTTP/1.1\r\nHost: a\r\nContent-Type: image/png\r\nConnection: close\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(png))
            t0 = time.monotonic()
            for off in range(0, len(png), 4096):
                s.sendall(png[off:off + 4096])
                time.sleep(max(0.0, t0 + (off + 4096) / rate - time.monotonic()))
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        finally:
            s.close()
        self.assertTrue(out.startswith(b"HTTP/1.1 201"), "%r\n%s" % (out[:300], srv.log_tail()))

    # ------------------------------------------------------------ closed, counted, unnoticed
    def test_closed_attackers_free_their_slots_and_address(self):
        # The header deadline is long here: only noticing the closed peers can free the slots.
        srv = self.start(env=limits(header=30))
        socks = []
        for i in range(150):  # 50 from each of 3 addresses for 64 slots: 86 wait to be accepted
            s = connect_from("127.0.0.%d" % (2 + i % 3), srv.port)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
            socks.append(s)
        time.sleep(0.5)
        for s in socks:
            s.close()
        # Those accepted after their client left arrive with data and FIN together, which
        # libmicrohttpd 0.9.75 does not notice before --timeout (30 s).
        self.probe("/healthz", src="127.0.0.2")
        self.assertTrue(util.wait_until(lambda: close_wait_sockets(srv.port) == 0, timeout=8),
                        "%d server sockets still in CLOSE_WAIT 8 s after their clients closed"
                        % close_wait_sockets(srv.port))

    def test_log_stays_small_under_a_connection_flood(self):
        # libmicrohttpd logs a line per connection dropped mid-request; 600 of them in a couple
        # of seconds must not write 600 lines (a write blocked on a busy disk stalls the server).
        srv = self.start(["--per-ip-connections", "0"], env=limits(header=30))
        for i in range(600):
            s = connect_from("127.0.0.%d" % (2 + i % 10), srv.port)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
            s.close()
        self.probe("/healthz")
        time.sleep(1.0)
        with open(srv.log_path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        mhd = [ln for ln in lines if ln.startswith("svdslice: http:")]
        self.assertLess(len(mhd), 150, "%d lines of libmicrohttpd for 600 dropped connections, e.g. %r"
                        % (len(mhd), mhd[:2]))

    def test_per_ip_limit(self):
        srv = self.start(["--per-ip-connections", "4"])
        held = [connect_from("127.0.0.9", srv.port) for _ in range(4)]
        try:
            time.sleep(0.3)
            fifth = connect_from("127.0.0.9", srv.port)
            try:
                self.assertIsNotNone(closed_by_server(fifth, time.monotonic() + WELL_BEHAVED_S),
                                     "a 5th connection from one address was kept (--per-ip-connections 4)")
            finally:
                fifth.close()
            self.probe("/healthz", src="127.0.0.10")
        finally:
            for s in held:
                s.close()
        self.assertTrue(util.wait_until(lambda: attack.http_once(srv.port, "GET", "/healthz", src="127.0.0.9",
                                                                 timeout=0.5)[0] == 200, timeout=WELL_BEHAVED_S),
                        "the address stayed refused after its connections closed")

    def test_kept_alive_connection_idles_under_timeout(self):
        # A kept-alive connection waits for its next request under --timeout, not --header-timeout.
        srv = self.start(["--timeout", "4"], env=limits(header=1))
        s = connect_from("127.0.0.1", srv.port)
        try:
            for i in range(2):
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
                buf = b""
                while b"\r\n\r\n" not in buf or not buf.endswith(b"}"):
                    chunk = s.recv(65536)
                    self.assertTrue(chunk, "closed on request %d: %r" % (i + 1, buf))
                    buf += chunk
                self.assertTrue(buf.startswith(b"HTTP/1.1 200"), buf[:200])
                time.sleep(2.0)  # past --header-timeout 1, under --timeout 4
        finally:
            s.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
