"""Pages move between size classes (the slab mover, cext/alloc.pxi), and the LRU
clock orders eviction. Once every page of a full segment belongs to one size, an
`lru` bucket must still take values of another size, by emptying a slab of the old
size and carving the pages anew; a non-evicting bucket's entries are never moved
out; check() is clean after every phase (it verifies the pagemap, the doubly linked
free lists and the unassigned page count)."""
import pytest

import bukt
from bukt import errors

T0 = 1_800_000_000_000


def fill(b, prefix, size, n, step=1):
    """Write n keys of `size`-byte values, `step` milliseconds apart on the store's
    injected clock; the keys, newest last. LRU stamps are 64 ms ticks counted from the
    segment's (real) creation time, so only step=64 gives every key its own tick."""
    keys = [b"%s%06d" % (prefix, i) for i in range(n)]
    for i, k in enumerate(keys):
        clock[0] += step
        b.store.set_time(clock[0])
        b.set(k, bytes([i % 251]) * size)
    return keys


clock = [T0]


@pytest.fixture
def small(segname):
    s = bukt.create(segname, size="8MiB", max_value=256 * 1024, index_slots=65536)
    yield s
    s.close()


def test_a_full_segment_of_small_values_takes_large_ones(small):
    b = small.create_bucket("cache", persist=False)
    fill(b, b"small", 100, 120_000)                 # every page goes to one small class
    st = small.stats()
    assert st["evictions_total"] > 0, "the small values did not fill the segment"
    assert st["pages_used"] == st["pages_total"] and st["slab_moves"] == 0
    # each size below had no page left when it came: it must take pages from others
    for size, n in ((2_000, 1_500), (40_000, 100), (150_000, 20), (100, 5_000)):
        before = small.stats()["slab_moves"]
        # a tick per write: keys sharing a tick are equally old to the evictor, which
        # then may take one of the newest (2 runs in 40 did, with 1 ms apart)
        keys = fill(b, b"size%d_" % size, size, n, step=64)
        assert small.stats()["slab_moves"] > before, f"{size}-byte values moved no slab"
        for i, k in enumerate(keys[-5:], start=n - 5):      # the newest are there
            assert b.get(k) == bytes([i % 251]) * size, f"{k!r} lost"
        assert small.check() == [], f"after the {size}-byte phase"


def test_non_evicting_buckets_keep_every_key_while_pages_move(small):
    keep = small.create_bucket("keep", eviction="none", persist=False)
    cache = small.create_bucket("cache", persist=False)
    kept = fill(keep, b"keep", 100, 5_000)
    fill(cache, b"c", 100, 100_000)
    fill(cache, b"big", 30_000, 200)                # pages leave the small class
    assert small.stats()["slab_moves"] > 0
    for i, k in enumerate(kept):
        assert keep.get(k) == bytes([i % 251]) * 100, f"{k!r} of the none bucket moved away"
    # and the none bucket still refuses rather than evicts when nothing is free for it
    with pytest.raises(errors.SegmentFull):
        fill(keep, b"more", 30_000, 400)
    assert all(keep.get(k) is not None for k in kept)
    assert small.check() == []


def test_lru_evicts_what_was_not_read(segname):
    """Keys read after they were written survive a flood that evicts most of the
    others: the reader's stamp (beside the slot) is newer than the unread keys'."""
    s = bukt.create(segname, size="8MiB", index_slots=65536)
    b = s.create_bucket("cache", persist=False)
    old = fill(b, b"old", 100, 24_000)          # the segment holds about 33,000
    hot = old[::10]                                 # every tenth key is read later
    clock[0] += 10_000
    s.set_time(clock[0])                            # ten seconds on: a newer stamp
    for k in hot:
        assert b.get(k) is not None
    fill(b, b"new", 100, 24_000)                    # about 15,000 must go
    assert s.stats()["evictions_total"] > 10_000
    cold = [k for k in old if k not in set(hot)]
    hot_left = sum(b.exists(k) for k in hot) / len(hot)
    cold_left = sum(b.exists(k) for k in cold) / len(cold)
    assert hot_left > 0.9 and cold_left < 0.6, (hot_left, cold_left)
    assert s.check() == []
    s.close()


def test_nothing_evictable_anywhere_is_segment_full(small):
    """An lru bucket's write into memory that non-evicting buckets hold entirely is
    refused (SegmentFull), and the none bucket's keys stay."""
    keep = small.create_bucket("keep", eviction="none", persist=False)
    cache = small.create_bucket("cache", persist=False)
    kept = []
    with pytest.raises(errors.SegmentFull):
        for i in range(200_000):
            keep.set(b"k%06d" % i, b"x" * 100)
            kept.append(b"k%06d" % i)
    for size in (100, 5_000, 100_000):
        with pytest.raises(errors.SegmentFull, match="nothing evictable"):
            cache.set(b"new", b"y" * size)
    assert keep.exists(*kept) == len(kept)
    assert small.check() == []
