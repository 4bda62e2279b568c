"""Content coding for compressed buckets: a zstd-stored value sent as it is stored.

A bucket created with `compression: zstd` holds its larger values as zstd frames
(bukt/codec.py), which HTTP clients decode themselves (`Content-Encoding: zstd`, RFC
8878). A GET of such a key, from a client whose Accept-Encoding names zstd, is answered
with the stored frame: no decompression in the worker, fewer bytes on the wire. Only
zstd: lz4 frames are no HTTP content coding, and gzip or br would mean compressing on
the way out, which the worker does not do (a proxy can). Every answer of a zstd
bucket's key says `Vary: Accept-Encoding`, the coded one and the plain one alike, so a
shared cache keeps them apart. The fast path (bukt/http/fastpath.py) leaves a request
that names zstd to the slow path whenever the bucket compresses with zstd.
"""

__all__ = ["accepts_zstd", "zstd_bucket", "SCHEMA_TYPES", "VARY"]

VARY = "Accept-Encoding"
# The Content-Type of a body by the bucket's schema (the raw bytes are the value's text)
SCHEMA_TYPES = {"bytes": "application/octet-stream", "str": "text/plain; charset=utf-8",
                "int": "text/plain; charset=utf-8", "json": "application/json"}


def accepts_zstd(header) -> bool:
    """True when an Accept-Encoding value lists zstd with a q above 0. A bare "*" is
    not taken for zstd: a client that never heard of it must not get it."""
    if not header:
        return False
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() != "zstd":
            continue
        q = 1.0
        for p in params.split(";"):
            name, _, value = p.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        return q > 0
    return False


def zstd_bucket(bucket) -> bool:
    """True when the bucket stores values zstd-compressed."""
    return bucket.compression == "zstd"
