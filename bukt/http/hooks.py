"""Where the writer process meets the HTTP front end: durability waits and health.

DURABILITY. With `fsync: always` a write is acknowledged only once its log record is on
disk. The core can wait itself (Store.sync_wait, the default for local programs), but
that wait blocks the thread, and a worker's thread is its event loop, serving every
other request of the worker. So the app turns sync_wait off and, after each write to a
persisted bucket, awaits the writer's flushed position passing the record it just
appended (Store.last_pos), polling on the loop between short sleeps. A writer that does
not confirm within Store.durable_timeout gives WriterDown -> 503 writer_down; the
write is then applied in memory but not promised to be on disk, as the problem says.

Every write path of the app calls `await durability.settle(bucket)` after the store
call returns and before the response is built.

HEALTH. `writer_state(store)`: a store with a `writer_state()` method answers for
itself; otherwise the header fields in store.stats() are read: writer_pid (0: no writer
has registered), writer_ready, and, when the core reports them, writer_heartbeat_ms and
writer_error. /healthz answers 503 with the reason unless the writer is alive and
flushing.
"""

import asyncio
import os
import time

from bukt.errors import WriterDown

HEARTBEAT_STALE_MS = 5000      # a writer silent this long is not flushing


class Durability:
    """Acknowledge at once: `fsync: everysec` and `no`, and stores without a ring."""

    async def settle(self, bucket):
        return None


class RingDurability(Durability):
    """`fsync: always`: await the writer's flushed position past this process's last
    record, without blocking the event loop."""

    def __init__(self, store, timeout=None):
        self.store = store
        self.timeout = timeout           # None: the store's durable_timeout, read each time
        self._persist = {}
        store.sync_wait = False          # the core's wait would block the loop

    async def settle(self, bucket):
        store = self.store
        pos = store.last_pos
        if store.ring_position()[2] >= pos or not self._persisted(bucket):
            return
        await wait_until(lambda: store.ring_position()[2] >= pos,
                         self.timeout or getattr(store, "durable_timeout", 5.0))

    def _persisted(self, bucket):
        try:
            return self.store.bucket_info(bucket)["persist"]
        except Exception:        # dropped meanwhile: its drop record is what we wait for
            return True


def durability_for(store, fsync):
    """The Durability an app over `store` needs under the fsync policy: the segment's
    own word (store.sync_always) when the core gives one, else the configuration's."""
    always = getattr(store, "sync_always", None)
    if always is None:
        always = fsync == "always"
    if always and hasattr(store, "ring_position") and hasattr(store, "last_pos"):
        return RingDurability(store)
    return Durability()


async def wait_until(predicate, timeout, first=0.0002, longest=0.005):
    """Await `predicate()` becoming true, polling with a growing sleep on the event loop;
    WriterDown after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = first
    while not predicate():
        if time.monotonic() >= deadline:
            raise WriterDown(f"the write was not confirmed on disk within {timeout} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, longest)


def writer_state(store, stats=None):
    """{"alive", "flushing", "reason", "pid"} of the writer, or None when the store
    says nothing about one (the reference model)."""
    report = getattr(store, "writer_state", None)
    if callable(report):
        return report()
    stats = store.stats() if stats is None else stats
    if "writer_pid" not in stats:
        return None
    pid = int(stats["writer_pid"] or 0)
    state = {"pid": pid, "alive": bool(pid) and _alive(pid),
             "flushing": bool(stats.get("writer_ready")), "reason": ""}
    heartbeat = stats.get("writer_heartbeat_ms")
    if not pid:
        state["reason"] = "no writer process has attached (start `bukt writer`)"
    elif not state["alive"]:
        state["reason"] = f"writer pid {pid} is gone"
    elif stats.get("writer_error"):
        state.update(flushing=False, reason=f"writer error: {stats['writer_error']}")
    elif not state["flushing"]:
        state["reason"] = "writer is not ready (recovering?)"
    elif heartbeat and time.time() * 1000 - heartbeat > HEARTBEAT_STALE_MS:
        state.update(flushing=False, reason=f"writer heartbeat is "
                     f"{time.time() - heartbeat / 1000:.1f} s old")
    return state


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
