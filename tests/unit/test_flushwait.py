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
