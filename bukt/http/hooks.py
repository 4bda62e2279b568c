"""Where the writer process meets the HTTP front end: durability waits and health.

DURABILITY. With `fsync: always` a write is acknowledged only once its log record is on
disk. The core can wait itself (Store.sync_wait, the default for local programs), but
that wait blocks the thread, and a worker's thread is its event loop, serving every
other request of the worker. So the app turns sync_wait off and, after each write to a
persisted bucket, awaits the writer's flushed position passing the record it just
appended (Store.last_pos): a future of the worker's FlushWaiters (bukt/flushwait.py),
one poller on the loop for every request that waits, as the TCP workers do. A writer that does
not confirm within Store.durable_timeout gives WriterDown -> 503 writer_down; the
write is then applied in memory but not promised to be on disk, as the problem says.

Every write path of the app calls `await durability.settle(bucket)` after the store
call returns and before the response is built.

HEALTH. `writer_state(store)` reads what the writer publishes in the segment header
(Store.writer_info(): pid, alive, ready, heartbeat, error). /healthz answers 503 with
the reason unless the writer is alive, ready, without error and beating.
"""

import time

from bukt.flushwait import FlushWaiters

HEARTBEAT_STALE_MS = 2000      # the writer beats every 100 ms; 2 s of silence = hung
POLICY_REFRESH_S = 1.0         # how often the segment's fsync policy is re-read


class Durability:
    """Acknowledge at once: a store with no change ring (the reference model)."""

    async def settle(self, bucket):
        return None


class RingDurability(Durability):
    """Await the writer's flushed position past this process's last record when the
    segment says `fsync: always` (writer_info()["sync_always"], published by the
    writer), without blocking the event loop.

    FAST PATH: the flushed position is already past our record (or the policy is not
    always): one read of the header. SLOW PATH: a future of the worker's
    FlushWaiters."""

    def __init__(self, store, timeout=None):
        self.store = store
        self.timeout = timeout           # None: the store's durable_timeout, read each time
        self._waiters = FlushWaiters(store, timeout)
        self._always, self._read_at = False, -POLICY_REFRESH_S
        store.sync_wait = False          # the core's wait would block the loop

    def sync_always(self):
        now = time.monotonic()
        if now - self._read_at >= POLICY_REFRESH_S:
            self._always, self._read_at = bool(self.store.writer_info()["sync_always"]), now
        return self._always

    async def settle(self, bucket):
        store = self.store
        pos = store.last_pos
        if store.ring_position()[2] >= pos or not self.sync_always() \
                or not self._persisted(bucket):
            return
        flushed = self._waiters.wait(pos)
        if flushed is not None:
            await flushed

    def _persisted(self, bucket):
        try:
            return self.store.bucket_info(bucket)["persist"]
        except Exception:        # dropped meanwhile: its drop record is what we wait for
            return True


def durability_for(store):
    if hasattr(store, "ring_position") and hasattr(store, "writer_info"):
        return RingDurability(store)
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
