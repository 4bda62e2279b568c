"""Value compression (bukt/codec.py, bukt/values.py): the codec's frames, a bucket's
settings, round trips of every schema through the local API, what is stored raw, and a
damaged frame refused, never returned."""
import json
import os

import pytest

import bukt
from bukt import codec
from bukt.errors import IntegrityError, SchemaError
from names import unique_name

CODECS = ["zstd", "lz4"]
FLAG = {"zstd": codec.FLAG_ZSTD, "lz4": codec.FLAG_LZ4}
TEXT = b"".join(b"line %d of a compressible value: the quick brown fox\n" % i
                for i in range(200))


@pytest.fixture
def store():
    s = bukt.create(unique_name(), size="16MiB")
    try:
        yield s
    finally:
        s.unlink()
        s.close()


def raw(bucket, key):
    """(stored bytes, entry flags) of a key, as the segment holds them."""
    e = bucket.read_entry(key)
    return None if e is None else (e[0], e[1])


# -- the codec --------------------------------------------------------------------------

@pytest.mark.parametrize("name", CODECS)
def test_frame_round_trip_and_every_flipped_bit_is_refused(name):
    c = codec.code_of(name)
    value = TEXT[:3000]
    stored, flag = codec.compress(value, c, 10)
    assert flag == FLAG[name] and len(stored) < len(value) // 2
    assert codec.decompress(stored, flag) == value
    for i in range(len(stored)):
        for bit in (0x01, 0x80):
            broken = bytearray(stored)
            broken[i] ^= bit
            try:
                out = codec.decompress(bytes(broken), flag)
            except IntegrityError:
                continue
            assert out == value, f"byte {i} bit {bit:#x}: other bytes returned"


@pytest.mark.parametrize("name", CODECS)
def test_frame_larger_than_the_limit_is_refused(name):
    stored, flag = codec.compress(TEXT, codec.code_of(name), 0)
    with pytest.raises(IntegrityError, match="more than"):
        codec.decompress(stored, flag, limit=len(TEXT) - 1)
    assert codec.decompress(stored, flag, limit=len(TEXT)) == TEXT


@pytest.mark.parametrize("name", CODECS)
def test_min_saving_decides(name):
    c = codec.code_of(name)
    assert codec.compress(os.urandom(4096), c, 0) is None      # grows: never stored so
    half = os.urandom(1024) + b"\0" * 1024                      # saves about 50%
    assert codec.compress(half, c, 40) is not None
    assert codec.compress(half, c, 60) is None


# -- a bucket's settings ----------------------------------------------------------------

def test_settings_are_checked_and_shown(store):
    with pytest.raises(SchemaError, match="compression"):
        store.create_bucket("x", compression="gzip")
    with pytest.raises(SchemaError, match="compression_threshold"):
        store.create_bucket("x", compression="zstd", compression_threshold=8)
    with pytest.raises(SchemaError, match="compression_min_saving"):
        store.create_bucket("x", compression="zstd", compression_min_saving=95)
    with pytest.raises(SchemaError, match="need a compression"):
        store.create_bucket("x", compression_threshold=1024)
    assert "x" not in store.buckets()
    store.create_bucket("plain")
    info = store.bucket_info("plain")
    assert info["compression"] == "none" and info["compression_threshold"] is None
    store.create_bucket("z", compression="zstd")
    info = store.bucket_info("z")
    assert (info["compression"], info["compression_threshold"],
            info["compression_min_saving"]) == ("zstd", codec.DEFAULT_THRESHOLD,
                                                codec.DEFAULT_MIN_SAVING)
    store.create_bucket("l", compression="lz4", compression_threshold="2KiB",
                        compression_min_saving=25)
    info = store.bucket_info("l")
    assert (info["compression"], info["compression_threshold"],
            info["compression_min_saving"]) == ("lz4", 2048, 25)


# -- round trips ------------------------------------------------------------------------

def schema_values():
    text = TEXT.decode()
    return {"bytes": TEXT, "str": text + "é✓", "json": {"lines": text.splitlines(), "n": 1},
            "int": 12345678901234}


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("schema", ["bytes", "str", "json", "int"])
def test_every_schema_round_trips(store, name, schema):
    b = store.create_bucket("c", schema=schema, compression=name,
                            compression_threshold=256)
    value = schema_values()[schema]
    b.set(b"k", value)

    def same(got):
        return json.loads(got) == value if schema == "json" else got == value
    assert same(b.get(b"k"))
    got = b.mget([b"k", b"missing"])
    assert same(got[0]) and got[1] is None
    assert same(b.get_entry(b"k")[0])
    stored, flags = raw(b, b"k")
    if schema == "int":                         # a decimal never reaches the threshold
        assert flags & codec.FLAGS == 0
    else:
        assert flags & FLAG[name], f"flags {flags:#x}"
        assert len(stored) < len(TEXT) // 2
        assert b.stats()["bytes_saved"] > len(TEXT) // 2
    assert same(b.getdel(b"k"))
    assert b.get(b"k") is None


@pytest.mark.parametrize("name", CODECS)
def test_single_read_getset_and_atomic_decode(store, name):
    b = store.create_bucket("c", compression=name)
    b.set(b"once", TEXT, single_read=True)
    assert b.stats()["bytes_saved"] > len(TEXT) // 4    # (a raw read would take it)
    assert b.get(b"once") == TEXT
    assert b.get(b"once") is None
    b.set(b"k", TEXT)
    assert b.mget_consistent([b"k"]) == [TEXT]
    out = b.atomic([("getset", (b"k", TEXT[::-1])), ("get", (b"k",)),
                    ("set", (b"k2", TEXT)), ("set", (b"k3", TEXT), {"get": True})])
    assert out[0] == TEXT and out[1] == TEXT[::-1] and out[3] is None
    assert b.get(b"k") == TEXT[::-1]
    assert b.get(b"k2") == TEXT and raw(b, b"k2")[1] & FLAG[name]


@pytest.mark.parametrize("name", CODECS)
def test_below_threshold_and_below_min_saving_are_stored_raw(store, name):
    b = store.create_bucket("c", compression=name, compression_threshold=1024,
                            compression_min_saving=10)
    small = TEXT[:1023]
    b.set(b"small", small)
    assert raw(b, b"small") == (small, 0)
    noise = os.urandom(8192)
    b.set(b"noise", noise)
    assert raw(b, b"noise") == (noise, 0)
    b.set(b"text", TEXT[:1024])
    assert raw(b, b"text")[1] & FLAG[name]
    assert b.get(b"small") == small and b.get(b"noise") == noise
    plain = store.create_bucket("plain")
    plain.set(b"text", TEXT)
    assert raw(plain, b"text") == (TEXT, 0)


@pytest.mark.parametrize("name", CODECS)
def test_a_damaged_frame_is_refused_not_returned(store, name):
    b = store.create_bucket("c", compression=name)
    b.set(b"k", TEXT)
    stored, flags = raw(b, b"k")
    broken = bytearray(stored)
    broken[len(broken) // 2] ^= 0x10            # a flipped bit in the compressed body
    b.put_entry(b"k", bytes(broken), flags)
    with pytest.raises(IntegrityError, match="damaged"):
        b.get(b"k")
    with pytest.raises(IntegrityError):
        b.mget([b"k"])
    b.put_entry(b"j", b"not a frame at all", FLAG[name])
    with pytest.raises(IntegrityError):
        b.get(b"j")


def test_bytes_saved_follow_deletes(store):
    b = store.create_bucket("c", compression="zstd")
    for i in range(20):
        b.set(b"k%d" % i, TEXT)
    saved = b.stats()["bytes_saved"]
    assert saved > 20 * len(TEXT) // 2
    assert store.stats()["bytes_saved"] == saved
    for i in range(10):
        b.delete(b"k%d" % i)
    b.set(b"k10", b"raw now")
    assert b.stats()["bytes_saved"] == saved * 9 // 20
    b.flush()
    assert b.stats()["bytes_saved"] == 0
    assert store.check() == []


def test_json_schema_validates_before_compressing(store):
    b = store.create_bucket("j", schema="json", compression="zstd",
                            compression_threshold=64)
    with pytest.raises(SchemaError):
        b.set(b"k", b"{" + TEXT)
    doc = {"a": ["x" * 50] * 20}
    b.set(b"k", json.dumps(doc))
    assert b.get(b"k").parse() == doc


def test_accept_encoding_names_zstd():
    from bukt.http.encoding import accepts_zstd
    assert accepts_zstd("zstd")
    assert accepts_zstd(b"gzip, deflate, br, zstd")
    assert accepts_zstd("gzip;q=1.0, ZSTD;q=0.5")
    assert not accepts_zstd("zstd;q=0")
    assert not accepts_zstd("gzip, br")
    assert not accepts_zstd("*")                # never to a client that did not name it
    assert not accepts_zstd(None) and not accepts_zstd("")
