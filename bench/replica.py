"""Read replica benchmark: full copy time and replica lag under a steady write load.

    .venv/bin/python bench/replica.py [--keys 1000000] [--rate 50000] [--seconds 5]

Two real `bukt serve`s on unused ports (tests/support/serve_harness.py), the second a
read replica of the first (docs/operations.md, "Read replicas"):

  copy   the primary holds --keys keys (16-byte keys, 24-byte values, loaded by two
         local processes, then compacted with `bukt compact`, so that no compaction
         of the primary's runs beside the copy); the replica starts and takes its
         full copy. Reported: the
         applier's own figure ("copied N records ... in X s": snapshot streamed,
         decoded and applied, its writer logging behind it) and keys per second.
  lag    one process on the primary sets keys at --rate a second for --seconds
         (paced each millisecond), each value the CLOCK_MONOTONIC time just before
         its set; a process on the replica watches its change feed (bukt.feed, with
         values) and notes when each event arrives. Lag = arrival minus that time, on
         one clock: the primary's writer, its log stream, the replica's applier and
         the replica's writer publishing to its feed, end to end. p50, p99, max.
         Measured after a `bukt compact` of the replica (the copy left its log due).

Everything shares this machine's cores with whatever else runs: read the figures
with the load average printed beside them.
"""
import argparse
import multiprocessing as mp
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import pathlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))

import bukt                                           # noqa: E402
from bukt import errors                               # noqa: E402
from serve_harness import PY, Service, wait_for       # noqa: E402

BUCKET = "b"
TS = struct.Struct("<q")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")


def _again(fn, *args):
    while True:
        try:
            return fn(*args)
        except (errors.RingFull, errors.DiskError):
            time.sleep(0.01)


def _load(name, start, n):
    b = bukt.attach(name).bucket(BUCKET)
    for i in range(start, start + n):
        _again(b.set, b"key-%012d" % i, b"value-%018d" % i)


def _pace(name, rate, seconds, done):
    b = bukt.attach(name).bucket(BUCKET)
    t0 = time.monotonic()
    sent = 0
    total = int(rate * seconds)
    while sent < total:
        due = min(total, int((time.monotonic() - t0) * rate) + 1)
        while sent < due:
            _again(b.set, b"lag-%010d" % sent, TS.pack(time.monotonic_ns()))
            sent += 1
        time.sleep(0.001)
    done.value = sent


def _watch(name, n, out):
    store = bukt.attach(name)
    w = store.watch(BUCKET, prefix=b"lag-", values=True)
    lags, seen = [], set()
    deadline = time.monotonic() + 120
    while len(seen) < n and time.monotonic() < deadline:
        evs = w.poll(4096)
        now = time.monotonic_ns()
        for e in evs:
            if e.gone:
                out.put(("gone", len(seen)))
                return
            if e.kind == "set" and e.value and len(e.value) == TS.size:
                seen.add(e.key)
                lags.append((now - TS.unpack(e.value)[0]) / 1e6)
        if not evs:
            w.wait(0.01)
    out.put(("lags", lags))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--rate", type=int, default=50_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bukt-bench-replica-"))
    (tmp / "p").mkdir()
    (tmp / "r").mkdir()
    big = {"memory": "512MiB", "limits": {"ring_size": "16MiB"},
           "feed": {"size": "64MiB", "max_lag": "16MiB"}}
    p, r = Service(tmp / "p", **big), Service(tmp / "r", **big)
    ctx = mp.get_context("fork")
    try:
        p.start()
        p.create_bucket(BUCKET)
        t0 = time.monotonic()
        half = args.keys // 2
        loaders = [ctx.Process(target=_load, args=(p.name, i * half, half)) for i in range(2)]
        for x in loaders:
            x.start()
        for x in loaders:
            x.join()
        print(f"loaded {2 * half} keys into the primary in {time.monotonic() - t0:.1f} s")
        # the load leaves the primary's log due for a compaction: run it now, so that
        # the copy below is measured alone, not beside the primary's writer compacting
        t0 = time.monotonic()
        subprocess.run([PY, "-m", "bukt", "compact", "--config", p.conf], check=True,
                       stdout=subprocess.DEVNULL)
        print(f"compacted the primary in {time.monotonic() - t0:.1f} s")
        r.configure(replica={"of": f"bukt://:{p.admin_token()}@127.0.0.1:{p.http_port}"})
        t0 = time.monotonic()
        r.start()
        m = wait_for(lambda: re.search(r"copied (\d+) records .* in ([\d.]+) s", r.log()),
                     600, 0.05, "the full copy")
        n, secs = int(m.group(1)), float(m.group(2))
        print(f"copy: {n} records in {secs:.2f} s ({n / secs:,.0f} a second) by the "
              f"applier; {time.monotonic() - t0:.1f} s from `bukt serve` to done; "
              f"load {os.getloadavg()[0]:.1f}")
        # the copy leaves the replica's log due for a compaction: run it before the
        # lag is measured, as for the primary above (the steady state, not a writer's
        # compaction thread beside it)
        subprocess.run([PY, "-m", "bukt", "compact", "--config", r.conf], check=True,
                       stdout=subprocess.DEVNULL)
        time.sleep(1)
        q = ctx.Queue()
        done = ctx.Value("q", 0)
        total = int(args.rate * args.seconds)
        watcher = ctx.Process(target=_watch, args=(r.name, total, q))
        watcher.start()
        time.sleep(0.5)
        pacer = ctx.Process(target=_pace, args=(p.name, args.rate, args.seconds, done))
        t0 = time.monotonic()
        pacer.start()
        pacer.join()
        took = time.monotonic() - t0
        kind, lags = q.get(timeout=180)
        watcher.join()
        if kind == "gone":
            print(f"lag: the replica's feed overwrote the watcher after {lags} events")
            return 1
        print(f"lag at {done.value / took:,.0f} sets/s for {took:.1f} s: "
              f"{len(lags)} events, p50 {pct(lags, 50):.2f} ms, p99 {pct(lags, 99):.2f} ms, "
              f"max {max(lags):.2f} ms; load {os.getloadavg()[0]:.1f}")
        return 0
    finally:
        r.cleanup()
        p.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
