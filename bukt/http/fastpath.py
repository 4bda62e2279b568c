"""The FAST PATH: a GET or a raw PUT of one key, answered without falcon.

They are the requests a cache serves most, and falcon's request and response objects,
routing and middleware cost several times what the store call does. This ASGI callable
sits in front of the falcon app (the SLOW PATH) and answers only

    GET /api/v1/buckets/{name}/keys/{key}   no query string; no If-Match,
                                            If-None-Match, Range or If-Range
    PUT /api/v1/buckets/{name}/keys/{key}   the same, plus: a Content-Length within
                                            http.max_body and limits.max_value (a
                                            larger body is an object, streamed by the
                                            slow path), a body that is not JSON,
                                            TTL and single-read (if any) as headers

with a token that may read (GET) or write (PUT) the bucket, while the rate limiter is
off. It sends exactly what the slow path would (status, headers, body, counters,
access line; tests/unit/test_http_app.py compares the two). Every other request, and every
one that fails a check before its body is read or its value looked up (no token, a
token of another bucket, no such bucket, a bad TTL header), is passed to the falcon app
untouched, which answers it as it always does. Past that point (the body read, the
store called) an error is answered here, as a problem document built the same way.

A GET makes one raw read (objects.read) and its flags decide: a plain value is sent
(decoded when compressed), an object is streamed a chunk at a time with the slow
path's headers, under the reader registration taken before the read. (A client that
takes zstd from a zstd bucket goes to the slow path, which may send the stored frame;
a GET that finds the ring full while taking a single-read key goes there too, to wait
for room.)
"""

import logging
import time
from urllib.parse import unquote_to_bytes

from bukt import codec, objects
from bukt.errors import BuktError, RingFull, SegmentFull
from bukt.http.auth import READ, WRITE
from bukt.http import objects as http_objects
from bukt.http.encoding import SCHEMA_TYPES, VARY, accepts_zstd, zstd_bucket
from bukt.http.keys import SINGLE_READ_HEADER, TTL_HEADER
from bukt.http.problems import PROBLEM_JSON, Problem, problem_body, status_of
from bukt.http.wire import PERCENT, bool_value, ttl_value
from bukt.objects.store import F_CODECS, ObjectReader

PREFIX = b"/api/v1/buckets/"
# conditions, ranges and declared digests (checked on the slow path)
SLOW_HEADERS = frozenset((b"if-match", b"if-none-match", b"range", b"if-range",
                          b"content-digest", b"x-amz-checksum-sha256"))
TTL_IN, SINGLE_READ_IN = TTL_HEADER.lower().encode(), SINGLE_READ_HEADER.lower().encode()
PROBLEM_TYPE = PROBLEM_JSON.encode()
RAW_TYPES = {schema: c.encode() for schema, c in SCHEMA_TYPES.items()}
VARY_OUT = (b"vary", VARY.encode())
log = logging.getLogger("bukt.http")


class FastPath:
    def __init__(self, app, ctx, frontdoor, template):
        self.app, self.ctx, self.frontdoor, self.template = app, ctx, frontdoor, template
        self.base = ctx.metrics.base(template)      # this route's counters
        self.bukt = ctx
        self.max_value = ctx.store.limits["max_value"]

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("GET", "PUT") \
                and not scope.get("query_string"):
            raw = scope.get("raw_path")
            if raw and raw.startswith(PREFIX):
                if await self._try(scope, receive, send, raw):
                    return
        await self.app(scope, receive, send)

    async def _try(self, scope, receive, send, raw):
        """True when the request was answered here; False: nothing was received,
        sent or changed, and the slow path takes it."""
        start = time.perf_counter()
        parts = raw.split(b"/", 6)    # '', api, v1, buckets, name, keys, key
        if len(parts) != 7 or parts[5] != b"keys" or not parts[6] or not parts[4] \
                or PERCENT in parts[4]:
            return False
        headers = scope["headers"]
        if type(headers) is not list or (headers and type(headers[0]) is not tuple):
            # ASGI allows iterables (of iterables: falcon's TestClient sends those);
            # keep a reusable copy for the slow path.
            headers = scope["headers"] = [tuple(h) for h in headers]
        # One dict of the headers, built in C. Names that repeat, or that are not in
        # lower case as ASGI asks, go to the slow path, which knows what to make of them.
        found = dict(headers)
        if len(found) != len(headers) or not b"".join(found).islower() \
                or not SLOW_HEADERS.isdisjoint(found):
            return False
        token = found.get(b"x-auth-token") or found.get(b"x-api-key")
        if token is None:
            authz = found.get(b"authorization")
            if authz is None:
                return False
            scheme, _, token = authz.strip().partition(b" ")
            if scheme.lower() != b"bearer":
                return False
        token = token.strip()
        if not token:
            return False
        ctx = self.ctx
        put = scope["method"] == "PUT"
        bucket_name = parts[4].decode("ascii", "replace")
        if ctx.auth.guarded():                # an address is locked out: the slow
            return False                      # path checks whether it is this one
        known = ctx.auth.resolve(token)
        if known is None:
            return False
        p, bucket = known
        if p.bucket is None:                  # the admin token: any bucket
            try:
                bucket = ctx.store.bucket(bucket_name)
            except BuktError:
                return False
        elif p.bucket != bucket_name or bucket is None \
                or not p.perms & (WRITE if put else READ):
            return False
        key = parts[6]
        if PERCENT in key:
            key = unquote_to_bytes(key)
        path = scope["path"]
        if put:
            answer = await self._put(receive, bucket, bucket_name, key, path,
                                     found.get(b"content-length"),
                                     found.get(b"content-type"), found.get(TTL_IN),
                                     found.get(SINGLE_READ_IN))
            if answer is None:
                return False
        else:
            zstd = zstd_bucket(bucket)
            if zstd and accepts_zstd(found.get(b"accept-encoding")):
                return False                # the slow path codes it (encoding.py)
            try:
                got = objects.read(bucket, key)     # one raw read: the flags decide
            except RingFull:                # a single-read key, not taken: the slow
                return False                # path waits for ring room on the loop
            except BuktError as exc:        # a damaged manifest, no reader slot...
                answer = self._problem(exc, path, "GET")
            else:
                if type(got) is ObjectReader:
                    await self._stream(send, got, path, zstd)
                    self.frontdoor.record_at(self.base, 200, time.perf_counter() - start,
                                             "GET", path, bucket_name, _client(scope))
                    return True
                answer = self._get_answer(bucket, key, got, path)
            if zstd:
                answer[1].append(VARY_OUT)
        status, out, data = answer
        if status != 204:                     # falcon sends none with a 204 either
            out.append((b"content-length", b"%d" % len(data)))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": data})
        self.frontdoor.record_at(self.base, status, time.perf_counter() - start,
                                 scope["method"], path, bucket_name, _client(scope))
        return True

    def _get_answer(self, bucket, key, entry, path):
        """(status, headers, body) of a GET of a plain key (objects.read's entry)."""
        if entry is None:
            return 404, [(b"content-type", PROBLEM_TYPE)], \
                problem_body(404, "not_found", "no such key", path).encode()
        value, flags, version, expire_ms = entry
        if flags & F_CODECS:
            try:
                value = codec.decode_entry(bucket, key, value, flags)
            except BuktError as exc:        # a damaged frame: 500, as the slow path
                return self._problem(exc, path, "GET")
        out = [(b"content-type", RAW_TYPES[bucket.schema_name]), (b"accept-ranges", b"bytes"),
               (b"etag", b'"%d"' % version)]
        if expire_ms:
            out.append((TTL_IN, http_objects.ttl_text(expire_ms, self.ctx.store.now_ms()).encode()))
        return 200, out, value

    async def _stream(self, send, reader, path, zstd):
        """An object's GET, streamed a chunk at a time with the slow path's headers
        (bukt/http/objects.py); `reader` is closed here. A damaged or vanished chunk
        part-way is logged and ends the body short: the server then drops the
        connection, and the client never takes it for the whole object."""
        try:
            out = [(n.lower().encode(), v.encode()) for n, v in http_objects.header_pairs(
                reader, TTL_HEADER, self.ctx.store.now_ms())]
            if zstd:
                out.append(VARY_OUT)
            out.append((b"content-length", b"%d" % reader.size))
            await send({"type": "http.response.start", "status": 200, "headers": out})
            try:
                for piece in reader.iter():
                    await send({"type": "http.response.body", "body": piece,
                                "more_body": True})
            except BuktError as e:
                log.error("object %s cut short: %s", path, e)
                raise
            await send({"type": "http.response.body", "body": b""})
        finally:
            reader.close()

    async def _put(self, receive, bucket, bucket_name, key, path, length, ctype, ttl,
                   single):
        """(status, headers, body) of a raw PUT, or None to leave it to the slow path
        (decided before anything is received)."""
        ctx = self.ctx
        if ctype is not None:
            media = ctype.split(b";", 1)[0].strip().lower()
            if media == b"application/json" or media.endswith(b"+json"):
                return None
        try:
            size = int(length)
            ttl = ttl_value(ttl.decode("latin-1")) if ttl else None
            single = bool_value(single.decode("latin-1"), "single_read") if single \
                else False
        except (TypeError, ValueError, Problem):
            return None
        if not 0 <= size <= min(ctx.settings.max_body, self.max_value):
            return None                 # larger: an object, streamed by the slow path
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return 499, [], b""       # the client left; nothing reaches it
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        value = b"".join(chunks)
        try:
            try:
                version = bucket.set(key, value, ttl=ttl, single_read=single)
            except RingFull as full:        # SLOW PATH: wait for room on the loop
                version = await ctx.ring.retry(full, bucket.set, key, value, ttl=ttl,
                                               single_read=single)
            await ctx.durability.settle(bucket_name)
        except BuktError as exc:
            return self._problem(exc, path)
        except Exception:
            log.exception("unhandled error on PUT %s", path)
            return 500, [(b"content-type", PROBLEM_TYPE)], problem_body(
                500, "internal", "internal error; see the server log", path).encode()
        return 204, [(b"etag", b'"%d"' % version)], b""

    @staticmethod
    def _problem(exc, path, method="PUT"):
        """What problems.handle_bukt_error makes of a BuktError, for the fast path."""
        status = status_of(exc)
        out = [(b"content-type", PROBLEM_TYPE)]
        if status == 503:
            out.insert(0, (b"retry-after", b"1"))
        if status >= 500 and not isinstance(exc, SegmentFull):
            log.warning("%s on %s %s: %s", type(exc).__name__, method, path, exc)
        body = problem_body(status, exc.code, str(exc) or exc.__doc__ or "", path)
        return status, out, body.encode()


def _client(scope):
    client = scope.get("client")
    return client[0] if client else "-"
