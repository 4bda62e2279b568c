"""The same command script over real sockets to a server with resp.fast_path on (the
compiled loop, bukt/tcp/_resp.pyx) and to one with it off (the Python session alone),
on both event loops: the reply streams are the same bytes."""
import re
import socket

import pytest

from tcp_harness import Server, store

pytest.importorskip("bukt.tcp._resp")


def resp(*args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


SCRIPT = [
    (b"AUTH", b"b", b"rw"), (b"PING",), (b"PING", b"hi"), (b"ECHO", b"x"),
    (b"GET", b"k"), (b"SET", b"k", b"v"), (b"GET", b"k"), (b"SET", b"e", b"v", b"EX", b"60"),
    (b"SET", b"e", b"v", b"PX", b"0"), (b"SET", b"e", b"v", b"NX"), (b"SETEX", b"s", b"60", b"v"),
    (b"INCR", b"n"), (b"INCRBY", b"n", b"41"), (b"DECR", b"n"), (b"DECRBY", b"n", b"2"),
    (b"INCRBY", b"n", b"x"), (b"INCR", b"k"), (b"MSET", b"a", b"1", b"b", b"2"),
    (b"MGET", b"a", b"b", b"zz"), (b"MSET", b"a"), (b"EXISTS", b"a", b"zz", b"a"),
    (b"DEL", b"a", b"zz"), (b"UNLINK", b"b"), (b"GET", b"k" * 400), (b"FOO",),
    (b"HELLO", b"3"), (b"GET", b"zz"), (b"MGET", b"zz", b"k"), (b"HELLO", b"2"),
    (b"MULTI",), (b"SET", b"t", b"1"), (b"INCR", b"t"), (b"EXEC",),
    (b"AUTH", b"b", b"ro"), (b"GET", b"k"), (b"SET", b"k", b"w"), (b"DEL", b"k"),
    (b"AUTH", b"b", b"nope"), (b"GET", b"k"), (b"PING",),
]
END = resp(b"AUTH", b"b", b"rw") + resp(b"ECHO", b"the-end")


def replies(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(data + END)
        got = b""
        while not got.endswith(b"$7\r\nthe-end\r\n"):
            chunk = c.recv(65536)
            assert chunk, got
            got += chunk
    return re.sub(rb"\$2\r\nid\r\n:\d+\r\n", b"", got)   # HELLO's connection id


@pytest.mark.parametrize("loop", ["epoll", "asyncio"])
def test_fast_path_and_python_session_send_the_same_bytes(loop):
    data = b"".join(resp(*c) for c in SCRIPT) + b"PING\r\nGET k\r\n"
    pipelined = resp(b"AUTH", b"b", b"rw") + b"".join(resp(b"SET", b"p%d" % i, b"v" * i) + resp(b"GET", b"p%d" % i)
                         for i in range(200))
    out = []
    for fast in (True, False):
        with store() as (s, name), Server(name, workers=1, loop=loop,
                                          resp_fast_path=fast) as srv:
            out.append((replies(srv.resp_port, data), replies(srv.resp_port, pipelined)))
    assert out[0] == out[1]
    script, piped = out[0]
    assert script.startswith(b"+OK\r\n+PONG\r\n$2\r\nhi\r\n$1\r\nx\r\n$-1\r\n+OK\r\n$1\r\nv\r\n")
    assert b"-NOPERM" in script and b"-WRONGPASS" in script and b"-NOAUTH" in script
    assert piped.count(b"+OK\r\n") == 202
