"""The change feed's events as watchers get them (bukt/feed.py, bukt/_feedread.pyx): each
watcher of a process, whatever its view (bucket, prefix, values) and however many
events it takes a poll, gets exactly the events a reference model of the published
ring records says, in order, across the stretches the process parses and shares and
across the area's wraps; and an Event stays the value it was (attributes, ttl,
as_dict, repr, pickle) while costing the cyclic garbage collector nothing."""
import gc
import json
import os
import pickle
import random

import pytest

import bukt
from bukt.feed import KINDS, Event, Feed, FeedWriter, Watcher
from names import unique_name

MAXV = 1024
VSIZE_UNKNOWN = 0xffffffff


@pytest.fixture
def setup():
    name = unique_name("feedev")
    store = bukt.create(name, size=8 << 20)
    store.create_bucket("b")
    store.create_bucket("other")
    slots = {row[3]: (row[0], row[1]) for row in store.bucket_table()}
    fw = FeedWriter(name, 1 << 20, MAXV)
    Feed._open.clear()
    yield store, fw, slots
    fw.close()
    os.unlink(fw.path)
    store.close()
    store.unlink()


def expected(rec, slot, prefix, values):
    """The reference model: the event (seq, kind, key, version, expire_ms, value,
    value_size) a watcher of bucket slot `slot` with `prefix` and `values` gets of ring
    record `rec`, or None; "drop" for the bucket's drop."""
    seq, rtype, idx, gen, key, value, expire_ms, version, flags = rec
    if (idx, gen) != slot:
        return None
    if rtype == 16:
        return (seq, "drop", b"", 0, 0, None, None)
    if not key.startswith(prefix):
        return None
    if rtype == 1:
        kind = "incr" if flags & 0x40 else "set"
        size = None if flags & 0x08 else len(value)
        kept = values and size is not None and size <= MAXV
        return (seq, kind, key, version, expire_ms, value if kept else None, size)
    kind = {2: "flush" if flags & 0x20 else "delete", 3: "expired", 4: "evicted",
            5: "expire"}[rtype]
    return (seq, kind, key, version, expire_ms, None, None)


def as_tuple(e):
    return (e.seq, e.kind, e.key, e.version, e.expire_ms, e.value, e.value_size)


def test_each_view_gets_exactly_its_events_in_order(setup):
    """Batches of every kind of record (keys and values of many sizes, values over
    max_value, other buckets' records), published with the writer's publish_ring into
    a 1 MiB area that wraps twice; watchers of several views, some taking 1, 7 or
    256 events a poll, some polling only every third batch (so a poll crosses the
    256 KiB stretches the process parses and shares), one pair in step. At the end the
    bucket is dropped: each watcher's last event is the drop."""
    store, fw, slots = setup
    rnd = random.Random(5)
    slot = slots["b"]
    views = [(b"", False), (b"", False), (b"", True), (b"k1", False), (b"k2", True)]
    watchers = []
    for i, (prefix, values) in enumerate(views):
        for max_events, pace in ((4096, 1), (4096, 3), (1, 1), (7, 3), (256, 3)):
            watchers.append([Watcher(store, "b", prefix, values=values), max_events, pace,
                             prefix, values, []])
    model = []
    seq = 64
    for batch in range(140):
        recs = []
        for _ in range(rnd.choice([1, 5, 60, 300])):
            seq += 8 * rnd.randint(1, 3)
            key = b"k%d-" % rnd.randint(0, 30) + b"x" * rnd.choice([0, 3, 50, 200])
            idx, gen = slot if rnd.random() < 0.85 else slots["other"]
            r = rnd.random()
            if r < 0.6:
                value = b"v" * rnd.choice([0, 1, 100, MAXV, MAXV + 1, 3000])
                flags = rnd.choice([0, 0, 0x40, 0x08])
                if flags == 0x08:
                    value = b""
                rec = (seq, 1, idx, gen, key, value, rnd.choice([0, 10 ** 12]), seq, flags)
            else:
                rec = (seq, rnd.choice([2, 3, 4, 5]), idx, gen, key, b"",
                       rnd.choice([0, 10 ** 12]), seq, rnd.choice([0, 0x20]))
            recs.append(rec)
        if batch == 139:
            seq += 8
            recs.append((seq, 16, slot[0], slot[1], b"", json.dumps({"op": "drop"}).encode(),
                         0, 0, 0))
        fw.publish_ring(recs, {})
        model.extend(recs)
        for w in watchers:
            watcher, max_events, pace, _p, _v, seen = w
            if batch % pace and batch != 139:
                continue
            while True:
                evs = watcher.poll(max_events)
                seen.extend(evs)
                if not evs or watcher.dropped:
                    break
    assert fw.head > 2 * (1 << 20)              # (it wrapped)
    for watcher, max_events, pace, prefix, values, seen in watchers:
        want = [x for x in (expected(r, slot, prefix, values) for r in model) if x]
        assert not any(e.gone for e in seen)
        assert [as_tuple(e) for e in seen] == want, (max_events, pace, prefix, values)
        assert watcher.dropped and watcher.poll() == []
        assert all(e.bucket == "b" and e.ms > 0 for e in seen)


def test_events_are_shared_read_only_and_not_tracked_by_the_collector(setup):
    """The watchers of one view in a process get the same Event objects (made once, kept
    with the stretch): no watcher may change one under the others, and none is an
    object the cyclic collector tracks (in bulk they set it off, and it walked them)."""
    store, fw, slots = setup
    idx, gen = slots["b"]
    w1, w2 = Watcher(store, "b", values=True), Watcher(store, "b", values=True)
    fw.publish_ring([(72 + 8 * i, 1, idx, gen, b"k%d" % i, b"v%d" % i, 0, i + 1, 0)
                     for i in range(100)], {})
    a, b = w1.poll(), w2.poll()
    assert len(a) == 100 and all(x is y for x, y in zip(a, b))
    for e in a:
        assert not gc.is_tracked(e)
        with pytest.raises(AttributeError):
            e.key = b"changed"
        with pytest.raises(AttributeError):
            e.value = None
    assert [e.key for e in b] == [b"k%d" % i for i in range(100)]


def test_an_event_reads_compares_pickles_and_prints_as_before():
    """What a face or a user reads of an Event (bukt.client makes them too): its
    fields, ttl, as_dict, repr; a pickled one comes back equal field for field;
    equality is identity, as it was."""
    e = Event(12345678901, 1_700_000_000_000, "b", b"k\xff", "set", 7,
              1_700_000_003_500, b"caf\xc3\xa9", 5)
    assert (e.seq, e.ms, e.bucket, e.key, e.kind, e.version, e.expire_ms, e.value,
            e.value_size, e.gone) == (12345678901, 1_700_000_000_000, "b", b"k\xff", "set",
                                      7, 1_700_000_003_500, b"caf\xc3\xa9", 5, False)
    assert e.ttl == 3.5
    assert repr(e) == "Event(12345678901, set, 'b', b'k\\xff')"
    assert e.as_dict() == {"seq": 12345678901, "time_ms": 1_700_000_000_000,
                           "bucket": "b", "key_hex": "6bff", "kind": "set", "version": 7,
                           "ttl": 3.5, "expire_ms": 1_700_000_003_500}
    assert e.as_dict(True)["value"] == "café" and e.as_dict(True)["value_size"] == 5
    d = Event(9, 5, "b", b"key", "delete", 0, 0, None, None)
    assert d.ttl is None and d.value_size is None and d.value is None
    assert d.as_dict(True) == {"seq": 9, "time_ms": 5, "bucket": "b", "key": "key",
                               "key_hex": "6b6579", "kind": "delete", "version": 0,
                               "ttl": None, "expire_ms": None, "value_size": None}
    assert Event(1, 10, "b", b"k", "set", 1, 5, b"\xff", 1).ttl == 0.0
    assert Event(1, 10, "b", b"k", "set", 1, 0, b"\xff", 1).as_dict(True)["value_hex"] == "ff"
    for x in (e, d):
        y = pickle.loads(pickle.dumps(x))
        assert type(y) is type(x) and as_tuple(y) == as_tuple(x)
        assert (y.bucket, y.ms, y.ttl, repr(y)) == (x.bucket, x.ms, x.ttl, repr(x))
        assert y != x and x == x
    assert set(KINDS.values()) >= {"set", "delete", "expired", "evicted", "expire",
                                    "incr", "flush", "drop"}


@pytest.mark.parametrize("max_events", [3, 4096])
@pytest.mark.parametrize("damage", ["stamp", "key overruns"])
def test_a_damaged_record_ends_the_watch_after_the_sound_ones(setup, damage, max_events):
    """A record whose stamp is not its position, or whose key and value would run past
    its own length, is damage: a watcher gets every event before it, then a Gone
    saying the feed is damaged, never bytes from outside the record."""
    import struct
    from bukt.feed import HEADER
    store, fw, slots = setup
    idx, gen = slots["b"]
    w = Watcher(store, "b")
    fw.publish_ring([(72 + 8 * i, 1, idx, gen, b"k%d" % i, b"v" * 20, 0, i + 1, 0)
                     for i in range(10)], {})
    pos = fw.held[-1][0][6]                         # the 7th record's position
    off = HEADER + pos % fw.size
    if damage == "stamp":
        struct.pack_into("<Q", fw.buf, off, pos + 8)
    else:
        struct.pack_into("<I", fw.buf, off + 44, 4000)          # its key length
    got = []
    while not (got and got[-1].gone):
        evs = w.poll(max_events)
        assert evs
        got.extend(evs)
    assert [e.key for e in got[:-1]] == [b"k%d" % i for i in range(6)]
    assert got[-1].reason == "the feed is damaged" and w.poll() == []
