"""Transactions across processes: mover processes transfer units between accounts
with Bucket.atomic (two or three incrs, some under watched versions, as MULTI/EXEC
with WATCH does), reader processes sum every account with Bucket.mget_consistent,
and a filler process inserts keys into another bucket so that the index splits
stripes under them (GROWTH). No reader ever sees a sum other than the total: no
transaction is seen half applied. The table ends sound (check() == []).
"""
import multiprocessing as mp
import random
import traceback

import pytest
from mp_common import join_all, time_limit, unique_name, unlink_segment

import bukt

ctx = mp.get_context("fork")

ACCOUNTS = 64
START = 1000
TRANSFERS = 20000               # per mover
FILL = 120_000                  # keys the filler inserts (the index splits meanwhile)


def keys():
    return [f"acct:{i}" for i in range(ACCOUNTS)]


def mover(name, seed, out):
    try:
        rng = random.Random(seed)
        b = bukt.attach(name).bucket("acct")
        ks = keys()
        conflicts = 0
        for t in range(TRANSFERS):
            n = rng.choice((2, 2, 3))
            picked = rng.sample(ks, n)
            x = rng.randint(1, 50)
            if t % 4 == 3:
                # WATCH, read, MULTI/EXEC: move half of the first account's balance
                entries = [b.get_entry(k) for k in picked[:2]]
                watched = {k: e[1] for k, e in zip(picked[:2], entries)}
                x = int(entries[0][0]) // 2
                res = b.atomic([("set", (picked[0], str(int(entries[0][0]) - x).encode())),
                                ("set", (picked[1], str(int(entries[1][0]) + x).encode()))],
                               watched=watched)
                if res is None:
                    conflicts += 1
                continue
            ops = [("incr", (picked[0], -x * (n - 1)))]
            ops += [("incr", (k, x)) for k in picked[1:]]
            res = b.atomic(ops)
            assert not any(isinstance(r, Exception) for r in res), res
        out.put(("mover", seed, conflicts))
    except BaseException:
        out.put(("error", seed, traceback.format_exc()))


def reader(name, rid, stop, out):
    try:
        b = bukt.attach(name).bucket("acct")
        ks = keys()
        reads = bad = 0
        first_bad = None
        while not stop.is_set() or reads == 0:
            vals = b.mget_consistent(ks)
            total = sum(int(v) for v in vals)
            reads += 1
            if total != ACCOUNTS * START:
                bad += 1
                first_bad = first_bad or total
        out.put(("reader", rid, reads, bad, first_bad))
    except BaseException:
        out.put(("error", rid, traceback.format_exc()))


def filler(name, out):
    try:
        b = bukt.attach(name).bucket("fill")
        for i in range(FILL):
            b.set(f"f{i}", b"x" * 16)
        out.put(("filler", 0))
    except BaseException:
        out.put(("error", "filler", traceback.format_exc()))


@pytest.mark.slow
def test_transfers_keep_the_sum_for_every_consistent_reader():
    name = unique_name("mpatomic")
    store = bukt.create(name, size="64MiB")
    procs = []
    try:
        acct = store.create_bucket("acct", persist=False)
        store.create_bucket("fill", persist=False)
        for k in keys():
            acct.set(k, str(START).encode())
        stripes0 = store.stats()["index_stripes"]
        out, stop = ctx.Queue(), ctx.Event()
        movers = [ctx.Process(target=mover, args=(name, seed, out)) for seed in range(3)]
        readers = [ctx.Process(target=reader, args=(name, r, stop, out)) for r in range(2)]
        fill = ctx.Process(target=filler, args=(name, out))
        procs = movers + readers + [fill]
        with time_limit(600, "transfers"):
            for p in procs:
                p.start()
            results = [out.get() for _ in movers + [fill]]
            stop.set()
            results += [out.get() for _ in readers]
            join_all(procs, 60)
        errors = [r for r in results if r[0] == "error"]
        assert not errors, errors[0][2]
        seen = [r for r in results if r[0] == "reader"]
        assert all(r[2] > 0 for r in seen)
        print("reads, bad:", [(r[2], r[3]) for r in seen], "conflicts:",
              [r[2] for r in results if r[0] == "mover"])
        assert [r[3] for r in seen] == [0, 0], f"readers saw half a transaction: {seen}"
        assert sum(int(v) for v in acct.mget(keys())) == ACCOUNTS * START
        assert store.stats()["index_stripes"] > stripes0      # splits happened meanwhile
        assert store.check() == []
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        store.close()
        unlink_segment(name)
