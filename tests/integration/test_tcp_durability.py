"""`fsync: always` over TCP: a write is answered only once the writer has flushed past
its record, and the wait blocks neither that connection's other requests nor other
connections. The test plays the writer: it publishes the policy and the flushed
position in the segment's header."""
import asyncio
import socket
import time
from types import SimpleNamespace

import pytest

from bukt import errors
from bukt import protocol as P
from bukt.protocol import Command as C, Status as S
from bukt.writewait.durability import RingDurability

from tcp_harness import Server, auth, call, connect, read_frame, store


def _set(rid, key, value=b"v"):
    return P.encode_request(C.SET, rid, flags=0, ttl_ms=0, if_version=0, key=key, value=value)


def test_a_durable_write_waits_for_the_writer_and_nothing_else_does():
    with store() as (s, name), Server(name, workers=1) as srv:
        s.writer_publish(sync_always=True)
        s.ring_flushed(s.ring_position()[1])  # everything so far is "on disk"
        time.sleep(0.3)  # the worker rereads the policy every 0.1 s
        with connect(srv.port) as a, connect(srv.port) as b:
            auth(a, "rw")
            auth(b, "rw")
            a.sendall(_set(5, b"dk") + P.encode_request(C.PING, 6, data=b"p"))
            # The PING behind the waiting SET is answered first: responses are matched
            # by RequestID (docs/protocol.md).
            assert P.decode_response(C.PING, read_frame(a))[:2] == (S.OK, 6)
            assert call(b, C.GET, 7, key=b"dk")[0] == S.OK  # applied in memory already
            a.settimeout(0.3)
            with pytest.raises(socket.timeout):
                read_frame(a)
            s.ring_flushed(s.ring_position()[1])  # the writer's fsync completes
            a.settimeout(5)
            status, rid, f = P.decode_response(C.SET, read_frame(a))
            assert (status, rid) == (S.OK, 5) and f["version"] > 0
            # Many writes in flight on one connection are released by one flush.
            a.sendall(b"".join(_set(100 + i, b"g%d" % i) for i in range(50)))
            time.sleep(0.2)
            s.ring_flushed(s.ring_position()[1])
            rids = sorted(P.decode_response(C.SET, read_frame(a))[1] for _ in range(50))
            assert rids == list(range(100, 150))
        s.writer_publish(sync_always=False)


def test_a_cache_only_bucket_never_waits():
    with store(cache=dict(persist=False)) as (s, name), Server(name, workers=1) as srv:
        import hashlib
        s.add_token("cache", hashlib.sha256(b"ct").digest(), 3)
        s.writer_publish(sync_always=True)
        time.sleep(0.3)
        with connect(srv.port) as c:
            assert call(c, C.AUTH, bucket=b"cache", token=b"ct")[0] == S.OK
            assert call(c, C.SET, 2, flags=0, ttl_ms=0, if_version=0, key=b"k",
                        value=b"v")[0] == S.OK
        s.writer_publish(sync_always=False)


def test_an_unconfirmed_write_is_writer_down():
    with store() as (s, _):
        s.writer_publish(sync_always=True)
        hook = RingDurability(s, timeout=0.2)
        assert s.sync_wait is False
        session = SimpleNamespace(persist=True)

        async def scenario():
            s.bucket("b").set(b"k", b"v")
            wait = hook(session)
            assert wait is not None
            with pytest.raises(errors.WriterDown):
                await wait
            s.bucket("b").set(b"k2", b"v")
            wait = hook(session)
            s.ring_flushed(s.ring_position()[1])
            await asyncio.wait_for(wait, 1)
            assert hook(session) is None  # nothing new to wait for
        asyncio.run(scenario())
        s.writer_publish(sync_always=False)


def _cpu_seconds(pid):
    import os
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_peer_that_resets_while_its_write_waits_costs_nothing():
    """The connection is gone but its response still waits for the writer: the worker
    neither spins on the dead socket nor fails when the wait ends."""
    import struct
    with store() as (s, name), Server(name, workers=1) as srv:
        s.writer_publish(sync_always=True)
        s.ring_flushed(s.ring_position()[1])
        time.sleep(0.3)
        worker = srv.worker_pids()[0]
        c = connect(srv.port)
        auth(c, "rw")
        # After QUIT the worker reads no more from it: only an error can wake it up.
        c.sendall(_set(5, b"rk") + P.encode_request(C.QUIT, 6))
        time.sleep(0.1)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()  # RST
        time.sleep(0.2)
        cpu = _cpu_seconds(worker)
        time.sleep(1.0)
        assert _cpu_seconds(worker) - cpu < 0.3  # idle, not spinning
        s.ring_flushed(s.ring_position()[1])
        with connect(srv.port) as d:
            assert call(d, C.PING, data=b"")[0] == S.OK
        s.writer_publish(sync_always=False)


@pytest.mark.parametrize("loop", ["epoll", "asyncio"])
def test_max_inflight_stops_handling_a_connection_whose_writes_wait(loop):
    """tcp.max_inflight on a real worker: with that many responses of one connection
    waiting for the writer, the worker handles none of its later requests (they stay
    unread) until answers go out; other connections are served all along."""
    import select
    n, limit = 10, 4
    with store() as (s, name):
        s.writer_publish(sync_always=True)  # before the start: the worker's first read
        s.ring_flushed(s.ring_position()[1])
        bucket = s.bucket("b")
        with Server(name, workers=1, max_inflight=limit, loop=loop) as srv, \
                connect(srv.port) as a, connect(srv.port) as b:
            auth(a, "rw")
            auth(b, "rw")
            a.sendall(b"".join(_set(100 + i, b"f%d" % i) for i in range(n)))
            deadline = time.monotonic() + 10
            while sum(bucket.get(b"f%d" % i) is not None for i in range(n)) < limit:
                assert time.monotonic() < deadline, "the first writes were not handled"
                time.sleep(0.01)
            for i in range(5):  # the loop goes round; a's requests stay where they are
                assert call(b, C.PING, 50 + i, data=b"b")[:2] == (S.OK, 50 + i)
            applied = [bucket.get(b"f%d" % i) is not None for i in range(n)]
            assert applied == [True] * limit + [False] * (n - limit)
            assert not select.select([a], [], [], 0)[0]  # all four wait for the writer
            rids = []
            while len(rids) < n:  # the writer flushes, again and again, till all are in
                s.ring_flushed(s.ring_position()[1])
                if select.select([a], [], [], 0.05)[0]:
                    status, rid, _ = P.decode_response(C.SET, read_frame(a))
                    assert status == S.OK
                    rids.append(rid)
                assert time.monotonic() < deadline + 10
            assert sorted(rids) == list(range(100, 100 + n))
            assert all(bucket.get(b"f%d" % i) == b"v" for i in range(n))
