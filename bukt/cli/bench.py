"""`bukt bench`: a quick throughput and latency check of a running service, over TCP and
HTTP, for users who want to know what their host does. (`make bench` is the other
thing: Bukt side by side with Redis, memcached and LMDB, in bench/.)

HOW IT MEASURES. A cache-only bucket `bench-<random>` is created with the admin token
and dropped at the end. For each transport, then each operation (set, then get of the
keys the sets wrote), `--clients` processes each keep one connection and send one
request at a time for `--seconds`: closed-loop clients, so the figure is what that many
synchronous callers get, not the server's ceiling (pipelining clients, as
`make bench` drives them, go further). Latency is each request's round trip as the
client sees it, Python client included.
"""
import multiprocessing
import os
import random
import secrets
import time

from bukt.cli.common import REFUSED, CliError, config_arg, emit, json_arg, load_config, table

__all__ = ["bench_args", "bench", "run_bench"]


def bench_args(p):
    config_arg(p)
    json_arg(p)
    p.add_argument("--http", metavar="URL", help="the HTTP server (default: http.bind)")
    p.add_argument("--tcp", metavar="URL", help="the TCP server, bukt://HOST:PORT "
                                                "(default: tcp.bind)")
    p.add_argument("--token", help="the admin token (default: auth.admin_token, "
                                   "BUKT_ADMIN_TOKEN, else data_dir/admin.token)")
    p.add_argument("--only", choices=("tcp", "http"), help="one transport only")
    p.add_argument("--seconds", type=float, default=2.0, help="per test (default 2)")
    p.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    p.add_argument("--value-size", type=int, default=100, metavar="BYTES")
    p.add_argument("--keys", type=int, default=10000, help="distinct keys (default 10000)")
    p.add_argument("--persist", action="store_true",
                   help="a logged bucket, so sets pay the fsync policy (default cache-only)")


def _admin_token(args, cfg):
    if args.token:
        return args.token
    if cfg.auth.admin_token:
        return cfg.auth.admin_token
    from bukt.cli.common import data_dir_of
    path = os.path.join(data_dir_of(cfg)[0], "admin.token")
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        raise CliError(REFUSED, f"no admin token: {path}: {e.strerror}; pass --token") from None


def _client(transport, url, bucket, token, timeout=10.0):
    if transport == "tcp":
        from bukt.client import Client, parse_url
        kw = parse_url(url)
        return Client(host=kw["host"], port=kw["port"], bucket=bucket, token=token,
                      timeout=timeout, pool_size=1)
    from bukt.cli.targets import HttpTarget
    return HttpTarget(url, bucket=bucket, token=token, timeout=timeout)


def _worker(transport, url, bucket, token, op, keys, value, seconds, seed, conn):
    """One client process: requests back to back for `seconds`; sends back
    (count, errors, latencies in seconds)."""
    rng = random.Random(seed)
    c = _client(transport, url, bucket, token)
    lat, errs = [], 0
    if transport == "tcp":
        call = (lambda k: c.set(k, value)) if op == "set" else (lambda k: c.get(k))
    else:
        call = (lambda k: c.set(bucket, k, value)) if op == "set" else \
            (lambda k: c.get(bucket, k))
    now = time.perf_counter
    start = now()
    end = start + seconds
    try:
        while True:
            k = b"k%d" % rng.randrange(keys)
            t0 = now()
            try:
                call(k)
            except Exception:
                errs += 1
            t1 = now()
            lat.append(t1 - t0)
            if t1 >= end:
                break
    finally:
        c.close()
    conn.send((len(lat), errs, lat, now() - start))
    conn.close()


def _run(transport, url, bucket, token, op, args, value):
    ctx = multiprocessing.get_context("fork")
    pipes, procs = [], []
    for i in range(args.clients):
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, args=(transport, url, bucket, token, op, args.keys,
                                              value, args.seconds, i, w), daemon=True)
        p.start()
        w.close()
        pipes.append(r)
        procs.append(p)
    results = []
    for r in pipes:
        if r.poll(args.seconds + 30):
            results.append(r.recv())
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.kill()
    if len(results) < args.clients:
        raise CliError(1, f"{transport} {op}: {args.clients - len(results)} clients gave no "
                          "result; is the server answering?")
    lat = sorted(x for _, _, ls, _ in results for x in ls)
    n = sum(c for c, _, _, _ in results)
    rate = sum(c / max(d, 1e-9) for c, _, _, d in results)

    def pct(q):
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 3) if lat else None
    return {"transport": transport, "op": op, "clients": args.clients, "ops": n,
            "ops_per_s": round(rate), "errors": sum(e for _, e, _, _ in results),
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
            "max_ms": round(lat[-1] * 1000, 3) if lat else None}


def run_bench(args, cfg) -> dict:
    from bukt.cli.targets import HttpTarget
    http_url = args.http or "http://%s:%d" % _host_port(cfg.http.bind)
    tcp_url = args.tcp or "bukt://%s:%d" % _host_port(cfg.tcp.bind)
    admin = _admin_token(args, cfg)
    bucket = f"bench-{secrets.token_hex(4)}"
    value = os.urandom(args.value_size // 2 + 1).hex()[:args.value_size].encode()
    t = HttpTarget(http_url, token=admin)
    _, token = t.create_bucket(bucket, persist=args.persist)
    results = []
    try:
        transports = [args.only] if args.only else ["tcp", "http"]
        for transport in transports:
            url = tcp_url if transport == "tcp" else http_url
            for op in ("set", "get"):
                results.append(_run(transport, url, bucket, token, op, args, value))
    finally:
        try:
            t.drop_bucket(bucket)
        finally:
            t.close()
    return {"bucket": bucket, "persist": args.persist, "clients": args.clients,
            "seconds": args.seconds, "value_size": args.value_size, "keys": args.keys,
            "results": results}


def _host_port(bind):
    from bukt.service.probes import client_host
    host, port = client_host(bind)
    return (f"[{host}]" if ":" in host else host), port


def bench(args):
    if args.clients < 1 or args.seconds <= 0 or args.keys < 1:
        raise CliError(REFUSED, "--clients, --seconds and --keys must be above zero")
    cfg = load_config(args)
    report = run_bench(args, cfg)

    def human():
        print(f"bukt bench: {report['clients']} clients, {report['seconds']:g} s per test, "
              f"{report['value_size']}-byte values, {report['keys']:,} keys, "
              f"{'logged' if report['persist'] else 'cache-only'} bucket")
        print(table(["transport", "op", "ops/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
                     "errors"],
                    [[r["transport"], r["op"], r["ops_per_s"], r["p50_ms"], r["p90_ms"],
                      r["p99_ms"], r["max_ms"], r["errors"]] for r in report["results"]]))
    emit(args, report, human)
    return 1 if any(r["errors"] for r in report["results"]) else 0
