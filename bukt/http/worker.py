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

The worker stays a prefork process under the gunicorn arbiter; bench/http.py runs the
bare falcon app on this worker class too, so its ceiling is measured on the same stack.
"""

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

CORK_LIMIT = 64 * 1024      # bytes buffered in one turn before writing through


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
        self._chunks, self._size = [], 0
        if not self._transport.is_closing():
            self._transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

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


class CorkedHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport):
        super().connection_made(CorkedTransport(transport, self.loop))


class BuktWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": CorkedHttpToolsProtocol}
