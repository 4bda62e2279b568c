"""Durability waits for `fsync: always`, without blocking the worker's event loop.

Under `fsync: always` a write is acknowledged only once the writer process has put its
log record on disk (design.md, invariant 7). The worker turns the core's blocking wait
off (Store.sync_wait) and, after each write to a persisted bucket, asks this hook for
an awaitable that completes once the writer's flushed position passes the end of the
record just appended: on asyncio a future from the process's FlushWaiters (one poller
for every waiting response; bukt/writewait/flushwait.py has the group commit and the timeout),
on the epoll loop the position itself, which that loop polls the same way. The
connection sends that response only then, and goes on reading and answering meanwhile
(bukt/tcp/connection.py, "deferred").
"""
from __future__ import annotations

from bukt.writewait.flushwait import FlushWaiters

POLICY_REFRESH = 0.1  # seconds between reads of the writer's fsync policy from the header


class RingDurability:
    def __init__(self, store, timeout: float | None = None):
        self.store = store
        self.timeout = timeout if timeout is not None else getattr(store, "durable_timeout", 5.0)
        store.sync_wait = False  # the core's own wait would block the loop
        self._waiters = FlushWaiters(store, self.timeout, POLICY_REFRESH)

    def sync_always(self) -> bool:
        """The writer's policy, as published in the segment's header."""
        return self._waiters.sync_always()

    def position(self, session):
        """None (acknowledge now), or the ring position the writer's flushed position
        must reach before the session's last write may be acknowledged."""
        if not session.persist or not self.sync_always():
            return None
        pos = self.store.last_pos
        return None if self.store.ring_position()[2] >= pos else pos

    def __call__(self, session):
        """None (acknowledge now) or a future that completes when the session's last
        write is durable (FlushWaiters.wait looks at the flushed position itself)."""
        if not session.persist or not self.sync_always():
            return None
        return self._waiters.wait(self.store.last_pos)

    def wait_for(self, pos):
        """What the hook returns for a response that waits for ring position `pos`:
        a faces whose replies have no request ids (RESP) holds every reply behind a
        waiting write this way."""
        return self._waiters.wait(pos)


class RingPositions(RingDurability):
    """The same policy for the epoll loop (bukt/tcp/_epoll.pyx), which keeps its own FIFO of
    waiting responses: the hook returns the position to wait for, not a future."""

    __call__ = RingDurability.position

    def wait_for(self, pos):
        return pos
