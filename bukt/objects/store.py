"""Objects: values larger than one entry, stored in chunks (docs/design.md, "Objects").

    put(bucket, key, source, ...) -> Manifest (None when nx/xx said no)
    open(bucket, key, take=False) -> ObjectReader | None
    head(bucket, key) -> Manifest | None
    delete(bucket, key) -> bool

PUT streams: it reads the source a chunk at a time, hashes it (SHA-256, and MD5 for S3's
ETag), writes each chunk as a hidden entry under a fresh object id, and publishes the
manifest LAST with one put_entry (flags MANIFEST) that carries the caller's ttl,
single_read and nx/xx/if_version. Until that write nothing of the new object is
visible; after it, all of it is. A put that fails (digest, condition, a full segment,
an exception of the source) deletes what it wrote at once: no reader can hold chunks
of an object that was never published.

READ: a reader registers (store.object_reader_enter) BEFORE it reads the manifest and
stays registered until it is done. The reclaim sweep (bukt/objects/reclaim.py) deletes
the chunks of a retired object only once every registered reader started after the
retirement, so a reader that holds a manifest always finds its chunks, unless
they were evicted: then the object is gone (ObjectGone; the manifest is removed if it
still names that object) and nothing partial is returned as whole. A whole read checks
the SHA-256 before it hands over the last piece; every chunk is checked against its
CRC-32 (so a ranged read is checked too).

The put logic is written once, as a generator of the core calls it needs (`_put_steps`),
and driven by one loop (`_drive`), given how to read the body and how to write: `put`
(direct calls, run to its end without an event loop) and `aput` (HTTP: each write
through the ring's async wait, the body read from an async stream).
"""
import asyncio
import hashlib
import time

from bukt import _core, codec
from bukt.errors import (BuktError, LimitExceeded, RingFull, ValueTooLarge,
                         VersionMismatch)
from bukt.objects import manifest as mf
from bukt.objects.manifest import (DigestMismatch, IntegrityError, Manifest,
                                   ObjectGone, ObjectTooLarge)
from bukt.owners import identity
from bukt.writewait.ringroom import rec_room

F_SINGLE, F_MANIFEST, F_HIDDEN = _core.ENTRY_SINGLE, _core.ENTRY_MANIFEST, _core.ENTRY_HIDDEN
F_CODECS = _core.ENTRY_ZSTD | _core.ENTRY_LZ4

DEFAULT_MAX_OBJECT = 64 << 20
_settings = {"max_object": None, "read_limit": None, "read_limit_reason": ""}
_UNSET = object()


def configure(max_object=_UNSET, read_limit=_UNSET, read_limit_reason=""):
    """This process's settings. max_object: limits.max_object (the serving processes
    set it from their configuration; None: the config schema's default). read_limit:
    the largest object a whole read in this process assembles (the binary and RESP
    faces set their frame limit; a larger object is refused with ObjectTooLarge
    before a chunk is read, and a single-read one is put back)."""
    if max_object is not _UNSET:
        _settings["max_object"] = max_object
    if read_limit is not _UNSET:
        _settings["read_limit"] = read_limit
        _settings["read_limit_reason"] = read_limit_reason


def max_object(store) -> int:
    lim = store.limits.get("max_object")
    if lim:
        return lim
    if _settings["max_object"] is None:
        from bukt.config import SCHEMA
        from bukt.config import parse_size
        _settings["max_object"] = parse_size(SCHEMA["limits.max_object"][0])
    return _settings["max_object"]


def chunk_size(store) -> int:
    """A chunk is one entry's largest value (the key beside it counts against
    limits.max_key, not against this)."""
    return store.limits["max_value"]


def inline_max(store) -> int:
    """Bodies up to this size are kept inside their manifest (no chunks)."""
    return min(chunk_size(store) // 2, 64 << 10)


# -- the readers region (docs/design.md, Objects) ------------------------------------
def reader_enter(store):
    """Register a reader (the core's readers region); its token."""
    return store.object_reader_enter()


def reader_exit(store, token):
    if token is not None:
        store.object_reader_exit(token)


def now_ms() -> int:
    return int(time.time() * 1000)


# -- put -----------------------------------------------------------------------------
NEED = object()         # a step's request for the next piece of the body


def _put_steps(bucket, key, length, ttl, single_read, nx, xx, if_version, content_type,
               meta, expect_sha256, extra):
    """The put as a generator: yields NEED (the driver sends the next piece of the
    body, b"" at its end), ("put", key, value, flags, kwargs) (the driver sends
    put_entry's result) or ("delete", key) (a clean-up: the driver swallows its
    errors, the sweep takes what is left); its return value is put's."""
    store = bucket.store
    limit, cs = max_object(store), chunk_size(store)
    check_size(bucket, length or 0)
    if nx and xx:
        raise _core_error("InvalidArgument", "nx and xx together can never write")
    key = bytes(key)
    sha, md5 = hashlib.sha256(), hashlib.md5()
    oid = mf.new_oid()
    pid, start = identity()
    started = now_ms()
    crcs, buf, size, index = [], bytearray(), 0, 0
    wrote_head = published = False
    hkw = _hidden_ttl(bucket, ttl)
    head = ("put", mf.head_key(oid), mf.pack_head(mf.UPLOADING, pid, start, started, key),
            F_HIDDEN, hkw)
    try:
        while True:
            piece = yield NEED
            if not piece:
                break
            size += len(piece)
            if size > limit:
                raise ObjectTooLarge(f"object is over limits.max_object={limit}")
            sha.update(piece)
            md5.update(piece)
            buf += piece
            while len(buf) > cs:
                if not wrote_head:
                    yield head
                    wrote_head = True
                data = bytes(buf[:cs])
                del buf[:cs]
                crcs.append(mf.crc(data))
                yield ("put", mf.chunk_key(oid, index), data, F_HIDDEN, hkw)
                index += 1
        if length is not None and size != length:
            raise BuktError(f"the body has {size} bytes, not the {length} announced")
        digest = sha.digest()
        if expect_sha256 is not None and digest != expect_sha256:
            raise DigestMismatch("the body's SHA-256 is not the one declared; nothing "
                                 "was stored")
        inline = None
        if not wrote_head and len(buf) <= inline_max(store):
            inline = bytes(buf)
        elif buf:
            if not wrote_head:
                yield head
                wrote_head = True
            data = bytes(buf)
            crcs.append(mf.crc(data))
            yield ("put", mf.chunk_key(oid, index), data, F_HIDDEN, hkw)
            index += 1
        buf = None
        m = Manifest(oid, size, cs, crcs, started, digest, md5.digest(), content_type,
                     meta, extra, inline)
        kw = {"ttl": ttl, "nx": nx or if_version == 0, "xx": xx}
        if if_version:              # put_entry: 0 is no condition; set's 0 is "absent"
            kw["if_version"] = if_version
        version = yield ("put", key, m.pack(), F_MANIFEST | (F_SINGLE if single_read else 0),
                         kw)
        if not version:
            if if_version is not None:
                raise VersionMismatch(f"the key is not at version {if_version}")
            return None             # nx / xx said no: the chunks go (finally)
        published = True
        m.version = version
        if wrote_head:              # the sweep drops it once nothing names the object
            yield ("put", mf.head_key(oid),
                   mf.pack_head(mf.PUBLISHED, pid, start, started, key), F_HIDDEN,
                   {"xx": True, **hkw})
        return m
    finally:
        if wrote_head and not published:
            # never published: no reader can hold these chunks; they go now
            for i in range(index):
                yield ("delete", mf.chunk_key(oid, i))
            yield ("delete", mf.head_key(oid))


# A chunk outlives its manifest by this much when either has a TTL: the manifest is
# written last, so chunks given the same TTL would expire first, and the object with
# them while it is still listed. The sweep takes them once the manifest is gone.
HIDDEN_TTL_MARGIN = 86400.0


def _hidden_ttl(bucket, ttl):
    """put_entry's ttl keyword for an object's hidden entries: none (no TTL) unless
    the object or its bucket has one; then that TTL plus HIDDEN_TTL_MARGIN."""
    if ttl is None:
        ttl = bucket.store.bucket_info(bucket.name).get("default_ttl")
    return {} if ttl is None else {"ttl": float(ttl) + HIDDEN_TTL_MARGIN}


def _core_error(name, msg):
    from bukt import errors
    return getattr(errors, name, BuktError)(msg)


def _pieces(source, n):
    """Bytes of `source` (bytes, a file-like with read(n), an iterable of bytes)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        mv = memoryview(source)
        for i in range(0, len(mv), n):
            yield mv[i:i + n].tobytes()
        return
    read = getattr(source, "read", None)
    if read is not None:
        while True:
            piece = read(n)
            if not piece:
                return
            yield bytes(piece)
    else:
        for piece in source:
            if piece:
                yield bytes(piece)


def put(bucket, key, source, *, length=None, ttl=None, single_read=False, nx=False,
        xx=False, if_version=None, content_type=None, meta=None, expect_sha256=None,
        extra=None):
    """Store `source` under `key` as an object; its Manifest (version set), or None
    when nx/xx said no. Raises ObjectTooLarge, DigestMismatch (nothing stored),
    VersionMismatch (if_version), and the core's errors (SegmentFull, RingFull)."""
    steps = _put_steps(bucket, key, length, ttl, single_read, nx, xx, if_version,
                       content_type, meta, expect_sha256, extra)
    pieces = _pieces(source, chunk_size(bucket.store))

    async def read():
        return next(pieces, b"")

    async def write(fn, *args, **kw):
        return _with_room(bucket, fn, *args, **kw)

    async def pause():
        time.sleep(RING_RETRY_S)
    # _drive awaits only these three, which never suspend: the coroutine runs to its
    # end at the first send, on no event loop
    run = _drive(bucket, steps, read, write, pause)
    try:
        run.send(None)
    except StopIteration as stop:
        return stop.value
    run.close()
    raise RuntimeError("objects.put: the synchronous drive suspended")


async def _drive(bucket, steps, read, write, pause):
    """Run the put generator `steps` (_put_steps): `await read()` is the next piece
    of the body (b"" at its end), `await write(fn, *args, **kw)` one core write,
    `await pause()` a wait of RING_RETRY_S while a chunk would eat the ring's share
    for small writes (THE ROOM LEFT FOR SMALL WRITES). An error of any is thrown into
    the steps, which clean up and raise it again."""
    sent, error = None, None
    while True:
        try:
            step = steps.throw(error) if error is not None else steps.send(sent)
        except StopIteration as stop:
            return stop.value
        error = sent = None
        try:
            if step is NEED:
                sent = await read()
            elif step[0] == "put":
                _, key, value, flags, kw = step
                if flags & F_HIDDEN and not _small_room(bucket, key, value):
                    deadline = time.monotonic() + bucket.store.limits["ring_wait"]
                    while time.monotonic() < deadline and not _small_room(bucket, key, value):
                        await pause()
                sent = await write(bucket.put_entry, key, value, flags, **kw)
            else:
                try:
                    await write(bucket.delete_entry, step[1])
                except BuktError:
                    pass
        except BaseException as e:          # raised inside the steps: they clean up
            error = e


def _with_room(bucket, fn, *args, **kw):
    """fn (one ring record) tried again while the ring is full, for up to the
    segment's ring wait (limits.ring_wait_ms). A server worker sets its own wait to 0
    so that a write never blocks its loop; an object's put is many records, and
    failing it whole for want of room for one chunk would make a large SET fail
    whenever the writer is a little behind, so it waits here, a chunk at a time."""
    deadline = None
    while True:
        try:
            return fn(*args, **kw)
        except RingFull:
            now = time.monotonic()
            if deadline is None:
                deadline = now + bucket.store.limits["ring_wait"]
            if now >= deadline:
                raise
            time.sleep(RING_RETRY_S)


RING_RETRY_S = 0.001

# THE ROOM LEFT FOR SMALL WRITES. An object's chunks go to the change ring as records of
# up to a chunk each, as fast as the body arrives. Whenever the writer logs more slowly
# than that they fill the ring, and every other write, a 100 B SET included, then waits
# in the core for room behind megabytes of chunks, and for the claim the put takes for
# its next chunk: 9 to 54 ms in bench/objects.py's small-key loop (the 16 MiB ring
# 14-15 MiB full).
# So a put writes a chunk only while the ring keeps 1/SMALL_ROOM_SHARE of it free
# beyond the chunk's own room (rec_room: twice the record, for the wrap); until then it
# waits outside the core, holding no lock (the HTTP worker on its loop), for up to the
# ring wait (limits.ring_wait_ms), and then writes as any producer does (claiming room
# if it must: so small writes that keep the ring that full cannot starve it). Only
# hidden records wait (the chunks, and the upload's small head record): the manifest
# is one small record that publishes the object, and a delete frees room.
SMALL_ROOM_SHARE = 4


def _small_room(bucket, key, value) -> bool:
    """Whether a chunk record of `key` and `value` leaves the ring's share for small
    writes free (THE ROOM LEFT FOR SMALL WRITES)."""
    store = bucket.store
    size = store.limits["ring_size"]
    # a chunk always fits an empty ring (config: ring_size >= 2 * (max_value + 1 KiB))
    return store.ring_free(0) >= min(rec_room(len(key) + len(value)) + size // SMALL_ROOM_SHARE,
                                     size)


async def aput(ring, bucket, key, read, **opts):
    """put() for the HTTP face: `read(n)` is an async read of the body (b"" at its
    end; n is opts["read_size"], default a chunk) and each core write goes through
    `ring.write` (which waits for ring room without blocking the loop)."""
    steps = _put_steps(bucket, key, opts.get("length"), opts.get("ttl"),
                       opts.get("single_read", False), opts.get("nx", False),
                       opts.get("xx", False), opts.get("if_version"),
                       opts.get("content_type"), opts.get("meta"),
                       opts.get("expect_sha256"), opts.get("extra"))
    n = opts.get("read_size") or chunk_size(bucket.store)
    return await _drive(bucket, steps, lambda: read(n), ring.write,
                        lambda: asyncio.sleep(RING_RETRY_S))


# -- read ----------------------------------------------------------------------------
class ObjectReader:
    """One object (or a plain entry, as a one-piece object), held for reading: the
    reader registration is held until close(). iter(start, end) yields the bytes of
    [start, end), reading only the chunks needed."""

    def __init__(self, bucket, key, m, token, plain=None):
        self.bucket, self.key, self.manifest = bucket, key, m
        self._token, self._plain = token, plain

    size = property(lambda self: self.manifest.size)
    sha256 = property(lambda self: self.manifest.sha256)
    md5 = property(lambda self: self.manifest.md5)
    etag = property(lambda self: self.manifest.etag)
    content_type = property(lambda self: self.manifest.content_type)
    meta = property(lambda self: self.manifest.meta)
    extra = property(lambda self: self.manifest.extra)
    created_ms = property(lambda self: self.manifest.created_ms)
    version = property(lambda self: self.manifest.version)
    expire_ms = property(lambda self: self.manifest.expire_ms)
    is_object = property(lambda self: self._plain is None)

    def iter(self, start=0, end=None):
        m = self.manifest
        end = m.size if end is None else min(end, m.size)
        start = max(0, start)
        if start >= end:
            if start == 0 and end == 0 and m.size == 0:
                self._check_whole(hashlib.sha256())
            return
        whole = start == 0 and end == m.size
        sha = hashlib.sha256() if whole else None
        body = m.inline if self._plain is None else self._plain
        if body is not None:
            if whole:
                sha.update(body)
                self._check_whole(sha)
            yield body[start:end]
            return
        cs = m.chunk_size
        first, last = start // cs, (end - 1) // cs
        for i in range(first, last + 1):
            data = self._chunk(i)
            if whole:
                sha.update(data)
                if i == last:
                    self._check_whole(sha)      # before the last piece is handed over
            lo = start - i * cs if i == first else 0
            hi = end - i * cs if i == last else len(data)
            yield data if lo == 0 and hi == len(data) else data[lo:hi]

    __iter__ = iter

    def read(self, start=0, end=None) -> bytes:
        return b"".join(self.iter(start, end))

    def _chunk(self, i):
        m = self.manifest
        entry = self.bucket.read_entry(mf.chunk_key(m.oid, i))
        if entry is None:
            self._gone(i)
        data = entry[0]
        want = m.chunk_size if i < m.nchunks - 1 else m.size - m.chunk_size * (m.nchunks - 1)
        if len(data) != want or mf.crc(data) != m.crcs[i]:
            damaged(self.bucket)
            raise IntegrityError(f"object {self.key!r}: chunk {i} does not match its CRC")
        return data

    def _gone(self, i):
        """A chunk is missing: the object is gone (eviction takes objects whole)."""
        m = self.manifest
        if m.version:
            try:
                self.bucket.delete_entry(self.key, if_version=m.version)
            except BuktError:
                pass
        raise ObjectGone(f"object {self.key!r} lost chunk {i} (evicted): it is gone")

    def _check_whole(self, sha):
        if sha.digest() != self.manifest.sha256:
            damaged(self.bucket)
            raise IntegrityError(f"object {self.key!r} does not match its SHA-256")

    def close(self):
        token, self._token = self._token, None
        if token is not None:
            reader_exit(self.bucket.store, token)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:       # noqa: BLE001 - interpreter shutdown
            pass


damaged = codec.damaged       # counts a damaged chunk, digest or manifest


def _lazy_digest(slot, hasher):
    """A property over Manifest's `slot` that hashes the plain value on first read."""
    def get(self):
        d = slot.__get__(self)
        if d is None:
            d = hasher(self._value).digest()
            slot.__set__(self, d)
        return d
    return property(get, slot.__set__)


class PlainManifest(Manifest):
    """The manifest of a plain entry, so every key opens alike. Its digests are
    computed when first asked for: S3 reads want only the MD5 (the ETag), an HTTP
    GET of a plain entry neither, and each costs milliseconds a MiB."""

    __slots__ = ("_value",)

    def __init__(self, value, version, expire_ms):
        super().__init__(b"", len(value), len(value) or 1, [], 0, None, None)
        self._value = value
        self.version, self.expire_ms = version, expire_ms

    sha256 = _lazy_digest(Manifest.sha256, hashlib.sha256)
    md5 = _lazy_digest(Manifest.md5, hashlib.md5)


def _manifest(bucket, value, version, expire_ms, flags):
    try:
        m = Manifest.unpack(value)
    except IntegrityError:
        damaged(bucket)
        raise
    m.version, m.expire_ms, m.flags = version, expire_ms, flags
    return m


def read(bucket, key, peek=False):
    """A face's GET of `key` in one raw read (Bucket.read_entry, counted as the
    user's read): None when absent; an ObjectReader when the key holds an object
    (registered before the read, so its chunks stay until close(); a single-read
    object is taken by this read, and only by it); else the plain entry as stored,
    (value, flags, version, expire_ms), compressed when its flags say so (the caller
    decodes it, or sends a zstd frame as it is). peek=True takes nothing.

    When every reader slot is in use (limits.object_readers) a plain key is still
    read; an object is refused with LimitExceeded before anything is taken (a
    single-read one stays as it was, TTL and all).

    The fast path is one lock-free look that takes nothing: a plain key (most of
    them) is answered from it, with no registration. Only a key that holds an object
    or a single-read value is read again: registered first, and that read, which may
    take the key, is the one that counts. (A look that finds a plain value is as good
    as the read: a plain value has no chunks to keep.)"""
    entry = bucket.read_entry(key, peek=True, user=True)
    if entry is None or not entry[1] & (F_MANIFEST | F_SINGLE):
        return entry
    store = bucket.store
    try:
        token = store.object_reader_enter()     # before the manifest is read
    except LimitExceeded:
        if entry[1] & F_MANIFEST:               # refused before anything is taken
            raise _readers_full() from None
        token = None
    try:
        entry = bucket.read_entry(key, peek=peek)
        if entry is None or not entry[1] & F_MANIFEST:
            return entry
        value, flags, version, expire_ms = entry
        if token is None:                   # it became an object since the look
            if flags & F_SINGLE and not peek:
                _put_back(bucket, key, value, flags)
            raise _readers_full()
        reader = ObjectReader(bucket, key, _manifest(bucket, value, version, expire_ms,
                                                     flags), token)
        token = None                    # the reader holds it now
        return reader
    finally:
        if token is not None:
            store.object_reader_exit(token)


def _readers_full():
    return LimitExceeded("as many object reads in flight as the registry holds "
                         "(limits.object_readers): try again when fewer run")


def open(bucket, key, take=False, peek=False):      # noqa: A001 - the module's verb
    """The object under `key` held for reading (ObjectReader, a context manager),
    or None. Opening is the read: a single-read key is taken by it, as by a get;
    take=True takes any key (getdel); peek=True takes none."""
    store = bucket.store
    token = reader_enter(store)         # before the manifest is read
    try:
        entry = bucket.read_entry(key, take=take and not peek, peek=peek)
        if entry is None:
            reader_exit(store, token)
            return None
        value, flags, version, expire_ms = entry
        if not flags & F_MANIFEST:
            value = codec.decode_entry(bucket, key, value, flags)
            reader_exit(store, token)
            return ObjectReader(bucket, key, PlainManifest(value, version, expire_ms),
                                None, value)
        return ObjectReader(bucket, key, _manifest(bucket, value, version, expire_ms,
                                                   flags), token)
    except BaseException:
        reader_exit(store, token)
        raise


def head(bucket, key):
    """The manifest (metadata) of the object under `key` without reading it, or None;
    for a plain entry, a one-piece manifest."""
    entry = bucket.read_entry(key, peek=True)
    if entry is None:
        return None
    value, flags, version, expire_ms = entry
    if not flags & F_MANIFEST:
        return PlainManifest(codec.decode_entry(bucket, key, value, flags), version, expire_ms)
    return _manifest(bucket, value, version, expire_ms, flags)


def delete(bucket, key) -> bool:
    """Delete the key (an object's chunks go with the next reclaim sweep)."""
    return bool(bucket.delete(key))


# -- the core's value hooks ------------------------------------------------------------
def check_size(bucket, size):
    """ObjectTooLarge (or ValueTooLarge, on a store whose keys cannot hold a chunk's)
    for an object of `size` bytes, as put would raise it before writing."""
    store = bucket.store
    if bucket.schema_name != "bytes":
        raise ValueTooLarge(f"value of {size} bytes exceeds the limit of "
                            f"{chunk_size(store)} bytes (max_value): objects, which hold "
                            f"larger ones, are for bytes buckets, not "
                            f"{bucket.schema_name} ones")
    limit = max_object(store)
    if size > limit:
        raise ObjectTooLarge(f"object of {size} bytes is over limits.max_object={limit}")
    if store.limits["max_key"] < mf.HIDDEN_KEY_MAX:
        raise ValueTooLarge(f"value of {size} bytes exceeds the limit of "
                            f"{chunk_size(store)} bytes (max_value), and objects, which "
                            f"hold larger ones, need limits.max_key of at least "
                            f"{mf.HIDDEN_KEY_MAX}")


def store_large(bucket, key, value, ttl, nx, xx, single_read, if_version):
    """Bucket.set of a value over the entry limit: stored as an object (a bytes
    bucket's; int, str and json values stay bounded by limits.max_value)."""
    check_size(bucket, len(value))
    m = put(bucket, key, value, length=len(value), ttl=ttl, single_read=single_read,
            nx=nx, xx=xx, if_version=if_version)
    return None if m is None else m.version


def _put_back(bucket, key, value, flags):
    """A single-read object that a refused read took goes back (unless a new value
    took its place meanwhile); its TTL is not known here and is lost."""
    try:
        bucket.put_entry(key, value, flags, nx=True)
    except BuktError:
        pass


def decode_manifest(bucket, key, value, flags):
    """A Python-level read met a manifest: the whole object, digest checked. The
    core's read did not hold a reader registration, so a retirement may have let the
    sweep take the chunks: then the key is opened again, registered, and read whole."""
    try:
        m = Manifest.unpack(value)
    except IntegrityError:
        damaged(bucket)
        raise
    limit = _settings["read_limit"]
    if limit is not None and m.size > limit:
        if flags & F_SINGLE:            # taken by this read: put it back, untouched
            _put_back(bucket, key, value, flags)
        raise ObjectTooLarge(f"object {key!r} of {m.size} bytes is above "
                             f"{_settings['read_limit_reason'] or limit}")
    token = reader_enter(bucket.store)
    try:
        reader = ObjectReader(bucket, key, m, None)
        try:
            return reader.read()
        except ObjectGone:
            pass
    finally:
        reader_exit(bucket.store, token)
    again = open(bucket, key)               # registered first, this time
    if again is None:
        raise ObjectGone(f"object {key!r} is gone (evicted, or replaced and gone)")
    with again:             # the same object: the missing chunk removes its manifest
        return again.read()
