"""WATCH as a long poll on both of the TCP face's event loops (epoll and asyncio): a
WATCH that finds no events waits up to its wait_ms and is answered as soon as the
writer publishes one; while it waits, the same worker serves other connections; a
wait that ends with nothing answers an empty list; the wait is cut to
tcp.watch_max_wait."""
import threading

import pytest

from bukt.client import Client
from serve_harness import Service
from tcp_harness import Server


@pytest.fixture
def service(tmp_path):
    s = Service(tmp_path, feed={"size": "256KiB", "max_lag": "64KiB"})
    try:
        s.start()
        yield s
    finally:
        s.cleanup()


@pytest.fixture(params=["epoll", "asyncio"])
def pool(request, service):
    """One TCP worker of the given loop on the service's segment (its writer makes the
    feed); the bucket "b" and a token of it."""
    token = service.create_bucket("b")
    with Server(service.name, workers=1, loop=request.param, watch_max_wait=60.0) as srv:
        yield srv, token


def client(srv, token, timeout=60.0):
    return Client(host="127.0.0.1", port=srv.port, bucket="b", token=token, timeout=timeout)


def test_a_waiting_watch_gets_the_event_and_others_are_served(pool):
    srv, token = pool
    watcher, other = client(srv, token), client(srv, token)
    _, pos, _ = watcher.watch_poll(None)
    result = {}

    def watch():
        result["answer"] = watcher.watch_poll(pos, wait=50.0)

    t = threading.Thread(target=watch)
    t.start()
    # the watch waits in the worker; the worker's other connections are served meanwhile
    for i in range(50):
        assert other.ping(b"p%d" % i) == b"p%d" % i
        assert other.get(b"nothing") is None
    assert t.is_alive() and "answer" not in result
    other.set(b"k", b"v")
    t.join(55)
    assert not t.is_alive()
    evs, pos2, gone = result["answer"]
    assert not gone and [(e.kind, e.key) for e in evs] == [("set", b"k")]
    assert pos2 == evs[-1].seq
    watcher.close()
    other.close()


def test_a_wait_with_nothing_answers_empty(pool):
    srv, token = pool
    c = client(srv, token)
    _, pos, _ = c.watch_poll(None)
    evs, pos2, gone = c.watch_poll(pos, wait=0.3)
    assert evs == [] and not gone and pos2 >= pos
    # the client's iterator long-polls: an event made later still arrives
    other = client(srv, token)
    it = c.watch(pos2, wait=30.0)
    other.set(b"late", b"v")
    e = next(it)
    assert (e.kind, e.key) == ("set", b"late")
    c.close()
    other.close()


def test_the_wait_is_cut_to_the_limit(service):
    token = service.create_bucket("b")
    with Server(service.name, workers=1, watch_max_wait=0.2) as srv:
        c = client(srv, token, timeout=5.0)
        _, pos, _ = c.watch_poll(None)
        # asks for an hour; the server answers (empty) well inside the client's 5 s
        evs, _, gone = c.watch_poll(pos, wait=3600.0)
        assert evs == [] and not gone
        c.close()
