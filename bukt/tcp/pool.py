"""The TCP worker pool: `serve_tcp` forks the workers, restarts one that dies, and on
SIGTERM passes the signal on and waits for them to drain.

The supervisor holds one socket bound to the address with SO_REUSEPORT but not listening:
it keeps the port (chosen by the kernel when the bind says port 0) for workers started
later, and takes no connections itself. Each worker gets a listening socket of its own,
made just before its fork and closed in the supervisor right after, so a dead worker's
queue of unaccepted connections dies with it and new connections go to the living.

Between events the pool sleeps on its workers' pidfds and a wake pipe its signal
handler writes, until a restart is due or IDLE_WAIT at most: an idle pool wakes about
once a second, not every POLL.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time

from bukt import logs
from bukt.authguard import FailureTable, table_name
from bukt.service.procs import ExitWatch
from bukt.tcp import stats as tcp_stats
from bukt.tcp.settings import TcpSettings
from bukt.tcp.cpu import apply_nice, apply_slice
from bukt.tcp.worker import Worker, listen_socket

log = logging.getLogger("bukt.tcp")

RESTART_DELAY = 0.1      # seconds before a dead worker is replaced
RESTART_DELAY_MAX = 5.0  # a worker that keeps dying at start is retried this often at most
POLL = 0.05              # while stopping: how often the shutdown deadline is looked at
IDLE_WAIT = 1.0          # otherwise the pool sleeps until a worker exits (its pidfd), a
                         # signal (the wake pipe) or a restart is due, at most this long:
                         # an idle pool woke 20 times a second on POLL


def _attach(settings):
    import bukt
    return bukt.attach(settings.instance)


def serve_tcp(cfg=None, *, store_factory=None, durable=None, ready=None, **overrides) -> int:
    """Runs the TCP worker pool until SIGTERM or SIGINT; returns the exit status (0).

    `cfg` is a bukt.config.Config, a mapping, or None; keywords override it (names of
    TcpSettings' fields: bind, workers, max_frame, ...). `store_factory(settings)` is
    called in each worker after the fork and returns the store it serves (default:
    `bukt.attach(instance)`). `ready(host, port)` is called once the workers are forked.
    """
    settings = TcpSettings.from_config(cfg, **overrides)
    store_factory = store_factory or _attach
    host, port = settings.address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    keeper = socket.socket(family, socket.SOCK_STREAM)
    keeper.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    keeper.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    keeper.bind((host, port))
    port = keeper.getsockname()[1]
    # The RESP listener (bukt/tcp/resp_session.py): its own port, kept the same way.
    resp_keeper = None
    resp_host = resp_port = None
    if settings.resp_address is not None:
        resp_host, resp_port = settings.resp_address
        resp_keeper = socket.socket(socket.AF_INET6 if ":" in resp_host else socket.AF_INET,
                                    socket.SOCK_STREAM)
        resp_keeper.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        resp_keeper.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        resp_keeper.bind((resp_host, resp_port))
        resp_port = resp_keeper.getsockname()[1]

    # Fail here, once, with the store's own error (SegmentNotFound: start the writer),
    # rather than in every worker in a restart loop.
    store_factory(settings).close()
    # Failed AUTH per address, shared by every worker (bukt/authguard.py): made here,
    # inherited by each worker's fork, removed when the pool exits.
    auth_table = FailureTable.create(table_name(settings.instance, "tcp"),
                                     slots=settings.auth_sources)
    # The workers' counters (bukt/tcp/stats.py), read by the HTTP face's /metrics:
    # made here, a row claimed by each worker, removed when the pool exits.
    try:
        stats_area = tcp_stats.create(settings.instance, settings.workers)
    except BaseException:
        auth_table.unlink()
        auth_table.close()
        raise

    workers: dict[int, tuple[int, float]] = {}  # slot -> (pid, started)
    exits = ExitWatch()                         # the workers' exits; on_signal wakes it
    stopping = False
    delays = [RESTART_DELAY] * settings.workers

    def spawn(slot: int) -> None:
        sock = listen_socket(host, port)
        resp_sock = listen_socket(resp_host, resp_port) if resp_keeper is not None else None
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            logs.set_role("tcp-worker")
            try:
                keeper.close()
                if resp_keeper is not None:
                    resp_keeper.close()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                exits.close()
                apply_nice(settings.nice, slot)
                apply_slice(settings.slice, slot)
                store = store_factory(settings)
                tcp_stats.use(tcp_stats.claim(stats_area))
                status = Worker(settings, store, sock, index=slot, durable=durable,
                                auth_table=auth_table, resp_sock=resp_sock).run()
            except BaseException:
                log.exception("bukt tcp: worker %d failed", slot)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        sock.close()
        if resp_sock is not None:
            resp_sock.close()
        workers[slot] = (pid, time.monotonic())
        exits.watch(pid)

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True
        exits.wake()
        for pid, _ in workers.values():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for slot in range(settings.workers):
            spawn(slot)
        log.info("bukt tcp: %d workers on %s:%d (instance %r)", settings.workers, host,
                 port, settings.instance)
        if resp_keeper is not None:
            log.info("bukt tcp: RESP (the Redis protocol) on %s:%d", resp_host, resp_port)
        if ready is not None:
            ready(host, port)
        deadline = None
        pending: dict[int, float] = {}  # slot -> when to restart it
        while workers or (pending and not stopping):
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid:
                exits.forget(pid)
                slot = next((s for s, (p, _) in workers.items() if p == pid), None)
                if slot is not None:
                    _, started = workers.pop(slot)
                    if not stopping:
                        log.warning("bukt tcp: worker %d (pid %d) died (%s); restarting",
                                    slot, pid, _describe(status))
                        quick = time.monotonic() - started < 1.0
                        delays[slot] = min(delays[slot] * 2, RESTART_DELAY_MAX) if quick \
                            else RESTART_DELAY
                        pending[slot] = time.monotonic() + delays[slot]
                continue
            now = time.monotonic()
            if stopping:
                pending.clear()
                if deadline is None:
                    deadline = now + settings.shutdown_timeout + 1.0
                elif now > deadline:
                    for p, _ in workers.values():
                        try:
                            os.kill(p, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
            for slot, when in list(pending.items()):
                if now >= when:
                    del pending[slot]
                    spawn(slot)
            wait = POLL if stopping else min(
                [IDLE_WAIT] + [max(0.0, when - now) for when in pending.values()])
            exits.wait(wait)
    finally:
        exits.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)
        keeper.close()
        if resp_keeper is not None:
            resp_keeper.close()
        auth_table.unlink()
        auth_table.close()
        tcp_stats.remove(stats_area)
    return 0


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.WEXITSTATUS(status)}"
