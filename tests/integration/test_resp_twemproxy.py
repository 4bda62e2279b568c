"""twemproxy (nutcracker) in front of two `bukt serve` instances, with `redis: true`,
`redis_auth` and ketama: keys land on both, each on the node ketama names, and MGET and
DEL that span both work.

The hash is md5: with nutcracker's fnv1a_64 (its default) ketama put all 300 keys on
one node, because that hash moves only the low bits for the last bytes of a key
(bukt/cluster/ketama.py)."""
import hashlib
import subprocess
import time

import pytest

import bukt
from bukt.cluster.ketama import Continuum
from resp_tools import need_tool
from serve_harness import Service, unused_port

redis = pytest.importorskip("redis")

TOKEN = "bkt_shared-token-of-both-instances-for-the-proxy"
KEYS = 300
HASH = "md5"


def test_twemproxy_spreads_keys_over_two_instances(tmp_path):
    nutcracker = need_tool("nutcracker")
    for i in range(2):
        (tmp_path / f"b{i}").mkdir()
    services = [Service(tmp_path / f"b{i}") for i in range(2)]
    proxy = None
    try:
        for svc in services:
            svc.start()
            svc.create_bucket("kv")
            # The proxy sends one password to every server: the same token on both
            # (a store call: the writer logs it like any token).
            st = bukt.attach(svc.name)
            try:
                st.add_token("kv", hashlib.sha256(TOKEN.encode()).digest(), 7)
            finally:
                st.close()
        port = unused_port()
        conf = tmp_path / "nutcracker.yml"
        conf.write_text(
            "bukt:\n"
            f"  listen: 127.0.0.1:{port}\n"
            f"  hash: {HASH}\n  distribution: ketama\n  redis: true\n"
            f"  redis_auth: {TOKEN}\n"
            "  auto_eject_hosts: false\n  timeout: 5000\n  servers:\n"
            + "".join(f"   - 127.0.0.1:{svc.resp_port}:1 b{i}\n"
                      for i, svc in enumerate(services)))
        log = open(tmp_path / "nutcracker.log", "wb")
        proxy = subprocess.Popen([nutcracker, "-c", str(conf), "-s", str(unused_port()),
                                  "-a", "127.0.0.1", "-o", str(tmp_path / "nc.log")],
                                 stdout=log, stderr=subprocess.STDOUT)
        # (no CLIENT SETINFO: twemproxy refuses CLIENT)
        r = redis.Redis("127.0.0.1", port, password=TOKEN, protocol=2, socket_timeout=10,
                        lib_name=None, lib_version=None)
        deadline = time.monotonic() + 20
        while True:
            try:
                r.set("probe", "1")
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proxy.poll() is not None:
                    raise
                time.sleep(0.1)
        r.delete("probe")
        for i in range(KEYS):
            assert r.set(f"key:{i}", f"v{i}") is True
        direct = [redis.Redis("127.0.0.1", svc.resp_port, username="kv", password=TOKEN,
                              protocol=2) for svc in services]
        placed = [{k.decode() for k in d.keys("*")} for d in direct]
        ring = Continuum(["b0", "b1"])
        assert placed == [{f"key:{i}" for i in range(KEYS) if ring.server(f"key:{i}") == n}
                          for n in ("b0", "b1")]
        assert min(len(p) for p in placed) > KEYS // 10, [len(p) for p in placed]
        keys = [f"key:{i}" for i in range(KEYS)]
        assert r.mget(keys) == [f"v{i}".encode() for i in range(KEYS)]
        assert r.incr("counter") == 1 and r.get("counter") == b"1"
        assert r.delete(*keys[:100]) == 100
        assert r.mget(keys[:100]) == [None] * 100
        assert sum(d.dbsize() for d in direct) == KEYS - 100 + 1
        for d in direct:
            d.close()
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(10)
        for svc in services:
            if svc.proc is not None and svc.proc.poll() is None:
                svc.stop()
            svc.cleanup()
