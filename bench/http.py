"""HTTP benchmark: Bukt's API against the ceilings of its HTTP stack, with wrk.

    .venv/bin/python bench/http.py [--duration 10] [--rounds 3] [--workers 2] [--out FILE]

One run measures, on 127.0.0.1 (each server gets its own unused port):
  1. a bare falcon app returning a fixed 100 B body on stock gunicorn (sync workers,
     which close every connection): the stock ceiling;
  2. the same bare app (falcon.asgi) on the configuration Bukt uses: gunicorn with
     uvicorn workers (uvloop, httptools, keep-alive): Bukt's own ceiling;
  3. Bukt (serve_http over a real segment): GET of a 100 B key that exists, and PUT
     of 100 B values to 10,000 keys;
each at 50 connections and at 1, and prints req/s, p50, p99, the server's CPU time per
request (its workers, plus Bukt's writer), and the ratios Bukt aims for
(GET >= 90% of the bare app on the same configuration and >= 4x the stock sync ceiling;
PUT >= 75%). "CPU x%" is the bare app's CPU per request over Bukt's: the same ratio
with the noise of other jobs taken out. Every server is measured only once all its
workers run and after a second of warm-up: otherwise the first worker up takes every
connection wrk opens, and the row measures one worker against two. The bare app on
Bukt's worker and Bukt are measured in --rounds alternated rounds (bare, then Bukt,
each server started afresh), and the ratios are the medians of each round's own, with
their range: a machine whose other work drifts during the run shifts both sides.

Bukt runs as in production: `bukt writer` (fsync everysec unless --fsync says
otherwise) and `bukt http`, from one config file. wrk, the servers and the writer share
this machine's cores, so the numbers compare rows of one run; they are not a capacity
figure.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# This file is bench/http.py: keep it from shadowing the standard library's `http`.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.append(HERE)           # last, for benchutil: after the standard library
from benchutil import cpu_seconds, free_port, wait_http, wait_writer_ready  # noqa: E402
from bukt import areas  # noqa: E402

PY = sys.executable
GUNICORN = os.path.join(os.path.dirname(PY), "gunicorn")
TOKEN = "bench-token-" + uuid.uuid4().hex
ADMIN = "bench-admin-" + uuid.uuid4().hex

BARE_APP = '''
import falcon, falcon.asgi
BODY = b"x" * 100
class Sync:
    def on_get(self, req, resp):
        resp.data = BODY
        resp.content_type = "application/octet-stream"
class Async:
    async def on_get(self, req, resp):
        resp.data = BODY
        resp.content_type = "application/octet-stream"
wsgi = falcon.App()
wsgi.add_route("/", Sync())
asgi = falcon.asgi.App()
asgi.add_route("/", Async())
'''

PUT_LUA = '''
local n = 0
wrk.method = "PUT"
wrk.body = string.rep("v", 100)
wrk.headers["Authorization"] = "Bearer %s"
wrk.headers["Content-Type"] = "application/octet-stream"
request = function()
  n = n + 1
  return wrk.format(nil, "/api/v1/buckets/bench/keys/k" .. (n %% 10000))
end
'''




def workers_of(arbiter):
    """Pids of the arbiter's children (the gunicorn workers)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == arbiter:
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def settle_workers(proc, url, headers=()):
    """Wait until every worker runs, then warm them up for a second: the first worker
    up would otherwise take every connection wrk opens."""
    deadline = time.monotonic() + 30
    while len(workers_of(proc.pid)) < ARGS.workers:
        if time.monotonic() > deadline:
            raise RuntimeError("not every worker started")
        time.sleep(0.1)
    time.sleep(1.0)              # their imports and attach, after the fork
    wrk(url, 8, 1, headers=headers)


def measured(url, connections, duration, server_pids, script=None, headers=(),
             writer=None):
    """wrk's figures plus the server's CPU time per request (its workers and, for
    Bukt, the writer, also given alone): steadier than req/s when other jobs share
    the machine."""
    pids = list(server_pids) + ([writer] if writer else [])
    before = {p: cpu_seconds(p) for p in pids}
    r = wrk(url, connections, duration, script=script, headers=headers)
    used = {p: cpu_seconds(p) - before[p] for p in pids}
    requests = max(1.0, r["rps"] * duration)
    r["cpu_us"] = sum(used.values()) / requests * 1e6
    r["writer_us"] = used[writer] / requests * 1e6 if writer else None
    return r


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def to_ms(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url, connections, duration, script=None, headers=()):
    cmd = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{duration}s",
           "--latency"]
    for h in headers:
        cmd += ["-H", h]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": p50, "p99": p99,
            "non2xx": int(errors.group(1)) if errors else 0}


def run_bare(tmp, worker_args, app, connections, duration):
    port = free_port()
    proc = subprocess.Popen([GUNICORN, "--chdir", tmp, "-b", f"127.0.0.1:{port}",
                             "-w", str(ARGS.workers), "--log-level", "warning",
                             *worker_args, f"bare_app:{app}"])
    try:
        wait_http(port, "/", proc)
        url = f"http://127.0.0.1:{port}/"
        settle_workers(proc, url)
        pids = workers_of(proc.pid)
        return {c: measured(url, c, duration, pids) for c in connections}
    finally:
        stop(proc)


def run_bukt(tmp, connections, duration):
    """`bukt writer` then `bukt http`, both from one config file, as in production."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    conf = os.path.join(tmp, "bukt.yaml")
    with open(conf, "w") as f:
        json.dump({"instance": name, "memory": "256MiB", "data_dir": os.path.join(tmp, name),
                   "fsync": ARGS.fsync,
                   "http": {"bind": f"127.0.0.1:{port}", "workers": ARGS.workers,
                            "access_log": os.path.join(tmp, "access.log")},
                   "auth": {"admin_token": ADMIN}}, f)       # JSON is YAML
    cli = [PY, "-m", "bukt.cli"]
    writer = subprocess.Popen(cli + ["writer", "--config", conf], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    http = None
    try:
        store = wait_writer_ready(name, writer, timeout=30, poll=0.05)
        store.create_bucket("bench")
        store.add_token("bench", hashlib.sha256(TOKEN.encode()).digest(), 7)
        store.bucket("bench").set(b"hit", b"x" * 100)
        store.close()
        http = subprocess.Popen(cli + ["http", "--config", conf], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(port, "/api/v1/openapi.json", http)
        lua = os.path.join(tmp, "put.lua")
        with open(lua, "w") as f:
            f.write(PUT_LUA % TOKEN)
        auth = [f"Authorization: Bearer {TOKEN}"]
        url = f"http://127.0.0.1:{port}/api/v1/buckets/bench/keys/hit"
        settle_workers(http, url, auth)
        pids = workers_of(http.pid)
        get = {c: measured(url, c, duration, pids, headers=auth, writer=writer.pid)
               for c in connections}
        put = {c: measured(url, c, duration, pids, script=lua, writer=writer.pid)
               for c in connections}
        return get, put
    finally:
        if http is not None:
            stop(http)
        stop(writer)
        areas.unlink(name)          # the segment and the feed a stopped writer keeps


def median_run(runs):
    """The run with the median req/s."""
    return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]


def of_bare(bare_runs, runs, c):
    """'93% of bare [87-97%] (CPU 90%)': the median over the rounds of each round's
    req/s ratio to the bare app's (its range), and of the CPU-per-request ratio."""
    ratios = sorted(r[c]["rps"] / b[c]["rps"] for b, r in zip(bare_runs, runs))
    cpu = sorted(b[c]["cpu_us"] / r[c]["cpu_us"] for b, r in zip(bare_runs, runs))
    mid = len(ratios) // 2
    spread = f" [{ratios[0]:.0%}-{ratios[-1]:.0%}]" if len(ratios) > 1 else ""
    return f"{ratios[mid]:.0%} of bare{spread} (CPU {cpu[mid]:.0%})"


def table(rows):
    lines = ["| what | conns | req/s | p50 ms | p99 ms | server CPU µs/req | non-2xx "
             "| ratio |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for what, c, r, ratio in rows:
        cpu = f"{r['cpu_us']:.0f}" + (f" (writer {r['writer_us']:.0f})"
                                      if r.get("writer_us") is not None else "")
        lines.append(f"| {what} | {c} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} "
                     f"| {cpu} | {r['non2xx']} | {ratio} |")
    return "\n".join(lines)


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    p.add_argument("--workers", type=int, default=2, help="server worker processes")
    p.add_argument("--fsync", default="everysec", choices=("always", "everysec", "no"),
                   help="the writer's fsync policy for Bukt's rows")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of the bare app on Bukt's worker and Bukt, alternated "
                        "(medians shown)")
    p.add_argument("--out", help="also write the table (markdown) to this file")
    ARGS = p.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    conns = (50, 1)
    tmp = tempfile.mkdtemp(prefix="bukt-bench-http-")
    with open(os.path.join(tmp, "bare_app.py"), "w") as f:
        f.write(BARE_APP)
    sync = run_bare(tmp, [], "wsgi", conns, ARGS.duration)
    stock = run_bare(tmp, ["-k", "uvicorn_worker.UvicornWorker"], "asgi", conns,
                     ARGS.duration)
    # The bare app on Bukt's worker and Bukt itself, alternated round by round, so
    # that drift in what else the machine does falls on both; each row shows the
    # round with the median req/s, each ratio is the median of the rounds' own
    # ratios with their range.
    ours_runs, get_runs, put_runs = [], [], []
    for _ in range(ARGS.rounds):
        ours_runs.append(run_bare(tmp, ["-k", "bukt.http.worker.BuktWorker"], "asgi",
                                  conns, ARGS.duration))
        get, put = run_bukt(tmp, conns, ARGS.duration)
        get_runs.append(get)
        put_runs.append(put)
    rows = []
    for c in conns:
        ours = median_run([r[c] for r in ours_runs])
        rows += [
            ("bare falcon, gunicorn sync (stock)", c, sync[c], "1.00x sync"),
            ("bare falcon.asgi, gunicorn + stock uvicorn worker", c, stock[c],
             f"{stock[c]['rps'] / sync[c]['rps']:.2f}x sync"),
            ("bare falcon.asgi, gunicorn + Bukt's worker (corked uvicorn)", c, ours,
             f"{ours['rps'] / sync[c]['rps']:.2f}x sync"),
            ("Bukt GET hit, 100 B", c, median_run([r[c] for r in get_runs]),
             f"{of_bare(ours_runs, get_runs, c)}, "
             f"{median_run([r[c] for r in get_runs])['rps'] / sync[c]['rps']:.2f}x sync"),
            ("Bukt PUT, 100 B", c, median_run([r[c] for r in put_runs]),
             of_bare(ours_runs, put_runs, c)),
        ]
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    text = (f"wrk, {ARGS.duration} s per row, {ARGS.rounds} alternated rounds of the bare "
            f"app on Bukt's worker and Bukt, {ARGS.workers} server workers, fsync "
            f"{ARGS.fsync}, {os.cpu_count()} CPUs shared by wrk, servers and writer; "
            f"load average at the end {load} (anything near the CPU count means other "
            f"work shared the run)\n\n{table(rows)}\n")
    print(text)
    if ARGS.out:
        with open(ARGS.out, "w") as f:
            f.write(text)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
