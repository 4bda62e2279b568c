"""`bukt cluster config` and `locate`, the ketama model they rest on, and the shape a
given token must have. The model is checked against a real nutcracker in
tests/integration/test_cluster_twemproxy.py and test_resp_twemproxy.py."""
import io
import os
import shutil
import socket
import subprocess
import sys

import pytest
import yaml

from bukt.cli import main
from bukt.cluster import ketama
from bukt.cluster.ketama import Continuum, key_hash
from bukt.tokens import check_given, new_token, read_given


@pytest.fixture
def token_file(tmp_path):
    token = new_token()
    path = tmp_path / "kv.token"
    path.write_text(token + "\n")
    return token, str(path)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- the model -----------------------------------------------------------------------------

def test_each_node_has_160_points_and_the_shares_cover_the_ring():
    ring = Continuum(["a", "b", "c"])
    assert ring.points == {"a": 160, "b": 160, "c": 160}
    shares = ring.shares()
    assert abs(sum(shares.values()) - 1) < 1e-12
    assert all(0.25 < s < 0.42 for s in shares.values()), shares


def test_weights_follow_nutcrackers_float_arithmetic():
    """floorf(weight / total * 160 / 4 * servers) * 4, in C floats: 2:1 gives 212 and
    104 points (nutcracker 0.5.0 placed 2,000 keys 1,378 / 622 as this model does)."""
    ring = Continuum([("big", 2), ("small", 1)])
    assert ring.points == {"big": 212, "small": 104}
    assert ring.shares()["big"] > 0.6


def test_fnv1a_64_piles_keys_that_differ_at_the_end_onto_one_node():
    """Why the twemproxy test once used modula: nutcracker's fnv1a_64 (prime cut to
    435) leaves the high bits of "key:0".."key:299" nearly equal, and ketama compares
    whole values; md5 and murmur spread them."""
    keys = [f"key:{i}" for i in range(300)]
    ring = Continuum(["b0", "b1"])
    assert len({ring.server(k, "fnv1a_64") for k in keys}) == 1
    for h in ("md5", "murmur"):
        counts = [sum(ring.server(k, h) == n for k in keys) for n in ("b0", "b1")]
        assert min(counts) > 100, (h, counts)
    # modula takes the low bits, which fnv1a_64 does vary
    assert len({key_hash(k, "fnv1a_64") % 2 for k in keys}) == 2


def test_adding_a_node_moves_only_the_keys_it_takes():
    keys = [f"user:{i}" for i in range(5000)]
    three, four = Continuum(["a", "b", "c"]), Continuum(["a", "b", "c", "d"])
    moved = [k for k in keys if three.server(k) != four.server(k)]
    assert all(four.server(k) == "d" for k in moved)
    assert 0.15 < len(moved) / len(keys) < 0.35


def test_hash_tag_and_the_empty_key():
    assert key_hash("user:{42}:name", "md5", "{}") == key_hash("42", "md5")
    assert key_hash("user:{}:name", "md5", "{}") == key_hash("user:{}:name", "md5")
    assert key_hash("user:{42", "md5", "{}") == key_hash("user:{42", "md5")
    assert key_hash("", "md5") == 0
    assert ketama.md5(b"") == int.from_bytes(bytes.fromhex("d41d8cd9"), "little")


# -- bukt cluster config ----------------------------------------------------------------------

def test_config_writes_a_ketama_pool_with_the_token(tmp_path, capsys, token_file):
    token, path = token_file
    out = tmp_path / "nc.yml"
    code, text, err = run(capsys, "cluster", "config", "--listen", "127.0.0.1:22121",
                          "--node", "a=10.0.0.1:7072", "--node", "b=10.0.0.2:7072",
                          "--node", "c=node-c.example:7072", "-b", "kv", "--token-file",
                          path, "-o", str(out))
    assert code == 0, err
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert token not in text
    pool = yaml.safe_load(out.read_text())["kv"]
    assert pool["redis"] is True and pool["redis_auth"] == token
    assert pool["distribution"] == "ketama" and pool["hash"] == "md5"
    assert pool["auto_eject_hosts"] is True and pool["server_failure_limit"] == 3
    assert pool["timeout"] == 1000 + 1000          # limits.ring_wait_ms + the margin
    assert pool["servers"] == ["10.0.0.1:7072:1 a", "10.0.0.2:7072:1 b",
                               "node-c.example:7072:1 c"]
    assert "hash_tag" not in pool
    nutcracker = shutil.which("nutcracker") or "/usr/sbin/nutcracker"
    if os.path.exists(nutcracker):
        r = subprocess.run([nutcracker, "-t", "-c", str(out)], capture_output=True,
                           text=True)
        assert "syntax is ok" in r.stdout + r.stderr, r


def test_config_options_and_stdin(tmp_path, capsys, monkeypatch):
    token = new_token()
    monkeypatch.setattr(sys, "stdin", io.StringIO(token + "\n"))
    conf = tmp_path / "bukt.yaml"
    conf.write_text("limits:\n  ring_wait_ms: 3000\n")
    code, text, err = run(capsys, "cluster", "config", "--node", "a=127.0.0.1:7072",
                          "--token-file", "-", "--no-eject", "--hash", "murmur",
                          "--hash-tag", "{}", "--retry-ms", "500", "--config", str(conf),
                          "--server-connections", "2")
    assert code == 0, err
    pool = yaml.safe_load(text)["bukt"]          # no --bucket: the pool is "bukt"
    assert pool["redis_auth"] == token and pool["hash"] == "murmur"
    assert pool["hash_tag"] == "{}" and pool["auto_eject_hosts"] is False
    assert pool["server_retry_timeout"] == 500 and pool["timeout"] == 4000
    assert pool["server_connections"] == 2


@pytest.mark.parametrize("argv, says", [
    (["--node", "a=127.0.0.1:7072", "--node", "a=127.0.0.1:7073"], "given twice"),
    (["--node", "a=127.0.0.1:7072", "--node", "b=127.0.0.1:7072"], "given twice"),
    (["--node", "127.0.0.1:7072"], "NAME=HOST:PORT"),
    (["--node", "a=[::1]:7072"], "IPv6"),
    (["--node", "a b=127.0.0.1:7072"], "NAME=HOST:PORT"),
    (["--node", "a=127.0.0.1:7072", "--hash-tag", "{"], "two characters"),
    (["--node", "a=127.0.0.1:7072", "--listen", "nowhere"], "--listen"),
    (["--node", "a=127.0.0.1:7072", "--server-connections", "0"], "must be positive"),
])
def test_config_refuses_bad_nodes_and_options(capsys, token_file, argv, says):
    code, out, err = run(capsys, "cluster", "config", "-b", "kv", "--token-file",
                         token_file[1], *argv)
    assert code == 2 and says in err and out == ""


def test_config_refuses_fnv1a_64(capsys, token_file):
    with pytest.raises(SystemExit) as e:
        main(["cluster", "config", "-b", "kv", "--token-file", token_file[1], "--node",
              "a=127.0.0.1:7072", "--hash", "fnv1a_64"])
    assert e.value.code == 2


@pytest.mark.parametrize("text", ["", "secret", "bkt_short", new_token() + "x",
                                  "-" + new_token()[1:], new_token()[:-1] + "=",
                                  new_token()[:-1] + " "])
def test_a_given_token_must_have_the_shape_of_a_made_one(tmp_path, capsys, text):
    with pytest.raises(ValueError):
        check_given(text)
    path = tmp_path / "t"
    path.write_text(text + "\n")
    code, out, err = run(capsys, "cluster", "config", "-b", "kv", "--token-file", str(path),
                         "--node", "a=127.0.0.1:7072")
    assert code == 2 and "bukt tokens new" in err and out == ""


def test_read_given_takes_the_first_line(tmp_path):
    token = new_token()
    path = tmp_path / "t"
    path.write_text(f"{token}\nsomething else\n")
    assert read_given(str(path)) == token


def test_check_refuses_a_node_that_does_not_answer(capsys, token_file, tmp_path):
    with socket.socket() as s:           # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "nc.yml"
    code, text, err = run(capsys, "cluster", "config", "-b", "kv", "--token-file",
                          token_file[1], "--node", f"a=127.0.0.1:{port}", "--check",
                          "-o", str(out))
    assert code == 1 and "node a: cannot reach" in err and not out.exists()


def test_locate_names_the_node_of_each_key(capsys):
    nodes = ["--node", "a=10.0.0.1:7072", "--node", "b=10.0.0.2:7072"]
    code, out, _ = run(capsys, "cluster", "locate", *nodes, "k1", "user:{7}:x",
                       "--hash-tag", "{}", "--json")
    assert code == 0
    ring = Continuum(["a", "b"])
    assert yaml.safe_load(out) == {"k1": ring.server("k1"), "user:{7}:x": ring.server("7")}


def test_tokens_new_prints_a_fresh_token(capsys):
    code, out, _ = run(capsys, "tokens", "new")
    assert code == 0 and check_given(out.strip())
    assert run(capsys, "tokens", "new")[1] != out
