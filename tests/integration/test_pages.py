"""Pages return to the common pool (cext/alloc.pxi, the slab mover). A slab whose
chunks are all free, or whose live entries fit in the free chunks of the rest of its
class, is given back for any class and any bucket, so an `eviction: none` bucket
gets SegmentFull only when its memory really holds entries; and the mover's steps
survive a SIGKILL at any of them (the locks' repair, then check())."""
import os

import pytest

import bukt
from bukt import errors

from names import unique_name

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


# -- a bucket's own memory limit --------------------------------------------------
def test_a_limited_bucket_evicts_its_own_keys_not_anothers(segname):
    """Bucket A (lru, no limit) holds 200,000 small keys; bucket B (lru, max_memory
    8 MiB) writes 50 KiB values far past its limit. B evicts its own oldest keys and
    stays within its limit; A keeps all 200,000 (before: B's writes took every free
    page, then evicted A's keys through the slab mover)."""
    s = bukt.create(segname, size="64MiB", max_value=256 * 1024)
    a = s.create_bucket("a", persist=False)
    b = s.create_bucket("b", persist=False, max_memory="8MiB")
    assert s.bucket_info("b")["max_memory"] == 8 << 20
    assert s.bucket_info("a")["max_memory"] is None
    for i in range(200_000):
        a.set(b"a%06d" % i, small_value(i))
    now = s.now_ms()
    for i in range(1_500):                      # 75 MB of values through 8 MiB
        s.set_time(now + 64 * (i + 1))          # a tick each: the oldest go first
        b.set(b"b%05d" % i, bytes([i % 251]) * BIG)
        assert b.stats()["memory"] <= 8 << 20
    assert a.stats()["keys"] == 200_000 and a.stats()["evictions"] == 0
    for i in range(200_000):
        assert a.get(b"a%06d" % i) == small_value(i)
    st = b.stats()
    assert st["evictions"] > 1_000 and st["max_memory"] == 8 << 20
    for i in range(1_490, 1_500):               # the newest are there
        assert b.get(b"b%05d" % i) == bytes([i % 251]) * BIG
    assert s.check() == []
    s.close()


def test_a_limited_none_bucket_is_refused_at_its_limit(segname):
    """A none bucket with max_memory gets SegmentFull at its limit while the segment
    has room; a delete makes room again; a value whose chunk alone is over the limit
    is refused; a bad limit is refused at creation."""
    s = bukt.create(segname, size="16MiB", max_value=256 * 1024)
    b = s.create_bucket("b", eviction="none", persist=False, max_memory=1 << 20)
    n = 0
    with pytest.raises(errors.SegmentFull, match="max_memory"):
        for n in range(100_000):
            b.set(b"k%06d" % n, small_value(n))
    assert b.stats()["keys"] == n and b.stats()["memory"] <= 1 << 20
    assert s.stats()["pages_used"] < s.stats()["pages_total"]   # the segment had room
    b.delete(b"k000000")
    b.set(b"again", small_value(0))
    with pytest.raises(errors.SegmentFull, match="max_memory"):
        s.create_bucket("tiny", persist=False, max_memory=1000).set(b"k", b"v" * 2000)
    for bad in (-1, "lots", 1 << 60):
        with pytest.raises(errors.SchemaError, match="max_memory"):
            s.create_bucket("bad", persist=False, max_memory=bad)
    assert s.check() == []
    s.close()


# -- many processes ---------------------------------------------------------------
def _churn(name, wid, ops, errfile):
    """A worker: sets of mixed sizes and deletes in its own keys of three buckets (a
    none bucket, an lru bucket, an lru bucket with max_memory); at the end every one of
    its none bucket's keys holds what it last wrote, or is gone if it deleted it last
    (a refused write, SegmentFull, leaves the old value). The none bucket's keys are
    few enough that it cannot fill the segment, so the lru buckets always find room."""
    import random
    s = bukt.attach(name)
    rng = random.Random(wid)
    keep, cache, capped = s.bucket("keep"), s.bucket("cache"), s.bucket("capped")
    mine = {}                                   # key -> value of the none bucket
    sizes = (10, 100, 900, 5_000, 20_000, BIG)
    try:
        for i in range(ops):
            b = rng.choice((keep, keep, cache, capped))
            k = b"w%d-%d" % (wid, rng.randrange(500 if b is keep else 600))
            if rng.random() < 0.35:
                b.delete(k)
                if b is keep:
                    mine.pop(k, None)
                continue
            v = bytes([rng.randrange(256)]) * rng.choice(sizes[:4] if b is keep else sizes)
            try:
                b.set(k, v)
            except errors.SegmentFull:
                if b is keep:               # refused: the old value stays
                    continue
                raise
            if b is keep:
                mine[k] = v
        for i in range(500):
            k = b"w%d-%d" % (wid, i)
            assert keep.get(k) == mine.get(k), f"worker {wid}: {k!r} of the none bucket"
    except BaseException as e:
        with open(errfile, "a") as f:
            f.write(f"worker {wid}: {e!r}\n")
        raise
    finally:
        s.close()


@pytest.mark.slow
def test_many_processes_set_and_delete_mixed_sizes(segname, tmp_path):
    """Four processes set and delete values of 10 B to 50 KiB in a small segment, so
    that pages keep moving between classes (emptied, compacted, evicted); a none
    bucket loses nothing it was not told to, the capped bucket stays near its limit,
    and check() is clean."""
    s = bukt.create(segname, size="16MiB", max_value=256 * 1024)
    s.create_bucket("keep", eviction="none", persist=False)
    s.create_bucket("cache", persist=False)
    s.create_bucket("capped", persist=False, max_memory="2MiB")
    errfile = str(tmp_path / "errors")
    pids = []
    for wid in range(4):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _churn(segname, wid, 30_000, errfile)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    errs = open(errfile).read() if os.path.exists(errfile) else ""
    assert codes == [0, 0, 0, 0], errs
    st = s.stats()
    assert st["slab_moves"] > 0 and st["relocations"] > 0, st
    assert s.bucket("keep").stats()["evictions"] == 0
    # concurrent writers may each pass the limit by one chunk
    assert s.bucket("capped").stats()["memory"] <= (2 << 20) + 4 * 65536
    assert s.check() == []
    s.close()


def test_max_memory_is_logged_with_the_bucket_and_recovered(segname):
    """The limit travels in the BUCKET_CREATE record's settings: from the ring's META
    change (what the writer logs) and from a snapshot, and a recovery that loads those
    records gives the bucket the same limit."""
    from bukt.writer.aof import Record
    from bukt.writer.restore import Loader, settings_from_meta, snapshot
    s = bukt.create(segname, size="16MiB")
    s.create_bucket("capped", persist=True, max_memory="3MiB")
    s.create_bucket("free", persist=True)
    assert settings_from_meta({"op": "create", "max_memory": 3 << 20})["max_memory"] == 3 << 20
    assert "max_memory" not in settings_from_meta({"op": "create"})
    records = [r for r in snapshot(s, 1) if r.type == Record.bucket_create(0, "x", {}).type]
    assert {r.bucket: r.settings.get("max_memory") for r in records} == \
        {"capped": 3 << 20, "free": None}
    other = bukt.create(segname + "-2", size="16MiB")
    try:
        Loader(other, bulk=False).apply(records)
        assert other.bucket_info("capped")["max_memory"] == 3 << 20
        assert other.bucket_info("free")["max_memory"] is None
    finally:
        other.close()
        other.unlink()
    s.close()
