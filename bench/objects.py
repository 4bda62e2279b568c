"""Objects benchmark: Bukt's objects (values above one entry, stored as chunks) over
HTTP beside nginx, over S3 beside plain HTTP, compression, and small keys while
objects are written.

    .venv/bin/python bench/objects.py [--short] [--duration 8] [--rounds 3] [--out FILE]

One `bukt serve` (default workers, fsync everysec, S3 on, every face on an unused
127.0.0.1 port) and one Debian nginx (foreground, its own config in a temp dir,
sendfile on, serving files from a tmpfs directory under /dev/shm) run side by side
for the whole run; each measurement alternates between them round by round, so
drift in what else the machine does falls on both. Sections:

  1. HTTP GET of a 1 MiB value (one entry: limits.max_value) and of 4 MiB and 64 MiB
     objects (chunks behind a manifest), wrk, nginx then Bukt in each round;
     the ratio is the median of the rounds' own ratios, with their range.
     Target: 1 MiB GET >= 0.8x nginx. HTTP PUT (MB/s) is Bukt's alone: nginx-light
     has no DAV module, so nginx has nothing to compare.
  2. S3 GetObject through boto3 against a plain HTTP GET of the same object through
     urllib3 (botocore's own HTTP library), one client thread each, alternated.
  3. Compression: zstd and lz4 against none on a text corpus (this repository's docs
     and sources) and on random bytes: stored share of the raw size, the codec's
     MB/s both ways (bukt/codec.py), and SET / GET ns over the local API in buckets
     created with each setting.
  4. Small keys while objects are written: a paced loop (--rate SET+GET pairs a
     second) of 100 B SETs and GETs over the local API (attached to the served
     segment), p50/p99, alone, while wrk PUTs 64 MiB objects over HTTP, and while a
     foreign load of the same CPU use runs (processes hashing with hashlib, duty-cycled
     to the CPU seconds per second that wrk, `bukt serve`'s processes and its writer
     used under the object load, less what Bukt used alone: bench/benchutil.py
     CpuMeter), the three alternated in each round. SETs refused (DiskError: the
     writer fell more than fsync_lag_limit behind) are counted apart. Target: p99
     within 10% (1.10x). If the foreign load inflates p99 as much as the objects do,
     the inflation is the CPU share the load takes from the loop, not the loop waiting
     for Bukt. Then one probed run of each (getrusage around every SET) sorts the SETs
     slower than alone's p99 by what they did meanwhile: preempted, slept in the
     kernel, on the CPU, or none of these.

PUT MB/s counts 2xx answers only: a PUT refused with 503 (the same lag limit) stored
nothing. `--short` is a quick pass (2 s per run, 2 rounds) to see that it all runs.

The load generator is wrk (C, keep-alive, its own threads): a Python client would
spend more CPU per byte than the servers and measure itself. wrk, the servers and
the writer share this machine's cores, so the figures compare rows of one run; they
are not a capacity figure.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# Keep bench/http.py from shadowing the standard library's `http`.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import bukt  # noqa: E402
from bukt import areas, codec  # noqa: E402

sys.path.append(HERE)           # last, for benchutil: after the standard library
from benchutil import CpuMeter, free_port, wait_http  # noqa: E402

PY = sys.executable
MiB = 1 << 20
TOKEN = "bench-token-" + uuid.uuid4().hex
ADMIN = "bench-admin-" + uuid.uuid4().hex
BUCKET = "objs"
NGINX = "/usr/sbin/nginx"

NGINX_CONF = """
worker_processes auto;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        default_type application/octet-stream;
    }}
}}
"""

PUT_LUA = """
wrk.method = "PUT"
wrk.body = string.rep("p", %d)
wrk.headers["Authorization"] = "Bearer %s"
wrk.headers["Content-Type"] = "application/octet-stream"
"""




def to_ms(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url, connections, duration, script=None, headers=()):
    """wrk's req/s, MB/s (of bodies: requests x size, computed by the caller), p50, p99
    and non-2xx count."""
    cmd = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{duration}s",
           "--latency", "--timeout", "30s"]
    for h in headers:
        cmd += ["-H", h]
    if script:
        cmd += ["-s", script]
    run = subprocess.run(cmd + [url], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} {url}: exit {run.returncode}\n"
                           f"{run.stdout}{run.stderr}")
    out = run.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock_err = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": p50, "p99": p99,
            "non2xx": int(errors.group(1)) if errors else 0,
            "sockerr": sock_err.group(1).strip() if sock_err else ""}


def stop(proc, sig=signal.SIGTERM, timeout=30):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


def ratio_cell(ratios, target=None, higher_is_better=True):
    """'0.93x [0.87-0.97]' with the target and whether the median meets it."""
    rs = sorted(ratios)
    mid = statistics.median(rs)
    text = f"{mid:.2f}x" + (f" [{rs[0]:.2f}-{rs[-1]:.2f}]" if len(rs) > 1 else "")
    if target is not None:
        ok = mid >= target if higher_is_better else mid <= target
        text += f" (target {'>=' if higher_is_better else '<='} {target:.2f}x: " \
                f"{'met' if ok else 'NOT met'})"
    return text


def span(values, fmt="{:.0f}"):
    """The median and the range of a few runs' figures: '812 (790-845)'."""
    s = sorted(values)
    m = statistics.median(s)
    return fmt.format(m) + (f" ({fmt.format(s[0])}-{fmt.format(s[-1])})" if len(s) > 1
                            else "")


# -- the servers ------------------------------------------------------------------------

class Servers:
    """`bukt serve` (HTTP, TCP, RESP, S3 on unused ports) and nginx over a tmpfs copy
    of the same objects."""

    def __init__(self, memory):
        self.tmp = tempfile.mkdtemp(prefix="bukt-bench-objects-")
        self.root = tempfile.mkdtemp(prefix="benchobj-nginx-", dir="/dev/shm")
        os.chmod(self.root, 0o755)          # nginx's workers run as nobody
        self.name = f"benchobj-{uuid.uuid4().hex[:8]}"
        self.http_port, self.s3_port, self.nginx_port = (free_port() for _ in range(3))
        self.conf = os.path.join(self.tmp, "bukt.yaml")
        with open(self.conf, "w") as f:
            json.dump({"instance": self.name, "memory": memory,
                       "data_dir": os.path.join(self.tmp, "var"), "fsync": "everysec",
                       "http": {"bind": f"127.0.0.1:{self.http_port}", "access_log": None},
                       "tcp": {"bind": f"127.0.0.1:{free_port()}"},
                       "resp": {"bind": f"127.0.0.1:{free_port()}"},
                       "s3": {"bind": f"127.0.0.1:{self.s3_port}"},
                       "auth": {"admin_token": ADMIN}}, f)          # JSON is YAML
        self.serve = self.nginx = self.store = None
        self.log_path = os.path.join(self.tmp, "serve.log")

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BUKT_")}
        env.update(PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.serve = subprocess.Popen([PY, "-m", "bukt", "serve", "--config", self.conf],
                                          cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT,
                                          env=env, start_new_session=True)
        deadline = time.monotonic() + 120
        while "bukt serve: ready" not in open(self.log_path, errors="replace").read():
            if self.serve.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("bukt serve did not start:\n" +
                                   open(self.log_path, errors="replace").read())
            time.sleep(0.1)
        self.store = bukt.attach(self.name)
        self.store.create_bucket(BUCKET, eviction="none")
        self.store.add_token(BUCKET, hashlib.sha256(TOKEN.encode()).digest(), 7)
        with open(os.path.join(self.tmp, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(tmp=self.tmp, port=self.nginx_port, root=self.root))
        self.nginx = subprocess.Popen([NGINX, "-p", self.tmp, "-c",
                                       os.path.join(self.tmp, "nginx.conf")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(self.nginx_port, "/", self.nginx)
        wait_http(self.http_port, "/healthz", self.serve)

    def put_object(self, key, data):
        """The same bytes into Bukt (as an object, over HTTP) and into nginx's root."""
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=300)
        conn.request("PUT", f"/api/v1/buckets/{BUCKET}/keys/{key}", body=data,
                     headers={"Authorization": f"Bearer {TOKEN}"})
        r = conn.getresponse()
        r.read()
        conn.close()
        if r.status not in (200, 201, 204):
            raise RuntimeError(f"PUT {key}: HTTP {r.status}")
        with open(os.path.join(self.root, key), "wb") as f:
            f.write(data)
        os.chmod(os.path.join(self.root, key), 0o644)

    def bukt_url(self, key):
        return f"http://127.0.0.1:{self.http_port}/api/v1/buckets/{BUCKET}/keys/{key}"

    def nginx_url(self, key):
        return f"http://127.0.0.1:{self.nginx_port}/{key}"

    def close(self):
        if self.store is not None:
            self.store.close()
        stop(self.nginx)
        stop(self.serve, timeout=60)
        if self.serve is not None and self.serve.poll() is None:
            os.killpg(self.serve.pid, signal.SIGKILL)
        areas.unlink(self.name)
        shutil.rmtree(self.root, ignore_errors=True)
        if os.path.exists(self.log_path):       # kept for a look after a failed run
            shutil.copy(self.log_path, os.path.join(tempfile.gettempdir(),
                                                    "bukt-bench-objects-serve.log"))
        shutil.rmtree(self.tmp, ignore_errors=True)


AUTH = (f"Authorization: Bearer {TOKEN}",)


# -- 1. HTTP GET / PUT --------------------------------------------------------------------

def bench_http(sv, sizes, conns, duration, rounds):
    keys = {}
    for size in sizes:
        key = f"obj-{size // MiB}MiB"
        sv.put_object(key, os.urandom(size))
        keys[size] = key
    # warm both: page cache for nginx, the workers' imports for Bukt
    for size in sizes:
        wrk(sv.nginx_url(keys[size]), 1, 1)
        wrk(sv.bukt_url(keys[size]), 1, 1, headers=AUTH)
    get = {s: {"nginx": [], "bukt": []} for s in sizes}
    put = {s: [] for s in sizes}
    for _ in range(rounds):
        for size in sizes:
            c = conns[size]
            get[size]["nginx"].append(wrk(sv.nginx_url(keys[size]), c, duration))
            get[size]["bukt"].append(wrk(sv.bukt_url(keys[size]), c, duration,
                                         headers=AUTH))
            lua = os.path.join(sv.tmp, f"put-{size}.lua")
            with open(lua, "w") as f:
                f.write(PUT_LUA % (size, TOKEN))
            put[size].append(wrk(sv.bukt_url(f"put-{size // MiB}MiB"), c, duration,
                                 script=lua))
    lines = ["| object | conns | nginx GET MB/s | Bukt GET MB/s | Bukt GET p50 / p99 ms "
             "| Bukt / nginx GET | Bukt PUT MB/s | Bukt PUT p50 / p99 ms "
             "| non-2xx (nginx / GET / PUT) |",
             "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for size in sizes:
        n, b, p = get[size]["nginx"], get[size]["bukt"], put[size]
        def mbs(rs):          # bodies answered 2xx only: a refused PUT stored nothing
            return [max(0.0, r["rps"] - r["non2xx"] / duration) * size / MiB for r in rs]
        ratios = [bb["rps"] / nn["rps"] for nn, bb in zip(n, b)]
        target = 0.8 if size == MiB else None
        bmid = sorted(b, key=lambda r: r["rps"])[len(b) // 2]
        pmid = sorted(p, key=lambda r: r["rps"])[len(p) // 2]
        bad = " / ".join(str(sum(r["non2xx"] for r in rs)) for rs in (n, b, p))
        lines.append(f"| {size // MiB} MiB | {conns[size]} | {span(mbs(n))} | {span(mbs(b))} "
                     f"| {bmid['p50']:.1f} / {bmid['p99']:.1f} | {ratio_cell(ratios, target)} "
                     f"| {span(mbs(p))} | {pmid['p50']:.1f} / {pmid['p99']:.1f} | {bad} |")
    return "\n".join(lines)


# -- 2. S3 GetObject against plain HTTP ---------------------------------------------------

def bench_s3(sv, sizes, counts, rounds):
    import boto3
    import urllib3
    from botocore.config import Config
    from bukt.http.s3.sigv4 import s3_secret
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sv.s3_port}",
                      aws_access_key_id=BUCKET, aws_secret_access_key=s3_secret(TOKEN),
                      region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                                    retries={"max_attempts": 1}))
    pool = urllib3.PoolManager(maxsize=1)
    keys = {s: f"obj-{s // MiB}MiB" for s in sizes}

    def via_s3(size):
        t0 = time.perf_counter()
        for _ in range(counts[size]):
            body = s3.get_object(Bucket=BUCKET, Key=keys[size])["Body"].read()
            assert len(body) == size
        return counts[size] * size / MiB / (time.perf_counter() - t0)

    def via_http(size):
        t0 = time.perf_counter()
        for _ in range(counts[size]):
            r = pool.request("GET", sv.bukt_url(keys[size]),
                             headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status == 200 and len(r.data) == size
        return counts[size] * size / MiB / (time.perf_counter() - t0)

    for size in sizes:                      # warm-up: connections, imports
        via_s3(size), via_http(size)
    res = {s: {"s3": [], "http": []} for s in sizes}
    for _ in range(rounds):
        for size in sizes:
            res[size]["http"].append(via_http(size))
            res[size]["s3"].append(via_s3(size))
    lines = ["| object | GETs per run | plain HTTP (urllib3) MB/s | S3 GetObject (boto3) MB/s "
             "| S3 / HTTP |", "| --- | ---: | ---: | ---: | --- |"]
    for size in sizes:
        h, s = res[size]["http"], res[size]["s3"]
        lines.append(f"| {size // MiB} MiB | {counts[size]} | {span(h)} | {span(s)} "
                     f"| {ratio_cell([a / b for a, b in zip(s, h)])} |")
    return "\n".join(lines)


# -- 3. compression -----------------------------------------------------------------------

def corpus() -> bytes:
    root = pathlib.Path(ROOT)
    return b"\n".join(p.read_bytes() for pat in ("docs/*.md", "bukt/**/*.py", "cext/*.pyx",
                                                 "conf/*.yaml")
                      for p in sorted(root.glob(pat)))


def bench_compression(sv, value_size, nvalues, rounds):
    text = corpus()
    step = max(1, (len(text) - value_size) // nvalues)
    data = {"text": [text[i * step:i * step + value_size] for i in range(nvalues)],
            "random": [os.urandom(value_size) for _ in range(nvalues)]}
    big = {"text": text[:8 * MiB], "random": os.urandom(min(8 * MiB, len(text)))}
    lines = [f"| data | codec | stored / raw | compress MB/s | decompress MB/s "
             f"| SET ns ({value_size} B) | GET ns ({value_size} B) | SET / none | GET / none |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind in ("text", "random"):
        vals = data[kind]
        raw = sum(len(v) for v in vals)
        ns = {}
        for cname in ("none", "zstd", "lz4"):
            bname = f"c{kind[0]}{cname}"
            # not persisted: this measures the codec and the local API, not how fast
            # the writer logs (an unpaced loop of SETs outruns it: section 4)
            sv.store.create_bucket(bname, eviction="none", persist=False, **(
                {} if cname == "none" else
                {"compression": cname, "compression_threshold": 64,
                 "compression_min_saving": 0}))
            b = sv.store.bucket(bname)
            keys = [b"k%06d" % i for i in range(len(vals))]
            set_ns, get_ns = [], []
            for _ in range(rounds):
                t0 = time.perf_counter_ns()
                for k, v in zip(keys, vals):
                    b.set(k, v)
                set_ns.append((time.perf_counter_ns() - t0) / len(vals))
                t0 = time.perf_counter_ns()
                for k in keys:
                    b.get(k)
                get_ns.append((time.perf_counter_ns() - t0) / len(vals))
            assert all(b.get(k) == v for k, v in zip(keys, vals))
            ns[cname] = (min(set_ns), min(get_ns))
            if cname == "none":
                lines.append(f"| {kind} | none | 100% | - | - | {ns[cname][0]:,.0f} "
                             f"| {ns[cname][1]:,.0f} | 1.00x | 1.00x |")
                continue
            code = codec.code_of(cname)
            frames = [codec.compress(v, code, 0) for v in vals]
            stored = sum(len(f[0]) if f else len(v) for f, v in zip(frames, vals))
            # the codec's own speed, on 8 MiB of the same data in value-sized pieces
            pieces = [big[kind][i:i + value_size]
                      for i in range(0, len(big[kind]), value_size)]
            t0 = time.perf_counter()
            packed = [codec.compress(p, code, 0) for p in pieces]
            comp = len(big[kind]) / MiB / (time.perf_counter() - t0)
            packed = [f for f in packed if f]
            t0 = time.perf_counter()
            for f in packed:
                codec.decompress(f[0], f[1])
            dec = (sum(len(p) for p in pieces) / MiB / (time.perf_counter() - t0)
                   if packed else 0.0)
            # a frame that saved nothing is stored raw (min_saving 0 still needs >= 0)
            lines.append(f"| {kind} | {cname} | {stored / raw:.0%} | {comp:,.0f} "
                         f"| {dec:,.0f}{'' if packed else ' (stored raw)'} "
                         f"| {ns[cname][0]:,.0f} | {ns[cname][1]:,.0f} "
                         f"| {ns[cname][0] / ns['none'][0]:.2f}x "
                         f"| {ns[cname][1] / ns['none'][1]:.2f}x |")
    return "\n".join(lines), len(text)


# -- 4. small keys while objects are written --------------------------------------------

def settle(store, timeout=120):
    """Wait until the writer has logged everything in the ring and reports no lag, so
    that one section's backlog does not land on the next one's figures."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        w = store.writer_info()
        if w["ring_tail"] == w["ring_head"] and not w["error"]:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the writer did not catch up in {timeout} s: {w}")


BURN = r"""
import hashlib, os, sys, time
share = float(sys.argv[1])     # CPU seconds per wall second this process uses
buf = os.urandom(16 << 10)
SLICE = 0.001                  # burns in slices of this much CPU time, then sleeps
CAP = 0.05                     # at most this much owed CPU time is made up later
t0, c0 = time.monotonic(), time.thread_time()
while True:
    owed = share * (time.monotonic() - t0) - (time.thread_time() - c0)
    if owed > CAP:              # held off the CPU: forgive the rest, as a closed-loop
        c0 += owed - CAP        # load (wrk) would not make it up either
        owed = CAP
    if owed >= SLICE:
        end = time.thread_time() + owed
        while time.thread_time() < end:
            hashlib.sha256(buf).digest()
    else:
        time.sleep((SLICE - owed) / share)
"""


class Burner:
    """A foreign load of `share` CPU seconds per second: ceil(share) processes
    hashing with hashlib (SHA-256 of 16 KiB, as the HTTP worker hashes a PUT body),
    each duty-cycled in 1 ms slices of its own CPU time to share / n."""

    def __init__(self, share):
        share = max(share, 0.05)
        n = max(1, -(-share // 1))
        self.procs = [subprocess.Popen([PY, "-c", BURN, f"{share / n:.4f}"])
                      for _ in range(int(n))]

    def pids(self):
        return [p.pid for p in self.procs]

    def stop(self):
        for p in self.procs:
            stop(p)


def small_loop(b, seconds, rate, probe=False):
    """100 B SETs and GETs on 1,000 keys for `seconds`, `rate` SET+GET pairs a second
    (paced: an unpaced loop of local SETs outruns any writer, fills the change ring
    and measures the ring's back-pressure rather than the latency of a write): per-op
    latencies, ns, and how many SETs were refused (DiskError: the writer lagged past
    fsync_lag_limit). With `probe`, each SET's latency comes with what this thread
    did meanwhile: (ns, CPU ns, voluntary switches, involuntary switches), from the
    thread's CPU clock and getrusage(RUSAGE_THREAD) before and after (which costs a
    few µs a SET; getrusage's own CPU times lag the running thread by up to a tick)."""
    import resource
    usage = resource.getrusage
    THREAD = resource.RUSAGE_THREAD
    cpu_clock = time.thread_time_ns
    value = b"v" * 100
    keys = [b"small-%04d" % i for i in range(1000)]
    sets, gets = [], []
    refused = 0
    clock = time.perf_counter_ns
    start = clock()
    end = start + int(seconds * 1e9)
    gap = int(1e9 / rate)
    i = 0
    while True:
        due = start + i * gap
        now = clock()
        if now >= end:
            break
        if due - now > 1_000_000:                 # more than 1 ms ahead: wait
            time.sleep((due - now) / 1e9)
        k = keys[i % 1000]
        i += 1
        if probe:
            u0 = usage(THREAD)
            c0 = cpu_clock()
        t0 = clock()
        try:
            b.set(k, value)
        except bukt.errors.DiskError:
            refused += 1
            continue
        t1 = clock()
        if probe:
            c1 = cpu_clock()
            u1 = usage(THREAD)
            sets.append((t1 - t0, c1 - c0, u1.ru_nvcsw - u0.ru_nvcsw,
                         u1.ru_nivcsw - u0.ru_nivcsw))
            continue
        b.get(k)
        t2 = clock()
        sets.append(t1 - t0)
        gets.append(t2 - t1)
    return sets, gets, refused


def share(meter, role):
    """CPU seconds per second a role of a CpuMeter used (1.0: one CPU kept busy)."""
    return meter.percent(role) / 100


LOADS = ("objects", "foreign")      # Bukt's 64 MiB PUTs; a burner of the same CPU use


class Loads:
    """The two loads of section 4, each started, given time to reach its steady state,
    measured over one small-key run, and stopped: `objects`, wrk PUTting 64 MiB
    objects on one connection; `foreign`, a Burner of the CPU share the latest object
    run was measured to add (wrk, `bukt serve`'s processes and its writer, less what
    they used alone)."""

    def __init__(self, sv, obj_size, seconds):
        self.sv, self.obj_size, self.seconds = sv, obj_size, seconds
        self.lua = os.path.join(sv.tmp, f"put-{obj_size}.lua")
        with open(self.lua, "w") as f:
            f.write(PUT_LUA % (obj_size, TOKEN))
        self.added = []             # CPU s/s the object load added, per run
        self.put_mb = []
        self.burned = []            # CPU s/s the burner used, per run

    def run(self, kind, fn, alone_share):
        """fn() under the load `kind`; its result and the CpuMeter of the run."""
        sv = self.sv
        if kind == "objects":
            load = subprocess.Popen(["wrk", "-t1", "-c1", f"-d{self.seconds + 3}s",
                                     "--timeout", "30s", "-s", self.lua,
                                     sv.bukt_url("bg-object")],
                                    stdout=subprocess.PIPE, text=True)
            time.sleep(1.5)                               # its first PUT under way
            with CpuMeter({"load": [load.pid], "bukt": [sv.serve.pid]}, me="loop") as m:
                result = fn()
            out = load.communicate()[0]
            r = re.search(r"Requests/sec:\s+([\d.]+)", out)
            self.put_mb.append(float(r.group(1)) * self.obj_size / MiB if r else 0.0)
            self.added.append(share(m, "load") + share(m, "bukt") - alone_share)
        else:
            burner = Burner(self.added[-1])
            time.sleep(0.5)
            try:
                with CpuMeter({"load": burner.pids(), "bukt": [sv.serve.pid]},
                              me="loop") as m:
                    result = fn()
            finally:
                burner.stop()
            self.burned.append(share(m, "load") + share(m, "bukt") - alone_share)
        settle(sv.store)
        return result, m


def bench_small(sv, seconds, rounds, obj_size, rate):
    b = sv.store.bucket(BUCKET)
    small_loop(b, 0.5, rate)                                 # warm-up
    loads = Loads(sv, obj_size, seconds)
    res = {"alone": [], "objects": [], "foreign": []}
    loop_cpu = {"alone": [], "objects": [], "foreign": []}
    for r in range(rounds):
        settle(sv.store)
        with CpuMeter({"bukt": [sv.serve.pid]}, me="loop") as m:
            res["alone"].append(small_loop(b, seconds, rate))
        alone_share = share(m, "bukt")
        loop_cpu["alone"].append(share(m, "loop"))
        # the burner is sized by an object run: the first round runs that first, the
        # rounds after alternate which load comes first
        for kind in (LOADS if r % 2 == 0 else LOADS[::-1]):
            out, m = loads.run(kind, lambda: small_loop(b, seconds, rate), alone_share)
            res[kind].append(out)
            loop_cpu[kind].append(share(m, "loop"))
    lines = ["| op | load | ops per run | p50 µs | p99 µs | p99 loaded / alone "
             "| load's CPU s/s | SETs refused |",
             "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |"]
    cpu = {"alone": None, "objects": loads.added, "foreign": loads.burned}
    names = {"alone": "none", "objects": f"objects ({span(loads.put_mb)} MB/s)",
             "foreign": "foreign, same CPU"}
    verdict = []
    for j, op in enumerate(("SET 100 B", "GET 100 B")):
        a = [x[j] for x in res["alone"]]
        mid = {}
        for kind in ("alone", "objects", "foreign"):
            lo = [x[j] for x in res[kind]]
            ratios = [pct(y, 0.99) / pct(x, 0.99) for x, y in zip(a, lo)]
            mid[kind] = statistics.median(ratios)
            lines.append(
                f"| {op} | {names[kind]} | {statistics.median(len(x) for x in lo):,.0f} "
                f"| {span([pct(x, 0.5) / 1e3 for x in lo], '{:.1f}')} "
                f"| {span([pct(x, 0.99) / 1e3 for x in lo], '{:.1f}')} "
                f"| {'-' if kind == 'alone' else ratio_cell(ratios, 1.10, False)} "
                f"| {'-' if cpu[kind] is None else span(cpu[kind], '{:.2f}')} "
                f"| {sum(x[2] for x in res[kind]) if j == 0 else '-'} |")
        # within 10% of the foreign load's inflation, or under it: the same CPU spent
        # anywhere else costs the loop as much
        verdict.append(f"{op.split()[0]} {mid['objects']:.2f}x against "
                       f"{mid['foreign']:.2f}x: " + (
                           "CPU share, not a wait for Bukt"
                           if mid["objects"] <= mid["foreign"] * 1.10 else
                           "MORE than the same CPU elsewhere: a wait behind Bukt?"))
    lines.append("")
    lines.append("p99 inflation under objects against the equal-CPU foreign load: "
                 + "; ".join(verdict) + ". Where both miss 1.10x, the target asks for a "
                 "CPU share this host's cores do not have.")
    lines.append("The loop's own CPU s/s (alone / objects / foreign): " + " / ".join(
        span(loop_cpu[k], "{:.2f}") for k in ("alone", "objects", "foreign")))
    return "\n".join(lines), loads


def classify(sv, seconds, obj_size, rate):
    """One more run of each kind with `probe` on: of the SETs slower than the probed
    alone run's p99, which were preempted (an involuntary switch: another task had the
    CPU), which slept (a voluntary switch: waited in the kernel: a futex, a page fault's
    I/O), which spent most of their time on the CPU (spinning on a lock or the ring, or
    slow work), and which none of these (off the CPU without a switch: interrupts, the
    hypervisor)."""
    b = sv.store.bucket(BUCKET)
    loads = Loads(sv, obj_size, seconds)
    settle(sv.store)
    with CpuMeter({"bukt": [sv.serve.pid]}) as m:
        alone = small_loop(b, seconds, rate, probe=True)[0]
    runs = {"alone": alone}
    for kind in LOADS:
        runs[kind] = loads.run(kind, lambda: small_loop(b, seconds, rate, probe=True),
                               share(m, "bukt"))[0][0]
    limit = pct([s[0] for s in alone], 0.99)
    lines = [f"| load | SETs | over {limit / 1e3:.1f} µs (alone's p99) | preempted | slept "
             "| on CPU >= half | none of these | µs over the limit: preempted / slept / "
             "on CPU / none | slowest SET µs | sleeps per slept SET |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |"]
    for kind, sets in runs.items():
        slow = [s for s in sets if s[0] > limit]
        cls = {"pre": [], "slept": [], "cpu": [], "none": []}
        for ns, cpu_ns, vol, invol in slow:
            key = ("pre" if invol else "slept" if vol else
                   "cpu" if cpu_ns * 2 >= ns else "none")
            cls[key].append(ns - limit)
        n = max(1, len(slow))
        lines.append(f"| {kind} | {len(sets):,} | {len(slow):,} "
                     + "".join(f"| {len(cls[k]) / n:.0%} " for k in cls)
                     + "| " + " / ".join(f"{sum(cls[k]) / 1e3:,.0f}" for k in cls)
                     + f" | {max(x[0] for x in sets) / 1e3:,.0f} | "
                     + (span([x[2] for x in slow if x[2] and not x[3]])
                        if cls["slept"] else "-") + " |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--short", action="store_true",
                   help="a quick pass: 2 s per wrk run, 2 rounds, fewer GETs")
    p.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    p.add_argument("--rounds", type=int, default=3, help="alternated rounds")
    p.add_argument("--rate", type=int, default=5000,
                   help="small keys: SET+GET pairs a second")
    p.add_argument("--memory", default="2GiB", help="the segment's size")
    p.add_argument("--sections", default="http,s3,compression,small")
    p.add_argument("--out", help="also write the tables (markdown) to this file")
    args = p.parse_args()
    if args.short:
        args.duration, args.rounds = 2, 2
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    if not os.path.exists(NGINX):
        sys.exit("nginx is needed: apt-get install nginx-light")
    sections = set(args.sections.split(","))
    # 1 MiB fits one entry (limits.max_value): a plain value; 4 MiB and 64 MiB are
    # chunked objects behind a manifest.
    sizes = (MiB, 4 * MiB, 64 * MiB)
    conns = {MiB: 8, 4 * MiB: 4, 64 * MiB: 2}
    out = []
    sv = Servers(args.memory)
    try:
        sv.start()
        out.append(f"bench/objects.py{' --short' if args.short else ''}: "
                   f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
                   f"{os.cpu_count()} CPUs shared by wrk, nginx, `bukt serve` (default "
                   f"workers) and its writer (fsync everysec); {args.rounds} alternated rounds, "
                   f"{args.duration} s per wrk run\n")
        if "http" in sections:
            out.append("### HTTP GET and PUT of objects: Bukt beside nginx (wrk)\n\n" +
                       bench_http(sv, sizes, conns, args.duration, args.rounds) + "\n")
            print(out[-1], flush=True)
        settle(sv.store)
        if "s3" in sections:
            if "http" not in sections:
                for size in sizes:
                    sv.put_object(f"obj-{size // MiB}MiB", os.urandom(size))
            counts = {MiB: 20 if args.short else 60, 4 * MiB: 5 if args.short else 15,
                      64 * MiB: 2 if args.short else 4}
            out.append("### S3 GetObject (boto3) beside plain HTTP GET (urllib3), one "
                       "client thread\n\n" + bench_s3(sv, sizes, counts, args.rounds) + "\n")
            print(out[-1], flush=True)
        settle(sv.store)
        if "compression" in sections:
            table, n = bench_compression(sv, 4096, 500 if args.short else 2000,
                                         args.rounds)
            out.append(f"### Compression (4 KiB values; text: {n / MiB:.1f} MiB of this "
                       f"repository's docs and sources; threshold 64 B, min saving 0; buckets not "
                       "persisted)\n\n"
                       + table + "\n")
            print(out[-1], flush=True)
        settle(sv.store)
        if "small" in sections:
            table, loads = bench_small(sv, args.duration, args.rounds, 64 * MiB, args.rate)
            out.append("### Small keys (local API) alone, while 64 MiB objects are PUT "
                       "over HTTP (wrk, 1 connection), and while a foreign load of the same "
                       f"CPU use runs (hashing processes); {args.rate:,} SET+GET pairs/s\n\n"
                       + table + "\n")
            print(out[-1], flush=True)
            out.append("### Where the slow SETs' time went (getrusage per SET; one run "
                       "each)\n\n" + classify(sv, args.duration, 64 * MiB, args.rate) + "\n")
            print(out[-1], flush=True)
        load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
        out.append(f"load average at the end: {load}\n")
        print(out[-1])
    finally:
        sv.close()
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(out))


if __name__ == "__main__":
    main()
