"""The gateway's object calls, in one place: bukt.objects (chunked objects with their
digests and metadata, docs/design.md "Objects") on a core with the raw entry API, else
a one-entry form over plain values (no stored metadata; ETag = MD5 of the value, up to
limits.max_value), so the gateway runs on either core."""

import hashlib
import time

from bukt import _core, objects as _objects
from bukt.objects.manifest import RESERVED_PREFIX  # noqa: F401 (one definition, shared)

F_MANIFEST = 0x08
F_HIDDEN = 0x10
CORE_OBJECTS = hasattr(_core.Bucket, "put_entry")     # this core stores objects


def chunked(bucket):
    """Whether this core stores objects (the raw entry API of fix/objcore)."""
    return hasattr(bucket, "put_entry")


class Info:
    """What the gateway needs of a stored object, whichever form it has."""

    __slots__ = ("size", "etag", "content_type", "meta", "created_ms", "version",
                 "_value", "_reader")

    def iter(self, start=0, end=None):
        if self._reader is not None:
            yield from self._reader.iter(start, end)
            return
        end = self.size if end is None else end
        step = 1 << 20
        for off in range(start, end, step):
            yield self._value[off:min(end, off + step)]

    def close(self):
        r, self._reader = self._reader, None
        if r is not None and hasattr(r, "close"):
            r.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _from_manifest(m, reader=None):
    i = Info()
    i.size, i.version = m.size, m.version
    i.etag = m.etag
    i.content_type = m.content_type
    i.meta = dict(m.meta or {})
    i.created_ms = m.created_ms or int(time.time() * 1000)
    i._value, i._reader = None, reader
    return i


def _from_value(value, version):
    i = Info()
    i.size, i.version, i._value, i._reader = len(value), version, value, None
    i.etag = hashlib.md5(value).hexdigest()
    i.content_type, i.meta = None, {}
    i.created_ms = int(time.time() * 1000)
    return i


async def aput(ring, bucket, key, read, *, length, content_type=None, meta=None,
               ttl=None, extra=None, hidden=False):
    """Store the body `read(n)` gives (async, b"" at its end) at `key`; its version.
    The body is streamed into chunks as it comes; a read that raises (a digest that
    differs, the client gone) leaves nothing published. `hidden`: the manifest is
    flagged HIDDEN too (a multipart upload's part: listings do not show it)."""
    if chunked(bucket):
        m = await _objects.aput(ring, _Hiding(bucket) if hidden else bucket, key, read,
                                length=length, ttl=ttl, content_type=content_type,
                                meta=meta or None, extra=extra)
        return m.version
    pieces = []
    while True:
        piece = await read(1 << 20)
        if not piece:
            break
        pieces.append(piece)
    return await ring.write(bucket.set, key, b"".join(pieces), ttl=ttl)


class _Hiding:
    """A bucket whose manifests are written HIDDEN too: an object under a reserved key
    (the core keeps those keys for hidden entries), out of every listing."""

    def __init__(self, bucket):
        self._bucket = bucket

    def put_entry(self, key, value, flags, *args, **kw):
        if flags & F_MANIFEST:
            flags |= F_HIDDEN
        return self._bucket.put_entry(key, value, flags, *args, **kw)

    def __getattr__(self, name):
        return getattr(self._bucket, name)


async def aput_iter(ring, bucket, key, pieces, **opts):
    """aput() of an iterable of bytes (a copy, a multipart completion): its writes
    still wait for ring room on the loop, not in it."""
    it = iter(pieces)

    async def read(n):
        return next(it, b"")
    return await aput(ring, bucket, key, read, **opts)


def open_object(bucket, key):
    """An Info (a context manager holding the read) or None."""
    if chunked(bucket):
        r = _objects.open(bucket, key)
        return None if r is None else _from_manifest(r.manifest, r)
    got = bucket.get_entry(key, consume=True)
    return None if got is None else _from_value(got[0], got[1])


def head(bucket, key):
    if chunked(bucket):
        m = _objects.head(bucket, key)
        return None if m is None else _from_manifest(m)
    got = bucket.get_entry(key, consume=False)
    return None if got is None else _from_value(got[0], got[1])


def delete(bucket, key):
    if key.startswith(RESERVED_PREFIX) and chunked(bucket):
        return bool(bucket.delete_entry(key))       # an upload's part or record
    return bool(bucket.delete(key))
