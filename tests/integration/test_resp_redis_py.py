"""redis-py against the RESP listener of real TCP workers (both event loops), in RESP2
and RESP3: every command of docs/resp.md, pipelines with and without MULTI, WATCH
conflicts, redis-py's Lock, error classes and the auth matrix; and against a real
`bukt serve`."""
import os
import threading
import time

import pytest

redis = pytest.importorskip("redis")

from tcp_harness import ADMIN_TOKEN, Server, store  # noqa: E402

LOOPS = ["epoll", "asyncio"]


@pytest.fixture(scope="module", params=LOOPS)
def srv(request):
    # "np" is not persisted: no writer runs here to drain the change ring
    with store(np={"persist": False}) as (st, name):
        with Server(name, workers=1, loop=request.param, auth_max_failures=1000) as server:
            server.store = st
            yield server


def client(srv, token="rw", bucket="b", proto=2, **kw):
    return redis.Redis("127.0.0.1", srv.resp_port, username=bucket, password=token,
                       protocol=proto, socket_timeout=10, **kw)


@pytest.fixture(params=[2, 3])
def r(srv, request):
    c = client(srv, proto=request.param)
    for k in c.scan_iter(count=1000):
        c.delete(k)
    yield c
    c.close()


def test_strings(r):
    assert r.ping() is True
    assert r.echo("hi") == b"hi"
    assert r.set("s", "v") is True
    assert r.get("s") == b"v"
    assert r.get("missing") is None
    assert r.set("s", "w", nx=True) is None
    assert r.set("s", "w", xx=True) is True
    assert r.set("nx-new", "1", xx=True) is None
    assert r.set("s", "x", get=True) == b"w"
    assert r.set("s", "y", ex=100)
    assert 99 <= r.ttl("s") <= 100
    assert r.set("s", "z", keepttl=True)
    assert r.get("s") == b"z" and 99 <= r.ttl("s") <= 100
    assert r.set("s", "p", px=50_000) and 49_000 < r.pttl("s") <= 50_000
    assert r.set("s", "q", exat=int(time.time()) + 100) and 98 <= r.ttl("s") <= 100
    assert r.set("s", "q", pxat=int(time.time() * 1000) + 100_000) and r.ttl("s") > 90
    assert r.set("s", "gone", exat=int(time.time()) - 10) is True
    assert r.exists("s") == 0
    assert r.setnx("n1", "a") is True and r.setnx("n1", "b") is False
    assert r.setex("e1", 100, "v") is True and 99 <= r.ttl("e1") <= 100
    assert r.psetex("e2", 100_000, "v") is True and r.pttl("e2") > 90_000
    assert r.getset("n1", "c") == b"a" and r.get("n1") == b"c"
    assert r.getdel("n1") == b"c" and r.get("n1") is None
    r.set("gx", "v")
    assert r.getex("gx", ex=100) == b"v" and 99 <= r.ttl("gx") <= 100
    assert r.getex("gx", persist=True) == b"v" and r.ttl("gx") == -1
    assert r.getex("gx", px=100_000) == b"v" and r.pttl("gx") > 90_000
    assert r.getex("gx") == b"v"
    assert r.mset({"m1": "1", "m2": "2"}) is True
    assert r.mget("m1", "nope", "m2") == [b"1", None, b"2"]
    assert r.msetnx({"m3": "3", "m1": "x"}) is False and r.get("m3") is None
    assert r.msetnx({"m3": "3", "m4": "4"}) is True and r.get("m4") == b"4"
    assert r.append("ap", "ab") == 2 and r.append("ap", "cd") == 4 and r.get("ap") == b"abcd"
    assert r.strlen("ap") == 4 and r.strlen("none") == 0
    assert r.incr("c") == 1 and r.incrby("c", 10) == 11
    assert r.decr("c") == 10 and r.decrby("c", 5) == 5
    assert r.incrbyfloat("f", 1.5) == 1.5 and r.incrbyfloat("f", 0.25) == 1.75
    assert r.get("f") == b"1.75"
    assert r.incrbyfloat("c", 0.5) == 5.5
    assert r.execute_command("BUKT.SETSR", "sr", "once") in (b"OK", "OK", True)
    assert r.get("sr") == b"once" and r.get("sr") is None
    assert r.set("sr2", "x", ) and r.execute_command("SET", "sr3", "y", "BUKT-SINGLE-READ")
    assert r.get("sr3") == b"y" and r.get("sr3") is None


def test_keys(r, srv):
    r.mset({"k:1": "a", "k:2": "b", "other": "c"})
    assert r.delete("k:1", "nothing") == 1
    assert r.unlink("k:2") == 1
    r.mset({"k:1": "a", "k:2": "b"})
    assert r.exists("k:1", "k:2", "k:1", "zz") == 3
    assert r.type("k:1") in (b"string", "string") and r.type("zz") in (b"none", "none")
    assert r.expire("k:1", 100) is True and 99 <= r.ttl("k:1") <= 100
    assert r.expire("zz", 100) is False
    assert r.pexpire("k:1", 50_000) is True and r.pttl("k:1") <= 50_000
    assert r.expireat("k:1", int(time.time()) + 200) is True and r.ttl("k:1") > 190
    assert r.pexpireat("k:1", int(time.time() * 1000) + 300_000) and r.ttl("k:1") > 290
    assert r.persist("k:1") is True and r.ttl("k:1") == -1
    assert r.persist("k:1") is False
    assert r.ttl("zz") == -2 and r.pttl("zz") == -2
    assert r.expire("k:2", 0) is True and r.exists("k:2") == 0
    r.set("k:2", "b")
    assert sorted(r.keys("k:*")) == [b"k:1", b"k:2"]
    assert sorted(r.keys("*")) == [b"k:1", b"k:2", b"other"]
    assert r.keys("k:[1]") == [b"k:1"]
    seen = set(r.scan_iter(match="k:*", count=1))
    assert seen == {b"k:1", b"k:2"}
    cursor, keys = r.scan(0, count=1000)
    assert cursor == 0 and set(keys) == {b"k:1", b"k:2", b"other"}
    assert r.dbsize() == 3
    assert r.touch("k:1", "zz") == 1
    assert r.randomkey() in {b"k:1", b"k:2", b"other"}
    assert client(srv, token="all").flushdb() is True  # FLUSHDB needs an admin token
    assert r.dbsize() == 0 and r.randomkey() is None


def test_connection_and_server(r, srv):
    assert r.execute_command("SELECT", 0) in (b"OK", "OK", True)
    with pytest.raises(redis.ResponseError, match="AUTH"):
        r.execute_command("SELECT", 1)
    assert r.client_setname("me") is True
    assert r.client_getname() in ("me", b"me")
    assert isinstance(r.client_id(), int)
    assert r.execute_command("CLIENT", "SETINFO", "LIB-NAME", "x") in (b"OK", "OK", True)
    info = r.info()
    assert info["redis_version"] == "7.2.0" and "bukt_version" in info
    assert "db0" in r.info("keyspace") or r.dbsize() == 0
    for section in ("server", "clients", "memory", "persistence", "stats", "keyspace"):
        r.info(section)
    conf = r.config_get("*")
    assert {"save", "appendonly", "maxmemory", "databases"} <= set(conf)
    assert r.config_get("databases") == {"databases": "1"}
    with pytest.raises(redis.ResponseError, match="not supported"):
        r.config_set("maxmemory", "1")
    assert r.command_count() > 50
    r.execute_command("COMMAND", "DOCS")
    r.execute_command("COMMAND")
    secs, usecs = r.time()
    assert abs(secs - time.time()) < 60
    with pytest.raises(redis.ResponseError, match="unknown command 'LPUSH'"):
        r.execute_command("LPUSH", "l", "x")
    assert r.ping() is True  # the connection goes on
    assert r.execute_command("RESET") in (b"RESET", "RESET")


def test_errors_map_to_redis_py_classes(r):
    r.set("text", "abc")
    with pytest.raises(redis.ResponseError, match="^value is not an integer or out of range$"):
        r.incr("text")
    with pytest.raises(redis.ResponseError, match="not a valid float"):
        r.incrbyfloat("text", 1)
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        r.execute_command("GET")
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("SET", "a", "b", "BOGUS")
    with pytest.raises(redis.ResponseError, match="invalid expire time"):
        r.execute_command("SET", "a", "b", "EX", "0")
    with pytest.raises(redis.ResponseError, match="unknown command"):
        p = r.pipeline()
        p.set("a", 1)
        p.execute_command("NOSUCH")
        p.execute()
    assert r.get("a") is None  # an aborted transaction applies nothing


def test_pipelines(r):
    p = r.pipeline(transaction=False)
    for i in range(100):
        p.set(f"p{i}", i)
    p.incr("p0")
    p.get("p0")
    p.incr("p1-not-int-no")
    assert p.execute() == [True] * 100 + [1, b"1", 1]
    p = r.pipeline()  # MULTI/EXEC
    p.set("t", 5).incrby("t", 3).get("t").mget("t", "p1").delete("p2").exists("p2").ttl("t")
    assert p.execute() == [True, 8, b"8", [b"8", b"1"], 1, 0, -1]
    p = r.pipeline()
    p.set("t", "text").incr("t").get("t")
    res = p.execute(raise_on_error=False)
    assert res[0] is True and isinstance(res[1], redis.ResponseError) and res[2] == b"text"
    with pytest.raises(redis.ResponseError):
        r.execute_command("EXEC")
    with pytest.raises(redis.ResponseError):
        r.execute_command("DISCARD")


def test_watch_conflict_from_another_connection(r, srv):
    other = client(srv)
    r.set("w", 1)
    with r.pipeline() as p:
        p.watch("w")
        assert int(p.get("w")) == 1
        other.set("w", 2)  # another connection changes the watched key
        p.multi()
        p.set("w", 100)
        with pytest.raises(redis.WatchError):
            p.execute()
    assert r.get("w") == b"2"
    with r.pipeline() as p:  # without interference it goes through
        p.watch("w")
        p.multi()
        p.incr("w")
        assert p.execute() == [3]
    # a key absent at WATCH and created meanwhile is a conflict too
    with r.pipeline() as p:
        p.watch("absent")
        other.set("absent", 1)
        p.multi()
        p.set("absent", 2)
        with pytest.raises(redis.WatchError):
            p.execute()
    # transaction(): redis-py's retry loop over WATCH
    def add_one(pipe):
        v = int(pipe.get("w"))
        pipe.multi()
        pipe.set("w", v + 1)
    r.transaction(add_one, "w")
    assert r.get("w") == b"4"
    other.close()


def test_lock(r, srv):
    lock = r.lock("lk", timeout=10, blocking_timeout=0)
    assert lock.acquire()
    other = client(srv).lock("lk", timeout=10, blocking_timeout=0)
    assert not other.acquire()
    assert lock.extend(5)
    assert r.pttl("lk") > 10_000
    assert lock.reacquire()
    assert lock.locked() and lock.owned()
    lock.release()
    assert r.get("lk") is None
    assert other.acquire()
    stale = r.lock("lk", timeout=10)
    stale.local.token = b"not-the-owner"
    with pytest.raises(redis.exceptions.LockNotOwnedError):
        stale.release()
    assert r.get("lk") is not None  # the owner's lock stands
    other.release()
    with r.lock("lk2", timeout=5):
        assert r.get("lk2") is not None


def test_auth_matrix(srv):
    raw = redis.Redis("127.0.0.1", srv.resp_port, socket_timeout=10)
    assert raw.ping() is True  # PING before AUTH is allowed
    with pytest.raises(redis.AuthenticationError):
        raw.get("k")
    with pytest.raises(redis.AuthenticationError):
        client(srv, token="wrong").get("k")
    with pytest.raises(redis.AuthenticationError):
        client(srv, token="other").get("k")  # another bucket's token
    ro = client(srv, token="ro")
    assert ro.get("k") is None
    with pytest.raises(redis.exceptions.NoPermissionError):
        ro.set("k", "v")
    with pytest.raises(redis.exceptions.NoPermissionError):
        ro.flushdb()
    with pytest.raises(redis.exceptions.NoPermissionError):
        client(srv).flushdb()  # read-write, not admin
    assert client(srv, token="all").flushdb() is True
    # AUTH <token>: the token names its bucket
    t = redis.Redis("127.0.0.1", srv.resp_port, password="other", socket_timeout=10)
    assert t.set("in-o", "1") and t.get("in-o") == b"1"
    assert client(srv).get("in-o") is None  # bucket "b" is another keyspace
    # HELLO 3 AUTH
    h = client(srv, proto=3)
    assert h.set("h", "1") and h.get("h") == b"1"
    raw.close()


def test_admin_token_opens_a_bucket(srv):
    """AUTH <bucket> <admin-token>: every permission on that bucket, FLUSHDB's too."""
    admin = client(srv, token=ADMIN_TOKEN)
    assert admin.set("ad", "1") and admin.get("ad") == b"1"
    with pytest.raises(redis.exceptions.NoPermissionError):
        client(srv).flushdb()           # a bucket's read-write token
    assert admin.flushdb() is True
    assert client(srv).get("ad") is None
    assert client(srv, token=ADMIN_TOKEN, proto=3).flushdb() is True   # HELLO 3 AUTH
    # the admin token names no bucket by itself; a missing bucket is refused
    with pytest.raises(redis.AuthenticationError, match="AUTH <bucket> <admin-token>"):
        redis.Redis("127.0.0.1", srv.resp_port, password=ADMIN_TOKEN,
                    socket_timeout=10).get("k")
    with pytest.raises(redis.AuthenticationError):
        client(srv, token=ADMIN_TOKEN, bucket="nosuch").get("k")
    admin.close()


def test_info_counts_clients(srv):
    """connected_clients: this worker's open connections (the server runs one worker)."""
    first, second = client(srv), client(srv)
    assert first.ping() and second.ping()
    assert first.info("clients")["connected_clients"] >= 2
    first.close()
    second.close()


def test_revoked_token_is_noauth(srv):
    import hashlib
    tok = "revokable-token"
    tid = srv.store.add_token("b", hashlib.sha256(tok.encode()).digest(), 3)
    c = client(srv, token=tok)
    assert c.set("rv", "1")
    srv.store.revoke_token("b", tid)
    with pytest.raises(redis.AuthenticationError):
        c.get("rv")


def test_concurrent_clients_and_large_values(srv):
    import hashlib
    big = os.urandom(1 << 20)
    errors = []
    try:
        srv.store.add_token("np", hashlib.sha256(b"np-token").digest(), 3)
    except Exception:
        pass  # the other protocol's run added it

    def worker(i):
        try:
            c = client(srv, token="np-token", bucket="np")
            for j in range(50):
                c.set(f"c{i}:{j}", big[:1000 + j])
                assert c.get(f"c{i}:{j}") == big[:1000 + j]
            c.set(f"big{i}", big)
            assert c.get(f"big{i}") == big
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [str(e) for e in errors] == []
    assert srv.store.check() == []


def test_against_bukt_serve(tmp_path):
    from serve_harness import Service
    svc = Service(tmp_path)
    try:
        svc.start()
        token = svc.create_bucket("kv")
        r = redis.Redis("127.0.0.1", svc.resp_port, username="kv", password=token,
                        socket_timeout=10)
        assert r.set("a", "1") and r.incr("a") == 2
        assert svc.client("kv", token).get(b"a") == b"2"  # the same table over the binary face
        assert "RESP" in svc.log()
        assert svc.stop() == 0
    finally:
        svc.cleanup()
