"""TTL expiry by the writer on an injected clock, and disk errors: a file size limit
(RLIMIT_FSIZE) on the writer, and a failed fsync."""
import os
import resource
import subprocess
import time

import pytest

from bukt.writer import aof
from bukt.writer import datadir
from bukt.errors import BuktError
from writer_harness import PY, ROOT, instance, wait_for  # noqa: F401

pytestmark = pytest.mark.slow


def _now_ms():
    return int(time.time() * 1000)


def _log_records(inst):
    m = datadir.read_manifest(inst.data_dir)
    out = []
    for name in m.logs:
        out += list(aof.read_log(os.path.join(inst.data_dir, name)))
    return out


def test_ttl_keys_expire_unread_memory_returns_and_they_stay_expired(instance, tmp_path):
    clock = tmp_path / "now"
    t0 = _now_ms()
    clock.write_text(str(t0))
    env = {"BUKT_FAKE_TIME_FILE": str(clock)}
    instance.configure(fsync="everysec")
    w = instance.start(env=env)
    s = instance.attach()
    s.set_time(t0)
    b = s.create_bucket("b")
    for i in range(2000):
        b.set(b"t%d" % i, b"x" * 200, ttl=10)
    for i in range(100):
        b.set(b"p%d" % i, b"y")
    for i in range(50):
        b.set(b"late%d" % i, b"z", ttl=30)
    before = s.stats()
    assert before["keys"] == 2150
    time.sleep(0.3)
    assert s.stats()["keys"] == 2150                # the writer's clock has not moved
    clock.write_text(str(t0 + 20_000))
    wait_for(lambda: s.stats()["keys"] == 150, timeout=10, what="active expiry")
    after = s.stats()
    assert after["expirations_total"] >= 2000
    assert after["chunk_bytes"] < before["chunk_bytes"] - 2000 * 200
    assert after["bytes"] < before["bytes"] - 2000 * 200
    wait_for(lambda: sum(r.type == aof.EXPIRE for r in _log_records(instance)) == 2000,
             what="EXPIRE records in the log")
    # `late*` expire while the writer is down: no EXPIRE record, yet they stay gone
    assert instance.stop(w) == 0
    s.close()
    instance.unlink_segment()
    clock.write_text(str(t0 + 60_000))
    w = instance.start(env=env)
    s = instance.attach()
    b = s.bucket("b")
    assert s.stats()["keys"] == 100
    assert b.get(b"p5") == b"y" and b.get(b"t5") is None and b.get(b"late5") is None
    s.close()
    # and with the clock back at the start, the logged expirations still hold
    assert instance.stop(w) == 0
    instance.unlink_segment()
    clock.write_text(str(t0 + 1))
    w = instance.start(env=env)
    s = instance.attach()
    assert s.bucket("b").get(b"t7") is None
    s.close()
    instance.stop(w)


def _set_until_refused(b, prefix, acked, limit=20000):
    for i in range(limit):
        key = b"%s-%d" % (prefix, i)
        try:
            b.set(key, b"v%d" % i)
        except BuktError as e:
            return e
        acked[key] = b"v%d" % i
    raise AssertionError("the writes were never refused")


def test_file_size_limit_refuses_writes_then_recovers_without_losing_any(instance):
    instance.configure(fsync="always")
    w = instance.start()                            # creates the segment without a limit
    assert instance.stop(w) == 0
    limit = 64 << 10

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    w = instance.start(preexec_fn=cap)              # warm: no posix_fallocate under the cap
    s = instance.attach()
    s.durable_timeout = 2.0                         # a slow fsync is not the refusal we want
    b = s.create_bucket("b")
    acked = {}
    err = _set_until_refused(b, b"a", acked)
    assert type(err).__name__ == "WriterDown"
    assert len(acked) > 100
    info = wait_for(lambda: instance.info()["error"] and instance.info(), what="error published")
    assert "File too large" in info["error"] and "nothing of it was kept" in info["error"]
    r = subprocess.run([PY, "-m", "bukt.cli", "status", "--config", instance.conf], cwd=ROOT,
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 1 and "File too large" in r.stdout
    assert "disk error" in instance.log()
    assert w.poll() is None                          # SIGXFSZ did not kill it
    # every acknowledged write is in the log already
    logged = {r.key: r.value for r in _log_records(instance) if r.type == aof.SET}
    assert all(logged.get(k) == v for k, v in acked.items())
    # room again (the limit lifted): the writer retries, clears the error, and the
    # writes that waited in the ring reach the log
    resource.prlimit(w.pid, resource.RLIMIT_FSIZE,
                     (resource.RLIM_INFINITY, resource.RLIM_INFINITY))   # soft limit up
    wait_for(lambda: instance.info()["error"] == "", timeout=10, what="error cleared")
    for i in range(100):
        b.set(b"after-%d" % i, b"w")
        acked[b"after-%d" % i] = b"w"
    s.close()
    assert instance.stop(w) == 0
    instance.unlink_segment()
    w = instance.start()
    s = instance.attach()
    b = s.bucket("b")
    assert {k: b.get(k) for k in acked} == acked
    s.close()
    instance.stop(w)


FAILING_FSYNC = """
import errno, os, sys
# The FAIL_AT'th call of what FAIL_WHAT names fails with EIO: "fdatasync", or "synced"
# (a write through a descriptor opened O_DIRECT | O_DSYNC: aof's THE SYNCED WRITE).
real_sync, real_pwrite, real_open = os.fdatasync, os.pwrite, os.open
calls, synced_fds = [0], set()
def failing():
    calls[0] += 1
    return calls[0] == int(os.environ["FAIL_AT"])
def fdatasync(fd):
    if os.environ["FAIL_WHAT"] == "fdatasync" and failing():
        raise OSError(errno.EIO, "Input/output error")
    return real_sync(fd)
def pwrite(fd, data, offset):
    if fd in synced_fds and os.environ["FAIL_WHAT"] == "synced" and failing():
        raise OSError(errno.EIO, "Input/output error")
    return real_pwrite(fd, data, offset)
def open_(path, flags, *a, **k):
    fd = real_open(path, flags, *a, **k)
    (synced_fds.add if flags & os.O_DIRECT else synced_fds.discard)(fd)
    return fd
os.fdatasync, os.pwrite, os.open = fdatasync, pwrite, open_
from bukt.writer.process import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("fail, prepare, said", [
    # the batch was written and released before its fsync failed: its waiter is
    # acknowledged once the base file that holds it is in
    ("fdatasync", "0", "fsync failed: Input/output error"),
    # with a prepared tail, `always` makes each batch durable with its write instead;
    # a failed write keeps its batch in the ring, so the new log takes it
    ("synced", "4MiB", "synced write of"),
])
def test_failed_fsync_rebuilds_the_files_from_the_table(instance, tmp_path, fail, prepare,
                                                         said):
    """After an fsync (or a synced write) fails the log is not trusted: the writer
    starts a new log and writes a base file from the table. The write waiting on the
    failed batch is acknowledged then, not failed with WriterDown (writes made while
    the error stands may get DiskError), and every acknowledged write is in a cold
    recovery."""
    instance.configure(fsync="always", log_prepare=prepare)
    script = tmp_path / "failing_writer.py"
    script.write_text(FAILING_FSYNC)
    instance.runs += 1
    instance.log_path = str(tmp_path / "writer-failing.log")
    with open(instance.log_path, "wb") as log:
        w = subprocess.Popen([PY, str(script), "--config", instance.conf], cwd=ROOT,
                             stdout=log, stderr=subprocess.STDOUT,
                             env=dict(os.environ, PYTHONPATH=ROOT, FAIL_AT="40",
                                      FAIL_WHAT=fail))
    instance.procs.append(w)
    instance.wait_ready(w)
    s = instance.attach()
    s.durable_timeout = 2.0
    b = s.create_bucket("b")
    acked, refused = {}, []
    deadline = time.monotonic() + 30
    for i in range(200):
        key = b"k%d" % i
        while time.monotonic() < deadline:     # refused while the error stands, then taken
            try:
                b.set(key, b"v%d" % i)
                acked[key] = b"v%d" % i
                break
            except BuktError as e:
                refused.append(type(e).__name__)
                time.sleep(0.01)
    assert len(acked) == 200 and set(refused) <= {"DiskError"}, refused
    wait_for(lambda: "after a failed fsync" in instance.log(), what="a new log")
    wait_for(lambda: "compaction: base-" in instance.log(), what="a base from the table")
    assert said in instance.log() and "Input/output error" in instance.log()
    s.close()
    assert instance.stop(w) == 0
    instance.unlink_segment()
    w = instance.start()
    s = instance.attach()
    b = s.bucket("b")
    assert {k: b.get(k) for k in acked} == acked
    s.close()
    instance.stop(w)
