# table.pxi: the index. The reader's fast path, and the `do_*` mutations that run
# with the stripe lock held (LOCK RULES in core.pyx), and the repair of a stripe
# whose lock holder died.

cdef inline uint64_t khash(uint16_t bidx, const char *k, size_t n) noexcept nogil:
    return bk_hash(k, n, 0x9E3779B97F4A7C15ULL * (bidx + 1))


cdef inline uint32_t stripe_of(Store s, uint64_t h) noexcept nogil:
    return <uint32_t>(((h >> 32) * s.nstripes) >> 32)


cdef inline uint32_t home_of(uint64_t h) noexcept nogil:
    return <uint32_t>((h >> 16) & SLOT_MASK)


cdef inline uint64_t tag_of(uint64_t h) noexcept nogil:
    return (h & 0xffff) << 48


cdef inline bint logs(Store s, bk_bucket *b) noexcept nogil:
    """Does a change to bucket b go to the ring? (persisted, and not a replay)"""
    return b.persist and s.logging


cdef inline bk_stripe *STRIPE(Store s, uint32_t si) noexcept nogil:
    return <bk_stripe *>(s.stripe_base + <uint64_t>si * BK_STRIPE_BYTES)


cdef inline uint64_t *SLOTS_OF(Store s, uint32_t si) noexcept nogil:
    # a stripe's slots follow its header, so the seq a reader samples and the slots
    # it probes share a page: one TLB miss where two regions would cost two
    return <uint64_t *>(s.stripe_base + <uint64_t>si * BK_STRIPE_BYTES + 128)


cdef inline uint32_t *STAMPS_OF(Store s, uint32_t si) noexcept nogil:
    # the LRU stamps, one per slot, after the slots: a reader writes only here, never
    # into a chunk (a stale chunk offset may point into a page that changed class)
    return <uint32_t *>(s.stripe_base + <uint64_t>si * BK_STRIPE_BYTES + 128 + SLOTS * 8)


cdef inline void tick_lru(Store s, int64_t now) noexcept nogil:
    """Advance the segment's LRU clock (64 ms ticks since creation) to `now`. Writers
    and the expiry cycle call it; readers only read it (no clock read on a get)."""
    cdef int64_t t = (now - s.hdr.created_ms) >> 6
    if t > <int64_t>bk_load_rlx32(&s.hdr.lru_clock) and t < 4294967295LL:
        bk_store_rel32(&s.hdr.lru_clock, <uint32_t>t)    # racy max: a lost tick is harmless


cdef inline void lower_min_expire(bk_stripe *st, int64_t expire_ms) noexcept nogil:
    """The stripe lock holder is about to publish an expiry (a new entry's, or one
    rewritten in place): lower the stripe's bound first, so that no published entry
    ever expires before it (THE EXPIRY BOUND in core.pyx)."""
    if expire_ms != 0 and expire_ms < st.min_expire_ms:
        bk_store_rlx_i64(&st.min_expire_ms, expire_ms)


cdef inline uint64_t entry_hash(Store s, uint64_t off) noexcept nogil:
    cdef bk_entry *e = ENT(s, off)
    return khash(e.bucket, EKEY(s, off), e.klen)


# -- the fast path: no lock, no syscall ------------------------------------------
ctypedef struct snap_t:         # what a reader learned about an entry
    uint64_t version
    int64_t expire_ms
    uint32_t vlen
    uint8_t flags

cdef enum:
    MISS = 0
    HIT = 1
    SLOW = 2                    # single-read or expired (validated): take the lock
    CONTENDED = 3               # READ_TRIES writers in the way: take the lock


cdef enum:                      # what fast_read copies
    COPY_NONE = 0               # nothing: exists, ttl, version
    COPY_PLAIN = 1              # the value, unless single-read (get hands those out locked)
    COPY_ALL = 2                # the value, single-read too (a peek that does not consume)


cdef object fast_read(Store s, uint16_t bidx, const char *k, uint32_t n, int copy,
                      int *status, snap_t *snap):
    """Probe and copy under the stripe's seq (see READERS in core.pyx). Returns the
    value as bytes when `copy` says so and the status is HIT, or SLOW with COPY_ALL."""
    cdef uint64_t h = khash(bidx, k, n)
    cdef uint32_t si = stripe_of(s, h)
    cdef bk_stripe *st = STRIPE(s, si)
    cdef uint64_t *slots = SLOTS_OF(s, si)
    cdef uint32_t *stamps
    cdef uint32_t home = home_of(h), i, probe, vlen, clk
    cdef uint64_t tag = tag_of(h), s1, w, o, off
    cdef uint64_t lo = s.arena_off, limit = s.size
    cdef bk_entry *e
    cdef object result = None
    cdef int attempt
    if not s.readonly:
        # the stamp of a hit sits in another line than its slot (usually the same
        # line as the home slot's stamp): fetch it alongside the seq and the slots
        bk_prefetch_w(STAMPS_OF(s, si) + home)
    for attempt in range(READ_TRIES):
        s1 = bk_load_acq64(&st.seq)
        if s1 & 1:
            bk_pause()
            continue
        off = 0
        i = home
        for probe in range(SLOTS):
            w = bk_load_rlx64(&slots[i])
            if w == 0:
                break
            if (w & BK_TAG_MASK) == tag:
                o = w & BK_OFF_MASK
                if o >= lo and o + 32 + n <= limit:
                    e = ENT(s, o)
                    if o + 192 <= limit:
                        # the value's lines: fetched now, their misses overlap the
                        # header's instead of following the key compare and vlen
                        bk_prefetch_r(<char *>e + 64)
                        bk_prefetch_r(<char *>e + 128)
                    if bk_load_rlx32(&e.klen) == n and bk_load_rlx16(&e.bucket) == bidx \
                            and memcmp(EKEY(s, o), k, n) == 0:
                        off = o
                        break
            i = (i + 1) & SLOT_MASK
        if off == 0:
            bk_fence_acq()
            if bk_load_rlx64(&st.seq) == s1:
                status[0] = MISS
                return None
            continue
        e = ENT(s, off)
        vlen = bk_load_rlx32(&e.vlen)
        snap.vlen = vlen
        snap.version = bk_load_rlx64(&e.version)
        snap.expire_ms = bk_load_rlx_i64(&e.expire_ms)
        snap.flags = bk_load_acq8(&e.flags)
        if vlen > s.max_value or off + 32 + n + vlen > limit:
            continue                    # torn header: the seq check would fail too
        if copy == COPY_ALL or (copy == COPY_PLAIN and not (snap.flags & BK_E_SINGLE)):
            if result is None or PyBytes_GET_SIZE(result) != vlen:
                result = PyBytes_FromStringAndSize(NULL, vlen)
            memcpy(PyBytes_AS_STRING(result), EKEY(s, off) + n, vlen)
        bk_fence_acq()
        if bk_load_rlx64(&st.seq) != s1:
            continue
        # a true snapshot from here on
        if (snap.flags & BK_E_SINGLE) or (snap.expire_ms != 0 and snap.expire_ms <= s.now()):
            status[0] = SLOW
            return result if copy == COPY_ALL else None
        if not s.readonly:
            clk = bk_load_rlx32(&s.hdr.lru_clock)
            stamps = STAMPS_OF(s, si)
            if stamps[i] != clk:        # relaxed, advisory: if the slot moved meanwhile,
                stamps[i] = clk         # another key's stamp gets fresher; harmless
        status[0] = HIT
        return result
    status[0] = CONTENDED
    return None


# -- a writer's prefetch ---------------------------------------------------------
cdef inline void prefetch_for_write(Store s, uint32_t si, uint64_t h) noexcept nogil:
    """Before a writer takes stripe si's lock for key hash h: start fetching the lock's
    line, h's home slot and stamp and, from a racy read of that slot (a hint: what it
    says is found again under the lock), the entry it points at. The lock is an atomic
    instruction that no later load passes, so without this the slot's miss follows the
    lock's and the entry's follows the slot's; with it the three overlap in two steps.
    A prefetch never faults, so a stale offset costs nothing but the fetch."""
    cdef uint64_t *slots = SLOTS_OF(s, si)
    cdef uint32_t home = home_of(h)
    cdef uint64_t w, o
    bk_prefetch_w(STRIPE(s, si))
    bk_prefetch_w(STAMPS_OF(s, si) + home)
    w = bk_load_rlx64(&slots[home])
    if w != 0 and (w & BK_TAG_MASK) == tag_of(h):
        o = w & BK_OFF_MASK
        if o >= s.arena_off and o < s.size:
            bk_prefetch_w(ENT(s, o))


# -- locked helpers --------------------------------------------------------------
cdef int do_find(Store s, uint32_t si, uint64_t h, uint16_t bidx, const char *k, uint32_t n,
                 uint64_t *off_out) noexcept:
    """The slot holding the key (>= 0, its offset in *off_out), or -1 - the first
    empty slot of its probe chain."""
    cdef uint64_t *slots = SLOTS_OF(s, si)
    cdef uint32_t i = home_of(h), probe
    cdef uint64_t tag = tag_of(h), w, off
    cdef bk_entry *e
    for probe in range(SLOTS):
        w = slots[i]
        if w == 0:
            off_out[0] = 0
            return -1 - <int>i
        if (w & BK_TAG_MASK) == tag:
            off = w & BK_OFF_MASK
            e = ENT(s, off)
            if e.bucket == bidx and e.klen == n and memcmp(EKEY(s, off), k, n) == 0:
                off_out[0] = off
                return <int>i
        i = (i + 1) & SLOT_MASK
    off_out[0] = 0
    return -1 - <int>SLOTS               # unreachable: a stripe is never full


cdef int find_offset(Store s, uint32_t si, uint64_t h, uint64_t off) noexcept:
    """The slot that points at chunk `off`, searched along h's probe chain; -1."""
    cdef uint64_t *slots = SLOTS_OF(s, si)
    cdef uint32_t i = home_of(h), probe
    cdef uint64_t w
    for probe in range(SLOTS):
        w = slots[i]
        if w == 0:
            return -1
        if (w & BK_OFF_MASK) == off:
            return <int>i
        i = (i + 1) & SLOT_MASK
    return -1


cdef void do_shift(Store s, uint32_t si, uint32_t hole) noexcept:
    """Backward-shift deletion from `hole` (whose slot is being unlinked). Each step
    copies a later slot into the hole before the hole moves on, so every
    intermediate state is a valid table with at most one duplicate; intent_hole
    follows the hole so that a repair can finish the shift (idempotent)."""
    cdef bk_stripe *st = STRIPE(s, si)
    cdef uint64_t *slots = SLOTS_OF(s, si)
    cdef uint32_t *stamps = STAMPS_OF(s, si)
    cdef uint32_t j = (hole + 1) & SLOT_MASK, home
    cdef uint64_t w
    while True:
        w = slots[j]
        if w == 0:
            break
        home = home_of(entry_hash(s, w & BK_OFF_MASK))
        # w may fill the hole unless its home lies cyclically in (hole, j]
        if ((j - home) & SLOT_MASK) >= ((j - hole) & SLOT_MASK):
            stamps[hole] = stamps[j]            # the stamp moves with its key
            bk_store_rlx64(&slots[hole], w)
            hole = j
            st.intent_hole = j
        j = (j + 1) & SLOT_MASK
    bk_store_rlx64(&slots[hole], 0)


cdef int do_delete_at(Store s, uint32_t si, int slot, uint64_t off, uint8_t rtype) except -1:
    """Unlink and free the entry at `slot` (offset `off`), logging a record of type
    `rtype` when its bucket is persisted. 0 when the ring has no room (no change)."""
    cdef bk_stripe *st = STRIPE(s, si)
    cdef bk_entry *e = ENT(s, off)
    cdef uint16_t bidx = e.bucket
    cdef bk_bucket *b = &s.bucketv[bidx]
    cdef uint32_t klen = e.klen, vlen = e.vlen
    cdef bint had_ttl = e.expire_ms != 0
    cdef uint64_t pos = 0
    st.intent_ring = 0
    st.intent_op = BK_OP_NONE
    if logs(s, b):
        pos = ring_reserve_wait(s, rec_size(klen, 0), si, &st.intent_ring)
        if pos == 0:
            return 0
        ring_fill(s, pos, rtype, bidx, b.gen, EKEY(s, off), klen, NULL, 0, 0, e.version, 0)
    st.intent_slot = slot
    st.intent_old = off
    st.intent_new = 0
    st.intent_hole = slot
    st.intent_op = BK_OP_DEL
    bk_seq_enter(&st.seq)
    do_shift(s, si, slot)
    if pos:
        ring_commit(s, pos)
        s.last_pos = pos + rec_size(klen, 0)
    st.count -= 1
    st.nttl -= had_ttl
    bk_add64(&b.keys, -1)
    bk_add64(&b.bytes, -<int64_t>(klen + vlen))
    chunk_free(s, off)
    st.intent_op = BK_OP_NONE
    st.intent_ring = 0
    bk_seq_leave(&st.seq)
    if BUKT_DEBUG:
        debug_check_stripe(s, si)
    return 1


cdef inline uint64_t next_version(Store s, uint64_t given) noexcept:
    """A new version, or `given` (a replay keeps the logged one) with the counter
    raised past it, so versions stay unique and increasing after a recovery."""
    cdef uint64_t cur
    if given == 0:
        return bk_fetch_add_u64(&s.hdr.version_counter, 1) + 1
    while True:
        cur = bk_load_acq64(&s.hdr.version_counter)
        if cur >= given or bk_cas64(&s.hdr.version_counter, cur, given):
            return given


cdef uint64_t do_set(Store s, uint32_t si, uint64_t h, uint16_t bidx, const char *k,
                     uint32_t n, const char *v, uint32_t vlen, int64_t expire_ms,
                     uint8_t eflags, int found, uint64_t old_off, uint64_t version=0) except 0:
    """Publish a new entry for the key (replacing `old_off` at slot `found` when
    found >= 0). Returns the new version."""
    cdef bk_stripe *st = STRIPE(s, si)
    cdef bk_bucket *b = &s.bucketv[bidx]
    cdef uint64_t *slots = SLOTS_OF(s, si)
    cdef uint32_t slot, need = 0
    cdef int c = class_for(s, 32 + n + vlen), tries = 0
    cdef uint64_t off, pos = 0, ver
    cdef int64_t dbytes
    cdef bk_entry *e
    if c < 0:
        raise _err.ValueTooLarge(f"entry of {32 + n + vlen} bytes exceeds the largest "
                                 f"chunk ({s.classes[s.nclasses - 1].chunk_size} bytes)")
    if found < 0 and st.count >= BK_STRIPE_MAX_LOAD:
        # slow path: this stripe's index is full
        if b.eviction != 0 or not evict_in_stripe(s, si):
            raise _err.SegmentFull(
                f"index full: stripe {si} holds {st.count} keys and "
                f"{'no key may be evicted' if b.eviction == 0 else 'bucket ' + repr(b.name.decode()) + ' does not evict'}; "
                "create the segment with more index_slots or memory")
        found = do_find(s, si, h, bidx, k, n, &old_off)
    st.intent_ring = 0
    st.intent_new = 0
    st.intent_op = BK_OP_ALLOC
    off = chunk_alloc(s, c, si)
    while off == 0:
        # slow path: the class is dry and no page is left
        if b.eviction != 0:
            st.intent_op = BK_OP_NONE
            raise _err.SegmentFull(
                f"segment full: no free {s.classes[c].chunk_size}-byte chunk and all "
                f"{s.npages} pages in use; bucket {b.name.decode()!r} has eviction 'none'")
        tries += 1
        if tries > 16:
            with nogil:                             # victims' stripes are busy: let
                usleep(100 * (tries - 16))          # their holders finish
        if tries > 64 or make_room(s, c, si) == NO_ROOM:
            st.intent_op = BK_OP_NONE
            raise _err.SegmentFull(
                f"segment full: nothing evictable found for a {s.classes[c].chunk_size}-"
                "byte chunk (the memory holds only non-evicting buckets' keys, or the "
                "ring is full)")
        # an eviction in this very stripe may have moved or removed our slot
        found = do_find(s, si, h, bidx, k, n, &old_off)
        st.intent_new = 0
        st.intent_op = BK_OP_ALLOC
        off = chunk_alloc(s, c, si)
    e = ENT(s, off)
    e.expire_ms = expire_ms
    e.klen = n
    e.vlen = vlen
    e.bucket = bidx
    memcpy(EKEY(s, off), k, n)
    if vlen:
        memcpy(EKEY(s, off) + n, v, vlen)
    bk_store_rel8(&e.flags, BK_E_USED | eflags)   # filled: no longer pending
    ver = next_version(s, version)
    e.version = ver
    if logs(s, b):
        need = rec_size(n, vlen)
        pos = ring_reserve_wait(s, need, si, &st.intent_ring)
        if pos == 0:
            chunk_free(s, off)
            st.intent_op = BK_OP_NONE
            st.intent_new = 0
            raise ring_full(f"change ring full ({s.ring_size} bytes): the writer "
                            "process is down or behind; the write was not applied", need)
        ring_fill(s, pos, BK_T_SET, bidx, b.gen, k, n, v, vlen, expire_ms, ver, eflags)
    slot = <uint32_t>(found if found >= 0 else -1 - found)
    st.intent_slot = slot
    st.intent_old = old_off
    st.intent_op = BK_OP_SET
    lower_min_expire(st, expire_ms)             # before the slot store publishes it
    tick_lru(s, s.now())                        # outside the seq window readers retry on
    bk_seq_enter(&st.seq)
    STAMPS_OF(s, si)[slot] = s.hdr.lru_clock
    bk_store_rlx64(&slots[slot], tag_of(h) | off)
    if pos:
        ring_commit(s, pos)
        s.last_pos = pos + need
    dbytes = n + vlen
    st.nttl += expire_ms != 0
    if old_off:
        dbytes -= ENT(s, old_off).klen + ENT(s, old_off).vlen
        st.nttl -= ENT(s, old_off).expire_ms != 0   # before the free reuses the word
        chunk_free(s, old_off)
    else:
        st.count += 1
        bk_add64(&b.keys, 1)
    bk_add64(&b.bytes, dbytes)
    st.intent_op = BK_OP_NONE
    st.intent_ring = 0
    bk_seq_leave(&st.seq)
    if BUKT_DEBUG:
        debug_check_stripe(s, si)
    return ver


cdef uint64_t do_touch(Store s, uint32_t si, int slot, uint64_t off, int64_t expire_ms,
                       uint64_t version=0) except 0:
    """Rewrite an entry's expiry in place (one aligned word; a replay may also set the
    logged version); logged as TOUCH. The version stays: it names the value, and an
    ETag should not change because a TTL did."""
    cdef bk_stripe *st = STRIPE(s, si)
    cdef bk_entry *e = ENT(s, off)
    cdef bk_bucket *b = &s.bucketv[e.bucket]
    cdef uint64_t pos = 0, ver = next_version(s, version) if version else e.version
    st.intent_ring = 0
    st.intent_op = BK_OP_NONE
    if logs(s, b):
        pos = ring_reserve_wait(s, rec_size(e.klen, 0), si, &st.intent_ring)
        if pos == 0:
            raise ring_full(f"change ring full ({s.ring_size} bytes): the writer "
                            "process is down or behind; the change was not applied",
                            rec_size(e.klen, 0))
        ring_fill(s, pos, BK_T_TOUCH, e.bucket, b.gen, EKEY(s, off), e.klen, NULL, 0,
                  expire_ms, ver, e.flags & BK_E_SINGLE)
    st.intent_slot = slot
    st.intent_old = off
    st.intent_op = BK_OP_TOUCH
    lower_min_expire(st, expire_ms)             # before the entry's word takes it
    bk_seq_enter(&st.seq)
    st.nttl += (expire_ms != 0) - (e.expire_ms != 0)
    e.expire_ms = expire_ms
    e.version = ver
    if pos:
        ring_commit(s, pos)
        s.last_pos = pos + rec_size(e.klen, 0)
    st.intent_op = BK_OP_NONE
    st.intent_ring = 0
    bk_seq_leave(&st.seq)
    if BUKT_DEBUG:
        debug_check_stripe(s, si)
    return ver


# -- debug build: the stripe's invariants after every mutation ----------------------
cdef int debug_check_stripe(Store s, uint32_t si) except -1:
    """BUKT_DEBUG only: every slot's entry is a published chunk whose key hashes to
    this stripe and tag, reachable from its home slot, count and nttl match, and no
    entry expires before the stripe's bound."""
    cdef uint64_t *slots = SLOTS_OF(s, si)
    cdef uint32_t i, j, count = 0, nttl = 0
    cdef uint64_t w, h
    cdef int64_t earliest = BK_NO_EXPIRY
    cdef bk_entry *e
    for i in range(SLOTS):
        w = slots[i]
        if w == 0:
            continue
        count += 1
        e = ENT(s, w & BK_OFF_MASK)
        nttl += e.expire_ms != 0
        if e.expire_ms != 0 and e.expire_ms < earliest:
            earliest = e.expire_ms
        if (e.flags & (BK_E_USED | BK_E_PENDING)) != BK_E_USED:
            raise AssertionError(f"stripe {si} slot {i}: chunk flags {e.flags:#x}")
        h = entry_hash(s, w & BK_OFF_MASK)
        if stripe_of(s, h) != si or tag_of(h) != (w & BK_TAG_MASK):
            raise AssertionError(f"stripe {si} slot {i}: key hashes elsewhere")
        j = home_of(h)
        while j != i and slots[j] != 0:
            j = (j + 1) & SLOT_MASK
        if j != i:
            raise AssertionError(f"stripe {si} slot {i}: unreachable from home {home_of(h)}")
    if count != STRIPE(s, si).count:
        raise AssertionError(f"stripe {si}: count {STRIPE(s, si).count} != {count}")
    if nttl != STRIPE(s, si).nttl:
        raise AssertionError(f"stripe {si}: nttl {STRIPE(s, si).nttl} != {nttl}")
    if STRIPE(s, si).min_expire_ms > earliest:
        raise AssertionError(f"stripe {si}: expiry bound {STRIPE(s, si).min_expire_ms} "
                             f"above the earliest expiry {earliest}")
    return 0


# -- repair -----------------------------------------------------------------------
cdef int free_if_orphan(Store s, uint32_t si, uint64_t off) except -1:
    """Free chunk `off` if it belongs to stripe si's dead operation and no slot of
    the stripe references it. Ownership: a pending chunk names its stripe; a filled
    one is ours only if its key hashes here (no other stripe's writer could have
    written such a key while this stripe's lock was held by the dead process)."""
    cdef bk_entry *e
    cdef uint64_t *slots = SLOTS_OF(s, si)
    cdef uint32_t i
    if not chunk_start(s, off):         # its page has since moved to another class
        return 0
    e = ENT(s, off)
    if not (e.flags & BK_E_USED):
        return 0
    if e.flags & BK_E_PENDING:
        if e.version != si:
            return 0
    else:
        if e.klen == 0 or e.klen > s.max_key or e.bucket >= s.max_buckets \
                or off + 32 + e.klen > s.size:
            return 0
        if stripe_of(s, entry_hash(s, off)) != si:
            return 0
    for i in range(SLOTS):
        if (slots[i] & BK_OFF_MASK) == off and slots[i] != 0:
            return 0
    chunk_free(s, off)
    return 1


cdef int repair_stripe(Store s, uint32_t si) except -1:
    """The stripe's lock holder died (EOWNERDEAD): finish or undo its one operation
    as the intent record describes, so the stripe is as if it completed or never
    started. Idempotent: a repairer that dies too leaves the same work to the next."""
    cdef bk_stripe *st = STRIPE(s, si)
    cdef uint64_t *slots = SLOTS_OF(s, si)
    cdef uint32_t op = st.intent_op, i, count = 0, nttl = 0
    cdef bk_rec *r = ring_pending(s, st.intent_ring, si)
    cdef uint64_t cur = 0
    cdef int64_t exp, earliest = BK_NO_EXPIRY
    cdef bk_entry *e
    if st.intent_slot < SLOTS:
        cur = slots[st.intent_slot] & BK_OFF_MASK
    if op == BK_OP_SET:
        if st.intent_new and cur == st.intent_new:          # published: complete it
            if r != NULL:
                bk_store_rel8(&r.state, BK_R_COMMITTED)
            if st.intent_old:
                free_if_orphan(s, si, st.intent_old)
        else:                                               # not published: undo
            if r != NULL:
                bk_store_rel8(&r.state, BK_R_SKIPPED)
            if st.intent_new:
                free_if_orphan(s, si, st.intent_new)
    elif op == BK_OP_DEL:
        if cur == st.intent_old and st.intent_hole == st.intent_slot:   # not started
            if r != NULL:
                bk_store_rel8(&r.state, BK_R_SKIPPED)
        else:
            do_shift(s, si, st.intent_hole)
            if r != NULL:
                bk_store_rel8(&r.state, BK_R_COMMITTED)
            free_if_orphan(s, si, st.intent_old)
    elif op == BK_OP_TOUCH:
        if r != NULL:
            if cur == st.intent_old and cur != 0:
                e = ENT(s, cur)
                lower_min_expire(st, r.expire_ms)   # as do_touch would have: a repairer
                e.expire_ms = r.expire_ms           # that dies here leaves it low
                e.version = r.version
            bk_store_rel8(&r.state, BK_R_COMMITTED)
    else:                                                   # ALLOC or nothing
        if r != NULL:
            bk_store_rel8(&r.state, BK_R_SKIPPED)
        if op == BK_OP_ALLOC and st.intent_new:
            free_if_orphan(s, si, st.intent_new)
    # the dead holder may have changed a slot or an expiry and not yet the counts:
    # count them again (the slots now all hold published entries), and set the
    # expiry bound exactly, as any walk under the lock may
    for i in range(SLOTS):
        if slots[i] != 0:
            count += 1
            exp = ENT(s, slots[i] & BK_OFF_MASK).expire_ms
            nttl += exp != 0
            if exp != 0 and exp < earliest:
                earliest = exp
    st.count = count
    st.nttl = nttl
    bk_store_rlx_i64(&st.min_expire_ms, earliest)
    st.intent_op = BK_OP_NONE
    st.intent_ring = 0
    st.intent_new = 0
    st.intent_old = 0
    if st.seq & 1:
        bk_seq_leave(&st.seq)
    _note_repair(s)
    if BUKT_DEBUG:
        debug_check_stripe(s, si)
    return 0
