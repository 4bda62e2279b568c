"""Objects on the HTTP face of a real `bukt serve`: a 64 MiB PUT streamed in, GET and
HEAD streamed out with Repr-Digest, single ranges (206 / 416), declared digests
checked (400, the old value kept), limits.max_object (413); damaged reads counted, a
single-read object handed to one reader, chunked PUTs stored by their size."""
import base64
import concurrent.futures
import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading

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


def integrity_errors(svc, bucket="files"):
    """The bucket's integrity_errors as /metrics says, and as `bukt stats --json`
    (run as its own process against the HTTP face) says."""
    status, body = svc.http("GET", "/metrics", headers={"X-Auth-Token": svc.admin_token()})
    assert status == 200, body
    prefix = f'bukt_bucket_integrity_errors_total{{bucket="{bucket}"}} '
    found = [float(ln[len(prefix):]) for ln in body.decode().splitlines()
             if ln.startswith(prefix)]
    assert len(found) == 1, body
    out = subprocess.run([sys.executable, "-m", "bukt", "stats", "--url",
                          f"http://127.0.0.1:{svc.http_port}", "--token", svc.admin_token(),
                          "-b", bucket, "--json"], env=svc.env(), capture_output=True,
                         timeout=60, check=True)
    assert json.loads(out.stdout)[bucket]["integrity_errors"] == found[0]
    return found[0]


def damage_last_chunk(svc, key):
    import bukt
    from bukt import objects
    from bukt.objects import manifest as mf
    store = bukt.attach(svc.name)
    try:
        b = store.bucket("files")
        m = objects.head(b, key)
        ck = mf.chunk_key(m.oid, m.nchunks - 1)
        value, flags, _, _ = b.read_entry(ck)
        b.put_entry(ck, value[:-1] + bytes([value[-1] ^ 1]), flags)
    finally:
        store.close()


def test_a_damaged_object_read_is_counted(svc):
    data = os.urandom(3 * MiB)
    assert request(svc, "PUT", "counted", data)[0] == 204
    damage_last_chunk(svc, b"counted")
    before = integrity_errors(svc)
    for _ in range(2):          # the fast path (a plain GET), the slow one (a Range)
        conn = http.client.HTTPConnection("127.0.0.1", svc.http_port, timeout=60)
        try:
            conn.request("GET", "/api/v1/buckets/files/keys/counted",
                         headers={"X-Auth-Token": svc.token})
            r = conn.getresponse()
            with pytest.raises(http.client.IncompleteRead):
                r.read()
        finally:
            conn.close()
    # a whole read checks the SHA-256 and every chunk its CRC: one refusal a read
    assert integrity_errors(svc) == before + 2
    conn = http.client.HTTPConnection("127.0.0.1", svc.http_port, timeout=60)
    try:                        # the damaged chunk alone, through its CRC
        conn.request("GET", "/api/v1/buckets/files/keys/counted",
                     headers={"X-Auth-Token": svc.token, "Range": f"bytes={3 * MiB - 10}-"})
        r = conn.getresponse()
        assert r.status == 206
        with pytest.raises(http.client.IncompleteRead):
            r.read()
    finally:
        conn.close()
    assert integrity_errors(svc) == before + 3
    import bukt                 # a manifest that does not parse: 500, counted once
    store = bukt.attach(svc.name)
    try:
        b = store.bucket("files")
        value, flags = b.read_entry(b"counted", peek=True)[:2]
        b.put_entry(b"counted", b"XXXX" + value[4:], flags)
    finally:
        store.close()
    status, _, body = request(svc, "GET", "counted")
    assert status == 500 and json.loads(body)["code"] == "integrity_error"
    assert integrity_errors(svc) == before + 4


def test_a_single_read_object_goes_whole_to_exactly_one_of_two_readers(svc):
    data = os.urandom(3 * MiB)
    digest = hashlib.sha256(data).digest()
    for round_ in range(3):
        assert request(svc, "PUT", "once", data,
                       headers={"Bukt-Single-Read": "true",
                                "Content-Type": "video/mp4"})[0] == 204
        go = threading.Barrier(2)

        def get(path_style):
            go.wait()
            return request(svc, "GET", "once")

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            got = list(pool.map(get, range(2)))
        got.sort(key=lambda r: r[0])
        (s1, h1, b1), (s2, _, b2) = got
        assert (s1, s2) == (200, 404), (s1, s2, round_)
        assert b1 == data and h1["content-type"] == "video/mp4"
        assert h1["repr-digest"] == f"sha-256=:{b64(digest)}:"
        assert json.loads(b2)["code"] == "not_found"
        assert request(svc, "GET", "once")[0] == 404


def chunked_put(svc, key, data):
    """A PUT with Transfer-Encoding: chunked (no Content-Length)."""
    conn = http.client.HTTPConnection("127.0.0.1", svc.http_port, timeout=120)
    try:
        conn.request("PUT", f"/api/v1/buckets/files/keys/{key}", body=pieces(data, 64 << 10),
                     headers={"X-Auth-Token": svc.token}, encode_chunked=True)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_a_chunked_put_is_an_object_only_when_it_is_large(svc):
    import bukt
    from bukt._core import ENTRY_MANIFEST
    small, large = os.urandom(100), os.urandom(3 * MiB)
    assert chunked_put(svc, "chunked-small", small)[0] == 204
    assert chunked_put(svc, "chunked-large", large)[0] == 204
    assert request(svc, "GET", "chunked-small")[2] == small
    assert request(svc, "GET", "chunked-large")[2] == large
    store = bukt.attach(svc.name)
    try:
        b = store.bucket("files")
        value, flags = b.read_entry(b"chunked-small", peek=True)[:2]
        assert value == small and not flags & ENTRY_MANIFEST
        assert b.read_entry(b"chunked-large", peek=True)[1] & ENTRY_MANIFEST
    finally:
        store.close()
