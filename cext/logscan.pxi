# logscan.pxi: the fast path of reading a log or base file (bukt/writer/aof.py: scan).
#
# Recovery reads every record the data directory holds; in Python that costs several
# microseconds a record, too slow for a cold start of millions of keys. This loop takes
# the records that are plainly sound -- magic, lengths that add up, a known type, the
# record's CRC-32 (zlib's, the one aof.py writes) -- and stops at the first that is not,
# handing it back to aof.py's slow path, which alone decides between a truncated tail
# and corruption. The record format is documented at the top of bukt/writer/aof.py.

cdef extern from "zlib.h" nogil:
    unsigned long crc32(unsigned long crc, const unsigned char *buf, unsigned int len)

cdef inline uint32_t _le32(const unsigned char *p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint64_t _le64(const unsigned char *p) noexcept nogil:
    return _le32(p) | (<uint64_t>_le32(p + 4) << 32)


def scan_records(buf, Py_ssize_t off, Py_ssize_t size, object record_type, object known_types,
                 Py_ssize_t max_records=4096):
    """Sound records of buf[off:size] from `off` on, as `record_type` tuples
    (type, seq, bucket, key, value, expire_ms, flags, version): (records, ends), ends
    being the offset after each record. Stops before the first record that is not
    plainly sound, or after max_records."""
    cdef const unsigned char[::1] view = buf
    cdef const unsigned char *p = &view[0] if view.shape[0] else NULL
    cdef Py_ssize_t end, length, blen, klen, vlen, q
    cdef uint32_t rtype, flags
    cdef list out = [], ends = []
    cdef object tnew = tuple.__new__
    if size > view.shape[0]:
        size = view.shape[0]
    while off + 44 <= size and len(out) < max_records:
        if p[off] != 0x42 or p[off + 1] != 0x6b:              # b"Bk"
            break
        rtype = p[off + 2]
        flags = p[off + 3]
        length = _le32(p + off + 4)
        blen = p[off + 32]
        klen = p[off + 34] | (p[off + 35] << 8)
        vlen = _le32(p + off + 36)
        end = off + length
        if length != 48 + blen + klen + vlen or end > size or rtype not in known_types:
            break
        if crc32(0, p + off, <unsigned int>(length - 4)) != _le32(p + end - 4):
            break
        q = off + 44
        out.append(tnew(record_type, (
            rtype, _le64(p + off + 8),
            PyUnicode_DecodeUTF8(<const char *>p + q, blen, NULL),
            PyBytes_FromStringAndSize(<const char *>p + q + blen, klen),
            PyBytes_FromStringAndSize(<const char *>p + q + blen + klen, vlen),
            _le64(p + off + 24), flags, _le64(p + off + 16))))
        off = end
        ends.append(end)
    return out, ends
