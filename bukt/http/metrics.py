"""GET /metrics: every figure of the service as Prometheus text (or JSON with
?format=json), and who may scrape it.

THE NAMES. Each metric is declared once below, with its type, its unit and its own
help text, and the text is written by prometheus_client's exposition (the format's
escaping and its suffixes are the library's business, not ours). A figure that only
grows is a counter named `..._total`; a level is a gauge without that suffix; a size is
in bytes and a time in seconds, the unit the last word of the name. The store's totals
summed over buckets (reads, writes, hits...) are counters too: they fall back only when
a bucket is dropped, which Prometheus reads as a counter reset.

WHO MAY SCRAPE. The admin token sees everything. `metrics.token` is a second,
read-only credential for a scraper, good for /metrics only and for nothing else, so a
Prometheus server's configuration never holds a token that can write. With
`metrics.public_on_loopback`, a scrape from the loopback address needs no token. A
bucket token (any permission) gets its own bucket's metrics and nothing of the rest.
"""

import hmac
import json
import time

from posix_ipc import ExistentialError
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)
from prometheus_client.exposition import generate_latest

from bukt.authguard import FailureTable, table_name
from bukt.errors import AuthError, BuktError
from bukt.http.auth import token_of
from bukt.http.middleware import LATENCY_BOUNDS, peer
from bukt.http.wire import bad
from bukt.tcp import stats as tcp_stats
from bukt.tokens import digest
from bukt.writewait.durability import fsync_lag_seconds

PROM_TEXT = "text/plain; version=0.0.4; charset=utf-8"

# A bucket's figures (Bucket.stats()): key -> (metric, counter?, help).
BUCKET_METRICS = {
    "reads": ("bukt_bucket_reads", True, "Reads of the bucket's keys (hits and misses)."),
    "writes": ("bukt_bucket_writes", True, "Writes to the bucket's keys."),
    "hits": ("bukt_bucket_hits", True, "Reads that found their key."),
    "misses": ("bukt_bucket_misses", True, "Reads that did not find their key."),
    "deletes": ("bukt_bucket_deletes", True, "Keys deleted by a client."),
    "evictions": ("bukt_bucket_evictions", True,
                  "Keys evicted to make room (memory full, or the bucket's max_memory)."),
    "expirations": ("bukt_bucket_expirations", True, "Keys removed as their TTL ran out."),
    "integrity_errors": ("bukt_bucket_integrity_errors", True,
                         "Damaged values reads of the bucket met and refused (a "
                         "compressed frame, an object's chunk or digest failing its "
                         "check), by every process."),
    "keys": ("bukt_bucket_keys", False, "Live keys in the bucket."),
    "bytes": ("bukt_bucket_bytes", False, "Bytes of the bucket's keys and values."),
    "memory": ("bukt_bucket_memory_bytes", False,
               "Bytes of segment memory the bucket's entries take (chunks)."),
    "bytes_saved": ("bukt_bucket_compression_saved_bytes", False,
                    "Bytes its compressed values save: their raw less their stored size."),
}

# The store's figures (Store.stats()): key -> (metric, counter?, help). Keys of
# Store.stats() left out on purpose are in STORE_LEFT_OUT; a test holds the two
# together, so a new figure is named here or there, never exposed by accident.
STORE_METRICS = {
    "reads": ("bukt_store_reads", True,
              "Reads in every bucket; falls when a bucket is dropped (a reset)."),
    "writes": ("bukt_store_writes", True,
               "Writes in every bucket; falls when a bucket is dropped (a reset)."),
    "hits": ("bukt_store_hits", True,
             "Reads that found their key, in every bucket; falls when a bucket is dropped."),
    "misses": ("bukt_store_misses", True,
               "Reads that missed, in every bucket; falls when a bucket is dropped."),
    "deletes": ("bukt_store_deletes", True,
                "Client deletes in every bucket; falls when a bucket is dropped."),
    "integrity_errors": ("bukt_store_integrity_errors", True,
                         "Damaged values reads met and refused, in every bucket; falls "
                         "when a bucket is dropped."),
    "evictions_total": ("bukt_store_evictions", True,
                        "Keys evicted since the segment was made, whatever their bucket."),
    "expirations_total": ("bukt_store_expirations", True,
                          "Keys expired since the segment was made, whatever their bucket."),
    "slab_moves": ("bukt_store_slab_moves", True,
                   "Slabs moved from one size class to another."),
    "relocations": ("bukt_store_relocations", True,
                    "Entries moved to free a slab for another size class."),
    "repairs": ("bukt_store_repairs", True,
                "Stripes repaired after a process died inside a write."),
    "keys": ("bukt_store_keys", False, "Live keys in every bucket."),
    "bytes": ("bukt_store_bytes", False, "Bytes of keys and values in every bucket."),
    "memory": ("bukt_store_entry_memory_bytes", False,
               "Bytes of segment memory the entries of every bucket take."),
    "bytes_saved": ("bukt_store_compression_saved_bytes", False,
                    "Bytes compressed values save in every bucket (raw less stored size)."),
    "buckets": ("bukt_store_buckets", False, "Buckets that exist."),
    "keys_with_ttl": ("bukt_store_keys_with_ttl", False,
                      "Entries holding an expiry, expired ones not yet removed included."),
    "segment_bytes": ("bukt_store_segment_bytes", False, "Size of the shared segment."),
    "memory_used": ("bukt_store_memory_used_bytes", False,
                    "Bytes of the segment in use: fixed regions and pages handed out."),
    "page_size": ("bukt_store_page_size_bytes", False, "Size of a segment page."),
    "pages_total": ("bukt_store_pages", False, "Pages of the segment's arena."),
    "pages_used": ("bukt_store_pages_used", False, "Arena pages ever handed out."),
    "pages_free": ("bukt_store_pages_free", False,
                   "Pages handed out and given back, free for any slab class."),
    "chunk_bytes": ("bukt_store_chunk_bytes", False, "Bytes of slab chunks in use."),
    "index_bytes": ("bukt_store_index_bytes", False, "Size of the hash index."),
    "index_slots": ("bukt_store_index_slots", False, "Slots of the hash index."),
    "index_used": ("bukt_store_index_slots_used", False, "Slots of the hash index in use."),
    "index_stripes": ("bukt_store_index_stripes", False,
                      "Stripes of the hash index in use so far (it grows by splits)."),
    "ring_size": ("bukt_store_ring_size_bytes", False, "Size of the change ring."),
    "ring_depth": ("bukt_store_ring_depth_bytes", False,
                   "Bytes in the change ring the writer has not released yet."),
    "generation": ("bukt_store_generation", False,
                   "The segment's generation (grows at each rebuild)."),
    "stripes_awaiting_repair": ("bukt_store_stripes_awaiting_repair", False,
                                "Stripes a dead process left mid-write, not yet repaired."),
}
STORE_LEFT_OUT = {
    "evictions": "the same as evictions_total, less the dropped buckets'",
    "expirations": "the same as expirations_total, less the dropped buckets'",
    "ring_head": "a ring position, not a figure (ring_depth is)",
    "ring_tail": "a ring position (ring_depth is)",
    "flushed_pos": "a ring position (bukt_writer_unflushed_bytes is)",
    "writer_pid": "a pid (bukt_writer_up is)",
    "writer_ready": "bukt_writer_up",
}

# The writer's figures (collect(): "writer"): key -> (metric, help).
WRITER_METRICS = {
    "up": ("bukt_writer_up", "1 when the writer process is alive, ready and without error."),
    "log_bytes": ("bukt_writer_log_bytes", "Size of the current append-only log file."),
    "fsync_lag_seconds": ("bukt_writer_fsync_lag_seconds",
                          "Age of the oldest change not yet synced to disk; 0 when none "
                          "waits (fsync everysec and always; absent under fsync no)."),
    "heartbeat_age_seconds": ("bukt_writer_heartbeat_age_seconds",
                              "Time since the writer's last heartbeat."),
    "ring_depth": ("bukt_writer_ring_depth_bytes",
                   "Bytes in the change ring not yet released by the writer."),
    "unflushed_bytes": ("bukt_writer_unflushed_bytes",
                        "Bytes in the change ring not yet durable."),
}


# A read replica's figures (bukt/replica/status.py): key -> (metric, counter?, help).
REPLICA_METRICS = {
    "link": ("bukt_replica_link", False, "1 while the replica hears from its primary."),
    "applied": ("bukt_replica_applied", False,
                "The last primary sequence the replica applied."),
    "primary_last": ("bukt_replica_primary_last", False,
                     "The primary's last logged sequence, as it last said."),
    "lag_seq": ("bukt_replica_lag_seq", False, "How far the primary's log is ahead of "
                "the replica, in sequence positions."),
    "lag_seconds": ("bukt_replica_lag_seconds", False,
                    "Age of the newest change the replica applied (0 when caught up)."),
    "copies": ("bukt_replica_copies", True, "Full copies the replica has taken."),
}


def bucket_stats(store, only=None):
    buckets = {}
    for name in sorted(store.buckets()) if only is None else [only]:
        try:
            buckets[name] = store.bucket(name).stats()
        except BuktError:      # dropped while we looked
            continue
    return buckets


def collect(ctx, only=None):
    """The figures as a dict (the JSON form); `only`: one bucket's name, for a bucket
    token's scrape, which gets that bucket's figures and nothing else."""
    store = ctx.store
    if only is not None:
        return {"buckets": bucket_stats(store, only)}
    snap = {"store": store.stats(), "buckets": bucket_stats(store),
            "http": ctx.metrics.snapshot()}
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
    tcp = tcp_stats.read(ctx.settings.instance)
    if tcp is not None:
        snap["tcp"] = tcp
    info = getattr(store, "writer_info", None)
    if callable(info):
        w, now_ms = info(), time.time() * 1000
        snap["writer"] = {
            "up": int(bool(w.get("alive")) and bool(w.get("ready")) and not w.get("error")),
            "log_bytes": w.get("log_size", 0),
            "fsync_lag_seconds": fsync_lag_seconds(w, now_ms),
            "heartbeat_age_seconds": (now_ms - w["heartbeat_ms"]) / 1000
            if w.get("heartbeat_ms") else None,
            "ring_depth": w.get("ring_head", 0) - w.get("ring_tail", 0),
            "unflushed_bytes": w.get("ring_head", 0) - w.get("flushed_pos", 0)}
    try:
        from bukt.replica.status import replica_status
        snap["replica"] = replica_status(store)
    except (BuktError, OSError):
        pass
    return snap


def _family(name, counter, help_text, labels=()):
    """A family; a counter's name is given without its _total (the library adds it)."""
    if counter:
        return CounterMetricFamily(name, help_text, labels=labels)
    return GaugeMetricFamily(name, help_text, labels=labels)


def families(snap):
    """The snapshot as prometheus_client metric families."""
    buckets = snap["buckets"]
    for key, (name, counter, help_text) in BUCKET_METRICS.items():
        f = _family(name, counter, help_text, ["bucket"])
        for b, s in buckets.items():
            f.add_metric([b], s.get(key, 0))
        yield f
    if "store" not in snap:            # a bucket token's scrape
        return
    for key, (name, counter, help_text) in STORE_METRICS.items():
        if key in snap["store"]:
            f = _family(name, counter, help_text)
            f.add_metric([], snap["store"][key])
            yield f
    for key, value in snap.get("writer", {}).items():
        if value is not None:
            name, help_text = WRITER_METRICS[key]
            yield GaugeMetricFamily(name, help_text, value=value)
    rep = snap.get("replica")
    if rep is not None:
        role = GaugeMetricFamily("bukt_replica", "1 on a read replica (the primary's "
                                 "address in a label), 0 on a primary.",
                                 labels=["primary"] if rep["role"] == "replica" else None)
        if rep["role"] == "replica":
            role.add_metric([str(rep["primary"])], 1)
            yield role
            for key, (name, counter, help_text) in REPLICA_METRICS.items():
                value = rep.get(key)
                if key == "link":
                    value = int(value == "up")
                if value is not None:
                    f = _family(name, counter, help_text)
                    f.add_metric([], value)
                    yield f
        else:
            role.add_metric([], 0)
            yield role
    fail = CounterMetricFamily("bukt_auth_failures", "Failed authentications (unknown "
                               "or revoked tokens), by face.", labels=["face"])
    refused = CounterMetricFamily("bukt_auth_refused", "Authentications refused unread "
                                  "because their address was locked out, by face.",
                                  labels=["face"])
    for face, t in snap.get("auth", {}).items():
        fail.add_metric([face], t["failures"])
        refused.add_metric([face], t["refused"])
    yield fail
    yield refused
    http = snap["http"]
    yield CounterMetricFamily("bukt_http_ratelimited", "HTTP requests refused with 429 "
                              "by the rate limit.", value=http["ratelimited"])
    req = CounterMetricFamily("bukt_http_requests", "HTTP requests by route and status "
                              "class.", labels=["route", "code"])
    hist = HistogramMetricFamily("bukt_http_request_duration_seconds", "HTTP request "
                                 "latency, from the request's head to its answer.",
                                 labels=["route"])
    bounds = [*map(str, LATENCY_BOUNDS), "+Inf"]
    for route, r in http["routes"].items():
        for cls, n in r["status"].items():
            req.add_metric([route, cls], n)
        hist.add_metric([route], list(zip(bounds, r["buckets"])), r["sum"])
    yield req
    yield hist
    yield from tcp_families(snap.get("tcp") or {})


def tcp_families(tcp):
    """The TCP pool's counters (bukt/tcp/stats.py), by face: "bukt" (the binary
    protocol) and "resp"."""
    accepted = CounterMetricFamily("bukt_tcp_connections_accepted", "TCP connections "
                                   "admitted, by face (bukt: binary protocol; resp).",
                                   labels=["face"])
    open_ = GaugeMetricFamily("bukt_tcp_connections", "TCP connections open now, by "
                              "face.", labels=["face"])
    rx = CounterMetricFamily("bukt_tcp_received_bytes", "Bytes of TCP requests handled, "
                             "by face.", labels=["face"])
    tx = CounterMetricFamily("bukt_tcp_sent_bytes", "Bytes of TCP responses sent at "
                             "once (not those that waited for durability), by face.",
                             labels=["face"])
    inflight = GaugeMetricFamily("bukt_tcp_inflight_responses", "TCP responses waiting "
                                 "for durability (fsync: always), by face.",
                                 labels=["face"])
    req = CounterMetricFamily("bukt_tcp_requests", "TCP requests by face and command.",
                              labels=["face", "command"])
    err = CounterMetricFamily("bukt_tcp_errors", "TCP requests answered with an error "
                              "(a binary status of 0x10 or more, a RESP error reply), by "
                              "face and command.", labels=["face", "command"])
    psends = CounterMetricFamily("bukt_tcp_pubsub_sends", "Sends of keyspace "
                                 "notifications to RESP subscribers (each carries every "
                                 "event the subscriber had waiting).")
    pevents = CounterMetricFamily("bukt_tcp_pubsub_events", "Events delivered to RESP "
                                  "subscribers (one an event a subscriber).")
    for face, t in tcp.items():
        if "pubsub_sends" in t:
            psends.add_metric([], t["pubsub_sends"])
            pevents.add_metric([], t["pubsub_events"])
        accepted.add_metric([face], t["accepted"])
        open_.add_metric([face], t["open"])
        inflight.add_metric([face], t["inflight"])
        rx.add_metric([face], t["bytes_in"])
        tx.add_metric([face], t["bytes_out"])
        for command, n in t["requests"].items():
            req.add_metric([face, command], n)
        for command, n in t["errors"].items():
            err.add_metric([face, command], n)
    yield from (accepted, open_, inflight, rx, tx, req, err, psends, pevents)


class _Families:
    def __init__(self, snap):
        self.snap = snap

    def collect(self):
        return families(self.snap)


def prometheus(snap):
    return generate_latest(_Families(snap)).decode()


class ScrapeAuth:
    """Who may read /metrics, and how much: None (everything) or a bucket's name
    (that bucket's metrics); AuthError or PermissionDenied otherwise."""

    def __init__(self, auth, token=None, public_on_loopback=False):
        self.auth = auth
        self.digest = digest(token) if token else None
        self.public_on_loopback = public_on_loopback

    def scope(self, req):
        token = token_of(req)
        if token is None and self.public_on_loopback and _loopback(peer(req)):
            return None
        if token is not None and self.digest is not None and \
                hmac.compare_digest(digest(token), self.digest):
            return None
        p = self.auth.identify(req, token)
        if p.is_admin:
            return None
        if p.bucket is None:
            raise AuthError("unknown or revoked token")
        return p.bucket


def _loopback(address):
    return address == "::1" or address.startswith("127.") or \
        address.startswith("::ffff:127.")


class Metrics:
    """The admin token, metrics.token or, with metrics.public_on_loopback, a scrape
    from loopback: everything; a bucket token: its bucket."""

    def __init__(self, ctx):
        self.ctx = ctx
        s = ctx.settings
        self.who = ScrapeAuth(ctx.auth, s.metrics_token, s.metrics_public_on_loopback)

    async def on_get(self, req, resp):
        only = self.who.scope(req)
        fmt = req.get_param("format", default="prometheus")
        if fmt not in ("prometheus", "json"):
            raise bad("format", "must be prometheus or json")
        snap = collect(self.ctx, only)
        resp.set_header("Cache-Control", "no-store")
        if fmt == "json":
            resp.text = json.dumps(snap)
            resp.content_type = "application/json"
        else:
            resp.content_type = PROM_TEXT
            resp.text = prometheus(snap)
