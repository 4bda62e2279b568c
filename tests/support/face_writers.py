"""Load on a running `bukt serve` through its faces, for tests that kill or stop the
service and then look for every write a client saw acknowledged.

FaceWriters: threads writing unique keys over TCP (bukt.Client), RESP (a raw socket)
and HTTP (PUT), each recording a key only once its acknowledgement came; a context
manager that starts them and stops them. cold_read: the writer process alone, started
on the service's configuration with the segment gone, so that everything it finds
comes from the log on disk; returns each asked key's value."""
import http.client
import os
import socket
import subprocess
import sys
import threading

import bukt
from serve_harness import wait_for


def resp_command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class FaceWriters:
    """`tcp`, `resp` and `http` threads of each face writing keys t<i>-<n>, r<i>-<n>,
    h<i>-<n>; `acked` maps each acknowledged key to its value. A thread stops at its
    first error: the service going away is what these tests do to it."""

    def __init__(self, service, bucket, token, tcp=3, resp=0, http=1):
        self.service, self.bucket, self.token = service, bucket, token
        self.acked = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=f, args=(i,))
                        for f, n in ((self.tcp, tcp), (self.resp, resp), (self.http, http))
                        for i in range(n)]

    def record(self, key, value):
        with self.lock:
            self.acked[key] = value

    def count(self, prefix: bytes) -> int:
        with self.lock:
            return sum(1 for k in self.acked if k[:1] == prefix)

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
            pass
        finally:
            c.close()

    def resp(self, i):
        try:
            s = socket.create_connection(("127.0.0.1", self.service.resp_port), timeout=5)
        except OSError:
            return
        n = 0
        try:
            s.sendall(resp_command(b"AUTH", self.bucket.encode(), self.token.encode()))
            if s.recv(64) != b"+OK\r\n":
                return
            while not self.stop.is_set():
                k, v = f"r{i}-{n}".encode(), os.urandom(8).hex().encode()
                s.sendall(resp_command(b"SET", k, v))
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


def cold_read(service, bucket, keys):
    """Start the writer alone on the service's configuration (the segment unlinked
    first by the caller), wait until it is ready, and return {key: value or None}."""
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
            b = store.bucket(bucket)
            return {k: b.get(k) for k in keys}
        finally:
            store.close()
    finally:
        writer.terminate()
        writer.wait(20)
