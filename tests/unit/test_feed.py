"""The change feed's ring (bukt/feed.py) in one process: a writer publishing batches of
every size into a small area, watchers polling at random paces. Every watcher sees
exactly the published events of its bucket in order, or a Gone after which resuming
from Gone.oldest continues with exactly the events after that point: never a gap."""
import os
import random

import pytest

import bukt
from bukt.feed import Feed, FeedWriter, Watcher, ring_records_to_events
from names import unique_name


@pytest.fixture
def setup():
    name = unique_name("feedunit")
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


def test_publish_ring_writes_what_publish_writes():
    """The writer's compiled publish (publish_ring: feed_measure and feed_write in
    bukt/writer/_logscan.pyx) leaves the feed area byte for byte as the Python one
    (publish of ring_records_to_events) does, batch after batch, through wraps, paddings and
    overwrites, with every kind of ring record: sets (incr, no value, a value over
    max_value, a compressed one, a key too long for the area), deletes and flushes,
    expiries, evictions, touches, an object's hidden entries, a drop and other META
    records, records an earlier writer published, types the feed does not report."""
    import json
    from bukt import codec
    from bukt.feed import HEAD, HEADER, LAST, LOST, LOW, UPTO_W
    words = [HEAD // 8, LOW // 8, LOST // 8, LAST // 8, UPTO_W]
    name = unique_name("feedpack")
    size, maxv = 64 << 10, 1024
    a, b = FeedWriter(name + "-a", size, maxv), FeedWriter(name + "-b", size, maxv)
    try:
        rnd = random.Random(11)
        names = {(3, 1): "b"}
        frame, cflag = codec.compress(b"z" * 3000, codec.ZSTD)
        small, sflag = codec.compress(b"q" * 900, codec.ZSTD)
        seq = 8
        for batch in range(300):
            recs = []
            for _ in range(rnd.choice([0, 1, 3, 40, 200])):
                seq += 8 * rnd.randint(1, 4)
                r = rnd.random()
                key = b"k%d-" % seq + b"x" * rnd.choice([0, 5, 100, 240])
                if r < 0.5:
                    value = b"v" * rnd.choice([0, 3, 100, 1024, 1025, 5000])
                    flags = rnd.choice([0, 0, 0x40, 0x08, 0x04, 0x10 << 8, 0x01 << 8])
                    if flags == 0x08:
                        value = b""
                    recs.append((seq, 1, 3, 1, key, value, rnd.choice([0, 123456]), seq,
                                 flags))
                elif r < 0.55:
                    c, f = rnd.choice([(frame, cflag), (small, sflag), (b"junk", cflag)])
                    recs.append((seq, 1, 3, 1, key, c, 0, seq, f << 8))
                elif r < 0.57:
                    recs.append((seq, 1, 3, 1, b"L" * 20000, b"v", 0, seq, 0))
                elif r < 0.8:
                    recs.append((seq, rnd.choice([2, 3, 4, 5]), 3, 1, key, b"", 0, seq,
                                 rnd.choice([0, 0x20])))
                elif r < 0.83:
                    op = rnd.choice(["drop", "create", "settings"])
                    recs.append((seq, 16, 3, 1, b"", json.dumps({"op": op}).encode(), 0,
                                 0, 0))
                elif r < 0.85:
                    recs.append((seq, 16, 3, 1, b"", b"not json", 0, 0, 0))
                elif r < 0.87:
                    recs.append((seq, rnd.choice([6, 9, 40]), 3, 1, key, b"", 0, seq, 0))
                else:
                    recs.append((seq, 1, 3, rnd.randint(1, 3), key, b"w" * 10, 0, seq, 0))
            if batch % 50 == 7 and recs:
                # records published before (an earlier writer's, as after a restart)
                a.publish(ring_records_to_events(recs[:len(recs) // 2], names), 1000 + batch)
                b.publish_ring(recs[:len(recs) // 2], names, 1000 + batch)
            upto = seq + 8
            a.publish(ring_records_to_events(recs, names), 1000 + batch, upto)
            b.publish_ring(recs, names, 1000 + batch, upto)
            assert (a.head, a.low, a.lost, a.last) == (b.head, b.low, b.lost, b.last), batch
            assert [a.q[w] for w in words] == [b.q[w] for w in words], batch
            assert a.buf[HEADER:] == b.buf[HEADER:], batch
        assert a.head > 4 * size                # (it wrapped, and overwrote, often)
    finally:
        for fw in (a, b):
            fw.close()
            os.unlink(fw.path)
