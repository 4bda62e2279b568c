"""The TCP server against a real segment and real worker processes: every command,
pipelining with many requests in flight, many clients spread over several workers."""
import socket
import threading

import pytest

import bukt
from bukt import errors
from bukt import protocol as P
from bukt.client import Client
from bukt.protocol import Command as C, Status as S

from tcp_harness import ADMIN_TOKEN, Server, auth, call, connect, read_frame, socket_fds, store


@pytest.fixture(scope="module")
def served():
    with store(ints=dict(schema="int"), strs=dict(schema="str")) as (s, name):
        with Server(name, workers=2) as srv:
            yield s, srv


def test_every_bucket_operation_through_the_client(served):
    s, srv = served
    c = Client(srv.url("all"))
    c.flush()
    v1 = c.set("k", b"v")
    assert c.get("k") == b"v" and c.version("k") == v1
    assert s.bucket("b").get(b"k") == b"v"  # the segment is the same one
    assert c.set("k", b"w", nx=True) is None and c.set("absent", b"x", xx=True) is None
    with pytest.raises(errors.VersionMismatch):
        c.set("k", b"w", if_version=v1 + 1000)
    assert c.set("k", b"w", if_version=v1) > v1
    assert c.get("nope") is None and c.get("nope", 7) == 7
    assert c.exists("k", "k", "nope") == 2
    assert c.incr("n", 5) == 5 and c.decr("n", 2) == 3 and c.incr("m", initial=10) == 11
    assert c.ttl("k") is None and c.expire("k", 30) is True and 29 < c.ttl("k") <= 30
    assert c.persist("k") is True and c.ttl("k") is None and c.expire("nope", 1) is False
    assert c.mset({"a": b"1", "b2": b"2"}) and c.mget(["a", "nope", "b2"]) == [b"1", None, b"2"]
    cursor, keys = c.scan(prefix="b2")
    assert keys == [b"b2"] and cursor == 0
    assert c.getdel("a") == b"1" and c.getdel("a") is None
    assert c.set("once", b"x", single_read=True) and c.get("once") == b"x" and c.get("once") is None
    assert c.delete("b2", "nope") == 1
    st = c.stats()
    assert st["keys"] == 3 and st["writes"] > 0
    assert c.flush() == 3 and c.get("k") is None
    with pytest.raises(errors.InvalidArgument):
        c.get("")
    assert c.ping(b"hello") == b"hello"


def test_schemas_come_back_typed(served):
    s, srv = served
    tokens = {}
    for bname in ("ints", "strs"):
        import hashlib
        tokens[bname] = f"tok-{bname}"
        try:
            s.add_token(bname, hashlib.sha256(tokens[bname].encode()).digest(), 3)
        except errors.BuktError:
            pass
    ints = Client(f"bukt://ints:tok-ints@127.0.0.1:{srv.port}")
    strs = Client(f"bukt://strs:tok-strs@127.0.0.1:{srv.port}")
    ints.set("n", 41)
    assert ints.get("n") == 41 and ints.incr("n") == 42 and ints.mget(["n"]) == [42]
    with pytest.raises(errors.SchemaError):
        ints.set("n", b"forty")
    strs.set("s", "zoë")
    assert strs.get("s") == "zoë" and strs.getdel("s") == "zoë"


def test_admin_session_creates_and_drops_buckets(served):
    _, srv = served
    admin = Client(f"bukt://:{ADMIN_TOKEN}@127.0.0.1:{srv.port}")
    token = admin.create_bucket("made", schema="int", eviction="none", default_ttl=60)
    assert "made" in admin.buckets()
    assert admin.bucket_info("made") == dict(name="made", schema="int", eviction="none",
                                             persist=True, default_ttl=60.0)
    with pytest.raises(errors.BucketExists):
        admin.create_bucket("made")
    c = Client(f"bukt://made:{token}@127.0.0.1:{srv.port}")
    c.set("x", 5)
    assert c.get("x") == 5 and 59 < c.ttl("x") <= 60
    tid, ro = c.create_token(bukt_read := 1)
    assert (tid, bukt_read) in c.tokens()
    with pytest.raises(errors.PermissionDenied):
        Client(f"bukt://made:{ro}@127.0.0.1:{srv.port}").set("x", 1)
    assert c.revoke_token(tid) is True
    with pytest.raises(errors.AuthError):
        Client(f"bukt://made:{ro}@127.0.0.1:{srv.port}").get("x")
    c.drop_bucket("made")
    with pytest.raises(errors.BucketNotFound):
        c.get("x")
    with pytest.raises(errors.BucketNotFound):
        admin.bucket_info("made")


def test_raw_pipeline_of_many_requests_in_flight(served):
    """5000 requests written before a single response is read; every response arrives,
    each with its RequestID, and the server executed them in order."""
    _, srv = served
    n = 5000
    with connect(srv.port) as s:
        auth(s, "rw")
        frames = []
        for i in range(n):
            frames.append(P.encode_request(C.SET, 2 * i + 10, flags=0, ttl_ms=0, if_version=0,
                                           key=b"p%d" % (i % 50), value=b"%d" % i))
            frames.append(P.encode_request(C.GET, 2 * i + 11, key=b"p%d" % (i % 50)))
        sender = threading.Thread(target=s.sendall, args=(b"".join(frames),))
        sender.start()
        got = {}
        for _ in range(2 * n):
            data = read_frame(s)
            _, status, rid = P.HEADER.unpack_from(data, 0)
            got[rid] = data
        sender.join()
    assert len(got) == 2 * n
    for i in range(n):
        status, _, f = P.decode_response(C.GET, got[2 * i + 11])
        assert status == S.OK and f["value"] == b"%d" % i  # the SET just before it


def test_client_pipeline(served):
    _, srv = served
    c = Client(srv.url("rw"))
    with c.pipeline() as p:
        for i in range(2000):
            p.set(f"pl{i}", b"x" * 100)
        for i in range(2000):
            p.get(f"pl{i}")
        p.get("absent")
    assert len(p.results) == 4001 and p.results[2000:4000] == [b"x" * 100] * 2000
    assert p.results[-1] is None
    p = c.pipeline()
    p.set("e", b"1", if_version=999)
    p.get("e")
    with pytest.raises(errors.VersionMismatch):
        p.execute()
    assert isinstance(p.results[0], errors.VersionMismatch) and p.results[1] is None


def test_many_clients_over_several_workers(served):
    """40 clients in 8 threads: the kernel spreads their connections across both
    workers, and each client reads back what it wrote."""
    _, srv = served
    before = {pid: socket_fds(pid) for pid in srv.worker_pids()}
    clients = [Client(srv.url("rw"), pool_size=1) for _ in range(40)]
    for i, c in enumerate(clients):
        c.ping()  # open every connection now
    spread = {pid: socket_fds(pid) - n for pid, n in before.items()}
    assert sum(spread.values()) >= 40 and all(v > 0 for v in spread.values()), spread
    failures = []

    def work(group):
        try:
            for round_ in range(50):
                for i in group:
                    c = clients[i]
                    c.set(f"c{i}", b"%d" % round_)
                    assert c.get(f"c{i}") == b"%d" % round_
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(range(t, 40, 8),)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    for c in clients:
        c.close()


def test_quit_closes_after_answering(served):
    _, srv = served
    with connect(srv.port) as s:
        s.sendall(P.encode_request(C.PING, 1, data=b"a") + P.encode_request(C.QUIT, 2)
                  + P.encode_request(C.PING, 3, data=b"never"))
        assert P.decode_response(C.PING, read_frame(s))[:2] == (S.OK, 1)
        assert P.decode_response(C.QUIT, read_frame(s))[:2] == (S.OK, 2)
        assert s.recv(100) == b""


def test_response_above_max_frame_is_refused(served):
    s, srv = served
    with store() as (_, name):
        with Server(name, workers=1, max_frame="1MiB", max_inflight=4) as small:
            c = Client(small.url("rw"), max_frame=1 << 20)
            for i in range(3):
                c.set(f"big{i}", b"x" * 400_000)
            assert len(c.get("big0")) == 400_000
            with pytest.raises(errors.LimitExceeded):
                c.mget([f"big{i}" for i in range(3)])
            assert call  # the connection stays usable
            assert c.ping() == b""


def test_many_connections_bursting_at_once_into_one_worker():
    """24 connections to one worker each write 240 pipelined SETs and GETs with values
    of up to 60 KB at once, while their responses are read slowly, 4 KiB of each in
    turn through a small receive window: the worker reads many connections per wakeup
    (STAGING in bukt/tcp/_epoll.pyx puts them side by side in one receive buffer), frames
    cut by a read's end move to the connection's own buffer, and responses queue.
    Every GET returns what the SET before it on the same connection wrote."""
    import hashlib
    import random
    with store(burst=dict(persist=False)) as (s, name):
        s.add_token("burst", hashlib.sha256(b"burst").digest(), 3)
        # A high-water mark well above a response: output waits while reading goes on.
        with Server(name, workers=1, write_high_water=4 << 20) as srv:
            conns, frames, expect = [], [], []
            for c in range(24):
                rnd = random.Random(c)
                sock = socket.socket()
                # a small window: the worker's responses back up in its output
                # buffers while the requests keep coming
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.settimeout(60)
                sock.connect(("127.0.0.1", srv.port))
                assert call(sock, C.AUTH, bucket=b"burst", token=b"burst")[0] == S.OK
                last, fr, ex = {}, [], {}
                for i in range(240):
                    key = b"k%d-%d" % (c, rnd.randrange(5))
                    if i % 2 == 0 or key not in last:
                        value = bytes([65 + c % 26]) * rnd.randrange(1, 60000) + b"%d" % i
                        last[key] = value
                        fr.append(P.encode_request(C.SET, i, flags=0, ttl_ms=0,
                                                   if_version=0, key=key, value=value))
                    else:
                        fr.append(P.encode_request(C.GET, i, key=key))
                        ex[i] = last[key]
                conns.append(sock)
                frames.append(b"".join(fr))
                expect.append(ex)
            senders = [threading.Thread(target=sock.sendall, args=(data,))
                       for sock, data in zip(conns, frames)]
            for t in senders:
                t.start()
            # Read a little of each in turn, so that most stay part-read while
            # their senders still write.
            bufs, seen = [bytearray() for _ in conns], [0] * len(conns)
            while min(seen) < 240:
                for c, sock in enumerate(conns):
                    if seen[c] == 240:
                        continue
                    chunk = sock.recv(4096)
                    assert chunk, (c, seen[c])
                    bufs[c] += chunk
                    while len(bufs[c]) >= 4 and len(bufs[c]) >= int.from_bytes(bufs[c][:4], "big"):
                        n = int.from_bytes(bufs[c][:4], "big")
                        data, bufs[c] = bytes(bufs[c][:n]), bufs[c][n:]
                        i = seen[c]
                        assert P.HEADER.unpack_from(data, 0)[2] == i, (c, i)
                        if i in expect[c]:
                            status, _, f = P.decode_response(C.GET, data)
                            assert status == S.OK and f["value"] == expect[c][i], (c, i)
                        else:
                            assert P.decode_response(C.SET, data)[0] == S.OK, (c, i)
                        seen[c] += 1
            for t in senders:
                t.join()
            for sock in conns:
                sock.close()
        assert s.check() == []
