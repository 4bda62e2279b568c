"""For operators: /healthz, /metrics (Prometheus text or JSON), /api/v1/openapi.json."""

import json
import time

from posix_ipc import ExistentialError

from bukt.authguard import FailureTable, table_name
from bukt.errors import BuktError
from bukt.http.auth import ADMIN
from bukt.http.ringwait import writer_state
from bukt.http.middleware import LATENCY_BOUNDS
from bukt.http.wire import bad

BUCKET_COUNTERS = ("reads", "writes", "hits", "misses", "evictions", "expirations")
BUCKET_GAUGES = ("keys", "bytes")
PROM_TEXT = "text/plain; version=0.0.4; charset=utf-8"
WRITER_HELP = {
    "up": "1 when the writer process is alive, ready and without error.",
    "log_bytes": "Size of the append-only log.",
    "fsync_lag_seconds": "Time since the writer's last fsync.",
    "heartbeat_age_seconds": "Time since the writer's last heartbeat.",
    "ring_depth": "Bytes in the change ring not yet released by the writer.",
    "unflushed_bytes": "Bytes in the change ring not yet durable.",
}


class Health:
    """200 when the segment answers and the writer (if it reports) is alive and
    flushing; 503 with the reason otherwise. No token needed, never rate limited."""

    def __init__(self, ctx):
        self.ctx = ctx

    async def on_get(self, req, resp):
        body = {"status": "ok", "segment": "attached", "writer": "not reported"}
        try:
            stats = self.ctx.store.stats()
        except BuktError as e:
            body.update(status="unavailable", segment="unavailable",
                        reason=f"segment: {e}")
        else:
            state = writer_state(self.ctx.store)
            if state is not None:
                body["writer"] = state
                if not (state.get("alive") and state.get("flushing")):
                    body.update(status="unavailable",
                                reason=f"writer: {state.get('reason') or 'not flushing'}")
            # stripes a dead process left mid-write: their read-only readers wait until
            # the writer's repair pass (every repair.interval) or a write repairs them
            awaiting = stats.get("stripes_awaiting_repair", 0)
            body["stripes_awaiting_repair"] = awaiting
            if awaiting and body["status"] == "ok":
                body.update(status="unavailable",
                            reason=f"{awaiting} stripe(s) left mid-write await repair")
        s = self.ctx.settings
        restarts = self.ctx.metrics.area.restarts(s.workers)
        body["http_workers"] = {"workers": s.workers, "restarts_last_minute": restarts}
        if restarts >= s.max_worker_restarts:
            why = (f"http workers: {restarts} died and were restarted in the last minute "
                   f"(http.max_worker_restarts {s.max_worker_restarts}): a crash loop; "
                   "see the server's log")
            body.update(status="unavailable",
                        reason=f"{body['reason']}; {why}" if body.get("reason") else why)
        resp.status = 200 if body["status"] == "ok" else 503
        resp.set_header("Cache-Control", "no-store")
        resp.media = body

    # HEAD: the GET's status and headers (a load balancer's check); falcon sends no body
    on_head = on_get


def collect(ctx):
    store = ctx.store
    buckets = {}
    for name in sorted(store.buckets()):
        try:
            buckets[name] = store.bucket(name).stats()
        except BuktError:      # dropped while we looked
            continue
    snap = {"store": store.stats(), "buckets": buckets, "http": ctx.metrics.snapshot()}
    # Failed authentications (bukt/authguard.py): this face's, and the TCP face's when
    # its pool runs for the same instance.
    snap["auth"] = {"http": ctx.auth.guard.table.totals()} if ctx.auth.guard else {}
    try:
        tcp = FailureTable.attach(table_name(ctx.settings.instance, "tcp"))
    except (OSError, ValueError, ImportError, ExistentialError):
        pass
    else:
        try:
            snap["auth"]["tcp"] = tcp.totals()
        finally:
            tcp.close()
    info = getattr(store, "writer_info", None)
    if callable(info):
        w, now_ms = info(), time.time() * 1000
        snap["writer"] = {
            "up": int(bool(w.get("alive")) and bool(w.get("ready")) and not w.get("error")),
            "log_bytes": w.get("log_size", 0),
            "fsync_lag_seconds": (now_ms - w["last_fsync_ms"]) / 1000
            if w.get("last_fsync_ms") else None,
            "heartbeat_age_seconds": (now_ms - w["heartbeat_ms"]) / 1000
            if w.get("heartbeat_ms") else None,
            "ring_depth": w.get("ring_head", 0) - w.get("ring_tail", 0),
            "unflushed_bytes": w.get("ring_head", 0) - w.get("flushed_pos", 0)}
    return snap


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus(snap):
    out = []

    def family(name, kind, help_text):
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")

    family("bukt_bucket_ops_total", "counter", "Reads and writes per bucket.")
    for b, s in snap["buckets"].items():
        out.append(f'bukt_bucket_ops_total{{bucket="{_label(b)}"}} '
                   f'{s.get("reads", 0) + s.get("writes", 0)}\n')
    for key in BUCKET_COUNTERS:
        family(f"bukt_bucket_{key}_total", "counter", f"Bucket {key}.")
        for b, s in snap["buckets"].items():
            out.append(f'bukt_bucket_{key}_total{{bucket="{_label(b)}"}} {s.get(key, 0)}\n')
    for key in BUCKET_GAUGES:
        family(f"bukt_bucket_{key}", "gauge", f"Live {key} in the bucket.")
        for b, s in snap["buckets"].items():
            out.append(f'bukt_bucket_{key}{{bucket="{_label(b)}"}} {s.get(key, 0)}\n')
    for key, value in sorted(snap["store"].items()):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            name = "bukt_store_" + "".join(c if c.isalnum() else "_" for c in key)
            family(name, "gauge", f"Store {key} (ring depth, log size, fsync lag...).")
            out.append(f"{name} {value}\n")
    for key, value in snap.get("writer", {}).items():
        if value is not None:
            family(f"bukt_writer_{key}", "gauge", WRITER_HELP[key])
            out.append(f"bukt_writer_{key} {value}\n")
    family("bukt_auth_failures_total", "counter",
           "Failed authentications (unknown or revoked tokens), by face.")
    for face, t in snap.get("auth", {}).items():
        out.append(f'bukt_auth_failures_total{{face="{face}"}} {t["failures"]}\n')
    family("bukt_auth_refused_total", "counter",
           "Authentications refused unread because their address was locked out.")
    for face, t in snap.get("auth", {}).items():
        out.append(f'bukt_auth_refused_total{{face="{face}"}} {t["refused"]}\n')
    http = snap["http"]
    family("bukt_http_ratelimited_total", "counter", "Requests refused with 429.")
    out.append(f"bukt_http_ratelimited_total {http['ratelimited']}\n")
    family("bukt_http_requests_total", "counter", "Requests by route and status class.")
    for route, r in http["routes"].items():
        for cls, n in r["status"].items():
            out.append(f'bukt_http_requests_total{{route="{_label(route)}",'
                       f'code="{cls}"}} {n}\n')
    family("bukt_http_request_duration_seconds", "histogram", "Request latency.")
    for route, r in http["routes"].items():
        lbl = _label(route)
        for bound, n in zip([*map(str, LATENCY_BOUNDS), "+Inf"], r["buckets"]):
            out.append(f'bukt_http_request_duration_seconds_bucket{{route="{lbl}",'
                       f'le="{bound}"}} {n}\n')
        out.append(f'bukt_http_request_duration_seconds_sum{{route="{lbl}"}} {r["sum"]}\n')
        out.append(f'bukt_http_request_duration_seconds_count{{route="{lbl}"}} '
                   f'{r["count"]}\n')
    return "".join(out)


class Metrics:
    """Needs the admin token: bucket names and sizes are the operator's business."""

    def __init__(self, ctx):
        self.ctx = ctx

    async def on_get(self, req, resp):
        self.ctx.auth.require(req, None, ADMIN)
        fmt = req.get_param("format", default="prometheus")
        if fmt not in ("prometheus", "json"):
            raise bad("format", "must be prometheus or json")
        snap = collect(self.ctx)
        if fmt == "json":
            resp.media = snap
        else:
            resp.content_type = PROM_TEXT
            resp.text = prometheus(snap)


class OpenApi:
    def __init__(self, document):
        self.body = json.dumps(document).encode()

    async def on_get(self, req, resp):
        resp.content_type = "application/json"
        resp.data = self.body
