"""Reading requests and writing values: bounded bodies, JSON, query parameters and
headers, keys from the raw path, values in JSON, ETags and expiry times."""

import base64
import binascii
import json
import math
import time
from datetime import datetime, timezone
from urllib.parse import unquote_to_bytes

from bukt.http.problems import Problem

# `b"%" in data` first tries the needle as an int, and the TypeError it raises and
# clears costs ~1,800 instructions (callgrind), about 1 µs of a request: an int needle
# is a plain memchr. The fast path (fastpath.py) uses it too.
PERCENT = ord("%")


async def read_body(req, limit):
    """The request body, refused with 413 before reading when Content-Length says it is
    over `limit`, and cut off at limit + 1 bytes when no length is given."""
    length = req.content_length
    if length is not None and length > limit:
        raise Problem(413, "payload_too_large", f"body of {length} bytes is over "
                      f"http.max_body={limit}")
    data = await req.stream.read(limit + 1)
    if len(data) > limit:
        raise Problem(413, "payload_too_large", f"body is over http.max_body={limit}")
    return data


async def read_json(req, limit, required=True):
    data = await read_body(req, limit)
    if not data:
        if required:
            raise Problem(400, "bad_request", "a JSON body is needed")
        return {}
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise Problem(400, "bad_json", f"body is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise Problem(400, "bad_request", "the JSON body must be an object")
    return doc


def is_json(req):
    ct = req.content_type
    return bool(ct) and ct.split(";", 1)[0].strip().lower() in (
        "application/json", "application/merge-patch+json") or (
        bool(ct) and ct.split(";", 1)[0].strip().lower().endswith("+json"))


# -- headers ---------------------------------------------------------------------------

def header(req, name):
    """One header by its lower-case name (bytes), or None. Reads the dict falcon's ASGI
    request builds once (name -> value, bytes): falcon's get_header costs microseconds
    per call, and a GET asks for six."""
    try:
        value = req._asgi_headers.get(name)
    except AttributeError:          # not falcon's ASGI request (a WSGI one, a stub)
        return req.get_header(name.decode("latin-1"))
    return None if value is None else value.decode("latin-1")


# -- parameters -----------------------------------------------------------------------

def bad(name, why):
    return Problem(400, "invalid_argument", f"{name}: {why}")


MAX_TTL = 1e9             # seconds (about 31 years): keeps expiry times in range


def ttl_value(raw, name="ttl"):
    """Seconds in (0, MAX_TTL] as float, or None."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        raise bad(name, "must be a number of seconds above zero")
    try:
        ttl = float(raw)
    except (TypeError, ValueError):
        raise bad(name, "must be a number of seconds above zero") from None
    if not math.isfinite(ttl) or ttl <= 0 or ttl > MAX_TTL:
        raise bad(name, f"must be a number of seconds above zero, at most {MAX_TTL:.0f}")
    return ttl


def json_ttl(doc, name):
    """A TTL from a JSON body: a number of seconds, or null/absent for none."""
    raw = doc.get(name)
    if raw is not None and (isinstance(raw, bool) or not isinstance(raw, (int, float))):
        raise bad(name, "must be a number of seconds above zero")
    return ttl_value(raw, name)


def bool_value(raw, name):
    """A flag from a query parameter or header (absent: False) or a JSON boolean."""
    if raw is None:
        return False
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off"):
        return False
    raise bad(name, "must be true or false")


def int_value(raw, name, default, lo=-(1 << 63), hi=(1 << 63) - 1):
    if raw is None:
        return default
    if isinstance(raw, bool):
        raise bad(name, "must be an integer")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise bad(name, "must be an integer") from None
    if isinstance(raw, float) and raw != value:
        raise bad(name, "must be an integer")
    if not lo <= value <= hi:
        raise bad(name, f"must be in [{lo}, {hi}]")
    return value


def json_bool(doc, name):
    value = doc.get(name, False)
    if not isinstance(value, bool):
        raise bad(name, "must be true or false")
    return value


def param_or_header(req, param, name):
    """A query parameter (blank is a value, and an invalid one for most) or else a
    header (blank is absent)."""
    value = req.get_param(param)
    return value if value is not None else (header(req, name) or None)


# -- keys -------------------------------------------------------------------------------

def key_from_path(req, key, slashes):
    """The key's exact bytes: percent-decoded from the raw path when the server gives
    one (ASGI raw_path), so keys that are not UTF-8 survive; else the decoded str.
    `slashes` is how many "/" come before the key (6 in
    /api/v1/buckets/{name}/keys/{key})."""
    scope = getattr(req, "scope", None)
    raw = scope.get("raw_path") if scope else None
    if raw:
        parts = raw.split(b"/", slashes)
        if len(parts) == slashes + 1:
            part = parts[-1]
            return unquote_to_bytes(part) if PERCENT in part else part
    return key.encode("utf-8", "surrogateescape")


# -- values in JSON ---------------------------------------------------------------------

def encoding_of(req, doc=None):
    if doc and "encoding" in doc:
        enc = doc["encoding"]
    else:
        enc = req.get_param("encoding", default="utf-8")
    if not isinstance(enc, str) or enc not in ("utf-8", "base64"):
        raise bad("encoding", "must be utf-8 or base64")
    return enc


def value_to_json(value, encoding):
    """A stored value (bytes, str or int by schema) as a JSON value."""
    if value is None or isinstance(value, (int, str)):
        return value
    if encoding == "base64":
        return base64.b64encode(value).decode("ascii")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise Problem(406, "value_not_utf8", "the value is not UTF-8; ask with "
                      "?encoding=base64") from None


def value_from_json(value, encoding, name="value"):
    """A JSON value as the bytes Bucket.set takes."""
    if isinstance(value, bool) or value is None:
        raise bad(name, "must be a string or an integer")
    if isinstance(value, int):          # decimal text: what an int bucket stores, and
        return str(value).encode()       # what any other bucket can hold
    if not isinstance(value, str):
        raise bad(name, "must be a string or an integer")
    if encoding == "base64":
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise bad(name, "is not valid base64") from None
    return value.encode("utf-8", "surrogatepass")


def json_key(key, name="key"):
    if not isinstance(key, str):
        raise bad(name, "must be a string")
    return key.encode("utf-8", "surrogatepass")


def key_to_json(key):
    return key.decode("utf-8", "surrogateescape")


def value_bytes(value):
    """A value as returned by Bucket.get, as the bytes of an HTTP body."""
    if isinstance(value, bytes):
        return value
    return str(value).encode()


# -- versions and time --------------------------------------------------------------------

def etag(version):
    return f'"{version}"'


def etags_of(header):
    """An If-Match / If-None-Match header as a set of versions, or "*"."""
    if header.strip() == "*":
        return "*"
    versions = set()
    for part in header.split(","):
        tag = part.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if len(tag) >= 2 and tag[0] == tag[-1] == '"' and tag[1:-1].isascii() \
                and tag[1:-1].isdigit():
            versions.add(int(tag[1:-1]))
    return versions


def expires_at(ttl):
    """An ISO 8601 UTC time `ttl` seconds from now, or None."""
    if ttl is None:
        return None
    at = datetime.fromtimestamp(time.time() + ttl, tz=timezone.utc)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
