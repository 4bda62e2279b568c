"""An idle `bukt serve` sleeps: the supervisor and the TCP pool wait for a child's exit
(its pidfd) or a signal (a wake pipe) instead of polling every 50 ms, an HTTP worker's
server ticks once a second instead of ten times (bukt/http/worker.py, THE TICK), a
TCP worker with no connection waits in epoll for a second, not 200 ms, and the writer
dozes (test_writer_idle.py). Wake-ups are the voluntary context switches in /proc/<pid>/
status over a few seconds, bounded at half the old polling rate (20 a second); and the
service still notices a dead TCP worker and a SIGHUP, and stops on SIGTERM."""
import os
import signal
import time

import pytest

from mp_common import switches
from serve_harness import Service, wait_for

IDLE_WINDOW_S = 3.0
WAKES_PER_S = 10        # each polled 20 times a second; now about once a second
HTTP_WAKES_PER_S = 5    # uvicorn's server ticked 10 times a second; now once
TCP_WAKES_PER_S = 3     # a TCP worker with no connection: epoll's 200 ms, now 1 s


@pytest.fixture
def svc(tmp_path):
    s = Service(tmp_path)
    try:
        yield s
    finally:
        s.cleanup()


@pytest.mark.slow
def test_idle_supervisor_and_tcp_pool_sleep(svc):
    svc.start()
    st = svc.state()
    pids = {"supervisor": st["pid"], "tcp pool": st["tcp"]["pid"]}
    time.sleep(1.0)                     # past the start: every child is up
    before = {k: switches(p) for k, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(IDLE_WINDOW_S)
    dt = time.monotonic() - t0
    wakes = {k: switches(p) - before[k] for k, p in pids.items()}
    assert all(w <= WAKES_PER_S * dt for w in wakes.values()), \
        f"wake-ups in {dt:.1f} s idle: {wakes}"
    # a dead worker is still replaced, and the pool still stops with the service
    old = svc.children("tcp")
    assert old
    os.kill(old[0], signal.SIGKILL)
    wait_for(lambda: svc.children("tcp") and old[0] not in svc.children("tcp"),
             timeout=60, what="the TCP pool to replace its killed worker")
    assert svc.stop() == 0


@pytest.mark.slow
def test_idle_workers_of_both_faces_sleep_and_still_stop(svc):
    svc.settings["http"]["workers"] = 2
    svc.settings["tcp"]["workers"] = 2
    svc.configure()
    svc.start()
    time.sleep(1.0)                     # past the start: every worker serves
    bound = {p: HTTP_WAKES_PER_S for p in svc.children("http")}
    bound.update({p: TCP_WAKES_PER_S for p in svc.children("tcp")})
    assert len(bound) == 4
    before = {p: switches(p) for p in bound}
    t0 = time.monotonic()
    time.sleep(IDLE_WINDOW_S)
    dt = time.monotonic() - t0
    wakes = {p: switches(p) - before[p] for p in bound}
    assert all(w <= bound[p] * dt for p, w in wakes.items()), \
        f"workers' wake-ups in {dt:.1f} s idle: {wakes} (bounds a second: {bound})"
    # still serving, and a stop still ends every worker cleanly
    assert svc.healthy()
    assert svc.stop() == 0
    for p in bound:
        assert not os.path.exists(f"/proc/{p}") or open(f"/proc/{p}/stat").read().split()[2] == "Z"
