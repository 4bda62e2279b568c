"""Each stripe counts its entries that carry an expiry (nttl), so that the expiry cycle
passes over stripes without one unread. The count must be exact after every kind of
change, or keys would be left to lazy expiry alone: stats()["keys_with_ttl"] (the sum
of the counts) is compared with the keys whose ttl() is set, and check() (which
verifies each stripe's count against its entries) is clean after every phase. The
cycle's own counters (store.expire_scanned, expire_entries_read) show what it read.
Time is an injected clock."""
import struct

import pytest

import bukt
from bukt import errors
from mp_common import HEADER_SIZE, NTTL_AT, clocked_keys, die_holding_stripe, stripe_words

T0 = 1_800_000_000_000


@pytest.fixture
def clock(store):
    store.set_time(T0)
    return store


def with_ttl(store):
    """The live keys with a TTL, counted through the API (not the stripe counts)."""
    n = 0
    for name in store.buckets():
        b = store.bucket(name)
        cursor = 0
        while True:
            cursor, keys = b.scan(cursor=cursor, count=1000)
            n += sum(1 for k in keys if b.ttl(k) is not None)
            if cursor == 0:
                break
    return n


def exact(store, expected=None, what=""):
    assert store.check() == [], what
    counted = with_ttl(store)
    assert store.stats()["keys_with_ttl"] == counted, what
    if expected is not None:
        assert counted == expected, what


def full_pass(store, now=None):
    """One expire_some pass over every stripe: (removed, stripes read, entries read)."""
    s0, e0 = store.expire_scanned, store.expire_entries_read
    removed = store.expire_some(now=now, budget=60.0)
    return removed, store.expire_scanned - s0, store.expire_entries_read - e0


def test_every_kind_of_write_keeps_the_count_exact(clock, bucket):
    b = bucket
    for i in range(200):
        b.set(b"plain%d" % i, b"v")
    exact(clock, 0, "sets without ttl")
    for i in range(100):
        b.set(b"ttl%d" % i, b"v", ttl=60)
    exact(clock, 100, "sets with ttl")
    b.expire(b"plain0", 30)
    b.expire(b"ttl0", 30)                       # a new expiry on a key that had one
    exact(clock, 101, "expire")
    assert b.persist(b"plain0") and b.persist(b"ttl1") and b.persist(b"plain1")
    exact(clock, 99, "persist")
    b.set(b"ttl2", b"w")                        # overwrite drops the ttl
    b.set(b"plain2", b"w", ttl=5)               # overwrite adds one
    b.set(b"ttl3", b"w", ttl=7)                 # ttl to ttl
    b.set(b"plain3", b"w")                      # none to none
    b.set(b"ttl4", b"w", xx=True, ttl=9)
    b.set(b"ttl4", b"x", nx=True)               # refused: no change
    exact(clock, 99, "overwrites")
    assert b.delete(b"ttl5", b"plain4", b"absent") == 2
    assert b.delete(b"ttl6", if_version=b.version(b"ttl6")) == 1
    exact(clock, 97, "deletes")
    assert b.getdel(b"ttl7") == b"v" and b.getdel(b"plain5") == b"v"
    exact(clock, 96, "getdel")
    b.set(b"once", b"s", ttl=60, single_read=True)
    b.set(b"once-plain", b"s", single_read=True)
    exact(clock, 97, "single-read sets")
    assert b.get(b"once") == b"s" and b.get(b"once-plain") == b"s"      # consumed
    exact(clock, 96, "single-read consumed")
    assert b.incr(b"n1", ttl=10) == 1           # a new counter with a ttl
    assert b.incr(b"n1", 5) == 6                # keeps it
    assert b.incr(b"n2") == 1                   # none
    b.set(b"n3", b"4", ttl=3)
    assert b.incr(b"n3") == 5
    exact(clock, 98, "incr")
    d = clock.create_bucket("d", persist=False, default_ttl=5)
    for i in range(10):
        d.set(b"k%d" % i, b"v")
    d.incr(b"c")
    d.set(b"k0", b"v", ttl=50)
    exact(clock, 109, "default ttl")


def test_expiry_lazy_and_active_keeps_the_count_exact(clock, bucket):
    for i in range(300):
        bucket.set(b"k%d" % i, b"v", ttl=1 + i % 3)
    for i in range(50):
        bucket.set(b"p%d" % i, b"v")
    exact(clock, 300)
    clock.set_time(T0 + 1000)                   # a third is due, still in the table
    assert clock.stats()["keys_with_ttl"] == 300 and clock.check() == []
    assert bucket.get(b"k0") is None            # lazy: a read removes it
    assert bucket.set(b"k3", b"v", nx=True)     # nx over an expired key: no ttl now
    assert not bucket.expire(b"k6", 10)         # expire of an expired key removes it
    assert bucket.delete(b"k9") == 0
    assert clock.stats()["keys_with_ttl"] == 296
    assert clock.check() == []
    removed, scanned, _ = full_pass(clock)      # active: the other 96
    assert removed == 96 and scanned > 0
    exact(clock, 200, "after the first expiry")
    clock.set_time(T0 + 3000)
    assert full_pass(clock)[0] == 200
    exact(clock, 0, "everything with a ttl expired")
    assert bucket.stats()["reads"] == 1 and bucket.stats()["keys"] == 51


def test_flush_and_drop_bucket(clock):
    a = clock.create_bucket("a", persist=False)
    c = clock.create_bucket("c", persist=False)
    for i in range(100):
        a.set(b"k%d" % i, b"v", ttl=10 if i % 2 else None)
        c.set(b"k%d" % i, b"v", ttl=10 if i % 4 else None)
    exact(clock, 125)
    assert a.flush() == 100
    exact(clock, 75, "flush")
    clock.drop_bucket("c")
    exact(clock, 0, "drop")
    assert clock.stats()["keys"] == 0


def test_eviction_in_a_full_lru_segment(segname):
    s = bukt.create(segname, size="16MiB")
    s.set_time(T0)
    b = s.create_bucket("cache", persist=False)
    for i in range(20000):
        if i == 100:
            s.set_time(T0 + 10_000)
        b.set(b"k%d" % i, b"v" * 1000, ttl=3600 if i % 3 else None)
    assert b.stats()["evictions"] > 0
    exact(s, what="after evictions")
    assert 0 < s.stats()["keys_with_ttl"] < b.stats()["keys"]
    s.close()


def test_index_full_evicts_within_the_stripe(segname):
    s = bukt.create(segname, size="16MiB", index_slots=512)   # one stripe, 448 keys
    s.set_time(T0)
    b = s.create_bucket("cache", persist=False)
    for i in range(1000):
        b.set(b"c%d" % i, b"v", ttl=100 if i % 2 else None)
    assert b.stats()["evictions"] > 0
    exact(s, what="after evictions from a full stripe")
    s.close()


def test_the_slab_mover_keeps_the_count_exact(segname):
    s = bukt.create(segname, size="8MiB", max_value=256 * 1024, index_slots=65536)
    now = T0
    s.set_time(now)
    b = s.create_bucket("cache", persist=False)
    for size, n in ((100, 120_000), (2_000, 1_500), (40_000, 100)):
        for i in range(n):
            now += 1
            s.set_time(now)
            b.set(b"s%d_%d" % (size, i), b"x" * size, ttl=3600 if i % 2 else None)
    assert s.stats()["slab_moves"] > 0
    exact(s, what="after slab moves")
    s.close()


def test_expire_some_reads_nothing_when_no_key_has_a_ttl(clock, bucket):
    for i in range(5000):
        bucket.set(b"k%d" % i, b"v")
    assert full_pass(clock) == (0, 0, 0)
    assert full_pass(clock, now=T0 + 10 ** 9) == (0, 0, 0)
    bucket.set(b"one", b"v", ttl=1)             # one stripe now holds an expiry,
    assert full_pass(clock) == (0, 0, 0)        # not due for a second (its bound)
    clock.set_time(T0 + 1000)
    removed, scanned, entries = full_pass(clock)
    assert (removed, scanned) == (1, 1) and 1 <= entries <= 448
    assert bucket.stats()["reads"] == 0 and bucket.stats()["expirations"] == 1
    assert full_pass(clock) == (0, 0, 0)
    exact(clock, 0)
    bucket.set(b"two", b"v", ttl=5)
    assert bucket.persist(b"two")               # a persist takes it off the count too
    assert full_pass(clock) == (0, 0, 0)


def test_expire_some_still_finds_keys_spread_over_every_stripe(clock, bucket):
    """Few keys with a TTL, in many stripes: each is reclaimed unread, and only the
    stripes holding one are read, once it is due."""
    nstripes = clock.limits["nstripes"]
    for i in range(5000):
        bucket.set(b"k%d" % i, b"v", ttl=1 if i % 50 == 0 else None)
    assert full_pass(clock) == (0, 0, 0)
    clock.set_time(T0 + 1000)
    removed, scanned, entries = full_pass(clock)
    assert removed == 100 and 0 < scanned <= 100 and scanned < nstripes
    assert entries < 5000
    assert bucket.stats()["keys"] == 4900 and bucket.stats()["reads"] == 0
    exact(clock, 0)


def test_check_reports_a_count_that_drifted(store, segname, bucket):
    for i in range(100):
        bucket.set(b"k%d" % i, b"v", ttl=10)
    assert store.check() == []
    where = HEADER_SIZE + NTTL_AT               # stripe 0
    with open(f"/dev/shm/bukt-{segname}", "r+b") as f:
        f.seek(where)
        (true,) = struct.unpack("<I", f.read(4))
        for wrong in (true + 1, max(true, 1) - 1):
            if wrong == true:
                continue
            f.seek(where)
            f.write(struct.pack("<I", wrong))
            f.flush()
            problems = store.check()
            assert any(p.startswith("stripe 0: nttl") for p in problems), problems
        f.seek(where)
        f.write(struct.pack("<I", true))
    assert store.check() == []


def test_the_repair_of_a_dead_holders_stripe_recounts(segname):
    store, bucket = clocked_keys(segname, 1024, 200, lambda i: 10 if i % 2 else None,
                                 T0)                                   # two stripes
    true = stripe_words(segname, 0)[0]
    assert 0 < true < 100
    repairs = store.stats()["repairs"]
    die_holding_stripe(segname, 0, NTTL_AT, "<I", true + 7)
    exact(store, 100)                           # check() takes the lock: repaired
    assert store.stats()["repairs"] == repairs + 1
    die_holding_stripe(segname, 0, NTTL_AT, "<I", 0)          # too low: keys would never expire
    assert store.stats()["keys_with_ttl"] == 100 - true
    store.set_time(T0 + 20_000)
    assert full_pass(store)[0] == 100 - true    # stripe 0 passed over, unrepaired
    assert store.check() == []                  # its lock is taken: repaired
    assert store.stats()["repairs"] == repairs + 2
    assert full_pass(store)[0] == true          # and its expired keys are found
    exact(store, 0)
    store.close()
