"""redis-cli against a real `bukt serve`: a scripted session, and `--pipe` mass
insertion, whose keys are then read back over the binary face."""
import subprocess

import pytest

from resp_tools import need_tool
from serve_harness import Service

KEYS = 20_000


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    svc = Service(tmp_path_factory.mktemp("cli"))
    try:
        svc.start()
        token = svc.create_bucket("kv")
        yield svc, token
        assert svc.stop() == 0
    finally:
        svc.cleanup()


def cli(svc, token, *args, stdin=None, user="kv"):
    cmd = [need_tool("redis-cli"), "-h", "127.0.0.1", "-p", str(svc.resp_port),
           "--no-auth-warning"]
    if token:
        cmd += ["--user", user, "--pass", token]
    out = subprocess.run(cmd + list(args), input=stdin, capture_output=True, timeout=120)
    return out.stdout.decode(), out.stderr.decode(), out.returncode


def test_scripted_session(served):
    svc, token = served
    script = "\n".join([
        "PING", "SET greeting hello", "GET greeting", "APPEND greeting ' world'",
        "GET greeting", "STRLEN greeting", "INCR hits", "INCRBY hits 41", "SET t x EX 100",
        "TTL t", "EXISTS greeting t nothing", "MSET a 1 b 2", "MGET a b c", "DEL a b",
        "TYPE greeting", "LPUSH l x", "SELECT 0", "DBSIZE", "MULTI", "INCR hits", "GET hits",
        "EXEC", "QUIT"]) + "\n"
    out, err, rc = cli(svc, token, stdin=script.encode())
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[:16] == ["PONG", "OK", "hello", "11", "hello world", "11", "1", "42", "OK",
                          "100", "2", "OK", "1", "2", "", "2"], out
    assert lines[16] == "string"
    assert lines[17].startswith("ERR unknown command 'LPUSH'")
    assert [x for x in lines[18:] if x] == ["OK", "3", "OK", "QUEUED", "QUEUED", "43", "43"], out


def test_cli_without_auth_and_with_a_wrong_token(served):
    svc, token = served
    out, _, _ = cli(svc, None, "PING")
    assert out.strip() == "PONG"
    out, _, _ = cli(svc, None, "GET", "greeting")
    assert "NOAUTH" in out
    out, err, _ = cli(svc, "bkt_wrong", "GET", "greeting")
    assert "WRONGPASS" in out + err


def test_pipe_mass_insertion(served):
    svc, token = served
    data = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
                    % (len(k), k, len(v), v)
                    for k, v in ((b"mass:%d" % i, b"value-%d" % i) for i in range(KEYS)))
    out, err, rc = cli(svc, token, "--pipe", stdin=data)
    assert rc == 0, out + err
    assert f"errors: 0, replies: {KEYS}" in out + err
    c = svc.client("kv", token)
    assert c.get(b"mass:0") == b"value-0"
    assert c.get(b"mass:%d" % (KEYS - 1)) == b"value-%d" % (KEYS - 1)
    out, _, _ = cli(svc, token, "EVAL", "return 1", "0")
    assert "no Lua" in out
    keys, _, _ = cli(svc, token, "--scan", "--pattern", "mass:*")
    assert len(keys.split()) == KEYS
