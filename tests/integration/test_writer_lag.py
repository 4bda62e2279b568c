"""`fsync: everysec` when the log cannot be written: writes fail with DiskError once the
log is behind for longer than fsync_lag_limit (or at once, when the writer reports a
disk error), resume when it catches up, and health says why; every acknowledged write
survives a kill -9 and a cold restart. A real full disk (a small tmpfs), and a writer
stopped as one stuck in a hung fsync would be."""
import os
import signal
import subprocess
import time

import pytest

from bukt.errors import BuktError, DiskError
from writer_harness import PY, ROOT, instance, wait_for  # noqa: F401

pytestmark = pytest.mark.slow


def _status(inst):
    r = subprocess.run([PY, "-m", "bukt.cli", "status", "--config", inst.conf], cwd=ROOT,
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    return r.returncode, r.stdout + r.stderr


def _write_until_refused(b, acked, prefix, limit):
    """Sets, one a millisecond, until one raises (returned) or `limit` went through."""
    for i in range(limit):
        key = b"%s-%d" % (prefix, i)
        try:
            b.set(key, b"v%d" % i)
        except BuktError as e:
            return e
        acked[key] = b"v%d" % i
        time.sleep(0.001)
    return None


def _kill_and_cold_restart_holds(inst, w, acked):
    """kill -9 once the writer has logged what the ring held (everysec lets the last
    second go; the point here is what came before), then a cold restart: the lost."""
    wait_for(lambda: (lambda i: i["ring_tail"] == i["ring_head"])(inst.info()),
             timeout=30, what="the ring drained")
    inst.kill(w)
    inst.unlink_segment()
    w = inst.start()
    s = inst.attach()
    b = s.bucket("b")
    lost = [k for k, v in acked.items() if b.get(k) != v]
    s.close()
    inst.stop(w)
    return lost


@pytest.fixture
def small_disk(instance):
    """The data directory on a 4 MiB tmpfs of its own (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    os.makedirs(instance.data_dir)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs",
                    instance.data_dir], check=True)
    yield instance.data_dir
    instance.cleanup()
    subprocess.run(["umount", "-l", instance.data_dir], check=False)


def test_everysec_on_a_full_disk_refuses_then_resumes_and_keeps_every_ack(instance,
                                                                          small_disk):
    instance.configure(fsync="everysec", log_prepare=0, fsync_lag_limit=1)
    w = instance.start()
    s = instance.attach()
    b = s.create_bucket("b")
    acked = {}
    assert _write_until_refused(b, acked, b"before", 200) is None
    filler = os.path.join(small_disk, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError:
        pass                                    # ENOSPC: the disk is full
    finally:
        os.close(fd)
    err = _write_until_refused(b, acked, b"full", 5000)
    assert isinstance(err, DiskError), err      # not an acknowledgement held for ever
    info = instance.info()
    assert "No space left" in info["error"] or "fsync_lag_limit" in info["error"]
    code, out = _status(instance)
    assert code == 1 and ("No space left" in out or "fsync_lag_limit" in out)
    os.unlink(filler)                           # room again: writes resume
    wait_for(lambda: instance.info()["error"] == "", timeout=30, what="error cleared")
    assert _write_until_refused(b, acked, b"after", 200) is None
    s.close()
    lost = _kill_and_cold_restart_holds(instance, w, acked)
    print(f"\nfull disk under everysec: {len(acked)} acknowledged, {len(lost)} lost")
    assert lost == []


def test_everysec_writer_stuck_on_its_disk_refuses_after_the_lag_limit(instance):
    """A writer that stops answering (SIGSTOP: a hung fsync looks the same from the
    outside) leaves the log behind: past fsync_lag_limit the writes fail with
    DiskError, before, they filled the ring (16 MiB) with writes only memory held."""
    instance.configure(fsync="everysec", fsync_lag_limit=1, memory="64MiB",
                       limits={"ring_size": "16MiB"})
    w = instance.start()
    s = instance.attach()
    b = s.create_bucket("b")
    acked = {}
    assert _write_until_refused(b, acked, b"before", 200) is None
    os.kill(w.pid, signal.SIGSTOP)
    try:
        err = _write_until_refused(b, acked, b"stuck", 5000)
        assert isinstance(err, DiskError) and "fsync_lag_limit" in str(err), err
        assert "fsync_lag_limit" in instance.info()["error"]
        code, out = _status(instance)
        assert code == 1 and "fsync_lag_limit" in out
    finally:
        os.kill(w.pid, signal.SIGCONT)
    wait_for(lambda: instance.info()["error"] == "", timeout=30, what="the log caught up")
    assert _write_until_refused(b, acked, b"after", 200) is None
    s.close()
    lost = _kill_and_cold_restart_holds(instance, w, acked)
    print(f"\nstuck writer under everysec: {len(acked)} acknowledged, {len(lost)} lost")
    assert lost == []


def _flood(conf_name, prefix, seconds, out):
    """A producer process: 1 MiB values as fast as the ring takes them."""
    import bukt
    s = bukt.attach(conf_name)
    b = s.bucket("b")
    value, refused, done, i = b"x" * (1 << 20), 0, 0, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            b.set(b"%s-%d" % (prefix, i % 64), value)
            done += 1
        except DiskError:
            refused += 1
        i += 1
    s.close()
    out.put((done, refused))


def test_everysec_keeps_accepting_while_a_steady_load_keeps_the_ring_busy(instance):
    """Producers that keep the ring busy for longer than fsync_lag_limit, with a writer
    that keeps up to within a batch: the log's age is that of its oldest missing change
    (bukt/writer/lag.py), so no write is refused. Before, the age was counted from the
    last drain that reached the ring's head, which a steady load never lets happen, and
    writes were refused after fsync_lag_limit although the log trailed by milliseconds."""
    import multiprocessing
    instance.configure(fsync="everysec", fsync_lag_limit=1, memory="128MiB",
                       limits={"ring_size": "16MiB", "max_value": "1MiB"})
    w = instance.start()
    s = instance.attach()
    s.create_bucket("b")
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_flood, args=(instance.name, b"p%d" % n, 6.0, out))
             for n in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    done = sum(r[0] for r in results)
    refused = sum(r[1] for r in results)
    print(f"\nsteady load under everysec: {done} sets, {refused} refused")
    assert done > 0 and refused == 0, (done, refused, instance.info()["error"])
    s.close()
    instance.stop(w)
