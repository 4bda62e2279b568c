"""Durability benchmark: acknowledged writes per second under each fsync policy
beside Redis's appendfsync and LMDB's durable commits, and recovery time for 1M keys
beside Redis loading its AOF. One run, same machine, same disk.

    .venv/bin/python bench/durability.py [--procs 4,16] [--seconds 5] [--keys 1000000]

THROUGHPUT. For each count in `--procs`, that many client processes each set 16-byte
keys to 100-byte values, one call at a time, for `--seconds`; a set counts once it has returned, i.e. once it is
acknowledged under the policy (with `always`, after its record is on disk: group
commit). Bukt's clients use the Python API on the shared segment, with `bukt writer`
running; Redis's use redis-py, one SET per round trip (redis-server with appendonly and
appendfsync always / everysec, no RDB snapshots); LMDB's use a write transaction per put
with sync on (its durable per-commit put). Group commit shows with concurrency: one
fsync acknowledges every client that committed before it began, so `always` gains with
more clients, while LMDB's write lock serializes its commits whatever their number.
`always` runs a second time with `log_prepare: 0`, the log appended to instead of
written inside its prepared zeros (bukt/writer/aof.py, THE PREPARED TAIL; bench/fsync.py
times the fdatasync alone), and a third time over TCP, as Redis's clients reach Redis:
`bukt serve` with its default workers, each client process a bukt.Client on one
connection, one SET per round trip.

RECOVERY. `--keys` keys of 100 B are loaded (fsync no), then the time from starting the
process to its being ready: Bukt cold from the log, cold from a base file (after `bukt
compact`), warm (the segment survived a kill -9); Redis from an AOF holding the same SETs
(the incr file), and from a rewritten AOF (RDB preamble). The process's own figure
(Bukt's "recovered ... in", Redis's "DB loaded from append only file") is printed beside
the wall time. The warm restart is timed `--warm-rounds` times (medians in the table),
and its wall time is split: exec to the writer's ready line (interpreter, imports and
configuration, then the attach the writer times itself), and that line to the header's
being seen ready; a bare `python -c pass` is timed beside it. Bukt's writer is started
with bytecode caches, as an installed one runs (PYTHONDONTWRITEBYTECODE is dropped for
it).
"""
import argparse
import json
import multiprocessing as mp
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import bukt  # noqa: E402
from bukt import areas  # noqa: E402
from benchutil import cpu_seconds  # noqa: E402

PY = sys.executable
VALUE = b"v" * 100
READY_POLL_S = 0.0005       # how often a starting writer's header is looked at
INTERP_ROUNDS = 7           # `python -c pass` runs timed, to show the interpreter's share


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- Bukt ---------------------------------------------------------------------------------

class BuktInstance:
    def __init__(self, tmp, fsync, memory="768MiB", log_prepare="4MiB"):
        self.name = f"bench-dur-{os.getpid()}"
        self.tmp = tmp
        self.data = os.path.join(tmp, "var")
        # JSON, as `bukt serve` hands its children their configuration (a warm restart
        # of the service's writer reads serve.effective.json, without PyYAML)
        self.conf = os.path.join(tmp, "bukt.json")
        with open(self.conf, "w") as f:
            json.dump({"instance": self.name, "memory": memory, "data_dir": self.data,
                       "fsync": fsync, "log_prepare": log_prepare,
                       "limits": {"ring_size": "64MiB"},
                       "compaction": {"min_log_bytes": "4GiB"}}, f)
        self.proc = None
        self.logfile = os.path.join(tmp, "writer.log")

    def start(self, cold=False):
        """Starts the writer; the wall time from exec to its being seen ready. Also kept:
        exec_at and seen_at (time.time()), and cpu_s, the writer's CPU time by then."""
        t0 = time.perf_counter()
        self.exec_at = time.time()
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen([PY, "-m", "bukt.cli", "writer", "--config", self.conf]
                                         + (["--cold"] if cold else []), cwd=ROOT,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         env=_writer_env())
        self._wait_ready()
        wall = time.perf_counter() - t0
        self.seen_at = self.exec_at + wall
        self.cpu_s = cpu_seconds(self.proc.pid)
        return wall

    def _wait_ready(self):
        """Polls the header every READY_POLL_S on one mapping, attached again only when
        the segment's file is another one (a cold start renames a new one over it)."""
        path = f"/dev/shm/bukt-{self.name}"
        seg = ino = None
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(open(self.logfile).read())
                try:
                    now_ino = os.stat(path).st_ino
                except FileNotFoundError:
                    now_ino = None
                if now_ino != ino:
                    if seg is not None:
                        seg.close()
                    seg, ino = None, now_ino
                    try:
                        seg = bukt.attach(self.name, readonly=True) if now_ino else None
                    except bukt.BuktError:
                        ino = None          # not a whole segment yet: look again
                if seg is not None:
                    info = seg.writer_info()
                    if info["ready"] and info["pid"] == self.proc.pid:
                        return
                time.sleep(READY_POLL_S)
        finally:
            if seg is not None:
                seg.close()

    def ready_logged_at(self):
        """time.time() of the writer's "ready" log line (its asctime: millisecond
        precision), or None."""
        found = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \S+\[%d\] INFO writer "
                           r"\d+ ready:" % self.proc.pid, open(self.logfile).read(), re.M)
        if not found:
            return None
        stamp, ms = found[-1]
        return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def unlink(self):
        """Every area of the instance (bukt/areas.py): the segment, its feed."""
        areas.unlink(self.name)

    def last_log_line(self, pattern):
        found = re.findall(pattern, open(self.logfile).read())
        return found[-1] if found else None


def _writer_env():
    """The writer runs as installed code does: with bytecode caches. Under
    PYTHONDONTWRITEBYTECODE every start would compile each module from source first,
    which is most of a warm restart's wall time."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _bukt_client(name, seconds, start_at, q, idx):
    s = bukt.attach(name)
    b = s.bucket("bench")
    while time.time() < start_at:
        time.sleep(0.0005)
    end = time.perf_counter() + seconds
    n = refused = 0
    key = b"c%d-%%010d" % idx
    while True:
        for _ in range(64):
            try:
                b.set(key % n, VALUE)
                n += 1
            except bukt.BuktError:          # RingFull: the writer is behind (backpressure)
                refused += 1
        if time.perf_counter() >= end:
            break
    q.put((n, refused))


def _round_trips(set_one, seconds, start_at, q, idx):
    """A network client's loop: from start_at, one SET per round trip for `seconds`
    (the clock read every 16); puts (count, 0)."""
    while time.time() < start_at:
        time.sleep(0.0005)
    end = time.perf_counter() + seconds
    n = 0
    key = b"c%d-%%010d" % idx
    while True:
        for _ in range(16):
            set_one(key % n, VALUE)
            n += 1
        if time.perf_counter() >= end:
            break
    q.put((n, 0))


def _bukt_tcp_client(port, token, seconds, start_at, q, idx):
    c = bukt.Client(host="127.0.0.1", port=port, bucket="bench", token=token, pool_size=1)
    try:
        _round_trips(c.set, seconds, start_at, q, idx)
    finally:
        c.close()


def _redis_client(port, seconds, start_at, q, idx):
    import redis
    _round_trips(redis.Redis(port=port).set, seconds, start_at, q, idx)


def _lmdb_client(path, seconds, start_at, q, idx):
    import lmdb
    env = lmdb.open(path, map_size=1 << 30, sync=True, metasync=True, lock=True)
    while time.time() < start_at:
        time.sleep(0.0005)
    end = time.perf_counter() + seconds
    n = 0
    key = b"c%d-%%010d" % idx
    while time.perf_counter() < end:
        with env.begin(write=True) as txn:
            txn.put(key % n, VALUE)
        n += 1
    q.put((n, 0))


def run_clients(target, args, procs, seconds):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    start_at = time.time() + 0.5
    ps = [ctx.Process(target=target, args=(*args, seconds, start_at, q, i)) for i in range(procs)]
    for p in ps:
        p.start()
    results = [q.get(timeout=seconds + 60) for _ in ps]
    for p in ps:
        p.join()
    refused = sum(r[1] for r in results)
    if refused:
        print(f"  ({refused} writes refused with RingFull: the writer fell behind)", flush=True)
    return sum(r[0] for r in results) / seconds


ADMIN_TOKEN = "bench-durability-admin-0123456789"


def bukt_tcp_throughput(procs, seconds):
    """Acknowledged sets per second over TCP under `fsync: always`: `bukt serve` (the
    writer, TCP and HTTP workers as configured by default) on unused ports."""
    tmp = tempfile.mkdtemp(prefix="bukt-bench-", dir=os.environ.get("BENCH_DIR"))
    tcp_port, http_port = free_port(), free_port()
    conf = os.path.join(tmp, "bukt.json")
    instance = f"bench-dur-tcp-{os.getpid()}"
    with open(conf, "w") as f:
        json.dump({"instance": instance, "memory": "768MiB",
                   "data_dir": os.path.join(tmp, "var"), "fsync": "always",
                   "limits": {"ring_size": "64MiB"}, "compaction": {"min_log_bytes": "4GiB"},
                   "tcp": {"bind": f"127.0.0.1:{tcp_port}"},
                   "http": {"bind": f"127.0.0.1:{http_port}"},
                   "auth": {"admin_token": ADMIN_TOKEN}}, f)
    with open(os.path.join(tmp, "serve.log"), "wb") as log:
        proc = subprocess.Popen([PY, "-m", "bukt.cli", "serve", "--config", conf], cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, env=_writer_env())
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(open(os.path.join(tmp, "serve.log")).read())
            try:
                admin = bukt.Client(host="127.0.0.1", port=tcp_port, token=ADMIN_TOKEN,
                                    pool_size=1)
                token = admin.create_bucket("bench")
                admin.close()
                break
            except (OSError, bukt.BuktError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        return run_clients(_bukt_tcp_client, (tcp_port, token), procs, seconds)
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        # a stopped service leaves its segment for a warm restart: this one is done
        areas.unlink(instance)


def bukt_throughput(policy, procs, seconds, log_prepare="4MiB"):
    tmp = tempfile.mkdtemp(prefix="bukt-bench-", dir=os.environ.get("BENCH_DIR"))
    inst = BuktInstance(tmp, policy, log_prepare=log_prepare)
    try:
        inst.start()
        s = bukt.attach(inst.name)
        s.create_bucket("bench")
        s.close()
        rate = run_clients(_bukt_client, (inst.name,), procs, seconds)
        inst.stop()
        return rate
    finally:
        if inst.proc and inst.proc.poll() is None:
            inst.kill()
        inst.unlink()
        shutil.rmtree(tmp, ignore_errors=True)


class Redis:
    def __init__(self, tmp, fsync="everysec", preamble="yes"):
        self.tmp, self.port = tmp, free_port()
        self.args = ["redis-server", "--port", str(self.port), "--dir", tmp, "--save", "",
                     "--appendonly", "yes", "--appendfsync", fsync,
                     "--aof-use-rdb-preamble", preamble, "--auto-aof-rewrite-percentage", "0",
                     "--logfile", os.path.join(tmp, "redis.log")]
        self.proc = None

    def start(self):
        import redis
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL)
        r = redis.Redis(port=self.port)
        while True:
            try:
                if r.ping() and r.info("persistence")["loading"] == 0:
                    return time.perf_counter() - t0
            except (redis.ConnectionError, redis.BusyLoadingError):
                pass
            time.sleep(0.001)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)

    def loaded_seconds(self):
        """Redis's own load time of its last start: its "append only file" line is the
        total; the base and incr file lines beside it are parts of it, not additions."""
        text = open(os.path.join(self.tmp, "redis.log")).read()
        total = re.findall(r"DB loaded from append only file: ([\d.]+) seconds", text)
        if total:
            return float(total[-1])
        parts = re.findall(r"DB loaded from (?:incr file|base file)[^:]*: ([\d.]+) seconds", text)
        return sum(float(x) for x in parts) if parts else None


def redis_throughput(policy, procs, seconds):
    tmp = tempfile.mkdtemp(prefix="redis-bench-", dir=os.environ.get("BENCH_DIR"))
    r = Redis(tmp, policy)
    try:
        r.start()
        return run_clients(_redis_client, (r.port,), procs, seconds)
    finally:
        if r.proc:
            r.proc.kill()
            r.proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def lmdb_throughput(procs, seconds):
    tmp = tempfile.mkdtemp(prefix="lmdb-bench-", dir=os.environ.get("BENCH_DIR"))
    try:
        return run_clients(_lmdb_client, (tmp,), procs, seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- recovery -----------------------------------------------------------------------------

def bukt_recovery(keys, warm_rounds=1):
    """{case: (wall s, the process's own figure s, bytes on disk)}, and the warm
    restart's rounds (_warm_round)."""
    tmp = tempfile.mkdtemp(prefix="bukt-rec-", dir=os.environ.get("BENCH_DIR"))
    inst = BuktInstance(tmp, "no", memory=f"{max(256, keys * 400 // (1 << 20))}MiB")
    out = {}
    try:
        inst.start()
        s = bukt.attach(inst.name)
        s.create_bucket("bench")
        s.close()
        t = time.perf_counter()
        procs = 2
        ps = [mp.get_context("fork").Process(target=_load_range, args=(inst.name, i, procs, keys))
              for i in range(procs)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        print(f"  loaded {keys} keys into Bukt in {time.perf_counter() - t:.1f} s", flush=True)
        inst.stop()
        inst.unlink()
        log_bytes = sum(os.path.getsize(os.path.join(inst.data, n)) for n in os.listdir(inst.data)
                        if n.endswith(".bkl"))
        out["cold from log"] = (inst.start(), _recovered(inst), log_bytes)
        s = bukt.attach(inst.name)
        assert s.stats()["keys"] == keys, s.stats()["keys"]
        s.close()
        subprocess.run([PY, "-m", "bukt.cli", "compact", "--config", inst.conf, "--wait", "300"],
                       cwd=ROOT, check=True, capture_output=True,
                       env=dict(os.environ, PYTHONPATH=ROOT))
        inst.stop()
        inst.unlink()
        base_bytes = sum(os.path.getsize(os.path.join(inst.data, n))
                         for n in os.listdir(inst.data) if n.endswith((".bkb", ".bkl")))
        out["cold from base"] = (inst.start(), _recovered(inst), base_bytes)
        warm = []
        for _ in range(warm_rounds):
            inst.kill()                                # the segment survives
            warm.append(_warm_round(inst, inst.start()))
        out["warm restart"] = (_median([r["wall"] for r in warm]),
                               _median([r["attach"] for r in warm]), None)
        s = bukt.attach(inst.name)
        assert s.stats()["keys"] == keys
        s.close()
        inst.stop()
    finally:
        if inst.proc and inst.proc.poll() is None:
            inst.kill()
        inst.unlink()
        shutil.rmtree(tmp, ignore_errors=True)
    return out, warm


def _warm_round(inst, wall):
    """Where a warm restart's wall time went: from exec to the writer's "ready" line
    (interpreter, imports, configuration, then the warm attach it times itself), and
    from that line to the client's seeing the header say ready."""
    ms = inst.last_log_line(r"warm start of segment \S+ in ([\d.]+) ms")
    logged = inst.ready_logged_at()
    attach = float(ms) / 1000 if ms else None
    to_ready = logged - inst.exec_at if logged is not None else None
    return {"wall": wall, "attach": attach, "to_ready": to_ready, "cpu": inst.cpu_s,
            "before_attach": to_ready - attach if None not in (to_ready, attach) else None,
            "seen_after": inst.seen_at - logged if logged is not None else None}


def interpreter_start(rounds):
    """(wall s, CPU s) of `python -c pass` as the writer is started (same interpreter,
    environment and site-packages), each the median of `rounds`."""
    walls, cpus = [], []
    for _ in range(rounds):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([PY, "-c", "pass"], cwd=ROOT, env=_writer_env(), check=True)
        walls.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    return _median(walls), _median(cpus)


def _median(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


def print_warm_split(rounds, interp):
    """The warm restart's wall time, split; median [min-max] over the rounds, in ms."""
    def cell(key):
        xs = [r[key] * 1000 for r in rounds if r[key] is not None]
        if not xs:
            return "-"
        return f"{_median(xs):.1f} [{min(xs):.1f}-{max(xs):.1f}]"
    print(f"\n| warm restart of the writer, {len(rounds)} rounds | ms, median [min-max] |")
    print("| --- | ---: |")
    print(f"| exec to the writer's ready line | {cell('to_ready')} |")
    print(f"|   interpreter, imports, configuration (before the attach) | "
          f"{cell('before_attach')} |")
    print(f"|     of which a bare interpreter (`python -c pass`, median of "
          f"{INTERP_ROUNDS}) | {interp[0] * 1000:.1f} |")
    print(f"|   warm attach (the writer's own figure) | {cell('attach')} |")
    print(f"| ready line to the header seen ready (poll every {READY_POLL_S * 1000:g} ms, "
          f"log stamps in ms) | {cell('seen_after')} |")
    print(f"| wall from exec to seen ready | {cell('wall')} |")
    print(f"| writer's CPU time, exec to seen ready | {cell('cpu')} |")
    print(f"|   of which a bare interpreter's | {interp[1] * 1000:.1f} |")


def _load_range(name, i, n, keys):
    s = bukt.attach(name)
    b = s.bucket("bench")
    s.sync_wait = False
    for k in range(i, keys, n):
        b.set(b"%016d" % k, VALUE)
    s.close()


def _recovered(inst):
    sec = inst.last_log_line(r"recovered \d+ records .* in ([\d.]+) s")
    return float(sec) if sec else None


def redis_recovery(keys):
    import redis
    tmp = tempfile.mkdtemp(prefix="redis-rec-", dir=os.environ.get("BENCH_DIR"))
    out = {}
    r = Redis(tmp, "no", preamble="yes")
    try:
        r.start()
        c = redis.Redis(port=r.port)
        t = time.perf_counter()
        pipe = c.pipeline(transaction=False)
        for i in range(keys):
            pipe.set(b"%016d" % i, VALUE)
            if i % 10000 == 9999:
                pipe.execute()
        pipe.execute()
        print(f"  loaded {keys} keys into Redis in {time.perf_counter() - t:.1f} s", flush=True)
        r.stop()
        aof_bytes = sum(os.path.getsize(os.path.join(tmp, "appendonlydir", n))
                        for n in os.listdir(os.path.join(tmp, "appendonlydir")))
        out["AOF (SET commands)"] = (r.start(), r.loaded_seconds(), aof_bytes)
        assert redis.Redis(port=r.port).dbsize() == keys
        c = redis.Redis(port=r.port)
        c.bgrewriteaof()
        while c.info("persistence")["aof_rewrite_in_progress"] or \
                c.info("persistence")["aof_rewrite_scheduled"]:
            time.sleep(0.05)
        r.stop()
        open(os.path.join(tmp, "redis.log"), "w").close()
        aof_bytes = sum(os.path.getsize(os.path.join(tmp, "appendonlydir", n))
                        for n in os.listdir(os.path.join(tmp, "appendonlydir")))
        out["AOF rewritten (RDB preamble)"] = (r.start(), r.loaded_seconds(), aof_bytes)
        r.stop()
    finally:
        if r.proc and r.proc.poll() is None:
            r.proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def throughput(procs, seconds):
    print(f"\n## {procs} client processes", flush=True)
    rows = []
    for policy in ("always", "everysec", "no"):
        rows.append((f"Bukt fsync {policy}", bukt_throughput(policy, procs, seconds)))
        print(f"  {rows[-1][0]}: {rows[-1][1]:,.0f}/s", flush=True)
    # the same without the log's prepared tail (bukt/writer/aof.py): what it gives under always
    rows.append(("Bukt fsync always, log_prepare 0",
                 bukt_throughput("always", procs, seconds, log_prepare=0)))
    print(f"  {rows[-1][0]}: {rows[-1][1]:,.0f}/s", flush=True)
    rows.append(("Bukt fsync always, over TCP", bukt_tcp_throughput(procs, seconds)))
    print(f"  {rows[-1][0]}: {rows[-1][1]:,.0f}/s", flush=True)
    for policy in ("always", "everysec"):
        rows.append((f"Redis appendfsync {policy}", redis_throughput(policy, procs, seconds)))
        print(f"  {rows[-1][0]}: {rows[-1][1]:,.0f}/s", flush=True)
    rows.append(("LMDB put, sync commit", lmdb_throughput(procs, seconds)))
    print(f"  {rows[-1][0]}: {rows[-1][1]:,.0f}/s", flush=True)
    ref = dict(rows)
    ratios = {"Bukt fsync always": ref["Redis appendfsync always"],
              "Bukt fsync always, log_prepare 0": ref["Redis appendfsync always"],
              "Bukt fsync always, over TCP": ref["Redis appendfsync always"],
              "Bukt fsync everysec": ref["Redis appendfsync everysec"],
              "Bukt fsync no": ref["Redis appendfsync everysec"]}
    print(f"\n| acknowledged sets, {procs} clients | per second | ratio |")
    print("| --- | ---: | --- |")
    for name, rate in rows:
        extra = ""
        if name in ratios:
            extra = f"{rate / ratios[name]:.2f}x Redis " + \
                    ("always" if "always" in name else "everysec")
            if "always" in name:
                extra += f", {rate / ref['LMDB put, sync commit']:.1f}x LMDB"
        print(f"| {name} | {rate:,.0f} | {extra} |")
    print(f"(load average {os.getloadavg()[0]:.2f})", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", default="4,16",
                    help="client process counts, comma-separated (default 4,16)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-recovery", action="store_true")
    ap.add_argument("--warm-rounds", type=int, default=7,
                    help="warm restarts (kill -9, start) timed; medians are shown (default 7)")
    args = ap.parse_args()
    counts = [int(x) for x in str(args.procs).split(",") if x.strip()]
    print(f"# durability benchmark: {os.cpu_count()} CPUs, {'/'.join(map(str, counts))} "
          f"client processes, {args.seconds:g} s per run, 16 B keys, 100 B values; data on "
          f"{os.environ.get('BENCH_DIR') or tempfile.gettempdir()}; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    if not args.skip_throughput:
        for procs in counts:
            throughput(procs, args.seconds)
    if not args.skip_recovery:
        b, warm = bukt_recovery(args.keys, args.warm_rounds)
        interp = interpreter_start(INTERP_ROUNDS)
        r = redis_recovery(args.keys)
        print(f"\n| recovery of {args.keys:,} keys of 100 B | wall time to ready | "
              "process's own figure | bytes on disk |")
        print("| --- | ---: | ---: | ---: |")
        for name, (wall, own, size) in [(f"Bukt {k}", v) for k, v in b.items()] + \
                                       [(f"Redis {k}", v) for k, v in r.items()]:
            own_s = f"{own * 1000:.1f} ms" if own is not None and own < 1 else \
                    (f"{own:.2f} s" if own is not None else "-")
            print(f"| {name} | {wall:.3f} s | {own_s} | "
                  f"{f'{size / 1e6:.0f} MB' if size else '-'} |")
        print_warm_split(warm, interp)
        print(f"(load average {os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    main()
