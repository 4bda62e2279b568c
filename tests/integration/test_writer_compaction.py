"""Compaction while writers carry on: the result equals a reference model, and a kill -9
in the middle of a compaction loses nothing."""
import os
import random
import signal
import subprocess
import time

import pytest

from bukt.writer import datadir
from writer_harness import PY, ROOT, instance, read_acks, wait_for  # noqa: F401

pytestmark = pytest.mark.slow


def _model(paths):
    """What the clients' acknowledged sets and deletes leave, per key (each client
    owns its keys, so its own order is the order that counts)."""
    state = {}
    for p in paths:
        for parts in read_acks(p):
            if parts[0] == b"S":
                state[parts[1]] = parts[2]
            elif parts[0] == b"D":
                state.pop(parts[1], None)
            elif parts[0] == b"E":
                raise AssertionError(f"a client's write failed: {parts}")
    return state


def _bucket_contents(inst):
    return {k: v[0] for (b, k), v in inst.contents().items() if b == "b"}


def test_compaction_during_writes_and_deletes_equals_the_model(instance, tmp_path):
    instance.configure(fsync="everysec",
                       compaction={"min_log_bytes": "64KiB", "ratio": 1.5})
    w = instance.start()
    s = instance.attach()
    s.create_bucket("b")
    s.create_bucket("cache", persist=False)         # its definition survives, not its keys
    s.bucket("cache").set(b"gone", b"after restart")
    s.close()
    paths = []
    # Rounds of three clients, each owning its keys, while `bukt compact` runs again and
    # again, until two compactions have happened (`bukt compact`'s and the automatic
    # threshold's, 64KiB here): a round takes about half a second, which on a loaded
    # machine can pass before the second one starts.
    for first in range(0, 12, 3):
        clients = []
        for i in range(first, first + 3):
            paths.append(tmp_path / f"ack-{i}")
            clients.append(instance.client(paths[-1], f"c{i}", mode="model", seed=i,
                                           extra=(40000,)))
        while any(c.poll() is None for c in clients):
            r = subprocess.run([PY, "-m", "bukt.cli", "compact", "--config", instance.conf,
                                "--wait", "20"], cwd=ROOT, capture_output=True, text=True,
                               env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
            assert r.returncode == 0, r.stdout + r.stderr
        assert all(c.wait() == 0 for c in clients)
        if instance.log().count("compaction: base-") >= 2:
            break
    # (the last may still be writing its base file when the clients end)
    wait_for(lambda: instance.log().count("compaction: base-") >= 2, what="two compactions")
    model = _model(paths)
    assert len(model) > 100
    assert instance.stop(w) == 0
    assert _bucket_contents(instance) == model
    # the same from the files alone
    instance.unlink_segment()
    w = instance.start()
    assert _bucket_contents(instance) == model
    s = instance.attach()
    assert s.bucket_info("cache")["persist"] is False and s.bucket("cache").get(b"gone") is None
    s.close()
    def files_match():
        m = datadir.read_manifest(instance.data_dir)
        on_disk = {n for n in os.listdir(instance.data_dir) if n.endswith((".bkl", ".bkb"))}
        return on_disk == {m.base, *m.logs}
    # old files were removed (the restarted writer may be compacting: a new log exists
    # a moment before MANIFEST lists it, and the old ones a moment after it stops)
    wait_for(files_match, what="the files on disk to be those MANIFEST lists")
    instance.stop(w)


def test_automatic_compaction_when_the_log_outgrows_the_base(instance):
    instance.configure(fsync="no", compaction={"min_log_bytes": "256KiB", "ratio": 2.0})
    w = instance.start()
    s = instance.attach()
    b = s.create_bucket("b")
    for i in range(20000):
        b.set(b"k%d" % (i % 500), b"x" * 50)        # 500 live keys, a long history
    wait_for(lambda: "compaction: base-" in instance.log(), timeout=20,
             what="an automatic compaction")
    s.close()
    assert datadir.read_manifest(instance.data_dir).base
    instance.stop(w)
    instance.unlink_segment()
    w = instance.start()
    s = instance.attach()
    assert s.stats()["keys"] == 500 and s.bucket("b").get(b"k7") == b"x" * 50
    s.close()
    instance.stop(w)


def test_kill9_in_the_middle_of_compaction_loses_nothing(instance, tmp_path):
    instance.configure(fsync="always", memory="96MiB")
    w = instance.start()
    s = instance.attach()
    b = s.create_bucket("b")
    s.sync_wait = False                            # preload fast; then wait once
    for i in range(60000):
        b.set(b"pre-%d" % i, b"%d" % i)
    s.wait_durable(s.last_pos, timeout=30)
    s.close()
    rnd = random.Random(5)
    paths = []
    for r in range(3):
        ps = [tmp_path / f"ack-{r}-{i}" for i in range(2)]
        clients = [instance.client(p, f"r{r}c{i}", seed=rnd.getrandbits(32))
                   for i, p in enumerate(ps)]
        paths += ps
        wait_for(lambda: all(read_acks(p) for p in ps), what="clients writing")
        w.send_signal(signal.SIGUSR1)
        wait_for(lambda: "snapshot covering seq" in instance.log(), what="compaction start")
        time.sleep(rnd.random() * 0.2)
        for p in [w] + clients:
            p.kill()
        for p in [w] + clients:
            p.wait()
        instance.unlink_segment()
        w = instance.start()
        s = instance.attach()
        b = s.bucket("b")
        assert all(b.get(b"pre-%d" % i) == b"%d" % i for i in range(0, 60000, 7))
        assert s.stats()["keys"] >= 60000
        for p in paths:
            for key, value in read_acks(p):
                assert b.get(key) == value, (r, key)
        s.close()
        assert not [n for n in os.listdir(instance.data_dir) if n.endswith(".tmp")]
    instance.stop(w)
