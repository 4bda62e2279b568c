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
            # The pooled connection was closed by the server: it is not used again.
            assert c.get("k") == b"v"
            assert c.set("k", b"w") > 0
        finally:
            srv.stop()


def _fake_server(answer_after):
    """A listener that reads one request per connection and closes without answering
    (connection number < answer_after), else answers PING-style OK with an empty body;
    returns (port, connections seen)."""
    from bukt import protocol as P
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen()
    seen = []

    def serve():
        while True:
            try:
                conn, _ = lst.accept()
            except OSError:
                return
            seen.append(conn)
            data = conn.recv(65536)
            if len(seen) > answer_after and data:
                rid = int.from_bytes(data[5:13], "big")
                conn.sendall(P.frame(P.Status.NOT_FOUND, rid))
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    return lst, seen


def test_a_lost_read_is_retried_once_a_lost_write_is_not():
    lst, seen = _fake_server(answer_after=1)
    port = lst.getsockname()[1]
    try:
        c = Client(host="127.0.0.1", port=port)  # no token: no AUTH round trip
        assert c.get("k") is None  # the first connection died; the retry was answered
        assert len(seen) == 2
        lst2, seen2 = _fake_server(answer_after=1)
        c2 = Client(host="127.0.0.1", port=lst2.getsockname()[1])
        with pytest.raises(ConnectionError):
            c2.set("k", b"v")  # the server may have executed it: not sent twice
        assert len(seen2) == 1
        lst2.close()
    finally:
        lst.close()


def test_async_client_pools_connections_and_pipelines(srv):
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
