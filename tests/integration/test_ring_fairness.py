"""The change ring is fair (cext/ring.pxi, THE CLAIM): a producer that needs a large
record is not starved by many producers of small ones while the ring stays nearly
full, and a claim whose waiter died or stopped does not shrink the ring for ever.

Real processes on a real ring, no writer process: a drainer plays the writer, slowly
(a couple of KiB per step, a sleep between steps), so that the ring stays full as long
as three producers flood it with small SETs. The producers then wait for room on
every write, and whoever polls first after a drain step takes what it freed. A
writer of 64 KiB values needs half the ring free at once (its record, and as much
again for the padding at the wrap): without a claim it never saw that much, and got
RingFull after ring_wait although the ring kept moving. The assertions are on
outcomes only (every large write succeeds while the drainer runs; the ring moved;
the small producers wrote), never on how long anything took.
"""
import multiprocessing as mp
import os
import signal
import time
import traceback

import pytest
from mp_common import kill_and_reap, time_limit, unique_name, unlink_segment, wait_pid

import bukt
from bukt._core import writer_claim
from bukt import errors
from bukt._core import ring_claim

ctx = mp.get_context("fork")

RING = 256 << 10
BIG = 64 << 10
NBIG = 6                    # large writes, each needing half the ring free
NSMALL = 3                  # producers of small records
RING_WAIT = 5.0


@pytest.fixture
def seg():
    name = unique_name("ringfair")
    pids = []
    yield name, pids
    for pid in pids:
        kill_and_reap(pid)
    unlink_segment(name)


def fork(pids, fn, *args):
    """Run fn(*args) in a child; an exception is written to fn's report slot by fn."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            fn(*args)
        except BaseException:  # noqa: BLE001 - the parent sees the exit code
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    pids.append(pid)
    return pid


def drainer(name, stop, moved):
    """Consume the ring a little at a time until `stop`, then drain it; moved[0]
    counts the records consumed, moved[1] the large ones among them."""
    store = bukt.attach(name)
    last = 0
    while True:
        stopping = stop.value
        recs, pos, _stuck = store.ring_read(64, 2048)
        for rec in recs:
            assert rec[0] > last, "ring sequence numbers must increase"
            last = rec[0]
            moved[0] += 1
            moved[1] += len(rec[5]) >= BIG
        store.ring_release(pos)
        store.ring_flushed(pos)
        if stopping and not recs and pos == store.ring_position()[1]:
            return
        time.sleep(0.001)


def small_producer(name, i, stop, counts):
    """SET small values until `stop`; counts[2i] successes, counts[2i+1] RingFull."""
    b = bukt.attach(name).bucket("small")
    n = 0
    while not stop.value:
        n += 1
        try:
            b.set(b"p%d-%d" % (i, n % 64), b"v" * (40 + n % 90))
            counts[2 * i] += 1
        except errors.RingFull:
            counts[2 * i + 1] += 1


def large_writer(name, go, result):
    """After `go`: NBIG sets of BIG bytes; result = [done, RingFull (0/1)]."""
    b = bukt.attach(name).bucket("big")
    while not go.value:
        time.sleep(0.001)
    for n in range(NBIG):
        try:
            b.set(b"big%d" % (n % 2), bytes([n]) * BIG)
        except errors.RingFull:
            result[1] = 1
            return
        result[0] += 1


def wait_until(cond, what, limit=30.0):
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, f"{what} within {limit:g} s"
        time.sleep(0.002)


def test_a_large_record_is_not_starved_by_small_ones(seg):
    name, pids = seg
    with time_limit(180, "the ring fairness test"):
        store = bukt.create(name, size="32MiB", max_value=BIG, ring_size=RING,
                            ring_wait=RING_WAIT)
        writer_claim(store)   # as a writer does: changes go to the ring
        store.create_bucket("small")
        store.create_bucket("big")
        stop, go = ctx.RawValue("i", 0), ctx.RawValue("i", 0)
        moved = ctx.RawArray("q", 2)
        counts = ctx.RawArray("q", 2 * NSMALL)
        result = ctx.RawArray("q", 2)
        dpid = fork(pids, drainer, name, stop, moved)
        for i in range(NSMALL):
            fork(pids, small_producer, name, i, stop, counts)
        big = fork(pids, large_writer, name, go, result)

        def occupied():
            tail, head, _ = store.ring_position()
            return head - tail

        # the small producers keep the ring all but full, the drainer running
        wait_until(lambda: occupied() > RING - 8192, "the small producers fill the ring")
        go.value = 1
        status = wait_pid(big, 120)
        assert status is not None, "the large writer did not finish in 120 s"
        pids.remove(big)
        moved_during = moved[0]
        stop.value = 1
        for pid in list(pids):
            assert wait_pid(pid, 60) == 0, f"process {pid} failed or hung"
            pids.remove(pid)
        small_ok, small_full = sum(counts[0::2]), sum(counts[1::2])
        print(f"\nfairness: {result[0]} of {NBIG} large writes, RingFull {result[1]}; "
              f"small writes {small_ok}, RingFull {small_full}; "
              f"{moved_during} records drained meanwhile ({moved[1]} large)")
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert moved_during > NBIG, "the drainer did not keep the ring moving"
        assert small_ok > 0
        assert result[1] == 0, (
            f"a {BIG}-byte write failed with RingFull after {result[0]} of {NBIG}, "
            f"though the drainer consumed {moved_during} records meanwhile: small "
            "producers took every bit of room it freed")
        assert result[0] == NBIG
        assert moved[1] == NBIG, "every large write reached the ring"
        assert store.ring_position()[0] == store.ring_position()[1]
        assert store.check() == []
        store.close()


# -- claims that outlive their use ------------------------------------------------------
def nearly_full(store, b, free=8192):
    """Fill the ring with small records (nothing drains it), then consume enough of
    them that `free` bytes are free: room for a small record, not for a BIG one."""
    wait, store.ring_wait = store.ring_wait, 0
    n = 0
    try:
        while True:
            n += 1
            b.set(b"f%d" % (n % 64), b"x" * 100)
    except errors.RingFull:
        pass
    store.ring_wait = wait
    tail, head, _ = store.ring_position()
    while head - tail + free > RING:
        _recs, tail, _stuck = store.ring_read(1, 1)
        store.ring_release(tail)


def test_a_claim_ends_with_its_wait(seg):
    """A waiter that gives up (RingFull) leaves no claim behind, and one served
    leaves none either."""
    name, _ = seg
    store = bukt.create(name, size="32MiB", max_value=BIG, ring_size=RING, ring_wait=0.2)
    writer_claim(store)   # as a writer does: changes go to the ring
    b = store.create_bucket("b")
    nearly_full(store, b)
    with pytest.raises(errors.RingFull):
        b.set(b"big", b"y" * BIG)
    assert ring_claim(store) is None
    b.set(b"small", b"z" * 100)                     # the room it claimed is free again
    store.ring_release(store.ring_position()[1])
    b.set(b"big", b"y" * BIG)
    assert ring_claim(store) is None
    store.close()


def big_waiter(name):
    bukt.attach(name).bucket("b").set(b"big", b"y" * BIG)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
def test_a_claim_dies_with_its_waiter(seg, sig):
    """A waiter that claimed room and then died (SIGKILL) or stopped (SIGSTOP) does
    not keep it from the others: the next producer that has to wait takes over a
    dead waiter's claim, and ignores one not renewed for CLAIM_STALE_MS. Its write
    succeeds within ring_wait, and leaves no claim behind."""
    name, pids = seg
    with time_limit(60, "the dead claim test"):
        store = bukt.create(name, size="32MiB", max_value=BIG, ring_size=RING,
                            ring_wait=RING_WAIT)
        writer_claim(store)   # as a writer does: changes go to the ring
        b = store.create_bucket("b")
        nearly_full(store, b)
        pid = fork(pids, big_waiter, name)
        wait_until(lambda: (ring_claim(store) or (0, 0))[1] == pid,
                   "the large writer claims room")
        os.kill(pid, sig)
        if sig == signal.SIGKILL:
            wait_pid(pid, 10)
            pids.remove(pid)
        claim = ring_claim(store)
        assert claim is not None and claim[0] >= 2 * BIG and claim[1] == pid
        b.set(b"small", b"z" * 100)                 # fits only if the claim is void
        assert b.get(b"small") == b"z" * 100
        assert ring_claim(store) is None
        store.close()


# -- a claim held across tries from an event loop ---------------------------------------
def test_a_claim_held_across_tries_from_an_event_loop(seg):
    """A server worker does not wait in the core (ring_wait 0): it tries again from its
    loop, holding a claim between tries (cext/ring.pxi, THE CLAIM FROM AN EVENT LOOP).
    The claim is taken only after CLAIM_AFTER_US, renewed, counted as the writer's own
    only while ring_ticket names it, never given up by the core's own waits, served
    by the reservation it was for, and dropped by its holder."""
    name, _ = seg
    store = bukt.create(name, size="32MiB", max_value=BIG, ring_size=RING, ring_wait=0)
    writer_claim(store)   # as a writer does: changes go to the ring
    b = store.create_bucket("b")
    nearly_full(store, b)
    with pytest.raises(errors.RingFull) as full:
        b.set(b"big", b"y" * BIG)
    room = full.value.room
    assert 2 * BIG < room <= RING // 2 + 512
    assert store.ring_claim_room(room, 0.0) == 0            # too early: no claim
    assert ring_claim(store) is None
    ticket = store.ring_claim_room(room, 0.01)
    assert ticket and ring_claim(store)[:2] == (room, os.getpid())
    assert store.ring_claim_room(room, 0.02, ticket) == ticket   # renewed
    free = store.ring_free(ticket)
    assert 0 < free and store.ring_free() == 0              # the others leave it free
    with pytest.raises(errors.RingFull):
        b.set(b"small", b"z" * 100)                         # not the claimant's write
    store.ring_wait = 0.05                                  # the core's own wait ...
    store.ring_ticket = ticket
    try:
        with pytest.raises(errors.RingFull):
            b.set(b"big", b"y" * BIG)
    finally:
        store.ring_ticket = 0
        store.ring_wait = 0
    assert ring_claim(store)[:2] == (room, os.getpid())    # ... leaves the claim alone
    store.ring_release(store.ring_position()[1])            # the writer drains
    store.ring_ticket = ticket
    try:
        b.set(b"big", b"y" * BIG)
    finally:
        store.ring_ticket = 0
    assert ring_claim(store) is None                        # served with its record
    store.ring_claim_drop(ticket)                           # (a no-op now)
    ticket = store.ring_claim_room(room, 0.01)
    assert ring_claim(store) is not None
    store.ring_claim_drop(ticket)                           # given up
    assert ring_claim(store) is None and store.ring_free() > 0
    b.set(b"small", b"z" * 100)
    assert store.check() == []
    store.close()
