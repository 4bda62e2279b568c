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
from bukt.replica import source
from bukt.tokens import REPLICATE

BEAT_S = 1.0            # a BEAT frame at least this often on an idle log stream
IDLE_WAIT_S = 0.05      # the longest a stream sleeps without the feed's wake-up


def _require_replicate(ctx, req):
    p = ctx.auth.identify(req)
    if not p.is_admin and not p.perms & REPLICATE:
        raise PermissionDenied("replication needs the admin token or a token with the "
                               "replicate permission")
    return p


class Snapshot:
    def __init__(self, ctx):
        self.ctx = ctx

    async def on_get(self, req, resp):
        ctx = self.ctx
        _require_replicate(ctx, req)
        seq = source.snapshot_seq(ctx.store)
        resp.content_type = "application/octet-stream"
        resp.set_header("X-Bukt-Seq", str(seq))
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
        since = req.get_param("since")
        if since is None or not since.isdigit():
            raise bad("since", "must be a decimal sequence (the last one applied)")
        since = int(since)
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
        resp.content_type = "application/octet-stream"
        resp.set_header("X-Bukt-Seq", str(since))
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
                    data = reader.read()
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


def _json(text):
    import json
    return json.dumps(text)
