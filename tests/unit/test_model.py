"""Unit tests of the reference model (tests/support/model.py) itself: the property tests trust
it as the oracle, so its reading of docs/api.md is pinned down here."""
import hashlib

import pytest

from bukt import errors
from model import Model

T0 = 1_700_000_000_000


@pytest.fixture
def model():
    m = Model()
    m.set_time(T0)
    return m


def test_bucket_names_and_settings(model):
    for bad in ["", "a" * 65, "a b", "é", "a/b", None]:
        with pytest.raises(errors.SchemaError):
            model.create_bucket(bad)
    for setting in [dict(schema="json"), dict(eviction="fifo"), dict(default_ttl=0),
                    dict(default_ttl=-1), dict(persist="yes")]:
        with pytest.raises(errors.SchemaError):
            model.create_bucket("b", **setting)
    model.create_bucket("A-z_0.9" + "x" * 57, schema="int", default_ttl=5)
    assert model.bucket_info("A-z_0.9" + "x" * 57) == dict(
        name="A-z_0.9" + "x" * 57, schema="int", eviction="lru", persist=True,
        default_ttl=5, max_memory=None, compression="none", compression_threshold=None,
        compression_min_saving=None)
    with pytest.raises(errors.BucketExists):
        model.create_bucket("A-z_0.9" + "x" * 57)
    with pytest.raises(errors.BucketNotFound):
        model.bucket("nope")


def test_max_buckets_and_drop():
    model = Model(max_buckets=2)
    b = model.create_bucket("one")
    model.create_bucket("two")
    with pytest.raises(errors.LimitExceeded, match="max_buckets=2"):
        model.create_bucket("three")
    b.set(b"k", b"v")
    model.drop_bucket("one")
    assert sorted(model.buckets()) == ["two"]
    with pytest.raises(errors.BucketNotFound):
        b.get(b"k")
    assert model.create_bucket("one").get(b"k") is None


def test_schemas_convert_values_and_refuse_what_does_not_fit(model):
    raw, text, num = (model.create_bucket(n, schema=n) for n in ("bytes", "str", "int"))
    raw.set("é", "é")
    assert raw.get(b"\xc3\xa9") == "é".encode()
    text.set(b"k", b"\xc3\xa9")
    assert text.get("k") == "é"
    with pytest.raises(errors.SchemaError):
        text.set(b"k", b"\xff")
    num.set(b"k", 42)
    assert num.get(b"k") == 42
    num.set(b"k", "-7")
    assert num.get(b"k") == -7
    for bad in ["abc", b" 1", "+1", "1.5", "", 1 << 63, True]:
        with pytest.raises(errors.SchemaError):
            num.set(b"k", bad)
    assert num.get(b"k") == -7
    with pytest.raises(errors.SchemaError):
        raw.set(b"k", 5)


def test_limits_and_bad_arguments():
    model = Model(max_key=4, max_value=8)
    b = model.create_bucket("b")
    with pytest.raises(errors.KeyTooLarge, match="max_key=4"):
        b.set(b"12345", b"v")
    with pytest.raises(errors.ValueTooLarge, match="max_value=8"):
        b.set(b"k", b"123456789")
    b.set(b"1234", b"12345678")
    with pytest.raises(errors.InvalidArgument):
        b.get(b"")
    with pytest.raises(ValueError):
        b.set(b"k", b"v", ttl=0)
    with pytest.raises(errors.InvalidArgument):
        b.expire(b"1234", -1)
    with pytest.raises(errors.InvalidArgument):
        b.scan(cursor=-1)


def test_nx_xx_if_version(model):
    b = model.create_bucket("b")
    assert b.set(b"k", b"1", xx=True) is None
    assert b.get(b"k") is None
    v1 = b.set(b"k", b"1", nx=True)
    assert isinstance(v1, int) and b.version(b"k") == v1
    assert b.set(b"k", b"2", nx=True) is None
    assert b.get(b"k") == b"1"
    v2 = b.set(b"k", b"2", xx=True)
    assert v2 > v1
    with pytest.raises(errors.VersionMismatch):
        b.set(b"k", b"3", if_version=v1)
    with pytest.raises(errors.VersionMismatch):
        b.set(b"k", b"3", if_version=0)
    v3 = b.set(b"k", b"3", if_version=v2)
    assert v3 > v2 and b.get(b"k") == b"3"
    with pytest.raises(errors.VersionMismatch):
        b.set(b"new", b"1", if_version=v3)
    assert b.set(b"new", b"1", if_version=0) > v3
    assert b.version(b"absent") is None


def test_single_read(model):
    b = model.create_bucket("b")
    b.set(b"k", b"secret", single_read=True)
    assert b.exists(b"k") == 1 and b.ttl(b"k") is None
    assert b.get(b"k") == b"secret"
    assert b.get(b"k") is None
    b.set(b"k", b"secret", single_read=True)
    assert b.mget([b"k", b"k"]) == [b"secret", None]
    b.set(b"k", b"secret", single_read=True)
    b.set(b"k", b"plain")
    assert b.get(b"k") == b"plain" and b.get(b"k") == b"plain"


def test_ttl_with_a_moved_clock(model):
    b = model.create_bucket("b")
    d = model.create_bucket("d", default_ttl=2)
    b.set(b"k", b"v", ttl=1.5)
    d.set(b"k", b"v")
    assert b.ttl(b"k") == 1.5 and d.ttl(b"k") == 2
    model.set_time(T0 + 1499)
    assert b.get(b"k") == b"v" and b.ttl(b"k") == 0.001
    model.set_time(T0 + 1500)
    assert b.get(b"k") is None and b.exists(b"k") == 0 and b.ttl(b"k") is None
    assert b.expire(b"k", 1) is False
    b.set(b"k", b"v", ttl=1)
    b.set(b"k", b"w")                              # a set replaces the TTL
    assert b.ttl(b"k") is None
    assert b.expire(b"k", 0.25) is True and b.ttl(b"k") == 0.25
    assert b.persist(b"k") is True and b.ttl(b"k") is None
    assert b.persist(b"absent") is False
    model.set_time(T0 + 2000)
    d.set(b"p", b"v", ttl=10)
    assert d.stats()["keys"] == 1
    assert model.expire_some() == 1                # d's k; b's k has no TTL
    assert d.get(b"k") is None and d.get(b"p") == b"v"


def test_incr_counts_from_initial_and_keeps_the_ttl(model):
    b = model.create_bucket("b")
    assert b.incr(b"n") == 1
    assert b.incr(b"n", by=-5) == -4
    assert b.get(b"n") == b"-4"
    assert b.incr(b"m", by=2, initial=10, ttl=3) == 12 and b.ttl(b"m") == 3
    assert b.incr(b"m", ttl=100) == 13 and b.ttl(b"m") == 3      # TTL kept
    b.set(b"big", str((1 << 63) - 1))
    with pytest.raises(errors.SchemaError):
        b.incr(b"big")
    assert b.incr(b"big", by=-1) == (1 << 63) - 2
    with pytest.raises(errors.SchemaError):
        b.incr(b"new", initial=-(1 << 63), by=-1)
    assert b.exists(b"new") == 0
    for text in [b"abc", b"1.0", b"", b" 1", b"\xff"]:
        b.set(b"s", text)
        with pytest.raises(errors.SchemaError):
            b.incr(b"s")
        assert b.get(b"s") == text
    assert model.create_bucket("i", schema="int").incr(b"n", by=3) == 3


def test_delete_exists_getdel_mget_mset(model):
    b = model.create_bucket("b", schema="str")
    versions = b.mset({b"a": "1", "b": b"2", b"c": "3"})
    assert len(versions) == 3 and versions == sorted(set(versions))
    assert b.mget([b"a", "b", b"x"]) == ["1", "2", None]
    assert b.exists(b"a", b"a", b"x") == 2
    assert b.delete(b"a", b"a", b"x") == 1
    assert b.getdel(b"b") == "2" and b.getdel(b"b") is None
    assert b.get(b"b", default="D") == "D"
    with pytest.raises(errors.SchemaError):
        b.mset({b"ok": "fine", b"bad": b"\xff"})
    assert b.exists(b"ok") == 0
    assert b.flush() == 1 and b.exists(b"c") == 0


def test_scan_prefix_and_cursor(model):
    b = model.create_bucket("b")
    keys = {f"user:{i:03}".encode() for i in range(25)} | {b"other", b"user"}
    b.mset({k: b"v" for k in keys})
    b.set(b"user:gone", b"v", ttl=1)
    model.set_time(T0 + 1000)

    def scan_all(prefix, count):
        found, cursor, pages = [], 0, 0
        while True:
            cursor, page = b.scan(prefix, cursor=cursor, count=count)
            found += page
            pages += 1
            if cursor == 0:
                return found, pages

    found, pages = scan_all(b"user:", 7)
    assert sorted(found) == sorted(k for k in keys if k.startswith(b"user:"))
    assert pages == 4
    assert set(scan_all(b"", 100)[0]) == keys
    assert scan_all("nothing", 3) == ([], 1)
    with pytest.raises(errors.InvalidArgument):
        b.scan(cursor=12345)


def test_tokens_are_added_found_listed_and_revoked(model):
    b = model.create_bucket("b")
    model.create_bucket("c")
    h = hashlib.sha256(b"secret").digest()
    first = model.add_token("b", h, 1 | 2)
    second = model.add_token("b", hashlib.sha256(b"x").digest(), 4)
    assert 0 < first < second
    assert model.tokens("b") == [(first, 3), (second, 4)]
    assert model.find_token(h) == ("b", first, 3)
    assert model.find_token(hashlib.sha256(b"nope").digest()) is None
    assert model.revoke_token("b", first) is True
    assert model.revoke_token("b", first) is False
    assert model.find_token(h) is None
    with pytest.raises(errors.BucketNotFound):
        model.tokens("nope")
    small = Model(max_tokens=1)
    small.create_bucket("b")
    small.add_token("b", h, 1)
    with pytest.raises(errors.LimitExceeded):
        small.add_token("b", hashlib.sha256(b"y").digest(), 1)
    assert b.stats()["keys"] == 0
