"""`bukt watch -b BUCKET [--prefix P] [--since N] [--values] [--json] [--count N]`: the
bucket's change feed (bukt/feed.py), one line per event, until interrupted.

Locally it reads the feed from shared memory; with --url http://... it reads the HTTP
face's Server-Sent Events (GET /api/v1/buckets/{name}/watch); with --url bukt://... it
polls the binary protocol's WATCH. A line is

    <seq> <kind> <key> [ttl=<s>] [v=<version>] [value=<value>]

or, with --json, the event's JSON (docs/api.md, "Watching changes"). When the feed no
longer holds the point it watches from, it prints the "gone" event (with the oldest
point the feed holds) and exits 3 (NOT_FOUND): start again with --since that point
after re-reading the bucket. A watch the server ends (cutoff, a revoked token, a
dropped bucket) prints its last event and exits likewise, with its resume point.
"""
import json
import sys
import time

from bukt.cli.common import NOT_FOUND, OK, CliError, key_arg, open_target, target_args


def watch_args(p):
    target_args(p)
    p.add_argument("--prefix", default="", help="only keys starting with it")
    p.add_argument("--since", type=int, metavar="N",
                   help="resume after event N (an event's seq); default: from now on")
    p.add_argument("--values", action="store_true",
                   help="show set and incr values (up to the feed's feed.max_value)")
    p.add_argument("--count", type=int, metavar="N",
                   help="exit after N events (default: run until interrupted)")


def _line(d, values):
    key = d.get("key")
    key = key if key is not None else "0x" + d["key_hex"]
    parts = [str(d["seq"]), d["kind"], key]
    if d.get("ttl") is not None:
        parts.append(f"ttl={d['ttl']:g}")
    if d.get("version"):
        parts.append(f"v={d['version']}")
    if values:
        if "value" in d:
            parts.append(f"value={d['value']}")
        elif "value_hex" in d:
            parts.append(f"value=0x{d['value_hex']}")
    return " ".join(parts)


def _out(args, d):
    if args.json:
        print(json.dumps(d, sort_keys=True), flush=True)
    elif d["kind"] in ("gone", "cutoff", "revoked"):
        print(f"{d['kind']}: " + ", ".join(f"{k}={v}" for k, v in d.items() if k != "kind"),
              flush=True)
    else:
        print(_line(d, args.values), flush=True)


def watch(args):
    prefix = key_arg(args.prefix)
    with open_target(args) as t:
        bucket = t.need_bucket()
        if t.kind == "local":
            return _local(args, t.store, bucket, prefix)
        if t.kind == "http":
            return _http(args, t, bucket, prefix)
        if t.kind == "tcp":
            return _tcp(args, t.client, prefix)
    raise CliError(2, "bukt watch reads the local feed, a bukt:// or an http:// URL")


def _tcp(args, client, prefix):
    return _print(args, client.watch(args.since, prefix, args.values))


def _local(args, store, bucket, prefix):
    return _print(args, store.watch(bucket, prefix, args.since, args.values))


def _print(args, events):
    """One line an event until a gone or a dropped bucket (NOT_FOUND) or --count."""
    n = 0
    for e in events:
        _out(args, e.as_dict(args.values))
        if e.gone or e.kind == "drop":
            return NOT_FOUND
        n += 1
        if args.count and n >= args.count:
            return OK
    return OK


def _http(args, t, bucket, prefix):
    import http.client
    from urllib.parse import quote, urlencode
    q = {"values": "true" if args.values else "false"}
    if prefix:
        q["prefix"] = prefix.decode("utf-8", "surrogateescape")
    if args.since is not None:
        q["since"] = str(args.since)
    path = f"/api/v1/buckets/{quote(bucket, safe='')}/watch?{urlencode(q)}"
    conn = http.client.HTTPConnection(t.host, t.port, timeout=None)
    headers = {"Accept": "text/event-stream"}
    if t.token:
        headers["X-Auth-Token"] = t.token
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    if r.status != 200:
        body = r.read().decode(errors="replace")
        try:
            detail = json.loads(body).get("detail", body)
        except ValueError:
            detail = body
        raise CliError(NOT_FOUND if r.status == 404 else 1, f"HTTP {r.status}: {detail}")
    n = 0
    data = None
    while True:
        line = r.fp.readline()
        if not line:
            return OK                            # the server closed the stream
        line = line.rstrip(b"\r\n")
        if line.startswith(b"data:"):
            data = json.loads(line[5:].strip())
        elif not line and data is not None:
            _out(args, data)
            if data["kind"] in ("gone", "cutoff", "revoked", "drop"):
                return NOT_FOUND
            data = None
            n += 1
            if args.count and n >= args.count:
                return OK
