"""One client connection of a TCP worker: framing, pipelining, limits, backpressure.

Bytes are appended to a receive buffer as they arrive; every whole frame in it is handed
to the session, and the responses of one read are written with one `transport.write`.
Nothing is ever allocated on a claimed Length: a Length is checked against max_frame as
soon as its four bytes are in, and a frame is handled only once all of it has arrived,
so the buffer never holds more than one read plus one partial frame.

FLOW CONTROL. A connection stops being read (`transport.pause_reading`) while
  - max_inflight of its requests are unanswered (responses waiting for durability), or
  - its unsent responses are above the transport's high-water mark (the peer does not
    read: the transport calls pause_writing),
and resumes when both fall back. Frames already buffered wait in the buffer; TCP's
window does the rest, so a client that never reads costs a bounded amount of memory.

RING FULL. A request that finds the change ring full parks the connection
(bukt/tcp/session.py): its frame stays first in the buffer, reading pauses, and it is
tried again every RETRY seconds until the worker's ring_wait has passed since it first
parked; then it is answered RING_FULL and the next frames go on. While parked it takes
part in the ring's claim (`room_wait`, bukt/writewait/ringroom.py): each try claims or renews the
room the request waits for, and runs with that claim as its own; the claim goes when
the request goes through, is answered RING_FULL, or its connection is lost.

CLOSING. A connection ends by QUIT, a bad Length, the peer's EOF, or the worker's
shutdown (`drain()`). In each case the requests already read are answered, then the
server half-closes (write_eof): the peer reads every response, then EOF. Whatever it
still sends is read and discarded, and the socket is closed once it has been quiet for
LINGER seconds. Closing at once could leave unread bytes in the kernel, which makes
Linux send a RST, and a RST can destroy responses the peer has not read yet.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time

from bukt import errors
from bukt.tcp import admission, stats
from bukt import protocol as P
from bukt.writewait.ringroom import RETRY, RoomWait
from bukt.tcp.frames import (PARK, STOP_DEFERRED, STOP_FATAL, STOP_PARK,  # noqa: F401
                              STOP_FULL, STOP_PARTIAL, STOP_QUIT, Deferred, drive,
                              ring_full_frame)
from bukt.tcp.session import Session

log = logging.getLogger("bukt.tcp")

_HEADER = P.HEADER
_HDR_SIZE = P.HEADER_SIZE
try:
    from bukt.tcp import _wire
except ImportError:
    _wire = None



class _BadLength(Exception):
    """A frame's Length that cannot be honoured (the loops answer it: _fatal_answer)."""


def run_py(buf, size, pos, session, max_frame, out, out_limit):
    """Handles whole frames of buf[pos:size] into `out` until a stop (bukt/tcp/_wire.pyx
    says which); returns (pos, why). The reference for the compiled `_wire.run`: the
    loop shared with the RESP face (frames.drive) around the binary frame. (Two Python
    calls a frame more than a loop of its own; the hot path is _wire.run, in C.)"""
    handle = session.handle

    def parse(buf, pos, size):
        if size - pos < 4:
            return None
        length = (buf[pos] << 24) | (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]
        if length < _HDR_SIZE or length > max_frame:
            raise _BadLength
        if size - pos < length:
            return None
        _, command, rid = _HEADER.unpack_from(buf, pos)
        return (command, rid, buf, pos + _HDR_SIZE, pos + length), pos + length
    if stats.row is None:
        step = lambda r: handle(*r)  # noqa: E731
    else:
        def step(r):                # counted (bukt/tcp/stats.py)
            result = handle(*r)
            if result is not PARK:
                stats.count_bin(r[0], r[4] - r[3] + _HDR_SIZE, result)
            return result
    return drive(parse, step, _BadLength, None, buf, size, pos, session, out, out_limit)


_LIMIT_FRAME = P.frame(P.Status.LIMIT_EXCEEDED, 0, admission.TOO_MANY.encode())
LINGER = 0.2       # seconds of silence after the half-close before the socket is closed
LINGER_MAX = 5.0   # a peer that keeps sending after it is told EOF is cut off after this


class Connection(asyncio.Protocol):
    MIN_REQUEST = 4  # bytes before anything can be parsed (a frame's Length)
    FACE = 0         # its counters' (bukt/tcp/stats.py): the binary protocol

    def __init__(self, worker):
        self.worker = worker
        s = worker.settings
        self.max_frame = s.max_frame
        self.max_inflight = s.max_inflight
        self.session = self._new_session(worker)
        self.pending = False       # admitted, not authenticated yet (bukt/tcp/admission.py)
        self.ring_wait = worker.ring_wait
        self.session.park_ring_full = self.ring_wait is not None
        self.park_until = 0.0      # a parked request is answered RING_FULL then (0: none)
        self.parked = False        # the first frame of buf waits for ring room
        self.room_wait = None      # its claim on ring room (RoomWait) while it waits
        self._run = self._runner(worker)
        self._high_water = s.write_high_water
        self._loop = worker.loop
        self.transport = None
        self.buf = bytearray()
        self.deferred = 0          # responses waiting for durability
        self.write_paused = False  # the transport's buffer is above high water
        self.read_paused = False
        self.stalled = False       # whole frames wait in buf for flow control
        self.draining = False      # read no more requests; answer what is buffered
        self.finishing = False     # half-closed; discarding input until quiet
        self.peer_eof = False
        self.closed = False
        self.last_active = self._loop.time()
        self._finish_started = 0.0

    # -- what the protocol decides (RespConnection overrides these) ---------------------

    def _new_session(self, worker):
        return Session(worker.store, admin_hash=worker.admin_hash,
                       max_frame=worker.settings.max_frame, durable=worker.durable,
                       guard=worker.guard, watch_max_wait=worker.settings.watch_max_wait)

    def _runner(self, worker):
        return run_py if _wire is None or not worker.settings.compiled else _wire.run

    def _refusal(self, refusal) -> bytes:
        return _LIMIT_FRAME if refusal is admission.TOO_MANY else \
            P.frame(P.Status.LIMIT_EXCEEDED, 0, refusal.encode())

    def _error_frame(self, status, message: str) -> bytes:
        return P.frame(status, 0, message.encode())

    def _ring_full_answer(self, buf, pos, size):
        """(answer, next pos) for the parked request at buf[pos:]."""
        return (ring_full_frame(buf, pos, self.ring_wait),
                pos + int.from_bytes(buf[pos:pos + 4], "big"))

    def _fatal_answer(self, out, buf, pos):
        """A Length that cannot be honoured: answered with RequestID 0."""
        try:
            P.check_length(int.from_bytes(buf[pos:pos + 4], "big"), self.max_frame)
        except errors.ProtocolError as exc:
            out.append(P.frame(P.Status.PROTOCOL_ERROR, 0, str(exc).encode()))

    def _deferred_error(self, d, exc) -> bytes:
        return P.encode_error(d.request_id, exc)

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        w = self.worker
        peer = transport.get_extra_info("peername")
        self.session.peer = address = peer[0] if peer else "-"
        if w.stopping:
            refusal, evicted = admission.TOO_MANY, None
        else:
            refusal, evicted = w.admission.admit(self, address, self._loop.time(),
                                                 self.FACE)
        if evicted is not None:
            evicted.shut_out(P.Status.LIMIT_EXCEEDED, admission.MADE_ROOM)
        if refusal is not None:
            # Not counted in w.connections: it holds no slot while it lingers.
            transport.write(self._refusal(refusal))
            self.draining = True
            self._maybe_finish()
            return
        self.pending = True
        w.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        transport.set_write_buffer_limits(high=w.settings.write_high_water)

    def connection_lost(self, exc):
        self.closed = True
        self.worker.connections.discard(self)
        self.worker.admission.release(self)
        self.buf = bytearray()
        self._end_wait()

    def data_received(self, data):
        self.last_active = self._loop.time()
        if self.draining:
            return  # closing: what arrives now is not a request we will answer
        buf = self.buf
        if buf:
            buf += data
        else:
            self.buf = buf = bytearray(data)
        if not self.parked:  # else its timer goes on (read before the pause took hold)
            self._process()

    def eof_received(self):
        self.peer_eof = True
        self.draining = True
        self._maybe_finish()
        return True  # we close the transport ourselves, once answers are out

    def pause_writing(self):
        self.write_paused = True
        self._pause()

    def resume_writing(self):
        self.write_paused = False
        if self.stalled and not self.closed:
            self._process()
        self._maybe_resume()
        self._maybe_finish()

    # -- the request loop ---------------------------------------------------------------

    def _process(self):
        """Handles every whole frame in the buffer that flow control allows.

        `run` (compiled in bukt/tcp/_wire.pyx, or its twin `run_py` below) handles frames
        until something needs this loop: responses to write, a Deferred, QUIT, a bad
        Length, or the end of the whole frames. No callback can run inside `run` (it
        never writes), so flow control checked between its batches is checked in time.
        """
        if self.parked:
            return  # its timer tries again (_retry)
        buf = self.buf
        size = len(buf)
        pos = 0
        out = []
        session = self.session
        self.stalled = False
        # A parked frame is tried with its claim counted as its own (the frames after
        # it in this batch too, harmlessly: the claim is theirs, or already served).
        wait = self.room_wait
        if wait is not None:
            session.store.ring_ticket = wait.ticket
        try:
            while True:
                if self.write_paused or self.deferred >= self.max_inflight:
                    if size - pos >= self.MIN_REQUEST:
                        self.stalled = True
                        self._pause()
                    break
                pos, why = self._run(buf, size, pos, session, self.max_frame, out,
                                     self._high_water)
                if wait is not None:
                    session.store.ring_ticket = 0
                    wait = None
                if self.park_until and (pos or why != STOP_PARK):
                    self.park_until = 0.0  # the parked frame went through
                    self._end_wait()
                if why == STOP_PARTIAL:
                    break
                if why == STOP_PARK:
                    now = self._loop.time()
                    if not self.park_until:
                        self.park_until = now + self.ring_wait
                        self.room_wait = RoomWait(session.store, time.monotonic(),
                                                  session.park_room)
                    if now < self.park_until:
                        self.room_wait.poll(time.monotonic())
                        self._park()
                        break
                    self.park_until = 0.0  # waited long enough: RING_FULL, go on
                    self._end_wait()
                    answer, pos = self._ring_full_answer(buf, pos, size)
                    out.append(answer)
                    continue
                if why == STOP_FATAL:
                    self._fatal(out, buf, pos)
                    return
                if why == STOP_DEFERRED:
                    self._defer(out.pop())
                elif why == STOP_QUIT:  # nothing after QUIT is answered
                    pos = size
                    self.draining = True
                    break
                if out:  # STOP_FULL, or responses before a Deferred
                    self._write(out)  # may call pause_writing: checked at the top
                    out = []
        finally:
            if wait is not None:
                session.store.ring_ticket = 0
            if pos:
                del buf[:pos]
            if out:
                self._write(out)
        if self.pending and (session.bucket is not None or session.admin):
            self.pending = False
            self.worker.admission.authenticated(self)
        if self.draining:
            self._maybe_finish()

    def _write(self, out):
        if not self.closed:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])

    def _fatal(self, out, buf, pos):
        """A request that cannot be read: answer it (_fatal_answer) and finish."""
        self._fatal_answer(out, buf, pos)
        self._write(out)
        out.clear()
        self.buf = bytearray()
        self.stalled = False
        self.draining = True
        self._maybe_finish()

    # -- requests parked on a full change ring -------------------------------------------

    def _park(self):
        self.parked = True
        self._pause()
        self._loop.call_later(RETRY, self._retry)

    def _end_wait(self):
        if self.room_wait is not None:
            self.room_wait.end()
            self.room_wait = None

    def _retry(self):
        self.parked = False
        if self.closed:
            return
        self._process()  # goes on, or parks again
        if not self.parked:
            self._maybe_resume()
            self._maybe_finish()

    # -- deferred responses (durability waits) ------------------------------------------

    def _defer(self, d: Deferred):
        self.deferred += 1
        if d.response is not None:      # a durability wait (a WATCH's is not counted)
            stats.inflight(self.FACE, 1)
        fut = asyncio.ensure_future(d.wait)
        fut.add_done_callback(lambda f, d=d: self._deferred_done(f, d))

    def _deferred_done(self, fut, d: Deferred):
        self.deferred -= 1
        if d.response is not None:
            stats.inflight(self.FACE, -1)
        if fut.cancelled():
            exc = errors.WriterDown("durability wait cancelled")
        else:
            exc = fut.exception()
        if exc is not None:
            response = self._deferred_error(d, exc)
        else:                       # (a WATCH's wait gives its response)
            response = fut.result() if d.response is None else d.response
        if self.closed:
            return
        # counted before the write: once written, the client may read the answer and
        # ask /metrics before this line would run
        stats.sent(self.FACE, len(response))
        self.transport.write(response)
        if self.stalled:
            self._process()
        self._maybe_resume()
        self._maybe_finish()

    # -- pausing ------------------------------------------------------------------------

    def _pause(self):
        if not self.read_paused and not self.closed and not self.finishing:
            self.read_paused = True
            self.transport.pause_reading()

    def _maybe_resume(self):
        if (self.read_paused and not self.write_paused and not self.draining
                and not self.parked and self.deferred < self.max_inflight
                and not self.closed):
            self.read_paused = False
            self.transport.resume_reading()

    # -- closing ------------------------------------------------------------------------

    def _maybe_finish(self):
        """Once draining and every answer is out: half-close and linger (docstring)."""
        if (not self.draining or self.finishing or self.closed or self.deferred
                or self.stalled or self.parked):
            return
        self.finishing = True
        self.buf = bytearray()
        if self.peer_eof:
            self.transport.close()  # both directions done: nothing can be unread
            return
        try:
            self.transport.write_eof()
        except (NotImplementedError, RuntimeError, OSError):
            self.transport.close()
            return
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self._finish_started = self.last_active = self._loop.time()
        self._loop.call_later(LINGER, self._linger)

    def _linger(self):
        if self.closed:
            return
        now = self._loop.time()
        if now - self.last_active >= LINGER or now - self._finish_started >= LINGER_MAX:
            self.transport.close()
        else:
            self._loop.call_later(LINGER, self._linger)

    # -- called by the worker -----------------------------------------------------------

    def idle_for(self, now) -> float:
        # Responses the peer has not read yet are pending work, not idleness.
        if (self.deferred or self.buf or self.draining or self.read_paused
                or self.transport.get_write_buffer_size()):
            return 0.0
        return now - self.last_active

    def shut_out(self, status, message: str):
        """Closed by admission (no AUTH in time, or to make room): an error frame with
        RequestID 0, nothing more read, then the usual finish. Its slot is free already."""
        self.pending = False
        self.worker.connections.discard(self)
        if self.closed or self.draining:
            return
        self._write([self._error_frame(status, message)])
        self.buf = bytearray()
        self.draining = True
        self._maybe_finish()

    def close_idle(self):
        self.draining = True
        self._maybe_finish()

    def drain(self):
        """Shutdown: read nothing more, answer what is buffered, then finish."""
        if self.closed:
            return
        self._process()
        self.draining = True
        self._maybe_finish()

    def abort(self):
        if not self.closed:
            self.transport.abort()


class RespConnection(Connection):
    """A connection of the RESP listener: the same loop, limits and closing, with the
    Redis protocol's parser and session (bukt/tcp/resp_session.py)."""

    FACE = 1                    # its counters' (bukt/tcp/stats.py)

    MIN_REQUEST = 1
    _sub_cb = None        # KEYSPACE NOTIFICATIONS: its callback on the feed's Waker
    _sub_waker = None

    def _new_session(self, worker):
        from bukt.tcp.resp_session import RespSession
        return RespSession(worker.store, admin_hash=worker.admin_hash,
                           max_frame=worker.settings.max_frame, durable=worker.durable,
                           guard=worker.guard, max_keys=worker.settings.resp_max_keys,
                           info=worker.resp_info)

    def _runner(self, worker):
        from bukt.tcp.resp_session import run
        if worker.settings.compiled and worker.settings.resp_fast_path:
            try:
                from bukt.tcp import _resp
            except ImportError:         # not built: the Python session alone
                return run
            return _resp.run
        return run

    def _refusal(self, refusal) -> bytes:
        return resp_error_line(refusal)

    def _error_frame(self, status, message: str) -> bytes:
        return resp_error_line(message)

    def _ring_full_answer(self, buf, pos, size):
        from bukt.tcp.resp_session import ring_full_answer
        return ring_full_answer(self.session, buf, pos, size, self.ring_wait)

    def _fatal_answer(self, out, buf, pos):
        pass  # the session put the -ERR Protocol error in `out`

    def _deferred_error(self, d, exc) -> bytes:
        if d.request_id is None:  # a read behind a write (resp_session.py, ORDER)
            return d.response
        from bukt.tcp.resp_session import error_reply
        return error_reply(exc)

    # -- KEYSPACE NOTIFICATIONS (bukt/tcp/resp_pubsub.py) --------------------------------
    # While its session is subscribed, the feed's Waker (a thread) schedules `_pump` on
    # this loop after each of the writer's batches and every second. A pump writes what
    # the feed has for it while the transport is below its high-water mark and no reply
    # waits for the disk (a message never overtakes a reply); above the mark it only
    # looks whether the subscriber is so far behind that it is cut off.

    def _process(self):
        super()._process()
        self._sync_subscription()

    def _sync_subscription(self):
        subs = self.session.subs
        want = (subs is not None and subs.watcher is not None and not self.closed
                and not self.draining)
        if want and self._sub_cb is None:
            loop = self._loop
            self._sub_cb = lambda: loop.call_soon_threadsafe(self._pump)  # noqa: E731
            self._sub_waker = subs.watcher.waker()
            self._sub_waker.add(self._sub_cb)
            self._pump()
        elif not want and self._sub_cb is not None:
            self._sub_waker.remove(self._sub_cb)
            self._sub_cb = None

    def _pump(self):
        subs = self.session.subs
        if self._sub_cb is None or subs is None or self.closed or self.draining:
            self._sync_subscription()
            return
        if self.deferred:
            return                  # _deferred_done pumps once the replies are out
        max_lag = self.worker.settings.feed_max_lag
        if self.write_paused:
            if subs.lagging(max_lag):
                self._end_subscription(subs.cutoff(max_lag))
            return
        data, n, end, more = subs.pump()
        if data:
            self.transport.write(data)
            stats.pubsub_sent(n, len(data))
        if end is not None:
            self._end_subscription(end)
        elif more:
            self._loop.call_soon(self._pump)
        else:
            self._sync_subscription()

    def _end_subscription(self, reply):
        """The subscriber is cut off (or its token revoked): `reply` is its last."""
        self.session.end_subscriptions()
        self._sync_subscription()
        self._write([reply])
        self.buf = bytearray()
        self.draining = True
        self._maybe_finish()

    def _deferred_done(self, fut, d):
        super()._deferred_done(fut, d)
        if self._sub_cb is not None and not self.deferred:
            self._pump()

    def resume_writing(self):
        super().resume_writing()
        if self._sub_cb is not None:
            self._pump()

    def connection_lost(self, exc):
        super().connection_lost(exc)
        self._sync_subscription()
        self.session.end_subscriptions()

    def idle_for(self, now) -> float:
        # a subscriber only listens (Redis does not time out Pub/Sub clients either)
        return 0.0 if self._sub_cb is not None else super().idle_for(now)


def resp_error_line(message: str) -> bytes:
    """Admission's refusals and closings, as a RESP error."""
    from bukt.tcp import resp
    return resp.error("ERR " + message)
