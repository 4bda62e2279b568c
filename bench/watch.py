"""Change-feed benchmark: event latency and what watchers cost the writers, beside Redis
keyspace notifications in the same run.

    make bench            # or: .venv/bin/python bench/watch.py [--seconds S] [--watchers 0,10,100] [--coalesce 5ms]
                          #     [--resp-coalesce 2ms]
                          #     [--faces local,sse,resp,redis]

A real `bukt serve` (writer, HTTP, TCP, RESP) on unused ports. For 0, 10 and 100 watchers
of one bucket, spread over two processes (asyncio: bukt.feed's awatch locally, SSE
connections to the HTTP face; resp and Redis: one code path, raw-socket connections that
PSUBSCRIBE `__keyspace@<db>__:*`, to Bukt's RESP face (db: the bucket, after AUTH) or to
a redis-server with notify-keyspace-events on (db 0)):

  throughput  one process sets keys of 100-byte values as fast as it can for S seconds
              (local and sse: locally attached; resp and Redis: SET over one RESP
              connection, unpipelined, the same client code), sets/s;
              "ended": watchers whose stream ended meanwhile (Bukt: gone or cut off,
              having fallen out of the feed; Redis: disconnected by its output buffer
              limit): they stop costing the writer anything, so read the two together.
  latency     the same process then sets 2000 keys paced at 1000/s; the key names the
              write, and a watcher process records when each event arrives. Latency is
              arrival minus the moment the set returned (acknowledged), p50 and p99, on
              one clock (CLOCK_MONOTONIC, same host).

Watchers run on the same cores as the writer and the service (2 here): what they cost
is CPU time taken from the writer as much as anything in the feed's design. So the
throughput phase also says where the CPU went (benchutil.CpuMeter), in CPU microseconds
a set: the setting process ("setter", this one), Bukt's writer process, the face the
watchers read (sse: the HTTP workers; resp: the TCP workers; redis: redis-server, which
also takes the SETs), the two watcher processes, and the watchers' µs an event (a set
seen by one watcher: sets x watchers); "host %" is the whole machine's CPU use over the
phase in % of one CPU.
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

sys.path.append(HERE)           # last, for benchutil: after the standard library
import bukt                                           # noqa: E402
from benchutil import CpuMeter                        # noqa: E402
from serve_harness import Service                     # noqa: E402

VALUE = b"v" * 100
LAT_N = 2000
LAT_RATE = 1000


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")


# -- watchers ------------------------------------------------------------------------------

async def _watch_all(runs, ready, stop, ended, settle=0.0, subscribed=None):
    """Run the watcher coroutines `runs` until `stop`; `ended` counts those whose
    stream ended before the run did (gone, cut off, disconnected). `settle`: seconds
    for them to connect and start streaming before `ready` (with `subscribed`: at
    most that long, until every one has its subscription confirmed)."""
    tasks = [asyncio.create_task(r) for r in runs]
    if subscribed is not None:
        end = time.monotonic() + settle
        while subscribed[0] < len(tasks) and time.monotonic() < end:
            await asyncio.sleep(0.01)
    elif settle:
        await asyncio.sleep(settle)
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.05)
    with ended.get_lock():
        ended.value += sum(t.done() for t in tasks)
    for t in tasks:
        t.cancel()


# An SSE stream's end: its last event (cut off as too slow, or gone from the feed). The
# HTTP connection stays open after it (keep-alive), so a stream's end is not EOF.
SSE_END = (b"event: cutoff", b"event: gone")


async def _lines(port, request, on_line, subscribed=None):
    """A streaming connection: send `request`, hand each line to `on_line` until the
    stream ends (or the run cancels it). Without `on_line` it takes what comes in
    chunks: splitting 100 streams into lines in two Python processes cost more than
    the server's side and was most of what the latency measured. `subscribed` (RESP):
    a one-item list counting the streams whose PSUBSCRIBE was confirmed (`:1`)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(request)
    await w.drain()
    if subscribed is not None:
        while True:
            line = await r.readline()
            if not line or line.startswith(b"-"):
                raise RuntimeError(f"PSUBSCRIBE refused: {line!r}")
            if line == b":1\r\n":
                subscribed[0] += 1
                break
    tail = b""
    while True:
        if on_line is None:
            data = await r.read(1 << 16)
            if not data:
                return
            buf = tail + data
            tail = buf[-max(map(len, SSE_END)):]        # a marker split between reads
            if any(end in buf for end in SSE_END):
                return
            continue
        line = await r.readline()
        if not line or line.startswith(SSE_END):
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


def _resp_watchers(port, auth, db, n, arrivals, subscribed):
    """PSUBSCRIBE `__keyspace@<db>__:*` over raw RESP: one code path for Bukt's RESP face
    (auth: its AUTH command; db: the bucket) and Redis (no auth; db 0). The channel
    names the key, so the recording stream takes the key from it."""
    def record(line):
        at = line.find(b"__:lat:")
        if at >= 0:
            arrivals[int(line[at + 7:].strip())] = time.monotonic_ns()

    request = auth + resp(b"PSUBSCRIBE", b"__keyspace@%s__:*" % db)
    return [_lines(port, request, record if i == 0 else None, subscribed)
            for i in range(n)], 10.0


def watcher_proc(kind, target, n, ready, stop, out, record, ended):
    arrivals = {}
    subscribed = None

    async def main():
        nonlocal subscribed
        if kind == "local":
            runs, settle = _local_watchers(target, n, arrivals)
        elif kind == "sse":
            runs, settle = _sse_watchers(target[0], target[1], n, arrivals)
        elif kind == "resp":
            subscribed = [0]
            runs, settle = _resp_watchers(target[0], resp(b"AUTH", b"b", target[1]), b"b",
                                          n, arrivals, subscribed)
        else:
            subscribed = [0]
            runs, settle = _resp_watchers(target, b"", b"0", n, arrivals, subscribed)
        await _watch_all(runs, ready, stop, ended, settle, subscribed)
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
    """One unpipelined RESP connection: the writer of the Redis rows and of Bukt's RESP
    rows alike (auth: Bukt's `AUTH b <token>`)."""

    def __init__(self, port, auth=None):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.s.makefile("rb")
        if auth is not None and self.cmd(b"AUTH", *auth) != b"+OK\r\n":
            raise RuntimeError("AUTH refused")

    def cmd(self, *args):
        self.s.sendall(resp(*args))
        return self.f.readline()

    def set(self, k, v):
        line = self.cmd(b"SET", k, v)
        if line.startswith(b"-"):       # refused (as bukt.BuktError for the local writer)
            raise bukt.BuktError(line.decode().strip())


def writer_run(kind, target, seconds, phase):
    """phase "rate": (sets/s for `seconds`, {}); "latency": (0, {i: ack time ns} of
    LAT_N paced sets)."""
    if kind == "redis":
        put = RedisConn(target).set
    elif kind == "resp":                # target: (RESP port, token, instance)
        put = RedisConn(target[0], (b"b", target[1])).set
        store = bukt.attach(target[2])
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


def run_case(kind, target, nwatch, seconds, roles):
    """(sets/s with `nwatch` watchers, then latencies in ms and events missed, measured
    on `nwatch` fresh watchers: one that fell out of the feed at full speed would
    otherwise say nothing about latency; and the CpuMeter of the throughput phase)."""
    rate, _, _, ended, meter = run_phase(kind, target, nwatch, seconds, "rate", roles)
    _, lat, missing, _, lmeter = run_phase(kind, target, max(nwatch, 1), seconds, "latency",
                                           roles)
    return rate, lat, missing, ended, meter, lmeter


def run_phase(kind, target, nwatch, seconds, phase, roles):
    """`roles`: CpuMeter's roles of the server processes, measured with the watcher
    processes ("watchers") and this one ("setter") while the sets run."""
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
        # (measured before `stop`: a watcher process that has exited can't be read)
        with CpuMeter({**roles, "watchers": [p.pid for p in procs]}, me="setter") as meter:
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
    return rate, lat, missing, ended.value, meter


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
    ap.add_argument("--faces", default="local,sse,resp,redis")
    ap.add_argument("--coalesce", default=None,
                    help="the service's feed.coalesce (SSE), e.g. 2ms (default: its default)")
    ap.add_argument("--resp-coalesce", default=None,
                    help="the service's resp.coalesce (RESP subscribers), e.g. 1ms "
                         "(default: its default)")
    args = ap.parse_args()
    faces = args.faces.split(",")
    counts = [int(x) for x in args.watchers.split(",")]
    tmp = tempfile.mkdtemp(prefix="bench-watch-")
    from pathlib import Path
    conf = {}
    if args.coalesce:
        conf["feed"] = {"coalesce": args.coalesce}
    if args.resp_coalesce:
        conf["resp"] = {"coalesce": args.resp_coalesce}
    svc = Service(Path(tmp), **conf)
    redis, rport = start_redis()
    try:
        svc.start()
        token = svc.create_bucket("b", persist=True)
        SSE_STORE[0] = svc.name
        print(f"bench/watch.py on {os.cpu_count()} cores: one writer process, watchers in "
              f"two processes, {args.seconds:g} s of sets, then {LAT_N} paced sets at "
              f"{LAT_RATE}/s for latency (acknowledged write -> event received)\n")
        print(f"  {'face':<8}{'watchers':>9}{'sets/s':>11}{'vs 0':>8}{'ended':>7}"
              f"{'p50 ms':>9}{'p99 ms':>9}{'missed':>8}  | CPU us a set:"
              f"{'setter':>7}{'writer':>7}{'face':>7}{'watch.':>7}  us/event  host %"
              f"  | paced: writer %  face %  face us/event")
        state = svc.state()
        writer = {"writer": [state["writer"]["pid"]]}
        roles = {"local": writer, "sse": {**writer, "face": [state["http"]["pid"]]},
                 "resp": {**writer, "face": [state["tcp"]["pid"]]},
                 "redis": {"face": [redis.pid] if redis else []}}
        cases = [("local", svc.name), ("sse", (svc.http_port, token)),
                 ("resp", (svc.resp_port, token.encode(), svc.name))]
        if redis:
            cases.append(("redis", rport))
        for kind, target in cases:
            if kind not in faces:
                continue
            base = None
            for n in counts:
                rate, lat, missing, ended, meter, lmeter = run_case(
                    kind, target, n, args.seconds, roles[kind])
                base = base or rate
                p50 = f"{pct(lat, 50):9.2f}" if lat else f"{'-':>9}"
                p99 = f"{pct(lat, 99):9.2f}" if lat else f"{'-':>9}"
                sets = rate * args.seconds
                us = meter.us_per(sets)
                cols = "".join(f"{us[r]:7.1f}" if r in us else f"{'-':>7}"
                               for r in ("setter", "writer", "face", "watchers"))
                per_event = (f"{meter.seconds['watchers'] * 1e6 / (sets * n):10.2f}"
                             if n and sets else f"{'-':>10}")
                # the paced phase: what the writer and the face cost at LAT_RATE events a
                # second for max(n, 1) watchers (the face's µs per event a watcher saw)
                lw = max(n, 1)
                face_ev = (f"{lmeter.seconds['face'] * 1e6 / (LAT_N * lw):14.2f}"
                           if "face" in lmeter.seconds else f"{'-':>14}")
                print(f"  {kind:<8}{n:>9}{rate:>11.0f}{rate / base:>7.2f}x{ended:>7}{p50}{p99}"
                      f"{missing:>8}  | {'':12}{cols}{per_event}{meter.percent('host'):8.0f}"
                      f"  | {lmeter.percent('writer'):14.1f}{lmeter.percent('face'):8.1f}"
                      f"{face_ev}", flush=True)
        if not redis and "redis" in faces:
            print("  redis: n/a (no redis-server)")
        print("\n  (sse and local share the writer: a local process setting keys; sse's "
              "watchers read the same feed through the HTTP face; resp and redis share "
              "their client code: SET over one connection, PSUBSCRIBE keyspace channels;\n"
              "   CPU over the throughput phase, its drain included, per set it stored; "
              "us/event: the watcher processes' CPU per set per watcher;\n   paced: the "
              "same over the latency phase's paced sets, in % of a CPU, and the face's CPU "
              "per event a watcher received)")
    finally:
        svc.cleanup()
        if redis:
            redis.send_signal(signal.SIGTERM)
            redis.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
