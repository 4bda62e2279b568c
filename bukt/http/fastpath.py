"""The FAST PATH: a GET of one key, answered without falcon.

It is the request a cache serves most, and falcon's request and response objects,
routing and middleware cost several times what the store lookup does. This ASGI
callable sits in front of the falcon app (the SLOW PATH) and answers only

    GET /api/v1/buckets/{name}/keys/{key}   with no query string, no If-Match,
    If-None-Match, Range or If-Range, a token that may read the bucket, and the
    rate limiter off,

with exactly what the slow path would send for a hit or a miss (same status, headers,
body, counters and access line; tests/test_http_app.py compares the two). Everything
else, including every failure before the value is read (no token, a token of another
bucket, no such bucket), is passed to the falcon app untouched, which then answers it
as it always does.
"""

import time
from urllib.parse import unquote_to_bytes

from bukt.errors import BuktError
from bukt.http.auth import READ
from bukt.http.keys import CONTENT_TYPES, TTL_HEADER, read_entry
from bukt.http.problems import PROBLEM_JSON, problem_body
from bukt.http.wire import etag

PREFIX = b"/api/v1/buckets/"
SLOW_HEADERS = frozenset((b"if-match", b"if-none-match", b"range", b"if-range"))
TTL_OUT = TTL_HEADER.lower().encode()


class FastGet:
    def __init__(self, app, ctx, frontdoor, template):
        self.app, self.ctx, self.frontdoor, self.template = app, ctx, frontdoor, template
        self.bukt = ctx

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" \
                and not scope.get("query_string"):
            raw = scope.get("raw_path")
            if raw and raw.startswith(PREFIX):
                if await self._try(scope, send, raw):
                    return
        await self.app(scope, receive, send)

    async def _try(self, scope, send, raw):
        """True when the request was answered here; False: nothing was sent or
        changed, the slow path takes it."""
        start = time.perf_counter()
        parts = raw.split(b"/", 6)    # '', api, v1, buckets, name, keys, key
        if len(parts) != 7 or parts[5] != b"keys" or not parts[6] or not parts[4] \
                or b"%" in parts[4]:
            return False
        headers = scope["headers"]
        if type(headers) is not list or (headers and type(headers[0]) is not tuple):
            # ASGI allows iterables (of iterables: falcon's TestClient sends those);
            # keep a reusable copy for the slow path.
            headers = scope["headers"] = [tuple(h) for h in headers]
        token = authz = None
        for name, value in headers:
            name = name.lower()
            if name in SLOW_HEADERS:
                return False
            if name in (b"x-auth-token", b"x-api-key"):
                token = token or value
            elif name == b"authorization":
                authz = value
        if token is None and authz is not None:
            scheme, _, rest = authz.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                token = rest
        if not token:
            return False
        ctx = self.ctx
        bucket_name = parts[4].decode("ascii", "replace")
        p = ctx.auth.lookup(token.strip().decode("latin-1"))
        if p is None or not (p.is_admin or (p.bucket == bucket_name and p.perms & READ)):
            return False
        key = parts[6]
        if b"%" in key:
            key = unquote_to_bytes(key)
        try:
            bucket = ctx.store.bucket(bucket_name)
            entry = read_entry(bucket, key)
        except BuktError:
            return False
        path = scope["path"]
        if entry is None:
            status, data = 404, problem_body(404, "not_found", "no such key", path).encode()
            out = [(b"content-type", PROBLEM_JSON.encode())]
        else:
            value, version, ttl = entry
            status = 200
            data = value if isinstance(value, bytes) else str(value).encode()
            out = [(b"content-type", CONTENT_TYPES[type(value)].encode()),
                   (b"accept-ranges", b"bytes")]
            if version is not None:
                out.append((b"etag", etag(version).encode()))
            if ttl is not None:
                out.append((TTL_OUT, f"{ttl:.3f}".encode()))
        out.append((b"content-length", str(len(data)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": data})
        client = scope.get("client")
        self.frontdoor.record(self.template, status, time.perf_counter() - start, "GET",
                              path, bucket_name, client[0] if client else "-")
        return True
