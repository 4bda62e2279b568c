"""The change feed on the binary protocol (WATCH) against a real `bukt serve`: events in
order, resume from a position gets exactly the missed events, a point older than the
feed is "gone" with the oldest point held, READ is needed, and a revoked token's next
WATCH is refused."""
import pytest

import bukt
from bukt.feed import Feed
from serve_harness import Service, wait_for


@pytest.fixture
def service(tmp_path):
    s = Service(tmp_path, feed={"size": "256KiB", "max_lag": "64KiB"})
    try:
        s.start()
        yield s
    finally:
        s.cleanup()


def poll_until(c, since, n, **kw):
    got = []
    def more():
        nonlocal since
        evs, since, gone = c.watch_poll(since, **kw)
        assert not gone
        got.extend(evs)
        return len(got) >= n
    wait_for(more, what=f"{n} events")
    return got, since


def test_watch_in_order_and_resume(service):
    token = service.create_bucket("b")
    c = service.client("b", token)
    evs, pos, gone = c.watch_poll(None)            # from now on
    assert evs == [] and not gone
    c.set(b"user:1", b"ann")
    c.incr(b"user:n", 3)
    c.set(b"other", b"x")
    c.expire(b"user:1", 60)
    c.delete(b"user:1")
    got, pos2 = poll_until(c, pos, 4, prefix=b"user:", values=True)
    assert [(e.kind, e.key, e.value) for e in got] == [
        ("set", b"user:1", b"ann"), ("incr", b"user:n", b"3"), ("expire", b"user:1", None),
        ("delete", b"user:1", None)]
    assert [e.seq for e in got] == sorted(e.seq for e in got)
    assert 0 < got[2].ttl <= 60
    # another connection resumes after the second event: exactly the rest
    c2 = service.client("b", token)
    again, _ = poll_until(c2, got[1].seq, 2, prefix=b"user:")
    assert [e.seq for e in again] == [e.seq for e in got[2:]]
    assert c2.watch_poll(pos2, prefix=b"user:")[0] == []
    c.close()
    c2.close()


def test_watch_gone_permission_and_revocation(service):
    token = service.create_bucket("b")
    c = service.client("b", token)
    store = bukt.attach(service.name)
    _, start, _ = c.watch_poll(None)
    for i in range(600):
        store.bucket("b").set(b"k%04d" % i, b"v" * 400)
    wait_for(lambda: Feed.of(service.name).lost() > start, what="the feed to wrap")
    evs, oldest, gone = c.watch_poll(start)
    assert gone and evs == [] and oldest > start
    evs, _, gone = c.watch_poll(oldest)
    assert not gone and evs and evs[0].seq > oldest
    store.close()
    # READ is needed; a revoked token is refused from its next WATCH on
    _, write_only = c.create_token(bukt.WRITE)
    w = service.client("b", write_only)
    with pytest.raises(bukt.errors.PermissionDenied):
        w.watch_poll(None)
    w.close()
    tid, reader = c.create_token(bukt.READ)
    r = service.client("b", reader)
    r.watch_poll(None)
    c.revoke_token(tid)
    with pytest.raises((bukt.errors.AuthError, bukt.errors.PermissionDenied)):
        r.watch_poll(None)
    r.close()
    c.close()
