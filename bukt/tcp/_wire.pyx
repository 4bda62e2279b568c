# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The TCP worker's hot path in Cython: split a receive buffer into frames and answer
GET and SET straight from the bytes, without the generic codec.

It is the compiled twin of the loop in bukt/tcp/connection.py (`Connection._process`)
and of Session's fast path (bukt/tcp/session.py); both stay in Python as the reference
and the fallback, and tests/integration/test_tcp_fuzz.py runs the same streams through both. It
calls the store through its Python API, except that a GET of a bukt._core bucket asks
the core to copy the value into a bytes object with room for the response header in
front (read_into, cimported from the core's C boundary, bukt/_core.pxd), which
fast_get then writes: one copy of the value and no Python call, and Bucket.get when
the core hands the key back.

    pos, why = _wire.run(buf, size, pos, session, max_frame, out, out_limit)

handles whole frames of buf[pos:size], appending each response (bytes) or Deferred to
`out`, and stops at the first of: an incomplete frame (STOP_PARTIAL), a bad Length
(STOP_FATAL, pos at that frame), QUIT (STOP_QUIT), a Deferred (STOP_DEFERRED: flow
control must look), `out_limit` bytes of responses gathered (STOP_FULL), a request that
must wait for room in the change ring (STOP_PARK, pos at that frame, which is left in
the buffer to be handled again: bukt/tcp/session.py, RING FULL). Everything
else (flow control, writing, closing) stays with the Python caller.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from bukt import errors as _errors
from bukt import protocol as _P
from bukt.tcp import stats as _stats
from bukt.tcp.frames import PARK as _PARK, internal_error as _internal_error

from bukt import _core
from bukt._core cimport READ_HIT, READ_MISS, read_into

# This worker's counters (bukt/tcp/statsrow.pxi): a request pays a NULL test and a few adds.
include "statsrow.pxi"
cdef Py_ssize_t S_REQUESTS = _stats.BIN_REQUESTS
cdef Py_ssize_t S_ERRORS = _stats.BIN_ERRORS
cdef Py_ssize_t S_IN = _stats.BYTES_IN
cdef Py_ssize_t S_OUT = _stats.BYTES_OUT
cdef uint8_t S_OPCODES = _stats.OPCODES
cdef uint8_t S_ERROR_STATUS = _stats.ERROR_STATUS


def set_stats(row):
    """Count into `row` (a memoryview of u64 words: bukt/tcp/stats.py), or None: stop."""
    point_stats(row)


cdef inline void count(uint8_t command, uint32_t length, object result) noexcept:
    cdef uint8_t op = command if command < S_OPCODES else 0
    STATS[S_REQUESTS + op] += 1
    STATS[S_IN] += length
    if type(result) is bytes:
        STATS[S_OUT] += <uint64_t>PyBytes_GET_SIZE(result)
        if <uint8_t>PyBytes_AS_STRING(result)[4] >= S_ERROR_STATUS:
            STATS[S_ERRORS + op] += 1


# The frame loop works with any store (tests' fakes too); read_into only with this one.
cdef object CoreBucket = _core.Bucket

# the frame header's size, and where the key starts in a payload (bukt/protocol.py)
cdef Py_ssize_t HDR = _P.HEADER_SIZE
cdef Py_ssize_t GET_KEY = _P.GET_KEY
cdef Py_ssize_t SET_KEY = _P.SET_KEY

# The stops, as Python names (their C names are in bukt/tcp/_wire.pxd).
STOP_PARTIAL = W_PARTIAL
STOP_FATAL = W_FATAL
STOP_QUIT = W_QUIT
STOP_DEFERRED = W_DEFERRED
STOP_FULL = W_FULL
STOP_PARK = W_PARK

cdef int READ = 1
cdef int WRITE = 2
cdef uint8_t SET_FLAGS = _P.SET_FLAGS


cdef inline uint32_t be32(const unsigned char *p) nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline uint64_t be64(const unsigned char *p) nogil:
    return (<uint64_t>be32(p) << 32) | be32(p + 4)


cdef inline void put64(char *p, uint64_t v) noexcept nogil:
    cdef int i
    for i in range(8):
        p[7 - i] = <char>(v & 0xFF)
        v >>= 8


cdef inline void put32(char *p, uint32_t v) noexcept nogil:
    p[0] = <char>(v >> 24); p[1] = <char>(v >> 16); p[2] = <char>(v >> 8); p[3] = <char>v


cdef bytes frame(uint8_t status, uint64_t rid, const char *body, Py_ssize_t n,
                 int prefix=-1):
    """A response frame: header, then an optional one-byte prefix, then body."""
    cdef Py_ssize_t extra = 1 if prefix >= 0 else 0
    cdef bytes out = PyBytes_FromStringAndSize(NULL, HDR + extra + n)
    cdef char *p = PyBytes_AS_STRING(out)
    put32(p, <uint32_t>(HDR + extra + n))
    p[4] = <char>status
    put64(p + 5, rid)
    if extra:
        p[HDR] = <char>prefix
    if n:
        memcpy(p + HDR + extra, body, n)
    return out


cdef bytes u64_frame(uint64_t rid, uint64_t v):
    cdef char body[8]
    put64(body, v)
    return frame(0, rid, body, 8)


cdef Py_ssize_t request_key(const char *p, Py_ssize_t n, uint32_t *klen) noexcept:
    """Where the key of the GET or SET frame at p[:n] starts (GET_KEY, SET_KEY: the
    layout fast_get and fast_set read), its length in *klen; -1 when p is not one, or
    the key is not all in p[:n]. Nothing else is checked: for a hint (bukt/tcp/_epoll.pyx,
    PREFETCH)."""
    cdef const unsigned char *u = <const unsigned char *>p
    cdef Py_ssize_t at
    if n < HDR + GET_KEY:       # (the shorter of the two)
        return -1
    if u[4] == 2:
        at = HDR + GET_KEY
    elif u[4] == 1:
        at = HDR + SET_KEY
    else:
        return -1
    if at > n:
        return -1
    klen[0] = be32(u + at - 4)
    return at if at + <Py_ssize_t>klen[0] <= n else -1


cdef object fast_get(object bucket, uint64_t rid, const unsigned char *p, Py_ssize_t n):
    cdef uint32_t klen
    cdef int found
    cdef char *out
    if n < GET_KEY:
        raise _errors.ProtocolError("payload truncated: key length needs 4 bytes")
    klen = be32(p + GET_KEY - 4)
    if <Py_ssize_t>klen + GET_KEY != n:
        if <Py_ssize_t>klen + GET_KEY > n:
            raise _errors.ProtocolError(
                f"payload truncated: key needs {klen} bytes, {n - GET_KEY} left")
        raise _errors.ProtocolError(f"{n - GET_KEY - klen} unexpected bytes after the payload")
    if type(bucket) is CoreBucket:
        # the value lands after room for the header and the type byte, written here
        result = read_into(bucket, <const char *>p + GET_KEY, klen, HDR + 1, &found)
        if found == READ_HIT:
            out = PyBytes_AS_STRING(result)
            put32(out, <uint32_t>PyBytes_GET_SIZE(result))
            out[4] = 0                              # OK
            put64(out + 5, rid)
            out[HDR] = 0                            # the value's type: bytes
            return result
        if found == READ_MISS:
            return frame(1, rid, NULL, 0)           # NOT_FOUND
    value = bucket.get(PyBytes_FromStringAndSize(<const char *>p + GET_KEY, klen))
    if value is None:
        return frame(1, rid, NULL, 0)
    if type(value) is bytes:
        return frame(0, rid, PyBytes_AS_STRING(value), len(<bytes>value), 0)
    if type(value) is int:
        data = str(value).encode()
        return frame(0, rid, PyBytes_AS_STRING(data), len(data), 1)
    if type(value) is str:
        data = (<str>value).encode()
        return frame(0, rid, PyBytes_AS_STRING(data), len(data), 2)
    data = bytes(value)
    return frame(0, rid, PyBytes_AS_STRING(data), len(data), 0)


cdef object fast_set(object bucket, uint64_t rid, const unsigned char *p, Py_ssize_t n):
    cdef uint8_t flags
    cdef uint64_t ttl_ms, if_version
    cdef uint32_t klen, vlen
    cdef Py_ssize_t kend
    if n < SET_KEY:
        raise _errors.ProtocolError("payload truncated: SET needs at least 25 bytes")
    flags = p[0]
    ttl_ms = be64(p + 1)
    if_version = be64(p + 9)
    klen = be32(p + SET_KEY - 4)
    kend = SET_KEY + <Py_ssize_t>klen
    if kend + 4 > n:
        raise _errors.ProtocolError("payload truncated: key or value length")
    vlen = be32(p + kend)
    if kend + 4 + <Py_ssize_t>vlen != n:
        raise _errors.ProtocolError("payload length does not match the key and value")
    if flags & ~SET_FLAGS:
        raise _errors.ProtocolError(f"unknown SET flags 0x{flags:02x}")
    key = PyBytes_FromStringAndSize(<const char *>p + SET_KEY, klen)
    value = PyBytes_FromStringAndSize(<const char *>p + kend + 4, vlen)
    if flags == 0 and ttl_ms == 0:
        version = bucket.set(key, value)  # positional: no keyword parsing in the call
    else:
        version = bucket.set(key, value, ttl_ms / 1000.0 if ttl_ms else None,
                             bool(flags & 1), bool(flags & 2), bool(flags & 4),
                             if_version if flags & 8 else None)
    if version is None:
        return frame(2, rid, NULL, 0)
    return u64_frame(rid, version)


cdef class Hot:
    """The session's bucket, permissions and persist flag as run_frames last read
    them, for the epoll loop to pass back with the connection's next batch instead of
    three attribute reads of the Python Session. Read again from the session when
    stale (a new connection), when the batch rechecks the token (the bucket table
    changed: REVOCATION in bukt/tcp/session.py) and after every request that took the
    slow path (AUTH is one): nothing else changes them."""

    def __cinit__(self):
        self.stale = True


cdef inline int keep_hot(Hot hot, object bucket, int perms, bint persist) except -1:
    if hot is not None:
        hot.bucket, hot.perms, hot.persist, hot.stale = bucket, perms, persist, False
    return 0


def run(bytearray buf, Py_ssize_t size, Py_ssize_t pos, object session,
        Py_ssize_t max_frame, list out, Py_ssize_t out_limit):
    """(pos, why): run_frames for Python callers (bukt/tcp/connection.py)."""
    cdef int why = W_PARTIAL
    pos = run_frames(buf, size, pos, session, max_frame, out, out_limit, &why)
    return pos, why


cdef Py_ssize_t run_frames(bytearray buf, Py_ssize_t size, Py_ssize_t pos, object session,
                           Py_ssize_t max_frame, list out, Py_ssize_t out_limit,
                           int *why, bint recheck=True, Hot hot=None) except -1:
    cdef const unsigned char *b
    cdef uint32_t length
    cdef uint8_t command
    cdef uint64_t rid
    cdef Py_ssize_t out_bytes = 0
    cdef int perms
    cdef object bucket
    cdef bint persist
    cdef object result
    if recheck:     # a token revoked since the last batch (session.py, REVOCATION);
        session.recheck()   # False: the caller knows the bucket table has not changed
    if hot is None or recheck or hot.stale:
        perms = session.perms
        bucket = session.bucket
        persist = session.persist
        keep_hot(hot, bucket, perms, persist)
    else:
        perms = hot.perms
        bucket = hot.bucket
        persist = hot.persist
    while size - pos >= 4:
        b = <const unsigned char *>(<char *>buf) + pos  # refreshed: buf does not move here
        length = be32(b)
        if length < HDR or length > max_frame:
            why[0] = W_FATAL
            return pos
        if size - pos < length:
            why[0] = W_PARTIAL
            return pos
        command = b[4]
        rid = be64(b + 5)
        result = None
        # FAST PATH: GET and SET with the permission in hand.
        if (command == 2 and perms & READ) or (command == 1 and perms & WRITE):
            try:
                if command == 2:
                    result = fast_get(bucket, rid, b + HDR, length - HDR)
                else:
                    result = fast_set(bucket, rid, b + HDR, length - HDR)
                    if persist or len(<bytes>result) > max_frame:
                        result = session._finish_write(rid, result, command)  # maybe Deferred
            except _errors.RingFull as exc:
                # a SET not applied, or a single-read key not consumed: tried again later
                if session.park_ring_full:
                    session.park_room = exc.room  # what its wait claims
                    why[0] = W_PARK
                    return pos
                result = _P.encode_error(rid, exc)
            except _errors.BuktError as exc:
                result = _P.encode_error(rid, exc)
            except Exception as exc:
                result = _internal_error(command, rid, exc)
        if result is None:
            # SLOW PATH: everything else, and refusals, through the Python session.
            result = session.handle(command, rid, buf, pos + HDR, pos + length)
            if result is _PARK:
                why[0] = W_PARK
                return pos  # the frame stays: it is handled again
            perms = session.perms
            bucket = session.bucket
            persist = session.persist
            keep_hot(hot, bucket, perms, persist)
            if session.closing:  # QUIT (only the slow path changes the session)
                if STATS != NULL:
                    count(command, length, result)
                pos += length
                out.append(result)
                why[0] = W_QUIT
                return pos
        if STATS != NULL:
            count(command, length, result)
        pos += length
        out.append(result)
        if type(result) is not bytes:
            why[0] = W_DEFERRED
            return pos
        out_bytes += len(<bytes>result)
        if out_bytes >= out_limit:
            why[0] = W_FULL
            return pos
    why[0] = W_PARTIAL
    return pos

