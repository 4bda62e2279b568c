"""EXPIRE, PEXPIRE, EXPIREAT and PEXPIREAT with NX, XX, GT and LT: the same script run
against a real redis-server and against Bukt's RESP listener gets the same replies (a
key without a TTL counts as an infinite one for GT and LT; a time in the past deletes
when the condition holds)."""
import subprocess
import time

import pytest

redis = pytest.importorskip("redis")

from resp_tools import need_tool  # noqa: E402
from serve_harness import unused_port, wait_for  # noqa: E402
from tcp_harness import Server, store  # noqa: E402


@pytest.fixture(scope="module")
def real_redis(tmp_path_factory):
    port = unused_port()
    proc = subprocess.Popen([need_tool("redis-server"), "--port", str(port), "--bind",
                             "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path_factory.mktemp("redis"))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = redis.Redis("127.0.0.1", port, socket_timeout=10)

        def up():
            try:
                return r.ping()
            except redis.ConnectionError:
                return False
        wait_for(up, what="redis-server")
        version = tuple(int(x) for x in r.info("server")["redis_version"].split(".")[:2])
        if version < (7, 0):
            pytest.skip("redis-server before 7.0 has no EXPIRE options")
        yield r
        r.close()
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module", params=["epoll", "asyncio"])
def bukt_redis(request):
    with store() as (st, name):
        with Server(name, workers=1, loop=request.param) as server:
            r = redis.Redis("127.0.0.1", server.resp_port, username="b", password="rw",
                            socket_timeout=10)
            yield r
            r.close()
            assert st.check() == []


def script():
    now, now_ms = int(time.time()), int(time.time() * 1000)
    return [
        ("SET", "k", "v"),
        ("EXPIRE", "k", 100, "XX"),             # no TTL: XX refuses
        ("EXPIRE", "k", 100, "GT"),             # no TTL is infinite: never greater
        ("EXPIRE", "k", 100, "LT"),             # ... always less
        ("TTL", "k"),
        ("EXPIRE", "k", 200, "NX"),             # has a TTL now
        ("EXPIRE", "k", 50, "GT"),
        ("EXPIRE", "k", 200, "GT"),
        ("EXPIRE", "k", 300, "LT"),
        ("EXPIRE", "k", 150, "lt"),
        ("EXPIRE", "k", 150, "XX"),
        ("PEXPIRE", "k", 1_000_000, "GT"),
        ("PEXPIRE", "k", 900_000, "XX", "GT"),
        ("EXPIREAT", "k", now + 50, "LT"),
        ("PEXPIREAT", "k", now_ms + 10_000_000, "XX", "GT"),
        ("PEXPIREAT", "k", now_ms + 10_000_000, "GT", "GT"),
        ("EXPIRE", "k", 100, "NX", "XX"),
        ("EXPIRE", "k", 100, "NX", "GT"),
        ("EXPIRE", "k", 100, "GT", "LT"),
        ("EXPIRE", "k", 100, "FOO"),
        ("EXPIRE", "k", "abc", "FOO"),          # options are read before the number
        ("EXPIRE", "k", "abc", "GT"),
        ("EXPIRE", "missing", 100, "NX"),
        ("EXPIRE", "missing", 100, "LT"),
        ("EXPIRE", "k", -1, "GT"),              # the past is not greater: kept
        ("EXISTS", "k"),
        ("EXPIRE", "k", -1, "LT"),              # ... is less: deleted
        ("EXISTS", "k"),
        ("SET", "p", "v"),
        ("EXPIRE", "p", -5, "XX"),              # no TTL: kept
        ("EXISTS", "p"),
        ("EXPIREAT", "p", now - 10, "NX"),      # deleted
        ("EXISTS", "p"),
        ("SET", "q", "v"),
        ("PEXPIREAT", "q", now_ms + 5_000_000, "LT"),
        ("PEXPIREAT", "q", now_ms + 6_000_000, "LT"),
        ("PEXPIREAT", "q", now_ms + 4_000_000, "LT", "XX"),
        ("PTTL", "q"),
        ("EXPIRE", "q", 100),
        ("EXPIRE", "q", 10, "NX"),
        ("TTL", "q"),
    ]


def run(r, commands):
    out = []
    for cmd in commands:
        try:
            reply = r.execute_command(*cmd)
        except redis.ResponseError as exc:
            reply = ("error", str(exc))
        if cmd[0] in ("TTL", "PTTL") and isinstance(reply, int) and reply > 0:
            # (the same TTL, read a moment apart)
            reply = ("ttl", "positive")
        out.append((cmd, reply))
    return out


def test_same_replies_as_redis(real_redis, bukt_redis):
    real_redis.flushall()
    commands = script()
    expected = run(real_redis, commands)
    got = run(bukt_redis, commands)
    assert got == expected


def test_multi_refuses_expire_options(bukt_redis):
    with bukt_redis.pipeline() as p:
        p.set("m", "v").expire("m", 100, gt=True)
        with pytest.raises(redis.ResponseError, match="not supported inside MULTI"):
            p.execute()
    with bukt_redis.pipeline() as p:
        assert p.set("m", "v").expire("m", 100).execute() == [True, True]
