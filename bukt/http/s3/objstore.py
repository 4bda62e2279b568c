"""The gateway's object calls, in one place, over bukt.objects (chunked objects with
their digests and metadata, docs/design.md "Objects"): what S3 needs of a stored
object, and the hidden entries of multipart uploads."""

from bukt import objects as _objects
from bukt._core import ENTRY_HIDDEN as F_HIDDEN, ENTRY_MANIFEST as F_MANIFEST, \
    RESERVED_PREFIX

__all__ = ["RESERVED_PREFIX", "aput", "aput_iter", "open_object", "head", "delete",
           "put_hidden", "get_hidden", "delete_hidden", "scan_hidden"]


class Info:
    """What the gateway needs of a stored object: its manifest's fields, and (opened
    for reading) its bytes; a context manager holding the read."""

    __slots__ = ("size", "etag", "content_type", "meta", "headers", "created_ms",
                 "version", "_reader")

    def __init__(self, m, reader=None):
        self.size, self.version, self.etag = m.size, m.version, m.etag
        self.content_type, self.meta = m.content_type, dict(m.meta or {})
        # the standard headers kept with the object (Cache-Control, ...): extra["headers"]
        self.headers = dict((m.extra or {}).get("headers") or {})
        self.created_ms = m.created_ms
        self._reader = reader

    def iter(self, start=0, end=None):
        return self._reader.iter(start, end)

    def close(self):
        r, self._reader = self._reader, None
        if r is not None:
            r.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


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


async def aput(ring, bucket, key, read, *, length, content_type=None, meta=None,
               ttl=None, extra=None, hidden=False):
    """Store the body `read(n)` gives (async, b"" at its end) at `key`; its version.
    The body is streamed into chunks as it comes; a read that raises (a digest that
    differs, the client gone) leaves nothing published. `hidden`: the manifest is
    flagged HIDDEN too (a multipart upload's part: no listing shows it)."""
    m = await _objects.aput(ring, _Hiding(bucket) if hidden else bucket, key, read,
                            length=length, ttl=ttl, content_type=content_type,
                            meta=meta or None, extra=extra)
    return m.version


async def aput_iter(ring, bucket, key, pieces, **opts):
    """aput() of an iterable of bytes (a copy, a multipart completion): its writes
    still wait for ring room on the loop, not in it."""
    it = iter(pieces)

    async def read(n):
        return next(it, b"")
    return await aput(ring, bucket, key, read, **opts)


def open_object(bucket, key):
    """An Info holding the object for reading, or None."""
    r = _objects.open(bucket, key)
    return None if r is None else Info(r.manifest, r)


def head(bucket, key):
    """An Info of the object's metadata (nothing read, nothing taken), or None."""
    m = _objects.head(bucket, key)
    return None if m is None else Info(m)


def delete(bucket, key):
    if key.startswith(RESERVED_PREFIX):
        return bool(bucket.delete_entry(key))       # an upload's part
    return _objects.delete(bucket, key)


# -- an upload's record: a hidden plain entry ----------------------------------------------
def put_hidden(bucket, key, value, ttl):
    return bucket.put_entry(key, value, F_HIDDEN, ttl)


def get_hidden(bucket, key):
    got = bucket.read_entry(key, peek=True)
    return None if got is None else got[0]


def delete_hidden(bucket, key):
    return bucket.delete_entry(key)


def scan_hidden(bucket, prefix, cursor):
    """(next cursor, the bucket's hidden keys starting with `prefix`) of one step."""
    cursor, keys = bucket.scan_hidden(cursor, 1000)
    return cursor, [k for k in keys if k.startswith(prefix)]
