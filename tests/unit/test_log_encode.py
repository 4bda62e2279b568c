"""The compiled log encoders (bukt/writer/_logscan.pyx: encode_ring, encode_sets) against
aof.encode, record by record: the writer's ring-to-log translation and the snapshot a
replica copies must give the very bytes the Python encoder gives."""
import bukt
from bukt.writer import aof
from bukt.writer.aof import Record
from bukt.writer.restore import snapshot, snapshot_chunks
from bukt.writer.ringlog import RingTranslator


def _python_encode(tr, recs):
    """RingTranslator.encode as it was before the compiled loop: every record by _other."""
    for r in recs:
        if r[1] == 16:
            import json
            tr.names[(r[2], r[3])] = json.loads(r[5])["name"]
    return b"".join(tr._other(r) for r in recs if not r[8] & 0x10)


def _changes(store):
    pb = store.create_bucket("pb", persist=True)
    nb = store.create_bucket("other.b-2", persist=True)
    cache = store.create_bucket("cache", persist=False)     # feed-only records
    pb.set("a", b"1")
    pb.set("single", b"x" * 300, ttl=100, single_read=True)
    pb.set("empty", b"")
    pb.expire("a", 50)
    pb.persist("a")
    pb.delete("empty")
    pb.incr("n")
    from bukt import _core
    pb.put_entry(b"obj-m", b"manifest", _core.ENTRY_MANIFEST, None)    # object flag bits
    pb.put_entry(b"obj-z", b"zstd bytes", _core.ENTRY_ZSTD, 100)
    pb.put_entry(_core.RESERVED_PREFIX + b"h", b"part", _core.ENTRY_HIDDEN | _core.ENTRY_LZ4, None)
    nb.set(b"\x00\xffbin", b"v" * 5000)
    cache.set("c", b"cache only")
    tid = store.add_token("pb", bytes(range(32)), 1)
    store.revoke_token("pb", tid)
    store.add_token("pb", bytes(range(1, 33)), 3)
    store.drop_bucket("other.b-2")
    return pb


def test_ring_records_encode_as_aof_encode(store):
    _changes(store)
    recs, pos, stuck = store.ring_read()
    assert stuck is None and len(recs) > 10
    assert {r[1] for r in recs} >= {1, 2, 5, 16}
    assert any(r[8] >> 8 for r in recs)     # object bits in the ring flags
    fast = RingTranslator(store).encode(recs)
    slow = _python_encode(RingTranslator(store), recs)
    assert fast == slow
    report = aof.Scan("t")
    decoded = list(aof.scan(fast, 0, len(fast), report))
    assert not report.problems and report.good_end == len(fast)
    assert [r.seq for r in decoded] == [r[0] for r in recs if not r[8] & 0x10]
    store.ring_release(pos)


def test_snapshot_chunks_are_the_snapshot_encoded(store):
    pb = _changes(store)
    for i in range(3000):
        pb.set(f"k{i}", b"%d" % i * (i % 7), ttl=1000 if i % 3 else None,
               single_read=i % 11 == 0)
    recs, pos, stuck = store.ring_read()
    store.ring_release(pos)
    chunks = list(snapshot_chunks(store, 77))
    want = [aof.encode(r) for r in snapshot(store, 77)]
    assert b"".join(d for d, n in chunks) == b"".join(want)
    assert sum(n for d, n in chunks) == len(want)
    flags = {r.flags for r in snapshot(store, 77) if isinstance(r, Record)}
    assert len(flags) >= 3                  # single-read and object bits among them


def test_a_base_of_encoded_runs_is_the_base_of_records(store, tmp_path):
    """A compaction writes snapshot_chunks; the file holds the same records, footer
    count included, as one written from snapshot()'s Records."""
    from bukt.writer.basefile import read_base, write_base
    pb = _changes(store)
    for i in range(2000):
        pb.set(f"k{i}", b"v%d" % i, ttl=500 if i % 2 else None)
    store.ring_release(store.ring_read()[1])
    a = write_base(tmp_path / "a.bkb", snapshot_chunks(store, 9), 9)
    b = write_base(tmp_path / "b.bkb", snapshot(store, 9), 9)
    assert (a.records, a.size) == (b.records, b.size)
    assert (tmp_path / "a.bkb").read_bytes() == (tmp_path / "b.bkb").read_bytes()
    assert len(list(read_base(str(tmp_path / "a.bkb")))) == a.records
