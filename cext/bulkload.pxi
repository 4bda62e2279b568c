# bulkload.pxi: cold recovery's fast path, from the bytes of a log or base file
# straight into the table (bukt/writer/datadir.py: Recovery; bukt/writer/restore.py: Loader).
#
# The slow path turns every record into a Python tuple, passes it through three
# generators (aof.scan, basefile.read_base, Recovery._emit) and applies it with one
# Bucket.restore() call: several microseconds a record, most of a cold start of a
# million keys. BulkLoad.load walks the file instead, checks each record exactly as
# the writer's scan_records does (read_record: the magic, lengths that add up, the
# CRC-32) and applies the key records itself with the table's own functions under the
# stripe lock, the way Bucket.restore / restore_ttl / delete do:
#
#   SET                do_find + do_set (the logged value, absolute expiry, flags and
#                      version, which also raises the version counter past it)
#   SET_TTL            do_find + do_touch with the logged expiry and version
#   DELETE EXPIRE EVICT  do_find + do_delete_at
#
# and Recovery._emit's rules on the way: a record at or below `after_seq` is already in
# the base (skipped); with `now_ms` given, a SET or SET_TTL whose expiry has passed is
# an EXPIRE of its key (left out altogether in a base file), so replay never brings an
# expired key back. It stops, without consuming it, before the first record it does not
# take: one that is not plainly sound (aof.py's slow path then tells a truncated tail
# from corruption), a bucket, token or flush record, a bucket the table does not hold
# (the Loader reports it), a key or value outside the segment's limits (Bucket.restore
# raises the same error it always did). The caller hands that one record to the slow
# path and calls load again, so the order of application is the file's.
#
# The store's logging is off (set_logging(False)): nothing reaches the ring.
#
# The record format is the writer's (bukt/writer/aof.py); what of it this loop reads
# comes from bukt/writer/_logscan.pxd. The loop stays in the core because applying a
# record needs the table's internals: the bucket table (bucketv), khash, stripe_of,
# lock_key, do_find, do_set, do_touch, do_delete_at and grow_past.

from libc.string cimport strlen
from libc.stdlib cimport realloc
from bukt.writer._logscan cimport (LOG_DELETE, LOG_EVICT, LOG_EXPIRE, LOG_REC_OVERHEAD,
                                   LOG_SET, LOG_SET_TTL, LOG_SINGLE_READ, log_record,
                                   put_record, read_record)


cdef class BulkLoad:
    """Applies the sound key records of a file's bytes to a store whose logging is off.
    Set after_seq, in_base and now_ms for each file (as Recovery._emit uses them);
    emitted and expired count what Recovery counts as records and expired."""

    cdef Store s
    cdef public uint64_t after_seq      # records at or below it are skipped (0: none)
    cdef public bint in_base            # expired SETs are left out instead of EXPIREd
    cdef public int64_t now_ms          # -1: no expiry conversion
    cdef public uint64_t emitted        # records applied (Recovery.records)
    cdef public uint64_t expired        # SET/SET_TTL past their expiry (Recovery.expired)
    cdef bytes last_name                # the bucket of the last record, and its slot
    cdef int last_idx
    cdef uint32_t last_gen

    def __init__(self, Store store, now_ms=None):
        self.s = store
        self.now_ms = -1 if now_ms is None else now_ms
        self.last_name = None
        self.last_idx = -1

    cdef int _bucket(self, const char *name, Py_ssize_t n) except -2:
        """The slot of the live bucket called name[:n], or -1."""
        cdef Store s = self.s
        cdef uint32_t i
        cdef bk_bucket *b
        if self.last_idx >= 0 and PyBytes_GET_SIZE(self.last_name) == n and \
                memcmp(PyBytes_AS_STRING(self.last_name), name, n) == 0:
            b = &s.bucketv[self.last_idx]
            if b.state == 1 and b.gen == self.last_gen:     # not dropped since
                return self.last_idx
        self.last_idx = -1
        if n > BK_NAME_MAX:
            return -1
        for i in range(s.max_buckets):
            b = &s.bucketv[i]
            if b.state == 1 and strlen(b.name) == <size_t>n and memcmp(b.name, name, n) == 0:
                self.last_name = PyBytes_FromStringAndSize(name, n)
                self.last_idx = <int>i
                self.last_gen = b.gen
                return <int>i
        return -1

    def load(self, buf, Py_ssize_t off, Py_ssize_t size, Py_ssize_t max_records=1 << 20):
        """Applies the records of buf[off:size] from `off` on, stopping before the first
        it does not take (see the top of cext/bulkload.pxi): (records consumed, offset
        after the last of them, highest seq among them or 0)."""
        cdef const unsigned char[::1] view = buf
        cdef const unsigned char *p = &view[0] if view.shape[0] else NULL
        cdef Store s = self.s
        cdef Py_ssize_t count = 0
        cdef log_record r
        cdef uint32_t rtype
        cdef uint64_t last = 0
        cdef int64_t expire_ms
        cdef int idx
        s._writable()
        if size > view.shape[0]:
            size = view.shape[0]
        while count < max_records and read_record(p, off, size, &r):
            rtype = r.type
            if rtype != LOG_SET and rtype != LOG_DELETE and rtype != LOG_EXPIRE and \
                    rtype != LOG_SET_TTL and rtype != LOG_EVICT:
                break
            if self.after_seq and r.seq <= self.after_seq:
                pass                                        # already in the base
            else:
                if r.klen == 0 or <uint64_t>r.klen > s.max_key or \
                        <uint64_t>r.vlen > s.max_value:
                    break                                   # the slow path raises
                idx = self._bucket(r.bucket, r.blen)
                if idx < 0:
                    break                                   # the Loader reports it
                expire_ms = <int64_t>r.expire_ms
                if (rtype == LOG_SET or rtype == LOG_SET_TTL) and self.now_ms >= 0 and \
                        0 < expire_ms <= self.now_ms:
                    self.expired += 1
                    if self.in_base:
                        rtype = 0                           # left out
                    else:
                        rtype = LOG_EXPIRE
                if rtype == LOG_SET:
                    bulk_set(s, <uint16_t>idx, r.key, <uint32_t>r.klen, r.value,
                             <uint32_t>r.vlen, expire_ms,
                             (r.flags & BK_E_OBJECT) |
                             (BK_E_SINGLE if r.flags & LOG_SINGLE_READ else 0), r.version)
                elif rtype == LOG_SET_TTL:
                    bulk_touch(s, <uint16_t>idx, r.key, <uint32_t>r.klen, expire_ms, r.version)
                elif rtype != 0:
                    bulk_delete(s, <uint16_t>idx, r.key, <uint32_t>r.klen)
                if rtype != 0:
                    self.emitted += 1
            if r.seq > last:
                last = r.seq
            count += 1
            off = r.end
        return count, off, last


cdef int bulk_set(Store s, uint16_t idx, const char *k, uint32_t n, const char *v,
                  uint32_t vlen, int64_t expire_ms, uint8_t eflags, uint64_t version) except -1:
    """Bucket.restore without the Python call: the entry is this, whatever it was."""
    cdef uint64_t h = khash(idx, k, n), off = 0
    cdef uint32_t si = stripe_of(s, h)
    cdef int found
    while True:                         # again after a StripeFull (GROWTH, table.pxi)
        try:
            si = lock_key(s, si, h)
            try:
                found = do_find(s, si, h, idx, k, n, &off)
                do_set(s, si, h, idx, k, n, v, vlen, expire_ms, eflags, found, off, version)
            finally:
                unlock_stripe(s, si)
        except StripeFull as full:
            grow_past(s, full.si, full.depth)
            si = stripe_of(s, h)
            continue
        break
    s._after_write(False)               # the bulk loader logs nothing: no durability wait
    return 0


cdef int bulk_touch(Store s, uint16_t idx, const char *k, uint32_t n, int64_t expire_ms,
                    uint64_t version) except -1:
    """Bucket.restore_ttl without the Python call: no such key, no change."""
    cdef uint64_t h = khash(idx, k, n), off = 0
    cdef uint32_t si = stripe_of(s, h)
    cdef int slot
    si = lock_key(s, si, h)
    try:
        slot = do_find(s, si, h, idx, k, n, &off)
        if slot >= 0:
            do_touch(s, si, slot, off, expire_ms, version)
    finally:
        unlock_stripe(s, si)
    return 0


cdef int bulk_delete(Store s, uint16_t idx, const char *k, uint32_t n) except -1:
    """Bucket.delete without the Python call, counted as it counts: an entry already
    past its expiry in the table is an expiration, any other a delete."""
    cdef uint64_t h = khash(idx, k, n), off = 0
    cdef uint32_t si = stripe_of(s, h)
    cdef int slot
    cdef int64_t exp
    si = lock_key(s, si, h)
    try:
        slot = do_find(s, si, h, idx, k, n, &off)
        if slot >= 0:
            exp = ENT(s, off).expire_ms
            if exp != 0 and exp <= s.now():             # as Bucket._expired
                if do_delete_at(s, si, slot, off, BK_T_EXPIRED):
                    bk_fetch_add_u64(&s.hdr.expirations, 1)
                    bk_add64(&s.counters(idx).expirations, 1)
            elif do_delete_at(s, si, slot, off, BK_T_DEL):
                bk_add64(&s.counters(idx).deletes, 1)
    finally:
        unlock_stripe(s, si)
    return 0


# THE DUMP, ENCODED. A snapshot (bukt/writer/restore.py: snapshot_chunks: what a
# compaction writes and a replica's full copy streams) is every live entry of the
# persisted buckets as a SET record. store.dump_stripes hands each entry out as a tuple
# of new objects and the records were then encoded from those: about 1.5 microseconds
# an entry. dump_encoded reads the same stripes the same way (read_at_cursor: under
# the stripe's seq, each key once however the index grows; the same checks as
# collect_entries) and writes the records straight from the entry into one buffer.

cdef class DumpPlan:
    """What dump_encoded writes: the SET records, at sequence `seq`, of the entries of
    the buckets `live` names ((slot, generation, name) of each persisted bucket live
    when the snapshot began: a bucket created later is left out, as snapshot() leaves
    it out)."""
    cdef list names                     # slot -> the bucket's UTF-8 name, or None
    cdef list gens                      # slot -> its generation
    cdef uint64_t seq
    cdef unsigned char *buf             # one stripe's records (reused)
    cdef Py_ssize_t cap

    def __init__(self, Store store, uint64_t seq, live):
        self.seq = seq
        self.names = [None] * store.max_buckets
        self.gens = [0] * store.max_buckets
        for idx, gen, name in live:
            nb = name.encode()
            if len(nb) > 255:
                raise ValueError(f"bucket name {name!r} too long to encode")
            self.names[idx] = nb
            self.gens[idx] = gen

    def __dealloc__(self):
        free(self.buf)


cdef int plan_reserve(DumpPlan p, Py_ssize_t need) except -1:
    cdef Py_ssize_t cap
    cdef unsigned char *nb
    if need <= p.cap:
        return 0
    cap = max(need, 2 * p.cap, 1 << 16)
    nb = <unsigned char *>realloc(p.buf, cap)
    if nb == NULL:
        raise MemoryError()
    p.buf, p.cap = nb, cap
    return 0


cdef list collect_encoded(Store s, uint32_t si, object arg):
    """collect_entries, encoded: [the records of the stripe's live entries of the
    plan's buckets, how many] (read without validation: read_at_cursor validates)."""
    cdef DumpPlan p = <DumpPlan>arg
    cdef uint64_t *slots = SLOTS_OF(s, si)
    cdef uint64_t w, off
    cdef uint32_t i, klen, vlen, bidx
    cdef int64_t now = s.now(), exp
    cdef bk_entry *e
    cdef Py_ssize_t used = 0, n = 0, need, blen
    cdef object nm
    for i in range(SLOTS):
        w = bk_load_rlx64(&slots[i])
        if w == 0:
            continue
        off = w & BK_OFF_MASK
        if off < s.arena_off or off + 32 > s.size:
            continue
        e = ENT(s, off)
        klen = bk_load_rlx32(&e.klen)
        vlen = bk_load_rlx32(&e.vlen)
        bidx = e.bucket
        if klen > s.max_key or vlen > s.max_value or off + 32 + klen + vlen > s.size \
                or bidx >= s.max_buckets:
            continue
        exp = bk_load_rlx_i64(&e.expire_ms)
        if exp and exp <= now:
            continue
        nm = p.names[bidx]
        if nm is None or s.bucketv[bidx].state != 1 or \
                s.bucketv[bidx].gen != <uint32_t>p.gens[bidx]:
            continue
        blen = PyBytes_GET_SIZE(nm)
        need = used + LOG_REC_OVERHEAD + blen + klen + vlen
        plan_reserve(p, need)
        put_record(p.buf + used, LOG_SET,       # (restore.log_flags, in C)
                   (e.flags & BK_E_OBJECT) | (LOG_SINGLE_READ if e.flags & BK_E_SINGLE else 0),
                   p.seq, e.version, <uint64_t>exp, PyBytes_AS_STRING(nm), blen,
                   EKEY(s, off), klen, EKEY(s, off) + klen, vlen)
        used = need
        n += 1
    return [PyBytes_FromStringAndSize(<char *>p.buf, used) if n else b"", n]


def dump_encoded(Store store, uint64_t start, uint32_t count, DumpPlan plan):
    """store.dump_stripes(start, count) as the plan's SET records (THE DUMP, ENCODED):
    (their bytes, how many, the cursor to go on from or 0)."""
    cdef uint64_t cur = start, nxt = 0
    cdef uint32_t done
    cdef list out = [], part
    cdef Py_ssize_t n = 0
    store._open()
    for done in range(count):
        part = read_at_cursor(store, cur, collect_encoded, plan, &nxt)
        if part[1]:
            out.append(part[0])
            n += <Py_ssize_t>part[1]
        cur = nxt
        if cur == 0:
            break
    return b"".join(out), n, cur
