"""Every process of a real `bukt serve` (supervisor, writer, gunicorn arbiter and
worker, uvicorn, TCP pool) logs in the one format log.format names, text or json; a
clean stop logs no error; an error that stops the service is said once."""
import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from serve_harness import Service, wait_for

TEXT_HEAD = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) "
                       r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) ([a-z-]+)\[(\d+)\] (\S+): (.*)$")
ROLES = {"serve", "writer", "http", "http-worker", "tcp"}


@pytest.fixture
def service(tmp_path):
    s = Service(tmp_path)
    yield s
    s.cleanup()


def records(text, fmt):
    """[(level, role, pid, message)]; AssertionError on a line in neither shape."""
    out = []
    for line in text.splitlines():
        if fmt == "json":
            doc = json.loads(line)
            assert set(doc) >= {"ts", "time", "level", "role", "pid", "logger", "msg"}, line
            out.append((doc["level"], doc["role"], doc["pid"], doc["msg"]))
        elif line.startswith("  ") and out:      # a record's continuation
            level, role, pid, msg = out[-1]
            out[-1] = (level, role, pid, msg + "\n" + line[2:])
        else:
            m = TEXT_HEAD.match(line)
            assert m, f"not a log line: {line!r}"
            out.append((m[2], m[3], int(m[4]), m[6]))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_every_process_logs_in_one_format_and_a_clean_stop_logs_no_error(service, fmt):
    service.configure(log={"format": fmt})
    service.start()
    tok = service.create_bucket("b")
    with service.client("b", tok) as c:
        c.set(b"k", b"v")
    status, _ = service.http("GET", "/api/v1/buckets/b/keys/k", headers={"X-Auth-Token": tok})
    assert status == 200
    assert service.stop() == 0
    recs = records(service.log(), fmt)
    assert {role for _, role, _, _ in recs} >= ROLES, recs
    assert any("bukt serve: ready" in msg for *_, msg in recs)
    bad = [r for r in recs if r[0] in ("ERROR", "CRITICAL") or "Error" in r[3]
           or "Traceback" in r[3]]
    assert bad == []
    # the access log is off by default: no line per request
    assert not [r for r in recs if "/api/v1/buckets/b/keys/k" in r[3]]


@pytest.mark.slow
def test_an_error_that_stops_the_service_is_said_once(service):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", service.http_port))
        taken.listen()
        service.start(wait=False)
        assert service.proc.wait(60) == 2
    text = service.log()
    assert text.count("the port is in use") == 1, text
    recs = records(text, "text")
    assert [r[0] for r in recs if "the port is in use" in r[3]] == ["ERROR"]


def session_pids(sid):
    """Pids of the live processes of session `sid` (`bukt serve` starts one: the harness's
    start_new_session), read from /proc."""
    out = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:         # (state ppid pgrp session ...)
            out.add(int(name))
    return out


def parse_any(line):
    """(format, role, pid) of a line in either shape; (None, None, None) for neither."""
    try:
        doc = json.loads(line)
        return "json", doc["role"], doc["pid"]
    except (ValueError, KeyError, TypeError):
        pass
    m = TEXT_HEAD.match(line)
    return ("text", m[3], int(m[4])) if m else (None, None, None)


@pytest.mark.slow
def test_a_reload_that_changes_log_format_applies_it_to_every_process(service):
    """SIGHUP with log.format text -> json: the supervisor logs in json from then on and
    every child it starts anew (writer, HTTP arbiter and worker, TCP pool) logs in json;
    only the children being replaced may still write text while they stop."""
    service.start()
    old = session_pids(service.proc.pid)
    mark = len(service.log())
    service.configure(log={"format": "json"})
    os.kill(service.proc.pid, signal.SIGHUP)
    need = {"serve", "writer", "http", "http-worker", "tcp"}

    def new_lines():
        return [(line, *parse_any(line)) for line in service.log()[mark:].splitlines()
                if line and not line.startswith("  ")]

    def new_roles():
        return {role for _, _, role, pid in new_lines()
                if pid not in old or pid == service.proc.pid}

    wait_for(lambda: new_roles() >= need, timeout=60,
             what="every process to log after the reload")
    tok = service.create_bucket("b")
    with service.client("b", tok) as c:
        c.set(b"k", b"v")
    assert service.stop() == 0
    lines = new_lines()
    assert any("SIGHUP" in line for line, *_ in lines), lines
    fresh = [(line, fmt) for line, fmt, _, pid in lines
             if pid not in old or pid == service.proc.pid]
    assert fresh and [line for line, fmt in fresh if fmt != "json"] == []


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_bukt_tcp_alone_says_its_error_in_the_log_format(service, fmt):
    """`bukt tcp` with no segment to serve (no writer made it): one ERROR log line in
    log.format, from role tcp, not the CLI's own `bukt tcp: ...` line."""
    service.configure(log={"format": fmt})
    r = subprocess.run([sys.executable, "-m", "bukt", "tcp", "--config", service.conf],
                       env=service.env(), capture_output=True, timeout=60)
    assert r.returncode != 0
    recs = records(r.stderr.decode(), fmt)
    assert [(level, role) for level, role, _, _ in recs] == [("ERROR", "tcp")], recs
