"""Keyspace notifications on the RESP face against a real `bukt serve` (its writer feeds
the change feed), on both event loops: redis-py's PubSub in RESP2 and RESP3, redis-cli's
psubscribe, the subscribed-state rules, unsubscribing, the auth matrix, a revoked token,
and a subscriber that does not read, cut off while the writes go on."""
import json
import socket
import subprocess
import time

import pytest

redis = pytest.importorskip("redis")

from resp_tools import need_tool  # noqa: E402
from serve_harness import Service, wait_for  # noqa: E402
from tcp_harness import Server  # noqa: E402

LOOPS = ["epoll", "asyncio"]


@pytest.fixture(scope="module", params=LOOPS)
def svc(request, tmp_path_factory):
    """A `bukt serve` (its TCP workers run the epoll loop); for the asyncio loop, a TCP
    worker of that loop attached to the same instance besides it. `svc.rport`: the RESP
    port under test."""
    s = Service(tmp_path_factory.mktemp(f"pubsub-{request.param}"),
                feed={"size": "256KiB", "max_lag": "64KiB"})
    server = None
    try:
        s.start()
        s.token = s.create_bucket("b")
        s.other = s.create_bucket("o")
        s.rport = s.resp_port
        if request.param == "asyncio":
            server = Server(s.name, workers=1, loop="asyncio", feed_max_lag=64 << 10)
            server.start()
            s.rport = server.resp_port
        yield s
        if server is not None:
            server.stop()
            server = None
        assert s.stop() == 0
    finally:
        if server is not None:
            server.stop()
        s.cleanup()


def client(svc, token=None, bucket="b", proto=2):
    return redis.Redis("127.0.0.1", svc.rport, username=bucket,
                       password=token or svc.token, protocol=proto, socket_timeout=10)


def messages(p, n, timeout=15):
    """The next n messages (not subscription confirmations) of PubSub p."""
    got = []
    end = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < end:
        m = p.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if m is not None:
            got.append(m)
    return got


def text(m):
    return (m["type"], m.get("pattern"), m["channel"], m["data"])


def new_token(svc, perms, bucket="b"):
    status, body = svc.http("POST", f"/api/v1/buckets/{bucket}/tokens",
                            {"permissions": perms}, {"X-Auth-Token": svc.admin_token()})
    assert status in (200, 201), body
    doc = json.loads(body)
    return doc["id"], doc["token"]


@pytest.mark.parametrize("proto", [2, 3])
def test_events_in_order(svc, proto):
    r = client(svc, proto=proto)
    p = r.pubsub()
    p.psubscribe(f"__keyspace@0__:u{proto}:*")
    p.subscribe(f"__keyevent@b__:expired", f"__keyevent@b__:incrby")
    assert [m["type"] for m in messages_all(p, 3)] == ["psubscribe", "subscribe",
                                                       "subscribe"]
    k = f"u{proto}:1".encode()
    r.set(k, "v")
    r.incr(f"u{proto}:n")
    r.expire(k, 100)
    r.persist(k)
    r.delete(k)
    r.set(k, "w", px=1)
    wait_for(lambda: r.get(k) is None, what="the key to expire")   # (lazy expiry)
    r.set("elsewhere", "x")                     # matches no subscription
    got = [text(m) for m in messages(p, 10)]
    space = f"__keyspace@0__:u{proto}:*".encode()
    ks = lambda key: f"__keyspace@0__:{key}".encode()     # noqa: E731
    assert got == [
        ("pmessage", space, ks(f"u{proto}:1"), b"set"),
        ("pmessage", space, ks(f"u{proto}:n"), b"incrby"),
        ("message", None, b"__keyevent@b__:incrby", f"u{proto}:n".encode()),
        ("pmessage", space, ks(f"u{proto}:1"), b"expire"),
        ("pmessage", space, ks(f"u{proto}:1"), b"persist"),
        ("pmessage", space, ks(f"u{proto}:1"), b"del"),
        ("pmessage", space, ks(f"u{proto}:1"), b"set"),
        ("pmessage", space, ks(f"u{proto}:1"), b"expired"),
        ("message", None, b"__keyevent@b__:expired", f"u{proto}:1".encode()),
    ], got
    p.close()
    r.close()


def messages_all(p, n):
    got = []
    end = time.monotonic() + 15
    while len(got) < n and time.monotonic() < end:
        m = p.get_message(timeout=0.5)
        if m is not None:
            got.append(m)
    return got


def test_unsubscribe_and_counts(svc):
    r = client(svc)
    p = r.pubsub()
    p.subscribe("__keyspace@b__:x1", "__keyspace@b__:x2")
    p.psubscribe("__keyevent@*__:del")
    assert [(m["type"], m["data"]) for m in messages_all(p, 3)] == [
        ("subscribe", 1), ("subscribe", 2), ("psubscribe", 3)]
    assert r.pubsub_numpat() >= 1
    assert b"__keyspace@b__:x1" in r.pubsub_channels()
    p.unsubscribe("__keyspace@b__:x1")
    assert [(m["type"], m["channel"], m["data"]) for m in messages_all(p, 1)] == [
        ("unsubscribe", b"__keyspace@b__:x1", 2)]
    r.set("x1", "a")
    r.set("x2", "a")
    r.delete("x1")
    got = [text(m) for m in messages(p, 2)]
    assert got == [("message", None, b"__keyspace@b__:x2", b"set"),
                   # one message a pattern and channel kind, under the bucket's name
                   ("pmessage", b"__keyevent@*__:del", b"__keyevent@b__:del", b"x1")]
    p.punsubscribe()
    p.unsubscribe()
    assert [m["type"] for m in messages_all(p, 2)] == ["punsubscribe", "unsubscribe"]
    r.set("x2", "b")
    assert messages(p, 1, timeout=1) == []
    # unsubscribed: an ordinary connection again, and it may subscribe again
    p.execute_command("GET", "x2")
    p.subscribe("__keyspace@b__:x2")
    messages_all(p, 1)
    r.set("x2", "c")
    assert [text(m) for m in messages(p, 1)] == [
        ("message", None, b"__keyspace@b__:x2", b"set")]
    p.close()
    r.close()


def raw(svc, *lines, token=None, bucket="b", rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", svc.rport))
    s.settimeout(10)
    s.sendall(f"AUTH {bucket} {token or svc.token}\r\n".encode())
    assert s.recv(100) == b"+OK\r\n"
    for line in lines:
        s.sendall(line.encode() + b"\r\n")
    return s


def read_until(s, needle):
    data = b""
    while needle not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_subscribed_state_rules(svc):
    s = raw(svc, "SUBSCRIBE __keyspace@b__:st", "GET st", "PING", "PING hi")
    got = read_until(s, b"hi\r\n")
    assert got == (b"*3\r\n$9\r\nsubscribe\r\n$17\r\n__keyspace@b__:st\r\n:1\r\n"
                   b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / "
                   b"PING / QUIT / RESET are allowed in this context\r\n"
                   b"*2\r\n$4\r\npong\r\n$0\r\n\r\n*2\r\n$4\r\npong\r\n$2\r\nhi\r\n"), got
    s.sendall(b"RESET\r\n")
    assert read_until(s, b"RESET\r\n").endswith(b"+RESET\r\n")
    s.close()
    # RESP3: any command, and the confirmation and messages are pushes
    s = raw(svc, "HELLO 3", "SUBSCRIBE __keyspace@b__:st3")
    read_until(s, b"st3\r\n:1\r\n")
    s.sendall(b"SET st3 v\r\n")
    got = read_until(s, b"$3\r\nset\r\n")
    assert b"+OK\r\n" in got
    assert b">3\r\n$7\r\nmessage\r\n$18\r\n__keyspace@b__:st3\r\n$3\r\nset\r\n" in got
    s.close()


def test_config_get_notify_keyspace_events(svc):
    r = client(svc)
    assert r.config_get("notify-keyspace-events") == {"notify-keyspace-events": "g$xeKE"}
    r.close()


def test_auth_matrix(svc):
    s = socket.create_connection(("127.0.0.1", svc.rport))
    s.settimeout(10)
    s.sendall(b"SUBSCRIBE __keyspace@b__:a\r\n")
    assert s.recv(100).startswith(b"-NOAUTH")
    s.close()
    _, wo = new_token(svc, ["write"])
    s = raw(svc, "SUBSCRIBE __keyspace@b__:a", token=wo)
    assert read_until(s, b"\r\n").startswith(b"-NOPERM")
    s.close()
    _, ro = new_token(svc, ["read"])
    p = client(svc, ro).pubsub()
    p.psubscribe("__keyspace@*__:*")
    messages_all(p, 1)
    # another bucket's token sees only its own bucket's events
    o = client(svc, svc.other, bucket="o").pubsub()
    o.psubscribe("__keyspace@*__:*")
    messages_all(o, 1)
    client(svc).set("in-b", "1")
    client(svc, svc.other, bucket="o").set("in-o", "1")
    assert [text(m) for m in messages(p, 1)] == [
        ("pmessage", b"__keyspace@*__:*", b"__keyspace@b__:in-b", b"set")]
    assert [text(m) for m in messages(o, 1)] == [
        ("pmessage", b"__keyspace@*__:*", b"__keyspace@o__:in-o", b"set")]
    p.close()
    o.close()


def test_revoked_token_ends_the_subscription(svc):
    tid, tok = new_token(svc, ["read"])
    s = raw(svc, "PSUBSCRIBE __keyspace@b__:rv*", token=tok)
    read_until(s, b":1\r\n")
    status, _ = svc.http("DELETE", f"/api/v1/buckets/b/tokens/{tid}",
                         headers={"X-Auth-Token": svc.admin_token()})
    assert status in (200, 204)
    got = read_until(s, b"\r\n")
    assert got.startswith(b"-NOAUTH"), got
    assert s.recv(100) == b""      # and the connection ends
    s.close()


def test_redis_cli_psubscribe(svc):
    cli = need_tool("redis-cli")
    proc = subprocess.Popen([cli, "-h", "127.0.0.1", "-p", str(svc.rport),
                             "--no-auth-warning", "--user", "b", "--pass", svc.token,
                             "psubscribe", "__keyspace@0__:cli:*"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = [proc.stdout.readline().decode().strip() for _ in range(3)]
        assert lines == ["psubscribe", "__keyspace@0__:cli:*", "1"], lines
        r = client(svc)
        r.set("clx", "not under the pattern's prefix")
        r.set("cli:a", "1")
        r.incrby("cli:a", 5)
        r.delete("cli:a")
        lines = [proc.stdout.readline().decode().strip() for _ in range(12)]
        assert lines == ["pmessage", "__keyspace@0__:cli:*", "__keyspace@0__:cli:a", "set",
                         "pmessage", "__keyspace@0__:cli:*", "__keyspace@0__:cli:a", "incrby",
                         "pmessage", "__keyspace@0__:cli:*", "__keyspace@0__:cli:a", "del"]
        r.close()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_slow_subscriber_is_cut_off_while_writes_go_on(svc):
    import bukt
    s = raw(svc, "PSUBSCRIBE __key*__:*", rcvbuf=4096)
    read_until(s, b":1\r\n")
    w = svc.client("b", svc.token)
    n = 20_000
    for i in range(n):                  # far more than the feed and the sockets hold
        w.set(b"slow:%06d:" % i + b"k" * 150, b"v")
    assert w.get(b"slow:%06d:" % (n - 1) + b"k" * 150) == b"v"
    data = b""
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    s.close()
    last = data[data.rfind(b"\r\n-") + 2:]
    assert last.startswith(b"-ERR subscriber cut off"), data[-300:]
    assert b"sequence" in last
    assert data.count(b"pmessage") < 2 * n
    # the others are served throughout, and the table is sound
    r = client(svc)
    assert r.get(b"slow:%06d:" % 0 + b"k" * 150) == b"v"
    r.close()
    w.close()
    st = bukt.attach(svc.name)
    assert st.check() == []


def test_subscribers_of_one_worker_each_get_their_own_messages(svc):
    """Subscribers of one worker share each event's messages only with those of the
    same subscriptions and protocol: two of one pattern in RESP2, the same pattern in
    RESP3, another pattern, and one whose subscriptions change between the writes,
    all reading the same events at once."""
    w = client(svc)
    subs = {}
    for name, proto, pattern in [("a1", 2, "__keyspace@0__:sh:*"),
                                 ("a2", 2, "__keyspace@0__:sh:*"),
                                 ("a3", 3, "__keyspace@0__:sh:*"),
                                 ("b", 2, "__keyspace@b__:sh:*"),
                                 ("c", 2, "__keyspace@0__:sh:*")]:
        p = client(svc, proto=proto).pubsub()
        p.psubscribe(pattern)
        assert messages_all(p, 1)[0]["type"] == "psubscribe"
        subs[name] = p
    w.set("sh:1", "v")
    w.delete("sh:1")
    got = {n: [text(m) for m in messages(p, 2)] for n, p in subs.items()}
    zero, named = b"__keyspace@0__:sh:*", b"__keyspace@b__:sh:*"
    first = [("pmessage", zero, b"__keyspace@0__:sh:1", b"set"),
             ("pmessage", zero, b"__keyspace@0__:sh:1", b"del")]
    assert got["a1"] == got["a2"] == got["a3"] == got["c"] == first, got
    assert got["b"] == [("pmessage", named, b"__keyspace@b__:sh:1", b"set"),
                        ("pmessage", named, b"__keyspace@b__:sh:1", b"del")], got
    subs["c"].subscribe("__keyevent@b__:set")
    assert messages_all(subs["c"], 1)[0]["type"] == "subscribe"
    w.set("sh:2", "v")
    assert [text(m) for m in messages(subs["a1"], 1)] == [
        ("pmessage", zero, b"__keyspace@0__:sh:2", b"set")]
    assert [text(m) for m in messages(subs["c"], 2)] == [
        ("pmessage", zero, b"__keyspace@0__:sh:2", b"set"),
        ("message", None, b"__keyevent@b__:set", b"sh:2")]
    for p in subs.values():
        p.close()
    w.close()


def test_a_wider_subscription_widens_what_the_feed_gives(svc):
    """A connection's feed filter follows its subscriptions: after a pattern of keys
    `wa:*`, a pattern of `w*` gets the events of other keys too, while eight other
    connections of the same worker keep `wa:*` (the worker's processed stretches of the
    feed are shared by filter: the widened one must not be given theirs)."""
    w = client(svc)
    others = []
    for _ in range(8):
        o = client(svc).pubsub()
        o.psubscribe("__keyspace@b__:wa:*")
        others.append(o)
    p = client(svc).pubsub()
    p.psubscribe("__keyspace@b__:wa:*")
    for x in others + [p]:
        assert messages_all(x, 1)[0]["type"] == "psubscribe"
    w.set("wa:1", "v")
    assert [text(m) for m in messages(p, 1)] == [
        ("pmessage", b"__keyspace@b__:wa:*", b"__keyspace@b__:wa:1", b"set")]
    p.psubscribe("__keyspace@b__:w*")
    assert messages_all(p, 1)[0]["type"] == "psubscribe"
    want = []
    for i in range(5):
        w.set(f"wb:{i}", "v")
        w.set(f"wa:{i + 2}", "v")
        want += [("pmessage", b"__keyspace@b__:w*", f"__keyspace@b__:wb:{i}".encode(), b"set"),
                 ("pmessage", b"__keyspace@b__:wa:*",
                  f"__keyspace@b__:wa:{i + 2}".encode(), b"set"),
                 ("pmessage", b"__keyspace@b__:w*",
                  f"__keyspace@b__:wa:{i + 2}".encode(), b"set")]
    assert [text(m) for m in messages(p, len(want))] == want
    for o in others:
        assert len(messages(o, 6)) == 6
    for x in others + [p]:
        x.close()
    w.close()
