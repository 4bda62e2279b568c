"""What a normal client sees while the service is attacked.

One `bukt serve` (2 HTTP and 2 TCP workers, as shipped on two CPUs). A normal client
times GETs over HTTP and over TCP, first with nothing else going on, then during each
attack in turn:

    idle TCP     thousands of connections from several loopback addresses that never
                 send AUTH (held until tcp.auth_timeout closes them)
    headers      connections that stream one request header without end
    guessing     wrong AUTH tokens over TCP and wrong bearer tokens over HTTP, as fast
                 as one connection each can send them

and prints, for each phase, what the attack held or sent (connections held, header
bytes streamed, guesses answered), the HTTP workers' largest RSS, and the normal
client's p50/p99 over each face with the ratio to the quiet phase's p99.

    python bench/hardening.py [--requests 2000] [--idle 3000] [--streams 8]
"""
import os
import sys

# this folder's http.py (the HTTP benchmark) would shadow the standard library's http
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import argparse  # noqa: E402
import http.client  # noqa: E402
import resource  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))

from serve_harness import Service  # noqa: E402

from bukt import protocol as P  # noqa: E402


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Normal:
    """The normal client: GETs of one key over HTTP (a new request on a kept-alive
    connection) and over TCP (bukt.Client), timed one by one."""

    def __init__(self, svc, token, n):
        self.svc, self.token, self.n = svc, token, n

    def run(self):
        http_ms, tcp_ms, errors = [], [], 0
        conn = http.client.HTTPConnection("127.0.0.1", self.svc.http_port, timeout=10)
        client = self.svc.client("b", self.token)
        hdr = {"Authorization": f"Bearer {self.token}"}
        for _ in range(self.n):
            t = time.perf_counter()
            try:
                conn.request("GET", "/api/v1/buckets/b/keys/k", headers=hdr)
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.svc.http_port, timeout=10)
            http_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            try:
                ok = client.get(b"k") == b"v" and ok
            except Exception:
                ok = False
                client = self.svc.client("b", self.token)
            tcp_ms.append((time.perf_counter() - t) * 1000)
            errors += not ok
        conn.close()
        client.close()
        return http_ms, tcp_ms, errors


def idle_tcp(svc, n, stop, out):
    """n connections from 127.0.0.2-.13 that never send anything."""
    socks = []
    for i in range(n):
        s = socket.socket()
        try:
            s.bind((f"127.0.0.{2 + i % 12}", 0))
            s.connect(("127.0.0.1", svc.tcp_port))
            socks.append(s)
        except OSError:
            s.close()
    out["held at start"] = len(socks)
    stop.wait()
    for s in socks:
        s.close()


def endless_header(svc, streams, stop, out):
    """`streams` connections, each sending one header line that never ends; a new one
    when the server cuts one off."""
    sent = [0]
    cut = [0]

    def one():
        while not stop.is_set():
            s = socket.create_connection(("127.0.0.1", svc.http_port))
            try:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: ")
                chunk = b"a" * 16384
                while not stop.is_set():
                    s.sendall(chunk)
                    sent[0] += len(chunk)
            except OSError:
                cut[0] += 1
            finally:
                s.close()
    threads = [threading.Thread(target=one, daemon=True) for _ in range(streams)]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(5)
    out["header bytes streamed"] = sent[0]
    out["connections cut off"] = cut[0]


def guessing(svc, stop, out):
    """Wrong tokens from 127.0.0.3: AUTH frames on one TCP connection, bearer tokens
    on one HTTP connection, as fast as the answers come."""
    answered = [0, 0]

    def tcp():
        while not stop.is_set():
            s = socket.socket()
            s.bind(("127.0.0.3", 0))
            try:
                s.connect(("127.0.0.1", svc.tcp_port))
                frame = P.encode_request(P.Command.AUTH, 1, bucket=b"b", token=b"wrong-token")
                f = s.makefile("rb")
                while not stop.is_set():
                    s.sendall(frame)
                    head = f.read(13)
                    if len(head) < 13:
                        break
                    f.read(struct.unpack(">I", head[:4])[0] - 13)
                    answered[0] += 1
            except OSError:
                pass
            finally:
                s.close()

    def web():
        while not stop.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", svc.http_port, timeout=10,
                                              source_address=("127.0.0.3", 0))
            try:
                while not stop.is_set():
                    conn.request("GET", "/api/v1/buckets/b/keys/k",
                                 headers={"Authorization": "Bearer wrong-token"})
                    conn.getresponse().read()
                    answered[1] += 1
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
    threads = [threading.Thread(target=tcp, daemon=True), threading.Thread(target=web, daemon=True)]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(5)
    out["TCP guesses answered"] = answered[0]
    out["HTTP guesses answered"] = answered[1]


def phase(svc, token, name, attack, args):
    stop = threading.Event()
    out = {}
    rss = [0]
    t = None
    if attack is not None:
        t = threading.Thread(target=attack, args=(svc, *args, stop, out), daemon=True)
        t.start()
        time.sleep(2.0)                 # the attack is under way
    workers = svc.children("http")

    def watch_rss():
        while not stop.is_set():
            rss[0] = max([rss[0]] + [rss_kb(p) for p in workers])
            time.sleep(0.1)
    w = threading.Thread(target=watch_rss, daemon=True)
    w.start()
    http_ms, tcp_ms, errors = Normal(svc, token, ARGS.requests).run()
    stop.set()
    if t is not None:
        t.join(30)
    w.join(5)
    return {"phase": name, "http": http_ms, "tcp": tcp_ms, "errors": errors,
            "rss_mb": rss[0] / 1024, "attack": out}


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, ARGS.idle + 1024)), hard))
    with tempfile.TemporaryDirectory() as tmp:
        svc = Service(Path(tmp), **{"http.workers": 2, "tcp.workers": 2,
                                    "tcp.max_connections_per_address": 4096})
        try:
            svc.start()
            token = svc.create_bucket("b")
            svc.client("b", token).set(b"k", b"v")
            rows = [phase(svc, token, "quiet", None, ()),
                    phase(svc, token, f"{ARGS.idle} idle TCP connections", idle_tcp, (ARGS.idle,)),
                    phase(svc, token, f"{ARGS.streams} endless HTTP headers", endless_header,
                          (ARGS.streams,)),
                    phase(svc, token, "token guessing, TCP and HTTP", guessing, ())]
        finally:
            svc.cleanup()
    base = {f: percentile(rows[0][f], 0.99) for f in ("http", "tcp")}
    print(f"{ARGS.requests} GETs a face in each phase; p99 against the quiet phase's")
    print(f"{'phase':34} {'HTTP p50/p99 ms':>16} {'x':>6} {'TCP p50/p99 ms':>16} {'x':>6} "
          f"{'errors':>6} {'HTTP RSS MB':>11}  attack")
    for r in rows:
        h50, h99 = percentile(r["http"], 0.5), percentile(r["http"], 0.99)
        t50, t99 = percentile(r["tcp"], 0.5), percentile(r["tcp"], 0.99)
        attack = ", ".join(f"{k} {v:,}" for k, v in r["attack"].items())
        print(f"{r['phase']:34} {h50:7.2f}/{h99:<8.2f} {h99 / base['http']:5.2f}x "
              f"{t50:7.2f}/{t99:<8.2f} {t99 / base['tcp']:5.2f}x {r['errors']:>6} "
              f"{r['rss_mb']:11.0f}  {attack}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="GETs a face in each phase")
    ap.add_argument("--idle", type=int, default=3000, help="idle TCP connections")
    ap.add_argument("--streams", type=int, default=8, help="endless header streams")
    ARGS = ap.parse_args()
    main()
