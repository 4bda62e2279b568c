"""The epoll worker's busy poll (BUSY POLL in bukt/tcp/_epoll.pyx, tcp.busy_poll): between
requests that come one round trip apart it polls instead of sleeping. Observed through
the worker's voluntary context switches in /proc (each sleep in epoll_wait is one; a
yield is not). The worker and this process are pinned to different CPUs so that the
worker's yields are not slowed by the client itself. When polls stop paying the worker
sleeps at once: that rule is SpinCredit's, tested in tests/unit/test_spin.py."""
import os

import pytest

from bukt.protocol import Command as C
from tcp_harness import Server, auth, call, connect, store

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")


def _status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sleeps_over_requests(busy_poll, n=300):
    """The worker's voluntary context switches over n sequential GETs."""
    with store() as (_, name), Server(name, workers=1, loop="epoll", busy_poll=busy_poll) as srv:
        worker = srv.worker_pids()[0]
        cpus = sorted(os.sched_getaffinity(0))
        me = os.sched_getaffinity(0)
        os.sched_setaffinity(worker, {cpus[-1]})
        os.sched_setaffinity(0, {cpus[0]})
        try:
            with connect(srv.port) as s:
                auth(s, "rw")
                call(s, C.SET, flags=0, ttl_ms=0, if_version=0, key=b"k", value=b"v")
                before = _status(worker, "voluntary_ctxt_switches")
                for i in range(n):
                    call(s, C.GET, rid=i + 2, key=b"k")
                return _status(worker, "voluntary_ctxt_switches") - before
        finally:
            os.sched_setaffinity(0, me)


def test_without_busy_poll_every_request_wakes_the_worker():
    assert _sleeps_over_requests(0, 300) >= 270


def test_with_busy_poll_the_worker_polls_between_requests_instead_of_sleeping():
    assert _sleeps_over_requests("10ms", 300) < 60

