# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The RESP face's hot path in Cython: parse a buffer's commands in C and answer the
common ones straight against the bucket, without the Python parser, dispatch and
encoders (`resp.fast_path`, on by default).

bukt/tcp/resp_session.py stays the reference for what every command does, and the
fallback: this loop takes a command only when the answer is certain to be the one the
Python session would give, byte for byte, and hands every other command to it (its own
loop, frames.drive, stopped after one reply), going on in C after it. It takes

    GET, SET key value [EX s | PX ms], SETEX, INCR, DECR, INCRBY, DECRBY, MGET, MSET,
    DEL, UNLINK, EXISTS, PING, ECHO

as an array of bulk strings, with their exact arity, on an authenticated session that is
not in MULTI, not subscribed (bukt/tcp/resp_pubsub.py), not waiting for the disk (ORDER
in resp_session.py), with the permission the command needs. Everything else goes to the session: inline commands, protocol
errors (the parser there words them and the limits are checked here in the same order:
bukt/tcp/resp.py, PARSING), NOAUTH/NOPERM refusals, arity errors, integer arguments
that are not plain decimals, MULTI, HELLO, AUTH. A Bucket call that raises is answered
by the session's own mapping (RespSession.failed: the error reply, or PARK for a write
that waits for room in the change ring), a write to a persisted bucket under `fsync:
always` by RespSession.finish (the Deferred the loops hold in the durability FIFO).

POSITIONS. On the epoll loop (its hook RingPositions, on a bukt._core store) the loop
does finish's work itself, in C: a write's reply waits for the store's last_pos unless
the flushed position has passed it, and the session's wait_pos (ORDER in
resp_session.py) is set to it. A session whose wait_pos the flushed position has
passed waits for nothing any more: the batch clears it before it looks at the
preconditions, so a client that sends its next command after its reply (every
`fsync: always` client that does not pipeline) stays on this path. Before, every such
command went to the Python session, whose finish was what cleared it: at 4 clients
under always the worker's CPU was two fifths libpython (perf), one fifth after.

    pos, why = _resp.run(buf, size, pos, session, max_frame, out, out_limit)

has resp_session.run's contract (the same STOP_* codes); the epoll loop calls the C
entry, run_fast, which also skips the session's token recheck when the bucket table
has not changed (as run_frames does: bukt/tcp/_wire.pyx). The replies of consecutive
fast commands are gathered into one bytes object.

A GET of a bukt._core bucket reads through the core's read_into (cimported from its C
boundary, bukt/_core.pxd, as the binary face's fast_get does: bukt/tcp/_wire.pyx),
without a Python call; the other commands call the Bucket's methods.

PREFETCH. A key's read waits for three lines from memory one after the other (its
slot, the entry's header, its value: cext/bucket.pxi, PREFETCH); a pipelined batch
would pay that for each command in turn. On a bukt._core bucket the loop therefore
looks ahead in windows of up to AHEAD commands for the keys of their GETs: before it
runs a window, it starts stage 2 (the entries) of that window's keys and stage 1 (the
slots) of the next window's, so that the fetches of many keys overlap each other and
the running of the commands before them. A command with nothing behind it in the
buffer is not looked ahead of: its read follows at once. The epoll loop hints the
first GET of each connection it read (request_key, with the binary face's STAGING in
bukt/tcp/_epoll.pyx).
"""
cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_SIZE
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

from bukt.tcp import resp as _R
from bukt.tcp import resp_session as _S
from bukt.tcp.frames import PARK as _PARK, Deferred as _Deferred, drive as _drive
from bukt.writewait.durability import (RingDurability as _RingDurability,
                                       RingPositions as _RingPositions)

from bukt import _core
from bukt._core cimport (READ_HIT, READ_MISS, flushed_pos_of, last_pos_of, prefetch_key,
                         read_into)

# The loop works with any store (tests' fakes too); read_into only with this one.
cdef object CoreBucket = _core.Bucket
cdef object CoreStore = _core.Store

# resp_session.run's stops (the epoll loop compares them with _wire's W_* values)
STOP_PARTIAL, STOP_FATAL, STOP_QUIT, STOP_DEFERRED, STOP_FULL, STOP_PARK = range(6)
assert (STOP_PARTIAL, STOP_FATAL, STOP_QUIT, STOP_DEFERRED, STOP_FULL, STOP_PARK) == (
    _S.STOP_PARTIAL, _S.STOP_FATAL, _S.STOP_QUIT, _S.STOP_DEFERRED, _S.STOP_FULL,
    _S.STOP_PARK)

# bukt/tcp/resp.py's limits, as C values
cdef Py_ssize_t LINE_MAX = _R.LINE_MAX
cdef Py_ssize_t MIN_ELEMENT = _R.MIN_ELEMENT
cdef enum:
    MAXARGS = 256           # a longer command (MSET of 128 pairs) goes to the session
    AHEAD = 16              # PREFETCH: commands a window looks ahead

cdef int READ = _S.READ
cdef int WRITE = _S.WRITE

cdef bytes OK = _R.OK
cdef bytes NULL2 = _R.NULL2
cdef bytes NULL3 = _R.NULL3
cdef bytes PONG = _R.PONG

# parse's answers
cdef enum:
    P_DONE = 0
    P_PARTIAL = 1
    P_OTHER = 2             # the session's to parse: inline, an error, too many args

# what a command did
cdef enum:
    C_DONE = 0              # its reply is in the gathered replies
    C_OTHER = 1             # not taken here: the session runs it
    C_PARK = 2              # the session said PARK
    C_DEFERRED = 3          # its reply is `deferred` (a Deferred)

cdef enum:
    X_GET, X_SET, X_SETEX, X_INCR, X_DECR, X_INCRBY, X_DECRBY, X_MGET, X_MSET, X_DEL, \
        X_EXISTS, X_PING, X_ECHO, X_NONE

# this X_*'s command name, for its counters (bukt/tcp/stats.py: UNLINK counts as DEL)
X_NAMES = (b"get", b"set", b"setex", b"incr", b"decr", b"incrby", b"decrby", b"mget",
           b"mset", b"del", b"exists", b"ping", b"echo")


# -- counting (bukt/tcp/stats.py): as the binary face's (bukt/tcp/_wire.pyx), a pointer
# into this worker's row of the shared counters, NULL while nothing is counted. A fast
# command pays a NULL test and two adds; a batch, its bytes in and out.

include "statsrow.pxi"
cdef Py_ssize_t X_WORD[X_NONE]      # X_* -> its requests word; its errors word is + X_ERRORS
cdef Py_ssize_t X_ERRORS = 0
cdef Py_ssize_t S_IN = 0, S_OUT = 0


def set_stats(row, index=None):
    """Count into `row` (a memoryview of u64 words: bukt/tcp/stats.py) with `index` (its
    RespIndex), or None: stop."""
    global X_ERRORS, S_IN, S_OUT
    if row is None:
        point_stats(None)
        return
    from bukt.tcp import stats as st
    for x, name in enumerate(X_NAMES):
        X_WORD[x] = index.word(name)
    X_ERRORS = index.n
    S_IN, S_OUT = st.FACE_WORDS + st.BYTES_IN, st.FACE_WORDS + st.BYTES_OUT
    point_stats(row)


# -- the gathered replies: one growing C buffer, emptied into `out` at every stop --------

cdef char *acc = NULL
cdef Py_ssize_t acc_len = 0
cdef Py_ssize_t acc_cap = 0
cdef enum:
    ACC_KEEP = 1 << 20      # a buffer grown past this (a large GET) is freed after use


cdef int reserve(Py_ssize_t n) except -1:
    global acc, acc_cap
    cdef Py_ssize_t cap
    cdef char *p
    if acc_len + n <= acc_cap:
        return 0
    cap = acc_cap * 2
    if cap < acc_len + n:
        cap = acc_len + n
    if cap < 4096:
        cap = 4096
    p = <char *>realloc(acc, cap)
    if p == NULL:
        raise MemoryError()
    acc, acc_cap = p, cap
    return 0


cdef inline int put(const char *p, Py_ssize_t n) except -1:
    global acc_len
    reserve(n)
    memcpy(acc + acc_len, p, n)
    acc_len += n
    return 0


cdef int put_decimal(char tag, int64_t v) except -1:
    """`<tag><v>\\r\\n` (":%d" and "$%d" headers)."""
    global acc_len
    cdef char tmp[24]
    cdef int i = 24
    cdef uint64_t u = <uint64_t>(-v) if v < 0 else <uint64_t>v
    tmp[23] = 10
    tmp[22] = 13
    i = 22
    while True:
        i -= 1
        tmp[i] = <char>(48 + u % 10)
        u //= 10
        if u == 0:
            break
    if v < 0:
        i -= 1
        tmp[i] = 45
    i -= 1
    tmp[i] = tag
    put(tmp + i, 24 - i)
    return 0


cdef int put_bulk(const char *p, Py_ssize_t n) except -1:
    put_decimal(36, n)              # '$'
    reserve(n + 2)
    put(p, n)
    put(b"\r\n", 2)
    return 0


cdef int put_value(object v, int proto) except -1:
    """R.value(v, proto): a stored value or None, as a bulk; bytes here, anything else
    (a typed or json bucket's value, None) by R.value itself."""
    cdef bytes data
    if type(v) is bytes:
        return put_bulk(PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v))
    if v is None:               # R.null's choice, without the call
        data = NULL3 if proto == 3 else NULL2
    else:
        data = _R.value(v, proto)
    return put(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))


cdef int put_int(object n) except -1:
    """R.integer(n)."""
    cdef int64_t v
    try:
        v = n
    except OverflowError:
        data = b":%d\r\n" % n
        return put(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    return put_decimal(58, v)       # ':'


cdef Py_ssize_t flush(list out) except -1:
    """The gathered replies into `out`, as one bytes object; how many bytes."""
    global acc, acc_len, acc_cap
    cdef Py_ssize_t n = acc_len
    if n:
        out.append(PyBytes_FromStringAndSize(acc, n))
        acc_len = 0
        if acc_cap > ACC_KEEP:
            free(acc)
            acc, acc_cap = NULL, 0
    return n


# -- parsing: bukt/tcp/resp.py's Parser.parse for arrays of bulk strings ------------------

cdef inline Py_ssize_t find_crlf(const unsigned char *b, Py_ssize_t p, Py_ssize_t limit) noexcept:
    """Where "\\r\\n" starts with both bytes in b[p:limit]; -1 if nowhere."""
    while p + 1 < limit:
        if b[p] == 13 and b[p + 1] == 10:
            return p
        p += 1
    return -1


cdef inline bint decimal(const unsigned char *b, Py_ssize_t s, Py_ssize_t e,
                         uint64_t *out) noexcept:
    """resp.py's _number: 1 to 19 digits, nothing else."""
    cdef uint64_t n = 0
    if e <= s or e - s > 19:
        return False
    while s < e:
        if b[s] < 48 or b[s] > 57:
            return False
        n = n * 10 + (b[s] - 48)
        s += 1
    out[0] = n
    return True


cdef int parse(const unsigned char *b, Py_ssize_t pos, Py_ssize_t size,
               Py_ssize_t max_bulk, Py_ssize_t *starts, Py_ssize_t *lens, int *argc,
               Py_ssize_t *end) noexcept:
    """One command at b[pos:size]: P_DONE (argc bulks at starts/lens, the next command
    at *end), P_PARTIAL (incomplete, and the session's parser would say so too), or
    P_OTHER: what the session's parser must see (an inline command, `*0`, more than
    MAXARGS elements, and everything it refuses, checked in its order so that a
    command it would refuse is never called incomplete here)."""
    cdef Py_ssize_t eol, p, start, e, lim, i
    cdef uint64_t count, n
    if b[pos] != 42:                                # '*'
        return P_OTHER
    lim = size if size < pos + LINE_MAX else pos + LINE_MAX
    eol = find_crlf(b, pos, lim)
    if eol < 0:
        return P_OTHER if size - pos >= LINE_MAX else P_PARTIAL
    if b[pos + 1] == 45 or not decimal(b, pos + 1, eol, &count):
        return P_OTHER
    if count > <uint64_t>(max_bulk // MIN_ELEMENT) or count == 0 or count > MAXARGS:
        return P_OTHER
    p = eol + 2
    for i in range(<Py_ssize_t>count):
        if p >= size:
            return P_PARTIAL
        if b[p] != 36:                              # '$'
            return P_OTHER
        lim = size if size < p + LINE_MAX else p + LINE_MAX
        eol = find_crlf(b, p, lim)
        if eol < 0:
            return P_OTHER if size - p >= LINE_MAX else P_PARTIAL
        if b[p + 1] == 45 or not decimal(b, p + 1, eol, &n) or n > <uint64_t>max_bulk:
            return P_OTHER
        start = eol + 2
        e = start + <Py_ssize_t>n
        if e + 2 - pos > max_bulk + LINE_MAX * (<Py_ssize_t>count + 1):
            return P_OTHER
        if e + 2 > size:
            return P_PARTIAL
        if b[e] != 13 or b[e + 1] != 10:
            return P_OTHER
        starts[i] = start
        lens[i] = <Py_ssize_t>n
        p = e + 2
    argc[0] = <int>count
    end[0] = p
    return P_DONE


cdef inline bint named(const unsigned char *p, Py_ssize_t n, const char *name,
                       Py_ssize_t k) noexcept:
    """bytes.upper() of p[:n] == name (upper case ASCII)."""
    cdef Py_ssize_t i
    cdef unsigned char c
    if n != k:
        return False
    for i in range(n):
        c = p[i]
        if 97 <= c <= 122:
            c -= 32
        if c != <unsigned char>name[i]:
            return False
    return True


cdef int which(const unsigned char *p, Py_ssize_t n) noexcept:
    if n == 3:
        if named(p, n, b"GET", 3): return X_GET
        if named(p, n, b"SET", 3): return X_SET
        if named(p, n, b"DEL", 3): return X_DEL
    elif n == 4:
        if named(p, n, b"INCR", 4): return X_INCR
        if named(p, n, b"DECR", 4): return X_DECR
        if named(p, n, b"MGET", 4): return X_MGET
        if named(p, n, b"MSET", 4): return X_MSET
        if named(p, n, b"PING", 4): return X_PING
        if named(p, n, b"ECHO", 4): return X_ECHO
    elif n == 5:
        if named(p, n, b"SETEX", 5): return X_SETEX
    elif n == 6:
        if named(p, n, b"INCRBY", 6): return X_INCRBY
        if named(p, n, b"DECRBY", 6): return X_DECRBY
        if named(p, n, b"EXISTS", 6): return X_EXISTS
        if named(p, n, b"UNLINK", 6): return X_DEL
    return X_NONE


cdef inline bint plain_int(const unsigned char *p, Py_ssize_t n, int64_t *out) noexcept:
    """An integer argument the session's _int reads the same: an optional '-' and 1 to
    18 digits (anything else, underscores and all, is left to it)."""
    cdef uint64_t v
    cdef bint neg = n > 0 and p[0] == 45
    if neg:
        p += 1
        n -= 1
    if n > 18 or not decimal(p, 0, n, &v):
        return False
    out[0] = -<int64_t>v if neg else <int64_t>v
    return True


# -- PREFETCH (module docstring) ----------------------------------------------------------

cdef inline bint keyed(int x) noexcept:
    """A command whose key is hinted: GET. (A write's key is not: Bucket.set and incr
    start the fetches of its lines themselves, and hinting SETs early made 50
    connections' SETs slower, not faster.)"""
    return x == X_GET


cdef Py_ssize_t request_key(const char *p, Py_ssize_t n, Py_ssize_t max_bulk,
                            uint32_t *klen) noexcept:
    """Where the key of the keyed command (keyed()) that starts p[:n] starts, its
    length in *klen; -1 when p[:n] does not start with one, whole. For a hint (the
    epoll loop's STAGING): nothing else is checked."""
    cdef Py_ssize_t starts[MAXARGS]
    cdef Py_ssize_t lens[MAXARGS]
    cdef int argc
    cdef Py_ssize_t end
    cdef const unsigned char *b = <const unsigned char *>p
    if n < 14 or b[1] != 50 or b[2] != 13:      # a GET is "*2\r\n$3\r\nGET\r\n$..."
        return -1
    if parse(b, 0, n, max_bulk, starts, lens, &argc, &end) != P_DONE \
            or argc < 2 or not keyed(which(b + starts[0], lens[0])):
        return -1
    klen[0] = <uint32_t>lens[1]
    return starts[1]


cdef Py_ssize_t window(const unsigned char *b, Py_ssize_t pos, Py_ssize_t size,
                       Py_ssize_t max_bulk, Py_ssize_t *kat, uint32_t *klen,
                       int *nk) noexcept:
    """The window of up to AHEAD whole commands from b[pos:]: the keys of its keyed
    ones at kat/klen (*nk of them); where it ends. It ends early at a command the fast
    path may not take (parse's P_OTHER) or a partial one."""
    cdef Py_ssize_t starts[MAXARGS]
    cdef Py_ssize_t lens[MAXARGS]
    cdef int argc, i = 0
    cdef Py_ssize_t end
    nk[0] = 0
    while i < AHEAD and pos < size:
        if parse(b, pos, size, max_bulk, starts, lens, &argc, &end) != P_DONE:
            break
        if argc >= 2 and keyed(which(b + starts[0], lens[0])):
            kat[nk[0]] = starts[1]
            klen[nk[0]] = <uint32_t>lens[1]
            nk[0] += 1
        pos = end
        i += 1
    return pos


cdef inline void hint(object bucket, const unsigned char *b, Py_ssize_t *kat,
                      uint32_t *klen, int nk, int stage) noexcept:
    cdef int i
    for i in range(nk):
        prefetch_key(bucket, <const char *>b + kat[i], klen[i], stage)


# -- running commands ---------------------------------------------------------------------

cdef inline object field(dict d, object s, str name):
    """s.<name>, read from the instance dict `d` when it is there (a RespSession keeps
    all of Batch.load's fields in it), else by getattr: a Batch reads ten of them at
    every run, and the generic lookup (the type's attributes first, then the dict) was
    most of what a run of one command cost."""
    cdef PyObject *p = PyDict_GetItem(d, name)
    if p != NULL:
        return <object>p
    return getattr(s, name)


@cython.no_gc           # it refers to nothing that refers back to it
@cython.freelist(4)     # one a run: no allocation, and nothing for the collector
cdef class Batch:
    """What one run reads of the session, and reads again after the session ran a
    command (any of them may change it)."""
    cdef object session, bucket, durable, store
    cdef int perms, proto
    cdef bint persist, taking, core, always, positions

    cdef load(self):
        s = self.session
        d = getattr(s, "__dict__", None)
        if type(d) is not dict:
            d = {}
        self.bucket = field(d, s, "bucket")
        self.perms = field(d, s, "perms")
        self.proto = field(d, s, "proto")
        self.persist = field(d, s, "persist")
        self.durable = field(d, s, "durable")
        wait_pos = field(d, s, "wait_pos")
        # POSITIONS: the epoll loop's hook on a bukt._core store, which this loop
        # answers itself (written)
        self.store = field(d, s, "store")
        self.positions = (type(self.durable) is _RingPositions
                          and type(self.store) is CoreStore)
        if wait_pos and self.positions and flushed_pos_of(self.store) >= <uint64_t>wait_pos:
            # the write the replies waited behind is on disk (its reply has gone, or
            # goes in this round): nothing waits any more (RespSession.finish's ORDER)
            s.wait_pos = wait_pos = 0
        # the fast path's preconditions (module docstring)
        self.taking = (self.bucket is not None and field(d, s, "multi") is None
                       and not wait_pos and not field(d, s, "closing")
                       and not field(d, s, "parser").need and field(d, s, "subs") is None)
        self.core = type(self.bucket) is CoreBucket
        # whether a write's reply may wait for the disk: asked once a batch of
        # RingDurability (a policy it refreshes every POLICY_REFRESH anyway), at each
        # write of any other hook
        if self.durable is None or not self.persist:
            self.always = False
        elif isinstance(self.durable, _RingDurability):
            self.always = (<object>self.durable).sync_always()
        else:
            self.always = True


cdef object deferred = None     # C_DEFERRED's reply
cdef object last_bucket = None  # the last batch's bucket, if a bukt._core one


cdef object batch_bucket():
    """The bucket the last run_fast ran on, if a bukt._core.Bucket, else None: the
    session's when it returned (only the session's commands change it). For PREFETCH
    hints in the epoll loop, which would otherwise look it up on the session."""
    return last_bucket


cdef inline bytes arg(const unsigned char *b, Py_ssize_t *starts, Py_ssize_t *lens, int i):
    return PyBytes_FromStringAndSize(<const char *>b + starts[i], lens[i])


cdef list args_list(const unsigned char *b, Py_ssize_t *starts, Py_ssize_t *lens, int argc):
    return [arg(b, starts, lens, i) for i in range(argc)]


cdef int failed(Batch t, const unsigned char *b, Py_ssize_t *starts, Py_ssize_t *lens,
                int argc, exc) except -1:
    """A Bucket call raised: the session's answer (RespSession.failed)."""
    reply = t.session.failed(args_list(b, starts, lens, argc), exc)
    if reply is _PARK:
        return C_PARK
    put(PyBytes_AS_STRING(reply), PyBytes_GET_SIZE(reply))
    return C_DONE


cdef int written(Batch t, bytes reply) except -1:
    """A write went through: its reply now, or the Deferred of `fsync: always`."""
    global deferred
    cdef uint64_t pos
    if t.always and t.positions:
        # RespSession.finish for the epoll loop's RingPositions, in C: the reply waits
        # for this process's last record unless the writer has flushed past it already
        pos = last_pos_of(t.store)
        if flushed_pos_of(t.store) < pos:
            t.session.wait_pos = pos
            deferred = _Deferred(reply, pos, True)
            return C_DEFERRED
    elif t.always:
        r = t.session.finish(True, reply)
        if type(r) is not bytes:
            deferred = r
            return C_DEFERRED
    put(PyBytes_AS_STRING(reply), PyBytes_GET_SIZE(reply))
    return C_DONE


cdef int written_int(Batch t, object n) except -1:
    """written() of R.integer(n), encoded here when nothing can wait for the disk."""
    if t.always:
        return written(t, b":%d\r\n" % int(n))
    put_int(int(n))
    return C_DONE


cdef int command(Batch t, const unsigned char *b, Py_ssize_t *starts, Py_ssize_t *lens,
                 int argc, int x) except -1:
    cdef int found
    cdef int64_t n
    cdef double ttl
    cdef Py_ssize_t i
    cdef bytes name
    if x == X_NONE:
        return C_OTHER
    if x == X_PING:
        if argc == 1:
            put(PyBytes_AS_STRING(PONG), PyBytes_GET_SIZE(PONG))
        elif argc == 2:
            put_bulk(<const char *>b + starts[1], lens[1])
        else:
            return C_OTHER
        return C_DONE
    if x == X_ECHO:
        if argc != 2:
            return C_OTHER
        put_bulk(<const char *>b + starts[1], lens[1])
        return C_DONE
    bucket = t.bucket
    if x == X_GET or x == X_MGET or x == X_EXISTS:
        if not t.perms & READ:
            return C_OTHER
        if x == X_GET:
            if argc != 2:
                return C_OTHER
            try:
                if t.core:
                    v = read_into(bucket, <const char *>b + starts[1], <uint32_t>lens[1], 0,
                                  &found)
                    if found == READ_HIT:
                        put_bulk(PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v))
                        return C_DONE
                    if found == READ_MISS:
                        put_value(None, t.proto)
                        return C_DONE
                v = bucket.get(arg(b, starts, lens, 1))
            except Exception as exc:
                return failed(t, b, starts, lens, argc, exc)
            put_value(v, t.proto)
            return C_DONE
        if argc < 2:
            return C_OTHER
        keys = [arg(b, starts, lens, i) for i in range(1, argc)]
        try:
            if x == X_MGET:
                values = bucket.mget(keys)
            else:
                count = bucket.exists(*keys)
        except Exception as exc:
            return failed(t, b, starts, lens, argc, exc)
        if x == X_EXISTS:
            put_int(int(count))
            return C_DONE
        put_decimal(42, PyList_GET_SIZE(values))   # '*'
        for v in values:
            put_value(v, t.proto)
        return C_DONE
    # the writes
    if not t.perms & WRITE:
        return C_OTHER
    if x == X_SET:
        if argc == 3:
            ttl = -1
        elif argc == 5 and lens[4] <= 16 and plain_int(b + starts[4], lens[4], &n) \
                and 0 < n <= (1 << 53):
            if named(b + starts[3], lens[3], b"EX", 2):
                ttl = <double>n
            elif named(b + starts[3], lens[3], b"PX", 2):
                ttl = <double>n / 1000.0
            else:
                return C_OTHER
        else:
            return C_OTHER
        try:
            if ttl < 0:
                version = bucket.set(arg(b, starts, lens, 1), arg(b, starts, lens, 2))
            else:
                version = bucket.set(arg(b, starts, lens, 1), arg(b, starts, lens, 2), ttl)
        except Exception as exc:
            return failed(t, b, starts, lens, argc, exc)
        return written(t, OK if version is not None else _R.null(t.proto))
    if x == X_SETEX:
        if argc != 4 or lens[2] > 16 or not plain_int(b + starts[2], lens[2], &n) \
                or not 0 < n <= (1 << 53):
            return C_OTHER
        try:
            bucket.set(arg(b, starts, lens, 1), arg(b, starts, lens, 3), <double>n)
        except Exception as exc:
            return failed(t, b, starts, lens, argc, exc)
        return written(t, OK)
    if x == X_INCR or x == X_DECR or x == X_INCRBY or x == X_DECRBY:
        if x == X_INCR or x == X_DECR:
            if argc != 2:
                return C_OTHER
            n = 1
        else:
            if argc != 3 or not plain_int(b + starts[2], lens[2], &n):
                return C_OTHER
        if x == X_DECR or x == X_DECRBY:
            n = -n
        try:
            result = bucket.incr(arg(b, starts, lens, 1), n)
        except Exception as exc:
            return failed(t, b, starts, lens, argc, exc)
        return written_int(t, result)
    if x == X_MSET:
        if argc < 3 or argc % 2 != 1:
            return C_OTHER
        mapping = {}
        for i in range(1, argc, 2):
            mapping[arg(b, starts, lens, i)] = arg(b, starts, lens, i + 1)
        try:
            bucket.mset(mapping)
        except Exception as exc:
            return failed(t, b, starts, lens, argc, exc)
        return written(t, OK)
    if x == X_DEL:
        if argc < 2:
            return C_OTHER
        try:
            count = bucket.delete(*[arg(b, starts, lens, i) for i in range(1, argc)])
        except Exception as exc:
            return failed(t, b, starts, lens, argc, exc)
        return written_int(t, count)
    return C_OTHER


def run(bytearray buf, Py_ssize_t size, Py_ssize_t pos, object session,
        Py_ssize_t max_frame, list out, Py_ssize_t out_limit):
    """(pos, why): run_fast for Python callers (bukt/tcp/connection.py, the tests)."""
    cdef int why = STOP_PARTIAL
    pos = run_fast(buf, size, pos, session, max_frame, out, out_limit, &why, True)
    return pos, why


cdef Py_ssize_t run_fast(bytearray buf, Py_ssize_t size, Py_ssize_t pos, object session,
                         Py_ssize_t max_frame, list out, Py_ssize_t out_limit, int *why,
                         bint recheck) except -1:
    """run_batch, and the batch's bytes in and out counted (answers that wait for
    the disk are not bytes yet, and are not counted, as on the Python loop)."""
    cdef Py_ssize_t n0 = PyList_GET_SIZE(out), end, i
    end = run_batch(buf, size, pos, session, max_frame, out, out_limit, why, recheck)
    if STATS != NULL:
        STATS[S_IN] += <uint64_t>(end - pos)
        for i in range(n0, PyList_GET_SIZE(out)):
            r = out[i]
            if type(r) is bytes:
                STATS[S_OUT] += <uint64_t>PyBytes_GET_SIZE(r)
    return end


cdef Py_ssize_t run_batch(bytearray buf, Py_ssize_t size, Py_ssize_t pos, object session,
                          Py_ssize_t max_frame, list out, Py_ssize_t out_limit, int *why,
                          bint recheck) except -1:
    """resp_session.run in C for the commands above (module docstring); `recheck`
    False when the caller knows the bucket table has not changed since the last batch."""
    global acc_len, deferred, last_bucket
    cdef Py_ssize_t starts[MAXARGS]
    cdef Py_ssize_t lens[MAXARGS]
    cdef int argc, st, done, x
    cdef Py_ssize_t before
    cdef Py_ssize_t end, out_bytes = 0, n
    cdef const unsigned char *b
    cdef Batch t = Batch.__new__(Batch)
    # PREFETCH: commands before win_end have had both stages; the next window, from
    # win_end to next_end, stage 1 (its keys at next_at/next_len, next_n of them)
    cdef Py_ssize_t win_end = -1, next_end = -1
    cdef Py_ssize_t next_at[AHEAD]
    cdef uint32_t next_len[AHEAD]
    cdef int next_n = 0
    acc_len = 0
    if recheck:
        session.recheck()
    t.session = session
    t.load()
    try:
        while pos < size:
            done = C_OTHER
            if t.taking:
                b = <const unsigned char *>PyByteArray_AS_STRING(buf)
                st = parse(b, pos, size, max_frame, starts, lens, &argc, &end)
                if t.core and pos >= win_end and st == P_DONE and end < size:
                    if pos != win_end or next_end < 0:
                        # a fresh start (the batch's first, or after the session ran
                        # one): this window's slots now, its entries just below
                        next_end = window(b, pos, size, max_frame, next_at, next_len,
                                          &next_n)
                        if next_n > 1:
                            hint(t.bucket, b, next_at, next_len, next_n, 1)
                        else:
                            next_n = 0  # nothing pipelined: its read follows at once
                    hint(t.bucket, b, next_at, next_len, next_n, 2)
                    win_end = next_end
                    next_end = window(b, win_end, size, max_frame, next_at, next_len,
                                      &next_n)
                    hint(t.bucket, b, next_at, next_len, next_n, 1)
                    if win_end <= pos:
                        win_end = pos + 1       # nothing whole here: look again after it
                        next_end = -1
                if st == P_PARTIAL:
                    break
                if st == P_DONE:
                    x = which(b + starts[0], lens[0])
                    before = acc_len
                    done = command(t, b, starts, lens, argc, x)
                    if STATS != NULL and x != X_NONE and (done == C_DONE or done == C_DEFERRED):
                        STATS[X_WORD[x]] += 1
                        if done == C_DONE and acc_len > before and acc[before] == 45:  # '-'
                            STATS[X_WORD[x] + X_ERRORS] += 1
                    if done == C_PARK:
                        flush(out)
                        why[0] = STOP_PARK
                        return pos
                    if done == C_DEFERRED:
                        flush(out)
                        out.append(deferred)
                        deferred = None
                        why[0] = STOP_DEFERRED
                        return end
                    if done == C_DONE:
                        pos = end
            if done == C_OTHER:
                # SLOW PATH: one command through the session, the reference, in
                # resp_session.run's own loop (frames.drive) stopped after one reply
                out_bytes += flush(out)
                n = PyList_GET_SIZE(out)
                pos, w = _drive(session.parser.parse,
                                session.execute if STATS == NULL else _S.counting(session.execute),
                                _R.RespError,
                                _S._protocol_error, buf, size, pos, session, out, 1)
                if w != STOP_FULL:
                    why[0] = w
                    return pos
                while n < PyList_GET_SIZE(out):
                    out_bytes += PyBytes_GET_SIZE(out[n])
                    n += 1
                t.load()
                next_end = -1                   # PREFETCH: start afresh
            if out_bytes + acc_len >= out_limit:
                flush(out)
                why[0] = STOP_FULL
                return pos
        why[0] = STOP_PARTIAL
        return pos
    finally:
        flush(out)
        last_bucket = t.bucket if t.core else None
