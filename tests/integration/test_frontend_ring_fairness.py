"""A large write that a server worker waits for on its event loop is not starved by
floods of small records from other processes (bukt/writewait/ringroom.py, FAIRNESS).

tests/integration/test_ring_fairness.py, with the large writes sent to a real server instead of
made by a local attach: a TCP worker (both loops) parks the SET and tries it again
every millisecond; an HTTP worker awaits between tries. Neither waits inside the core
(their ring_wait is 0), so without taking part in the ring's claim their retries never
found the half of the ring a 64 KiB record needs free, and the writes failed with
RING_FULL / 503 though the ring kept moving. The assertions are on outcomes only.
"""
import hashlib

import pytest
from mp_common import time_limit, wait_pid
from tcp_harness import Server as TcpServer, call, connect
from test_http_server import Server as HttpServer
from test_ring_fairness import (BIG, NBIG, NSMALL, RING, RING_WAIT, ctx, drainer, fork,
                                seg, small_producer, wait_until)  # noqa: F401 (fixture)

import bukt
from bukt._core import writer_claim
from bukt.protocol import Command as C, Status as S

TOKEN = "big-token-0123456789"


def tcp_writes(port):
    """NBIG SETs of BIG bytes on one connection; the status of each."""
    with connect(port, timeout=60) as sock:
        assert call(sock, C.AUTH, bucket=b"big", token=TOKEN.encode())[0] == S.OK
        return [call(sock, C.SET, 10 + n, flags=0, ttl_ms=0, if_version=0,
                     key=b"big%d" % (n % 2), value=bytes([n]) * BIG)[0]
                for n in range(NBIG)]


def http_writes(server):
    """NBIG PUTs of BIG bytes on one keep-alive connection; the status of each."""
    conn = server.connect()
    conn.timeout = 60
    try:
        return [server.request("PUT", f"/api/v1/buckets/big/keys/big{n % 2}",
                               bytes([n]) * BIG, {"Authorization": f"Bearer {TOKEN}"},
                               conn=conn)[0]
                for n in range(NBIG)]
    finally:
        conn.close()


@pytest.mark.parametrize("front", ["tcp-epoll", "tcp-asyncio", "http"])
def test_a_large_write_through_a_server_is_not_starved(seg, tmp_path, front):
    name, pids = seg
    with time_limit(180, f"the {front} fairness test"):
        store = bukt.create(name, size="32MiB", max_value=BIG, ring_size=RING,
                            ring_wait=RING_WAIT)
        writer_claim(store)   # as a writer does: changes go to the ring
        store.create_bucket("small")
        store.create_bucket("big")
        store.add_token("big", hashlib.sha256(TOKEN.encode()).digest(), 3)
        if front == "http":
            server = HttpServer(name, tmp_path, **{"http.workers": 1})
            ok = 204
        else:
            server = TcpServer(name, workers=1, loop=front[4:])
            server.start()
            ok = S.OK
        try:
            stop = ctx.RawValue("i", 0)
            moved = ctx.RawArray("q", 2)
            counts = ctx.RawArray("q", 2 * NSMALL)
            fork(pids, drainer, name, stop, moved)
            for i in range(NSMALL):
                fork(pids, small_producer, name, i, stop, counts)

            def occupied():
                tail, head, _ = store.ring_position()
                return head - tail

            # the small producers keep the ring all but full, the drainer running
            wait_until(lambda: occupied() > RING - 8192, "the small producers fill the ring")
            statuses = http_writes(server) if front == "http" else tcp_writes(server.port)
            moved_during = moved[0]
            stop.value = 1
            for pid in list(pids):
                assert wait_pid(pid, 60) == 0, f"process {pid} failed or hung"
                pids.remove(pid)
        finally:
            assert server.stop() == 0
        small_ok, small_full = sum(counts[0::2]), sum(counts[1::2])
        print(f"\n{front} fairness: large writes {statuses}; small writes {small_ok}, "
              f"RingFull {small_full}; {moved_during} records drained meanwhile "
              f"({moved[1]} large)")
        assert moved_during > NBIG, "the drainer did not keep the ring moving"
        assert small_ok > 0
        assert statuses == [ok] * NBIG, (
            f"{BIG}-byte writes through the {front} server were refused (statuses "
            f"{statuses}) though the drainer consumed {moved_during} records meanwhile: "
            "small producers took every bit of room it freed")
        assert moved[1] == NBIG, "every large write reached the ring"
        assert store.bucket("big").get(b"big%d" % ((NBIG - 1) % 2)) == \
            bytes([NBIG - 1]) * BIG
        assert store.ring_position()[0] == store.ring_position()[1]
        assert store.check() == []
        store.close()
