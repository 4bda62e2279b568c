"""Objects on the HTTP face of a real `bukt serve`: a 64 MiB PUT streamed in, GET and
HEAD streamed out with Repr-Digest, single ranges (206 / 416), declared digests
checked (400, the old value kept), limits.max_object (413)."""
import base64
import hashlib
import http.client
import json
import os

import pytest

from serve_harness import Service

MiB = 1 << 20
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    s = Service(tmp_path_factory.mktemp("objhttp"), memory="320MiB")
    try:
        s.start()
        token = s.create_bucket("files")
        s.token = token
        yield s
    finally:
        s.cleanup()


def b64(d):
    return base64.b64encode(d).decode()


def request(svc, method, key, body=None, headers=None, length=None):
    """(status, headers dict (lower-case names), body bytes); `body` may be an
    iterable of bytes, sent with Content-Length `length`."""
    conn = http.client.HTTPConnection("127.0.0.1", svc.http_port, timeout=120)
    try:
        h = {"X-Auth-Token": svc.token, **(headers or {})}
        if length is not None:
            h["Content-Length"] = str(length)
        conn.request(method, f"/api/v1/buckets/files/keys/{key}", body=body, headers=h)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def pieces(data, n=256 << 10):
    for i in range(0, len(data), n):
        yield data[i:i + n]


def test_put_get_range_head_of_a_64_mib_object(svc):
    data = os.urandom(64 * MiB)
    digest = hashlib.sha256(data).digest()
    status, h, body = request(svc, "PUT", "big", pieces(data), length=len(data),
                              headers={"Content-Digest": f"sha-256=:{b64(digest)}:",
                                       "Content-Type": "video/mp4"})
    assert status == 204, body
    assert h["repr-digest"] == f"sha-256=:{b64(digest)}:"
    etag = h["etag"]
    status, h, body = request(svc, "GET", "big")
    assert status == 200 and body == data
    assert (h["content-length"], h["repr-digest"], h["etag"], h["content-type"]) == \
        (str(len(data)), f"sha-256=:{b64(digest)}:", etag, "video/mp4")
    # one range, across a chunk boundary: only its bytes
    status, h, body = request(svc, "GET", "big", headers={"Range": "bytes=1048000-3000000"})
    assert status == 206 and body == data[1048000:3000001]
    assert h["content-range"] == f"bytes 1048000-3000000/{len(data)}"
    status, h, body = request(svc, "GET", "big", headers={"Range": "bytes=-10"})
    assert status == 206 and body == data[-10:]
    status, h, body = request(svc, "GET", "big", headers={"Range": f"bytes={len(data)}-"})
    assert status == 416 and h["content-range"] == f"bytes */{len(data)}"
    status, h, body = request(svc, "HEAD", "big")
    assert status == 200 and body == b"" and h["content-length"] == str(len(data))
    assert h["repr-digest"] == f"sha-256=:{b64(digest)}:"


def test_a_digest_mismatch_is_refused_and_the_old_value_kept(svc):
    old = os.urandom(3 * MiB)
    assert request(svc, "PUT", "d", old)[0] == 204
    new = os.urandom(3 * MiB)
    wrong = b64(hashlib.sha256(b"something else").digest())
    for header in ({"Content-Digest": f"sha-256=:{wrong}:"},
                   {"x-amz-checksum-sha256": wrong}):
        status, _, body = request(svc, "PUT", "d", new, headers=header)
        assert status == 400 and json.loads(body)["code"] == "digest_mismatch", body
    # a small body's declared digest is checked too
    status, _, body = request(svc, "PUT", "small", b"abc",
                              headers={"Content-Digest": f"sha-256=:{wrong}:"})
    assert status == 400 and json.loads(body)["code"] == "digest_mismatch"
    assert request(svc, "GET", "small")[0] == 404
    status, h, body = request(svc, "GET", "d")
    assert status == 200 and body == old
    assert h["repr-digest"] == f"sha-256=:{b64(hashlib.sha256(old).digest())}:"
    good = b64(hashlib.sha256(new).digest())
    assert request(svc, "PUT", "d", new, headers={"x-amz-checksum-sha256": good})[0] == 204
    assert request(svc, "GET", "d")[2] == new


def test_an_object_over_max_object_is_refused_before_its_body(svc):
    conn = http.client.HTTPConnection("127.0.0.1", svc.http_port, timeout=60)
    try:
        conn.putrequest("PUT", "/api/v1/buckets/files/keys/huge")
        conn.putheader("X-Auth-Token", svc.token)
        conn.putheader("Content-Length", str(64 * MiB + 1))
        conn.endheaders()
        conn.send(b"x" * MiB)           # a start of the body; the rest never comes
        r = conn.getresponse()
        assert r.status == 413 and json.loads(r.read())["code"] == "object_too_large"
    finally:
        conn.close()
    assert request(svc, "GET", "huge")[0] == 404


def test_a_damaged_object_is_cut_short_never_served_whole(svc):
    import bukt
    from bukt import objects
    from bukt.objects import manifest as mf
    data = os.urandom(3 * MiB)
    assert request(svc, "PUT", "dmg", data)[0] == 204
    store = bukt.attach(svc.name)
    try:
        b = store.bucket("files")
        m = objects.head(b, b"dmg")
        key = mf.chunk_key(m.oid, m.nchunks - 1)
        value, flags, _, _ = b.read_entry(key)
        b.put_entry(key, value[:-1] + bytes([value[-1] ^ 1]), flags)
    finally:
        store.close()
    conn = http.client.HTTPConnection("127.0.0.1", svc.http_port, timeout=60)
    try:
        conn.request("GET", "/api/v1/buckets/files/keys/dmg",
                     headers={"X-Auth-Token": svc.token})
        r = conn.getresponse()
        assert r.status == 200 and int(r.getheader("content-length")) == len(data)
        with pytest.raises(http.client.IncompleteRead) as e:
            r.read()
        assert len(e.value.partial) < len(data)
    finally:
        conn.close()
    assert "does not match" in svc.log()
