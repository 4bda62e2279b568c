# The log's record format in C, for the compiled readers of log and base files: the
# writer's own scan (bukt/writer/_logscan.pyx: scan_records) and cold recovery's bulk
# loader in the core (cext/bulkload.pxi), which cimports this file because it applies
# the records to the table with the core's own functions; and for the compiled writers
# of the same records (put_record: _logscan.pyx's encoders, and the core's dump of a
# snapshot, bulkload.pxi: dump_encoded). The format is the writer's: bukt/writer/aof.py
# documents it (RECORD) and aof.encode is its reference; tests/unit/test_log_format.py
# checks the constants here against aof.py's, tests/unit/test_log_encode.py the bytes.
#
# Everything here is inline or a constant, so a module that cimports it imports nothing
# at run time.

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

cdef extern from "zlib.h" nogil:
    unsigned long crc32(unsigned long crc, const unsigned char *buf, unsigned int len)

cdef enum:
    LOG_REC_HEADER = 44         # aof.REC_HEADER_SIZE: where the bucket name starts
    LOG_REC_OVERHEAD = 48       # aof.RECORD_OVERHEAD: the header and the trailing crc
    LOG_SET = 1                 # record types (aof.SET ...)
    LOG_DELETE = 2
    LOG_EXPIRE = 3
    LOG_SET_TTL = 4
    LOG_EVICT = 10
    LOG_SINGLE_READ = 1         # aof.SINGLE_READ, the flag bit

ctypedef struct log_record:     # one record, its fields pointing into the caller's buffer
    uint8_t type
    uint8_t flags
    uint64_t seq
    uint64_t version
    uint64_t expire_ms
    const char *bucket
    Py_ssize_t blen
    const char *key
    Py_ssize_t klen
    const char *value
    Py_ssize_t vlen
    Py_ssize_t end              # the offset just after the record


cdef inline uint32_t le32(const unsigned char *p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint64_t le64(const unsigned char *p) noexcept nogil:
    return le32(p) | (<uint64_t>le32(p + 4) << 32)


cdef inline bint read_record(const unsigned char *p, Py_ssize_t off, Py_ssize_t size,
                             log_record *r) noexcept nogil:
    """Whether p[off:size] starts with a plainly sound record -- the magic, lengths
    that add up within `size`, the record's CRC-32 over everything before it -- and if
    so its fields in *r (the type is not checked: each reader knows the types it
    takes). A record that is not plainly sound goes to aof.py's slow path, which alone
    tells a truncated tail from corruption."""
    cdef Py_ssize_t length, q
    if off + LOG_REC_HEADER > size or p[off] != 0x42 or p[off + 1] != 0x6b:   # b"Bk"
        return False
    length = le32(p + off + 4)
    r.blen = p[off + 32]
    r.klen = p[off + 34] | (p[off + 35] << 8)
    r.vlen = le32(p + off + 36)
    r.end = off + length
    if length != LOG_REC_OVERHEAD + r.blen + r.klen + r.vlen or r.end > size:
        return False
    if crc32(0, p + off, <unsigned int>(length - 4)) != le32(p + r.end - 4):
        return False
    r.type = p[off + 2]
    r.flags = p[off + 3]
    r.seq = le64(p + off + 8)
    r.version = le64(p + off + 16)
    r.expire_ms = le64(p + off + 24)
    q = off + LOG_REC_HEADER
    r.bucket = <const char *>p + q
    r.key = r.bucket + r.blen
    r.value = r.key + r.klen
    return True


cdef inline void put32(unsigned char *p, uint32_t v) noexcept nogil:
    p[0] = v & 0xff
    p[1] = (v >> 8) & 0xff
    p[2] = (v >> 16) & 0xff
    p[3] = (v >> 24) & 0xff


cdef inline void put64(unsigned char *p, uint64_t v) noexcept nogil:
    put32(p, <uint32_t>(v & 0xffffffffu))
    put32(p + 4, <uint32_t>(v >> 32))


cdef inline Py_ssize_t put_record(unsigned char *r, uint8_t rtype, uint8_t flags,
                                  uint64_t seq, uint64_t version, uint64_t expire_ms,
                                  const char *bucket, Py_ssize_t blen, const char *key,
                                  Py_ssize_t klen, const char *value,
                                  Py_ssize_t vlen) noexcept nogil:
    """Writes the record at r, which has room for LOG_REC_OVERHEAD + blen + klen + vlen
    bytes (the caller checks blen <= 255, klen <= 65535 and vlen, as aof.encode
    does); returns its length."""
    cdef Py_ssize_t length = LOG_REC_OVERHEAD + blen + klen + vlen
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
    memcpy(r + LOG_REC_HEADER, bucket, blen)
    memcpy(r + LOG_REC_HEADER + blen, key, klen)
    if vlen:
        memcpy(r + LOG_REC_HEADER + blen + klen, value, vlen)
    put32(r + length - 4, <uint32_t>crc32(0, r, <unsigned int>(length - 4)))
    return length
