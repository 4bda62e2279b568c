"""The TCP server's settings, from the project's config (bukt/config.py) and keywords.

`TcpSettings.from_config(cfg, **overrides)` takes a `bukt.config.Config`, a nested or
flat mapping, or None (built-in defaults), then applies keyword overrides; the keywords
are the field names below. This is the one place that knows the `tcp.*` keys.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from bukt import config as _config
from bukt import tokens as _tokens

_MISSING = object()


def _lookup(cfg, dotted):
    if cfg is None:
        return _MISSING
    if isinstance(cfg, Mapping):
        if dotted in cfg:
            return cfg[dotted]
        node = cfg
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return _MISSING
            node = node[part]
        return node
    try:
        return cfg.get(dotted)
    except (KeyError, AttributeError):
        return _MISSING


@dataclass(frozen=True)
class TcpSettings:
    instance: str = "default"           # the segment is /bukt-<instance>
    bind: str = "127.0.0.1:7071"        # loopback unless the operator says otherwise
    workers: int = 0                    # 0: one per core
    max_frame: int = 4 << 20            # bytes, request and response
    max_object: int = 64 << 20          # limits.max_object: a SET's bound for an object
    max_connections: int = 1024         # per worker
    max_inflight: int = 128             # unanswered requests per connection
    idle_timeout: float = 300.0         # seconds; 0 = never
    busy_poll: float = 30e-6            # seconds an idle epoll worker polls; 0 = never
    nice: int | None = None             # each worker's niceness; None: as inherited
    slice: float = 300e-6               # each worker's scheduler slice; 0: the kernel's
    round_yield: bool = True            # epoll: sched_yield after a round of 2+ events
    shutdown_timeout: float = 10.0      # SIGTERM: give in-flight work this long
    admin_token: str | None = None      # auth.admin_token, BUKT_ADMIN_TOKEN, data_dir/admin.token
    data_dir: str | None = None
    loop: str = "auto"                  # "epoll", "uvloop", "asyncio"; "auto": the first
                                        # available (epoll needs bukt/_epoll built)
    write_high_water: int = 64 << 10    # unsent response bytes before reading pauses
    compiled: bool = True               # use bukt.tcp._wire (the Cython hot path) when built
    auth_timeout: float = 5.0           # seconds to AUTH after connecting (bukt/tcp/admission.py)
    max_connections_per_address: int = 512  # per worker; 0 = no limit
    auth_max_failures: int = 10         # failed AUTHs per address ... (bukt/authguard.py)
    auth_failure_window: float = 60.0   # ... within this many seconds: locked out
    auth_lockout: float = 10.0          # the first lockout; doubles, up to
    auth_lockout_max: float = 900.0
    auth_log_interval: float = 60.0     # a log line per address at most this often
    auth_sources: int = 4096            # addresses the shared failure table tracks
    resp_enabled: bool = True           # the Redis protocol beside the binary one
    resp_bind: str = "127.0.0.1:7072"   # (bukt/tcp/resp_session.py, docs/resp.md)
    resp_max_keys: int = 100_000        # KEYS answers at most this many keys
    resp_fast_path: bool = True         # common commands in C (bukt/tcp/_resp.pyx)
    watch_max_wait: float = 30.0        # the longest a WATCH long poll waits for events
    # a RESP subscriber that does not read is cut off this far (bytes) behind the feed
    feed_max_lag: int = _config.parse_size(_config.SCHEMA["feed.max_lag"][0])
    # a busy RESP subscriber's sends at most this often (seconds; resp_pubsub.py)
    resp_coalesce: float = _config.parse_duration(_config.SCHEMA["resp.coalesce"][0])

    _KEYS = {  # field -> config key
        "instance": "instance", "bind": "tcp.bind", "workers": "tcp.workers",
        "max_frame": "tcp.max_frame", "max_object": "limits.max_object",
        "max_connections": "tcp.max_connections",
        "max_inflight": "tcp.max_inflight", "idle_timeout": "tcp.idle_timeout",
        "busy_poll": "tcp.busy_poll", "nice": "tcp.nice", "slice": "tcp.slice",
        "round_yield": "tcp.round_yield", "auth_timeout": "tcp.auth_timeout",
        "max_connections_per_address": "tcp.max_connections_per_address",
        "auth_max_failures": "auth.max_failures",
        "auth_failure_window": "auth.failure_window", "auth_lockout": "auth.lockout",
        "auth_lockout_max": "auth.lockout_max", "auth_log_interval": "auth.log_interval",
        "auth_sources": "auth.sources",
        "resp_enabled": "resp.enabled", "resp_bind": "resp.bind",
        "watch_max_wait": "tcp.watch_max_wait",
        "resp_max_keys": "resp.max_keys", "resp_fast_path": "resp.fast_path",
        "feed_max_lag": "feed.max_lag", "resp_coalesce": "resp.coalesce",
        "shutdown_timeout": "shutdown_timeout", "admin_token": "auth.admin_token",
        "data_dir": "data_dir",
    }

    @classmethod
    def from_config(cls, cfg=None, **overrides) -> "TcpSettings":
        values = {}
        for name, key in cls._KEYS.items():
            value = _lookup(cfg, key)
            if value is not _MISSING and value is not None:
                values[name] = value
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown TCP setting(s): {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        s = cls(**values)
        return replace(
            s, max_frame=_config.parse_size(s.max_frame),
            max_object=_config.parse_size(s.max_object),
            idle_timeout=_config.parse_duration(s.idle_timeout),
            busy_poll=_config.parse_duration(s.busy_poll),
            slice=_config.parse_duration(s.slice), round_yield=bool(s.round_yield),
            shutdown_timeout=_config.parse_duration(s.shutdown_timeout),
            workers=int(s.workers) or (os.cpu_count() or 1),
            max_connections=int(s.max_connections), max_inflight=int(s.max_inflight),
            nice=None if s.nice is None else int(s.nice),
            auth_timeout=_config.parse_duration(s.auth_timeout),
            max_connections_per_address=int(s.max_connections_per_address),
            auth_max_failures=int(s.auth_max_failures),
            auth_failure_window=_config.parse_duration(s.auth_failure_window),
            auth_lockout=_config.parse_duration(s.auth_lockout),
            auth_lockout_max=_config.parse_duration(s.auth_lockout_max),
            auth_log_interval=_config.parse_duration(s.auth_log_interval),
            auth_sources=int(s.auth_sources), resp_enabled=bool(s.resp_enabled),
            resp_max_keys=int(s.resp_max_keys), resp_fast_path=bool(s.resp_fast_path),
            feed_max_lag=_config.parse_size(s.feed_max_lag),
            resp_coalesce=_config.parse_duration(s.resp_coalesce))

    @property
    def address(self) -> tuple[str, int]:
        return _config.parse_bind(self.bind)

    @property
    def resp_address(self) -> tuple[str, int] | None:
        """Where the RESP listener binds; None when resp.enabled is off."""
        return _config.parse_bind(self.resp_bind) if self.resp_enabled else None

    def find_admin_token(self) -> str | None:
        """The admin token (bukt.tokens.admin_token; the service generates the file at
        first start), or None: no admin session over TCP."""
        return _tokens.admin_token(self.admin_token, self.data_dir)[0]
