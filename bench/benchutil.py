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


def _thread_ns(pid) -> int:
    """CPU nanoseconds the live threads of process `pid` have used (the sum of
    /proc/PID/task/*/schedstat: /proc/PID/schedstat alone is the main thread's, and
    /proc/PID/stat counts clock ticks); 0 when it is gone."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass                            # the thread ended between the two reads
    return total


def cpu_seconds(*pids) -> float:
    """User + system CPU seconds the processes (every live thread of each) have used
    so far; a process that is gone counts 0."""
    return sum(_thread_ns(pid) for pid in pids) / 1e9


def descendants(pid) -> list:
    """`pid` and every process below it (children, theirs...), from
    /proc/PID/task/*/children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
            except OSError:
                pass
    return out


class CpuMeter:
    """CPU seconds each role used over a `with` block, and the wall time:

        with CpuMeter({"client": [wrk.pid], "server": [serve.pid]}) as m:
            ...
        m.seconds["server"], m.share("server")   # CPU s; CPU s per wall second

    Each role's pids are taken with their descendants (a server's workers), listed
    when the block starts and again when it ends; a process that starts inside the
    block counts from 0, one that ends inside it counts nothing (its CPU cannot be
    read any more: sample a set of processes that lives through the block)."""

    def __init__(self, roles):
        self.roles = {r: list(p) for r, p in roles.items()}
        self.seconds, self.wall = {}, 0.0

    def _pids(self, role):
        return {d for pid in self.roles[role] for d in descendants(pid)}

    def __enter__(self):
        self._t0 = time.monotonic()
        self._start = {r: {p: _thread_ns(p) for p in self._pids(r)} for r in self.roles}
        return self

    def __exit__(self, *exc):
        self.wall = time.monotonic() - self._t0
        for r in self.roles:
            start = self._start[r]
            pids = self._pids(r) | set(start)
            self.seconds[r] = sum(max(0, _thread_ns(p) - start.get(p, 0))
                                  for p in pids) / 1e9
        return False

    def share(self, role=None) -> float:
        """CPU seconds per wall second of one role, or of all of them: 1.0 is one
        CPU kept busy."""
        used = self.seconds[role] if role else sum(self.seconds.values())
        return used / self.wall if self.wall else 0.0


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
