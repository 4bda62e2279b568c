"""Awaiting the writer's flushed position from an event loop: one poller per process.

Under `fsync: always` a write is acknowledged only once the writer process has put its
log record on disk (design.md, invariant 7). The core can wait itself
(Store.wait_durable, what local programs do), but that blocks the thread, and a front
end's thread is the event loop of all its connections. So the front ends (through
bukt/writewait/durability.py: the HTTP app and the TCP sessions on asyncio) turn the
core's wait off and, after a write to a persisted bucket, ask FlushWaiters for a future
that completes once the writer's flushed position (store.ring_position()[2]) passes the
end of the record just appended (store.last_pos).

GROUP COMMIT. A process appends its records one after another, so its waiters form a
FIFO by position: one look at the flushed position resolves every waiter it has passed,
however many. While someone waits the loop watches the store's flush waker (a datagram
socket the writer sends to once a flush covers the position it was armed with, the
first waiter's: cext/flushwake.pxi), looks when it is readable and arms it again for
the next waiter; a timer looks too, every POLL_FIRST seconds after a look that resolved
someone, doubling up to POLL_LONGEST while nothing moves, for the timeouts and in case
a wake-up is lost. A hundred waiting requests cost one
reader and one timer, not a hundred. (A waiter whose position is below the head's,
which a handler that awaited between its write and its wait could make, is resolved
with the head: late, never early.)

POLICY. Waiting applies only while the writer publishes `fsync: always`
(Store.writer_info()["sync_always"]); sync_always() re-reads it at most every
POLICY_REFRESH seconds, so the check costs a clock read per write, and a change of
policy (a writer restarted with another `fsync`) reaches every face within that time.

A write the writer does not confirm within the timeout (store.durable_timeout unless
given) fails with WriterDown: it is applied in memory but not promised to be on disk.
"""
from __future__ import annotations

import asyncio
import collections
import time

from bukt.errors import WriterDown

POLL_FIRST = 0.0001
POLL_LONGEST = 0.002
POLICY_REFRESH = 0.1   # seconds between reads of the writer's fsync policy (POLICY)



def not_confirmed(store, pos, timeout):
    """The WriterDown of a write at ring position `pos` not confirmed within `timeout`:
    saying so when the writer has logged it and waits for replicas' acknowledgements
    (replication.min_acks, bukt/replica/acks.py)."""
    try:
        from bukt.replica.acks import AckTable
        info = store.writer_info()
        if info["ring_tail"] >= pos and info["alive"]:
            table = AckTable(store.name)
            try:
                n = table.min_acks
            finally:
                table.close()
            if n:
                return WriterDown(
                    f"fewer than replication.min_acks ({n}) replicas confirmed the write "
                    f"within {timeout:g} s; it is applied, and on the primary's disk")
    except (OSError, KeyError, ValueError):
        pass
    return WriterDown(f"no confirmation from the writer within {timeout:g} s that the "
                      "write reached the disk; it is applied in memory")

class FlushWaiters:
    def __init__(self, store, timeout: float | None = None):
        self.store = store
        self.timeout = timeout       # None: the store's durable_timeout, read per wait
        self._always, self._read_at = False, None   # the policy, and when it was read
        # (pos, deadline, timeout, future), by position
        self._waiters: collections.deque = collections.deque()
        self._delay = POLL_FIRST
        self._polling = None         # the loop the poll runs on, while it runs
        self._timer = None           # the poll's pending call_later handle
        self._notifier = None        # the store's FlushNotifier, from the first wait
        self._reading = None         # the loop that watches its eventfd

    def sync_always(self) -> bool:
        """Whether the writer publishes `fsync: always` (POLICY above)."""
        now = time.monotonic()
        if self._read_at is None or now - self._read_at >= POLICY_REFRESH:
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
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_later(self._delay, self._poll, loop)
            self._watch(loop, pos)
        fut = loop.create_future()
        self._waiters.append((pos, time.monotonic() + timeout, timeout, fut))
        return fut

    def __len__(self):
        return len(self._waiters)

    def _watch(self, loop, pos):
        """Have the writer wake `loop` once the flushed position reaches `pos`; True
        when it is there already."""
        if self._notifier is None:
            self._notifier = self.store.flush_waker()
        if self._reading is not loop:
            if self._reading is not None and not self._reading.is_closed():
                self._reading.remove_reader(self._notifier.fd)
            loop.add_reader(self._notifier.fd, self._notified, loop)
            self._reading = loop
        return self._notifier.arm(pos)

    def _notified(self, loop):
        self._notifier.clear()
        if self._polling is loop:
            self._resolve(loop)

    def _poll(self, loop):
        self._timer = None
        if self._polling is not loop:
            return                   # superseded by a poll on another loop
        if self._resolve(loop):
            self._timer = loop.call_later(self._delay, self._poll, loop)

    def _resolve(self, loop) -> bool:
        """Completes the waiters the flushed position has passed and those past their
        deadline, and arms the waker for the first one left; False when none is left
        (the poll then stops)."""
        while True:
            more = self._resolve_once(loop)
            if not more or not self._watch(loop, self._waiters[0][0]):
                return more

    def _resolve_once(self, loop) -> bool:
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
                    fut.set_exception(not_confirmed(self.store, pos, timeout))
            else:
                break
        if not waiters:
            self._polling = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._notifier is not None:
                self._notifier.disarm()
            return False
        self._delay = POLL_FIRST if progressed else min(self._delay * 2, POLL_LONGEST)
        return True

