"""Objects in the core: entry flag bits, hidden keys under RESERVED_PREFIX, the raw
entry API (put_entry, read_entry, delete_entry), the value hooks (store_large,
compress, decode) and the buckets' compression fields. The hooks here are small
Python objects written for the test, standing in for bukt/values.py."""
import pytest

import bukt
from bukt import _core, errors

P = _core.RESERVED_PREFIX
MANIFEST, HIDDEN, ZSTD, LZ4 = (_core.ENTRY_MANIFEST, _core.ENTRY_HIDDEN, _core.ENTRY_ZSTD,
                               _core.ENTRY_LZ4)


class Hooks:
    """Records its calls; "decodes" by a reversible marking (value[::-1])."""

    def __init__(self):
        self.calls = []

    def store_large(self, bucket, key, value, ttl, nx, xx, single_read, if_version):
        self.calls.append(("store_large", key, len(value), ttl, nx, xx, single_read,
                           if_version))
        return bucket.put_entry(key, b"manifest-of-%d" % len(value), MANIFEST, ttl)

    def compress(self, bucket, value):
        self.calls.append(("compress", len(value)))
        return value[::-1], ZSTD

    def decode(self, bucket, key, value, flags):
        self.calls.append(("decode", key, flags))
        if flags & MANIFEST:
            return b"whole object of " + value
        return value[::-1]


@pytest.fixture
def hooks():
    h = Hooks()
    prev = _core.set_value_hooks(h)
    yield h
    _core.set_value_hooks(prev)


@pytest.fixture
def no_hooks():
    prev = _core.set_value_hooks(None)
    yield
    _core.set_value_hooks(prev)


def test_flag_bits_and_prefix_are_the_planned_ones():
    assert (MANIFEST, HIDDEN, ZSTD, LZ4) == (0x08, 0x10, 0x20, 0x40)
    assert _core.ENTRY_SINGLE == 0x04
    assert _core.ENTRY_FLAGS == 0x7c
    assert P == b"\x00bkt\x00"
    assert _core.FORMAT_VERSION >= 17


@pytest.mark.parametrize("write", [
    lambda b, k: b.set(k, b"v"),
    lambda b, k: b.delete(k),
    lambda b, k: b.incr(k),
    lambda b, k: b.expire(k, 10),
    lambda b, k: b.persist(k),
    lambda b, k: b.getdel(k),
    lambda b, k: b.mset({k: b"v"}),
    lambda b, k: b.atomic([("set", (k, b"v"))]),
    lambda b, k: b.atomic([("delete", (k,))]),
    lambda b, k: b.put_entry(k, b"v", HIDDEN, hidden_ok=False),
])
def test_a_user_write_of_a_reserved_key_is_refused(bucket, write):
    bucket.put_entry(P + b"chunk", b"inside", HIDDEN)
    with pytest.raises(errors.InvalidArgument, match="reserved prefix"):
        write(bucket, P + b"chunk")
    assert bucket.read_entry(P + b"chunk")[0] == b"inside"    # untouched


def test_a_hidden_entry_is_a_miss_to_every_user_read(store, bucket):
    k = P + b"c1"
    ver = bucket.put_entry(k, b"chunk bytes", HIDDEN)
    assert ver > 0
    assert bucket.get(k) is None
    assert bucket.get(k, b"dflt") == b"dflt"
    assert bucket.get_entry(k) is None and bucket.get_entry(k, consume=False) is None
    assert bucket.exists(k) == 0
    assert bucket.version(k) is None and bucket.ttl(k) is None
    assert bucket.mget([k, b"x"]) == [None, None]
    assert bucket.mget_consistent([k]) == [None]
    assert bucket.atomic([("get", (k,)), ("exists", (k,)), ("version", (k,))]) == \
        [None, False, None]
    assert bucket.read_entry(k) == (b"chunk bytes", HIDDEN, ver, 0)
    assert store.check() == []


def test_a_hidden_single_read_entry_is_not_taken_by_a_user_get(bucket):
    k = P + b"once"
    bucket.put_entry(k, b"x", HIDDEN | _core.ENTRY_SINGLE)
    assert bucket.get(k) is None
    assert bucket.read_entry(k)[0] == b"x"          # the raw read takes it
    assert bucket.read_entry(k) is None


def test_put_entry_conditions_return_0(bucket):
    assert bucket.put_entry(b"k", b"a", 0, nx=True) > 0
    assert bucket.put_entry(b"k", b"b", 0, nx=True) == 0
    assert bucket.put_entry(b"absent", b"b", 0, xx=True) == 0
    v = bucket.read_entry(b"k")[2]
    assert bucket.put_entry(b"k", b"c", MANIFEST, if_version=v + 1000) == 0
    v2 = bucket.put_entry(b"k", b"c", MANIFEST, if_version=v)
    assert v2 > v
    assert bucket.read_entry(b"k")[:3] == (b"c", MANIFEST, v2)


def test_put_entry_checks_flags_keys_and_sizes(store, bucket):
    with pytest.raises(errors.InvalidArgument):
        bucket.put_entry(b"k", b"v", 0x01)              # USED is the core's
    with pytest.raises(errors.InvalidArgument):
        bucket.put_entry(b"k", b"v", 0x80)
    with pytest.raises(errors.InvalidArgument):
        bucket.put_entry(b"k", b"v", ZSTD | LZ4)
    with pytest.raises(errors.InvalidArgument, match="HIDDEN"):
        bucket.put_entry(b"plain", b"v", HIDDEN)         # hidden needs the prefix
    with pytest.raises(errors.InvalidArgument, match="HIDDEN"):
        bucket.put_entry(P + b"x", b"v", MANIFEST)       # the prefix needs hidden
    with pytest.raises(errors.InvalidArgument):
        bucket.put_entry(b"k", b"v", 0, nx=True, xx=True)
    with pytest.raises(errors.ValueTooLarge):
        bucket.put_entry(b"k", b"x" * (store.limits["max_value"] + 1), 0)
    assert bucket.read_entry(b"k") is None and bucket.read_entry(P + b"x") is None


def test_put_entry_ttl_and_take(store, bucket):
    bucket.put_entry(b"t", b"v", ZSTD, ttl=100)
    value, flags, ver, exp = bucket.read_entry(b"t")
    assert flags == ZSTD and exp > 0
    assert bucket.read_entry(b"t", take=True) == (value, flags, ver, exp)
    assert bucket.read_entry(b"t") is None


def test_delete_entry(bucket):
    ver = bucket.put_entry(P + b"c", b"v", HIDDEN)
    assert bucket.delete_entry(P + b"c", if_version=ver + 1) is False
    assert bucket.read_entry(P + b"c") is not None
    assert bucket.delete_entry(P + b"c", if_version=ver) is True
    assert bucket.delete_entry(P + b"c") is False


def test_reads_of_flagged_entries_go_through_decode(bucket, hooks):
    bucket.put_entry(b"z", b"olleh", ZSTD)
    bucket.put_entry(b"m", b"M1", MANIFEST)
    assert bucket.get(b"z") == b"hello"
    assert bucket.get(b"m") == b"whole object of M1"
    assert bucket.get_entry(b"z")[0] == b"hello"
    assert bucket.get_entry(b"z", consume=False)[0] == b"hello"
    assert bucket.mget([b"z", b"m", b"no"]) == [b"hello", b"whole object of M1", None]
    assert bucket.mget_consistent([b"z", b"m"]) == [b"hello", b"whole object of M1"]
    assert bucket.atomic([("get", (b"z",)), ("get", (b"m",))]) == \
        [b"hello", b"whole object of M1"]
    # getset's old value, then getdel
    assert bucket.atomic([("set", (b"z", b"new"), {"get": True})]) == [b"hello"]
    bucket.put_entry(b"z", b"olleh", ZSTD)
    assert bucket.getdel(b"z") == b"hello"
    assert bucket.get(b"z") is None
    assert ("decode", b"m", MANIFEST) in hooks.calls


def test_a_single_read_compressed_entry_is_decoded_once(bucket, hooks):
    bucket.put_entry(b"s", b"terces", ZSTD | _core.ENTRY_SINGLE)
    assert bucket.get(b"s") == b"secret"
    assert bucket.get(b"s") is None


def test_decode_applies_before_the_schema(store, hooks):
    b = store.create_bucket("ints", schema="int", persist=False)
    b.put_entry(b"n", b"24", ZSTD)                      # "42" reversed
    assert b.get(b"n") == 42


def test_without_hooks_a_flagged_read_is_a_clear_error(bucket, no_hooks):
    bucket.put_entry(b"m", b"M", MANIFEST)
    with pytest.raises(errors.BuktError, match="no value hooks"):
        bucket.get(b"m")
    with pytest.raises(errors.ValueTooLarge):
        bucket.set(b"big", b"x" * (bucket.store.limits["max_value"] + 1))


def test_set_above_max_value_goes_to_store_large(store, bucket, hooks):
    big = b"x" * (store.limits["max_value"] + 10)
    ver = bucket.set(b"big", big, ttl=30, nx=True, single_read=False)
    assert ver > 0
    assert hooks.calls[0] == ("store_large", b"big", len(big), 30, True, False, False, None)
    assert bucket.read_entry(b"big")[:2] == (b"manifest-of-%d" % len(big), MANIFEST)
    assert bucket.get(b"big") == b"whole object of manifest-of-%d" % len(big)
    with pytest.raises(errors.InvalidArgument, match="reserved"):
        bucket.set(P + b"big", big)                     # the key is checked first
    with pytest.raises(errors.InvalidArgument):
        bucket.set(b"big", big, ttl=-1)                 # and the ttl


def test_set_compresses_at_the_threshold_only(bucket, hooks):
    assert bucket.compression == "none" and bucket.comp_threshold == 0
    bucket.set(b"a", b"y" * 600)
    assert hooks.calls == []                            # compression none: no call
    bucket._set_compression_unlogged("zstd", 512, 10)
    assert (bucket.compression, bucket.comp_threshold, bucket.comp_min_saving) == \
        ("zstd", 512, 10)
    bucket.set(b"small", b"s" * 511)
    assert bucket.read_entry(b"small")[1] == 0
    bucket.set(b"big", b"ab" * 300)
    assert hooks.calls == [("compress", 600)]
    assert bucket.read_entry(b"big")[:2] == (b"ba" * 300, ZSTD)
    assert bucket.get(b"big") == b"ab" * 300
    bucket.set(b"once", b"cd" * 300, single_read=True)
    assert bucket.read_entry(b"once", take=False)[1] == ZSTD | _core.ENTRY_SINGLE


def test_compress_may_decline(bucket, hooks):
    hooks.compress = lambda b, v: None
    bucket._set_compression_unlogged("lz4", 1, 0)
    bucket.set(b"k", b"v" * 100)
    assert bucket.read_entry(b"k")[:2] == (b"v" * 100, 0)


def test_comp_saved_gauge(bucket):
    assert bucket.comp_saved == 0
    bucket.add_comp_saved(1000)
    bucket.add_comp_saved(-300)
    assert bucket.comp_saved == 700


def test_set_value_hooks_checks_the_object(no_hooks):
    with pytest.raises(TypeError):
        _core.set_value_hooks(object())
    h = Hooks()
    assert _core.set_value_hooks(h) is None
    assert _core.value_hooks() is h
    assert _core.set_value_hooks(None) is h


def test_flags_survive_overwrite_by_put_and_are_dropped_by_a_plain_set(bucket, no_hooks):
    bucket.put_entry(b"k", b"z", ZSTD)
    bucket.set(b"k", b"plain")
    assert bucket.read_entry(b"k")[:2] == (b"plain", 0)
    assert bucket.get(b"k") == b"plain"


def test_objects_retired_moves_when_a_manifest_or_hidden_entry_goes(store, bucket):
    n0 = store.objects_retired()
    bucket.put_entry(b"plain", b"v", 0)
    bucket.set(b"plain", b"w")
    bucket.delete(b"plain")
    assert store.objects_retired() == n0              # plain entries: no movement
    bucket.put_entry(b"m", b"M", MANIFEST)
    bucket.put_entry(b"m", b"M2", MANIFEST)            # replaced
    assert store.objects_retired() == n0 + 1
    bucket.delete(b"m")
    assert store.objects_retired() == n0 + 2
    bucket.put_entry(P + b"c", b"C", HIDDEN)
    bucket.delete_entry(P + b"c")
    assert store.objects_retired() == n0 + 3
    bucket.put_entry(P + b"c", b"C", HIDDEN)
    bucket.flush()
    assert store.objects_retired() == n0 + 4
    assert store.clock_ns() > 0


def test_resp_get_fast_path_hands_a_flagged_entry_back(store, hooks):
    _resp = pytest.importorskip("bukt.tcp._resp")
    from bukt.tcp import resp_session as S
    from bukt.tokens import digest
    b = store.create_bucket("r", persist=False)
    store.add_token("r", digest(b"r" * 8), S.READ | S.WRITE)
    b.put_entry(b"z", b"olleh", ZSTD)
    b.put_entry(P + b"h", b"hidden", HIDDEN)
    b.set(b"p", b"plain")
    session = S.RespSession(store, max_frame=4096)
    session.id = 1

    def ask(*args):
        data = bytearray(b"*%d\r\n" % len(args) +
                         b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
        out = []
        _resp.run(data, len(data), 0, session, 4096, out, 1 << 20)
        return b"".join(out)

    assert ask(b"AUTH", b"r", b"r" * 8) == b"+OK\r\n"
    assert ask(b"GET", b"p") == b"$5\r\nplain\r\n"
    assert ask(b"GET", b"z") == b"$5\r\nhello\r\n"
    assert ask(b"GET", P + b"h") == b"$-1\r\n"


def _flags_byte_of(segname, key):
    """The offset, in the segment file, of the flags byte of the one entry whose key
    is `key` (bk_entry: 32 bytes, flags at 30, the key right after)."""
    with open(f"/dev/shm/bukt-{segname}", "rb") as f:
        data = f.read()
    at = data.find(key)
    assert at > 0 and data.find(key, at + 1) < 0
    return at - 2


def _poke(segname, offset, value):
    with open(f"/dev/shm/bukt-{segname}", "r+b") as f:
        f.seek(offset)
        f.write(bytes([value]))


def test_check_accepts_object_flags_and_reports_bad_combinations(store, segname, bucket):
    bucket.put_entry(b"unique-manifest-key", b"M", MANIFEST)
    bucket.put_entry(P + b"unique-chunk-key", b"C", HIDDEN | ZSTD)
    bucket.put_entry(b"unique-lz4-key", b"L", LZ4 | _core.ENTRY_SINGLE)
    assert store.check() == []
    at = _flags_byte_of(segname, b"unique-lz4-key")
    _poke(segname, at, 0x01 | ZSTD | LZ4)
    assert any("ZSTD and LZ4" in p for p in store.check())
    _poke(segname, at, 0x01 | HIDDEN)                   # hidden, but a user key
    assert any("HIDDEN" in p for p in store.check())
    _poke(segname, at, 0x01 | LZ4)
    at = _flags_byte_of(segname, P + b"unique-chunk-key")
    _poke(segname, at, 0x01 | ZSTD)                     # a reserved key, not hidden
    assert any("HIDDEN" in p for p in store.check())
    _poke(segname, at, 0x01 | HIDDEN | ZSTD)
    assert store.check() == []


def test_scan_skips_hidden_entries_and_scan_hidden_lists_only_them(store, bucket):
    for i in range(300):
        bucket.set(b"user%03d" % i, b"v")
        bucket.put_entry(P + b"chunk%03d" % i, b"c", HIDDEN)
    bucket.put_entry(P + b"old", b"c", HIDDEN, ttl=0.001)     # expired: still listed
    keys, cur = [], 0
    while True:
        cur, page = bucket.scan(b"", cur, 50)
        keys += page
        if cur == 0:
            break
    assert sorted(keys) == [b"user%03d" % i for i in range(300)]
    keys, cur = [], 0
    while True:
        cur, page = bucket.scan_hidden(cur, 64)
        keys += page
        if cur == 0:
            break
    assert sorted(keys) == sorted([P + b"chunk%03d" % i for i in range(300)] + [P + b"old"])
    assert bucket.scan(P)[1] == []                   # a prefix does not reveal them
    # the keys gauge counts the user's keys (an object is one); bytes and memory
    # count every entry
    st = bucket.stats()
    assert st["keys"] == 300
    assert st["bytes"] == sum(len(b"user%03d" % i) + 1 + len(P + b"chunk%03d" % i) + 1
                              for i in range(300)) + len(P + b"old") + 1
    bucket.delete_entry(P + b"chunk000")
    assert bucket.stats()["keys"] == 300
    store.recount()
    assert bucket.stats()["keys"] == 300
    assert store.check() == []


def test_feed_events_leave_hidden_entries_out():
    from bukt.feed import ring_records_to_events
    recs = [(10, 1, 0, 1, b"user", b"v", 0, 5, 0),
            (11, 1, 0, 1, P + b"c", b"chunk", 0, 6, HIDDEN << 8),
            (12, 2, 0, 1, P + b"c", b"", 0, 6, (HIDDEN | ZSTD) << 8),
            (13, 1, 0, 1, b"obj", b"manifest", 0, 7, MANIFEST << 8)]
    assert [e[0] for e in ring_records_to_events(recs, {})] == [10, 13]


def test_ring_records_carry_the_entry_flags_apart_from_the_feed_bits(segname):
    from bukt.writer.ringlog import entry_flags
    s = bukt.create(segname, size="16MiB")
    _core.writer_claim(s)
    b = s.create_bucket("p")                        # logged: its records reach the ring
    b.put_entry(P + b"c", b"chunk", HIDDEN | ZSTD)
    b.put_entry(b"o", b"m", MANIFEST | _core.ENTRY_SINGLE)
    b.expire(b"o", 100)
    b.delete_entry(P + b"c")
    recs, _pos, _stuck = s.ring_read(100, 1 << 20)
    got = [(r[1], r[4], entry_flags(r[8])) for r in recs if r[1] != 16]
    assert got == [(1, P + b"c", HIDDEN | ZSTD), (1, b"o", MANIFEST | _core.ENTRY_SINGLE),
                   (5, b"o", MANIFEST | _core.ENTRY_SINGLE), (2, P + b"c", HIDDEN | ZSTD)]
    s.close()


def test_the_raw_api_counts_nothing_and_a_large_set_counts_one_write(store, bucket, hooks):
    before = bucket.stats()
    bucket.put_entry(P + b"c", b"chunk", HIDDEN)
    bucket.read_entry(P + b"c")
    bucket.read_entry(P + b"nope")
    bucket.read_entry(P + b"c", take=True)
    bucket.put_entry(P + b"c", b"chunk", HIDDEN)
    bucket.delete_entry(P + b"c")
    assert bucket.stats() == before
    bucket.set(b"big", b"x" * (store.limits["max_value"] + 1))
    bucket.set(b"small", b"x")
    after = bucket.stats()
    assert after["writes"] == before["writes"] + 2
    bucket.get(b"big")                               # decode reads parts: one hit
    assert bucket.stats()["hits"] == before["hits"] + 1


def test_read_entry_peek_leaves_a_single_read_entry(bucket):
    v = bucket.put_entry(b"once", b"m", MANIFEST | _core.ENTRY_SINGLE)
    assert bucket.read_entry(b"once", peek=True) == (b"m", MANIFEST | _core.ENTRY_SINGLE, v, 0)
    assert bucket.read_entry(b"once", peek=True) is not None
    assert bucket.read_entry(b"once") is not None       # a read takes it
    assert bucket.read_entry(b"once", peek=True) is None
    assert bucket.max_value == bucket.store.limits["max_value"]


def test_read_into_hands_back_every_entry_with_an_object_bit(store, bucket):
    """bukt._core.read_into, the binary and RESP faces' GET: a manifest, a compressed
    value and a hidden entry go back to Bucket.get (found -1, nothing counted), a
    plain value is a hit."""
    import ctypes
    from test_table import _core_function
    fn = _core_function("read_into", ctypes.py_object, ctypes.py_object, ctypes.c_char_p,
                        ctypes.c_uint32, ctypes.c_ssize_t, ctypes.POINTER(ctypes.c_int))

    def read_into(key):
        found = ctypes.c_int(7)
        result = fn(bucket, key, len(key), 0, ctypes.byref(found))
        return found.value, result
    bucket.set(b"p", b"plain")
    bucket.put_entry(b"m", b"M", MANIFEST)
    bucket.put_entry(b"z", b"Z", ZSTD)
    bucket.put_entry(b"l", b"L", LZ4)
    bucket.put_entry(P + b"h", b"H", HIDDEN)
    before = bucket.stats()
    assert read_into(b"p") == (1, b"plain")
    for k in (b"m", b"z", b"l", P + b"h"):
        assert read_into(k) == (-1, None), k
    after = bucket.stats()
    assert (after["hits"] - before["hits"], after["misses"] - before["misses"]) == (1, 0)
