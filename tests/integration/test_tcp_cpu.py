"""How TCP workers share the CPUs (bukt/tcp/cpu.py, ROUND YIELD in bukt/tcp/_epoll.pyx):
tcp.nice, tcp.slice and tcp.round_yield, on real worker processes, read back from the
kernel (/proc, sched_getattr) and, for the yields, from strace."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from bukt.protocol import Command as C
from bukt.tcp.cpu import sched_attr
from tcp_harness import ROOT, Server, auth, connect, read_frame, store
from bukt import protocol as P


def _niceness(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])   # field 19: nice


def _slice_ns(pid):
    return sched_attr(pid)["runtime"]


def _python(code):
    """Runs code in a fresh interpreter (its scheduling changes stay there); its output."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=30)
    assert out.returncode == 0, out.stderr
    return out


def _kernel_takes_slices():
    """Linux 6.12+ keeps a fair task's slice from sched_setattr; try it in a child."""
    code = ("from bukt.tcp.cpu import apply_slice, sched_attr\n"
            "print(apply_slice(0.002) and sched_attr(0)['runtime'] == 2000000)")
    return _python(code).stdout.strip() == "True"


def _replaced(srv, old):
    """SIGKILL one worker; the pool starts another: its pid once it has attached (and so
    has set its niceness and slice)."""
    os.kill(old[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        new = [p for p in srv.worker_pids() if p not in old]
        if new and srv.attached(new):
            return new[0]
        time.sleep(0.05)
    raise AssertionError("no replacement worker")


def test_tcp_nice_sets_each_workers_niceness():
    """tcp.nice: every worker runs at that niceness, a replaced one too; unset, the
    workers keep the pool's (started at another niceness than this process's)."""
    with store() as (s, name):
        with Server(name, workers=2, nice=7) as srv:
            pids = srv.worker_pids()
            assert len(pids) == 2 and [_niceness(p) for p in pids] == [7, 7]
            assert _niceness(_replaced(srv, pids)) == 7
        pool = min(os.getpriority(os.PRIO_PROCESS, 0) + 4, 19)
        with Server(name, workers=2, pool_nice=4) as srv:   # unset: the pool's, not 0
            assert _niceness(srv.proc.pid) == pool
            assert [_niceness(p) for p in srv.worker_pids()] == [pool] * 2


def test_tcp_nice_below_what_is_allowed_is_reported_not_fatal():
    """A worker that may not lower its niceness (no CAP_SYS_NICE, no RLIMIT_NICE) says
    so and keeps serving at its niceness: run as an unprivileged user when the tests
    run as root."""
    code = ("import os, sys\n"
            "from bukt.tcp.cpu import apply_nice\n"   # imported while it may read
            "if os.geteuid() == 0:\n"
            "    os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
            "before = os.getpriority(os.PRIO_PROCESS, 0)\n"
            "apply_nice(before - 5, 3)\n"
            "print(before, os.getpriority(os.PRIO_PROCESS, 0))\n")
    out = _python(code)
    before, after = out.stdout.split()
    assert before == after
    assert "tcp.nice" in out.stderr and "not applied" in out.stderr, out.stderr


needs_slices = pytest.mark.skipif(not _kernel_takes_slices(),
                                  reason="this kernel ignores a fair task's slice (< 6.12)")


@needs_slices
def test_tcp_slice_is_each_workers_slice_and_keeps_its_niceness():
    """Every worker, a replaced one too, runs with the configured slice (the default,
    300 us, or another), at the niceness tcp.nice gave it; 0 leaves the pool's."""
    with store() as (s, name):
        with Server(name, workers=2) as srv:
            assert [_slice_ns(p) for p in srv.worker_pids()] == [300_000, 300_000]
        with Server(name, workers=2, slice=0.0025, nice=3) as srv:
            pids = srv.worker_pids()
            assert [_slice_ns(p) for p in pids] == [2_500_000] * 2
            assert [_niceness(p) for p in pids] == [3, 3]
            new = _replaced(srv, pids)
            assert _slice_ns(new) == 2_500_000 and _niceness(new) == 3
        with Server(name, workers=1, slice=0) as srv:
            assert [_slice_ns(p) for p in srv.worker_pids()] == [_slice_ns(srv.proc.pid)]


def test_tcp_slice_leaves_other_policies_alone_and_says_when_not_applied():
    """A worker under SCHED_IDLE (an operator's choice) keeps it and its slice, without
    a word; where the platform's sched_setattr is not known the worker says so."""
    idle = _python("import os\n"
                   "from bukt.tcp import cpu\n"
                   "os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
                   "before = cpu.sched_attr(0)\n"
                   "print(cpu.apply_slice(0.002, 1), os.sched_getscheduler(0) == os.SCHED_IDLE,\n"
                   "      cpu.sched_attr(0) == before)\n")
    assert idle.stdout.split() == ["False", "True", "True"] and idle.stderr == "", idle
    out = _python("from bukt.tcp import cpu\n"
                  "cpu._SYSCALLS.clear()\n"
                  "print(cpu.apply_slice(0.002, 2))\n")
    assert out.stdout.split() == ["False"], out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "worker 2: tcp.slice 2000us not applied" in lines[0], out.stderr


def _yields_under_load(round_yield, rounds=300, conns=8):
    """sched_yield calls of one epoll worker (busy poll off: its own yields) while
    `conns` connections each send a GET, `rounds` times, then read the answers."""
    with store() as (s, name), Server(name, workers=1, loop="epoll", busy_poll=0,
                                      round_yield=round_yield) as srv:
        worker = srv.worker_pids()[0]
        socks = [connect(srv.port) for _ in range(conns)]
        trace = subprocess.Popen(["strace", "-f", "-e", "trace=sched_yield", "-p", str(worker)],
                                 stderr=subprocess.PIPE, text=True)
        try:
            assert "attached" in trace.stderr.readline()
            for sock in socks:
                auth(sock, "rw")
            get = [P.encode_request(C.GET, i, key=b"k%d" % i) for i in range(conns)]
            for _ in range(rounds):
                for sock, frame in zip(socks, get):
                    sock.sendall(frame)
                for sock in socks:
                    assert P.decode_response(C.GET, read_frame(sock))[0] == P.Status.NOT_FOUND
        finally:
            trace.send_signal(signal.SIGINT)
            out = trace.communicate(timeout=30)[1]
            for sock in socks:
                sock.close()
        assert s.check() == []
        return out.count("sched_yield(")


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (.ci/run installs it)")
def test_round_yield_yields_after_rounds_of_several_events_and_only_when_on():
    """ROUND YIELD: with 8 connections' requests arriving together, rounds of two or
    more events happen and each ends in sched_yield; with tcp.round_yield off, or one
    connection at a time, the worker (busy poll off) never calls it."""
    assert _yields_under_load(True) > 0
    assert _yields_under_load(False) == 0
    assert _yields_under_load(True, conns=1) == 0
