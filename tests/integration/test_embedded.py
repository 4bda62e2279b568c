"""Embedded use: a segment made with bukt.create and used with no writer process keeps
its changes in the table only (no ring to fill), and a writer started on it later
adopts it: a base file of what it holds, then the ring as usual. A writer that claimed
the segment and died still makes writes wait for ring room and then fail."""
import os
import subprocess
import sys
import time

import pytest

import bukt
from bukt.writer import datadir
from bukt._core import writer_claimed
from bukt.errors import RingFull
from writer_harness import ROOT, instance, read_acks, wait_for  # noqa: F401

pytestmark = pytest.mark.slow

N = 100_000


def _value(i):
    return b"%06d-" % i + b"v" * 93             # 100 bytes


# A producer that writes unique keys with a short pause between them (so that the test
# is about the claim, not about filling memory), appending "key value" to its file
# after each set returns.
PRODUCER = """
import os, sys, time, bukt
name, ack, prefix = sys.argv[1:4]
b = bukt.attach(name).bucket("b")
fd = os.open(ack, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
i = 0
while True:
    key, value = b"%s-%d" % (prefix.encode(), i), b"%d" % (i * 7)
    b.set(key, value)
    os.write(fd, key + b" " + value + b"\\n")
    i += 1
    time.sleep(0.0005)
"""


def _producer(inst, ack, prefix):
    p = subprocess.Popen([sys.executable, "-c", PRODUCER, inst.name, str(ack), prefix],
                         env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT,
                         stderr=open(str(ack) + ".err", "wb"))
    inst.procs.append(p)
    return p


def _cold_restart(inst):
    """The segment removed, a writer recovers from the data directory alone."""
    inst.unlink_segment()
    return inst.start()


def test_embedded_segment_takes_100k_sets_and_a_writer_adopts_it(instance):
    instance.configure(fsync="everysec", memory="64MiB")
    s = bukt.create(instance.name, size="64MiB")
    s.create_bucket("c")
    b = s.bucket("c")
    for i in range(N):                          # before: RingFull after 26,212
        b.set(b"key-%06d" % i, _value(i))
    s.create_bucket("scratch", persist=False)
    s.bucket("scratch").set(b"x", b"y")
    assert writer_claimed(s) == 0
    tail, head, _ = s.ring_position()
    assert head == tail                         # nothing queued for a writer

    w = instance.start()                        # adopts the segment, does not replace it
    assert "adopted" in instance.log()
    wait_for(lambda: writer_claimed(s) == 2, timeout=60, what="the base file")
    m = datadir.read_manifest(instance.data_dir)
    assert m.base is not None
    assert b.get(b"key-000000") == _value(0)    # the same table, still mapped
    for i in range(N, N + 100):                 # now through the ring and the log
        b.set(b"key-%06d" % i, _value(i))
    s.close()
    assert instance.stop(w) == 0

    w = _cold_restart(instance)
    s = instance.attach()
    b = s.bucket("c")
    missing = [i for i in range(N + 100) if b.get(b"key-%06d" % i) != _value(i)]
    assert missing == []
    assert "scratch" in [t[3] for t in s.bucket_table()]
    assert s.check() == []
    s.close()
    instance.stop(w)


def test_producers_writing_while_the_writer_claims_lose_nothing(instance, tmp_path):
    """Four processes write without a break while a writer adopts the segment: every
    write acknowledged before, during or after the claim is in the base file or the
    log (the claim passes every stripe lock: no write is in neither)."""
    instance.configure(fsync="everysec", memory="64MiB")
    s = bukt.create(instance.name, size="64MiB")
    s.create_bucket("b", eviction="none")      # nothing leaves but by the writer's loss
    acks = [tmp_path / f"acks-{i}" for i in range(4)]
    clients = [_producer(instance, a, f"p{i}") for i, a in enumerate(acks)]
    wait_for(lambda: all(len(read_acks(a)) > 500 for a in acks), timeout=60,
             what="writes before the writer starts")
    w = instance.start()
    wait_for(lambda: writer_claimed(s) == 2, timeout=60, what="the base file")
    at_base = sum(len(read_acks(a)) for a in acks)
    wait_for(lambda: sum(len(read_acks(a)) for a in acks) > at_base + 2000, timeout=60,
             what="writes after the base file")
    for c in clients:
        c.kill()
        c.wait(10)
    acked = {}
    for a in acks:
        for key, value in read_acks(a):
            acked[key] = value
        with open(str(a) + ".err") as f:
            err = f.read()
        assert "Error" not in err, err          # no write failed
    assert s.check() == []
    s.close()
    assert instance.stop(w) == 0

    w = _cold_restart(instance)
    s = instance.attach()
    b = s.bucket("b")
    lost = [k for k, v in acked.items() if b.get(k) != v]
    print(f"\nclaim under load: {len(acked)} acknowledged writes, {len(lost)} lost")
    assert lost == []
    s.close()
    instance.stop(w)


def test_a_dead_writers_segment_still_fills_its_ring_and_refuses(instance):
    """Claimed, then the writer is killed: writes wait for ring room and fail with
    RingFull, as before (the next writer logs what waits); nothing goes unlogged."""
    instance.configure(fsync="everysec", limits={"ring_size": "256KiB", "ring_wait_ms": 100,
                                                     "max_value": "64KiB"})
    w = instance.start()
    s = instance.attach()
    s.create_bucket("b")
    b = s.bucket("b")
    instance.kill(w)
    assert writer_claimed(s) == 2
    done = 0
    with pytest.raises(RingFull):
        for i in range(10_000):                 # 256 KiB of ring: ~1,500 records
            b.set(b"k%d" % i, b"v" * 100)
            done += 1
    assert 0 < done < 10_000
    with pytest.raises(RingFull):
        s.create_bucket("other", persist=False)
    s.close()
    w = instance.start()                        # warm: logs what waited
    s = instance.attach()
    b = s.bucket("b")
    b.set(b"after", b"1")
    s.close()
    assert instance.stop(w) == 0
    w = _cold_restart(instance)
    s = instance.attach()
    b = s.bucket("b")
    assert [i for i in range(done) if b.get(b"k%d" % i) != b"v" * 100] == []
    assert b.get(b"after") == b"1"
    s.close()
    instance.stop(w)


def test_a_writer_will_not_replace_unlogged_data_with_another_data_dir(instance):
    """A data directory that holds records and an unclaimed segment that holds
    buckets: the writer refuses to start rather than lose either."""
    instance.configure(fsync="everysec")
    w = instance.start()
    s = instance.attach()
    s.create_bucket("logged").set(b"k", b"v")
    s.close()
    assert instance.stop(w) == 0
    instance.unlink_segment()
    s = bukt.create(instance.name, size="32MiB")
    s.create_bucket("embedded").set(b"k", b"w")
    code, out = instance.run_to_exit()
    assert code == 2 and "no writer process has logged" in out
    assert s.bucket("embedded").get(b"k") == b"w"   # untouched
    s.unlink()
    s.close()
    w = instance.start()                        # the segment removed: cold, as before
    s = instance.attach()
    assert s.bucket("logged").get(b"k") == b"v"
    s.close()
    instance.stop(w)
