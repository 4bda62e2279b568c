"""GET /api/v1/replication/snapshot and /api/v1/replication/log: what a replica follows.

    snapshot        the table as frames of base-file records, then END; the frames'
                    `last` is the sequence the copy covers (bukt/replica/source.py)
    log?since=S     the log's records after sequence S, as they are written, for as
                    long as the client reads; a BEAT frame every second while nothing
                    changes. 410 (code "gone") when the logs no longer reach back to S
                    or never reached it: the replica takes a new snapshot.

Both need the admin token or a token with the replicate permission (bukt/tokens.py).
docs/design.md, "Replicas", has the design; docs/operations.md, "Read replicas", the use.
"""
import asyncio
import time

from bukt import feed as _feed
from bukt.errors import BuktError, PermissionDenied
from bukt.http.problems import Problem
from bukt.http.wire import bad
from bukt.replica import fence as _fence
from bukt.replica import node_id, note_replica, promoted, fenced, source
from bukt.replica.status import replica_status
from bukt.tokens import REPLICATE

BEAT_S = 1.0            # a BEAT frame at least this often on an idle log stream
IDLE_WAIT_S = 0.05      # the longest a stream sleeps without the feed's wake-up


def _require_replicate(ctx, req):
    p = ctx.auth.identify(req)
    if not p.is_admin and not p.perms & REPLICATE:
        raise PermissionDenied("replication needs the admin token or a token with the "
                               "replicate permission")
    return p


def _sequence(req, name) -> int:
    """The request's `name` parameter: a replica's last applied sequence."""
    value = req.get_param(name)
    if value is None or not value.isdigit():
        raise bad(name, "must be a decimal sequence (the last one applied)")
    return int(value)


class Snapshot:
    def __init__(self, ctx):
        self.ctx = ctx

    async def on_get(self, req, resp):
        ctx = self.ctx
        _require_replicate(ctx, req)
        seq = source.snapshot_seq(ctx.store)
        resp.content_type = "application/octet-stream"
        resp.set_header("X-Bukt-Seq", str(seq))
        resp.set_header("X-Bukt-Node", node_id(ctx.store.writer_info()["data_dir"]))
        resp.stream = self._stream(seq, ctx.settings.replica_chunk)

    async def _stream(self, seq, chunk):
        for f in source.snapshot_frames(self.ctx.store, seq, chunk):
            yield f
            await asyncio.sleep(0)


class LogStream:
    def __init__(self, ctx):
        self.ctx = ctx

    async def on_get(self, req, resp):
        ctx = self.ctx
        _require_replicate(ctx, req)
        since = _sequence(req, "since")
        store = ctx.store
        info = store.writer_info()
        if not info["data_dir"]:
            raise Problem(503, "writer_down", "the writer has not published its data "
                          "directory yet")
        try:
            reader = source.LogReader(info["data_dir"], since, ctx.settings.replica_chunk,
                                      upto=source.logged_upto(store))
        except source.Gone as e:
            raise Problem(410, "gone", str(e)) from None
        note_replica(info["data_dir"], req.get_header("X-Bukt-Replica"))
        resp.content_type = "application/octet-stream"
        resp.set_header("X-Bukt-Seq", str(since))
        resp.set_header("X-Bukt-Node", node_id(info["data_dir"]))
        resp.stream = self._stream(reader)

    async def _stream(self, reader):
        store = self.ctx.store
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        wake = lambda: loop.call_soon_threadsafe(ready.set)     # noqa: E731
        waker = None
        try:
            waker = _feed.Feed.of(store.name).waker()
            waker.add(wake)
        except (BuktError, OSError):
            waker = None                # no feed: poll every IDLE_WAIT_S
        last_sent = 0.0
        try:
            yield source.frame(source.BEAT, source.logged_upto(store))
            while True:
                ready.clear()
                try:
                    data = reader.read(store.writer_info()["log_size"])
                except source.Gone as e:
                    yield source.frame(source.END, reader.last,
                                       ('{"error": "gone", "reason": %s}'
                                        % _json(str(e))).encode())
                    return
                if data:
                    yield source.frame(source.RECORDS, source.logged_upto(store), data)
                    last_sent = time.monotonic()
                    await asyncio.sleep(0)
                    continue
                if time.monotonic() - last_sent >= BEAT_S:
                    # caught up: everything in the log is sent, up to reader.last
                    yield source.frame(source.BEAT, reader.last)
                    last_sent = time.monotonic()
                try:
                    await asyncio.wait_for(ready.wait(), timeout=IDLE_WAIT_S)
                except asyncio.TimeoutError:
                    pass
        finally:
            if waker is not None:
                waker.remove(wake)
            reader.close()


class Role:
    """GET /api/v1/replication/role, no token: whether this node is a primary or a
    replica, its node id, and its promotion (the fencing rule asks it)."""

    def __init__(self, ctx):
        self.ctx = ctx

    async def on_get(self, req, resp):
        store = self.ctx.store
        dd = store.writer_info()["data_dir"]
        st = replica_status(store)
        resp.media = {"role": st["role"], "node": node_id(dd) if dd else None,
                      "primary": st.get("primary"),
                      "promoted": promoted(dd) if dd else None,
                      "fenced": fenced(dd) if dd else None}


class Fence:
    """POST /api/v1/replication/fence {"by": "host:port", "node": ...}: a replica of
    this primary was promoted (bukt promote): refuse every write from now on."""

    def __init__(self, ctx):
        self.ctx = ctx

    async def on_post(self, req, resp):
        ctx = self.ctx
        _require_replicate(ctx, req)
        doc = await req.get_media()
        by = doc.get("by") if isinstance(doc, dict) else None
        if not isinstance(by, str) or ":" not in by:
            raise bad("by", "the promoted replica's host:port")
        dd = ctx.store.writer_info()["data_dir"]
        if doc.get("node") not in (None, node_id(dd)):
            raise Problem(409, "not_my_replica", "that replica followed another primary")
        _fence.fence(dd, by, ctx.store)
        resp.media = {"fenced": True, "by": by}


class Ack:
    """POST /api/v1/replication/ack?seq=S: a replica has applied up to sequence S
    (replication.min_acks: bukt/replica/acks.py)."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.table = None

    async def on_post(self, req, resp):
        ctx = self.ctx
        _require_replicate(ctx, req)
        seq = _sequence(req, "seq")
        who = req.get_header("X-Bukt-Replica") or _peer(req)
        if self.table is None:
            from bukt.replica.acks import AckTable
            self.table = AckTable(ctx.store.name, create=True)
        self.table.report(who, seq)
        resp.status = 204


def _peer(req):
    client = req.scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


def _json(text):
    import json
    return json.dumps(text)
