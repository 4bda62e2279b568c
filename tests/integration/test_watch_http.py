"""The change feed over HTTP (Server-Sent Events) and on the command line (`bukt watch`),
against a real `bukt serve`: events in order with `id:` their sequence; resume with
Last-Event-ID gets exactly the missed events; a point older than the feed gets `gone`;
read permission is needed; revoking the token ends the stream; the CLI's lines."""
import http.client
import json
import os
import subprocess
import sys

import pytest

import bukt
from bukt.feed import Feed
from serve_harness import ROOT, Service, wait_for


@pytest.fixture
def service(tmp_path):
    s = Service(tmp_path, feed={"size": "256KiB", "max_lag": "64KiB", "heartbeat": 1})
    try:
        s.start()
        yield s
    finally:
        s.cleanup()


class Stream:
    """One SSE response, read event by event."""

    def __init__(self, service, path, token, headers=None):
        self.conn = http.client.HTTPConnection("127.0.0.1", service.http_port, timeout=20)
        h = {"X-Auth-Token": token, **(headers or {})}
        self.conn.request("GET", path, headers=h)
        self.r = self.conn.getresponse()
        self.status = self.r.status
        self.comments = 0

    def next(self):
        """(id, event, data dict) of the next event; None at the end of the stream."""
        fields = {}
        while True:
            line = self.r.fp.readline()
            if not line:
                return None
            line = line.decode().rstrip("\r\n")
            if not line:
                if "data" in fields:
                    return fields.get("id"), fields.get("event"), json.loads(fields["data"])
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            k, _, v = line.partition(":")
            fields[k] = v.strip()

    def comment(self):
        """Read up to the next comment line (a heartbeat); False at the end."""
        while True:
            line = self.r.fp.readline()
            if not line:
                return False
            if line.startswith(b":"):
                self.comments += 1
                return True

    def events(self, n):
        return [self.next() for _ in range(n)]

    def close(self):
        self.conn.close()


def path(name, **q):
    from urllib.parse import urlencode
    return f"/api/v1/buckets/{name}/watch" + (f"?{urlencode(q)}" if q else "")


def test_sse_events_in_order_and_resume(service):
    token = service.create_bucket("b")
    c = service.client("b", token)
    s = Stream(service, path("b", values="true"), token)
    assert s.status == 200
    assert s.r.getheader("Content-Type").startswith("text/event-stream")
    c.set(b"k", b"v1")
    c.incr(b"n", 2)
    c.expire(b"k", 100)
    c.delete(b"n")
    evs = s.events(4)
    assert [(e, d["key"]) for _, e, d in evs] == [("set", "k"), ("incr", "n"),
                                                  ("expire", "k"), ("delete", "n")]
    assert [int(i) for i, _, _ in evs] == [d["seq"] for _, _, d in evs]
    assert evs[0][2]["value"] == "v1" and evs[1][2]["value"] == "2"
    assert 0 < evs[2][2]["ttl"] <= 100
    s.close()
    # missed while disconnected: resumed with Last-Event-ID, exactly those
    last = evs[1][0]
    c.set(b"later", b"x")
    s = Stream(service, path("b"), token, {"Last-Event-ID": last})
    evs2 = s.events(3)
    assert [(e, d["key"]) for _, e, d in evs2] == [("expire", "k"), ("delete", "n"),
                                                   ("set", "later")]
    assert [i for i, _, _ in evs2[:2]] == [i for i, _, _ in evs[2:]]
    # an idle stream gets a comment line every feed.heartbeat (1 s here)
    assert s.comment() and s.comment()
    s.close()
    c.close()


def test_sse_gone_for_a_point_older_than_the_feed(service):
    token = service.create_bucket("b")
    store = bukt.attach(service.name)
    b = store.bucket("b")
    b.set(b"first", b"v")
    first = store.watch("b", since=0)
    start = None
    while start is None:
        evs = first.poll()
        start = evs[-1].seq if evs and not evs[-1].gone else None
        if evs and evs[-1].gone:                # earlier history was cut: use now
            first = store.watch("b")
            b.set(b"first", b"v")
        elif not evs:
            first.wait(0.2)
    for i in range(600):
        b.set(b"k%04d" % i, b"v" * 400)
    wait_for(lambda: Feed.of(service.name).lost() > start, what="the feed to wrap")
    s = Stream(service, path("b", since=start), token)
    eid, kind, data = s.next()
    assert kind == "gone" and data["since"] == start and data["oldest"] > start
    assert int(eid) == data["oldest"]
    assert s.next() is None                      # the stream ends
    s.close()
    store.close()


def test_sse_needs_read_permission_and_ends_on_revocation(service):
    token = service.create_bucket("b")
    admin = service.admin_token()
    st, body = service.http("POST", "/api/v1/buckets/b/tokens", {"permissions": ["write"]},
                            {"X-Auth-Token": admin})
    assert st == 201, body
    write_only = json.loads(body)["token"]
    st, body = service.http("GET", path("b"), headers={"X-Auth-Token": write_only})
    assert st == 403, body
    st, body = service.http("GET", path("b"), headers={"X-Auth-Token": "x" * 43})
    assert st == 401, body
    st, body = service.http("POST", "/api/v1/buckets/b/tokens", {"permissions": ["read"]},
                            {"X-Auth-Token": admin})
    reader = json.loads(body)
    s = Stream(service, path("b"), reader["token"])
    assert s.status == 200
    c = service.client("b", token)
    c.set(b"a", b"1")
    assert s.next()[1] == "set"
    st, body = service.http("DELETE", f"/api/v1/buckets/b/tokens/{reader['id']}",
                            headers={"X-Auth-Token": admin})
    assert st in (200, 204), body
    eid, kind, data = s.next()
    assert kind == "revoked" and data["resume"] >= 0
    assert s.next() is None
    s.close()
    c.close()


def _cli(service, *args, timeout=30):
    env = service.env()
    return subprocess.run([sys.executable, "-m", "bukt", *args, "--config", service.conf],
                          cwd=str(service.tmp), env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_cli_watch_lines(service):
    token = service.create_bucket("b")
    c = service.client("b", token)
    store = bukt.attach(service.name)
    w = store.watch("b")
    c.set(b"user:1", b"alice")
    c.set(b"other", b"x")
    c.incr(b"user:n", 1)
    c.delete(b"user:1")
    got = []
    while len(got) < 4:
        got += w.poll()
        w.wait(0.2)
    store.close()
    # from just before the first: these four, filtered by prefix
    r = _cli(service, "watch", "-b", "b", "--since", str(got[0].seq - 1), "--prefix",
             "user:", "--count", "3", "--values")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split()[1:3] for ln in lines] == [["set", "user:1"], ["incr", "user:n"],
                                                 ["delete", "user:1"]]
    assert "value=alice" in lines[0]
    seqs = [int(ln.split()[0]) for ln in lines]
    assert seqs == sorted(seqs)
    r = _cli(service, "watch", "-b", "b", "--since", str(seqs[0]), "--json", "--count", "3")
    assert r.returncode == 0, r.stderr
    docs = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [(d["kind"], d["key"]) for d in docs] == [("set", "other"), ("incr", "user:n"),
                                                     ("delete", "user:1")]
    # over HTTP, the same lines
    url = f"http://127.0.0.1:{service.http_port}"
    r = _cli(service, "watch", "-b", "b", "--url", url, "--token", token, "--since",
             str(seqs[0]), "--json", "--count", "3")
    assert r.returncode == 0, r.stderr
    assert [json.loads(ln) for ln in r.stdout.splitlines()] == docs
    # over TCP (WATCH), the same lines
    url = f"bukt://b:{token}@127.0.0.1:{service.tcp_port}"
    r = _cli(service, "watch", "--url", url, "--since", str(seqs[0]), "--json", "--count", "3")
    assert r.returncode == 0, r.stderr
    assert [json.loads(ln) for ln in r.stdout.splitlines()] == docs
    c.close()


def test_a_slow_client_is_cut_off_with_its_resume_point(tmp_path):
    """A client that does not read: the worker queues nothing for it (the stream waits
    on the socket), and once it trails the feed by feed.max_lag its stream ends with
    `cutoff` and its resume point; reconnecting from there loses nothing."""
    import socket as _socket
    s = Service(tmp_path, feed={"size": "2MiB", "max_lag": "64KiB", "max_value": "1KiB"})
    try:
        s.start()
        token = s.create_bucket("b")
        sock = _socket.socket()
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", s.http_port))
        sock.sendall(f"GET {path('b', values='true')} HTTP/1.1\r\nHost: x\r\n"
                     f"X-Auth-Token: {token}\r\n\r\n".encode())
        f = sock.makefile("rb")
        while f.readline() not in (b"\r\n", b""):
            pass                                  # the response head
        store = bukt.attach(s.name)
        b = store.bucket("b")
        n = 1200                                  # ~1.2 MB of events: under feed.size
        for i in range(n):
            b.set(b"k%05d" % i, b"v" * 1000)
        seen, last_id, end = [], None, None
        fields = {}
        while True:
            line = f.readline()
            if not line:
                break
            line = line.decode().rstrip("\r\n")
            if not line:
                if "data" in fields:
                    if fields.get("event") == "cutoff":
                        end = json.loads(fields["data"])
                    else:
                        seen.append(json.loads(fields["data"])["key"])
                        last_id = fields["id"]
                fields = {}
                continue
            if not line.startswith(":"):
                k, _, v = line.partition(":")
                fields[k] = v.strip()
        sock.close()
        assert end is not None, f"no cutoff after {len(seen)} events"
        assert end["resume"] == int(last_id)
        assert seen == [f"k{i:05d}" for i in range(len(seen))] and len(seen) < n
        st = Stream(s, path("b"), token, {"Last-Event-ID": last_id})
        rest = [st.next()[2]["key"] for _ in range(n - len(seen))]
        assert seen + rest == [f"k{i:05d}" for i in range(n)]
        st.close()
        store.close()
    finally:
        s.cleanup()
