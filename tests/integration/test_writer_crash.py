"""Crash durability of the writer process: kill -9 at random moments under
`fsync: always`, cold and warm restarts, a writer killed under load, ring backpressure."""
import random
import time

import pytest

from bukt.errors import RingFull
from writer_harness import instance, read_acks, wait_for  # noqa: F401

pytestmark = pytest.mark.slow
CLIENTS = 3


def _acked(paths):
    out = {}
    for p in paths:
        for parts in read_acks(p):
            if len(parts) == 2:
                out[parts[0]] = parts[1]
    return out


def _missing(inst, acked):
    s = inst.attach()
    try:
        b = s.bucket("b")
        return {k: v for k, v in acked.items() if b.get(k) != v}
    finally:
        s.close()


def _crash_rounds(inst, tmp_path, rounds, warm):
    rnd = random.Random(7 if warm else 3)
    writer = inst.start()
    s = inst.attach()
    s.create_bucket("b")
    s.close()
    all_paths = []
    for r in range(rounds):
        paths = [tmp_path / f"ack-{r}-{i}" for i in range(CLIENTS)]
        clients = [inst.client(p, f"r{r}c{i}", seed=rnd.getrandbits(32))
                   for i, p in enumerate(paths)]
        wait_for(lambda: all(read_acks(p) for p in paths), what="clients writing")
        time.sleep(rnd.random() * 0.4)
        victims = [writer] + clients
        rnd.shuffle(victims)
        for p in victims:                   # all die within a millisecond or so
            p.kill()
        for p in victims:
            p.wait(10)
        if not warm:
            inst.unlink_segment()
        all_paths += paths
        writer = inst.start()
        kind = "warm" if warm else "cold"
        assert f"{kind} start" in inst.log(), inst.log()
        acked = _acked(all_paths)
        assert len(_acked(paths)) > 0, f"round {r}: no client got an acknowledgement"
        missing = _missing(inst, acked)
        assert not missing, f"round {r}: {len(missing)} of {len(acked)} acknowledged " \
                            f"writes lost, e.g. {list(missing.items())[:3]}"
        s = inst.attach()
        try:
            assert s.check() == []
        finally:
            s.close()
    return writer, all_paths


def test_kill9_writer_and_clients_then_cold_recovery_keeps_every_acknowledged_write(
        instance, tmp_path):
    writer, paths = _crash_rounds(instance, tmp_path, rounds=20, warm=False)
    assert instance.stop(writer) == 0


def test_kill9_with_the_segment_surviving_warm_restart_equals_cold_recovery(instance, tmp_path):
    writer, paths = _crash_rounds(instance, tmp_path, rounds=10, warm=True)
    # The warm segment, once the writer has drained and stopped, holds exactly what a
    # cold recovery of the same files rebuilds: values, expiries, flags and versions.
    assert instance.stop(writer) == 0
    warm = instance.contents()
    writer = instance.start(cold=True)
    assert "cold start" in instance.log()
    cold = instance.contents()
    assert warm == cold
    assert len(cold) >= len(_acked(paths))
    assert instance.stop(writer) == 0


def test_writer_killed_and_restarted_under_load_loses_nothing(instance, tmp_path):
    """Clients keep writing while the writer is killed and restarted (warm) three times;
    writes during the gaps wait in the ring (or fail with a clear error, and then are not
    acknowledged). At the end a cold recovery from the files has every acknowledged write."""
    instance.configure(fsync="everysec")
    writer = instance.start()
    s = instance.attach()
    # eviction "none": the clients write more than the segment holds, and an lru
    # bucket would rightly evict acknowledged keys; a full one refuses instead
    s.create_bucket("b", eviction="none")
    s.close()
    paths = [tmp_path / f"ack-{i}" for i in range(CLIENTS)]
    clients = [instance.client(p, f"c{i}", seed=i) for i, p in enumerate(paths)]
    wait_for(lambda: all(read_acks(p) for p in paths), what="clients writing")
    for _ in range(3):
        time.sleep(0.4)
        writer.kill()
        writer.wait()
        time.sleep(0.2)                     # the ring buffers meanwhile
        writer = instance.start()
        assert "warm start" in instance.log()
    time.sleep(0.3)
    for c in clients:
        c.kill()
        c.wait()
    assert instance.stop(writer) == 0       # drains the ring and fsyncs
    instance.unlink_segment()
    writer = instance.start()
    acked = _acked(paths)
    assert len(acked) > 100
    assert not _missing(instance, acked)
    assert instance.stop(writer) == 0


def test_ring_full_while_the_writer_is_down_gives_ring_full(instance, tmp_path):
    instance.configure(fsync="everysec", limits={"ring_size": "256KiB", "ring_wait_ms": 200,
                                                 "max_value": "64KiB"})
    writer = instance.start()
    s = instance.attach()
    b = s.create_bucket("b")
    b.set(b"before", b"x")
    writer.kill()
    writer.wait()
    value = b"v" * 1000
    t0 = time.monotonic()
    with pytest.raises(RingFull, match="writer process is down or behind"):
        for i in range(1000):
            b.set(b"k%d" % i, value)
    assert time.monotonic() - t0 < 5
    written = i
    writer = instance.start()               # warm: drains what the ring held
    wait_for(lambda: s.ring_position()[0] == s.ring_position()[1], what="ring drained")
    b.set(b"after", b"y")
    assert instance.stop(writer) == 0
    s.close()
    instance.unlink_segment()
    writer = instance.start()
    s = instance.attach()
    b = s.bucket("b")
    assert b.get(b"before") == b"x" and b.get(b"after") == b"y"
    assert all(b.get(b"k%d" % i) == value for i in range(written))
    assert b.get(b"k%d" % written) is None      # the refused write was not applied
    s.close()
    assert instance.stop(writer) == 0
