# cython: language_level=3, boundscheck=False, wraparound=False
"""A TCP worker's event loop on epoll, driven from Cython (`loop="epoll"`).

It serves the protocol through the same Session and frame loop (bukt/tcp/_wire.pyx) as the
asyncio/uvloop worker (bukt/tcp/connection.py), with the same rules; that module's
docstring is the reference for FLOW CONTROL and CLOSING, and the same test suite runs
on both (TCP_TEST_LOOP=epoll). It exists because it is faster: measured with
bench/tcp.py it spends 13-23% less CPU per request than uvloop (bukt/tcp/__init__.py).

ONE THREAD, LEVEL-TRIGGERED. Each readable connection is read once per wakeup into a
fixed 256 KiB buffer; its whole frames are answered by `_wire.run`; responses are sent
at once, and what the kernel does not take waits in the connection's output buffer for
EPOLLOUT.

STAGING AND PREFETCH. A wakeup first reads every connection that is only readable,
each into its own stretch of the receive buffer, and then answers them in turn where
they were read (a connection with bytes already waiting in its own buffer, c.buf, goes
on there; what is left of a read, a partial frame or frames that flow control holds
back, moves to c.buf). Reading first lets the key of each request be known early: as
each read returns, the table is asked to fetch the key's slot line (bukt._core
prefetch_key, stage 1), and before a connection is answered, the next one's entry
(stage 2). A get otherwise waits for three lines from memory one after the other, which
at 50 connections was 8-10% of the worker's CPU (perf); with the fetches overlapping
the reads and sends, one worker's CPU per request went from 4.54-4.86 to 4.22-4.40 us
(bench/tcp.py, 50 connections). Connections that are also writable or in error are
read in event order, into the buffer past the staged bytes (`rfree`). The order of
answers within a connection is unchanged; across connections it never mattered. A
RESP connection's first GET is hinted the same way, with the bucket the compiled RESP
loop last ran on for it (Conn.resp_bucket); the loop itself reads pipelined GETs
ahead (bukt/tcp/_resp.pyx, PREFETCH).

The worker has no other thread, so the loop keeps the GIL across epoll_wait, recv and
send (releasing and taking it back cost about a tenth of the loop's own CPU per request
on one connection); a signal still interrupts epoll_wait (EINTR). A connection's
interest set is recomputed after every change (`_update`):
EPOLLIN only while it may be read (not draining, output below the high-water mark,
fewer than max_inflight responses waiting for durability), EPOLLOUT only while output
waits.

BUSY POLL (`tcp.busy_poll`, 30 us by default). When nothing is ready the loop does not
sleep at once: it yields the CPU and polls again (epoll_wait with no timeout) for up to
busy_poll, then sleeps. On one connection the next request comes one client round trip
after the response, and on a virtual machine a sleeping worker takes about as long
again to be woken for it: here the median round trip went from about 57 to 20-27 us
(16-17k -> 33-43k requests a second; bench/tcp.py). The poll gives up as soon as
yields show that another task wants the CPU, and it is tried only while polls catch
requests (bukt/writewait/spin.py, SpinCredit), so an idle or lightly loaded worker sleeps at
once.

ROUND YIELD (`tcp.round_yield`, on by default). After a round that served two or more
events the loop calls sched_yield: a task waiting for this CPU (another worker with
requests of its own, or a client) runs now, between rounds, rather than when the
scheduler ends this worker's slice; with nothing waiting it returns at once (about
170 ns here). Under load a worker always finds events, never sleeps, and so never
gives the CPU up on its own. With tcp.slice (bukt/tcp/cpu.py), at 50 connections on
2 vCPUs shared with the load generator (two workers), the slowest 0.1% of requests
went from 4.1-4.3 ms to 0.84-1.5 ms and the slowest 1% from 0.69-0.78 to 0.62-0.72 ms;
alone it moved the 0.1% (1.6-1.8 ms) but not the 1%. A round of one event (one
connection, pipelined or not) does not yield: that client's next request comes only
after this round's response, so the worker soon sleeps on its own.

DURABILITY. Under `fsync: always` a write's response waits until the writer's flushed
position passes the write's ring position (bukt/writewait/durability.py, RingPositions). The
waiting responses of the whole worker form one FIFO by position; while it is not empty
the loop arms the store's flush waker with the first waiter's position (a datagram
socket in the epoll set; the writer sends to it itself once a flush covers that
position: cext/flushwake.pxi) and, when it is readable, releases every response the
flushed position has passed (group commit) and arms again for the next; or answers
WRITER_DOWN past the deadline. It still looks on a timer as well, for the deadlines
and in case the wake-ups do not come (a writer in another network namespace, or a
datagram lost): every millisecond until a wake-up has come, then every
WAITING_LOOK_MS (20 ms), and every millisecond again once the timer finds a flush
that no wake-up announced. With the timer at 1 ms throughout, at 4 `always` clients a
quarter of a worker's epoll_waits while replies waited ended on it with nothing to do,
a wake-up of the worker each. A RESP connection with replies in the FIFO
that sends more commands is settled first: its session answers them at once when the
flushed position has passed its last write (resp_session.py, ORDER), and the flush's
datagram and the new commands can come in one round, so what the flush released must
go out before their replies.

ADMISSION. Who may hold a connection is bukt/tcp/admission.py's decision, not this loop's:
each accept asks it (with the peer's address, from accept4), a connection whose session
has authenticated tells it once, and every AUTH_SWEEP the connections past their AUTH
deadline are closed with the error frame it names.

RESP. With a RESP listener (resp.bind), the loop also accepts on that socket; its
connections (`Conn.resp`) run bukt/tcp/_resp.pyx (the compiled RESP loop, which hands
what it does not take to bukt/tcp/resp_session.py; that module's `run` alone with
resp.fast_path off) instead of the frame loop, with the same stops, and get their refusals, ring-full answers and durability timeouts
as RESP errors. Nothing else differs: the same buffers, flow control, admission and
durability FIFO (a RESP reply behind a waiting write waits for the same position).

RING FULL. The worker never waits for room in the change ring inside the loop (the
store's ring_wait is 0): a request that finds the ring full parks its connection
(bukt/tcp/session.py, RING FULL). The frame stays first in the connection's buffer,
nothing more is read from that peer (its order is kept), and the loop tries the frame
again every millisecond, as the core would have, until the configured ring_wait has
passed since it first parked; then it answers RING_FULL and goes on with the next
frame. Every other connection is served meanwhile. While parked the request takes part
in the ring's claim, as in bukt/tcp/connection.py (bukt/writewait/ringroom.py, RoomWait).
"""
from cpython.bytearray cimport (PyByteArray_AS_STRING, PyByteArray_FromStringAndSize,
                                PyByteArray_GET_SIZE, PyByteArray_Resize)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from cpython.list cimport PyList_Clear, PyList_GET_SIZE
from libc.errno cimport EAGAIN, EINTR, errno
from libc.math cimport INFINITY, ceil
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

import collections as _collections
import functools as _functools
import os as _os
import signal as _signal
import socket as _socket

from bukt import _core
from bukt._core cimport flushed_pos_of, meta_epoch_of, prefetch_key
from bukt.tcp import admission as _admission
from bukt.tcp import stats as _stats
from bukt import errors as _errors
from bukt import protocol as _P
from bukt.writewait import ringroom as _ringroom
from bukt.writewait.ringroom import RoomWait
from bukt.writewait import spin as _spin
from bukt.writewait.flushwait import not_confirmed as _not_confirmed
from bukt.tcp._wire cimport Hot
from bukt.tcp._wire cimport (W_DEFERRED, W_FATAL, W_PARK, W_PARTIAL, W_QUIT,
                         request_key, run_frames)
from bukt.tcp import connection as _connection
from bukt.tcp.frames import WatchWait, ring_full_frame
from bukt.tcp.session import Session
from bukt.tcp import resp_session as _resp
from bukt.tcp import resp_pubsub as _pubsub
from bukt.tcp._resp cimport run_fast as resp_run_fast
from bukt.tcp._resp cimport batch_bucket, request_key as resp_request_key
from bukt.tcp.connection import resp_error_line as _resp_error_line

cdef extern from "<sched.h>" nogil:
    int sched_yield()

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        int fd
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    enum:
        EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLL_CTL_ADD, EPOLL_CTL_MOD, EPOLL_CTL_DEL

cdef extern from "<sys/socket.h>" nogil:
    ctypedef long ssize_t
    ctypedef unsigned int socklen_t
    struct sockaddr:
        pass
    int accept4(int fd, sockaddr *addr, socklen_t *addrlen, int flags)
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    int setsockopt(int fd, int level, int name, const void *val, unsigned int len)
    int shutdown(int fd, int how)
    enum:
        SOCK_NONBLOCK, SOCK_CLOEXEC, MSG_NOSIGNAL, SHUT_WR

cdef extern from "<netinet/in.h>":
    enum:
        IPPROTO_TCP
cdef extern from "<netinet/tcp.h>":
    enum:
        TCP_NODELAY

cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    enum:
        CLOCK_MONOTONIC


cdef extern from "<unistd.h>" nogil:
    int close(int fd)
    ssize_t read(int fd, void *buf, size_t n)

cdef extern from "<sys/timerfd.h>" nogil:
    struct itimerspec:
        timespec it_interval
        timespec it_value
    int timerfd_create(int clockid, int flags)
    int timerfd_settime(int fd, int flags, const itimerspec *new, itimerspec *old)
    enum:
        TFD_NONBLOCK, TFD_CLOEXEC, TFD_TIMER_ABSTIME

cdef inline int clear_list(list l) except -1:
    """`del l[:]` without building a slice object."""
    if PyList_GET_SIZE(l):
        PyList_Clear(l)
    return 0


cdef inline int drop_front(bytearray b, Py_ssize_t n) except -1:
    """`del b[:n]`; all of it without building a slice object."""
    if n >= PyByteArray_GET_SIZE(b):
        PyByteArray_Resize(b, 0)
    elif n > 0:
        del b[:n]
    return 0




cdef inline double monotonic() noexcept nogil:
    """time.monotonic() (the same clock), without a Python call."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9

cdef enum:
    IDLE_MS = 1000          # epoll's timeout with no connection: no sweep has work (a
    #                         connection, a signal or a stop ends the wait at once)
    RBUF = 262144
    MAXEV = 256
    STAGE_MIN = 16384       # STAGING: a staged read gets at least this much of rbuf,
    STAGE_KEEP = 65536      # and the staged reads leave this much for the others

# The receive buffer, shared by every connection of the worker: a bytearray, so that
# frames can be handled where recv put them (RECEIVE in Loop._read); never resized.
cdef bytearray rbuf_obj = bytearray(RBUF)
cdef char *rbuf = PyByteArray_AS_STRING(rbuf_obj)

# bukt/tcp/connection.py's, as C values
cdef double LINGER = _connection.LINGER
cdef double LINGER_MAX = _connection.LINGER_MAX

# From the core, without a Python call (cimported above: bukt/_core.pxd):
# meta_epoch_of, the segment's meta_epoch: a session's token is re-checked
# (Session.recheck: a Python call and a look at the bucket's tokens) only when the
# bucket table changed since its connection last looked (REVOCATION in
# bukt/tcp/session.py). For a bukt._core.Store only; 0 means "look".
# prefetch_key (PREFETCH): memory fetches for a key read soon, in two stages
# (cext/bucket.pxi says which lines). For a bukt._core.Bucket only.

cdef double RETRY = _ringroom.RETRY   # seconds between attempts of a parked request
# bukt/writewait/spin.py's, as C values: the busy poll compares against them at every yield
cdef double SLOW_YIELD_S = _spin.SLOW_YIELD_S
cdef int SLOW_YIELDS = _spin.SLOW_YIELDS
_LIMIT = _P.frame(_P.Status.LIMIT_EXCEEDED, 0, _admission.TOO_MANY.encode())
cdef double AUTH_SWEEP = 0.25  # seconds between AUTH-deadline sweeps (bukt/tcp/admission.py)
cdef int WAITING_LOOK_MS = 20  # DURABILITY: while responses wait and the writer's wake-ups
                               # come, the loop also looks this often; 1 ms while they do not

# This worker's row of bukt/tcp/stats.py, as bukt/tcp/_wire.pyx and _resp.pyx keep it:
# the durability FIFO counts its gauge and the bytes it releases from C (stats.use)
include "statsrow.pxi"
cdef Py_ssize_t ST_FACE = _stats.FACE_WORDS, ST_INFLIGHT = _stats.INFLIGHT
cdef Py_ssize_t ST_OUT = _stats.BYTES_OUT


def set_stats(row):
    """Count into `row` (a memoryview of u64 words: bukt/tcp/stats.py), or None: stop."""
    point_stats(row)


cdef inline void count_waiting(bint resp, int delta) noexcept:
    """stats.inflight: a response of the face starts (+1) or stops (-1) waiting."""
    if STATS != NULL:
        STATS[ST_FACE * resp + ST_INFLIGHT] += <uint64_t><int64_t>delta


cdef inline void count_sent(bint resp, Py_ssize_t n) noexcept:
    """stats.sent: a response that waited, n bytes, handed to its connection."""
    if STATS != NULL:
        STATS[ST_FACE * resp + ST_OUT] += <uint64_t>n


cdef object peer_address(const unsigned char *sa, socklen_t n):
    """The text form of the IP address of a sockaddr from accept4 ("-": not IP)."""
    cdef int family = (<const unsigned short *>sa)[0]
    if family == _socket.AF_INET and n >= 8:
        return _socket.inet_ntop(family, sa[4:8])
    if family == _socket.AF_INET6 and n >= 24:
        return _socket.inet_ntop(family, sa[8:24])
    return "-"


cdef class Conn:
    cdef int fd
    cdef bytearray buf          # received bytes not yet handled
    cdef bytearray outbuf       # responses the kernel has not taken yet
    cdef object session
    cdef uint32_t events        # the interest set registered with epoll
    cdef int inflight           # responses waiting for durability
    cdef bint stalled           # whole frames wait in buf for flow control
    cdef bint draining          # read no more requests; answer what is buffered
    cdef bint lingering         # half-closed; reading and discarding until quiet
    cdef bint peer_eof
    cdef bint processing
    cdef bint counted           # holds a slot of the worker's Admission
    cdef bint pending           # admitted, not authenticated yet (bukt/tcp/admission.py)
    cdef bint parked            # its first frame waits for room in the change ring
    cdef double park_until      # when that wait ends with RING_FULL (0: none)
    cdef object room_wait       # its claim on ring room (RoomWait) while it waits
    cdef double last_active
    cdef double finish_started
    cdef uint64_t epoch         # the meta_epoch its session's token was checked at
    cdef Hot hot                # what run_frames last read of its session
    cdef bint resp              # a connection of the RESP listener (bukt/tcp/resp_session.py)
    cdef bint subscribed        # its RESP session watches the feed (KEYSPACE NOTIFICATIONS)
    cdef double sub_sent        # when a pump last gave it messages (COALESCING)
    cdef bint sub_held          # the feed moved within the window of that: in Loop.sub_held
    cdef object resp_bucket     # RESP: its session's bucket after its last compiled run,
                                # if a bukt._core one (PREFETCH: a hint, never trusted)


cdef inline _end_wait(Conn c):
    """The parked request went through, or gave up, or its connection went: the claim
    its wait held goes."""
    if c.room_wait is not None:
        c.room_wait.end()
        c.room_wait = None


cdef class Loop:
    cdef int epfd
    cdef object sock
    cdef int listen_fd
    cdef dict conns
    cdef set lingering
    cdef set parked              # connections waiting for room in the change ring
    cdef object waiters          # deque of (pos, since, conn, response, rid)
    cdef object store, settings, admin_hash, durable
    cdef object admission         # who may hold a connection (bukt/tcp/admission.py)
    cdef object guard             # failed AUTH per address (bukt/authguard.py)
    cdef double auth_timeout, next_auth_sweep
    cdef Py_ssize_t max_frame, high_water
    cdef int max_inflight
    cdef bint stopping
    cdef object ring_wait        # seconds a request may park (None: the store waits)
    cdef list out                # responses of one _process; reused, always left empty
    cdef double next_retry
    cdef double now              # monotonic(), read once per wakeup
    cdef Py_ssize_t rfree        # rbuf[rfree:] is free: staged reads are below it
    cdef object notifier         # the store's flush_waker(), from the first durable wait
    cdef int notify_fd           # its socket (or eventfd), in the epoll set; -1 before
    cdef int look_ms             # DURABILITY: the timer while responses wait
    cdef object spin             # BUSY POLL: SpinCredit(settings.busy_poll)
    cdef double busy_poll        # its limit; 0: the loop never asks the credit
    cdef bint core_store         # store is a bukt._core.Store: meta_epoch and PREFETCH apply
    cdef bint round_yield        # ROUND YIELD: settings.round_yield
    cdef object resp_sock        # RESP: the Redis protocol's listening socket, or None
    cdef int resp_fd             # its fd; -1 without one
    cdef object resp_info        # what its sessions' INFO and CONFIG GET say
    cdef bint resp_fast          # resp.fast_path: RESP through bukt/tcp/_resp.pyx
    cdef list watching           # WATCH long polls: [WatchWait, Conn] (WATCH WAITS)
    cdef object feed_note        # bukt.feed.WakeFd: readable after the feed moves
    cdef int feed_fd             # its eventfd, in the epoll set; -1 before
    cdef bint feed_moved         # it was readable since the watches were last asked
    cdef double next_watch       # the earliest deadline among them
    cdef set subscribed          # KEYSPACE NOTIFICATIONS: connections watching the feed
    cdef int sub_fd              # the eventfd the feed's Waker writes; -1 before
    cdef object sub_cb, sub_waker
    cdef Py_ssize_t max_lag      # feed.max_lag: a subscriber that does not read is cut off
    cdef double sub_window       # resp.coalesce: a busy subscriber's sends at most this often
    cdef list sub_held           # subscribers the feed moved for within their window
    cdef double sub_next         # the earliest end of their windows
    cdef int sub_timer           # a timerfd, in the epoll set, set to sub_next; -1 before
    cdef double sub_armed        # when it goes off (0: it went off)
    cdef double sub_slack        # a held subscriber goes this much before its window ends

    def __init__(self, sock, store, settings, admin_hash, durable, ring_wait=None,
                 admission=None, guard=None, resp_sock=None, resp_info=None):
        self.sock = sock
        self.listen_fd = sock.fileno()
        self.resp_sock = resp_sock
        self.resp_fd = resp_sock.fileno() if resp_sock is not None else -1
        self.resp_info = resp_info
        self.resp_fast = getattr(settings, "resp_fast_path", True)
        self.store, self.settings = store, settings
        self.core_store = type(store) is _core.Store
        self.admin_hash, self.durable = admin_hash, durable
        self.max_frame = settings.max_frame
        self.high_water = settings.write_high_water
        self.max_inflight = settings.max_inflight
        if admission is None:
            admission = _admission.Admission(settings.max_connections,
                                             settings.max_connections_per_address,
                                             settings.auth_timeout)
        self.admission, self.guard = admission, guard
        self.auth_timeout = admission.auth_timeout
        self.next_auth_sweep = 0
        self.conns = {}
        self.lingering = set()
        self.parked = set()
        self.out = []
        self.ring_wait = ring_wait
        self.next_retry = 0
        self.waiters = _collections.deque()
        self.notifier = None
        self.notify_fd = -1
        self.look_ms = 1
        self.watching = []
        self.feed_note = None
        self.feed_fd = -1
        self.feed_moved = False
        self.next_watch = 0
        self.busy_poll = settings.busy_poll
        self.spin = _spin.SpinCredit(self.busy_poll)
        self.round_yield = settings.round_yield
        self.stopping = False
        self.subscribed = set()
        self.sub_fd = -1
        self.max_lag = settings.feed_max_lag
        self.sub_window = settings.resp_coalesce
        self.sub_held = []
        self.sub_next = 0
        self.sub_timer = -1
        self.sub_armed = 0
        # (so that those whose windows end close together go in one wakeup)
        self.sub_slack = self.sub_window / 4
        if resp_info is not None:   # INFO's connected_clients: this worker's, open ones
            resp_info["clients"] = lambda: len(self.conns) - len(self.lingering)
        self.epfd = epoll_create1(0)
        self._ctl(EPOLL_CTL_ADD, self.listen_fd, EPOLLIN)
        if self.resp_fd >= 0:
            self._ctl(EPOLL_CTL_ADD, self.resp_fd, EPOLLIN)

    cdef void _ctl(self, int op, int fd, uint32_t events):
        cdef epoll_event ev
        ev.events = events
        ev.data.fd = fd
        epoll_ctl(self.epfd, op, fd, &ev)

    def stop(self, *args):
        self.stopping = True

    # -- the loop ------------------------------------------------------------------------

    def run(self):
        cdef epoll_event events[MAXEV]
        cdef int n, i, fd, timeout
        cdef uint32_t ev
        cdef Py_ssize_t off
        cdef ssize_t got[MAXEV]         # STAGING: what recv returned for events[i] ...
        cdef Py_ssize_t at[MAXEV]       # ... where in rbuf (-1: not staged)
        cdef int err[MAXEV]
        cdef list staged = [None] * MAXEV
        cdef int j
        cdef double idle = self.settings.idle_timeout
        cdef double next_sweep = monotonic() + 1.0
        cdef double deadline = 0
        cdef int epfd = self.epfd
        cdef uint64_t expirations
        _signal.signal(_signal.SIGTERM, self.stop)
        _signal.signal(_signal.SIGINT, self.stop)
        while True:
            # Python signal handlers run only when Python code runs or this is called:
            # without it a SIGTERM that lands outside epoll_wait would wait for traffic.
            PyErr_CheckSignals()
            if self.stopping:
                if deadline == 0:
                    deadline = monotonic() + self.settings.shutdown_timeout
                    self._begin_shutdown()
                if not self.conns or monotonic() >= deadline:
                    break
            timeout = 1 if self.parked else self.look_ms if self.waiters else (
                50 if self.lingering or self.stopping else 200 if self.conns else IDLE_MS)
            if self.watching:
                timeout = min(timeout, max(0, <int>((self.next_watch - monotonic()) * 1000)) + 1)
            if self.sub_held:    # COALESCING: up to the first window's end, in whole ms
                timeout = min(timeout, max(0, <int>ceil((self.sub_next - monotonic()) * 1000)))
            n = self._busy_poll(events)
            if n == 0 and (self.subscribed or self.watching):
                # KEYSPACE NOTIFICATIONS and WATCH WAITS: the Waker's thread needs the
                # GIL to wake us
                with nogil:
                    n = epoll_wait(epfd, events, MAXEV, timeout)
            elif n == 0:
                n = epoll_wait(self.epfd, events, MAXEV, timeout)
            self.now = monotonic()
            if n < 0:
                if errno == EINTR:
                    PyErr_CheckSignals()  # runs the Python handler: stop()
                    continue
                raise OSError(errno, "epoll_wait")
            # STAGING: every plainly readable connection is read first, each into its
            # own stretch of rbuf, then each is handled where it was read. The others
            # (EPOLLOUT or an error as well: _flush and _read, in event order) read
            # into rbuf[rfree:], past the staged bytes still to be handled.
            off = 0
            for i in range(n):
                at[i] = -1
                fd = events[i].data.fd
                if (events[i].events != EPOLLIN or fd == self.listen_fd
                        or fd == self.resp_fd or fd == self.notify_fd
                        or fd == self.feed_fd or RBUF - STAGE_KEEP - off < STAGE_MIN):
                    continue
                conn = self.conns.get(fd)
                if conn is None or not (<Conn>conn).events & EPOLLIN:
                    continue
                got[i] = recv(fd, rbuf + off, RBUF - STAGE_KEEP - off, 0)
                err[i] = errno if got[i] < 0 else 0
                at[i] = off
                staged[i] = conn
                if got[i] > 0:
                    self._hint(conn, off, got[i], 1)  # overlaps the next recv
                    off += got[i]
            self.rfree = off
            for i in range(n):
                if at[i] >= 0:
                    conn = staged[i]
                    staged[i] = None
                    for j in range(i + 1, n):        # overlaps handling this one
                        if at[j] >= 0:
                            if got[j] > 0:
                                self._hint(staged[j], at[j], got[j], 2)
                            break
                    if (<Conn>conn).fd >= 0:
                        self._received(conn, at[i], got[i], err[i])
                    continue
                fd = events[i].data.fd
                ev = events[i].events
                if fd == self.listen_fd or fd == self.resp_fd:
                    if not self.stopping:
                        self._accept(fd)
                    continue
                if fd == self.notify_fd:
                    self.notifier.clear()       # _settle below reads the position
                    self.look_ms = WAITING_LOOK_MS  # the wake-ups come: the timer may wait
                    continue
                if fd == self.feed_fd:
                    self.feed_note.clear()      # _settle_watches below asks them
                    self.feed_moved = True
                    continue
                if fd == self.sub_fd:
                    _os.eventfd_read(fd)
                    self._feed_moved()
                    continue
                if fd == self.sub_timer:
                    read(fd, &expirations, 8)
                    self.sub_armed = 0
                    if self.sub_held:
                        self._release_held()
                    continue
                conn = self.conns.get(fd)
                if conn is None:
                    continue
                if ev & (EPOLLERR | EPOLLHUP) and not ev & EPOLLIN:
                    # A reset, or both directions shut: nothing more can be delivered.
                    # (Reported whatever the interest set, so it must end here, or the
                    # level-triggered loop would spin on it.)
                    self._close(conn)
                    continue
                if ev & EPOLLOUT:
                    self._flush(conn)
                    if (<Conn>conn).subscribed:
                        self._pump(conn)
                if ev & (EPOLLIN | EPOLLERR | EPOLLHUP) and (<Conn>conn).events & EPOLLIN:
                    self._read(conn)
                elif ev & (EPOLLERR | EPOLLHUP):
                    self._close(conn)
            self.rfree = 0
            if self.sub_held and monotonic() >= self.sub_next:
                self._release_held()
            if self.waiters:
                if n == 0 and self.look_ms > 1 and self._first_flushed():
                    self.look_ms = 1            # the timer, not a wake-up, found the flush
                self._settle()
            if self.watching:
                self._settle_watches()
            if self.parked:
                self._retry_parked()
            if self.lingering:
                self._check_linger()
            if self.auth_timeout > 0 and self.now >= self.next_auth_sweep:
                self.next_auth_sweep = self.now + min(AUTH_SWEEP, self.auth_timeout / 4)
                self._auth_sweep()
            if idle > 0 and monotonic() >= next_sweep:
                next_sweep = monotonic() + min(1.0, idle / 4)
                self._sweep(idle)
            if n >= 2 and self.round_yield:
                sched_yield()                   # ROUND YIELD
        for conn in list(self.conns.values()):
            self._close(conn)
        if self.sub_fd >= 0:
            self.sub_waker.remove(self.sub_cb)
            close(self.sub_fd)
        if self.sub_timer >= 0:
            close(self.sub_timer)
        close(self.epfd)

    cdef int _busy_poll(self, epoll_event *events):
        """BUSY POLL: when the credit allows, poll at once, then yield the CPU and
        poll again for up to the credit's limit, while no yield shows that another
        task wants this CPU. The events found, 0 (sleep), or -1 (errno set, as
        epoll_wait's)."""
        cdef double limit, t, end
        cdef int n, slow = 0
        if self.busy_poll == 0:
            return 0
        limit = self.spin.next()
        if limit == 0:
            return 0
        end = monotonic() + limit
        n = epoll_wait(self.epfd, events, MAXEV, 0)
        while n == 0:
            t = monotonic()
            if t >= end:
                break
            sched_yield()
            if monotonic() - t > SLOW_YIELD_S:
                slow += 1
                if slow >= SLOW_YIELDS:
                    break
            n = epoll_wait(self.epfd, events, MAXEV, 0)
        self.spin.paid(n != 0)
        return n

    # -- connections ---------------------------------------------------------------------

    cdef _accept(self, int listen_fd):
        cdef int fd, one = 1
        cdef bint resp = listen_fd == self.resp_fd
        cdef Conn c
        cdef unsigned char sa[128]
        cdef socklen_t salen
        while True:
            salen = sizeof(sa)
            fd = accept4(listen_fd, <sockaddr *>sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC)
            if fd < 0:
                return
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
            c = Conn()
            c.fd = fd
            c.buf = bytearray()
            c.outbuf = bytearray()
            c.hot = Hot()
            c.last_active = monotonic()
            c.events = EPOLLIN
            c.resp = resp
            self.conns[fd] = c
            self._ctl(EPOLL_CTL_ADD, fd, EPOLLIN)
            address = peer_address(sa, salen)
            refusal, evicted = self.admission.admit(c, address, c.last_active, resp)
            if evicted is not None:  # made room: the oldest unauthenticated one goes
                (<Conn>evicted).counted = False
                self._shut_out(evicted, _P.Status.LIMIT_EXCEEDED, _admission.MADE_ROOM)
            if refusal is not None:
                # answered, then closed; holds no slot meanwhile
                if resp:
                    c.outbuf += _resp_error_line(refusal)
                else:
                    c.outbuf += _LIMIT if refusal is _admission.TOO_MANY else _P.frame(
                        _P.Status.LIMIT_EXCEEDED, 0, refusal.encode())
                c.draining = True
                self._flush(c)
                continue
            c.counted = True
            c.pending = True
            if resp:
                c.session = _resp.RespSession(
                    self.store, admin_hash=self.admin_hash, max_frame=self.max_frame,
                    durable=self.durable, guard=self.guard, peer=address,
                    max_keys=self.settings.resp_max_keys, info=self.resp_info)
            else:
                c.session = Session(self.store, admin_hash=self.admin_hash,
                                    max_frame=self.max_frame, durable=self.durable,
                                    guard=self.guard, peer=address,
                                    watch_max_wait=self.settings.watch_max_wait)
            c.session.park_ring_full = self.ring_wait is not None

    cdef _read(self, Conn c):
        cdef ssize_t r = recv(c.fd, rbuf + self.rfree, RBUF - self.rfree, 0)
        self._received(c, self.rfree, r, errno if r < 0 else 0)

    cdef void _hint(self, Conn c, Py_ssize_t off, ssize_t r, int stage):
        """PREFETCH for the key of the GET or SET that starts at rbuf[off:off + r] (on
        a RESP connection, of the one-key command: bukt/tcp/_resp.pyx, PREFETCH)."""
        cdef uint32_t klen
        cdef Py_ssize_t kat
        if not self.core_store or c.session is None:
            return
        if c.resp:
            if c.resp_bucket is None:       # (set only by the compiled loop)
                return
            kat = resp_request_key(rbuf + off, r, self.max_frame, &klen)
            if kat >= 0:
                prefetch_key(c.resp_bucket, rbuf + off + kat, klen, stage)
            return
        kat = request_key(rbuf + off, r, &klen)
        if kat < 0:
            return
        bucket = c.hot.bucket if not c.hot.stale else (<object>c.session).bucket
        if bucket is not None:
            prefetch_key(bucket, rbuf + off + kat, klen, stage)

    cdef _received(self, Conn c, Py_ssize_t off, ssize_t r, int err):
        """What recv returned for c (r, errno err), its bytes at rbuf[off:off + r]."""
        cdef Py_ssize_t n
        if r < 0:
            if err != EAGAIN and err != EINTR:
                self._close(c)
            return
        c.last_active = self.now
        if r == 0:
            c.peer_eof = True
            if c.lingering:
                self._close(c)
                return
            c.draining = True
            self._maybe_finish(c)
            self._update(c)
            return
        if c.lingering or c.draining:
            return  # closing: what arrives now is not a request we will answer
        if c.resp and c.inflight and self.waiters:
            # ORDER (bukt/tcp/resp_session.py): a reply behind a write waits only while
            # the flushed position has not passed it, and the session looks at the
            # position itself; so what the position has released goes out first, or the
            # new commands' replies (in this round) would overtake it
            self._settle()
            if c.fd < 0 or c.lingering or c.draining:
                return  # (its buffered frames, run by the settle, ended it)
        if (PyByteArray_GET_SIZE(c.buf) == 0 and not c.processing and not c.parked
                and c.session is not None):
            # RECEIVE: nothing of this peer's waits, so its frames are handled where recv
            # put them; only what is left over (a partial frame, or frames that flow
            # control holds back) is copied to c.buf.
            self._run(c, rbuf_obj, off, off + r)
            return
        n = PyByteArray_GET_SIZE(c.buf)
        PyByteArray_Resize(c.buf, n + r)
        memcpy(PyByteArray_AS_STRING(c.buf) + n, rbuf + off, r)
        self._process(c)

    cdef _process(self, Conn c):
        """Handles the whole frames of c.buf that flow control allows."""
        self._run(c, c.buf, 0, PyByteArray_GET_SIZE(c.buf))

    cdef _run(self, Conn c, bytearray buf, Py_ssize_t start, Py_ssize_t size):
        """Handles the whole frames of buf[:size] (c.buf, or the receive buffer when
        c.buf is empty) that flow control allows; what is left of the receive buffer
        moves to c.buf."""
        cdef list out = self.out
        cdef Py_ssize_t pos = start
        cdef uint64_t epoch
        cdef int why
        cdef bint ticketed = False
        cdef Py_ssize_t min_request = 1 if c.resp else 4
        if c.processing or c.parked or c.fd < 0 or c.session is None:
            return  # (a parked connection is tried again by _retry_parked)
        c.processing = True
        c.stalled = False
        if c.room_wait is not None:  # a parked frame's try, its claim counted as its own
            self.store.ring_ticket = c.room_wait.ticket
            ticketed = True
        try:
            while size - pos >= min_request:
                if len(c.outbuf) >= self.high_water or c.inflight >= self.max_inflight:
                    c.stalled = True
                    break
                if c.resp and self.resp_fast:
                    epoch = meta_epoch_of(self.store) if self.core_store else 0
                    pos = resp_run_fast(buf, size, pos, c.session, self.max_frame, out,
                                        self.high_water, &why, epoch == 0 or epoch != c.epoch)
                    c.epoch = epoch
                    c.resp_bucket = batch_bucket()
                elif c.resp:
                    pos, why = _resp.run(buf, size, pos, c.session, self.max_frame, out,
                                         self.high_water)
                else:
                    epoch = meta_epoch_of(self.store) if self.core_store else 0
                    pos = run_frames(buf, size, pos, c.session, self.max_frame, out,
                                     self.high_water, &why, epoch == 0 or epoch != c.epoch,
                                     c.hot)
                    c.epoch = epoch
                if ticketed:
                    self.store.ring_ticket = 0
                    ticketed = False
                if c.park_until and (pos != start or why != W_PARK):
                    c.park_until = 0  # the parked frame went through
                    _end_wait(c)
                d = out.pop() if why == W_DEFERRED else None
                if why == W_PARK:
                    now = monotonic()
                    if not c.park_until:
                        c.park_until = now + self.ring_wait
                        c.room_wait = RoomWait(self.store, now, c.session.park_room)
                    if now < c.park_until:
                        c.room_wait.poll(now)
                        c.parked = True
                        self.parked.add(c)
                    else:  # waited long enough: RING_FULL, and on to the next frame
                        c.park_until = 0
                        _end_wait(c)
                        if c.resp:
                            answer, pos = _resp.ring_full_answer(c.session, buf, pos, size,
                                                                 self.ring_wait)
                            out.append(answer)
                        else:
                            out.append(ring_full_frame(buf, pos, self.ring_wait))
                            pos += int.from_bytes(buf[pos:pos + 4], "big")
                elif why == W_FATAL:
                    if not c.resp:  # (the RESP session has answered it already)
                        length = int.from_bytes(buf[pos:pos + 4], "big")
                        try:
                            _P.check_length(length, self.max_frame)
                        except _errors.ProtocolError as exc:
                            out.append(_P.frame(_P.Status.PROTOCOL_ERROR, 0,
                                                str(exc).encode()))
                    pos = size
                    c.draining = True
                elif why == W_QUIT:  # nothing after QUIT is answered
                    pos = size
                    c.draining = True
                if out:
                    if len(out) == 1 and not c.outbuf:
                        self._send_response(c, out[0])  # FAST PATH: no copy to outbuf
                    else:
                        for r in out:
                            c.outbuf += r
                        self._send(c)
                    clear_list(out)
                if d is not None:
                    self._defer(c, d)
                if why == W_PARTIAL or c.parked:
                    break
                if c.fd < 0:
                    break
        finally:
            if ticketed:
                self.store.ring_ticket = 0
            c.processing = False
            clear_list(out)  # shared by every connection: never left with another's answers
        if c.fd < 0:
            return
        if c.pending and (c.session.bucket is not None or c.session.admin):
            c.pending = False               # authenticated: no deadline, never made room of
            self.admission.authenticated(c)
        if buf is c.buf:
            drop_front(buf, pos)            # (start is 0 for c.buf)
        elif pos < size:
            c.buf = PyByteArray_FromStringAndSize(PyByteArray_AS_STRING(buf) + pos, size - pos)
        if c.resp and (c.subscribed or c.session.subs is not None):
            self._sync_sub(c)
        self._update(c)
        self._maybe_finish(c)

    cdef _send(self, Conn c):
        cdef ssize_t w
        cdef const char *p
        cdef Py_ssize_t n = len(c.outbuf)
        if not n or c.fd < 0:
            return
        p = c.outbuf
        w = send(c.fd, p, n, MSG_NOSIGNAL)
        if w < 0:
            if errno != EAGAIN and errno != EINTR:
                self._close(c)
            return
        drop_front(c.outbuf, w)

    cdef _send_response(self, Conn c, bytes r):
        """Sends one response while nothing else waits; what the kernel does not take
        waits in c.outbuf."""
        cdef ssize_t w
        cdef Py_ssize_t n = PyBytes_GET_SIZE(r)
        w = send(c.fd, PyBytes_AS_STRING(r), n, MSG_NOSIGNAL)
        if w < 0:
            if errno != EAGAIN and errno != EINTR:
                self._close(c)
                return
            w = 0
        if w < n:
            c.outbuf += r[w:]

    cdef _flush(self, Conn c):
        """EPOLLOUT, or new output: send, then let flow control look again."""
        self._send(c)
        if c.fd < 0:
            return
        self._update(c)
        if c.stalled and len(c.outbuf) < self.high_water and c.inflight < self.max_inflight:
            self._process(c)  # flow control lifted: the buffered frames go first
        self._maybe_finish(c)

    cdef _update(self, Conn c):
        cdef uint32_t want = 0
        if c.fd < 0:
            return
        if c.lingering or (not c.draining and not c.parked and len(c.outbuf) < self.high_water
                           and c.inflight < self.max_inflight):
            want |= EPOLLIN
        if c.outbuf:
            want |= EPOLLOUT
        if want != c.events:
            c.events = want
            self._ctl(EPOLL_CTL_MOD, c.fd, want)

    # -- KEYSPACE NOTIFICATIONS (bukt/tcp/resp_pubsub.py) ----------------------------------
    # The feed's Waker (a thread) makes sub_fd readable after each of the writer's
    # batches. COALESCING: a subscriber that was last given messages longer ago than
    # resp.coalesce is pumped at once (a paced event is not delayed); one given messages
    # within it is held until its window ends (up to a quarter of the window sooner, so
    # that one wakeup releases those whose windows end close together), and what came
    # meanwhile goes out in one send. A pump reads every event the feed has for it (up
    # to the high-water mark) and sends it all at once: the send, not the event, is what
    # a subscriber costs the worker (most of it in the kernel, a loopback send waking
    # the reader).

    cdef _sync_sub(self, Conn c):
        """Starts or stops pumping the feed to c as its session subscribes or ends."""
        subs = c.session.subs
        cdef bint want = (subs is not None and subs.watcher is not None and c.fd >= 0
                          and not c.draining)
        if want == c.subscribed:
            return
        c.subscribed = want
        if not want:
            self.subscribed.discard(c)
            if not self.subscribed and self.sub_waker is not None:
                self.sub_waker.remove(self.sub_cb)     # no wakeups for nobody
            return
        if self.sub_fd < 0:
            self.sub_fd = _os.eventfd(0, _os.EFD_NONBLOCK | _os.EFD_CLOEXEC)
            self._ctl(EPOLL_CTL_ADD, self.sub_fd, EPOLLIN)
            self.sub_cb = _functools.partial(_os.eventfd_write, self.sub_fd, 1)
            self.sub_waker = subs.watcher.waker()   # (one a process: every watcher's)
        self.sub_waker.add(self.sub_cb)             # (a set: adding again is nothing)
        self.subscribed.add(c)
        self._pump(c)

    cdef _feed_moved(self):
        """The feed moved: pump the subscribers whose window is over, hold the others
        (COALESCING)."""
        cdef Conn c
        cdef double now = monotonic(), due
        cdef double nxt = self.sub_next if self.sub_held else INFINITY
        _pubsub.begin_round()
        try:
            for conn in list(self.subscribed):
                c = <Conn>conn
                if c.sub_held:
                    continue
                due = c.sub_sent + self.sub_window
                if now + self.sub_slack >= due:
                    self._pump(c)
                else:
                    nxt = min(nxt, due)
                    c.sub_held = True
                    self.sub_held.append(c)
        finally:
            _pubsub.end_round()
        if self.sub_held:
            self._hold_until(nxt)

    cdef _release_held(self):
        """Pumps the held subscribers whose window is over (COALESCING)."""
        cdef Conn c
        cdef double now = monotonic(), due
        cdef double nxt = INFINITY
        held, self.sub_held = self.sub_held, []
        _pubsub.begin_round()
        try:
            for conn in held:
                c = <Conn>conn
                if not c.sub_held:
                    continue
                due = c.sub_sent + self.sub_window
                if now + self.sub_slack >= due or c.fd < 0 or not c.subscribed:
                    c.sub_held = False
                    if c.fd >= 0 and c.subscribed:
                        self._pump(c)
                else:
                    nxt = min(nxt, due)
                    self.sub_held.append(c)
        finally:
            _pubsub.end_round()
        if self.sub_held:
            self._hold_until(nxt)

    cdef _hold_until(self, double at):
        """The first held subscriber's window ends at `at` (monotonic seconds): the
        timerfd wakes the loop then, to the microsecond (epoll_wait's timeout counts
        whole milliseconds: a 1 ms window would often have become 2). Set once a round,
        and only when it would not go off by then anyway: on this VM a timerfd_settime
        cost as much as ten sends (perf: 12% of the worker when set per subscriber)."""
        cdef itimerspec t
        self.sub_next = at
        if self.sub_armed > monotonic() and self.sub_armed <= at:
            return                      # it goes off first; the release sets it again
        if self.sub_timer < 0:
            self.sub_timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
            if self.sub_timer < 0:
                return                  # (the loop's timeout still ends the wait)
            self._ctl(EPOLL_CTL_ADD, self.sub_timer, EPOLLIN)
        self.sub_armed = at
        t.it_interval.tv_sec = t.it_interval.tv_nsec = 0
        t.it_value.tv_sec = <long>at
        t.it_value.tv_nsec = <long>((at - <long>at) * 1e9)
        if t.it_value.tv_sec == 0 and t.it_value.tv_nsec == 0:
            t.it_value.tv_nsec = 1      # (zero would disarm it)
        timerfd_settime(self.sub_timer, TFD_TIMER_ABSTIME, &t, NULL)

    cdef _pump(self, Conn c):
        """What the feed has for c, in one send, while its output is below the
        high-water mark and no reply of its waits for the disk (a message never
        overtakes a reply); above the mark, only whether it is so far behind that it
        is cut off."""
        subs = c.session.subs
        if c.fd < 0 or c.draining or subs is None or subs.watcher is None:
            self._sync_sub(c)
            return
        if c.inflight:
            return                       # _settle pumps once the replies are out
        if len(c.outbuf) >= self.high_water:
            if subs.lagging(self.max_lag):
                self._end_sub(c, subs.cutoff(self.max_lag))
            return
        data, n, end, more = subs.pump(self.high_water - len(c.outbuf))
        if data:
            c.outbuf += data
            c.sub_sent = monotonic()
            _stats.pubsub_sent(n, len(data))
        if end is not None:
            self._end_sub(c, end)
            return
        if data:
            self._send(c)               # one send for all of it
        if c.fd >= 0:
            self._sync_sub(c)
            self._update(c)

    cdef _end_sub(self, Conn c, bytes reply):
        """c is cut off (or its token revoked): `reply` is its last."""
        c.session.end_subscriptions()
        c.outbuf += reply
        c.buf = bytearray()
        c.stalled = False
        c.draining = True
        self._sync_sub(c)
        self._flush(c)

    # -- durability waits ----------------------------------------------------------------

    cdef _defer(self, Conn c, d):
        c.inflight += 1
        if type(d.wait) is WatchWait:
            self._watch_feed(c, d.wait)
            return
        count_waiting(c.resp, 1)           # its face's gauge (bukt/tcp/stats.py)
        if not self.waiters:
            self._watch_flushes(True, d.wait)  # (the round ends with _settle either way)
        # (when it started waiting: the timeout is read when the position has not come)
        self.waiters.append((d.wait, monotonic(), c, d.response, d.request_id))

    cdef bint _watch_flushes(self, bint on, uint64_t pos=0):
        """Have the writer wake the loop once the flushed position reaches `pos` (the
        first waiter's), or not at all. True when it is there already: look again."""
        if self.notifier is None:
            if not on:
                return False
            self.notifier = self.store.flush_waker()
            self.notify_fd = self.notifier.fd
            self._ctl(EPOLL_CTL_ADD, self.notify_fd, EPOLLIN)
        if on:
            return self.notifier.arm(pos)
        self.notifier.disarm()
        return False

    cdef bint _first_flushed(self):
        """The flushed position has passed the first waiting response's."""
        pos = self.waiters[0][0]
        if self.core_store:
            return <uint64_t>pos <= flushed_pos_of(self.store)
        return pos <= self.store.ring_position()[2]

    cdef double _durable_timeout(self):
        return getattr(self.durable, "timeout", 5.0)

    cdef _settle(self):
        waiters = self.waiters
        while True:
            self._settle_once()
            if not waiters:
                self._watch_flushes(False)
                return
            # the writer wakes us past the new first waiter; if it is flushed already
            # (between the look and the arming), look again
            if not self._watch_flushes(True, waiters[0][0]):
                return

    cdef _settle_once(self):
        cdef uint64_t flushed
        cdef double now = monotonic(), timeout = -1
        if self.core_store:
            flushed = flushed_pos_of(self.store)
        else:
            flushed = self.store.ring_position()[2]
        waiters = self.waiters
        while waiters:
            pos, since, c, response, rid = waiters[0]
            if <uint64_t>pos <= flushed:
                pass
            else:
                if timeout < 0:
                    timeout = self._durable_timeout()
                if now - <double>since < timeout:
                    break
                if (<Conn>c).resp:
                    # a write answers that it is not confirmed; a read behind it goes as is
                    if rid is not None:
                        response = _resp.WRITER_DOWN
                else:
                    response = _P.encode_error(rid, _not_confirmed(self.store, pos, timeout))
            waiters.popleft()
            (<Conn>c).inflight -= 1
            count_waiting((<Conn>c).resp, -1)
            if (<Conn>c).fd >= 0:
                (<Conn>c).outbuf += response
                count_sent((<Conn>c).resp, len(response))
                self._flush(c)
                if (<Conn>c).subscribed and not (<Conn>c).inflight:
                    self._pump(c)

    # -- WATCH WAITS: long polls of the change feed ---------------------------------------
    # A WATCH that found nothing waits here, its connection served meanwhile (it counts
    # as in flight). The feed's Waker thread makes an eventfd readable after each batch
    # the writer publishes; then, and at the earliest deadline, each waiting WATCH asks
    # its watcher again and is answered once it has events, or at its deadline.

    cdef _watch_feed(self, Conn c, ww):
        if self.feed_note is None:
            from bukt.feed import WakeFd
            self.feed_note = WakeFd(ww.watcher.waker())
            self.feed_fd = self.feed_note.fd
            self._ctl(EPOLL_CTL_ADD, self.feed_fd, EPOLLIN)
        if not self.watching or ww.deadline < self.next_watch:
            self.next_watch = ww.deadline
        self.watching.append([ww, c])
        self.feed_note.watch(True)

    cdef _settle_watches(self):
        cdef Conn c
        now = monotonic()
        if not self.feed_moved and now < self.next_watch and not self.stopping:
            return
        self.feed_moved = False
        pending, self.watching = self.watching, []
        keep = []
        for ww, conn in pending:
            c = <Conn>conn
            if c.fd < 0:
                c.inflight -= 1
                continue
            r = (<object>ww).answer(final=now >= (<object>ww).deadline or self.stopping)
            if r is None:
                keep.append([ww, c])
                continue
            c.inflight -= 1
            c.outbuf += r
            _stats.sent(c.resp, len(r))
            self._flush(c)
        self.watching.extend(keep)      # (after those _flush may have added)
        if self.watching:
            self.next_watch = min([(<object>w[0]).deadline for w in self.watching])
        else:
            self.feed_note.watch(False)

    # -- requests parked on a full change ring -------------------------------------------

    cdef _retry_parked(self):
        now = monotonic()
        if now < self.next_retry:
            return
        self.next_retry = now + RETRY
        for conn in list(self.parked):
            c = <Conn>conn
            self.parked.discard(c)
            c.parked = False
            if c.fd >= 0:
                self._process(c)  # goes on, or parks again

    # -- closing -------------------------------------------------------------------------

    cdef _maybe_finish(self, Conn c):
        """Once draining and every answer is out: half-close and linger."""
        if (not c.draining or c.lingering or c.fd < 0 or c.inflight or c.outbuf
                or c.stalled or c.parked):
            return
        if c.peer_eof:
            self._close(c)  # both directions done: nothing can be unread
            return
        shutdown(c.fd, SHUT_WR)
        c.lingering = True
        c.buf = bytearray()
        c.finish_started = c.last_active = monotonic()
        self.lingering.add(c)
        self._update(c)

    cdef _check_linger(self):
        now = monotonic()
        for conn in list(self.lingering):
            if now - (<Conn>conn).last_active >= LINGER or \
                    now - (<Conn>conn).finish_started >= LINGER_MAX:
                self._close(conn)

    cdef _close(self, Conn c):
        if c.fd < 0:
            return
        self.conns.pop(c.fd, None)
        self.lingering.discard(c)
        self.parked.discard(c)
        c.parked = False
        _end_wait(c)
        epoll_ctl(self.epfd, EPOLL_CTL_DEL, c.fd, NULL)
        close(c.fd)
        c.fd = -1
        if c.subscribed:
            self._sync_sub(c)
            c.session.end_subscriptions()
        if c.counted:
            c.counted = False
            self.admission.release(c)

    cdef _auth_sweep(self):
        """Closes the connections that did not AUTH in time (bukt/tcp/admission.py)."""
        for conn in self.admission.expired(self.now):
            (<Conn>conn).counted = False   # released by expired()
            self._shut_out(conn, _P.Status.UNAUTHORIZED,
                           _admission.auth_timed_out(self.auth_timeout))

    cdef _shut_out(self, Conn c, status, str message):
        """Closed by admission: an error frame with RequestID 0, nothing more read or
        answered, then the usual finish (half-close, linger)."""
        c.pending = False
        if c.fd < 0 or c.draining or c.lingering:
            return
        c.buf = bytearray()
        c.stalled = False
        c.outbuf += _resp_error_line(message) if c.resp else _P.frame(status, 0,
                                                                        message.encode())
        c.draining = True
        self._flush(c)

    cdef _sweep(self, double idle):
        now = monotonic()
        for conn in list(self.conns.values()):
            c = <Conn>conn
            if (not c.draining and not c.outbuf and not c.buf and not c.inflight
                    and not c.subscribed and now - c.last_active >= idle):
                c.draining = True
                self._maybe_finish(c)

    cdef _begin_shutdown(self):
        """Stop accepting (the kernel sends new connections to the other workers),
        answer what was read, then finish every connection."""
        epoll_ctl(self.epfd, EPOLL_CTL_DEL, self.listen_fd, NULL)
        self.sock.close()
        if self.resp_fd >= 0:
            epoll_ctl(self.epfd, EPOLL_CTL_DEL, self.resp_fd, NULL)
            self.resp_sock.close()
        for conn in list(self.conns.values()):
            c = <Conn>conn
            if c.fd < 0:
                continue
            self._process(c)
            c.draining = True
            self._update(c)
            self._maybe_finish(c)
