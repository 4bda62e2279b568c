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


cdef inline void put32(unsigned char *p, uint32_t v) noexcept nogil:
    p[0] = v & 0xff
    p[1] = (v >> 8) & 0xff
    p[2] = (v >> 16) & 0xff
    p[3] = (v >> 24) & 0xff


cdef inline void put64(unsigned char *p, uint64_t v) noexcept nogil:
    put32(p, <uint32_t>(v & 0xffffffffu))
    put32(p + 4, <uint32_t>(v >> 32))


def encode_sets(list entries, object persisted, uint64_t seq, uint32_t core_single):
    """SET records, as aof.encode writes them, of the store.dump_stripes entries
    (bucket, key, value, expire_ms, flags, version) whose bucket is in `persisted`, each
    at sequence `seq`, the single-read flag from the core's bit `core_single`: (the
    records' bytes, how many). The snapshot a replica copies (bukt/replica/source.py)
    goes through here: aof.encode's Python costs a few microseconds a record."""
    cdef dict names = {}
    cdef Py_ssize_t total = 0, count = 0, blen, klen, vlen, length, q
    cdef object name, nb
    cdef bytes key, value, out
    cdef tuple ent
    cdef unsigned char *p
    cdef unsigned char *r
    cdef uint32_t flags
    for ent in entries:
        name = ent[0]
        nb = names.get(name)
        if nb is None:
            nb = name.encode() if name in persisted else b""
            names[name] = nb
        if not nb:
            continue
        key = ent[1]
        value = ent[2]
        if len(<bytes>nb) > 255 or len(key) > 65535 or len(value) > 0xFFFFFFFF - 512:
            raise ValueError(f"record too large to encode: bucket {len(<bytes>nb)}, key "
                             f"{len(key)}, value {len(value)} bytes")
        total += LOG_REC_OVERHEAD + len(<bytes>nb) + len(key) + len(value)
        count += 1
    out = PyBytes_FromStringAndSize(NULL, total)
    p = <unsigned char *>PyBytes_AS_STRING(out)
    q = 0
    for ent in entries:
        nb = names[ent[0]]
        if not nb:
            continue
        key = ent[1]
        value = ent[2]
        blen, klen, vlen = len(<bytes>nb), len(key), len(value)
        length = LOG_REC_OVERHEAD + blen + klen + vlen
        flags = LOG_SINGLE_READ if (<uint32_t>ent[4]) & core_single else 0
        r = p + q
        r[0] = 0x42                     # b"Bk"
        r[1] = 0x6b
        r[2] = LOG_SET
        r[3] = <unsigned char>flags
        put32(r + 4, <uint32_t>length)
        put64(r + 8, seq)
        put64(r + 16, <uint64_t>ent[5])
        put64(r + 24, <uint64_t>ent[3])
        r[32] = <unsigned char>blen
        r[33] = 0
        r[34] = klen & 0xff
        r[35] = (klen >> 8) & 0xff
        put32(r + 36, <uint32_t>vlen)
        put32(r + 40, <uint32_t>crc32(0, r, 40))
        memcpy(r + LOG_REC_HEADER, PyBytes_AS_STRING(nb), blen)
        memcpy(r + LOG_REC_HEADER + blen, PyBytes_AS_STRING(key), klen)
        if vlen:
            memcpy(r + LOG_REC_HEADER + blen + klen, PyBytes_AS_STRING(value), vlen)
        put32(r + length - 4, <uint32_t>crc32(0, r, <unsigned int>(length - 4)))
        q += length
    return out, count


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
    r = <unsigned char *>PyBytes_AS_STRING(out)
    r[0] = 0x42                         # b"Bk"
    r[1] = 0x6b
    r[2] = rtype
    r[3] = flags
    put32(r + 4, <uint32_t>length)
    put64(r + 8, seq)
    put64(r + 16, version)
    put64(r + 24, expire_ms)
    r[32] = <unsigned char>blen
    r[33] = 0
    r[34] = klen & 0xff
    r[35] = (klen >> 8) & 0xff
    put32(r + 36, <uint32_t>vlen)
    put32(r + 40, <uint32_t>crc32(0, r, 40))
    memcpy(r + LOG_REC_HEADER, PyBytes_AS_STRING(name), blen)
    memcpy(r + LOG_REC_HEADER + blen, PyBytes_AS_STRING(key), klen)
    if vlen:
        memcpy(r + LOG_REC_HEADER + blen + klen, PyBytes_AS_STRING(value), vlen)
    put32(r + length - 4, <uint32_t>crc32(0, r, <unsigned int>(length - 4)))
    return out


def encode_ring(list recs, dict names, dict bnames, dict kinds, uint32_t core_single,
                uint32_t feed_only, object other):
    """The log bytes of ring records (seq, type, bucket_idx, bucket_gen, key, value,
    expire_ms, version, flags), in order: bukt/writer/ringlog.py's RingTranslator.encode
    without a Python call per key record, which was most of the writer's time under a
    stream of sets (a replica's full copy of a million keys waited on it).

    kinds: ring type -> (log type, whether the record keeps expiry, flags and version,
    whether it keeps the value). names: (idx, gen) -> bucket name; bnames caches their UTF-8. A record
    feed_only is left out; any other record (META, a type not in kinds, a bucket not
    in names) goes to other(record), which returns its bytes (b"": none)."""
    cdef list out = []
    cdef tuple rec, kind
    cdef object pair, nb, name
    cdef uint32_t flags
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
            lflags = LOG_SINGLE_READ if flags & core_single else 0
            out.append(encode_one(<uint8_t>kind[0], lflags, <uint64_t>rec[0],
                                  <uint64_t>rec[7], <uint64_t>rec[6], <bytes>nb,
                                  <bytes>rec[4], <bytes>rec[5] if kind[2] else b""))
        else:
            out.append(encode_one(<uint8_t>kind[0], 0, <uint64_t>rec[0], 0, 0, <bytes>nb,
                                  <bytes>rec[4], b""))
    return b"".join(out)
