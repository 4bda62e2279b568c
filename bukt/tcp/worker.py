"""A TCP worker process: one SO_REUSEPORT listening socket, one event loop, one attach.

The supervisor (bukt/tcp/pool.py) forks N of these. Each binds its own listening socket
to the same address with SO_REUSEPORT, so the kernel spreads new connections across the
workers, and a worker that dies takes only its own socket and connections with it.

SIGTERM (or SIGINT): close the listening socket (stop accepting), stop reading every
connection, answer what has already been read, wait for deferred (durable) responses,
close, exit 0. Whatever is still open after `shutdown_timeout` is aborted.

A worker never waits inside its loop: not for durability (bukt/writewait/durability.py), and
not for room in the change ring. It sets the store's ring_wait to 0 and keeps the
configured wait (limits.ring_wait_ms, from the segment) as `ring_wait`: a request that
finds the ring full parks its connection and is tried again on a timer until then,
holding a claim on the room it needs (bukt/tcp/session.py, RING FULL; bukt/writewait/ringroom.py).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import socket

from bukt import protocol as P
from bukt.tcp.admission import Admission, auth_timed_out
from bukt.authguard import AuthGuard, FailureTable
from bukt.tcp.connection import Connection, RespConnection
from bukt.writewait.durability import RingDurability, RingPositions

try:
    from bukt.tcp import _epoll
except ImportError:
    _epoll = None

log = logging.getLogger("bukt.tcp")

LISTEN_BACKLOG = 1024
IDLE_SWEEP = 1.0  # seconds between idle-timeout sweeps (at most idle_timeout / 4)
AUTH_SWEEP = 0.25  # seconds between AUTH-deadline sweeps (at most auth_timeout / 4)


def new_loop(kind: str = "auto") -> asyncio.AbstractEventLoop:
    """uvloop when installed (measured faster than asyncio: bukt/tcp/__init__.py), else
    asyncio. ("auto" prefers the epoll loop of bukt/tcp/_epoll.pyx to both when it is built:
    Worker.run.)"""
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def resp_info(settings, store, durable, connections) -> dict:
    """What the RESP session's INFO and CONFIG GET say of this server
    (bukt/tcp/resp_session.py): fixed at the worker's start, but the client count (this
    worker's connections: each worker process answers for its own)."""
    import time
    from bukt.tcp.resp_pubsub import NOTIFY_FLAGS
    size = 0
    try:
        size = int(store.stats().get("segment_size", 0) or store.stats().get("size", 0))
    except Exception:
        pass
    always = False
    try:
        always = bool(durable.sync_always()) if durable is not None else False
    except Exception:
        pass
    addr = settings.resp_address
    return {"port": addr[1] if addr else 0, "started": time.monotonic(),
            "clients": lambda: len(connections),
            "config": {"save": "", "appendonly": "yes", "appendfsync":
                       "always" if always else "everysec", "databases": "1",
                       "maxmemory": str(size), "maxmemory-policy": "allkeys-lru",
                       "timeout": str(int(settings.idle_timeout)),
                       "maxclients": str(settings.max_connections),
                       "proto-max-bulk-len": str(settings.max_frame),
                       "notify-keyspace-events": NOTIFY_FLAGS}}


class Worker:
    def __init__(self, settings, store, sock: socket.socket, *, index: int = 0, durable=None,
                 auth_table=None, resp_sock: socket.socket | None = None):
        self.settings = settings
        self.resp_sock = resp_sock
        self.store = store
        self.sock = sock
        self.index = index
        token = settings.find_admin_token()
        self.admin_hash = hashlib.sha256(token.encode()).digest() if token else None
        # The durability hook (bukt/tcp/session.py, bukt/writewait/durability.py).
        if durable is None and all(hasattr(store, a) for a in
                                   ("last_pos", "ring_position", "writer_info")):
            durable = RingDurability(store)
        self.durable = durable
        # Room in the change ring is waited for by parking the connection, not here.
        self.ring_wait = getattr(store, "ring_wait", None)
        if self.ring_wait is not None:
            store.ring_wait = 0.0
        self.connections: set[Connection] = set()
        # Who may hold a connection (bukt/tcp/admission.py), and failed AUTH per address,
        # counted in the table the supervisor shares with every worker
        # (bukt/authguard.py; a private one for a worker started alone).
        self.admission = Admission(settings.max_connections,
                                   settings.max_connections_per_address,
                                   settings.auth_timeout)
        self.guard = AuthGuard.from_settings(
            auth_table or FailureTable.private(settings.auth_sources), "tcp", settings, log)
        self.resp_info = resp_info(settings, store, durable, self.connections)
        # An object larger than a frame is refused before it is assembled: read it
        # over HTTP, which streams (bukt/objects/store.py, decode_manifest).
        from bukt import objects
        objects.configure(max_object=settings.max_object,
                          read_limit=settings.max_frame - 1024,
                          read_limit_reason=f"tcp.max_frame ({settings.max_frame}); read "
                          "it over HTTP, which streams objects")
        self.stopping = False
        self.loop = None
        self._resp_server = None
        self._stopped = None
        self._server = None

    def run(self) -> int:
        if self.settings.loop == "epoll" or (self.settings.loop == "auto" and _epoll):
            durable = self.durable
            if isinstance(durable, RingDurability):
                durable = RingPositions(self.store, durable.timeout)
            _epoll.Loop(self.sock, self.store, self.settings, self.admin_hash, durable,
                        self.ring_wait, self.admission, self.guard, self.resp_sock,
                        self.resp_info).run()
            return 0
        self.loop = loop = new_loop(self.settings.loop)
        asyncio.set_event_loop(loop)
        try:
            return loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> int:
        loop = self.loop
        self._stopped = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        self._server = await loop.create_server(
            lambda: Connection(self), sock=self.sock, backlog=LISTEN_BACKLOG)
        if self.resp_sock is not None:
            self._resp_server = await loop.create_server(
                lambda: RespConnection(self), sock=self.resp_sock, backlog=LISTEN_BACKLOG)
        if self.settings.idle_timeout > 0:
            self._sweep()
        if self.settings.auth_timeout > 0:
            self._auth_sweep()
        await self._stopped
        await self._shutdown()
        return 0

    def stop(self):
        if not self.stopping:
            self.stopping = True
            self._stopped.set_result(None)

    async def _shutdown(self):
        self._server.close()  # stop accepting: the kernel hands new connections to others
        if self._resp_server is not None:
            self._resp_server.close()
        for conn in list(self.connections):
            conn.drain()
        deadline = self.loop.time() + self.settings.shutdown_timeout
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.abort()
        await asyncio.sleep(0)

    def _sweep(self):
        timeout = self.settings.idle_timeout
        now = self.loop.time()
        for conn in list(self.connections):
            if conn.idle_for(now) >= timeout:
                conn.close_idle()
        if not self.stopping:
            self.loop.call_later(min(IDLE_SWEEP, timeout / 4), self._sweep)

    def _auth_sweep(self):
        """Closes the connections that did not AUTH in time (bukt/tcp/admission.py)."""
        for conn in self.admission.expired(self.loop.time()):
            conn.shut_out(P.Status.UNAUTHORIZED,
                          auth_timed_out(self.settings.auth_timeout))
        if not self.stopping:
            self.loop.call_later(min(AUTH_SWEEP, self.settings.auth_timeout / 4),
                                 self._auth_sweep)
