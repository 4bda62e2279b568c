"""AWS Signature Version 4, checked on the server side (the S3 gateway, docs/s3.md).

WHICH SECRET. SigV4 is an HMAC keyed with the secret access key: the server must hold
the secret itself, not a hash of it. Bukt keeps only a token's SHA-256 (bukt/tokens.py),
so the S3 secret of a token cannot be the token; it is derived from what the segment
keeps: s3_secret(token) = hex(SHA-256(token)), which a client computes from its token
(`printf %s "$TOKEN" | sha256sum`, or bukt.http.s3.sigv4.s3_secret) and the gateway
reads from the bucket table. Whoever can read the segment can sign S3 requests, but
whoever can read the segment reads and writes every value already: the secret gives
no more than that access has. A token revoked or a bucket dropped stops its secret
with the next request (the credentials are looked up again whenever the bucket table
changes: store.meta_epoch).

THE ACCESS KEY ID names where to look for the secret: a bucket's name (each of its
tokens is tried; there are at most a few) and, whatever the id, the admin token. Which
token matched is the request's Principal (bukt/http/auth.py), so S3 requests have the
same permissions as the rest of Bukt's API.

Two forms are checked: the Authorization header (the payload's SHA-256 in
x-amz-content-sha256, or UNSIGNED-PAYLOAD, or a streaming aws-chunked body:
STREAMING-AWS4-HMAC-SHA256-PAYLOAD with a signature per chunk, checked by
ChunkDecoder, and STREAMING-UNSIGNED-PAYLOAD-TRAILER), and the presigned URL
(X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, X-Amz-Expires, X-Amz-SignedHeaders,
X-Amz-Signature in the query; payload UNSIGNED-PAYLOAD).
"""

import hashlib
import hmac
import re
from calendar import timegm
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600      # S3's own limit on X-Amz-Expires
_AUTH_RE = re.compile(r"AWS4-HMAC-SHA256\s+(.*)$", re.S)
_HEX64 = re.compile(r"[0-9a-f]{64}")


def s3_secret(token) -> str:
    """The S3 secret access key of a Bukt token (see WHICH SECRET)."""
    if isinstance(token, str):
        token = token.encode("utf-8", "surrogateescape")
    return hashlib.sha256(token).hexdigest()


def secret_of_digest(d: bytes) -> str:
    """s3_secret from the SHA-256 the segment keeps."""
    return d.hex()


class SigError(Exception):
    """An S3 error code (bukt/http/s3/xml.py's table) and a message."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class Parsed:
    """What a request says about its signature, before any secret is looked at."""

    __slots__ = ("access_key", "date", "scope_date", "region", "service", "signed",
                 "signature", "amz_date", "payload", "presigned", "expires")


def _kv(text):
    out = {}
    for part in text.split(","):
        k, sep, v = part.strip().partition("=")
        if sep:
            out[k.strip()] = v.strip()
    return out


_DATE_RE = re.compile(r"(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z")


def parse_amz_date(text):
    """Seconds since the epoch of an ISO 8601 basic date (20130524T000000Z)."""
    m = _DATE_RE.fullmatch(text or "")
    if m is None:
        raise SigError("AccessDenied", f"X-Amz-Date {text!r} is not a date like "
                                       "20130524T000000Z")
    y, mo, d, hh, mm, ss = map(int, m.groups())
    if not (1 <= mo <= 12 and 1 <= d <= 31 and hh < 24 and mm < 60 and ss < 61):
        raise SigError("AccessDenied", f"X-Amz-Date {text!r} is not a date")
    return timegm((y, mo, d, hh, mm, ss, 0, 0, 0))


def parse(headers, query):
    """A Parsed from the request's headers ({lower name: value}) and query (list of
    (name, value) pairs, decoded); None for an anonymous request."""
    p = Parsed()
    q = dict(query)
    authz = headers.get("authorization")
    if authz is not None:
        m = _AUTH_RE.match(authz.strip())
        if m is None:
            raise SigError("AccessDenied", "only AWS Signature Version 4 "
                                           "(AWS4-HMAC-SHA256) is accepted")
        f = _kv(m.group(1))
        cred, signed, sig = f.get("Credential"), f.get("SignedHeaders"), f.get("Signature")
        p.amz_date = headers.get("x-amz-date")
        if p.amz_date is None:
            raise SigError("AccessDenied", "a signed request needs X-Amz-Date")
        p.payload = headers.get("x-amz-content-sha256")
        if p.payload is None:
            raise SigError("InvalidRequest", "a signed request needs x-amz-content-sha256")
        p.presigned, p.expires = False, None
    elif "X-Amz-Algorithm" in q:
        if q["X-Amz-Algorithm"] != ALGORITHM:
            raise SigError("AccessDenied", "only X-Amz-Algorithm=AWS4-HMAC-SHA256 is "
                                           "accepted")
        cred, signed, sig = (q.get("X-Amz-Credential"), q.get("X-Amz-SignedHeaders"),
                             q.get("X-Amz-Signature"))
        p.amz_date = q.get("X-Amz-Date")
        try:
            p.expires = int(q.get("X-Amz-Expires", ""))
        except ValueError:
            raise SigError("AuthorizationQueryParametersError",
                           "X-Amz-Expires must be a number of seconds") from None
        if not 1 <= p.expires <= MAX_PRESIGN_EXPIRES:
            raise SigError("AuthorizationQueryParametersError",
                           f"X-Amz-Expires must be 1 to {MAX_PRESIGN_EXPIRES}")
        p.payload = UNSIGNED
        p.presigned = True
    else:
        return None
    if not cred or not signed or not sig or not p.amz_date:
        raise SigError("AuthorizationHeaderMalformed",
                       "the signature needs Credential, SignedHeaders, Signature and a date")
    parts = cred.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise SigError("AuthorizationHeaderMalformed",
                       "Credential must be <key id>/<yyyymmdd>/<region>/s3/aws4_request")
    p.access_key, p.scope_date, p.region, p.service = parts[:4]
    p.signed = signed.split(";")
    p.signature = sig.lower()
    p.date = parse_amz_date(p.amz_date)
    if p.amz_date[:8] != p.scope_date:
        raise SigError("AuthorizationHeaderMalformed",
                       "the credential's date is not the request's date")
    if "host" not in p.signed:
        raise SigError("AuthorizationHeaderMalformed", "the signature must cover Host")
    return p


def check_time(p, now, max_skew):
    """Refuse a request whose time is more than `max_skew` seconds off, or an expired
    presigned URL."""
    if p.presigned:
        if now > p.date + p.expires:
            raise SigError("AccessDenied", "Request has expired")
        if p.date - now > max_skew:
            raise SigError("RequestTimeTooSkewed", "the presigned URL's date is in the "
                                                   "future")
    elif abs(now - p.date) > max_skew:
        raise SigError("RequestTimeTooSkewed",
                       "The difference between the request time and the server's time "
                       f"is too large (more than {int(max_skew)} s)")


def _uri_encode(text, slash_safe):
    return quote(text, safe="-_.~/" if slash_safe else "-_.~")


def canonical_uri(raw_path: bytes) -> str:
    """S3's canonical URI: the path as sent, each segment decoded and encoded once
    (S3 does not normalise the path: "a//b" and "./" stay)."""
    return "/".join(_uri_encode(unquote(seg.decode("latin-1"), encoding="utf-8",
                                        errors="surrogateescape"), False)
                    for seg in raw_path.split(b"/")) or "/"


def canonical_query(query, presigned):
    pairs = [(_uri_encode(k, False), _uri_encode(v, False)) for k, v in query
             if not (presigned and k == "X-Amz-Signature")]
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _norm(value):
    return " ".join(value.strip().split())


def string_to_sign(p, method, raw_path, query, header_values):
    """`header_values`: {lower name: [values]} as sent."""
    lines = []
    for name in p.signed:
        vals = header_values.get(name)
        if vals is None:
            raise SigError("AccessDenied", f"the signed header {name!r} is missing")
        lines.append(f"{name}:{','.join(_norm(v) for v in vals)}\n")
    creq = "\n".join((method, canonical_uri(raw_path), canonical_query(query, p.presigned),
                      "".join(lines), ";".join(p.signed), p.payload))
    scope = f"{p.scope_date}/{p.region}/{p.service}/aws4_request"
    return "\n".join((ALGORITHM, p.amz_date, scope,
                      hashlib.sha256(creq.encode("utf-8", "surrogateescape")).hexdigest()))


def signing_key(secret, date, region, service):
    k = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    k = hmac.new(k, region.encode(), hashlib.sha256).digest()
    k = hmac.new(k, service.encode(), hashlib.sha256).digest()
    return hmac.new(k, b"aws4_request", hashlib.sha256).digest()


def sign(key, text):
    return hmac.new(key, text.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def matches(key, sts, signature):
    return hmac.compare_digest(sign(key, sts), signature)


def payload_hash_ok(p):
    """The payload value is one this gateway knows how to check."""
    v = p.payload
    return v in (UNSIGNED, STREAMING, STREAMING_UNSIGNED_TRAILER) or \
        _HEX64.fullmatch(v) is not None


class ChunkDecoder:
    """The aws-chunked body of a streaming upload: `<hex size>;chunk-signature=<sig>
    CRLF data CRLF` ... ending with a 0-size chunk (and, unsigned-with-trailer, trailer
    lines). Each chunk's signature chains on the previous one (the first on the
    header's signature); a wrong one raises SignatureDoesNotMatch before the chunk's
    data is handed on. feed(bytes) -> list of data pieces; finish() checks the end."""

    def __init__(self, key=None, amz_date=None, scope=None, seed=None):
        self.key, self.amz_date, self.scope, self.prev = key, amz_date, scope, seed
        self.buf = bytearray()
        self.need = None            # bytes of the current chunk still to come
        self.sig = None
        self.data = []
        self.done = False
        self.trailer = {}

    def feed(self, data):
        self.buf += data
        out = []
        while True:
            if self.done:
                # trailer lines after the last chunk: name:value CRLF ... CRLF
                while True:
                    i = self.buf.find(b"\r\n")
                    if i < 0:
                        break
                    line = bytes(self.buf[:i])
                    del self.buf[:i + 2]
                    if line:
                        k, _, v = line.decode("latin-1").partition(":")
                        self.trailer[k.strip().lower()] = v.strip()
                return out
            if self.need is None:
                i = self.buf.find(b"\r\n")
                if i < 0:
                    if len(self.buf) > 4096:
                        raise SigError("IncompleteBody", "a chunk header is too long")
                    return out
                head = bytes(self.buf[:i]).decode("latin-1")
                del self.buf[:i + 2]
                size, _, ext = head.partition(";")
                try:
                    self.need = int(size, 16)
                except ValueError:
                    raise SigError("IncompleteBody", "a bad aws-chunked chunk size") from None
                self.sig = _kv(ext.replace(";", ",")).get("chunk-signature")
                self.data = []
                if self.key is not None and self.sig is None:
                    raise SigError("SignatureDoesNotMatch", "a chunk without its signature")
            if self.need == 0:                  # the last chunk: CRLF, or trailers
                if len(self.buf) < 2:
                    return out
                if self.buf[:2] == b"\r\n":
                    del self.buf[:2]
                self._check(b"")
                self.need, self.done = None, True
                continue
            if len(self.buf) < self.need + 2:
                return out
            piece = bytes(self.buf[:self.need])
            if self.buf[self.need:self.need + 2] != b"\r\n":
                raise SigError("IncompleteBody", "an aws-chunked chunk does not end in CRLF")
            del self.buf[:self.need + 2]
            self._check(piece)
            self.need = None
            out.append(piece)

    def _check(self, piece):
        if self.key is None:
            return
        sts = "\n".join(("AWS4-HMAC-SHA256-PAYLOAD", self.amz_date, self.scope, self.prev,
                         EMPTY_SHA256, hashlib.sha256(piece).hexdigest()))
        if not matches(self.key, sts, self.sig.lower()):
            raise SigError("SignatureDoesNotMatch", "a chunk's signature is wrong")
        self.prev = self.sig.lower()

    def finish(self):
        if not self.done:
            raise SigError("IncompleteBody", "the aws-chunked body ended before its last "
                                             "chunk")
