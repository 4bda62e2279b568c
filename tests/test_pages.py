"""Pages return to the common pool (cext/alloc.pxi, the slab mover). A slab whose
chunks are all free, or whose live entries fit in the free chunks of the rest of its
class, is given back for any class and any bucket, so an `eviction: none` bucket
gets SegmentFull only when its memory really holds entries; and the mover's steps
survive a SIGKILL at any of them (the locks' repair, then check())."""
import os

import pytest

import bukt
from bukt import errors

from conftest import unique_name

SMALL = 100                                     # bytes of a small value
BIG = 50 * 1024                                 # bytes of a big value


def small_value(i):
    return bytes([i % 251]) * SMALL


def fill_until_full(b, prefix=b"k"):
    """Set small values until SegmentFull; the keys that went in."""
    keys = []
    with pytest.raises(errors.SegmentFull):
        for i in range(10_000_000):
            k = b"%s%07d" % (prefix, i)
            b.set(k, small_value(i))
            keys.append(k)
    return keys


def deleted_by(keys, fraction):
    """The keys to delete: every other one, 9 of every 10, or all (interleaved, so
    that no slab is left empty but by the last)."""
    if fraction == "half":
        return keys[::2]
    if fraction == "90%":
        return [k for i, k in enumerate(keys) if i % 10]
    return list(keys)


def assert_intact(b, keys):
    for i, k in enumerate(keys):
        assert b.get(k) == small_value(int(k[-7:])), f"{k!r} lost or changed"


@pytest.mark.parametrize("fraction", ["half", "90%", "all"])
@pytest.mark.parametrize("restart", [False, True], ids=["attached", "re-attached"])
def test_deleted_memory_takes_big_values_in_a_none_bucket(segname, fraction, restart):
    """A none bucket fills a segment with 100-byte values until SegmentFull; after
    deleting part of them, 50 KiB values go in until the freed memory is used up
    (before: the first failed, its class had no page and none could move), also
    after re-attaching to the segment; no kept key is lost or changed."""
    s = bukt.create(segname, size="16MiB", max_value=256 * 1024)
    b = s.create_bucket("keep", eviction="none", persist=False)
    keys = fill_until_full(b)
    gone = deleted_by(keys, fraction)
    for k in gone:
        assert b.delete(k) == 1
    kept = sorted(set(keys) - set(gone))
    if restart:
        s.close()
        s = bukt.attach(segname)
        b = s.bucket("keep")
    chunk = s.limits["classes"][[c >= 32 + 8 + SMALL for c in s.limits["classes"]].index(True)]
    freed_pages = len(gone) * chunk // s.limits["page_size"]
    big = 0
    with pytest.raises(errors.SegmentFull, match="eviction 'none'"):
        for i in range(10_000):
            b.set(b"big%05d" % i, bytes([i % 251]) * BIG)
            big += 1
    # every page the deletes freed held a big value, but for a few: the small
    # class's last partly used pages
    assert big >= freed_pages - 2, (big, freed_pages)
    assert_intact(b, kept)
    for i in range(big):
        assert b.get(b"big%05d" % i) == bytes([i % 251]) * BIG
    assert s.stats()["slab_moves"] >= big - 1
    assert s.check() == []
    s.close()


def test_a_none_bucket_at_full_memory_is_refused_fast_and_loses_nothing(segname):
    """When every page holds entries, a big write is refused (SegmentFull) and every
    key stays; a delete of one small key does not free a page's worth."""
    s = bukt.create(segname, size="8MiB", max_value=256 * 1024)
    b = s.create_bucket("keep", eviction="none", persist=False)
    keys = fill_until_full(b)
    b.delete(keys[0])
    with pytest.raises(errors.SegmentFull, match="eviction 'none'"):
        b.set(b"big", b"x" * BIG)
    assert_intact(b, keys[1:])
    assert s.stats()["relocations"] == 0
    assert s.check() == []
    s.close()


def test_an_lru_bucket_takes_freed_memory_without_evicting(segname):
    """An lru bucket in the same situation compacts the small class rather than
    evicting: after deleting every other key, big values take the freed pages and
    no small key is evicted."""
    s = bukt.create(segname, size="16MiB", max_value=256 * 1024)
    keep = s.create_bucket("keep", eviction="none", persist=False)
    cache = s.create_bucket("cache", persist=False)
    keys = fill_until_full(keep)
    for k in keys[::2]:
        keep.delete(k)
    for i in range(20):
        cache.set(b"big%d" % i, b"y" * BIG)
    assert s.stats()["evictions_total"] == 0
    assert s.stats()["relocations"] > 0
    assert_intact(keep, keys[1::2])
    assert s.check() == []
    s.close()


# -- crash safety -----------------------------------------------------------------
# the points of Store._crash_in_page_return: a slab's free chunks half unlinked; its
# first page an orphan; its pages unassigned, not counted free; a relocation's new
# chunk filled, not published; published, the old chunk not freed
CRASH_POINTS = [0, 1, 2, 3, 4]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_page_return_killed_at_any_step_is_repaired(point):
    """A child's big write empties a slab of the small class (relocating its entries)
    and dies at `point`, holding the locks held there. The parent reads every key,
    check() (which takes every lock, repairing) is clean, and the big write then
    succeeds: the page went back or stayed, never lost."""
    name = unique_name("pages")
    s = bukt.create(name, size="8MiB", max_value=256 * 1024)
    try:
        b = s.create_bucket("keep", eviction="none", persist=False)
        keys = fill_until_full(b)
        for k in keys[::2]:
            b.delete(k)
        kept = keys[1::2]
        pid = os.fork()
        if pid == 0:
            try:
                s._crash_in_page_return(point)
                b.set(b"big", b"z" * BIG)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 70
        assert_intact(b, kept)
        assert s.check() == []
        assert s.stats()["repairs"] >= 1
        b.set(b"big", b"z" * BIG)
        assert b.get(b"big") == b"z" * BIG
        assert_intact(b, kept)
        assert s.check() == []
    finally:
        s.close()
        os.unlink(f"/dev/shm/bukt-{name}")
