"""The gateway's object calls, in one place: bukt.objects (chunked objects with their
digests and metadata) when this build has it, else a one-entry form over plain values
(no stored metadata; ETag = MD5 of the value), so the gateway runs either way."""

import hashlib
import time

try:                                     # the objects layer (docs/design.md, Objects)
    from bukt import objects as _objects
except ImportError:                      # pragma: no cover - before it lands
    _objects = None

HAVE_OBJECTS = _objects is not None
try:
    from bukt._core import RESERVED_PREFIX
except ImportError:                      # pragma: no cover - before the core has it
    RESERVED_PREFIX = b"\x00bkt\x00"


class Info:
    """What the gateway needs of a stored object."""

    __slots__ = ("size", "etag", "content_type", "meta", "created_ms", "sha256",
                 "version", "_value", "_reader")

    def iter(self, start=0, end=None):
        if self._reader is not None:
            yield from self._reader.iter(start, end)
            return
        end = self.size if end is None else end
        step = 1 << 20
        for off in range(start, end, step):
            yield self._value[off:min(end, off + step)]

    def __enter__(self):
        if self._reader is not None:
            self._reader.__enter__()
        return self

    def __exit__(self, *exc):
        if self._reader is not None:
            return self._reader.__exit__(*exc)
        return False


def _from_reader(r):
    i = Info()
    i.size, i.sha256, i.version = r.size, getattr(r, "sha256", None), r.version
    extra = getattr(r, "extra", None) or {}
    i.etag = extra.get("etag") or r.etag
    i.content_type = r.content_type
    i.meta = dict(r.meta or {})
    i.created_ms = r.created_ms
    i._value, i._reader = None, r
    return i


def _from_value(value, version):
    i = Info()
    i.size, i.version, i._value, i._reader = len(value), version, value, None
    i.etag = hashlib.md5(value).hexdigest()
    i.sha256 = None
    i.content_type, i.meta = None, {}
    i.created_ms = int(time.time() * 1000)
    return i


def put(bucket, key, chunks, *, length, content_type=None, meta=None, ttl=None,
        extra=None):
    """Store `chunks` (an iterable of bytes, `length` in all) at `key`; its version."""
    if _objects is not None:
        m = _objects.put(bucket, key, chunks, length=length, ttl=ttl,
                         content_type=content_type, meta=meta or None, extra=extra)
        return m.version
    return bucket.set(key, b"".join(chunks), ttl=ttl)


def open_object(bucket, key):
    """An Info (a context manager holding the read) or None."""
    if _objects is not None:
        r = _objects.open(bucket, key)
        return None if r is None else _from_reader(r)
    got = bucket.get_entry(key, consume=True)
    if got is None:
        return None
    return _from_value(got[0], got[1])


def head(bucket, key):
    if _objects is not None:
        m = _objects.head(bucket, key)
        return None if m is None else _from_reader(m)
    got = bucket.get_entry(key, consume=False)
    return None if got is None else _from_value(got[0], got[1])


def delete(bucket, key):
    if _objects is not None:
        return _objects.delete(bucket, key)
    return bucket.delete(key) == 1
