"""Buckets and their tokens: /api/v1/buckets[/{name}[/tokens[/{id}]]]."""

import falcon

from bukt.errors import PermissionDenied
from bukt.http.auth import ADMIN, READ, REPLICATE, WRITE, digest, names_to_perms, new_token, \
    perms_to_names
from bukt.http.problems import Problem
from bukt.http.wire import bad, json_ttl, read_json
from bukt._core import COMPRESSIONS, SCHEMAS
from bukt.tokens import check_given
from bukt.writewait.ringroom import META_ROOM

EVICTIONS = ("lru", "none")


def given_token(doc, principal):
    """(the token to register, whether the caller gave it): a body's "token" is a
    secret the operator chose (the same token on every node behind a proxy:
    docs/scale-out.md); only the admin token may give one, and it is not echoed."""
    if "token" not in doc:
        return new_token(), False
    if not principal.is_admin:
        raise PermissionDenied("only the admin token may give a token's secret")
    try:
        return check_given(doc["token"]), True
    except ValueError as e:
        raise bad("token", str(e)) from None


class BucketList:
    def __init__(self, ctx):
        self.ctx = ctx

    async def on_get(self, req, resp):
        self.ctx.auth.require(req, None, ADMIN)
        resp.media = {"buckets": sorted(self.ctx.store.buckets())}

    async def on_post(self, req, resp):
        ctx = self.ctx
        principal = ctx.auth.require(req, None, ADMIN)
        doc = await read_json(req, ctx.settings.max_body)
        name = doc.get("name")
        if not isinstance(name, str) or not name:
            raise bad("name", "a bucket needs a name (A-Z a-z 0-9 . _ -, up to 64)")
        req.context.bucket = name
        schema = doc.get("schema", "bytes")
        eviction = doc.get("eviction", "lru")
        persist = doc.get("persist", True)
        if schema not in SCHEMAS:
            raise bad("schema", f"must be one of {', '.join(SCHEMAS)}")
        if eviction not in EVICTIONS:
            raise bad("eviction", f"must be one of {', '.join(EVICTIONS)}")
        if not isinstance(persist, bool):
            raise bad("persist", "must be true or false")
        default_ttl = json_ttl(doc, "default_ttl")
        max_memory = doc.get("max_memory")
        if max_memory is not None and (not isinstance(max_memory, (int, str))
                                       or isinstance(max_memory, bool)):
            raise bad("max_memory", 'bytes, or a size such as "64MiB"; null: no limit')
        compression = doc.get("compression")
        if compression is not None and compression not in COMPRESSIONS:
            raise bad("compression", f"must be one of {', '.join(COMPRESSIONS)}")
        threshold = doc.get("compression_threshold")
        if threshold is not None and (not isinstance(threshold, (int, str))
                                      or isinstance(threshold, bool)):
            raise bad("compression_threshold", 'bytes, or a size such as "1KiB"')
        min_saving = doc.get("compression_min_saving")
        if min_saving is not None and (not isinstance(min_saving, int)
                                       or isinstance(min_saving, bool)):
            raise bad("compression_min_saving", "a percent, 0 to 90")
        token, given = given_token(doc, principal)

        def create():           # two records: the ring has room for both first
            ctx.store.create_bucket(name, schema=schema, eviction=eviction,
                                    persist=persist, default_ttl=default_ttl,
                                    max_memory=max_memory, compression=compression,
                                    compression_threshold=threshold,
                                    compression_min_saving=min_saving)
            try:
                return ctx.store.add_token(name, digest(token), READ | WRITE | ADMIN)
            except Exception:
                ctx.store.drop_bucket(name)
                raise

        token_id = await ctx.ring.write_all(META_ROOM, create)
        await ctx.durability.settle(name)
        resp.status = 201
        resp.location = f"/api/v1/buckets/{name}"
        resp.media = {"name": name, "token_id": token_id,
                      "permissions": ["read", "write", "admin"],
                      **({} if given else {"token": token})}


class BucketItem:
    def __init__(self, ctx):
        self.ctx = ctx

    async def on_get(self, req, resp, name):
        store = self.ctx.store
        self.ctx.auth.require(req, name, READ)
        info = dict(store.bucket_info(name))
        info["stats"] = store.bucket(name).stats()
        resp.media = info

    async def on_delete(self, req, resp, name):
        """Drop a bucket: the admin token, or a token with admin on it, in a header
        or (as in Bukt's original API) in the JSON body as {"token": ...}."""
        ctx = self.ctx
        token = None
        if req.content_length:
            doc = await read_json(req, ctx.settings.max_body, required=False)
            token = doc.get("token")
            if "token" in doc and not isinstance(token, str):
                raise bad("token", "must be a string")
        ctx.auth.require(req, name, ADMIN, token=token)
        await ctx.ring.write_all(META_ROOM, ctx.store.drop_bucket, name)
        await ctx.durability.settle(name)
        resp.status = 204


class TokenList:
    def __init__(self, ctx):
        self.ctx = ctx

    async def on_get(self, req, resp, name):
        self.ctx.auth.require(req, name, ADMIN)
        resp.media = {"tokens": [{"id": i, "permissions": perms_to_names(p)}
                                 for i, p in self.ctx.store.tokens(name)]}

    async def on_post(self, req, resp, name):
        ctx = self.ctx
        principal = ctx.auth.require(req, name, ADMIN)
        doc = await read_json(req, ctx.settings.max_body)
        try:
            perms = names_to_perms(doc.get("permissions"))
        except ValueError as e:
            raise bad("permissions", str(e)) from None
        if perms & REPLICATE and not principal.is_admin:
            # it reads every bucket: a bucket's admin may not hand it out
            raise PermissionDenied("only the admin token gives the replicate permission")
        token, given = given_token(doc, principal)
        token_id = await ctx.ring.write_all(META_ROOM, ctx.store.add_token, name,
                                            digest(token), perms)
        await ctx.durability.settle(name)
        resp.status = 201
        resp.location = f"/api/v1/buckets/{name}/tokens/{token_id}"
        resp.media = {"id": token_id, "permissions": perms_to_names(perms),
                      **({} if given else {"token": token})}


class TokenItem:
    def __init__(self, ctx):
        self.ctx = ctx

    async def on_delete(self, req, resp, name, token_id):
        ctx = self.ctx
        ctx.auth.require(req, name, ADMIN)
        if not await ctx.ring.write_all(META_ROOM, ctx.store.revoke_token, name, token_id):
            raise Problem(404, "not_found", f"bucket {name!r} has no token {token_id}")
        await ctx.durability.settle(name)
        resp.status = falcon.HTTP_204
