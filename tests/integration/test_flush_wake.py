"""The writer's flush wakes the flush futex only when someone sleeps on it (cext/
store.pxi, THE FLUSH WAKE). A real process plays the writer's side with the call the
writer makes after each flush (ring_flushed), under strace: with nobody waiting its
flushes make no futex wake at all (before, one each); with a thread asleep in
wait_durable, counted in flush_waiters, the flush wakes it."""
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FLUSHES = 200

SCRIPT = r'''
import os, sys, threading, time
import bukt
from bukt._core import flush_waiters
name = sys.argv[1]
s = bukt.create(name, size="16MiB")
try:
    os.uname()                                  # marker: nobody waits from here
    for i in range(1, %(n)d + 1):
        s.ring_flushed(i)
    os.uname()                                  # marker: a sleeper from here
    done = []
    t = threading.Thread(target=lambda: done.append(s.wait_durable(10**9, timeout=600)))
    t.start()
    while flush_waiters(s) != 1:
        time.sleep(0.001)
    s.ring_flushed(10**9)
    t.join(600)
    os.uname()
    assert done == [True] and flush_waiters(s) == 0, (done, flush_waiters(s))
    print("ok")
finally:
    s.close()                                   # the test's fixture unlinks it
''' % {"n": FLUSHES}


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_flush_wakes_the_futex_only_when_someone_sleeps(tmp_path, segname):
    trace = tmp_path / "trace"
    r = subprocess.run(["strace", "-f", "-qq", "-e", "trace=futex,uname", "-o", str(trace),
                        sys.executable, "-c", SCRIPT, segname],
                       env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
    lines = trace.read_text().splitlines()
    marks = [i for i, ln in enumerate(lines) if "uname(" in ln]
    assert len(marks) == 3, lines
    idle = [ln for ln in lines[marks[0]:marks[1]] if "FUTEX_WAKE" in ln]
    slept = [ln for ln in lines[marks[1]:marks[2]] if "FUTEX_WAKE" in ln]
    assert idle == [], f"{len(idle)} futex wakes in {FLUSHES} flushes nobody waited for"
    assert slept, "the flush did not wake the sleeper"
