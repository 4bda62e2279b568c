# ring.pxi: the change ring. Producers are the table's writers (under their stripe
# lock, or the meta lock for bucket changes); the one consumer is the writer process.
#
# A record: bk_rec (48 bytes) then key then value, 8-aligned, never split by the end
# of the ring (a PAD record fills the gap). Its position is its sequence number.
#
#   reserve (ring lock)   header written with state RESERVED, then ring_head moves
#   fill (reserver)       body and header fields
#   commit (reserver)     state = COMMITTED (release); or SKIPPED when undone
#   consume (writer)      reads COMMITTED records from ring_tail, then moves the tail
#
# A producer that dies between reserve and commit holds its stripe lock; the repair
# of that stripe commits or skips the record according to how far the operation got.

cdef extern from "unistd.h" nogil:
    int usleep(unsigned int usec)


cdef inline bk_rec *REC(Store s, uint64_t pos) noexcept nogil:
    return <bk_rec *>(s.ring + pos % s.ring_size)


cdef int ring_wait_space(Store s, uint32_t need) except -1:
    """Before taking a stripe lock: wait (bounded by ring_wait) until a record of
    `need` bytes fits, counting the worst padding at the wrap."""
    cdef bk_header *h = s.hdr
    cdef uint64_t room = s.ring_size
    if bk_load_acq32(&h.writer_error_code):
        raise _err.DiskError(
            "the writer process reports a disk error ("
            + h.writer_error[:256].split(b"\0", 1)[0].decode(errors="replace")
            + "); writes to persisted buckets are refused until it clears. "
            "Check `bukt status`.")
    if bk_load_acq64(&h.ring_head) - bk_load_acq64(&h.ring_tail) + 2 * need <= room:
        return 0
    deadline = time.monotonic() + s.ring_wait
    while bk_load_acq64(&h.ring_head) - bk_load_acq64(&h.ring_tail) + 2 * need > room:
        if time.monotonic() >= deadline:
            raise _err.RingFull(
                f"change ring full for {s.ring_wait:g} s ({s.ring_size} bytes): the "
                "writer process is down or behind; the write was not applied. "
                "Check `bukt status`.")
        time.sleep(0.001)
    return 0


cdef uint64_t ring_reserve(Store s, uint32_t need, uint32_t owner, uint64_t *intent_ring) except? 1:
    """Reserve `need` bytes; 0 when they do not fit. The position is stored into
    *intent_ring before ring_head publishes the reservation."""
    cdef bk_header *h = s.hdr
    cdef uint64_t R = s.ring_size, head, tail, off, pad = 0, pos
    cdef bk_rec *r
    if s.epoch != _fork_epoch:
        s._claim_counter_row()                  # refreshes s.pid after a fork
    lock_simple(s, &h.ring_lock, "ring")
    head = h.ring_head
    tail = bk_load_acq64(&h.ring_tail)
    off = head % R
    if R - off < need:
        pad = R - off
    if head + pad + need - tail > R:
        bk_lock_release(&h.ring_lock)
        return 0
    if pad:
        r = <bk_rec *>(s.ring + off)
        r.len = <uint32_t>pad
        bk_store_rel8(&r.state, BK_R_PAD)
    pos = head + pad
    r = REC(s, pos)
    r.len = need
    r.type = 0
    r.pid = s.pid
    r.stripe = owner
    bk_store_rel8(&r.state, BK_R_RESERVED)
    if intent_ring != NULL:
        intent_ring[0] = pos
    bk_store_rel64(&h.ring_head, pos + need)    # last: publishes the reservation
    bk_lock_release(&h.ring_lock)
    return pos


cdef uint64_t ring_reserve_wait(Store s, uint32_t need, uint32_t owner,
                                uint64_t *intent_ring) except? 1:
    """ring_reserve, waiting up to ring_wait for room: writers that all saw room
    before taking their locks may find it taken. Waiting with a stripe lock held
    cannot deadlock: the consumer drains the ring without taking any stripe lock.
    0 when the ring stayed full."""
    cdef uint64_t pos = ring_reserve(s, need, owner, intent_ring)
    cdef double deadline
    if pos:
        return pos
    deadline = time.monotonic() + s.ring_wait
    while pos == 0 and time.monotonic() < deadline:
        with nogil:
            usleep(500)
        pos = ring_reserve(s, need, owner, intent_ring)
    return pos


cdef inline void ring_fill(Store s, uint64_t pos, uint8_t rtype, uint16_t bidx, uint32_t gen,
                           const char *k, uint32_t klen, const char *v, uint32_t vlen,
                           int64_t expire_ms, uint64_t version, uint8_t flags) noexcept:
    cdef bk_rec *r = REC(s, pos)
    r.type = rtype
    r.bucket = bidx
    r.bucket_gen = gen
    r.klen = klen
    r.vlen = vlen
    r.expire_ms = expire_ms
    r.version = version
    r.flags = flags
    if klen:
        memcpy(<char *>r + 48, k, klen)
    if vlen:
        memcpy(<char *>r + 48 + klen, v, vlen)


cdef inline void ring_commit(Store s, uint64_t pos) noexcept:
    bk_store_rel8(&REC(s, pos).state, BK_R_COMMITTED)


cdef inline uint32_t rec_size(uint32_t klen, uint32_t vlen) noexcept nogil:
    return <uint32_t>align8(48 + klen + vlen)


cdef bk_rec *ring_pending(Store s, uint64_t pos, uint32_t owner) noexcept:
    """The record at `pos` if it is still RESERVED by `owner` and inside the live
    part of the ring; else NULL (already resolved, or never reserved)."""
    cdef bk_header *h = s.hdr
    cdef bk_rec *r
    if pos == 0 or pos < bk_load_acq64(&h.ring_tail) or pos >= bk_load_acq64(&h.ring_head):
        return NULL
    r = REC(s, pos)
    if r.stripe != owner or bk_load_acq8(&r.state) != BK_R_RESERVED:
        return NULL
    return r
