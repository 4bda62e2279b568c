"""Where the writer issue plugs into the HTTP front end: durability waits and writer
health. Until it lands, writes are acknowledged once they are in the segment (write
through) and health reports the writer as "not reported".

DURABILITY. With `fsync: always` a write is acknowledged only once its log record is on
disk. The wait must not block the worker's other requests: each worker runs an event
loop, so `settle()` awaits (it polls with `wait_until`, which sleeps on the loop between
looks, or awaits a future the writer's notification resolves) rather than blocking.
Every write path of the app calls `await durability.settle(bucket)` after the store
call returns and before the response is built; a WriterDown or DiskError raised there
becomes a 503 problem like any other.

HEALTH. `writer_state(store)` asks the store: a store (or core) with a
`writer_state()` method returns a dict {"alive": bool, "flushing": bool, "reason": str,
...}; /healthz answers 503 with the reason when either is false.
"""

import asyncio
import time

from bukt.errors import WriterDown


class Durability:
    """Acknowledge at once: the policy until the writer exists, and for `fsync: no`."""

    async def settle(self, bucket):
        return None


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


def writer_state(store):
    """The writer's state as the store reports it, or None when it reports none."""
    report = getattr(store, "writer_state", None)
    return report() if callable(report) else None
