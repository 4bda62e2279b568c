"""The table's API in one process: semantics, schemas, TTL on an injected clock,
limits, eviction and a full segment. Every test that writes ends with check()."""
import pytest

import bukt
from bukt._core import writer_claim
from bukt import errors

T0 = 1_800_000_000_000          # an injected "now" in ms


@pytest.fixture
def clock(store):
    store.set_time(T0)
    return store


def test_set_get_overwrite_delete(store, bucket):
    v1 = bucket.set(b"k", b"one")
    assert bucket.get(b"k") == b"one" and bucket.version(b"k") == v1
    v2 = bucket.set("k", "two")
    assert v2 > v1 and bucket.get("k") == b"two"
    assert bucket.delete(b"k", b"k", b"absent") == 1
    assert bucket.get(b"k") is None and bucket.get(b"k", b"dflt") == b"dflt"
    assert bucket.version(b"k") is None
    assert store.check() == []


def test_nx_xx_and_if_version(store, bucket):
    assert bucket.set(b"k", b"a", xx=True) is None and bucket.get(b"k") is None
    v = bucket.set(b"k", b"a", nx=True)
    assert bucket.set(b"k", b"b", nx=True) is None and bucket.get(b"k") == b"a"
    assert bucket.set(b"k", b"b", xx=True) > v
    with pytest.raises(errors.VersionMismatch, match="version"):
        bucket.set(b"k", b"c", if_version=v)
    v3 = bucket.set(b"k", b"c", if_version=bucket.version(b"k"))
    assert bucket.get(b"k") == b"c" and bucket.version(b"k") == v3
    with pytest.raises(errors.VersionMismatch):
        bucket.set(b"k", b"d", if_version=0)        # 0: only if absent
    for bad in (-1, True, "3"):
        with pytest.raises(errors.InvalidArgument, match="if_version"):
            bucket.set(b"k", b"d", if_version=bad)
    with pytest.raises(errors.InvalidArgument, match="nx and xx"):
        bucket.set(b"k", b"d", nx=True, xx=True)
    assert bucket.set(b"new", b"x", if_version=0)
    assert store.check() == []


def test_ttl_expire_persist_on_an_injected_clock(clock, bucket):
    bucket.set(b"k", b"v", ttl=1.5)
    assert bucket.ttl(b"k") == 1.5
    clock.set_time(T0 + 1499)
    assert bucket.get(b"k") == b"v" and bucket.ttl(b"k") == 0.001
    clock.set_time(T0 + 1500)
    assert bucket.get(b"k") is None and bucket.exists(b"k") == 0 and bucket.ttl(b"k") is None
    bucket.set(b"k", b"v", ttl=10)
    assert bucket.persist(b"k") and bucket.ttl(b"k") is None
    assert bucket.expire(b"k", 2) and bucket.ttl(b"k") == 2.0
    assert not bucket.expire(b"absent", 2) and not bucket.persist(b"absent")
    bucket.set(b"k", b"w")                           # a set drops the old TTL
    assert bucket.ttl(b"k") is None
    for bad in (0, -1, float("nan"), "soon"):
        with pytest.raises(errors.InvalidArgument):
            bucket.set(b"k", b"v", ttl=bad)
    assert clock.check() == []


def test_default_ttl(clock):
    b = clock.create_bucket("d", persist=False, default_ttl=5)
    b.set(b"k", b"v")
    assert b.ttl(b"k") == 5.0
    b.set(b"k2", b"v", ttl=1)
    assert b.ttl(b"k2") == 1.0
    assert clock.bucket_info("d")["default_ttl"] == 5.0


def test_expire_some_reclaims_without_reads(clock, bucket):
    for i in range(500):
        bucket.set(b"k%d" % i, b"x" * 100, ttl=1 if i % 2 else 100)
    used = clock.stats()["chunk_bytes"]
    clock.set_time(T0 + 2000)
    removed = clock.expire_some(budget=1.0)
    assert removed == 250
    st = bucket.stats()
    assert st["keys"] == 250 and st["expirations"] == 250 and st["reads"] == 0
    assert clock.stats()["chunk_bytes"] < used
    assert clock.check() == []


def test_single_read_goes_to_one_get(store, bucket):
    bucket.set(b"s", b"secret", single_read=True)
    assert bucket.exists(b"s") == 1 and bucket.ttl(b"s") is None
    assert bucket.get(b"s") == b"secret"
    assert bucket.get(b"s") is None and bucket.exists(b"s") == 0
    bucket.set(b"s", b"again", single_read=True)
    assert bucket.mget([b"s", b"s"]) == [b"again", None]
    assert store.check() == []


def test_get_entry_reads_value_version_and_ttl_at_once(clock, bucket):
    assert bucket.get_entry(b"nope") is None
    ver = bucket.set(b"k", b"v", ttl=10)
    assert bucket.get_entry(b"k") == (b"v", ver, 10.0)
    clock.set_time(T0 + 2500)
    assert bucket.get_entry(b"k", consume=False) == (b"v", ver, 7.5)
    ver2 = bucket.set(b"k", b"w")
    assert bucket.get_entry(b"k") == (b"w", ver2, None) and ver2 > ver


def test_get_entry_peeks_at_a_single_read_key_without_taking_it(store, bucket):
    ver = bucket.set(b"s", b"secret", single_read=True)
    for _ in range(3):
        assert bucket.get_entry(b"s", consume=False) == (b"secret", ver, None)
    assert bucket.get_entry(b"s") == (b"secret", ver, None)         # taken
    assert bucket.get_entry(b"s", consume=False) is None
    assert bucket.get(b"s") is None
    ro = bukt.attach(store.name, readonly=True).bucket(bucket.name)
    bucket.set(b"s", b"again", single_read=True)
    assert ro.get_entry(b"s", consume=False)[0] == b"again"          # a read-only peek
    with pytest.raises(errors.ReadOnly):
        ro.get_entry(b"s")                                          # taking is a write
    assert bucket.get(b"s") == b"again"
    assert store.check() == []


def test_delete_if_version_is_compare_and_delete(store, bucket):
    ver = bucket.set(b"k", b"v")
    with pytest.raises(errors.VersionMismatch):
        bucket.delete(b"k", if_version=ver + 1)
    with pytest.raises(errors.VersionMismatch):
        bucket.delete(b"k", if_version=0)                           # 0 means absent
    assert bucket.get(b"k") == b"v"
    assert bucket.delete(b"k", if_version=ver) == 1
    assert bucket.delete(b"k", if_version=0) == 0                   # absent, as asked
    with pytest.raises(errors.VersionMismatch):
        bucket.delete(b"k", if_version=ver)
    for bad in (-1, True, "1", 1.0):
        with pytest.raises(errors.InvalidArgument):
            bucket.delete(b"k", if_version=bad)
    with pytest.raises(errors.InvalidArgument):
        bucket.delete(b"a", b"b", if_version=0)
    assert store.check() == []


def test_getdel_incr(store, bucket):
    bucket.set(b"k", b"v")
    assert bucket.getdel(b"k") == b"v" and bucket.getdel(b"k") is None
    assert bucket.incr(b"n") == 1 and bucket.incr(b"n", 10) == 11
    assert bucket.incr(b"n", -20) == -9 and bucket.get(b"n") == b"-9"
    assert bucket.incr(b"m", 1, initial=100) == 101
    bucket.set(b"text", b"abc")
    with pytest.raises(errors.SchemaError, match="not a decimal integer"):
        bucket.incr(b"text")
    bucket.set(b"big", str(2**63 - 1))
    with pytest.raises(errors.SchemaError, match="64-bit"):
        bucket.incr(b"big")
    assert bucket.get(b"big") == str(2**63 - 1).encode()
    assert store.check() == []


@pytest.mark.parametrize("text, value", [
    (b"0", 0), (b"-0", 0), (b"7", 7), (b"-7", -7), (b"0042", 42),
    (b"9223372036854775807", 2**63 - 1), (b"-9223372036854775808", -2**63),
    (b"1234567890123456789", 1234567890123456789)])
def test_incr_reads_every_decimal_int64(bucket, text, value):
    bucket.set(b"k", text)
    assert bucket.incr(b"k", 0) == value


@pytest.mark.parametrize("text, why", [
    (b"", "not a decimal"), (b"-", "not a decimal"), (b"+1", "not a decimal"),
    (b" 1", "not a decimal"), (b"1 ", "not a decimal"), (b"1a", "not a decimal"),
    (b"--1", "not a decimal"), (b"1_000", "not a decimal"), (b"\xd9\xa1", "not a decimal"),
    (b"12345678901234567890", "not a decimal"),         # 20 digits
    (b"9223372036854775808", "outside the signed 64-bit"),
    (b"-9223372036854775809", "outside the signed 64-bit"),
    (b"9999999999999999999", "outside the signed 64-bit")])
def test_incr_refuses_what_is_not_a_decimal_int64(store, bucket, text, why):
    bucket.set(b"k", text)
    with pytest.raises(errors.SchemaError, match=why):
        bucket.incr(b"k")
    assert bucket.get(b"k") == text and store.check() == []


def test_incr_keeps_ttl(clock, bucket):
    bucket.incr(b"n", ttl=3)
    clock.set_time(T0 + 1000)
    bucket.incr(b"n")
    assert bucket.ttl(b"n") == 2.0
    clock.set_time(T0 + 3000)
    assert bucket.incr(b"n") == 1                   # expired: starts again, no TTL
    assert bucket.ttl(b"n") is None


def test_schemas_convert_values_and_refuse_what_does_not_fit(store):
    i = store.create_bucket("ints", schema="int", persist=False)
    i.set(b"a", 42)
    i.set(b"b", "-7")
    assert i.get(b"a") == 42 and i.get(b"b") == -7 and i.incr(b"a") == 43
    for bad in (b"x", 2**64, True, "1.5"):
        with pytest.raises(errors.SchemaError):
            i.set(b"c", bad)
    s = store.create_bucket("strs", schema="str", persist=False)
    s.set(b"a", "héllo")
    s.set(b"b", "ok".encode())
    assert s.get(b"a") == "héllo" and s.get(b"b") == "ok"
    with pytest.raises(errors.SchemaError, match="UTF-8"):
        s.set(b"c", b"\xff\xfe")
    with pytest.raises(errors.SchemaError):
        store.create_bucket("x", schema="float")
    with pytest.raises(errors.SchemaError, match="bytes or str"):
        store.bucket("strs").set(b"k", 3.5)
    with pytest.raises(errors.SchemaError, match="UTF-8"):
        store.bucket("strs").set(b"k", "\ud800")
    with pytest.raises(errors.InvalidArgument, match="UTF-8"):
        store.bucket("strs").set("\ud800", "v")
    with pytest.raises(errors.SchemaError, match="default_ttl"):
        store.create_bucket("badttl", default_ttl=0)
    with pytest.raises(errors.SchemaError, match="persist"):
        store.create_bucket("badpersist", persist="yes")


@pytest.mark.parametrize("name", ["", "a" * 65, "with space", "slash/", "ünï"])
def test_bad_bucket_names(store, name):
    with pytest.raises(errors.SchemaError, match="bucket name"):
        store.create_bucket(name)


def test_bucket_lifecycle(store):
    b = store.create_bucket("one", persist=False)
    with pytest.raises(errors.BucketExists):
        store.create_bucket("one")
    b.set(b"k", b"v")
    assert store.buckets() == ["one"]
    store.drop_bucket("one")
    assert store.buckets() == []
    with pytest.raises(errors.BucketNotFound):
        b.get(b"k")
    with pytest.raises(errors.BucketNotFound):
        store.bucket("one")
    with pytest.raises(errors.BucketNotFound):
        store.drop_bucket("one")
    again = store.create_bucket("one", persist=False)
    assert again.get(b"k") is None and again.stats()["keys"] == 0
    assert store.check() == []


def test_bucket_limit(segname):
    s = bukt.create(segname, size="16MiB", max_buckets=3)
    writer_claim(s)   # as a writer does: changes go to the ring
    for i in range(3):
        s.create_bucket(f"b{i}", persist=False)
    with pytest.raises(errors.LimitExceeded, match="3 buckets"):
        s.create_bucket("b3")
    s.close()


def test_same_key_in_two_buckets(store):
    a = store.create_bucket("a", persist=False)
    b = store.create_bucket("b", persist=False)
    a.set(b"k", b"in a")
    b.set(b"k", b"in b")
    assert a.get(b"k") == b"in a" and b.get(b"k") == b"in b"
    a.flush()
    assert a.get(b"k") is None and b.get(b"k") == b"in b"


def test_key_and_value_limits(segname):
    s = bukt.create(segname, size="16MiB", max_key=16, max_value=1000)
    writer_claim(s)   # as a writer does: changes go to the ring
    b = s.create_bucket("b", persist=False)
    b.set(b"k" * 16, b"v" * 1000)
    with pytest.raises(errors.KeyTooLarge, match="limit of 16 bytes"):
        b.set(b"k" * 17, b"v")
    with pytest.raises(errors.ValueTooLarge, match="limit of 1000 bytes"):
        b.set(b"k", b"v" * 1001)
    with pytest.raises(errors.KeyTooLarge):
        b.get(b"k" * 17)
    with pytest.raises(errors.InvalidArgument, match="empty"):
        b.set(b"", b"v")
    assert b.get(b"k" * 16) == b"v" * 1000
    assert s.check() == []
    s.close()


def test_scan_with_prefix_and_cursor(store, bucket):
    want = {b"user:%d" % i for i in range(700)}
    for k in want:
        bucket.set(k, b"v")
    bucket.set(b"other", b"v")
    got, cursor, calls = [], 0, 0
    while True:
        cursor, keys = bucket.scan(prefix=b"user:", cursor=cursor, count=50)
        got += keys
        calls += 1
        if cursor == 0:
            break
    assert set(got) == want and len(got) == len(want) and calls > 1
    with pytest.raises(errors.InvalidArgument):
        bucket.scan(cursor=-1)


def test_values_from_empty_to_max(store, bucket):
    for n in (0, 1, 47, 48, 4096, 65536, 300_000, 1 << 20):
        bucket.set(b"k%d" % n, bytes(range(256)) * (n // 256) + b"x" * (n % 256))
    for n in (0, 1, 47, 48, 4096, 65536, 300_000, 1 << 20):
        assert len(bucket.get(b"k%d" % n)) == n
    assert store.check() == []


def test_lru_bucket_evicts_when_full(segname):
    """(Which keys go is tested in test_slab_moves.py::test_lru_evicts_what_was_not_read.)"""
    s = bukt.create(segname, size="16MiB")
    writer_claim(s)   # as a writer does: changes go to the ring
    b = s.create_bucket("cache", persist=False)
    value = b"v" * 1000
    s.set_time(T0)
    for i in range(20000):
        if i == 100:
            s.set_time(T0 + 10_000)      # later keys are newer for the LRU clock
        b.set(b"k%d" % i, value)
    st = b.stats()
    assert st["evictions"] > 0 and st["keys"] + st["evictions"] == 20000
    assert b.get(b"k19999") == value
    assert s.check() == []
    s.close()


def test_none_bucket_refuses_when_full_and_keeps_its_data(segname):
    s = bukt.create(segname, size="16MiB")
    writer_claim(s)   # as a writer does: changes go to the ring
    b = s.create_bucket("keep", persist=False, eviction="none")
    written = 0
    with pytest.raises(errors.SegmentFull, match="eviction 'none'"):
        for i in range(100000):
            b.set(b"k%d" % i, b"v" * 1000)
            written += 1
    assert written > 1000 and b.stats()["keys"] == written
    assert b.get(b"k0") == b"v" * 1000 and b.get(b"k%d" % (written - 1)) == b"v" * 1000
    b.delete(b"k0")
    b.set(b"again", b"v" * 1000)                # freed memory is usable again
    assert s.check() == []
    s.close()


def test_index_full_evicts_or_refuses(segname):
    s = bukt.create(segname, size="16MiB", index_slots=512)   # one stripe, 448 keys
    writer_claim(s)   # as a writer does: changes go to the ring
    keep = s.create_bucket("keep", persist=False, eviction="none")
    for i in range(448):
        keep.set(b"k%d" % i, b"v")
    with pytest.raises(errors.SegmentFull, match="index full"):
        keep.set(b"one more", b"v")
    keep.delete(*[b"k%d" % i for i in range(100)])
    cache = s.create_bucket("cache", persist=False)
    for i in range(500):
        cache.set(b"c%d" % i, b"v")
    assert cache.stats()["evictions"] > 0 and keep.stats()["keys"] == 348
    assert s.check() == []
    s.close()


def test_tokens_are_added_found_revoked_and_limited(store):
    store.create_bucket("a", persist=False)
    store.create_bucket("b", persist=False)
    h1, h2 = bytes(range(32)), bytes(range(1, 33))
    t1 = store.add_token("a", h1, bukt.READ | bukt.WRITE)
    t2 = store.add_token("b", h2, bukt.READ)
    assert store.find_token(h1) == ("a", t1, 3) and store.find_token(h2) == ("b", t2, 1)
    assert store.find_token(b"\0" * 32) is None
    assert store.tokens("a") == [(t1, 3)]
    assert store.revoke_token("a", t1) and not store.revoke_token("a", t1)
    assert store.find_token(h1) is None
    for i in range(16):
        store.add_token("a", bytes([i]) * 32, bukt.READ)
    with pytest.raises(errors.LimitExceeded, match="tokens"):
        store.add_token("a", b"x" * 32, bukt.READ)
    with pytest.raises(errors.InvalidArgument):
        store.add_token("b", b"short", bukt.READ)
    with pytest.raises(errors.InvalidArgument, match="exists already"):
        store.add_token("b", h2, bukt.WRITE)


def test_has_token_follows_revocation_and_a_recreated_bucket(store, segname):
    """has_token(bucket, id, perms) is the HTTP workers' per-request check of a token
    they remember: it must turn false on a revoke, on other permissions, and for a
    Bucket object whose bucket was dropped (even if created again under its name,
    where token ids start over)."""
    a = store.create_bucket("a", persist=False)
    t1 = store.add_token("a", bytes(range(32)), bukt.READ | bukt.WRITE)
    t2 = store.add_token("a", bytes(range(1, 33)), bukt.READ)
    assert store.has_token(a, t1, 3) and store.has_token(a, t2, 1)
    assert not store.has_token(a, t1, 1) and not store.has_token(a, t2 + 1, 1)
    assert not store.has_token(a, 0, 0)
    assert store.revoke_token("a", t2)
    assert not store.has_token(a, t2, 1) and store.has_token(a, t1, 3)
    store.drop_bucket("a")
    again = store.create_bucket("a", persist=False)
    assert store.add_token("a", bytes(range(2, 34)), bukt.READ | bukt.WRITE) == t1
    assert not store.has_token(a, t1, 3) and store.has_token(again, t1, 3)
    other = bukt.create(segname + "-2", size="16MiB")
    writer_claim(other)   # as a writer does: changes go to the ring
    try:
        assert not other.has_token(again, t1, 3)    # a Bucket of another store
    finally:
        other.close()
        other.unlink()


def test_stats_count_reads_hits_misses(store, bucket):
    bucket.set(b"k", b"v")
    bucket.get(b"k")
    bucket.get(b"nope")
    st = bucket.stats()
    assert (st["reads"], st["hits"], st["misses"], st["writes"], st["keys"], st["bytes"]) \
        == (2, 1, 1, 1, 1, 2)
    g = store.stats()
    assert g["keys"] == 1 and g["buckets"] == 1 and g["index_used"] == 1


def test_persisted_bucket_appends_to_the_ring(store):
    p = store.create_bucket("p")
    c = store.create_bucket("c", persist=False)
    recs, pos, stuck = store.ring_read()
    store.ring_release(pos)
    v = p.set(b"k", b"v", ttl=5)
    c.set(b"k", b"not logged")
    p.delete(b"k")
    recs, pos, stuck = store.ring_read()
    assert stuck is None
    assert [(r[1], r[4], r[5], r[7]) for r in recs] == [(1, b"k", b"v", v), (2, b"k", b"", v)]
    assert recs[0][0] < recs[1][0] and recs[0][6] > 0
    store.ring_release(pos)


def test_full_ring_fails_the_write_after_a_bounded_wait(segname):
    s = bukt.create(segname, size="16MiB", ring_size="2MiB", max_value=65536, ring_wait=0.2)
    writer_claim(s)   # as a writer does: changes go to the ring
    p = s.create_bucket("p")
    n = 0
    with pytest.raises(errors.RingFull, match="writer process is down or behind"):
        for n in range(100000):
            p.set(b"k%d" % n, b"v" * 60000)
    assert p.get(b"k%d" % n) is None               # the refused write was not applied
    recs, pos, _ = s.ring_read(max_records=10**6, max_bytes=1 << 30)
    assert len(recs) == n + 1                       # create + every applied set
    s.ring_release(pos)
    p.set(b"after", b"ok")                          # room again
    assert s.check() == []
    s.close()


# bukt/_core.pxd, the core's C boundary: each function the faces cimport, with the C
# signature Cython exports it under (the name of its capsule in bukt._core.__pyx_capi__)
CORE_C_API = {
    "read_into": "PyObject *(PyObject *, char const *, uint32_t, Py_ssize_t, int *)",
    "prefetch_key": "void (PyObject *, char const *, uint32_t, int)",
    "meta_epoch_of": "uint64_t (PyObject *)",
    "flushed_pos_of": "uint64_t (PyObject *)",
    "last_pos_of": "uint64_t (PyObject *)",
}


def _core_function(name, restype, *argtypes):
    """A function of bukt._core's C API, called through ctypes as a cimporting module
    calls it (Cython binds it from the same capsule when that module is imported)."""
    import ctypes
    from bukt import _core
    capsule = _core.__pyx_capi__[name]
    sig = CORE_C_API[name].encode()
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return ctypes.PYFUNCTYPE(restype, *argtypes)(get(capsule, sig))


def test_core_c_api_is_what_its_pxd_declares():
    """The faces reach the core's fast paths only through bukt/_core.pxd: Cython
    exports exactly the functions declared there, under the signatures the faces were
    compiled against (so a change to one is caught at import, not by a crash), and the
    hand-made capsules they replaced are gone; the TCP modules import, so their
    cimports bound."""
    import ctypes
    from bukt import _core
    from bukt.tcp import _epoll, _wire  # noqa: F401  (import binds their cimports)
    name_of = ctypes.pythonapi.PyCapsule_GetName
    name_of.restype, name_of.argtypes = ctypes.c_char_p, [ctypes.py_object]
    assert {n: name_of(c).decode() for n, c in _core.__pyx_capi__.items()} == CORE_C_API
    assert not [n for n in ("META_EPOCH", "PREFETCH_KEY", "READ_INTO") if hasattr(_core, n)]
    assert not hasattr(_core, "scan_records")     # the log's format is the writer's


def test_prefetch_key_and_meta_epoch_through_the_c_api(segname):
    """bukt._core.prefetch_key (the TCP worker's PREFETCH, cimported from the core)
    reads nothing it trusts and changes nothing: on present and absent keys, keys
    longer than any stored, a dropped bucket's and a closed store's, every stage, it
    returns, and the table reads and checks the same afterwards. meta_epoch_of gives
    the store's epoch, and 0 once the store is closed."""
    import ctypes
    prefetch = _core_function("prefetch_key", None, ctypes.py_object, ctypes.c_char_p,
                              ctypes.c_uint32, ctypes.c_int)
    s = bukt.create(segname, size="16MiB")
    writer_claim(s)   # as a writer does: changes go to the ring
    b = s.create_bucket("b", persist=False)
    for i in range(3000):
        b.set(b"k%d" % i, b"v%d" % i)
    keys = [b"k%d" % i for i in range(0, 3000, 7)] + [b"absent", b"x" * 200, b"k"]
    for stage in (1, 2, 3, 0):
        for k in keys:
            prefetch(b, k, len(k), stage)
    assert [b.get(b"k%d" % i) for i in range(3000)] == [b"v%d" % i for i in range(3000)]
    assert s.check() == []
    s.drop_bucket("b")
    for k in keys:
        prefetch(b, k, len(k), 2)                   # a dropped bucket's object
    epoch = _core_function("meta_epoch_of", ctypes.c_uint64, ctypes.py_object)
    assert epoch(s) == s.meta_epoch > 0
    s.close()
    for k in keys:
        prefetch(b, k, len(k), 1)                   # a closed store: returns at once
        prefetch(b, k, len(k), 2)
    assert epoch(s) == 0                            # "look again", not a fault
    s2 = bukt.attach(segname)
    assert s2.check() == []
    s2.unlink()
    s2.close()


def test_flushed_and_last_positions_through_the_c_api(segname):
    """flushed_pos_of and last_pos_of (the RESP loop's `fsync: always` path) give
    Store.ring_position()[2] and Store.last_pos, and 0 once the store is closed."""
    import ctypes
    flushed = _core_function("flushed_pos_of", ctypes.c_uint64, ctypes.py_object)
    last = _core_function("last_pos_of", ctypes.c_uint64, ctypes.py_object)
    s = bukt.create(segname, size="16MiB")
    writer_claim(s)   # as a writer does: changes go to the ring
    b = s.create_bucket("b")
    b.set(b"k", b"v")
    assert last(s) == s.last_pos > 0
    assert flushed(s) == s.ring_position()[2] < s.last_pos
    s.ring_flushed(s.last_pos)
    assert flushed(s) == s.ring_position()[2] == s.last_pos
    s.unlink()
    s.close()
    assert (flushed(s), last(s)) == (0, 0)


def test_read_into_copies_after_the_callers_room_or_hands_back(clock, segname):
    """bukt._core.read_into (the TCP worker's GET, cimported from the core) returns the
    value after `room` bytes the caller reserved, writing nothing there and knowing no
    protocol, and counts it as Bucket.get does; a miss is None with found 0; and it
    hands back (found -1, nothing changed) wherever Bucket.get must decide: a typed
    bucket, a single-read key (not consumed), an expired key, an empty or oversized key,
    a dropped bucket, a closed store."""
    import ctypes
    fn = _core_function("read_into", ctypes.py_object, ctypes.py_object, ctypes.c_char_p,
                        ctypes.c_uint32, ctypes.c_ssize_t, ctypes.POINTER(ctypes.c_int))

    def read_into(bucket, key, room):
        found = ctypes.c_int(7)
        result = fn(bucket, key, len(key), room, ctypes.byref(found))
        return found.value, result
    s = clock
    b = s.create_bucket("raw", persist=False)
    ints = s.create_bucket("ints", persist=False, schema="int")
    big = bytes(range(256)) * 400
    b.set("k", b"value")
    b.set("big", big)
    b.set("once", b"1", single_read=True)
    b.set("soon", b"2", ttl=1)
    ints.set("n", 5)
    other = s.create_bucket("other", persist=False)
    other.set("k", b"v")
    before = b.stats()
    found, got = read_into(b, b"k", 14)
    assert found == 1 and len(got) == 14 + 5 and got[14:] == b"value"
    found, got = read_into(b, b"big", 0)
    assert found == 1 and got == big
    found, got = read_into(b, b"big", 3)
    assert found == 1 and got[3:] == big
    assert read_into(b, b"absent", 14) == (0, None)
    after = b.stats()
    assert (after["hits"] - before["hits"], after["misses"] - before["misses"]) == (3, 1)
    assert read_into(ints, b"n", 14) == (-1, None)
    assert read_into(b, b"once", 14) == (-1, None) and b.get("once") == b"1"
    s.set_time(T0 + 2000)                            # "soon" has expired
    assert read_into(b, b"soon", 14) == (-1, None) and b.get("soon") is None
    assert read_into(b, b"", 14) == (-1, None)
    assert read_into(b, b"x" * 251, 14) == (-1, None)    # max_key is 250
    assert read_into(b, b"k", -1) == (-1, None)
    assert b.stats()["hits"] == after["hits"] + 1    # the single-read get above
    assert s.check() == []
    s.drop_bucket("raw")
    assert read_into(b, b"k", 14) == (-1, None)
    found, got = read_into(other, b"k", 14)
    assert found == 1 and got[14:] == b"v"
    s.close()
    assert read_into(other, b"k", 14) == (-1, None)
