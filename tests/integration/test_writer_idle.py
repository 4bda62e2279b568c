"""An idle writer sleeps until rung (cext/ring.pxi, THE DOZE; bukt/writer/process.py,
DOZE). It used to poll an empty ring every 2 ms, 500 wake-ups a second; now, once the
ring has been empty for a while, it sleeps until its next tick (10 a second) and the
first commit wakes it, whatever the fsync policy and whether or not the feed is
watched.

The wake-ups are counted as the writer's voluntary context switches (/proc/<pid>/
status: every sleep that ends is one) over a few seconds, bounded generously: five
times the tick rate, a tenth of the old poll rate. The doorbell is shown by a writer
alone (no supervisor to replace it for a silent heartbeat) whose every idle sleep is
an hour long (the BUKT_WRITER_POLL_S test hook): a set that reaches the log within
the test's wait, far shorter than that, can only have woken the writer itself."""
import time

import pytest

from bukt._core import writer_dozing
from mp_common import switches
from writer_harness import Instance, wait_for

IDLE_WINDOW_S = 3.0     # how long the idle writer's wake-ups are counted
WAKES_PER_S = 50        # the bound: ticks are 10 a second, the old polls 500
POLL_S = 3600           # the test hook's idle sleep: longer than any wait here
WAIT_S = 120            # the longest a wait here lasts (a failure, not a bound)


@pytest.fixture
def inst(tmp_path):
    i = Instance(tmp_path, fsync="everysec")
    try:
        yield i
    finally:
        i.cleanup()


@pytest.mark.slow
@pytest.mark.parametrize("fsync", ["everysec", "no", "always"])
def test_idle_writer_wakes_at_its_tick_rate(inst, fsync):
    inst.configure(fsync=fsync)
    p = inst.start()
    s = inst.attach()
    try:
        b = s.create_bucket("b")
        b.set(b"k", b"v")               # a drain first: the idle counted is after work
        if fsync != "always":
            wait_for(lambda: writer_dozing(s), timeout=WAIT_S, what="the writer to doze")
        n0, t0 = switches(p.pid), time.monotonic()
        time.sleep(IDLE_WINDOW_S)
        n1, t1 = switches(p.pid), time.monotonic()
        wakes = n1 - n0
        assert wakes <= WAKES_PER_S * (t1 - t0), \
            f"an idle writer woke {wakes} times in {t1 - t0:.1f} s"
        b.set(b"k2", b"v2")             # and it still takes writes
        assert b.get(b"k2") == b"v2"
        assert s.check() == []
    finally:
        s.close()
        assert inst.stop(p) == 0


def log_size(inst):
    return inst.info()["log_size"]


@pytest.mark.parametrize("fsync", ["everysec", "no"])
def test_commit_wakes_a_dozing_writer(inst, fsync):
    """Three sets, each after the writer went back to its hour-long doze: each reaches
    the log (the log's size the writer publishes grows), and a cold start from the
    data directory alone (the segment unlinked) finds all three."""
    inst.configure(fsync=fsync, fsync_lag_limit=POLL_S)     # the writer's ticks wait for
    p = inst.start(env={"BUKT_WRITER_POLL_S": str(POLL_S)})   # the hour too
    s = inst.attach()
    try:
        b = s.create_bucket("b")
        for i in range(3):
            wait_for(lambda: writer_dozing(s), timeout=WAIT_S, what="the writer to doze")
            before = log_size(inst)
            b.set(b"k%d" % i, b"v%d" % i)
            wait_for(lambda: log_size(inst) > before, timeout=WAIT_S,
                     what=f"set {i} to reach the log: the commit did not wake the writer")
        assert s.check() == []
    finally:
        s.close()
    Instance.kill(p)                    # SIGKILL: what is in the log is what survives
    inst.unlink_segment()
    p = inst.start(cold=True)
    s = inst.attach()
    try:
        b = s.bucket("b")
        assert [b.get(b"k%d" % i) for i in range(3)] == [b"v0", b"v1", b"v2"]
        assert s.check() == []
    finally:
        s.close()
        assert inst.stop(p) == 0
