"""A full change ring parks the connection that wrote, never the worker's loop.

No writer process runs here, so nothing drains the ring: the test fills it from its own
attach, then plays the writer (ring_release) when it wants the ring to have room again.
Each test runs one real worker (so every connection shares its loop) on both loop
implementations: the epoll loop (bukt/tcp/_epoll.pyx) and asyncio (bukt/tcp/connection.py).
"""
import contextlib
import hashlib
import socket

import pytest

import bukt
from bukt._core import writer_claim
from bukt import errors
from bukt import protocol as P
from bukt.protocol import Command as C, Status as S

from tcp_harness import Server, auth, call, connect, read_frame
from names import unique_name

LOOPS = ["epoll", "asyncio"]


@contextlib.contextmanager
def small_ring(ring_wait):
    """A segment with a 64 KiB change ring and the given ring wait (seconds), a logged
    bucket "b" with a read-write token "rw", and the ring filled to the last byte."""
    name = unique_name()
    s = bukt.create(name, size="16MiB", max_value=4096, ring_size="64KiB",
                    ring_wait=ring_wait)
    writer_claim(s)   # as a writer does: changes go to the ring
    try:
        b = s.create_bucket("b")
        s.create_bucket("o")
        s.add_token("b", hashlib.sha256(b"rw").digest(), 3)
        filled = fill_ring(s, b)
        yield s, name, filled
    finally:
        s.unlink()
        s.close()


def fill_ring(s, b):
    """Writes until not even the smallest record fits; returns what was written."""
    s.ring_wait = 0  # this attach must not wait: it is the one filling the ring
    filled = {}
    for size in (2048, 256, 16, 0):
        while True:
            key, value = b"fill:%06d" % len(filled), b"x" * size
            try:
                b.set(key, value)
            except errors.RingFull:
                break
            filled[key] = value
    return filled


def drain(s):
    """What the writer does once the records are in the log: their room is free."""
    s.ring_release(s.ring_position()[1])


def _set(rid, key, value=b"v"):
    return P.encode_request(C.SET, rid, flags=0, ttl_ms=0, if_version=0, key=key, value=value)


def nothing_to_read(sock) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)
    return False


@pytest.mark.parametrize("loop", LOOPS)
def test_a_parked_write_holds_up_its_connection_only_and_goes_through_on_room(loop):
    # A ring wait far longer than the test: the parked write can only be answered
    # because the ring got room, and any wait inside the loop would starve `b`.
    with small_ring(ring_wait=120) as (s, name, filled), \
            Server(name, workers=1, loop=loop) as srv:
        with connect(srv.port) as a, connect(srv.port) as b, connect(srv.port) as m, \
                connect(srv.port) as d:
            for c in (a, b, m, d):
                auth(c, "rw")
            # The SET parks; the PING after it on the same connection waits behind it.
            a.sendall(_set(1, b"parked", b"p" * 100) + P.encode_request(C.PING, 2, data=b"a"))
            # A multi-record write is parked before it starts.
            m.sendall(P.encode_request(C.MSET, 3, ttl_ms=0,
                                       items=[(b"m1", b"1" * 100), (b"m2", b"2" * 100)]))
            # So is a DELETE of several keys: it would count the keys it removed.
            gone = list(filled)[:3]
            d.sendall(P.encode_request(C.DELETE, 4, keys=gone))
            # Meanwhile another connection of the same worker is served, reads included.
            for i in range(20):
                assert call(b, C.PING, 10 + i, data=b"b")[:2] == (S.OK, 10 + i)
            key, value = next(iter(filled.items()))
            status, _, f = call(b, C.GET, 40, key=key)
            assert status == S.OK and f["value"] == value
            status, _, f = call(b, C.GET, 41, key=b"parked")
            assert status == S.NOT_FOUND  # not applied while parked
            assert nothing_to_read(a) and nothing_to_read(m) and nothing_to_read(d)
            assert all(s.bucket("b").get(k) is not None for k in gone)
            drain(s)  # the writer catches up
            status, rid, f = P.decode_response(C.SET, read_frame(a))
            assert (status, rid) == (S.OK, 1) and f["version"] > 0
            assert P.decode_response(C.PING, read_frame(a))[:2] == (S.OK, 2)
            status, rid, f = P.decode_response(C.MSET, read_frame(m))
            assert (status, rid) == (S.OK, 3) and len(f["versions"]) == 2
            status, rid, f = P.decode_response(C.DELETE, read_frame(d))
            assert (status, rid) == (S.OK, 4) and f == {"count": 3}, f
        assert s.bucket("b").get(b"parked") == b"p" * 100
        assert s.bucket("b").mget([b"m1", b"m2"]) == [b"1" * 100, b"2" * 100]
        assert srv.stop() == 0
        assert s.check() == []


@pytest.mark.parametrize("loop", LOOPS)
def test_a_write_parked_past_ring_wait_is_ring_full_and_changes_nothing(loop):
    with small_ring(ring_wait=0.3) as (s, name, filled), \
            Server(name, workers=1, loop=loop) as srv:
        with connect(srv.port) as a, connect(srv.port) as b:
            auth(a, "rw")
            auth(b, "rw")
            a.sendall(_set(1, b"late", b"l" * 100) + P.encode_request(C.INCR, 2, by=1,
                      initial=0, ttl_ms=0, key=b"n") + P.encode_request(C.GET, 3, key=b"late"))
            status, rid, f = P.decode_response(C.SET, read_frame(a))
            assert (status, rid) == (S.RING_FULL, 1)
            assert "change ring full for 0.3 s" in f["message"]
            # The frames behind it are handled in order, each waiting its own turn.
            assert P.decode_response(C.INCR, read_frame(a))[:2] == (S.RING_FULL, 2)
            assert P.decode_response(C.GET, read_frame(a))[:2] == (S.NOT_FOUND, 3)
            # The connection goes on once there is room, and nothing was lost.
            drain(s)
            assert call(a, C.SET, 4, flags=0, ttl_ms=0, if_version=0, key=b"late",
                        value=b"ok")[:2] == (S.OK, 4)
            for key, value in filled.items():
                status, _, f = call(b, C.GET, 5, key=key)
                assert status == S.OK and f["value"] == value, key
        assert srv.stop() == 0
        bucket = s.bucket("b")
        assert bucket.get(b"late") == b"ok" and bucket.get(b"n") is None
        assert bucket.stats()["keys"] == len(filled) + 1
        assert s.check() == []


def _resp(*args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _resp_read(sock, want):
    got = b""
    while len(got) < len(want):
        chunk = sock.recv(4096)
        assert chunk, got
        got += chunk
    return got


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("loop", LOOPS)
def test_resp_writes_park_on_a_full_ring_then_go_through_or_fail(loop, fast):
    """Over RESP, with the compiled loop (resp.fast_path) and without: a SET that finds
    the ring full parks its connection (the PING behind it waits), other connections
    are served, and it goes through once the ring has room; an MSET (several records)
    is refused at once, as the Python session refuses it."""
    with small_ring(ring_wait=120) as (s, name, filled), \
            Server(name, workers=1, loop=loop, resp_fast_path=fast) as srv:
        a = socket.create_connection(("127.0.0.1", srv.resp_port), timeout=10)
        b = socket.create_connection(("127.0.0.1", srv.resp_port), timeout=10)
        try:
            for c in (a, b):
                c.sendall(_resp(b"AUTH", b"b", b"rw"))
                assert _resp_read(c, b"+OK\r\n") == b"+OK\r\n"
            a.sendall(_resp(b"SET", b"parked", b"p" * 100) + _resp(b"PING"))
            b.sendall(_resp(b"GET", b"fill:000000") + _resp(b"MSET", b"m1", b"1", b"m2", b"2"))
            value = filled[b"fill:000000"]
            head = b"$%d\r\n%s\r\n" % (len(value), value)
            got = _resp_read(b, head + b"-ERR change ring full")
            assert got.startswith(head + b"-ERR change ring full"), got
            assert nothing_to_read(a)
            assert s.bucket("b").get(b"parked") is None
            drain(s)
            assert _resp_read(a, b"+OK\r\n+PONG\r\n") == b"+OK\r\n+PONG\r\n"
            assert s.bucket("b").get(b"parked") == b"p" * 100
        finally:
            a.close()
            b.close()
