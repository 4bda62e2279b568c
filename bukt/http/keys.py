"""Keys of a bucket: /api/v1/buckets/{name}/keys/{key} (GET, HEAD, PUT, DELETE, and
POST .../incr), the scan /api/v1/buckets/{name}/keys, the bulk calls, and the
bucket-wide POSTs .../expire and .../persist (a key's TTL) and .../flush (every key).

A key is the rest of the path after /keys/, slashes included, percent-decoded to its
exact bytes. A POST on /keys/{key}/incr increments {key}; POST means nothing else on a
key, so a key that itself ends in /incr is incremented by POSTing .../incr/incr.

JSON DOCUMENTS. An app that PUTs JSON (`requests.put(url, json=doc)`) sends
Content-Type: application/json. On a bucket of schema `json` the body is the document:
the core validates it (bukt.JsonDocument) and a GET serves it as application/json. On
any other bucket a JSON body that is Bukt's envelope ({"value", "ttl_seconds",
"single_read", "encoding"}: a non-empty object of these keys alone, which must then
have a value) is read as the envelope, as it always was; any other JSON body is
stored as the bytes it is.

ETags are the entry's version. A GET reads value, version and TTL in one consistent
read (Bucket.get_entry), so the ETag always names the body it comes with; a HEAD peeks
(get_entry(consume=False)) and so never takes a single-read key. GET, HEAD, PUT and
DELETE honour If-Match, and GET, HEAD and PUT If-None-Match; the writes are atomic
(PUT through Bucket.set(if_version=...), DELETE through delete(if_version=...)). GET
honours Range (one range; several are answered in full) and If-Range.
"""

import json
import re

from bukt import codec, objects
from bukt.errors import VersionMismatch
from bukt.http import objects as http_objects
from bukt.http.auth import ADMIN, READ, WRITE
from bukt.codec import FLAG_ZSTD
from bukt.http.encoding import SCHEMA_TYPES, VARY, accepts_zstd, zstd_bucket
from bukt.http.ringwait import persisted
from bukt.http.problems import Problem
from bukt.objects.store import ObjectReader
from bukt.http.wire import (bad, bool_value, encoding_of, etag, etags_of, expires_at, header,
                            int_value, is_json, json_bool, json_key, json_ttl, key_from_path,
                            param_or_header, read_body, read_json, ttl_value,
                            value_bytes, value_from_json, value_to_json)
from bukt.writewait.ringroom import rec_room

DIGITS = re.compile(r"[0-9]+")
KEY_SLASHES = 6           # "/" before the key in /api/v1/buckets/{name}/keys/{key}
TTL_HEADER = "Bukt-TTL"
SINGLE_READ_HEADER = "Bukt-Single-Read"
TTL_IN, SINGLE_READ_IN = TTL_HEADER.lower().encode(), SINGLE_READ_HEADER.lower().encode()
MAX_BULK = 1000           # keys in one bulk call: bounds the work of one request
# The keys of Bukt's JSON envelope for a PUT (JSON DOCUMENTS, above).
ENVELOPE_KEYS = frozenset({"value", "ttl_seconds", "single_read", "encoding"})


def precondition_failed(detail):
    return Problem(412, "version_mismatch", detail)


def check_read_preconditions(req, current):
    """304 / 412 for a GET or HEAD given the key's current version (None: absent).
    Returns True when the answer is 304 Not Modified."""
    im, inm = header(req, b"if-match"), header(req, b"if-none-match")
    if im is not None:
        tags = etags_of(im)
        if current is None or (tags != "*" and current not in tags):
            raise precondition_failed("If-Match does not match the key's version")
    if inm is not None and current is not None:
        tags = etags_of(inm)
        if tags == "*" or current in tags:
            return True
    return False


def write_conditions(req, bucket, key):
    """Keyword arguments for Bucket.set from If-Match / If-None-Match: `*` becomes
    xx / nx; version lists become a compare-and-set on the version seen now."""
    im, inm = header(req, b"if-match"), header(req, b"if-none-match")
    kwargs = {}
    if im is None and inm is None:
        return kwargs
    current = None
    if im is not None:
        tags = etags_of(im)
        if tags == "*":
            kwargs["xx"] = True
        else:
            current = bucket.version(key) or 0
            if current not in tags:
                raise precondition_failed("If-Match does not match the key's version")
            kwargs["if_version"] = current
    if inm is not None:
        tags = etags_of(inm)
        if tags == "*":
            kwargs["nx"] = True
        else:
            if current is None:
                current = bucket.version(key) or 0
            if current in tags:
                raise precondition_failed("If-None-Match matches the key's version")
            kwargs["if_version"] = current
    return kwargs


async def delete_if_match(ring, bucket, key, tags):
    """Delete `key` if its version is one of `tags` ("*": any), each try one atomic
    compare-and-delete in the core (waiting for ring room through `ring`); False when
    none matched (absent included)."""
    if tags == "*":
        return await ring.write(bucket.delete, key) == 1
    for version in sorted(tags):
        if version == 0:            # "0" is the core's "absent": never an ETag of ours
            continue
        try:
            if await ring.write(bucket.delete, key, if_version=version):
                return True
        except VersionMismatch:
            continue
    return False


def parse_range(header, size):
    """(start, end) inclusive for one `bytes=` range, None to answer in full, or
    "unsatisfiable"."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return "unsatisfiable"
            return max(size - n, 0), size - 1
        start = int(first)
        end = int(last) if last else None
    except ValueError:
        return None
    if start < 0 or (end is not None and end < start):
        return None
    if start >= size:
        return "unsatisfiable"
    return start, size - 1 if end is None else min(end, size - 1)


class Key:
    def __init__(self, ctx):
        self.ctx = ctx

    def _open(self, req, name, key, perm):
        self.ctx.auth.require(req, name, perm)
        return self.ctx.store.bucket(name), key_from_path(req, key, KEY_SLASHES)

    async def on_get(self, req, resp, name, key):
        bucket, k = self._open(req, name, key, READ)
        peek = bool_value(req.get_param("peek"), "peek")    # bad input: 400 before all
        conditional = header(req, b"if-match") is not None or \
            header(req, b"if-none-match") is not None
        # A 304 or 412 is decided on the version alone, before the value is read, so
        # that it never consumes a single-read key.
        zstd = zstd_bucket(bucket)
        if zstd:                # the body may be coded: bukt/http/encoding.py
            resp.vary = (VARY,)
        if conditional and self._not_modified(req, resp, bucket.version(k)):
            return
        # One raw read decides (objects.read): an object streams, a plain value is
        # sent, decoded or (zstd to a client that takes it) as it is stored.
        if peek:
            got = objects.read(bucket, k, peek=True)       # a look that takes nothing
        else:
            got = await self.ctx.ring.write(objects.read, bucket, k)  # may take a single-read key
        if type(got) is ObjectReader:
            return await self._get_object(req, resp, got, conditional)
        if conditional:
            # judged again on the entry served: a write may have landed in between
            if self._not_modified(req, resp, None if got is None else got[2]):
                return
        if got is None:
            raise Problem(404, "not_found", "no such key")
        value, flags, version, expire_ms = got
        rng = header(req, b"range")
        self._entry_headers(resp, bucket, version, expire_ms)
        if flags & FLAG_ZSTD and zstd and rng is None \
                and accepts_zstd(header(req, b"accept-encoding")):
            resp.set_header("Content-Encoding", "zstd")     # the stored frame as it is
            resp.data = value
            return
        data = codec.decode_entry(bucket, k, value, flags)
        span = self._range(req, resp, len(data), version)
        resp.data = data if span is None else data[span[0]:span[1]]

    async def _get_object(self, req, resp, reader, conditional, head=False):
        """GET / HEAD of an object, held by `reader` (closed here or by the body it
        streams: bukt/http/objects.py)."""
        try:
            if conditional and self._not_modified(req, resp, reader.version):
                return
            http_objects.headers(resp, reader, TTL_HEADER, self.ctx.store.now_ms())
            span = None if head else self._range(req, resp, reader.size, reader.version)
            start, end = span or (0, reader.size)
            resp.content_length = end - start
            if head:
                return
            resp.stream = http_objects.body(reader, start, end, req.path)
            reader = None               # the body closes it
        finally:
            if reader is not None:
                reader.close()

    async def on_head(self, req, resp, name, key):
        """The GET's headers, Content-Length included, from a peek: a HEAD never
        consumes a single-read key. falcon sends no body for a HEAD."""
        bucket, k = self._open(req, name, key, READ)
        got = objects.read(bucket, k, peek=True)
        if type(got) is ObjectReader:
            return await self._get_object(req, resp, got, True, head=True)
        if zstd_bucket(bucket):
            resp.vary = (VARY,)
        if self._not_modified(req, resp, None if got is None else got[2]):
            return
        if got is None:
            raise Problem(404, "not_found", "no such key")
        value, flags, version, expire_ms = got
        self._entry_headers(resp, bucket, version, expire_ms)
        resp.data = codec.decode_entry(bucket, k, value, flags)

    @staticmethod
    def _range(req, resp, size, version):
        """The one Range a GET asks for, where If-Range (if any) names this version:
        (start, end exclusive), with 206 and Content-Range set; None: the whole body;
        416 when it is unsatisfiable."""
        rng = header(req, b"range")
        if rng is None:
            return None
        if_range = header(req, b"if-range")
        if if_range is not None and etags_of(if_range) != {version}:
            return None
        span = parse_range(rng, size)
        if span == "unsatisfiable":
            raise Problem(416, "range_not_satisfiable", f"the value has {size} bytes",
                          headers={"Content-Range": f"bytes */{size}"})
        if span is None:
            return None
        resp.status = 206
        resp.content_range = (span[0], span[1], size)
        return span[0], span[1] + 1

    @staticmethod
    def _not_modified(req, resp, version):
        """True when the answer is 304 (already set on resp); 412 raised."""
        if check_read_preconditions(req, version):
            resp.status = 304
            resp.etag = etag(version)
            return True
        return False

    def _entry_headers(self, resp, bucket, version, expire_ms):
        """Content-Type (by the bucket's schema), Accept-Ranges, ETag and Bukt-TTL of a
        plain entry."""
        resp.content_type = SCHEMA_TYPES[bucket.schema_name]
        resp.accept_ranges = "bytes"
        resp.etag = etag(version)
        ttl = http_objects.ttl_text(expire_ms, self.ctx.store.now_ms())
        if ttl is not None:
            resp.set_header(TTL_HEADER, ttl)

    async def on_put(self, req, resp, name, key):
        ctx = self.ctx
        bucket, k = self._open(req, name, key, WRITE)
        ttl = ttl_value(param_or_header(req, "ttl", TTL_IN))
        single = bool_value(param_or_header(req, "single_read", SINGLE_READ_IN),
                            "single_read")
        expect = http_objects.expected_sha256(lambda n: header(req, n))
        value = head = None
        if http_objects.streams(ctx.store, bucket, req.content_length, is_json(req)):
            value, head = await http_objects.small_body(ctx, req)
        if head is not None and value is None:      # an object: streamed
            conditions = write_conditions(req, bucket, k)
            m = await http_objects.put(ctx, req, bucket, k, ttl, single, conditions,
                                       expect, head)
            if m is None:
                raise precondition_failed("If-None-Match: * but the key exists"
                                          if conditions.get("nx") else
                                          "If-Match: * but the key does not exist")
            await ctx.durability.settle(name)
            resp.etag = etag(m.version)
            resp.set_header("Repr-Digest", http_objects.repr_digest(m.sha256))
            resp.status = 204
            return
        if value is None:
            value = await read_body(req, ctx.settings.max_body)
        if expect is not None:
            http_objects.check_digest(value, expect)
        doc = None                  # JSON DOCUMENTS (module docstring)
        if is_json(req) and bucket.schema_name != "json":
            try:
                parsed = json.loads(value)
            except (ValueError, UnicodeDecodeError) as e:
                raise Problem(400, "bad_json", f"body is not JSON: {e}") from None
            if isinstance(parsed, dict) and parsed and parsed.keys() <= ENVELOPE_KEYS:
                doc = parsed
                if "value" not in doc:     # an envelope without its value: a mistake
                    raise bad("value", "the JSON envelope needs a value")
        as_json = doc is not None
        if as_json:     # Bukt's envelope: {"value", "ttl_seconds", "single_read"}
            encoding = encoding_of(req, doc)
            value = value_from_json(doc["value"], encoding)
            if doc.get("ttl_seconds") is not None:
                ttl = json_ttl(doc, "ttl_seconds")
            if "single_read" in doc:
                single = json_bool(doc, "single_read")
        conditions = write_conditions(req, bucket, k)
        version = await ctx.ring.write(bucket.set, k, value, ttl=ttl, single_read=single,
                                       **conditions)
        if version is None:
            raise precondition_failed("If-None-Match: * but the key exists"
                                      if conditions.get("nx") else
                                      "If-Match: * but the key does not exist")
        await ctx.durability.settle(name)
        resp.etag = etag(version)
        if as_json:
            resp.media = {"value": doc["value"], "expires_at": expires_at(bucket.ttl(k))}
        else:
            resp.status = 204

    async def on_delete(self, req, resp, name, key):
        bucket, k = self._open(req, name, key, WRITE)
        im = header(req, b"if-match")
        if im is None:
            if not await self.ctx.ring.write(bucket.delete, k):
                raise Problem(404, "not_found", "no such key")
        elif not await delete_if_match(self.ctx.ring, bucket, k, etags_of(im)):
            raise precondition_failed("If-Match does not match the key's version")
        await self.ctx.durability.settle(name)
        resp.status = 204

    async def on_post(self, req, resp, name, key):
        bucket, k = self._open(req, name, key, WRITE)
        if not k.endswith(b"/incr") or len(k) == 5:
            raise Problem(405, "method_not_allowed",
                          "POST on a key is only .../keys/{key}/incr",
                          headers={"Allow": "GET, HEAD, PUT, DELETE"})
        k = k[:-5]
        value = await self.ctx.ring.write(
            bucket.incr, k, by=int_value(req.get_param("by"), "by", 1),
            initial=int_value(req.get_param("initial"), "initial", 0),
            ttl=ttl_value(param_or_header(req, "ttl", TTL_IN)))
        await self.ctx.durability.settle(name)
        resp.media = {"value": value}


def key_list(doc, encoding):
    keys = doc.get("keys")
    if not isinstance(keys, list):
        raise bad("keys", "must be a list of keys")
    if len(keys) > MAX_BULK:
        raise bad("keys", f"at most {MAX_BULK} keys in one call")
    if encoding == "base64":
        return [value_from_json(k, "base64", "keys") for k in keys]
    return [json_key(k, "keys") for k in keys]


class Scan:
    def __init__(self, ctx):
        self.ctx = ctx

    async def on_get(self, req, resp, name):
        self.ctx.auth.require(req, name, READ)
        bucket = self.ctx.store.bucket(name)
        encoding = encoding_of(req)
        prefix = req.get_param("prefix", default="")
        prefix = value_from_json(prefix, encoding, "prefix") if prefix else b""
        raw_cursor = req.get_param("cursor", default="0")
        if not DIGITS.fullmatch(raw_cursor):
            raise bad("cursor", "must be the decimal cursor a scan returned, or 0")
        count = int_value(req.get_param("count"), "count", 100, 1, 10000)
        cursor, keys = bucket.scan(prefix, int(raw_cursor), count)
        if encoding == "utf-8" and not all(_is_utf8(k) for k in keys):
            encoding = "base64"         # a page carries any key: never a 406 for a name
        resp.media = {"cursor": str(cursor), "encoding": encoding,
                      "keys": [value_to_json(k, encoding) for k in keys]}


def _is_utf8(key):
    try:
        key.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class Bulk:
    """POST /mget, /mset, /delete, /exists: one resource, the operation from the route."""

    def __init__(self, ctx, op):
        self.ctx, self.op = ctx, op

    async def on_post(self, req, resp, name):
        ctx, op = self.ctx, self.op
        ctx.auth.require(req, name, READ if op in ("mget", "exists") else WRITE)
        bucket = ctx.store.bucket(name)
        doc = await read_json(req, ctx.settings.max_body)
        encoding = encoding_of(req, doc)
        if op == "mset":
            items = doc.get("items")
            if not isinstance(items, dict) or len(items) > MAX_BULK:
                raise bad("items", f"must be an object of at most {MAX_BULK} key: value")
            mapping = {}
            for k, v in items.items():
                key = value_from_json(k, "base64", "items") if encoding == "base64" \
                    else json_key(k)
                mapping[key] = value_from_json(v, encoding, "items")
            room = sum(rec_room(len(k) + len(value_bytes(v))) for k, v in mapping.items()) \
                if persisted(ctx.store, name) else 0
            versions = await ctx.ring.write_all(room, bucket.mset, mapping,
                                                ttl=json_ttl(doc, "ttl_seconds"))
            await ctx.durability.settle(name)
            resp.media = {"versions": versions}
            return
        keys = key_list(doc, encoding)
        if op == "mget":
            resp.media = {"values": [value_to_json(v, encoding)
                                     for v in bucket.mget(keys)]}
        elif op == "exists":
            resp.media = {"exists": bucket.exists(*keys) if keys else 0}
        else:
            if len(keys) == 1:
                deleted = await ctx.ring.write(bucket.delete, keys[0])
            elif keys:
                room = sum(rec_room(len(k)) for k in keys) \
                    if persisted(ctx.store, name) else 0
                deleted = await ctx.ring.write_all(room, bucket.delete, *keys)
            else:
                deleted = 0
            await ctx.durability.settle(name)
            resp.media = {"deleted": deleted}


class Touch:
    """POST /expire {"key", "ttl_seconds"} and /persist {"key"}: a key's TTL set or
    removed; {"existed": false} when there is no such key (as the TCP EXPIRE answers)."""

    def __init__(self, ctx, op):
        self.ctx, self.op = ctx, op

    async def on_post(self, req, resp, name):
        ctx = self.ctx
        ctx.auth.require(req, name, WRITE)
        bucket = ctx.store.bucket(name)
        doc = await read_json(req, ctx.settings.max_body)
        encoding = encoding_of(req, doc)
        if "key" not in doc:
            raise bad("key", "the JSON body needs a key")
        key = value_from_json(doc["key"], "base64", "key") if encoding == "base64" \
            else json_key(doc["key"])
        if self.op == "expire":
            ttl = json_ttl(doc, "ttl_seconds")
            if ttl is None:
                raise bad("ttl_seconds", "the JSON body needs ttl_seconds")
            existed = await ctx.ring.write(bucket.expire, key, ttl)
        else:
            existed = await ctx.ring.write(bucket.persist, key)
        await ctx.durability.settle(name)
        resp.media = {"existed": bool(existed)}


class Flush:
    """POST /flush: every key of the bucket deleted (the bucket, its settings and its
    tokens stay); needs the admin permission, as the TCP FLUSH does."""

    def __init__(self, ctx):
        self.ctx = ctx

    async def on_post(self, req, resp, name):
        ctx = self.ctx
        ctx.auth.require(req, name, ADMIN)
        bucket = ctx.store.bucket(name)
        room = rec_room(ctx.store.limits["max_key"]) if persisted(ctx.store, name) else 0
        deleted = await ctx.ring.write_all(room, bucket.flush)
        await ctx.durability.settle(name)
        resp.media = {"deleted": deleted}
