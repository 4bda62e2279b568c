"""Python clients of Bukt's binary protocol (docs/protocol.md).

    client = bukt.Client("bukt://sessions:TOKEN@127.0.0.1:7071")
    client.set(b"k", b"v", ttl=30)            # the same method names as bukt.Bucket
    client.get(b"k")                          # -> b"v"
    with client.pipeline() as p:              # many requests, one round trip
        p.set(b"a", b"1"); p.get(b"a")
    p.results                                 # -> [version, b"1"]

    async with bukt.AsyncClient("bukt://sessions:TOKEN@127.0.0.1:7071") as client:
        await client.get(b"k")

Both keep a pool of authenticated connections. Errors the server reports are raised as
the `bukt.errors` class of their status; a lost connection is the built-in
ConnectionError and a timeout the built-in TimeoutError. A read (GET, MGET, ...) that
loses its connection is retried once on a fresh one; a write is not, since the server
may have executed it: the caller decides.

The URL is `bukt://BUCKET:TOKEN@HOST:PORT` (percent-encode reserved characters), with
optional `?timeout=SECONDS&pool_size=N`; an empty bucket (`bukt://:ADMIN_TOKEN@...`)
opens an admin session for bucket administration.
"""
from __future__ import annotations

import asyncio
import itertools
import math
import os
import selectors
import socket
import threading
import time
from urllib.parse import parse_qs, unquote, urlsplit

from bukt import errors
from bukt import protocol as P
from bukt.protocol import Command as C, Status as S

__all__ = ["Client", "AsyncClient", "Pipeline", "AsyncPipeline", "parse_url"]

DEFAULT_PORT = 7071
DEFAULT_TIMEOUT = 5.0
DEFAULT_POOL = 8

# Commands safe to send again after a lost connection: they change nothing.
IDEMPOTENT = frozenset({C.GET, C.EXISTS, C.TTL, C.MGET, C.SCAN, C.VERSION, C.STATS,
                        C.PING, C.BUCKET_LIST, C.BUCKET_INFO, C.TOKEN_LIST})


# The URL's parameters: name -> (convert, what a value must be).
URL_PARAMS = {
    "timeout": (lambda v: _positive(float(v)), "a number of seconds above zero"),
    "pool_size": (lambda v: _positive(int(v)), "a whole number above zero"),
}


def _positive(n):
    if not (n > 0 and math.isfinite(n)):
        raise ValueError(n)
    return n


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rsplit('@', 1)[1]}" if "@" in rest else url


def parse_url(url: str, require_token: bool = False) -> dict:
    """Keyword arguments for Client / AsyncClient from a bukt:// URL. A parameter
    this client does not know is an error (a misspelt `timout=` would be ignored),
    and so is a bad value, named; with `require_token`, a URL without one."""
    parts = urlsplit(url)
    shown = _redacted(url)
    if parts.scheme != "bukt":
        raise errors.InvalidArgument(f"not a bukt:// URL: {shown!r}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise errors.InvalidArgument(f"{shown}: the port is not a number from 1 to "
                                     "65535") from None
    kw = {"host": parts.hostname or "127.0.0.1", "port": port,
          "bucket": unquote(parts.username or ""),
          "token": unquote(parts.password) if parts.password is not None else None}
    query = parse_qs(parts.query, keep_blank_values=True)
    for name, values in query.items():
        if name not in URL_PARAMS:
            raise errors.InvalidArgument(
                f"{shown}: unknown URL parameter {name!r}; known: "
                + ", ".join(URL_PARAMS))
        convert, what = URL_PARAMS[name]
        try:
            kw[name] = convert(values[-1])
        except ValueError:
            raise errors.InvalidArgument(f"{shown}: URL parameter {name}={values[-1]!r} "
                                         f"is not {what}") from None
    if require_token and kw["token"] is None:
        raise errors.AuthError(
            f"{shown}: the URL has no token: write bukt://BUCKET:TOKEN@HOST:PORT (or "
            "bukt://:ADMIN_TOKEN@HOST:PORT for bucket administration)")
    return kw


# -- request building and result decoding, shared by every client --------------------

def _b(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()
    raise TypeError(f"expected bytes, str or int, not {type(value).__name__}")


def _ms(ttl, *, required=False) -> int:
    """Seconds -> wire milliseconds; 0 means "not given" on the wire."""
    if ttl is None:
        if required:
            raise errors.InvalidArgument("a ttl is required")
        return 0
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) \
            or ttl <= 0:
        raise errors.InvalidArgument(f"ttl must be a number of seconds above zero, not {ttl!r}")
    return max(1, int(round(ttl * 1000)))


def _raise(status, fields):
    raise P.error_for(status, fields.get("message", ""))


class _Ops:
    """Every operation, as a request plus the function that turns its response into the
    result. Subclasses say what `_do(command, fields, convert)` means: a blocking round
    trip, a coroutine, or an entry queued in a pipeline."""

    def _do(self, command, fields, convert):  # pragma: no cover - abstract
        raise NotImplementedError

    def _connect_to(self, url, *, max_frame, retry_reads, **kw):
        """Where and as whom a client connects: the keywords, overridden by what `url`
        (bukt://bucket:token@host:port) says."""
        if url is not None:
            # a URL names whom to connect as: without a token every command but PING
            # would fail, so it fails here, saying why (keywords with token=None make
            # an anonymous client, for PING alone)
            kw.update(parse_url(url, require_token=True))
        self.host, self.port = kw["host"], kw["port"]
        self.bucket, self.token = kw["bucket"], kw["token"]
        self.timeout, self.pool_size = kw["timeout"], kw["pool_size"]
        self.max_frame, self.retry_reads = max_frame, retry_reads

    def _timed_out(self, exc):
        """The TimeoutError to raise: one that names the server and the timeout."""
        return TimeoutError(f"no answer from {self.host}:{self.port} within "
                            f"{self.timeout:g} s ({exc or 'timed out'})")

    @staticmethod
    def _value(status, f, default=None):
        if status == S.OK:
            return f["value"]
        if status == S.NOT_FOUND:
            return default
        _raise(status, f)

    @staticmethod
    def _field(name, absent=None):
        """The response's field `name`; None when the status is `absent` (NOT_STORED,
        NOT_FOUND: no such thing, not an error)."""
        def convert(status, f):
            if status == S.OK:
                return f[name]
            if absent is not None and status == absent:
                return None
            _raise(status, f)
        return convert

    @staticmethod
    def _flag(status, f):
        if status != S.OK:
            _raise(status, f)
        return bool(f["existed"])

    def get(self, key, default=None):
        return self._do(C.GET, {"key": _b(key)}, lambda s, f: self._value(s, f, default))

    def set(self, key, value, ttl=None, nx=False, xx=False, single_read=False,
            if_version=None):
        flags = ((P.SET_NX if nx else 0) | (P.SET_XX if xx else 0)
                 | (P.SET_SINGLE_READ if single_read else 0)
                 | (P.SET_IF_VERSION if if_version is not None else 0))

        return self._do(C.SET, {"flags": flags, "ttl_ms": _ms(ttl),
                                "if_version": if_version or 0,
                                "key": _b(key), "value": _b(value)},
                        self._field("version", S.NOT_STORED))

    def delete(self, *keys):
        return self._do(C.DELETE, {"keys": [_b(k) for k in keys]}, self._field("count"))

    def exists(self, *keys):
        return self._do(C.EXISTS, {"keys": [_b(k) for k in keys]}, self._field("count"))

    def incr(self, key, by=1, initial=0, ttl=None):
        return self._do(C.INCR, {"by": by, "initial": initial, "ttl_ms": _ms(ttl),
                                 "key": _b(key)}, self._field("value"))

    def decr(self, key, by=1, initial=0, ttl=None):
        return self._do(C.DECR, {"by": by, "initial": initial, "ttl_ms": _ms(ttl),
                                 "key": _b(key)}, self._field("value"))

    def getdel(self, key):
        return self._do(C.GETDEL, {"key": _b(key)}, self._value)

    def ttl(self, key):
        def convert(status, f):
            if status == S.OK:
                return f["ttl_ms"] / 1000
            if status == S.NOT_FOUND:
                return None
            _raise(status, f)
        return self._do(C.TTL, {"key": _b(key)}, convert)

    def expire(self, key, ttl):
        return self._do(C.EXPIRE, {"ttl_ms": _ms(ttl, required=True), "key": _b(key)},
                        self._flag)

    def persist(self, key):
        return self._do(C.PERSIST, {"key": _b(key)}, self._flag)

    def mget(self, keys):
        return self._do(C.MGET, {"keys": [_b(k) for k in keys]}, self._field("values"))

    def mset(self, mapping, ttl=None):
        items = [(_b(k), _b(v)) for k, v in mapping.items()]
        return self._do(C.MSET, {"ttl_ms": _ms(ttl), "items": items}, self._field("versions"))

    def scan(self, prefix=b"", cursor=0, count=100):
        def convert(status, f):
            if status != S.OK:
                _raise(status, f)
            return f["cursor"], f["keys"]
        return self._do(C.SCAN, {"cursor": cursor, "count": count, "prefix": _b(prefix)},
                        convert)

    def watch_poll(self, since=None, prefix=b"", values=False, max_events=256, wait=0):
        """One WATCH (docs/protocol.md): (events, position, gone). `since` None: from now.
        Events are bukt.feed.Event; go on with since=position. `gone`: the feed no
        longer holds `since`; position is then the oldest point it does hold. `wait`
        (seconds): with no events yet, the server answers when they come or after this
        long (a long poll, cut to its tcp.watch_max_wait), else at once."""
        from bukt.feed import KINDS, Event
        flags = (P.WATCH_VALUES if values else 0) | (P.WATCH_NOW if since is None else 0)

        def convert(status, f):
            if status != S.OK:
                _raise(status, f)
            evs = [Event(seq, ms, self.bucket, key, KINDS.get(k, str(k)), version, exp,
                         val, None if val is None else len(val))
                   for seq, k, ms, version, exp, key, val in f["events"]]
            return evs, f["position"], f["state"] == P.WATCH_GONE
        return self._do(C.WATCH, {"flags": flags, "since": since or 0, "max": max_events,
                                  "wait_ms": int(wait * 1000), "prefix": _b(prefix)},
                        convert)

    def version(self, key):
        return self._do(C.VERSION, {"key": _b(key)}, self._field("version", S.NOT_FOUND))

    def stats(self):
        return self._do(C.STATS, {}, self._field("stats"))

    def flush(self):
        return self._do(C.FLUSH, {}, self._field("count"))

    def ping(self, data=b""):
        return self._do(C.PING, {"data": _b(data)}, self._field("data"))

    # bucket administration (the admin session; see docs/protocol.md)
    def create_bucket(self, name, schema="bytes", eviction="lru", persist=True,
                      default_ttl=None, max_memory=None, compression=None,
                      compression_threshold=None, compression_min_saving=None):
        """Creates a bucket; returns a new READ|WRITE|ADMIN token of it (str). The
        protocol's BUCKET_CREATE has no max_memory or compression fields yet: those
        are refused here (create such a bucket over HTTP, the CLI or the local API)."""
        if max_memory:
            raise errors.InvalidArgument("max_memory: the TCP protocol cannot set it; "
                                         "create the bucket over HTTP or locally")
        if compression not in (None, "none") or compression_threshold is not None \
                or compression_min_saving is not None:
            raise errors.InvalidArgument("compression: the TCP protocol cannot set it; "
                                         "create the bucket over HTTP or locally")
        try:
            fields = {"schema": P.SCHEMAS[schema], "eviction": P.EVICTIONS[eviction],
                      "persist": int(bool(persist)), "default_ttl_ms": _ms(default_ttl),
                      "name": _b(name)}
        except KeyError as exc:
            raise errors.SchemaError(f"unknown setting {exc.args[0]!r}") from None

        def convert(status, f):
            if status != S.OK:
                _raise(status, f)
            return f["token"].decode()
        return self._do(C.BUCKET_CREATE, fields, convert)

    def drop_bucket(self, name):
        return self._do(C.BUCKET_DROP, {"name": _b(name)}, self._field_none)

    def buckets(self):
        return self._do(C.BUCKET_LIST, {},
                        lambda s, f: [n.decode() for n in self._field("names")(s, f)])

    def bucket_info(self, name):
        def convert(status, f):
            if status != S.OK:
                _raise(status, f)
            return {"name": f["name"].decode(), "schema": P.SCHEMA_NAMES[f["schema"]],
                    "eviction": P.EVICTION_NAMES[f["eviction"]], "persist": bool(f["persist"]),
                    "default_ttl": f["default_ttl_ms"] / 1000 if f["default_ttl_ms"] else None}
        return self._do(C.BUCKET_INFO, {"name": _b(name)}, convert)

    def create_token(self, perms):
        """A new token of the session's bucket: (token_id, token)."""
        def convert(status, f):
            if status != S.OK:
                _raise(status, f)
            return f["token_id"], f["token"].decode()
        return self._do(C.TOKEN_CREATE, {"perms": perms}, convert)

    def tokens(self):
        return self._do(C.TOKEN_LIST, {}, self._field("tokens"))

    def revoke_token(self, token_id):
        return self._do(C.TOKEN_REVOKE, {"token_id": token_id}, self._flag)

    @staticmethod
    def _field_none(status, f):
        if status != S.OK:
            _raise(status, f)
        return None


# -- the blocking client ---------------------------------------------------------------

class _Conn:
    """One authenticated blocking connection."""

    def __init__(self, host, port, timeout, max_frame):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.max_frame = max_frame
        self.rid = itertools.count(1)
        self.buf = bytearray()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def stale(self) -> bool:
        """True if the server has closed this idle connection (idle timeout, restart,
        shutdown) or sent something unasked: it must not carry a request."""
        if self.buf:
            return True
        try:
            self.sock.settimeout(0)  # with a timeout, recv would first wait that long
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return False  # nothing to read: alive
        except OSError:
            return True
        return True  # EOF, or bytes nobody asked for

    def _frame(self):
        """The next whole frame from the buffer, or None."""
        buf = self.buf
        if len(buf) < 4:
            return None
        length = int.from_bytes(buf[:4], "big")
        if length < P.HEADER_SIZE or length > self.max_frame:
            raise errors.ProtocolError(f"the server sent a frame of length {length}")
        if len(buf) < length:
            return None
        data = bytes(buf[:length])
        del buf[:length]
        return data

    def _fill(self):
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def roundtrip(self, command, fields, timeout):
        rid = next(self.rid)
        self.sock.settimeout(timeout)
        self.sock.sendall(P.encode_request(command, rid, **fields))
        while True:
            data = self._frame()
            if data is None:
                self._fill()
                continue
            status, got, f = P.decode_response(command, data)
            if got == rid:
                return status, f
            if got == 0:  # a connection-level error: the server is closing
                _raise(status, f)

    def many(self, requests, timeout):
        """Sends requests [(command, fields)] while reading responses, so neither side
        blocks the other; returns [(status, fields)] in the requests' order."""
        frames, index = [], {}
        for i, (command, fields) in enumerate(requests):
            rid = next(self.rid)
            index[rid] = i
            frames.append(P.encode_request(command, rid, **fields))
        out = memoryview(b"".join(frames))
        results = [None] * len(requests)
        pending = len(requests)
        deadline = None if timeout is None else time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        self.sock.setblocking(False)
        try:
            sel.register(self.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0))
            while pending:
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    raise TimeoutError("pipeline timed out")
                for _key, events in sel.select(wait):
                    if events & selectors.EVENT_WRITE and out:
                        try:
                            sent = self.sock.send(out[:262144])
                        except BlockingIOError:
                            sent = 0
                        out = out[sent:]
                        if not out:
                            sel.modify(self.sock, selectors.EVENT_READ)
                    if events & selectors.EVENT_READ:
                        try:
                            self._fill()
                        except BlockingIOError:
                            pass
                        while (data := self._frame()) is not None:
                            _, _, got = P.HEADER.unpack_from(data, 0)
                            if got == 0:
                                status, _, f = P.decode_response(C.PING, data)
                                _raise(status, f)
                            i = index.pop(got, None)
                            if i is None:
                                continue
                            results[i] = P.decode_response(requests[i][0], data)[::2]
                            pending -= 1
        finally:
            sel.close()
            self.sock.setblocking(True)
        return results


class Client(_Ops):
    """A blocking client with a pool of connections; safe to share between threads."""

    def __init__(self, url=None, *, host="127.0.0.1", port=DEFAULT_PORT, bucket="",
                 token=None, timeout=DEFAULT_TIMEOUT, pool_size=DEFAULT_POOL,
                 max_frame=P.DEFAULT_MAX_FRAME, retry_reads=True):
        self._connect_to(url, host=host, port=port, bucket=bucket, token=token,
                         timeout=timeout, pool_size=pool_size, max_frame=max_frame,
                         retry_reads=retry_reads)
        self._lock = threading.Lock()
        self._idle: list[_Conn] = []
        self._pid = os.getpid()
        self.closed = False

    def __repr__(self):
        return f"<bukt.Client {self.host}:{self.port} bucket={self.bucket!r}>"

    def watch(self, since=None, prefix=b"", values=False, wait=None):
        """The bucket's changes: an iterator of events, ending with a bukt.feed.Gone
        when the feed no longer holds its place. Each WATCH is a long poll of up to
        `wait` s (None: half the client's timeout, so the answer comes well inside
        it); the server answers as soon as there are events."""
        from bukt.feed import Gone
        if wait is None:
            wait = self.timeout / 2 if self.timeout else 30.0
        while True:
            evs, position, gone = self.watch_poll(since, prefix, values, wait=wait)
            yield from evs
            if gone:
                yield Gone(since, position)
                return
            since = position

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.closed = True
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # the pool
    def _connect(self) -> _Conn:
        conn = _Conn(self.host, self.port, self.timeout, self.max_frame)
        try:
            if self.token is not None:
                status, f = conn.roundtrip(C.AUTH, {"bucket": _b(self.bucket),
                                                    "token": _b(self.token)}, self.timeout)
                if status != S.OK:
                    _raise(status, f)
        except BaseException:
            conn.close()
            raise
        return conn

    def _take(self) -> _Conn:
        if self.closed:
            raise errors.BuktError("the client is closed")
        if os.getpid() != self._pid:  # forked: the parent's sockets are not ours
            self._idle, self._pid = [], os.getpid()
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect()
            if not conn.stale():
                return conn
            conn.close()

    def _give(self, conn: _Conn):
        with self._lock:
            if len(self._idle) < self.pool_size and not self.closed:
                self._idle.append(conn)
                return
        conn.close()

    def _run(self, fn, idempotent: bool):
        """fn(conn) on a pooled connection; retried once on a fresh one if idempotent."""
        for attempt in (0, 1):
            try:
                conn = self._take()
            except TimeoutError as exc:
                raise self._timed_out(exc) from exc
            try:
                result = fn(conn)
            except (OSError, errors.ProtocolError) as exc:
                conn.close()
                if isinstance(exc, TimeoutError):
                    raise self._timed_out(exc) from exc
                if attempt or not (idempotent and self.retry_reads):
                    if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
                        raise ConnectionError(str(exc)) from exc
                    raise
                continue
            except BaseException:
                conn.close()
                raise
            self._give(conn)
            return result

    def _do(self, command, fields, convert):
        status, f = self._run(lambda conn: conn.roundtrip(command, fields, self.timeout),
                              command in IDEMPOTENT)
        return convert(status, f)

    def pipeline(self) -> "Pipeline":
        return Pipeline(self)


class Pipeline(_Ops):
    """Queues requests and sends them together on one connection.

        with client.pipeline() as p:
            p.set(b"a", b"1")
            p.get(b"a")
        p.results                  # [version, b"1"]

    Leaving the block runs it (unless the block raised). `execute()` runs it explicitly
    and returns the results; with raise_on_error (the default) the first failed request's
    error is raised after every response has been read, otherwise failed requests have
    their exception in `results`. The requests go out in order and the server executes
    them in order, but a pipeline is not a transaction.
    """

    def __init__(self, client: Client):
        self.client = client
        self.queue: list = []
        self.results: list | None = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and self.results is None:
            self.execute()

    def __len__(self):
        return len(self.queue)

    def _do(self, command, fields, convert):
        self.queue.append((command, fields, convert))
        return self

    def execute(self, raise_on_error=True) -> list:
        queue, self.queue = self.queue, []
        requests = [(c, f) for c, f, _ in queue]
        idempotent = all(c in IDEMPOTENT for c, _ in requests)
        timeout = self.client.timeout
        raw = self.client._run(lambda conn: conn.many(requests, timeout), idempotent) \
            if requests else []
        results, first = [], None
        for (_, _, convert), (status, f) in zip(queue, raw):
            try:
                results.append(convert(status, f))
            except errors.BuktError as exc:
                results.append(exc)
                first = first or exc
        self.results = results
        if first is not None and raise_on_error:
            raise first
        return results


# -- the asyncio client ----------------------------------------------------------------

class _AsyncConn:
    """One authenticated connection shared by many coroutines: requests go out as they
    come, a reader task hands each response to the future of its RequestID."""

    def __init__(self, reader, writer, max_frame):
        self.reader, self.writer = reader, writer
        self.max_frame = max_frame
        self.rid = itertools.count(1)
        self.waiting: dict[int, tuple[asyncio.Future, int]] = {}
        self.dead: BaseException | None = None
        self.task = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def open(cls, host, port, max_frame, timeout):
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), timeout)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer, max_frame)

    def send(self, command, fields) -> asyncio.Future:
        if self.dead is not None:
            raise ConnectionError(f"connection lost: {self.dead}")
        rid = next(self.rid)
        fut = asyncio.get_running_loop().create_future()
        self.waiting[rid] = (fut, command)
        self.writer.write(P.encode_request(command, rid, **fields))
        return fut

    async def _read_loop(self):
        try:
            while True:
                head = await self.reader.readexactly(4)
                length = int.from_bytes(head, "big")
                if length < P.HEADER_SIZE or length > self.max_frame:
                    raise errors.ProtocolError(f"the server sent a frame of length {length}")
                data = head + await self.reader.readexactly(length - 4)
                _, status, rid = P.HEADER.unpack_from(data, 0)
                if rid == 0:
                    _, _, f = P.decode_response(C.PING, data)
                    raise P.error_for(status, f.get("message", ""))
                entry = self.waiting.pop(rid, None)
                if entry is None:
                    continue  # its caller timed out
                fut, command = entry
                if not fut.done():
                    try:
                        st, _, f = P.decode_response(command, data)
                    except errors.ProtocolError as exc:
                        fut.set_exception(exc)
                    else:
                        fut.set_result((st, f))
        except asyncio.CancelledError:
            self._fail(ConnectionError("the client closed the connection"))
            raise
        except (asyncio.IncompleteReadError, OSError) as exc:
            self._fail(ConnectionError(f"the server closed the connection ({exc!r})"))
        except BaseException as exc:
            self._fail(exc)
        finally:
            self.writer.close()

    def _fail(self, exc):
        self.dead = exc
        waiting, self.waiting = self.waiting, {}
        for fut, _ in waiting.values():
            if not fut.done():
                fut.set_exception(exc if isinstance(exc, errors.BuktError)
                                  else ConnectionError(str(exc)))

    async def close(self):
        self.task.cancel()
        try:
            await self.task
        except BaseException:
            pass


class AsyncClient(_Ops):
    """The asyncio client. Methods are coroutines with Bucket's names. Up to pool_size
    connections are opened as load requires; each carries many requests at once."""

    def __init__(self, url=None, *, host="127.0.0.1", port=DEFAULT_PORT, bucket="",
                 token=None, timeout=DEFAULT_TIMEOUT, pool_size=DEFAULT_POOL,
                 max_frame=P.DEFAULT_MAX_FRAME, retry_reads=True):
        self._connect_to(url, host=host, port=port, bucket=bucket, token=token,
                         timeout=timeout, pool_size=pool_size, max_frame=max_frame,
                         retry_reads=retry_reads)
        self.pool_size = max(1, self.pool_size)
        self._conns: list[_AsyncConn] = []
        self._lock = None
        self.closed = False

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def close(self):
        self.closed = True
        conns, self._conns = self._conns, []
        for conn in conns:
            await conn.close()

    async def _connect(self) -> _AsyncConn:
        conn = await _AsyncConn.open(self.host, self.port, self.max_frame, self.timeout)
        try:
            if self.token is not None:
                status, f = await asyncio.wait_for(
                    conn.send(C.AUTH, {"bucket": _b(self.bucket), "token": _b(self.token)}),
                    self.timeout)
                if status != S.OK:
                    _raise(status, f)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _conn(self) -> _AsyncConn:
        """An idle connection, else a new one while the pool has room, else the least
        busy one (requests share it: they are pipelined)."""
        if self.closed:
            raise errors.BuktError("the client is closed")
        self._conns = [c for c in self._conns if c.dead is None]
        for conn in self._conns:
            if not conn.waiting:
                return conn
        if len(self._conns) < self.pool_size:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if len(self._conns) < self.pool_size:
                    conn = await self._connect()
                    self._conns.append(conn)
                    return conn
        return min(self._conns, key=lambda c: len(c.waiting))

    async def _send(self, command, fields):
        for attempt in (0, 1):
            conn = await self._conn()
            try:
                fut = conn.send(command, fields)
                return await asyncio.wait_for(fut, self.timeout)
            except ConnectionError:
                if attempt or not (self.retry_reads and command in IDEMPOTENT):
                    raise

    async def _call(self, command, fields, convert):
        try:
            status, f = await self._send(command, fields)
        except TimeoutError as exc:
            raise self._timed_out(exc) from exc
        return convert(status, f)

    def _do(self, command, fields, convert):
        return self._call(command, fields, convert)

    def pipeline(self) -> "AsyncPipeline":
        return AsyncPipeline(self)


class AsyncPipeline(Pipeline):
    """`async with client.pipeline() as p: p.set(...); p.get(...)`; then `p.results`.
    All requests go out on one connection before any response is awaited."""

    def __init__(self, client: AsyncClient):
        self.client = client
        self.queue = []
        self.results = None

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc, tb):
        if exc_type is None and self.results is None:
            await self.execute()

    async def execute(self, raise_on_error=True) -> list:
        queue, self.queue = self.queue, []
        if not queue:
            self.results = []
            return []
        conn = await self.client._conn()
        futures = [conn.send(c, f) for c, f, _ in queue]
        raw = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True),
                                     self.client.timeout)
        results, first = [], None
        for (_, _, convert), r in zip(queue, raw):
            try:
                if isinstance(r, BaseException):
                    raise r
                results.append(convert(*r))
            except (errors.BuktError, ConnectionError) as exc:
                results.append(exc)
                first = first or exc
        self.results = results
        if first is not None and raise_on_error:
            raise first
        return results

