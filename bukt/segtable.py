"""A read-only look at the segment's bucket table, for the writer process.

The writer turns ring records into log records. A ring record names its bucket by slot
and generation (bucket_idx, bucket_gen); the log names it by name. META records in the
ring say which (idx, gen) is which name from the moment they are drained, but the writer
also needs the table as it stands when it starts (the buckets made before the ring's
tail), and a snapshot needs every token's hash. The Store API gives neither the
(idx, gen) of a bucket nor a token's hash (docs/api.md; asked of the core in issue 3's
report as `store.bucket_table()`), so this module reads them from the mapped segment
itself, following cext/includes/segment.h byte for byte:

    bk_header: ... buckets_off u64 @112, max_buckets u32 @120 ...
    bk_bucket (776 bytes): state u32 @0 (0 free, 1 live, 2 dropping), gen u32 @4,
        name char[65] @8, schema u8 @73, eviction u8 @74, persist u8 @75,
        default_ttl_ms i64 @80, created_ms i64 @88, next_token_id u32 @96,
        tokens bk_token[16] @104 (id u32, perms u32, hash u8[32]: 40 bytes each)

The segment's format version (1) pins that layout; a segment of another version is
refused by attach() before this runs, and `read_table` cross-checks what it read
against store.buckets() so a silent layout change fails loudly instead of misnaming
records. A torn read (a bucket changing while it is read) is possible and harmless:
the callers read the table only to seed a map that META records then keep current,
and re-read it when a record names a slot they do not know.
"""
import ctypes
import mmap
import os
from typing import NamedTuple

__all__ = ["BucketSlot", "read_table", "SCHEMAS", "EVICTIONS", "LayoutError"]

SCHEMAS = ("bytes", "int", "str")
EVICTIONS = ("lru", "none")
_FORMAT = 1
_MAX_TOKENS = 16


class LayoutError(RuntimeError):
    """The segment does not look as segment.h says; the writer cannot name buckets."""


class _Token(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("perms", ctypes.c_uint32),
                ("hash", ctypes.c_uint8 * 32)]


class _Bucket(ctypes.Structure):
    _fields_ = [("state", ctypes.c_uint32), ("gen", ctypes.c_uint32),
                ("name", ctypes.c_char * 65), ("schema", ctypes.c_uint8),
                ("eviction", ctypes.c_uint8), ("persist", ctypes.c_uint8),
                ("_pad0", ctypes.c_uint8 * 4), ("default_ttl_ms", ctypes.c_int64),
                ("created_ms", ctypes.c_int64), ("next_token_id", ctypes.c_uint32),
                ("_pad1", ctypes.c_uint32), ("tokens", _Token * _MAX_TOKENS),
                ("keys", ctypes.c_int64), ("bytes", ctypes.c_int64),
                ("_pad2", ctypes.c_uint8 * 16)]


class _Head(ctypes.Structure):          # the first fields of bk_header
    _fields_ = [("magic", ctypes.c_uint64), ("format", ctypes.c_uint32),
                ("header_size", ctypes.c_uint32), ("total_size", ctypes.c_uint64),
                ("generation", ctypes.c_uint64), ("created_ms", ctypes.c_int64),
                ("mode", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("stripes_off", ctypes.c_uint64), ("slots_off", ctypes.c_uint64),
                ("nstripes", ctypes.c_uint32), ("slots_per_stripe", ctypes.c_uint32),
                ("classes_off", ctypes.c_uint64), ("nclasses", ctypes.c_uint32),
                ("page_size", ctypes.c_uint32), ("pagemap_off", ctypes.c_uint64),
                ("arena_off", ctypes.c_uint64), ("npages", ctypes.c_uint64),
                ("buckets_off", ctypes.c_uint64), ("max_buckets", ctypes.c_uint32),
                ("max_procs", ctypes.c_uint32)]


assert ctypes.sizeof(_Bucket) == 776 and ctypes.sizeof(_Token) == 40
assert _Head.buckets_off.offset == 112 and _Head.max_buckets.offset == 120


class BucketSlot(NamedTuple):
    idx: int
    gen: int
    state: int                 # 1 live, 2 dropping
    name: str
    schema: str
    eviction: str
    persist: bool
    default_ttl_ms: int
    tokens: tuple              # ((id, perms, hash bytes), ...)

    @property
    def settings(self) -> dict:
        """As a BUCKET_CREATE record carries them (bukt/aof.py)."""
        return {"default_ttl": self.default_ttl_ms / 1000.0 if self.default_ttl_ms else None,
                "eviction": self.eviction, "persist": self.persist, "schema": self.schema}


def read_table(store, tries=5) -> list:
    """The live and dropping buckets of `store`'s segment, as BucketSlots. Retries when
    a bucket changed between the read and the cross-check."""
    for attempt in range(tries):
        try:
            return _read_table(store)
        except LayoutError:
            if attempt == tries - 1:
                raise


def _read_table(store) -> list:
    path = f"/dev/shm/bukt-{store.name}"
    fd = os.open(path, os.O_RDONLY)
    try:
        head = _Head.from_buffer_copy(os.pread(fd, ctypes.sizeof(_Head), 0))
        if head.format != _FORMAT or head.generation != store.generation:
            raise LayoutError(f"{path}: format {head.format}, generation {head.generation}: "
                              f"not the segment this writer attached")
        size = ctypes.sizeof(_Bucket) * head.max_buckets
        if head.buckets_off + size > head.total_size:
            raise LayoutError(f"{path}: bucket table outside the segment")
        m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    try:
        raw = m[head.buckets_off:head.buckets_off + size]
    finally:
        m.close()
    out = []
    for i in range(head.max_buckets):
        b = _Bucket.from_buffer_copy(raw, i * ctypes.sizeof(_Bucket))
        if b.state not in (1, 2):
            continue
        if b.schema >= len(SCHEMAS) or b.eviction >= len(EVICTIONS):
            raise LayoutError(f"{path}: bucket slot {i} has schema {b.schema}, eviction "
                              f"{b.eviction}: the layout is not segment.h's")
        tokens = tuple((t.id, t.perms, bytes(t.hash)) for t in b.tokens if t.id)
        out.append(BucketSlot(i, b.gen, b.state, b.name.decode(errors="replace"),
                              SCHEMAS[b.schema], EVICTIONS[b.eviction], bool(b.persist),
                              b.default_ttl_ms, tokens))
    live = {s.name for s in out if s.state == 1}
    if not live <= set(store.buckets()) | {s.name for s in out if s.state == 2}:
        raise LayoutError(f"{path}: bucket names read from the table ({sorted(live)}) do "
                          f"not match store.buckets() ({sorted(store.buckets())})")
    return out
