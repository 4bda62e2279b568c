"""What the benchmark scripts share: the CPU time of server processes (cpu_seconds) and
where the CPU went during a run, per role (CpuMeter), waiting for a `bukt writer` or an
HTTP server they started to be ready, and the reference Redis server with its ports.
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

    def roles(self):
        """CpuMeter's roles: the server process (its threads included)."""
        return {"server": [self.proc.pid]}

    def stop(self):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


def thread_reads(pid, name):
    """The text of /proc/PID/task/*/<name> for each live thread of process `pid` (none
    when it is gone; a thread that ends meanwhile is left out)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/{name}") as f:
                yield f.read()
        except OSError:
            pass


def _thread_ns(pid) -> int:
    """CPU nanoseconds the live threads of process `pid` have used (the sum of
    /proc/PID/task/*/schedstat: /proc/PID/schedstat alone is the main thread's, and
    /proc/PID/stat counts clock ticks); 0 when it is gone."""
    total = 0
    for text in thread_reads(pid, "schedstat"):
        try:
            total += int(text.split()[0])
        except (ValueError, IndexError):
            pass
    return total


def cpu_seconds(*pids) -> float:
    """User + system CPU seconds the processes (every live thread of each) have used
    so far; a process that is gone counts 0."""
    return sum(_thread_ns(pid) for pid in pids) / 1e9


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


_TICK = os.sysconf("SC_CLK_TCK")


def _group_cpu(pid):
    """User + system CPU seconds of process `pid`, all its threads together (the kernel
    sums them in /proc/PID/stat, those that exited included), in clock ticks; None when
    it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK     # fields 14 and 15: utime, stime


def _host_ticks():
    """(busy, all) clock ticks of every CPU from /proc/stat's first line."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v[:8]) - v[3] - v[4], sum(v[:8])             # less idle and iowait


class CpuMeter:
    """Where the CPU went while a `with` block ran, per role:

        with CpuMeter({"server": [pid], "writer": [pid]}, reaped="client") as m:
            subprocess.run(["redis-benchmark", ...])
        m.seconds            # {"server": s, "writer": s, "client": s}: CPU seconds used
        m.us_per(requests)   # the same in CPU microseconds a request
        m.percent(role)      # CPU % of one CPU over the block's wall time

    Each role's pids are taken with their descendants (a TCP pool's workers), looked up
    when the block starts and again when it ends: a process started meanwhile counts
    whole, one that exited meanwhile counts nothing unless this process reaped it. The
    processes this process reaps during the block (a client run by subprocess.run) are
    charged to the role `reaped`, from getrusage(RUSAGE_CHILDREN); its own CPU, to the
    role `me`. `host` is the machine's busy CPU over the block (all processes, from
    /proc/stat), so `others` = host less the roles: what else ran beside the bench.
    Process CPU is counted in clock ticks (10 ms): use it over runs of seconds."""

    def __init__(self, roles, reaped=None, me=None):
        self.roles = {r: list(p) for r, p in roles.items()}
        self.reaped, self.me = reaped, me
        self.seconds, self.wall = {}, 0.0

    def _pids(self):
        from bukt.service.procs import tree
        return {r: {d for p in ps for _, d in tree(p)} for r, ps in self.roles.items()}

    def _sample(self, pids):
        return {r: {p: _group_cpu(p) for p in ps} for r, ps in pids.items()}

    def __enter__(self):
        import resource
        self._start = self._sample(self._pids())
        self._kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._self = resource.getrusage(resource.RUSAGE_SELF)
        self._host = _host_ticks()
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        import resource
        self.wall = time.monotonic() - self._t0
        host = _host_ticks()
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        end = self._sample(self._pids())
        for role, now in end.items():
            then = self._start[role]
            self.seconds[role] = sum(c - (then.get(p) or 0.0) for p, c in now.items()
                                     if c is not None and (p not in then or then[p] is not None))
        if self.reaped is not None:
            self.seconds[self.reaped] = self.seconds.get(self.reaped, 0.0) + (
                kids.ru_utime + kids.ru_stime - self._kids.ru_utime - self._kids.ru_stime)
        if self.me is not None:
            self.seconds[self.me] = self.seconds.get(self.me, 0.0) + (
                me.ru_utime + me.ru_stime - self._self.ru_utime - self._self.ru_stime)
        busy, total = (a - b for a, b in zip(host, self._host))
        # in CPU seconds: the busy share of all CPUs' ticks times the CPUs times the wall
        self.host = busy / total * os.cpu_count() * self.wall if total else 0.0
        self.others = max(0.0, self.host - sum(self.seconds.values()))
        return False

    def us_per(self, n):
        """{role: CPU microseconds per one of `n` things done in the block}."""
        return {r: s * 1e6 / n for r, s in self.seconds.items()} if n else {}

    def percent(self, role):
        """The role's CPU use over the block in % of one CPU (200 = two CPUs busy)."""
        s = {"host": self.host, "others": self.others}.get(role, self.seconds.get(role, 0.0))
        return 100 * s / self.wall if self.wall else 0.0
