"""Change-feed benchmark: event latency and what watchers cost the writers, beside Redis
keyspace notifications in the same run.

    make bench            # or: .venv/bin/python bench/watch.py [--seconds S] [--watchers 0,10,100]

A real `bukt serve` (writer, HTTP, TCP) on unused ports. For 0, 10 and 100 watchers of
one bucket, spread over two processes (asyncio: bukt.feed's awatch locally, SSE
connections to the HTTP face; Redis: PSUBSCRIBE connections to a redis-server with
notify-keyspace-events on):

  throughput  one process sets keys of 100-byte values as fast as it can for S seconds
              (locally attached; Redis: SET over one connection, unpipelined), sets/s;
              "ended": watchers whose stream ended meanwhile (Bukt: gone or cut off,
              having fallen out of the feed; Redis: disconnected by its output buffer
              limit): they stop costing the writer anything, so read the two together.
  latency     the same process then sets 2000 keys paced at 1000/s; the key names the
              write, and a watcher process records when each event arrives. Latency is
              arrival minus the moment the set returned (acknowledged), p50 and p99, on
              one clock (CLOCK_MONOTONIC, same host).

Watchers run on the same cores as the writer and the service (2 here): what they cost
is CPU time taken from the writer as much as anything in the feed's design.
"""
import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# bench/http.py would shadow the standard library's http package the harness uses
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))

import bukt                                           # noqa: E402
from serve_harness import Service                     # noqa: E402

VALUE = b"v" * 100
LAT_N = 2000
LAT_RATE = 1000


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")


# -- watchers ------------------------------------------------------------------------------

async def _watch_all(runs, ready, stop, ended, settle=0.0):
    """Run the watcher coroutines `runs` until `stop`; `ended` counts those whose
    stream ended before the run did (gone, cut off, disconnected). `settle`: seconds
    for them to connect and start streaming before `ready`."""
    tasks = [asyncio.create_task(r) for r in runs]
    if settle:
        await asyncio.sleep(settle)
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.05)
    with ended.get_lock():
        ended.value += sum(t.done() for t in tasks)
    for t in tasks:
        t.cancel()


async def _lines(port, request, on_line):
    """A streaming connection: send `request`, hand each line to `on_line` until the
    stream ends (or the run cancels it). Without `on_line` it takes what comes in
    chunks: splitting 100 streams into lines in two Python processes cost more than
    the server's side and was most of what the latency measured."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(request)
    await w.drain()
    while True:
        if on_line is None:
            if not await r.read(1 << 16):
                return
            continue
        line = await r.readline()
        if not line:
            return
        on_line(line)


def _local_watchers(name, n, arrivals):
    store = bukt.attach(name)

    async def run(w, record):
        async for e in w:
            if record and e.key.startswith(b"lat:"):
                arrivals[int(e.key[4:])] = time.monotonic_ns()

    return [run(store.awatch("b"), i == 0) for i in range(n)], 0.0


def _sse_watchers(port, token, n, arrivals):
    request = (f"GET /api/v1/buckets/b/watch HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}"
               "\r\nAccept: text/event-stream\r\n\r\n").encode()

    def record(line):
        if line.startswith(b"data:"):
            k = json.loads(line[5:]).get("key", "")
            if k.startswith("lat:"):
                arrivals[int(k[4:])] = time.monotonic_ns()

    return [_lines(port, request, record if i == 0 else None) for i in range(n)], 0.5


def _redis_watchers(port, n, arrivals):
    def record(line):
        if line.startswith(b"lat:"):
            arrivals[int(line[4:].strip())] = time.monotonic_ns()

    request = resp(b"PSUBSCRIBE", b"__keyevent@0__:*")
    return [_lines(port, request, record if i == 0 else None) for i in range(n)], 0.5


def watcher_proc(kind, target, n, ready, stop, out, record, ended):
    arrivals = {}

    async def main():
        if kind == "local":
            runs, settle = _local_watchers(target, n, arrivals)
        elif kind == "sse":
            runs, settle = _sse_watchers(target[0], target[1], n, arrivals)
        else:
            runs, settle = _redis_watchers(target, n, arrivals)
        await _watch_all(runs, ready, stop, ended, settle)
    try:
        asyncio.run(main())
    except Exception as e:                              # noqa: BLE001
        print(f"  watcher process ({kind}): {e!r}", file=sys.stderr)
    if record:
        out.put(arrivals)


# -- writers --------------------------------------------------------------------------------

def resp(*args):
    """A command in RESP."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)


class RedisConn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")

    def cmd(self, *args):
        self.s.sendall(resp(*args))
        return self.f.readline()


def writer_run(kind, target, seconds, phase):
    """phase "rate": (sets/s for `seconds`, {}); "latency": (0, {i: ack time ns} of
    LAT_N paced sets)."""
    if kind == "redis":
        c = RedisConn(target)
        put = lambda k, v: c.cmd(b"SET", k, v)          # noqa: E731
    else:
        store = bukt.attach(target)
        b = store.bucket("b")
        put = b.set
    if phase == "latency":
        return 0, paced(put)
    n = refused = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for i in range(200):
            try:
                put(b"k%d" % (i + n), VALUE)
            except bukt.BuktError:
                refused += 1
        n += 200
    n -= refused
    rate = n / seconds
    if kind != "redis":                 # the writer process drains what it fell behind by
        while store.ring_position()[0] < store.ring_position()[1]:
            time.sleep(0.01)
    return rate, {}


def paced(put):
    acks = {}
    t0 = time.monotonic()
    for i in range(LAT_N):
        wait = t0 + i / LAT_RATE - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        try:
            put(b"lat:%d" % i, VALUE)
        except bukt.BuktError:          # refused (the writer process starved of CPU
            continue                    # past fsync_lag_limit): not counted
        acks[i] = time.monotonic_ns()
    time.sleep(0.5)
    return acks


def run_case(kind, target, nwatch, seconds):
    """(sets/s with `nwatch` watchers, then latencies in ms and events missed, measured
    on `nwatch` fresh watchers: one that fell out of the feed at full speed would
    otherwise say nothing about latency)."""
    rate, _, _, ended = run_phase(kind, target, nwatch, seconds, "rate")
    _, lat, missing, _ = run_phase(kind, target, max(nwatch, 1), seconds, "latency")
    return rate, lat, missing, ended


def run_phase(kind, target, nwatch, seconds, phase):
    ctx = mp.get_context("fork")
    stop, out, ended = ctx.Event(), ctx.Queue(), ctx.Value("i", 0)
    procs = []
    split = [nwatch - nwatch // 2, nwatch // 2] if nwatch else []
    for j, n in enumerate(split):
        if n == 0:
            continue
        ready = ctx.Event()
        p = ctx.Process(target=watcher_proc,
                        args=(kind, target, n, ready, stop, out, j == 0 and phase == "latency",
                              ended))
        p.start()
        ready.wait(60)
        procs.append(p)
    try:
        rate, acks = writer_run(kind, target, seconds, phase) \
            if kind != "sse" else writer_run("local", SSE_STORE[0], seconds, phase)
    finally:
        stop.set()
    arrivals = out.get(timeout=60) if procs and phase == "latency" else {}
    for p in procs:
        p.join(30)
        if p.is_alive():
            p.kill()
    lat = [(arrivals[i] - acks[i]) / 1e6 for i in acks if i in arrivals]
    missing = len(acks) - len(lat)
    return rate, lat, missing, ended.value


SSE_STORE = [None]


def start_redis():
    exe = shutil.which("redis-server")
    if not exe:
        return None, None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--notify-keyspace-events", "KEA"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            RedisConn(port).cmd(b"PING")
            return p, port
        except OSError:
            time.sleep(0.05)
    p.kill()
    return None, None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--watchers", default="0,10,100")
    args = ap.parse_args()
    counts = [int(x) for x in args.watchers.split(",")]
    tmp = tempfile.mkdtemp(prefix="bench-watch-")
    from pathlib import Path
    svc = Service(Path(tmp))
    redis, rport = start_redis()
    try:
        svc.start()
        token = svc.create_bucket("b", persist=True)
        SSE_STORE[0] = svc.name
        print(f"bench/watch.py on {os.cpu_count()} cores: one writer process, watchers in "
              f"two processes, {args.seconds:g} s of sets, then {LAT_N} paced sets at "
              f"{LAT_RATE}/s for latency (acknowledged write -> event received)\n")
        print(f"  {'face':<8}{'watchers':>9}{'sets/s':>11}{'vs 0':>8}{'ended':>7}"
              f"{'p50 ms':>9}{'p99 ms':>9}{'missed':>8}")
        cases = [("local", svc.name), ("sse", (svc.http_port, token))]
        if redis:
            cases.append(("redis", rport))
        for kind, target in cases:
            base = None
            for n in counts:
                rate, lat, missing, ended = run_case(kind, target, n, args.seconds)
                base = base or rate
                p50 = f"{pct(lat, 50):9.2f}" if lat else f"{'-':>9}"
                p99 = f"{pct(lat, 99):9.2f}" if lat else f"{'-':>9}"
                print(f"  {kind:<8}{n:>9}{rate:>11.0f}{rate / base:>7.2f}x{ended:>7}{p50}{p99}"
                      f"{missing:>8}", flush=True)
        if not redis:
            print("  redis: n/a (no redis-server)")
        print("\n  (sse and local share the writer: a local process setting keys; sse's "
              "watchers read the same feed through the HTTP face)")
    finally:
        svc.cleanup()
        if redis:
            redis.send_signal(signal.SIGTERM)
            redis.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
