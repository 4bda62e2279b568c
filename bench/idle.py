"""What an idle service costs: `bukt serve` with its defaults and redis-server with its own
(hz 10), started side by side, each given one write and then left alone; every process's
CPU time (all its threads, /proc/PID/task/*/schedstat) and wake-ups (voluntary and
involuntary context switches of all its threads, /proc/PID/task/*/status) over the same
window.

    .venv/bin/python bench/idle.py [--seconds 30] [--settle 5]

Prints, per process, % of one CPU and wake-ups a second, then each server's total and
Bukt/Redis ratios. A cache that sits idle most of the day should cost about what Redis
does; the writer's ticks (heartbeat, expiry, the everysec fsync) are what Bukt has that
Redis does in its own 10 ticks a second.
"""
import argparse
import os
import pathlib
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# bench/http.py would shadow the standard library's http
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.join(ROOT, "bench")]
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
sys.path.insert(0, ROOT)
sys.path.append(os.path.join(ROOT, "bench"))     # last, for benchutil
from benchutil import RedisServer, cpu_seconds, thread_reads  # noqa: E402
from serve_harness import Service  # noqa: E402

from bukt.service.procs import tree  # noqa: E402


def switches(pid):
    """Context switches (voluntary and not) of every live thread of `pid` so far."""
    return sum(int(line.split()[1]) for text in thread_reads(pid, "status")
               for line in text.splitlines()
               if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")))


def name_of(pid):
    """A process's role: `bukt serve` / writer / tcp / http, or redis-server."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "?"
    if b"bukt" in argv and argv.index(b"bukt") + 1 < len(argv):
        return "bukt " + argv[argv.index(b"bukt") + 1].decode()
    return os.path.basename(argv[0].decode()).split()[0]


def sample(pids):
    return {p: (cpu_seconds(p), switches(p)) for p in pids}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="the window measured")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds after the write before the window opens")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bukt-idle-") as tmp:
        svc = Service(pathlib.Path(tmp), log={"level": "info"})
        for face in ("http", "tcp"):
            svc.settings[face].pop("workers", None)     # the defaults: one per CPU
        svc.configure()
        svc.start()
        redis = RedisServer(tmp)
        try:
            token = svc.create_bucket("idle")
            with svc.client("idle", token) as c:
                c.set(b"k", b"v")
            if redis.proc is not None:
                import socket
                with socket.create_connection(("127.0.0.1", redis.port)) as s:
                    s.sendall(b"SET k v\r\n")
                    s.recv(16)
            time.sleep(args.settle)
            servers = {"bukt": [p for _, p in tree(svc.proc.pid)]}
            if redis.proc is not None:
                servers["redis"] = [redis.proc.pid]
            every = [p for ps in servers.values() for p in ps]
            names = {p: name_of(p) for p in every}
            t0, before = time.monotonic(), sample(every)
            time.sleep(args.seconds)
            wall, after = time.monotonic() - t0, sample(every)
        finally:
            svc.stop()
            svc.cleanup()
            redis.stop()
    print(f"idle for {wall:.0f} s after one write; % of one CPU, wake-ups a second")
    print(f"{'server':8} {'process':16} {'pid':>8} {'CPU %':>8} {'wake/s':>8}")
    totals = {}
    for server, pids in servers.items():
        cpu = wakes = 0.0
        for p in pids:
            dc = (after[p][0] - before[p][0]) / wall * 100
            dw = (after[p][1] - before[p][1]) / wall
            cpu, wakes = cpu + dc, wakes + dw
            print(f"{server:8} {names[p]:16} {p:>8} "
                  f"{dc:8.2f} {dw:8.1f}")
        totals[server] = (cpu, wakes)
        print(f"{server:8} {'total':16} {'':>8} {cpu:8.2f} {wakes:8.1f}")
    if "redis" in totals and totals["redis"][0] > 0 and totals["redis"][1] > 0:
        print(f"bukt/redis: CPU {totals['bukt'][0] / totals['redis'][0]:.2f}x, "
              f"wake-ups {totals['bukt'][1] / totals['redis'][1]:.2f}x")


if __name__ == "__main__":
    main()
