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
#
# THE DOORBELL (group commit). An idle writer sleeps on the header word
# writer_sleeping (a futex) instead of polling the ring with sleeps. It sets the word
# to 1, then (full fence) looks at the record at the tail once more, and sleeps only if
# nothing is committed there. Under `fsync: always` a producer, after committing
# (full fence), swaps the word 1 -> 0 and, if it won the swap, wakes the writer: one
# syscall per writer sleep, not per record, and none at all while the writer is busy
# (fsyncing, say), whose next drain takes everything committed meanwhile. The two
# fences make the pair a Dekker handshake: either the writer sees the record, or the
# producer sees the 1. Under everysec and no nobody waits for the writer, so producers
# never ring, and the sleep is just the poll interval. A record committed by a repair
# (not ring_commit) rings nothing: the writer's timeout picks it up.

cdef extern from *:
    """
    static inline void bk_fence_full(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
    """
    void bk_fence_full() nogil

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
    if s.hdr.sync_always:                       # the writer may sleep with waiters
        ring_doorbell(s.hdr)


cdef inline void ring_doorbell(bk_header *h) noexcept nogil:
    """After a commit: wake the writer if it sleeps (see THE DOORBELL above)."""
    bk_fence_full()
    if bk_load_rlx32(&h.writer_sleeping) and bk_cas32(&h.writer_sleeping, 1, 0):
        bk_futex_wake(&h.writer_sleeping)


cdef bint ring_has_work(Store s) noexcept nogil:
    """True when the record at the tail can be consumed now (committed, or a pad
    or skipped record the tail moves past); False when the ring is empty or its tail
    record is still RESERVED (its producer rings when it commits)."""
    cdef bk_header *h = s.hdr
    cdef uint64_t tail = bk_load_acq64(&h.ring_tail)
    if tail >= bk_load_acq64(&h.ring_head):
        return False
    return bk_load_acq8(&REC(s, tail).state) != BK_R_RESERVED


def ring_idle_wait(Store s, double timeout):
    """The writer process's sleep on an empty ring: returns True at once if a record
    can be consumed, else sleeps (without the GIL) until a producer rings the doorbell
    or `timeout` seconds pass; False after a timeout with nothing to consume."""
    cdef bk_header *h = s.hdr
    cdef long ns = <long>(timeout * 1e9) if timeout > 0 else 0
    bk_store_rel32(&h.writer_sleeping, 1)
    bk_fence_full()
    if not ring_has_work(s) and ns > 0:
        with nogil:
            bk_futex_wait(&h.writer_sleeping, 1, ns)
    bk_store_rel32(&h.writer_sleeping, 0)
    return ring_has_work(s)


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
