"""The HTTP API end to end: a real gunicorn arbiter (serve_http) with two uvicorn
workers on an unused loopback port, over a real segment.

Until the writer process exists, a thread of this test plays its part on the ring
(reads the records, drops them, publishes them as flushed), so persisted writes never
find the ring full.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import bukt
from bukt._core import writer_claim
from names import unique_name, unlink_areas

ADMIN_TOKEN = "admin-token-for-e2e-0123456789"
API = "/api/v1"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RingDrain(threading.Thread):
    """Stands in for the writer process: drains the ring and reports it flushed
    (unless paused: then what is appended stays unflushed)."""

    def __init__(self, store):
        super().__init__(daemon=True)
        self.store, self.stop = store, threading.Event()
        self.running = threading.Event()
        self.running.set()

    def run(self):
        while not self.stop.is_set():
            if self.running.is_set():
                _, pos, _ = self.store.ring_read()
                self.store.ring_release(pos)
                self.store.ring_flushed(pos)
            time.sleep(0.001)


class Server:
    def __init__(self, store_name, tmp_path, **config):
        self.port = unused_port()
        self.access_log = tmp_path / f"access-{self.port}.log"
        self.config = {"instance": store_name, "http.bind": f"127.0.0.1:{self.port}",
                       "http.workers": 2, "auth.admin_token": ADMIN_TOKEN,
                       "log.access": True, "http.access_log": str(self.access_log),
                       "data_dir": str(tmp_path),
                       **config}
        self.log = open(tmp_path / f"server-{self.port}.log", "wb")
        code = "import json, sys; from bukt.http import serve_http; " \
               "serve_http(json.loads(sys.argv[1]))"
        self.proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(self.config)],
                                     cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        workers = self.config["http.workers"]
        while True:
            try:
                # every worker up, not just the first to answer: tests count on both
                if self.request("GET", f"{API}/openapi.json")[0] == 200 and \
                        self.output().count("Application startup complete") >= workers:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start:\n" + self.output())
            time.sleep(0.1)

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")

    def connect(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def request(self, method, path, body=None, headers=None, conn=None):
        """(status, headers, body) on a new connection, or on `conn` if given."""
        own = conn is None
        conn = conn or self.connect()
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                headers = {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            if own:
                conn.close()

    def access_lines(self):
        time.sleep(0.2)          # workers write their access lines every 50 ms
        return [json.loads(line) for line in self.access_log.read_text().splitlines()]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


DRAINS = {}              # store name -> the RingDrain standing in for its writer


@pytest.fixture
def store():
    name = unique_name()
    s = bukt.create(name, size="16MiB")
    writer_claim(s)   # as a writer does: changes go to the ring
    drain = DRAINS[name] = RingDrain(s)
    drain.start()
    yield s
    drain.stop.set()
    DRAINS.pop(name, None)
    drain.join()
    s.unlink()
    s.close()
    unlink_areas(name)          # the face's (-http, -http-auth) if it was killed


@pytest.fixture
def serve(store, tmp_path):
    servers = []

    def start(**config):
        servers.append(Server(store.name, tmp_path, **config))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def admin():
    return {"X-Auth-Token": ADMIN_TOKEN}


def concurrently(fn, n, threads=8):
    """fn(i) for i < n from several threads at once, each call on a new connection:
    with requests in flight, both workers accept (one at a time, the kernel often
    hands every connection to the same one)."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, range(n)))


def create_bucket(server, name="b"):
    status, _, body = server.request("POST", f"{API}/buckets", {"name": name}, admin())
    assert status == 201, body
    return {"Authorization": f"Bearer {json.loads(body)['token']}"}


def test_end_to_end_on_one_keep_alive_connection(serve):
    server = serve()
    tok = create_bucket(server)
    before = len(server.access_lines())       # the start-up poll, the bucket's creation
    conn = server.connect()
    k = f"{API}/buckets/b/keys/user%2F1"
    status, h, _ = server.request("PUT", k, b"0123456789", {**tok, "Bukt-TTL": "60"},
                                  conn=conn)
    assert status == 204
    etag = h["etag"]
    status, h, body = server.request("GET", f"{API}/buckets/b/keys/user/1", headers=tok,
                                     conn=conn)
    assert (status, body, h["etag"]) == (200, b"0123456789", etag)
    assert 59 < float(h["bukt-ttl"]) <= 60 and h["content-length"] == "10"
    assert server.request("GET", k, headers={**tok, "If-None-Match": etag},
                          conn=conn)[0] == 304
    status, h, body = server.request("GET", k, headers={**tok, "Range": "bytes=2-4"},
                                     conn=conn)
    assert (status, body, h["content-range"]) == (206, b"234", "bytes 2-4/10")
    status, h, body = server.request("HEAD", k, headers=tok, conn=conn)
    assert (status, body, h["etag"]) == (200, b"", etag)
    assert server.request("PUT", k, b"x", {**tok, "If-Match": '"99999"'},
                          conn=conn)[0] == 412
    status, _, body = server.request("POST", f"{API}/buckets/b/keys/n/incr?by=5",
                                     headers=tok, conn=conn)
    assert (status, json.loads(body)) == (200, {"value": 5})
    status, _, body = server.request("GET", f"{API}/buckets/b/keys?prefix=user",
                                     headers=tok, conn=conn)
    assert json.loads(body) == {"cursor": "0", "encoding": "utf-8", "keys": ["user/1"]}
    assert server.request("DELETE", k, headers=tok, conn=conn)[0] == 204
    status, h, body = server.request("GET", k, headers=tok, conn=conn)
    assert status == 404 and h["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "not_found"
    assert server.request("GET", k, conn=conn)[0] == 401
    conn.close()
    assert len({line["pid"] for line in server.access_lines()[before:]}) == 1  # one conn


def test_two_workers_share_the_segment(serve):
    server = serve()
    tok = create_bucket(server)

    def put_then_get(i):
        assert server.request("PUT", f"{API}/buckets/b/keys/k{i}", str(i).encode(),
                              tok)[0] == 204
        return server.request("GET", f"{API}/buckets/b/keys/k{i}", headers=tok)[2]

    assert concurrently(put_then_get, 200) == [str(i).encode() for i in range(200)]
    pids = {line["pid"] for line in server.access_lines()}
    assert len(pids) == 2, pids
    assert server.proc.pid not in pids


WRITER_LOOP = """
import sys, bukt
bucket = bukt.attach(sys.argv[1]).bucket("b")
i = 0
while True:
    value = str(i).encode() * (1 + i % 7)
    print(bucket.set(b"hot", value), value.decode(), flush=True)
    i += 1
"""


def test_etag_names_the_body_while_another_process_writes(serve, store):
    """A local process rewrites the key as fast as it can (values of changing length)
    while both workers serve GETs of it, fast path and slow: every 200 carries the
    ETag of the very value it serves."""
    server = serve()
    tok = create_bucket(server)
    store.bucket("b").set(b"hot", b"start")
    writer = subprocess.Popen([sys.executable, "-c", WRITER_LOOP, store.name], cwd=ROOT,
                              stdout=subprocess.PIPE)
    lines = [writer.stdout.readline()]          # it writes from here on
    reader = threading.Thread(target=lambda: lines.extend(writer.stdout), daemon=True)
    reader.start()

    def get(i):
        conn = server.connect()
        try:
            got = []
            for j in range(40):
                slow = {"If-None-Match": '"0"'} if j % 2 else {}     # falcon, not fastpath
                status, h, body = server.request("GET", f"{API}/buckets/b/keys/hot",
                                                 headers={**tok, **slow}, conn=conn)
                assert status == 200
                got.append((h.get("etag"), body))
            return got
        finally:
            conn.close()

    try:
        seen = [x for answers in concurrently(get, 8, threads=4) for x in answers]
    finally:
        writer.kill()
        writer.wait()
        reader.join(5)
    written = {int(v): value.encode() for v, value in (ln.decode().split() for ln in lines
                                                        if len(ln.split()) == 2)}
    written[store.bucket("b").version(b"hot") or 0] = store.bucket("b").get(b"hot")
    assert len({etag for etag, _ in seen}) > 1          # the writer did interleave
    for etag, body in seen:
        assert etag is not None and body == written.get(int(etag.strip('"')), body + b"?")


def test_head_peeks_and_a_stale_delete_changes_nothing(serve, store):
    server = serve()
    tok = create_bucket(server)
    k = f"{API}/buckets/b/keys/once"
    status, h, _ = server.request("PUT", k, b"secret", {**tok, "Bukt-Single-Read": "1"})
    assert status == 204
    etag = h["etag"]
    heads = concurrently(lambda i: server.request("HEAD", k, headers=tok), 20)
    assert {(s, h["etag"], h["content-length"], b) for s, h, b in heads} == {
        (200, etag, "6", b"")}
    for stale in (f'"{int(etag[1:-1]) + 1}"', f'"{int(etag[1:-1]) - 1}"', '"0"'):
        assert server.request("DELETE", k, headers={**tok, "If-Match": stale})[0] == 412
    assert store.bucket("b").get_entry(b"once", consume=False)[:2] == (b"secret",
                                                                         int(etag[1:-1]))
    status, h, body = server.request("GET", k, headers=tok)
    assert (status, body, h["etag"]) == (200, b"secret", etag)
    assert server.request("GET", k, headers=tok)[0] == 404
    status, h, _ = server.request("PUT", k, b"again", tok)
    assert server.request("DELETE", k, headers={**tok, "If-Match": h["etag"]})[0] == 204
    assert store.bucket("b").get(b"once") is None


def test_a_token_revoked_elsewhere_is_refused_by_every_worker(serve, store):
    """Both workers have recognised (and remembered) the token; a local process
    revokes it: the next request to either worker is 401."""
    server = serve()
    tok = create_bucket(server)
    store.bucket("b").set(b"k", b"v")
    url = f"{API}/buckets/b/keys/k"
    for _ in range(10):
        assert set(concurrently(lambda i: server.request("GET", url, headers=tok)[0], 40)) \
            == {200}
        if len({x["pid"] for x in server.access_lines() if x["path"] == url}) == 2:
            break
    assert len({x["pid"] for x in server.access_lines() if x["path"] == url}) == 2
    store.revoke_token("b", store.tokens("b")[0][0])
    before = len(server.access_lines())
    for _ in range(10):
        assert set(concurrently(lambda i: server.request("GET", url, headers=tok)[0],
                                40)) == {401}
        if len({x["pid"] for x in server.access_lines()[before:]}) == 2:
            break
    assert len({x["pid"] for x in server.access_lines()[before:]}) == 2


def test_rate_limit_is_shared_by_both_workers(serve):
    """A budget of 10 per client IP: with each worker past 15 requests, per-worker
    budgets would let 20 through; a shared one lets 10 (plus 1/s of refill)."""
    server = serve(**{"ratelimit.enabled": True, "ratelimit.rps": 1,
                      "ratelimit.burst": 10})
    started = time.monotonic()
    answers = []
    for _ in range(20):
        answers += concurrently(lambda i: server.request("GET", f"{API}/openapi.json"), 50)
        per_pid = {}
        for line in server.access_lines():
            per_pid[line["pid"]] = per_pid.get(line["pid"], 0) + 1
        if len(per_pid) == 2 and min(per_pid.values()) >= 15:
            break
    assert len(per_pid) == 2 and min(per_pid.values()) >= 15, per_pid
    allowed = [a[0] for a in answers].count(200) + 1        # + the start-up poll
    assert allowed <= 10 + (time.monotonic() - started) + 1, allowed
    limited = [a for a in answers if a[0] == 429]
    assert all(int(a[1]["retry-after"]) >= 1 for a in limited)
    assert all(json.loads(a[2])["code"] == "rate_limited" for a in limited)
    assert len({x["pid"] for x in server.access_lines() if x["status"] == 429}) == 2
    assert server.request("GET", "/healthz")[0] != 429


def test_wrong_tokens_lock_their_address_out_of_every_worker(serve):
    """5 wrong tokens from 127.0.0.2, over both workers (failures are counted in the
    arbiter's shared table), lock it out: 429 with Retry-After for any token, a valid
    one too, with no wait. 127.0.0.1 is untouched, fast path included. Counted in
    /metrics, and logged once."""
    server = serve(**{"auth.max_failures": 5, "auth.lockout": 120})
    tok = create_bucket(server)
    assert server.request("PUT", f"{API}/buckets/b/keys/k", b"v", tok)[0] == 204

    def from_2(headers, path=f"{API}/buckets/b/keys/k"):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10,
                                          source_address=("127.0.0.2", 0))
        return server.request("GET", path, headers=headers, conn=conn)

    wrong = {"Authorization": "Bearer not-a-token-of-this-server"}
    assert [a[0] for a in concurrently(lambda i: from_2(wrong), 5)] == [401] * 5
    status, h, body = from_2(wrong)
    assert (status, json.loads(body)["code"]) == (429, "auth_locked"), body
    assert int(h["retry-after"]) >= 1
    assert json.loads(body)["detail"].startswith(
        "too many failed authentications from 127.0.0.2; try again in ")
    assert from_2(tok)[0] == 429                   # a valid token from there, too
    # Other addresses: valid tokens work (on the fast path's route), wrong ones are 401.
    assert concurrently(lambda i: server.request(
        "GET", f"{API}/buckets/b/keys/k", headers=tok)[:3:2], 20) == [(200, b"v")] * 20
    assert server.request("GET", f"{API}/buckets/b/keys/k", headers=wrong)[0] == 401
    metrics = server.request("GET", "/metrics", headers=admin())[2].decode()
    assert 'bukt_auth_failures_total{face="http"} 6.0' in metrics, metrics
    assert 'bukt_auth_refused_total{face="http"} 2.0' in metrics
    server.stop()
    lines = [line for line in server.output().splitlines()
             if "failed authentication from 127.0.0.2" in line]
    assert len(lines) == 1, lines
    assert "not-a-token" not in server.output()


def test_metrics_totals_are_the_same_from_every_worker(serve):
    server = serve()
    tok = create_bucket(server)
    concurrently(lambda i: server.request("GET", f"{API}/buckets/b/keys/missing{i}",
                                          headers=tok), 30)
    route = f"{API}/buckets/{{name}}/keys/{{key:path}}"

    def totals(i):
        doc = json.loads(server.request("GET", "/metrics?format=json", headers=admin())[2])
        return doc["http"]["routes"][route]["count"], doc["buckets"]["b"]["misses"]

    # the kernel decides which worker accepts: ask until both have answered (bounded)
    for _ in range(10):
        assert set(concurrently(totals, 40)) == {(30, 30)}
        pids = {x["pid"] for x in server.access_lines() if x["path"] == "/metrics"}
        if len(pids) == 2:
            break
    assert len(pids) == 2
    status, h, body = server.request("GET", "/metrics", headers=admin())
    assert f'bukt_http_requests_total{{code="4xx",route="{route}"}} 30.0' in body.decode()


def test_a_body_over_the_limit_is_refused_after_its_first_chunk(serve):
    """Content-Length says 100 MiB: the answer is 413 once the first 64 KiB arrive
    (falcon's ASGI app routes only after a first body event); the rest is never sent.
    A raw PUT above an entry is an object, bounded by limits.max_object (64 MiB)."""
    server = serve(**{"http.max_body": 4096})
    tok = create_bucket(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall((f"PUT {API}/buckets/b/keys/big HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: {tok['Authorization']}\r\n"
                   f"Content-Length: {100 << 20}\r\n\r\n").encode() + b"x" * 65536)
        reply = http.client.HTTPResponse(s)
        reply.begin()
        assert reply.status == 413
        assert json.loads(reply.read())["code"] == "object_too_large"


def test_a_chunked_body_over_the_limit_is_refused_before_its_end(serve):
    """No Content-Length: the worker reads at most max_body + 1 bytes of a JSON body,
    and at most limits.max_object + a chunk of a raw PUT (an object), and answers 413
    while the client is still sending (this body never ends: reading it all would
    never answer)."""
    server = serve(**{"http.max_body": 4096, "limits.max_object": "1MiB"})
    tok = create_bucket(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall((f"PUT {API}/buckets/b/keys/big HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: {tok['Authorization']}\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n").encode())
        chunk = b"x" * 65536
        for _ in range(20):                    # 1.25 MiB of an endless body
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        reply = http.client.HTTPResponse(s)
        reply.begin()
        assert reply.status == 413
        assert json.loads(reply.read())["code"] == "object_too_large"
    for path in (f"{API}/buckets/b/mset",):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall((f"PUT {path} HTTP/1.1\r\nHost: x\r\n" if path.endswith("big")
                       else f"POST {path} HTTP/1.1\r\nHost: x\r\n"
                            "Content-Type: application/json\r\n").encode() +
                      f"Authorization: {tok['Authorization']}\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n".encode())
            chunk = b"x" * 1024
            for _ in range(8):                 # 8 KiB of an endless body
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            reply = http.client.HTTPResponse(s)
            reply.begin()
            assert reply.status == 413, path
            assert json.loads(reply.read())["code"] == "payload_too_large"


def test_a_write_waiting_for_fsync_does_not_hold_up_the_worker(serve, store):
    """fsync: always, one worker: a PUT waits for the writer's flush (paused here)
    while the same worker answers other requests; the flush then completes it."""
    store.writer_publish(sync_always=True)
    server = serve(**{"http.workers": 1})
    tok = create_bucket(server)
    store.bucket("b").set(b"other", b"readable")
    DRAINS[store.name].running.clear()
    head = store.ring_position()[1]
    answer = []
    put = threading.Thread(target=lambda: answer.append(server.request(
        "PUT", f"{API}/buckets/b/keys/k", b"durable", tok)))
    put.start()
    try:
        while store.ring_position()[1] == head:     # the PUT is applied, not flushed
            assert put.is_alive()
            time.sleep(0.01)
        for _ in range(20):
            status, _, body = server.request("GET", f"{API}/buckets/b/keys/other",
                                             headers=tok)
            assert (status, body) == (200, b"readable")
        assert server.request("GET", "/healthz")[0] in (200, 503)
        assert put.is_alive() and not answer        # still waiting for the disk
    finally:
        DRAINS[store.name].running.set()
        put.join(30)
    assert answer[0][0] == 204


def test_the_access_log_and_server_output_never_hold_a_token(serve, store):
    server = serve()
    tok = create_bucket(server)
    token = tok["Authorization"].split()[1]
    status, _, body = server.request("POST", f"{API}/buckets/b/tokens",
                                     {"permissions": ["read"]}, admin())
    reader = json.loads(body)["token"]
    near_miss = token[:-4] + "AAAA"
    store.bucket("b").set(b"k", b"v")
    for t in (token, reader, near_miss, ADMIN_TOKEN):
        for style in ({"X-Auth-Token": t}, {"X-API-Key": t},
                      {"Authorization": f"Bearer {t}"}):
            server.request("GET", f"{API}/buckets/b/keys/k", headers=style)       # fast
            server.request("GET", f"{API}/buckets/b/keys/k?encoding=x", headers=style)
            server.request("PUT", f"{API}/buckets/b/keys/k", b"v", style)
            server.request("GET", f"{API}/buckets/b", headers=style)              # slow
            server.request("GET", f"{API}/kv/k", headers=style)
    server.request("DELETE", f"{API}/buckets/b", {"token": near_miss})
    server.request("DELETE", f"{API}/buckets/b", {"token": token})
    lines = server.access_lines()
    assert len(lines) >= 4 * 3 * 5 + 2
    assert {x["status"] for x in lines} >= {200, 204, 401, 403}
    text = server.access_log.read_text()
    server.stop()
    output = server.output()
    for secret in (token, reader, near_miss, ADMIN_TOKEN):
        assert secret not in text and secret not in output


def test_killed_worker_is_replaced_and_counters_stay_monotonic(serve):
    server = serve()
    tok = create_bucket(server)
    for i in range(10):
        server.request("GET", f"{API}/buckets/b/keys/x", headers=tok)
    victim = server.access_lines()[-1]["pid"]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15
    statuses = []
    while time.monotonic() < deadline:
        try:
            statuses.append(server.request("GET", f"{API}/buckets/b/keys/x",
                                           headers=tok)[0])
        except OSError:
            pass
        pids = {x["pid"] for x in server.access_lines()[-10:]}
        if len(statuses) > 10 and len(pids) == 2 and victim not in pids:
            break
        time.sleep(0.05)
    assert victim not in {x["pid"] for x in server.access_lines()[-10:]}
    _, _, body = server.request("GET", "/metrics?format=json", headers=admin())
    count = json.loads(body)["http"]["routes"][f"{API}/buckets/{{name}}/keys/{{key:path}}"]
    assert count["count"] >= 10 + statuses.count(404)       # the dead worker's too


def test_healthz_and_a_clean_sigterm(serve, store):
    server = serve()
    status, _, body = server.request("GET", "/healthz")
    assert status == 503 and "writer" in json.loads(body)["reason"]   # no writer yet
    area = f"/dev/shm/bukt-{store.name}-http"
    assert os.path.exists(area)
    assert server.stop() == 0
    assert not os.path.exists(area)
    assert "Traceback" not in server.output()


def test_admin_token_generated_into_data_dir(store, tmp_path, monkeypatch):
    monkeypatch.delenv("BUKT_ADMIN_TOKEN", raising=False)
    server = Server(store.name, tmp_path, **{"auth.admin_token": None})
    try:
        token = (tmp_path / "admin.token").read_text().strip()
        assert oct(os.stat(tmp_path / "admin.token").st_mode & 0o777) == "0o600"
        assert server.request("GET", f"{API}/buckets", headers={"X-API-Key": token}
                              )[0] == 200
        assert token not in server.output()
        assert str(tmp_path / "admin.token") in server.output()
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("st", path=os.path.dirname(sys.executable)) is None,
                    reason="schemathesis is not installed")
def test_schemathesis_against_the_served_document(serve, tmp_path):
    """No 5xx, and every response matches the document. Excluded checks, and why:
    ignored_auth (it sends no token and wants 401, but also tries the public
    /healthz and openapi.json); positive_data_acceptance (valid-looking data the store
    refuses: an existing bucket name, a key over max_key); unsupported_method and
    allow_header_conformance (a key may contain '/', so /keys/{key}/incr is also the
    key path of "{key}/incr" for GET, PUT, DELETE: OpenAPI cannot say that).
    Excluded operations: dropBucket (it would drop the bucket the rest needs),
    health and healthHead (503 until a writer process runs, which is right, and a 5xx
    to it) and
    watchBucket (an endless event stream: tests/integration/test_watch_http.py)."""
    server = serve(**{"http.workers": 1})
    create_bucket(server, "fuzz")
    config = tmp_path / "schemathesis.toml"
    config.write_text(textwrap.dedent("""
        [parameters]
        "path.name" = "fuzz"
    """))
    st = os.path.join(os.path.dirname(sys.executable), "st")
    url = f"http://127.0.0.1:{server.port}"
    result = subprocess.run(
        [st, "--config-file", str(config), "run", f"{url}{API}/openapi.json",
         "--url", url, "-H", f"X-Auth-Token: {ADMIN_TOKEN}", "--checks", "all",
         "--exclude-checks", "ignored_auth,positive_data_acceptance,unsupported_method,"
         "allow_header_conformance", "--exclude-operation-id", "dropBucket",
         "--exclude-operation-id", "health", "--exclude-operation-id", "healthHead",
         "--exclude-operation-id", "watchBucket",
         "--max-examples", "25", "--workers", "1", "--no-color",
         "--phases", "coverage,fuzzing", "--seed", "1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Server error" not in result.stdout


def test_with_the_real_writer_fsync_always(tmp_path):
    """`bukt writer` (fsync: always) then `bukt http`, as `bukt serve` will run them:
    /healthz is 200, a PUT is acknowledged once durable, and the writer's death turns
    /healthz to 503."""
    from writer_harness import Instance
    inst = Instance(tmp_path, fsync="always")
    writer = inst.start()
    try:
        server = Server(inst.name, tmp_path)
        try:
            status, _, body = server.request("GET", "/healthz")
            assert status == 200, body
            assert json.loads(body)["writer"]["sync_always"] is True
            tok = create_bucket(server)
            for i in range(20):
                assert server.request("PUT", f"{API}/buckets/b/keys/k{i}", b"v",
                                      tok)[0] == 204
            info = inst.info()
            assert info["flushed_pos"] >= info["ring_head"]     # every write is durable
            inst.kill(writer)
            status, _, body = server.request("GET", "/healthz")
            assert status == 503 and "gone" in json.loads(body)["reason"]
        finally:
            server.stop()
    finally:
        inst.kill(writer)
        inst.unlink_segment()


# -- the request head is bounded -------------------------------------------------------

def raw_exchange(port, head):
    """Send `head` on a new connection and return what the server answers before it
    closes (b"" if nothing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out


def test_request_heads_over_the_limits_are_refused_and_closed(serve):
    server = serve(**{"http.workers": 1})
    tok = create_bucket(server)
    ok = raw_exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      + b"X-A: " + b"a" * 8000 + b"\r\n\r\n")
    assert ok.split(b" ", 2)[1] in (b"200", b"503")            # within the limits
    cases = [  # (head, status)
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n", b"431"),
        (b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101))
         + b"\r\n", b"431"),
        (b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 7000)
                                                for i in range(5)) + b"\r\n", b"431"),
    ]
    for head, status in cases:
        answer = raw_exchange(server.port, head)
        assert answer.split(b" ", 2)[1] == status, answer[:200]
        head_part, _, body = answer.partition(b"\r\n\r\n")
        assert b"connection: close" in head_part.lower()
        assert json.loads(body)["code"] in ("headers_too_large", "uri_too_long")
    # the worker still serves
    assert server.request("GET", f"{API}/buckets/b/keys/x", headers=tok)[0] == 404


@pytest.mark.slow
def test_endless_headers_leave_the_worker_small_and_serving(serve):
    from bukt.service import procs
    server = serve(**{"http.workers": 1})
    tok = create_bucket(server)
    server.request("PUT", f"{API}/buckets/b/keys/k", b"v", tok)
    (worker,) = procs.children_of(server.proc.pid)
    rss_before = procs.describe(worker)["rss_bytes"]
    cap = 48 << 20          # what one attacker sends at most (the old worker took it all)
    chunk = b"a" * (64 << 10)
    stop = threading.Event()
    streaming = threading.Barrier(5)        # four attackers and the normal client
    cut_off = []                            # per attack connection: closed before the cap?

    def attack():
        first = True
        while first or not stop.is_set():   # new connections until the client is done
            with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
                sent = 0
                try:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: " + chunk)
                    if first:
                        streaming.wait()
                        first = False
                    while sent < cap:
                        s.sendall(chunk)
                        sent += len(chunk)
                except OSError:
                    pass
                cut_off.append(sent < cap)

    peak = [rss_before]

    def watch():
        while not stop.is_set():
            d = procs.describe(worker)
            if d:
                peak[0] = max(peak[0], d["rss_bytes"])
            time.sleep(0.02)

    attackers = [threading.Thread(target=attack) for _ in range(4)]
    watcher = threading.Thread(target=watch)
    for t in attackers + [watcher]:
        t.start()
    failures = served = 0
    try:
        streaming.wait(30)                  # every attacker is streaming its header
        for _ in range(50):                 # a normal client, meanwhile
            try:
                status, _, body = server.request("GET", f"{API}/buckets/b/keys/k", headers=tok)
                served += (status, body) == (200, b"v")
                failures += (status, body) != (200, b"v")
            except OSError:
                failures += 1
    finally:
        stop.set()
        for t in attackers + [watcher]:
            t.join()
    assert (served, failures) == (50, 0)
    assert len(cut_off) >= 4 and all(cut_off)   # every endless header was cut off
    assert peak[0] - rss_before < 50 << 20, (rss_before, peak[0])
    assert procs.children_of(server.proc.pid) == [worker]      # never killed or replaced

def test_listing_keys_carries_a_key_that_is_not_utf8(serve):
    import base64
    server = serve()
    tok = create_bucket(server)
    for key in ("%FF%FEk", "plain"):
        assert server.request("PUT", f"{API}/buckets/b/keys/{key}", b"v", tok)[0] == 204
    status, _, body = server.request("GET", f"{API}/buckets/b/keys", headers=tok)
    assert status == 200, body                                  # before: 406
    doc = json.loads(body)
    assert doc["encoding"] == "base64" and doc["cursor"] == "0"
    assert sorted(base64.b64decode(k) for k in doc["keys"]) == [b"plain", b"\xff\xfek"]
    status, _, body = server.request("GET", f"{API}/buckets/b/keys?prefix=pl", headers=tok)
    assert json.loads(body) == {"cursor": "0", "encoding": "utf-8", "keys": ["plain"]}


def test_a_crash_looping_worker_pool_is_reported_by_healthz(serve):
    from bukt.service import procs
    server = serve(**{"http.workers": 1, "http.max_worker_restarts": 2})
    status, _, body = server.request("GET", "/healthz")
    assert json.loads(body)["http_workers"] == {"workers": 1, "restarts_last_minute": 0}
    for n in (1, 2):
        (worker,) = procs.children_of(server.proc.pid)
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:         # until a new worker answers
            try:
                _, _, body = server.request("GET", "/healthz")
                if json.loads(body)["http_workers"]["restarts_last_minute"] == n:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
    status, _, body = server.request("GET", "/healthz")
    doc = json.loads(body)
    assert status == 503 and "crash loop" in doc["reason"], doc
