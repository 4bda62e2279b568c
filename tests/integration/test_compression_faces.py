"""Compressed buckets through a real `bukt serve`: created over HTTP with their settings;
every schema read back through the local API, the binary TCP client, RESP (redis-py) and
HTTP, with and without `Accept-Encoding: zstd`; a damaged frame refused on every face;
bytes saved in /metrics; and a cold restart from the log keeps values compressed."""
import http.client
import json
import os

import pytest

import bukt
from bukt import codec
from serve_harness import Service

redis = pytest.importorskip("redis")
zstandard = pytest.importorskip("zstandard")

TEXT = b"".join(b"line %d of a compressible value: the quick brown fox\n" % i
                for i in range(200))
STR = TEXT.decode() + "é✓"
DOC = {"lines": TEXT.decode().splitlines(), "n": 7}
FLAG = {"zstd": codec.FLAG_ZSTD, "lz4": codec.FLAG_LZ4}
BUCKETS = [(f"{name}-{schema}", name, schema) for name in ("zstd", "lz4")
           for schema in ("bytes", "str", "json", "int")]
VALUE = {"bytes": TEXT, "str": STR, "json": DOC, "int": 1234567890123}


def http_call(svc, method, path, token, body=None, headers=()):
    """(status, headers dict lower-cased, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", svc.http_port, timeout=10)
    try:
        h = {"X-Auth-Token": token, **dict(headers)}
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    s = Service(tmp_path_factory.mktemp("compression"))
    s.start()
    s.tokens = {}
    for bname, name, schema in BUCKETS:
        s.tokens[bname] = s.create_bucket(bname, schema=schema, compression=name,
                                          compression_threshold=256)
    s.tokens["plain"] = s.create_bucket("plain")
    yield s
    s.cleanup()


def same(schema, got, value):
    """A read's result is the value set (a json bucket's: the same document)."""
    return json.loads(got) == value if schema == "json" else got == value


def local(svc):
    return bukt.attach(svc.name)


def test_http_bucket_api_shows_and_checks_the_settings(svc):
    admin = svc.admin_token()
    st, _, body = http_call(svc, "GET", "/api/v1/buckets/zstd-bytes", admin)
    info = json.loads(body)
    assert st == 200 and info["compression"] == "zstd"
    assert info["compression_threshold"] == 256
    assert info["compression_min_saving"] == codec.DEFAULT_MIN_SAVING
    assert "bytes_saved" in info["stats"]
    st, _, body = http_call(svc, "POST", "/api/v1/buckets", admin,
                            json.dumps({"name": "bad", "compression": "gzip"}),
                            {"Content-Type": "application/json"})
    assert st == 400 and b"compression" in body
    st, _, body = http_call(svc, "POST", "/api/v1/buckets", admin,
                            json.dumps({"name": "bad", "compression": "lz4",
                                        "compression_min_saving": 99}),
                            {"Content-Type": "application/json"})
    assert st == 400 and b"compression_min_saving" in body


@pytest.mark.parametrize("bname,name,schema", BUCKETS)
def test_round_trip_on_every_face(svc, bname, name, schema):
    value = VALUE[schema]
    token = svc.tokens[bname]
    s = local(svc)
    try:
        b = s.bucket(bname)
        b.set(b"local", value)
        assert same(schema, b.get(b"local"), value)
        stored, flags = b.read_entry(b"local")[:2]
        if schema == "int":
            assert flags & codec.FLAGS == 0     # a decimal is under any threshold
        else:
            assert flags & FLAG[name] and len(stored) < len(TEXT) // 2
        # binary TCP: written and read by the client
        with svc.client(bname, token) as c:
            c.set(b"tcp", json.dumps(value) if schema == "json" else value)
            assert same(schema, c.get(b"tcp"), value)
            assert same(schema, c.get(b"local"), value)
            assert all(same(schema, v, value) for v in c.mget([b"local", b"tcp"]))
        assert same(schema, b.get(b"tcp"), value)
        if schema != "int":
            assert b.read_entry(b"tcp")[1] & FLAG[name]
        # RESP: redis-py sees the raw bytes a set of bytes gives
        wire = {"bytes": TEXT, "str": STR.encode(), "json": json.dumps(DOC).encode(),
                "int": b"1234567890123"}[schema]
        r = redis.Redis("127.0.0.1", svc.resp_port, username=bname, password=token,
                        socket_timeout=10)
        try:
            assert r.set("resp", wire)
            got = r.get("resp")
            assert got == wire or json.loads(got) == DOC
            assert r.get("local") in (wire, json.dumps(DOC, separators=(",", ":")).encode())\
                or json.loads(r.get("local")) == DOC
            assert r.strlen("resp") == len(got)
            assert r.mget(["resp", "missing"])[0] == got
            if schema in ("bytes", "str"):      # APPEND across the threshold
                r.set("app", wire[:200])
                assert r.append("app", wire[200:]) == len(wire)
                assert r.get("app") == wire
        finally:
            r.close()
        assert same(schema, b.get(b"resp"), value)
        if schema != "int":
            assert b.read_entry(b"resp")[1] & FLAG[name]
        # HTTP: decompressed unless the client takes zstd and the value is stored so
        path = f"/api/v1/buckets/{bname}/keys/local"
        st, h, body = http_call(svc, "GET", path, token)         # the fast path's
        assert st == 200 and "content-encoding" not in h
        assert ("accept-encoding" in h.get("vary", "").lower()) == (name == "zstd")
        plain = body
        assert plain == (wire if schema != "json" else plain) and \
            (schema != "json" or json.loads(plain) == DOC)
        st, h, body = http_call(svc, "GET", path, token,
                                headers={"Accept-Encoding": "gzip, zstd"})
        assert st == 200
        if name == "zstd" and schema != "int":
            assert h.get("content-encoding") == "zstd"
            assert "accept-encoding" in h.get("vary", "").lower()
            assert body == stored
            assert zstandard.ZstdDecompressor().decompress(body) == plain
        else:
            assert "content-encoding" not in h and body == plain
        st, h, body = http_call(svc, "GET", path, token, headers={"Range": "bytes=0-9"})
        assert st == 206 and body == plain[:10]
        st, _, body = http_call(svc, "PUT", f"/api/v1/buckets/{bname}/keys/http", token,
                                body=plain, headers={"Content-Type":
                                                     "application/octet-stream"})
        assert st in (200, 201, 204), body
        assert same(schema, b.get(b"http"), value)
    finally:
        s.close()


def test_damaged_frame_is_an_error_on_every_face(svc):
    token = svc.tokens["zstd-bytes"]
    s = local(svc)
    try:
        b = s.bucket("zstd-bytes")
        b.set(b"bad", TEXT)
        stored, flags = b.read_entry(b"bad")[:2]
        broken = bytearray(stored)
        broken[len(broken) // 2] ^= 0x04
        b.put_entry(b"bad", bytes(broken), flags)
        with pytest.raises(bukt.errors.IntegrityError):
            b.get(b"bad")
    finally:
        s.close()
    with svc.client("zstd-bytes", token) as c:
        with pytest.raises(bukt.errors.IntegrityError):
            c.get(b"bad")
    r = redis.Redis("127.0.0.1", svc.resp_port, username="zstd-bytes", password=token,
                    socket_timeout=10)
    try:
        with pytest.raises(redis.ResponseError):
            r.get("bad")
    finally:
        r.close()
    st, _, body = http_call(svc, "GET", "/api/v1/buckets/zstd-bytes/keys/bad", token)
    assert st == 500 and b"integrity_error" in body
    # each refusal counted, whichever process read it: the local read, the TCP and
    # RESP workers, the HTTP worker; in stats and in /metrics
    s = local(svc)
    try:
        assert s.bucket("zstd-bytes").stats()["integrity_errors"] == 4
    finally:
        s.close()
    with svc.client("zstd-bytes", token) as c:
        assert c.stats()["integrity_errors"] == 4
    st, _, body = http_call(svc, "GET", "/metrics", svc.admin_token())
    assert 'bukt_bucket_integrity_errors_total{bucket="zstd-bytes"} 4.0' in body.decode()
    assert 'bukt_store_integrity_errors_total 4.0' in body.decode()


def test_bytes_saved_in_metrics_and_stats(svc):
    s = local(svc)
    try:
        for i in range(10):
            s.bucket("lz4-bytes").set(b"m%d" % i, TEXT)
        saved = s.bucket("lz4-bytes").stats()["bytes_saved"]
        assert saved > 10 * len(TEXT) // 4
    finally:
        s.close()
    st, _, body = http_call(svc, "GET", "/metrics", svc.admin_token())
    assert st == 200
    lines = [ln for ln in body.decode().splitlines()
             if ln.startswith("bukt_bucket_compression_saved_bytes") and "lz4-bytes" in ln]
    assert lines and float(lines[0].rsplit(" ", 1)[1]) == saved
    assert b"bukt_store_compression_saved_bytes" in body


def test_cold_restart_keeps_values_compressed(svc):
    s = local(svc)
    try:
        for bname, name, schema in BUCKETS:
            s.bucket(bname).set(b"kept", VALUE[schema])
        before = {bname: s.bucket(bname).read_entry(b"kept")[:2] for bname, _, _ in BUCKETS}
    finally:
        s.close()
    assert svc.stop() == 0
    os.unlink(f"/dev/shm/bukt-{svc.name}")          # cold: everything from the log
    svc.start()
    s = local(svc)
    try:
        for bname, name, schema in BUCKETS:
            b = s.bucket(bname)
            info = s.bucket_info(bname)
            assert (info["compression"], info["compression_threshold"]) == (name, 256)
            assert same(schema, b.get(b"kept"), VALUE[schema])
            assert b.read_entry(b"kept")[:2] == before[bname]
        assert s.check() == []
    finally:
        s.close()


@pytest.mark.parametrize("bname", ["zstd-bytes", "lz4-bytes"])
def test_feed_values_are_the_values_set(svc, bname):
    """The writer publishes a compressed value to the change feed decompressed when
    its raw size fits feed.max_value (1 KiB here), else its raw size alone."""
    import time
    s = local(svc)
    try:
        b = s.bucket(bname)
        w = s.watch(bname, values=True)
        small, big = TEXT[:1000], TEXT
        b.set(b"feed-small", small)
        b.set(b"feed-big", big)
        assert b.read_entry(b"feed-small")[1] & codec.FLAGS
        got, deadline = [], time.monotonic() + 20
        while len(got) < 2:
            assert time.monotonic() < deadline, got
            evs = w.poll()
            got.extend(e for e in evs if e.key.startswith(b"feed-"))
            if not evs:
                w.wait(0.2)
        assert (got[0].key, got[0].value, got[0].value_size) == (b"feed-small", small,
                                                                  len(small))
        assert (got[1].key, got[1].value, got[1].value_size) == (b"feed-big", None, len(big))
    finally:
        s.close()


def test_dump_holds_values_as_set_and_load_compresses_again(svc, tmp_path):
    """A JSON-lines dump of a compressed bucket holds the values decompressed (it
    loads anywhere, over --url too) and its settings; a load attached into a new
    bucket of those settings stores them compressed again."""
    import subprocess
    import sys
    from serve_harness import ROOT
    s = local(svc)
    try:
        b = s.bucket("lz4-str")
        b.set(b"dumped", STR)
        assert b.read_entry(b"dumped")[1] & codec.FLAG_LZ4
    finally:
        s.close()
    path = str(tmp_path / "dump.jsonl")

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "bukt.cli", *args, "--config", svc.conf],
                           cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, PYTHONPATH=ROOT))
        assert r.returncode == 0, r.stdout + r.stderr
    cli("dump", "-b", "lz4-str", "-o", path)
    lines = [json.loads(ln) for ln in open(path)]
    settings = next(ln["settings"] for ln in lines if "settings" in ln)
    assert (settings["compression"], settings["compression_threshold"]) == ("lz4", 256)
    entry = next(ln for ln in lines if ln.get("key") == "dumped")
    import base64
    assert base64.b64decode(entry["value"]) == STR.encode() and "flags" not in entry
    cli("load", path, "--into", "lz4-copy")
    s = local(svc)
    try:
        info = s.bucket_info("lz4-copy")
        assert (info["compression"], info["compression_threshold"]) == ("lz4", 256)
        b = s.bucket("lz4-copy")
        assert b.get(b"dumped") == STR
        assert b.read_entry(b"dumped")[1] & codec.FLAG_LZ4
        assert s.check() == []
    finally:
        s.close()


def test_cli_creates_lists_and_counts_compressed_buckets(svc):
    import subprocess
    import sys
    from serve_harness import ROOT

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "bukt.cli", *args, "--config", svc.conf],
                           cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, PYTHONPATH=ROOT))
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout
    cli("buckets", "create", "cli-z", "--compression", "zstd", "--compression-threshold",
        "2KiB", "--compression-min-saving", "20")
    s = local(svc)
    try:
        info = s.bucket_info("cli-z")
        assert (info["compression"], info["compression_threshold"],
                info["compression_min_saving"]) == ("zstd", 2048, 20)
        s.bucket("cli-z").set(b"k", TEXT)
        saved = s.bucket("cli-z").stats()["bytes_saved"]
        assert saved > len(TEXT) // 2
    finally:
        s.close()
    rows = json.loads(cli("buckets", "list", "--json"))
    assert {r["name"]: r["compression"] for r in rows}["cli-z"] == "zstd"
    stats = json.loads(cli("stats", "-b", "cli-z", "--json"))
    assert stats["cli-z"]["bytes_saved"] == saved
    assert "saved" in cli("stats", "-b", "cli-z")
