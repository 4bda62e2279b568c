"""Group commit under `fsync: always`: an idle writer sleeps on the segment's
doorbell and the first commit wakes it; a client waiting for durability sleeps on a
futex instead of spinning; under everysec producers never ring. The writer is stopped
with SIGSTOP at a moment it is known to sleep, so nothing but the clients can touch the
doorbell meanwhile, and every check is on state, not on time."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import bukt
from bukt._core import writer_claim
from bukt._core import writer_doorbell
from writer_harness import ROOT, instance, wait_for  # noqa: F401

CLIENT = """
import sys, bukt
s = bukt.attach(sys.argv[1])
s.durable_timeout = 120
s.bucket("b").set(b"durable", b"on disk")
open(sys.argv[2], "w").write("acknowledged")
"""


def _proc_state(pid):
    """The scheduler state of process `pid` (R running, S sleeping, ...)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _wchan(pid):
    """The kernel function process `pid` sleeps in ("futex_do_wait", ...)."""
    with open(f"/proc/{pid}/wchan") as f:
        return f.read()


def _stop_while_asleep(writer, s):
    """SIGSTOP the writer at a moment its doorbell says it sleeps waiting for records."""
    for _ in range(200):
        wait_for(lambda: writer_doorbell(s) == 1, what="the writer asleep on the doorbell")
        os.kill(writer.pid, signal.SIGSTOP)
        wait_for(lambda: _proc_state(writer.pid) == "T", what="the writer stopped")
        if writer_doorbell(s) == 1:
            return
        os.kill(writer.pid, signal.SIGCONT)     # stopped just after a wake-up: again
        time.sleep(0.01)
    raise AssertionError("never caught the writer asleep")


def test_a_commit_rings_the_sleeping_writer_and_the_waiting_client_sleeps(instance, tmp_path):
    writer = instance.start()
    s = instance.attach()
    try:
        s.sync_wait = False                 # this process plays the inspector, not a client
        s.create_bucket("b")
        _stop_while_asleep(writer, s)
        done = tmp_path / "acked"
        client = subprocess.Popen([sys.executable, "-c", CLIENT, instance.name, str(done)],
                                  env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT)
        instance.procs.append(client)
        # Its commit rang the doorbell: nobody else can have cleared it.
        wait_for(lambda: writer_doorbell(s) == 0, timeout=30, what="the doorbell rung")
        assert s.bucket("b").get(b"durable") == b"on disk"      # applied in memory
        # ... but not acknowledged while the writer cannot fsync, and the client waits
        # asleep in the kernel on a futex (a spinning waiter is never seen there, a
        # polling one sleeps in nanosleep instead)
        wait_for(lambda: _proc_state(client.pid) == "S" and "futex" in _wchan(client.pid),
                 what="the client asleep on a futex")
        assert client.poll() is None and not done.exists()
        os.kill(writer.pid, signal.SIGCONT)
        assert client.wait(30) == 0 and done.read_text() == "acknowledged"
    finally:
        if writer.poll() is None:
            os.kill(writer.pid, signal.SIGCONT)
        s.close()
    # acknowledged means in the log: a cold recovery from the files alone has it
    assert instance.stop(writer) == 0
    instance.unlink_segment()
    writer = instance.start()
    s = instance.attach()
    try:
        assert s.bucket("b").get(b"durable") == b"on disk"
    finally:
        s.close()
    assert instance.stop(writer) == 0


@pytest.mark.parametrize("policy", ["everysec", "no"])
def test_without_waiters_producers_never_ring(instance, policy):
    """Under everysec and no, nobody waits for the writer: a commit costs no syscall,
    and the writer finds the record by polling."""
    instance.configure(fsync=policy)
    writer = instance.start()
    s = instance.attach()
    try:
        b = s.create_bucket("b")
        _stop_while_asleep(writer, s)
        for i in range(100):
            b.set(b"k%d" % i, b"v")
        assert writer_doorbell(s) == 1
        os.kill(writer.pid, signal.SIGCONT)
        wait_for(lambda: s.ring_position()[0] == s.ring_position()[1], what="ring drained")
    finally:
        if writer.poll() is None:
            os.kill(writer.pid, signal.SIGCONT)
        s.close()
    assert instance.stop(writer) == 0


def test_the_writer_gathers_a_batch_on_the_doorbell_until_its_bytes_are_there(segname):
    """ring_gather_wait (GATHER in bukt/writer/process.py): the writer, before taking a batch,
    sleeps on the doorbell until the ring holds `want` bytes or its timeout passes.
    Here a child commits two records one by one under `fsync: always`: the wait is
    still asleep on the futex after the first (state, not time), not even woken (the
    doorbell's gather_bytes: only the commit that completes the batch rings, as the
    thread's count of voluntary context switches shows), and returns once the second
    is in, long before its 60 s; with nothing coming it returns what is there when its
    timeout passes."""
    from bukt._core import ring_gather_wait
    s = bukt.create(segname, size="16MiB")
    writer_claim(s)   # as a writer does: changes go to the ring
    s.create_bucket("b")
    s.writer_publish(sync_always=True)     # producers ring the doorbell
    s.sync_wait = False                    # nobody plays the writer's fsync here
    s.ring_release(s.ring_position()[1])   # the bucket's record, taken
    s.bucket("b").set(b"first", b"v")      # keys of one length: records of one size
    one = s.ring_position()[1] - s.ring_position()[0]
    assert ring_gather_wait(s, one, 60) == one             # there already: at once
    assert ring_gather_wait(s, 2 * one, 0.01) == one       # timeout: what is there
    go = os.pipe()
    pid = os.fork()
    if pid == 0:                                           # the producer
        code = 1
        try:
            c = bukt.attach(segname)
            c.sync_wait = False
            os.read(go[0], 1)
            c.bucket("b").set(b"other", b"v")
            os.read(go[0], 1)
            c.bucket("b").set(b"third", b"v")
            code = 0
        finally:
            os._exit(code)
    import threading
    got, tid = [], []
    t = threading.Thread(target=lambda: (tid.append(threading.get_native_id()),
                                         got.append(ring_gather_wait(s, 3 * one, 60))))
    t.start()

    def switches():
        with open(f"/proc/self/task/{tid[0]}/status") as f:
            return int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", f.read()).group(1))
    try:
        wait_for(lambda: writer_doorbell(s) == 1, what="the gather asleep on the doorbell")
        # the word is set just before the futex sleep begins: wait until the thread
        # is in it (its count of context switches stands still)
        asleep, deadline = switches(), time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = switches()
            if now == asleep:
                break
            asleep = now
        os.write(go[1], b"x")
        wait_for(lambda: s.ring_position()[1] - s.ring_position()[0] == 2 * one,
                 what="the second record")
        t.join(0.2)
        assert t.is_alive() and writer_doorbell(s) == 1
        assert switches() == asleep                        # short of the batch: not rung
        os.write(go[1], b"x")
        t.join(30)
        assert not t.is_alive() and got == [3 * one]
    finally:
        os.write(go[1], b"xx")
        os.waitpid(pid, 0)
        t.join(60)
        s.close()


def test_the_gather_spins_with_the_doorbell_unset_then_sleeps_on_it(segname):
    """GATHER SPIN (bukt/writer/process.py): ring_gather_wait with `spin` yields the CPU in a
    loop before it sleeps, with the doorbell unset, so a batch that comes meanwhile
    makes its producer call no futex and the writer wake from no sleep; once `spin`
    has run out it sleeps on the doorbell as without it. A thread gathers with a 30 s
    spin: the doorbell stays unset while a child commits the batch, and the gather
    returns it; then one with a 50 ms spin and nothing coming is found asleep on the
    doorbell, and a commit completes it."""
    import threading
    from bukt._core import ring_gather_wait
    s = bukt.create(segname, size="16MiB")
    writer_claim(s)   # as a writer does: changes go to the ring
    s.create_bucket("b")
    s.writer_publish(sync_always=True)
    s.sync_wait = False
    s.ring_release(s.ring_position()[1])
    s.bucket("b").set(b"first", b"v")
    one = s.ring_position()[1] - s.ring_position()[0]
    got = []
    t = threading.Thread(target=lambda: got.append(ring_gather_wait(s, 2 * one, 60, 30)))
    t.start()
    try:
        for _ in range(20):
            time.sleep(0.01)
            assert t.is_alive() and writer_doorbell(s) == 0    # spinning, not asleep
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                c = bukt.attach(segname)
                c.sync_wait = False
                c.bucket("b").set(b"other", b"v")
                code = 0
            finally:
                os._exit(code)
        assert os.waitpid(pid, 0)[1] == 0
        t.join(10)
        assert not t.is_alive() and got == [2 * one] and writer_doorbell(s) == 0

        t = threading.Thread(target=lambda: got.append(ring_gather_wait(s, 3 * one, 60, 0.05)))
        t.start()
        wait_for(lambda: writer_doorbell(s) == 1, what="the gather asleep once its spin ran out")
        s.bucket("b").set(b"third", b"v")
        t.join(10)
        assert not t.is_alive() and got == [2 * one, 3 * one]
    finally:
        t.join(60)                                  # a gather gives up after its 60 s
        s.close()
