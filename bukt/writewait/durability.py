"""Durability waits for `fsync: always`, without blocking a face's event loop: the one
implementation every face uses (the TCP workers on asyncio and on epoll, the HTTP app).

Under `fsync: always` a write is acknowledged only once the writer process has put its
log record on disk (design.md, invariant 7). The core can wait itself (Store.sync_wait,
the default for local programs), but that blocks the thread, and a worker's thread is
its event loop. So RingDurability turns the core's wait off and, after each write to a
persisted bucket, answers what the face must wait for before acknowledging it:

- wait(persist): None (acknowledge now) or a future of the process's FlushWaiters that
  completes once the writer's flushed position passes the end of the record just
  appended (one poller for every waiting response; bukt/writewait/flushwait.py has the
  group commit, the timeout and the policy's refresh). The TCP connection sends its
  response only then, reading and answering meanwhile (bukt/tcp/connection.py,
  "deferred"); the HTTP app awaits it (bukt/http/ringwait.py, `settle`).
- position(persist): None, or the ring position itself, for the epoll loop
  (bukt/tcp/_epoll.pyx), which keeps its own FIFO of waiting responses and polls the
  flushed position the same way (RingPositions).

A write the writer does not confirm within `timeout` (None: the store's
durable_timeout, read at each wait) fails with WriterDown: applied in memory, not
promised to be on disk.
"""
from __future__ import annotations

from bukt.writewait.flushwait import FlushWaiters

# The writer beats every 100 ms (Store.writer_publish); this long without a beat, a
# writer that is still alive counts as hung (/healthz, `bukt status`).
HEARTBEAT_STALE_MS = 2000


def fsync_lag_seconds(w, now_ms):
    """How long the oldest change not yet on disk has waited, from writer_info() `w`:
    0 when none waits (the flushed position has reached the ring's head), else the
    time since the writer's last fsync (the oldest waiting change came after the
    records that fsync covered, give or take one drain of the ring). None when the
    writer does not fsync (fsync: no, the only policy that publishes neither
    sync_always nor a lag limit) or has not said yet. An idle service reads 0, so an
    alert on it means changes are waiting for a disk that does not answer."""
    if not (w.get("sync_always") or w.get("lag_limit_ms")):
        return None
    if w.get("flushed_pos", 0) >= w.get("ring_head", 0):
        return 0.0
    since = w.get("last_fsync_ms") or w.get("log_current_ms")
    return max(0.0, (now_ms - since) / 1000) if since else None


class RingDurability:
    def __init__(self, store, timeout: float | None = None):
        self.store = store
        self._timeout = timeout
        store.sync_wait = False  # the core's own wait would block the loop
        self._waiters = FlushWaiters(store, timeout)

    @property
    def timeout(self) -> float:
        """Seconds a write waits for the writer's confirmation before WriterDown."""
        if self._timeout is not None:
            return self._timeout
        return getattr(self.store, "durable_timeout", 5.0)

    def sync_always(self) -> bool:
        """The writer's policy, as published in the segment's header."""
        return self._waiters.sync_always()

    def position(self, persist: bool):
        """None (acknowledge now), or the ring position the writer's flushed position
        must reach before this process's last write may be acknowledged."""
        if not persist or not self.sync_always():
            return None
        pos = self.store.last_pos
        return None if self.store.ring_position()[2] >= pos else pos

    def wait(self, persist: bool):
        """None (acknowledge now) or a future that completes when this process's last
        write is durable (FlushWaiters.wait looks at the flushed position itself)."""
        if not persist or not self.sync_always():
            return None
        return self._waiters.wait(self.store.last_pos)

    def __call__(self, session):
        """The TCP session's hook (bukt/tcp/session.py): what its last write waits for."""
        return self.wait(session.persist)

    def wait_for(self, pos):
        """What the hook returns for a response that waits for ring position `pos`:
        a face whose replies have no request ids (RESP) holds every reply behind a
        waiting write this way."""
        return self._waiters.wait(pos)


class RingPositions(RingDurability):
    """The same policy for the epoll loop (bukt/tcp/_epoll.pyx), which keeps its own FIFO of
    waiting responses: the hook returns the position to wait for, not a future."""

    def __call__(self, session):
        return self.position(session.persist)

    def wait_for(self, pos):
        return pos
