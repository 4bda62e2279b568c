"""An object's manifest and its hidden entries' keys (docs/design.md, "Objects").

A value larger than one entry (limits.max_value) is stored as CHUNKS, hidden entries
of their own in the same bucket, and a MANIFEST entry under the user's key, flagged
BK_E_MANIFEST, that names them. Every object gets a fresh random id (`oid`), so two
versions of one key never share a chunk: a reader that holds a manifest reads that
object's chunks or finds them gone, never another version's.

KEYS. Every hidden key starts with the core's RESERVED_PREFIX (users cannot write it):
    PREFIX + b"o" + oid              the object's HEAD record (below)
    PREFIX + b"c" + oid + u32 index  chunk `index`, big-endian so chunks sort in order
The head record is the back-reference the reclaim sweep needs: it names the user key
whose manifest should name this oid, and who is uploading it. A put writes the head
before any chunk, so a chunk without a head is always garbage.

HEAD value: struct HEAD (state, uploader pid, its start time, started ms) + user key.
State UPLOADING until the manifest is published, then PUBLISHED.

MANIFEST value: struct FIXED, then one CRC-32 per chunk (u32 each, so a ranged read
checks what it returns), then u16 length + JSON of {content_type, meta, extra}, then
the body itself when it is stored inline (small objects: no chunks, nchunks 0).
"""
import json
import os
import struct
import zlib

from bukt.errors import (BuktError, DigestMismatch, IntegrityError,  # noqa: F401
                         ObjectGone, ObjectTooLarge)

from bukt._core import RESERVED_PREFIX

PREFIX = RESERVED_PREFIX
HEAD_TAG, CHUNK_TAG = b"o", b"c"
OID_LEN = 16
MAGIC = b"BKO1"
# magic, oid, size, chunk size, chunks, created ms, sha-256, md5, inline (0/1)
FIXED = struct.Struct(">4s16sQIIQ32s16sB")
CRC = struct.Struct(">I")
META_LEN = struct.Struct(">H")
HEAD = struct.Struct(">BIQQ")           # state, pid, pid start time, started ms
UPLOADING, PUBLISHED = 0, 1
INDEX = struct.Struct(">I")
HIDDEN_KEY_MAX = len(PREFIX) + 1 + OID_LEN + INDEX.size     # a chunk's key: 26 bytes


ObjectError = BuktError


def new_oid() -> bytes:
    return os.urandom(OID_LEN)


def head_key(oid: bytes) -> bytes:
    return PREFIX + HEAD_TAG + oid


def chunk_key(oid: bytes, index: int) -> bytes:
    return PREFIX + CHUNK_TAG + oid + INDEX.pack(index)


def parse_hidden(key: bytes):
    """("head", oid, None) / ("chunk", oid, index) for a hidden key of ours, else None."""
    if not key.startswith(PREFIX):
        return None
    tag, rest = key[len(PREFIX):len(PREFIX) + 1], key[len(PREFIX) + 1:]
    if tag == HEAD_TAG and len(rest) == OID_LEN:
        return "head", rest, None
    if tag == CHUNK_TAG and len(rest) == OID_LEN + INDEX.size:
        return "chunk", rest[:OID_LEN], INDEX.unpack(rest[OID_LEN:])[0]
    return None


def pack_head(state, pid, start, started_ms, key) -> bytes:
    return HEAD.pack(state, pid, start, started_ms) + key


def unpack_head(value: bytes):
    """(state, pid, start, started_ms, user key)."""
    state, pid, start, started = HEAD.unpack_from(value)
    return state, pid, start, started, value[HEAD.size:]


class Manifest:
    """What a manifest says; `version` and `expire_ms` come from its entry."""

    __slots__ = ("oid", "size", "chunk_size", "nchunks", "created_ms", "sha256", "md5",
                 "crcs", "content_type", "meta", "extra", "inline", "version",
                 "expire_ms", "flags")

    def __init__(self, oid, size, chunk_size, crcs, created_ms, sha256, md5,
                 content_type=None, meta=None, extra=None, inline=None):
        self.oid, self.size, self.chunk_size = oid, size, chunk_size
        self.crcs = list(crcs)
        self.nchunks = len(self.crcs)
        self.created_ms, self.sha256, self.md5 = created_ms, sha256, md5
        self.content_type, self.meta, self.extra = content_type, meta or {}, extra or {}
        self.inline = inline            # the body, for an object kept in its manifest
        self.version, self.expire_ms, self.flags = 0, None, 0

    @property
    def etag(self):
        """S3's ETag: the MD5 in hex, or extra["etag"] (a multipart upload's)."""
        return self.extra.get("etag") or self.md5.hex()

    def pack(self) -> bytes:
        doc = {}
        if self.content_type:
            doc["content_type"] = self.content_type
        if self.meta:
            doc["meta"] = self.meta
        if self.extra:
            doc["extra"] = self.extra
        js = json.dumps(doc, separators=(",", ":")).encode() if doc else b""
        if len(js) > 0xffff:
            raise ObjectError("object metadata is over 64 KiB")
        return b"".join([
            FIXED.pack(MAGIC, self.oid, self.size, self.chunk_size, self.nchunks,
                       self.created_ms, self.sha256, self.md5, self.inline is not None),
            b"".join(CRC.pack(c) for c in self.crcs), META_LEN.pack(len(js)), js,
            self.inline or b""])

    @classmethod
    def unpack(cls, value: bytes) -> "Manifest":
        try:
            magic, oid, size, cs, n, created, sha, md5, inline = FIXED.unpack_from(value)
            if magic != MAGIC:
                raise ValueError("bad magic")
            at = FIXED.size
            crcs = [c for (c,) in CRC.iter_unpack(value[at:at + 4 * n])]
            at += 4 * n
            (mlen,) = META_LEN.unpack_from(value, at)
            at += META_LEN.size
            doc = json.loads(value[at:at + mlen]) if mlen else {}
            at += mlen
            body = bytes(value[at:]) if inline else None
            if len(crcs) != n or (inline and len(body) != size):
                raise ValueError("truncated")
        except (struct.error, ValueError) as e:
            raise IntegrityError(f"damaged object manifest: {e}") from None
        return cls(oid, size, cs, crcs, created, sha, md5, doc.get("content_type"),
                   doc.get("meta"), doc.get("extra"), body)


def crc(data) -> int:
    return zlib.crc32(data)
