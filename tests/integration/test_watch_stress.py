"""The change feed under load, against a real `bukt serve`: 4 processes write while 10
watchers (in 2 processes, some slow) read; the feed is small so that slow ones are
overrun (4 x 4000 events of up to 300 bytes, a 1 MiB feed). Each writer sets its own
keys in order, so between two "gone" events a watcher must see every one of a writer's
writes, one after another: any other gap is a silent one. Ends with the table's
check()."""
import multiprocessing as mp
import time

import pytest

import bukt
from serve_harness import Service

WRITERS, PER_WRITER, WATCHERS = 4, 4000, 10


@pytest.fixture
def service(tmp_path):
    s = Service(tmp_path, feed={"size": "1MiB", "max_lag": "64KiB"})
    try:
        s.start()
        yield s
    finally:
        s.cleanup()


def writer(name, w, go):
    store = bukt.attach(name)
    b = store.bucket("b")
    go.wait(30)
    for i in range(PER_WRITER):
        b.set(b"w%d:%06d" % (w, i), b"v" * (i % 200))
    store.close()


def watchers(name, first, n, go, done, out):
    from bukt.feed import Watcher
    store = bukt.attach(name)
    ws = [[Watcher(store, "b"), []] for _ in range(n)]
    go.wait(30)
    rounds, target = 0, None
    feed = ws[0][0].feed
    while True:
        if target is None and done.is_set():
            target = store.ring_position()[1]       # every write's record ends below
        finished = target is not None and feed.published_upto() >= target
        # (read before the round: a round after
        # the writers' last events are published that reads nothing means every
        # watcher is caught up)
        rounds += 1
        got = 0
        for j, pair in enumerate(ws):
            if (first + j) % 3 == 2 and target is None:
                continue                # a slow one: reads once the writers are done,
                                        # long after the feed overwrote its place
            for e in pair[0].poll(100000):
                got += 1
                if e.gone:
                    pair[1].append(("gone", e.oldest))
                    pair[0] = Watcher(store, "b", since=e.oldest)
                    break
                pair[1].append((e.seq, e.key))
        if finished and not got:
            break
        time.sleep(0.001)
    out.put([p[1] for p in ws])
    store.close()


@pytest.mark.slow
def test_no_watcher_sees_a_silent_gap(service):
    service.create_bucket("b")
    ctx = mp.get_context("fork")
    go, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    half = WATCHERS // 2
    wps = [ctx.Process(target=watchers, args=(service.name, k * half, half, go, done, out))
           for k in range(2)]
    for p in wps:
        p.start()
    time.sleep(0.5)                                 # the watchers are watching
    ps = [ctx.Process(target=writer, args=(service.name, w, go)) for w in range(WRITERS)]
    for p in ps:
        p.start()
    go.set()
    for p in ps:
        p.join(300)
        assert p.exitcode == 0
    done.set()
    seen = out.get(timeout=300) + out.get(timeout=300)
    for p in wps:
        p.join(60)
    gones = 0
    for events in seen:
        last = {}                                   # writer -> last index seen
        prev_seq = 0
        for item in events:
            if item[0] == "gone":
                gones += 1
                last = {}                           # anything may be missing before it
                prev_seq = item[1]
                continue
            seq, key = item
            assert seq > prev_seq
            prev_seq = seq
            w, i = int(key[1:key.index(b":")]), int(key[key.index(b":") + 1:])
            if w in last:
                assert i == last[w] + 1, f"writer {w}: {last[w]} then {i}, no gone between"
            last[w] = i
    # and nothing after a watcher's last "gone" is missing: every event any watcher saw
    # past that point, it saw too
    seq_of = {key: item_seq for events in seen for item_seq, key in events
              if item_seq != "gone"}
    for events in seen:
        point = max([item[1] for item in events if item[0] == "gone"], default=0)
        after = {key for item_seq, key in events if item_seq != "gone" and item_seq > point}
        missing = {k for k, sq in seq_of.items() if sq > point} - after
        assert not missing, f"{len(missing)} events after {point} never seen"
    assert gones > 0, "the slow watchers were never overrun: the test proves little"
    store = bukt.attach(service.name)
    assert store.check() == []
    store.close()
