"""A pure-Python reference model of the Store and Bucket API (docs/api.md).

This is the oracle for the property tests (tests/unit/test_props.py): they run the same
random operations on this model and on the shared-memory table and demand the same
answers. It is written to be obviously right, not fast: one dict per bucket, no
locks, no segment. It does not model eviction or memory (the property tests use a
segment big enough that nothing is evicted), nor the writer, the ring or the log.

Choices where docs/api.md is silent (each one is listed in the property test too):
  - time is injected: `Model(now_ms=callable)` or `set_time(ms)`; an entry with
    expiry `expire_ms` is gone when `now_ms >= expire_ms`; a TTL of t seconds expires
    `int(round(t * 1000))` ms after now;
  - versions come from one counter for the whole store, so a version is never reused;
    expire() and persist() change the TTL but not the version;
  - arguments are validated before any condition (nx, xx, if_version) is looked at;
  - "ASCII decimal" is `-?[0-9]+` in the signed 64-bit range, for `int` values and
    for incr alike;
  - mget() consumes single-read keys as get() does; incr() keeps the single-read flag
    and the TTL; delete() of a key named twice counts it once;
  - flush() and stats()["keys"] count live (unexpired) keys only.
"""

import hmac
import math
import re
import time
from dataclasses import dataclass, field

from bukt.errors import (BucketExists, BucketNotFound, InvalidArgument, KeyTooLarge,
                         LimitExceeded, ObjectTooLarge, SchemaError, ValueTooLarge,
                         VersionMismatch)

MAX_KEY = 250
MAX_VALUE = 1 << 20
OBJECT_KEY = 26                # the max_key objects need (a chunk's key)
MAX_OBJECT = 64 << 20         # limits.max_object: set and mset store larger values as objects
MAX_BUCKETS = 64
MAX_TOKENS = 16                 # per bucket; docs/api.md does not say how many
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
SCHEMAS = ("bytes", "int", "str")
EVICTIONS = ("lru", "none")
_BUCKET_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DECIMAL = re.compile(rb"-?[0-9]+")


def _real_clock():
    return time.time_ns() // 1_000_000


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _decimal(raw):
    """The int that `raw` spells in ASCII decimal within int64, else SchemaError."""
    if (not _DECIMAL.fullmatch(raw) or len(raw.lstrip(b"-").lstrip(b"0")) > 19
            or not INT64_MIN <= int(raw) <= INT64_MAX):
        raise SchemaError(f"{bytes(raw[:40])!r} is not a signed 64-bit ASCII decimal")
    return int(raw)


@dataclass(slots=True)
class _Entry:
    value: bytes
    expire_ms: int              # absolute, in ms; 0 = none
    single_read: bool
    version: int


@dataclass
class _BucketState:
    name: str
    schema: str
    eviction: str
    persist: bool
    default_ttl: float | None
    max_memory: int | None = None                   # shown, not enforced (no memory here)
    entries: dict = field(default_factory=dict)     # key -> _Entry, expired ones too
    tokens: dict = field(default_factory=dict)      # id -> (token_hash, perms)
    next_token: int = 1
    counters: dict = field(default_factory=lambda: dict.fromkeys(
        ("reads", "writes", "hits", "misses", "evictions", "expirations"), 0))


class Model:
    """The Store: buckets by name, an injected clock, a version counter, the limits."""

    def __init__(self, now_ms=None, *, max_key=MAX_KEY, max_value=MAX_VALUE,
                 max_buckets=MAX_BUCKETS, max_tokens=MAX_TOKENS, max_object=MAX_OBJECT):
        self._clock = now_ms or _real_clock
        self.max_key, self.max_value = max_key, max_value
        self.max_object = max_object
        self.max_buckets, self.max_tokens = max_buckets, max_tokens
        self.max_transaction_keys = 1024
        self._buckets = {}
        self._version = 0

    # -- clock and versions
    def set_time(self, ms):
        self._clock = _real_clock if ms is None else (lambda: ms)

    def now(self):
        return self._clock()

    def _next_version(self):
        self._version += 1
        return self._version

    # -- argument checks shared by every bucket
    def _key(self, key):
        if isinstance(key, str):
            key = key.encode()
        elif isinstance(key, (bytearray, memoryview)):
            key = bytes(key)
        elif not isinstance(key, bytes):
            raise TypeError(f"a key is bytes or str, not {type(key).__name__}")
        if not key:
            raise InvalidArgument("empty key")
        if len(key) > self.max_key:
            raise KeyTooLarge(f"key of {len(key)} bytes is over max_key={self.max_key}")
        return key

    def _expiry(self, ttl):
        """Absolute expiry in ms of a TTL in seconds (None -> 0, no expiry)."""
        if ttl is None:
            return 0
        if not _is_number(ttl) or not math.isfinite(ttl) or ttl <= 0:
            raise InvalidArgument(f"ttl must be a number of seconds above zero, not {ttl!r}")
        return self.now() + int(round(ttl * 1000))

    def _state(self, name):
        try:
            return self._buckets[name]
        except KeyError:
            raise BucketNotFound(f"no bucket {name!r}") from None

    # -- buckets
    def create_bucket(self, name, schema="bytes", eviction="lru", persist=True,
                      default_ttl=None, max_memory=None):
        bad_ttl = default_ttl is not None and (not _is_number(default_ttl) or
                                               not 0 < default_ttl < math.inf)
        for wrong, what in [
                (not isinstance(name, str) or not _BUCKET_NAME.fullmatch(name),
                 f"bucket name {name!r} is not 1-64 of [A-Za-z0-9._-]"),
                (schema not in SCHEMAS, f"schema {schema!r} is not one of {SCHEMAS}"),
                (eviction not in EVICTIONS, f"eviction {eviction!r} not in {EVICTIONS}"),
                (not isinstance(persist, bool), f"persist {persist!r} is not a bool"),
                (bad_ttl, f"default_ttl {default_ttl!r} is not None or above zero")]:
            if wrong:
                raise SchemaError(what)
        if name in self._buckets:
            raise BucketExists(f"bucket {name!r} exists")
        if len(self._buckets) >= self.max_buckets:
            raise LimitExceeded(f"max_buckets={self.max_buckets} reached")
        self._buckets[name] = _BucketState(name, schema, eviction, persist, default_ttl,
                                           max_memory or None)
        return Bucket(self, name)

    def drop_bucket(self, name):
        self._state(name)
        del self._buckets[name]

    def buckets(self):
        return list(self._buckets)

    def bucket(self, name):
        self._state(name)
        return Bucket(self, name)

    def bucket_info(self, name):
        b = self._state(name)
        return dict(name=b.name, schema=b.schema, eviction=b.eviction, persist=b.persist,
                    default_ttl=b.default_ttl, max_memory=b.max_memory,
                    compression="none", compression_threshold=None,
                    compression_min_saving=None)    # (the model never compresses)

    def stats(self):
        per = [self.bucket(name).stats() for name in self._buckets]
        # as the table counts it: entries holding an expiry, expired ones that nothing
        # has removed yet included (so the two agree after expire_some has run)
        with_ttl = sum(1 for b in self._buckets.values() for e in b.entries.values()
                       if e.expire_ms > 0)
        return dict(buckets=len(per), keys=sum(s["keys"] for s in per),
                    bytes=sum(s["bytes"] for s in per), keys_with_ttl=with_ttl)

    def check(self):
        return []

    def expire_some(self, now=None, budget=0.001):
        """Removes every expired entry (the model has no time budget)."""
        now = self.now() if now is None else now
        removed = 0
        for b in self._buckets.values():
            for key in [k for k, e in b.entries.items() if 0 < e.expire_ms <= now]:
                del b.entries[key]
                b.counters["expirations"] += 1
                removed += 1
        return removed

    def close(self):
        pass

    def unlink(self):
        pass

    # -- tokens
    def add_token(self, bucket, token_hash, perms):
        b = self._state(bucket)
        if not isinstance(token_hash, bytes) or len(token_hash) != 32:
            raise InvalidArgument("token_hash must be a 32-byte SHA-256 digest")
        if not _is_int(perms) or not 0 < perms < 8:
            raise InvalidArgument(f"perms must be a mask of READ|WRITE|ADMIN, not {perms!r}")
        if self.find_token(token_hash) is not None:
            raise InvalidArgument("this token is registered already")
        if len(b.tokens) >= self.max_tokens:
            raise LimitExceeded(f"bucket {bucket!r} has max_tokens={self.max_tokens}")
        token_id, b.next_token = b.next_token, b.next_token + 1
        b.tokens[token_id] = (token_hash, perms)
        return token_id

    def tokens(self, bucket):
        return [(i, perms) for i, (_, perms) in sorted(self._state(bucket).tokens.items())]

    def revoke_token(self, bucket, token_id):
        return self._state(bucket).tokens.pop(token_id, None) is not None

    def find_token(self, token_hash):
        found = None
        for b in self._buckets.values():
            for token_id, (h, perms) in b.tokens.items():
                if hmac.compare_digest(h, token_hash) and found is None:
                    found = (b.name, token_id, perms)
        return found


class Bucket:
    """One bucket of a Model, by name; every call fails with BucketNotFound once the
    bucket is dropped."""

    def __init__(self, model, name):
        self._m, self.name = model, name
        self._b = model._buckets[name]

    def _bucket(self):
        if self._m._buckets.get(self.name) is not self._b:
            raise BucketNotFound(f"no bucket {self.name!r}")
        return self._b

    def _encode(self, value, objects=False, late=False):
        schema, raw = self._b.schema, value
        if isinstance(raw, str):
            try:
                raw = raw.encode()
            except UnicodeEncodeError:
                raise SchemaError("value is not encodable as UTF-8") from None
        elif isinstance(raw, (bytearray, memoryview)):
            raw = bytes(raw)
        elif schema == "int" and _is_int(raw):
            raw = str(raw).encode()
        elif not isinstance(raw, bytes):
            raise SchemaError(f"a {schema} bucket does not take {type(value).__name__}")
        if schema == "int":
            raw = str(_decimal(raw)).encode()
        elif schema == "str":
            try:
                raw.decode()
            except UnicodeDecodeError:
                raise SchemaError("value is not UTF-8") from None
        if len(raw) > self._m.max_value:
            # set and mset store a larger value as an object (bukt/objects), up to
            # limits.max_object; a transaction's set does not
            if not objects:
                raise ValueTooLarge(f"value of {len(raw)} bytes is over "
                                    f"max_value={self._m.max_value}")
            if not late:
                self._object_size(raw)
        return raw

    def _object_size(self, raw):
        """What the objects layer says of a value above max_value: only a bytes
        bucket's becomes an object, and only one within limits.max_object."""
        if len(raw) <= self._m.max_value:
            return
        if self._m.max_key < OBJECT_KEY or self._b.schema != "bytes":
            raise ValueTooLarge(f"value of {len(raw)} bytes is over "
                                f"max_value={self._m.max_value}")
        if len(raw) > self._m.max_object:
            raise ObjectTooLarge(f"object of {len(raw)} bytes is over "
                                 f"limits.max_object={self._m.max_object}")

    def _decode(self, raw):
        return {"bytes": bytes, "str": bytes.decode, "int": int}[self._b.schema](raw)

    def _ttl_or_default(self, ttl):
        return self._m._expiry(self._b.default_ttl if ttl is None else ttl)

    def _find(self, key):
        """The live entry of `key`, or None; an expired entry found is removed."""
        b, e = self._b, self._b.entries.get(key)
        if e is not None and 0 < e.expire_ms <= self._m.now():
            del b.entries[key]
            b.counters["expirations"] += 1
            return None
        return e

    def _put(self, key, raw, expire_ms, single_read):
        version = self._m._next_version()
        self._b.entries[key] = _Entry(raw, expire_ms, single_read, version)
        self._b.counters["writes"] += 1
        return version

    def _read(self, key):
        e, c = self._find(key), self._b.counters
        c["reads"] += 1
        c["hits" if e else "misses"] += 1
        if e is None:
            return None
        if e.single_read:
            del self._b.entries[key]
        return e

    # -- reads
    def get(self, key, default=None):
        self._bucket()
        e = self._read(self._m._key(key))
        return default if e is None else self._decode(e.value)

    def get_entry(self, key, consume=True):
        self._bucket()
        key = self._m._key(key)
        if consume:
            e = self._read(key)
        else:
            e, c = self._find(key), self._b.counters
            c["reads"] += 1
            c["hits" if e else "misses"] += 1
        if e is None:
            return None
        ttl = None if not e.expire_ms else (e.expire_ms - self._m.now()) / 1000
        return self._decode(e.value), e.version, ttl

    def mget(self, keys):
        self._bucket()
        keys = [self._m._key(k) for k in keys]
        return [None if e is None else self._decode(e.value) for e in map(self._read, keys)]

    def exists(self, *keys):
        self._bucket()
        return sum(self._find(k) is not None for k in [self._m._key(k) for k in keys])

    def ttl(self, key):
        self._bucket()
        e = self._find(self._m._key(key))
        return None if e is None or not e.expire_ms else (e.expire_ms - self._m.now()) / 1000

    def version(self, key):
        self._bucket()
        e = self._find(self._m._key(key))
        return None if e is None else e.version

    def scan(self, prefix=b"", cursor=0, count=100):
        """Keys in byte order; the cursor is the last key returned, as an int."""
        self._bucket()
        prefix = prefix.encode() if isinstance(prefix, str) else bytes(prefix)
        if not _is_int(cursor) or cursor < 0 or not _is_int(count) or count < 1:
            raise InvalidArgument(f"bad cursor {cursor!r} or count {count!r}")
        after = b""
        if cursor:
            raw = cursor.to_bytes((cursor.bit_length() + 7) // 8, "big")
            if raw[0] != 1:
                raise InvalidArgument(f"bad cursor {cursor}")
            after = raw[1:]
        keys = sorted(k for k in list(self._b.entries)
                      if k.startswith(prefix) and k > after and self._find(k) is not None)
        page = keys[:count]
        return (int.from_bytes(b"\x01" + page[-1], "big") if len(keys) > count else 0), page

    def stats(self):
        self._bucket()
        now = self._m.now()
        live = [(k, e) for k, e in self._b.entries.items()
                if not 0 < e.expire_ms <= now]
        return dict(self._b.counters, keys=len(live),
                    bytes=sum(len(k) + len(e.value) for k, e in live))

    # -- writes
    def set(self, key, value, ttl=None, nx=False, xx=False, single_read=False,
            if_version=None):
        self._bucket()
        key, raw = self._m._key(key), self._encode(value, True, late=True)
        expire_ms = self._ttl_or_default(ttl)
        self._object_size(raw)          # the store checks it after the TTL
        if nx and xx:
            raise InvalidArgument("nx and xx exclude each other")
        if if_version is not None and (not _is_int(if_version) or if_version < 0):
            raise InvalidArgument(f"if_version must be an int >= 0, not {if_version!r}")
        e = self._find(key)
        if if_version is not None and (e.version if e else 0) != if_version:
            raise VersionMismatch(f"version is {e.version if e else 0}, not {if_version}")
        if (nx and e is not None) or (xx and e is None):
            return None
        return self._put(key, raw, expire_ms, bool(single_read))

    def mset(self, mapping, ttl=None):
        self._bucket()
        items = [(self._m._key(k), self._encode(v, True)) for k, v in mapping.items()]
        expire_ms = self._ttl_or_default(ttl)
        return [self._put(key, raw, expire_ms, False) for key, raw in items]

    def delete(self, *keys, if_version=None):
        self._bucket()
        removed = 0
        if if_version is not None:
            if not _is_int(if_version) or if_version < 0:
                raise InvalidArgument(f"if_version must be an int >= 0, not {if_version!r}")
            if len(keys) != 1:
                raise InvalidArgument(f"delete with if_version takes one key, not {len(keys)}")
        keys = [self._m._key(k) for k in keys]
        if if_version is not None:
            e = self._find(keys[0])
            if (e.version if e else 0) != if_version:
                raise VersionMismatch(f"version is {e.version if e else 0}, not {if_version}")
        for key in keys:
            if self._find(key) is not None:
                del self._b.entries[key]
                self._b.counters["writes"] += 1
                removed += 1
        return removed

    def getdel(self, key):
        self._bucket()
        key = self._m._key(key)
        e = self._read(key)
        if e is None:
            return None
        self._b.entries.pop(key, None)
        return self._decode(e.value)

    def incr(self, key, by=1, initial=0, ttl=None):
        self._bucket()
        key = self._m._key(key)
        if not _is_int(by) or not _is_int(initial):
            raise TypeError("by and initial must be ints")
        expire_ms = self._ttl_or_default(ttl)
        e = self._find(key)
        if e is None:
            value, single_read = initial + by, False
        else:
            value, expire_ms, single_read = _decimal(e.value) + by, e.expire_ms, e.single_read
        if not INT64_MIN <= value <= INT64_MAX:
            raise SchemaError(f"incr to {value} leaves the signed 64-bit range")
        self._put(key, str(value).encode(), expire_ms, single_read)
        return value

    def expire(self, key, ttl):
        self._bucket()
        if ttl is None:
            raise InvalidArgument("expire needs a ttl; persist() removes one")
        key, expire_ms = self._m._key(key), self._m._expiry(ttl)
        e = self._find(key)
        if e is not None:
            e.expire_ms = expire_ms
            self._b.counters["writes"] += 1
        return e is not None

    def persist(self, key):
        self._bucket()
        e = self._find(self._m._key(key))
        if e is not None:
            e.expire_ms = 0
            self._b.counters["writes"] += 1
        return e is not None

    # -- transactions: the model is single-threaded, so applying the operations one
    # after another is atomic; what is modelled is the checking and the results
    _TXN = {
        "get": lambda key: ("get", key, {}),
        "exists": lambda key: ("exists", key, {}),
        "version": lambda key: ("version", key, {}),
        "ttl": lambda key: ("ttl", key, {}),
        "set": lambda key, value, ttl=None, nx=False, xx=False, single_read=False,
        keepttl=False, get=False: ("set", key, dict(
            value=value, ttl=ttl, nx=nx, xx=xx, single_read=single_read,
            keepttl=keepttl, get=get)),
        "getset": lambda key, value, ttl=None: ("set", key, dict(
            value=value, ttl=ttl, nx=False, xx=False, single_read=False, keepttl=False,
            get=True)),
        "getdel": lambda key: ("getdel", key, {}),
        "delete": lambda key: ("delete", key, {}),
        "incr": lambda key, by=1, initial=0, ttl=None: ("incr", key, dict(
            by=by, initial=initial, ttl=ttl)),
        "expire": lambda key, ttl: ("expire", key, dict(ttl=ttl)),
        "persist": lambda key: ("persist", key, {}),
    }

    def atomic(self, ops, watched=None):
        """docs/api.md, Transactions: every argument checked first (nothing applied
        on a bad one), None when a watched key is not at its version (0: absent),
        else each operation's result, a SchemaError instance where the data failed
        it (the others apply)."""
        self._bucket()
        plan, keys = [], set()
        for i, op in enumerate(ops):
            try:
                name, args, kw = op if len(op) == 3 else (*op, {})
                code, key, opts = self._TXN[name](*args, **kw)
            except (TypeError, ValueError, KeyError):
                raise InvalidArgument(f"transaction op {i}: {op!r}") from None
            key = self._m._key(key)
            if code == "set":
                if opts["nx"] and opts["xx"]:
                    raise InvalidArgument("nx and xx exclude each other")
                opts["raw"] = self._encode(opts["value"])
            if code == "incr" and not (_is_int(opts["by"]) and _is_int(opts["initial"])):
                raise InvalidArgument("by and initial must be ints")
            if opts.get("ttl") is not None or code == "expire":
                self._m._expiry(opts["ttl"])        # checked (raises when bad)
            plan.append((code, key, opts))
            keys.add(key)
        want = {}
        for k, v in (watched or {}).items():
            if not _is_int(v) or v < 0:
                raise InvalidArgument(f"watched version {v!r}")
            want[self._m._key(k)] = v
        if len(keys | set(want)) > self._m.max_transaction_keys:
            raise LimitExceeded(f"a transaction of more than "
                                f"{self._m.max_transaction_keys} keys")
        for k, v in want.items():
            e = self._find(k)
            if (e.version if e else 0) != v:
                return None
        results = []
        for code, key, opts in plan:
            try:
                results.append(self._txn_do(code, key, opts))
            except SchemaError as exc:
                results.append(exc)
        return results

    def _txn_do(self, code, key, opts):
        if code == "get":
            e = self._read(key)
            return None if e is None else self._decode(e.value)
        if code == "exists":
            return self._find(key) is not None
        if code in ("version", "ttl", "getdel", "expire", "persist"):
            return getattr(self, code)(key, **opts)
        if code == "delete":
            return self.delete(key)
        if code == "incr":
            return self.incr(key, **opts)
        e = self._find(key)                             # set
        old = self._decode(e.value) if opts["get"] and e is not None else None
        if (opts["nx"] and e is not None) or (opts["xx"] and e is None):
            return old if opts["get"] else None
        if opts["keepttl"] and e is not None:
            expire_ms = e.expire_ms
        else:
            expire_ms = self._ttl_or_default(opts["ttl"])
        v = self._put(key, opts["raw"], expire_ms, bool(opts["single_read"]))
        return old if opts["get"] else v

    def mget_consistent(self, keys):
        return self.mget(keys)

    def flush(self):
        self._bucket()
        live = sum(self._find(k) is not None for k in list(self._b.entries))
        self._b.entries.clear()
        return live
