"""The change feed's ring (bukt/feed.py) in one process: a writer publishing batches of
every size into a small area, watchers polling at random paces. Every watcher sees
exactly the published events of its bucket in order, or a Gone after which resuming
from Gone.oldest continues with exactly the events after that point: never a gap."""
import os
import random

import pytest

import bukt
from bukt.feed import Feed, FeedWriter, Watcher, ring_records_to_events


@pytest.fixture
def setup():
    name = f"feedunit-{os.getpid()}"
    store = bukt.create(name, size=8 << 20)
    store.create_bucket("b")
    store.create_bucket("other")
    slots = {row[3]: (row[0], row[1]) for row in store.bucket_table()}
    fw = FeedWriter(name, 64 << 10, 1024)
    Feed._open.clear()
    yield store, fw, slots
    fw.close()
    os.unlink(fw.path)
    store.close()
    store.unlink()


def point(item):
    return item[1] if item[0] == "gone" else item[0]


def test_watchers_never_see_a_gap(setup):
    store, fw, slots = setup
    rnd = random.Random(7)
    published = []                      # (seq, key) of bucket b, in order
    seq = 8
    watchers = [[Watcher(store, "b"), [], rnd.choice([1, 2, 5, 20])] for _ in range(4)]
    for batch in range(400):
        recs = []
        for i in range(rnd.randint(1, 120)):
            seq += 8 * rnd.randint(1, 40)
            bucket = "b" if rnd.random() < 0.8 else "other"
            key = b"k%d-" % seq + b"x" * rnd.randint(0, 240)
            value = b"v" * rnd.choice([0, 3, 100, 1000, 1024, 1025, 4000])
            idx, gen = slots[bucket]
            recs.append((seq, 1, idx, gen, key, value, 0, seq, 0))
            if bucket == "b":
                published.append((seq, key))
        fw.publish(ring_records_to_events(recs, {}))
        for w in watchers:
            watcher, seen, pace = w
            if batch % pace:
                continue
            for e in watcher.poll(100000):
                if e.gone:
                    # resume from the point it names: the events after it follow
                    assert e.oldest >= (point(seen[-1]) if seen else 0)
                    seen.append(("gone", e.oldest))
                    w[0] = Watcher(store, "b", since=e.oldest)
                    break
                seen.append((e.seq, e.key))
    for watcher, seen, pace in watchers:
        evs = watcher.poll(100000)
        seen.extend((e.seq, e.key) if not e.gone else ("gone", e.oldest) for e in evs)
        # between gones, exactly the published events, in order
        expect = {s: k for s, k in published}
        after = 0
        for i, item in enumerate(seen):
            if item[0] == "gone":
                after = item[1]
                continue
            s, k = item
            assert expect[s] == k
            later = [p for p in published if p[0] > after]
            assert later[0] == (s, k), (i, after, item)
            after = s
        assert seen[-1] == published[-1] or seen[-1][0] == "gone"


def test_values_kept_up_to_max_value(setup):
    store, fw, slots = setup
    idx, gen = slots["b"]
    w = Watcher(store, "b", values=True)
    fw.publish(ring_records_to_events(
        [(16, 1, idx, gen, b"small", b"x" * 1024, 0, 1, 0),
         (24, 1, idx, gen, b"big", b"y" * 1025, 0, 2, 0),
         (32, 1, idx, gen, b"n", b"7", 0, 3, 0x40),
         (40, 2, idx, gen, b"small", b"", 0, 4, 0x20)], {}))
    evs = w.poll()
    assert [(e.kind, e.key, e.value, e.value_size) for e in evs] == [
        ("set", b"small", b"x" * 1024, 1024), ("set", b"big", None, 1025),
        ("incr", b"n", b"7", 1), ("flush", b"small", None, None)]


def test_a_reopened_feed_drops_the_earlier_writers_records_in_order(setup):
    """A writer that reopens the feed (a restart) keeps the events an earlier writer
    left and overwrites them oldest first as it publishes (it reads their headers only
    then): watchers that started before the restarts, one keeping up and one overrun
    again and again, see every event in order, or a Gone whose point they resume from."""
    store, fw, slots = setup
    idx, gen = slots["b"]
    seq, published = 8, []
    writers = [fw]

    def publish(w, n):
        nonlocal seq
        recs = []
        for _ in range(n):
            seq += 8
            key = b"k%d" % seq
            recs.append((seq, 1, idx, gen, key, b"v" * 50, 0, seq, 0))
            published.append((seq, key))
        w.publish(ring_records_to_events(recs, {}))

    def drain(w):
        watcher, seen = w
        for e in watcher.poll(100000):
            if e.gone:
                seen.append(("gone", e.oldest))
                w[0] = Watcher(store, "b", since=e.oldest)
                return
            seen.append((e.seq, e.key))
    watchers = [[Watcher(store, "b"), []], [Watcher(store, "b"), []]]
    for _ in range(3):                  # each writer wraps the 64 KiB area twice
        for batch in range(60):
            publish(writers[-1], 20)
            drain(watchers[0])
            if batch % 40 == 0:
                drain(watchers[1])
        writers.append(FeedWriter(store.name, 64 << 10, 1024))     # the next writer
    try:
        for w in watchers:
            drain(w)
            drain(w)
            watcher, seen = w
            after = 0
            for item in seen:
                if item[0] == "gone":
                    after = item[1]
                    continue
                later = [p for p in published if p[0] > after]
                assert later[0] == item
                after = item[0]
            assert after == published[-1][0]
        assert any(item[0] == "gone" for item in watchers[1][1])
        assert not any(item[0] == "gone" for item in watchers[0][1])
    finally:
        for w in writers[1:]:
            w.close()
