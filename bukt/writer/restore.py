"""Between the log and the table: replay log records into a store (recovery), and read
a store back out as log records (the snapshot a compaction writes as a base file).

REPLAY (`Loader`). The writer creates a fresh segment, turns the store's logging off
(store.set_logging(False): the replayed writes reach the table but not the ring, so
they are not logged a second time) and applies the records of datadir.replay() in
order. Each record states a result (bukt/writer/aof.py), and replay applies it as one:

    BUCKET_CREATE  the bucket exists, empty, with these settings: an existing bucket of
                   that name is dropped first. That is what the record means (at that
                   point of the history the bucket was new), and over a snapshot taken
                   while writes went on it is still right: every key the snapshot holds
                   for a bucket created after the base's seq is set again by a later
                   record of the log.
    BUCKET_DROP    drop it, if it exists
    TOKEN_ADD      restore_token with the logged id and hash
    TOKEN_REVOKE   revoke_token
    SET            bucket.restore(key, raw value, absolute expiry, flags, version)
    DELETE, EXPIRE, EVICT  delete the key
    SET_TTL        bucket.restore_ttl(key, absolute expiry, version): the key keeps its
                   value
    FLUSH          bucket.flush()

A key record for a bucket that does not exist (its BUCKET_CREATE was in a part that
load_good skipped) is counted and reported once per bucket, not fatal.

FINAL STATE (`final_sets`, `FinalLoader`, `memory_needed`). Replaying history into a
segment that was full re-runs its evictions with other victims (the slabs are assigned
in another order), so a replay that evicted, or that a full segment refused, is not the
live set. The writer then loads each key's final state instead, in two passes over the
same records: final_sets finds, for every key, the ordinal of its final SET (none when
a DELETE, EXPIRE, EVICT, FLUSH, BUCKET_DROP or BUCKET_CREATE came after it), and
FinalLoader applies the bucket and token records, those SETs, and the SET_TTLs after
them, nothing else. What it loads was live at once in the segment that wrote the files,
so it fits in one of the same size: each class gets just the pages its chunks fill.
memory_needed says how large a segment must be for it when it does not (design.md,
Recovery).

SNAPSHOT (`snapshot`). BUCKET_CREATE and TOKEN_ADD for every bucket (persisted or not:
definitions and tokens are logged for all buckets), then SET for every live entry of a
persisted bucket, read stripe by stripe with store.dump_stripes while writers carry on.
`snapshot_chunks` is the same, already encoded: what a compaction writes and a
replica's full copy streams.

The on-disk single-read flag is aof.SINGLE_READ (bit 0); the core's is BK_E_SINGLE
(bukt._core.ENTRY_SINGLE, bit 2). The objects' bits (manifest, hidden, zstd, lz4) have
the same values on disk and in the core (aof.OBJECT_FLAGS). log_flags and core_flags
below are where one becomes the other (bukt/writer/ringlog.py, bukt/cli/dump.py and
the core's bulk loader, cext/bulkload.pxi, use them or their C twin; the compiled
encoders, _logscan.pyx's encode_ring and bulkload.pxi's dump_encoded, are twins that
tests/unit/test_log_encode.py holds to the same bytes).
"""
import logging
from typing import Iterator

from bukt.writer.aof import (BUCKET_CREATE, BUCKET_DROP, DELETE, EVICT, EXPIRE, FLUSH, SET, SET_TTL,
                  SINGLE_READ, OBJECT_FLAGS, TOKEN_ADD, TOKEN_REVOKE, Encoded, Record, encode)
from bukt._core import ENTRY_HEADER as ENTRY_HDR, ENTRY_SINGLE as CORE_SINGLE, BulkLoad, \
    DumpPlan, dump_encoded
from bukt._core import ENTRY_FLAGS as CORE_FLAGS
from bukt.errors import BucketNotFound
from bukt.writer.buckettable import read_table

__all__ = ["Loader", "snapshot", "snapshot_chunks", "settings_from_meta", "CORE_SINGLE",
           "Cancelled", "log_flags", "core_flags",
           "DUMP_STRIPES", "final_sets", "FinalLoader", "memory_needed"]

log = logging.getLogger("bukt.writer")

assert CORE_FLAGS & ~CORE_SINGLE == OBJECT_FLAGS, "the objects' bits: one value each"


def log_flags(core: int) -> int:
    """A log record's flags for an entry whose core flags are `core`."""
    return (core & OBJECT_FLAGS) | (SINGLE_READ if core & CORE_SINGLE else 0)


def core_flags(logged: int) -> int:
    """An entry's core flags for a log record's flags `logged`."""
    return (logged & OBJECT_FLAGS) | (CORE_SINGLE if logged & SINGLE_READ else 0)

# Stripes per dump_stripes call: 64 x 512 slots keeps each call (which holds the GIL)
# around a millisecond, so the writer's drain loop runs between calls.
DUMP_STRIPES = 64


class Cancelled(Exception):
    """The snapshot was cancelled (the writer is stopping)."""


class Loader:
    """Applies log records to a store whose logging is off."""

    def __init__(self, store, bulk=True):
        self.store = store
        self.bulk = bulk            # False: every record through apply's loop (tests
                                    # compare the two paths)
        self._buckets = {}          # name -> Bucket (cache; dropped buckets removed)
        self._schema = {}           # name -> schema
        self.missing = {}           # bucket name -> key records skipped
        self.applied = 0

    def _bucket(self, name):
        b = self._buckets.get(name)
        if b is None:
            try:
                b = self.store.bucket(name)
            except BucketNotFound:
                if name not in self.missing:
                    log.warning("recovery: records for bucket %r, which the log never "
                                "created (skipped)", name)
                self.missing[name] = self.missing.get(name, 0) + 1
                return None
            self._buckets[name] = b
            self._schema[name] = self.store.bucket_info(name)["schema"]
        return b

    def apply(self, records) -> int:
        """Applies every record of the iterable; returns how many were applied. Given
        a fresh datadir.Recovery, the key records go through the compiled bulk path
        (cext/bulkload.pxi) and only the others through this loop."""
        n = 0
        bucket = self._bucket
        attach = getattr(records, "attach_bulk", None) if self.bulk else None
        if attach is not None:
            attach(BulkLoad(self.store))
            before = records.records
        for r in records:
            t = r[0]
            if t == SET:                       # the fast path: most records are SETs
                b = self._buckets.get(r[2]) or bucket(r[2])
                if b is not None:
                    b.restore(r[3], r[4], r[5], core_flags(r[6]), r[7])
            elif t == DELETE or t == EXPIRE or t == EVICT:
                b = self._buckets.get(r[2]) or bucket(r[2])
                if b is not None:
                    b.delete_entry(r[3])       # (the raw delete: hidden keys too)
            else:
                self._apply_other(r)
            n += 1
        if attach is not None:
            n = records.records - before    # this loop's and the bulk path's
        self.applied += n
        return n

    def _apply_other(self, r: Record):
        store, t, name = self.store, r.type, r.bucket
        if t == SET_TTL:
            b = self._bucket(name)
            if b is None:
                return
            b.restore_ttl(r.key, r.expire_ms, r.version)
        elif t == FLUSH:
            b = self._bucket(name)
            if b is not None:
                b.flush()
        elif t == BUCKET_CREATE:
            s = r.settings
            if name in store.buckets():
                store.drop_bucket(name)
            self._forget(name)
            store.create_bucket(name, schema=s.get("schema", "bytes"),
                                eviction=s.get("eviction", "lru"),
                                persist=bool(s.get("persist", True)),
                                default_ttl=s.get("default_ttl"),
                                max_memory=s.get("max_memory"),
                                compression=s.get("compression"),
                                compression_threshold=s.get("compression_threshold"),
                                compression_min_saving=s.get("compression_min_saving"))
            self.missing.pop(name, None)
        elif t == BUCKET_DROP:
            if name in store.buckets():
                store.drop_bucket(name)
            self._forget(name)
        elif t == TOKEN_ADD:
            if self._bucket(name) is not None:
                store.restore_token(name, r.token_id, r.key, r.perms)
        elif t == TOKEN_REVOKE:
            if self._bucket(name) is not None:
                store.revoke_token(name, r.token_id)

    def _forget(self, name):
        self._buckets.pop(name, None)
        self._schema.pop(name, None)


def final_sets(records, sizes=False) -> dict:
    """{bucket: {key: the ordinal, in `records`, of the key's final SET}} over the keys
    live after the records (FINAL STATE above); with `sizes`, the entry's bytes in the
    segment instead of the ordinal. Key records of a bucket never created are left out,
    as the Loader leaves them out."""
    live = {}
    get = live.get
    for i, r in enumerate(records):
        t = r[0]
        if t == SET:
            d = get(r[2])
            if d is not None:
                d[r[3]] = ENTRY_HDR + len(r[3]) + len(r[4]) if sizes else i
        elif t == DELETE or t == EXPIRE or t == EVICT:
            d = get(r[2])
            if d is not None:
                d.pop(r[3], None)
        elif t == FLUSH:
            if r[2] in live:
                live[r[2]] = {}
        elif t == BUCKET_CREATE:
            live[r[2]] = {}
        elif t == BUCKET_DROP:
            live.pop(r[2], None)
    return live


class FinalLoader(Loader):
    """Loads only each key's final state: given final_sets(same records), applies the
    bucket and token records, every key's final SET and the SET_TTLs after it. A key an
    `eviction: none` bucket cannot take (SegmentFull) is counted in `refused` and the
    load goes on, so that memory_needed hears of every entry; `sizes` counts the
    entries' bytes ({entry bytes: count}) of every final SET."""

    def __init__(self, store, final):
        super().__init__(store, bulk=False)
        self.final = final
        self.refused = 0
        self.sizes = {}

    def apply(self, records) -> int:
        from bukt.errors import SegmentFull
        n = 0
        final, sizes = self.final, self.sizes
        for i, r in enumerate(records):
            t = r[0]
            if t == SET or t == SET_TTL:
                at = final.get(r[2], {}).get(r[3])
                if at is None or (at != i if t == SET else at > i):
                    continue
                b = self._buckets.get(r[2]) or self._bucket(r[2])
                if b is None:
                    continue
                if t == SET_TTL:
                    b.restore_ttl(r.key, r.expire_ms, r.version)
                else:
                    size = ENTRY_HDR + len(r[3]) + len(r[4])
                    sizes[size] = sizes.get(size, 0) + 1
                    try:
                        b.restore(r[3], r[4], r[5], core_flags(r[6]), r[7])
                    except SegmentFull:
                        self.refused += 1
            elif t == DELETE or t == EXPIRE or t == EVICT or t == FLUSH:
                continue        # what they take away was never loaded
            else:
                self._apply_other(r)
            n += 1
        self.applied += n
        return n


def memory_needed(sizes: dict, cfg) -> int:
    """The smallest `memory` (a whole MiB) whose segment, made as the writer makes it
    from `cfg`, holds entries of these sizes ({entry bytes: count}) loaded into a fresh
    segment: each class's chunks on whole slabs, and an index of no more than
    BK_SPLIT_AT keys a stripe on average (a grown index then keeps every stripe below
    its cap of BK_STRIPE_MAX_LOAD)."""
    from bisect import bisect_left
    from bukt._core import _layout, SPLIT_AT
    keys = sum(sizes.values())
    lim = cfg.limits

    def fits(memory):
        plan = _layout(memory, lim.max_key, lim.max_value, lim.max_buckets, 0,
                       lim.ring_size, 64, 1.25)
        chunk = [c[0] for c in plan["classes"]]
        counts = [0] * len(chunk)
        for size, n in sizes.items():
            counts[min(bisect_left(chunk, size), len(chunk) - 1)] += n
        pages = sum(-(-n // c[1]) * c[2] for n, c in zip(counts, plan["classes"]) if n)
        return pages <= plan["npages"] and keys <= plan["nstripes"] * SPLIT_AT

    mib = 1 << 20
    lo, hi = 1, max(cfg.memory // mib, 1)
    while True:
        try:
            if fits(hi * mib):
                break
        except Exception:
            pass                    # too small for even the fixed regions
        lo, hi = hi, hi * 2
    while lo < hi:                  # the smallest that fits, in (lo, hi]
        mid = (lo + hi) // 2
        try:
            ok = fits(mid * mib)
        except Exception:
            ok = False
        if ok:
            hi = mid
        else:
            lo = mid + 1
    return hi * mib


def snapshot(store, seq: int, cancel=None) -> Iterator[Record]:
    """The live state of `store` as base-file records covering `seq` (bucket
    definitions, tokens, then entries of persisted buckets). `cancel`: an Event that,
    once set, stops the snapshot with Cancelled."""
    live = [s for s in read_table(store) if s.state == 1]
    for s in live:
        yield Record.bucket_create(seq, s.name, s.settings)
        for token_id, perms, token_hash in s.tokens:
            yield Record.token_add(seq, s.name, token_hash, token_id, perms)
    persisted = {s.name for s in live if s.persist}
    start = 0
    new = tuple.__new__
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled("snapshot cancelled")
        entries, start = store.dump_stripes(start, DUMP_STRIPES)
        for name, key, value, expire_ms, flags, version in entries:
            if name in persisted:
                yield new(Record, (SET, seq, name, key, value, expire_ms,
                                   log_flags(flags), version))
        if start == 0:
            return


def snapshot_chunks(store, seq: int, cancel=None) -> Iterator[Encoded]:
    """snapshot()'s records already encoded, as aof.Encoded pieces: the bucket and
    token records one each, then the entries of DUMP_STRIPES stripes at a time, written
    as records by the core (cext/bulkload.pxi: dump_encoded). The same bytes as
    aof.encode of each record of snapshot(), several times faster (a tuple an entry
    and encoding it in Python were most of a compaction's time and of the primary's
    in a replica's full copy): what a compaction writes and a full copy streams
    (bukt/replica/source.py)."""
    live = [s for s in read_table(store) if s.state == 1]
    for s in live:
        yield Encoded(encode(Record.bucket_create(seq, s.name, s.settings)), 1)
        for token_id, perms, token_hash in s.tokens:
            yield Encoded(encode(Record.token_add(seq, s.name, token_hash, token_id, perms)), 1)
    plan = DumpPlan(store, seq, [(s.idx, s.gen, s.name) for s in live if s.persist])
    start = 0
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled("snapshot cancelled")
        data, n, start = dump_encoded(store, start, DUMP_STRIPES, plan)
        if n:
            yield Encoded(data, n)
        if start == 0:
            return


def settings_from_meta(change: dict) -> dict:
    """BUCKET_CREATE settings from a ring META "create" change."""
    ttl_ms = change.get("default_ttl_ms") or 0
    s = {"default_ttl": ttl_ms / 1000.0 if ttl_ms else None,
         "eviction": change.get("eviction", "lru"),
         "persist": bool(change.get("persist", True)),
         "schema": change.get("schema", "bytes")}
    if change.get("max_memory"):
        s["max_memory"] = change["max_memory"]     # (absent: no limit)
    if change.get("compression", "none") != "none":  # (absent: none)
        s.update(compression=change["compression"],
                 compression_threshold=change["comp_threshold"],
                 compression_min_saving=change["comp_min_saving"])
    return s

