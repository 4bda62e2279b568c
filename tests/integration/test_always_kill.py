"""`fsync: always` through the service's faces: every write a client saw acknowledged
over TCP, RESP or HTTP is in the log after the whole service (supervisor, workers and
writer) is killed with SIGKILL, found again by a cold start from the log alone. The
acknowledgements come by the flush waker (cext/flushwake.pxi): the writer wakes the
waiting worker itself."""
import http.client
import os
import signal
import subprocess
import sys
import threading

import pytest

import bukt
from serve_harness import Service, wait_for


@pytest.fixture
def service(tmp_path):
    s = Service(tmp_path, fsync="always")
    yield s
    s.cleanup()


def resp(*args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class Clients:
    """Threads writing unique keys, each recording what was acknowledged."""

    def __init__(self, service, bucket, token):
        self.service, self.bucket, self.token = service, bucket, token
        self.acked = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=f, args=(i,)) for f, i in
                        ((self.tcp, 0), (self.tcp, 1), (self.resp, 0), (self.resp, 1),
                         (self.http, 0))]

    def record(self, key, value):
        with self.lock:
            self.acked[key] = value

    def tcp(self, i):
        try:
            c = self.service.client(self.bucket, self.token, timeout=5, retry_reads=False)
        except Exception:
            return
        n = 0
        try:
            while not self.stop.is_set():
                k, v = f"t{i}-{n}".encode(), os.urandom(8).hex().encode()
                c.set(k, v)
                self.record(k, v)
                n += 1
        except Exception:
            pass                         # the service was killed: the test goes on
        finally:
            c.close()

    def resp(self, i):
        import socket
        try:
            s = socket.create_connection(("127.0.0.1", self.service.resp_port), timeout=5)
        except OSError:
            return
        n = 0
        try:
            s.sendall(resp(b"AUTH", self.bucket.encode(), self.token.encode()))
            if s.recv(64) != b"+OK\r\n":
                return
            while not self.stop.is_set():
                k, v = f"r{i}-{n}".encode(), os.urandom(8).hex().encode()
                s.sendall(resp(b"SET", k, v))
                if s.recv(64) != b"+OK\r\n":
                    break
                self.record(k, v)
                n += 1
        except OSError:
            pass
        finally:
            s.close()

    def http(self, i):
        conn = http.client.HTTPConnection("127.0.0.1", self.service.http_port, timeout=5)
        n = 0
        try:
            while not self.stop.is_set():
                k, v = f"h{i}-{n}", os.urandom(8).hex()
                conn.request("PUT", f"/api/v1/buckets/{self.bucket}/keys/{k}", body=v,
                             headers={"X-Auth-Token": self.token})
                r = conn.getresponse()
                r.read()
                if r.status != 204:
                    break
                self.record(k.encode(), v.encode())
                n += 1
        except Exception:
            pass
        finally:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(10)


def _cold_start_and_read(service, keys):
    """The writer alone, from the log (the segment is gone): each key's value."""
    writer = subprocess.Popen([sys.executable, "-m", "bukt", "writer", "--config", service.conf],
                              cwd=str(service.tmp), env=service.env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def ready():
            try:
                s = bukt.attach(service.name, readonly=True)
            except bukt.BuktError:
                return False
            try:
                return s.writer_info()["ready"]
            finally:
                s.close()
        wait_for(ready, timeout=30, what="the writer's cold start")
        store = bukt.attach(service.name, readonly=True)
        try:
            b = store.bucket("load")
            return {k: b.get(k) for k in keys}
        finally:
            store.close()
    finally:
        writer.terminate()
        writer.wait(20)


@pytest.mark.slow
def test_sigkill_of_the_service_loses_no_write_acknowledged_under_fsync_always(service):
    service.start()
    token = service.create_bucket("load")
    with Clients(service, "load", token) as c:
        wait_for(lambda: sum(1 for k in c.acked if k[:1] == b"r") > 300 and
                 sum(1 for k in c.acked if k[:1] == b"t") > 300 and
                 sum(1 for k in c.acked if k[:1] == b"h") > 50,
                 timeout=60, what="writes acknowledged on every face")
        s = bukt.attach(service.name, readonly=True)
        try:
            # the workers wait by the flush waker: each has a process row of its own
            rows = {r["pid"]: r for r in s.wake_slots() if r["name"]}
            workers = service.children("tcp") + service.children("http")
            assert set(workers) <= set(rows), (workers, rows)
        finally:
            s.close()
        os.killpg(service.proc.pid, signal.SIGKILL)    # supervisor, workers, writer
        service.proc.wait(10)
    acked = dict(c.acked)
    for name in os.listdir("/dev/shm"):
        if name.startswith(f"bukt-{service.name}"):
            os.unlink(f"/dev/shm/{name}")
    got = _cold_start_and_read(service, acked)
    missing = [k for k, v in acked.items() if got[k] != v]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged writes lost: " \
                        f"{missing[:5]}"
