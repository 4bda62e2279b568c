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
from libc.string cimport memcpy
from libc.stdint cimport uint8_t, uint32_t, uint64_t
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
