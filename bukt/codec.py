"""Value compression: the codec a bucket's `compression` setting names.

A bucket is created with `compression: none | zstd | lz4`, a size threshold and a
minimum saving (docs/api.md, Compression). The core asks this module, through the value
hooks (bukt/values.py), to compress a value of at least the threshold that a set
stores in such a bucket, and stores what comes back as is, flagged BK_E_ZSTD or
BK_E_LZ4, in the segment, the change ring, the log, base files and replicas. Every
Python-level read hands a flagged value back here to be decompressed; HTTP GET with
`Accept-Encoding: zstd` sends a zstd value's stored bytes as they are.

THE FRAMES. Both codecs write their standard frame with its content checksum: zstd's
frame carries the XXH64 of the content (low 32 bits), lz4's frame its XXH32. A stored
value whose bytes were damaged (a bad page, a stray write into the segment, a broken
log record) fails that check when it is read and raises IntegrityError; it is never
returned as other bytes. The frames also carry the content size, so a read allocates
once and a value that would decompress past `limit` is refused before it is expanded.

THE BINDINGS. `zstandard` (python-zstandard) and `lz4` (python-lz4), both maintained
and with wheels for every platform we run on. cramjam, one binding for both, was the
alternative; it was rejected because its zstd compress writes frames without the
content checksum and has no switch to ask for one (its FHD byte is 0x60: no checksum
flag), so a flipped byte in a literal would be returned as wrong data. It is also
slower on the values a cache holds: 1 KiB of text (this repository's docs and code),
best of 15 rounds of 300 values on the shared 2-core machine, compress / decompress:
zstandard (level 3) 7.8-9.4 / 3.0 us, cramjam zstd (level 3) 24-45 / 12-23 us;
python-lz4 frames 3.1 / 0.9 us, cramjam lz4 10-17 / 3.3 us.

LEVELS. zstd level 3 (its default: most of the ratio for a small part of level 19's
cost) and lz4 level 0 (the fast mode). A level is not a bucket setting: the frames
say nothing of it and any level decodes the same, so it could become one later.
"""
import threading

from bukt._core import ENTRY_LZ4, ENTRY_ZSTD
from bukt.errors import BuktError, IntegrityError, InvalidArgument

__all__ = ["NAMES", "NONE", "ZSTD", "LZ4", "FLAG_ZSTD", "FLAG_LZ4", "FLAGS", "code_of",
           "name_of", "compress", "decompress", "decode_entry", "flag_name", "stored_codec",
           "DEFAULT_THRESHOLD", "DEFAULT_MIN_SAVING", "THRESHOLD_RANGE"]

# A bucket's compression setting, as the core stores it in bk_bucket.compression.
NAMES = ("none", "zstd", "lz4")
NONE, ZSTD, LZ4 = 0, 1, 2

# The entry flags the core stores beside a compressed value (cext/includes/segment.h).
FLAG_ZSTD, FLAG_LZ4 = ENTRY_ZSTD, ENTRY_LZ4         # the core's entry flags
FLAGS = FLAG_ZSTD | FLAG_LZ4
_FLAG_OF = {ZSTD: FLAG_ZSTD, LZ4: FLAG_LZ4}

# The built-in defaults of a bucket's compression_threshold and compression_min_saving
# (bukt/config.py takes its `compression.*` defaults from here; conf/bukt.yaml says why).
DEFAULT_THRESHOLD = 1024
DEFAULT_MIN_SAVING = 10
# What a bucket may set: below 64 bytes a frame's own 15-20 bytes eat the saving; a
# threshold above the largest value the segment holds simply compresses nothing.
THRESHOLD_RANGE = (64, (1 << 32) - 1)

ZSTD_LEVEL = 3
LZ4_LEVEL = 0

_local = threading.local()          # a ZstdCompressor is not safe to share between threads
zstandard = lz4 = None              # imported on first use: `import bukt` stays quick
                                    # (zstandard imports `platform`: ~10 ms)


def _load():
    global zstandard, lz4
    if lz4 is None:
        import zstandard
        import lz4.frame                    # binds the globals (declared above)


def _zc():
    c = getattr(_local, "zc", None)
    if c is None:
        _load()
        c = _local.zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True,
                                                 write_content_size=True)
    return c


def _zd():
    d = getattr(_local, "zd", None)
    if d is None:
        _load()
        d = _local.zd = zstandard.ZstdDecompressor()
    return d


def code_of(name) -> int:
    """0, 1 or 2 from "none", "zstd", "lz4" (None: "none"); InvalidArgument otherwise."""
    if name is None:
        return NONE
    if name in NAMES:
        return NAMES.index(name)
    raise InvalidArgument(f"compression {name!r}: one of {', '.join(NAMES)}")


def name_of(code: int) -> str:
    return NAMES[code] if 0 <= code < len(NAMES) else f"unknown({code})"


def flag_name(flags: int):
    """"zstd", "lz4" or None for an entry's flags."""
    if flags & FLAG_ZSTD:
        return "zstd"
    if flags & FLAG_LZ4:
        return "lz4"
    return None


def compress(value, codec: int, min_saving: int = DEFAULT_MIN_SAVING):
    """(stored bytes, entry flag) for `value` under `codec`, or None when the frame
    would save less than `min_saving` percent of the value (it is then stored raw:
    decompressing costs every read, so a small saving is not worth it)."""
    raw = bytes(value) if not isinstance(value, bytes) else value
    if codec == ZSTD:
        out = _zc().compress(raw)
    elif codec == LZ4:
        _load()
        out = lz4.frame.compress(raw, compression_level=LZ4_LEVEL, content_checksum=True,
                                 store_size=True)
    else:
        return None
    if len(out) * 100 > len(raw) * (100 - min_saving) or len(out) >= len(raw):
        return None
    return out, _FLAG_OF[codec]


def stored_codec(flags: int) -> int:
    """The codec (ZSTD, LZ4) an entry's flags say its value is stored in, else NONE."""
    if flags & FLAG_ZSTD:
        return ZSTD
    if flags & FLAG_LZ4:
        return LZ4
    return NONE


def content_size(stored, flags: int):
    """The raw size a compressed value's frame states, or None (no codec in `flags`,
    or a header that states none or is damaged)."""
    codec = stored_codec(flags)
    _load()
    try:
        if codec == ZSTD:
            size = zstandard.get_frame_parameters(stored).content_size
            return None if size in (zstandard.CONTENTSIZE_UNKNOWN,
                                    zstandard.CONTENTSIZE_ERROR) else size
        if codec == LZ4:
            return lz4.frame.get_frame_info(stored).get("content_size") or None
    except (zstandard.ZstdError, RuntimeError, ValueError, TypeError):
        return None
    return None


def decode_entry(bucket, key, value, flags: int) -> bytes:
    """A plain entry's value as it was set: decompressed when `flags` name a codec
    (at most the entry limit, bucket.max_value), else as it is."""
    if not flags & FLAGS:
        return value
    try:
        return decompress(value, flags, bucket.max_value,
                          what=f"key {bytes(key)!r} of bucket {bucket.name!r}")
    except IntegrityError:
        damaged(bucket)
        raise


def damaged(bucket):
    """Count a damaged value a read met: a frame here, an object's chunk or digest in
    bukt/objects (the bucket's integrity_errors, kept in the segment's counters, so
    every process's reads add to the one figure that stats() and /metrics show)."""
    try:
        bucket.count_integrity_error()
    except BuktError:           # the bucket went meanwhile: nothing to count in
        pass


def decompress(stored, flags: int, limit: int | None = None, what: str = "value") -> bytes:
    """The value `stored` under the codec `flags` names. IntegrityError when the frame
    is damaged (its checksum, its size or its structure) or would exceed `limit` bytes;
    never other bytes than were compressed."""
    codec = stored_codec(flags)
    _load()
    try:
        if codec == ZSTD:
            params = zstandard.get_frame_parameters(stored)
            size = params.content_size
            if size == zstandard.CONTENTSIZE_UNKNOWN or size == zstandard.CONTENTSIZE_ERROR:
                raise IntegrityError(f"{what}: zstd frame without its content size")
            if not params.has_checksum:
                raise IntegrityError(f"{what}: zstd frame without its content checksum")
            if limit is not None and size > limit:
                raise IntegrityError(f"{what}: zstd frame says {size} bytes, more than "
                                     f"the {limit} a value may hold")
            out = _zd().decompress(stored, max_output_size=size)
            if len(out) != size:
                raise IntegrityError(f"{what}: zstd frame decoded to {len(out)} bytes, "
                                     f"not the {size} it says")
            return out
        if codec == LZ4:
            info = lz4.frame.get_frame_info(stored)
            if not info.get("content_checksum"):
                raise IntegrityError(f"{what}: lz4 frame without its content checksum")
            size = info.get("content_size") or 0
            if limit is not None and size > limit:
                raise IntegrityError(f"{what}: lz4 frame says {size} bytes, more than "
                                     f"the {limit} a value may hold")
            out = lz4.frame.decompress(stored)
            if size and len(out) != size:
                raise IntegrityError(f"{what}: lz4 frame decoded to {len(out)} bytes, "
                                     f"not the {size} it says")
            return out
    except IntegrityError:
        raise
    except (zstandard.ZstdError, RuntimeError, ValueError, TypeError, MemoryError,
            OverflowError) as e:
        raise IntegrityError(f"{what}: stored {name_of(codec)} frame is damaged "
                             f"({e}); not returned") from None
    raise IntegrityError(f"{what}: entry flags {flags:#x} name no codec")
