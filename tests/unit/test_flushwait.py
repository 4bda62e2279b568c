"""FlushWaiters: one poller per process resolves every write waiting for the writer's
flush, in order, never early; WriterDown after the timeout; a new event loop starts
afresh. On a real segment; the writer's side is played with the calls the writer
process makes (ring_read, ring_flushed)."""
import asyncio
import os
import select
import time

import pytest

import bukt
from bukt._core import writer_claim
from bukt import errors
from bukt.writewait.flushwait import FlushWaiters


@pytest.fixture
def seg(segname):
    s = bukt.create(segname, size="16MiB")
    writer_claim(s)   # as a writer does: changes go to the ring
    s.create_bucket("b")              # persisted: every set appends a ring record
    yield s
    s.close()


def test_every_waiter_is_released_once_its_record_is_flushed_and_not_before(seg):
    waiters = FlushWaiters(seg, timeout=5)
    b = seg.bucket("b")

    async def scenario():
        futures = []
        for i in range(100):
            b.set(b"k%d" % i, b"v")
            futures.append((seg.last_pos, waiters.wait(seg.last_pos)))
        assert all(f is not None for _, f in futures) and len(waiters) == 100
        half = futures[49][0]
        seg.ring_flushed(half)                      # the writer flushed the first 50
        await asyncio.wait_for(futures[49][1], 1)
        await asyncio.sleep(0.01)                   # a few more polls: nothing more
        assert [f.done() for _, f in futures] == [True] * 50 + [False] * 50
        seg.ring_flushed(seg.ring_position()[1])
        await asyncio.wait_for(asyncio.gather(*(f for _, f in futures)), 1)
        assert len(waiters) == 0 and waiters.wait(seg.last_pos) is None
    asyncio.run(scenario())


def test_a_write_never_flushed_fails_with_writer_down_and_the_next_one_waits_again(seg):
    waiters = FlushWaiters(seg, timeout=0.05)
    b = seg.bucket("b")

    async def scenario():
        b.set(b"k", b"v")
        with pytest.raises(errors.WriterDown, match="0.05 s"):
            await waiters.wait(seg.last_pos)
        b.set(b"k2", b"v")
        later = waiters.wait(seg.last_pos)
        seg.ring_flushed(seg.ring_position()[1])
        await asyncio.wait_for(later, 1)
    asyncio.run(scenario())


def test_a_new_event_loop_gets_a_poller_of_its_own(seg):
    """A waiter left on a loop that ended (a test client runs each request on a loop
    of its own) must not keep the next loop's waiters from being polled."""
    waiters = FlushWaiters(seg, timeout=5)
    b = seg.bucket("b")

    async def leave_one():
        b.set(b"a", b"v")
        assert waiters.wait(seg.last_pos) is not None     # never awaited; loop ends

    async def wait_one():
        b.set(b"b", b"v")
        fut = waiters.wait(seg.last_pos)
        seg.ring_flushed(seg.ring_position()[1])
        await asyncio.wait_for(fut, 1)
        assert len(waiters) == 0
    asyncio.run(leave_one())
    asyncio.run(wait_one())


def test_the_flush_notifier_releases_waiters_without_the_timer(seg, monkeypatch):
    """With the timer pushed a minute out, only the flush notifier (an eventfd made
    readable by a thread of this process after each flush: cext/flushnote.pxi) can
    release the waiter; once nobody waits, no timer is left and the notifier is off."""
    import bukt.writewait.flushwait as fw
    monkeypatch.setattr(fw, "POLL_FIRST", 60.0)
    monkeypatch.setattr(fw, "POLL_LONGEST", 60.0)
    waiters = FlushWaiters(seg, timeout=120)
    b = seg.bucket("b")

    async def scenario():
        for round_ in range(3):                     # the reader stays; the timer goes
            b.set(b"k%d" % round_, b"v")
            fut = waiters.wait(seg.last_pos)
            await asyncio.sleep(0.01)
            assert not fut.done()
            seg.ring_flushed(seg.ring_position()[1])
            await asyncio.wait_for(fut, 10)
            assert len(waiters) == 0 and waiters._timer is None
    asyncio.run(scenario())


def _threads():
    return len(os.listdir("/proc/self/task"))


def test_flush_notifier_signals_each_flush_and_its_thread_ends_with_the_store(segname):
    s = bukt.create(segname, size="16MiB")
    writer_claim(s)   # as a writer does: changes go to the ring
    b = s.create_bucket("b")
    s.sync_wait = False
    before = _threads()
    n = s.flush_notifier()
    assert s.flush_notifier() is n and _threads() == before + 1
    n.watch(True)
    select.select([n.fd], [], [], 1)                # the first look may signal at once
    n.clear()
    for i in range(3):
        b.set(b"k%d" % i, b"v")
        assert not select.select([n.fd], [], [], 0.05)[0]     # nothing flushed yet
        s.ring_flushed(s.ring_position()[1])
        assert select.select([n.fd], [], [], 10)[0]
        n.clear()
    pid = os.fork()
    if pid == 0:                                    # a child gets a thread of its own
        code = 1
        try:
            m = s.flush_notifier()
            m.watch(True)
            select.select([m.fd], [], [], 1)
            m.clear()
            b.set(b"child", b"v")
            s.ring_flushed(s.ring_position()[1])
            code = 0 if m is not n and select.select([m.fd], [], [], 10)[0] else 2
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    s.close()                                       # stops the thread before unmapping
    deadline = time.monotonic() + 10                # (it ends a moment after saying so)
    while _threads() != before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _threads() == before
    with pytest.raises(errors.BuktError):
        s.flush_notifier()
    bukt.attach(segname).unlink()


# -- THE FLUSH WAKER (cext/flushwake.pxi): the writer wakes the waiting loop itself ----------

def test_the_writer_wakes_an_armed_waker_once_and_only_past_its_position(seg):
    from bukt._core import wake_counts
    w = seg.flush_waker()
    assert seg.flush_waker() is w and w.name
    b = seg.bucket("b")
    b.set(b"k1", b"v")
    first = seg.last_pos
    b.set(b"k2", b"v")
    assert not w.arm(seg.last_pos)                  # nothing flushed yet: armed
    row = next(r for r in seg.wake_slots() if r["pid"] == os.getpid())
    assert row["armed"] and row["pos"] == seg.last_pos and row["name"] == w.name
    sent = wake_counts()
    seg.ring_flushed(first)                         # short of it: no datagram
    assert wake_counts() == sent and not select.select([w.fd], [], [], 0.05)[0]
    seg.ring_flushed(seg.last_pos)                  # covers it: one datagram
    assert wake_counts() == sent + 1 and select.select([w.fd], [], [], 10)[0]
    w.clear()
    assert not select.select([w.fd], [], [], 0)[0]
    seg.ring_flushed(seg.last_pos)                  # disarmed by the first: no more
    assert wake_counts() == sent + 1
    assert w.arm(seg.last_pos)                      # flushed already: look now, unarmed
    assert not next(r for r in seg.wake_slots() if r["pid"] == os.getpid())["armed"]


def test_clear_takes_one_datagram_a_wake_up_and_leaves_the_rest_readable(seg):
    """The writer sends one datagram per arming, so clear() takes one (a second recv
    only to see EAGAIN was a system call for nothing on every wake-up); any more
    (forged ones) keep the socket readable for the loop's next round."""
    import socket
    from bukt._core import wake_address
    w = seg.flush_waker()
    forger = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        for _ in range(2):
            forger.sendto(b"f", wake_address(os.getpid(), w.name))
        assert select.select([w.fd], [], [], 10)[0]
        w.clear()
        assert select.select([w.fd], [], [], 0)[0]      # the second still waits
        w.clear()
        assert not select.select([w.fd], [], [], 0)[0]
        w.clear()                                       # nothing there: no harm
    finally:
        forger.close()


def test_a_forged_wake_releases_no_waiter_before_its_record_is_flushed(seg, monkeypatch):
    """Anyone on the host may send to the waker's abstract name: the loop looks at the
    flushed position and releases nothing it has not passed."""
    import socket
    import bukt.writewait.flushwait as fw
    monkeypatch.setattr(fw, "POLL_FIRST", 60.0)     # the waker alone releases
    monkeypatch.setattr(fw, "POLL_LONGEST", 60.0)
    waiters = FlushWaiters(seg, timeout=120)
    b = seg.bucket("b")
    forger = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    async def scenario():
        b.set(b"k", b"v")
        fut = waiters.wait(seg.last_pos)
        row = next(r for r in seg.wake_slots() if r["pid"] == os.getpid())
        assert row["armed"]
        for _ in range(5):
            forger.sendto(b"f", row["address"])
            await asyncio.sleep(0.01)
        assert not fut.done()
        seg.ring_flushed(seg.last_pos)
        await asyncio.wait_for(fut, 10)
    try:
        asyncio.run(scenario())
    finally:
        forger.close()


_WAITER = """
import sys, time, bukt
s = bukt.attach(sys.argv[1])
w = s.flush_waker()
assert not w.arm(int(sys.argv[2]))
print([r["row"] for r in s.wake_slots() if r["name"] == w.name][0], flush=True)
time.sleep(60)
"""


def test_a_killed_waiters_row_is_disarmed_by_the_writer_and_reclaimed(seg, segname):
    """A process killed while it waits leaves its row armed; the writer's one datagram
    to it fails and disarms it, and the next process to attach takes the row, its
    waker fields cleared: rows do not accumulate however many waiters die."""
    import signal
    import subprocess
    import sys
    from bukt._core import wake_counts
    seg.bucket("b").set(b"k", b"v")
    rows = set()
    for round_ in range(4):
        pos = seg.ring_position()[2] + 8 * (round_ + 1)
        p = subprocess.Popen([sys.executable, "-c", _WAITER, segname, str(pos)],
                             stdout=subprocess.PIPE, text=True)
        try:
            row = int(p.stdout.readline())
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
            p.stdout.close()
        rows.add(row)
        dead = next(r for r in seg.wake_slots() if r["row"] == row)
        assert dead["armed"] and dead["pid"] == p.pid and not dead["alive"]
        sent = wake_counts()
        seg.ring_flushed(pos)                       # its position: one try
        assert wake_counts() == sent                # nobody there: nothing delivered
        assert not next(r for r in seg.wake_slots() if r["row"] == row)["armed"]
    assert len(rows) == 1                           # each new waiter took the dead row
    assert len([r for r in seg.wake_slots() if r["pid"]]) == 2   # us and the last
