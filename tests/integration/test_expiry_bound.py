"""Each stripe keeps a lower bound on the earliest expiry among its entries
(min_expire_ms), and the expiry cycle passes over a stripe whose bound is still ahead
without reading its entries: keys with a TTL an hour away cost a pass nothing until
then. The bound may be too low (that costs one walk, which sets it exactly), never too
high (an expired key would wait for lazy expiry alone): check() verifies that after
every phase, the debug build after every change, and the cycle's own counters
(store.expire_scanned, expire_entries_read) show what it read. Time is an injected
clock."""
import struct

import bukt
from mp_common import (BOUND_AT, HEADER_SIZE, STRIPE_BYTES, clocked_keys,
                       die_holding_stripe, stripe_words)

T0 = 1_800_000_000_000
NO_EXPIRY = (1 << 63) - 1


def full_pass(store, now=None):
    """One expire_some pass over every stripe: (removed, stripes read, entries read)."""
    s0, e0 = store.expire_scanned, store.expire_entries_read
    removed = store.expire_some(now=now, budget=60.0)
    return removed, store.expire_scanned - s0, store.expire_entries_read - e0


def set_bound(segname, si, value):
    with open(f"/dev/shm/bukt-{segname}", "r+b") as f:
        f.seek(HEADER_SIZE + si * STRIPE_BYTES + BOUND_AT)
        f.write(struct.pack("<q", value))


def test_a_pass_reads_only_the_stripes_where_a_key_is_due(store, segname, bucket):
    store.set_time(T0)
    for i in range(20000):
        bucket.set(b"plain%d" % i, b"v")
    for i in range(2000):                           # ~1 key in 10, an hour away
        bucket.set(b"far%d" % i, b"v", ttl=3600)
    for i in range(10):
        bucket.set(b"near%d" % i, b"v", ttl=1 + i)  # due 1 s ... 10 s from now
    nstripes = store.stats()["index_stripes"]       # the ones the grown index uses
    with_ttl = sum(1 for si in range(nstripes) if stripe_words(segname, si)[0])
    assert with_ttl > nstripes * 9 // 10            # nearly every stripe holds one
    assert store.check() == []
    # nothing is due: no stripe is read, however many hold a key with a TTL
    assert full_pass(store) == (0, 0, 0)
    assert full_pass(store, now=T0 + 999) == (0, 0, 0)
    # five near keys are due: at most their five stripes are read
    store.set_time(T0 + 5000)
    removed, scanned, entries = full_pass(store)
    assert removed == 5 and 1 <= scanned <= 5
    assert entries <= scanned * 448 and entries < 22010 // 20     # under 5% of the keys
    # a walk sets its stripe's bound exactly: the next pass reads nothing
    assert full_pass(store) == (0, 0, 0)
    assert store.check() == []
    store.set_time(T0 + 10_000)
    removed, scanned, _ = full_pass(store)
    assert removed == 5 and 1 <= scanned <= 5
    assert full_pass(store) == (0, 0, 0)
    # an hour on, every stripe holding a far key is read, and each far key found
    with_ttl = sum(1 for si in range(nstripes) if stripe_words(segname, si)[0])
    store.set_time(T0 + 3600_000)
    removed, scanned, entries = full_pass(store)
    assert removed == 2000 and scanned == with_ttl
    assert full_pass(store) == (0, 0, 0)
    assert store.stats()["keys_with_ttl"] == 0 and bucket.stats()["keys"] == 20000
    assert bucket.stats()["reads"] == 0 and store.check() == []


def test_every_write_keeps_the_bound_at_or_below_the_earliest_expiry(segname):
    """One stripe, so every key shares its bound: each kind of write either lowers it
    to the expiry it writes or leaves it low; only a walk raises it, to the exact
    earliest expiry."""
    s = bukt.create(segname, size="16MiB", index_slots=512)
    s.set_time(T0)
    b = s.create_bucket("b", persist=False)
    bound = lambda: stripe_words(segname, 0)[1]     # noqa: E731

    def sound(what):
        assert s.check() == [], what

    assert bound() == NO_EXPIRY                     # a new segment: nothing expires
    b.set(b"plain", b"v")
    assert bound() == NO_EXPIRY
    b.set(b"a", b"v", ttl=100)
    assert bound() == T0 + 100_000
    b.set(b"b", b"v", ttl=10)
    assert bound() == T0 + 10_000
    assert b.expire(b"a", 5)                        # an earlier expiry in place
    assert bound() == T0 + 5000
    sound("set, expire")
    assert b.persist(b"a")                          # the earliest goes: stale, low
    b.set(b"b", b"w", ttl=50)                       # a later one over an earlier one
    assert b.expire(b"plain", 200)
    assert bound() == T0 + 5000
    sound("persist, overwrite")
    assert full_pass(s, now=T0 + 4999)[:2] == (0, 0)    # not due yet: unread
    s.set_time(T0 + 5000)
    assert full_pass(s)[:2] == (0, 1)               # due: walked, nothing expired
    assert bound() == T0 + 50_000                   # b's, exactly
    assert full_pass(s)[:2] == (0, 0)
    assert b.incr(b"n", ttl=2) == 1                 # incr with a ttl
    assert bound() == T0 + 7000
    b.mset({b"m1": b"v", b"m2": b"v"}, ttl=1)
    assert bound() == T0 + 6000
    b.set(b"once", b"v", ttl=0.5, single_read=True)
    assert bound() == T0 + 5500
    d = s.create_bucket("d", persist=False, default_ttl=0.25)
    d.set(b"x", b"v")                               # the bucket's default ttl
    assert bound() == T0 + 5250
    sound("incr, mset, single-read, default ttl")
    s.set_time(T0 + 6000)
    assert full_pass(s)[:2] == (4, 1)               # x, once, m1, m2
    assert bound() == T0 + 7000                     # n's
    assert b.delete(b"n") == 1
    assert bound() == T0 + 7000                     # stale, low
    s.set_time(T0 + 7000)
    assert full_pass(s)[:2] == (0, 1) and bound() == T0 + 50_000
    b.set(b"nx", b"v", nx=True, ttl=3)              # an earlier one, 3 s on
    assert bound() == T0 + 10_000
    assert b.set(b"nx", b"w", nx=True, ttl=1) is None       # refused: no change
    assert bound() == T0 + 10_000
    sound("delete, nx")
    # restore and restore_ttl (the slow recovery path) lower it like any write
    assert b.restore(b"r", b"v", expire_ms=T0 + 9000)
    assert bound() == T0 + 9000
    assert b.restore_ttl(b"b", T0 + 8000)
    assert bound() == T0 + 8000
    sound("restore")
    s.set_time(T0 + 300_000)                        # every expiry passed
    assert full_pass(s)[:2] == (4, 1)               # b, plain, nx, r
    assert s.stats()["keys_with_ttl"] == 0 and bound() == NO_EXPIRY
    sound("all expired")
    s.close()


def test_check_reports_a_bound_after_the_earliest_expiry(segname):
    store, _ = clocked_keys(segname, 512, 100, lambda i: 10 + i, T0)   # one stripe
    assert store.check() == []
    nttl, true = stripe_words(segname, 0)
    assert nttl == 100 and true == T0 + 10_000
    set_bound(segname, 0, true + 1)                 # too high: a key would be left
    problems = store.check()
    assert any(p.startswith("stripe 0: expiry bound") for p in problems), problems
    set_bound(segname, 0, 0)                        # too low is only a walk
    assert store.check() == []
    set_bound(segname, 0, true)
    assert store.check() == []
    store.close()


def test_the_repair_of_a_dead_holders_stripe_sets_the_bound_exactly(segname):
    s, b = clocked_keys(segname, 1024, 200, lambda i: 10 if i % 2 else None, T0)
    nttl, true = stripe_words(segname, 0)
    assert 0 < nttl < 100 and true == T0 + 10_000
    repairs = s.stats()["repairs"]
    die_holding_stripe(segname, 0, BOUND_AT, "<q", 0)          # too low: repaired to exact
    assert s.check() == [] and stripe_words(segname, 0)[1] == true
    assert s.stats()["repairs"] == repairs + 1
    die_holding_stripe(segname, 0, BOUND_AT, "<q", NO_EXPIRY)  # too high: keys left
    s.set_time(T0 + 20_000)
    assert full_pass(s)[0] == 100 - nttl            # stripe 0 passed over, unrepaired
    assert s.check() == []                          # its lock is taken: repaired
    assert s.stats()["repairs"] == repairs + 2
    assert full_pass(s)[0] == nttl                  # and its expired keys are found
    assert s.stats()["keys_with_ttl"] == 0 and s.check() == []
    s.close()
