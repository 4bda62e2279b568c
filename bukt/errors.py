"""Bukt's exceptions: one base, one class per kind of failure.

Every front end maps these one to one: the TCP protocol has a status byte per class
(docs/protocol.md) and the HTTP API a problem `code` per class, so a client can act on
the kind of failure without parsing messages. Messages say what was wrong and, where a
limit was hit, the limit.
"""


class BuktError(Exception):
    """Base of every error Bukt raises on purpose."""

    code = "error"


class SegmentNotFound(BuktError):
    """attach() found no segment of that name: start the writer (`bukt writer`) first."""

    code = "segment_not_found"


class SegmentExists(BuktError):
    """create() found a segment of that name already."""

    code = "segment_exists"


class SegmentInvalid(BuktError):
    """The segment's magic number is wrong: it is not a Bukt segment, or it is damaged."""

    code = "segment_invalid"


class SegmentDenied(SegmentInvalid):
    """The OS refused this process access to the segment (its mode and owner)."""

    code = "segment_denied"


class FormatMismatch(BuktError):
    """The segment is Bukt's but of another format version than this build reads."""

    code = "format_mismatch"


class SegmentFull(BuktError):
    """No memory or index slot is left and the bucket may not evict."""

    code = "segment_full"


class KeyTooLarge(BuktError):
    code = "key_too_large"


class ValueTooLarge(BuktError):
    code = "value_too_large"


class SchemaError(BuktError):
    """The value does not fit the bucket's schema (int, str), or a name is malformed."""

    code = "schema_error"


class VersionMismatch(BuktError):
    """A compare-and-set (if_version) found another version."""

    code = "version_mismatch"


class ReadOnly(BuktError):
    """A write through a read-only attach."""

    code = "read_only"


class ReplicaReadOnly(ReadOnly):
    """A write to a read replica (docs/design.md, Replicas): the message names the
    primary, where writes go."""

    code = "replica_read_only"


class BucketNotFound(BuktError):
    code = "bucket_not_found"


class BucketExists(BuktError):
    code = "bucket_exists"


class LimitExceeded(BuktError):
    """A configured limit other than key or value size (buckets, tokens) was reached."""

    code = "limit_exceeded"


class RingFull(BuktError):
    """The change ring stayed full past the wait bound: the writer process is down or
    behind. The write was not applied."""

    code = "ring_full"
    room = 0    # bytes of ring room the write needed (the core sets it; 0: not known)


class WriterDown(BuktError):
    """A durable write could not be confirmed: the writer process is not flushing."""

    code = "writer_down"


class SegmentRetired(BuktError):
    """The segment was replaced by a cold start (a newer one holds its name) and this
    operation could not move to the new one: the write is not in it. Raised when the
    new segment did not appear in time, when a write met the replacement half way and
    was not applied, or when a write was applied to the old segment only (said in the
    message). The next operation attaches to the new segment."""

    code = "segment_retired"


class DiskError(BuktError):
    """The writer reported a disk error (ENOSPC, EIO); persisted writes are refused."""

    code = "disk_error"


class NotFound(BuktError):
    """A key that an operation needs is absent (expire, persist on a missing key raise
    nothing; this is for front ends that must say 404)."""

    code = "not_found"


class AuthError(BuktError):
    """Missing or wrong token."""

    code = "unauthorized"


class PermissionDenied(BuktError):
    """A valid token without the permission the operation needs."""

    code = "forbidden"


class ProtocolError(BuktError):
    """A malformed request on the wire."""

    code = "protocol_error"


class ObjectTooLarge(ValueTooLarge):
    """An object over limits.max_object (bukt.objects); a face answers it as it
    answers value_too_large (HTTP 413, the binary protocol's VALUE_TOO_LARGE)."""

    code = "object_too_large"


class IntegrityError(BuktError):
    """Stored data does not match its digest or checksum (an object's SHA-256, a
    chunk's CRC-32): it is not returned."""

    code = "integrity_error"


class ObjectGone(NotFound):
    """A part of an object is missing (evicted): the object is gone, as a whole."""

    code = "object_gone"


ALL = [
    c for c in list(globals().values())
    if isinstance(c, type) and issubclass(c, BuktError)
]


class InvalidArgument(BuktError, ValueError):
    """An argument out of its domain: an empty key, a TTL not above zero, a bad cursor."""

    code = "invalid_argument"


ALL.append(InvalidArgument)


class DigestMismatch(InvalidArgument):
    """A body's digest is not the one the client declared (Content-Digest,
    x-amz-checksum-sha256): nothing was stored."""

    code = "digest_mismatch"


ALL.append(DigestMismatch)
