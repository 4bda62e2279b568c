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
from cpython.bytes cimport PyBytes_FromStringAndSize
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
