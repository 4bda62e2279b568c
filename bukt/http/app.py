"""create_app(store, config): the falcon ASGI application over one attached store.

Why ASGI: measured on this host (bench/http.py), falcon on stock gunicorn sync workers
closes every connection and tops out near 3-5k req/s; falcon.asgi under gunicorn's
UvicornWorker (uvloop, httptools; bukt/http/worker.py sends each response in one
write) keeps connections alive and serves about 5x that,
and its event loop lets a write wait for durability, or for room in the change ring,
without blocking the worker's other requests (ringwait.py). The store calls themselves are
synchronous and take microseconds, so handlers call them directly on the loop.
"""

from dataclasses import dataclass

import falcon.asgi

from bukt.authguard import AuthGuard, FailureTable
from bukt.http import problems
from bukt.http.auth import Authenticator, resolve_admin_token
from bukt.http.buckets import BucketItem, BucketList, TokenItem, TokenList
from bukt.http.fastpath import FastPath
from bukt.http.ringwait import Durability, RingRoom, durability_for
from bukt.http.keys import Bulk, Flush, Key, Scan, Touch
from bukt.http.kv import KvCollection, KvItem
from bukt.http.middleware import Frontdoor, RateLimiter, RequestMetrics, open_access_log
from bukt.http.openapi import document
from bukt.http.metrics import Metrics
from bukt.http.ops import Health, OpenApi
from bukt.http.replication import Ack, Fence, LogStream, Role, Snapshot
from bukt.http.service import Service
from bukt.http.settings import HttpSettings
from bukt.http.ui import UiFile, UiRoot
from bukt.http.shared import SharedArea
from bukt.http.watch import Watch
from bukt.http.s3.gateway import S3_ROUTE, S3App
from bukt.config import parse_bind

from bukt import objects

API = "/api/v1"
KEY_ROUTE = f"{API}/buckets/{{name}}/keys/{{key:path}}"


@dataclass
class Context:
    """What every resource shares."""
    store: object
    settings: HttpSettings
    auth: Authenticator
    durability: Durability
    ring: RingRoom
    metrics: RequestMetrics = None


class App(falcon.asgi.App):
    """falcon's ASGI app with the Context its resources share, for tests and tools."""

    __slots__ = ("bukt",)


def routes(ctx):
    b = f"{API}/buckets/{{name}}"
    ui = UiFile()
    return [
        ("/healthz", Health(ctx)),
        ("/metrics", Metrics(ctx)),
        (f"{API}/openapi.json", OpenApi(document())),
        (f"{API}/service", Service(ctx)),
        (f"{API}/replication/snapshot", Snapshot(ctx)),
        (f"{API}/replication/log", LogStream(ctx)),
        (f"{API}/replication/role", Role(ctx)),
        (f"{API}/replication/fence", Fence(ctx)),
        (f"{API}/replication/ack", Ack(ctx)),
        ("/ui", UiRoot()),
        ("/ui/", ui),
        ("/ui/{file}", ui),
        (f"{API}/buckets", BucketList(ctx)),
        (b, BucketItem(ctx)),
        (f"{b}/tokens", TokenList(ctx)),
        (f"{b}/tokens/{{token_id:int(min=1,max=4294967295)}}", TokenItem(ctx)),
        (f"{b}/keys", Scan(ctx)),
        (f"{b}/watch", Watch(ctx)),
        (KEY_ROUTE, Key(ctx)),
        (f"{b}/mget", Bulk(ctx, "mget")),
        (f"{b}/mset", Bulk(ctx, "mset")),
        (f"{b}/delete", Bulk(ctx, "delete")),
        (f"{b}/exists", Bulk(ctx, "exists")),
        (f"{b}/expire", Touch(ctx, "expire")),
        (f"{b}/persist", Touch(ctx, "persist")),
        (f"{b}/flush", Flush(ctx)),
        (f"{API}/kv", KvCollection(ctx)),
        (f"{API}/kv/{{key:path}}", KvItem(ctx)),
    ]


def create_app(store, config=None, *, area=None, durability=None, fast_path=True,
               auth_table=None):
    """The ASGI app. `config`: the project's config, or a dict (see settings.py).
    `area`: the SharedArea all workers share (serve_http passes it); a private one
    when None, which is right for a single process. `durability`: see ringwait.py.
    `fast_path`: answer plain GETs and PUTs of a key without falcon (fastpath.py); it
    stands aside by itself while rate limiting is on. `auth_table`: the FailureTable
    of failed tokens all workers share (bukt/authguard.py; serve_http passes it); a
    private one when None."""
    settings = config if isinstance(config, HttpSettings) else \
        HttpSettings.from_config(config)
    admin_token, _ = resolve_admin_token(settings)
    objects.configure(max_object=settings.max_object)     # this worker's limit
    if auth_table is None:
        auth_table = FailureTable.private(settings.auth_sources)
    guard = AuthGuard.from_settings(auth_table, "http", settings)
    ctx = Context(store, settings, Authenticator(store, admin_token, guard),
                  durability or durability_for(store), RingRoom(store))
    table = routes(ctx)
    if area is None:
        area = SharedArea.private(slots=settings.ratelimit_slots)
    ctx.metrics = RequestMetrics(area, [t for t, _ in table] + [S3_ROUTE])
    ctx.metrics.row()          # claim this worker's counter row now, not mid-request
    limiter = RateLimiter(area, settings.ratelimit_rate, settings.ratelimit_burst) \
        if settings.ratelimit_enabled else None
    frontdoor = Frontdoor(ctx.metrics, limiter, open_access_log(settings.access_log),
                         settings.access_sample)
    app = App(middleware=[frontdoor])
    app.req_options.strip_url_path_trailing_slash = False
    app.req_options.keep_blank_qs_values = True     # "?ttl=" is an error, not absent
    problems.install(app)
    for template, resource in table:
        app.add_route(template, resource)
    app.bukt = ctx
    front = FastPath(app, ctx, frontdoor, KEY_ROUTE) if fast_path and limiter is None \
        else app
    if settings.s3_bind is None:
        return front
    s3 = S3App(ctx)
    s3.frontdoor = frontdoor
    return ByPort(front, s3, parse_bind(settings.s3_bind)[1])


class ByPort:
    """The S3 gateway's requests (those that came to s3.bind's port: gunicorn listens
    on both addresses, docs/s3.md says why a port of its own) to the gateway, the rest
    to Bukt's own API."""

    def __init__(self, app, s3, port):
        self.app, self.s3, self.port = app, s3, port
        self.bukt = app.bukt

    async def __call__(self, scope, receive, send):
        server = scope.get("server")
        if scope["type"] == "http" and server is not None and server[1] == self.port:
            return await self.s3(scope, receive, send)
        return await self.app(scope, receive, send)
