# bucket.pxi: the Bucket API (docs/api.md). Each public method takes the stripe lock
# it needs (never more than one at a time) and calls the do_* helpers of table.pxi.

import re as _re

_INT_TEXT = _re.compile(rb"-?[0-9]{1,19}\Z")
cdef int64_t I64_MAX = 9223372036854775807
cdef int64_t I64_MIN = -9223372036854775807 - 1

SCHEMAS = ("bytes", "int", "str", "json")
SCHEMA_JSON = 3


# -- OBJECTS IN THE CORE: entry flags, hidden keys, value hooks -------------------------
# An entry's flags byte says what its value is beyond plain bytes (segment.h): an
# object's manifest (MANIFEST), an object's internal entry (HIDDEN: a chunk, a head
# record), a compressed value (ZSTD, LZ4). The core stores and moves those bits with
# the entry (the ring, the log, base files, replicas, the slab mover) but does not know
# manifests or codecs (beyond the raw size a frame header states, which the bytes-saved
# gauge reads: table.pxi, frame_saving): the value hooks do (bukt/values.py registers
# them at import):
#   store_large(bucket, key, value, ttl, nx, xx, single_read, if_version) -> version
#       Bucket.set of a value above max_value (the objects layer stores it in chunks);
#   compress(bucket, value) -> (stored bytes, BK_E_ZSTD or BK_E_LZ4) or None
#       Bucket.set of a value of comp_threshold bytes or more in a compressing bucket;
#   decode(bucket, key, value, flags) -> bytes
#       every Python-level read of an entry with a BK_E_DECODE bit, after its locks are
#       released (a manifest's chunks are read under their own stripes' locks).
# Hidden keys start with RESERVED_PREFIX: a user write of such a key is refused, a user
# read of a HIDDEN entry is a miss. The raw API (put_entry, read_entry, delete_entry,
# scan_hidden) is for the objects layer and the codec: no hooks, no schema.
RESERVED_PREFIX = b"\x00bkt\x00"
ENTRY_SINGLE = BK_E_SINGLE
ENTRY_MANIFEST = BK_E_MANIFEST
ENTRY_HIDDEN = BK_E_HIDDEN
ENTRY_ZSTD = BK_E_ZSTD
ENTRY_LZ4 = BK_E_LZ4
ENTRY_FLAGS = BK_E_CARRY            # every flag an entry may carry (put_entry's flags)
COMPRESSIONS = ("none", "zstd", "lz4")      # a bucket's compression byte, by value

cdef object _hooks = None           # the registered value hooks (set_value_hooks)


def set_value_hooks(hooks):
    """Register the value hooks (one object with store_large, compress and decode), or
    None to remove them. Returns the previous ones."""
    global _hooks
    if hooks is not None:
        for name in ("store_large", "compress", "decode"):
            if not callable(getattr(hooks, name, None)):
                raise TypeError(f"value hooks need a callable {name}()")
    prev = _hooks
    _hooks = hooks
    return prev


def value_hooks():
    """The registered value hooks, or None."""
    return _hooks


cdef inline bint is_reserved(const char *k, Py_ssize_t n) noexcept:
    return n >= BK_RESERVED_PREFIX_LEN and k[0] == 0 and \
        memcmp(k, BK_RESERVED_PREFIX, BK_RESERVED_PREFIX_LEN) == 0


cdef inline bytes as_user_key(Store s, object key):
    """as_key for a user write: a key under RESERVED_PREFIX is the objects layer's."""
    cdef bytes kb = as_key(s, key)
    if is_reserved(kb, PyBytes_GET_SIZE(kb)):
        raise _err.InvalidArgument(f"key {kb[:40]!r} starts with the reserved prefix "
                                   f"{RESERVED_PREFIX!r} (objects' internal entries)")
    return kb


cdef object decode_flagged(object bucket, bytes kb, object val, uint8_t flags):
    """The value of an entry flagged BK_E_DECODE, through the hooks' decode."""
    if _hooks is None:
        what = "an object manifest" if flags & BK_E_MANIFEST else "compressed"
        raise _err.BuktError(f"key {kb[:60]!r} holds a value stored {what} (entry flags "
                             f"{flags:#x}) and no value hooks are registered to decode "
                             "it (import bukt registers them)")
    out = _hooks.decode(bucket, kb, val, flags & BK_E_CARRY)
    if type(out) is not bytes:
        out = bytes(out)
    return out


cdef class Flagged:
    """A value read under locks that still needs decode_flagged (atomic decodes it after
    releasing them)."""
    cdef readonly bytes key
    cdef readonly object value
    cdef readonly uint8_t flags
    cdef readonly bint schema_decode

    def __cinit__(self, bytes key, object value, uint8_t flags, bint schema_decode):
        self.key = key
        self.value = value
        self.flags = flags
        self.schema_decode = schema_decode


class JsonDocument(bytes):
    """A value of a `json` bucket: the document's UTF-8 text, as bytes. The type tells
    a face to serve it as application/json (bukt/http/keys.py); anything else reads
    it as the bytes it is."""

    __slots__ = ()

    def parse(self):
        return json.loads(self)


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


cdef bytes json_document(object value):
    """The UTF-8 text of a JSON document: `value` as text (validated: RFC 8259, no
    NaN or Infinity), or a Python object (dict, list, number, ...) serialized."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError as e:
            raise _err.SchemaError(f"json bucket: the document is not UTF-8 ({e.reason} "
                                   f"at byte {e.start})") from None
    elif isinstance(value, str):
        text = value
    else:
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise _err.SchemaError(f"json bucket: {e}") from None
    try:
        json.loads(text, parse_constant=_no_constant)
    except ValueError as e:
        raise _err.SchemaError(f"json bucket: the value is not a JSON document ({e})") from None
    if not isinstance(value, str):
        return bytes(value)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _err.SchemaError(f"json bucket: the document is not encodable as UTF-8 "
                               f"({e.reason})") from None
EVICTIONS = ("lru", "none")


cdef inline bytes as_key(Store s, object key):
    cdef bytes kb
    if type(key) is bytes:
        kb = <bytes>key
    elif isinstance(key, str):
        try:
            kb = PyUnicode_AsUTF8String(key)
        except UnicodeEncodeError as e:
            raise _err.InvalidArgument(f"key is not encodable as UTF-8 ({e.reason})") from None
    elif isinstance(key, (bytearray, memoryview)):
        kb = bytes(key)
    else:
        raise _err.InvalidArgument(f"key must be bytes or str, not {type(key).__name__}")
    if PyBytes_GET_SIZE(kb) == 0:
        raise _err.InvalidArgument("key must not be empty")
    if <uint64_t>PyBytes_GET_SIZE(kb) > s.max_key:
        raise _err.KeyTooLarge(f"key of {PyBytes_GET_SIZE(kb)} bytes exceeds the limit of "
                               f"{s.max_key} bytes (max_key)")
    return kb


cdef int64_t parse_int_value(const char *p, uint32_t n) except? -1:
    """The value of `-?[0-9]{1,19}` as an int64, read in C: incr's hot path (the regex
    and int() this replaced were 3/5 of an incr's time). SchemaError otherwise."""
    cdef uint32_t i = 1 if n > 0 and p[0] == 45 else 0     # '-'
    cdef uint32_t j
    cdef uint64_t v = 0                 # 19 digits stay below 2^64
    if n - i < 1 or n - i > 19:
        return _int_value_error(p, n)
    for j in range(i, n):
        if not 48 <= p[j] <= 57:
            return _int_value_error(p, n)
        v = v * 10 + <uint64_t>(p[j] - 48)
    if i:
        if v > 9223372036854775808ULL:
            return _int_value_error(p, n)
        return <int64_t>(0ULL - v)
    if v > 9223372036854775807ULL:
        return _int_value_error(p, n)
    return <int64_t>v


cdef int64_t _int_value_error(const char *p, uint32_t n) except -1:
    text = PyBytes_FromStringAndSize(p, n)
    if not _INT_TEXT.match(text):
        try:            # text as text, not as a Python bytes literal
            shown = '"' + text[:40].decode("utf-8") + ('..."' if n > 40 else '"')
        except UnicodeDecodeError:
            shown = f"of {n} bytes (not text)"
        raise _err.SchemaError(f"value {shown} is not a decimal integer")
    raise _err.SchemaError(f"value {int(text)} is outside the signed 64-bit range")


cdef enum:                      # a transaction's operations (Bucket.atomic)
    TX_GET = 0
    TX_EXISTS = 1
    TX_VERSION = 2
    TX_TTL = 3
    TX_SET = 4
    TX_GETDEL = 5
    TX_DEL = 6
    TX_INCR = 7
    TX_EXPIRE = 8
    TX_PERSIST = 9


# each op's signature, as its Bucket method takes it; the tuple is
# (code, key, value/by/ttl, options, ttl for set and incr)
def _tx_get(key): return (TX_GET, key, None)
def _tx_exists(key): return (TX_EXISTS, key, None)
def _tx_version(key): return (TX_VERSION, key, None)
def _tx_ttl(key): return (TX_TTL, key, None)
def _tx_set(key, value, ttl=None, nx=False, xx=False, single_read=False, keepttl=False,
            get=False):
    return (TX_SET, key, value, (bool(nx), bool(xx), bool(single_read), bool(keepttl),
                                 bool(get)), ttl)
def _tx_getset(key, value, ttl=None):
    return (TX_SET, key, value, (False, False, False, False, True), ttl)
def _tx_getdel(key): return (TX_GETDEL, key, None)
def _tx_delete(key): return (TX_DEL, key, None)
def _tx_incr(key, by=1, initial=0, ttl=None): return (TX_INCR, key, by, initial, ttl)
def _tx_expire(key, ttl): return (TX_EXPIRE, key, ttl)
def _tx_persist(key): return (TX_PERSIST, key, None)

_TXN_OPS = {"get": _tx_get, "exists": _tx_exists, "version": _tx_version, "ttl": _tx_ttl,
            "set": _tx_set, "getset": _tx_getset, "getdel": _tx_getdel,
            "delete": _tx_delete, "incr": _tx_incr, "expire": _tx_expire,
            "persist": _tx_persist}


cdef enum:                      # how _slow_get treats the entry it finds
    GET_READ = 0                # get(): a single-read entry is consumed
    GET_TAKE = 1                # getdel(): always consumed
    GET_PEEK = 2                # get_entry(consume=False): never consumed
    GET_RAW = 4                 # a bit: the raw API's read (read_entry), which sees
                                # HIDDEN entries; without it they are a miss


cdef class Bucket:
    """A bucket of a Store: its keys, values, TTLs and counters."""

    cdef Store s
    cdef uint16_t idx
    cdef uint32_t gen
    cdef uint8_t schema
    cdef readonly str name
    cdef uint32_t seg_epoch             # the Store's seg_epoch when idx and gen were read

    def __repr__(self):
        return f"<bukt.Bucket {self.name!r}>"

    @property
    def store(self):
        return self.s

    @property
    def max_value(self):
        """The entry limit (limits.max_value): the most a stored value decodes to."""
        return self.s.max_value

    @property
    def schema_name(self):
        """"bytes", "int", "str" or "json": what values this bucket takes and returns."""
        return SCHEMAS[self.schema]

    cdef inline bk_bucket *_b(self) except NULL:
        """Every operation starts here: the bucket's row, BucketNotFound once it was
        dropped. A retired segment is left for the one that replaced it first
        (store.pxi, RETIREMENT): one relaxed load of a word on index_geom's line, which
        the operation reads next anyway. Never under a stripe lock: _bl there."""
        cdef bk_bucket *b
        cdef Store s = self.s
        if not s.mapped:
            raise _err.BuktError("the store is closed")
        if bk_load_rlx32(&s.hdr.retired) and s.follow:
            s._reattach()
        if self.seg_epoch != s.seg_epoch:
            self._rebind()
        b = &s.bucketv[self.idx]
        if b.gen != self.gen or b.state != 1:
            raise _err.BucketNotFound(f"bucket {self.name!r} was dropped")
        return b

    cdef inline bk_bucket *_bl(self) except NULL:
        """_b under a stripe lock, which belongs to the mapping it was taken in: no
        re-attach here."""
        cdef bk_bucket *b
        if not self.s.mapped:
            raise _err.BuktError("the store is closed")
        if self.seg_epoch != self.s.seg_epoch:      # another thread re-attached: the
            raise _err.SegmentRetired(              # lock is not of this mapping
                f"segment /bukt-{self.s.name} was replaced during the operation: it was "
                "not applied. Try it again.")
        b = &self.s.bucketv[self.idx]
        if b.gen != self.gen or b.state != 1:
            raise _err.BucketNotFound(f"bucket {self.name!r} was dropped")
        return b

    cdef int _rebind(self) except -1:
        """The Store moved to a new segment (RETIREMENT): find this bucket there by
        name (the recovery that built it gives it a slot of its own)."""
        cdef Store s = self.s
        cdef int i = find_bucket(s, self.name)
        if i < 0 or s.bucketv[i].state != 1:
            raise _err.BucketNotFound(f"no bucket {self.name!r} in the segment that "
                                      f"replaced /bukt-{s.name}")
        self.idx = <uint16_t>i
        self.gen = s.bucketv[i].gen
        self.schema = s.bucketv[i].schema
        self.seg_epoch = s.seg_epoch
        return 0

    # -- values in and out, by schema -------------------------------------------
    cdef bytes _encode(self, object value, bint limit=True):
        cdef bytes vb
        if self.schema == 1:                                # int
            if isinstance(value, bool):
                raise _err.SchemaError("int bucket: a bool is not an integer")
            if isinstance(value, int):
                if not I64_MIN <= value <= I64_MAX:
                    raise _err.SchemaError(f"int bucket: {value} is outside the signed 64-bit range")
                vb = str(value).encode()
            else:
                vb = value.encode() if isinstance(value, str) else bytes(value)
                parse_int_value(vb, len(vb))
                vb = str(int(vb)).encode()
        elif self.schema == SCHEMA_JSON:
            vb = json_document(value)
        elif type(value) is bytes:
            vb = <bytes>value
        elif isinstance(value, str):
            try:
                vb = PyUnicode_AsUTF8String(value)
            except UnicodeEncodeError as e:
                raise _err.SchemaError(f"the value is not encodable as UTF-8 ({e.reason})") from None
        elif isinstance(value, (bytearray, memoryview)):
            vb = bytes(value)
        else:
            raise _err.SchemaError(f"value must be bytes or str, not {type(value).__name__}")
        if self.schema == 2 and not isinstance(value, str):
            try:
                vb.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _err.SchemaError(f"str bucket: the value is not UTF-8 ({e.reason} "
                                       f"at byte {e.start})") from None
        if limit and <uint64_t>PyBytes_GET_SIZE(vb) > self.s.max_value:
            raise _err.ValueTooLarge(f"value of {PyBytes_GET_SIZE(vb)} bytes exceeds the limit "
                                     f"of {self.s.max_value} bytes (max_value)")
        return vb

    cdef object _decode(self, bytes vb):
        if self.schema == 0:
            return vb
        if self.schema == 1:
            return int(vb)
        if self.schema == SCHEMA_JSON:
            return JsonDocument(vb)
        return vb.decode("utf-8")

    cdef int64_t _expire_for(self, object ttl, bk_bucket *b) except? -1:
        if ttl is None:
            return (self.s.now() + b.default_ttl_ms) if b.default_ttl_ms else 0
        return self.s.now() + ttl_ms(ttl)

    # -- reads ------------------------------------------------------------------
    def get(self, key, default=None):
        """The value, or `default`. Fast path: fast_read, no lock."""
        cdef bk_bucket *b = self._b()
        cdef bytes kb = as_key(self.s, key)
        cdef int status
        cdef snap_t snap
        cdef bk_counters *cnt = self.s.counters(self.idx)
        val = fast_read(self.s, self.idx, kb, <uint32_t>PyBytes_GET_SIZE(kb), COPY_PLAIN, &status, &snap)
        if status != HIT and status != MISS:
            val = self._slow_get(kb, GET_READ, &status, &snap)  # slow path
        # reads = hits + misses. The row is this process's own: a plain increment, no
        # locked instruction on the read path (threads of one process sharing the row
        # may, rarely, lose a count; the gauges keys/bytes are exact)
        if status == HIT:
            if snap.flags & BK_E_OBJECT:            # one test of the loaded flags byte
                if snap.flags & BK_E_HIDDEN:
                    cnt.misses += 1                 # an object's internal entry
                    return default
                cnt.hits += 1
                val = decode_flagged(self, kb, val, snap.flags)
            else:
                cnt.hits += 1
            return self._decode(val) if self.schema else val
        cnt.misses += 1
        return default

    # get_entry repeats get's few lines rather than sharing a helper: the call that
    # sharing costs (not inlined by gcc) was 33 instructions a get, 572 -> 605 (callgrind)
    def get_entry(self, key, consume=True):
        """(value, version, ttl) from one consistent read, or None when absent; ttl is
        the remaining seconds or None. consume=True reads as get() does (a single-read
        key is handed out once); consume=False is a peek that never consumes."""
        cdef bk_bucket *b = self._b()
        cdef bytes kb = as_key(self.s, key)
        cdef int status, mode = GET_READ if consume else GET_PEEK
        cdef snap_t snap
        cdef bk_counters *cnt = self.s.counters(self.idx)
        val = fast_read(self.s, self.idx, kb, <uint32_t>PyBytes_GET_SIZE(kb),
                        COPY_PLAIN if consume else COPY_ALL, &status, &snap)
        if status != HIT and status != MISS:
            val = self._slow_get(kb, mode, &status, &snap)
        if status != HIT or snap.flags & BK_E_HIDDEN:
            cnt.misses += 1
            return None
        cnt.hits += 1
        if snap.flags & BK_E_DECODE:
            val = decode_flagged(self, kb, val, snap.flags)
        ttl = None if snap.expire_ms == 0 else max(0, snap.expire_ms - self.s.now()) / 1000.0
        return (self._decode(val) if self.schema else val), snap.version, ttl

    cdef object _slow_get(self, bytes kb, int mode, int *status, snap_t *snap):
        """Under the stripe lock: expire an expired entry, hand a single-read entry
        to this one reader (deleting it, unless peeking), or just read when the fast
        path gave up. `snap` gets the entry's version, expiry, length and flags."""
        cdef Store s = self.s
        cdef uint32_t n = <uint32_t>PyBytes_GET_SIZE(kb)
        cdef uint64_t h = khash(self.idx, kb, n), off
        cdef uint32_t si = stripe_of(s, h)
        cdef int slot, raw
        cdef bk_entry *e
        if s.readonly:
            return self._readonly_get(kb, mode & ~GET_RAW, status, snap)
        if logs(s, &s.bucketv[self.idx]):
            ring_wait_space(s, rec_size(n, 0))
        si = lock_key(s, si, h)
        try:
            self._bl()
            slot = do_find(s, si, h, self.idx, kb, n, &off)
            if slot < 0:
                status[0] = MISS
                return None
            e = ENT(s, off)
            if e.expire_ms and e.expire_ms <= s.now():
                self._expire_locked(si, slot, off)
                status[0] = MISS
                return None
            if (e.flags & BK_E_HIDDEN) and not (mode & GET_RAW):
                status[0] = MISS        # an object's internal entry: not the user's
                return None
            raw = mode & GET_RAW
            mode &= ~GET_RAW
            snap.version, snap.expire_ms, snap.vlen, snap.flags = e.version, e.expire_ms, e.vlen, e.flags
            val = PyBytes_FromStringAndSize(EKEY(s, off) + n, e.vlen)
            if mode == GET_TAKE or (mode == GET_READ and (e.flags & BK_E_SINGLE)):
                if not do_delete_at(s, si, slot, off, BK_T_DEL):
                    raise ring_full(s, "change ring full: the key was not consumed",
                                    rec_size(n, 0))
                if not raw:
                    bk_add64(&s.counters(self.idx).deletes, 1)
            status[0] = HIT
            return val
        finally:
            unlock_stripe(s, si)
            s._after_write(self._b_persist())

    cdef object _readonly_get(self, bytes kb, int mode, int *status, snap_t *snap):
        """A read-only mapping cannot take locks (they live in the segment): keep to
        optimistic reads; consuming a single-read key is a write and is refused."""
        cdef double since = 0
        if mode == GET_TAKE:
            self.s._writable()
        while True:
            memset(snap, 0, sizeof(snap_t))
            val = fast_read(self.s, self.idx, kb, <uint32_t>PyBytes_GET_SIZE(kb), COPY_ALL,
                            status, snap)
            if status[0] == HIT or status[0] == MISS:
                return val
            if status[0] == SLOW:
                if snap.expire_ms == 0 or snap.expire_ms > self.s.now():
                    if mode == GET_PEEK:                # a live single-read key, not taken
                        status[0] = HIT
                        return val
                    self.s._writable()                  # taking it is a write
                status[0] = MISS                        # expired
                return None
            since = readonly_wait(self.s, since)        # contended: a writer is inside

    cdef int _expire_locked(self, uint32_t si, int slot, uint64_t off) except -1:
        cdef uint16_t bidx = ENT(self.s, off).bucket
        if do_delete_at(self.s, si, slot, off, BK_T_EXPIRED):
            bk_fetch_add_u64(&self.s.hdr.expirations, 1)
            bk_add64(&self.s.counters(bidx).expirations, 1)
        return 0

    cdef bint _b_persist(self):
        return self.s.mapped and logs(self.s, &self.s.bucketv[self.idx])

    cdef int _peek(self, object key, snap_t *snap) except -1:
        """HIT (snap filled) or MISS, never consuming: for exists, ttl, version."""
        cdef bytes kb = as_key(self.s, key)
        cdef int status
        cdef double since = 0
        while True:
            fast_read(self.s, self.idx, kb, <uint32_t>PyBytes_GET_SIZE(kb), COPY_NONE, &status, snap)
            if status != MISS and status != CONTENDED and snap.flags & BK_E_HIDDEN:
                return MISS                             # an object's internal entry
            if status == SLOW:                          # validated: single-read or expired
                if snap.expire_ms and snap.expire_ms <= self.s.now():
                    return MISS
                return HIT
            if status != CONTENDED:
                return status
            if not self.s.readonly:                     # slow path: the lock (and repair)
                return self._locked_peek(kb, snap)
            since = readonly_wait(self.s, since)

    cdef int _locked_peek(self, bytes kb, snap_t *snap) except -1:
        cdef Store s = self.s
        cdef uint32_t n = <uint32_t>PyBytes_GET_SIZE(kb)
        cdef uint64_t h = khash(self.idx, kb, n), off
        cdef uint32_t si = stripe_of(s, h)
        cdef bk_entry *e
        si = lock_key(s, si, h)
        try:
            if do_find(s, si, h, self.idx, kb, n, &off) < 0:
                return MISS
            e = ENT(s, off)
            snap.version, snap.expire_ms, snap.vlen, snap.flags = e.version, e.expire_ms, e.vlen, e.flags
            if e.expire_ms and e.expire_ms <= s.now() or e.flags & BK_E_HIDDEN:
                return MISS
            return HIT
        finally:
            unlock_stripe(s, si)

    def exists(self, *keys):
        cdef snap_t snap
        self._b()
        cdef Py_ssize_t n = 0
        ready = [as_key(self.s, k) for k in keys]       # every key checked first
        for k in ready:                 # a loop, not sum(genexpr): a generator's
            if self._peek(k, &snap) == HIT:     # frame cost 3x the probe
                n += 1
        return n

    def version(self, key):
        cdef snap_t snap
        self._b()
        return snap.version if self._peek(key, &snap) == HIT else None

    def ttl(self, key):
        cdef snap_t snap
        self._b()
        if self._peek(key, &snap) != HIT or snap.expire_ms == 0:
            return None
        return max(0, snap.expire_ms - self.s.now()) / 1000.0

    def mget(self, keys):
        """Values of the keys (None where absent). Every key is checked first, so a bad
        one raises before any single-read key is consumed. Each value is a true
        snapshot of its key, but the keys are read one after another: a transaction
        (atomic) that changes several of them may be seen half applied. For a read
        that never sees that, mget_consistent."""
        ready = [as_key(self.s, k) for k in keys]
        return [self.get(k) for k in ready]

    def mget_consistent(self, keys):
        """As mget, but one snapshot of all the keys: a transaction (atomic) that
        changes several of them is seen wholly or not at all. The seq of every stripe
        involved is sampled (none odd) before any value is copied, and every one is
        checked again after the last copy (TRANSACTIONS below says why that is enough).
        Lock-free; after READ_TRIES failed rounds, or when a key is single-read (which
        mget would consume), it reads under the locks of all the stripes, as atomic()
        takes them."""
        cdef Store s = self.s
        cdef bytes kb
        cdef uint64_t h
        cdef uint32_t si
        cdef int attempt, status, i, nk
        cdef bint ok
        cdef snap_t snap
        cdef double since = 0
        cdef bk_counters *cnt
        cdef list ready = [as_key(s, k) for k in keys]
        cdef list hs, sis, seqs, stripes, vals, flagged
        self._b()
        nk = len(ready)
        if nk == 0:
            return []
        if <uint64_t>nk > s.max_txn_keys:
            raise _err.LimitExceeded(f"mget_consistent of {nk} keys: at most "
                                     f"{s.max_txn_keys} (limits.max_transaction_keys)")
        hs = [khash(self.idx, kb, <uint32_t>PyBytes_GET_SIZE(kb)) for kb in ready]
        attempt = 0
        while True:
            if attempt >= READ_TRIES:
                if not s.readonly:
                    return self.atomic([("get", (kb,)) for kb in ready])
                since = readonly_wait(s, since)
            attempt += 1
            sis = [stripe_of(s, h) for h in hs]
            stripes = sorted(set(sis))
            seqs = []
            ok = True
            for si in stripes:
                seqs.append(bk_load_acq64(&STRIPE(s, si).seq))
                if seqs[len(seqs) - 1] & 1:
                    ok = False
                    break
            if not ok:
                bk_pause()
                continue
            for i in range(nk):
                if not owns(s, sis[i], hs[i]):
                    ok = False          # split since the geometry was read
                    break
            if not ok:
                continue
            vals = []
            flagged = []
            for i in range(nk):
                kb = ready[i]
                vals.append(probe_copy(s, sis[i], hs[i], self.idx, kb,
                                       <uint32_t>PyBytes_GET_SIZE(kb), &status, &snap))
                if status == HIT and snap.flags & BK_E_OBJECT:
                    flagged.append((i, snap.flags))
                if status == -1:
                    ok = False
                    break
                if status == SLOW and snap.expire_ms != 0 and snap.expire_ms <= s.now():
                    status = MISS       # expired: absent (lazy expiry removes it later)
                if status == SLOW:
                    ok = False          # single-read: consumed under the locks
                    break
            bk_fence_acq()
            for i in range(len(stripes)):
                if bk_load_rlx64(&STRIPE(s, <uint32_t>stripes[i]).seq) != seqs[i]:
                    ok = False
                    status = HIT        # not a single-read verdict: just try again
                    break
            if ok:
                break
            if status == SLOW:
                if s.readonly:
                    s._writable()       # consuming a single-read key is a write
                return self.atomic([("get", (kb,)) for kb in ready])
        for i, f in flagged:            # after the snapshot, no lock held
            if f & BK_E_HIDDEN:
                vals[i] = None
            else:
                vals[i] = decode_flagged(self, ready[i], vals[i], f)
        cnt = s.counters(self.idx)
        for i in range(nk):
            if vals[i] is None:
                cnt.misses += 1
            else:
                cnt.hits += 1
                if self.schema:
                    vals[i] = self._decode(vals[i])
        return vals

    def scan(self, prefix=b"", cursor=0, count=100):
        """(next_cursor, keys): whole stripes at a time, each read under its seq, so
        a key present for the whole scan is returned once (read_at_cursor: the cursor
        survives the index's growth); 0 when done."""
        cdef Store s = self.s
        cdef bytes pb = prefix.encode() if isinstance(prefix, str) else bytes(prefix)
        cdef uint64_t cur, nxt = 0
        self._b()
        if not isinstance(cursor, int) or cursor < 0 or cursor >= (1 << 32):
            raise _err.InvalidArgument(f"cursor {cursor!r} is not one this bucket gave")
        if count < 1:
            raise _err.InvalidArgument("count must be at least 1")
        keys = []
        cur = cursor
        arg = (self.idx, pb)
        while True:
            keys.extend(read_at_cursor(s, cur, collect_keys, arg, &nxt))
            cur = nxt
            if cur == 0 or len(keys) >= count:
                return cur, keys

    def scan_hidden(self, cursor=0, count=100):
        """(next_cursor, keys) of the bucket's HIDDEN entries only (an object's chunks
        and head records), as scan walks (0 when done): for the reclaim sweep."""
        cdef Store s = self.s
        cdef uint64_t cur, nxt = 0
        self._b()
        if not isinstance(cursor, int) or cursor < 0 or cursor >= (1 << 32):
            raise _err.InvalidArgument(f"cursor {cursor!r} is not one this bucket gave")
        if count < 1:
            raise _err.InvalidArgument("count must be at least 1")
        keys = []
        cur = cursor
        while True:
            keys.extend(read_at_cursor(s, cur, collect_hidden, self.idx, &nxt))
            cur = nxt
            if cur == 0 or len(keys) >= count:
                return cur, keys

    # -- writes -----------------------------------------------------------------
    def set(self, key, value, ttl=None, nx=False, xx=False, single_read=False,
            if_version=None):
        """Store the value; returns its version (None when nx/xx says no). A value
        above max_value goes to the value hooks' store_large (an object in chunks),
        one of comp_threshold bytes or more in a compressing bucket through their
        compress (OBJECTS IN THE CORE, above)."""
        cdef Store s = self.s
        cdef bk_bucket *b
        cdef bytes kb, vb
        cdef uint8_t eflags = BK_E_SINGLE if single_read else 0
        cdef uint64_t ver
        s._writable()
        b = self._b()
        if nx and xx:
            raise _err.InvalidArgument("nx and xx together can never write")
        if if_version is not None and (isinstance(if_version, bool) or
                                       not isinstance(if_version, int) or if_version < 0):
            raise _err.InvalidArgument(f"if_version must be an int >= 0, not {if_version!r}")
        kb = as_user_key(s, key)
        vb = self._encode(value, _hooks is None)
        if <uint64_t>PyBytes_GET_SIZE(vb) > s.max_value:
            if ttl is not None:
                ttl_ms(ttl)
            ver = _hooks.store_large(self, kb, vb, ttl, bool(nx), bool(xx),
                                     bool(single_read), if_version)
            if ver:
                bk_add64(&s.counters(self.idx).writes, 1)   # one write, however many
            return ver                                      # entries the object took
        if b.compression and _hooks is not None \
                and <uint64_t>PyBytes_GET_SIZE(vb) >= b.comp_threshold:
            packed = _hooks.compress(self, vb)
            if packed is not None:
                vb = packed[0]
                eflags |= <uint8_t>(packed[1] & (BK_E_ZSTD | BK_E_LZ4))
        ver = self._put(kb, vb, self._expire_for(ttl, b), nx, xx, eflags,
                        if_version is not None, 0 if if_version is None else if_version,
                        True)
        if ver:
            bk_add64(&s.counters(self.idx).writes, 1)
        return ver if ver else None

    cdef uint64_t _put(self, bytes kb, bytes vb, int64_t expire_ms, bint nx, bint xx,
                       uint8_t eflags, bint check, uint64_t want,
                       bint mismatch_raises) except? 0:
        """The write of set and put_entry: kb and vb checked, the flags given. 0 when
        nx/xx (or, unless mismatch_raises, the version check) says no. Counts nothing
        (set counts its write: the raw API's entries are parts of one)."""
        cdef Store s = self.s
        cdef bk_bucket *b = &s.bucketv[self.idx]
        cdef uint32_t n, vlen, si
        cdef uint64_t h, off, ver, cur
        cdef int found
        cdef bint present
        n = <uint32_t>PyBytes_GET_SIZE(kb)
        vlen = <uint32_t>PyBytes_GET_SIZE(vb)
        h = khash(self.idx, kb, n)
        si = stripe_of(s, h)
        prefetch_for_write(s, si, h)
        if logs(s, b):
            ring_wait_space(s, rec_size(n, vlen))
        while True:                     # again after a StripeFull (GROWTH, table.pxi)
            try:
                si = lock_key(s, si, h)
                try:
                    b = self._bl()
                    found = do_find(s, si, h, self.idx, kb, n, &off)
                    present = found >= 0 and not self._expired(off)
                    if nx and present or xx and not present:
                        return 0
                    if check:
                        cur = ENT(s, off).version if present else 0
                        if cur != want:
                            if not mismatch_raises:
                                return 0
                            raise _err.VersionMismatch(
                                f"key {kb[:60]!r} is at version {cur}, not {want}")
                    if found >= 0 and not present:
                        self._count_expired()
                    ver = do_set(s, si, h, self.idx, kb, n, vb, vlen, expire_ms,
                                 eflags, found, off)
                finally:
                    unlock_stripe(s, si)
            except StripeFull as full:
                grow_past(s, full.si, full.depth)
                si = stripe_of(s, h)
                continue
            break
        s._after_write(logs(s, b))
        return ver

    # -- the raw entry API (OBJECTS IN THE CORE): no hooks, no schema ----------------
    def put_entry(self, key, value, int flags=0, ttl=None, *, nx=False, xx=False,
                  if_version=0, hidden_ok=True):
        """Store raw bytes with entry flags (ENTRY_FLAGS: SINGLE, MANIFEST, HIDDEN,
        ZSTD, LZ4) as they are: no schema, no compression, no hooks. Returns the new
        version, or 0 when nx/xx or if_version (not 0: the key must be at that
        version) says no. A key under RESERVED_PREFIX must be flagged HIDDEN and a
        HIDDEN entry's key must be under it; hidden_ok=False refuses such keys, as a
        user write does."""
        cdef Store s = self.s
        cdef bk_bucket *b
        cdef bytes kb, vb
        cdef bint reserved
        s._writable()
        b = self._b()
        if nx and xx:
            raise _err.InvalidArgument("nx and xx together can never write")
        if flags & ~(<int>BK_E_CARRY) or flags < 0:
            raise _err.InvalidArgument(f"entry flags {flags:#x}: only {BK_E_CARRY:#x} bits")
        if (flags & BK_E_ZSTD) and (flags & BK_E_LZ4):
            raise _err.InvalidArgument("entry flags: ZSTD and LZ4 together")
        if isinstance(if_version, bool) or not isinstance(if_version, int) \
                or not 0 <= if_version < 2 ** 64:
            raise _err.InvalidArgument(f"if_version must be an int >= 0, not {if_version!r}")
        kb = as_key(s, key) if hidden_ok else as_user_key(s, key)
        reserved = is_reserved(kb, PyBytes_GET_SIZE(kb))
        if reserved != bool(flags & BK_E_HIDDEN):
            raise _err.InvalidArgument(
                f"key {kb[:40]!r}: HIDDEN entries, and only they, have keys under "
                f"{RESERVED_PREFIX!r}")
        vb = value if type(value) is bytes else bytes(value)
        if <uint64_t>PyBytes_GET_SIZE(vb) > s.max_value:
            raise _err.ValueTooLarge(f"value of {PyBytes_GET_SIZE(vb)} bytes exceeds the "
                                     f"limit of {s.max_value} bytes (max_value)")
        return self._put(kb, vb, self._expire_for(ttl, b), nx, xx, <uint8_t>flags,
                         if_version != 0, if_version, False)

    def read_entry(self, key, take=False, peek=False, user=False):
        """(value, flags, version, expire_ms) of the raw entry, HIDDEN ones too, or
        None: the stored bytes as they are (a manifest, compressed bytes), no hooks,
        no schema. take=True removes it in the same locked step (getdel); a
        single-read entry is taken by any read but a peek (peek=True: nothing is taken,
        for a HEAD or ?peek). user=True: a user's read (a face's GET that decodes the
        flags itself): a HIDDEN entry is absent, and the read is counted as a hit or
        a miss, as get_entry counts it. (Bucket.get_entry is the user's decoded read
        of value, version and ttl.)"""
        cdef bytes kb
        cdef int status
        cdef snap_t snap
        cdef bk_counters *cnt
        if take:
            self.s._writable()
        self._b()
        kb = as_key(self.s, key)
        if not take:                    # peek: a single-read entry stays (get_entry's)
            val = fast_read(self.s, self.idx, kb, <uint32_t>PyBytes_GET_SIZE(kb),
                            COPY_ALL if peek else COPY_PLAIN, &status, &snap)
            if status != HIT and status != MISS:
                val = self._slow_get(kb, (GET_PEEK if peek else GET_READ) | GET_RAW,
                                     &status, &snap)
        else:
            val = self._slow_get(kb, GET_TAKE | GET_RAW, &status, &snap)
        if user:
            cnt = self.s.counters(self.idx)
            if status != HIT or snap.flags & BK_E_HIDDEN:
                cnt.misses += 1
                return None
            cnt.hits += 1
        elif status != HIT:             # (not counted: the raw API reads parts of what
            return None                 # the user's read, counted once, asked for)
        return val, snap.flags & BK_E_CARRY, snap.version, snap.expire_ms

    def count_integrity_error(self):
        """Count one damaged value met by a read (a frame or an object failing its
        checksum) in this bucket's integrity_errors (stats())."""
        self._b()
        bk_add64(&self.s.counters(self.idx).integrity_errors, 1)

    def delete_entry(self, key, if_version=0):
        """Remove the raw entry (HIDDEN ones too); with if_version (not 0), only at
        that version. True when it was there and is gone."""
        cdef bytes kb
        self.s._writable()
        self._b()
        if isinstance(if_version, bool) or not isinstance(if_version, int) \
                or not 0 <= if_version < 2 ** 64:
            raise _err.InvalidArgument(f"if_version must be an int >= 0, not {if_version!r}")
        kb = as_key(self.s, key)
        try:
            return self._delete_one(kb, if_version != 0, if_version, False) == 1
        except _err.VersionMismatch:
            return False

    # -- compression settings (set at creation: Store.create_bucket) --------------------
    @property
    def compression(self):
        """"none", "zstd" or "lz4"."""
        cdef uint8_t c = self._b().compression
        return COMPRESSIONS[c] if c < 3 else f"unknown({c})"

    @property
    def comp_min_saving(self):
        """Percent: a compressed value that saves less is stored raw."""
        return self._b().comp_min_saving

    @property
    def comp_threshold(self):
        """Bytes: values smaller are never compressed."""
        return self._b().comp_threshold

    @property
    def comp_saved(self):
        """Gauge: value bytes compression saved (raw - stored)."""
        return bk_load_rlx_i64(&self._b().comp_saved)

    def add_comp_saved(self, int64_t delta):
        """Add delta (may be negative) to the comp_saved gauge, atomically."""
        bk_add64(&self._b().comp_saved, delta)

    def _set_compression_unlogged(self, compression, uint32_t threshold, uint8_t min_saving):
        """Tests only: set the compression fields in this segment, unlogged (a bucket
        gets them at creation, through its logged META change)."""
        cdef bk_bucket *b = self._b()
        b.comp_threshold = threshold
        b.comp_min_saving = min_saving
        b.compression = <uint8_t>COMPRESSIONS.index(compression)

    cdef bint _expired(self, uint64_t off):
        cdef int64_t exp = ENT(self.s, off).expire_ms
        return exp != 0 and exp <= self.s.now()

    cdef void _count_expired(self) noexcept:
        bk_fetch_add_u64(&self.s.hdr.expirations, 1)
        bk_add64(&self.s.counters(self.idx).expirations, 1)

    def mset(self, mapping, ttl=None):
        """Set every pair; all keys, values and the ttl are checked before the first
        write, so a bad one changes nothing (each key is then set on its own)."""
        items = list(mapping.items() if hasattr(mapping, "items") else mapping)
        check = getattr(_hooks, "check_large", None)   # an object's limit, before any write
        ready = []
        for k, v in items:
            kb, vb = as_user_key(self.s, k), self._encode(v, _hooks is None)
            if check is not None and <uint64_t>PyBytes_GET_SIZE(vb) > self.s.max_value:
                check(self, PyBytes_GET_SIZE(vb))       # as _encode checks max_value
            ready.append((kb, vb))
        if ttl is not None:
            ttl_ms(ttl)
        return [self.set(k, v, ttl) for k, v in ready]

    def incr(self, key, by=1, initial=0, ttl=None):
        """Add `by` to the decimal integer at key (absent: initial + by, with ttl)."""
        cdef Store s = self.s
        cdef bk_bucket *b
        cdef bytes kb, vb
        cdef uint32_t n, si
        cdef uint64_t h, off
        cdef int found
        cdef int64_t expire_ms
        cdef uint8_t flags = 0
        cdef bk_entry *e
        s._writable()
        b = self._b()
        kb = as_user_key(s, key)
        if isinstance(by, bool) or not isinstance(by, int) or not isinstance(initial, int):
            raise TypeError("by and initial must be integers")
        if ttl is not None:
            ttl_ms(ttl)                 # checked even when the key exists (and keeps its TTL)
        n = <uint32_t>PyBytes_GET_SIZE(kb)
        h = khash(self.idx, kb, n)
        si = stripe_of(s, h)
        prefetch_for_write(s, si, h)
        if logs(s, b):
            ring_wait_space(s, rec_size(n, 24))
        while True:                     # again after a StripeFull (GROWTH, table.pxi)
            try:
                si = lock_key(s, si, h)
                try:
                    b = self._bl()
                    found = do_find(s, si, h, self.idx, kb, n, &off)
                    if found >= 0 and not self._expired(off):
                        e = ENT(s, off)
                        cur = parse_int_value(EKEY(s, off) + n, e.vlen)
                        expire_ms = e.expire_ms
                        flags = e.flags & BK_E_SINGLE
                    else:
                        if found >= 0:
                            self._count_expired()
                        cur = initial
                        expire_ms = self._expire_for(ttl, b)
                    new = cur + by
                    if not I64_MIN <= new <= I64_MAX:
                        raise _err.SchemaError(f"incr of {kb[:60]!r} by {by} leaves the "
                                               "signed 64-bit range")
                    vb = str(new).encode()
                    s.rec_flags = BK_RF_INCR        # the feed tells an incr apart
                    try:
                        do_set(s, si, h, self.idx, kb, n, vb, <uint32_t>len(vb), expire_ms,
                               flags, found, off)
                    finally:
                        s.rec_flags = 0
                    bk_add64(&s.counters(self.idx).writes, 1)
                finally:
                    unlock_stripe(s, si)
            except StripeFull as full:
                grow_past(s, full.si, full.depth)
                si = stripe_of(s, h)
                continue
            break
        s._after_write(logs(s, b))
        return new

    def getdel(self, key):
        cdef int status
        cdef snap_t snap
        self.s._writable()
        self._b()
        cdef bytes kb = as_user_key(self.s, key)
        val = self._slow_get(kb, GET_TAKE, &status, &snap)
        if status != HIT:
            return None
        if snap.flags & BK_E_DECODE:
            val = decode_flagged(self, kb, val, snap.flags)
        return self._decode(val)

    def delete(self, *keys, if_version=None):
        """How many of the keys existed (and are now gone). With `if_version=v`, one
        key only, and only if its current version is v (0: absent), else
        VersionMismatch: an atomic compare-and-delete."""
        cdef int deleted = 0
        self.s._writable()
        self._b()
        if if_version is not None:
            if isinstance(if_version, bool) or not isinstance(if_version, int) or if_version < 0:
                raise _err.InvalidArgument(f"if_version must be an int >= 0, not {if_version!r}")
            if len(keys) != 1:
                raise _err.InvalidArgument(f"delete with if_version takes one key, not {len(keys)}")
        ready = [as_user_key(self.s, k) for k in keys]    # all checked before any delete
        if if_version is not None and if_version >= 2 ** 64:
            raise _err.VersionMismatch(f"no key is at version {if_version}")
        for kb in ready:
            deleted += self._delete_one(kb, if_version is not None,
                                        0 if if_version is None else if_version)
        return deleted

    cdef int _delete_one(self, bytes kb, bint check, uint64_t want, bint count=True) except -1:
        """Delete one key; with `check`, only if it is at version `want` (0: absent).
        count=False: not in the deletes counter (the raw API's delete_entry)."""
        cdef Store s = self.s
        cdef uint32_t n = <uint32_t>PyBytes_GET_SIZE(kb), si
        cdef uint64_t h = khash(self.idx, kb, n), off, cur
        cdef int slot, existed = 0
        cdef bint persist = logs(s, &s.bucketv[self.idx]), present
        si = stripe_of(s, h)
        prefetch_for_write(s, si, h)
        if persist:
            ring_wait_space(s, rec_size(n, 0))
        si = lock_key(s, si, h)
        try:
            self._bl()
            slot = do_find(s, si, h, self.idx, kb, n, &off)
            present = slot >= 0 and not self._expired(off)
            if check:
                cur = ENT(s, off).version if present else 0
                if cur != want:
                    raise _err.VersionMismatch(
                        f"key {kb[:60]!r} is at version {cur}, not {want}")
            if slot >= 0:
                if not present:
                    self._expire_locked(si, slot, off)
                else:
                    if not do_delete_at(s, si, slot, off, BK_T_DEL):
                        raise ring_full(s, "change ring full: the key was not deleted",
                                        rec_size(n, 0))
                    if count:
                        bk_add64(&s.counters(self.idx).deletes, 1)
                    existed = 1
        finally:
            unlock_stripe(s, si)
        s._after_write(persist)
        return existed

    def expire(self, key, ttl):
        """Give the key a TTL of `ttl` seconds; False when there is no such key."""
        return self._touch(key, self.s.now() + ttl_ms(ttl))

    def persist(self, key):
        """Remove the key's TTL; False when there is no such key."""
        return self._touch(key, 0)

    cdef bint _touch(self, object key, int64_t expire_ms) except -1:
        cdef Store s = self.s
        cdef bytes kb
        cdef uint32_t n, si
        cdef uint64_t h, off
        cdef int slot
        cdef bint persist
        s._writable()
        persist = logs(s, self._b())
        kb = as_user_key(s, key)
        n = <uint32_t>PyBytes_GET_SIZE(kb)
        h = khash(self.idx, kb, n)
        si = stripe_of(s, h)
        prefetch_for_write(s, si, h)
        if persist:
            ring_wait_space(s, rec_size(n, 0))
        si = lock_key(s, si, h)
        try:
            self._bl()
            slot = do_find(s, si, h, self.idx, kb, n, &off)
            if slot < 0:
                return False
            if self._expired(off):
                self._expire_locked(si, slot, off)
                return False
            if ENT(s, off).expire_ms != expire_ms:
                do_touch(s, si, slot, off, expire_ms)
        finally:
            unlock_stripe(s, si)
        s._after_write(persist)
        return True

    # -- TRANSACTIONS -------------------------------------------------------------
    # atomic(ops, watched) applies several operations on several keys as one: no
    # reader and no other writer sees some of them applied and not the others.
    #   Locks: the stripe of every key involved (the watched ones too), taken in
    # ascending stripe order. The LOCK RULES of core.pyx allow a second stripe lock
    # taken by blocking only in index order: recount/check take every stripe in that
    # order, a split holds p and takes q > p, so ascending order closes no cycle. A
    # split between computing a key's stripe and locking it moves the key: each key's
    # ownership is checked under the locks (as lock_key does), and a miss releases
    # them all and starts again from the new geometry. A stripe that the
    # transaction's inserts would fill (GROWTH) is split first, holding nothing.
    #   Readers: after the watched versions are checked and before the first change,
    # the seq of every stripe involved is made odd, and all are made even again after
    # the last change (the do_* functions leave a seq that is odd already alone:
    # seq_enter_own). A reader of one key retries while its stripe is odd, so it sees
    # all of the transaction or none of it. A reader of several keys
    # (mget_consistent) samples every stripe's seq before its first copy and checks
    # every one after its last: had it seen one key before the transaction and
    # another after, the write window of one of their stripes (which spans all the
    # changes) would overlap its read and that seq would differ.
    #   The log: each change reserves, fills and commits its ring record as a single
    # write does, all of them before the first lock is released, so recovery replays
    # every change of a transaction that returned. The records are not one unit: a
    # process killed mid-transaction leaves each stripe to its own repair (the intent
    # record names the one operation in flight there), so the changes made before
    # the kill stay, that one is finished or undone, and the rest never happen
    # (docs/design.md, Failure model).
    #   Errors: every argument is checked before any lock is taken (nothing applied).
    # An error that only the data shows (incr of a value that is not an integer, a
    # full segment or ring) fails that operation alone: its result is the exception,
    # and the others apply, as Redis's EXEC does.

    def atomic(self, ops, watched=None):
        """Apply `ops`, a list of (name, args) or (name, args, kwargs), as one
        transaction; `watched`: {key: version}, 0 for "absent". Returns None, applying
        nothing, when a watched key is not at its version; else the list of the
        operations' results (an exception instance where one failed on the data).
        Operations and their results, as the methods of the same names:
          get(key) value | None; exists(key) bool; version(key); ttl(key)
          set(key, value, ttl=None, nx=False, xx=False, single_read=False,
              keepttl=False, get=False) version | None (get=True: the old value)
          getset(key, value, ttl=None) old value | None; getdel(key) value | None
          delete(key) 1 | 0; incr(key, by=1, initial=0, ttl=None) new value
          expire(key, ttl) bool; persist(key) bool
        At most limits.max_transaction_keys distinct keys (LimitExceeded)."""
        cdef Store s = self.s
        cdef bk_bucket *b
        cdef list plan, wlist, kbs, hs, sis, stripes, results
        cdef dict where
        cdef uint32_t si, need = 0
        cdef uint64_t h, total = 0, pos0
        cdef bint entered
        cdef object grow
        s._writable()
        b = self._b()
        plan = [self._txn_op(i, op) for i, op in enumerate(ops)]
        wlist = []
        if watched:
            for k, v in (watched.items() if hasattr(watched, "items") else watched):
                if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2 ** 64:
                    raise _err.InvalidArgument(f"watched version {v!r} of {k!r}: an int >= 0")
                wlist.append((as_key(s, k), v))
        where = {}                      # key -> its index in kbs/hs/sis
        kbs = []
        for p in plan:
            if p[1] not in where:
                where[p[1]] = len(kbs)
                kbs.append(p[1])
            if p[0] >= TX_SET:          # a write (a get logs only a single-read take)
                total += rec_size(<uint32_t>PyBytes_GET_SIZE(p[1]),
                                  <uint32_t>PyBytes_GET_SIZE(p[2]) if p[2] is not None else 24)
        for kb, v in wlist:
            if kb not in where:
                where[kb] = len(kbs)
                kbs.append(kb)
        if <uint64_t>len(kbs) > s.max_txn_keys:
            raise _err.LimitExceeded(f"a transaction of {len(kbs)} keys: at most "
                                     f"{s.max_txn_keys} (limits.max_transaction_keys)")
        if not kbs:
            return []
        hs = [khash(self.idx, kb, <uint32_t>PyBytes_GET_SIZE(kb)) for kb in kbs]
        pos0 = s.last_pos
        if logs(s, b) and total > 0:    # reads only (mget_consistent): no ring wait
            # room for the records as a single write waits for it, before any lock
            # (LOCK RULES); a transaction larger than the ring waits under its locks
            # for the rest, record by record, as the consumer drains
            need = <uint32_t>min(total, s.ring_size // 4)
            ring_wait_space(s, need)
        while True:
            sis = self._txn_lock(hs)
            stripes = sorted(set(sis))
            entered = False
            grow = None
            try:
                self._bl()
                for kb, v in wlist:
                    i = where[kb]
                    if self._txn_version(sis[i], hs[i], kb) != v:
                        return None
                grow = self._txn_room(plan, where, hs, sis)
                if grow is None:
                    for si in stripes:
                        bk_seq_enter(&STRIPE(s, si).seq)
                    entered = True
                    results = []
                    for p in plan:
                        if s.crash_txn and len(results) == s.crash_txn - 1:
                            _exit(70)   # a crash test: mid-transaction, locks held
                        i = where[p[1]]
                        results.append(self._txn_apply(p, sis[i], hs[i]))
            finally:
                if entered:
                    for si in stripes:
                        if STRIPE(s, si).seq & 1:
                            bk_seq_leave(&STRIPE(s, si).seq)
                for si in reversed(stripes):
                    unlock_stripe(s, si)
            if grow is not None:
                grow_past(s, grow[0], grow[1])
                continue
            break
        # waits for the fsync (fsync: always) when anything was logged, a single-read
        # key taken by a get too
        s._after_write(s.last_pos != pos0 and logs(s, &s.bucketv[self.idx]))
        for i in range(len(results)):   # values the hooks decode, no lock held now
            if type(results[i]) is Flagged:
                results[i] = self._unflag(<Flagged>results[i])
        return results

    cdef object _unflag(self, Flagged f):
        val = decode_flagged(self, f.key, f.value, f.flags)
        return self._decode(val) if f.schema_decode else val

    cdef list _txn_lock(self, list hs):
        """Lock the stripes of the hashes `hs` in ascending order, each key's ownership
        checked under the locks (a split may have moved it: all are released and taken
        again). Returns each hash's stripe."""
        cdef Store s = self.s
        cdef list sis, stripes, held
        cdef uint32_t si
        cdef Py_ssize_t i
        cdef bint ok
        while True:
            sis = [stripe_of(s, h) for h in hs]
            stripes = sorted(set(sis))
            held = []
            try:
                for si in stripes:
                    lock_stripe(s, si)
                    held.append(si)
            except BaseException:
                for si in reversed(held):
                    unlock_stripe(s, si)
                raise
            ok = True
            for i in range(len(hs)):
                if not owns(s, sis[i], hs[i]):
                    ok = False
                    break
            if ok:
                return sis
            for si in reversed(held):
                unlock_stripe(s, si)

    cdef tuple _txn_op(self, Py_ssize_t i, object op):
        """Check and encode one operation, taking no lock: (code, key, value or None,
        ttl ms or None, options)."""
        cdef Store s = self.s
        cdef bk_bucket *cb
        try:
            if len(op) == 2:
                name, args = op
                kw = {}
            else:
                name, args, kw = op
            spec = _TXN_OPS[name]
        except (TypeError, ValueError, KeyError):
            raise _err.InvalidArgument(
                f"transaction op {i}: {op!r:.80} is not (name, args[, kwargs]) with a name "
                f"among {', '.join(_TXN_OPS)}") from None
        try:
            a = spec(*args, **kw)
        except TypeError as e:
            raise _err.InvalidArgument(f"transaction op {i} ({name}): {e}") from None
        code = a[0]
        kb = as_user_key(s, a[1]) if code >= TX_SET else as_key(s, a[1])
        vb = None
        ttl = None
        opts = a[3] if len(a) > 3 else None
        if code == TX_SET:
            if opts[0] and opts[1]:
                raise _err.InvalidArgument(f"transaction op {i}: nx and xx together can never write")
            vb = self._encode(a[2])
            cb = &s.bucketv[self.idx]
            if cb.compression and _hooks is not None \
                    and <uint64_t>PyBytes_GET_SIZE(vb) >= cb.comp_threshold:
                packed = _hooks.compress(self, vb)  # as set does, before any lock
                if packed is not None:
                    vb = packed[0]
                    opts = opts + (<uint8_t>(packed[1] & (BK_E_ZSTD | BK_E_LZ4)),)
            if class_for(s, 32 + PyBytes_GET_SIZE(kb) + PyBytes_GET_SIZE(vb)) < 0:
                raise _err.ValueTooLarge(
                    f"entry of {32 + PyBytes_GET_SIZE(kb) + PyBytes_GET_SIZE(vb)} bytes "
                    f"exceeds the largest chunk ({s.classes[s.nclasses - 1].chunk_size} bytes)")
        elif code == TX_INCR:
            by, initial = a[2], opts
            if isinstance(by, bool) or not isinstance(by, int) or not isinstance(initial, int):
                raise _err.InvalidArgument(f"transaction op {i}: by and initial must be integers")
            vb = None
        if code in (TX_SET, TX_INCR, TX_EXPIRE):
            t = a[4] if code != TX_EXPIRE else a[2]
            if t is not None:
                ttl = ttl_ms(t)
            elif code == TX_EXPIRE:
                raise _err.InvalidArgument(f"transaction op {i}: expire needs a ttl")
        if code == TX_INCR:
            return (code, kb, None, ttl, (a[2], opts))
        return (code, kb, vb, ttl, opts)

    cdef int _txn_find(self, uint32_t si, uint64_t h, bytes kb, uint64_t *off) except? -1000:
        """do_find, an expired entry expired first (found again: the shift moves slots)."""
        cdef uint32_t n = <uint32_t>PyBytes_GET_SIZE(kb)
        cdef int found = do_find(self.s, si, h, self.idx, kb, n, off)
        if found >= 0 and self._expired(off[0]):
            self._expire_locked(si, found, off[0])
            found = do_find(self.s, si, h, self.idx, kb, n, off)
        return found

    cdef uint64_t _txn_version(self, uint32_t si, uint64_t h, bytes kb) except? 0xffffffffffffffff:
        cdef uint64_t off
        cdef int found = do_find(self.s, si, h, self.idx, kb, <uint32_t>PyBytes_GET_SIZE(kb), &off)
        if found < 0 or self._expired(off):
            return 0
        return ENT(self.s, off).version

    cdef object _txn_room(self, list plan, dict where, list hs, list sis):
        """GROWTH: (stripe, depth) of a stripe the transaction's new keys would fill
        past BK_STRIPE_MAX_LOAD while the index may still grow (split it, holding no
        lock, and start again), or None."""
        cdef Store s = self.s
        cdef dict news = {}
        cdef set seen = set()
        cdef uint64_t off
        cdef uint32_t si
        cdef Py_ssize_t i
        cdef bint near = False
        if not can_grow(s):
            return None                 # do_set evicts in the stripe or refuses
        for p in plan:                  # the keys each stripe may gain, at most
            if (p[0] != TX_SET and p[0] != TX_INCR) or p[1] in seen:
                continue
            seen.add(p[1])
            i = where[p[1]]
            news[sis[i]] = news.get(sis[i], 0) + 1
        for si, k in news.items():
            near = near or STRIPE(s, si).count + k > BK_STRIPE_MAX_LOAD
        if not near:
            return None                 # the common case: no probe needed
        news = {}
        for kb in seen:                 # near the limit: count the absent ones only
            i = where[kb]
            if do_find(s, sis[i], hs[i], self.idx, kb, <uint32_t>PyBytes_GET_SIZE(kb), &off) < 0:
                news[sis[i]] = news.get(sis[i], 0) + 1
        for si, k in news.items():
            if STRIPE(s, si).count + k > BK_STRIPE_MAX_LOAD:
                return (si, STRIPE(s, si).depth)
        return None

    cdef object _txn_apply(self, tuple p, uint32_t si, uint64_t h):
        """One operation of a transaction, every stripe locked: its result, or the
        exception that failed it on the data (nothing of it applied)."""
        try:
            return self._txn_do(p, si, h)
        except StripeFull:
            return _err.SegmentFull(f"index full: stripe {si} is full and the "
                                    "transaction cannot split it while it holds it")
        except (_err.SchemaError, _err.SegmentFull, _err.RingFull, _err.ValueTooLarge,
                _err.DiskError) as e:
            return e

    cdef object _txn_do(self, tuple p, uint32_t si, uint64_t h):
        cdef Store s = self.s
        cdef bk_bucket *b = &s.bucketv[self.idx]
        cdef int code = p[0]
        cdef bytes kb = p[1], vb
        cdef uint32_t n = <uint32_t>PyBytes_GET_SIZE(kb)
        cdef uint64_t off = 0
        cdef int found = self._txn_find(si, h, kb, &off)
        cdef bint present = found >= 0 and not self._expired(off) \
            and not (ENT(s, off).flags & BK_E_HIDDEN)   # (an object's: not the user's)
        cdef bk_entry *e = ENT(s, off) if present else NULL
        cdef bk_counters *cnt = s.counters(self.idx)
        cdef int64_t expire_ms
        cdef uint8_t flags
        if code == TX_GET or code == TX_GETDEL:
            if not present:
                cnt.misses += 1
                return None
            cnt.hits += 1
            val = PyBytes_FromStringAndSize(EKEY(s, off) + n, e.vlen)
            flags = e.flags
            if code == TX_GETDEL or (e.flags & BK_E_SINGLE):
                if not do_delete_at(s, si, found, off, BK_T_DEL):
                    raise ring_full(s, "change ring full: the key was not consumed",
                                    rec_size(n, 0))
                bk_add64(&cnt.deletes, 1)
            if flags & BK_E_DECODE:     # decoded by atomic once the locks are released
                return Flagged(kb, val, flags, self.schema != 0)
            return self._decode(val) if self.schema else val
        if code == TX_EXISTS:
            return present
        if code == TX_VERSION:
            return e.version if present else None
        if code == TX_TTL:
            if not present or e.expire_ms == 0:
                return None
            return max(0, e.expire_ms - s.now()) / 1000.0
        if code == TX_DEL:
            if not present:
                return 0
            if not do_delete_at(s, si, found, off, BK_T_DEL):
                raise ring_full(s, "change ring full: the key was not deleted", rec_size(n, 0))
            bk_add64(&cnt.deletes, 1)
            return 1
        if code == TX_EXPIRE or code == TX_PERSIST:
            if not present:
                return False
            expire_ms = s.now() + p[3] if code == TX_EXPIRE else 0
            if e.expire_ms != expire_ms:
                do_touch(s, si, found, off, expire_ms)
            return True
        if code == TX_SET:
            nx, xx, single, keepttl, want_old = p[4][:5]
            codec_flag = p[4][5] if len(p[4]) > 5 else 0   # (_txn_op compressed it)
            old = None
            if want_old and present:
                old = PyBytes_FromStringAndSize(EKEY(s, off) + n, e.vlen)
                if e.flags & BK_E_DECODE:
                    old = Flagged(kb, old, e.flags, self.schema != 0)
                elif self.schema:
                    old = self._decode(old)
            if nx and present or xx and not present:
                return old if want_old else None
            if keepttl and present:
                expire_ms = e.expire_ms
            elif p[3] is None:
                expire_ms = (s.now() + b.default_ttl_ms) if b.default_ttl_ms else 0
            else:
                expire_ms = s.now() + p[3]
            if found >= 0 and not present:
                self._count_expired()
            vb = p[2]
            ver = do_set(s, si, h, self.idx, kb, n, vb, <uint32_t>PyBytes_GET_SIZE(vb),
                         expire_ms, (BK_E_SINGLE if single else 0) | codec_flag, found, off)
            bk_add64(&cnt.writes, 1)
            return old if want_old else ver
        if code == TX_INCR:
            by, initial = p[4]
            flags = 0
            if present:
                cur = parse_int_value(EKEY(s, off) + n, e.vlen)
                expire_ms = e.expire_ms
                flags = e.flags & BK_E_SINGLE
            else:
                if found >= 0:
                    self._count_expired()
                cur = initial
                if p[3] is None:
                    expire_ms = (s.now() + b.default_ttl_ms) if b.default_ttl_ms else 0
                else:
                    expire_ms = s.now() + p[3]
            new = cur + by
            if not I64_MIN <= new <= I64_MAX:
                raise _err.SchemaError(f"incr of {kb[:60]!r} by {by} leaves the "
                                       "signed 64-bit range")
            vb = str(new).encode()
            do_set(s, si, h, self.idx, kb, n, vb, <uint32_t>len(vb), expire_ms, flags,
                   found, off)
            bk_add64(&cnt.writes, 1)
            return new
        raise AssertionError(f"transaction op code {code}")

    def restore(self, key, bytes value, int64_t expire_ms=0, int flags=0, uint64_t version=0):
        """Recovery: put an entry back as the log recorded it (raw value, absolute
        expiry, flags, version), overwriting whatever the key holds. Returns the
        version. Logged only if the store is logging (not during a replay)."""
        cdef Store s = self.s
        cdef bk_bucket *b
        cdef bytes kb
        cdef uint32_t n, vlen, si
        cdef uint64_t h, off
        cdef int found
        s._writable()
        b = self._b()
        kb = as_key(s, key)
        n = <uint32_t>PyBytes_GET_SIZE(kb)
        vlen = <uint32_t>PyBytes_GET_SIZE(value)
        if vlen > s.max_value:
            raise _err.ValueTooLarge(f"value of {vlen} bytes exceeds the limit of "
                                     f"{s.max_value} bytes (max_value)")
        h = khash(self.idx, kb, n)
        si = stripe_of(s, h)
        prefetch_for_write(s, si, h)
        if logs(s, b):
            ring_wait_space(s, rec_size(n, vlen))
        while True:                     # again after a StripeFull (GROWTH, table.pxi)
            try:
                si = lock_key(s, si, h)
                try:
                    self._bl()
                    found = do_find(s, si, h, self.idx, kb, n, &off)
                    ver = do_set(s, si, h, self.idx, kb, n, value, vlen, expire_ms,
                                 <uint8_t>(flags & BK_E_CARRY), found, off,
                                 version)
                finally:
                    unlock_stripe(s, si)
            except StripeFull as full:
                grow_past(s, full.si, full.depth)
                si = stripe_of(s, h)
                continue
            break
        s._after_write(False)           # (recovery does not wait for the fsync)
        return ver

    def restore_ttl(self, key, int64_t expire_ms, uint64_t version=0):
        """Recovery: set the key's absolute expiry (0: none) and version as logged.
        False when there is no such key."""
        cdef Store s = self.s
        cdef bytes kb
        cdef uint32_t n, si
        cdef uint64_t h, off
        cdef int slot
        s._writable()
        self._b()
        kb = as_key(s, key)
        n = <uint32_t>PyBytes_GET_SIZE(kb)
        h = khash(self.idx, kb, n)
        si = stripe_of(s, h)
        if logs(s, &s.bucketv[self.idx]):
            ring_wait_space(s, rec_size(n, 0))
        si = lock_key(s, si, h)
        try:
            self._bl()
            slot = do_find(s, si, h, self.idx, kb, n, &off)
            if slot < 0:
                return False
            do_touch(s, si, slot, off, expire_ms, version)
        finally:
            unlock_stripe(s, si)
        return True

    def flush(self):
        """Remove every key of the bucket; returns how many."""
        self.s._writable()
        self._b()
        self.s.rec_flags = BK_RF_FLUSH          # the feed tells a flush's deletes apart
        try:
            return remove_where(self.s, self.idx, -1)
        finally:
            self.s.rec_flags = 0

    def stats(self):
        self._b()
        return bucket_stats(self.s, self.idx)


cdef double READONLY_WAIT_PERIODS = 3   # a read-only reader waits this many of the
                                        # writer's repair periods for a stripe left
                                        # mid-write (repair.interval)
cdef double READONLY_WAIT_S = 5.0       # ... or this long when no writer published one


cdef double readonly_wait_bound(Store s) noexcept:
    """How long a read-only reader waits for a stripe left mid-write: a few of the
    writer's repair periods (THE REPAIR PASS in table.pxi), so a repair the writer
    makes always comes within it."""
    cdef uint32_t period = bk_load_acq32(&s.hdr.repair_period_ms)
    if period == 0:
        return READONLY_WAIT_S
    return READONLY_WAIT_PERIODS * period / 1000.0


cdef double readonly_wait(Store s, double since) except -1:
    """A read-only attach cannot take a lock to repair a stripe a dead writer left
    mid-write: wait for the writer process's repair pass (or any read-write process)
    to do it, bounded by readonly_wait_bound."""
    cdef double now = time.monotonic()
    cdef double bound
    if since == 0:
        return now
    bound = readonly_wait_bound(s)
    if now - since > bound:
        w = s.hdr.writer_pid
        alive = w != 0 and bk_pid_alive(w)
        raise _err.BuktError(
            f"a stripe stays mid-write (a process died inside a write) and the writer "
            f"process is not repairing it: no repair within {bound:g} s"
            + (f" although writer pid {w} runs (is it stuck? see its log)" if alive else
               " (no writer process runs: start `bukt writer` or `bukt serve`)")
            + "; `bukt status` counts the stripes awaiting repair")
    time.sleep(0.0005)
    return since


cdef int64_t ttl_ms(object ttl) except -1:
    try:
        t = float(ttl)
    except (TypeError, ValueError):
        raise _err.InvalidArgument(f"ttl {ttl!r} is not a number of seconds") from None
    if not t > 0 or t != t or t > 1e11:
        raise _err.InvalidArgument(f"ttl {ttl!r}: a number of seconds above 0")
    return max(1, <int64_t>(t * 1000 + 0.5))


cdef int remove_where(Store s, int bidx, int64_t expired_before) except -1:
    """Delete, stripe by stripe, the entries of bucket `bidx` (all of them when
    expired_before < 0), or, when bidx < 0, the entries of any bucket that expired
    at or before `expired_before`. Returns how many."""
    cdef uint32_t si
    cdef int removed = 0
    cdef uint64_t nread = 0
    for si in range(s.nstripes):
        removed += remove_in_stripe(s, si, bidx, expired_before, &nread)
    maybe_recount(s)
    return removed


cdef int remove_in_stripe(Store s, uint32_t si, int bidx, int64_t expired_before,
                          uint64_t *nread) except -1:
    """Delete stripe si's entries that remove_where describes, under its lock, and set
    the stripe's expiry bound to the earliest expiry left: the walk reads every entry
    with writers shut out, so the bound is exact (THE EXPIRY BOUND in core.pyx). Adds
    the entry headers it read to *nread."""
    cdef bk_stripe *st = STRIPE(s, si)
    cdef uint64_t *slots = SLOTS_OF(s, si)
    cdef uint64_t w, off
    cdef uint32_t i = 0
    cdef int removed = 0
    cdef int64_t exp, earliest = BK_NO_EXPIRY
    cdef bk_entry *e
    cdef uint16_t eb
    cdef bint hit, expired
    lock_stripe(s, si)
    try:
        while i < SLOTS:
            w = slots[i]
            if w == 0:
                i += 1
                continue
            off = w & BK_OFF_MASK
            e = ENT(s, off)
            nread[0] += 1
            eb = e.bucket
            exp = e.expire_ms
            if bidx >= 0:
                hit = eb == bidx
            else:
                hit = exp != 0 and exp <= expired_before
            if not hit:
                # it stays. A deletion's backward shift moves an entry not yet seen
                # only to a slot not yet passed (one that wraps past slot 511 may move
                # an entry seen already, seen then twice): each entry is seen at least
                # once, which is all a minimum needs
                if exp != 0 and exp < earliest:
                    earliest = exp
                i += 1
                continue
            # an entry already expired goes as an expiration, and is not counted as
            # one the flush removed
            expired = bidx < 0 or (e.expire_ms != 0 and e.expire_ms <= s.now())
            # the shift refills slot i, so it is looked at again
            if not do_delete_at(s, si, i, off, BK_T_EXPIRED if expired else BK_T_DEL):
                raise ring_full(s, "change ring full: the writer process is down or "
                                "behind; run again when it has caught up", 0)
            if expired:
                bk_fetch_add_u64(&s.hdr.expirations, 1)
                bk_add64(&s.counters(eb).expirations, 1)
            if bidx < 0 or not expired:     # expire_some counts expirations, flush live keys
                removed += 1
        # the whole stripe was walked (a RingFull above leaves the bound as it was,
        # low enough): the one place besides repair where the bound may rise
        bk_store_rlx_i64(&st.min_expire_ms, earliest)
    finally:
        unlock_stripe(s, si)
    return removed


cdef dict bucket_stats(Store s, uint16_t bidx):
    cdef uint32_t r
    cdef bk_counters *c
    cdef int64_t reads = 0, hits = 0, misses = 0, writes = 0, deletes = 0, ev = 0, ex = 0
    cdef int64_t damaged = 0
    for r in range(s.max_procs):
        c = s.counters_base + <uint64_t>r * s.max_buckets + bidx
        reads += c.hits + c.misses
        hits += c.hits
        misses += c.misses
        writes += c.writes
        deletes += c.deletes
        ev += c.evictions
        ex += c.expirations
        damaged += c.integrity_errors
    return {"reads": reads, "writes": writes, "hits": hits, "misses": misses,
            "deletes": deletes, "keys": s.bucketv[bidx].keys,
            "bytes": s.bucketv[bidx].bytes, "memory": s.bucketv[bidx].mem,
            "max_memory": s.bucketv[bidx].max_memory,     # 0: no limit (stats are numbers)
            # raw minus stored bytes of its compressed values (bukt/codec.py)
            "bytes_saved": s.bucketv[bidx].comp_saved,
            "evictions": ev, "expirations": ex, "integrity_errors": damaged}


cdef list collect_keys(Store s, uint32_t si, object arg):
    """Stripe si's live keys of bucket arg[0] with the prefix arg[1], read without
    validation (read_at_cursor validates)."""
    cdef uint16_t bidx = arg[0]
    cdef bytes prefix = arg[1]
    cdef uint64_t *slots = SLOTS_OF(s, si)
    cdef uint64_t w, off
    cdef uint32_t i, klen, plen = <uint32_t>PyBytes_GET_SIZE(prefix)
    cdef int64_t now = s.now(), exp
    cdef bk_entry *e
    cdef list out = []
    for i in range(SLOTS):
        w = bk_load_rlx64(&slots[i])
        if w == 0:
            continue
        off = w & BK_OFF_MASK
        if off < s.arena_off or off + 32 > s.size:
            continue
        e = ENT(s, off)
        klen = bk_load_rlx32(&e.klen)
        if e.bucket != bidx or klen < plen or klen > s.max_key \
                or off + 32 + klen > s.size:
            continue
        exp = bk_load_rlx_i64(&e.expire_ms)
        if exp and exp <= now:
            continue
        if bk_load_acq8(&e.flags) & BK_E_HIDDEN:
            continue                        # an object's internal entry
        if plen and memcmp(EKEY(s, off), <const char *>prefix, plen) != 0:
            continue
        out.append(PyBytes_FromStringAndSize(EKEY(s, off), klen))
    return out


cdef list collect_hidden(Store s, uint32_t si, object arg):
    """Stripe si's HIDDEN keys of bucket arg, expired ones too (the objects layer's
    reclaim sweep), read without validation (read_at_cursor validates)."""
    cdef uint16_t bidx = arg
    cdef uint64_t *slots = SLOTS_OF(s, si)
    cdef uint64_t w, off
    cdef uint32_t i, klen
    cdef bk_entry *e
    cdef list out = []
    for i in range(SLOTS):
        w = bk_load_rlx64(&slots[i])
        if w == 0:
            continue
        off = w & BK_OFF_MASK
        if off < s.arena_off or off + 32 > s.size:
            continue
        e = ENT(s, off)
        klen = bk_load_rlx32(&e.klen)
        if e.bucket != bidx or klen > s.max_key or off + 32 + klen > s.size:
            continue
        if bk_load_acq8(&e.flags) & BK_E_HIDDEN:
            out.append(PyBytes_FromStringAndSize(EKEY(s, off), klen))
    return out


# -- PREFETCH: hints for a caller that knows its next keys (bukt/tcp/_epoll.pyx, STAGING) ----

cdef void prefetch_key(object bucket, const char *k, uint32_t n, int stage) noexcept:
    """Start the memory fetches a read of key k of `bucket` will wait on, so that they
    overlap other work (a get's probe otherwise waits for three lines from memory in a
    row: the slot, the entry's header, its value). Stage 1 fetches the line of the
    key's stripe that holds its seq and depth, its home slot line and its stamp; stage
    2, some time later, reads the slots (racy_entry: nothing here is trusted, the real
    read validates under the seq) and fetches the entry whose tag matches. Takes no
    lock, writes nothing, never fails."""
    cdef Bucket b = <Bucket>bucket
    cdef Store s = b.s
    cdef uint64_t h, o
    cdef uint32_t si, home
    if s is None or not s.mapped or n == 0:    # (close() leaves hdr pointing at
        return                                  # unmapped memory: Store._open)
    h = khash(b.idx, k, n)
    si = stripe_of(s, h)
    home = home_of(h)
    if stage == 1:
        bk_prefetch_r(&STRIPE(s, si).seq)      # seq and depth, fast_read's first loads
        bk_prefetch_r(SLOTS_OF(s, si) + home)
        if not s.readonly:
            bk_prefetch_w(STAMPS_OF(s, si) + home)
        return
    o = racy_entry(s, SLOTS_OF(s, si), home, tag_of(h), 8)
    if o:
        bk_prefetch_r(ENT(s, o))                # header and key
        bk_prefetch_r(<char *>ENT(s, o) + 64)   # the value's first lines, as
        bk_prefetch_r(<char *>ENT(s, o) + 128)  # fast_read fetches them


# -- a GET into a buffer a face lays out (bukt/tcp/_wire.pyx, fast_get) ------------------
# read_into and prefetch_key are declared, with what read_into finds (READ_HIT, ...), in
# bukt/_core.pxd, the core's C boundary, which the faces cimport.

cdef object read_into(object bucket, const char *k, uint32_t n, Py_ssize_t room,
                      int *found):
    """Bucket.get(k) of a bytes bucket, without the Python call: the value copied once
    from the entry into a new bytes object, after `room` bytes the caller reserved in
    front of it for its own header (the core writes nothing there and knows no
    protocol). *found: READ_HIT (that object), READ_MISS (None), both counted as
    Bucket.get counts them; or READ_HANDED_BACK (None) for everything Bucket.get must
    decide: a typed bucket (int, str), a closed store or retired segment, a dropped
    bucket, a key of 0 or more than max_key bytes, whatever fast_read does not
    settle (a single-read key, an expired one, a contended stripe), and an entry
    with an object bit (BK_E_OBJECT: a manifest or a compressed value, which the
    value hooks decode, or a hidden entry, a miss to the user)."""
    cdef Bucket b = <Bucket>bucket
    cdef Store s = b.s
    cdef bk_bucket *m
    cdef int status
    cdef snap_t snap
    found[0] = READ_HANDED_BACK
    if b.schema or s is None or not s.mapped or n == 0 or n > s.max_key or room < 0:
        return None
    if bk_load_rlx32(&s.hdr.retired) or b.seg_epoch != s.seg_epoch:
        return None                                 # Bucket.get re-attaches (RETIREMENT)
    m = &s.bucketv[b.idx]
    if m.gen != b.gen or m.state != 1:
        return None
    val = fast_read(s, b.idx, k, n, COPY_ROOM, &status, &snap, room)
    if status == HIT:
        if snap.flags & BK_E_OBJECT:                # a manifest, a compressed value, a
            return None                             # hidden entry: Bucket.get decides
        s.counters(b.idx).hits += 1
        found[0] = READ_HIT
        return val
    if status == MISS:
        s.counters(b.idx).misses += 1
        found[0] = READ_MISS
    return None
