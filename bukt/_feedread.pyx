# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The change feed's reading side in compiled code (bukt/feed.py, THE READERS' COST):
the event a watcher gets (Event), and a parsed stretch of the feed (Stretch) that makes
them.

Watchers share the CPU with the writers they watch, so what a watcher spends an event
is taken from the writers. In Python a watcher spent 1.5-2 us an event, a quarter of
it parsing the feed's records into tuples and more than a quarter in the cyclic garbage
collector, set off by the Event objects made in bulk and kept, with those tuples, in
the stretches a process shares among its watchers. Here:

  - an Event is an object the collector does not track (no_gc): it holds only ints
    (in C), exact str and exact bytes, so it cannot be part of a cycle, and making one
    neither counts towards a collection nor adds to what a collection walks. Its
    fields are read-only: the events of a stretch are shared by every watcher of the
    same view in the process (Feed.stretch), one watcher must not change another's.
  - a Stretch keeps its records as C structs beside the bytes copied out of the feed,
    and makes a record's key (and value) bytes once, on first use, for every view
    that reports it.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcmp, memset

from bukt._feedrec cimport feed_rec

cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void *op)

REC_SIZE = sizeof(feed_rec)     # (bukt/feed.py holds its REC to it)

cdef enum:
    PAD = 0                     # bukt/feed.py: PAD
    K_SET = 1                   # the kinds whose events carry a value (KINDS)
    K_INCR = 6
    K_DROP = 8
cdef uint32_t VSIZE_UNKNOWN = 0xffffffff     # bukt/feed.py: VSIZE_UNKNOWN

cdef tuple _names = ()          # kind names by code: bukt/feed.py's KINDS (setup())


def setup(kinds):
    """Take the kinds' names (bukt/feed.py: KINDS, code -> name) for the events made
    here: each fact in one place."""
    global _names
    top = max(kinds)
    _names = tuple(kinds.get(i) for i in range(top + 1))


cdef inline str _kind_name(uint8_t kind):
    if kind < len(_names) and _names[kind] is not None:
        return <str>_names[kind]
    return str(kind)


cdef inline bint _is_text(bytes b):
    try:
        b.decode()
        return True
    except UnicodeDecodeError:
        return False


@cython.no_gc
@cython.final
@cython.freelist(256)
cdef class Event:
    """One change: seq (its ring position: increasing, the resume point), ms (wall
    time published), bucket, key, kind (KINDS), version, expire_ms (0: none), ttl
    (seconds left when published, None: none), value (bytes, when asked for and kept;
    else None) and value_size (None: unknown). Read-only."""

    # (Python objects, ints among them made once for every watcher of the view that
    # reads them; read through plain member descriptors: _members() below)
    cdef readonly object seq
    cdef readonly object ms
    cdef readonly str bucket
    cdef readonly bytes key
    cdef readonly str kind
    cdef readonly object version
    cdef readonly object expire_ms
    cdef readonly bytes value
    cdef readonly object value_size

    gone = False

    def __init__(self, seq, ms, bucket, key, kind, version, expire_ms, value,
                 value_size):
        # (ints, exact str and bytes only: what keeps an Event out of any cycle)
        self.seq, self.ms, self.version = int(seq), int(ms), int(version)
        self.expire_ms = int(expire_ms)
        self.bucket = bucket if type(bucket) is str else str(bucket)
        self.key = key if type(key) is bytes else bytes(key)
        self.kind = kind if type(kind) is str else str(kind)
        self.value = value if value is None or type(value) is bytes else bytes(value)
        self.value_size = None if value_size is None else int(value_size)

    @property
    def ttl(self):
        if not self.expire_ms:
            return None
        return max(0.0, (self.expire_ms - self.ms) / 1000.0)

    def as_dict(self, values=False):
        d = {"seq": self.seq, "time_ms": self.ms, "bucket": self.bucket,
             "key": self.key.decode("utf-8", "surrogateescape")
             if _is_text(self.key) else None,
             "key_hex": self.key.hex(), "kind": self.kind, "version": self.version,
             "ttl": self.ttl, "expire_ms": self.expire_ms or None}
        if d["key"] is None:
            del d["key"]
        if values:
            d["value_size"] = self.value_size
            if self.value is not None:
                if _is_text(self.value):
                    d["value"] = self.value.decode()
                else:
                    d["value_hex"] = self.value.hex()
        return d

    def __repr__(self):
        return f"Event({self.seq}, {self.kind}, {self.bucket!r}, {self.key!r})"

    def __reduce__(self):
        return (Event, (self.seq, self.ms, self.bucket, self.key, self.kind, self.version,
                        self.expire_ms, self.value, self.value_size))


cdef inline Event _event(uint64_t seq, object ms, str bucket, bytes key, str kind,
                         uint64_t version, int64_t expire_ms, bytes value, int64_t vsize):
    cdef Event e = Event.__new__(Event)
    e.seq, e.ms, e.bucket, e.key, e.kind = seq, ms, bucket, key, kind
    e.version, e.expire_ms, e.value = version, expire_ms, value
    e.value_size = None if vsize < 0 else vsize
    return e


cdef extern from *:
    """
    #include <structmember.h>
    static PyMemberDef feedread_members[16];
    /* Replace `n` attributes of type `t` (Cython's getset descriptors) by member
       descriptors of the same object fields, read-only. */
    static int feedread_members_set(PyTypeObject *t, const char **names,
                                    Py_ssize_t *offsets, int n) {
        for (int i = 0; i < n && i < 16; i++) {
            PyMemberDef *m = &feedread_members[i];
            PyObject *d;
            m->name = names[i];
            m->type = T_OBJECT_EX;
            m->offset = offsets[i];
            m->flags = READONLY;
            m->doc = NULL;
            d = PyDescr_NewMember(t, m);
            if (d == NULL)
                return -1;
            if (PyDict_SetItemString(t->tp_dict, names[i], d) < 0) {
                Py_DECREF(d);
                return -1;
            }
            Py_DECREF(d);
        }
        PyType_Modified(t);
        return 0;
    }
    """
    int feedread_members_set(type t, const char **names, Py_ssize_t *offsets,
                             int n) except -1


cdef _members():
    """An Event's fields read as a __slots__ class's are (a member descriptor, which
    Python 3.11 specializes: 10-17 ns a read), not through Cython's getset functions
    (25-38 ns): with a hundred watchers of a view sharing its events, what an event
    costs a watcher is mostly these reads."""
    cdef Event e = Event.__new__(Event)
    cdef PyObject **words = <PyObject **><PyObject *>e
    cdef const char *names[9]
    cdef Py_ssize_t offs[9]
    cdef Py_ssize_t i, k, n = Event.__basicsize__ // sizeof(PyObject *)
    # each field set to an object of its own, then found among the object's words
    probe = [object() for _ in range(5)] + ["bucket?", b"key?", "kind?", b"value?"]
    e.seq, e.ms, e.version, e.expire_ms, e.value_size = probe[:5]
    e.bucket, e.key, e.kind, e.value = probe[5:]
    fields = [b"seq", b"ms", b"version", b"expire_ms", b"value_size", b"bucket", b"key",
              b"kind", b"value"]
    for k in range(9):
        names[k] = fields[k]
        offs[k] = -1
        for i in range(n):
            if words[i] == <PyObject *>probe[k]:
                offs[k] = i * sizeof(PyObject *)
        if offs[k] < 0:
            raise ImportError(f"Event's field {fields[k]!r} not found")
    feedread_members_set(Event, names, offs, 9)


_members()


@cython.final
cdef class Stretch:
    """The records of feed bytes `data` (copied out of the area from byte position
    `pos`, the area `size` bytes long), parsed: `end` the position parsed up to,
    `count` records (padding left out), `damaged` the position of a record whose stamp
    is wrong (else None), `views` each watcher view's events of it (bukt/feed.py:
    Watcher.poll fills it)."""

    cdef readonly uint64_t pos, end
    cdef readonly Py_ssize_t count
    cdef readonly object damaged
    cdef readonly dict views
    cdef bytes data
    cdef const feed_rec **recs  # each record's header, where it lies in `data` (its key
    #                             and value follow it)
    cdef PyObject **keys        # each record's key bytes once made (NULL: not yet)
    cdef PyObject **vals        # likewise its value's

    def __cinit__(self, bytes data, uint64_t pos, uint64_t size):
        cdef const char *d = PyBytes_AS_STRING(data)
        cdef uint64_t n = <uint64_t>PyBytes_GET_SIZE(data)
        cdef uint64_t end = pos + n, p = pos, left, o
        cdef uint64_t rs = sizeof(feed_rec)
        cdef const feed_rec *fr
        cdef Py_ssize_t cap = n // rs + 1, c = 0
        self.data, self.pos, self.damaged, self.views = data, pos, None, {}
        self.recs = <const feed_rec **>PyMem_Malloc(cap * sizeof(feed_rec *))
        if self.recs == NULL:
            raise MemoryError()
        while p < end:
            left = size - p % size
            if left < rs:
                p += left
                continue
            if p + rs > end:
                break
            o = p - pos
            fr = <const feed_rec *>(d + o)
            if fr.pos != p or fr.length == 0 or \
                    rs + <uint64_t>fr.klen + fr.vlen > fr.length:
                self.damaged = p
                break
            if p + fr.length > end:
                break                           # (read with the next stretch)
            if fr.kind != PAD:
                self.recs[c] = fr
                c += 1
            p += fr.length
        self.end, self.count = p, c
        if c:
            self.keys = <PyObject **>PyMem_Malloc(c * sizeof(PyObject *))
            if self.keys == NULL:
                raise MemoryError()
            memset(self.keys, 0, c * sizeof(PyObject *))

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.keys != NULL:
            for i in range(self.count):
                Py_XDECREF(self.keys[i])
            PyMem_Free(self.keys)
        if self.vals != NULL:
            for i in range(self.count):
                Py_XDECREF(self.vals[i])
            PyMem_Free(self.vals)
        PyMem_Free(self.recs)

    @property
    def last_seq(self):
        """The last record's sequence (0: none)."""
        return self.recs[self.count - 1].seq if self.count else 0

    def start_of(self, Py_ssize_t i):
        """Record i's byte position (i == count: the end parsed up to)."""
        if i < 0 or i > self.count:
            raise IndexError(i)
        return self.recs[i].pos if i < self.count else self.end

    def after(self, Py_ssize_t i):
        """The byte position just after record i."""
        if i < 0 or i >= self.count:
            raise IndexError(i)
        return self.recs[i].pos + self.recs[i].length

    cdef bytes _key(self, Py_ssize_t i):
        cdef PyObject *k = self.keys[i]
        cdef bytes b
        if k == NULL:
            b = PyBytes_FromStringAndSize(<const char *>(self.recs[i] + 1),
                                          self.recs[i].klen)
            Py_INCREF(b)
            self.keys[i] = <PyObject *>b
            return b
        return <bytes>k

    cdef bytes _value(self, Py_ssize_t i):
        cdef PyObject *v
        cdef bytes b
        if self.vals == NULL:
            self.vals = <PyObject **>PyMem_Malloc(self.count * sizeof(PyObject *))
            if self.vals == NULL:
                raise MemoryError()
            memset(self.vals, 0, self.count * sizeof(PyObject *))
        v = self.vals[i]
        if v == NULL:
            b = PyBytes_FromStringAndSize(<const char *>(self.recs[i] + 1)
                                          + self.recs[i].klen, self.recs[i].vlen)
            Py_INCREF(b)
            self.vals[i] = <PyObject *>b
            return b
        return <bytes>v

    cdef Py_ssize_t _events(self, list out, Py_ssize_t room, uint32_t idx, uint32_t gen,
                            bytes prefix, bint values, str bucket, bint *dropped) except -1:
        cdef Py_ssize_t i, made = 0, plen = PyBytes_GET_SIZE(prefix)
        cdef const char *pp = PyBytes_AS_STRING(prefix)
        cdef const feed_rec *r
        cdef bint setlike
        cdef int64_t vs
        cdef bytes value
        cdef int64_t ms = 0
        cdef object ms_obj = 0          # (a batch's events share their time)
        dropped[0] = False
        for i in range(self.count):
            if made >= room:
                return i
            r = self.recs[i]
            if r.bucket != idx or r.gen != gen:
                continue
            if r.ms != ms:
                ms, ms_obj = r.ms, r.ms
            if r.kind == K_DROP:
                out.append(_event(r.seq, ms_obj, bucket, b"", _kind_name(r.kind), 0, 0,
                                  None, -1))
                dropped[0] = True
                return i + 1
            if <Py_ssize_t>r.klen < plen or (plen and memcmp(<const char *>(r + 1), pp, plen) != 0):
                continue
            setlike = r.kind == K_SET or r.kind == K_INCR
            vs = -1 if r.vsize == VSIZE_UNKNOWN or not setlike else r.vsize
            value = self._value(i) if values and setlike and vs >= 0 and \
                r.vlen == r.vsize else None
            out.append(_event(r.seq, ms_obj, bucket, self._key(i), _kind_name(r.kind),
                              r.version, r.expire_ms, value, vs))
            made += 1
        return self.count

    def events(self, list out, Py_ssize_t room, uint32_t idx, uint32_t gen,
               bytes prefix, bint values, str bucket):
        """Append to `out` the events of bucket slot (idx, gen) whose keys start with
        `prefix` (values too with `values`), from the first record, until `room`
        events are out or a drop of the bucket (its event the last): returns (records
        passed, the last one's sequence or 0, whether it was the drop)."""
        cdef bint dropped
        cdef Py_ssize_t n = self._events(out, room, idx, gen, prefix, values, bucket,
                                         &dropped)
        return n, self.recs[n - 1].seq if n else 0, dropped

    def view(self, uint32_t idx, uint32_t gen, bytes prefix, bint values, str bucket):
        """(every event of the stretch events() gives, the position after a drop among
        them or None): a view's events, shared by the process's watchers of it. Its
        list holds only Events, which the collector does not track: nor is the list."""
        cdef list out = []
        cdef bint dropped
        cdef Py_ssize_t n = self._events(out, self.count + 1, idx, gen, prefix, values,
                                         bucket, &dropped)
        PyObject_GC_UnTrack(<void *>out)
        return out, (self.recs[n - 1].pos + self.recs[n - 1].length if dropped else None)
