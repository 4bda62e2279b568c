"""Keyspace notifications in few sends: a real `bukt serve` whose TCP worker (the epoll
loop) hands a subscriber every event it has in one send, and holds a busy subscriber
until its resp.coalesce window ends. Counted by the worker itself (bukt/tcp/stats.py:
pubsub_sends, pubsub_events), read from its shared memory; the events are checked by
real clients, in RESP2 and RESP3, several subscriptions on one connection and several
connections."""
import os
import signal

import pytest

redis = pytest.importorskip("redis")

import bukt  # noqa: E402
from bukt.feed import Watcher  # noqa: E402
from bukt.tcp import stats  # noqa: E402
from serve_harness import Service, wait_for  # noqa: E402

from test_resp_pubsub import messages, messages_all, text  # noqa: E402

WINDOW = "1s"       # resp.coalesce here: far longer than the writes of a test take


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    s = Service(tmp_path_factory.mktemp("pubsub-coalesce"),
                feed={"size": "1MiB", "max_lag": "256KiB"},
                resp={"coalesce": WINDOW})
    try:
        s.start()
        s.store = bukt.attach(s.name)
        yield s
        assert s.stop() == 0
    finally:
        s.cleanup()


def client(svc, bucket, token, proto=2):
    return redis.Redis("127.0.0.1", svc.resp_port, username=bucket, password=token,
                       protocol=proto, socket_timeout=10)


def counters(svc):
    t = stats.read(svc.name)["resp"]
    return t["pubsub_sends"], t["pubsub_events"]


def in_feed(svc, watcher, keys):
    """Waits until the writer has published events of all `keys` to the feed."""
    want = set(keys)

    def seen():
        for e in watcher.poll(4096):
            want.discard(e.key)
        return not want
    wait_for(seen, timeout=30, what="the writes in the change feed")


def subscribers(svc, bucket, token, prefix):
    """Three connections: RESP2 with a pattern and a keyevent channel (two messages
    an event), RESP3 with the same, RESP2 with a pattern only."""
    out = []
    for proto, event in ((2, True), (3, True), (2, False)):
        p = client(svc, bucket, token, proto).pubsub()
        p.psubscribe(f"__keyspace@{bucket}__:{prefix}*")
        if event:
            p.subscribe(f"__keyevent@{bucket}__:set")
        assert len(messages_all(p, 1 + event)) == 1 + event
        out.append((p, event))
    return out


def expected(bucket, prefix, keys, event):
    out = []
    for k in keys:
        out.append(("pmessage", f"__keyspace@{bucket}__:{prefix}*".encode(),
                    f"__keyspace@{bucket}__:".encode() + k, b"set"))
        if event:
            out.append(("message", None, f"__keyevent@{bucket}__:set".encode(), k))
    return out


def test_a_burst_goes_to_each_subscriber_in_one_send(svc):
    """300 events (more than one poll of the feed, BATCH 256) wait in the feed while
    the worker is stopped; once it runs again each subscribing connection gets all of
    them, in order, in one send: before, a send went per poll of 256 events."""
    token = svc.create_bucket("burst")
    subs = subscribers(svc, "burst", token, "b:")
    watcher = Watcher(svc.store, "burst")
    sends0, events0 = counters(svc)
    workers = svc.children("tcp")
    n = 300
    keys = [b"b:%04d" % i for i in range(n)]
    b = svc.store.bucket("burst")
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        for k in keys:
            b.set(k, b"v")
        in_feed(svc, watcher, keys)
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    for p, event in subs:
        want = expected("burst", "b:", keys, event)
        got = [text(m) for m in messages(p, len(want), timeout=30)]
        assert got == want
    sends, events = counters(svc)
    assert (sends - sends0, events - events0) == (len(subs), n * len(subs))
    # the same counters on /metrics
    status, body = svc.http("GET", "/metrics", headers={"X-Auth-Token": svc.admin_token()})
    assert status == 200
    assert f"bukt_tcp_pubsub_sends_total {float(sends)}".encode() in body
    assert f"bukt_tcp_pubsub_events_total {float(events)}".encode() in body
    for p, _ in subs:
        p.close()
    assert svc.store.check() == []


def test_a_busy_subscriber_waits_for_its_window(svc):
    """The first event after a quiet spell goes at once, in a send of its own; the
    events the writer publishes one by one after it, within the subscriber's window,
    go together when the window ends: fewer sends than events (before: one each)."""
    token = svc.create_bucket("busy")
    subs = subscribers(svc, "busy", token, "")
    watcher = Watcher(svc.store, "busy")
    b = svc.store.bucket("busy")
    sends0, _ = counters(svc)
    b.set(b"first", b"v")
    for p, event in subs:
        assert [text(m) for m in messages(p, 1 + event)] == expected("busy", "", [b"first"],
                                                                     event)
    assert counters(svc)[0] - sends0 == len(subs)
    keys = [b"k%02d" % i for i in range(20)]
    for k in keys:                      # each its own batch of the writer
        b.set(k, b"v")
        in_feed(svc, watcher, [k])
    for p, event in subs:
        want = expected("busy", "", keys, event)
        assert [text(m) for m in messages(p, len(want))] == want
    sends = counters(svc)[0] - sends0 - len(subs)
    assert sends < len(keys) * len(subs) / 2, sends
    for p, _ in subs:
        p.close()


@pytest.mark.slow
def test_many_subscribers_at_full_speed_lose_nothing(svc):
    """Twenty connections of one pattern (their polls shared), two of another place
    in the key space and one that subscribes late, while one client sets 5000 keys as
    fast as it can: each gets every event of its subscription, in order."""
    token = svc.create_bucket("many")
    same = []
    for i in range(20):
        p = client(svc, "many", token, 2 + i % 2).pubsub()
        p.psubscribe("__keyspace@many__:*")
        same.append(p)
    narrow = []
    for i in range(2):
        p = client(svc, "many", token).pubsub()
        p.psubscribe("__keyspace@many__:k1*")
        narrow.append(p)
    for p in same + narrow:
        assert len(messages_all(p, 1)) == 1
    w = client(svc, "many", token)
    n = 5000
    keys = [b"k%05d" % i for i in range(n)]
    late = None
    pipe = w.pipeline(transaction=False)
    for i, k in enumerate(keys):
        pipe.set(k, b"v")
        if i % 100 == 99:
            pipe.execute()
        if i == n // 2:
            late = client(svc, "many", token).pubsub()
            late.psubscribe("__keyspace@many__:*")
            assert len(messages_all(late, 1)) == 1
            late_from = i               # (this set is sent after it subscribed)
    pipe.execute()
    pat = b"__keyspace@many__:*"
    want = [("pmessage", pat, b"__keyspace@many__:" + k, b"set") for k in keys]
    for p in same:
        assert [text(m) for m in messages(p, n, timeout=60)] == want
    pat1 = b"__keyspace@many__:k1*"
    want1 = [("pmessage", pat1, b"__keyspace@many__:" + k, b"set") for k in keys
             if k.startswith(b"k1")]
    for p in narrow:
        assert [text(m) for m in messages(p, len(want1), timeout=60)] == want1
    # the late one: from some point no later than its subscription, every event (a
    # set acknowledged before it subscribed may reach the feed after)
    got = []
    while not got or got[-1] != want[-1]:
        more = [text(m) for m in messages(late, 1, timeout=60)]
        assert more, got[-3:]
        got += more
    assert len(got) >= n - late_from
    assert got == want[len(want) - len(got):]
    for p in same + narrow + [late]:
        p.close()
    w.close()
    assert svc.store.check() == []
