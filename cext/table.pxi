# table.pxi: the index. The reader's fast path, and the `do_*` mutations that run
# with the stripe lock held (LOCK RULES in core.pyx), and the repair of a stripe
# whose lock holder died.

cdef inline uint64_t khash(uint16_t bidx, const char *k, size_t n) noexcept nogil:
    return bk_hash(k, n, 0x9E3779B97F4A7C15ULL * (bidx + 1))


cdef inline uint32_t hx(uint64_t h) noexcept nogil:
    """The half of a key's hash that names its stripe (GROWTH below)."""
    return <uint32_t>(h >> 32)


cdef inline uint32_t low_bits(uint32_t x, uint32_t bits) noexcept nogil:
    return <uint32_t>(x & ((1ULL << bits) - 1))


cdef inline uint32_t geom_stripe(uint64_t geom, uint32_t x) noexcept nogil:
    """Linear hashing: the low `level` bits of x, or one bit more below `split`."""
    cdef uint32_t level = <uint32_t>(geom >> 32), b = low_bits(x, level)
    if b < <uint32_t>geom:
        b = low_bits(x, level + 1)
    return b


cdef inline uint64_t stripes_in_use(uint64_t geom) noexcept nogil:
    """2^level + split: the stripes the index uses (the next to come is their count)."""
    return (1ULL << (geom >> 32)) + <uint32_t>geom


cdef inline uint32_t stripe_of(Store s, uint64_t h) noexcept nogil:
    """Where h's key lives by the geometry as last published: a hint for a writer,
    which checks it under the lock (lock_key), and for a reader, which checks it
    under the seq (fast_read)."""
    return geom_stripe(bk_load_acq64(&s.hdr.index_geom), hx(h))


cdef inline bint owns(Store s, uint32_t si, uint64_t h) noexcept nogil:
    """Does stripe si hold h's key now? (exact under si's lock or seq: a split
    changes its depth under both)"""
    return low_bits(hx(h), bk_load_rlx32(&STRIPE(s, si).depth)) == si


cdef inline uint32_t home_of(uint64_t h) noexcept nogil:
    return <uint32_t>((h >> 16) & SLOT_MASK)


cdef inline uint64_t tag_of(uint64_t h) noexcept nogil:
    return (h & 0xffff) << 48


cdef inline bint logs(Store s, bk_bucket *b) noexcept nogil:
    """Does a change to bucket b go to the ring? (persisted, not a replay, and a
    writer process has claimed the segment: exact under the stripe or meta lock,
    ring.pxi, THE WRITER'S CLAIM)"""
    return b.persist and s.logging and claimed(s.hdr)


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
    COPY_ROOM = 3               # as COPY_PLAIN, after `room` bytes the caller reserves in
                                # front of the value (read_into: a face's response header)


cdef object fast_read(Store s, uint16_t bidx, const char *k, uint32_t n, int copy,
                      int *status, snap_t *snap, Py_ssize_t room=0):
    """Probe and copy under the stripe's seq (see READERS in core.pyx). Returns the
    value as bytes when `copy` says so and the status is HIT, or SLOW with COPY_ALL;
    with COPY_ROOM, `room` bytes of the result precede the value, left unwritten."""
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
    cdef Py_ssize_t pre = room if copy == COPY_ROOM else 0
    if not s.readonly:
        # the stamp of a hit sits in another line than its slot (usually the same
        # line as the home slot's stamp): fetch it alongside the seq and the slots
        bk_prefetch_w(STAMPS_OF(s, si) + home)
    for attempt in range(READ_TRIES):
        s1 = bk_load_acq64(&st.seq)
        if s1 & 1:
            bk_pause()
            continue
        if not owns(s, si, h):
            # split since the geometry was read (its seq was odd then, or the split
            # is done and the geometry tells where the key went): read it again
            si = stripe_of(s, h)
            st = STRIPE(s, si)
            slots = SLOTS_OF(s, si)
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
        if copy == COPY_ALL or (copy != COPY_NONE and not (snap.flags & BK_E_SINGLE)):
            if result is None or PyBytes_GET_SIZE(result) != pre + vlen:
                result = PyBytes_FromStringAndSize(NULL, pre + vlen)
            memcpy(PyBytes_AS_STRING(result) + pre, EKEY(s, off) + n, vlen)
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


cdef object probe_copy(Store s, uint32_t si, uint64_t h, uint16_t bidx, const char *k,
                       uint32_t n, int *status, snap_t *snap):
    """One key of a multi-key read (Bucket.mget_consistent): probe stripe si and
    return a copy of the value, validating nothing: the caller sampled si's seq
    before and checks it after. *status: HIT, MISS, SLOW (single-read or expired), or
    -1 when what it read is torn (the caller's seq check fails then too)."""
    cdef uint64_t *slots = SLOTS_OF(s, si)
    cdef uint32_t i = home_of(h), probe, vlen
    cdef uint64_t tag = tag_of(h), w, o, off = 0
    cdef uint64_t lo = s.arena_off, limit = s.size
    cdef bk_entry *e
    for probe in range(SLOTS):
        w = bk_load_rlx64(&slots[i])
        if w == 0:
            break
        if (w & BK_TAG_MASK) == tag:
            o = w & BK_OFF_MASK
            if o >= lo and o + 32 + n <= limit:
                e = ENT(s, o)
                if bk_load_rlx32(&e.klen) == n and bk_load_rlx16(&e.bucket) == bidx \
                        and memcmp(EKEY(s, o), k, n) == 0:
                    off = o
                    break
        i = (i + 1) & SLOT_MASK
    if off == 0:
        status[0] = MISS
        return None
    e = ENT(s, off)
    vlen = bk_load_rlx32(&e.vlen)
    snap.vlen = vlen
    snap.version = bk_load_rlx64(&e.version)
    snap.expire_ms = bk_load_rlx_i64(&e.expire_ms)
    snap.flags = bk_load_acq8(&e.flags)
    if vlen > s.max_value or off + 32 + n + vlen > limit:
        status[0] = -1
        return None
    if (snap.flags & BK_E_SINGLE) or (snap.expire_ms != 0 and snap.expire_ms <= s.now()):
        status[0] = SLOW
        return None
    status[0] = HIT
    return PyBytes_FromStringAndSize(EKEY(s, off) + n, vlen)


# -- prefetches ------------------------------------------------------------------
cdef inline uint64_t racy_entry(Store s, uint64_t *slots, uint32_t i, uint64_t tag,
                                uint32_t probes) noexcept nogil:
    """For a prefetch only: the offset of the first entry from slot i on, within
    `probes` slots, whose tag is `tag`, read without lock or seq (a word may be torn
    or stale: a prefetch never faults, so a wrong offset costs only the fetch); 0 when
    none is seen."""
    cdef uint64_t w, o
    cdef uint32_t probe
    for probe in range(probes):
        w = bk_load_rlx64(&slots[i])
        if w == 0:
            return 0
        if (w & BK_TAG_MASK) == tag:
            o = w & BK_OFF_MASK
            return o if o >= s.arena_off and o < s.size else 0
        i = (i + 1) & SLOT_MASK
    return 0


cdef inline void prefetch_for_write(Store s, uint32_t si, uint64_t h) noexcept nogil:
    """Before a writer takes stripe si's lock for key hash h: start fetching the lock's
    line and the seq's, h's home slot and stamp and, from a racy read of that slot (a
    hint: what it says is found again under the lock), the entry it points at. The
    lock is an atomic instruction that no later load passes, so without this the
    slot's miss follows the lock's and the entry's follows the slot's; with it the
    three overlap in two steps. A prefetch never faults, so a stale offset costs
    nothing but the fetch."""
    cdef uint32_t home = home_of(h)
    cdef uint64_t o
    bk_prefetch_w(STRIPE(s, si))
    bk_prefetch_w(&STRIPE(s, si).seq)           # seq and depth: owns() reads it first
    bk_prefetch_w(STAMPS_OF(s, si) + home)
    o = racy_entry(s, SLOTS_OF(s, si), home, tag_of(h), 1)
    if o:
        bk_prefetch_w(ENT(s, o))


# -- GROWTH: the index grows by linear hashing ------------------------------------
# The stripes are laid out for a full segment, but a new index uses only the first
# 2^level + split of them (index_geom in the header: level << 32 | split; a new
# segment starts at level min(BK_FIRST_LEVEL, log2 nstripes), split 0). A key's
# stripe is the low `level` bits of hx(h), the high half of its hash, or the low
# level + 1 bits when the first choice is below `split` (stripes split already).
# Why: a segment's index is sized for the segment full of small entries, and a
# lookup costs two cache misses where slots lie one key to a line. 100k keys in a
# 256 MiB segment spread over 23 MB of index; kept in 2^level stripes, about 3 MB,
# their lines are shared and stay cached (bench/local.py: get hit 220 -> 130 ns).
#
# A split of stripe p at level L (grow_index, do_split): when an insert leaves any
# stripe BK_SPLIT_AT full, the inserting process, after its own lock is released,
# takes the lock of p = split (the next in line), then of q = 2^L + p (index order,
# and q is in no one's use yet), moves p's keys whose hx has bit L set to q, sets
# both depths to L + 1 and advances the geometry, all inside both seqs' odd window.
# Linear hashing splits stripes in order, not the fullest; a simulation of 1M
# random keys over 3744 stripes (the 256 MiB default) with splits at 320 of 512
# slots found no stripe above 360 while the index grew, far below the 448 cap.
# Once 2^level + split reaches nstripes the index is grown; from then on a full
# stripe evicts or refuses as before.
#
# The simulation holds for keys that arrive in random order, not for keys that arrive
# in hash order: a base file is the old table read stripe by stripe (dump_stripes'
# cursor, bit-reversed hx), so a cold start feeds one young stripe after another
# everything that shares its low bits, and a stripe far from the split pointer reached
# 448 before its turn (from about 200k keys of 100 B, whatever the segment size: the
# lru bucket's load evicted, 495 of 500k keys; an `eviction: none` bucket's refused to
# start). So an insert that finds its stripe at BK_STRIPE_MAX_LOAD while the index may
# still grow does not evict or refuse: do_set raises StripeFull with the lock held,
# the caller unlocks, grow_past splits the stripes in line up to and including that
# one (grow_index, which must be called holding no lock), and the caller tries its
# whole locked step again (with_room in bucket.pxi). Each such round splits at least
# one stripe, so it ends, at the latest when the index is grown.
#
# Fewer stripes while the index is young (core-notes asks for thousands, for low
# writer contention and a small blast radius): 256 stripes against a 2-64 core host
# still leave two writers a 1-in-256 chance of meeting in one stripe per write, a
# stripe lock is held for well under a microsecond, and a repair touches one stripe
# of at most 320 keys; as keys arrive the stripes multiply with them.
#
# Every stripe knows its `depth` (the hash bits that name it; 0 = not in use), so a
# process that read an older geometry finds out: stripe si holds h's key iff the low
# depth bits of hx(h) are si (owns). Readers check that under the seq and follow the
# geometry again; writers check it under the lock (lock_key). The geometry only ever
# refines, so a cursor over hx in bit-reversed order (Redis's SCAN cursor) sees every
# key exactly once however many splits happen meanwhile (read_at_cursor).
#
# Crash safety: the splitter writes intent SPLIT (level, q) in p before its first
# change, and do_split is idempotent: copy p's bit-L words into q unless there,
# unlink them from p, recount both, set depths, advance the geometry if it still
# names (L, p). Until p's depth changes, q is reachable by no one but the splitter,
# so the repairer of p (EOWNERDEAD) may take q's lock and run it again from the top.

ctypedef struct crash_t:         # Store._crash_in_split: where a crash test dies
    int phase                   # 0 started, 1 a word copied, 2 an unlink step, 3 the end
    int k                       # at that phase's k-th point (0 = its first)


cdef inline void crash_point(crash_t *c, int phase) noexcept:
    """Crash tests only: exit (status 70) here, holding the locks, as a SIGKILL would,
    when this is the point the test named. NULL: never."""
    if c != NULL and c.phase == phase:
        if c.k == 0:
            _exit(70)
        c.k -= 1


cdef enum:
    SPLIT_AHEAD = 12            # do_split: words whose entry is fetched ahead


cdef int lock_key(Store s, uint32_t si, uint64_t h) except -1:
    """Lock the stripe holding h's key; si: where stripe_of pointed (the writer
    prefetched there). A split since then moved the key: follow the geometry."""
    while True:
        lock_stripe(s, si)
        if owns(s, si, h):
            return <int>si
        unlock_stripe(s, si)
        si = stripe_of(s, h)


cdef int grow_index(Store s, crash_t *crash=NULL) except -1:
    """Split the next stripe in line, unless the index is grown or another process
    split it first. Called holding no lock. 1 when this call split one."""
    cdef uint64_t geom = bk_load_acq64(&s.hdr.index_geom)
    cdef uint32_t level = <uint32_t>(geom >> 32), p = <uint32_t>geom
    cdef uint64_t q = stripes_in_use(geom)      # p's other half
    s.split_due = 0
    if s.readonly or q >= s.nstripes:
        return 0
    lock_stripe(s, p)
    try:
        if bk_load_acq64(&s.hdr.index_geom) != geom:
            return 0                    # split meanwhile (or repaired: the same)
        lock_stripe(s, <uint32_t>q)
        try:
            do_split(s, p, <uint32_t>q, level, crash)
        finally:
            unlock_stripe(s, <uint32_t>q)
    finally:
        unlock_stripe(s, p)
    return 1


class StripeFull(Exception):
    """Internal: do_set found stripe `si` (at depth `depth`) at BK_STRIPE_MAX_LOAD and
    the index may still grow; the caller unlocks, calls grow_past, and tries again."""

    def __init__(self, si, depth):
        self.si, self.depth = si, depth


cdef inline bint can_grow(Store s) noexcept nogil:
    return not s.readonly and \
        stripes_in_use(bk_load_acq64(&s.hdr.index_geom)) < s.nstripes


cdef int grow_past(Store s, uint32_t si, uint32_t depth) except -1:
    """Grow the index (holding no lock) until stripe si, found full at `depth`, has
    been split, or the index is grown (GROWTH). Splits go in line, so this splits every
    stripe before si in the current round too."""
    while bk_load_acq32(&STRIPE(s, si).depth) == depth and can_grow(s):
        grow_index(s)
    return 0


cdef void recount_stripe(Store s, uint32_t si) noexcept:
    """count, nttl and the expiry bound of stripe si from its slots (lock held)."""
    cdef bk_stripe *st = STRIPE(s, si)
    cdef uint64_t *slots = SLOTS_OF(s, si)
    cdef uint32_t i, count = 0, nttl = 0
    cdef int64_t exp, earliest = BK_NO_EXPIRY
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


cdef int do_split(Store s, uint32_t p, uint32_t q, uint32_t level,
                  crash_t *crash=NULL) except -1:
    """Split stripe p at `level` into p and q (both locks held). Idempotent: the
    repair of p runs it again from the top (GROWTH). `crash`: a crash test's point."""
    cdef bk_stripe *sp = STRIPE(s, p)
    cdef bk_stripe *sq = STRIPE(s, q)
    cdef uint64_t *ps = SLOTS_OF(s, p)
    cdef uint64_t *qs = SLOTS_OF(s, q)
    cdef uint32_t *pst = STAMPS_OF(s, p)
    cdef uint32_t *qst = STAMPS_OF(s, q)
    cdef uint64_t w
    cdef uint64_t hs[SLOTS]                     # the hash of each word of p
    cdef uint32_t i, j
    cdef bint moved = True
    sp.intent_ring = 0
    sp.intent_slot = SLOTS                      # no slot: repair's slot logic stays out
    sp.intent_hole = SLOTS                      # no backward shift under way
    sp.intent_old = level
    sp.intent_new = q
    sp.intent_op = BK_OP_SPLIT
    if not (sp.seq & 1):
        bk_seq_enter(&sp.seq)
    if not (sq.seq & 1):
        bk_seq_enter(&sq.seq)
    crash_point(crash, 0)
    # 1. copy into q, unless there. Each word's entry is read once for its hash (kept
    # in hs for step 2), its line fetched SPLIT_AHEAD words early so that the misses
    # overlap: a split costs about one memory latency, not one a word
    for i in range(SLOTS):
        if i + SPLIT_AHEAD < SLOTS and ps[i + SPLIT_AHEAD] != 0:
            bk_prefetch_r(ENT(s, ps[i + SPLIT_AHEAD] & BK_OFF_MASK))
        w = ps[i]
        if w == 0:
            continue
        hs[i] = entry_hash(s, w & BK_OFF_MASK)
        if not (hx(hs[i]) >> level) & 1:
            continue
        j = home_of(hs[i])
        while qs[j] != 0 and qs[j] != w:
            j = (j + 1) & SLOT_MASK
        if qs[j] == 0:
            qst[j] = pst[i]                     # the stamp moves with its key
            bk_store_rlx64(&qs[j], w)
            crash_point(crash, 1)
    while moved:                                # 2. unlink from p, until none is left
        moved = False
        i = 0
        while i < SLOTS:
            w = ps[i]
            if w != 0 and (hx(hs[i]) >> level) & 1:
                # a shift cut short leaves a word twice: intent_hole lets the
                # repair finish it first (as for a DEL)
                sp.intent_hole = i
                crash_point(crash, 2)
                do_shift(s, p, i, crash, hs)    # refills slot i: look at it again
                sp.intent_hole = SLOTS
                moved = True
            else:
                i += 1
    recount_stripe(s, p)                        # 3. counts, depths, geometry
    recount_stripe(s, q)
    crash_point(crash, 3)
    bk_store_rel32(&sq.depth, level + 1)
    crash_point(crash, 3)
    bk_store_rel32(&sp.depth, level + 1)
    crash_point(crash, 3)
    finish_split(s, p, level)
    crash_point(crash, 3)
    bk_seq_leave(&sq.seq)
    bk_seq_leave(&sp.seq)
    if BUKT_DEBUG:
        debug_check_stripe(s, p)
        debug_check_stripe(s, q)
    return 0


cdef void finish_split(Store s, uint32_t p, uint32_t level) noexcept:
    """Stripe p is split at `level`: advance the geometry past it, if it still names
    p (a repair after the splitter advanced it finds it moved on), and clear the
    intent."""
    cdef uint64_t geom = (<uint64_t>level << 32) | p
    if bk_load_acq64(&s.hdr.index_geom) == geom:
        if <uint64_t>p + 1 == (1ULL << level):
            bk_store_rel64(&s.hdr.index_geom, <uint64_t>(level + 1) << 32)
        else:
            bk_store_rel64(&s.hdr.index_geom, geom + 1)
    STRIPE(s, p).intent_op = BK_OP_NONE


# -- a cursor over the stripes that splits cannot fool (GROWTH) ---------------------
ctypedef list (*collect_fn)(Store s, uint32_t si, object arg)


cdef inline uint32_t rev32(uint32_t v) noexcept nogil:
    v = ((v >> 1) & 0x55555555u) | ((v & 0x55555555u) << 1)
    v = ((v >> 2) & 0x33333333u) | ((v & 0x33333333u) << 2)
    v = ((v >> 4) & 0x0F0F0F0Fu) | ((v & 0x0F0F0F0Fu) << 4)
    v = ((v >> 8) & 0x00FF00FFu) | ((v & 0x00FF00FFu) << 8)
    return (v >> 16) | (v << 16)


cdef list read_at_cursor(Store s, uint64_t cursor, collect_fn collect, object arg,
                         uint64_t *next_out):
    """What `collect` gathers from the stripe under `cursor`, a position in hx's
    bit-reversed order (0: the start), read under the stripe's seq; after
    READ_TRIES under its lock (a read-only mapping waits instead). *next_out: the
    cursor past the stripe, 0 after the last. A stripe of depth d covers an
    interval of 2^(32-d) cursors; splits only halve intervals, so a cursor that was
    a boundary stays one, and every key is under exactly one interval's pass."""
    cdef uint32_t x = rev32(<uint32_t>cursor), si, depth = 0
    cdef uint64_t s1, step, nxt
    cdef int attempt = 0
    cdef double since = 0
    cdef list out = None
    while out is None:
        si = stripe_of(s, <uint64_t>x << 32)
        if attempt >= READ_TRIES and not s.readonly:
            lock_stripe(s, si)                          # slow path
            try:
                depth = STRIPE(s, si).depth
                if low_bits(x, depth) == si:
                    out = collect(s, si, arg)
            finally:
                unlock_stripe(s, si)
            continue
        if attempt >= READ_TRIES:
            since = readonly_wait(s, since)
        attempt += 1
        s1 = bk_load_acq64(&STRIPE(s, si).seq)
        if s1 & 1:
            bk_pause()
            continue
        depth = bk_load_rlx32(&STRIPE(s, si).depth)
        if low_bits(x, depth) != si:
            continue
        out = collect(s, si, arg)
        bk_fence_acq()
        if bk_load_rlx64(&STRIPE(s, si).seq) != s1:
            out = None
    step = 1ULL << (32 - depth)
    nxt = (cursor & ~(step - 1)) + step
    next_out[0] = 0 if nxt >= (1ULL << 32) else nxt
    return out


# -- locked helpers --------------------------------------------------------------
cdef inline bint seq_enter_own(bk_stripe *st) noexcept nogil:
    """Enter the stripe's write section (seq odd) unless the lock holder is inside it
    already: a transaction (bucket.pxi, TRANSACTIONS) holds every stripe it involves
    odd from before its first change to after its last, and the do_* it calls inside
    must neither close that window early nor reopen it. The seq is odd under a lock
    only while its holder keeps it so (a dead holder's odd seq is repaired even when
    the lock is taken). True when this call entered: the caller leaves it."""
    if st.seq & 1:
        return False
    bk_seq_enter(&st.seq)
    return True


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


cdef void do_shift(Store s, uint32_t si, uint32_t hole, crash_t *crash=NULL,
                   uint64_t *hs=NULL) noexcept:
    """Backward-shift deletion from `hole` (whose slot is being unlinked). Each step
    copies a later slot into the hole before the hole moves on, so every
    intermediate state is a valid table with at most one duplicate; intent_hole
    follows the hole so that a repair can finish the shift (idempotent). `hs`: the
    slots' hashes when the caller has them (do_split), moved along with the words;
    otherwise each word's entry is read for its home."""
    cdef bk_stripe *st = STRIPE(s, si)
    cdef uint64_t *slots = SLOTS_OF(s, si)
    cdef uint32_t *stamps = STAMPS_OF(s, si)
    cdef uint32_t j = (hole + 1) & SLOT_MASK, home
    cdef uint64_t w
    while True:
        w = slots[j]
        if w == 0:
            break
        home = home_of(hs[j] if hs != NULL else entry_hash(s, w & BK_OFF_MASK))
        # w may fill the hole unless its home lies cyclically in (hole, j]
        if ((j - home) & SLOT_MASK) >= ((j - hole) & SLOT_MASK):
            stamps[hole] = stamps[j]            # the stamp moves with its key
            if hs != NULL:
                hs[hole] = hs[j]
            bk_store_rlx64(&slots[hole], w)
            crash_point(crash, 2)               # a crash test: dies with w twice
            hole = j
            st.intent_hole = j
        j = (j + 1) & SLOT_MASK
    bk_store_rlx64(&slots[hole], 0)


cdef inline uint64_t le_bytes(const unsigned char *p, int n) noexcept nogil:
    cdef uint64_t x = 0
    cdef int i
    for i in range(n - 1, -1, -1):
        x = (x << 8) | p[i]
    return x


cdef int64_t frame_saving(uint8_t flags, const char *value, uint32_t vlen) noexcept nogil:
    """Bytes a compressed value saves: the raw size its frame header states less the
    stored size; 0 for a value not flagged ZSTD or LZ4, or a header that states none
    (bukt/codec.py writes both frames with their content size). The buckets'
    comp_saved gauge moves by it wherever `bytes` moves (do_set, do_delete_at,
    recount), so it is the saving of the values stored now."""
    cdef const unsigned char *v = <const unsigned char *>value
    cdef uint32_t p
    cdef int n
    cdef uint8_t fhd
    cdef uint64_t raw
    if flags & BK_E_ZSTD:
        # RFC 8878: magic 28 B5 2F FD, frame header descriptor, [window], [dict id], FCS
        if vlen < 6 or v[0] != 0x28 or v[1] != 0xB5 or v[2] != 0x2F or v[3] != 0xFD:
            return 0
        fhd = v[4]
        p = 5 if fhd & 0x20 else 6              # single segment: no window byte
        if fhd & 3:
            p += 4 if (fhd & 3) == 3 else (fhd & 3)     # dictionary id: 1, 2 or 4
        if fhd >> 6 == 0:
            n = 1 if fhd & 0x20 else 0
        else:
            n = 1 << (fhd >> 6)                 # 2, 4 or 8
        if n == 0 or p + n > vlen:
            return 0
        raw = le_bytes(v + p, n) + (256 if n == 2 else 0)
    elif flags & BK_E_LZ4:
        # lz4 frame: magic 04 22 4D 18, FLG (bit 3: content size present), BD, size
        if vlen < 14 or v[0] != 0x04 or v[1] != 0x22 or v[2] != 0x4D or v[3] != 0x18 \
                or not v[4] & 0x08:
            return 0
        raw = le_bytes(v + 6, 8)
    else:
        return 0
    return <int64_t>(raw - vlen) if raw > vlen else 0


cdef inline int64_t entry_saving(Store s, uint64_t off) noexcept nogil:
    cdef bk_entry *e = ENT(s, off)
    if not e.flags & (BK_E_ZSTD | BK_E_LZ4):
        return 0
    return frame_saving(e.flags, EKEY(s, off) + e.klen, e.vlen)


cdef int do_delete_at(Store s, uint32_t si, int slot, uint64_t off, uint8_t rtype) except -1:
    """Unlink and free the entry at `slot` (offset `off`), logging a record of type
    `rtype` when its bucket is persisted. 0 when the ring has no room (no change)."""
    cdef bk_stripe *st = STRIPE(s, si)
    cdef bk_entry *e = ENT(s, off)
    cdef uint16_t bidx = e.bucket
    cdef bk_bucket *b = &s.bucketv[bidx]
    cdef uint32_t klen = e.klen, vlen = e.vlen
    cdef bint had_ttl = e.expire_ms != 0, feed = 0
    cdef uint64_t pos = 0
    cdef bint own
    st.intent_ring = 0
    st.intent_op = BK_OP_NONE
    if logs(s, b):
        pos = ring_reserve_wait(s, rec_size(klen, 0), si, &st.intent_ring)
        if pos == 0:
            return 0
        ring_fill(s, pos, rtype, bidx, b.gen, EKEY(s, off), klen, NULL, 0, 0, e.version,
                  e.flags & BK_E_OBJECT)
    elif feeds(s, b):
        pos = feed_reserve(s, rec_size(klen, 0), si, &st.intent_ring)
        if pos:
            ring_fill(s, pos, rtype, bidx, b.gen, EKEY(s, off), klen, NULL, 0, 0,
                      e.version, e.flags & BK_E_OBJECT, BK_RF_FEED)
            feed = 1
    st.intent_slot = slot
    st.intent_old = off
    st.intent_new = 0
    st.intent_hole = slot
    st.intent_op = BK_OP_DEL
    own = seq_enter_own(st)
    do_shift(s, si, slot)
    if pos:
        ring_commit(s, pos)
        if not feed:
            s.last_pos = pos + rec_size(klen, 0)
    st.count -= 1
    st.nttl -= had_ttl
    if not (e.flags & BK_E_HIDDEN):
        bk_add64(&b.keys, -1)               # keys counts the user's: an object is one
    bk_add64(&b.bytes, -<int64_t>(klen + vlen))
    bk_add64(&b.mem, -<int64_t>s.classes[e.cls].chunk_size)
    if e.flags & (BK_E_ZSTD | BK_E_LZ4):
        bk_add64(&b.comp_saved, -entry_saving(s, off))
    if e.flags & (BK_E_MANIFEST | BK_E_HIDDEN):
        bk_fetch_add_u64(&s.hdr.objects_retired, 1)
    chunk_free(s, off)
    st.intent_op = BK_OP_NONE
    st.intent_ring = 0
    if own:
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


cdef int within_max_memory(Store s, uint32_t si, uint64_t h, uint16_t bidx, const char *k,
                           uint32_t n, int c, int found, uint64_t *old_off) except? -2:
    """Bucket bidx has a max_memory: make room under it for a chunk of class c that
    replaces *old_off (0: a new key), by evicting the bucket's own oldest entries
    (lru), or refuse (SegmentFull: none, or a chunk above the limit by itself).
    Another bucket's entries are never evicted for it. Returns the key's slot as
    do_find does (an eviction in this stripe may move it, or take the key itself).
    Checked and then acted on by each writer under its stripe lock: concurrent
    writers of one bucket may pass it together, by one chunk each."""
    cdef bk_bucket *b = &s.bucketv[bidx]
    cdef int64_t need = s.classes[c].chunk_size, grow, limit = b.max_memory
    cdef int tries = 0, r
    if need > limit:
        raise _err.SegmentFull(
            f"bucket {b.name.decode()!r}: an entry of {32 + n} bytes of key and header "
            f"and its value takes a {need}-byte chunk, above the bucket's max_memory "
            f"of {limit} bytes")
    while True:
        grow = need - (<int64_t>s.classes[ENT(s, old_off[0]).cls].chunk_size if old_off[0] else 0)
        if grow <= 0 or bk_load_rlx_i64(&b.mem) + grow <= limit:
            return found
        if b.eviction != 0:
            raise _err.SegmentFull(
                f"bucket {b.name.decode()!r} is at its max_memory: its entries take "
                f"{b.mem} of {limit} bytes of chunks and it has eviction 'none'")
        r = evict_own(s, bidx, c, si)
        if r == 0:                              # its victims' stripes are busy: an
            tries += 1                          # eviction is progress, not a try
            if tries > 16:
                with nogil:
                    usleep(100 * (tries - 16))
        if tries > 64 or r == NO_ROOM:
            raise _err.SegmentFull(
                f"bucket {b.name.decode()!r} is at its max_memory ({b.mem} of {limit} "
                "bytes of chunks) and none of its entries could be evicted")
        found = do_find(s, si, h, bidx, k, n, old_off)
        if found < 0:
            old_off[0] = 0


cdef uint64_t do_set(Store s, uint32_t si, uint64_t h, uint16_t bidx, const char *k,
                     uint32_t n, const char *v, uint32_t vlen, int64_t expire_ms,
                     uint8_t eflags, int found, uint64_t old_off, uint64_t version=0) except 0:
    """Publish a new entry for the key (replacing `old_off` at slot `found` when
    found >= 0). Returns the new version."""
    cdef bk_stripe *st = STRIPE(s, si)
    cdef bk_bucket *b = &s.bucketv[bidx]
    cdef uint64_t *slots = SLOTS_OF(s, si)
    cdef uint32_t slot, need = 0, carry, vlen_fed
    cdef bint feed = 0
    cdef int c = class_for(s, 32 + n + vlen), tries = 0
    cdef uint64_t off, pos = 0, ver
    cdef int64_t dbytes, dmem, dsaved
    cdef bk_entry *e
    cdef bint own
    if c < 0:
        raise _err.ValueTooLarge(f"entry of {32 + n + vlen} bytes exceeds the largest "
                                 f"chunk ({s.classes[s.nclasses - 1].chunk_size} bytes)")
    if b.max_memory:
        found = within_max_memory(s, si, h, bidx, k, n, c, found, &old_off)
    if found < 0 and st.count >= BK_STRIPE_MAX_LOAD:
        # slow path: this stripe's index is full. Split it first while the index may
        # grow (GROWTH): the caller unlocks, grows and tries again
        if can_grow(s):
            raise StripeFull(si, st.depth)
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
        tries += 1
        if tries > 16:
            wait_inside(100 * (tries - 16))         # victims' stripes are busy: let
                                                    # their holders finish
        if b.eviction != 0:
            # a slab emptied without an eviction (freed by deletes, or compacted into
            # its class's free chunks), or SegmentFull: the memory is in use
            if tries > 64 or reclaim_pages(s, c, si) == NO_ROOM:
                st.intent_op = BK_OP_NONE
                raise _err.SegmentFull(
                    f"segment full: no free {s.classes[c].chunk_size}-byte chunk and all "
                    f"{s.npages} pages hold entries; bucket {b.name.decode()!r} has "
                    "eviction 'none'")
        elif tries > 64 or make_room(s, c, si) == NO_ROOM:
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
            raise ring_full(s, f"change ring full ({s.ring_size} bytes): the writer "
                            "process is down or behind; the write was not applied", need)
        ring_fill(s, pos, BK_T_SET, bidx, b.gen, k, n, v, vlen, expire_ms, ver, eflags)
    else:
        carry = feeds(s, b)
        if carry:
            if vlen >= carry:
                vlen_fed = 0                    # the feed does not keep it: key only
            else:
                vlen_fed = vlen
            need = rec_size(n, vlen_fed)
            pos = feed_reserve(s, need, si, &st.intent_ring)
            if pos:
                ring_fill(s, pos, BK_T_SET, bidx, b.gen, k, n, v, vlen_fed, expire_ms,
                          ver, eflags, BK_RF_FEED | (BK_RF_NOVALUE if vlen_fed < vlen else 0))
                feed = 1
    slot = <uint32_t>(found if found >= 0 else -1 - found)
    st.intent_slot = slot
    st.intent_old = old_off
    st.intent_op = BK_OP_SET
    lower_min_expire(st, expire_ms)             # before the slot store publishes it
    tick_lru(s, s.now_coarse())                 # outside the seq window readers retry on
    own = seq_enter_own(st)
    STAMPS_OF(s, si)[slot] = s.hdr.lru_clock
    bk_store_rlx64(&slots[slot], tag_of(h) | off)
    if pos:
        ring_commit(s, pos)
        if not feed:
            s.last_pos = pos + need
    dbytes = n + vlen
    dmem = s.classes[c].chunk_size
    dsaved = frame_saving(eflags, v, vlen) if eflags & (BK_E_ZSTD | BK_E_LZ4) else 0
    st.nttl += expire_ms != 0
    if old_off:
        dsaved -= entry_saving(s, old_off)
        dbytes -= ENT(s, old_off).klen + ENT(s, old_off).vlen
        dmem -= s.classes[ENT(s, old_off).cls].chunk_size
        st.nttl -= ENT(s, old_off).expire_ms != 0   # before the free reuses the word
        if ENT(s, old_off).flags & (BK_E_MANIFEST | BK_E_HIDDEN):
            bk_fetch_add_u64(&s.hdr.objects_retired, 1)
        chunk_free(s, old_off)
    else:
        st.count += 1
        if not (eflags & BK_E_HIDDEN):
            bk_add64(&b.keys, 1)            # keys counts the user's: an object is one
        if st.count >= BK_SPLIT_AT:
            s.split_due = 1                     # after the unlock: grow_index (GROWTH)
    bk_add64(&b.bytes, dbytes)
    bk_add64(&b.mem, dmem)
    if dsaved:
        bk_add64(&b.comp_saved, dsaved)
    st.intent_op = BK_OP_NONE
    st.intent_ring = 0
    if own:
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
    cdef bint own
    cdef bint feed = 0
    st.intent_ring = 0
    st.intent_op = BK_OP_NONE
    if logs(s, b):
        pos = ring_reserve_wait(s, rec_size(e.klen, 0), si, &st.intent_ring)
        if pos == 0:
            raise ring_full(s, f"change ring full ({s.ring_size} bytes): the writer "
                            "process is down or behind; the change was not applied",
                            rec_size(e.klen, 0))
        ring_fill(s, pos, BK_T_TOUCH, e.bucket, b.gen, EKEY(s, off), e.klen, NULL, 0,
                  expire_ms, ver, e.flags & BK_E_CARRY)
    elif feeds(s, b):
        pos = feed_reserve(s, rec_size(e.klen, 0), si, &st.intent_ring)
        if pos:
            ring_fill(s, pos, BK_T_TOUCH, e.bucket, b.gen, EKEY(s, off), e.klen, NULL, 0,
                      expire_ms, ver, e.flags & BK_E_CARRY, BK_RF_FEED)
            feed = 1
    st.intent_slot = slot
    st.intent_old = off
    st.intent_op = BK_OP_TOUCH
    lower_min_expire(st, expire_ms)             # before the entry's word takes it
    own = seq_enter_own(st)
    st.nttl += (expire_ms != 0) - (e.expire_ms != 0)
    e.expire_ms = expire_ms
    e.version = ver
    if pos:
        ring_commit(s, pos)
        if not feed:
            s.last_pos = pos + rec_size(e.klen, 0)
    st.intent_op = BK_OP_NONE
    st.intent_ring = 0
    if own:
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
        if not owns(s, si, h) or tag_of(h) != (w & BK_TAG_MASK):
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
        if not owns(s, si, entry_hash(s, off)):
            return 0
    for i in range(SLOTS):
        if (slots[i] & BK_OFF_MASK) == off and slots[i] != 0:
            return 0
    if e.flags & (BK_E_MANIFEST | BK_E_HIDDEN):
        bk_fetch_add_u64(&s.hdr.objects_retired, 1)     # (an extra sweep is harmless)
    chunk_free(s, off)
    return 1


cdef int repair_stripe(Store s, uint32_t si) except -1:
    """The stripe's lock holder died (EOWNERDEAD): finish or undo its one operation
    as the intent record describes, so the stripe is as if it completed or never
    started. Idempotent: a repairer that dies too leaves the same work to the next."""
    cdef bk_stripe *st = STRIPE(s, si)
    cdef uint64_t *slots = SLOTS_OF(s, si)
    cdef uint32_t op = st.intent_op
    cdef bk_rec *r = ring_pending(s, st.intent_ring, si)
    cdef uint64_t cur = 0
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
    elif op == BK_OP_SPLIT:
        if st.depth != <uint32_t>st.intent_old + 1:
            # not all moved: q is in no one's use but the dead splitter's (GROWTH).
            # First the unlink it was inside, if any (its word is in q already)
            if st.intent_hole < SLOTS:
                do_shift(s, si, st.intent_hole)
            lock_stripe(s, <uint32_t>st.intent_new)
            try:
                do_split(s, si, <uint32_t>st.intent_new, <uint32_t>st.intent_old)
            finally:
                unlock_stripe(s, <uint32_t>st.intent_new)
        else:
            finish_split(s, si, <uint32_t>st.intent_old)
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
    recount_stripe(s, si)
    st.intent_op = BK_OP_NONE
    st.intent_ring = 0
    st.intent_new = 0
    st.intent_old = 0
    if st.seq & 1:
        bk_seq_leave(&st.seq)
    _note_repair(s)
    if BUKT_DEBUG and (st.depth != 0 or si == 0):
        # (not a split's new stripe while the split is cut short: the repair of the
        # old one, which locked it, finishes the split and then checks both)
        debug_check_stripe(s, si)
    return 0


# -- THE REPAIR PASS ----------------------------------------------------------------
# A stripe whose lock holder died inside its write section keeps an odd seq until a
# process that may write takes its lock (EOWNERDEAD: repair_stripe). A read-write
# process does so on its next access to the stripe; a read-only one cannot (the lock
# lives in the segment, mapped read-only), so it waits for someone else to. The writer
# process is that someone: every repair.interval it looks at the seq word of each
# stripe in use, and at the lock word of a stripe whose seq is odd, and takes the lock
# of a stripe left mid-write, which repairs it. The look reads one word a stripe (two
# where a write is in flight) and is cut in slices by the writer like the expiry
# cycle, so it never holds up the drain. A lock whose holder died with the seq even
# (between two writes, or in check()) blocks no reader and is repaired by the next
# writer of the stripe, so the pass leaves it to that writer.

cdef inline bint awaits_repair(Store s, uint32_t si) noexcept nogil:
    """Stripe si was left mid-write: its seq is odd and its lock's holder is gone."""
    cdef bk_stripe *st = STRIPE(s, si)
    return (bk_load_acq64(&st.seq) & 1) != 0 and bk_lock_owner_dead(&st.lock)


cdef inline uint32_t stripes_scanned(Store s) noexcept nogil:
    """The stripes a repair pass or count looks at: those in use (GROWTH). A split's
    new stripe is not in use until the split ends; the repair of the old one, which
    the pass takes, finishes the split and repairs the new one with it."""
    cdef uint64_t used = stripes_in_use(bk_load_acq64(&s.hdr.index_geom))
    return <uint32_t>(used if used < s.nstripes else s.nstripes)


cdef uint32_t count_awaiting_repair(Store s) noexcept:
    """Stripes left mid-write by a dead process, not yet repaired (any mapping)."""
    cdef uint32_t si, n = 0, used = stripes_scanned(s)
    for si in range(used):
        if awaits_repair(s, si):
            n += 1
    return n


cdef tuple repair_pass(Store s, uint32_t start, double budget):
    """From stripe `start`, repair each stripe left mid-write (its lock taken with
    trylock: a live holder is left alone) until the stripes in use are done or
    `budget` seconds are spent. Returns (stripes repaired, the stripe the next slice
    starts at, 0 when the pass is complete)."""
    cdef uint64_t deadline = bk_mono_ns() + <uint64_t>(budget * 1e9)
    cdef uint32_t si = start, used = stripes_scanned(s), repaired = 0
    s._writable()
    while si < used:
        if awaits_repair(s, si) and trylock_stripe(s, si):
            repaired += 1
            unlock_stripe(s, si)
        si += 1
        if (si & 63) == 0 and <uint64_t>bk_mono_ns() > deadline:
            break
    if repaired:
        maybe_recount(s)
    return repaired, (si if si < used else 0)
