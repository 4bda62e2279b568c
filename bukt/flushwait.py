"""Awaiting the writer's flushed position from an event loop: one poller per process.

Under `fsync: always` a write is acknowledged only once the writer process has put its
log record on disk (design.md, invariant 7). The core can wait itself
(Store.wait_durable, what local programs do), but that blocks the thread, and a front
end's thread is the event loop of all its connections. So the front ends (the HTTP app,
bukt/http/hooks.py; the TCP sessions on asyncio, bukt/tcp/durability.py) turn the
core's wait off and, after a write to a persisted bucket, ask FlushWaiters for a future
that completes once the writer's flushed position (store.ring_position()[2]) passes the
end of the record just appended (store.last_pos).

GROUP COMMIT. A process appends its records one after another, so its waiters form a
FIFO by position: one poll of the flushed position resolves every waiter it has passed,
however many. The poll runs only while someone waits, every POLL_FIRST seconds after a
poll that resolved someone, doubling up to POLL_LONGEST while nothing moves: an fsync
takes longer than the first step, so the added latency is small, and a hundred waiting
requests cost one timer, not a hundred. (A waiter whose position is below the head's,
which a handler that awaited between its write and its wait could make, is resolved
with the head: late, never early.)

POLICY. Waiting applies only while the writer publishes `fsync: always`
(Store.writer_info()["sync_always"]); sync_always() re-reads it at most every
`policy_refresh` seconds, so the check costs a clock read per write.

A write the writer does not confirm within the timeout (store.durable_timeout unless
given) fails with WriterDown: it is applied in memory but not promised to be on disk.
"""
from __future__ import annotations

import asyncio
import collections
import time

from .errors import WriterDown

POLL_FIRST = 0.0001
POLL_LONGEST = 0.002


class FlushWaiters:
    def __init__(self, store, timeout: float | None = None, policy_refresh: float = 0.1):
        self.store = store
        self.timeout = timeout       # None: the store's durable_timeout, read per wait
        self.policy_refresh = policy_refresh
        self._always, self._read_at = False, None   # the policy, and when it was read
        # (pos, deadline, timeout, future), by position
        self._waiters: collections.deque = collections.deque()
        self._delay = POLL_FIRST
        self._polling = None         # the loop the poll runs on, while it runs

    def sync_always(self) -> bool:
        """Whether the writer publishes `fsync: always` (POLICY above)."""
        now = time.monotonic()
        if self._read_at is None or now - self._read_at >= self.policy_refresh:
            self._read_at = now
            try:
                self._always = bool(self.store.writer_info().get("sync_always"))
            except Exception:  # noqa: BLE001 - a store without a writer header
                self._always = False
        return self._always

    def wait(self, pos: int):
        """None when the records below `pos` are flushed already, else a future that
        completes when they are (WriterDown after the timeout). On the running loop."""
        if self.store.ring_position()[2] >= pos:
            return None
        timeout = self.timeout if self.timeout is not None else \
            getattr(self.store, "durable_timeout", 5.0)
        loop = asyncio.get_running_loop()
        if self._polling is not loop:
            # The first waiter, or a new loop (a test client may run each request on
            # its own): waiters of a loop that is gone will never be awaited.
            self._waiters.clear()
            self._polling = loop
            self._delay = POLL_FIRST
            loop.call_later(self._delay, self._poll, loop)
        fut = loop.create_future()
        self._waiters.append((pos, time.monotonic() + timeout, timeout, fut))
        return fut

    def __len__(self):
        return len(self._waiters)

    def _poll(self, loop):
        if self._polling is not loop:
            return                   # superseded by a poll on another loop
        flushed = self.store.ring_position()[2]
        waiters = self._waiters
        now = time.monotonic()
        progressed = False
        while waiters:
            pos, deadline, timeout, fut = waiters[0]
            if pos <= flushed:
                waiters.popleft()
                progressed = True
                if not fut.done():
                    fut.set_result(None)
            elif now >= deadline:
                waiters.popleft()
                if not fut.done():
                    fut.set_exception(WriterDown(
                        f"no confirmation from the writer within {timeout:g} s that the "
                        "write reached the disk; it is applied in memory"))
            else:
                break
        if not waiters:
            self._polling = None
            return
        self._delay = POLL_FIRST if progressed else min(self._delay * 2, POLL_LONGEST)
        loop.call_later(self._delay, self._poll, loop)

