"""Objects (bukt/objects/): values above one entry, stored as chunks plus a manifest,
with a real writer process (its reclaim sweep included), real client processes and
kill -9. Every test ends with the segment's check() clean and no orphan left."""
import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest

from bukt import objects
from bukt.errors import DigestMismatch, ObjectGone, ObjectTooLarge, VersionMismatch
from bukt.objects import manifest as mf
from bukt.objects.check import verify
from bukt.objects.reclaim import hidden_keys, sweep
from writer_harness import ROOT, Instance, wait_for

CLIENT = os.path.join(ROOT, "tests", "support", "object_client.py")
MiB = 1 << 20


@pytest.fixture
def inst(tmp_path):
    i = Instance(tmp_path, memory="96MiB", fsync="everysec",
                 objects={"sweep_interval": "100ms"})
    i.start()
    yield i
    i.cleanup()


@pytest.fixture
def store(inst):
    s = inst.attach()
    s.create_bucket("b")
    yield s
    s.close()


def hidden(bucket):
    return hidden_keys(bucket)


def clean(store):
    """One sweep, then nothing hidden that no object needs, and check() clean."""
    sweep(store)
    report = verify(store)
    assert report["orphans"] == 0 and not report["bad"], report
    assert store.check() == []
    return report


def client(inst, tmp_path, key, mode, name, *args):
    out = str(tmp_path / name)
    p = subprocess.Popen([sys.executable, CLIENT, inst.name, "b", key, mode, out,
                          *map(str, args)], env=dict(os.environ, PYTHONPATH=ROOT),
                         cwd=ROOT)
    inst.procs.append(p)
    return p, out


def test_round_trip_ranges_and_the_set_hook(store):
    b = store.bucket("b")
    data = os.urandom(5 * MiB + 123)
    m = objects.put(b, b"obj", data, content_type="image/png", meta={"a": "1"})
    assert m.size == len(data) and m.sha256 == hashlib.sha256(data).digest()
    assert m.md5 == hashlib.md5(data).digest() and m.nchunks == 6
    with objects.open(b, b"obj") as r:
        assert (r.size, r.content_type, r.meta, r.version) == \
            (len(data), "image/png", {"a": "1"}, m.version)
        assert r.read() == data
        cs = r.manifest.chunk_size
        for start, end in [(0, 1), (cs - 1, cs + 1), (3 * cs, 3 * cs + 7),
                           (len(data) - 10, len(data)), (17, 4 * cs + 3)]:
            assert r.read(start, end) == data[start:end]
    h = objects.head(b, b"obj")
    assert (h.size, h.etag) == (len(data), m.md5.hex())
    # Bucket.set above the entry limit stores an object; get assembles it
    big = os.urandom(3 * MiB)
    b.set(b"viaset", big)
    assert b.get(b"viaset") == big
    assert objects.head(b, b"viaset").nchunks == 3
    # a small body is kept inside its manifest; a plain key opens as one piece
    objects.put(b, b"small", b"tiny", content_type="text/plain")
    b.set(b"plain", b"value")
    assert objects.open(b, b"small").read() == b"tiny"
    with objects.open(b, b"plain") as r:
        assert (r.is_object, r.read(1, 3)) == (False, b"al")
    clean(store)


def test_overwrite_delete_and_conditions_reclaim(store):
    b = store.bucket("b")
    first = objects.put(b, b"k", os.urandom(3 * MiB))
    second = objects.put(b, b"k", os.urandom(2 * MiB + 5))
    assert objects.put(b, b"k", os.urandom(2 * MiB), nx=True) is None
    assert objects.put(b, b"absent", os.urandom(2 * MiB), xx=True) is None
    with pytest.raises(VersionMismatch):
        objects.put(b, b"k", os.urandom(2 * MiB), if_version=first.version)
    assert objects.head(b, b"k").oid == second.oid
    clean(store)
    # what is left: the live object's head record and its three chunks
    assert sorted(hidden(b)) == sorted([mf.head_key(second.oid)] +
                                       [mf.chunk_key(second.oid, i) for i in range(3)])
    assert objects.delete(b, b"k")
    clean(store)
    assert hidden(b) == []


def test_ttl_single_read_and_delete_treat_an_object_as_one_item(store):
    b = store.bucket("b")
    data = os.urandom(2 * MiB + 1)
    objects.put(b, b"ttl", data, ttl=0.2)
    assert objects.open(b, b"ttl").read() == data
    wait_for(lambda: objects.head(b, b"ttl") is None, what="the object to expire")
    objects.put(b, b"once", data, single_read=True)
    assert b.get(b"once") == data          # the read that takes it
    assert b.get(b"once") is None and objects.head(b, b"once") is None
    b.set(b"gone", data)
    assert b.delete(b"gone") == 1 and b.get(b"gone") is None
    clean(store)
    assert hidden(b) == []


def test_limit_and_digest_mismatch_store_nothing(store):
    b = store.bucket("b")
    old = os.urandom(2 * MiB)
    objects.put(b, b"k", old)
    before = sorted(hidden(b))
    with pytest.raises(DigestMismatch):
        objects.put(b, b"k", os.urandom(2 * MiB), expect_sha256=b"\0" * 32)
    objects.configure(max_object=3 * MiB)
    try:
        with pytest.raises(ObjectTooLarge):
            objects.put(b, b"k", iter([os.urandom(MiB)] * 4))      # found while reading
        with pytest.raises(ObjectTooLarge):
            objects.put(b, b"k", b"", length=4 * MiB)              # announced: at once
    finally:
        objects.configure(max_object=None)
    # the old object is whole, and the failed puts left nothing behind
    assert objects.open(b, b"k").read() == old
    assert sorted(hidden(b)) == before
    clean(store)


def test_a_missing_chunk_means_the_object_is_gone(store):
    b = store.bucket("b")
    m = objects.put(b, b"k", os.urandom(3 * MiB))
    b.delete_entry(mf.chunk_key(m.oid, 1))      # as an eviction would
    with pytest.raises(ObjectGone):
        objects.open(b, b"k").read()
    assert objects.head(b, b"k") is None         # the manifest went with it
    clean(store)
    assert hidden(b) == []


@pytest.mark.slow
def test_concurrent_readers_never_see_a_mix(inst, store, tmp_path):
    """Reader processes read one key whole, digest checked, while another process
    overwrites it and the writer's sweep reclaims the old versions under them."""
    b = store.bucket("b")
    objects.put(b, b"k", os.urandom(3 * MiB))
    readers = [client(inst, tmp_path, "k", "read", f"r{i}") for i in range(3)]
    writer, wout = client(inst, tmp_path, "k", "overwrite", "w", 3 * MiB + 77, 40)
    assert writer.wait(300) == 0
    for _, out in readers:
        open(out + ".stop", "w").close()
    for p, out in readers:
        assert p.wait(60) == 0
        with open(out) as f:
            reads, errors = map(int, f.read().split())
        with open(out + ".err") as f:
            assert errors == 0, f.read()
        assert reads > 0
    # the writer's own sweep (objects.sweep_interval) takes every old version
    wait_for(lambda: verify(store)["orphans"] == 0, timeout=30,
             what="the writer's sweep to reclaim the old versions")
    clean(store)
    assert len(hidden(b)) == 1 + 4                  # the last object: head + 4 chunks


@pytest.mark.slow
def test_sigkill_mid_put_leaves_the_old_object_and_no_orphan(inst, store, tmp_path):
    b = store.bucket("b")
    old = os.urandom(2 * MiB)
    objects.put(b, b"k", old)
    before = sorted(hidden(b))
    p, out = client(inst, tmp_path, "k", "stall", "stall", 8 * MiB)
    wait_for(lambda: os.path.exists(out), timeout=60, what="the put to be half way")
    assert len(hidden(b)) > len(before)             # its chunks are in
    # an upload under way is not garbage while its process lives
    sweep(store)
    assert len(hidden(b)) > len(before)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(10)
    assert objects.open(b, b"k").read() == old
    clean(store)
    assert sorted(hidden(b)) == before


@pytest.mark.slow
def test_full_segment_lru_evicts_whole_objects(tmp_path):
    inst = Instance(tmp_path, memory="32MiB", fsync="no")
    try:
        inst.start()
        store = inst.attach()
        store.create_bucket("b", eviction="lru")
        b = store.bucket("b")
        digests = {}
        for i in range(30):                         # 60 MiB into a 32 MiB segment
            data = os.urandom(2 * MiB + i)
            key = b"o%d" % i
            objects.put(b, key, data)
            digests[key] = hashlib.sha256(data).digest()
        whole = gone = 0
        for key, digest in digests.items():
            try:
                r = objects.open(b, key)
            except ObjectGone:
                r = None
            if r is None:
                gone += 1
                continue
            try:
                with r:
                    data = r.read()
            except ObjectGone:
                gone += 1
                continue
            assert hashlib.sha256(data).digest() == digest
            whole += 1
        assert gone > 0 and whole > 0
        clean(store)
        store.close()
    finally:
        inst.cleanup()


@pytest.mark.slow
def test_cold_restart_keeps_objects_whole(inst, store):
    b = store.bucket("b")
    data = {b"a": os.urandom(3 * MiB + 1), b"b": os.urandom(2 * MiB)}
    for k, v in data.items():
        objects.put(b, k, v, content_type="application/x-test")
    objects.put(b, b"a", data[b"a"][::-1], content_type="application/x-test")  # logged too
    data[b"a"] = data[b"a"][::-1]
    store.close()
    inst.stop(inst.procs[-1])
    inst.unlink_segment()
    inst.start(cold=True)
    s = inst.attach()
    try:
        b = s.bucket("b")
        for k, v in data.items():
            with objects.open(b, k) as r:
                assert (r.read(), r.content_type) == (v, "application/x-test")
        clean(s)
    finally:
        s.close()


def test_bukt_check_verifies_every_objects_digest(inst, store):
    b = store.bucket("b")
    objects.put(b, b"good", os.urandom(2 * MiB))
    m = objects.put(b, b"bad", os.urandom(2 * MiB))

    def check():
        r = subprocess.run([sys.executable, "-m", "bukt", "check", "--config", inst.conf,
                            "--json"], capture_output=True, text=True, cwd=ROOT,
                           env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
        return r.returncode, json.loads(r.stdout)

    code, out = check()
    assert code == 0 and out["objects"]["objects"] == 2 and not out["objects"]["bad"], out
    key = mf.chunk_key(m.oid, 1)                # a chunk changed behind the object's back
    value, flags, _, _ = b.read_entry(key)
    b.put_entry(key, value[:-1] + bytes([value[-1] ^ 1]), flags)
    code, out = check()
    assert code != 0 and [x["key"] for x in out["objects"]["bad"]] == ["bad"], out
