"""The Redis protocol: redis-benchmark (a client nobody here wrote) against redis-server
and Bukt's RESP listener in the same run, alternated.

    .venv/bin/python bench/resp.py [--requests 20000] [--repeat 2] [--workers N]
                                   [--no-fast-path] [--always-requests 20000]
                                   [--only-always]

Scenarios (`-t get,set,incr,mset -r 100000 -d 100`): 50 connections, the same with
redis-benchmark's `--threads 2`, 1 connection, 50 connections with `-P 16`; redis-py
round trips from Python (one connection, 10k GET);
and SET under `fsync: always` with 4 and 16 clients against Redis's `appendfsync always`.
Bukt runs as `bukt serve` with its default tcp.workers (--workers N for another), on the
same host as the clients, with a cache-only bucket against Redis without persistence and
a persisted one against `appendfsync always`; --no-fast-path runs every RESP command
through the Python session (resp.fast_path: false).
Prints requests per second, p99 latency, and Bukt/Redis ratios (targets in docs/resp.md's
issue: 50 conns >= 1.2x with p99 <= 1.5x, 1 conn >= 1.5x, -P 16 >= 1.5x, always >= 1.5x).
Then where the CPU went in each redis-benchmark run (benchutil.CpuMeter; ranges over the
repeats): CPU microseconds a request of the client (redis-benchmark), the server
(redis-server, or Bukt's TCP workers) and Bukt's writer process; the client's, the whole
host's and everything else's CPU use in % of one CPU; and two ceilings: the rate the
host's CPUs allow at those costs, and the rate a server costing nothing would get, bound
by the client's cost (its thread at one CPU, or all CPUs to itself). Where Redis already
runs near the second, no server can be 1.2x faster with this client on this host.
"""
import argparse
import csv
import io
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# bench/http.py would shadow the standard library's http
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.join(ROOT, "bench")]
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
sys.path.insert(0, ROOT)

sys.path.append(os.path.join(ROOT, "bench"))     # last, for benchutil
from benchutil import CpuMeter, RedisServer  # noqa: E402
from serve_harness import Service  # noqa: E402

TESTS = "get,set,incr,mset"


class BuktServer:
    """`bukt serve` with its default tcp.workers; `fast`: resp.fast_path."""

    def __init__(self, tmp, always=False, fast=True, workers=0):
        # (log.level info: the harness waits for the ready banner, an info line)
        self.svc = Service(pathlib.Path(tmp), memory="128MiB",
                           limits={"ring_size": "64MiB"},
                           tcp={"workers": 0}, log={"level": "info"},
                           **({"fsync": "always"} if always else {}))
        self.svc.settings["resp"]["fast_path"] = fast
        if workers:
            self.svc.settings["tcp"]["workers"] = workers
        else:
            self.svc.settings["tcp"].pop("workers", None)  # the default
        self.svc.configure()
        self.svc.start()
        # Against Redis without persistence a cache-only bucket; against `appendfsync
        # always` a persisted one. (A persisted bucket under the default everysec logs
        # every change through the writer process, which on this host, with a fifth of
        # a CPU beside two busy workers and redis-benchmark, logs fewer pipelined SETs a
        # second than the face takes: its ring fills, or the log falls past
        # fsync_lag_limit, and writes are refused, as they must be.)
        self.token = self.svc.create_bucket("bench", persist=always)
        self.port = self.svc.resp_port

    def auth(self):
        return ["--user", "bench", "-a", self.token]

    def roles(self):
        """The processes whose CPU a request costs: the TCP pool (its workers serve RESP)
        and the writer process; CpuMeter's roles."""
        state = self.svc.state()
        return {"server": [state["tcp"]["pid"]], "writer": [state["writer"]["pid"]]}

    def stop(self):
        self.svc.stop()
        self.svc.cleanup()


def benchmark(server, clients, requests, pipeline=1, tests=TESTS, threads=0, meter=None):
    """{test: (rps, p99 ms)} of one redis-benchmark run. With `meter` (a dict) the run's
    CPU goes there: the CpuMeter over `server.roles()` (if it has them), the client as
    "client", and "requests", what the finished tests sent."""
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(server.port), *server.auth(),
           "-t", tests, "-n", str(requests), "-r", "100000", "-d", "100", "-c", str(clients),
           "-P", str(pipeline), "--csv", *(["--threads", str(threads)] if threads else [])]
    roles = server.roles() if meter is not None and hasattr(server, "roles") else {}
    with CpuMeter(roles, reaped="client") as m:
        out = subprocess.run(cmd, capture_output=True, timeout=900, text=True)
    rows = {}
    for row in csv.reader(io.StringIO(out.stdout)):
        if len(row) >= 7 and row[0] != "test":
            name = row[0].split()[0]
            rows[name] = (float(row[1]), float(row[6]))  # rps, p99 ms
    if not rows:
        raise RuntimeError(f"redis-benchmark printed nothing usable:\n{out.stdout}{out.stderr}")
    if meter is not None:
        meter.update(meter=m, requests=requests * len(rows), threads=max(threads, 1))
    if out.returncode:
        # redis-benchmark stops at the first error a server answers (a refused write:
        # RING_FULL, the lag limit on a starved machine); the tests it did not reach
        # are missing from the table, and why is said here
        print(f"redis-benchmark {' '.join(cmd[cmd.index('-t'):])} stopped: "
              f"{out.stderr.strip()[-300:]}", file=sys.stderr)
    return rows


def redis_py_gets(server, n=10_000):
    import redis
    kw = {}
    if isinstance(server, BuktServer):
        kw = dict(username="bench", password=server.token)
    r = redis.Redis("127.0.0.1", server.port, protocol=2, **kw)
    r.set("rt", "x" * 100)
    t = time.perf_counter()
    for _ in range(n):
        r.get("rt")
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0,
                    help="Bukt's tcp.workers (default: its default)")
    ap.add_argument("--always-requests", type=int, default=20_000,
                    help="SETs per always run (fewer than ~10k are too short to be stable)")
    ap.add_argument("--only-always", action="store_true",
                    help="only the `fsync: always` rows")
    ap.add_argument("--no-fast-path", dest="fast", action="store_false",
                    help="Bukt with resp.fast_path off: every command through Python")
    args = ap.parse_args()
    if not shutil.which("redis-benchmark") or not shutil.which("redis-server"):
        print("bench/resp.py: needs redis-benchmark and redis-server (redis-tools, "
              "redis-server)", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="bukt-bench-resp-")
    results = {}   # (scenario, system, test) -> [(rps, p99)]
    cpu = {}       # (scenario, system) -> [{"meter": CpuMeter, "requests": n}] a run each
    try:
        os.makedirs(os.path.join(tmp, "r"))
        os.makedirs(os.path.join(tmp, "b"))
        servers = {} if args.only_always else {
            "redis": RedisServer(os.path.join(tmp, "r")),
            "bukt": BuktServer(os.path.join(tmp, "b"), fast=args.fast,
                               workers=args.workers)}
        scenarios = [("50 conns", 50, args.requests, 1, 0),
                     ("50 conns, --threads 2", 50, args.requests, 1, 2),
                     ("1 conn", 1, max(2000, args.requests // 10), 1, 0),
                     ("-P 16", 50, args.requests * 4, 16, 0)]
        try:
            for rep in range(0 if args.only_always else args.repeat):
                order = ["redis", "bukt"] if rep % 2 == 0 else ["bukt", "redis"]
                for scen, c, n, p, threads in scenarios:
                    for system in order:
                        meter = {}
                        for test, v in benchmark(servers[system], c, n, p, threads=threads,
                                                 meter=meter).items():
                            results.setdefault((scen, system, test), []).append(v)
                        cpu.setdefault((scen, system), []).append(meter)
                for system in order:
                    results.setdefault(("redis-py 10k GET", system, "GET"), []).append(
                        (redis_py_gets(servers[system]), 0.0))
        finally:
            for s in servers.values():
                s.stop()
        os.makedirs(os.path.join(tmp, "ra"))
        os.makedirs(os.path.join(tmp, "ba"))
        servers = {"redis": RedisServer(os.path.join(tmp, "ra"), always=True),
                   "bukt": BuktServer(os.path.join(tmp, "ba"), always=True, fast=args.fast,
                                     workers=args.workers)}
        try:
            for rep in range(args.repeat):
                order = ["redis", "bukt"] if rep % 2 == 0 else ["bukt", "redis"]
                for c in (4, 16):
                    for system in order:
                        meter = {}
                        for test, v in benchmark(servers[system], c, args.always_requests,
                                                 tests="set", meter=meter).items():
                            results.setdefault((f"always, {c} clients", system, test),
                                               []).append(v)
                        cpu.setdefault((f"always, {c} clients", system), []).append(meter)
        finally:
            for s in servers.values():
                s.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def best(vals):
        return max(v[0] for v in vals), min(v[1] for v in vals)
    print(f"{'scenario':22} {'test':6} {'redis rps':>11} {'bukt rps':>11} {'ratio':>6} "
          f"{'redis p99':>10} {'bukt p99':>9} {'ratio':>6}")
    seen = []
    for (scen, system, test) in results:
        if (scen, test) not in seen:
            seen.append((scen, test))
    missing = 0
    for scen, test in seen:
        if (scen, "redis", test) not in results or (scen, "bukt", test) not in results:
            missing += 1
            got = [sys_ for sys_ in ("redis", "bukt") if (scen, sys_, test) in results]
            print(f"{scen:22} {test:6} only {', '.join(got)} finished it (see above)")
            continue
        rr, rp = best(results[(scen, "redis", test)])
        br, bp = best(results[(scen, "bukt", test)])
        pr = f"{bp / rp:6.2f}" if rp else "     -"
        print(f"{scen:22} {test:6} {rr:11.0f} {br:11.0f} {br / rr:6.2f} {rp:10.3f} "
              f"{bp:9.3f} {pr}")
    print_cpu(cpu)
    return 1 if missing else 0


def span(xs, fmt):
    """The range of `xs` as "lo-hi" (one figure when they agree to the format)."""
    lo, hi = fmt.format(min(xs)), fmt.format(max(xs))
    return lo if lo == hi else f"{lo}-{hi}"


def ceilings(us, clients=("client",), threads=1):
    """(The requests a second the host's CPUs allow at the costs `us`, {role: µs a
    request}; those a server costing nothing would allow: the `clients` roles' costs
    alone, each role's `threads` at most one CPU each)."""
    ncpu = os.cpu_count()
    total = sum(us.values())
    front = sum(us.get(r, 0.0) for r in clients)
    zero = [ncpu * 1e6 / front] if front else []
    zero += [min(threads, ncpu) * 1e6 / us[r] for r in clients if us.get(r)]
    return (ncpu * 1e6 / total if total else float("inf"),
            min(zero) if zero else float("inf"))


def print_cpu(cpu):
    """Where the CPU went: µs a request per role over each redis-benchmark run (all its
    tests), the client's and the host's CPU in % of one CPU, and the rates these costs
    allow on this host; ranges over the repeats."""
    ncpu = os.cpu_count()
    print(f"\nCPU a request, all tests of a run together (us; ranges over the repeats); "
          f"client, host and others (what else ran) in % of one CPU ({ncpu} CPUs: "
          f"{100 * ncpu}% is all of them); 'CPU bound': the requests a second {ncpu} "
          f"CPUs give at these costs; '0-cost': those a server costing nothing would get, "
          f"the client's threads at one CPU each")
    print(f"{'scenario':22} {'system':6} {'run rps':>13} {'client':>11} {'server':>11} "
          f"{'writer':>9} {'client %':>9} {'host %':>9} {'others %':>9} "
          f"{'CPU bound':>13} {'0-cost':>13}")
    for (scen, system), runs in cpu.items():
        runs = [r for r in runs if r]
        if not runs:
            continue
        per = [r["meter"].us_per(r["requests"]) for r in runs]
        rps = [r["requests"] / r["meter"].wall for r in runs]
        caps = [ceilings(p, threads=r["threads"]) for p, r in zip(per, runs)]
        writer = span([p.get("writer", 0.0) for p in per], "{:.1f}") \
            if system == "bukt" else "-"
        print(f"{scen:22} {system:6} {span(rps, '{:.0f}'):>13} "
              f"{span([p['client'] for p in per], '{:.1f}'):>11} "
              f"{span([p['server'] for p in per], '{:.1f}'):>11} {writer:>9} "
              f"{span([r['meter'].percent('client') for r in runs], '{:.0f}'):>9} "
              f"{span([r['meter'].percent('host') for r in runs], '{:.0f}'):>9} "
              f"{span([r['meter'].percent('others') for r in runs], '{:.0f}'):>9} "
              f"{span([c[0] for c in caps], '{:.0f}'):>13} "
              f"{span([c[1] for c in caps], '{:.0f}'):>13}")


if __name__ == "__main__":
    sys.exit(main())
