"""A cold start replaces the segment while programs stay attached to the old one: they
must move to the new one, and no write they were told succeeded may be missing from it
(cext/store.pxi, RETIREMENT; docs/design.md, Failure model)."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import bukt
from bukt._core import writer_claim
from bukt.errors import SegmentRetired

from names import unique_name
from serve_harness import Service, unused_port, wait_for
from writer_harness import Instance


def _replace(name, old, size="16MiB", buckets=("other", "b")):
    """What a cold start does to the segment /bukt-<name> (whose Store is `old`): a new
    one is built under another name, the old one is retired (nothing drained: no ring
    record here is logged), and the new one is renamed into place. The new one has
    its buckets in another order, so a bucket's slot moves."""
    new = bukt.create(name + ".recovering-test", size=size)
    for b in buckets:
        new.create_bucket(b, persist=False)
    new.bucket("b").set("k", b"new")
    head = old.retire_begin()
    old.retire_finish(head)
    os.rename(f"/dev/shm/bukt-{name}.recovering-test", f"/dev/shm/bukt-{name}")
    return new


@pytest.fixture
def seg():
    name = unique_name("retire")
    old = bukt.create(name, size="16MiB")
    writer_claim(old)       # as a writer does: persisted changes go to the ring
    old.create_bucket("b", persist=False)
    stores = [old]
    yield name, old, stores
    for s in stores:
        s.close()
    for n in (name, name + ".recovering-test"):
        try:
            os.unlink(f"/dev/shm/bukt-{n}")
        except FileNotFoundError:
            pass


def test_the_next_get_and_set_reattach_after_the_segment_is_replaced(seg):
    name, old, stores = seg
    app = bukt.attach(name)
    stores.append(app)
    b = app.bucket("b")                 # resolved in the old segment, held across
    b.set("k", b"old")
    gen = app.generation
    new = _replace(name, old)
    stores.append(new)
    assert b.get("k") == b"new"         # a read moved to the new segment
    assert app.generation == new.generation != gen
    assert app.retired == 0
    b.set("k2", b"v2")
    assert new.bucket("b").get("k2") == b"v2"
    assert old.bucket("b").get("k2") is None
    assert b.incr("n") == 1 and new.bucket("b").get("n") == b"1"
    assert app.check() == [] and new.check() == []


def test_a_set_first_reattaches_too(seg):
    name, old, stores = seg
    app = bukt.attach(name)
    stores.append(app)
    b = app.bucket("b")
    stores.append(_replace(name, old))
    b.set("s", b"1")                    # the first operation after is a write
    assert app.bucket("b").get("s") == b"1"
    assert bukt.attach(name).bucket("b").get("s") == b"1"
    assert app.check() == []


def test_no_successor_within_reattach_wait_is_a_clear_error(seg):
    name, old, stores = seg
    app = bukt.attach(name)
    stores.append(app)
    app.reattach_wait = 0.05
    b = app.bucket("b")
    old.retire_begin()                  # retired, and nothing takes its name
    old.retire_finish(0)
    with pytest.raises(SegmentRetired, match="no new segment"):
        b.get("k")
    with pytest.raises(SegmentRetired):
        b.set("k", b"v")
    assert old.bucket("b").get("k") is None     # nothing applied to the old one


def test_a_write_after_the_mark_is_refused_before_it_changes_anything(seg):
    name, old, stores = seg
    old.create_bucket("p", persist=True)
    app = bukt.attach(name)
    stores.append(app)
    app.follow = False                  # stays on the old segment: the write's own path
    old.retire_begin()
    with pytest.raises(SegmentRetired, match="not applied"):
        app.bucket("p").set("k", b"v")
    with pytest.raises(SegmentRetired, match="not applied"):
        app.bucket("p").incr("n")
    assert old.bucket("p").get("k") is None and old.bucket("p").get("n") is None
    assert old.check() == []


def test_a_committed_write_succeeds_only_below_the_drained_mark(seg):
    name, old, stores = seg
    old.create_bucket("p", persist=True)
    app = bukt.attach(name)
    stores.append(app)
    app.sync_wait = False               # the write returns; its durability is asked below
    app.bucket("p").set("saved", b"1")
    saved = app.last_pos
    app.bucket("p").set("lost", b"1")
    lost = app.last_pos
    old.retire_begin()
    old.retire_finish(saved)            # the writer logged the first record only
    assert app.wait_durable(saved, timeout=1)
    with pytest.raises(SegmentRetired, match="is lost"):
        app.wait_durable(lost, timeout=1)


@pytest.mark.slow
@pytest.mark.parametrize("fsync", ["everysec", "always"])
def test_writes_made_while_the_writer_is_down_survive_its_cold_start(tmp_path, fsync):
    """The writer stops; a program writes on into the ring (everysec: acknowledged at
    once); `bukt writer --cold` retires the segment, logs those records first and
    builds the new one from the log; the program's next call moves there."""
    inst = Instance(tmp_path, fsync=fsync)
    try:
        w = inst.start()
        app = bukt.attach(inst.name)
        app.create_bucket("b")
        b = app.bucket("b")
        b.set("before", b"1")
        assert inst.stop(w) == 0
        gen = app.generation
        app.sync_wait = False           # always: nobody flushes while the writer is down
        for i in range(100):
            b.incr("n")
            b.set(f"down{i}", b"x")
        app.sync_wait = True
        inst.start(cold=True)
        assert "retired segment" in inst.log()
        assert b.get("n") == b"100"     # this call moved to the new segment
        assert app.generation != gen
        assert all(b.get(f"down{i}") == b"x" for i in range(100))
        assert b.incr("n") == 101
        fresh = bukt.attach(inst.name)
        assert fresh.bucket("b").get("n") == b"101" and fresh.bucket("b").get("before") == b"1"
        assert fresh.check() == []
        fresh.close()
        app.close()
    finally:
        inst.cleanup()


APP = textwrap.dedent('''
    """A program of the service's host: gunicorn workers that count with incr."""
    import falcon

    import bukt
    from bukt.errors import BuktError

    INSTANCE = {instance!r}
    _store = None


    class Count:
        def on_post(self, req, resp):
            global _store
            if _store is None:
                _store = bukt.attach(INSTANCE)      # in the worker, after the fork
                _store.durable_timeout = 60         # always: outlast the restart
            try:
                resp.text = str(_store.bucket("c").incr("n"))
            except BuktError as e:
                resp.status = falcon.HTTP_503
                resp.text = f"{{type(e).__name__}}: {{e}}"


    app = falcon.App()
    app.add_route("/count", Count())
''')


def _counter(port, acked, errors, stop):
    """POSTs /count until `stop`; appends to acked (200s) and errors (the others)."""
    import http.client
    while not stop.is_set():
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            conn.request("POST", "/count")
            r = conn.getresponse()
            body = r.read()
            conn.close()
        except OSError as e:
            errors.append(repr(e))
            time.sleep(0.01)
            continue
        (acked if r.status == 200 else errors).append(body)


@pytest.mark.slow
@pytest.mark.parametrize("fsync", ["everysec", "always"])
def test_a_gunicorn_app_counts_through_a_cold_restart_of_the_service(tmp_path, fsync):
    """Three gunicorn workers stay attached while the service is stopped and started
    again with `bukt serve --cold`: the count in the new segment is exactly the
    increments the clients were told succeeded (a failed one is not in it)."""
    import threading
    svc = Service(tmp_path, fsync=fsync)
    app = None
    try:
        svc.start()
        s = bukt.attach(svc.name)
        s.create_bucket("c")
        s.close()
        (tmp_path / "countapp.py").write_text(APP.format(instance=svc.name))
        port = unused_port()
        app = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", "3", "--bind",
             f"127.0.0.1:{port}", "--chdir", str(tmp_path), "--timeout", "120",
             "countapp:app"],
            cwd=str(tmp_path), env=svc.env(), stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "gunicorn.log", "wb"))
        acked, errors, stop = [], [], threading.Event()
        clients = [threading.Thread(target=_counter, args=(port, acked, errors, stop))
                   for _ in range(3)]
        for c in clients:
            c.start()
        try:
            wait_for(lambda: len(acked) >= 300, timeout=60, what="300 increments")
            assert svc.stop() == 0
            svc.start(args=["--cold"])
            assert "retired segment" in svc.log()
            restarted = len(acked)
            wait_for(lambda: len(acked) >= restarted + 300, timeout=60,
                     what="300 increments after the restart")
        finally:
            stop.set()
            for c in clients:
                c.join(180)
        fresh = bukt.attach(svc.name)
        try:
            assert int(fresh.bucket("c").get("n")) == len(acked), errors[:5]
            assert fresh.check() == []
        finally:
            fresh.close()
    finally:
        if app is not None:
            app.send_signal(signal.SIGTERM)
            app.wait(30)
        svc.cleanup()
