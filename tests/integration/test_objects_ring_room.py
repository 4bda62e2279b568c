"""An object streaming in over HTTP leaves room in the change ring for small writes
(bukt/objects/store.py, THE ROOM LEFT FOR SMALL WRITES): with the writer stopped, so
that nothing drains the ring, a PUT of an object four times the ring's size stops
writing chunks while a quarter of the ring is still free, and a 100 B SET from
another process finds room at once; the writer resumed, the object and the SET are
both there, whole."""
import hashlib
import http.client
import os
import signal
import threading

import pytest

import bukt
from bukt.errors import RingFull
from serve_harness import Service, wait_for

MiB = 1 << 20
RING = 4 * MiB
pytestmark = pytest.mark.slow


def test_an_object_put_leaves_ring_room_for_a_small_set(tmp_path):
    svc = Service(tmp_path, memory="96MiB", fsync_lag_limit=600,
                  limits={"ring_size": "4MiB", "ring_wait_ms": 600_000})
    data = os.urandom(4 * RING)
    result = {}

    def put():
        conn = http.client.HTTPConnection("127.0.0.1", svc.http_port, timeout=600)
        try:
            conn.request("PUT", "/api/v1/buckets/files/keys/big", body=data,
                         headers={"X-Auth-Token": svc.token})
            r = conn.getresponse()
            result["status"], result["body"] = r.status, r.read()
        except Exception as e:       # noqa: BLE001 - shown by the assertion below
            result["error"] = e
        finally:
            conn.close()

    store = writer = None
    try:
        svc.start()
        svc.token = svc.create_bucket("files")
        store = bukt.attach(svc.name)
        store.ring_wait = 0.0           # a write that finds no room raises RingFull at once
        writer = svc.state()["writer"]["pid"]
        os.kill(writer, signal.SIGSTOP)     # nothing leaves the ring from here on
        t = threading.Thread(target=put)
        t.start()
        info = store.writer_info
        wait_for(lambda: info()["ring_head"] - info()["ring_tail"] >= MiB, timeout=60,
                 what="the PUT's first chunk in the ring")
        # the PUT goes as far as it will: the ring's head stands still for half a second
        last = [None]

        def still():
            head = info()["ring_head"]
            same, last[0] = head == last[0], head
            return same
        wait_for(still, timeout=60, step=0.5, what="the ring's head to stand still")
        assert t.is_alive() and not result          # the PUT waits for the writer
        try:
            store.bucket("files").set(b"small", b"v" * 100)
        except RingFull as e:
            raise AssertionError(f"a small SET found no ring room beside the object: {e}")
        assert store.ring_free() >= RING // 4
        os.kill(writer, signal.SIGCONT)
        writer = None
        t.join(120)
        assert not t.is_alive() and "error" not in result, result
        assert result["status"] in (200, 201, 204), result
        status, body = svc.http("GET", "/api/v1/buckets/files/keys/big",
                                headers={"X-Auth-Token": svc.token}, timeout=120)
        assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
        assert store.bucket("files").get(b"small") == b"v" * 100
        assert store.check() == []
    finally:
        if writer is not None:
            os.kill(writer, signal.SIGCONT)
        if store is not None:
            store.close()
        svc.cleanup()
