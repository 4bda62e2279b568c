"""Bukt's TCP server against Redis, driven by the same compiled load generator.

    .venv/bin/python bench/tcp.py                       # every loop, Redis, every workload
    .venv/bin/python bench/tcp.py --loops uvloop --no-redis --seconds 3 --repeat 1
    .venv/bin/python bench/tcp.py --loops epoll --workloads "1 conn"   # one workload

Builds bench/loadgen (bench/loadgen.c) if needed; makes a segment and a bucket with a
token; starts `serve_tcp` on an unused loopback port once per event loop; starts
`redis-server` (Debian's, persistence off) on another; prefills 100k keys of 100 B in
each; runs every workload `--repeat` times, interleaving the servers so that noise from
other processes on the machine falls on all of them alike, and reports the median.

Workloads: 50 connections without pipelining; 1 connection; 1 connection
pipelined 16 deep. 90% GET, 10% SET (`--get` sets the share), 100 B values over 100k
keys.

`--nice N` runs both servers at niceness N (Bukt's workers through tcp.nice, every
thread of redis-server through setpriority): with two workers and the load generator
on two CPUs, -5 lets a woken worker take the CPU from the load generator at once
(conf/bukt.yaml, tcp.nice). Below 0 it needs root or CAP_SYS_NICE.

Besides throughput and latency it reports the servers' CPU time per operation (user +
system time of the server's processes over the run, divided by the operations): on a
small shared machine the load generator and other processes compete for the cores, and
CPU per operation is the figure that such noise disturbs least.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import bukt  # noqa: E402
from bukt import areas  # noqa: E402
from benchutil import RedisServer, cpu_seconds, free_port, wait_port  # noqa: E402

LOADGEN = os.path.join(HERE, "loadgen")
WORKLOADS = [("50 conns", dict(conns=50, depth=1)), ("1 conn", dict(conns=1, depth=1)),
             ("pipeline 16", dict(conns=1, depth=16))]
TOKEN = "bench-token"


def build_loadgen():
    src = LOADGEN + ".c"
    if not os.path.exists(LOADGEN) or os.path.getmtime(LOADGEN) < os.path.getmtime(src):
        subprocess.run(["cc", "-O2", "-o", LOADGEN, src], check=True)


def start_bukt(instance, variant, workers, nice=None):
    """variant: "epoll", "uvloop" or "asyncio", "+py" for the Python frame loop instead of the
    compiled one (bukt/tcp/_wire.pyx)."""
    port = free_port()
    loop, _, py = variant.partition("+")
    code = ("import sys; from bukt.tcp import serve_tcp; "
            f"sys.exit(serve_tcp(instance={instance!r}, bind='127.0.0.1:{port}', "
            f"workers={workers}, loop={loop!r}, compiled={not py}, nice={nice!r}))")
    log = open(os.path.join(tempfile.gettempdir(), f"bukt-bench-tcp-{variant}.log"), "w")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=log)
    wait_port(port)
    time.sleep(0.3)
    return proc, port


def server_pids(proc):
    try:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            children = [int(p) for p in f.read().split()]
    except OSError:
        children = []
    return children or [proc.pid]


def loadgen(proto, port, seconds, keys, prefill=False, get=90, **kw):
    args = [LOADGEN, "--proto", proto, "--port", str(port), "--seconds", str(seconds),
            "--keys", str(keys), "--value", "100", "--get", str(get), "--bucket", "bench",
            "--token", TOKEN, "--prefill", "1" if prefill else "0"]
    for k, v in kw.items():
        args += [f"--{k}", str(v)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--loops", default="epoll,uvloop,uvloop+py,asyncio",
                    help="server variants: epoll, uvloop, asyncio; +py: the Python frame loop")
    ncpu = os.cpu_count() or 1
    ap.add_argument("--workers", default=",".join(str(w) for w in sorted({1, ncpu})),
                    help="worker counts to run, comma-separated (default: 1 and the number "
                         "of CPUs: the load generator shares the CPUs, so one worker can "
                         "beat one per CPU on a small machine)")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--get", type=int, default=90,
                    help="percent of GETs, the rest SETs (default 90; 100: GETs alone)")
    ap.add_argument("--no-redis", action="store_true")
    ap.add_argument("--nice", type=int, default=None,
                    help="run both servers at this niceness (default: as inherited)")
    ap.add_argument("--workloads", default=",".join(w for w, _ in WORKLOADS),
                    help="a comma-separated subset of: " + ", ".join(w for w, _ in WORKLOADS))
    args = ap.parse_args()
    workloads = [(w, kw) for w, kw in WORKLOADS if w in args.workloads.split(",")]
    if not workloads:
        ap.error(f"--workloads names none of: {', '.join(w for w, _ in WORKLOADS)}")
    build_loadgen()

    instance = f"bench-{uuid.uuid4().hex[:8]}"
    store = bukt.create(instance, size="256MiB")
    procs = []
    try:
        store.create_bucket("bench", persist=False)
        store.add_token("bench", hashlib.sha256(TOKEN.encode()).digest(), bukt.READ | bukt.WRITE)
        servers = []
        for loop in args.loops.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                proc, port = start_bukt(instance, loop, workers, args.nice)
                procs.append(proc)
                servers.append((f"bukt {loop} x{workers}", "bukt", port, proc))
        if not args.no_redis:
            redis = RedisServer(nice=args.nice)
            proc, port = redis.proc, redis.port
            if proc is not None:
                procs.append(proc)
                servers.append(("redis", "resp", port, proc))
        for name, proto, port, _ in servers:
            if name == "redis" or name == servers[0][0]:
                loadgen(proto, port, 1, args.keys, prefill=True)  # one segment: fill once
        results = {}
        for _ in range(args.repeat):
            for wname, kw in workloads:
                for name, proto, port, proc in servers:
                    pids = server_pids(proc)
                    cpu = cpu_seconds(*pids)
                    r = loadgen(proto, port, args.seconds, args.keys, get=args.get, **kw)
                    r["cpu_us_per_op"] = (cpu_seconds(*pids) - cpu) / max(r["ops"], 1) * 1e6
                    results.setdefault((wname, name), []).append(r)
        if args.nice is not None:
            print(f"Both servers at niceness {args.nice}.")
        print("| workload | server | ops/s | p50 µs | p99 µs | vs Redis ops/s "
              "| vs Redis p99 | server CPU µs/op |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for wname, _ in workloads:
            base = results.get((wname, "redis"))
            base_ops = statistics.median(r["ops_per_s"] for r in base) if base else None
            base_p99 = statistics.median(r["p99_us"] for r in base) if base else None
            for name, _, _, _ in servers:
                rs = results[(wname, name)]
                ops = statistics.median(r["ops_per_s"] for r in rs)
                p50 = statistics.median(r["p50_us"] for r in rs)
                p99 = statistics.median(r["p99_us"] for r in rs)
                cpu = statistics.median(r["cpu_us_per_op"] for r in rs)
                ratio = f"{ops / base_ops:.2f}x" if base_ops else "-"
                p99_ratio = f"{p99 / base_p99:.2f}x" if base_p99 else "-"
                print(f"| {wname} | {name} | {ops:,.0f} | {p50:.0f} | {p99:.0f} | {ratio} "
                      f"| {p99_ratio} | {cpu:.1f} |")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        store.unlink()
        store.close()
        areas.unlink(instance)      # a killed pool's (-tcp-auth, -tcp-stats)


if __name__ == "__main__":
    main()
