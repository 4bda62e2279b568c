"""The `bukt` command line against one running service: every data command attached, over
bukt:// and over http://; status, stats, check, compact, dump and load, bench; and the
exit codes and one-line errors of docs (bukt/cli/common.py).

Commands run in this process through bukt.cli.main (stdout and stderr captured as
bytes) to keep the suite quick; tests/integration/test_readme.py runs the installed `bukt` script."""
import glob
import io
import json
import os
import subprocess
import sys
import time

import pytest

from bukt import cli
from bukt.cli.progress import Progress
from serve_harness import ROOT, unused_port
from cli_fixtures import admin, config, svc  # noqa: F401 (fixtures)
from names import unique_name


class Result:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    @property
    def text(self):
        return self.out.decode()

    def json(self):
        return json.loads(self.out)

    def __repr__(self):
        return f"<exit {self.code} out={self.out[:300]!r} err={self.err[:300]!r}>"


def bukt(*argv, stdin=b""):
    """Runs `bukt ARGV...` in this process; a Result."""
    out, err = io.BytesIO(), io.BytesIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    wrappers = [io.TextIOWrapper(io.BytesIO(stdin)), io.TextIOWrapper(out, write_through=True),
                io.TextIOWrapper(err, write_through=True)]
    sys.stdin, sys.stdout, sys.stderr = wrappers
    try:
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as e:                   # argparse
            code = e.code
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
        for w in wrappers:
            w.flush()
            w.detach()                            # else closing the wrapper closes the buffer
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def web(svc):
    return f"http://127.0.0.1:{svc.http_port}"


def _token(r):
    assert r.code == 0, r
    return r.json()["token"]


# -- attached ---------------------------------------------------------------------------------

def test_local_data_commands(svc):
    r = bukt("buckets", "create", "loc", "--default-ttl", "100", "--json")
    token = _token(r)
    assert token.startswith("bkt_") and len(token) == 47 \
        and r.json()["permissions"] == ["read", "write", "admin"]
    assert bukt("set", "-b", "loc", "greeting", "hello").text.startswith("OK, version ")
    assert bukt("get", "-b", "loc", "greeting").out == b"hello"
    assert 99 < float(bukt("ttl", "-b", "loc", "greeting").text) <= 100
    assert bukt("set", "-b", "loc", "greeting", "again", "--nx").code == 3
    assert bukt("set", "-b", "loc", "ghost", "x", "--xx").code == 3
    assert bukt("set", "-b", "loc", "raw", "-", stdin=b"\x00\xff").code == 0
    assert bukt("get", "-b", "loc", "raw").out == b"\x00\xff"
    j = bukt("get", "-b", "loc", "raw", "--json").json()
    assert j == {"key": "raw", "found": True, "value": "AP8=", "encoding": "base64"}
    assert bukt("incr", "-b", "loc", "n", "--by", "5").text == "5\n"
    assert bukt("incr", "-b", "loc", "n", "--by", "-2").text == "3\n"
    assert bukt("del", "-b", "loc", "n", "nothing").text == "1 deleted\n"
    r = bukt("del", "-b", "loc", "nothing")
    assert r.code == 3
    r = bukt("get", "-b", "loc", "nothing")
    assert r.code == 3 and r.out == b"" and b"no key 'nothing'" in r.err
    assert bukt("ttl", "-b", "loc", "nothing").code == 3
    assert bukt("set", "-b", "loc", "once", "v", "--single-read").code == 0
    assert bukt("get", "-b", "loc", "once").out == b"v"
    assert bukt("get", "-b", "loc", "once").code == 3


def test_local_buckets_tokens_stats(svc):
    bukt("buckets", "create", "counters", "--schema", "int", "--cache-only")
    r = bukt("buckets", "list", "--json")
    rows = {b["name"]: b for b in r.json()}
    assert rows["counters"]["schema"] == "int" and rows["counters"]["persist"] is False
    assert "counters  int" in bukt("buckets", "list").text
    r = bukt("tokens", "create", "-b", "counters", "--perms", "read", "--json")
    tid = r.json()["id"]
    listed = bukt("tokens", "list", "-b", "counters", "--json").json()
    assert {"id": tid, "permissions": ["read"]} in listed
    assert bukt("tokens", "revoke", "-b", "counters", tid).code == 0
    assert bukt("tokens", "revoke", "-b", "counters", tid).code == 3
    bukt("incr", "-b", "counters", "hits")
    bukt("get", "-b", "counters", "hits")
    stats = bukt("stats", "--json").json()
    assert stats["counters"]["keys"] == 1 and stats["counters"]["hits"] == 1
    text = bukt("stats", "-b", "counters").text
    assert text.splitlines()[0].split()[:3] == ["bucket", "keys", "bytes"]
    assert "100.0%" in text
    assert bukt("buckets", "drop", "counters").code == 0
    assert bukt("stats", "-b", "counters").code == 3


def test_status_check_compact(svc):
    r = bukt("status")
    assert r.code == 0, r
    text = r.text
    for word in ("healthy", "writer", "memory", "keys", "ring", "disk", "processes",
                 "http arbiter", "http worker", "tcp pool", "tcp worker"):
        assert word in text, word
    j = bukt("status", "--json").json()
    assert j["healthy"] and j["service"]["pid"] == svc.state()["pid"]
    assert j["segment"]["bytes"] == 32 << 20 and j["ring"]["size"] > 0
    # a new index uses 256 of its stripes (512 slots each) and grows from there
    assert j["segment"]["index_stripes"] == 256 < j["segment"]["index_slots"] // 512
    assert "stripes in use" in text
    assert {p["role"] for p in j["processes"]} >= {"serve", "writer", "http arbiter",
                                                   "http worker", "tcp pool", "tcp worker"}
    assert j["disk"]["log_bytes"] > 0
    # once records are written, the current log's prepared zeros (log_prepare) are
    # shown apart
    bukt("buckets", "create", "status-zeros")
    bukt("set", "-b", "status-zeros", "k", "v")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not j["disk"]["prepared_bytes"]:
        time.sleep(0.05)
        j = bukt("status", "--json").json()
    current = max(glob.glob(os.path.join(j["disk"]["data_dir"], "log-*.bkl")))
    assert 0 < j["disk"]["prepared_bytes"] == os.path.getsize(current) - \
        j["disk"]["current_log_bytes"]
    assert "zeros prepared ahead" in bukt("status").text
    r = bukt("check", "--json")
    assert r.code == 0 and r.json()["ok"] and r.json()["segment"]["problems"] == []
    r = bukt("compact", "--wait", "30")
    assert r.code == 0 and "compacted:" in r.text, r
    assert bukt("check").code == 0


def test_dump_and_load_round_trip(svc, tmp_path):
    bukt("buckets", "create", "src")
    bukt("set", "-b", "src", "a", "1")
    bukt("set", "-b", "src", "b", "two", "--ttl", "500")
    bukt("set", "-b", "src", "once", "x", "--single-read")
    bukt("set", "-b", "src", "\udcff", "binary key")      # the key byte 0xff
    jl = tmp_path / "src.jsonl"
    r = bukt("dump", "-b", "src", "-o", jl)
    assert r.code == 0 and "dumped 4 keys" in r.text
    lines = [json.loads(x) for x in jl.read_text().splitlines()]
    assert lines[0]["format"] == "bukt-dump" and "settings" in lines[1]
    assert {"bucket": "src", "key_b64": "/w==", "value": "YmluYXJ5IGtleQ==",
            "expires_at_ms": 0} in lines
    r = bukt("load", jl, "--into", "copy")
    assert r.code == 0 and "loaded 4 keys" in r.text
    assert bukt("get", "-b", "copy", "b").out == b"two"
    assert 400 < float(bukt("ttl", "-b", "copy", "b").text) <= 500
    assert bukt("get", "-b", "copy", "once").out == b"x"       # still single-read
    assert bukt("get", "-b", "copy", "once").code == 3
    snap = tmp_path / "src.bkb"
    assert bukt("dump", "-b", "src", "--format", "snapshot", "-o", snap).code == 0
    assert snap.read_bytes()[:8] == b"BUKTBAS\0"
    tokens = bukt("tokens", "list", "-b", "src", "--json").json()
    bukt("buckets", "drop", "src")
    r = bukt("load", snap)
    assert r.code == 0 and "created bucket src" in r.text
    assert bukt("get", "-b", "src", "a").out == b"1"
    assert bukt("tokens", "list", "-b", "src", "--json").json() == tokens   # tokens came back
    # stdin, and a damaged file refused with its line
    assert bukt("load", "-", "--into", "piped", stdin=jl.read_bytes()).code == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(jl.read_text() + "{not json\n")
    r = bukt("load", bad, "--into", "piped")
    assert r.code == 2 and b"line 7" in r.err


# -- over TCP and HTTP ------------------------------------------------------------------------

def test_data_and_admin_commands_over_tcp(svc, admin):
    tcp = f"127.0.0.1:{svc.tcp_port}"
    r = bukt("buckets", "create", "net", "--url", f"bukt://:{admin}@{tcp}", "--json")
    url = f"bukt://net:{_token(r)}@{tcp}"
    assert bukt("set", "--url", url, "k", "v", "--ttl", "60").code == 0
    assert bukt("get", "--url", url, "k").out == b"v"
    assert 0 < float(bukt("ttl", "--url", url, "k").text) <= 60
    assert bukt("incr", "--url", url, "c", "--by", "7").text == "7\n"
    assert bukt("del", "--url", url, "c").text == "1 deleted\n"
    assert bukt("get", "--url", url, "c").code == 3
    assert bukt("stats", "--url", url, "--json").json()["net"]["keys"] == 1
    r = bukt("tokens", "create", "--url", url, "--perms", "read", "--json")
    ro = f"bukt://net:{r.json()['token']}@{tcp}"
    assert bukt("get", "--url", ro, "k").out == b"v"
    r = bukt("set", "--url", ro, "k", "w")
    assert r.code == 5 and b"permission" in r.err
    assert "net" in bukt("buckets", "list", "--url", f"bukt://:{admin}@{tcp}").text
    r = bukt("get", "--url", f"bukt://:{admin}@{tcp}", "k")       # admin session: no keys
    assert r.code == 2 and b"admin session" in r.err
    assert bukt("status", "--url", url).code == 0
    assert bukt("buckets", "drop", "net", "--url", f"bukt://:{admin}@{tcp}").code == 0


def test_data_and_admin_commands_over_http(svc, admin, web):
    r = bukt("buckets", "create", "web", "--url", web, "--token", admin, "--json")
    tok = _token(r)
    a = ["--url", web, "-b", "web", "--token", tok]
    assert bukt("set", *a, "path/with spaces", "v", "--ttl", "60").code == 0
    assert bukt("get", *a, "path/with spaces").out == b"v"
    assert 0 < float(bukt("ttl", *a, "path/with spaces").text) <= 60
    assert bukt("ttl", *a, "absent").code == 3
    assert bukt("set", *a, "path/with spaces", "x", "--nx").code == 3
    assert bukt("incr", *a, "n", "--initial", "10").text == "11\n"
    assert bukt("del", *a, "n", "absent").text == "1 deleted\n"
    assert bukt("tokens", "list", *a, "--json").json()[0]["permissions"] == \
        ["read", "write", "admin"]
    assert bukt("stats", "--url", web, "--token", admin, "--json").json()["web"]["keys"] == 1
    r = bukt("status", "--url", web, "--token", admin, "--json")
    assert r.code == 0 and r.json()["healthy"] and "metrics" in r.json()
    # a dump over HTTP loads back through TCP into another bucket
    dump = bukt("dump", *a)
    assert dump.code == 0 and b'"key":"path/with spaces"' in dump.out
    assert bukt("get", "-b", "web", "absent", "--url", web, "--token", admin).code == 3
    r = bukt("buckets", "create", "web2", "--url", web, "--token", admin, "--json")
    url2 = f"bukt://web2:{_token(r)}@127.0.0.1:{svc.tcp_port}"
    assert bukt("load", "--url", url2, stdin=dump.out).code == 0
    assert bukt("get", "--url", url2, "path/with spaces").out == b"v"


# -- errors and exit codes --------------------------------------------------------------------

def test_errors_are_one_line_with_their_exit_code(svc, tmp_path):
    port = unused_port()
    cases = [
        (["get", "--url", f"bukt://b:t@127.0.0.1:{port}", "k"], 4, b"cannot connect"),
        (["get", "--url", f"http://127.0.0.1:{port}", "-b", "b", "k"], 4, b"is `bukt serve`"),
        (["get", "--url", f"bukt://loc:wrong@127.0.0.1:{svc.tcp_port}", "k"], 5, b"token"),
        (["get", "--url", f"http://127.0.0.1:{svc.http_port}", "-b", "loc", "--token",
          "wrong", "k"], 5, b"token"),
        (["get", "-b", "nosuch", "k"], 3, b"no bucket"),
        (["get", "k"], 2, b"-b BUCKET"),
        (["get", "--url", "ftp://x", "-b", "b", "k"], 2, b"bukt:// (TCP) or"),
        (["status", "--config", str(tmp_path / "missing.yaml")], 2, b"cannot read"),
    ]
    for argv, code, words in cases:
        r = bukt(*argv)
        assert r.code == code, (argv, r)
        assert words in r.err and r.err.count(b"\n") == 1, (argv, r)
        assert b"wrong@" not in r.err                         # tokens stay out of errors
    other = tmp_path / "other.yaml"
    other.write_text(f"instance: {unique_name('nobody')}\n")
    r = bukt("status", "--config", other)
    assert r.code == 4 and b"no segment" in r.err


def test_installed_script_and_help():
    r = subprocess.run([os.path.join(os.path.dirname(sys.executable), "bukt"), "--help"],
                       capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert r.returncode == 0
    for name in ("serve", "writer", "http", "tcp", "status", "get", "set", "del", "incr",
                 "ttl", "buckets", "tokens", "stats", "check", "compact", "dump", "load",
                 "bench"):
        assert f"    {name} " in r.stdout, name
    assert "exit codes:" in r.stdout


def test_bench_reports_both_transports(svc):
    r = bukt("bench", "--seconds", "0.3", "--clients", "1", "--keys", "100", "--json")
    assert r.code == 0, r
    rep = r.json()
    got = {(x["transport"], x["op"]) for x in rep["results"]}
    assert got == {("tcp", "set"), ("tcp", "get"), ("http", "set"), ("http", "get")}
    assert all(x["ops"] > 0 and x["errors"] == 0 and x["p50_ms"] > 0 for x in rep["results"])
    assert rep["bucket"] not in bukt("buckets", "list").text        # dropped afterwards


def test_progress_draws_only_on_a_terminal():
    buf = io.StringIO()
    with Progress("load", total=200, unit="B", stream=buf, enabled=True) as p:
        p.advance(100)
    assert "load [###############" in buf.getvalue() and "50.0%" in buf.getvalue()
    quiet = io.StringIO()
    with Progress("load", total=200, stream=quiet) as p:      # StringIO is no terminal
        p.advance(100)
    assert quiet.getvalue() == ""
