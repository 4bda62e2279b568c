"""A full change ring holds up the HTTP write that found it full, never its worker.

A real gunicorn arbiter with one uvicorn worker, so every request shares one event loop,
over a segment with a 64 KiB change ring. No writer process runs: the test fills the
ring from its own attach, and plays the writer (ring_release) when it wants the ring to
have room again. That a write is waiting is seen, not timed: after a couple of
milliseconds it claims ring room in the segment header (cext/ring.pxi, THE CLAIM),
under the worker's pid.
"""
import contextlib
import hashlib
import json
import threading

import pytest
from test_http_server import ADMIN_TOKEN, API, Server
from test_ring_fairness import wait_until
from test_tcp_ringfull import drain, fill_ring

import bukt
from bukt._core import writer_claim
from bukt._core import ring_claim
from names import unique_name

TOKEN = "rw-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.contextmanager
def small_ring(ring_wait):
    """A segment with a 64 KiB ring and the given ring wait (seconds), a logged bucket
    "b" with the read-write token TOKEN, and the ring filled to the last byte."""
    name = unique_name()
    s = bukt.create(name, size="16MiB", max_value=4096, ring_size="64KiB",
                    ring_wait=ring_wait)
    writer_claim(s)   # as a writer does: changes go to the ring
    try:
        b = s.create_bucket("b")
        s.add_token("b", hashlib.sha256(TOKEN.encode()).digest(), 3)
        yield s, name, fill_ring(s, b)
    finally:
        s.unlink()
        s.close()


@contextlib.contextmanager
def one_worker(name, tmp_path):
    server = Server(name, tmp_path, **{"http.workers": 1})
    try:
        yield server
    finally:
        assert server.stop() == 0, server.output()


def in_thread(fn, *args):
    """fn(*args) in a thread; (thread, answers): answers gets its result."""
    answers = []
    t = threading.Thread(target=lambda: answers.append(fn(*args)), daemon=True)
    t.start()
    return t, answers


def worker_claims(s, server):
    """The claim standing in the ring is the HTTP worker's (not the arbiter's)."""
    claim = ring_claim(s)
    return claim is not None and claim[1] not in (0, server.proc.pid)


def test_a_waiting_put_holds_up_no_other_request_and_goes_through_on_room(tmp_path):
    # A ring wait far longer than the test: the PUT can only be answered because the
    # ring got room, and a wait inside the loop would hold up every GET below.
    with small_ring(ring_wait=120) as (s, name, filled):
        with one_worker(name, tmp_path) as srv:
            key, value = next(iter(filled.items()))
            put, put_answer = in_thread(srv.request, "PUT", f"{API}/buckets/b/keys/waits",
                                        b"w" * 300, AUTH)
            # A JSON write (the falcon path) waits the same way.
            kv, kv_answer = in_thread(srv.request, "POST", f"{API}/kv",
                                      {"key": "kv", "value": "j"}, AUTH)
            wait_until(lambda: worker_claims(s, srv), "the waiting PUT claims ring room")
            conn = srv.connect()
            for _ in range(20):
                status, _, body = srv.request("GET", f"{API}/buckets/b/keys/{key.decode()}",
                                              headers=AUTH, conn=conn)
                assert (status, body) == (200, value)
                status, _, body = srv.request("GET", f"{API}/buckets/b/keys/waits",
                                              headers=AUTH, conn=conn)
                assert status == 404                    # not applied while it waits
                assert srv.request("GET", "/healthz", conn=conn)[0] == 503  # no writer
            conn.close()
            assert put.is_alive() and not put_answer and kv.is_alive() and not kv_answer
            assert s.bucket("b").get(b"waits") is None
            drain(s)                                    # the writer catches up
            put.join(30)
            kv.join(30)
            status, headers, _ = put_answer[0]
            assert status == 204 and headers["etag"]
            assert kv_answer[0][0] == 201
            assert ring_claim(s) is None                # served: the claim went with it
            b = s.bucket("b")
            assert b.get(b"waits") == b"w" * 300 and b.get(b"kv") == b"j"
            assert all(b.get(k) == v for k, v in filled.items())
        assert s.check() == []


def test_a_put_past_ring_wait_is_503_ring_full_and_changes_nothing(tmp_path):
    with small_ring(ring_wait=0.3) as (s, name, filled):
        with one_worker(name, tmp_path) as srv:
            key = f"{API}/buckets/b/keys/late"
            put, put_answer = in_thread(srv.request, "PUT", key, b"l" * 100, AUTH)
            wait_until(lambda: worker_claims(s, srv) or put_answer, "the PUT waits")
            status, headers, body = srv.request("GET", key, headers=AUTH)
            assert status == 404
            put.join(30)
            status, headers, body = put_answer[0]
            problem = json.loads(body)
            assert status == 503 and headers["retry-after"] == "1"
            assert problem["code"] == "ring_full", problem
            assert "change ring full for 0.3 s" in problem["detail"]
            assert ring_claim(s) is None                # given up: the claim went too
            # Every write path answers the same, and a multi-record write waits first.
            for method, path, payload in (
                    ("PUT", key, b"x"),                                   # the fast path
                    ("PUT", key + "?ttl=60", b"x"),                       # falcon's
                    ("POST", f"{API}/buckets/b/keys/n/incr", None),
                    ("DELETE", f"{API}/buckets/b/keys/{next(iter(filled)).decode()}", None),
                    ("POST", f"{API}/buckets/b/mset", {"items": {"m1": "1", "m2": "2"}}),
                    ("POST", f"{API}/buckets/b/delete", {"keys": list(map(bytes.decode,
                                                                          filled))[:3]})):
                status, headers, body = srv.request(method, path, payload, AUTH)
                assert (status, json.loads(body)["code"]) == (503, "ring_full"), (method, path)
                assert headers["retry-after"] == "1"
            b = s.bucket("b")
            assert b.get(b"late") is None and b.get(b"n") is None and b.get(b"m1") is None
            assert all(b.get(k) == v for k, v in filled.items())
            # The writer drains: the next PUT goes through, and nothing was lost.
            drain(s)
            status, _, _ = srv.request("PUT", key, b"ok", AUTH)
            assert status == 204
            assert srv.request("GET", key, headers=AUTH)[2] == b"ok"
            assert b.stats()["keys"] == len(filled) + 1
            assert all(b.get(k) == v for k, v in filled.items())
        assert s.check() == []


@pytest.mark.parametrize("what", ["bucket", "token"])
def test_administration_waits_for_room_for_all_its_records(tmp_path, what):
    """Creating a bucket appends two records (the bucket, its token): it waits until
    the ring has room for both, then runs; past ring_wait it changes nothing."""
    with small_ring(ring_wait=0.3) as (s, name, _):
        with one_worker(name, tmp_path) as srv:
            admin = {"X-Auth-Token": ADMIN_TOKEN}
            if what == "bucket":
                request = ("POST", f"{API}/buckets", {"name": "nb"}, admin)
            else:
                request = ("POST", f"{API}/buckets/b/tokens", {"permissions": ["read"]}, admin)
            status, _, body = srv.request(*request)
            assert (status, json.loads(body)["code"]) == (503, "ring_full")
            assert "nb" not in s.buckets() and len(s.tokens("b")) == 1
            waiter, answer = in_thread(srv.request, *request)
            wait_until(lambda: worker_claims(s, srv) or answer, "the request waits")
            drain(s)
            waiter.join(30)
            assert answer[0][0] == 201, answer
            assert ("nb" in s.buckets()) if what == "bucket" else len(s.tokens("b")) == 2
        assert s.check() == []
