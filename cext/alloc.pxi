# alloc.pxi: size classes, pages, chunks, and eviction when a class runs dry.
#
# A page goes to a class once (alloc lock) and is carved into equal chunks that are
# linked into the class's free list (class lock). A free chunk has flags == 0 and its
# `version` word holds the next free chunk. A chunk leaves the free list with
# flags = USED|PENDING and version = the allocating stripe, and its offset is in that
# stripe's intent record before the class lock is released: whoever repairs the
# stripe can find and free it if the allocator died before publishing it.

cdef inline bk_entry *ENT(Store s, uint64_t off) noexcept nogil:
    return <bk_entry *>(s.base + off)


cdef inline char *EKEY(Store s, uint64_t off) noexcept nogil:
    return s.base + off + 32


cdef inline uint64_t CHUNK(Store s, uint64_t p, bk_class *cl, uint64_t i) noexcept nogil:
    """The offset of chunk i of the slab whose first page is p."""
    return s.arena_off + p * s.page_size + i * cl.chunk_size


cdef inline bint key_readable(Store s, uint64_t off, uint32_t klen, uint16_t bidx) noexcept nogil:
    """May a key of klen bytes of bucket bidx be hashed at `off`, an offset read
    without a lock (possibly stale: its page may have changed class)?"""
    return 0 < klen <= s.max_key and bidx < s.max_buckets and off + 32 + klen <= s.size


cdef int class_for(Store s, uint64_t need) noexcept:
    """The smallest class whose chunks hold `need` bytes, or -1."""
    cdef int lo = 0, hi = <int>s.nclasses - 1, mid
    if need > s.classes[hi].chunk_size:
        return -1
    while lo < hi:
        mid = (lo + hi) // 2
        if s.classes[mid].chunk_size >= need:
            hi = mid
        else:
            lo = mid + 1
    return lo


# -- pages ------------------------------------------------------------------------
# pagemap byte of a page: 0 unassigned, c + 1 the first page of a slab of class c,
# 0x80 | (c + 1) a further page of that slab. A run of 0x80 | (c + 1) bytes with no
# first page is an orphan: pages claimed for, or being given back by, class c by a
# process that died; rebuild_class(c) reclaims them (only class c's lock holder
# claims or gives back pages of c, so while that lock is held, orphans are dead).

cdef int lock_alloc(Store s) except -1:
    """The alloc lock. Its holder stores the word that publishes its work last
    (pages_used), except free_pages, which a repair recounts from the pagemap."""
    cdef int rc = _acquire(&s.hdr.alloc_lock)
    cdef uint64_t p, pu, n = 0
    if rc == 0:
        return 0
    if rc == EOWNERDEAD:
        pu = s.hdr.pages_used
        for p in range(pu):
            if s.pagemap[p] == 0:
                n += 1
        s.hdr.free_pages = n
        bk_lock_consistent(&s.hdr.alloc_lock)
        _note_repair(s)
        return 0
    return _lock_error("alloc", rc)


cdef int64_t slab_head(Store s, uint64_t p) noexcept:
    """The first page of the slab that page p belongs to, or -1 (unassigned, orphan)."""
    cdef uint8_t b = s.pagemap[p]
    if b == 0:
        return -1
    if not (b & 0x80):
        return <int64_t>p if b <= s.nclasses else -1
    while p > 0 and s.pagemap[p - 1] == b:
        p -= 1
    if p == 0 or s.pagemap[p - 1] != (b & 0x7f):
        return -1
    return <int64_t>(p - 1)


cdef bint chunk_start(Store s, uint64_t off) noexcept:
    """Is `off` where a chunk starts in its page's current carving? (A stale offset
    from before a slab move may point into the middle of a new chunk.)"""
    cdef uint64_t p, rel
    cdef int64_t hp
    cdef bk_class *cl
    if off < s.arena_off or off >= s.arena_off + s.npages * s.page_size:
        return False
    p = (off - s.arena_off) // s.page_size
    hp = slab_head(s, p)
    if hp < 0:
        return False
    cl = &s.classes[s.pagemap[hp] - 1]
    rel = off - (s.arena_off + <uint64_t>hp * s.page_size)
    return rel % cl.chunk_size == 0 and rel // cl.chunk_size < cl.per_slab


cdef int64_t free_run(Store s, uint64_t n) noexcept:
    """The first of n consecutive unassigned pages below pages_used, or -1 (alloc
    lock held). A linear scan of the pagemap: npages is small (64 KiB pages) and
    this runs only when a slab is carved from given-back pages."""
    cdef uint64_t p, run = 0, pu = s.hdr.pages_used
    for p in range(pu):
        if s.pagemap[p] == 0:
            run += 1
            if run == n:
                return <int64_t>(p + 1 - n)
        else:
            run = 0
    return -1


# -- the free list of a class: doubly linked through the free chunks (class lock) ---
cdef inline void fl_push(Store s, bk_class *cl, uint64_t off) noexcept:
    cdef bk_entry *e = ENT(s, off)
    e.version = cl.free_head
    e.expire_ms = 0
    if cl.free_head:
        ENT(s, cl.free_head).expire_ms = <int64_t>off
    else:
        cl.free_tail = off
    cl.free_head = off


cdef inline void fl_push_tail(Store s, bk_class *cl, uint64_t off) noexcept:
    cdef bk_entry *e = ENT(s, off)
    e.version = 0
    e.expire_ms = <int64_t>cl.free_tail
    if cl.free_tail:
        ENT(s, cl.free_tail).version = off
    else:
        cl.free_head = off
    cl.free_tail = off


cdef inline void fl_unlink(Store s, bk_class *cl, uint64_t off) noexcept:
    cdef bk_entry *e = ENT(s, off)
    cdef uint64_t nxt = e.version, prv = <uint64_t>e.expire_ms
    if prv:
        ENT(s, prv).version = nxt
    else:
        cl.free_head = nxt
    if nxt:
        ENT(s, nxt).expire_ms = <int64_t>prv
    else:
        cl.free_tail = prv


cdef int carve_slab(Store s, uint32_t c) except -1:
    """Give class c a new slab of slab_pages pages (class lock held) and link its
    chunks into the free list: given-back pages first, then never-used ones. 0 when
    no page is left."""
    cdef bk_header *h = s.hdr
    cdef bk_class *cl = &s.classes[c]
    cdef uint64_t p, i, off, n = cl.slab_pages
    cdef int64_t run = -1
    lock_alloc(s)
    if h.free_pages >= n:
        run = free_run(s, n)
    if run >= 0:
        # claimed as an orphan run of c until its chunks are carved: a death in
        # between leaves pages that rebuild_class(c) gives back
        p = <uint64_t>run
        for i in range(n):
            s.pagemap[p + i] = <uint8_t>(0x80 | (c + 1))
        h.free_pages -= n
    else:
        p = h.pages_used
        if p + n > s.npages:
            bk_lock_release(&h.alloc_lock)
            return 0
        s.pagemap[p] = <uint8_t>(c + 1)
        for i in range(1, n):
            s.pagemap[p + i] = <uint8_t>(0x80 | (c + 1))
        bk_store_rel64(&h.pages_used, p + n)             # last: publishes the slab
    bk_lock_release(&h.alloc_lock)
    for i in range(cl.per_slab - 1, -1, -1):
        off = CHUNK(s, p, cl, i)
        ENT(s, off).flags = 0
        ENT(s, off).cls = <uint8_t>c
        fl_push(s, cl, off)
    if run >= 0:
        bk_store_rel8(&s.pagemap[p], <uint8_t>(c + 1))  # now a slab of c
    cl.slabs += 1
    return 1


cdef inline void take_chunk(Store s, bk_class *cl, uint32_t c, uint32_t si,
                            uint64_t off) noexcept:
    """Take free chunk `off` of class c off the free list for stripe si (class lock
    held): into si's intent_new first, then pending, owned by si."""
    cdef bk_entry *e = ENT(s, off)
    STRIPE(s, si).intent_new = off
    fl_unlink(s, cl, off)
    e.version = si                              # owner while pending
    e.cls = <uint8_t>c
    bk_store_rel8(&e.flags, BK_E_USED | BK_E_PENDING)
    cl.used += 1


cdef uint64_t chunk_alloc(Store s, uint32_t c, uint32_t si) except? 1:
    """A chunk of class c for stripe si (whose lock is held), recorded in the
    stripe's intent_new before it leaves the free list; 0 when the class is dry."""
    cdef bk_class *cl = &s.classes[c]
    cdef uint64_t off
    cdef bk_entry *e
    lock_class(s, c)
    off = cl.free_head
    if off == 0:
        carve_slab(s, c)
        off = cl.free_head
    if off != 0:
        e = ENT(s, off)
        if BUKT_DEBUG:
            if e.flags != 0 or e.cls != c:
                unlock_class(s, c)
                raise AssertionError(f"free list of class {c} holds a used chunk at {off}")
        take_chunk(s, cl, c, si, off)
    unlock_class(s, c)
    return off


cdef int chunk_free(Store s, uint64_t off) except -1:
    cdef bk_entry *e = ENT(s, off)
    cdef uint32_t c = e.cls
    cdef bk_class *cl = &s.classes[c]
    lock_class(s, c)
    if BUKT_DEBUG:
        if not (e.flags & BK_E_USED):
            unlock_class(s, c)
            raise AssertionError(f"double free of chunk {off}")
    bk_store_rel8(&e.flags, 0)                  # first: a rebuild sees it free
    if cl.drain_page and (off - s.arena_off) // s.page_size + 1 == cl.drain_page:
        fl_push_tail(s, cl, off)                # the mover is emptying its slab
    else:
        fl_push(s, cl, off)
    cl.used -= 1
    unlock_class(s, c)
    return 0


cdef int rebuild_class(Store s, uint32_t c) except -1:
    """A class lock holder died: give back the orphan pages of c it left (see pages
    above), then rebuild the free list and counts from the chunk flags. Pending
    chunks stay out; their stripes' repair frees them."""
    cdef bk_class *cl = &s.classes[c]
    cdef uint64_t p, i, off, used = 0, slabs = 0, pu
    cdef uint8_t cont = <uint8_t>(0x80 | (c + 1))
    cdef bk_entry *e
    lock_alloc(s)
    pu = s.hdr.pages_used
    p = 0
    while p < pu:
        if s.pagemap[p] == c + 1:
            p += 1
            while p < pu and s.pagemap[p] == cont:
                p += 1
        elif s.pagemap[p] == cont:
            s.pagemap[p] = 0                    # an orphan of c
            s.hdr.free_pages += 1
            p += 1
        else:
            p += 1
    bk_lock_release(&s.hdr.alloc_lock)
    cl.free_head = cl.free_tail = 0
    cl.drain_page = 0
    p = pu
    while p > 0:
        p -= 1
        if s.pagemap[p] != c + 1:
            continue
        slabs += 1
        for i in range(cl.per_slab - 1, -1, -1):
            off = CHUNK(s, p, cl, i)
            e = ENT(s, off)
            if e.flags & BK_E_USED:
                used += 1
            else:
                e.cls = <uint8_t>c
                fl_push(s, cl, off)
    cl.used = used
    cl.slabs = slabs
    return 0


# -- the slab mover ----------------------------------------------------------------
# Pages go to classes on demand; when a class is dry and no page is unassigned, a slab
# of another class is emptied and its pages given back, as memcached's slab mover
# does. A slab is emptied without losing an entry when its class has a slab's worth of
# free chunks (spare, below): each live entry is relocated into a free chunk of its
# class outside the slab (relocate_entry: a SET of the same key and value under its
# stripe's lock, so readers and repair see nothing new), whatever its bucket, and a
# slab with no live entry is given back as it is. So memory freed by deletes returns
# to the common pool for any class and any bucket, `eviction: none` buckets included.
# Otherwise a slab may be emptied by evicting its entries, when every one of them
# belongs to an evicting bucket (whatever bucket: see make_room).
#
# A victim is a window of pages, from the mover's hand on, covering whole slabs of
# other classes; of a few such windows the one that costs the fewest evictions, then
# the fewest relocations, is emptied (relocate_entry and evict_entry take the entry's
# stripe by trylock), then each slab is taken off its class under that class's lock
# once every chunk is seen free, and its pages are marked unassigned for carve_slab.
#
# One slab of a class is emptied at a time (its drain_page): a mover that finds another
# slab of the class being emptied helps with that one instead, so two movers never
# relocate entries into each other's slab. begin_drain moves the slab's free chunks to
# the tail of the free list, and chunk_free puts its chunks there too, so the head is
# outside the slab while the class has a free chunk elsewhere (relocate_entry takes only
# the head). A death at any step leaves only what the locks' repair already handles:
# a relocation is a stripe's SET intent; a drain cut short is a class whose free list
# rebuild_class rebuilds (drain_page 0); a slab half given back is an orphan run.
cdef int MOVE_CANDIDATES = 8    # windows compared per move
cdef int MOVE_SCAN = 64         # windows looked at per move, at most
cdef int64_t BUSY = -2          # slab_cost/window_cost: not now, an entry is pending
cdef int NO_ROOM = 2            # make_room/move_slab: nothing may be evicted, now or later
cdef int MOVE_SAMPLE = 8        # entries per slab whose stamps date a window
cdef int LOSSLESS = 1           # move_slab: only windows emptied without an eviction
cdef int ANY_WINDOW = 0         # move_slab: evictions allowed


cdef inline int64_t class_spare(bk_class *cl) noexcept:
    """Free chunks of a class (racy read: a hint; the moves check under the lock)."""
    return <int64_t>(cl.slabs * cl.per_slab) - <int64_t>cl.used


cdef inline int64_t drain_slab(Store s, uint32_t d) noexcept:
    """The first page of the slab of class d being emptied, or -1 (none, or stale)."""
    cdef uint64_t dp = s.classes[d].drain_page
    if dp == 0 or dp > s.npages or s.pagemap[dp - 1] != d + 1:
        return -1
    return <int64_t>(dp - 1)


cdef bint lossless_possible(Store s, uint32_t c) noexcept:
    """Could a slab of another class than c be emptied without an eviction? (Some
    class holds a slab's worth of free chunks: then any of its slabs can be. A hint,
    read without locks; it is what keeps a full segment's SegmentFull cheap.)"""
    cdef uint32_t d
    for d in range(s.nclasses):
        if d != c and s.classes[d].slabs and class_spare(&s.classes[d]) >= s.classes[d].per_slab:
            return True
    return False


cdef int64_t slab_cost(Store s, uint64_t p, uint32_t c, int mode, uint32_t before,
                       int64_t *relocs) noexcept:
    """Entries to evict to empty the slab at page p, adding the entries to relocate
    to *relocs; -1 when it cannot be emptied for class c (it is c's own, or it holds an
    entry of a non-evicting bucket and its class has no room to relocate, or, in
    LOSSLESS mode, it would cost an eviction); BUSY when not now (an entry is being
    written, or another slab of its class is being emptied). `before`: slabs of the
    same class earlier in the window, whose entries need room too."""
    cdef uint32_t d = s.pagemap[p] - 1, i
    cdef bk_class *cl = &s.classes[d]
    cdef uint64_t off
    cdef int64_t n = 0, dp
    cdef uint8_t f
    cdef uint16_t bidx
    cdef bint busy = False
    cdef bint relocatable = class_spare(cl) >= <int64_t>((before + 1) * cl.per_slab)
    if d == c:
        return -1
    if mode == LOSSLESS and not relocatable:
        return -1
    dp = drain_slab(s, d)
    if dp >= 0 and <uint64_t>dp != p:
        return BUSY
    for i in range(cl.per_slab):
        off = CHUNK(s, p, cl, i)
        f = bk_load_acq8(&ENT(s, off).flags)
        if not (f & BK_E_USED):
            continue
        if f & BK_E_PENDING:
            busy = True                         # decide on the others first
            continue
        bidx = ENT(s, off).bucket
        if bidx >= s.max_buckets or s.bucketv[bidx].state != 1 or s.bucketv[bidx].eviction != 0:
            if not relocatable:
                return -1
        n += 1
    if busy:
        return BUSY
    if relocatable:
        relocs[0] += n
        return 0
    return n


cdef int64_t window_cost(Store s, uint64_t p, uint64_t need, uint32_t c, uint64_t pu,
                         int mode, int64_t *relocs) noexcept:
    """Live entries to evict so that pages p..p+need-1 are unassigned (adding those
    to relocate to *relocs); -1 never, BUSY not now."""
    cdef uint64_t q = p
    cdef int64_t cost = 0, one
    cdef uint8_t b
    cdef uint32_t seen[64]                      # BK_MAX_CLASSES: slabs of each class so far
    memset(seen, 0, sizeof(seen))
    relocs[0] = 0
    while q < p + need:
        if q >= pu:
            return -1
        b = s.pagemap[q]
        if b == 0:
            q += 1
            continue
        if b & 0x80 or b > s.nclasses:
            return -1                           # the middle of a slab, or an orphan
        one = slab_cost(s, q, c, mode, seen[b - 1], relocs)
        if one < 0:
            return one
        seen[b - 1] += 1
        cost += one
        q += s.classes[b - 1].slab_pages
    return cost


cdef uint32_t window_youngest(Store s, uint64_t p, uint64_t need) noexcept:
    """The newest LRU stamp among a few entries sampled over pages p..p+need-1."""
    cdef uint64_t q = p, off, step, i
    cdef uint32_t newest = 0, st
    cdef uint8_t b
    cdef bk_class *cl
    while q < p + need:
        b = s.pagemap[q]
        if b == 0 or b & 0x80 or b > s.nclasses:
            q += 1
            continue
        cl = &s.classes[b - 1]
        step = cl.per_slab // MOVE_SAMPLE + 1
        i = 0
        while i < cl.per_slab:
            off = CHUNK(s, q, cl, i)
            if bk_load_acq8(&ENT(s, off).flags) & BK_E_USED:
                st = stamp_of(s, off)
                if st > newest:
                    newest = st
            i += step
        q += cl.slab_pages
    return newest


cdef inline void crash_in_move(Store s, int point) noexcept:
    """Crash tests only (Store._crash_in_page_return): exit (status 70) at the point
    the test named, holding whatever locks are held there, as a SIGKILL would."""
    if s.crash_move == point:
        _exit(70)


cdef int begin_drain(Store s, uint64_t p, uint32_t d) except -1:
    """Make the slab at page p the one of class d being emptied: move its free chunks
    to the tail of the free list (where chunk_free puts its chunks from now on). 0 when
    the slab is gone or another slab of d is being emptied."""
    cdef bk_class *cl = &s.classes[d]
    cdef uint64_t i, off
    cdef int64_t dp
    lock_class(s, d)
    try:
        if s.pagemap[p] != d + 1:
            return 0
        dp = drain_slab(s, d)
        if dp == <int64_t>p:
            return 1
        if dp >= 0:
            return 0
        cl.drain_page = <uint32_t>(p + 1)
        for i in range(cl.per_slab):
            off = CHUNK(s, p, cl, i)
            if ENT(s, off).flags == 0:
                fl_unlink(s, cl, off)
                fl_push_tail(s, cl, off)
        return 1
    finally:
        unlock_class(s, d)


cdef uint64_t chunk_alloc_outside(Store s, uint32_t d, uint32_t si, uint64_t p) except? 1:
    """A free chunk of class d outside the slab at page p, which is being emptied, for
    stripe si (as chunk_alloc, but never carving: pages are what is short); 0 when
    there is none (its free chunks are all in the slab) or the drain was reset."""
    cdef bk_class *cl = &s.classes[d]
    cdef uint64_t off, lo = s.arena_off + p * s.page_size
    lock_class(s, d)
    try:
        off = cl.free_head
        if off == 0 or cl.drain_page != p + 1 or (lo <= off < lo + cl.slab_pages * s.page_size):
            return 0
        take_chunk(s, cl, d, si, off)
        return off
    finally:
        unlock_class(s, d)


cdef int relocate_entry(Store s, uint64_t off, uint32_t holding, uint64_t p) except -1:
    """Move the entry at `off`, in the slab at page p being emptied, to a free chunk of
    its class outside that slab, under its stripe's lock (trylock unless `holding`):
    a SET of the same key, value, expiry and version, so a reader that read the old
    chunk retries on the seq and a repair finishes or undoes it as any SET. 1 when
    moved. `off` may be stale: nothing is trusted until a slot points at it."""
    cdef bk_entry *e = ENT(s, off)
    cdef bk_entry *ne
    cdef uint32_t klen = e.klen, vlen
    cdef uint16_t bidx = e.bucket
    cdef uint64_t h, noff
    cdef uint32_t vsi
    cdef int slot, done = 0
    cdef bk_stripe *st
    cdef uint64_t *slots
    cdef bint own
    if not key_readable(s, off, klen, bidx):
        return 0
    h = khash(bidx, EKEY(s, off), klen)
    vsi = stripe_of(s, h)
    if vsi != holding:
        if not trylock_stripe(s, vsi):
            return 0
    try:
        if (e.flags & (BK_E_USED | BK_E_PENDING)) != BK_E_USED or e.klen != klen \
                or e.bucket != bidx:
            return 0
        slot = find_offset(s, vsi, h, off)
        if slot < 0:
            return 0
        st = STRIPE(s, vsi)
        slots = SLOTS_OF(s, vsi)
        vlen = e.vlen
        st.intent_ring = 0
        st.intent_new = 0
        st.intent_op = BK_OP_ALLOC
        noff = chunk_alloc_outside(s, e.cls, vsi, p)
        if noff == 0:
            st.intent_op = BK_OP_NONE
            return 0
        ne = ENT(s, noff)
        ne.expire_ms = e.expire_ms
        ne.klen = klen
        ne.vlen = vlen
        ne.bucket = bidx
        memcpy(EKEY(s, noff), EKEY(s, off), klen + vlen)
        bk_store_rel8(&ne.flags, BK_E_USED | (e.flags & BK_E_CARRY))
        ne.version = e.version
        crash_in_move(s, 3)                     # filled, not published
        st.intent_slot = slot
        st.intent_old = off
        st.intent_op = BK_OP_SET
        own = seq_enter_own(st)                 # (a transaction's stripe is odd already)
        bk_store_rlx64(&slots[slot], (slots[slot] & BK_TAG_MASK) | noff)
        crash_in_move(s, 4)                     # published, the old chunk not freed
        chunk_free(s, off)
        st.intent_op = BK_OP_NONE
        if own:
            bk_seq_leave(&st.seq)
        done = 1
        if BUKT_DEBUG:
            debug_check_stripe(s, vsi)
    finally:
        if vsi != holding:
            unlock_stripe(s, vsi)
    if done:
        bk_fetch_add_u64(&s.hdr.relocations, 1)
    return done


cdef int release_slab(Store s, uint64_t p, uint32_t d) except -1:
    """Take the slab at page p off class d if every chunk in it is free, and mark its
    pages unassigned. 1 when done. (Class d's lock, then the alloc lock.)"""
    cdef bk_class *cl = &s.classes[d]
    cdef uint64_t i, off, n = cl.slab_pages
    lock_class(s, d)
    try:
        if s.pagemap[p] != d + 1:
            return 0                            # another mover took it
        for i in range(cl.per_slab):
            off = CHUNK(s, p, cl, i)
            if ENT(s, off).flags != 0:
                return 0                        # reused meanwhile: try again later
        for i in range(cl.per_slab):
            fl_unlink(s, cl, CHUNK(s, p, cl, i))
            if i == cl.per_slab // 2:
                crash_in_move(s, 0)             # the free list half unlinked
        cl.slabs -= 1
        if cl.drain_page == p + 1:
            cl.drain_page = 0
        lock_alloc(s)
        # an orphan first: a death from here on leaves pages rebuild_class(d) gives back
        s.pagemap[p] = <uint8_t>(0x80 | (d + 1))
        crash_in_move(s, 1)                     # an orphan run, the alloc lock held
        for i in range(n):
            s.pagemap[p + i] = 0
        crash_in_move(s, 2)                     # unassigned, not yet counted free
        s.hdr.free_pages += n
        bk_lock_release(&s.hdr.alloc_lock)
        bk_fetch_add_u64(&s.hdr.slab_moves, 1)
        return 1
    finally:
        unlock_class(s, d)


cdef int empty_slab(Store s, uint64_t q, uint32_t d, uint32_t holding, int mode) except -1:
    """Relocate or evict every live entry of the slab at page q (class d), then give
    it back. 1 when its pages are unassigned."""
    cdef bk_class *cl = &s.classes[d]
    cdef uint64_t i, off
    cdef uint16_t bidx
    cdef bint relocate
    if not begin_drain(s, q, d):
        return 0
    relocate = class_spare(cl) >= cl.per_slab
    if mode == LOSSLESS and not relocate:
        return 0
    for i in range(cl.per_slab):
        off = CHUNK(s, q, cl, i)
        if (bk_load_acq8(&ENT(s, off).flags) & (BK_E_USED | BK_E_PENDING)) != BK_E_USED:
            continue
        if relocate and relocate_entry(s, off, holding, q):
            continue
        if mode == LOSSLESS:
            return 0
        bidx = ENT(s, off).bucket
        if bidx >= s.max_buckets or s.bucketv[bidx].state != 1 or s.bucketv[bidx].eviction != 0:
            return 0                            # not ours to evict: try again later
        if not evict_entry(s, off, holding):
            return 0
    return release_slab(s, q, d)


cdef int move_slab(Store s, uint32_t c, uint32_t holding, uint32_t older_than,
                   int mode=ANY_WINDOW) except -1:
    """Empty a window of other classes' slabs so that class c can carve one (see
    above). `holding` is the stripe the caller has locked. A window that costs
    evictions qualifies only when its sampled entries are all older than the stamp
    `older_than` (0xffffffff: any), and never in LOSSLESS mode. 1 when pages were
    given back; 0 when no window could be emptied this time (busy stripes, a class
    reusing its chunks, nothing old enough, the scan's bound reached); NO_ROOM when
    no window could be."""
    cdef uint64_t pu = bk_load_acq64(&s.hdr.pages_used)
    cdef uint64_t need = s.classes[c].slab_pages, p, q, best = 0, start
    cdef int64_t cost, best_cost = -1, relocs = 0, best_relocs = 0
    cdef int found = 0, examined = 0
    cdef bint possible = False
    cdef uint32_t d
    if pu == 0:
        return NO_ROOM
    start = s.hdr.move_hand % pu
    p = start
    for q in range(pu):
        if examined >= MOVE_SCAN:               # bounded work per call: go on from
            s.hdr.move_hand = p                 # here next time
            possible = True
            break
        if s.pagemap[p] != 0 and not (s.pagemap[p] & 0x80):
            examined += 1
            cost = window_cost(s, p, need, c, pu, mode, &relocs)
            if cost != -1:
                possible = True                 # now, or later (BUSY: an entry is pending)
            if cost > 0 and older_than != 0xffffffff and \
                    window_youngest(s, p, need) >= older_than:
                cost = -1                       # fresher than what c would evict
            if cost >= 0:
                found += 1
                if best_cost < 0 or cost < best_cost or \
                        (cost == best_cost and relocs < best_relocs):
                    best, best_cost, best_relocs = p, cost, relocs
                if found >= MOVE_CANDIDATES or (cost == 0 and relocs == 0):
                    break
        p = (p + 1) % pu
    if best_cost < 0:
        return 0 if possible else NO_ROOM
    s.hdr.move_hand = best + need               # next time, look further on
    # empty the window's slabs, each given back as it empties
    q = best
    while q < best + need:
        if s.pagemap[q] == 0:
            q += 1
            continue
        d = s.pagemap[q] - 1
        if d >= s.nclasses or s.pagemap[q] & 0x80:
            return 0
        if not empty_slab(s, q, d, holding, mode):
            return 0
        q += s.classes[d].slab_pages
    return 1


cdef int reclaim_pages(Store s, uint32_t c, uint32_t holding) except -1:
    """Class c is dry and no page is unassigned: give back a slab of another class
    without losing an entry (an empty one, or one whose entries fit elsewhere in their
    class). 1 when pages were given back, 0 not this time, NO_ROOM when no slab can be
    (the memory is really in use)."""
    if not lossless_possible(s, c):
        return NO_ROOM
    return move_slab(s, c, holding, 0xffffffff, LOSSLESS)


# -- eviction -------------------------------------------------------------------
cdef int EVICT_SAMPLE = 16      # chunks inspected per victim choice (as Redis's maxmemory-samples)


cdef uint32_t stamp_of(Store s, uint64_t off) noexcept:
    """The LRU stamp of the entry at `off`, read without locks from beside the slot
    that points at it (advisory); 0 (oldest) when no slot does right now."""
    cdef bk_entry *e = ENT(s, off)
    cdef uint32_t klen = bk_load_rlx32(&e.klen), si
    cdef uint16_t bidx = bk_load_rlx16(&e.bucket)
    cdef uint64_t h
    cdef int slot
    if not key_readable(s, off, klen, bidx):
        return 0
    h = khash(bidx, EKEY(s, off), klen)
    si = stripe_of(s, h)
    slot = find_offset(s, si, h, off)
    return STAMPS_OF(s, si)[slot] if slot >= 0 else 0


cdef list class_sample(Store s, uint32_t c, int bucket=-1):
    """Up to EVICT_SAMPLE entries of class c that belong to evicting buckets (to
    bucket `bucket` only, when >= 0), from the class's clock hand on, as (stamp,
    offset) sorted oldest first."""
    cdef bk_class *cl = &s.classes[c]
    cdef uint64_t pu = bk_load_acq64(&s.hdr.pages_used)
    cdef uint64_t per = cl.per_slab, total, hand, p, i, off
    cdef uint32_t looked = 0, steps = 0
    cdef bk_entry *e
    cdef uint16_t bidx
    sample = []
    if pu == 0 or cl.slabs == 0:
        return sample
    total = pu * per
    hand = cl.hand % total
    while looked < <uint32_t>EVICT_SAMPLE and steps < total:
        p = hand // per
        i = hand % per
        hand = (hand + 1) % total
        steps += 1
        if s.pagemap[p] != c + 1:
            hand = ((p + 1) * per) % total          # not a slab of c: next page
            continue
        off = CHUNK(s, p, cl, i)
        e = ENT(s, off)
        if (bk_load_acq8(&e.flags) & (BK_E_USED | BK_E_PENDING)) != BK_E_USED:
            continue
        bidx = e.bucket
        if bidx >= s.max_buckets or s.bucketv[bidx].state != 1 or s.bucketv[bidx].eviction != 0:
            continue
        if bucket >= 0 and bidx != bucket:
            continue
        looked += 1
        sample.append((stamp_of(s, off), off))
    cl.hand = hand
    sample.sort()
    return sample


cdef int make_room(Store s, uint32_t c, uint32_t holding) except -1:
    """Class c is dry and no page is unassigned: free a chunk of c by evicting the
    oldest of a sample of its entries (a busy victim's stripe gives way to the next
    one), or move a slab to c: when c has nothing to evict, or when another class
    holds a slab whose entries are all older than c's oldest sampled (looked for
    about once per 32 chunks that c would otherwise evict).
    `holding` is the stripe the caller has locked. 1 when something was freed, 0
    when not this time, NO_ROOM when nothing anywhere may be evicted for c."""
    cdef bk_class *cl = &s.classes[c]
    if reclaim_pages(s, c, holding) == 1:      # first what costs no entry
        return 1
    sample = class_sample(s, c)
    if not sample:
        return move_slab(s, c, holding, 0xffffffff)
    cl.dry += 1
    # a move yields a slab's worth of chunks and costs a scan of a few windows: try
    # one about every 32 chunks of c this would otherwise evict
    if cl.dry % (1 + cl.per_slab // 32) == 0 and \
            move_slab(s, c, holding, <uint32_t>sample[0][0]) == 1:
        return 1
    for stamp, off in sample:
        if evict_entry(s, off, holding):
            return 1
    return 0


cdef int evict_own(Store s, uint16_t bidx, uint32_t c, uint32_t holding) except -1:
    """Bucket bidx is at its max_memory: evict the oldest of a sample of its own
    entries, of class c first (that frees a chunk the write can take), else of the
    other classes, largest first. 1 when one was evicted, 0 not this time (busy
    stripes), NO_ROOM when it has none."""
    cdef int d
    cdef bint any_seen = False
    for d in [c] + [x for x in range(s.nclasses - 1, -1, -1) if x != <int>c]:
        if s.classes[d].used == 0:
            continue
        sample = class_sample(s, d, bidx)
        if not sample:
            continue
        any_seen = True
        for stamp, off in sample:
            if evict_entry(s, off, holding, bidx):
                return 1
    return 0 if any_seen else NO_ROOM


cdef int evict_entry(Store s, uint64_t off, uint32_t holding, int bucket=-1) except -1:
    """Delete the entry at `off` if it is still linked and its bucket evicts (and is
    `bucket`, when >= 0), taking its stripe by trylock unless it is the one held. 1
    when deleted. `off` may be stale (its page may have changed class, or the chunk
    been freed and taken by another key since the caller looked): nothing is trusted
    until a slot of the locked stripe points at it."""
    cdef bk_entry *e = ENT(s, off)
    cdef uint32_t klen = e.klen
    cdef uint16_t bidx = e.bucket
    cdef uint64_t h
    cdef uint32_t vsi
    cdef int slot, done = 0
    if not key_readable(s, off, klen, bidx):
        return 0
    h = khash(bidx, EKEY(s, off), klen)
    vsi = stripe_of(s, h)
    if vsi != holding:
        if not trylock_stripe(s, vsi):
            return 0
    try:
        if (e.flags & (BK_E_USED | BK_E_PENDING)) == BK_E_USED and e.klen == klen \
                and e.bucket == bidx and s.bucketv[bidx].state == 1 \
                and s.bucketv[bidx].eviction == 0 and (bucket < 0 or bidx == bucket):
            slot = find_offset(s, vsi, h, off)
            if slot >= 0:
                done = do_delete_at(s, vsi, slot, off, BK_T_EVICTED)
                if done:
                    bk_fetch_add_u64(&s.hdr.evictions, 1)
                    bk_add64(&s.counters(bidx).evictions, 1)
    finally:
        if vsi != holding:
            unlock_stripe(s, vsi)
    return done


cdef int evict_in_stripe(Store s, uint32_t si) except -1:
    """The stripe's index is full: evict its least recently used evictable entry."""
    cdef uint64_t *slots = SLOTS_OF(s, si)
    cdef uint32_t *stamps = STAMPS_OF(s, si)
    cdef uint64_t w, off, best = 0
    cdef int i, best_slot = -1
    cdef uint32_t best_stamp = 0xffffffff
    cdef bk_entry *e
    for i in range(SLOTS):
        w = slots[i]
        if w == 0:
            continue
        off = w & BK_OFF_MASK
        e = ENT(s, off)
        if s.bucketv[e.bucket].eviction != 0:
            continue
        if best_slot < 0 or stamps[i] < best_stamp:
            best, best_slot, best_stamp = off, i, stamps[i]
    if best_slot < 0:
        return 0
    cdef uint16_t bidx = ENT(s, best).bucket
    if do_delete_at(s, si, best_slot, best, BK_T_EVICTED):
        bk_fetch_add_u64(&s.hdr.evictions, 1)
        bk_add64(&s.counters(bidx).evictions, 1)
        return 1
    return 0
