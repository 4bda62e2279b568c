# check.pxi: the stop-the-world passes. recount() makes the bucket gauges exact
# after a repair; check() is the integrity walk every stress and crash test ends
# with ("for testing and post-mortem", as diskcache says of its own). Both take every
# stripe lock in index order while holding nothing else (LOCK RULES), repairing any
# whose holder died, so they see a table with no write in flight.

cdef uint32_t lock_all_stripes(Store s) except? 0xffffffff:
    cdef uint32_t si
    for si in range(s.nstripes):
        try:
            lock_stripe(s, si)
        except BaseException:
            unlock_stripes(s, si)
            raise
    return s.nstripes


cdef void unlock_stripes(Store s, uint32_t upto) noexcept:
    cdef uint32_t si
    for si in range(upto):
        unlock_stripe(s, si)


cdef int recount(Store s) except -1:
    cdef uint32_t si, i
    cdef uint64_t w, off
    cdef uint64_t *slots
    cdef bk_entry *e
    cdef int64_t *keys = <int64_t *>malloc(s.max_buckets * 32)
    cdef int64_t *nbytes = keys + s.max_buckets
    cdef int64_t *mem = keys + 2 * s.max_buckets
    cdef int64_t *saved = keys + 3 * s.max_buckets
    if keys == NULL:
        raise MemoryError()
    memset(keys, 0, s.max_buckets * 32)
    bk_store_rel32(&s.hdr.needs_recount, 0)
    lock_all_stripes(s)
    try:
        for si in range(s.nstripes):
            slots = SLOTS_OF(s, si)
            for i in range(SLOTS):
                w = slots[i]
                if w == 0:
                    continue
                e = ENT(s, w & BK_OFF_MASK)
                if e.bucket < s.max_buckets:
                    keys[e.bucket] += not (e.flags & BK_E_HIDDEN)
                    nbytes[e.bucket] += e.klen + e.vlen
                    if e.cls < s.nclasses:
                        mem[e.bucket] += s.classes[e.cls].chunk_size
                    saved[e.bucket] += entry_saving(s, w & BK_OFF_MASK)
        for i in range(s.max_buckets):
            s.bucketv[i].keys = keys[i]
            s.bucketv[i].bytes = nbytes[i]
            s.bucketv[i].mem = mem[i]
            s.bucketv[i].comp_saved = saved[i]
    finally:
        unlock_stripes(s, s.nstripes)
        free(keys)
    return 0


cdef list check_table(Store s):
    cdef list problems = []
    cdef uint32_t si, i, c, j, home, p
    cdef uint64_t w, off, h, rel, pu, chunk_no, steps
    cdef uint64_t *slots
    cdef bk_entry *e
    cdef bk_stripe *st
    cdef bk_class *cl
    cdef uint32_t count, nttl, level, split, want
    cdef uint64_t active
    cdef int64_t earliest
    cdef bk_header *hd = s.hdr
    if s.readonly:
        return ["a read-only attach cannot take the locks check() needs; attach "
                "read-write (or run `bukt check`)"]
    finish_dead_drops(s)
    while True:
        maybe_recount(s)
        lock_all_stripes(s)
        if not bk_load_acq32(&s.hdr.needs_recount):
            break
        # Taking the locks repaired a stripe whose holder died (or another process
        # repaired one meanwhile): the gauges may lack its last change until a
        # recount, which takes the locks itself. Compare only exact gauges.
        unlock_stripes(s, s.nstripes)
    for c in range(s.nclasses):
        lock_class(s, c)
    try:
        pu = bk_load_acq64(&hd.pages_used)
        referenced = set()
        keys = {}
        nbytes = {}
        mem = {}
        saved = {}
        # the geometry (GROWTH in table.pxi): 2^level + split stripes in use, the
        # split ones and their new halves one bit deeper than the rest
        level = <uint32_t>(hd.index_geom >> 32)        # every stripe locked: stable
        split = <uint32_t>hd.index_geom
        active = stripes_in_use(hd.index_geom)
        if split >= (1 << level) or active > s.nstripes:
            problems.append(f"index geometry level {level} split {split} does not fit "
                            f"{s.nstripes} stripes")
        for si in range(s.nstripes):
            st = STRIPE(s, si)
            slots = SLOTS_OF(s, si)
            want = 0 if si >= active else level + (si < split or si >= (1 << level))
            if st.depth != want:
                problems.append(f"stripe {si}: depth {st.depth}, the geometry says {want}")
            if st.seq & 1:
                problems.append(f"stripe {si}: seq {st.seq} is odd with no writer inside")
            if st.intent_op != BK_OP_NONE:
                problems.append(f"stripe {si}: intent {st.intent_op} left over")
            count = nttl = 0
            earliest = BK_NO_EXPIRY
            for i in range(SLOTS):
                w = slots[i]
                if w == 0:
                    continue
                count += 1
                off = w & BK_OFF_MASK
                where = f"stripe {si} slot {i} -> {off}"
                if off < s.arena_off or off >= s.arena_off + pu * s.page_size:
                    problems.append(f"{where}: outside the pages in use")
                    continue
                rel = off - s.arena_off
                p = <uint32_t>(rel // s.page_size)
                c = s.pagemap[p]
                if c == 0 or c > s.nclasses:
                    problems.append(f"{where}: page {p} is not the first page of a slab")
                    continue
                c -= 1
                if (rel % s.page_size) % s.classes[c].chunk_size or \
                        (rel % s.page_size) // s.classes[c].chunk_size >= s.classes[c].per_slab:
                    problems.append(f"{where}: not at a chunk boundary of class {c}")
                    continue
                e = ENT(s, off)
                nttl += e.expire_ms != 0
                if e.expire_ms != 0 and e.expire_ms < earliest:
                    earliest = e.expire_ms
                if e.flags & ~BK_E_CARRY != BK_E_USED:
                    problems.append(f"{where}: chunk flags {e.flags:#x}, not a published entry")
                if (e.flags & BK_E_ZSTD) and (e.flags & BK_E_LZ4):
                    problems.append(f"{where}: entry flags {e.flags:#x}: ZSTD and LZ4 together")
                if e.klen <= s.max_key and off + 32 + e.klen <= s.size and \
                        is_reserved(EKEY(s, off), e.klen) != ((e.flags & BK_E_HIDDEN) != 0):
                    problems.append(f"{where}: entry flags {e.flags:#x}: HIDDEN entries, "
                                    f"and only they, have keys under {RESERVED_PREFIX!r}")
                if e.cls != c:
                    problems.append(f"{where}: chunk says class {e.cls}, page says {c}")
                if e.klen == 0 or e.klen > s.max_key or e.vlen > s.max_value or \
                        32 + e.klen + e.vlen > s.classes[c].chunk_size:
                    problems.append(f"{where}: lengths {e.klen}/{e.vlen} do not fit")
                    continue
                if e.bucket >= s.max_buckets or s.bucketv[e.bucket].state == 0:
                    problems.append(f"{where}: bucket {e.bucket} does not exist")
                h = entry_hash(s, off)
                if not owns(s, si, h) or tag_of(h) != (w & BK_TAG_MASK):
                    problems.append(f"{where}: key hashes to stripe {stripe_of(s, h)}")
                    continue
                home = home_of(h)
                j = home
                while j != i and slots[j] != 0:
                    j = (j + 1) & SLOT_MASK
                if j != i:
                    problems.append(f"{where}: unreachable from its home slot {home}")
                if off in referenced:
                    problems.append(f"{where}: chunk referenced twice")
                referenced.add(off)
                keys[e.bucket] = keys.get(e.bucket, 0) + (not (e.flags & BK_E_HIDDEN))
                nbytes[e.bucket] = nbytes.get(e.bucket, 0) + e.klen + e.vlen
                mem[e.bucket] = mem.get(e.bucket, 0) + s.classes[c].chunk_size
                saved[e.bucket] = saved.get(e.bucket, 0) + entry_saving(s, off)
            if count != st.count:
                problems.append(f"stripe {si}: count {st.count}, slots in use {count}")
            if nttl != st.nttl:
                # too low would leave expired keys to lazy expiry alone
                problems.append(f"stripe {si}: nttl {st.nttl}, entries with an "
                                f"expiry {nttl}")
            if st.min_expire_ms > earliest:
                # too high would leave expired keys to lazy expiry alone; lower than
                # the earliest is allowed (a lower bound: it costs the cycle a walk)
                problems.append(f"stripe {si}: expiry bound {st.min_expire_ms} is after "
                                f"the earliest expiry of its entries, {earliest}")
            if count > BK_STRIPE_MAX_LOAD:
                problems.append(f"stripe {si}: {count} slots in use, above the limit")
        # classes: every chunk is either on its free list or referenced, not both
        for c in range(s.nclasses):
            cl = &s.classes[c]
            free_set = set()
            off = cl.free_head
            steps = 0
            prev = 0
            while off:
                if off in free_set or steps > s.npages * cl.per_slab:
                    problems.append(f"class {c}: free list loops at {off}")
                    break
                rel = off - s.arena_off
                if off < s.arena_off or rel // s.page_size >= pu or \
                        s.pagemap[rel // s.page_size] != c + 1:
                    problems.append(f"class {c}: free list points outside its pages ({off})")
                    break
                e = ENT(s, off)
                if e.flags != 0:
                    problems.append(f"class {c}: free chunk {off} has flags {e.flags:#x}")
                if off in referenced:
                    problems.append(f"class {c}: chunk {off} is free and referenced")
                if <uint64_t>e.expire_ms != prev:
                    problems.append(f"class {c}: free chunk {off} links back to "
                                    f"{e.expire_ms}, not {prev}")
                free_set.add(off)
                prev = off
                off = e.version
                steps += 1
            if prev != cl.free_tail:
                problems.append(f"class {c}: free list ends at {prev}, tail says {cl.free_tail}")
            used = 0
            slabs = 0
            for p in range(pu):
                if s.pagemap[p] != c + 1:
                    continue
                slabs += 1
                for chunk_no in range(cl.per_slab):
                    off = CHUNK(s, p, cl, chunk_no)
                    if ENT(s, off).flags & BK_E_USED:
                        used += 1
                        if off not in referenced:
                            problems.append(f"class {c}: chunk {off} is used but no slot "
                                            "references it (leaked)")
                    elif off not in free_set:
                        problems.append(f"class {c}: chunk {off} is neither used nor free")
            if used != cl.used:
                problems.append(f"class {c}: count of used chunks {cl.used}, found {used}")
            if slabs != cl.slabs:
                problems.append(f"class {c}: {cl.slabs} slabs counted, {slabs} found")
        # pages: each below pages_used is a slab's first page, one of its further
        # pages, or unassigned (counted in free_pages); nothing else
        free_pages = 0
        p = 0
        while p < pu:
            c = s.pagemap[p]
            if c == 0:
                free_pages += 1
                p += 1
            elif c & 0x80 or c > s.nclasses:
                problems.append(f"page {p}: pagemap {c:#x} is no slab's first page (orphan)")
                p += 1
            else:
                for i in range(1, s.classes[c - 1].slab_pages):
                    if p + i >= pu or s.pagemap[p + i] != (0x80 | c):
                        problems.append(f"page {p + i}: pagemap {s.pagemap[p + i]:#x}, "
                                        f"not a further page of class {c - 1}'s slab")
                p += s.classes[c - 1].slab_pages
        if free_pages != hd.free_pages:
            problems.append(f"pages: {free_pages} unassigned below pages_used, "
                            f"free_pages says {hd.free_pages}")
        for i in range(s.max_buckets):
            if s.bucketv[i].state == 0:
                continue
            if s.bucketv[i].state == 2 and not dropper_alive(&s.bucketv[i]):
                problems.append(f"bucket {s.bucketv[i].name.decode()!r} is left half "
                                "dropped by a dead process")
            if s.bucketv[i].keys != keys.get(i, 0) or s.bucketv[i].bytes != nbytes.get(i, 0):
                problems.append(
                    f"bucket {s.bucketv[i].name.decode()!r}: gauges say {s.bucketv[i].keys} "
                    f"keys / {s.bucketv[i].bytes} bytes, the index {keys.get(i, 0)} / "
                    f"{nbytes.get(i, 0)}")
            if s.bucketv[i].mem != mem.get(i, 0):
                problems.append(
                    f"bucket {s.bucketv[i].name.decode()!r}: memory gauge says "
                    f"{s.bucketv[i].mem} bytes of chunks, the index {mem.get(i, 0)}")
            if s.bucketv[i].comp_saved != saved.get(i, 0):
                problems.append(
                    f"bucket {s.bucketv[i].name.decode()!r}: compression gauge says "
                    f"{s.bucketv[i].comp_saved} bytes saved, the index {saved.get(i, 0)}")
        head, tail = bk_load_acq64(&hd.ring_head), bk_load_acq64(&hd.ring_tail)
        if tail > head or head - tail > s.ring_size:
            problems.append(f"ring: head {head}, tail {tail}, size {s.ring_size}")
    finally:
        for c in range(s.nclasses):
            unlock_class(s, c)
        unlock_stripes(s, s.nstripes)
    return problems
