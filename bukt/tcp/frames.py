"""What the TCP face's frame loops and its session share: the answers a command can give
besides a response frame, and the frames built for failures. Both sides import this
module, and neither imports the other for it: the session (bukt/tcp/session.py) returns
PARK and Deferred, the frame loops (bukt/tcp/_wire.pyx, bukt/tcp/_epoll.pyx,
bukt/tcp/connection.py) recognise them.
"""
from __future__ import annotations

import asyncio
import logging
import time

from bukt import protocol as P
from bukt.writewait.ringroom import ring_full

log = logging.getLogger("bukt.tcp")


class _Park:
    """The answer of a request that must wait for room in the change ring (RING FULL in
    bukt/tcp/session.py): the loop keeps the frame and tries it again."""

    __slots__ = ()

    def __repr__(self):
        return "PARK"


PARK = _Park()


class Deferred:
    """A response that may be sent only once `wait` (an awaitable, or a ring position on
    the epoll loop) completes; or, `response` None, a WatchWait whose answer is the
    response."""

    __slots__ = ("response", "wait", "request_id")

    def __init__(self, response: bytes, wait, request_id: int):
        self.response, self.wait, self.request_id = response, wait, request_id


class WatchWait:
    """A WATCH that found no events and may wait `wait` seconds for them (the long
    poll: bukt/tcp/session.py _watch). Its loop asks `answer()` again whenever the
    feed moves (the feed's Waker: bukt/feed.py, WAITING) and `answer(final=True)` at
    the deadline; nothing blocks. On asyncio the Deferred's awaitable is the WatchWait
    itself: awaiting it gives the response."""

    __slots__ = ("session", "watcher", "request_id", "max", "deadline")

    def __init__(self, session, watcher, request_id, max_events, wait):
        self.session, self.watcher, self.request_id = session, watcher, request_id
        self.max = max_events
        self.deadline = time.monotonic() + wait

    def answer(self, final=False):
        """The response once there are events (or a gone), or `final`; else None."""
        evs = self.watcher.poll(self.max)
        if evs or final or self.watcher.dropped:
            return self.session.watch_answer(self.request_id, self.watcher, evs)
        return None

    def __await__(self):
        return self._wait().__await__()

    async def _wait(self):
        moved = asyncio.Event()
        wake = self.watcher.feed.loop_wake(asyncio.get_running_loop())
        wake.add(moved)
        try:
            while True:
                moved.clear()
                left = self.deadline - time.monotonic()
                r = self.answer(final=left <= 0)
                if r is not None:
                    return r
                try:
                    await asyncio.wait_for(moved.wait(), left)
                except asyncio.TimeoutError:
                    pass
        finally:
            wake.remove(moved)
# Why a frame loop stopped (bukt/tcp/_wire.pyx's W_* are the same numbers, in C).
STOP_PARTIAL, STOP_FATAL, STOP_QUIT, STOP_DEFERRED, STOP_FULL, STOP_PARK = range(6)


def drive(parse, handle, bad, on_bad, buf, size, pos, session, out, out_limit):
    """The frame loop of both protocols in Python (connection.run_py, the binary one;
    resp_session.run, the Redis one): handles the whole requests of buf[pos:size] into
    `out` until a stop, and returns (pos, why), pos the first byte not consumed.

    parse(buf, pos, size) -> (request, end) for the whole request at pos, or None when
    it has not all arrived; it raises `bad` for one that cannot be read (then
    on_bad(exc), if given, is its answer, and the loop stops with STOP_FATAL). An empty
    request (RESP's empty inline line) is skipped. handle(request) -> its answer: bytes,
    a Deferred, or PARK.

    The per-request stops are here, once: PARK (the request stays), a Deferred (the
    loop must look at flow control), the session closing (QUIT), and `out_limit` bytes
    of answers gathered. The loop calls the protocol's own parse and dispatch and
    nothing more per request: a step function wrapping the two (one call more a
    request) measured 4-5% more CPU per pipelined RESP GET (bench/frameloop.py)."""
    out_bytes = 0
    session.recheck()
    while pos < size:
        try:
            got = parse(buf, pos, size)
        except bad as exc:
            if on_bad is not None:
                out.append(on_bad(exc))
            return pos, STOP_FATAL
        if got is None:
            return pos, STOP_PARTIAL
        request, end = got
        if not request:
            pos = end
            continue
        result = handle(request)
        if result is PARK:
            return pos, STOP_PARK
        pos = end
        out.append(result)
        if result.__class__ is not bytes:
            return pos, STOP_DEFERRED
        if session.closing:
            return pos, STOP_QUIT
        out_bytes += len(result)
        if out_bytes >= out_limit:
            return pos, STOP_FULL
    return pos, STOP_PARTIAL


def internal_error(command: int, rid: int, exc: BaseException) -> bytes:
    """The ERROR frame of a command that failed in a way the protocol has no status for."""
    log.exception("command 0x%02x failed", command, exc_info=exc)
    return P.frame(P.Status.ERROR, rid, f"internal error: {type(exc).__name__}: {exc}"
                   .encode("utf-8", "replace"))


def ring_full_frame(buf, pos, wait):
    """The RING_FULL answer to the frame at buf[pos:] after `wait` seconds parked."""
    rid = int.from_bytes(buf[pos + 5:pos + P.HEADER_SIZE], "big")
    return P.encode_error(rid, ring_full(wait))
