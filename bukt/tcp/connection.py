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

SHUTDOWN. `drain()` stops reading, answers what is already buffered, and closes once the
last deferred response is out; the transport flushes its buffer before closing.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import struct

from .. import errors
from .. import protocol as P
from .session import Deferred, Session

log = logging.getLogger("bukt.tcp")

_HEADER = struct.Struct(">IBQ")
_HDR_SIZE = 13
_LIMIT_FRAME = P.frame(P.Status.LIMIT_EXCEEDED, 0, b"too many connections to this worker")


class Connection(asyncio.Protocol):
    __slots__ = ("worker", "session", "transport", "buf", "deferred", "write_paused",
                 "read_paused", "last_active", "closed", "draining", "max_frame",
                 "max_inflight", "_handle", "_loop")

    def __init__(self, worker):
        self.worker = worker
        s = worker.settings
        self.max_frame = s.max_frame
        self.max_inflight = s.max_inflight
        self.session = Session(worker.store, admin_hash=worker.admin_hash,
                               max_frame=s.max_frame, durable=worker.durable)
        self._handle = self.session.handle
        self.transport = None
        self.buf = bytearray()
        self.deferred = 0          # responses waiting for durability
        self.write_paused = False  # the transport's buffer is above high water
        self.read_paused = False
        self.closed = False
        self.draining = False
        self._loop = worker.loop
        self.last_active = self._loop.time()

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        w = self.worker
        if len(w.connections) >= w.settings.max_connections or w.stopping:
            transport.write(_LIMIT_FRAME)
            transport.close()
            self.closed = True
            return
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
        self.buf = bytearray()

    def data_received(self, data):
        self.last_active = self._loop.time()
        if self.draining:
            return  # shutting down: requests that arrive now are not read
        buf = self.buf
        if buf:
            buf += data
        else:
            self.buf = buf = bytearray(data)
        self._process()

    def eof_received(self):
        # The peer half-closed: answer what is buffered, then close (return False).
        self._process()
        if not self.deferred:
            self.transport.close()
        else:
            self.draining = True
        return True

    def pause_writing(self):
        self.write_paused = True
        self._pause()

    def resume_writing(self):
        self.write_paused = False
        if self.buf and not self.closed:
            self._process()
        self._maybe_resume()

    # -- the request loop ---------------------------------------------------------------

    def _process(self):
        """Handles every whole frame in the buffer that flow control allows."""
        buf = self.buf
        size = len(buf)
        pos = 0
        out = []
        handle = self._handle
        max_frame = self.max_frame
        try:
            while size - pos >= 4:
                if self.write_paused or self.deferred >= self.max_inflight:
                    self._pause()
                    break
                length = (buf[pos] << 24) | (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]
                if length < _HDR_SIZE or length > max_frame:
                    self._fatal(out, length)
                    return
                if size - pos < length:
                    break
                _, command, rid = _HEADER.unpack_from(buf, pos)
                result = handle(command, rid, buf, pos + _HDR_SIZE, pos + length)
                pos += length
                if result.__class__ is bytes:
                    out.append(result)
                else:
                    self._defer(result)
                if self.session.closing:
                    self._write(out)
                    out = []
                    self.draining = True
                    pos = size
                    break
                if len(out) >= 64:
                    self._write(out)
                    out = []
        finally:
            if pos:
                del buf[:pos]
            if out:
                self._write(out)
        if self.draining and not self.deferred and not self.closed:
            self.transport.close()

    def _write(self, out):
        if not self.closed:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])

    def _fatal(self, out, length):
        """A Length that cannot be honoured: answer with RequestID 0 and close."""
        try:
            P.check_length(length, self.max_frame)
        except errors.ProtocolError as exc:
            out.append(P.frame(P.Status.PROTOCOL_ERROR, 0, str(exc).encode()))
        self._write(out)
        out.clear()
        self.buf = bytearray()
        self.draining = True
        if not self.deferred:
            self.transport.close()

    # -- deferred responses (durability waits) ------------------------------------------

    def _defer(self, d: Deferred):
        self.deferred += 1
        fut = asyncio.ensure_future(d.wait)
        fut.add_done_callback(lambda f, d=d: self._deferred_done(f, d))

    def _deferred_done(self, fut, d: Deferred):
        self.deferred -= 1
        exc = None if fut.cancelled() else fut.exception()
        if fut.cancelled():
            exc = errors.WriterDown("durability wait cancelled")
        response = d.response if exc is None else P.encode_error(d.request_id, exc)
        if not self.closed:
            self.transport.write(response)
            if self.draining and not self.deferred:
                self.transport.close()
            elif self.buf:
                self._process()
            self._maybe_resume()

    # -- pausing ------------------------------------------------------------------------

    def _pause(self):
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def _maybe_resume(self):
        if (self.read_paused and not self.write_paused and not self.draining
                and self.deferred < self.max_inflight and not self.closed):
            self.read_paused = False
            self.transport.resume_reading()

    # -- called by the worker -----------------------------------------------------------

    def idle_for(self, now) -> float:
        if self.deferred or self.buf:
            return 0.0
        return now - self.last_active

    def drain(self):
        """Shutdown: read nothing more, answer what is buffered, then close."""
        if self.closed:
            return
        self._process()
        self.draining = True
        self._pause()
        if not self.deferred:
            self.transport.close()

    def abort(self):
        if not self.closed:
            self.transport.abort()
