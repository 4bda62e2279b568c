"""While the change feed is watched, producers ring the writer's doorbell under
`fsync: everysec` as they do under `always` (cext/ring.pxi, THE DOORBELL; bukt/feed.py,
THE WATCHED WORD). The writer runs alone (no supervisor to replace it for a silent
heartbeat) with every idle sleep made an hour long (the BUKT_WRITER_POLL_S test hook):
an event that reaches a watcher within the test's wait, far shorter than that, can only
have come from a producer waking the writer."""
import pytest

from bukt._core import feed_watched
from bukt.feed import Watcher
from writer_harness import Instance

POLL_S = 3600          # the writer's every idle sleep (everysec): longer than any wait here
WAIT_S = 120           # the longest the test waits for an event (a failure, not a bound)


@pytest.fixture
def inst(tmp_path):
    i = Instance(tmp_path, fsync="everysec")
    try:
        yield i
    finally:
        i.cleanup()


def next_events(w, want, deadline_s=WAIT_S):
    """Events from watcher `w` until `want` of them came, sleeping on the feed between
    polls; fewer if the feed did not move for `deadline_s` seconds."""
    got = []
    while len(got) < want:
        seen = w.wake_word()
        evs = w.poll()
        got.extend(evs)
        if evs:
            continue
        if w.wake_word() == seen:
            w.wait(deadline_s, seen)
            if w.wake_word() == seen:
                break                   # the feed never moved
    return got


def test_watched_feed_rings_the_writer(inst):
    p = inst.start(env={"BUKT_WRITER_POLL_S": str(POLL_S)})
    s = inst.attach()
    try:
        b = s.create_bucket("b")
        assert not feed_watched(s)      # nobody watches yet: producers leave it asleep
        w = Watcher(s, "b")
        assert feed_watched(s)
        for i in range(3):              # each set after the writer went back to sleep
            b.set(b"k%d" % i, b"v")
            evs = next_events(w, 1)
            assert [(e.kind, e.key) for e in evs] == [("set", b"k%d" % i)], \
                f"no event: the set did not wake the writer\n{inst.log()}"
        assert s.check() == []
    finally:
        s.close()
        assert inst.stop(p) == 0
