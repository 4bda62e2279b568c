"""Bukt's gunicorn worker: uvicorn's (uvloop + httptools), with one write per response.

uvicorn's httptools protocol hands the transport the status line and headers on
`http.response.start`, then the body on `http.response.body`: two writes, and uvloop
sends each at once, so a small response costs two send() syscalls. Profiling a worker
under wrk (py-spy, GET of a 100 B value at 50 connections) put 46% of its samples in
those two writes. CorkedTransport collects what one turn of the event loop writes to
a connection and sends it with one write at the end of the turn (loop.call_soon), like
TCP_CORK released every turn; a response written in one turn (every one the fast path
and falcon send) goes out in one segment.

What it keeps: ordering (one buffer per connection, flushed before close), flow
control (the real transport still calls pause_writing / resume_writing; a turn that
buffers more than CORK_LIMIT bytes writes through at once, so a large or streamed body
is never held), and everything else of the transport (forwarded unchanged).

A large write is not joined. Past CORK_LIMIT the buffered pieces (a head and a 1 MiB
body) go to uvloop's writelines, one writev of the pieces themselves: joining them
cost a second copy of the body, and a second megabyte alive beside the first made the
allocator hand its memory back to the kernel after every response and fault it in
again before the next (perf: page faults and page clearing were a third of a worker's
CPU). A worker's CPU per 1 MiB GET went from about 1640 us to about 410 us (nginx's
sendfile: about 340 us). Small responses are still joined, into one write.

The worker stays a prefork process under the gunicorn arbiter; bench/http.py runs the
bare falcon app on this worker class too, so its ceiling is measured on the same stack.

THE REQUEST HEAD IS BOUNDED HERE. gunicorn's limit_request_line, limit_request_fields
and limit_request_field_size bind only gunicorn's own parser; this worker class parses
with httptools (llhttp), which has no limit at all and gathers one header by
concatenating its pieces: a client streaming a header without end grew a worker by
hundreds of MB, and the quadratic copying starved every other connection of the worker.
HeadLimits (http.max_request_line, http.max_header_fields, http.max_header_size,
http.max_headers_size) are checked as the parser reports a URL or a header, and the
reads that leave a request's head incomplete are counted, so a URL or one header that
never ends is cut off too: past the limits the client gets 414 (request line) or 431
(headers) as a problem document and the connection is closed. A worker holds at most the
limits plus a read or two of the socket (256 KiB each) for a head.

THE TICK. uvicorn's server wakes ten times a second (its main loop sleeps 0.1 s) to
look at its stop flag; every tenth tick it renews the Date header and tells the
gunicorn arbiter it is alive. An idle worker did nothing else: 10 wake-ups and about
0.16% of a CPU a second each (bench/idle.py). QuietServer ticks once a second, the
Date header's own resolution and the heartbeat's, and a stop signal wakes it at once,
so stopping takes no longer than before.
"""

import asyncio
import sys
from dataclasses import dataclass

import httptools
from gunicorn.arbiter import Arbiter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from bukt.http.problems import HTTP_CODES, PROBLEM_JSON, problem_body
from bukt.http.settings import HttpSettings

CORK_LIMIT = 64 * 1024      # bytes buffered in one turn before writing through
TICK_S = 1.0                # THE TICK: the idle server's one wake-up a second


class CorkedTransport:
    """A transport whose writes within one event-loop turn leave as one write."""

    __slots__ = ("_transport", "_loop", "_chunks", "_size")

    def __init__(self, transport, loop):
        self._transport, self._loop = transport, loop
        self._chunks, self._size = [], 0

    def write(self, data):
        if not data:
            return
        if not self._chunks:
            self._loop.call_soon(self._flush)
        self._chunks.append(bytes(data))        # a caller may reuse a bytearray
        self._size += len(data)
        if self._size >= CORK_LIMIT:
            self._flush()

    def writelines(self, chunks):
        for data in chunks:
            self.write(data)

    def _flush(self):
        chunks = self._chunks
        if not chunks:
            return                              # flushed early (limit, close)
        size, self._chunks, self._size = self._size, [], 0
        if self._transport.is_closing():
            return
        if len(chunks) == 1:
            self._transport.write(chunks[0])
        elif size < CORK_LIMIT:
            self._transport.write(b"".join(chunks))
        else:                                   # a large body: no copy to join it
            self._transport.writelines(chunks)

    def close(self):
        self._flush()
        self._transport.close()

    def abort(self):
        self._chunks, self._size = [], 0
        self._transport.abort()

    def is_closing(self):
        return self._transport.is_closing()

    def get_write_buffer_size(self):
        return self._transport.get_write_buffer_size() + self._size

    def pause_reading(self):
        self._transport.pause_reading()

    def resume_reading(self):
        self._transport.resume_reading()

    def __getattr__(self, name):                # get_extra_info, set_protocol, ...
        return getattr(self._transport, name)


@dataclass(frozen=True)
class HeadLimits:
    line: int            # the request line's URL, bytes
    fields: int          # header fields in one request
    field: int           # one header field, name and value, bytes
    headers: int         # all header fields of one request, bytes

    @classmethod
    def of(cls, settings):
        return cls(settings.max_request_line, settings.max_header_fields,
                   settings.max_header_size, settings.max_headers_size)

    @property
    def head(self):
        """Bytes a request head (line, fields, their CRLFs) can take within the limits."""
        return self.line + self.headers + 4 * self.fields + 64


LIMITS = HeadLimits.of(HttpSettings())      # load() (bukt/http/server.py) sets the configured


def set_limits(settings):
    """Use `settings`' head limits in this worker process (called before it serves)."""
    global LIMITS
    LIMITS = HeadLimits.of(settings)


class HeadTooLarge(Exception):
    def __init__(self, status, detail):
        super().__init__(detail)
        self.status = status


class CorkedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, corked (CorkedTransport) and with the head bounded."""

    def connection_made(self, transport):
        self._limits, self._head, self._in_head, self._fields = LIMITS, 0, True, 0
        self._field_bytes, self._refused, self._ended = 0, False, False
        super().connection_made(CorkedTransport(transport, self.loop))

    def on_message_begin(self):
        super().on_message_begin()
        self._fields = self._field_bytes = 0

    def on_url(self, url):
        super().on_url(url)
        if len(self.url) > self._limits.line:
            raise HeadTooLarge(414, f"the request line's URL is over {self._limits.line} "
                                    "bytes (http.max_request_line)")

    def on_header(self, name, value):
        lim = self._limits
        self._fields += 1
        self._field_bytes += len(name) + len(value)
        if len(name) + len(value) > lim.field:
            raise HeadTooLarge(431, f"the header {name[:64].decode('latin-1')!r} is over "
                                    f"{lim.field} bytes (http.max_header_size)")
        if self._fields > lim.fields:
            raise HeadTooLarge(431, f"over {lim.fields} header fields "
                                    "(http.max_header_fields)")
        if self._field_bytes > lim.headers:
            raise HeadTooLarge(431, f"the header fields are over {lim.headers} bytes "
                                    "(http.max_headers_size)")
        super().on_header(name, value)

    def on_headers_complete(self):
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self):
        self._in_head, self._head, self._ended = True, 0, True
        super().on_message_complete()

    def data_received(self, data):
        """uvicorn's, and then: a head still incomplete after this read is refused once
        it holds more bytes than the limits allow (only a URL or a header that never
        ends gets that far: the parser's callbacks check every complete part)."""
        if self._refused:
            return
        self._unset_keepalive_if_required()
        self._ended = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            cause = e.__context__ or e.__cause__
            if isinstance(cause, HeadTooLarge):
                return self._refuse(cause.status, str(cause))
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head and not self._ended:
            # the whole read belongs to the incomplete head (a head begun after a
            # request ended in this read is counted from the next read: at most one
            # read, 256 KiB, goes uncounted)
            self._head += len(data)
            if self._head > self._limits.head:
                self._refuse(431, f"the request head is over {self._limits.head} bytes "
                                  "(http.max_request_line, http.max_headers_size)")

    def _refuse(self, status, detail):
        """Answer `status` (414, 431) with a problem document and close the connection."""
        self._in_head, self._refused = False, True      # nothing more is parsed
        body = problem_body(status, HTTP_CODES[status], detail).encode()
        reason = {414: b"URI Too Long", 431: b"Request Header Fields Too Large"}[status]
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n\r\n%s" % (
                                 status, reason, PROBLEM_JSON.encode(), len(body), body))
        self.transport.close()


class QuietServer(Server):
    """uvicorn's server with THE TICK once a second; a stop signal ends the wait."""

    _wake = _loop = None

    async def main_loop(self):
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        ticks = int(round(TICK_S / 0.1))    # uvicorn counts 0.1 s ticks: each is a tenth
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + ticks) % 864000
            try:
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            except asyncio.TimeoutError:
                pass
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig, frame):
        super().handle_exit(sig, frame)
        if self._loop is not None:
            # a signal handler: it may run inside the loop's own code, so only the
            # thread-safe call (a deque append and a write to the loop's self-pipe)
            self._loop.call_soon_threadsafe(self._wake.set)


class BuktWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": CorkedHttpToolsProtocol}

    async def _serve(self):
        # A clean stop without a false error: uvicorn closes the listening sockets it
        # was handed after its uvloop server has closed their descriptors. Handed
        # gunicorn's socket wrappers, that second close failed (EBADF) and gunicorn
        # logged "Error while closing socket [Errno 9] Bad file descriptor" for every
        # worker at every stop; the sockets themselves are closed without a word.
        self.sockets = [getattr(s, "sock", s) for s in self.sockets]
        # UvicornWorker._serve, with QuietServer for uvicorn's Server
        self.config.app = self.wsgi
        server = QuietServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
