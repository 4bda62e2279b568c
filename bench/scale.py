"""Scale-out: redis-benchmark through twemproxy (nutcracker) over 1 and 3 Bukt nodes and
over 1 and 3 Redis servers, in the same run, alternated.

    .venv/bin/python bench/scale.py [--requests 50000] [--repeat 2]

Each Bukt node is a `bukt serve` (default tcp.workers, one HTTP worker) with a
cache-only bucket, as Redis runs without persistence (--persist: a logged one), whose
token is registered from a file on every node; its pool is written by `bukt
cluster config` (ketama, md5). The Redis pools are the same but for `redis_auth`.
redis-benchmark: `-t get,set -d 100 -r 100000 -c 50`, with the pools'
`server_connections` at 1 (the default `bukt cluster config` writes: a client's
pipelined requests stay in order) and at 2 (a Bukt node's two TCP workers both serve
the proxy). Prints requests per second and p99 per pool, Bukt/Redis ratios behind the
same proxy, and 3-node/1-node ratios
(target in docs/scale-out.md's issue: Bukt >= 1.2x Redis behind the same proxy).
Then where the CPU went (benchutil.CpuMeter): CPU microseconds a request of the client,
nutcracker, the servers and the Bukt nodes' writers, nutcracker's and the client's CPU in %
of one CPU, and the requests a second a server costing nothing could reach.
"""
import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# bench/http.py would shadow the standard library's http
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.join(ROOT, "bench")]
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
sys.path.insert(0, ROOT)

from serve_harness import PY, Service, unused_port  # noqa: E402


def _bench_resp():
    """bench/resp.py, loaded by path (bench/ on sys.path would shadow http)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_resp",
                                                  os.path.join(ROOT, "bench", "resp.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_resp = _bench_resp()           # (it puts bench/ last on sys.path, for benchutil)
benchmark = _resp.benchmark
span = _resp.span
ceilings = _resp.ceilings
from benchutil import RedisServer, wait_port  # noqa: E402

NODES = 3
TESTS = "get,set"
CONNS = (1, 2)          # server_connections: 1 (the default written), 2 (a node's workers)


def nutcracker_path():
    return shutil.which("nutcracker") or ("/usr/sbin/nutcracker"
                                          if os.path.exists("/usr/sbin/nutcracker") else None)


class BuktNode:
    """`persist`: the bucket logs its changes (the writer appends every SET to the log);
    else cache-only, as Redis runs here (no persistence)."""

    def __init__(self, tmp, token_file, persist=False):
        self.svc = Service(pathlib.Path(tmp), memory="128MiB", limits={"ring_size": "32MiB"},
                           http={"workers": 1})
        self.svc.settings["tcp"].pop("workers", None)      # the default: one per CPU
        self.svc.configure()
        self.svc.start()
        env = dict(os.environ, PYTHONPATH=ROOT)
        subprocess.run([PY, "-m", "bukt", "buckets", "create", "bench", "--config",
                        self.svc.conf, "--token-file", token_file,
                        *([] if persist else ["--cache-only"])], check=True, env=env,
                       capture_output=True)
        self.port = self.svc.resp_port

    def stop(self):
        self.svc.stop()
        self.svc.cleanup()


class Proxy:
    """nutcracker over `ports`; for Bukt the pool comes from `bukt cluster config`."""

    def __init__(self, tmp, name, ports, conns, token_file=None, token=None):
        self.port = unused_port()
        self.token = token
        self.servers = {}
        conf = os.path.join(tmp, f"{name}.yml")
        nodes = [a for i, p in enumerate(ports) for a in ("--node", f"n{i}=127.0.0.1:{p}")]
        subprocess.run([PY, "-m", "bukt", "cluster", "config", "--listen",
                        f"127.0.0.1:{self.port}", "-b", "bench", "--token-file",
                        token_file, "-o", conf, "--server-connections", str(conns), *nodes],
                       check=True, capture_output=True, env=dict(os.environ, PYTHONPATH=ROOT))
        if token is None:           # Redis: the same pool without redis_auth
            with open(conf) as f:
                text = f.read()
            with open(conf, "w") as f:
                f.write("".join(line for line in text.splitlines(True)
                                if "redis_auth" not in line))
        self.proc = subprocess.Popen([nutcracker_path(), "-c", conf, "-s", str(unused_port()),
                                      "-a", "127.0.0.1", "-o", os.path.join(tmp, f"{name}.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def auth(self):
        return ["-a", self.token] if self.token else []

    def roles(self):
        """CpuMeter's roles: this proxy, and the pool's servers (`servers`, set by main)."""
        return {"nutcracker": [self.proc.pid], **self.servers}

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def print_cpu(cpu):
    """µs a request per role (GET and SET together; ranges over the repeats), the
    proxy's and the client's CPU in % of one CPU, and the ceiling they set: the requests a
    second of a server that cost nothing, where the proxy's one thread, the client's one
    thread, or the host's CPUs shared by the two, whichever comes first, stop it."""
    ncpu = os.cpu_count()
    print(f"\nCPU a request (us; GET and SET together; ranges over the repeats; less "
          f"sensitive to the host's load than requests a second), % of one CPU "
          f"({ncpu} CPUs: {100 * ncpu}% is all), and the ceiling of a zero-cost server:")
    print(f"{'conns':5} {'nodes':5} {'system':6} {'client':>10} {'nutcracker':>11} "
          f"{'servers':>10} {'writers':>9} {'nutcr. %':>9} {'client %':>9} {'host %':>9} "
          f"{'ceiling':>8}")
    for (c, n, system), runs in cpu.items():
        runs = [r for r in runs if r]
        if not runs:
            continue
        per = [r["meter"].us_per(r["requests"]) for r in runs]

        def col(role, fmt="{:.1f}"):
            return span([p.get(role, 0.0) for p in per], fmt)

        def pct(role):
            return span([r["meter"].percent(role) for r in runs], "{:.0f}")
        ceiling = [ceilings(p, ("client", "nutcracker"))[1] for p in per]
        print(f"{c:5} {n:5} {system:6} {col('client'):>10} {col('nutcracker'):>11} "
              f"{col('server'):>10} {col('writer') if system == 'bukt' else '-':>9} "
              f"{pct('nutcracker'):>9} {pct('client'):>9} {pct('host'):>9} "
              f"{span(ceiling, '{:.0f}'):>8}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--persist", action="store_true",
                    help="logged Bukt buckets (default cache-only, like Redis here)")
    args = ap.parse_args()
    if not (shutil.which("redis-benchmark") and shutil.which("redis-server")
            and nutcracker_path()):
        print("bench/scale.py: needs redis-benchmark, redis-server and nutcracker "
              "(apt-get install redis-tools redis-server nutcracker)", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="bukt-bench-scale-")
    results = {}                  # (pool, test) -> [(rps, p99)]
    cpu = {}                      # pool -> [{"meter": CpuMeter, "requests": n}] a run each
    servers, proxies = [], {}
    try:
        from bukt.tokens import new_token
        token = new_token()
        token_file = os.path.join(tmp, "bench.token")
        with open(token_file, "w") as f:
            f.write(token + "\n")
        os.chmod(token_file, 0o600)
        bukt_ports, redis_ports = [], []
        for i in range(NODES):
            for kind in ("b", "r"):
                d = os.path.join(tmp, f"{kind}{i}")
                os.makedirs(d)
                s = BuktNode(d, token_file, args.persist) if kind == "b" else RedisServer(d)
                servers.append(s)
                (bukt_ports if kind == "b" else redis_ports).append(s.port)
        for c in CONNS:
            for n in (1, NODES):
                proxies[(c, n, "bukt")] = Proxy(tmp, f"bukt{n}c{c}", bukt_ports[:n], c,
                                                token_file, token)
                proxies[(c, n, "redis")] = Proxy(tmp, f"redis{n}c{c}", redis_ports[:n], c,
                                                 token_file)
        # a node's TCP workers (the pool, whose children they are) and its writer (which
        # logs the SETs); not its HTTP face. The nodes of the pool only: an idle node's
        # writer still keeps its heartbeat and its clock.
        bukt_states = [s.svc.state() for s in servers if isinstance(s, BuktNode)]
        redis_pids = [s.proc.pid for s in servers if isinstance(s, RedisServer)]
        for (c, n, system), proxy in proxies.items():
            proxy.servers = ({"server": [st["tcp"]["pid"] for st in bukt_states[:n]],
                              "writer": [st["writer"]["pid"] for st in bukt_states[:n]]}
                             if system == "bukt" else {"server": redis_pids[:n]})
        for rep in range(args.repeat):
            order = list(proxies) if rep % 2 == 0 else list(reversed(proxies))
            for name in order:
                meter = {}
                for test, v in benchmark(proxies[name], 50, args.requests, tests=TESTS,
                                         meter=meter).items():
                    results.setdefault((name, test), []).append(v)
                cpu.setdefault(name, []).append(meter)
    finally:
        for p in proxies.values():
            p.stop()
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def best(pool, test):
        vals = results[(pool, test)]
        return max(v[0] for v in vals), min(v[1] for v in vals)
    print(f"{'conns':5} {'nodes':5} {'test':5} {'redis rps':>10} {'bukt rps':>10} "
          f"{'bukt/redis':>10} {'redis p99':>9} {'bukt p99':>9}")
    for c in CONNS:
        for n in (1, NODES):
            for test in ("SET", "GET"):
                rr, rp = best((c, n, "redis"), test)
                br, bp = best((c, n, "bukt"), test)
                print(f"{c:5} {n:5} {test:5} {rr:10.0f} {br:10.0f} {br / rr:10.2f} "
                      f"{rp:9.3f} {bp:9.3f}")
    for c in CONNS:
        for system in ("redis", "bukt"):
            for test in ("SET", "GET"):
                ratio = best((c, NODES, system), test)[0] / best((c, 1, system), test)[0]
                print(f"server_connections {c}, {system} {test}: {NODES} nodes / 1 node = "
                      f"{ratio:.2f}")
    print_cpu(cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
