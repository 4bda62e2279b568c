"""MULTI/EXEC under concurrency, over real workers and processes: EXECs moving units
between keys keep the sum constant, WATCH-based transfers lose no update, and (once the
core applies a transaction under its stripes' locks, Bucket.atomic) no reader sees an
EXEC half applied. Each ends with the table's check()."""
import multiprocessing as mp
import random

import pytest

from tcp_harness import Server, store

redis = pytest.importorskip("redis")

KEYS = [f"acct:{i}" for i in range(8)]
START = 1000


def _client(port):
    return redis.Redis("127.0.0.1", port, username="b", password="rw", protocol=2,
                       socket_timeout=30)


def _mover(port, seed, n, watch, out):
    r = _client(port)
    rng = random.Random(seed)
    done = 0
    for _ in range(n):
        a, b = rng.sample(KEYS, 2)
        units = rng.randint(1, 5)
        if watch:
            def move(p):
                va = int(p.get(a))
                vb = int(p.get(b))
                p.multi()
                p.set(a, va - units)
                p.set(b, vb + units)
            r.transaction(move, a, b)
        else:
            p = r.pipeline()  # several moves in one EXEC: a wider window to see half of
            for _ in range(4):
                a, b = rng.sample(KEYS, 2)
                p.decrby(a, units).incrby(b, units)
            p.execute()
        done += 1
    out.put(done)


def _reader(port, stop, out):
    r = _client(port)
    seen, bad = 0, 0
    while not stop.is_set():
        p = r.pipeline()
        for k in KEYS:
            p.get(k)
        total = sum(int(v) for v in p.execute())
        seen += 1
        bad += total != START * len(KEYS)
    out.put((seen, bad))


def _run(watch, readers):
    with store(np={"persist": False}) as (st, name):
        import hashlib
        st.add_token("np", hashlib.sha256(b"np").digest(), 3)
        with Server(name, workers=2) as srv:
            r = _client(srv.resp_port)
            r.mset({k: START for k in KEYS})
            ctx = mp.get_context("fork")
            out, rout, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
            rs = [ctx.Process(target=_reader, args=(srv.resp_port, stop, rout))
                  for _ in range(readers)]
            ms = [ctx.Process(target=_mover, args=(srv.resp_port, i, 300, watch, out))
                  for i in range(3)]
            for p in rs + ms:
                p.start()
            moved = [out.get(timeout=300) for _ in ms]
            stop.set()
            reads = [rout.get(timeout=60) for _ in rs]
            for p in rs + ms:
                p.join(30)
            assert moved == [300] * 3
            assert sum(int(v) for v in r.mget(KEYS)) == START * len(KEYS)
            assert st.check() == []
            return reads


@pytest.mark.slow
@pytest.mark.parametrize("watch", [False, True], ids=["multi", "watch"])
def test_transfers_keep_the_sum(watch):
    _run(watch, readers=0)


@pytest.mark.slow
def test_no_reader_sees_half_an_exec():
    reads = _run(False, readers=2)
    assert all(seen > 0 for seen, _ in reads)
    assert [bad for _, bad in reads] == [0, 0]
