"""The active expiry cycle's cost: the CPU a running `bukt writer` spends while nothing
is written, with `--keys` keys of which a fraction `--ttl` carry a TTL (far in the
future, so none expires during the run), and the time of one full expiry pass.

    .venv/bin/python bench/expiry.py [--keys 1000000] [--ttl 0] [--seconds 10]
                                     [--memory 256MiB]

The keys go into a cache-only bucket, so the log stays empty and the writer's only
work is its loop's timers: the expiry cycle at expiry.hz, the heartbeat, the
compaction check, and its sleeps on the ring's doorbell. WRITER CPU is the writer's
utime + stime from /proc/<pid>/stat over `--seconds`, after a settling second, as a
share of one core; the same is measured with the bucket empty first, as the floor
the timers cost without keys. PASS is this process calling expire_some over every
stripe (a budget large enough for one pass), best of five: the work one cycle does.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchutil import cpu_seconds, wait_writer_ready  # noqa: E402
from bukt import areas  # noqa: E402

PY = sys.executable


def writer_cpu(pid, seconds):
    time.sleep(1.0)
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def full_pass(store):
    """Seconds for one expire_some pass over every stripe, best of five."""
    nstripes = store.limits["nstripes"]
    best = None
    for _ in range(5):
        store.expire_some(budget=60.0)          # one pass: it stops where it began
        t0 = time.perf_counter()
        store.expire_some(budget=60.0)
        took = time.perf_counter() - t0
        best = took if best is None else min(best, took)
    return best, nstripes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--ttl", type=float, default=0.0, help="fraction of keys with a TTL")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--memory", default="256MiB")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bukt-bench-expiry-")
    name = f"bench-exp-{os.getpid()}"
    conf = os.path.join(tmp, "bukt.yaml")
    with open(conf, "w") as f:
        yaml.safe_dump({"instance": name, "memory": args.memory, "fsync": "everysec",
                        "data_dir": os.path.join(tmp, "var")}, f)
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    log = open(os.path.join(tmp, "writer.log"), "wb")
    w = subprocess.Popen([PY, "-m", "bukt.cli", "writer", "--config", conf], cwd=ROOT,
                         stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        try:
            s = wait_writer_ready(name, w)
        except RuntimeError:
            raise SystemExit(open(os.path.join(tmp, "writer.log")).read()) from None
        b = s.create_bucket("bench", persist=False)
        empty = writer_cpu(w.pid, args.seconds)
        every = int(1 / args.ttl) if args.ttl else 0
        t0 = time.perf_counter()
        for i in range(args.keys):
            b.set(b"key:%010d" % i, b"value:%08d" % i,
                  ttl=86400 if every and i % every == 0 else None)
        load = time.perf_counter() - t0
        st = s.stats()
        loaded = writer_cpu(w.pid, args.seconds)
        took, nstripes = full_pass(s)
        print(f"keys {st['keys']} ({st.get('keys_with_ttl', '?')} with a TTL) in "
              f"{nstripes} stripes, loaded in {load:.1f} s")
        print(f"writer CPU, empty bucket:     {empty * 100:6.2f} % of a core")
        print(f"writer CPU, keys loaded:      {loaded * 100:6.2f} % of a core "
              f"over {args.seconds:g} s")
        print(f"one expiry pass (best of 5):  {took * 1000:8.3f} ms")
        s.close()
    finally:
        w.send_signal(signal.SIGTERM)
        w.wait(60)
        areas.unlink(name)          # the segment and the feed a stopped writer keeps
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
