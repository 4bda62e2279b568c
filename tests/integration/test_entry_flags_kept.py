"""Entry flags (MANIFEST, HIDDEN, ZSTD, LZ4 beside SINGLE) survive everything that
moves an entry: the slab mover's relocation, the ring and the log through a cold
start, a compaction's base file, bukt dump / load (JSON lines and snapshot), and a
replica's copy and follow. And the reader registry forgets a SIGKILLed reader."""
import os
import signal
import subprocess
import sys

import pytest

import bukt
from bukt import _core, errors
from writer_harness import PY, ROOT, instance, wait_for  # noqa: F401

P = _core.RESERVED_PREFIX
MANIFEST, HIDDEN, ZSTD, LZ4, SINGLE = (_core.ENTRY_MANIFEST, _core.ENTRY_HIDDEN,
                                       _core.ENTRY_ZSTD, _core.ENTRY_LZ4, _core.ENTRY_SINGLE)
FLAGGED = [                                             # key, value, flags, ttl
    (b"obj", b"manifest bytes", MANIFEST, None),
    (P + b"obj\x00c0", b"chunk zero", HIDDEN, None),
    (P + b"obj\x00c1", b"chunk one, zstd", HIDDEN | ZSTD, None),
    (b"z", b"zstd frame", ZSTD, 3600),
    (b"l", b"lz4 block", LZ4 | SINGLE, None),
    (b"m-once", b"manifest once", MANIFEST | SINGLE, 7200),
    (b"plain", b"plain", 0, None),
]


def put_all(b, suffix=b""):
    for k, v, f, ttl in FLAGGED:
        assert b.put_entry(k + suffix, v, f, ttl) > 0


def flags_of(contents, bucket="b", suffix=b""):
    """{key: (value, flags)} of the FLAGGED keys in a {(bucket, key): (value, exp,
    flags, version)} map."""
    out = {}
    for k, _v, _f, _t in FLAGGED:
        e = contents.get((bucket, k + suffix))
        if e is not None:
            out[k] = (e[0], e[2])
    return out


EXPECTED = {k: (v, f) for k, v, f, _t in FLAGGED}


def _cli(inst, *args):
    return subprocess.run([PY, "-m", "bukt.cli", *args, "--config", inst.conf], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=ROOT))


# -- the slab mover ---------------------------------------------------------------------

def test_the_slab_mover_keeps_the_flags_of_the_entries_it_relocates(segname):
    s = bukt.create(segname, size="16MiB", max_value=256 * 1024)
    keep = s.create_bucket("keep", eviction="none", persist=False)
    cache = s.create_bucket("cache", persist=False)
    kinds = [0, MANIFEST, ZSTD, LZ4 | SINGLE, HIDDEN]
    keys = []
    with pytest.raises(errors.SegmentFull):
        for i in range(10_000_000):
            f = kinds[i % len(kinds)]
            k = (P if f & HIDDEN else b"") + b"k%07d" % i
            keep.put_entry(k, bytes([i % 251]) * 100, f)
            keys.append((k, f, i))
    for k, _f, _i in keys[::2]:
        assert keep.delete_entry(k)
    for i in range(20):
        cache.set(b"big%d" % i, b"y" * 50 * 1024)
    assert s.stats()["relocations"] > 0             # entries were moved
    assert s.stats()["evictions_total"] == 0
    for k, f, i in keys[1::2]:
        assert keep.read_entry(k)[:2] == (bytes([i % 251]) * 100, f), k
    assert s.check() == []
    s.close()


# -- the log, a cold start, a compaction ----------------------------------------------

@pytest.mark.slow
def test_flags_survive_cold_starts_from_the_log_and_from_a_base_file(instance):
    w = instance.start()
    s = instance.attach()
    b = s.create_bucket("b")
    put_all(b)
    b.put_entry(P + b"gone", b"deleted", HIDDEN)
    assert b.delete_entry(P + b"gone")
    b.expire(b"z", 1800)                            # a SET_TTL keeps the flags too
    s.close()
    assert instance.stop(w) == 0
    before = instance.contents()
    assert flags_of(before) == EXPECTED
    # from the log alone (the ring -> log -> recovery's loader)
    instance.unlink_segment()
    w = instance.start()
    after = instance.contents()
    assert flags_of(after) == EXPECTED and ("b", P + b"gone") not in after
    s = instance.attach()
    assert s.check() == []
    assert s.bucket("b").stats()["keys"] == 5        # the two hidden entries are not keys
    s.close()
    # from a compaction's base file
    assert _cli(instance, "compact", "--wait", "20").returncode == 0
    assert instance.stop(w) == 0
    instance.unlink_segment()
    w = instance.start()
    assert flags_of(instance.contents()) == EXPECTED
    assert instance.stop(w) == 0


# -- bukt dump / load ------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["jsonl", "snapshot"])
def test_dump_and_load_attached_keep_the_flags(instance, tmp_path, fmt):
    w = instance.start()
    s = instance.attach()
    b = s.create_bucket("b")
    put_all(b)
    s.close()
    path = str(tmp_path / f"dump.{fmt}")
    r = _cli(instance, "dump", "-o", path, "--format", fmt)
    assert r.returncode == 0, r.stdout + r.stderr
    s = instance.attach()
    s.bucket("b").flush()
    assert flags_of(instance.contents()) == {}
    s.close()
    r = _cli(instance, "load", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert flags_of(instance.contents()) == EXPECTED
    s = instance.attach()
    assert s.check() == []
    s.close()
    assert instance.stop(w) == 0


# -- a replica's copy and follow --------------------------------------------------------

@pytest.mark.slow
def test_a_replica_copies_and_follows_flagged_entries(tmp_path):
    from test_replica import dump, services, start_replica, wait_equal
    p, r = services(tmp_path)
    try:
        p.start()
        p.create_bucket("b")
        s = bukt.attach(p.name)
        put_all(s.bucket("b"), b"-copied")
        s.close()
        start_replica(p, r)
        wait_equal(p, r)
        s = bukt.attach(p.name)
        put_all(s.bucket("b"), b"-followed")
        assert s.bucket("b").delete_entry(P + b"obj\x00c0-copied")     # a hidden delete
        s.close()
        got = wait_equal(p, r)
        assert ("b", P + b"obj\x00c0-copied") not in got
        assert flags_of(got, suffix=b"-copied") == \
            {k: v for k, v in EXPECTED.items() if k != P + b"obj\x00c0"}
        assert flags_of(got, suffix=b"-followed") == EXPECTED
        assert flags_of(dump(r.name), suffix=b"-followed") == EXPECTED
    finally:
        r.cleanup()
        p.cleanup()


# -- the reader registry -----------------------------------------------------------------

READER = """
import sys, time, bukt
s = bukt.attach(sys.argv[1])
t = s.object_reader_enter()
print(t, flush=True)
time.sleep(600)
"""


@pytest.fixture
def store(segname):
    s = bukt.create(segname, size="16MiB", object_readers=40)     # a small registry
    yield s
    s.close()


def test_a_sigkilled_readers_registration_does_not_hold_the_oldest(store, segname):
    assert store.object_readers_oldest() == 0
    t0 = store.clock_ns()
    mine = store.object_reader_enter()
    assert t0 <= store.object_readers_oldest() <= store.clock_ns()
    p = subprocess.Popen([sys.executable, "-c", READER, segname], stdout=subprocess.PIPE,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        theirs = int(p.stdout.readline())
        store.object_reader_exit(mine)
        held = store.object_readers_oldest()
        assert held > t0                            # the other process's read
        with pytest.raises(errors.InvalidArgument):
            store.object_reader_exit(theirs)        # not ours to end
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        # (a zombie is not alive either: owners.py; reaped here anyway)
        assert store.object_readers_oldest() == 0
        # its slot is free for the next reader
        assert store.limits["object_readers"] == 40
        tokens = [store.object_reader_enter() for _ in range(40)]
        assert theirs in tokens
        with pytest.raises(errors.LimitExceeded, match="limits.object_readers"):
            store.object_reader_enter()
        for t in tokens:
            store.object_reader_exit(t)
        assert store.object_readers_oldest() == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)


@pytest.mark.slow
def test_the_writer_sizes_the_registry_from_limits_object_readers(instance):
    instance.configure(limits={"ring_size": "4MiB", "object_readers": 3})
    w = instance.start()
    s = instance.attach()
    try:
        assert s.limits["object_readers"] == 3
        tokens = [s.object_reader_enter() for _ in range(3)]
        with pytest.raises(errors.LimitExceeded):
            s.object_reader_enter()
        for t in tokens:
            s.object_reader_exit(t)
    finally:
        s.close()
    assert instance.stop(w) == 0
