"""A token the operator gives (the same secret on every node behind a proxy), registered
from a file or stdin by `bukt buckets create` / `bukt tokens create --token-file`, or
over HTTP in the body with the admin token: it then authenticates on every face."""
import json
import os
import subprocess

import pytest

from bukt.tokens import new_token
from serve_harness import PY, ROOT, Service

redis = pytest.importorskip("redis")


def cli(*args, stdin=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUKT_")}
    env["PYTHONPATH"] = ROOT
    return subprocess.run([PY, "-m", "bukt", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=60)


def resp_auth(svc, bucket, token):
    r = redis.Redis("127.0.0.1", svc.resp_port, username=bucket, password=token, protocol=2)
    try:
        return r.set("k", "v") and r.get("k") == b"v"
    finally:
        r.close()


@pytest.fixture
def svc(tmp_path):
    s = Service(tmp_path)
    try:
        s.start()
        yield s
    finally:
        if s.proc is not None and s.proc.poll() is None:
            s.stop()
        s.cleanup()


def test_given_tokens_over_the_cli_and_http(svc, tmp_path):
    admin = {"X-Auth-Token": svc.admin_token()}
    # the CLI, attached, from a file: the token is not printed
    one = new_token()
    (tmp_path / "one").write_text(one + "\n")
    r = cli("buckets", "create", "kv", "--config", svc.conf, "--token-file",
            str(tmp_path / "one"), "--json")
    assert r.returncode == 0, r.stderr
    assert one not in r.stdout and json.loads(r.stdout)["token_id"] == 1
    assert resp_auth(svc, "kv", one)
    # a second token of the bucket from stdin, read-only
    two = new_token()
    r = cli("tokens", "create", "-b", "kv", "--perms", "read", "--config", svc.conf,
            "--token-file", "-", stdin=two)
    assert r.returncode == 0 and two not in r.stdout, r.stderr
    status, body = svc.http("GET", "/api/v1/buckets/kv/keys/k", headers={"X-Auth-Token": two})
    assert status == 200 and body == b"v"
    # registered once only: the same secret again is refused, in any bucket
    r = cli("tokens", "create", "-b", "kv", "--config", svc.conf, "--token-file", "-",
            stdin=two)
    assert r.returncode == 2 and "exists already" in r.stderr
    # over HTTP: only the admin token may give a secret, and it is not echoed
    three = new_token()
    status, body = svc.http("POST", "/api/v1/buckets", {"name": "other", "token": three},
                            admin)
    assert status == 201 and three not in body.decode()
    assert resp_auth(svc, "other", three)
    status, body = svc.http("POST", "/api/v1/buckets/kv/tokens",
                            {"permissions": ["read"], "token": new_token()},
                            {"X-Auth-Token": one})      # kv's own admin-permission token
    assert status == 403, body
    status, body = svc.http("POST", "/api/v1/buckets/kv/tokens",
                            {"permissions": ["read"], "token": "bkt_too-short"}, admin)
    assert status == 400 and b"bukt tokens new" in body
    status, body = svc.http("POST", "/api/v1/buckets/kv/tokens",
                            {"permissions": ["read"], "token": three}, admin)
    assert status == 400 and b"exists already" in body
    # the CLI over HTTP with the admin token
    four = new_token()
    r = cli("tokens", "create", "-b", "kv", "--url", f"http://{svc.http_bind}", "--token",
            svc.admin_token(), "--token-file", "-", stdin=four + "\n")
    assert r.returncode == 0, r.stderr
    assert resp_auth(svc, "kv", four)
    # the binary protocol makes its own tokens: a given one is refused, nothing made
    r = cli("tokens", "create", "--url", f"bukt://kv:{one}@{svc.tcp_bind}",
            "--token-file", "-", stdin=new_token())
    assert r.returncode == 2 and "http://" in r.stderr
    status, body = svc.http("GET", "/api/v1/buckets/kv/tokens", headers=admin)
    assert [t["id"] for t in json.loads(body)["tokens"]] == [1, 2, 3]
    # a bad file: refused before anything is made
    (tmp_path / "bad").write_text("hunter2\n")
    r = cli("buckets", "create", "third", "--config", svc.conf, "--token-file",
            str(tmp_path / "bad"))
    assert r.returncode == 2 and "bukt tokens new" in r.stderr
    status, body = svc.http("GET", "/api/v1/buckets", headers=admin)
    assert json.loads(body)["buckets"] == ["kv", "other"]
