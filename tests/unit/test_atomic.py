"""Bucket.atomic (transactions: several operations on several keys as one, with
watched versions) and Bucket.mget_consistent (one snapshot of several keys)."""
import multiprocessing as mp
import os

import pytest

import bukt
from bukt import errors
from bukt._core import writer_claim

T0 = 1_800_000_000_000


@pytest.fixture
def clock(store):
    store.set_time(T0)
    return store


def keys_on_distinct_stripes(store, bucket, n, prefix="k"):
    """n keys whose stripes differ (so a transaction over them locks n stripes)."""
    seen, out, i = set(), [], 0
    while len(out) < n:
        k = f"{prefix}{i}"
        si = store._stripe_of(bucket.name, k)
        if si not in seen:
            seen.add(si)
            out.append(k)
        i += 1
    return out


def test_every_operation_and_its_result(clock, bucket):
    bucket.set("a", b"10")
    bucket.set("text", b"x")
    bucket.set("gone", b"1", ttl=1)
    clock.set_time(T0 + 2000)                   # "gone" has expired
    res = bucket.atomic([
        ("incr", ("a", -3)),
        ("incr", ("n",), {"by": 5, "initial": 100, "ttl": 60}),
        ("get", ("a",)),
        ("set", ("s", b"v"), {"ttl": 30}),
        ("ttl", ("s",)),
        ("exists", ("s",)),
        ("exists", ("gone",)),
        ("set", ("s", b"w"), {"nx": True}),
        ("set", ("new", b"w"), {"xx": True}),
        ("set", ("s", b"w2"), {"keepttl": True, "get": True}),
        ("getset", ("s", b"w3")),
        ("ttl", ("s",)),
        ("expire", ("s", 10)),
        ("ttl", ("s",)),
        ("persist", ("s",)),
        ("expire", ("nokey", 10)),
        ("delete", ("text",)),
        ("delete", ("text",)),
        ("getdel", ("a",)),
        ("getdel", ("a",)),
        ("version", ("a",)),
    ])
    assert res[0] == 7
    assert res[1] == 105
    assert res[2] == b"7"
    assert isinstance(res[3], int) and res[3] > 0
    assert res[4] == 30.0
    assert res[5] is True and res[6] is False
    assert res[7] is None and res[8] is None            # nx / xx said no
    assert res[9] == b"v"                               # set ... get: the old value
    assert res[10] == b"w2"                             # getset: the old value
    assert res[11] is None                              # getset drops the TTL
    assert res[12] is True and res[13] == 10.0
    assert res[14] is True and res[15] is False
    assert res[16] == 1 and res[17] == 0
    assert res[18] == b"7" and res[19] is None and res[20] is None
    assert bucket.get("s") == b"w3" and bucket.ttl("s") is None
    assert bucket.get("n") == b"105" and bucket.ttl("n") == 60.0
    assert bucket.get("text") is None and bucket.get("a") is None
    assert bucket.get("new") is None
    assert clock.check() == []


def test_a_set_keeps_the_version_it_returns(bucket):
    ver, = bucket.atomic([("set", ("k", b"v"))])
    assert bucket.version("k") == ver


def test_single_read_keys_in_a_transaction(store, bucket):
    res = bucket.atomic([("set", ("once", b"x"), {"single_read": True}),
                         ("get", ("once",)), ("get", ("once",))])
    assert res[1:] == [b"x", None]                      # consumed by the first get
    bucket.set("once", b"y", single_read=True)
    assert bucket.mget_consistent(["once", "other"]) == [b"y", None]
    assert bucket.get("once") is None                   # consumed, as mget would
    assert store.check() == []


def test_watched_versions(store, bucket):
    v = bucket.set("w", b"1")
    # absent means version 0
    assert bucket.atomic([("set", ("x", b"1"))], watched={"nothere": 0}) == [
        bucket.version("x")]
    assert bucket.atomic([("set", ("x", b"2"))], watched={"nothere": 5}) is None
    assert bucket.get("x") == b"1"
    # changed since it was watched: nothing applied
    bucket.set("w", b"2")
    assert bucket.atomic([("set", ("x", b"3")), ("delete", ("w",))], watched={"w": v}) is None
    assert bucket.get("x") == b"1" and bucket.get("w") == b"2"
    # unchanged: applied
    v2 = bucket.version("w")
    assert bucket.atomic([("delete", ("w",))], watched={"w": v2, "x": bucket.version("x")}) == [1]
    # a watch with no operation: EXEC of an empty MULTI
    assert bucket.atomic([], watched={"w": 0}) == []
    assert bucket.atomic([], watched={"w": v2}) is None
    # a TTL change keeps the version (it names the value), a delete drops it to 0
    v3 = bucket.set("t", b"1")
    bucket.expire("t", 100)
    assert bucket.atomic([("get", ("t",))], watched={"t": v3}) == [b"1"]
    assert store.check() == []


def test_a_watched_key_that_expired_is_absent(clock, bucket):
    v = bucket.set("e", b"1", ttl=1)
    clock.set_time(T0 + 5000)
    assert bucket.atomic([("get", ("e",))], watched={"e": v}) is None
    assert bucket.atomic([("get", ("e",))], watched={"e": 0}) == [None]


def test_errors_on_the_data_fail_one_operation_alone(store, bucket):
    bucket.set("text", b"abc")
    bucket.set("big", str(2 ** 63 - 1).encode())
    res = bucket.atomic([("set", ("a", b"1")), ("incr", ("text",)), ("incr", ("big",)),
                         ("set", ("b", b"2"))])
    assert isinstance(res[1], errors.SchemaError) and isinstance(res[2], errors.SchemaError)
    assert bucket.get("a") == b"1" and bucket.get("b") == b"2"
    assert bucket.get("text") == b"abc" and bucket.get("big") == str(2 ** 63 - 1).encode()
    assert store.check() == []


@pytest.mark.parametrize("ops,exc", [
    ([("frobnicate", ("k",))], errors.InvalidArgument),
    ([("set", ("k",))], errors.InvalidArgument),
    ([("set", ("k", b"v"), {"nx": True, "xx": True})], errors.InvalidArgument),
    ([("set", ("k", b"v"), {"ttl": -1})], errors.InvalidArgument),
    ([("expire", ("k", 0))], errors.InvalidArgument),
    ([("incr", ("k", "1"))], errors.InvalidArgument),
    ([("get", ("",))], errors.InvalidArgument),
    ([("get", ("x" * 300,))], errors.KeyTooLarge),
    ([("set", ("k", b"v" * (2 << 20)))], errors.ValueTooLarge),
    ([("set", ("k", 3))], errors.SchemaError),
    ([("delete",)], errors.InvalidArgument),
])
def test_bad_arguments_apply_nothing(store, bucket, ops, exc):
    with pytest.raises(exc):
        bucket.atomic([("set", ("first", b"1"))] + ops)
    assert bucket.get("first") is None


def test_bad_watched_version(bucket):
    with pytest.raises(errors.InvalidArgument):
        bucket.atomic([("set", ("k", b"1"))], watched={"k": -1})
    with pytest.raises(errors.InvalidArgument):
        bucket.atomic([("set", ("k", b"1"))], watched={"k": "3"})
    assert bucket.get("k") is None


def test_typed_buckets_decode_and_encode(store):
    ib = store.create_bucket("ints", schema="int", persist=False)
    res = ib.atomic([("set", ("a", 5)), ("incr", ("a", 2)), ("get", ("a",)),
                     ("getset", ("a", 1))])
    assert res[1:] == [7, 7, 7]
    assert ib.mget_consistent(["a", "b"]) == [1, None]
    with pytest.raises(errors.SchemaError):
        ib.atomic([("set", ("a", "nope"))])


def test_the_transaction_key_limit(segname):
    s = bukt.create(segname, size="16MiB", max_transaction_keys=4)
    try:
        assert s.limits["max_transaction_keys"] == 4
        b = s.create_bucket("b", persist=False)
        # four distinct keys, watched ones included, repeated ones counted once
        assert b.atomic([("set", (k, b"1")) for k in "abc"] + [("get", ("a",))],
                        watched={"d": 0}) is not None
        with pytest.raises(errors.LimitExceeded, match="max_transaction_keys"):
            b.atomic([("set", (k, b"2")) for k in "abcd"], watched={"e": 0})
        with pytest.raises(errors.LimitExceeded):
            b.mget_consistent(list("abcde"))
        assert b.get("a") == b"1"
    finally:
        s.close()
    with pytest.raises(errors.InvalidArgument):
        bukt.create(segname + "x", size="16MiB", max_transaction_keys=0)


def test_many_stripes_and_index_growth(segname):
    """Transactions wider than a stripe, inserting more keys than the first stripes
    take, so that the index grows between them (GROWTH: a stripe the inserts would
    fill is split first): every key lands, and the table stays sound."""
    s = bukt.create(segname, size="64MiB")
    try:
        b = s.create_bucket("b", persist=False)
        stripes0 = s.stats()["index_stripes"]
        for start in range(0, 100_000, 1000):
            res = b.atomic([("set", (f"g{start + i}", b"v" * 20)) for i in range(1000)])
            assert all(isinstance(r, int) for r in res)
        assert b.stats()["keys"] == 100_000
        assert s.stats()["index_stripes"] > stripes0
        assert b.mget_consistent([f"g{i}" for i in range(0, 100_000, 100)]) == [b"v" * 20] * 1000
        assert s.check() == []
    finally:
        s.close()


def test_mget_consistent_matches_mget(store, bucket):
    for i in range(50):
        bucket.set(f"m{i}", str(i).encode())
    ks = [f"m{i}" for i in range(60)]
    assert bucket.mget_consistent(ks) == bucket.mget(ks)
    assert bucket.mget_consistent([]) == []


def test_persisted_transactions_reach_the_ring(store):
    """Each change of a transaction is logged as the single write would be, every
    record committed when atomic returns (so a replay gives the table)."""
    pb = store.create_bucket("p", persist=True)
    recs, pos, stuck = store.ring_read()
    store.ring_release(pos)
    res = pb.atomic([("set", ("a", b"1")), ("set", ("b", b"2")), ("incr", ("c",)),
                     ("delete", ("a",)), ("get", ("b",)), ("expire", ("b", 100))])
    recs, pos, stuck = store.ring_read()
    assert stuck is None
    assert [(r[1], r[4], r[5]) for r in recs] == [
        (1, b"a", b"1"), (1, b"b", b"2"), (1, b"c", b"1"), (2, b"a", b""), (5, b"b", b"")]  # SET, DEL, TOUCH
    assert recs[1][7] == res[1] and recs[4][6] > 0
    store.ring_release(pos)
    assert store.check() == []


def _die_mid_transaction(name, keys, after):
    s = bukt.attach(name)
    b = s.bucket("b")
    s._crash_in_atomic(after)
    b.atomic([("set", (k, b"new")) for k in keys])
    os._exit(0)                                 # not reached


def test_a_process_killed_mid_transaction(store, bucket, segname):
    """A process dies holding every stripe of a transaction, after two of its four
    changes. Each stripe is repaired on its own: the two changes made stay, the rest
    never happen; no reader sees a stripe mid-write; check() is clean."""
    keys = keys_on_distinct_stripes(store, bucket, 4)
    for k in keys:
        bucket.set(k, b"old")
    p = mp.get_context("fork").Process(target=_die_mid_transaction,
                                       args=(segname, keys, 2))
    p.start()
    p.join(30)
    assert p.exitcode == 70
    # every stripe of the transaction was left odd and locked by a dead process
    assert store.stripes_awaiting_repair() == 4
    # readers take the locks after their tries, repairing each stripe
    assert [bucket.get(k) for k in keys] == [b"new", b"new", b"old", b"old"]
    assert store.stripes_awaiting_repair() == 0
    assert bucket.mget_consistent(keys) == [b"new", b"new", b"old", b"old"]
    assert bucket.atomic([("set", (k, b"again")) for k in keys]) is not None
    assert bucket.mget(keys) == [b"again"] * 4
    assert store.check() == []


def test_a_full_ring_fails_the_writes_of_a_transaction_not_its_reads(segname):
    """With the writer behind (nothing drains the ring): a transaction of reads, as
    mget_consistent falls back to, needs no ring room and answers; one whose records
    find no room before it locks anything fails whole with RingFull, nothing applied."""
    s = bukt.create(segname, size="16MiB", ring_size="2MiB", max_value=65536, ring_wait=0.2)
    writer_claim(s)
    try:
        p = s.create_bucket("p")
        p.set(b"a", b"1")
        p.set(b"b", b"2")
        with pytest.raises(errors.RingFull):
            for n in range(100000):
                p.set(b"fill%d" % n, b"v" * 60000)
        assert p.atomic([("get", (b"a",)), ("get", (b"b",)), ("exists", (b"a",))]) == [
            b"1", b"2", True]
        with pytest.raises(errors.RingFull):
            p.atomic([("incr", (b"b",)), ("set", (b"a", b"x" * 60000))])
        assert p.mget_consistent([b"a", b"b"]) == [b"1", b"2"]
        assert s.check() == []
    finally:
        s.close()
