"""Where a CLI command acts: the local segment, a TCP server or an HTTP server.

    bukt get -b sessions k                                   attached (LocalTarget)
    bukt get --url bukt://sessions:TOKEN@127.0.0.1:7071 k     binary protocol (TcpTarget)
    bukt get --url http://127.0.0.1:7070 -b sessions --token TOKEN k       HTTP (HttpTarget)

All three offer the same calls, named as bukt.Bucket and bukt.Store name them but with
the bucket as the first argument. Values come back as the bucket's schema gives them
(bytes, int or str); `raw()` turns any of them into the bytes that are stored.

Who may do what: a local attach may do anything the OS lets it map (the segment's
mode); over TCP a connection works on the bucket its token belongs to, and the admin
session (bukt://:ADMIN_TOKEN@...) only manages buckets (docs/protocol.md); over HTTP
the admin token may do everything (docs/http.md).
"""
import base64
import json
import time
from urllib.parse import quote, unquote, urlencode, urlsplit

from bukt import errors
from bukt.tokens import digest, new_token

__all__ = ["open_target", "LocalTarget", "TcpTarget", "HttpTarget", "raw",
           "PERMS", "perms_from_names", "perm_names", "TargetError"]

PERMS = {"read": 1, "write": 2, "admin": 4}


class TargetError(errors.BuktError):
    """A command that this kind of target cannot do; the message says what can."""

    code = "unsupported"


def perms_from_names(names) -> int:
    bits = 0
    for n in names:
        if n not in PERMS:
            raise errors.InvalidArgument(f"unknown permission {n!r}; use read, write, admin")
        bits |= PERMS[n]
    return bits


def perm_names(bits) -> list:
    return [n for n, b in PERMS.items() if bits & b]


def raw(value) -> bytes:
    """The stored bytes of a value as a bucket returns it (int buckets store decimal
    text, str buckets UTF-8)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        raise TypeError("a bool is not a value")
    if isinstance(value, int):
        return str(value).encode()
    return str(value).encode("utf-8")


def open_target(url=None, *, config=None, bucket=None, token=None, timeout=5.0):
    """The target a command's --url (or its absence: local) names. `config` is a
    callable returning the configuration, called only for a local target."""
    if not url:
        return LocalTarget(config(), bucket)
    parts = urlsplit(url)
    if parts.scheme == "bukt":
        return TcpTarget(url, bucket=bucket, token=token, timeout=timeout)
    if parts.scheme in ("http", "https"):
        return HttpTarget(url, bucket=bucket, token=token, timeout=timeout)
    raise errors.InvalidArgument(f"{url!r}: the URL must start with bukt:// (TCP) or "
                                 "http:// (HTTP)")


class _Target:
    kind = "?"

    def __init__(self, bucket):
        self.bucket = bucket

    def need_bucket(self, bucket=None) -> str:
        b = bucket or self.bucket
        if not b:
            raise errors.InvalidArgument("which bucket? name it with -b BUCKET (or in the "
                                         "URL: bukt://BUCKET:TOKEN@HOST:PORT)")
        return b

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- attached -----------------------------------------------------------------------------

class LocalTarget(_Target):
    kind = "local"

    def __init__(self, cfg, bucket=None):
        super().__init__(bucket)
        self.cfg = cfg
        self._store = None

    @property
    def store(self):
        if self._store is None:
            import bukt
            try:
                self._store = bukt.attach(self.cfg.instance)
            except PermissionError:         # a group member with read access only
                self._store = bukt.attach(self.cfg.instance, readonly=True)
        return self._store

    def close(self):
        if self._store is not None:
            self._store.close()
            self._store = None

    def _b(self, bucket):
        return self.store.bucket(self.need_bucket(bucket))

    def get(self, bucket, key):
        return self._b(bucket).get(key)

    def set(self, bucket, key, value, ttl=None, nx=False, xx=False, single_read=False):
        return self._b(bucket).set(key, value, ttl=ttl, nx=nx, xx=xx,
                                   single_read=single_read)

    def delete(self, bucket, keys):
        return self._b(bucket).delete(*keys)

    def incr(self, bucket, key, by=1, initial=0, ttl=None):
        return self._b(bucket).incr(key, by=by, initial=initial, ttl=ttl)

    def ttl(self, bucket, key):
        b = self._b(bucket)
        return (b.exists(key) > 0, b.ttl(key))

    def scan(self, bucket, prefix=b"", cursor=0, count=100):
        return self._b(bucket).scan(prefix, cursor, count)

    def mget(self, bucket, keys):
        return self._b(bucket).mget(keys)

    def mset(self, bucket, mapping, ttl=None):
        return self._b(bucket).mset(mapping, ttl=ttl)

    def exists(self, bucket, keys):
        return self._b(bucket).exists(*keys)

    def expire(self, bucket, key, ttl):
        return self._b(bucket).expire(key, ttl)

    def persist(self, bucket, key):
        return self._b(bucket).persist(key)

    def flush(self, bucket):
        return self._b(bucket).flush()

    def buckets(self):
        return sorted(self.store.buckets())

    def bucket_info(self, name):
        return dict(self.store.bucket_info(name))

    def bucket_stats(self, name):
        return self.store.bucket(name).stats()

    def create_bucket(self, name, token=None, **settings):
        self.store.create_bucket(name, **settings)
        try:
            return self.create_token(name, 7, token)
        except BaseException:
            self.store.drop_bucket(name)
            raise

    def drop_bucket(self, name):
        self.store.drop_bucket(name)

    def tokens(self, bucket):
        return self.store.tokens(self.need_bucket(bucket))

    def create_token(self, bucket, perms, token=None):
        """(id, token): a new token, or `token` (a secret the operator gives,
        bukt.tokens.check_given) registered."""
        token = new_token() if token is None else token
        tid = self.store.add_token(self.need_bucket(bucket), digest(token), perms)
        return tid, token

    def revoke_token(self, bucket, token_id):
        return self.store.revoke_token(self.need_bucket(bucket), token_id)


# -- the binary protocol ------------------------------------------------------------------

class TcpTarget(_Target):
    kind = "tcp"

    def __init__(self, url, bucket=None, token=None, timeout=5.0):
        from bukt.client import Client, parse_url
        kw = parse_url(url)
        if token is not None:
            kw["token"] = token
        if bucket and kw["bucket"] and bucket != kw["bucket"]:
            raise errors.InvalidArgument(f"-b {bucket} but the URL names bucket "
                                         f"{kw['bucket']!r}: over TCP a connection works on "
                                         "the bucket of its token")
        kw["bucket"] = bucket or kw["bucket"]
        if kw["token"] is None:
            raise errors.AuthError("no token: put it in the URL (bukt://BUCKET:TOKEN@HOST:PORT,"
                                   " or bukt://:ADMIN_TOKEN@HOST:PORT) or pass --token")
        super().__init__(kw["bucket"] or None)
        self.where = f"{kw['host']}:{kw['port']}"
        kw["timeout"] = kw.get("timeout", timeout)
        self.client = Client(**kw)

    def close(self):
        self.client.close()

    def need_bucket(self, bucket=None) -> str:
        return self._mine(bucket)

    def _mine(self, bucket):
        b = bucket or self.bucket
        if not self.bucket:
            raise TargetError("this is the admin session (bukt://:ADMIN_TOKEN@...), which "
                              "only manages buckets; use a token of the bucket: "
                              "bukt://BUCKET:TOKEN@HOST:PORT")
        if b != self.bucket:
            raise TargetError(f"over TCP this connection works on bucket {self.bucket!r} "
                              f"only, not {b!r}; use that bucket's token, or http://")
        return b

    def get(self, bucket, key):
        self._mine(bucket)
        return self.client.get(key)

    def set(self, bucket, key, value, ttl=None, nx=False, xx=False, single_read=False):
        self._mine(bucket)
        return self.client.set(key, value, ttl=ttl, nx=nx, xx=xx, single_read=single_read)

    def set_many(self, bucket, items):
        """[(key, value, ttl, single_read)] in one round trip; versions (None: not set)."""
        self._mine(bucket)
        with self.client.pipeline() as p:
            for key, value, ttl, single in items:
                p.set(key, value, ttl=ttl, single_read=single)
        return p.results

    def delete(self, bucket, keys):
        self._mine(bucket)
        return self.client.delete(*keys)

    def incr(self, bucket, key, by=1, initial=0, ttl=None):
        self._mine(bucket)
        return self.client.incr(key, by=by, initial=initial, ttl=ttl)

    def ttl(self, bucket, key):
        self._mine(bucket)
        with self.client.pipeline() as p:
            p.exists(key)
            p.ttl(key)
        exists, ttl = p.results
        return exists > 0, ttl

    def scan(self, bucket, prefix=b"", cursor=0, count=100):
        self._mine(bucket)
        return self.client.scan(prefix, cursor, count)

    def mget(self, bucket, keys):
        self._mine(bucket)
        return self.client.mget(keys)

    def mset(self, bucket, mapping, ttl=None):
        self._mine(bucket)
        return self.client.mset(mapping, ttl=ttl)

    def exists(self, bucket, keys):
        self._mine(bucket)
        return self.client.exists(*keys)

    def expire(self, bucket, key, ttl):
        self._mine(bucket)
        return self.client.expire(key, ttl)

    def persist(self, bucket, key):
        self._mine(bucket)
        return self.client.persist(key)

    def flush(self, bucket):
        self._mine(bucket)
        return self.client.flush()

    def ttls(self, bucket, keys):
        self._mine(bucket)
        with self.client.pipeline() as p:
            for k in keys:
                p.ttl(k)
        return p.results

    def buckets(self):
        if self.bucket:
            return [self.bucket]
        return sorted(self.client.buckets())

    def bucket_info(self, name):
        return self.client.bucket_info(name)

    def bucket_stats(self, name):
        self._mine(name)
        return self.client.stats()

    def create_bucket(self, name, token=None, **settings):
        self._no_given(token)
        return None, self.client.create_bucket(name, **settings)

    @staticmethod
    def _no_given(token):
        if token is not None:
            raise TargetError("the binary protocol makes its tokens itself; register a "
                              "given token locally or over http:// (with the admin token)")

    def drop_bucket(self, name):
        self.client.drop_bucket(name)

    def tokens(self, bucket):
        self._mine(bucket)
        return self.client.tokens()

    def create_token(self, bucket, perms, token=None):
        self._mine(bucket)
        self._no_given(token)
        return self.client.create_token(perms)

    def revoke_token(self, bucket, token_id):
        self._mine(bucket)
        return self.client.revoke_token(token_id)


# -- HTTP ---------------------------------------------------------------------------------

API = "/api/v1"
# A keep-alive connection idle longer than this is not reused: the server closes idle
# ones (http.keepalive, 5 s by default), and a request racing that close cannot be
# retried safely unless it is a read.
IDLE_REUSE_S = 2.0
_ERRORS = {cls.code: cls for cls in errors.ALL}
_ERRORS.update({"not_found": errors.NotFound, "unauthorized": errors.AuthError,
                "forbidden": errors.PermissionDenied})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class HttpTarget(_Target):
    kind = "http"

    def __init__(self, url, bucket=None, token=None, timeout=5.0):
        from urllib.parse import parse_qs
        from bukt.client import URL_PARAMS, _redacted
        parts = urlsplit(url)
        for name, values in parse_qs(parts.query, keep_blank_values=True).items():
            if name != "timeout":        # the one parameter an http:// URL takes here
                raise errors.InvalidArgument(f"{_redacted(url)}: unknown URL parameter "
                                             f"{name!r}; known: timeout")
            try:
                timeout = URL_PARAMS["timeout"][0](values[-1])
            except ValueError:
                raise errors.InvalidArgument(
                    f"{_redacted(url)}: URL parameter timeout={values[-1]!r} is not "
                    f"{URL_PARAMS['timeout'][1]}") from None
        super().__init__(bucket or unquote(parts.username or "") or None)
        self.token = token if token is not None else \
            (unquote(parts.password) if parts.password is not None else None)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port
        self.tls = parts.scheme == "https"
        self.where = f"{self.host}:{self.port or (443 if self.tls else 80)}"
        self.timeout = timeout
        self.conn = None
        self.used = 0.0

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, query=None, headers=None, ok=(200,)):
        """(status, headers, body); an error status raises its bukt.errors class."""
        h = dict(headers or {})
        if self.token:
            h["X-Auth-Token"] = self.token
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        if query:
            path += "?" + urlencode(query)
        if self.conn is not None and time.monotonic() - self.used > IDLE_REUSE_S:
            self.close()                 # the server may be closing it right now
        import http.client
        for attempt in (0, 1):           # a keep-alive connection the server closed
            if self.conn is None:
                cls = http.client.HTTPSConnection if self.tls else http.client.HTTPConnection
                kw = {}
                if self.tls:
                    import ssl
                    kw["context"] = ssl.create_default_context()
                self.conn = cls(self.host, self.port, timeout=self.timeout, **kw)
            try:
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                data = r.read()
                self.used = time.monotonic()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt or method not in ("GET", "HEAD"):
                    raise
        if r.status in ok:
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        try:
            problem = json.loads(data)
        except ValueError:
            problem = {}
        detail = problem.get("detail") or problem.get("title") or \
            data[:200].decode(errors="replace")
        cls = _ERRORS.get(problem.get("code"),
                          errors.NotFound if r.status == 404 else errors.BuktError)
        raise cls(f"{detail} (HTTP {r.status})")

    def _key(self, bucket, key):
        k = key if isinstance(key, bytes) else str(key).encode()
        return f"{API}/buckets/{quote(self.need_bucket(bucket), safe='')}/keys/{quote(k, safe='')}"

    def _bucket_path(self, bucket, rest=""):
        return f"{API}/buckets/{quote(self.need_bucket(bucket), safe='')}{rest}"

    def get(self, bucket, key):
        try:
            return self.request("GET", self._key(bucket, key))[2]
        except errors.NotFound:          # the key; a missing bucket is BucketNotFound
            return None

    def set(self, bucket, key, value, ttl=None, nx=False, xx=False, single_read=False):
        q = {}
        if ttl is not None:
            q["ttl"] = repr(float(ttl))
        if single_read:
            q["single_read"] = "true"
        h = {"Content-Type": "application/octet-stream"}
        if nx:
            h["If-None-Match"] = "*"
        if xx:
            h["If-Match"] = "*"
        status, headers, _ = self.request("PUT", self._key(bucket, key), raw(value), q, h,
                                          ok=(204, 412) if (nx or xx) else (204,))
        if status == 412:
            return None
        return int(headers.get("etag", '"0"').strip('W/"') or 0)

    def delete(self, bucket, keys):
        _, _, body = self.request("POST", self._bucket_path(bucket, "/delete"),
                                  {"keys": [_b64(raw(k)) for k in keys], "encoding": "base64"})
        return json.loads(body)["deleted"]

    def incr(self, bucket, key, by=1, initial=0, ttl=None):
        q = {"by": by, "initial": initial}
        if ttl is not None:
            q["ttl"] = repr(float(ttl))
        _, _, body = self.request("POST", self._key(bucket, key) + "/incr", query=q)
        return json.loads(body)["value"]

    def ttl(self, bucket, key):
        try:
            _, h, _ = self.request("HEAD", self._key(bucket, key))
        except errors.NotFound:          # a HEAD has no body to say which is missing
            self._describe(bucket)       # BucketNotFound if it is the bucket
            return False, None
        return True, float(h["bukt-ttl"]) if "bukt-ttl" in h else None

    def ttls(self, bucket, keys):
        return [self.ttl(bucket, k)[1] for k in keys]

    def scan(self, bucket, prefix=b"", cursor=0, count=100):
        q = {"cursor": cursor, "count": count, "encoding": "base64"}
        if prefix:
            q["prefix"] = _b64(raw(prefix))
        _, _, body = self.request("GET", self._bucket_path(bucket, "/keys"), query=q)
        doc = json.loads(body)
        return int(doc["cursor"]), [base64.b64decode(k) for k in doc["keys"]]

    def mget(self, bucket, keys):
        _, _, body = self.request("POST", self._bucket_path(bucket, "/mget"),
                                  {"keys": [_b64(raw(k)) for k in keys], "encoding": "base64"})
        # int buckets answer JSON numbers whatever the encoding asked
        return [None if v is None else raw(v) if isinstance(v, int) else base64.b64decode(v)
                for v in json.loads(body)["values"]]

    def set_many(self, bucket, items):
        return [self.set(bucket, k, v, ttl=t, single_read=s) for k, v, t, s in items]

    def mset(self, bucket, mapping, ttl=None):
        doc = {"items": {_b64(raw(k)): _b64(raw(v)) for k, v in mapping.items()},
               "encoding": "base64"}
        if ttl is not None:
            doc["ttl_seconds"] = ttl
        _, _, body = self.request("POST", self._bucket_path(bucket, "/mset"), doc)
        return json.loads(body)["versions"]

    def exists(self, bucket, keys):
        _, _, body = self.request("POST", self._bucket_path(bucket, "/exists"),
                                  {"keys": [_b64(raw(k)) for k in keys], "encoding": "base64"})
        return json.loads(body)["exists"]

    def expire(self, bucket, key, ttl):
        _, _, body = self.request("POST", self._bucket_path(bucket, "/expire"),
                                  {"key": _b64(raw(key)), "ttl_seconds": ttl,
                                   "encoding": "base64"})
        return json.loads(body)["existed"]

    def persist(self, bucket, key):
        _, _, body = self.request("POST", self._bucket_path(bucket, "/persist"),
                                  {"key": _b64(raw(key)), "encoding": "base64"})
        return json.loads(body)["existed"]

    def flush(self, bucket):
        _, _, body = self.request("POST", self._bucket_path(bucket, "/flush"))
        return json.loads(body)["deleted"]

    def buckets(self):
        _, _, body = self.request("GET", f"{API}/buckets")
        return sorted(json.loads(body)["buckets"])

    def _describe(self, name):
        _, _, body = self.request("GET", self._bucket_path(name))
        return json.loads(body)

    def bucket_info(self, name):
        d = self._describe(name)
        d.pop("stats", None)
        return d

    def bucket_stats(self, name):
        return self._describe(name)["stats"]

    def create_bucket(self, name, token=None, **settings):
        doc = {"name": name, **{k: v for k, v in settings.items() if v is not None},
               **({"token": token} if token is not None else {})}
        _, _, body = self.request("POST", f"{API}/buckets", doc, ok=(201,))
        d = json.loads(body)
        return d["token_id"], d.get("token", token)

    def drop_bucket(self, name):
        self.request("DELETE", self._bucket_path(name), ok=(204,))

    def tokens(self, bucket):
        _, _, body = self.request("GET", self._bucket_path(bucket, "/tokens"))
        return [(t["id"], perms_from_names(t["permissions"]))
                for t in json.loads(body)["tokens"]]

    def create_token(self, bucket, perms, token=None):
        _, _, body = self.request("POST", self._bucket_path(bucket, "/tokens"),
                                  {"permissions": perm_names(perms),
                                   **({"token": token} if token is not None else {})},
                                  ok=(201,))
        d = json.loads(body)
        return d["id"], d.get("token", token)

    def revoke_token(self, bucket, token_id):
        status, _, _ = self.request("DELETE", self._bucket_path(bucket, f"/tokens/{token_id}"),
                                    ok=(204, 404))
        return status == 204

    def health(self):
        status, _, body = self.request("GET", "/healthz", ok=(200, 503))
        return status, json.loads(body)

    def metrics(self):
        _, _, body = self.request("GET", "/metrics", query={"format": "json"})
        return json.loads(body)
