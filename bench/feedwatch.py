"""What a local watcher spends an event, in one process, without the writer or a setter
around it: the CPU cost bench/watch.py's "watchers µs/event" column measures, alone.

    .venv/bin/python bench/feedwatch.py [--watchers 1,10,100] [--events 200000]
                                        [--batch 128] [--rounds 3] [--values] [--aio]

A store and a FeedWriter in this process (bukt/feed.py); batches of `--batch` ring
records (100 B values, keys "key:<n>") are published with the writer's own
publish_ring, and after each batch every one of N watchers of the bucket polls and
reads each event's key and seq (as bench/watch.py's watchers do), in turn, as the
watchers of one process do when an event loop wakes them. Reported: the watchers' CPU
(process time) per event per watcher, in µs, best and median of the rounds, with the
garbage collector as Python sets it (on), and the collections it ran. The publishing
is timed apart and left out. With --aio the watchers are asyncio tasks iterating
`store.awatch` (as bench/watch.py's local watchers), woken by the process's Waker after
each batch: what the event loop costs an event is in the figure too.
"""
import argparse
import asyncio
import contextlib
import gc
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "support"))

import bukt                                      # noqa: E402
from bukt.feed import Feed, FeedWriter, Watcher  # noqa: E402

VALUE = b"v" * 100


@contextlib.contextmanager
def feed_fixture():
    """(store, feed writer, bucket index, generation): a fresh store with bucket "b" and
    its feed in this process, both removed after."""
    name = f"feedwatch-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    store = bukt.create(name, size=16 << 20)
    fw = None
    try:
        store.create_bucket("b")
        idx, gen = next((r[0], r[1]) for r in store.bucket_table() if r[3] == "b")
        fw = FeedWriter(name, 64 << 20, 1024)
        Feed._open.clear()
        yield store, fw, idx, gen
    finally:
        if fw is not None:
            fw.close()
            os.unlink(fw.path)
        store.close()
        store.unlink()


def one_round(n_watchers, n_events, batch, values):
    with feed_fixture() as (store, fw, idx, gen):
        ws = [Watcher(store, "b", values=values) for _ in range(n_watchers)]
        seq, spent, got = 64, 0.0, 0
        gc0 = [s["collections"] for s in gc.get_stats()]
        for start in range(0, n_events, batch):
            recs = []
            for i in range(start, min(n_events, start + batch)):
                seq += 8
                recs.append((seq, 1, idx, gen, b"key:%d" % i, VALUE, 0, seq, 0))
            fw.publish_ring(recs, {})
            t = time.process_time()
            for w in ws:
                for e in w.poll(4096):
                    if e.key.startswith(b"lat:"):
                        pass
                    got += e.seq > 0
            spent += time.process_time() - t
        gcs = [s["collections"] - c for s, c in zip(gc.get_stats(), gc0)]
        assert got == n_events * n_watchers, (got, n_events * n_watchers)
        return spent / got * 1e6, gcs


def one_round_aio(n_watchers, n_events, batch, values):
    with feed_fixture() as (store, fw, idx, gen):

        async def run():
            got = [0]
            caught_up = asyncio.Event()
            want = [0]

            async def watch(w):
                async for e in w:
                    if e.key.startswith(b"lat:"):
                        pass
                    got[0] += e.seq > 0
                    if got[0] == want[0]:
                        caught_up.set()

            ws = [store.awatch("b", values=values) for _ in range(n_watchers)]
            tasks = [asyncio.create_task(watch(w)) for w in ws]
            await asyncio.sleep(0.05)
            seq, publishing = 64, 0.0
            gc0 = [s["collections"] for s in gc.get_stats()]
            t0 = time.process_time()
            for start in range(0, n_events, batch):
                recs = []
                for i in range(start, min(n_events, start + batch)):
                    seq += 8
                    recs.append((seq, 1, idx, gen, b"key:%d" % i, VALUE, 0, seq, 0))
                caught_up.clear()
                want[0] += len(recs) * n_watchers
                t = time.process_time()
                fw.publish_ring(recs, {})
                publishing += time.process_time() - t
                await caught_up.wait()
            spent = time.process_time() - t0 - publishing
            gcs = [s["collections"] - c for s, c in zip(gc.get_stats(), gc0)]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return spent / got[0] * 1e6, gcs

        return asyncio.run(run())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--watchers", default="1,10,100")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--values", action="store_true")
    ap.add_argument("--aio", action="store_true")
    a = ap.parse_args()
    print(f"events {a.events}, batch {a.batch}, values {a.values}, rounds {a.rounds}, "
          f"{'asyncio' if a.aio else 'poll'}")
    one = one_round_aio if a.aio else one_round
    print("| watchers | µs/event best | median | gc collections (gen 0/1/2) a round |")
    print("| ---: | ---: | ---: | --- |")
    for n in [int(x) for x in a.watchers.split(",")]:
        events = max(a.batch, a.events // max(1, n // 10))     # (100 watchers: a tenth)
        res = [one(n, events, a.batch, a.values) for _ in range(a.rounds)]
        us = [r[0] for r in res]
        print(f"| {n} | {min(us):.3f} | {statistics.median(us):.3f} | "
              f"{'/'.join(str(x) for x in res[-1][1])} |", flush=True)


if __name__ == "__main__":
    main()
