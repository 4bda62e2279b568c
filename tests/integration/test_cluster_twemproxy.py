"""One bucket over three `bukt serve` nodes behind a real nutcracker, configured by
`bukt cluster config`: every key lands on the node ketama names (computed here without
the proxy), MGET and DEL span the nodes, a killed node is ejected while the others
serve, and once restarted warm its keys are back."""
import os
import signal
import subprocess

import pytest

import bukt
from bukt.cluster.ketama import Continuum
from resp_tools import need_tool
from serve_harness import PY, ROOT, Service, unused_port, wait_for

redis = pytest.importorskip("redis")

KEYS = 10_000
NAMES = ("n0", "n1", "n2")
BATCH = 500


def bukt_cli(*args, stdin=None, cwd=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUKT_")}
    env["PYTHONPATH"] = ROOT
    r = subprocess.run([PY, "-m", "bukt", *args], input=stdin, capture_output=True,
                       text=True, env=env, cwd=cwd, timeout=60)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def proxy_client(port, token):
    # (no CLIENT SETINFO: twemproxy refuses CLIENT)
    return redis.Redis("127.0.0.1", port, password=token, protocol=2, socket_timeout=10,
                       lib_name=None, lib_version=None)


def start_proxy(nutcracker, conf, tmp_path, port, token):
    proc = subprocess.Popen([nutcracker, "-c", str(conf), "-s", str(unused_port()),
                             "-a", "127.0.0.1", "-o", str(tmp_path / "nutcracker.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    r = proxy_client(port, token)

    def up():
        if proc.poll() is not None:
            raise AssertionError(f"nutcracker exited {proc.returncode}")
        try:
            return r.ping()
        except redis.ConnectionError:
            return False
    wait_for(up, timeout=30, what="nutcracker to answer")
    return proc, r


def set_all(r, items):
    items = list(items)
    for i in range(0, len(items), BATCH):
        with r.pipeline(transaction=False) as p:
            for k, v in items[i:i + BATCH]:
                p.set(k, v)
            assert all(x is True for x in p.execute())


def mget_all(r, keys):
    out = []
    for i in range(0, len(keys), BATCH):
        out += r.mget(keys[i:i + BATCH])
    return out


def node_keys(svc, token):
    d = redis.Redis("127.0.0.1", svc.resp_port, username="kv", password=token, protocol=2)
    try:
        return {k.decode() for k in d.scan_iter(count=1000)}
    finally:
        d.close()


@pytest.mark.slow
def test_bucket_over_three_nodes_behind_nutcracker(tmp_path):
    nutcracker = need_tool("nutcracker")
    for name in NAMES:
        (tmp_path / name).mkdir()
    nodes = [Service(tmp_path / name) for name in NAMES]
    proxy = None
    try:
        for svc in nodes:
            svc.start()
        # One token for the bucket on every node: made once, registered on each from a
        # file (locally on n0 and n2, over HTTP with the admin token on n1, from stdin
        # on n2), never on a command line.
        token = bukt_cli("tokens", "new").strip()
        token_file = tmp_path / "kv.token"
        token_file.write_text(token + "\n")
        bukt_cli("buckets", "create", "kv", "--config", nodes[0].conf,
                 "--token-file", str(token_file))
        bukt_cli("buckets", "create", "kv", "--url", f"http://{nodes[1].http_bind}",
                 "--token", nodes[1].admin_token(), "--token-file", str(token_file))
        bukt_cli("buckets", "create", "kv", "--config", nodes[2].conf,
                 "--token-file", "-", stdin=token + "\n")

        port = unused_port()
        conf = tmp_path / "nutcracker.yml"
        bukt_cli("cluster", "config", "--listen", f"127.0.0.1:{port}", "-b", "kv",
                 "--token-file", str(token_file), "-o", str(conf), "--check",
                 "--failure-limit", "2", "--retry-ms", "1500",
                 # a node slowed by a loaded test host must not time out and be ejected
                 # (a dead one is ejected by refused connections, not by the timeout)
                 "--timeout-ms", "30000",
                 *(a for name, svc in zip(NAMES, nodes)
                   for a in ("--node", f"{name}=127.0.0.1:{svc.resp_port}")))
        assert os.stat(conf).st_mode & 0o777 == 0o600
        proxy, r = start_proxy(nutcracker, conf, tmp_path, port, token)

        keys = [f"key:{i}" for i in range(KEYS)]
        values = {k: f"value-{k}-{'x' * (i % 50)}".encode() for i, k in enumerate(keys)}
        set_all(r, values.items())

        # Each key on the node ketama (md5, 160 points per node) says, and only there.
        ring = Continuum(NAMES)
        expected = {name: set() for name in NAMES}
        for k in keys:
            expected[ring.server(k)].add(k)
        placed = {name: node_keys(svc, token) for name, svc in zip(NAMES, nodes)}
        assert placed == expected
        shares = ring.shares()
        for name in NAMES:          # and so in ketama's proportions, roughly a third each
            assert abs(len(placed[name]) / KEYS - shares[name]) < 0.03, (name, shares)
            assert len(placed[name]) > KEYS // 5

        # MGET and DEL across all three nodes (nutcracker splits and merges them).
        assert mget_all(r, keys) == [values[k] for k in keys]
        gone = keys[:1000]
        assert r.delete(*gone) == 1000
        assert r.mget(gone) == [None] * 1000
        keys, gone_set = keys[1000:], set(gone)
        for name in NAMES:
            expected[name] -= gone_set
        assert {name: node_keys(svc, token) for name, svc in zip(NAMES, nodes)} == expected

        # n1 killed (SIGKILL, the whole service): nutcracker ejects it, the others serve.
        victim = nodes[1]
        os.killpg(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(10)
        probe = sorted(expected["n1"])[0]

        def ejected():
            try:
                return r.get(probe) is None      # routed to a live node, which lacks it
            except (redis.ConnectionError, redis.ResponseError, redis.TimeoutError):
                return False                     # still on the ring: a failure counted
        wait_for(ejected, timeout=60, what="nutcracker to eject the killed node")
        live = [k for k in keys if k not in expected["n1"]]
        assert mget_all(r, live) == [values[k] for k in live]
        survivors = Continuum(("n0", "n2"))
        during = {f"during:{i}": b"d" for i in range(300)}
        for k, v in during.items():     # a client retries (nutcracker does not): the ring
            wait_for(lambda: _set_or_false(r, k, v), timeout=60,   # may take n1 back to
                     what=f"SET {k} to succeed")                   # try it, and eject it

        for name in ("n0", "n2"):
            on_node = node_keys(nodes[NAMES.index(name)], token)
            assert {k for k in during if survivors.server(k) == name} <= on_node

        # n1 back, warm (its segment survived the kill): once nutcracker retries it,
        # every key it held reads back through the proxy.
        victim.start()
        assert "warm start" in victim.log()
        wait_for(lambda: _get_or_none(r, probe) == values[probe], timeout=60,
                 what="nutcracker to take the restarted node back")
        assert node_keys(victim, token) == expected["n1"]
        assert mget_all(r, keys) == [values[k] for k in keys]
        # What ejection costs (docs/scale-out.md): a key written while its node was out
        # went to another node, and the returning node's ring hides it.
        moved = [k for k in during if ring.server(k) == "n1"]
        assert moved and r.mget(moved) == [None] * len(moved)

        r.close()
        for svc in nodes:
            st = bukt.attach(svc.name)
            try:
                assert st.check() == []
            finally:
                st.close()
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(10)
        for svc in nodes:
            if svc.proc is not None and svc.proc.poll() is None:
                svc.stop()
            svc.cleanup()


def _set_or_false(r, key, value):
    try:
        return r.set(key, value)
    except (redis.ConnectionError, redis.ResponseError, redis.TimeoutError):
        return False


def _get_or_none(r, key):
    try:
        return r.get(key)
    except (redis.ConnectionError, redis.ResponseError, redis.TimeoutError):
        return None

