"""Shared by tests/test_tcp_*.py: a real segment, a real worker pool on an unused port.

`store()` creates a segment of this run (names.unique_name, 16 MiB) with a bucket "b"
and tokens of each kind, and unlinks it and the areas named after it afterwards.
`Server` runs `serve_tcp` in a subprocess, bound to 127.0.0.1 port 0; the supervisor's
first line on stderr says which port the kernel gave, and the server is ready once every
worker answers PING (polled, falcon-style).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import bukt
from bukt._core import writer_claim
from bukt import protocol as P
from bukt.protocol import Command as C
from names import unique_name, unlink_areas

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADMIN_TOKEN = "admin-token-for-tests-0123456789"
# The event loop the servers run: TCP_TEST_LOOP=asyncio (or uvloop) runs the same suite
# on another loop than the default ("auto": the epoll loop of bukt/tcp/_epoll.pyx when it
# is built, as in a real worker).
LOOP = os.environ.get("TCP_TEST_LOOP", "auto")
TOKENS = {"rw": ("b", 3), "ro": ("b", 1), "wo": ("b", 2), "all": ("b", 7), "other": ("o", 7)}


@contextlib.contextmanager
def store(**buckets):
    """A fresh segment with buckets "b" and "o" (plus any given as name=kwargs) and the
    tokens of TOKENS; yields (store, name)."""
    name = unique_name()
    s = bukt.create(name, size="16MiB")
    writer_claim(s)   # as a writer does: changes go to the ring
    try:
        s.create_bucket("b")
        s.create_bucket("o")
        for bname, kw in buckets.items():
            s.create_bucket(bname, **kw)
        for token, (bname, perms) in TOKENS.items():
            s.add_token(bname, hashlib.sha256(token.encode()).digest(), perms)
        yield s, name
    finally:
        s.unlink()
        s.close()
        unlink_areas(name)      # the pool's (-tcp-auth, -tcp-stats) if it was killed


RUNNER = """
import ast, sys
from bukt import logs
from bukt.tcp import serve_tcp
logs.configure("tcp")           # as `bukt tcp` does: its lines, the port's, on stderr
sys.exit(serve_tcp(**ast.literal_eval(sys.argv[1])))
"""


class Server:
    """`with Server(instance, workers=2, max_inflight=4) as srv:` srv.port, srv.url(token).
    `pool_nice=N` starts the pool N niceness steps above this process."""

    def __init__(self, instance, workers=2, pool_nice=0, **settings):
        settings.setdefault("loop", LOOP)
        settings.setdefault("resp_bind", "127.0.0.1:0")  # a port of its own, never 7072
        self.pool_nice = pool_nice
        self.kw = dict(instance=instance, bind="127.0.0.1:0", workers=workers,
                       admin_token=ADMIN_TOKEN, shutdown_timeout=5, **settings)
        self.proc = None
        self.port = None
        self.resp_port = None   # the RESP listener's (bukt/tcp/resp_session.py)
        self.workers = workers

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self, timeout=15.0):
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        nice = self.pool_nice
        self.proc = subprocess.Popen([sys.executable, "-c", RUNNER, repr(self.kw)],
                                     preexec_fn=(lambda: os.nice(nice)) if nice else None,
                                     stderr=subprocess.PIPE, env=env, cwd=ROOT)
        line = self.proc.stderr.readline().decode()
        m = re.search(r" on 127\.0\.0\.1:(\d+)", line)
        if not m:
            rest = self.proc.stderr.read().decode() if self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"the server did not start: {line}{rest}")
        self.port = int(m.group(1))
        if self.kw.get("resp_enabled", True):
            more = self.proc.stderr.readline().decode()
            line += more
            m = re.search(r"RESP .* on 127\.0\.0\.1:(\d+)", more)
            if not m:
                self.stop()
                raise RuntimeError(f"the RESP listener did not start: {line}")
            self.resp_port = int(m.group(1))
        deadline = time.monotonic() + timeout
        while (len(self.worker_pids()) < self.workers or not self.attached(self.worker_pids())
               or not self._pings()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("the server did not get ready")
            time.sleep(0.05)
        # Keep reading stderr (so no worker ever blocks on it), for failure messages.
        self.log = [line]
        self._collector = threading.Thread(target=self._collect, daemon=True)
        self._collector.start()

    def output(self) -> str:
        """Everything the server wrote to stderr; the whole of it once stopped."""
        if self.proc.poll() is not None:
            self._collector.join(10)
        return "".join(self.log)

    def _collect(self):
        for raw in self.proc.stderr:
            self.log.append(raw.decode(errors="replace"))

    def _pings(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(P.encode_request(C.PING, 1, data=b"x"))
                return read_frame(s)[4] == 0
        except OSError:
            return False

    def attached(self, pids):
        """Whether each of these workers has mapped the segment, which it does once its
        niceness and scheduler slice are set (bukt/tcp/pool.py)."""
        # the segment itself, not an area named after it (the pool's -tcp-auth table,
        # which workers inherit mapped before they set anything)
        segment = f"/dev/shm/bukt-{self.kw['instance']}"
        for pid in pids:
            try:
                with open(f"/proc/{pid}/maps") as f:
                    if not any(line.rstrip("\n").endswith(segment) for line in f):
                        return False
            except OSError:
                return False
        return True

    def worker_pids(self):
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def url(self, token, bucket=None):
        bucket = TOKENS[token][0] if bucket is None else bucket
        return f"bukt://{bucket}:{token}@127.0.0.1:{self.port}"

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in self.worker_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait()
            raise


def connect(port, timeout=5.0, source="127.0.0.1") -> socket.socket:
    """A connection from `source`: any 127.x.y.z is this host, and a peer address of
    its own for the server (per-address limits, lockouts)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                 source_address=(source, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s, n) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"EOF after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def read_frame(s) -> bytes:
    head = recv_exact(s, 4)
    return head + recv_exact(s, int.from_bytes(head, "big") - 4)


def call(s, command, rid=1, **fields):
    """One request on a raw socket; (status, rid, fields)."""
    s.sendall(P.encode_request(command, rid, **fields))
    return P.decode_response(command, read_frame(s))


def auth(s, token):
    bucket = TOKENS[token][0].encode()
    status, _, f = call(s, C.AUTH, bucket=bucket, token=token.encode())
    assert status == P.Status.OK, f
    return f["perms"]


def socket_fds(pid) -> int:
    """How many sockets a process has open."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return n
