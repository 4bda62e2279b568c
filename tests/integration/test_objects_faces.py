"""Objects on the binary TCP and RESP faces of a real `bukt serve`: an object up to
the frame limit is read and written whole; one above it is refused with a clear
error (read it over HTTP), and a single-read one so refused is still there."""
import hashlib
import os

import pytest
import redis

import bukt
from bukt import objects
from bukt.errors import ObjectTooLarge
from serve_harness import Service

MiB = 1 << 20
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    s = Service(tmp_path_factory.mktemp("objfaces"), memory="128MiB",
                tcp={"max_frame": "4MiB"})
    try:
        s.start()
        s.token = s.create_bucket("b")
        yield s
    finally:
        s.cleanup()


@pytest.fixture
def local(svc):
    store = bukt.attach(svc.name)
    yield store.bucket("b")
    store.close()


def test_binary_protocol(svc, local):
    small, big = os.urandom(3 * MiB), os.urandom(6 * MiB)
    with svc.client("b", svc.token) as c:
        c.set(b"three", small)                  # above an entry: stored as an object
        assert objects.head(local, b"three").nchunks == 3
        assert c.get(b"three") == small
        objects.put(local, b"six", big)
        with pytest.raises(ObjectTooLarge, match="tcp.max_frame"):
            c.get(b"six")
        objects.put(local, b"once", big, single_read=True)
        with pytest.raises(ObjectTooLarge):
            c.get(b"once")
    assert local.get(b"once") == big           # put back by the refused read
    assert hashlib.sha256(local.get(b"six")).digest() == hashlib.sha256(big).digest()


def test_resp(svc, local):
    r = redis.Redis("127.0.0.1", svc.resp_port, username="b", password=svc.token)
    try:
        small = os.urandom(2 * MiB + 5)
        assert r.set("two", small)
        assert objects.head(local, b"two").nchunks == 3
        assert r.get("two") == small
        objects.put(local, b"six", os.urandom(6 * MiB))
        with pytest.raises(redis.ResponseError, match="max_frame"):
            r.get("six")
        assert r.delete("two") == 1 and r.get("two") is None
    finally:
        r.close()
