"""Spinning before a sleep, only while it pays: the rule shared by the writer's gather
(GATHER SPIN in bukt/writer/process.py) and the TCP worker's busy poll (BUSY POLL in
bukt/tcp/_epoll.pyx).

On a virtual machine a process that sleeps and is woken costs tens of microseconds
on each side (the idle vCPU halts, and the wake-up is an interrupt into the
hypervisor), often more than the wait itself when the next event is a round trip
away. Both places therefore yield the CPU in a loop for a bounded time before they
sleep (sched_yield: a task runnable on that CPU runs first). The TCP worker also
gives up early after SLOW_YIELDS "slow" yields (another task ran meanwhile: the CPU
is wanted elsewhere); the gather does not, as the tasks it yields to are mostly the
producers it waits for. Whether to spin at all is this credit: a spin that saw its
event earns one, up to CREDIT_MAX; one that did not costs two; without credit only
every PROBE-th wait spins, to notice when spinning would pay again. An idle or lightly
loaded process therefore sleeps at once, and spinning costs CPU only while it is
saving wake-ups. (RocksDB's write thread yields before it blocks the same way:
write_thread_max_yield_usec, write_thread_slow_yield_usec.)
"""

CREDIT_MAX = 8          # spins that paid, counted up to this
PROBE = 64              # without credit, every PROBE-th wait spins anyway
SLOW_YIELD_S = 3e-6     # busy poll: a sched_yield that took longer (another task ran)
SLOW_YIELDS = 3         # ... and this many end the poll


class SpinCredit:
    """How long the next wait may spin: `limit` seconds, or 0 for none."""

    def __init__(self, limit: float):
        self.limit = limit              # seconds; 0: never spin
        self.credit = CREDIT_MAX
        self.waits = 0

    def next(self) -> float:
        if not self.limit:
            return 0.0
        self.waits += 1
        if self.credit > 0 or self.waits % PROBE == 0:
            return self.limit
        return 0.0

    def paid(self, ok: bool) -> None:
        """The spin just taken saw its event (ok), or ran out or gave way."""
        self.credit = min(self.credit + 1, CREDIT_MAX) if ok else max(self.credit - 2, 0)
