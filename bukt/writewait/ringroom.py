"""Room in the change ring for a server worker, which must not wait inside the core.

WHY. A write to a persisted bucket appends a record to the change ring, which the
writer process drains; while the ring is full the core waits for room, up to
Store.ring_wait (limits.ring_wait_ms), then raises RingFull (cext/ring.pxi). That wait
blocks the thread, and a worker's thread is the event loop of all its requests: one
write that found the ring full would stall every other request of the worker, reads
included, though reads need nothing from the writer. So every front end sets its
Store's ring_wait to 0 (a write that finds no room raises RingFull at once), keeps the
configured wait for itself, and tries the request again from its loop every RETRY
seconds until that wait has passed; then it answers ring full. TCP parks the
connection (bukt/tcp/connection.py, bukt/tcp/_epoll.pyx), HTTP awaits (bukt/http/ringwait.py,
RingRoom).

WHAT MAY BE TRIED AGAIN. Only a request whose failed attempt changed nothing. The core
reserves a write's record under the stripe lock before it changes the table, and a
reservation that fails undoes what it prepared (cext/table.pxi do_set, do_touch,
do_delete_at): so a call that appends at most one record raises RingFull with nothing of
it applied (RETRY_SAFE, by the Store and Bucket method names). A call that appends
several records (an mset, a delete of several keys, a flush, a bucket drop) may fail
after some of them, and a bucket created with its first token is two; these wait
before they start until the ring has room for all they append (ROOM_FIRST), then run
once, and a RingFull part-way is final, as it is for a local attach.

FAIRNESS. A request that tries again every millisecond is still a waiter in the ring:
without a claim, producers of small records elsewhere can take every bit of room the
writer frees before the next try, and a large record is starved into RingFull although
the ring keeps moving. RoomWait takes part in the core's claim (cext/ring.pxi, THE CLAIM
and THE CLAIM FROM AN EVENT LOOP): on each try it claims the room its record needs once
it has waited CLAIM_AFTER_US, or renews the claim it holds, without blocking; the try
itself runs with Store.ring_ticket set to that claim, so the core counts it as the
writer's own; and the claim is dropped when the request goes through or gives up (or
its connection goes).

FAST PATH: the first attempt is the plain store call; nothing here runs unless it
raised RingFull.
"""
from __future__ import annotations

from bukt.errors import RingFull

RETRY = 0.001    # seconds between tries of a request waiting for ring room: as often as
                 # the core itself polls, well under its CLAIM_AFTER_US (2 ms)

# One record at most, and nothing changed when the core raises RingFull: tried again
# ("delete" of one key only).
RETRY_SAFE = frozenset({"get", "get_entry", "getdel", "set", "incr", "expire", "persist",
                        "delete", "put_entry", "delete_entry"})
# Several records (or two changes): wait for room for all of them first, then run once.
ROOM_FIRST = frozenset({"mset", "delete", "flush", "create_bucket", "drop_bucket",
                        "add_token", "revoke_token"})

# The ring room of records (cext/ring.pxi): a 48-byte header, the body, 8-aligned, and
# as much again for the worst padding at the wrap. An administrative change is one
# META record with a body of up to 512 bytes (cext/meta.pxi); ROOM_FIRST counts two.
REC_HEADER = 48
META_ROOM = 2 * 2 * (REC_HEADER + 512)


def rec_room(n: int) -> int:
    """The ring room a record of n key+value bytes needs, counting the wrap."""
    return 2 * ((REC_HEADER + n + 7) & ~7)


def ring_full(wait: float):
    """The RingFull every face answers with after waiting `wait` seconds for room."""
    return RingFull(f"change ring full for {wait:g} s: the writer process is down or "
                    "behind; the write was not applied. Check `bukt status`.")


def retry_safe(method: str, nkeys: int = 1) -> bool:
    """Whether a call of this store method that raised RingFull may be tried again."""
    return method in RETRY_SAFE and (method != "delete" or nkeys == 1)


def has_room(store, room: int, ring_size: int, ticket: int) -> bool:
    """Whether the ring has `room` bytes for a writer now, beside another waiter's
    claim (the claim of `ticket`, the writer's own, counts as free). More than the
    ring holds goes once the ring is half empty, in parts as it drains."""
    return store.ring_free(ticket) >= min(room, ring_size // 2)


class RoomWait:
    """One request's wait for ring room, polled from an event loop (FAIRNESS above).

        wait = RoomWait(store, now, exc.room)   # the request found no room
        wait.poll(now)                          # before each try: claim, or renew
        store.ring_ticket = wait.ticket         # around the try (or wait.attempt)
        wait.end()                              # it went through, or gave up
    """

    __slots__ = ("store", "start", "room", "ticket")

    def __init__(self, store, start: float, room: int):
        self.store = store
        self.start = start      # when the request first found no room
        self.room = room        # the ring room it claims (RingFull.room)
        self.ticket = 0         # its claim while it holds one (the core's ticket)

    def poll(self, now: float) -> int:
        """Take the claim once the wait is long enough, or renew it; never blocks.
        Returns the ticket (0: not held, too early or another waiter's stands)."""
        if self.room:
            self.ticket = self.store.ring_claim_room(self.room, now - self.start,
                                                     self.ticket)
        return self.ticket

    def attempt(self, op, *args, **kwargs):
        """op(*args, **kwargs) with this wait's claim counted as the writer's own."""
        store = self.store
        store.ring_ticket = self.ticket
        try:
            return op(*args, **kwargs)
        finally:
            store.ring_ticket = 0

    def end(self):
        """The request went through or gave up: its claim, if it still stands, goes."""
        if self.ticket:
            ticket, self.ticket = self.ticket, 0
            self.store.ring_claim_drop(ticket)
