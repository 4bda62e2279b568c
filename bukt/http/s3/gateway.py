"""The S3 gateway: an ASGI app on its own port (s3.bind) of the HTTP face, path-style
(http://host:port/<bucket>/<key>), over the same store, tokens and objects as the rest
of Bukt. docs/s3.md says what it supports and how to point clients at it.

A request goes: parse the signature (sigv4.py) -> check its time -> find the token that
signed it (the access key id names the bucket whose tokens are tried; the admin token
always is) -> check the permission the call needs (bukt/http/auth.py's READ, WRITE,
ADMIN) -> the call. Errors are S3's XML documents (xml.py).

BODIES. A PUT's body is read from the connection as it arrives, hashed (SHA-256 for
x-amz-content-sha256 and x-amz-checksum-sha256, MD5 for the ETag and Content-MD5, CRC32
for x-amz-checksum-crc32) and checked before anything is stored: a mismatch stores
nothing. The pieces are then handed to bukt.objects as they came (no joined copy); they
are held in the worker until the checks pass, at most limits.max_object per request.
GET streams the object from the store a piece at a time.
"""

import base64
import hashlib
import json
import logging
import re
import secrets
import time
import zlib
from urllib.parse import parse_qsl, quote, unquote_to_bytes
from xml.sax.saxutils import escape as xml_escape

from bukt.errors import BucketExists, BucketNotFound, DigestMismatch, IntegrityError, \
    InvalidArgument, LimitExceeded, ObjectGone, RingFull, SegmentFull, ValueTooLarge, \
    WriterDown
from bukt.http.auth import ADMIN, ADMIN_PRINCIPAL, READ, WRITE, Principal
from bukt.http.keys import parse_range as parse_byte_range
from bukt.http.s3 import objstore, sigv4
from bukt.http.s3.xml import MAX_XML_BODY, XML_TYPE, S3Error, doc, el, error_body, \
    http_date, iso, parse as parse_xml
from bukt.writewait.ringroom import META_ROOM

log = logging.getLogger("bukt.http")
S3_ROUTE = "s3"           # its counters' route name (bukt/http/app.py counts it)
BUCKET_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
PAGE_MAX = 1000                   # S3's most keys, uploads or parts in one listing page
MIN_PART = 5 << 20                # S3's smallest part but the last
MAX_PARTS = 10000
UPLOAD_NS = objstore.RESERVED_PREFIX + b"s3u/"      # multipart uploads' hidden entries
META_PREFIX = "x-amz-meta-"
MAX_META = 2048                   # bytes of x-amz-meta-* headers (S3's limit), and
#                                   of the KEPT_HEADERS with them
# the standard headers a PUT (or CreateMultipartUpload, or a copy's REPLACE) sets and
# GET/HEAD give back, as S3 keeps them; Content-Type is the manifest's own field
KEPT_HEADERS = ("cache-control", "content-disposition", "content-encoding",
                "content-language", "expires")
UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")
PART_RE = re.compile(rb"/(\d{5})")       # an upload's part, after its record's key
OWNER = "<ID>bukt</ID><DisplayName>bukt</DisplayName>"   # every owner and initiator
# The query parameters each call understands; a request with any other is
# NotImplemented, never taken for a call it is not (DeleteObjectTagging for
# DeleteObject, GetObjectLockConfiguration for ListObjects).
LIST_PARAMS = frozenset({"list-type", "prefix", "delimiter", "max-keys",
                         "continuation-token", "start-after", "marker", "encoding-type",
                         "fetch-owner", "versions", "key-marker", "version-id-marker"})
OVERRIDES = {"response-" + h: h.encode() for h in (
    "content-type", "content-language", "expires", "cache-control",
    "content-disposition", "content-encoding")}        # GetObject's header overrides
GET_PARAMS = frozenset({"versionId", "partNumber", *OVERRIDES})


def _b64(data):
    return base64.b64encode(data).decode()


class MidBody(BaseException):
    """A failure after the response began: passed to the server (which cuts the
    connection), past the handlers that would answer with an error document."""


class Request:
    __slots__ = ("method", "raw_path", "query", "q", "headers", "hvals", "bucket", "key",
                 "principal", "sig", "scope_info", "receive", "peer", "body_done")

    def __init__(self, scope, receive):
        self.method = scope["method"]
        self.raw_path = scope.get("raw_path") or scope["path"].encode()
        qs = scope.get("query_string", b"").decode("latin-1")
        self.query = parse_qsl(qs, keep_blank_values=True)
        self.q = dict(self.query)
        self.hvals = {}
        for k, v in scope["headers"]:
            self.hvals.setdefault(k.decode("latin-1").lower(), []).append(v.decode("latin-1"))
        self.headers = {k: v[0] for k, v in self.hvals.items()}
        path = self.raw_path.split(b"?", 1)[0]
        bucket, _, key = path.lstrip(b"/").partition(b"/")
        self.bucket = unquote_to_bytes(bucket).decode("utf-8", "replace") or None
        self.key = unquote_to_bytes(key) if key else None
        self.receive = receive
        self.principal = None
        self.peer = (scope.get("client") or ("-",))[0]
        self.body_done = False

    @property
    def resource(self):
        r = "/" + (self.bucket or "")
        if self.key:
            r += "/" + self.key.decode("utf-8", "replace")
        return r


class Credentials:
    """access key id -> [(Principal, secret)], read from the bucket table and kept
    until it changes (store.meta_epoch)."""

    def __init__(self, store, admin_token):
        self.store = store
        self.admin = [(ADMIN_PRINCIPAL, sigv4.s3_secret(admin_token))] if admin_token else []
        self._epoch, self._table = None, {}

    def candidates(self, access_key):
        epoch = self.store.meta_epoch
        if epoch != self._epoch:
            table = {}
            for row in self.store.bucket_table():
                _, _, state, name, *_rest = row
                tokens = row[8]
                if state == 1:
                    table[name] = [(Principal(name, tid, perms), sigv4.secret_of_digest(h))
                                   for tid, perms, h in tokens]
            self._table, self._epoch = table, epoch
        return self._table.get(access_key, []) + self.admin


class S3App:
    def __init__(self, ctx):
        self.ctx = ctx
        s = ctx.settings
        self.region = s.s3_region
        self.max_skew = s.s3_max_skew
        self.max_object = s.max_object
        self.upload_timeout = s.upload_timeout
        self.creds = Credentials(ctx.store, s.admin_token)
        self._keys = {}               # (secret, date, region) -> signing key
        self.frontdoor = None         # counters and access lines (middleware.py)

    # -- ASGI ---------------------------------------------------------------------------
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        req = Request(scope, receive)
        start = time.perf_counter()
        rid = secrets.token_hex(8).upper()
        started = []

        async def sending(message):
            if message["type"] == "http.response.start":
                started.append(message["status"])
            await send(message)
        try:
            try:
                status = await self.handle(req, sending, rid)
            except Exception as e:
                if not started:
                    raise
                # Mid-body (an object found corrupt, or gone, as it was streamed):
                # no error document can follow a started body. The connection is cut
                # instead, so the client sees a body shorter than its Content-Length,
                # never a complete-looking wrong one.
                log.error("S3 %s %s failed mid-body: %s", req.method, req.resource, e)
                raise MidBody(f"{req.method} {req.resource}: {e}") from e
        except S3Error as e:
            status = await self.error(send, req, e, rid)
        except sigv4.SigError as e:
            status = await self.error(send, req, S3Error(e.code, str(e)), rid)
        except BucketExists as e:
            status = await self.error(send, req, S3Error("BucketAlreadyOwnedByYou", str(e)),
                                      rid)
        except (SegmentFull, WriterDown) as e:
            status = await self.error(send, req, S3Error("ServiceUnavailable", str(e)), rid)
        except RingFull as e:
            status = await self.error(send, req, S3Error("SlowDown", str(e)), rid)
        except BucketNotFound:
            status = await self.error(send, req, S3Error(
                "NoSuchBucket", "The specified bucket does not exist"), rid)
        except DigestMismatch as e:
            status = await self.error(send, req, S3Error("BadDigest", str(e)), rid)
        except ObjectGone as e:
            status = await self.error(send, req, S3Error("NoSuchKey", str(e)), rid)
        except IntegrityError as e:
            # a stored object that no longer matches its digest: never served as good
            log.error("S3 %s %s: %s", req.method, req.resource, e)
            status = await self.error(send, req, S3Error("InternalError", str(e)), rid)
        except (ValueTooLarge, LimitExceeded) as e:
            status = await self.error(send, req, S3Error("EntityTooLarge", str(e)), rid)
        except InvalidArgument as e:
            status = await self.error(send, req, S3Error("InvalidArgument", str(e)), rid)
        except Exception:
            log.exception("S3 %s %s", req.method, req.resource)
            status = await self.error(send, req, S3Error("InternalError",
                                                         "an internal error"), rid)
        fd = self.frontdoor
        if fd is not None:
            fd.record(S3_ROUTE, status, time.perf_counter() - start, req.method,
                      scope.get("path", ""), req.bucket, req.peer)

    async def error(self, send, req, e, rid):
        size = e.extra.pop("size", None)
        body = b"" if req.method == "HEAD" else error_body(e.code, e.message,
                                                          e.resource or req.resource, rid,
                                                          e.extra)
        headers = [(b"content-type", XML_TYPE), (b"x-amz-request-id", rid.encode())]
        if not req.body_done and (req.headers.get("content-length", "0") != "0" or
                                  "transfer-encoding" in req.headers):
            # refused before its body was read: the rest of the body must not be taken
            # for the next request on this connection, so it is not kept alive
            headers.append((b"connection", b"close"))
        if size is not None:
            headers.append((b"content-range", b"bytes */%d" % size))
        await self.respond(send, e.status, headers, body, head=req.method == "HEAD")
        return e.status

    @staticmethod
    async def respond(send, status, headers, body=b"", head=False, length=None):
        headers = list(headers)
        headers.append((b"content-length", str(len(body) if length is None else length)
                        .encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else body})

    async def xml(self, send, rid, body, status=200):
        await self.respond(send, status, [(b"content-type", XML_TYPE),
                                          (b"x-amz-request-id", rid.encode())], body)
        return status

    # -- authentication --------------------------------------------------------------------
    def authenticate(self, req):
        p = sigv4.parse(req.headers, req.query)
        if p is None:
            raise S3Error("AccessDenied", "anonymous requests are refused: sign with "
                                          "AWS Signature Version 4 (docs/s3.md)")
        if p.service != "s3":
            raise S3Error("AuthorizationHeaderMalformed", "the credential's service must "
                                                          "be s3")
        if not sigv4.payload_hash_ok(p):
            raise S3Error("InvalidArgument", "x-amz-content-sha256 must be a hex SHA-256, "
                                             "UNSIGNED-PAYLOAD or a streaming form")
        guard = self.ctx.auth.guard
        if guard is not None and self.ctx.auth.guarded():
            # a locked-out address is refused before its signature is looked at
            # (bukt/authguard.py), as on the rest of the HTTP face
            left = guard.check(req.peer)
            if left:
                raise S3Error("SlowDown", f"too many failed authentications from "
                              f"{req.peer}; retry in {int(left) + 1} s")
        sigv4.check_time(p, time.time(), self.max_skew)
        query = [(k, v) for k, v in req.query]
        sts = sigv4.string_to_sign(p, req.method, req.raw_path.split(b"?", 1)[0], query,
                                   req.hvals)
        candidates = self.creds.candidates(p.access_key)
        for principal, secret in candidates:
            k = (secret, p.scope_date, p.region)
            key = self._keys.get(k)
            if key is None:
                if len(self._keys) > 1024:
                    self._keys.clear()
                key = self._keys[k] = sigv4.signing_key(secret, p.scope_date, p.region,
                                                        "s3")
            if sigv4.matches(key, sts, p.signature):
                req.principal, req.sig = principal, p
                req.scope_info = (key, f"{p.scope_date}/{p.region}/s3/aws4_request")
                return principal
        if guard is not None:
            guard.failed(req.peer)
        # One answer whether or not the bucket named exists: like the rest of the HTTP
        # face (bukt/http/auth.py), a caller who cannot sign learns nothing of it.
        raise S3Error("SignatureDoesNotMatch", "The request signature we calculated does "
                      "not match the signature you provided: no token of the bucket "
                      "named by the access key id, nor the admin token, signed it "
                      "(the secret is the token's SHA-256 in hex: docs/s3.md)")

    @staticmethod
    def allow(req, bucket, perm):
        p = req.principal
        if p.is_admin:
            return
        if bucket is None or p.bucket != bucket:
            raise S3Error("AccessDenied", "Access Denied: this key belongs to another "
                                          "bucket" if bucket else "Access Denied")
        if not p.perms & perm:
            raise S3Error("AccessDenied", "Access Denied: the token lacks the "
                          f"{ {READ: 'read', WRITE: 'write', ADMIN: 'admin'}[perm]} "
                          "permission")

    def bucket(self, req, perm):
        self.allow(req, req.bucket, perm)
        try:
            return self.ctx.store.bucket(req.bucket)
        except BucketNotFound:
            raise S3Error("NoSuchBucket", "The specified bucket does not exist",
                          "/" + req.bucket, BucketName=req.bucket) from None

    # -- dispatch ----------------------------------------------------------------------------
    async def handle(self, req, send, rid):
        self.authenticate(req)
        m, q = req.method, req.q
        if req.bucket is None:
            if m == "GET":
                return await self.list_buckets(req, send, rid)
            raise S3Error("MethodNotAllowed", "only GET (ListBuckets) at /")
        if req.bucket is not None and not BUCKET_RE.fullmatch(req.bucket):
            raise S3Error("InvalidBucketName", "bucket names are A-Z a-z 0-9 . _ -, up "
                                               "to 64")
        if req.key is None:
            if m == "PUT" and not q:
                return await self.create_bucket(req, send, rid)
            if m == "DELETE" and not q:
                return await self.delete_bucket(req, send, rid)
            if m == "HEAD":
                self.bucket(req, READ)
                await self.respond(send, 200, [(b"x-amz-request-id", rid.encode()),
                                               (b"x-amz-bucket-region",
                                                self.region.encode())], head=True)
                return 200
            if m == "GET" and "location" in q:
                self.bucket(req, READ)
                # S3 says us-east-1 with an empty constraint
                return await self.xml(send, rid, doc(
                    "LocationConstraint", "" if self.region == "us-east-1" else
                    xml_escape(self.region)))
            if m == "GET" and "uploads" in q:
                return await self.list_uploads(req, send, rid)
            if m == "GET" and "versioning" in q:
                self.bucket(req, READ)
                return await self.xml(send, rid, doc("VersioningConfiguration", ""))
            if m == "GET" and not unknown(q, LIST_PARAMS):
                return await self.list_objects(req, send, rid)
            if m == "POST" and "delete" in q:
                return await self.delete_objects(req, send, rid)
            raise S3Error("NotImplemented", "this bucket operation is not supported "
                                            "(docs/s3.md)")
        if len(req.key) > self.ctx.store.limits["max_key"]:
            raise S3Error("KeyTooLongError", "Your key is too long (limits.max_key)")
        if req.key.startswith(objstore.RESERVED_PREFIX):
            raise S3Error("InvalidArgument", "keys starting with \\0bkt\\0 are reserved")
        if m in ("PUT", "POST") and ("if-match" in req.headers or
                                     "if-none-match" in req.headers):
            # a conditional write ignored would overwrite what the client meant to
            # keep: refused until the store can check and write in one step
            raise S3Error("NotImplemented", "conditional writes (If-Match, If-None-Match "
                                            "on a write) are not supported (docs/s3.md)")
        if m in ("GET", "HEAD"):
            if "uploadId" in q and m == "GET":
                return await self.list_parts(req, send, rid)
            if not unknown(q, GET_PARAMS):
                self.null_version(req)
                return await self.get_object(req, send, rid)
        if m == "PUT":
            if "uploadId" in q or "partNumber" in q:
                return await self.upload_part(req, send, rid)
            if "x-amz-copy-source" in req.headers:
                return await self.copy_object(req, send, rid)
            if q.keys() - {"x-id"} - {k for k in q if k.startswith("X-Amz-")}:
                raise S3Error("NotImplemented", "this object operation is not supported "
                                                "(docs/s3.md)")
            return await self.put_object(req, send, rid)
        if m == "DELETE":
            if "uploadId" in q:
                return await self.abort_upload(req, send, rid)
            if not unknown(q, {"versionId"}):
                self.null_version(req)
                return await self.delete_object(req, send, rid)
        if m == "POST" and "uploads" in q:
            return await self.create_upload(req, send, rid)
        if m == "POST" and "uploadId" in q:
            return await self.complete_upload(req, send, rid)
        raise S3Error("NotImplemented", "this object operation is not supported "
                                        "(docs/s3.md)")

    @staticmethod
    def null_version(req):
        """Never versioned: "null" is every object's one version, and no other is."""
        v = req.q.get("versionId", "null")
        if v != "null":
            raise S3Error("NoSuchVersion", "The specified version does not exist.",
                          Key=req.key.decode("utf-8", "replace"), VersionId=v)

    # -- buckets -----------------------------------------------------------------------------
    async def list_buckets(self, req, send, rid):
        p = req.principal
        names = sorted(self.ctx.store.buckets()) if p.is_admin else \
            [n for n in self.ctx.store.buckets() if n == p.bucket]
        created = iso(0)
        inner = "<Buckets>" + "".join(
            f"<Bucket>{el('Name', n)}{el('CreationDate', created)}</Bucket>"
            for n in names) + "</Buckets>" + \
            f"<Owner>{OWNER}</Owner>"
        return await self.xml(send, rid, doc("ListAllMyBucketsResult", inner))

    async def create_bucket(self, req, send, rid):
        ctx = self.ctx
        p = req.principal
        if not p.is_admin and not (p.bucket == req.bucket and
                                   req.bucket in ctx.store.buckets()):
            raise S3Error("AccessDenied", "creating a bucket needs the admin token")
        await drain(req, MAX_XML_BODY)       # an optional CreateBucketConfiguration
        # A bucket's own token creating it is told it has it already, as S3 tells an
        # owner: clients (rclone's mkdir, rcat, an upload to a bucket not yet listed)
        # create a bucket before they write to it and take that answer as success.
        if req.bucket in ctx.store.buckets():
            raise S3Error("BucketAlreadyOwnedByYou", "Your previous request to create "
                          "the named bucket succeeded and you already own it.")
        await ctx.ring.write_all(META_ROOM, ctx.store.create_bucket, req.bucket)
        await ctx.durability.settle(req.bucket)
        await self.respond(send, 200, [(b"location", b"/" + req.bucket.encode()),
                                       (b"x-amz-request-id", rid.encode())])
        return 200

    async def delete_bucket(self, req, send, rid):
        b = self.bucket(req, ADMIN)
        cursor = 0
        while True:
            cursor, keys = b.scan(cursor=cursor, count=100)
            if any(not k.startswith(objstore.RESERVED_PREFIX) for k in keys):
                raise S3Error("BucketNotEmpty", "The bucket you tried to delete is not "
                                                "empty")
            if cursor == 0:
                break
        await self.ctx.ring.write_all(META_ROOM, self.ctx.store.drop_bucket, req.bucket)
        await self.ctx.durability.settle(req.bucket)
        await self.respond(send, 204, [(b"x-amz-request-id", rid.encode())])
        return 204

    # -- listing -----------------------------------------------------------------------------
    async def list_objects(self, req, send, rid):
        """ListObjectsV2, ListObjects, and ListObjectVersions (?versions): never
        versioned, every object is its one version, "null", the latest."""
        b = self.bucket(req, READ)
        q = req.q
        versions = "versions" in q
        v2 = q.get("list-type") == "2" and not versions
        prefix = q.get("prefix", "")
        delim = q.get("delimiter", "")
        url = q.get("encoding-type") == "url"
        max_keys = page_size(q, "max-keys")
        if v2:
            token = q.get("continuation-token")
            if token is not None:
                try:
                    after = base64.urlsafe_b64decode(token.encode()).decode("utf-8")
                except ValueError:
                    raise S3Error("InvalidArgument", "The continuation token provided is "
                                                     "incorrect") from None
            else:
                after = q.get("start-after", "")
        else:
            # a version-id-marker can only be "null", the key-marker's one version:
            # either way the listing goes on after the key-marker
            after = q.get("key-marker" if versions else "marker", "")
        pb = prefix.encode("utf-8", "surrogateescape")
        keys, cursor = [], 0
        while True:
            cursor, got = b.scan(prefix=pb, cursor=cursor, count=1000)
            keys.extend(k for k in got if not k.startswith(objstore.RESERVED_PREFIX))
            if cursor == 0:
                break
        names = sorted(set(k.decode("utf-8", "surrogateescape") for k in keys))
        page = roll_up(((n, None) for n in names if n > after), prefix, delim, after,
                       max_keys, lambda name, _: objstore.head(
                           b, name.encode("utf-8", "surrogateescape")))
        contents, prefixes, truncated = page.contents, page.prefixes, page.truncated
        last = page.last
        enc = url_encoder(url)
        parts = [el("Name", req.bucket), el("Prefix", enc(prefix)),
                 el("MaxKeys", max_keys), el("IsTruncated", str(truncated).lower())]
        if delim:
            parts.append(el("Delimiter", enc(delim)))
        if url:
            parts.append(el("EncodingType", "url"))
        if v2:
            parts.append(el("KeyCount", len(contents) + len(prefixes)))
            if "continuation-token" in q:
                parts.append(el("ContinuationToken", q["continuation-token"]))
            if "start-after" in q:
                parts.append(el("StartAfter", enc(q["start-after"])))
            if truncated:
                parts.append(el("NextContinuationToken", base64.urlsafe_b64encode(
                    last.encode("utf-8", "surrogateescape")).decode()))
        elif versions:
            parts += [el("KeyMarker", enc(after)),
                      el("VersionIdMarker", q.get("version-id-marker", ""))]
            if truncated:
                parts += [el("NextKeyMarker", enc(last)),
                          el("NextVersionIdMarker", "null")]
        else:
            parts.append(el("Marker", enc(after)))
            if truncated and delim:
                parts.append(el("NextMarker", enc(last)))
        for name, info in contents:
            if versions:
                parts.append("<Version>" + el("Key", enc(name)) +
                             el("VersionId", "null") + el("IsLatest", "true") +
                             el("LastModified", iso(info.created_ms)) +
                             el("ETag", f'"{info.etag}"') + el("Size", info.size) +
                             f"<Owner>{OWNER}</Owner>" + el("StorageClass", "STANDARD") +
                             "</Version>")
                continue
            parts.append("<Contents>" + el("Key", enc(name)) +
                         el("LastModified", iso(info.created_ms)) +
                         el("ETag", f'"{info.etag}"') + el("Size", info.size) +
                         el("StorageClass", "STANDARD") + "</Contents>")
        parts += common_prefixes(prefixes, enc)
        return await self.xml(send, rid, doc(
            "ListVersionsResult" if versions else "ListBucketResult", "".join(parts)))

    # -- objects ----------------------------------------------------------------------------
    def object_headers(self, info, rid):
        h = [(b"etag", f'"{info.etag}"'.encode()),
             (b"last-modified", http_date(info.created_ms).encode()),
             (b"accept-ranges", b"bytes"),
             (b"content-type", (info.content_type or "binary/octet-stream").encode()),
             (b"x-amz-request-id", rid.encode())]
        for k, v in (info.meta or {}).items():
            h.append(((META_PREFIX + k).encode("latin-1", "replace"),
                      str(v).encode("latin-1", "replace")))
        for k, v in info.headers.items():
            h.append((k.encode("latin-1"), str(v).encode("latin-1", "replace")))
        return h

    async def get_object(self, req, send, rid):
        b = self.bucket(req, READ)
        head = req.method == "HEAD"
        info = (objstore.head if head else objstore.open_object)(b, req.key)
        if info is None:
            raise S3Error("NoSuchKey", "The specified key does not exist.",
                          Key=req.key.decode("utf-8", "replace"))
        with info:
            headers = self.object_headers(info, rid)
            over = {OVERRIDES[k]: v for k, v in req.q.items() if k in OVERRIDES}
            if over:
                headers = [(k, v) for k, v in headers if k not in over] + \
                    [(k, v.encode("latin-1", "replace")) for k, v in over.items()]
            cond = self.preconditions(req, info)
            if cond is not None:
                await self.respond(send, cond, headers, head=True)
                return cond
            rng = parse_range(req.headers.get("range"), info.size)
            if "partNumber" in req.q:
                # Part boundaries are not kept: part 1 of an object stored whole (its
                # ETag no MD5-of-MD5s) is the whole object; any other is refused
                # rather than answered with the whole object as if it were the part.
                if req.q["partNumber"] != "1" or "-" in info.etag:
                    raise S3Error("NotImplemented", "GetObject's partNumber is only "
                                  "supported for part 1 of an object not uploaded in "
                                  "parts (docs/s3.md)")
                rng = (0, info.size) if info.size else None
            if rng is None:
                start, end, status = 0, info.size, 200
            else:
                start, end = rng
                status = 206
                headers.append((b"content-range", b"bytes %d-%d/%d" %
                                (start, end - 1, info.size)))
            headers.append((b"content-length", str(end - start).encode()))
            await send({"type": "http.response.start", "status": status,
                        "headers": headers})
            if head or end == start:
                await send({"type": "http.response.body", "body": b""})
                return status
            for piece in info.iter(start, end):
                await send({"type": "http.response.body", "body": piece,
                            "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        return status

    @staticmethod
    def preconditions(req, info):
        h = req.headers
        etag = f'"{info.etag}"'
        im, inm = h.get("if-match"), h.get("if-none-match")
        if im is not None and etag not in [t.strip() for t in im.split(",")] \
                and im.strip() != "*":
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you "
                                                "specified did not hold")
        if inm is not None and (inm.strip() == "*" or
                                etag in [t.strip() for t in inm.split(",")]):
            return 304
        return None

    def meta_of(self, req):
        """(the x-amz-meta-* headers without their prefix, the KEPT_HEADERS) a request
        sets on its object, together within MAX_META bytes."""
        meta = {k[len(META_PREFIX):]: v for k, v in req.headers.items()
                if k.startswith(META_PREFIX)}
        kept = {k: req.headers[k] for k in KEPT_HEADERS if k in req.headers}
        if "content-encoding" in kept:
            # aws-chunked is how this request's body was framed, not the object's
            enc = [e.strip() for e in kept.pop("content-encoding").split(",")]
            enc = ", ".join(e for e in enc if e and e.lower() != "aws-chunked")
            if enc:
                kept["content-encoding"] = enc
        if sum(len(k) + len(v) for d in (meta, kept) for k, v in d.items()) > MAX_META:
            raise S3Error("InvalidArgument", f"x-amz-meta-* and the standard headers "
                          f"kept with the object are over {MAX_META} bytes")
        return meta, kept

    @staticmethod
    def extra_of(kept, **more):
        """The manifest's extra for an object with these kept headers."""
        extra = {**more, "headers": kept} if kept else more
        return extra or None

    async def put_object(self, req, send, rid):
        b = self.bucket(req, WRITE)
        meta, kept = self.meta_of(req)
        body = Body(req, self.max_object)
        await objstore.aput(self.ctx.ring, b, req.key, body.read, length=body.length,
                            content_type=req.headers.get("content-type"), meta=meta,
                            extra=self.extra_of(kept))
        await self.ctx.durability.settle(req.bucket)
        headers = [(b"etag", f'"{body.md5}"'.encode()), (b"x-amz-request-id", rid.encode())]
        if "x-amz-checksum-sha256" in req.headers:
            headers.append((b"x-amz-checksum-sha256", _b64(body.sha256).encode()))
        await self.respond(send, 200, headers)
        return 200

    async def delete_object(self, req, send, rid):
        b = self.bucket(req, WRITE)
        objstore.delete(b, req.key)
        await self.ctx.durability.settle(req.bucket)
        await self.respond(send, 204, [(b"x-amz-request-id", rid.encode())])
        return 204

    async def delete_objects(self, req, send, rid):
        b = self.bucket(req, WRITE)
        root = parse_xml(await Body(req, MAX_XML_BODY).whole(), "Delete")
        quiet = (root.findtext("Quiet") or "").strip().lower() == "true"
        objs = root.findall("Object")
        if len(objs) > 1000:
            raise S3Error("MalformedXML", "at most 1000 keys per DeleteObjects")
        out = []
        for o in objs:
            key = o.findtext("Key")
            if key is None:
                raise S3Error("MalformedXML", "an Object without its Key")
            kb = key.encode("utf-8", "surrogateescape")
            if kb.startswith(objstore.RESERVED_PREFIX):
                out.append("<Error>" + el("Key", key) + el("Code", "InvalidArgument") +
                           el("Message", "reserved key") + "</Error>")
                continue
            objstore.delete(b, kb)
            if not quiet:
                out.append("<Deleted>" + el("Key", key) + "</Deleted>")
        await self.ctx.durability.settle(req.bucket)
        return await self.xml(send, rid, doc("DeleteResult", "".join(out)))

    async def copy_source(self, req):
        """(bucket, key, Info held for reading) of the object x-amz-copy-source names,
        with the read permission on it and its x-amz-copy-source-if-* conditions met."""
        src = req.headers["x-amz-copy-source"].split("?", 1)[0]
        sb, _, sk = unquote_to_bytes(src.lstrip("/")).partition(b"/")
        if not sk:
            raise S3Error("InvalidArgument", "x-amz-copy-source must be /bucket/key")
        sname = sb.decode("utf-8", "replace")
        self.allow(req, sname, READ)
        try:
            sbucket = self.ctx.store.bucket(sname)
        except BucketNotFound:
            raise S3Error("NoSuchBucket", "The specified bucket does not exist") from None
        h = req.headers
        if "x-amz-copy-source-if-modified-since" in h or \
                "x-amz-copy-source-if-unmodified-since" in h:
            raise S3Error("NotImplemented", "x-amz-copy-source-if-(un)modified-since is "
                                            "not supported (docs/s3.md)")
        await drain(req, 0)
        info = objstore.open_object(sbucket, sk)
        if info is None:
            raise S3Error("NoSuchKey", "The specified key does not exist.",
                          Key=sk.decode("utf-8", "replace"))
        im = h.get("x-amz-copy-source-if-match")
        inm = h.get("x-amz-copy-source-if-none-match")
        tags = (lambda v: {t.strip().strip('"') for t in v.split(",")})
        if (im is not None and im.strip() != "*" and info.etag not in tags(im)) or \
                (inm is not None and (inm.strip() == "*" or info.etag in tags(inm))):
            info.close()
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you "
                                                "specified did not hold")
        return sbucket, sk, info

    async def copy_object(self, req, send, rid):
        dst = self.bucket(req, WRITE)
        sbucket, sk, info = await self.copy_source(req)
        with info:
            if req.headers.get("x-amz-metadata-directive", "COPY").upper() == "REPLACE":
                ctype = req.headers.get("content-type")
                meta, kept = self.meta_of(req)
            else:
                # S3 lets an object be copied onto itself to change its storage
                # class (rclone settier): here always STANDARD, so a rewrite as it was
                if sbucket is dst and sk == req.key and \
                        "x-amz-storage-class" not in req.headers:
                    raise S3Error("InvalidRequest", "This copy request is illegal because "
                                  "it is trying to copy an object to itself without "
                                  "changing the object's metadata")
                ctype, meta, kept = info.content_type, info.meta, info.headers
            if info.size > self.max_object:
                raise S3Error("EntityTooLarge", "the source is over limits.max_object")
            md5 = hashlib.md5()

            def pieces():
                for p in info.iter(0, info.size):
                    md5.update(p)
                    yield p
            await objstore.aput_iter(self.ctx.ring, dst, req.key, pieces(),
                                     length=info.size, content_type=ctype, meta=meta,
                                     extra=self.extra_of(kept))
        await self.ctx.durability.settle(req.bucket)
        body = doc("CopyObjectResult", el("LastModified", iso(time.time() * 1000)) +
                   el("ETag", f'"{md5.hexdigest()}"'))
        return await self.xml(send, rid, body)

    # -- multipart ---------------------------------------------------------------------------
    def upload_key(self, upload_id, part=None):
        k = UPLOAD_NS + upload_id.encode()
        return k if part is None else k + b"/%05d" % part

    def upload_record(self, b, req):
        uid = req.q.get("uploadId", "")
        if not UPLOAD_ID_RE.fullmatch(uid):
            raise S3Error("NoSuchUpload", "The specified upload does not exist.")
        got = objstore.get_hidden(b, self.upload_key(uid))
        if got is None:
            raise S3Error("NoSuchUpload", "The specified upload does not exist. The "
                          "upload ID may be invalid, or the upload may have been aborted "
                          "or completed.")
        rec = json.loads(got)
        if rec["key"] != req.key.decode("utf-8", "surrogateescape"):
            raise S3Error("NoSuchUpload", "The specified upload is for another key.")
        return uid, rec

    async def create_upload(self, req, send, rid):
        b = self.bucket(req, WRITE)
        await drain(req, MAX_XML_BODY)
        uid = new_upload_id()
        meta, kept = self.meta_of(req)
        rec = {"key": req.key.decode("utf-8", "surrogateescape"),
               "created": time.time(), "content_type": req.headers.get("content-type"),
               "meta": meta, "headers": kept}
        # Every entry of an upload carries objects.upload_timeout as its TTL: an
        # upload nobody completes or aborts expires whole, and its chunks are reclaimed
        # like any expired object's.
        objstore.put_hidden(b, self.upload_key(uid), json.dumps(rec).encode(),
                            self.upload_timeout)
        await self.ctx.durability.settle(req.bucket)
        return await self.xml(send, rid, doc(
            "InitiateMultipartUploadResult", el("Bucket", req.bucket) +
            el("Key", rec["key"]) + el("UploadId", uid)))

    def part_target(self, req):
        """(bucket, upload id, part number, the upload's seconds left) of UploadPart and
        UploadPartCopy."""
        b = self.bucket(req, WRITE)
        uid, rec = self.upload_record(b, req)
        try:
            n = int(req.q.get("partNumber", ""))
        except ValueError:
            n = 0
        if not 1 <= n <= MAX_PARTS:
            raise S3Error("InvalidArgument", f"partNumber must be 1 to {MAX_PARTS}")
        left = rec["created"] + self.upload_timeout - time.time()
        if left <= 0:
            raise S3Error("NoSuchUpload", "The upload has expired (objects.upload_timeout)")
        return b, uid, n, left

    async def upload_part_copy(self, req, send, rid):
        """UploadPartCopy: a part made of an existing object, whole or the range
        x-amz-copy-source-range names (bytes=first-last, both inclusive)."""
        b, uid, n, left = self.part_target(req)
        _, _, info = await self.copy_source(req)
        with info:
            rng = req.headers.get("x-amz-copy-source-range")
            start, end = 0, info.size
            if rng is not None:
                m = re.fullmatch(r"bytes=(\d+)-(\d+)", rng.strip())
                if m is None:
                    raise S3Error("InvalidArgument", "x-amz-copy-source-range must be "
                                                     "bytes=first-last")
                start, end = int(m.group(1)), int(m.group(2)) + 1
                if start >= end or end > info.size:
                    raise S3Error("InvalidArgument", "Range specified is not valid for "
                                  f"source object of size: {info.size}")
            if end - start > self.max_object:
                raise S3Error("EntityTooLarge", "the part is over limits.max_object")
            md5 = hashlib.md5()

            def pieces():
                for p in info.iter(start, end):
                    md5.update(p)
                    yield p
            await objstore.aput_iter(self.ctx.ring, b, self.upload_key(uid, n), pieces(),
                                     length=end - start, ttl=left, hidden=True)
        await self.ctx.durability.settle(req.bucket)
        return await self.xml(send, rid, doc(
            "CopyPartResult", el("LastModified", iso(time.time() * 1000)) +
            el("ETag", f'"{md5.hexdigest()}"')))

    async def upload_part(self, req, send, rid):
        if "x-amz-copy-source" in req.headers:
            return await self.upload_part_copy(req, send, rid)
        b, uid, n, left = self.part_target(req)
        body = Body(req, self.max_object)
        await objstore.aput(self.ctx.ring, b, self.upload_key(uid, n), body.read,
                            length=body.length, ttl=left, hidden=True)
        await self.ctx.durability.settle(req.bucket)
        await self.respond(send, 200, [(b"etag", f'"{body.md5}"'.encode()),
                                       (b"x-amz-request-id", rid.encode())])
        return 200

    async def complete_upload(self, req, send, rid):
        b = self.bucket(req, WRITE)
        uid, rec = self.upload_record(b, req)
        root = parse_xml(await Body(req, MAX_XML_BODY).whole(), "CompleteMultipartUpload")
        wanted = []
        for p in root.findall("Part"):
            try:
                n = int(p.findtext("PartNumber", ""))
            except ValueError:
                raise S3Error("MalformedXML", "a Part without its PartNumber") from None
            wanted.append((n, (p.findtext("ETag") or "").strip().strip('"')))
        if not wanted:
            raise S3Error("MalformedXML", "no Part to complete the upload with")
        if [n for n, _ in wanted] != sorted(set(n for n, _ in wanted)):
            raise S3Error("InvalidPartOrder", "The list of parts was not in ascending "
                                              "order.")
        infos = []
        try:
            for i, (n, etag) in enumerate(wanted):
                info = objstore.open_object(b, self.upload_key(uid, n))
                if info is None or info.etag != etag:
                    raise S3Error("InvalidPart", f"part {n} was not uploaded, or its ETag "
                                                 "differs")
                info.__enter__()
                infos.append(info)
                if i < len(wanted) - 1 and info.size < MIN_PART:
                    raise S3Error("EntityTooSmall", f"part {n} is under 5 MiB and not "
                                                    "the last")
            total = sum(i.size for i in infos)
            if total > self.max_object:
                raise S3Error("EntityTooLarge", f"the object would be {total} bytes, over "
                              f"limits.max_object ({self.max_object})")
            etag = hashlib.md5(b"".join(bytes.fromhex(i.etag) for i in infos)).hexdigest() \
                + f"-{len(infos)}"

            def pieces():
                for info in infos:
                    yield from info.iter(0, info.size)
            await objstore.aput_iter(self.ctx.ring, b, req.key, pieces(), length=total,
                                     content_type=rec.get("content_type"),
                                     meta=rec.get("meta"),
                                     extra=self.extra_of(rec.get("headers"), etag=etag))
        finally:
            for info in infos:
                info.__exit__(None, None, None)
        self.drop_upload(b, uid)      # the listed parts and any other
        await self.ctx.durability.settle(req.bucket)
        return await self.xml(send, rid, doc(
            "CompleteMultipartUploadResult", el("Location", req.resource) +
            el("Bucket", req.bucket) + el("Key", rec["key"]) + el("ETag", f'"{etag}"')))

    def open_uploads(self, b):
        """Every open upload of a bucket: [(key, upload id, record)] sorted by key, then
        by upload id (which sorts by when it began). It scans the bucket's hidden keys,
        every chunk's among them: docs/s3.md says what a listing costs."""
        out, cursor, now = [], 0, time.time()
        while True:
            cursor, found = objstore.scan_hidden(b, UPLOAD_NS, cursor)
            for k in found:
                uid = k[len(UPLOAD_NS):].decode("latin-1")
                if not UPLOAD_ID_RE.fullmatch(uid):
                    continue                         # a part, not a record
                got = objstore.get_hidden(b, k)
                if got is None:
                    continue                         # completed or aborted since
                rec = json.loads(got)
                if rec["created"] + self.upload_timeout > now:   # not expired
                    out.append((rec["key"], uid, rec))
            if cursor == 0:
                break
        out.sort(key=lambda u: (u[0], u[1]))
        return out

    def parts_of(self, b, uid):
        """An upload's parts: [(number, Info)] in order."""
        base = self.upload_key(uid)
        out, cursor = [], 0
        while True:
            cursor, found = objstore.scan_hidden(b, base + b"/", cursor)
            for k in found:
                m = PART_RE.fullmatch(k, len(base))
                if m is None:
                    continue
                info = objstore.head(b, k)
                if info is not None:
                    out.append((int(m.group(1)), info))
            if cursor == 0:
                break
        out.sort(key=lambda p: p[0])
        return out

    async def list_uploads(self, req, send, rid):
        """ListMultipartUploads: prefix, delimiter, max-uploads, key-marker and
        upload-id-marker, as S3 pages them."""
        b = self.bucket(req, READ)
        q = req.q
        prefix, delim = q.get("prefix", ""), q.get("delimiter", "")
        key_marker = q.get("key-marker", "")
        # S3 ignores upload-id-marker without key-marker
        uid_marker = q.get("upload-id-marker", "") if key_marker else ""
        most = page_size(q, "max-uploads")
        url = q.get("encoding-type") == "url"
        page = roll_up((((key, (uid, rec)) for key, uid, rec in self.open_uploads(b)
                         if key.startswith(prefix) and not (
                             key < key_marker or (key == key_marker and (
                                 not uid_marker or uid <= uid_marker))))),
                       prefix, delim, key_marker, most)
        uploads = [(key, uid, rec) for key, (uid, rec) in page.contents]
        prefixes, truncated = page.prefixes, page.truncated
        next_key = page.last
        next_uid = page.last_item[0] if page.last_item else ""   # "": a prefix
        enc = url_encoder(url)
        parts = [el("Bucket", req.bucket), el("KeyMarker", enc(key_marker)),
                 el("UploadIdMarker", uid_marker)]
        if truncated:
            parts += [el("NextKeyMarker", enc(next_key)),
                      el("NextUploadIdMarker", next_uid)]
        parts += [el("Prefix", enc(prefix))]
        if delim:
            parts.append(el("Delimiter", enc(delim)))
        if url:
            parts.append(el("EncodingType", "url"))
        parts += [el("MaxUploads", most), el("IsTruncated", str(truncated).lower())]
        for key, uid, rec in uploads:
            parts.append("<Upload>" + el("Key", enc(key)) + el("UploadId", uid) +
                         f"<Initiator>{OWNER}</Initiator><Owner>{OWNER}</Owner>" +
                         el("StorageClass", "STANDARD") +
                         el("Initiated", iso(rec["created"] * 1000)) + "</Upload>")
        parts += common_prefixes(prefixes, enc)
        return await self.xml(send, rid, doc("ListMultipartUploadsResult",
                                             "".join(parts)))

    async def list_parts(self, req, send, rid):
        """ListParts: the parts uploaded so far, max-parts at a time after
        part-number-marker."""
        b = self.bucket(req, READ)
        uid, rec = self.upload_record(b, req)
        most = page_size(req.q, "max-parts")
        try:
            marker = int(req.q.get("part-number-marker") or 0)
            if marker < 0:
                raise ValueError
        except ValueError:
            raise S3Error("InvalidArgument", "part-number-marker must be a number >= 0") \
                from None
        after = [(n, info) for n, info in self.parts_of(b, uid) if n > marker]
        page, truncated = after[:most], len(after) > most
        parts = [el("Bucket", req.bucket), el("Key", rec["key"]), el("UploadId", uid),
                 f"<Initiator>{OWNER}</Initiator><Owner>{OWNER}</Owner>",
                 el("StorageClass", "STANDARD"), el("PartNumberMarker", marker)]
        if page:
            parts.append(el("NextPartNumberMarker", page[-1][0]))
        parts += [el("MaxParts", most), el("IsTruncated", str(truncated).lower())]
        for n, info in page:
            parts.append("<Part>" + el("PartNumber", n) +
                         el("LastModified", iso(info.created_ms)) +
                         el("ETag", f'"{info.etag}"') + el("Size", info.size) + "</Part>")
        return await self.xml(send, rid, doc("ListPartsResult", "".join(parts)))

    def drop_upload(self, b, uid):
        """Delete an upload's parts and its record."""
        base = self.upload_key(uid)
        keys, cursor = [], 0
        while True:
            cursor, found = objstore.scan_hidden(b, base + b"/", cursor)
            keys += found
            if cursor == 0:
                break
        for k in keys:
            objstore.delete(b, k)
        objstore.delete_hidden(b, base)

    async def abort_upload(self, req, send, rid):
        b = self.bucket(req, WRITE)
        uid, _ = self.upload_record(b, req)
        self.drop_upload(b, uid)
        await self.ctx.durability.settle(req.bucket)
        await self.respond(send, 204, [(b"x-amz-request-id", rid.encode())])
        return 204


def new_upload_id():
    """32 hex digits: the time in ns, then 64 random bits. Upload ids sort by when their
    uploads began, the order S3 lists one key's uploads in."""
    return "%016x%s" % (time.time_ns(), secrets.token_hex(8))


def unknown(q, known):
    """A query's parameters outside `known`, but for x-id (what SDKs add to name the
    call) and a presigned URL's X-Amz-* (some SDKs spell them in lower case)."""
    return {k for k in q if k not in known and k != "x-id" and
            not k.lower().startswith("x-amz-")}


def page_size(q, name):
    """A listing's max-keys / max-uploads / max-parts: 0 to PAGE_MAX, PAGE_MAX when
    absent."""
    try:
        n = int(q.get(name, PAGE_MAX))
        if n < 0:
            raise ValueError
    except ValueError:
        raise S3Error("InvalidArgument", f"{name} must be a number >= 0") from None
    return min(n, PAGE_MAX)


class Page:
    """One listing page (roll_up): contents as (name, item), the common prefixes, whether
    more follow, and the last name listed (a key or a prefix) with its item (None for a
    prefix): where the next page starts."""
    __slots__ = ("contents", "prefixes", "truncated", "last", "last_item")

    def __init__(self):
        self.contents, self.prefixes, self.truncated = [], [], False
        self.last = self.last_item = None


def roll_up(entries, prefix, delim, marker, most, resolve=None):
    """S3's paging of a listing: `entries` are (name, item) in name order, already past
    the caller's marker. With a delimiter, every name with the delimiter after `prefix`
    rolls up into its common prefix (through the delimiter), listed once and never again
    on a later page (one <= `marker`); keys and prefixes together count against `most`.
    `resolve(name, item)` gives the item to list, or None when the key is gone (it is
    then skipped, not counted)."""
    page = Page()
    seen = set()
    for name, item in entries:
        cp = None
        if delim:
            i = name.find(delim, len(prefix))
            if i >= 0:
                cp = name[:i + len(delim)]
                if cp in seen or (marker and cp <= marker):
                    continue
        if len(page.contents) + len(page.prefixes) >= most:
            page.truncated = True
            break
        if cp is not None:
            seen.add(cp)
            page.prefixes.append(cp)
            page.last, page.last_item = cp, None
            continue
        if resolve is not None:
            item = resolve(name, item)
            if item is None:
                continue                     # gone since the scan
        page.contents.append((name, item))
        page.last, page.last_item = name, item
    return page


def url_encoder(url):
    """encoding-type=url: names in a listing's answer percent-encoded ("/" kept)."""
    return (lambda v: quote(v, safe="/")) if url else (lambda v: v)


def common_prefixes(prefixes, enc):
    return ["<CommonPrefixes>" + el("Prefix", enc(cp)) + "</CommonPrefixes>"
            for cp in prefixes]


# -- bodies -------------------------------------------------------------------------------
async def _chunks(req):
    while True:
        msg = await req.receive()
        if msg["type"] == "http.disconnect":
            raise S3Error("IncompleteBody", "the client went away mid-body")
        data = msg.get("body", b"")
        if data:
            yield data
        if not msg.get("more_body", False):
            req.body_done = True
            return


async def drain(req, limit):
    """Read and drop a body we do not use (at most `limit` bytes)."""
    n = 0
    async for data in _chunks(req):
        n += len(data)
        if n > limit:
            raise S3Error("InvalidRequest", "this request takes no body" if not limit
                          else "the request body is too large")


class Body:
    """A request's body, read as it arrives: `await read(n)` gives the next piece
    (aws-chunked framing taken off and its signatures checked), b"" at the end, and
    before that end checks every digest the request gives (x-amz-content-sha256,
    Content-MD5, x-amz-checksum-sha256/-crc32, in headers or trailers): a mismatch
    raises there, so the object layer publishes nothing. size/md5/sha256 once read."""

    def __init__(self, req, limit):
        h, p = req.headers, req.sig
        self.req, self.limit = req, limit
        self.chunked = p.payload in (sigv4.STREAMING, sigv4.STREAMING_UNSIGNED_TRAILER) \
            or "aws-chunked" in h.get("content-encoding", "")
        length = h.get("x-amz-decoded-content-length") if self.chunked else \
            h.get("content-length")
        if length is not None:
            try:
                length = int(length)
            except ValueError:
                raise S3Error("InvalidArgument", "a bad content length") from None
            if length > limit:
                raise S3Error("EntityTooLarge", f"Your proposed upload is {length} bytes, "
                              f"over the limit of {limit} (limits.max_object)",
                              ProposedSize=length, MaxSizeAllowed=limit)
        self.length = length
        self.decoder = None
        if self.chunked:
            if p.payload == sigv4.STREAMING:
                key, scope = req.scope_info
                self.decoder = sigv4.ChunkDecoder(key, p.amz_date, scope, p.signature)
            else:
                self.decoder = sigv4.ChunkDecoder()
        self._sha, self._md5, self._crc = hashlib.sha256(), hashlib.md5(), 0
        self._queue, self._source, self.size, self.ended = [], _chunks(req), 0, False

    async def read(self, n=0):
        while not self._queue:
            if self.ended:
                return b""
            try:
                data = await self._source.__anext__()
            except StopAsyncIteration:
                self.ended = True
                self._finish()
                return b""
            got = self.decoder.feed(data) if self.decoder is not None else (data,)
            for piece in got:
                self.size += len(piece)
                if self.size > self.limit:
                    raise S3Error("EntityTooLarge", "the body is over the limit of "
                                  f"{self.limit} bytes (limits.max_object)",
                                  MaxSizeAllowed=self.limit)
                self._sha.update(piece)
                self._md5.update(piece)
                self._crc = zlib.crc32(piece, self._crc)
                self._queue.append(piece)
        return self._queue.pop(0)

    async def whole(self):
        out = []
        while True:
            piece = await self.read()
            if not piece:
                return b"".join(out)
            out.append(piece)

    @property
    def md5(self):
        return self._md5.hexdigest()

    @property
    def sha256(self):
        return self._sha.digest()

    def _finish(self):
        h, p = self.req.headers, self.req.sig
        trailer = {}
        if self.decoder is not None:
            self.decoder.finish()
            trailer = self.decoder.trailer
        if self.length is not None and self.size != self.length:
            raise S3Error("IncompleteBody", f"the body is {self.size} bytes, not the "
                                            f"{self.length} announced")
        if not self.chunked and p.payload != sigv4.UNSIGNED and \
                p.payload != self._sha.hexdigest():
            raise S3Error("XAmzContentSHA256Mismatch", "The provided "
                          "'x-amz-content-sha256' header does not match what was "
                          "computed.")
        given = {**{k: v for k, v in h.items() if k.startswith("x-amz-checksum-")},
                 **trailer}
        if "content-md5" in h and h["content-md5"] != _b64(self._md5.digest()):
            raise S3Error("BadDigest", "The Content-MD5 you specified did not match what "
                                       "we received.")
        if "x-amz-checksum-sha256" in given and given["x-amz-checksum-sha256"] != \
                _b64(self.sha256):
            raise S3Error("BadDigest", "The SHA256 you specified did not match the "
                                       "calculated checksum.")
        if "x-amz-checksum-crc32" in given and given["x-amz-checksum-crc32"] != \
                _b64(self._crc.to_bytes(4, "big")):
            raise S3Error("BadDigest", "The CRC32 you specified did not match the "
                                       "calculated checksum.")


def parse_range(value, size):
    """[start, end) of a single "bytes=" range, None for none (or several, or one that
    does not parse, which S3 answers with the whole object, as HTTP does); InvalidRange
    when it cannot be satisfied. The parsing is the /keys face's (bukt/http/keys.py)."""
    if not value:
        return None
    span = parse_byte_range(value.strip(), size)
    if span == "unsatisfiable":
        raise S3Error("InvalidRange", "The requested range is not satisfiable", size=size)
    return None if span is None else (span[0], span[1] + 1)

