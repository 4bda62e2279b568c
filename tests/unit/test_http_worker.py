"""CorkedTransport (bukt/http/worker.py) on a real uvloop transport over a socketpair:
what one event-loop turn writes leaves as one write, in order; a large turn writes
through, its pieces handed over as they are (no copy to join them); close() sends what
is buffered first. The inner transport is uvloop's own,
watched (not replaced) by a counting wrapper."""

import asyncio
import socket

import pytest
import uvloop

from bukt.http.worker import CORK_LIMIT, CorkedTransport


class Counting:
    """uvloop's transport, with its write() and writelines() calls recorded."""

    def __init__(self, transport):
        self.transport, self.writes, self.lines = transport, [], []

    def write(self, data):
        self.writes.append(bytes(data))
        self.transport.write(data)

    def writelines(self, chunks):
        chunks = list(chunks)
        self.lines.append(chunks)
        self.transport.writelines(chunks)

    def __getattr__(self, name):
        return getattr(self.transport, name)


async def corked_pair():
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    inner = Counting(transport)
    return CorkedTransport(inner, loop), inner, theirs


async def read_all(sock, n):
    loop = asyncio.get_running_loop()
    got = b""
    while len(got) < n:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 5)
        if not chunk:
            break
        got += chunk
    return got


def run(coro):
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def test_one_turn_one_write_in_order():
    async def main():
        t, inner, peer = await corked_pair()
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        t.write(bytearray(b"hello"))         # a bytearray reused by the caller is copied
        assert inner.writes == []            # nothing sent within the turn
        await asyncio.sleep(0)
        assert inner.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"]
        t.write(b"second")
        await asyncio.sleep(0)
        assert inner.writes[1:] == [b"second"]
        want = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhellosecond"
        assert await read_all(peer, len(want)) == want
        t.close()
        peer.close()
    run(main())


def test_large_turn_writes_through():
    async def main():
        t, inner, peer = await corked_pair()
        body = b"x" * CORK_LIMIT
        t.write(b"head")
        t.write(body)                        # past the limit: written at once,
        assert inner.writes == []            # the pieces as they are: the body is
        assert inner.lines == [[b"head", body]]     # not copied to join it
        assert inner.lines[0][1] is body
        assert t.get_write_buffer_size() == inner.transport.get_write_buffer_size()
        t.write(b"tail")
        assert t.get_write_buffer_size() >= 4
        await asyncio.sleep(0)
        assert inner.writes == [b"tail"]
        got = await read_all(peer, CORK_LIMIT + 8)
        assert got == b"head" + b"x" * CORK_LIMIT + b"tail"
        t.close()
        peer.close()
    run(main())


def test_close_sends_what_is_buffered_then_eof():
    async def main():
        t, inner, peer = await corked_pair()
        t.write(b"last words")
        t.close()
        assert inner.writes == [b"last words"]
        assert t.is_closing()
        got = await read_all(peer, 1 << 20)  # until EOF
        assert got == b"last words"
        await asyncio.sleep(0)               # the scheduled flush finds nothing to send
        assert inner.writes == [b"last words"]
        peer.close()
    run(main())


def test_abort_drops_the_buffer():
    async def main():
        t, inner, peer = await corked_pair()
        t.write(b"never sent")
        t.abort()
        await asyncio.sleep(0)
        assert inner.writes == []
        peer.close()
    run(main())


@pytest.mark.parametrize("name", ["get_extra_info", "set_write_buffer_limits"])
def test_other_transport_methods_forwarded(name):
    async def main():
        t, inner, peer = await corked_pair()
        assert getattr(t, name) == getattr(inner.transport, name)
        assert t.get_extra_info("socket") is not None
        t.close()
        peer.close()
    run(main())


def test_worker_builds_no_uvicorn_access_records():
    """uvicorn builds an access log record for every response when the logger
    uvicorn.access has a handler (hasHandlers(), asked once a connection). Bukt writes
    its own access lines, so a forked HTTP worker leaves uvicorn's with none."""
    import logging

    from bukt import logs
    from bukt.http.server import HttpServer

    access, error = logging.getLogger("uvicorn.access"), logging.getLogger("uvicorn.error")
    saved = (access.handlers[:], access.propagate, error.handlers[:], error.propagate,
             logs.role())
    try:
        HttpServer._post_fork(None, None)
        assert not access.hasHandlers()
    finally:
        access.handlers, access.propagate, error.handlers, error.propagate = saved[:4]
        logs.set_role(saved[4])
