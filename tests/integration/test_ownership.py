"""Ownership records (bukt/owners.py, OWNERSHIP): a pid with its start time. A zombie
owner, or a live process that was given a dead owner's pid, is not the owner; the real
owner, alive, is. And the HTTP area is reserved when it is created."""
import mmap
import os
import struct
import signal
import subprocess
import sys
import time

import pytest

import bukt
from bukt._core import writer_claim
from bukt import owners
from bukt.errors import SegmentFull
from bukt.http import shared
from bukt.http.shared import SharedArea
from names import unique_name


def zombie():
    """A child that has exited and is not reaped: (pid, its start time when alive)."""
    p = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                         stdin=subprocess.PIPE)
    start = owners.start_time(p.pid)
    p.stdin.close()
    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)     # exited, still a zombie
    assert owners._stat(p.pid)[0] == b"Z"
    return p, start


@pytest.fixture
def sleeper():
    p = subprocess.Popen(["sleep", "600"])
    yield p
    p.kill()
    p.wait()


def test_a_live_owner_is_alive_and_a_stranger_with_its_pid_is_not(sleeper):
    start = owners.start_time(sleeper.pid)
    assert start > 0
    assert owners.identity(sleeper.pid) == (sleeper.pid, start)
    assert owners.owner_alive(sleeper.pid, start)
    assert owners.owner_alive(*owners.identity())
    # the record of an owner that started at another time: the pid was reused
    assert not owners.owner_alive(sleeper.pid, start + 1)
    assert not owners.owner_alive(sleeper.pid, start - 1)


def test_a_zombie_owner_is_dead():
    p, start = zombie()
    try:
        assert not owners.owner_alive(p.pid, start)
        assert not owners.owner_alive(p.pid, 0)          # even without a start time
        assert not owners.alive(p.pid)
    finally:
        p.wait()


def area_name():
    return f"/bukt-{unique_name()}-http"


def set_owner(name, pid, start):
    with open(f"/dev/shm/{name[1:]}", "r+b") as f, mmap.mmap(f.fileno(), 64) as m:
        struct.pack_into("=2Q", m, 8 * shared.OWNER, pid, start)


def remove_area(name):
    try:
        os.unlink(f"/dev/shm/{name[1:]}")
    except FileNotFoundError:
        pass


def test_http_area_whose_owner_pid_was_reused_is_taken_over(sleeper):
    name = area_name()
    try:
        SharedArea.create(name, slots=64).close()
        # the record names a live, unrelated process, with another start time
        set_owner(name, sleeper.pid, owners.start_time(sleeper.pid) + 7)
        SharedArea.create(name, slots=64).close()           # before: FileExistsError
        set_owner(name, sleeper.pid, owners.start_time(sleeper.pid))
        with pytest.raises(FileExistsError, match="live process"):
            SharedArea.create(name, slots=64)               # the owner itself lives
    finally:
        remove_area(name)


# a process that takes (or claims a row of) an area, then waits for its stdin to close
OWNER = ("import sys; from bukt.http.shared import SharedArea; "
         "a = SharedArea.create(sys.argv[1], slots=64); sys.stdin.read()")
WORKER = ("import sys; from bukt.http.shared import SharedArea; "
          "a = SharedArea.attach(sys.argv[1]); a.counter_row()[0] += 5; sys.stdin.read()")


def run_until_zombie(code, name):
    p = subprocess.Popen([sys.executable, "-c", code, name], stdin=subprocess.PIPE)
    p.stdin.close()
    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)    # exited, not reaped
    return p


def test_http_area_of_a_zombie_owner_is_taken_over():
    name = area_name()
    p = run_until_zombie(OWNER, name)          # like an arbiter killed, not yet reaped
    try:
        SharedArea.create(name, slots=64).close()  # before: "belongs to the live process"
    finally:
        p.wait()
        remove_area(name)


def test_counter_row_of_a_zombie_worker_is_taken_over_and_starts_are_counted():
    name = area_name()
    area = SharedArea.create(name, slots=64, rows=1)
    try:
        assert area.worker_starts() == 0
        p = run_until_zombie(WORKER, name)
        try:
            area.counter_row()             # before: RuntimeError, the one row held
        finally:
            p.wait()
        assert area.worker_starts() == 2
        assert area.totals()[0] == 5        # the dead worker's counts are kept
    finally:
        area.unlink()
        area.close()


def test_segment_writer_that_is_a_zombie_is_not_alive(segname):
    s = bukt.create(segname, size="16MiB")
    try:
        p, start = zombie()
        try:
            s.writer_publish(pid=os.getpid())
            info = s.writer_info()
            assert info["alive"] and info["start"] == owners.start_time(os.getpid())
            s.writer_publish(pid=p.pid)        # the record of a writer now a zombie
            assert not s.writer_info()["alive"]    # before: alive (kill(pid, 0) succeeds)
        finally:
            p.wait()
    finally:
        s.close()


# -- the HTTP area is reserved -----------------------------------------------------------

def test_http_area_pages_are_allocated_when_created():
    name = area_name()
    area = SharedArea.create(name, slots=4096)
    try:
        st = os.stat(f"/dev/shm/{name[1:]}")
        size = SharedArea.size_for(4096, 128, 1024)
        assert st.st_size == size
        assert st.st_blocks * 512 >= size            # before: 0 blocks, a sparse file
    finally:
        area.unlink()
        area.close()


@pytest.fixture
def small_tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tmp_path / "shm"
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)],
                       capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    yield path
    subprocess.run(["umount", str(path)], check=True)


def test_http_area_in_a_full_shm_is_an_error_at_creation(small_tmpfs):
    name = "/bukt-full-http"
    with pytest.raises(SegmentFull, match="cannot reserve .* No space left"):
        SharedArea.create(name, slots=4096, shm_dir=str(small_tmpfs))   # ~1.1 MB > 256 KiB
    assert os.listdir(small_tmpfs) == []             # nothing half made is left
    area = SharedArea.create(name, slots=64, rows=4, words=64, shm_dir=str(small_tmpfs))
    try:
        assert area.counter_row()[0] == 0            # usable, pages there
    finally:
        area.unlink()
        area.close()


# -- owner records in the segment: counter rows, a dropping bucket ----------------------

def proc_rows(segname, plan, n):
    """(pid, start low 32 bits) of each counter row of the segment, read from its file."""
    from bukt._core import PROC_ROW
    with open(f"/dev/shm/bukt-{segname}", "rb") as f:
        f.seek(plan["procs_off"])
        raw = f.read(PROC_ROW * n)
    return [struct.unpack_from("=II", raw, PROC_ROW * i) for i in range(n)]


def test_segment_counter_row_of_a_zombie_is_taken_over(segname):
    s = bukt.create(segname, size="16MiB", max_procs=3)     # rows 1, 2; row 0 overflow
    try:
        from bukt import _core
        plan = _core._layout(16 << 20, 250, 1 << 20, 64, 0, 0, 3, 1.25)
        assert proc_rows(segname, plan, 3)[1][0] == os.getpid()
        code = "import sys, bukt; bukt.attach(sys.argv[1]); sys.stdin.read()"
        p = run_until_zombie(code, segname)                    # row 2, then a zombie
        try:
            assert proc_rows(segname, plan, 3)[2][0] == p.pid
            q = subprocess.run([sys.executable, "-c", "import os, sys, bukt; "
                                "bukt.attach(sys.argv[1]); print(os.getpid())", segname],
                               capture_output=True, check=True)
            # before: the zombie's row stood, and the next process counted into row 0
            assert proc_rows(segname, plan, 3)[2][0] == int(q.stdout)
            assert proc_rows(segname, plan, 3)[1] == \
                (os.getpid(), owners.start_time(os.getpid()) & 0xffffffff)
        finally:
            p.wait()
    finally:
        s.close()


DROPPER = """
import sys, bukt
s = bukt.attach(sys.argv[1])
s.drop_bucket("b")          # its logged deletes fill the ring; it waits for room
"""


def test_bucket_left_dropping_by_a_zombie_is_listed_as_half_dropped(segname):
    s = bukt.create(segname, size="32MiB", ring_size="4MiB", ring_wait=300)
    writer_claim(s)     # as a writer does: changes go to the ring, which the test fills
    try:
        b = s.create_bucket("b")                    # persisted: its deletes are logged
        for i in range(20000):
            b.set(b"key-%06d" % i, b"v")
            if i % 1000 == 0:
                drain(s)
        drain(s)
        filler = s.create_bucket("f")               # the ring full but for 256 KiB
        i = 0
        while True:
            tail, head = s.ring_position()[:2]
            if (4 << 20) - (head - tail) < (256 << 10) + (64 << 10) + 1024:
                break
            filler.set(b"f%d" % i, b"x" * (64 << 10))
            i += 1
        p = subprocess.Popen([sys.executable, "-c", DROPPER, segname])
        try:
            deadline = time.monotonic() + 60
            while "b" in s.buckets() or s.ring_position()[1] - s.ring_position()[0] \
                    < (4 << 20) - (1 << 10):        # dropping, and waiting for room
                assert p.poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
            p.send_signal(signal.SIGKILL)
            os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)    # a zombie now
            # before: kill(pid, 0) said the zombie dropper lives: the bucket stayed
            # hidden, and nothing finished its drop
            assert "b" in s.buckets()                   # listed: half dropped
            drain(s)
            assert s.check() == []                      # which finishes the drop
            assert "b" not in s.buckets() and s.bucket("f").stats()["keys"] == i
        finally:
            p.kill()
            p.wait()
    finally:
        s.close()


def drain(s):
    """Play the writer: everything in the ring is read and flushed."""
    while True:
        tail, head = s.ring_position()[:2]
        if tail == head:
            return
        _, pos, _ = s.ring_read()
        s.ring_release(pos)
        s.ring_flushed(pos)
