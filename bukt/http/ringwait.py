"""Where the writer process meets the HTTP front end: ring room, durability waits, health.

RING ROOM. A write to a persisted bucket needs room in the change ring, which the writer
drains. The core would wait for it (Store.ring_wait), blocking the worker's event loop
and with it every other request of the worker, GETs included, for up to
limits.ring_wait_ms. So the app sets ring_wait to 0 and waits on the loop instead
(bukt/writewait/ringroom.py says why, what may be tried again, and how the wait keeps its claim
on the ring): `await ring.write(op, *args)` calls a RETRY_SAFE store method, and while
it raises RingFull tries it again every RETRY seconds between asyncio sleeps, until
the configured wait has passed; then RingFull -> 503 ring_full with Retry-After.
`await ring.write_all(room, op, *args)` is for ROOM_FIRST calls (several records):
it waits the same way until the ring has `room` bytes for it, then calls op once.
Every write path of the app goes through one of them; the fast path (fastpath.py)
makes the first attempt itself and calls `ring.retry` only after a RingFull.

DURABILITY. With `fsync: always` a write is acknowledged only once its log record is on
disk. The core can wait itself (Store.sync_wait, the default for local programs), but
that wait blocks the thread, and a worker's thread is its event loop, serving every
other request of the worker. So the app turns sync_wait off and, after each write to a
persisted bucket, awaits the writer's flushed position passing the record it just
appended (Store.last_pos): bukt/writewait/durability.py's RingDurability, the wait the
TCP workers use too (a future of the worker's FlushWaiters, one poller on the loop for
every request that waits); RingSettle is its glue here. A writer
that does not confirm within Store.durable_timeout gives WriterDown -> 503
writer_down; the write is then applied in memory but not promised to be on disk, as
the problem says.

Every write path of the app calls `await durability.settle(bucket)` after the store
call returns and before the response is built.

HEALTH. `writer_state(store)` reads what the writer publishes in the segment header
(Store.writer_info(): pid, alive, ready, heartbeat, error). /healthz answers 503 with
the reason unless the writer is alive, ready, without error and beating.
"""

import asyncio
import time

from bukt.errors import RingFull
from bukt.writewait.durability import HEARTBEAT_STALE_MS, RingDurability
from bukt.writewait.ringroom import RETRY, RoomWait, has_room, retry_safe, ring_full

_AGAIN = object()              # a step of RingRoom's wait that found no room yet


class Durability:
    """Acknowledge at once: a store with no change ring (the reference model)."""

    async def settle(self, bucket):
        return None


class RingSettle(Durability):
    """The falcon-facing glue of bukt/writewait/durability.py's RingDurability, the wait
    every face shares: await the writer's flushed position past this process's last
    record when the segment says `fsync: always`, without blocking the event loop.

    FAST PATH: the policy is not always (a clock read), or the flushed position is
    already past our record (one read of the header). SLOW PATH: a future of the
    worker's FlushWaiters."""

    def __init__(self, store, timeout=None):
        self.store = store
        self.ring = RingDurability(store, timeout)

    def sync_always(self):
        return self.ring.sync_always()

    async def settle(self, bucket):
        if not self.ring.sync_always():
            return
        flushed = self.ring.wait(persisted(self.store, bucket))   # None: flushed already
        if flushed is not None:
            await flushed


def persisted(store, bucket):
    """Whether the bucket's writes are logged, so append to the change ring and may wait
    for the writer; a bucket dropped meanwhile counts as logged (its drop record is)."""
    try:
        return store.bucket_info(bucket)["persist"]
    except Exception:
        return True


class RingRoom:
    """Waits for room in the change ring on the event loop (RING ROOM above).

    FAST PATH: the store call finds room (or the store has no ring): nothing but a
    try around it. SLOW PATH: RingFull, tried again from the loop."""

    def __init__(self, store):
        self.store = store
        # the configured wait (from the segment); None: a store without a ring, or one
        # whose claim API is missing, which waits (or not) by itself
        self.wait = getattr(store, "ring_wait", None) \
            if hasattr(store, "ring_claim_room") else None
        if self.wait is not None:
            store.ring_wait = 0.0
            self.ring_size = store.limits["ring_size"]

    async def write(self, op, *args, **kwargs):
        """op(*args, **kwargs), a RETRY_SAFE store method (bukt/writewait/ringroom.py), tried
        again while the ring is full, up to the configured wait."""
        try:
            return op(*args, **kwargs)
        except RingFull as exc:
            full = exc
        return await self.retry(full, op, *args, **kwargs)

    async def retry(self, full, op, *args, **kwargs):
        """The SLOW PATH of write(), for a caller that made the first attempt itself
        (the fast path, where a coroutine per request costs ~0.5 us): `full` is the
        RingFull it raised."""
        if self.wait is None or not retry_safe(op.__name__, len(args)):
            raise full
        wait = RoomWait(self.store, time.monotonic(), full.room)

        def step():
            try:
                return wait.attempt(op, *args, **kwargs)
            except RingFull as exc:
                wait.room = exc.room or wait.room
                return _AGAIN
        return await self._waiting(wait, step)

    async def write_all(self, room, op, *args, **kwargs):
        """op(*args, **kwargs), a ROOM_FIRST call, once the ring has `room` bytes for
        it (RingFull after the configured wait; room 0: at once); a RingFull part-way
        is final."""
        if self.wait is None or not room or has_room(self.store, room, self.ring_size, 0):
            return op(*args, **kwargs)
        wait = RoomWait(self.store, time.monotonic(), min(room, self.ring_size // 2))

        def step():
            if has_room(self.store, room, self.ring_size, wait.ticket):
                return wait.attempt(op, *args, **kwargs)
            return _AGAIN
        return await self._waiting(wait, step)

    async def _waiting(self, wait, step):
        """What both waits share: every RETRY seconds renew the claim (wait.poll) and
        call step(), until it answers something other than _AGAIN; RingFull once the
        configured wait has passed. The claim is given up however it ends."""
        try:
            while True:
                now = time.monotonic()
                if now - wait.start >= self.wait:
                    raise self._full()
                wait.poll(now)
                await asyncio.sleep(RETRY)
                result = step()
                if result is not _AGAIN:
                    return result
        finally:
            wait.end()

    def _full(self):
        return ring_full(self.wait)


def durability_for(store):
    if hasattr(store, "ring_position") and hasattr(store, "writer_info"):
        return RingSettle(store)
    return Durability()


def writer_state(store):
    """{"alive", "flushing", "reason", ...} of the writer, or None when the store has
    no writer to report on (the reference model)."""
    report = getattr(store, "writer_state", None)
    if callable(report):
        return report()
    info = getattr(store, "writer_info", None)
    if not callable(info):
        return None
    w = info()
    pid, now_ms = w.get("pid", 0), time.time() * 1000
    state = {"pid": pid, "alive": bool(w.get("alive")), "flushing": bool(w.get("ready")),
             "sync_always": bool(w.get("sync_always")), "reason": ""}
    heartbeat = w.get("heartbeat_ms") or 0
    if not pid:
        state["reason"] = "no writer process has attached (start `bukt writer`)"
    elif not state["alive"]:
        state["reason"] = f"writer pid {pid} is gone"
    elif w.get("error"):
        state.update(flushing=False, reason=f"writer error: {w['error']}")
    elif not state["flushing"]:
        state["reason"] = "writer is not ready (recovering?)"
    elif heartbeat and now_ms - heartbeat > HEARTBEAT_STALE_MS:
        state.update(flushing=False,
                     reason=f"writer heartbeat is {(now_ms - heartbeat) / 1000:.1f} s old")
    return state
