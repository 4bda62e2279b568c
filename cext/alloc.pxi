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


cdef int carve_slab(Store s, uint32_t c) except -1:
    """Give class c a new slab of slab_pages pages (class lock held) and link its
    chunks into the free list. 0 when no page is left."""
    cdef bk_header *h = s.hdr
    cdef bk_class *cl = &s.classes[c]
    cdef uint64_t p, i, off, head, slab_off
    lock_simple(s, &h.alloc_lock, "alloc")
    p = h.pages_used
    if p + cl.slab_pages > s.npages:
        bk_lock_release(&h.alloc_lock)
        return 0
    s.pagemap[p] = <uint8_t>(c + 1)
    for i in range(1, cl.slab_pages):
        s.pagemap[p + i] = <uint8_t>(0x80 | (c + 1))
    bk_store_rel64(&h.pages_used, p + cl.slab_pages)     # last: publishes the slab
    bk_lock_release(&h.alloc_lock)
    slab_off = s.arena_off + p * s.page_size
    head = cl.free_head
    for i in range(cl.per_slab - 1, -1, -1):
        off = slab_off + i * cl.chunk_size
        ENT(s, off).flags = 0
        ENT(s, off).cls = <uint8_t>c
        ENT(s, off).version = head
        head = off
    cl.free_head = head
    cl.slabs += 1
    return 1


cdef uint64_t chunk_alloc(Store s, uint32_t c, uint32_t si) except? 1:
    """A chunk of class c for stripe si (whose lock is held), recorded in the
    stripe's intent_new before it leaves the free list; 0 when the class is dry."""
    cdef bk_class *cl = &s.classes[c]
    cdef bk_stripe *st = STRIPE(s, si)
    cdef uint64_t off, nxt
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
        st.intent_new = off
        nxt = e.version
        e.version = si                          # owner while pending
        e.cls = <uint8_t>c
        bk_store_rel8(&e.flags, BK_E_USED | BK_E_PENDING)
        cl.free_head = nxt
        cl.used += 1
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
    e.version = cl.free_head
    cl.free_head = off
    cl.used -= 1
    unlock_class(s, c)
    return 0


cdef int rebuild_class(Store s, uint32_t c) except -1:
    """A class lock holder died: rebuild the free list and counts from the chunk
    flags. Pending chunks stay out; their stripes' repair frees them."""
    cdef bk_class *cl = &s.classes[c]
    cdef uint64_t p, i, off, head = 0, used = 0, slabs = 0
    cdef uint64_t pu = bk_load_acq64(&s.hdr.pages_used)
    cdef bk_entry *e
    p = pu
    while p > 0:
        p -= 1
        if s.pagemap[p] != c + 1:
            continue
        slabs += 1
        for i in range(cl.per_slab - 1, -1, -1):
            off = s.arena_off + p * s.page_size + i * cl.chunk_size
            e = ENT(s, off)
            if e.flags & BK_E_USED:
                used += 1
            else:
                e.cls = <uint8_t>c
                e.version = head
                head = off
    cl.free_head = head
    cl.used = used
    cl.slabs = slabs
    return 0


# -- eviction -------------------------------------------------------------------
cdef int EVICT_SAMPLE = 16      # chunks inspected per victim choice (as Redis's maxmemory-samples)


cdef int evict_from_class(Store s, uint32_t c, uint32_t holding) except -1:
    """Evict one of the least recently used of a sample of class-c entries that
    belong to an evicting bucket, so that a chunk of c returns to the free list.
    `holding` is the stripe the caller has locked. The sample's entries are tried
    oldest first: a victim whose stripe is busy (trylock) gives way to the next.
    Returns 1 when a chunk was freed."""
    cdef bk_class *cl = &s.classes[c]
    cdef uint64_t pu = bk_load_acq64(&s.hdr.pages_used)
    cdef uint64_t per = cl.per_slab, total, hand, p, i, off
    cdef uint32_t looked = 0, steps = 0
    cdef bk_entry *e
    cdef uint16_t bidx
    if pu == 0 or cl.slabs == 0:
        return 0
    total = pu * per
    hand = cl.hand % total
    sample = []
    while looked < <uint32_t>EVICT_SAMPLE and steps < total:
        p = hand // per
        i = hand % per
        hand = (hand + 1) % total
        steps += 1
        if s.pagemap[p] != c + 1:
            hand = ((p + 1) * per) % total          # not a slab of c: next page
            continue
        off = s.arena_off + p * s.page_size + i * cl.chunk_size
        e = ENT(s, off)
        if (bk_load_acq8(&e.flags) & (BK_E_USED | BK_E_PENDING)) != BK_E_USED:
            continue
        bidx = e.bucket
        if bidx >= s.max_buckets or s.bucketv[bidx].state != 1 or s.bucketv[bidx].eviction != 0:
            continue
        looked += 1
        sample.append((e.lru, off))
    cl.hand = hand
    sample.sort()
    for lru_, off in sample:
        if evict_entry(s, off, holding):
            return 1
    return 0


cdef int evict_entry(Store s, uint64_t off, uint32_t holding) except -1:
    """Delete the entry at `off` if it is still linked, taking its stripe by trylock
    unless it is the one held. 1 when deleted."""
    cdef bk_entry *e = ENT(s, off)
    cdef uint32_t klen = e.klen
    cdef uint16_t bidx = e.bucket
    cdef uint64_t h
    cdef uint32_t vsi
    cdef int slot, done = 0
    if klen == 0 or klen > s.max_key or bidx >= s.max_buckets:
        return 0
    h = khash(bidx, EKEY(s, off), klen)
    vsi = stripe_of(s, h)
    if vsi != holding:
        if not trylock_stripe(s, vsi):
            return 0
    try:
        if (e.flags & (BK_E_USED | BK_E_PENDING)) == BK_E_USED and e.klen == klen \
                and e.bucket == bidx:
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
    cdef uint64_t w, off, best = 0
    cdef int i, best_slot = -1
    cdef uint32_t best_lru = 0xffffffff
    cdef bk_entry *e
    for i in range(SLOTS):
        w = slots[i]
        if w == 0:
            continue
        off = w & OFF_MASK
        e = ENT(s, off)
        if s.bucketv[e.bucket].eviction != 0:
            continue
        if best_slot < 0 or e.lru < best_lru:
            best, best_slot, best_lru = off, i, e.lru
    if best_slot < 0:
        return 0
    cdef uint16_t bidx = ENT(s, best).bucket
    if do_delete_at(s, si, best_slot, best, BK_T_EVICTED):
        bk_fetch_add_u64(&s.hdr.evictions, 1)
        bk_add64(&s.counters(bidx).evictions, 1)
        return 1
    return 0
