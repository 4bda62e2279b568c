"""Durability waits for `fsync: always`, without blocking the worker's event loop.

Under `fsync: always` a write is acknowledged only once the writer process has put its
log record on disk (design.md, invariant 7). The core can wait itself (Store.sync_wait),
but that blocks the thread, and a worker's thread is the event loop of all its
connections. So the worker turns sync_wait off and, after each write to a persisted
bucket, the session asks this hook for an awaitable that completes once the writer's
flushed position (store.ring_position()[2]) passes the end of the record just appended
(store.last_pos). The connection sends that response only then, and goes on reading and
answering meanwhile (bukt/tcp/connection.py, "deferred").

GROUP COMMIT. One worker's records are appended in order, so its waiters form a FIFO by
position: a single poll of the flushed position resolves every waiter it has passed,
however many. The poll runs only while someone waits, with a short backoff (0.1 ms
doubling to 2 ms): an fsync takes longer than that, so the added latency is small.

A write the writer does not confirm within store.durable_timeout seconds is answered
WRITER_DOWN: it is applied in memory but not promised to be on disk.
"""
from __future__ import annotations

import asyncio
import collections
import time

from .. import errors

POLL_FIRST = 0.0001
POLL_LONGEST = 0.002
POLICY_REFRESH = 0.1  # seconds between reads of the writer's fsync policy from the header


class RingDurability:
    def __init__(self, store, timeout: float | None = None):
        self.store = store
        self.timeout = timeout if timeout is not None else getattr(store, "durable_timeout", 5.0)
        store.sync_wait = False  # the core's own wait would block the loop
        self._waiters: collections.deque = collections.deque()  # (pos, deadline, future)
        self._always = False
        self._checked = 0.0
        self._delay = POLL_FIRST
        self._polling = False

    def sync_always(self) -> bool:
        """The writer's policy, as published in the segment's header."""
        now = time.monotonic()
        if now - self._checked > POLICY_REFRESH:
            self._checked = now
            try:
                self._always = bool(self.store.writer_info().get("sync_always"))
            except Exception:  # noqa: BLE001 - a store without a writer header
                self._always = False
        return self._always

    def position(self, session):
        """None (acknowledge now), or the ring position the writer's flushed position
        must reach before the session's last write may be acknowledged."""
        if not session.persist or not self.sync_always():
            return None
        pos = self.store.last_pos
        return None if self.store.ring_position()[2] >= pos else pos

    def __call__(self, session):
        """None (acknowledge now) or a future that completes when the session's last
        write is durable."""
        pos = self.position(session)
        if pos is None:
            return None
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._waiters.append((pos, time.monotonic() + self.timeout, fut))
        if not self._polling:
            self._polling = True
            self._delay = POLL_FIRST
            loop.call_later(self._delay, self._poll, loop)
        return fut

    def _poll(self, loop):
        flushed = self.store.ring_position()[2]
        waiters = self._waiters
        now = time.monotonic()
        progressed = False
        while waiters:
            pos, deadline, fut = waiters[0]
            if pos <= flushed:
                waiters.popleft()
                progressed = True
                if not fut.done():
                    fut.set_result(None)
            elif now >= deadline:
                waiters.popleft()
                if not fut.done():
                    fut.set_exception(errors.WriterDown(
                        f"the writer did not confirm the write on disk within "
                        f"{self.timeout:g} s; it is applied in memory"))
            else:
                break
        if not waiters:
            self._polling = False
            return
        self._delay = POLL_FIRST if progressed else min(self._delay * 2, POLL_LONGEST)
        loop.call_later(self._delay, self._poll, loop)


class RingPositions(RingDurability):
    """The same policy for the epoll loop (bukt/_epoll.pyx), which keeps its own FIFO of
    waiting responses: the hook returns the position to wait for, not a future."""

    __call__ = RingDurability.position
