"""bukt.objects in one process over a real segment (no writer: an embedded store):
the manifest format, put / open / ranges, the reader registration that holds back
the sweep, the value hooks, and the HTTP face through falcon's TestClient."""
import base64
import hashlib
import os

import pytest

import bukt
from bukt import objects
from bukt.errors import IntegrityError, InvalidArgument, ObjectGone
from bukt.objects import manifest as mf
from bukt.objects.check import verify
from bukt.objects.reclaim import hidden_keys, Reclaimer, sweep
from test_http_app import API, make_client, new_bucket
from names import unique_name

MiB = 1 << 20


@pytest.fixture
def store():
    s = bukt.create(unique_name(), size="64MiB")
    s.create_bucket("b")
    yield s
    s.unlink()
    s.close()


def hidden(bucket):
    return hidden_keys(bucket)


def test_manifest_format_and_keys():
    m = mf.Manifest(b"o" * 16, 5, 4, [1, 2], 123, b"s" * 32, b"m" * 16, "text/plain",
                    {"k": "v"}, {"etag": "x-2"})
    back = mf.Manifest.unpack(m.pack())
    assert (back.oid, back.size, back.chunk_size, back.crcs, back.created_ms,
            back.content_type, back.meta, back.etag) == \
        (b"o" * 16, 5, 4, [1, 2], 123, "text/plain", {"k": "v"}, "x-2")
    inline = mf.Manifest(b"o" * 16, 3, 4, [], 1, b"s" * 32, b"m" * 16, inline=b"abc")
    assert mf.Manifest.unpack(inline.pack()).inline == b"abc"
    with pytest.raises(IntegrityError):
        mf.Manifest.unpack(m.pack()[:-3])
    assert mf.parse_hidden(mf.chunk_key(b"o" * 16, 7)) == ("chunk", b"o" * 16, 7)
    assert mf.parse_hidden(mf.head_key(b"o" * 16)) == ("head", b"o" * 16, None)
    assert mf.parse_hidden(b"user key") is None


def test_put_open_ranges_and_hooks(store):
    b = store.bucket("b")
    data = os.urandom(2 * MiB + 999)
    m = objects.put(b, b"k", [data[:100], data[100:MiB], data[MiB:]])
    assert m.sha256 == hashlib.sha256(data).digest()
    with objects.open(b, b"k") as r:
        assert r.read() == data
        assert r.read(MiB - 3, MiB + 3) == data[MiB - 3:MiB + 3]
    assert b.get(b"k") == data                  # the hook assembles it
    assert b.get_entry(b"k")[0] == data
    assert b.mget([b"k"]) == [data]
    b.set(b"big", data)                         # the hook stores it
    assert objects.head(b, b"big").size == len(data)
    # hidden entries: not listed, not readable by key, not writable by users
    assert sorted(b.scan(b"", 0, 100)[1]) == [b"big", b"k"]
    chunk = mf.chunk_key(m.oid, 0)
    assert b.get(chunk) is None
    with pytest.raises(InvalidArgument):
        b.set(chunk, b"x")


def test_the_sweep_waits_for_a_reader_that_may_hold_the_chunks(store):
    b = store.bucket("b")
    old = os.urandom(3 * MiB)
    objects.put(b, b"k", old)
    reader = objects.open(b, b"k")              # registered, holding the old manifest
    objects.put(b, b"k", os.urandom(3 * MiB))   # the old object is retired
    r = Reclaimer()
    assert r.sweep(store)["waiting"] == 1       # the reader started before: kept
    assert reader.read() == old                 # whole, digest checked
    reader.close()
    later = objects.open(b, b"k")               # started after: does not hold it back
    done = r.sweep(store)
    assert done["objects"] == 1 and done["waiting"] == 0
    later.close()
    assert verify(store)["orphans"] == 0 and store.check() == []


def test_a_damaged_chunk_is_detected_not_returned(store):
    b = store.bucket("b")
    m = objects.put(b, b"k", os.urandom(2 * MiB))
    key = mf.chunk_key(m.oid, 1)
    value, flags, _, _ = b.read_entry(key)
    bad = bytearray(value)
    bad[100] ^= 1
    b.put_entry(key, bytes(bad), flags)
    with pytest.raises(IntegrityError):
        objects.open(b, b"k").read()
    with pytest.raises(IntegrityError):
        b.get(b"k")
    report = verify(store)
    assert len(report["bad"]) == 1 and report["bad"][0]["key"] == b"k"
    b.delete_entry(key)
    with pytest.raises(ObjectGone):
        b.get(b"k")
    sweep(store)
    assert hidden(b) == []


@pytest.fixture
def app(store):
    client = make_client(store, **{"limits.max_object": "3MiB"})
    token = new_bucket(client, "files")
    return client, {"X-Auth-Token": token}


def test_http_put_get_range_and_limits(app):
    client, tok = app
    url = f"{API}/buckets/files/keys/obj"
    data = os.urandom(2 * MiB + 17)
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    r = client.simulate_put(url, body=data, headers={**tok, "Content-Digest":
                                                     f"sha-256=:{digest}:"})
    assert r.status_code == 204, r.text
    r = client.simulate_get(url, headers=tok)
    assert r.status_code == 200 and r.content == data
    assert r.headers["repr-digest"] == f"sha-256=:{digest}:"
    r = client.simulate_get(url, headers={**tok, "Range": "bytes=5-1048600"})
    assert r.status_code == 206 and r.content == data[5:1048601]
    r = client.simulate_head(url, headers=tok)
    assert r.headers["content-length"] == str(len(data))
    r = client.simulate_put(url, body=os.urandom(3 * MiB + 1), headers=tok)
    assert r.status_code == 413 and r.json["code"] == "object_too_large"
    r = client.simulate_put(url, body=b"x", headers={**tok, "Content-Digest": "sha-256=:nope:"})
    assert r.status_code == 400 and r.json["code"] == "invalid_argument"
    assert client.simulate_get(url, headers=tok).content == data


def test_a_full_reader_registry_still_reads_plain_keys_and_keeps_objects():
    """objects.read (a face's GET) with every reader slot taken: a plain key is read;
    an object is refused with LimitExceeded, and a single-read one is not lost."""
    from bukt.errors import LimitExceeded
    s = bukt.create(unique_name(), size="64MiB", object_readers=2)
    try:
        s.create_bucket("b")
        b = s.bucket("b")
        data = os.urandom(300_000)
        b.set(b"plain", b"v")
        objects.put(b, b"obj", data)
        objects.put(b, b"once", data, single_read=True)
        held = [s.object_reader_enter() for _ in range(2)]
        assert b.read_entry(b"plain") is not None
        assert objects.read(b, b"plain")[0] == b"v"
        assert objects.read(b, b"missing") is None
        for key in (b"obj", b"once"):
            with pytest.raises(LimitExceeded):
                objects.read(b, key)
        for token in held:
            s.object_reader_exit(token)
        for key in (b"obj", b"once"):
            reader = objects.read(b, key)
            with reader:
                assert reader.read() == data
        assert objects.read(b, b"once") is None         # taken by the read above
        assert s.object_readers_oldest() == 0           # every registration let go
    finally:
        s.unlink()
        s.close()
