"""bukt.Client and bukt.AsyncClient against real workers: URLs, the pool, pipelining,
timeouts, reconnecting after the server goes away, errors mapped to bukt.errors."""
import asyncio
import socket
import threading

import pytest

from bukt import errors
from bukt.client import AsyncClient, Client, parse_url

from tcp_harness import Server, store


@pytest.fixture(scope="module")
def srv():
    with store() as (_, name):
        with Server(name, workers=2) as server:
            yield server


def test_parse_url():
    assert parse_url("bukt://sess%3Aions:to%40ken@10.0.0.1:9000?timeout=2.5&pool_size=3") == dict(
        host="10.0.0.1", port=9000, bucket="sess:ions", token="to@ken", timeout=2.5,
        pool_size=3)
    assert parse_url("bukt://:adm@localhost")["bucket"] == ""
    assert parse_url("bukt://b:t@localhost")["port"] == 7071
    with pytest.raises(errors.InvalidArgument):
        parse_url("redis://b:t@localhost:1")


def test_pool_is_shared_by_threads(srv):
    c = Client(srv.url("rw"), pool_size=4)
    failures = []

    def work(i):
        try:
            for j in range(100):
                c.set(f"t{i}", b"%d" % j)
                assert c.get(f"t{i}") == b"%d" % j
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert len(c._idle) <= 4
    c.close()


def test_timeout_against_a_server_that_never_answers():
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        port = mute.getsockname()[1]
        c = Client(f"bukt://b:t@127.0.0.1:{port}?timeout=0.3")
        with pytest.raises(TimeoutError):
            c.get("k")

        async def main():
            a = AsyncClient(f"bukt://b:t@127.0.0.1:{port}", timeout=0.3)
            with pytest.raises(TimeoutError):
                await a.get("k")
            await a.close()
        asyncio.run(main())


def test_connection_refused_is_a_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError):
        Client(f"bukt://b:t@127.0.0.1:{port}").get("k")


def test_reconnects_after_the_server_restarts():
    with store() as (_, name):
        srv = Server(name, workers=1)
        srv.start()
        c = Client(srv.url("rw"))
        c.set("k", b"v")
        port = srv.port
        assert srv.stop() == 0
        srv.kw["bind"] = f"127.0.0.1:{port}"
        srv.start()
        try:
            # The pooled connection is dead; a read retries on a fresh one by itself.
            assert c.get("k") == b"v"
            # A write on a dead pooled connection raises rather than guessing...
            c2 = Client(srv.url("rw"))
            c2.ping()
            srv.stop()
            srv.start()
            with pytest.raises(ConnectionError):
                c2.set("k", b"w")
            # ...and the next call reconnects.
            assert c2.set("k", b"w") > 0
        finally:
            srv.stop()


def test_async_client(srv):
    async def main():
        async with AsyncClient(srv.url("rw"), pool_size=3) as a:
            assert await a.set("ak", b"1") > 0
            assert await a.get("ak") == b"1"
            values = await asyncio.gather(*[a.incr("actr") for _ in range(300)])
            assert sorted(values) == list(range(min(values), min(values) + 300))
            assert len(a._conns) <= 3
            async with a.pipeline() as p:
                for i in range(500):
                    p.set(f"ap{i}", b"x")
                p.mget([f"ap{i}" for i in range(500)])
            assert p.results[-1] == [b"x"] * 500
            with pytest.raises(errors.PermissionDenied):
                async with AsyncClient(srv.url("ro")) as ro:
                    await ro.set("k", b"v")
            with pytest.raises(errors.AuthError):
                async with AsyncClient(srv.url("rw").replace(":rw@", ":bad@")) as bad:
                    await bad.get("k")
    asyncio.run(main())


def test_async_client_reconnects():
    with store() as (_, name):
        srv = Server(name, workers=1)
        srv.start()
        port = srv.port

        async def main():
            async with AsyncClient(srv.url("rw")) as a:
                await a.set("k", b"v")
                srv.stop()
                srv.kw["bind"] = f"127.0.0.1:{port}"
                srv.start()
                await asyncio.sleep(0.1)
                assert await a.get("k") == b"v"  # retried on a new connection
        try:
            asyncio.run(main())
        finally:
            srv.stop()
