"""The change feed of cache-only buckets under the default feed.cache_only ("watched"):
an unwatched cache-only bucket's writes take no ring room at all; while a watcher holds
the bucket's lease (bukt/feed.py, THE LEASE) every kind of change reaches it; a point
from before the bucket was watched, or a watch whose lease lapsed, is told "gone",
never handed a silent gap. And a fresh service's feed holds everything from the start
(--since 0), while a feed that really missed changes still says gone."""
import os
import signal
import time

import pytest

import bukt
from bukt.feed import Feed, Watcher, feed_path
from serve_harness import Service, wait_for


def drain(w, until, timeout=20.0):
    got = []
    deadline = time.monotonic() + timeout
    while not until(got):
        assert time.monotonic() < deadline, f"timed out; got {len(got)}: {got[-5:]}"
        evs = w.poll()
        got.extend(evs)
        if not evs:
            w.wait(0.2)
    return got


@pytest.fixture
def service(tmp_path):
    s = Service(tmp_path, feed={"size": "256KiB", "max_lag": "64KiB", "lease": "2s"})
    try:
        s.start()
        yield s
    finally:
        s.cleanup()


def test_an_unwatched_cache_only_bucket_takes_no_ring_room(service):
    """No watcher: 200 cache-only writes reserve no ring position. A watcher: they do,
    and it sees them."""
    service.create_bucket("c", persist=False)
    store = bukt.attach(service.name)
    c = store.bucket("c")
    before = store.ring_position()[1]
    for i in range(100):
        c.set(b"k%d" % i, b"v")
        c.delete(b"k%d" % i)
    assert store.ring_position()[1] == before
    w = store.watch("c")
    c.set(b"seen", b"v")
    assert store.ring_position()[1] > before
    evs = drain(w, lambda g: len(g) >= 1)
    assert [(e.kind, e.key) for e in evs] == [("set", b"seen")]
    store.close()


def test_a_watched_cache_only_bucket_has_every_kind(service):
    service.create_bucket("c", persist=False, max_memory="1MiB")
    store = bukt.attach(service.name)
    c = store.bucket("c")
    w = store.watch("c", values=True)
    c.set(b"k1", b"v1")
    c.incr(b"n", 5)
    c.expire(b"k1", 3600)
    c.set(b"gone-soon", b"x", ttl=0.2)
    c.delete(b"n")
    evs = drain(w, lambda g: any(e.kind == "expired" for e in g))
    assert [(e.kind, e.key) for e in evs] == [
        ("set", b"k1"), ("incr", b"n"), ("expire", b"k1"), ("set", b"gone-soon"),
        ("delete", b"n"), ("expired", b"gone-soon")]
    assert evs[0].value == b"v1" and evs[1].value == b"5"
    # 2 MiB of values through a 1 MiB bucket evict its oldest keys
    for i in range(256):
        c.set(b"big%03d" % i, b"v" * 8000)
    evs = drain(w, lambda g: sum(e.kind == "set" for e in g) == 256)
    assert {e.kind for e in evs} == {"set", "evicted"}
    evicted = {e.key for e in evs if e.kind == "evicted"}
    live = {k for k in [b"k1"] + [b"big%03d" % i for i in range(256)] if c.get(k) is not None}
    assert evicted and evicted | live == {b"k1"} | {b"big%03d" % i for i in range(256)}
    assert store.check() == []
    store.close()


def test_a_point_before_the_first_watcher_is_gone(service):
    """Changes made while nobody watched never reached the feed: asking for them is
    answered "gone" with the point the watch began; resuming there loses nothing after."""
    service.create_bucket("c", persist=False)
    store = bukt.attach(service.name)
    c = store.bucket("c")
    c.set(b"unseen", b"v")
    old = Watcher(store, "c", since=0)
    evs = old.poll()
    assert len(evs) == 1 and evs[0].gone, evs
    oldest = evs[0].oldest
    assert oldest > 0
    c.set(b"after", b"v")
    again = Watcher(store, "c", since=oldest)
    evs = drain(again, lambda g: len(g) >= 1)
    assert [(e.kind, e.key) for e in evs] == [("set", b"after")]
    store.close()


@pytest.mark.slow
def test_a_lapsed_lease_is_gone(service):
    """A watcher that stops polling for longer than feed.lease (2 s here) lets the
    bucket's changes go unfed; its next poll says gone, not a silent gap."""
    service.create_bucket("c", persist=False)
    store = bukt.attach(service.name)
    c = store.bucket("c")
    w = store.watch("c")
    c.set(b"a", b"v")
    assert [e.key for e in drain(w, lambda g: len(g) >= 1)] == [b"a"]
    time.sleep(3.5)                      # the lease (2 s) lapses: nobody renews it
    head = store.ring_position()[1]
    c.set(b"missed", b"v")
    assert store.ring_position()[1] == head      # it did not reach the ring
    evs = w.poll()
    assert len(evs) == 1 and evs[0].gone, evs
    again = Watcher(store, "c", since=evs[0].oldest)
    c.set(b"b", b"v")
    assert [e.key for e in drain(again, lambda g: len(g) >= 1)] == [b"b"]
    store.close()


def test_a_fresh_service_has_every_event_from_the_start(service):
    """--since 0 on a new service: nothing came before the ring's first position, so
    nothing is lost: every event, no gone."""
    service.create_bucket("b")
    store = bukt.attach(service.name)
    b = store.bucket("b")
    for i in range(5):
        b.set(b"k%d" % i, b"v")
    w = Watcher(store, "b", since=0)
    evs = drain(w, lambda g: len(g) >= 5)
    assert [(e.kind, e.key) for e in evs] == [("set", b"k%d" % i) for i in range(5)]
    store.close()


def test_a_new_feed_after_history_is_gone_from_0(service):
    """A feed area made anew on a segment with history (removed under a live service)
    really lacks what came before: since 0 is gone there."""
    service.create_bucket("b")
    store = bukt.attach(service.name)
    b = store.bucket("b")
    b.set(b"before", b"v")
    wait_for(lambda: Feed.of(service.name).last_seq() > 0, what="the writer to publish")
    old = store.writer_info()["pid"]
    os.unlink(feed_path(service.name))
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: store.writer_info()["pid"] not in (0, old)
             and store.writer_info()["ready"], timeout=60, what="a new writer")
    b.set(b"after", b"v")
    evs = Watcher(store, "b", since=0).poll()
    assert len(evs) == 1 and evs[0].gone and evs[0].oldest > 0, evs
    again = Watcher(store, "b", since=evs[0].oldest)
    assert [e.key for e in drain(again, lambda g: len(g) >= 1)] == [b"after"]
    store.close()
