"""Bukt's original API, kept working: the token names the bucket.

    POST   /api/v1/kv        {"key", "value", "ttl", "single_read"} -> 201
    GET    /api/v1/kv/{key}  -> {"key", "value", "expires_at"}
    DELETE /api/v1/kv/{key}  -> 204
"""

from bukt.http.auth import READ, WRITE
from bukt.http.problems import Problem
from bukt.http.wire import (bad, encoding_of, expires_at, json_key,
                            json_bool, key_from_path, json_ttl, read_json, value_from_json,
                            value_to_json)

KV_SLASHES = 4            # "/" before the key in /api/v1/kv/{key}


def bucket_of(ctx, req, perm):
    p = ctx.auth.identify(req)
    if p.is_admin:
        raise Problem(400, "bad_request", "the admin token names no bucket; use "
                      "/api/v1/buckets/{name}/keys/{key} with it")
    ctx.auth.require(req, p.bucket, perm)
    return p.bucket, ctx.store.bucket(p.bucket)


class KvCollection:
    def __init__(self, ctx):
        self.ctx = ctx

    async def on_post(self, req, resp):
        ctx = self.ctx
        name, bucket = bucket_of(ctx, req, WRITE)
        doc = await read_json(req, ctx.settings.max_body)
        if "key" not in doc or "value" not in doc:
            raise bad("key", "the body needs a key and a value")
        encoding = encoding_of(req, doc)
        key = json_key(doc["key"])
        ttl = json_ttl(doc, "ttl")
        await ctx.ring.write(bucket.set, key, value_from_json(doc["value"], encoding),
                             ttl=ttl, single_read=json_bool(doc, "single_read"))
        await ctx.durability.settle(name)
        resp.status = 201
        resp.media = {"key": doc["key"], "value": doc["value"],
                      "expires_at": expires_at(bucket.ttl(key))}


class KvItem:
    def __init__(self, ctx):
        self.ctx = ctx

    async def on_get(self, req, resp, key):
        _, bucket = bucket_of(self.ctx, req, READ)
        k = key_from_path(req, key, KV_SLASHES)
        # value and TTL from one read; it may take a single-read key: a write
        entry = await self.ctx.ring.write(bucket.get_entry, k)
        if entry is None:
            raise Problem(404, "not_found", "no such key")
        value, _, ttl = entry
        resp.media = {"key": key, "value": value_to_json(value, encoding_of(req)),
                      "expires_at": expires_at(ttl)}

    async def on_delete(self, req, resp, key):
        name, bucket = bucket_of(self.ctx, req, WRITE)
        if not await self.ctx.ring.write(bucket.delete, key_from_path(req, key, KV_SLASHES)):
            raise Problem(404, "not_found", "no such key")
        await self.ctx.durability.settle(name)
        resp.status = 204
