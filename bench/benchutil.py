"""What the benchmark scripts share: the CPU time of server processes, waiting for a
`bukt writer` or an HTTP server they started to be ready, and the reference Redis server with its ports.
(Imported by the scripts in this directory, which Python puts first on sys.path when one
of them runs.)"""
import os
import shutil
import signal
import socket
import subprocess
import time

import bukt


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port, path, proc, timeout=60.0):
    """Returns once an HTTP server on 127.0.0.1:port answers GET `path` (any status);
    RuntimeError when `proc` exits first or after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                          .encode())
                if s.recv(64).startswith(b"HTTP/1.1"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def wait_port(port, timeout=20.0):
    """Returns once something accepts on 127.0.0.1:port; RuntimeError after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class RedisServer:
    """Debian's redis-server on a free loopback port: persistence off, or with
    `always` the append-only file with `appendfsync always` (in `dir`); `nice` sets
    every thread's niceness. `proc` is None when redis-server is not installed."""

    def __init__(self, dir=None, always=False, nice=None):
        self.proc = self.port = None
        exe = shutil.which("redis-server")
        if exe is None:
            return
        self.port = free_port()
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        if dir is not None:
            args += ["--dir", dir, "--logfile", os.path.join(dir, "redis.log")]
        args += (["--appendonly", "yes", "--appendfsync", "always"] if always
                 else ["--appendonly", "no"])
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        wait_port(self.port)
        if nice is not None:
            for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)

    def auth(self):
        """redis-benchmark's arguments to log in: none."""
        return []

    def stop(self):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


def cpu_seconds(*pids) -> float:
    """User + system CPU seconds the processes have used so far, from
    /proc/PID/schedstat (nanoseconds, where /proc/PID/stat counts clock ticks); a
    process that is gone counts 0."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def wait_writer_ready(name, proc, timeout=60.0, poll=0.01):
    """The store `name`, attached once the writer process `proc` (a Popen) says it is
    ready in the segment's header. RuntimeError if it exits first or takes longer than
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            store = bukt.attach(name)
            if store.writer_info()["ready"]:
                return store
            store.close()
        except bukt.BuktError:
            pass                        # not created yet, or not a whole segment yet
        if proc.poll() is not None:
            raise RuntimeError(f"the writer exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the writer was not ready within {timeout:g} s")
        time.sleep(poll)
