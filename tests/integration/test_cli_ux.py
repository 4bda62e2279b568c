"""The command line as its --help documents it: --version, the data commands added to
get/set (exists, expire, persist, mget, mset, scan/keys, flush) on each target, an exit
code test per code, JSON errors with --json, the messages that say what to do, and
`bukt shell` driven through a pseudo-terminal. Also the client URL's checks.

Commands run in this process through bukt.cli.main (test_cli.bukt); the shell and
--version run the installed script."""
import asyncio
import errno
import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest

from bukt import cli, errors
from bukt.cli.common import explain
from bukt.client import AsyncClient, Client, parse_url
from serve_harness import ROOT, Service, unused_port
from cli_fixtures import admin, config, svc  # noqa: F401 (fixtures)
from test_cli import bukt
from names import unique_name

BUKT = os.path.join(os.path.dirname(sys.executable), "bukt")


@pytest.fixture(scope="module")
def targets(svc, admin):
    """The same bucket through each kind of target: the argument lists that name it."""
    r = bukt("buckets", "create", "ux", "--json", "--config", svc.conf)
    assert r.code == 0, r
    token = r.json()["token"]
    return {
        "local": ["-b", "ux", "--config", svc.conf],
        "tcp": ["--url", f"bukt://ux:{token}@127.0.0.1:{svc.tcp_port}"],
        "http": ["--url", f"http://127.0.0.1:{svc.http_port}", "-b", "ux", "--token", token],
    }


def test_version():
    from bukt import __version__
    r = subprocess.run([BUKT, "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == f"bukt {__version__}"


def test_every_subcommand_has_the_same_help():
    """`bukt tcp --help` was the TCP module's own parser: no description of the
    subcommand's place, no exit codes."""
    for name in cli.COMMANDS:
        r = bukt(name, "--help")
        assert r.code == 0, (name, r)
        assert b"exit codes:" in r.out and f"usage: bukt {name}".encode() in r.out, name
    assert b"--bind HOST:PORT" in bukt("tcp", "--help").out
    for name, action in (("buckets", "create"), ("tokens", "revoke")):
        assert b"exit codes:" in bukt(name, action, "--help").out


@pytest.mark.parametrize("kind", ["local", "tcp", "http"])
def test_data_commands_on_each_target(targets, kind):
    a = targets[kind]
    k = f"{kind}-"
    assert bukt("mset", *a, k + "a", "1", k + "b", "two", k + "c", "3").code == 0
    r = bukt("mget", *a, k + "a", k + "nope", k + "b")
    assert r.code == 0 and r.out == b"1\n(nil)\ntwo\n"
    assert bukt("mget", *a, k + "a", k + "b", "--json").json() == {k + "a": "1", k + "b": "two"}
    assert bukt("exists", *a, k + "a", k + "b", k + "nope").text == "2\n"
    assert bukt("exists", *a, k + "nope").code == 3
    assert bukt("expire", *a, k + "a", "50").code == 0
    assert 0 < float(bukt("ttl", *a, k + "a").text) <= 50
    assert bukt("persist", *a, k + "a").code == 0
    assert bukt("ttl", *a, k + "a").text == "no TTL (persistent)\n"
    assert bukt("expire", *a, k + "nope", "5").code == 3
    assert bukt("persist", *a, k + "nope").code == 3
    assert bukt("expire", *a, k + "a", "-1").code == 2
    assert set(bukt("scan", *a, "--prefix", k).text.split()) == {k + "a", k + "b", k + "c"}
    assert set(bukt("keys", *a, "--match", f"{k}[ab]").text.split()) == {k + "a", k + "b"}
    assert bukt("scan", *a, "--match", f"{kind}*c", "--json").json()["keys"] == [k + "c"]
    assert bukt("scan", *a, "--prefix", k, "--limit", "2", "--json").json()["count"] == 2


def test_flush_asks_first(targets, svc):
    for kind, a in targets.items():
        assert bukt("set", *a, f"f-{kind}", "v").code == 0
        r = bukt("flush", *a)                      # stdin is not a terminal: refused
        assert r.code == 2 and b"--yes" in r.err
        assert bukt("get", *a, f"f-{kind}").code == 0
        r = bukt("flush", *a, "--yes", "--json")
        assert r.code == 0 and r.json()["deleted"] >= 1, r
        assert bukt("get", *a, f"f-{kind}").code == 3


# -- an exit code each ---------------------------------------------------------------------

def test_exit_0_done(targets):
    assert bukt("set", *targets["local"], "zero", "v").code == 0


def test_exit_1_failed(targets):
    bukt("set", *targets["local"], "text", "hello, world")
    r = bukt("incr", *targets["local"], "text")
    assert r.code in (1, 2)      # a schema error is refused input
    # the value shown as text, not as a Python bytes literal
    assert b'value "hello, world" is not a decimal integer' in r.err, r
    assert b"b'" not in r.err


def test_exit_1_check_problems(tmp_path, monkeypatch):
    conf = tmp_path / "bukt.yaml"
    conf.write_text(f"instance: {unique_name('nobody')}\ndata_dir: {tmp_path}/none\n")
    r = bukt("check", "--config", conf)
    assert r.code == 1, r


def test_exit_2_usage_and_config(tmp_path):
    assert bukt("get").code == 2
    conf = tmp_path / "bad.yaml"
    conf.write_text("memory: 12XB\n")
    r = bukt("status", "--config", conf)
    assert r.code == 2
    # the expectation reads as a sentence, not "expected write bytes as an int"
    assert b"expected a number of bytes, or a number with B, KiB" in r.err, r
    assert b"expected write" not in r.err


def test_exit_3_not_found(targets):
    assert bukt("get", *targets["local"], "never-set").code == 3


def test_exit_4_stopped_service(tmp_path):
    """A service that stopped leaves its segment: status and compact say it is not
    running with 4, as they do when there is no segment at all (they said 1)."""
    s = Service(tmp_path)
    try:
        s.start()
        s.stop()
        assert os.path.exists(f"/dev/shm/bukt-{s.name}")     # the segment survives
        for argv in (["status"], ["compact", "--wait", "1"], ["status", "--json"]):
            r = bukt(*argv, "--config", s.conf)
            assert r.code == 4, (argv, r)
        r = bukt("status", "--config", s.conf, "--json")
        assert json.loads(r.out)["healthy"] is False
    finally:
        s.cleanup()
    r = bukt("status", "--config", s.conf)
    assert r.code == 4 and b"no segment" in r.err


def test_exit_4_unreachable_and_timeouts_name_the_address():
    port = unused_port()
    r = bukt("get", "--url", f"http://127.0.0.1:{port}", "-b", "b", "k")
    assert r.code == 4
    import socket
    with socket.socket() as quiet:               # accepts, never answers
        quiet.bind(("127.0.0.1", 0))
        quiet.listen()
        where = f"127.0.0.1:{quiet.getsockname()[1]}"
        r = bukt("get", "--url", f"bukt://b:t@{where}", "--timeout", "0.3", "k")
        assert r.code == 4 and where.encode() in r.err, r
        c = Client(f"bukt://b:t@{where}?timeout=0.3")
        with pytest.raises(TimeoutError, match=where):
            c.get("k")
        c.close()

        async def main():
            a = AsyncClient(f"bukt://b:t@{where}", timeout=0.3)
            with pytest.raises(TimeoutError, match=where):
                await a.get("k")
            await a.close()
        asyncio.run(main())


def test_exit_5_not_allowed(svc, targets):
    r = bukt("get", "--url", f"bukt://ux:wrong@127.0.0.1:{svc.tcp_port}", "k")
    assert r.code == 5


def test_permission_messages_name_the_right_remedy():
    """The OS refusing a file of the data directory is not fixed by segment.mode."""
    e = PermissionError(errno.EACCES, "Permission denied", "/var/lib/bukt/MANIFEST")
    code, line = explain(e, None)
    assert code == 5 and "segment.mode" not in line and "sudo -u bukt" in line
    e = PermissionError(errno.EACCES, "Permission denied", "/dev/shm/bukt-default")
    assert "segment.mode" in explain(e, None)[1]


def test_json_errors_on_stderr(svc):
    r = bukt("get", "-b", "nosuch", "k", "--json")
    assert r.code == 3
    err = json.loads(r.err)
    assert err["exit_code"] == 3 and err["command"] == "get" and "no bucket" in err["error"]
    r = bukt("get", "--json")                    # argparse's own error, too
    assert r.code == 2 and json.loads(r.err)["exit_code"] == 2


# -- the client URL --------------------------------------------------------------------------

def test_client_url_checks(svc):
    with pytest.raises(errors.AuthError, match="no token"):
        Client(f"bukt://127.0.0.1:{svc.tcp_port}")          # not "AUTH first" later
    with pytest.raises(errors.InvalidArgument, match="timeout='abc'"):
        parse_url("bukt://b:t@h:1?timeout=abc")
    with pytest.raises(errors.InvalidArgument, match="unknown URL parameter 'timout'"):
        parse_url("bukt://b:t@h:1?timout=3")
    with pytest.raises(errors.InvalidArgument) as e:
        parse_url("bukt://b:secret@h:1?pool_size=0")
    assert "secret" not in str(e.value)
    r = bukt("get", "--url", "bukt://b:t@127.0.0.1:1?timout=3", "k")
    assert r.code == 2 and b"timout" in r.err
    r = bukt("get", "--url", "http://127.0.0.1:1?timeout=abc", "-b", "b", "k")
    assert r.code == 2 and b"timeout='abc'" in r.err
    r = bukt("get", "--url", "http://127.0.0.1:1?tls=1", "-b", "b", "k")
    assert r.code == 2 and b"unknown URL parameter 'tls'" in r.err


# -- bukt shell --------------------------------------------------------------------------------

class Pty:
    """A process on a pseudo-terminal: send lines, read until a text shows."""

    def __init__(self, argv, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:                                   # the child
            os.execve(argv[0], argv, env)
        self.buf = b""

    def expect(self, text: bytes, timeout=20):
        deadline = time.monotonic() + timeout
        while text not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} not seen; got {self.buf[-2000:]!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"{text!r} not seen before exit; {self.buf!r}")
                self.buf += chunk
        at = self.buf.index(text) + len(text)
        seen, self.buf = self.buf[:at], self.buf[at:]
        return seen

    def send(self, line: str):
        os.write(self.fd, line.encode() + b"\r")

    def close(self):
        try:
            _, status = os.waitpid(self.pid, 0)
        finally:
            os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("kind", ["local", "tcp", "http"])
def test_shell_through_a_pty(targets, svc, tmp_path, kind):
    env = dict(os.environ, BUKT_CONFIG=svc.conf, BUKTCLI_HISTFILE=str(tmp_path / "hist"),
               TERM="dumb")
    sh = Pty([BUKT, "shell", *targets[kind]], env)
    prompt = b"/ux> "
    sh.expect(prompt)
    sh.send('SET "sh key" "hello, world" EX 60')
    assert b"OK" in sh.expect(prompt)
    sh.send('GET "sh key"')
    assert b'"hello, world"' in sh.expect(prompt)
    sh.send("TTL 'sh key'")
    out = sh.expect(prompt)
    assert b"(integer)" not in out and b"." in out
    sh.send(f"INCR n-{kind} 5")
    assert b"(integer) 5" in sh.expect(prompt)
    sh.send("SCAN sh MATCH 'sh *'")
    assert b'1) "sh key"' in sh.expect(prompt)
    sh.send("GET nothing-here")
    assert b"(nil)" in sh.expect(prompt)
    sh.send("HELP SET")
    assert b"SET key value [EX seconds] [NX|XX]" in sh.expect(prompt)
    sh.send("BOGUS")
    assert b"(error) unknown command" in sh.expect(prompt)
    sh.send("SET onlykey")
    assert b"(error) usage: SET" in sh.expect(prompt)
    sh.send("USE nosuch-bucket")
    assert b"(error)" in sh.expect(prompt)
    # readline: the history recalls the last line (Up arrow), edited in place
    sh.send(f"GET n-{kind}")
    assert b'"5"' in sh.expect(prompt)
    os.write(sh.fd, b"\x1b[A\r")
    assert b'"5"' in sh.expect(prompt)
    sh.send("QUIT")
    assert sh.close() == 0
    assert f"GET n-{kind}" in (tmp_path / "hist").read_text()


def test_shell_reads_a_script_from_stdin(targets, svc):
    r = subprocess.run([BUKT, "shell", *targets["local"]], input="SET s1 v\nGET s1\nINCR s1\n",
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, BUKT_CONFIG=svc.conf))
    assert r.stdout.splitlines()[:2] == ["OK", '"v"']
    assert "(error)" in r.stdout and r.returncode != 0
