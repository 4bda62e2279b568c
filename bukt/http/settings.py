"""The HTTP front end's settings, read from whatever configuration it is handed.

`create_app` and `serve_http` take the project's config object (bukt/config.py), a
nested dict as found in bukt.yaml, or a flat dict of dotted keys ("http.bind"); this
module is the one place that knows the keys the HTTP side reads. Defaults match
bukt/config.py's SCHEMA for the keys it has; the others (http.access_log,
http.keepalive, ratelimit.slots) can only come from a dict until it has them.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass

_MISSING = object()


def lookup(config, dotted, default=None):
    """The value at `dotted` ("http.bind") in a flat or nested mapping, or in an object
    with attributes (bukt.config.Config); `default` when absent. An explicit null is
    returned as None (http.access_log: null turns the log off)."""
    if config is None:
        return default
    if isinstance(config, Mapping) and dotted in config:
        return config[dotted]
    node = config
    for part in dotted.split("."):
        if isinstance(node, Mapping):
            node = node.get(part, _MISSING)
        else:
            node = getattr(node, part, _MISSING)
        if node is _MISSING:
            return default
    return node


def _bool(value):
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _size(value):
    if isinstance(value, str):
        from bukt.config import parse_size
        return parse_size(value)
    return int(value)


def _duration(value):
    from bukt.config import parse_duration
    return parse_duration(value)


@dataclass(frozen=True)
class HttpSettings:
    bind: str = "127.0.0.1:7070"      # loopback unless the operator says otherwise
    workers: int = 0                  # prefork processes; 0 = one per CPU
    timeout: float = 30               # gunicorn kills a worker silent this long
    max_body: int = 4 << 20           # bytes; a 1 MiB value in JSON or an mset fits
    max_object: int = 64 << 20        # limits.max_object: a streamed PUT's bound
    admin_token: str | None = None    # auth.admin_token, else env BUKT_ADMIN_TOKEN,
                                      # else data_dir/admin.token (generated on first start)
    data_dir: str | None = None
    instance: str = "default"         # the segment is /bukt-<instance>
    access_log: str | None = None     # "-" = stderr, a path, or None for none: the
                                      # http.access_log when log.access is true
    access_sample: float = 1.0        # log.access_sample: the share of requests logged
    keepalive: int = 5                # seconds an idle keep-alive connection is kept
    max_request_line: int = 8192      # the request line's URL, bytes (nginx: 8 KiB)
    max_header_fields: int = 100      # header fields in one request (gunicorn: 100)
    max_header_size: int = 8192       # one header field, bytes (nginx: 8 KiB)
    max_headers_size: int = 32768     # all header fields, bytes (nginx: 4 x 8 KiB)
    max_worker_restarts: int = 5      # worker deaths in a minute that make /healthz 503
    ratelimit_enabled: bool = False   # off by default: a cache on loopback rarely needs it
    ratelimit_rate: float = 1000.0    # ratelimit.rps: sustained requests/s per client IP
    ratelimit_burst: int = 2000       # requests a client may send at once
    ratelimit_slots: int = 4096       # client IPs tracked at once (16 bytes each)
    auth_max_failures: int = 10       # wrong tokens per address (bukt/authguard.py) ...
    auth_failure_window: float = 60.0  # ... within this many seconds: locked out
    auth_lockout: float = 10.0        # the first lockout; doubles, up to
    auth_lockout_max: float = 900.0
    auth_log_interval: float = 60.0   # a log line per address at most this often
    auth_sources: int = 4096          # addresses the shared failure table tracks
    # Not the HTTP face's own settings: what GET /api/v1/service reports of the rest of
    # the service (the writer's fsync policy and compaction thresholds, the TCP pool).
    fsync: str = "everysec"
    compaction_ratio: float = 2.0
    compaction_min_log_bytes: int = 64 << 20
    tcp_workers: int = 0              # 0 = one per CPU
    feed_heartbeat: float = 15.0      # feed.heartbeat: an idle watch's comment line
    replica_chunk: int = 4 << 20      # replica.chunk: log bytes read and sent at a time
    feed_max_lag: int = 4 << 20       # feed.max_lag: a slow watch is cut off past it
    metrics_token: str | None = None  # metrics.token: a read-only scrape credential
    metrics_public_on_loopback: bool = False   # metrics.public_on_loopback
    feed_coalesce: float = 0.005      # feed.coalesce: a stream's batches at most this often
    s3_bind: str | None = None        # s3.bind: the S3 gateway's address (None: off)
    s3_region: str = "us-east-1"      # s3.region: the region clients sign for
    s3_max_skew: float = 900.0        # s3.max_skew: a signed request's time, +- seconds
    upload_timeout: float = 3600.0    # objects.upload_timeout: an unfinished multipart

    @classmethod
    def from_config(cls, config):
        get = lambda key, default: lookup(config, key, default)  # noqa: E731
        admin = get("auth.admin_token", None) or None   # else bukt.tokens.admin_token looks
        access_log = (get("http.access_log", "-") or None) \
            if _bool(get("log.access", False)) else None
        return cls(
            bind=str(get("http.bind", cls.bind)),
            workers=int(get("http.workers", cls.workers)) or os.cpu_count() or 1,
            timeout=float(get("http.timeout", cls.timeout)),
            max_body=_size(get("http.max_body", cls.max_body)),
            max_object=_size(get("limits.max_object", cls.max_object)),
            admin_token=admin,
            data_dir=get("data_dir", None),
            instance=str(get("instance", cls.instance)),
            access_log=access_log,
            access_sample=float(get("log.access_sample", cls.access_sample)),
            keepalive=int(get("http.keepalive", cls.keepalive)),
            max_request_line=_size(get("http.max_request_line", cls.max_request_line)),
            max_header_fields=int(get("http.max_header_fields", cls.max_header_fields)),
            max_header_size=_size(get("http.max_header_size", cls.max_header_size)),
            max_headers_size=_size(get("http.max_headers_size", cls.max_headers_size)),
            max_worker_restarts=int(get("http.max_worker_restarts",
                                        cls.max_worker_restarts)),
            ratelimit_enabled=_bool(get("ratelimit.enabled", cls.ratelimit_enabled)),
            ratelimit_rate=float(get("ratelimit.rps", cls.ratelimit_rate)),
            ratelimit_burst=int(get("ratelimit.burst", cls.ratelimit_burst)),
            ratelimit_slots=int(get("ratelimit.slots", cls.ratelimit_slots)),
            auth_max_failures=int(get("auth.max_failures", cls.auth_max_failures)),
            auth_failure_window=_duration(get("auth.failure_window",
                                              cls.auth_failure_window)),
            auth_lockout=_duration(get("auth.lockout", cls.auth_lockout)),
            auth_lockout_max=_duration(get("auth.lockout_max", cls.auth_lockout_max)),
            auth_log_interval=_duration(get("auth.log_interval", cls.auth_log_interval)),
            auth_sources=int(get("auth.sources", cls.auth_sources)),
            fsync=str(get("fsync", cls.fsync)),
            compaction_ratio=float(get("compaction.ratio", cls.compaction_ratio)),
            compaction_min_log_bytes=_size(get("compaction.min_log_bytes",
                                               cls.compaction_min_log_bytes)),
            tcp_workers=int(get("tcp.workers", cls.tcp_workers)) or os.cpu_count() or 1,
            feed_heartbeat=_duration(get("feed.heartbeat", cls.feed_heartbeat)),
            feed_max_lag=_size(get("feed.max_lag", cls.feed_max_lag)),
            metrics_token=get("metrics.token", None) or None,
            metrics_public_on_loopback=_bool(get("metrics.public_on_loopback",
                                                 cls.metrics_public_on_loopback)),
            replica_chunk=_size(get("replica.chunk", cls.replica_chunk)),
            feed_coalesce=_duration(get("feed.coalesce", cls.feed_coalesce)),
            s3_bind=get("s3.bind", None) or None,
            s3_region=str(get("s3.region", cls.s3_region)),
            s3_max_skew=_duration(get("s3.max_skew", cls.s3_max_skew)),
            upload_timeout=_duration(get("objects.upload_timeout", cls.upload_timeout)),
        )
