"""bench/benchutil.py's CpuMeter, which the benches' CPU columns rest on: a role's pids
count with their descendants and all their threads, a client the block reaps counts
to the `reaped` role, and nothing counts twice."""
import importlib.util
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    "benchutil", os.path.join(HERE, "..", "..", "bench", "benchutil.py"))
benchutil = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchutil)

BURN = 0.3          # CPU seconds each burner uses, by its own clock
# The meter reads clock ticks (10 ms) and rusage, the burner its thread clocks: they
# agree to a tick or two a process.
SLACK = 0.05

# Burns BURN CPU seconds in `threads` threads, then says "done" and waits for stdin to close.
BURNER = f"""
import sys, threading, time
def burn():
    t = time.thread_time()
    while time.thread_time() - t < {BURN}:
        pass
threads = [threading.Thread(target=burn) for _ in range(int(sys.argv[1]))]
for t in threads: t.start()
for t in threads: t.join()
print("done", flush=True)
sys.stdin.read()
"""

# Starts a burner as its child and waits, idle, for stdin to close.
PARENT = f"""
import subprocess, sys
c = subprocess.Popen([sys.executable, "-c", {BURNER!r}, "2"], stdout=sys.stdout)
sys.stdin.read()
c.kill()
"""


def test_a_reaped_client_counts_to_its_role():
    with benchutil.CpuMeter({}, reaped="client") as m:
        subprocess.run([sys.executable, "-c", BURNER, "1"], input=b"", check=True,
                       stdout=subprocess.DEVNULL)
    assert m.seconds["client"] >= BURN - SLACK
    assert m.us_per(1000)["client"] == pytest.approx(m.seconds["client"] * 1000)
    assert m.host >= m.seconds["client"] - SLACK


def test_a_roles_descendants_and_their_threads_count():
    """The role names an idle parent; its child burns in two threads."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    idle = subprocess.Popen(["sleep", "600"])
    try:
        with benchutil.CpuMeter({"server": [parent.pid], "idle": [idle.pid]}) as m:
            assert parent.stdout.readline() == b"done\n"
        assert m.seconds["server"] >= 2 * BURN - SLACK
        # the idle role's process did nothing meanwhile
        assert m.seconds["idle"] < SLACK
        assert m.percent("server") == pytest.approx(100 * m.seconds["server"] / m.wall)
    finally:
        idle.kill()
        idle.wait(10)
        parent.stdin.close()
        parent.wait(10)


def test_a_process_gone_before_the_block_counts_nothing():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    with benchutil.CpuMeter({"gone": [p.pid]}) as m:
        pass
    assert m.seconds["gone"] == 0
