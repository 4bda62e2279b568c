"""Objects on the HTTP face (docs/http.md, "Objects"): a PUT whose body is larger
than one entry streams into bukt.objects, and a GET or HEAD of an object streams it
out, a chunk at a time, so no worker holds a whole 64 MiB body.

PUT. A body with a Content-Length above limits.max_value on a bytes bucket is read
a chunk at a time into objects.aput (every core write waits for ring room on the
loop). A body with none (chunked) is read up to one entry first (limits.max_value,
or http.max_body if lower): one that ends within it is stored as a plain value, as if
it had said its length; a longer one streams on from there as an object. Content-Length above limits.max_object: 413 before a byte
is read. A `Content-Digest: sha-256=:...:` (RFC 9530) or `x-amz-checksum-sha256`
header is checked against the body as it streams: 400 digest_mismatch, nothing
stored, the old value kept. The digest of a small body is checked the same way.

GET / HEAD. Content-Length, ETag (the version, as for every key), Repr-Digest
(sha-256 of the whole object, RFC 9530), Content-Type (the one it was PUT with, or
application/octet-stream). One Range: 206 with Content-Range, reading only the
chunks that hold it; unsatisfiable: 416. A whole read checks the SHA-256 before it
sends the last piece: on a mismatch the response is cut short (the client sees fewer
bytes than Content-Length, never a wrong complete body), logged and counted (the
bucket's integrity_errors: bukt_bucket_integrity_errors_total in /metrics). A chunk
found gone (evicted) cuts it the same way.
"""
import base64
import binascii
import hashlib
import logging

from bukt import objects
from bukt.errors import BuktError, DigestMismatch, InvalidArgument, ObjectTooLarge

log = logging.getLogger("bukt.http")
OBJECT_TYPE = "application/octet-stream"
# bytes asked of the body stream at a time: a body over limits.max_object is refused
# within this much of the limit, even one that stops arriving (falcon's read(n) waits
# for n bytes)
READ_AHEAD = 256 << 10


def expected_sha256(get_header):
    """The SHA-256 a PUT declares (Content-Digest's sha-256, or
    x-amz-checksum-sha256), as 32 bytes; None when it declares none. Both given and
    different: 400."""
    found = []
    cd = get_header(b"content-digest")
    if cd is not None:
        for member in cd.split(","):
            name, eq, value = member.strip().partition("=")
            if eq and name.strip().lower() == "sha-256":
                value = value.strip()
                if len(value) < 2 or value[0] != ":" or value[-1] != ":":
                    raise InvalidArgument("Content-Digest: sha-256 must be a byte "
                                          "sequence, :base64:")
                found.append(_b64_digest(value[1:-1], "Content-Digest"))
    amz = get_header(b"x-amz-checksum-sha256")
    if amz is not None:
        found.append(_b64_digest(amz.strip(), "x-amz-checksum-sha256"))
    if not found:
        return None
    if any(f != found[0] for f in found):
        raise DigestMismatch("Content-Digest and x-amz-checksum-sha256 disagree")
    return found[0]


def _b64_digest(text, name):
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise InvalidArgument(f"{name}: not the base64 of a 32-byte SHA-256")
    return raw


def check_digest(value: bytes, expect: bytes):
    if hashlib.sha256(value).digest() != expect:
        raise DigestMismatch("the body's SHA-256 is not the one declared; nothing was "
                             "stored")


def repr_digest(sha256: bytes) -> str:
    return "sha-256=:" + base64.b64encode(sha256).decode() + ":"


def streams(store, bucket, length, json_body):
    """Whether a PUT goes to the object path: a bytes bucket, a body that is not JSON
    (Bukt's envelope and JSON documents stay where they are), and either no length
    or more than one entry holds."""
    if json_body or bucket.schema_name != "bytes":
        return False
    return length is None or length > store.limits["max_value"]


async def small_body(ctx, req):
    """For a PUT that streams() says may be an object: (value, b"") when its body is
    one a plain entry holds (a chunked body, which says no length, of at most
    limits.max_value and http.max_body bytes: read whole here before deciding), else
    (None, the bytes already read: the object's first)."""
    if req.content_length is not None:
        return None, b""
    small = min(ctx.store.limits["max_value"], ctx.settings.max_body)
    head = await req.stream.read(small + 1)
    if len(head) <= small:
        return head, b""
    return None, head


async def put(ctx, req, bucket, key, ttl, single, conditions, expect, head=b""):
    """The streamed PUT; the Manifest, or None when a condition said no. `head`: the
    body's first bytes, already read (small_body)."""
    limit = ctx.settings.max_object
    length = req.content_length
    if length is not None and length > limit:
        raise ObjectTooLarge(f"body of {length} bytes is over limits.max_object={limit}")
    stream = req.stream

    async def read(n):
        nonlocal head
        if head:
            piece, head = head, b""
            return piece
        return await stream.read(n)
    return await objects.aput(ctx.ring, bucket, key, read, length=length, ttl=ttl,
                              single_read=single, expect_sha256=expect,
                              content_type=_content_type(req), read_size=READ_AHEAD,
                              **conditions)


def _content_type(req):
    ct = req.content_type
    if not ct or ct.split(";", 1)[0].strip().lower() == OBJECT_TYPE:
        return None
    return ct


def ttl_text(expire_ms, now_ms):
    """A Bukt-TTL header's value for an entry's expiry (None: no TTL)."""
    if not expire_ms:
        return None
    return f"{max(0, expire_ms - now_ms) / 1000:.3f}"


def header_pairs(reader, ttl_header, now_ms):
    """The headers of an object's GET or HEAD but Content-Length and Content-Range:
    (name, value) pairs, the same on the slow path (falcon) and the fast one."""
    out = [("Content-Type", reader.content_type or OBJECT_TYPE),
           ("Accept-Ranges", "bytes"), ("ETag", f'"{reader.version}"'),
           ("Repr-Digest", repr_digest(reader.sha256))]
    ttl = ttl_text(reader.expire_ms, now_ms)
    if ttl is not None:
        out.append((ttl_header, ttl))
    return out


def headers(resp, reader, ttl_header, now_ms):
    for name, value in header_pairs(reader, ttl_header, now_ms):
        resp.set_header(name, value)




def body(reader, start, end, path):
    """An async iterator of [start, end) of the object for resp.stream; the reader is
    closed when it ends, however it ends. An error part-way is logged and ends the
    body short (the server then drops the connection)."""
    async def gen():
        try:
            for piece in reader.iter(start, end):
                yield piece
        except BuktError as e:
            log.error("object %s cut short: %s", path, e)
            raise
        finally:
            reader.close()
    return gen()
