# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The fast path of reading a log or base file (bukt/writer/aof.py: scan).

Recovery and `bukt check` read every record the data directory holds; in Python that
costs several microseconds a record, too slow for millions of keys. This loop takes the
records that are plainly sound (bukt/writer/_logscan.pxd: read_record) and of a known
type, and stops at the first that is not, handing it back to aof.py's slow path, which
alone decides between a truncated tail and corruption. The record format is documented
at the top of bukt/writer/aof.py. It knows nothing of the table: cold recovery's bulk
loader, which applies records to the table, is the core's (cext/bulkload.pxi) and reads
them through the same read_record.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.string cimport memcpy, memset
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from cpython.unicode cimport PyUnicode_DecodeUTF8

# The C constants of _logscan.pxd, for tests/unit/test_log_format.py to hold against aof.py's.
FORMAT_CONSTANTS = {
    "REC_HEADER_SIZE": LOG_REC_HEADER, "RECORD_OVERHEAD": LOG_REC_OVERHEAD,
    "SET": LOG_SET, "DELETE": LOG_DELETE, "EXPIRE": LOG_EXPIRE, "SET_TTL": LOG_SET_TTL,
    "EVICT": LOG_EVICT, "SINGLE_READ": LOG_SINGLE_READ,
}


def scan_records(buf, Py_ssize_t off, Py_ssize_t size, object record_type, object known_types,
                 Py_ssize_t max_records=4096):
    """Sound records of buf[off:size] from `off` on, as `record_type` tuples
    (type, seq, bucket, key, value, expire_ms, flags, version): (records, ends), ends
    being the offset after each record. Stops before the first record that is not
    plainly sound or of a type not in `known_types`, or after max_records."""
    cdef const unsigned char[::1] view = buf
    cdef const unsigned char *p = &view[0] if view.shape[0] else NULL
    cdef log_record r
    cdef list out = [], ends = []
    cdef object tnew = tuple.__new__
    if size > view.shape[0]:
        size = view.shape[0]
    while len(out) < max_records and read_record(p, off, size, &r):
        if r.type not in known_types:
            break
        out.append(tnew(record_type, (
            r.type, r.seq,
            PyUnicode_DecodeUTF8(r.bucket, r.blen, NULL),
            PyBytes_FromStringAndSize(r.key, r.klen),
            PyBytes_FromStringAndSize(r.value, r.vlen),
            r.expire_ms, r.flags, r.version)))
        off = r.end
        ends.append(off)
    return out, ends


cdef bytes encode_one(uint8_t rtype, uint8_t flags, uint64_t seq, uint64_t version,
                      uint64_t expire_ms, bytes name, bytes key, bytes value):
    """aof.encode of one record whose bucket name is already UTF-8."""
    cdef Py_ssize_t blen = len(name), klen = len(key), vlen = len(value), length
    cdef bytes out
    cdef unsigned char *r
    if blen > 255 or klen > 65535 or vlen > 0xFFFFFFFF - 512:
        raise ValueError(f"record too large to encode: bucket {blen}, key {klen}, "
                         f"value {vlen} bytes")
    length = LOG_REC_OVERHEAD + blen + klen + vlen
    out = PyBytes_FromStringAndSize(NULL, length)
    put_record(<unsigned char *>PyBytes_AS_STRING(out), rtype, flags, seq, version,
               expire_ms, PyBytes_AS_STRING(name), blen, PyBytes_AS_STRING(key), klen,
               PyBytes_AS_STRING(value), vlen)
    return out


def encode_ring(list recs, dict names, dict bnames, dict kinds, uint32_t core_single,
                uint32_t object_flags, uint32_t feed_only, object other):
    """The log bytes of ring records (seq, type, bucket_idx, bucket_gen, key, value,
    expire_ms, version, flags), in order: bukt/writer/ringlog.py's RingTranslator.encode
    without a Python call per key record, which was most of the writer's time under a
    stream of sets (a replica's full copy of a million keys waited on it).

    kinds: ring type -> (log type, whether the record keeps expiry, flags and version,
    whether it keeps the value). The flags as ringlog.py's log_flags(entry_flags(..))
    make them: the entry's flags are the ring flags' core_single bit and their second
    byte; the log keeps their object_flags bits and single-read as LOG_SINGLE_READ.
    names: (idx, gen) -> bucket name; bnames caches their UTF-8. A record feed_only is
    left out; any other record (META, a type not in kinds, a bucket not in names) goes
    to other(record), which returns its bytes (b"": none)."""
    cdef list out = []
    cdef tuple rec, kind
    cdef object pair, nb, name
    cdef uint32_t flags, entry
    cdef uint8_t lflags
    for rec in recs:
        flags = <uint32_t>rec[8]
        if flags & feed_only:
            continue
        kind = kinds.get(rec[1])
        if kind is None:
            nb = other(rec)
            if nb:
                out.append(nb)
            continue
        pair = (rec[2], rec[3])
        nb = bnames.get(pair)
        if nb is None:
            name = names.get(pair)
            if name is None:
                nb = other(rec)
                if nb:
                    out.append(nb)
                continue
            nb = (<str>name).encode()
            bnames[pair] = nb
        if kind[1]:
            entry = (flags & core_single) | (flags >> 8)
            lflags = <uint8_t>((entry & object_flags) |
                               (LOG_SINGLE_READ if entry & core_single else 0))
            out.append(encode_one(<uint8_t>kind[0], lflags, <uint64_t>rec[0],
                                  <uint64_t>rec[7], <uint64_t>rec[6], <bytes>nb,
                                  <bytes>rec[4], <bytes>rec[5] if kind[2] else b""))
        else:
            out.append(encode_one(<uint8_t>kind[0], 0, <uint64_t>rec[0], 0, 0, <bytes>nb,
                                  <bytes>rec[4], b""))
    return b"".join(out)


# ---------------------------------------------------------------- the change feed's records

# The feed's record header: bukt/_feedrec.pxd (bukt/feed.py: REC).
from bukt._feedrec cimport feed_rec

# ring record types and flags (cext/includes/segment.h; bukt/feed.py names them too)
cdef enum:
    F_SET = 1
    F_DEL = 2
    F_EXPIRED = 3
    F_EVICTED = 4
    F_TOUCH = 5
    F_NOVALUE = 0x08
    F_FLUSH = 0x20
    F_INCR = 0x40
    F_HIDDEN = 0x10 << 8
    F_CODECS = (0x20 | 0x40) << 8
cdef uint32_t F_UNKNOWN = 0xffffffff


cdef inline int _feed_kind(tuple rec, uint32_t flags, Py_ssize_t maxv, uint8_t *kind,
                           Py_ssize_t *vlen, uint32_t *vsize):
    """The feed's view of ring record `rec`: 1 with its kind, kept value length and
    value size; 0 when the feed does not report it; -1 when only bukt/feed.py's
    Python path can say (a bucket drop's META record, a compressed value)."""
    cdef long rtype = rec[1]
    cdef Py_ssize_t n
    if flags & F_HIDDEN:
        return 0
    if rtype == F_SET:
        n = len(<bytes>rec[5])
        if flags & F_CODECS and n:
            return -1
        kind[0] = 6 if flags & F_INCR else 1
        vsize[0] = F_UNKNOWN if flags & F_NOVALUE else <uint32_t>n
        vlen[0] = n if n <= maxv else 0
        return 1
    vlen[0], vsize[0] = 0, 0
    if rtype == F_DEL:
        kind[0] = 7 if flags & F_FLUSH else 2
    elif rtype == F_EXPIRED:
        kind[0] = 3
    elif rtype == F_EVICTED:
        kind[0] = 4
    elif rtype == F_TOUCH:
        kind[0] = 5
    elif rtype < 16:
        return 0
    else:
        return -1           # META (a drop, maybe), or a type this loop does not know
    return 1


def feed_measure(list recs, Py_ssize_t i, uint64_t head, uint64_t size, uint64_t limit,
                 uint64_t last, Py_ssize_t maxv):
    """How far one run of the change feed's records (bukt/feed.py,
    FeedWriter.publish_ring), made of ring records recs[i:] from byte position `head`,
    goes: (j, end, last, count), j the index of the first record not taken, `end` the
    position after the run, `last` its last sequence, `count` its records; feed_write
    then writes it. ring_records_to_events and FeedWriter._append did this a record in
    Python, which was most of a replica's writer's time during a full copy.

    A run stops where it must end (the area's end, `limit` bytes) and before a record
    only the Python path handles (a META record, a compressed value, a record longer
    than `limit`); records the feed does not report, or of sequences up to `last`,
    it passes over."""
    cdef Py_ssize_t n = len(recs), j = i, count = 0, klen, vlen
    cdef uint64_t h = head, left, n8, lst = last, seq
    cdef uint32_t flags, vsize
    cdef uint8_t kind
    cdef tuple rec
    cdef int r
    while j < n:
        rec = <tuple>recs[j]
        flags = <uint32_t>rec[8]
        r = _feed_kind(rec, flags, maxv, &kind, &vlen, &vsize)
        if r < 0:
            break
        seq = <uint64_t>rec[0]
        if r == 0 or seq <= lst:
            j += 1
            continue
        klen = len(<bytes>rec[4])
        n8 = (sizeof(feed_rec) + klen + vlen + 7) & ~(<uint64_t>7)
        if n8 > limit:
            break
        left = size - h % size
        if left < n8 or h - head + n8 > limit or (h > head and left == size):
            break
        count += 1
        h += n8
        lst = seq
        j += 1
    return j, h, lst, count


def feed_write(list recs, Py_ssize_t i, Py_ssize_t j, out, Py_ssize_t off, uint64_t head,
               uint64_t end, uint64_t last, int64_t ms, Py_ssize_t maxv, Py_ssize_t count):
    """Write the run feed_measure measured (records recs[i:j], positions [head, end),
    `count` records after sequence `last`) into writable buffer `out` at `off`, the
    feed area's bytes of position `head`. Returns the position and sequence of each
    record (u64 arrays' bytes), which the writer keeps to raise low and lost before
    it overwrites them."""
    cdef unsigned char[::1] view = out
    if off < 0 or <uint64_t>off + (end - head) > <uint64_t>view.shape[0]:
        raise ValueError("feed_write: the run does not fit the buffer")
    cdef unsigned char *d = &view[0] + off
    cdef unsigned char *stop = d + (end - head)
    cdef bytes pos = PyBytes_FromStringAndSize(NULL, count * 8)
    cdef bytes seqs = PyBytes_FromStringAndSize(NULL, count * 8)
    cdef uint64_t *pp = <uint64_t *>PyBytes_AS_STRING(pos)
    cdef uint64_t *sp = <uint64_t *>PyBytes_AS_STRING(seqs)
    cdef feed_rec *fr
    cdef bytes key, value
    cdef Py_ssize_t c = 0, k = i, klen, vlen
    cdef uint64_t h = head, lst = last, seq, n8
    cdef uint32_t flags, vsize
    cdef uint8_t kind
    cdef tuple rec
    cdef int r
    while k < j:
        rec = <tuple>recs[k]
        k += 1
        flags = <uint32_t>rec[8]
        r = _feed_kind(rec, flags, maxv, &kind, &vlen, &vsize)
        seq = <uint64_t>rec[0]
        if r == 0 or seq <= lst:
            continue
        key = <bytes>rec[4]
        klen = len(key)
        n8 = (sizeof(feed_rec) + klen + vlen + 7) & ~(<uint64_t>7)
        if r < 0 or c >= count or d + n8 > stop:
            raise ValueError("feed_write: the records are not the run feed_measure measured")
        fr = <feed_rec *>d
        fr.pos, fr.seq, fr.ms = h, seq, ms
        fr.version, fr.expire_ms = <uint64_t>rec[7], <int64_t>rec[6]
        fr.length, fr.klen, fr.vlen, fr.vsize = <uint32_t>n8, <uint32_t>klen, <uint32_t>vlen, vsize
        fr.gen, fr.bucket, fr.kind, fr.flags = <uint32_t>rec[3], <uint16_t>rec[2], kind, \
            <uint8_t>(flags & 0xff)
        memcpy(d + sizeof(feed_rec), PyBytes_AS_STRING(key), klen)
        if vlen:
            value = <bytes>rec[5]
            memcpy(d + sizeof(feed_rec) + klen, PyBytes_AS_STRING(value), vlen)
        memset(d + sizeof(feed_rec) + klen + vlen, 0, n8 - sizeof(feed_rec) - klen - vlen)
        pp[c], sp[c] = h, seq
        c += 1
        d += n8
        h += n8
        lst = seq
    if c != count or h != end:
        raise ValueError("feed_write: the records are not the run feed_measure measured")
    return pos, seqs
