"""The change feed, locally (store.watch / awatch) against a real `bukt serve`: every kind
of change in order, for persisted and cache-only buckets; resume by sequence gets
exactly the missed events; a point older than the feed's window gets "gone" naming the
oldest point it holds; the feed never lets a watcher pass a gap silently."""
import asyncio
import os
import time

import pytest

import bukt
from bukt.feed import Feed, Watcher
from serve_harness import Service, wait_for
from names import unique_name


@pytest.fixture
def service(tmp_path):
    s = Service(tmp_path, feed={"size": "256KiB", "max_lag": "64KiB", "cache_only": True})
    try:
        s.start()
        yield s
    finally:
        s.cleanup()


def drain(w, until, timeout=20.0):
    """Events from watcher `w` until `until(events)` holds."""
    got = []
    deadline = time.monotonic() + timeout
    while not until(got):
        assert time.monotonic() < deadline, f"timed out; got {len(got)}: {got[-5:]}"
        evs = w.poll()
        got.extend(evs)
        if not evs:
            w.wait(0.2)
    return got


@pytest.mark.parametrize("persist", [True, False])
def test_every_kind_in_order(service, persist):
    service.create_bucket("b", persist=persist, max_memory="1MiB")
    store = bukt.attach(service.name)
    b = store.bucket("b")
    w = store.watch("b", values=True)
    b.set(b"k1", b"v1")
    b.incr(b"n", 5)
    b.expire(b"k1", 3600)
    b.set(b"gone-soon", b"x", ttl=0.2)
    b.delete(b"n")
    evs = drain(w, lambda g: any(e.kind == "expired" for e in g))
    kinds = [(e.kind, e.key) for e in evs]
    assert kinds == [("set", b"k1"), ("incr", b"n"), ("expire", b"k1"),
                     ("set", b"gone-soon"), ("delete", b"n"), ("expired", b"gone-soon")]
    assert [e.seq for e in evs] == sorted(e.seq for e in evs)
    assert len({e.seq for e in evs}) == len(evs)
    assert evs[0].value == b"v1" and evs[1].value == b"5"
    assert evs[2].ttl is not None and 3500 < evs[2].ttl <= 3600
    # evictions: the bucket's max_memory is 1 MiB; 2 MiB of values push the oldest out
    for i in range(256):
        b.set(b"big%03d" % i, b"v" * 8000)
    before = b.stats()["keys"]
    assert b.flush() == before
    evs = drain(w, lambda g: sum(e.kind == "flush" for e in g) == before)
    kinds = {e.kind for e in evs}
    assert {"set", "evicted", "flush"} <= kinds
    evicted = {e.key for e in evs if e.kind == "evicted"}
    flushed = {e.key for e in evs if e.kind == "flush"}
    assert evicted and not evicted & flushed
    assert evicted | flushed == {b"k1"} | {b"big%03d" % i for i in range(256)}
    store.close()


def test_prefix_and_other_buckets(service):
    service.create_bucket("a")
    service.create_bucket("c")
    store = bukt.attach(service.name)
    w = store.watch("a", prefix=b"user:")
    store.bucket("c").set(b"user:1", b"x")
    store.bucket("a").set(b"item:1", b"x")
    store.bucket("a").set(b"user:2", b"y")
    evs = drain(w, lambda g: len(g) >= 1)
    assert [(e.bucket, e.key, e.value) for e in evs] == [("a", b"user:2", None)]
    store.close()


def test_resume_gets_exactly_the_missed_events(service):
    service.create_bucket("b")
    store = bukt.attach(service.name)
    b = store.bucket("b")
    w = store.watch("b")
    for i in range(10):
        b.set(b"k%d" % i, b"v")
    first = drain(w, lambda g: len(g) >= 10)
    seen = first[4].seq                  # the watcher "disconnects" after the 5th event
    for i in range(10, 15):
        b.set(b"k%d" % i, b"v")
    again = Watcher(store, "b", since=seen)
    evs = drain(again, lambda g: len(g) >= 10)
    assert [e.key for e in evs] == [b"k%d" % i for i in range(5, 15)]
    assert [e.seq for e in evs] == [e.seq for e in first[5:]] + [e.seq for e in evs[5:]]
    assert again.poll() == []
    store.close()


def test_a_point_older_than_the_window_is_gone(service):
    service.create_bucket("b")
    store = bukt.attach(service.name)
    b = store.bucket("b")
    w = store.watch("b")
    b.set(b"first", b"v")
    start = drain(w, lambda g: len(g) >= 1)[0].seq
    # 256 KiB of feed: 600 events of 500 bytes overwrite it
    for i in range(600):
        b.set(b"k%04d" % i, b"v" * 400, )
    wait_for(lambda: Feed.of(service.name).last_seq() > start + 600 * 400,
             what="the writer to publish")
    old = store.watch("b", since=start)
    evs = old.poll()
    assert len(evs) == 1 and evs[0].gone, evs
    gone = evs[0]
    assert gone.since == start and gone.oldest > start
    assert old.poll() == []
    # resuming from the point it names loses nothing the feed holds, and says no gone
    again = store.watch("b", since=gone.oldest)
    evs = drain(again, lambda g: g and g[-1].key == b"k0599")
    assert not any(e.gone for e in evs)
    assert [e.key for e in evs] == [b"k%04d" % i for i in range(600 - len(evs), 600)]
    # the watcher that never read fell behind: it is told, not handed a gap
    evs = drain(w, lambda g: g and g[-1].gone)
    assert evs[-1].oldest >= gone.oldest
    store.close()


def test_awatch(service):
    service.create_bucket("b", persist=False)
    store = bukt.attach(service.name)

    async def main():
        got = []
        w = store.awatch("b")
        store.bucket("b").set(b"x", b"1")
        store.bucket("b").delete(b"x")
        async for e in w:
            got.append((e.kind, e.key))
            if len(got) == 2:
                break
        return got

    assert asyncio.run(asyncio.wait_for(main(), 20)) == [("set", b"x"), ("delete", b"x")]
    store.close()


def test_cache_only_buckets_stay_off_the_ring_with_never(tmp_path):
    """feed.cache_only never: a cache-only bucket's writes reserve no ring record, and
    watching it is refused with a reason, not left silent."""
    s = Service(tmp_path, feed={"cache_only": "never"})
    try:
        s.start()
        s.create_bucket("c", persist=False)
        store = bukt.attach(s.name)
        before = store.ring_position()[1]
        for i in range(100):
            store.bucket("c").set(b"k%d" % i, b"v")
        assert store.ring_position()[1] == before
        with pytest.raises(bukt.errors.InvalidArgument, match="cache_only: never"):
            store.watch("c")
        store.close()
    finally:
        s.cleanup()


def test_watch_needs_a_feed(tmp_path):
    """A segment no writer process serves has no feed: a clear error, no hang."""
    name = unique_name("nofeed")
    store = bukt.create(name, size=8 << 20)
    try:
        store.create_bucket("b")
        with pytest.raises(bukt.BuktError, match="no change feed"):
            store.watch("b")
    finally:
        store.close()
        os.unlink(f"/dev/shm/bukt-{name}")


def test_a_writer_restart_keeps_the_feed(service):
    """The writer is killed and the supervisor starts another: the feed it made is kept,
    a watcher goes on from where it was without a "gone", and new events follow."""
    import signal
    service.create_bucket("b")
    store = bukt.attach(service.name)
    b = store.bucket("b")
    w = store.watch("b")
    b.set(b"before", b"1")
    first = drain(w, lambda g: len(g) >= 1)
    old = store.writer_info()["pid"]
    wait_for(lambda: Feed.of(service.name).head() > 0, what="the feed")
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: store.writer_info()["pid"] not in (0, old)
             and store.writer_info()["ready"], timeout=60, what="a new writer")
    b.set(b"after", b"2")
    evs = drain(w, lambda g: len(g) >= 1)
    assert [(e.kind, e.key) for e in evs] == [("set", b"after")]
    again = store.watch("b", since=first[0].seq - 1)
    evs = drain(again, lambda g: len(g) >= 2)
    assert [e.key for e in evs] == [b"before", b"after"]
    store.close()
