"""Bukt's configuration: one table of keys, loaded from YAML and BUKT_* variables.

Every key lives in SCHEMA below with its built-in default and the rule its values obey.
`conf/bukt.yaml` documents the same keys with the same defaults (a test compares them),
so Bukt runs with no file at all. Three layers, later ones winning:

1. the built-in defaults (SCHEMA);
2. the YAML file, if one is given (`load(path)`, or the path in `BUKT_CONFIG`);
3. environment variables: `BUKT_` + the key's path in upper case, with `__` between
   levels, because key names themselves contain `_`:
       fsync          -> BUKT_FSYNC=always
       tcp.bind       -> BUKT_TCP__BIND=0.0.0.0:7071
       limits.max_key -> BUKT_LIMITS__MAX_KEY=512
   A variable's text is read as the key's type would read it ("64MiB", "true", "3").
   An empty value sets a nullable key (auth.admin_token) to null. BUKT_ADMIN_TOKEN is
   accepted as a short name for BUKT_AUTH__ADMIN_TOKEN (ENV_ALIASES).

Anything unknown is refused, never ignored: a misspelt key in the file or a misspelt
BUKT_ variable is a ConfigError, because a silently ignored `fysnc: always` is a
durability promise nobody keeps. The only BUKT_ variables that are not keys are listed
in ENV_NOT_KEYS. Every ConfigError names where the value came from (file or variable),
the key, the value and what is allowed.

Sizes are bytes, written as an int or "4096", "64KiB", "256MiB", "1GiB" (binary units
only: "64MB" is refused rather than guessed at). Durations are seconds (int or float) or
"250ms", "30s", "5m", "1h". Keys ending in `_ms` are integer milliseconds.
"""
import math
import os
import re
from typing import Any, Callable, Mapping

from bukt.errors import BuktError

__all__ = ["Config", "ConfigError", "load", "defaults", "parse_size", "parse_duration",
           "parse_bind", "SCHEMA", "ENV_PREFIX", "ENV_NOT_KEYS", "ENV_ALIASES"]

ENV_PREFIX = "BUKT_"
# BUKT_ variables with other jobs; every other BUKT_ variable must name a key.
ENV_NOT_KEYS = frozenset({"BUKT_CONFIG", "BUKT_DEBUG", "BUKT_FAKE_TIME_FILE",
                          "BUKT_WRITER_POLL_S"})
# Short names kept for convenience; the canonical name wins when both are set.
ENV_ALIASES = {"BUKT_ADMIN_TOKEN": "auth.admin_token"}


class ConfigError(BuktError, ValueError):
    """The configuration is invalid: an unknown key, or a value its key does not allow."""

    code = "config_error"


class _Invalid(Exception):
    """Raised by a parser: carries what the key allows; the loader adds where and which."""


# -- value parsers ---------------------------------------------------------------------

_SIZE_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


SIZE_FORMS = "a number of bytes, or a number with B, KiB, MiB, GiB or TiB (e.g. 64MiB)"


def parse_size(value) -> int:
    """Bytes from an int or a string such as "4096", "64KiB", "256MiB", "1.5GiB".

    Binary (1024-based) units only; "64MB" and "1G" are refused with ValueError, since
    Redis reads "1k" as 1000 and "1kb" as 1024 and nobody remembers which is which.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value!r} is not a size: negative")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        unit = m and _SIZE_UNITS.get(m.group(2).lower())
        if m and unit:
            n = float(m.group(1)) * unit if "." in m.group(1) else int(m.group(1)) * unit
            if n == int(n):
                return int(n)
    raise ValueError(f"{value!r} is not a size: {SIZE_FORMS}")


_DURATION_UNITS = {"us": 1e-6, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h)?\s*$")


def parse_duration(value) -> float:
    """Seconds from a number or a string such as "50us", "250ms", "30s", "5m", "1h", "1.5"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value >= 0 and math.isfinite(value):
            return float(value)
    elif isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]
    raise ValueError(f"{value!r} is not a duration: seconds as a number, or a number "
                     "with us, ms, s, m or h (e.g. 30s)")


def parse_bind(value: str) -> tuple[str, int]:
    """("127.0.0.1", 7070) from "127.0.0.1:7070"; "[::1]:7070" for IPv6; port 0 = any."""
    m = re.match(r"^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.\-]+)):(\d{1,5})$", value or "")
    if not m or int(m.group(3)) > 65535:
        raise ValueError(f"{value!r} is not an address: HOST:PORT, e.g. 127.0.0.1:7070 "
                         "or [::1]:7070")
    return (m.group(1) or m.group(2), int(m.group(3)))


# Each parser takes the raw value (from YAML, or a string from the environment) and
# returns the canonical one, or raises _Invalid(what is allowed).

def _size(lo=0, hi=None):
    def parse(v):
        try:
            n = parse_size(v)
        except ValueError:
            raise _Invalid(SIZE_FORMS) from None
        if n < lo or (hi is not None and n > hi):
            raise _Invalid(f"a size from {lo} to {hi if hi is not None else 'any'} bytes")
        return n
    return parse


def _int(lo, hi=None):
    def parse(v):
        if isinstance(v, str) and re.fullmatch(r"\s*-?\d+\s*", v):
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            raise _Invalid(f"an integer from {lo} to {hi if hi is not None else 'any'}")
        return v
    return parse


def _float(lo, hi=None):
    def parse(v):
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v < lo or (hi is not None and v > hi):
            raise _Invalid(f"a number from {lo} to {hi if hi is not None else 'any'}")
        return float(v)
    return parse


def _duration(lo=0.0, hi=None):
    def parse(v):
        try:
            d = parse_duration(v)
        except ValueError as e:
            raise _Invalid("a duration: " + str(e).split(": ", 1)[-1]) from None
        if d < lo:
            raise _Invalid(f"a duration of at least {lo} s")
        if hi is not None and d > hi:
            raise _Invalid(f"a duration of at most {hi:g} s")
        return d
    return parse


def _slice(v):
    # tcp.slice: 0 (the kernel's own), or what the kernel takes, 100 us to 100 ms.
    d = _duration()(v)
    if d and not 100_000 <= round(d * 1e9) <= 100_000_000:   # in ns, as the kernel
        raise _Invalid("0, or a duration from 100us to 100ms")
    return d


def _bool(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return v.strip().lower() in ("true", "yes", "on", "1")
    raise _Invalid("true or false")


def _choice(*allowed):
    def parse(v):
        if v not in allowed:
            raise _Invalid("one of " + ", ".join(map(str, allowed)))
        return v
    return parse


def _feed_cache_only(v):
    # feed.cache_only: "watched", "always" or "never"; true and false (what it took
    # before it had the lease) mean "always" and "never"
    if isinstance(v, bool) or (isinstance(v, str) and v.strip().lower() in
                               ("true", "yes", "on", "false", "no", "off")):
        return "always" if _bool(v) else "never"
    return _choice("watched", "always", "never")(v)


def _text(pattern, what):
    def parse(v):
        if not isinstance(v, str) or not re.fullmatch(pattern, v):
            raise _Invalid(what)
        return v
    return parse


def _nullable(parse):
    def p(v):
        return None if v is None or v == "" else parse(v)
    return p


def _mode(v):
    # YAML 1.1 reads 0600 as the octal int 384; from the environment it is "0600".
    if isinstance(v, str) and re.fullmatch(r"0o?[0-7]{1,4}", v.strip()):
        v = int(v.strip().replace("o", ""), 8)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0o777 or v & 0o100:
        raise _Invalid("permission bits such as 0600 or 0660 (octal; no execute bit)")
    return v


def _bind(v):
    try:
        parse_bind(v if isinstance(v, str) else "")
    except ValueError:
        raise _Invalid("HOST:PORT, e.g. 127.0.0.1:7070 or [::1]:7070") from None
    return v


def _path(v):
    if not isinstance(v, str) or not v or "\0" in v:
        raise _Invalid("a directory path")
    return v


# -- the schema ------------------------------------------------------------------------
# key path -> (default, parser). Defaults are written as conf/bukt.yaml writes them; the
# parser turns both into the canonical value. Order is the order of conf/bukt.yaml.

SCHEMA: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "instance": ("default", _text(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}",
                                  "a name of 1-64 letters, digits, '_', '.', '-'")),
    "memory": ("256MiB", _size(lo=1 << 20, hi=1 << 40)),
    "data_dir": ("./var", _path),
    "fsync": ("everysec", _choice("always", "everysec", "no")),
    "fsync_lag_limit": (2, _duration(lo=1.0, hi=3600.0)),
    "log_prepare": ("4MiB", _size(hi=1 << 30)),
    "gather_spin": ("50us", _duration(hi=0.01)),
    "segment.mode": (0o600, _mode),
    "limits.max_key": (250, _int(1, 65535)),
    "limits.max_value": ("1MiB", _size(lo=1, hi=(1 << 32) - 1)),
    "limits.max_buckets": (64, _int(1, 65535)),
    "limits.ring_size": ("16MiB", _size(lo=64 << 10)),
    "limits.ring_wait_ms": (1000, _int(0, 3_600_000)),
    "limits.max_transaction_keys": (1024, _int(1, 1 << 20)),
    "limits.max_object": ("64MiB", _size(lo=1, hi=1 << 40)),
    "limits.object_readers": (1024, _int(1, 1 << 20)),
    "objects.sweep_interval": ("10s", _duration(lo=0.1, hi=3600)),
    "objects.upload_timeout": ("1h", _duration(lo=1, hi=7 * 86400)),
    "feed.size": ("16MiB", _size(lo=64 << 10, hi=1 << 36)),
    "feed.max_value": ("1KiB", _size(hi=1 << 20)),
    "feed.cache_only": ("watched", _feed_cache_only),
    "feed.lease": ("10s", _duration(lo=2, hi=3600)),
    "feed.heartbeat": (15, _duration(lo=0.1, hi=3600)),
    "feed.max_lag": ("4MiB", _size(lo=4096, hi=1 << 36)),
    "feed.coalesce": ("5ms", _duration(lo=0, hi=1)),
    "replica.of": (None, _nullable(_text(r"bukt://[^@/\s]*@[A-Za-z0-9.\-\[\]:]+:\d{1,5}",
                                          "bukt://:TOKEN@HOST:PORT (the primary's HTTP "
                                          "address and a token that may replicate)"))),
    "replica.retry": ("1s", _duration(lo=0.01, hi=60)),
    "replica.chunk": ("4MiB", _size(lo=64 << 10, hi=1 << 30)),
    "replication.min_acks": (0, _int(0, 16)),
    "compaction.min_log_bytes": ("64MiB", _size()),
    "compaction.ratio": (2.0, _float(1.1, 1000.0)),
    "expiry.hz": (10, _int(1, 500)),
    "expiry.budget_ms": (25, _int(1, 1000)),
    "recovery.on_corrupt": ("refuse", _choice("refuse", "load_good")),
    "recovery.evict": (False, _bool),
    "repair.interval": ("1s", _duration(lo=0.1, hi=60)),
    "tcp.bind": ("127.0.0.1:7071", _bind),
    "tcp.workers": (0, _int(0, 1024)),
    "tcp.max_frame": ("4MiB", _size(lo=4096, hi=(1 << 32) - 1)),
    "tcp.max_connections": (1024, _int(1, 1_000_000)),
    "tcp.max_inflight": (128, _int(1, 1_000_000)),
    "tcp.idle_timeout": (300, _duration()),
    "tcp.watch_max_wait": ("30s", _duration(lo=0, hi=3600)),
    "tcp.busy_poll": ("30us", _duration(hi=0.01)),
    "tcp.nice": (None, _nullable(_int(-20, 19))),
    "tcp.slice": ("300us", _slice),
    "tcp.round_yield": (True, _bool),
    "tcp.auth_timeout": (5, _duration()),
    "tcp.max_connections_per_address": (512, _int(0, 1_000_000)),
    "resp.enabled": (True, _bool),
    "resp.bind": ("127.0.0.1:7072", _bind),
    "resp.max_keys": (100_000, _int(1, 100_000_000)),
    "resp.fast_path": (True, _bool),
    "resp.coalesce": ("2ms", _duration(lo=0, hi=1)),
    "http.bind": ("127.0.0.1:7070", _bind),
    "http.workers": (0, _int(0, 1024)),
    "http.max_body": ("4MiB", _size(lo=1024)),
    "http.timeout": (30, _duration(lo=1)),
    "http.max_request_line": ("8KiB", _size(lo=256, hi=1 << 20)),
    "http.max_header_fields": (100, _int(8, 10_000)),
    "http.max_header_size": ("8KiB", _size(lo=256, hi=1 << 20)),
    "http.max_headers_size": ("32KiB", _size(lo=1024, hi=16 << 20)),
    "http.max_worker_restarts": (5, _int(1, 15)),
    "http.keepalive": (5, _duration()),
    "http.access_log": ("-", _nullable(_text(r"[^\0]+", "-, a file path, or null"))),
    "s3.bind": (None, _nullable(_bind)),
    "s3.region": ("us-east-1", _text(r"[a-z0-9-]{1,32}", "a region name such as us-east-1")),
    "s3.max_skew": ("15m", _duration(lo=1, hi=7 * 24 * 3600)),
    "auth.admin_token": (None, _nullable(_text(r"[\x21-\x7e]{16,256}",
                                               "null, or 16-256 printable characters"))),
    "auth.max_failures": (10, _int(0, 1_000_000)),
    "auth.failure_window": (60, _duration(lo=1)),
    "auth.lockout": (10, _duration(lo=1)),
    "auth.lockout_max": (900, _duration(lo=1)),
    "auth.log_interval": (60, _duration()),
    "auth.sources": (4096, _int(16, 1 << 24)),
    "ratelimit.enabled": (False, _bool),
    "ratelimit.rps": (1000, _int(1)),
    "ratelimit.burst": (2000, _int(1)),
    "ratelimit.slots": (4096, _int(16, 1 << 24)),
    "metrics.token": (None, _nullable(_text(r"[\x21-\x7e]{16,256}",
                                            "null, or 16-256 printable characters"))),
    "metrics.public_on_loopback": (False, _bool),
    "log.level": ("info", _choice("debug", "info", "warning", "error")),
    "log.format": ("text", _choice("text", "json")),
    "log.access": (False, _bool),
    "log.access_sample": (1.0, _float(0.0001, 1.0)),
    "shutdown_timeout": (10, _duration(lo=0.1)),
}


def _cross_checks(flat: dict, where: dict) -> None:
    """Rules between keys; `where` says where each key's value came from."""
    def need(ok, key, allowed):
        if not ok:
            raise ConfigError(f"{where.get(key, 'defaults')}: {key}: {flat[key]!r} is not "
                              f"allowed; expected {allowed}")
    mv = flat["limits.max_value"]
    need(flat["tcp.max_frame"] > mv + 1024, "tcp.max_frame",
         f"more than limits.max_value ({mv}) + 1KiB, so a maximal value fits in a frame")
    need(flat["limits.max_object"] >= mv, "limits.max_object",
         f"at least limits.max_value ({mv}): a value one entry holds is never refused")
    need(flat["http.max_body"] >= mv, "http.max_body",
         f"at least limits.max_value ({mv}), so a maximal value fits in a body")
    url = 3 * flat["limits.max_key"] + 128     # a maximal key, percent-encoded, and a path
    need(flat["http.max_request_line"] >= url, "http.max_request_line",
         f"at least 3 x limits.max_key + 128 ({url}), so a maximal key fits in a URL")
    need(flat["http.max_headers_size"] >= flat["http.max_header_size"],
         "http.max_headers_size", f"at least http.max_header_size "
         f"({flat['http.max_header_size']})")
    need(flat["limits.ring_size"] <= flat["memory"] // 2, "limits.ring_size",
         f"at most half of memory ({flat['memory']})")
    need(flat["limits.ring_size"] >= 2 * (mv + 1024), "limits.ring_size",
         f"at least twice limits.max_value + 1KiB ({2 * (mv + 1024)}), so a maximal "
         "change always fits in the ring")
    need(flat["replication.min_acks"] == 0 or flat["fsync"] == "always",
         "replication.min_acks", "0 unless fsync is always (only then does a write wait "
         "for its acknowledgement)")
    need(flat["feed.max_lag"] < flat["feed.size"], "feed.max_lag",
         f"below feed.size ({flat['feed.size']}), so a slow watch is cut off while the "
         "feed still holds its resume point")
    need(flat["feed.max_value"] + flat["limits.max_key"] + 64 <= flat["feed.size"] // 4,
         "feed.max_value", f"at most a quarter of feed.size ({flat['feed.size']}) less "
         "a maximal key, so the feed holds several events of any size")
    need(flat["tcp.watch_max_wait"] < flat["tcp.idle_timeout"] or not flat["tcp.idle_timeout"],
         "tcp.watch_max_wait", f"below tcp.idle_timeout ({flat['tcp.idle_timeout']}), so a "
         "connection waiting in WATCH is not closed as idle")
    need(flat["ratelimit.burst"] >= flat["ratelimit.rps"] or not flat["ratelimit.enabled"],
         "ratelimit.burst", f"at least ratelimit.rps ({flat['ratelimit.rps']})")
    need(flat["auth.lockout_max"] >= flat["auth.lockout"], "auth.lockout_max",
         f"at least auth.lockout ({flat['auth.lockout']})")


# -- the Config object -----------------------------------------------------------------

class Config:
    """Read-only nested view: `cfg.tcp.bind`, `cfg["tcp"]["bind"]`, `cfg.as_dict()`;
    `cfg.source("data_dir")` says where a key's value came from."""

    __slots__ = ("_d", "_where")

    def __init__(self, d: Mapping, where: Mapping | None = None):
        object.__setattr__(self, "_d", {k: Config(v) if isinstance(v, Mapping) else v
                                        for k, v in d.items()})
        object.__setattr__(self, "_where", dict(where or {}))

    def source(self, path: str) -> str | None:
        """Where the value of key `path` came from: the file's path or "environment
        BUKT_..."; None for a built-in default (no configuration names it)."""
        where = self._where.get(path)
        return None if where is None else str(where)

    def __getattr__(self, name):
        try:
            return self._d[name]
        except KeyError:
            raise AttributeError(f"no configuration key {name!r}") from None

    __getitem__ = __getattr__

    def __setattr__(self, name, value):
        raise AttributeError("Config is read-only")

    def __contains__(self, name):
        return name in self._d

    def __iter__(self):
        return iter(self._d)

    def __eq__(self, other):
        return isinstance(other, Config) and self.as_dict() == other.as_dict()

    def __repr__(self):
        return f"Config({self.as_dict()!r})"

    def as_dict(self) -> dict:
        """A nested plain dict (a fresh copy) of every key and its canonical value."""
        return {k: v.as_dict() if isinstance(v, Config) else v for k, v in self._d.items()}

    def get(self, path: str):
        """The value at a dotted path: cfg.get("tcp.bind")."""
        node = self
        for part in path.split("."):
            node = node._d[part]
        return node


def _flatten(d: Mapping, source: str, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        path = f"{prefix}{k}"
        if not isinstance(k, str):
            raise ConfigError(f"{source}: {path!r}: keys are names; allowed keys are "
                              + ", ".join(SCHEMA))
        if v is None and any(k.startswith(path + ".") for k in SCHEMA):
            continue  # an empty section (`tcp:` with nothing under it) keeps its defaults
        if isinstance(v, Mapping):
            if path in SCHEMA:
                raise ConfigError(f"{source}: {path}: {v!r} is not allowed; a single value "
                                  "is expected here, not a mapping")
            out.update(_flatten(v, source, path + "."))
        else:
            out[path] = v
    return out


def _nest(flat: dict) -> dict:
    out: dict = {}
    for path, v in flat.items():
        node = out
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def _unknown(key, source):
    near = [k for k in SCHEMA if k.split(".")[0] == key.split(".")[0]] or list(SCHEMA)
    return ConfigError(f"{source}: unknown key {key!r}; allowed here: " + ", ".join(near))


def _apply(flat_out, where, key, raw, source):
    if key not in SCHEMA:
        if any(k.startswith(key + ".") for k in SCHEMA):
            raise ConfigError(f"{source}: {key}: {raw!r} is not allowed; it is a section "
                              "with keys " + ", ".join(k for k in SCHEMA if k.startswith(key + ".")))
        raise _unknown(key, source)
    try:
        flat_out[key] = SCHEMA[key][1](raw)
    except _Invalid as e:
        raise ConfigError(f"{source}: {key}: {raw!r} is not allowed; expected {e}") from None
    where[key] = source


def defaults() -> Config:
    """The built-in configuration (what conf/bukt.yaml also says)."""
    return load(None, env={})


def _read_file(path):
    """The document in a configuration file. A `.json` file (what `bukt serve` hands
    its children: bukt/service/supervisor.py) is read with the json module, which costs nothing
    next to importing PyYAML (about 10 ms of CPU at every start of a child); any other
    file is YAML, parsed by libyaml when PyYAML was built with it (a commented
    conf/bukt.yaml: about 5 ms instead of 25 with the pure-Python parser)."""
    try:
        with open(path, encoding="utf-8") as f:
            if path.endswith(".json"):
                import json
                try:
                    return json.load(f)
                except ValueError as e:
                    raise ConfigError(f"{path}: not valid JSON: {e}") from None
            import yaml
            try:
                return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            except yaml.YAMLError as e:
                raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the configuration: {e.strerror}") from None


def load(path=None, env: Mapping[str, str] = os.environ) -> Config:
    """The configuration: defaults, then the YAML (or .json) file at `path` (or
    $BUKT_CONFIG when path is None), then BUKT_* variables from `env`. Raises
    ConfigError."""
    flat = {k: parse(dflt) for k, (dflt, parse) in SCHEMA.items()}
    where: dict[str, str] = {}
    if path is None:
        path = env.get("BUKT_CONFIG") or None
    if path is not None:
        doc = _read_file(os.fspath(path))
        if doc is not None and not isinstance(doc, Mapping):
            raise ConfigError(f"{path}: the file must be a mapping of keys (key: value), "
                              f"not {type(doc).__name__}")
        for key, raw in _flatten(doc or {}, path).items():
            _apply(flat, where, key, raw, path)
    for name in sorted(env, key=lambda n: (n not in ENV_ALIASES, n)):
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_KEYS:
            continue
        key = ENV_ALIASES.get(name) or name[len(ENV_PREFIX):].lower().replace("__", ".")
        if key not in SCHEMA:
            raise ConfigError(f"environment: {name} names no configuration key; the "
                              "scheme is BUKT_ + the key in upper case with __ between "
                              "levels (BUKT_TCP__BIND for tcp.bind)")
        _apply(flat, where, key, env[name], f"environment {name}")
    _cross_checks(flat, where)
    if where.get("data_dir") == path and path is not None:
        # a relative data_dir in a file is the file's: the same directory whatever the
        # current one (a default or a variable is taken from the current directory)
        flat["data_dir"] = os.path.normpath(os.path.join(
            os.path.dirname(os.path.abspath(os.fspath(path))), flat["data_dir"]))
    return Config(_nest(flat), where)
