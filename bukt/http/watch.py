"""GET /api/v1/buckets/{name}/watch: the change feed (bukt/feed.py) as Server-Sent Events.

    ?prefix=  keys starting with it (in the request's key encoding)
    ?since=   resume after this sequence; the Last-Event-ID header does the same
              (a browser's EventSource sends it when it reconnects); neither: from now
    ?values=  true: set and incr events carry the value (up to feed.max_value)

Each change is one event: `id:` its sequence, `event:` its kind, `data:` the JSON of
bukt.feed.Event.as_dict. An idle stream gets a comment line every feed.heartbeat. The
stream ends with one last event and its resume point in `id:` when:
  gone     the resume point is older than the feed holds, or the watcher fell so far
           behind that the feed overwrote it: `data` names `oldest`, the point to
           resume from after re-reading the bucket;
  cutoff   the client reads too slowly (it trails the feed by feed.max_lag and does
           not catch up between two batches): it
           reconnects with Last-Event-ID and loses nothing while the feed holds it;
  revoked  its token was revoked (or its bucket dropped: `drop`).
The worker never buffers a slow client's events: the generator awaits the socket
(uvicorn's flow control), and what the client has not taken yet stays in the feed.
Read permission on the bucket is needed, checked again before every batch.
"""

import asyncio
import json
import time

from falcon.asgi import SSEvent

from bukt import feed as _feed
from bukt.errors import BuktError
from bukt.http.auth import READ, token_of
from bukt.http.wire import bad, bool_value, encoding_of, header, value_from_json
from bukt.http.problems import Problem

BATCH = 256     # events read from the feed per send: what the worker holds for a
                # slow client is one such send, the rest waits in the feed (cutoff)
ENCODED_MAX = 4096  # events whose bytes the worker keeps for its other streams


class Encoded(SSEvent):
    """Events already in their wire form (one batch of them): sent as they are."""

    __slots__ = ("raw",)

    def __init__(self, raw):
        super().__init__()
        self.raw = raw

    def serialize(self, handler=None):
        return self.raw


# (seq, values) -> an event's bytes on the wire, shared by every stream of the worker:
# with many streams of one bucket, each event is turned into JSON once, not once a
# stream (the SSE face's cost grew with streams x events)
_ENCODED = {}


def encoded(e, values):
    key = (e.seq, values)
    raw = _ENCODED.get(key)
    if raw is None:
        if len(_ENCODED) >= ENCODED_MAX:
            _ENCODED.clear()
        raw = _ENCODED[key] = (f"event: {e.kind}\nid: {e.seq}\ndata: "
                               f"{json.dumps(e.as_dict(values))}\n\n").encode()
    return raw


class Watch:
    def __init__(self, ctx):
        self.ctx = ctx

    async def on_get(self, req, resp, name):
        ctx = self.ctx
        ctx.auth.require(req, name, READ)
        token = token_of(req)
        encoding = encoding_of(req)
        prefix = req.get_param("prefix", default="")
        prefix = value_from_json(prefix, encoding, "prefix") if prefix else b""
        values = bool_value(req.get_param("values"), "values")
        since = req.get_param("since")
        last = header(req, b"last-event-id")
        if since is None and last:
            since = last.strip()
        if since is not None:
            if not since.isdigit():
                raise bad("since", "must be a decimal sequence (an event's id)")
            since = int(since)
        try:
            watcher = _feed.Watcher(ctx.store, name, prefix, since, values)
        except BuktError as e:
            if "no change feed" in str(e):
                raise Problem(503, "no_feed", str(e)) from None
            raise
        resp.content_type = "text/event-stream"
        resp.set_header("Cache-Control", "no-store")
        resp.set_header("X-Accel-Buffering", "no")
        resp.sse = self._stream(watcher, token, name, values)

    async def _stream(self, watcher, token, name, values):
        ctx, settings = self.ctx, self.ctx.settings
        ready = asyncio.Event()
        wake = watcher.feed.loop_wake(asyncio.get_running_loop())
        wake.add(ready)
        feed = watcher.feed
        heartbeat = settings.feed_heartbeat
        last_sent = time.monotonic()
        prev_lag = float("inf")             # (the first batch never cuts off)
        # the first bytes out at once: the client knows the watch is on
        yield SSEvent(comment="watching", retry=1000)
        try:
            while True:
                ready.clear()
                if ctx.auth.lookup(token) is None:
                    yield SSEvent(event="revoked", event_id=str(watcher.position),
                                  data=json.dumps({"kind": "revoked",
                                                   "resume": watcher.position}).encode())
                    return
                evs = watcher.poll(BATCH)
                gone = evs.pop() if evs and evs[-1].gone else None
                if evs:                         # the batch in one send
                    yield Encoded(b"".join([encoded(e, values) for e in evs]))
                if gone is not None:
                    yield SSEvent(event="gone", event_id=str(gone.oldest),
                                  data=json.dumps(gone.as_dict()).encode())
                    return
                if evs:
                    last_sent = time.monotonic()
                if watcher.dropped:
                    return
                # cut off a client that trails by max_lag and is not catching up (one
                # resuming from far back catches up: its lag shrinks batch by batch)
                lag = feed.head() - watcher.pos if watcher.pos is not None else 0
                behind, prev_lag = lag > settings.feed_max_lag and lag >= prev_lag, lag
                if behind:
                    yield SSEvent(event="cutoff", event_id=str(watcher.position),
                                  data=json.dumps({"kind": "cutoff",
                                                   "resume": watcher.position}).encode())
                    return
                if evs:
                    # the next batch after feed.coalesce: what comes meanwhile goes in
                    # one send (a send per stream per event was the worker's cost)
                    await asyncio.sleep(settings.feed_coalesce)
                    continue
                try:
                    await asyncio.wait_for(ready.wait(), timeout=min(1.0, heartbeat))
                except asyncio.TimeoutError:
                    pass
                if time.monotonic() - last_sent >= heartbeat:
                    last_sent = time.monotonic()
                    yield SSEvent(comment="heartbeat")
        finally:
            wake.remove(ready)
