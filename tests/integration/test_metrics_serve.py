"""/metrics of a real `bukt serve` (writer, HTTP and TCP faces): what promtool says of
it, and the writer's fsync lag on an idle service and behind a stopped writer."""
import os
import shutil
import signal
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serve_harness import Service, wait_for

API = "/api/v1"


@pytest.fixture
def service(tmp_path):
    s = Service(tmp_path)
    yield s
    s.cleanup()


def scrape(service):
    status, body = service.http("GET", "/metrics",
                                headers={"X-Auth-Token": service.admin_token()})
    assert status == 200, body
    return body.decode()


def sample(text, name):
    for f in text_string_to_metric_families(text):
        for s in f.samples:
            if s.name == name:
                return s.value
    return None


def total(text, family, **labels):
    """The sum of a family's samples (a counter's _total) whose labels match."""
    for f in text_string_to_metric_families(text):
        if f.name == family:
            return sum(s.value for s in f.samples if s.name in (family, family + "_total")
                       and all(s.labels.get(k) == v for k, v in labels.items()))
    return None


def put(service, tok, key):
    status, body = service.http("PUT", f"{API}/buckets/b/keys/{key}", b"v",
                                {"X-Auth-Token": tok})
    assert status == 204, body


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool (Debian prometheus; .ci/run installs it) is missing")
def test_promtool_accepts_a_served_scrape(service):
    service.start()
    tok = service.create_bucket("b")
    put(service, tok, "k")
    with service.client("b", tok) as c:
        assert c.get(b"k") == b"v"
    text = scrape(service)
    assert sample(text, "bukt_writer_up") == 1
    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, (r.stdout + r.stderr).decode() + text
    assert service.stop() == 0


@pytest.mark.slow
def test_fsync_lag_is_zero_while_idle_and_counts_while_a_change_waits(service):
    service.start()
    tok = service.create_bucket("b")
    put(service, tok, "k")
    lag = lambda: sample(scrape(service), "bukt_writer_fsync_lag_seconds")  # noqa: E731
    wait_for(lambda: lag() == 0, what="the change to be synced")
    time.sleep(2.5)             # idle through two everysec periods and many heartbeats
    assert lag() == 0
    writer = service.state()["writer"]["pid"]
    os.kill(writer, signal.SIGSTOP)     # a writer that does not come back from its disk
    try:
        put(service, tok, "k2")
        assert lag() > 0
    finally:
        os.kill(writer, signal.SIGCONT)
    wait_for(lambda: lag() == 0, what="the waiting change to be synced")
    assert service.stop() == 0


def resp_call(sock, *args):
    """One RESP command on `sock`; its reply's first line."""
    sock.sendall(b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
    data = b""
    while not data.endswith(b"\r\n"):
        data += sock.recv(4096)
    if data.startswith(b"$") and not data.startswith(b"$-"):   # a bulk: its line too
        while data.count(b"\r\n") < 2:
            data += sock.recv(4096)
    return data.split(b"\r\n")[0]


@pytest.mark.slow
def test_tcp_and_resp_requests_errors_bytes_and_connections_are_counted(service):
    import socket

    from bukt.errors import BuktError
    service.start()
    tok = service.create_bucket("b")
    with service.client("b", tok) as c:
        c.set(b"k", b"v")
        assert c.get(b"k") == b"v"
        assert c.get(b"missing") is None            # a miss: an answer, not an error
        with pytest.raises(BuktError):
            c.get(b"x" * 1000)                      # past limits.max_key: an error
        assert total(scrape(service), "bukt_tcp_connections", face="bukt") == 1
    with socket.create_connection(("127.0.0.1", service.resp_port), timeout=10) as s:
        assert resp_call(s, b"PING") == b"+PONG"
        assert resp_call(s, b"GET", b"k").startswith(b"-NOAUTH")
        assert resp_call(s, b"AUTH", b"b", tok.encode()) == b"+OK"
        assert resp_call(s, b"SET", b"r", b"1") == b"+OK"
        # the compiled loop's commands (bukt/tcp/_resp.pyx) count as the session's do
        assert resp_call(s, b"GET", b"r") == b"$1"
        assert resp_call(s, b"INCR", b"r") == b":2"
        assert resp_call(s, b"INCR", b"k").startswith(b"-ERR value is not an integer")
        assert resp_call(s, b"BOGUS").startswith(b"-ERR unknown command")
    text = scrape(service)

    def value(family, **labels):
        return total(text, family, **labels)

    assert value("bukt_tcp_requests", face="bukt", command="get") == 3
    assert value("bukt_tcp_requests", face="bukt", command="set") == 1
    assert value("bukt_tcp_errors", face="bukt", command="get") == 1
    assert value("bukt_tcp_errors", face="bukt", command="set") == 0
    assert value("bukt_tcp_requests", face="resp", command="ping") == 1
    assert value("bukt_tcp_requests", face="resp", command="get") == 2
    assert value("bukt_tcp_errors", face="resp", command="get") == 1     # NOAUTH
    assert value("bukt_tcp_requests", face="resp", command="set") == 1
    assert value("bukt_tcp_requests", face="resp", command="incr") == 2
    assert value("bukt_tcp_errors", face="resp", command="incr") == 1    # text value
    assert value("bukt_tcp_errors", face="resp", command="other") == 1  # BOGUS
    for face in ("bukt", "resp"):
        assert value("bukt_tcp_connections_accepted", face=face) >= 1
        assert value("bukt_tcp_received_bytes", face=face) > 0
        assert value("bukt_tcp_sent_bytes", face=face) > 0
    # both clients are gone: no connection stays open (bounded wait for the close)
    wait_for(lambda: total(scrape(service), "bukt_tcp_connections") == 0,
             what="the connections to close")
    r = subprocess.run(["promtool", "check", "metrics"], input=scrape(service).encode(),
                       capture_output=True, timeout=60) if shutil.which("promtool") else None
    assert r is None or r.returncode == 0, r and (r.stdout + r.stderr).decode()
    assert service.stop() == 0


@pytest.mark.slow
def test_the_grafana_dashboard_asks_only_for_served_metrics(service):
    import json
    import re
    service.start()
    tok = service.create_bucket("b")
    put(service, tok, "k")
    with service.client("b", tok) as c:
        assert c.get(b"k") == b"v"
    served = set()
    for f in text_string_to_metric_families(scrape(service)):
        served |= {s.name for s in f.samples}
        served |= {f.name + "_total"} if f.type == "counter" else {f.name}
    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs",
                        "grafana-dashboard.json")
    with open(path) as f:
        doc = json.load(f)
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in doc["templating"]["list"] if v["type"] == "query"]
    named = {n for e in exprs for n in re.findall(r"\bbukt_[a-z_]+", e)}
    assert named and named <= served, sorted(named - served)
    assert service.stop() == 0


@pytest.mark.slow
def test_tcp_responses_waiting_for_the_disk_are_in_flight(service):
    import threading
    service.configure(fsync="always")
    service.start()
    tok = service.create_bucket("b")
    inflight = lambda: total(scrape(service), "bukt_tcp_inflight_responses",  # noqa: E731
                             face="bukt")
    assert inflight() == 0
    writer = service.state()["writer"]["pid"]
    with service.client("b", tok, timeout=60) as c:
        os.kill(writer, signal.SIGSTOP)     # the set's record is not synced meanwhile
        try:
            t = threading.Thread(target=c.set, args=(b"k", b"v"))
            t.start()
            wait_for(lambda: inflight() == 1, what="the set to wait for the disk")
        finally:
            os.kill(writer, signal.SIGCONT)
        t.join(60)
        assert not t.is_alive() and c.get(b"k") == b"v"
    assert inflight() == 0
    assert service.stop() == 0


def resp_reply(sock, *args):
    """One RESP command on `sock` whose reply is a single line; that line, CRLF included."""
    sock.sendall(b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
    data = b""
    while not data.endswith(b"\r\n"):
        data += sock.recv(4096)
    return data


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["epoll", "asyncio"])
def test_answers_that_waited_for_the_disk_count_in_the_sent_bytes(service, loop):
    """Under fsync: always a write's answer waits for its record's fsync; it counts in
    bukt_tcp_sent_bytes when it is sent, on both event loops. The pool `bukt serve`
    starts uses the epoll loop; a second pool (`bukt tcp --loop asyncio`) on the same
    segment is the one /metrics reads once it runs."""
    import socket
    import sys

    from bukt import protocol as P
    service.configure(fsync="always")
    service.start()
    tok = service.create_bucket("b")
    bin_port, resp_port, pool = service.tcp_port, service.resp_port, None
    if loop == "asyncio":
        from serve_harness import unused_port
        bin_port, resp_port = unused_port(), unused_port()
        pool = subprocess.Popen(
            [sys.executable, "-m", "bukt", "tcp", "--config", service.conf, "--loop",
             "asyncio", "--workers", "1", "--bind", f"127.0.0.1:{bin_port}"],
            env={**service.env(), "BUKT_RESP__BIND": f"127.0.0.1:{resp_port}"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if pool is not None:
            def listening():
                try:
                    socket.create_connection(("127.0.0.1", resp_port), timeout=1).close()
                    return True
                except OSError:
                    return False
            wait_for(listening, timeout=60, what="the asyncio pool to listen")
        sent = lambda face: total(scrape(service), "bukt_tcp_sent_bytes",  # noqa: E731
                                  face=face)
        with socket.create_connection(("127.0.0.1", resp_port), timeout=30) as s:
            assert resp_reply(s, b"AUTH", b"b", tok.encode()) == b"+OK\r\n"
            before = sent("resp")
            replies = [resp_reply(s, b"SET", b"k%d" % i, b"v") for i in range(3)]
            assert replies == [b"+OK\r\n"] * 3
            assert sent("resp") - before == sum(map(len, replies))
        from bukt.client import Client
        with Client(host="127.0.0.1", port=bin_port, bucket="b", token=tok, timeout=30) as c:
            before = sent("bukt")
            c.set(b"k", b"v")
            assert sent("bukt") - before >= P.HEADER_SIZE
    finally:
        if pool is not None:
            pool.terminate()
            pool.wait(30)
    assert service.stop() == 0
