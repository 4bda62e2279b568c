# locks.pxi: taking the robust mutexes, and what the taker does when the previous
# holder died inside (the LOCK RULES block of core.pyx says why it is safe).
#
# Every acquire tries once without releasing the GIL (the uncontended case costs a
# few nanoseconds), and only when the lock is busy waits with the GIL released, so a
# process's other threads run while it waits for another process.

cdef int _acquire(bk_lock *lk) noexcept:
    global _inside_waits
    cdef int rc = bk_lock_try(lk)
    if rc == EBUSY:
        _inside_waits += 1
        with nogil:
            rc = bk_lock_acquire(lk)
        _inside_waits -= 1
    return rc


cdef int _lock_error(str what, int rc) except -1:
    raise _err.BuktError(f"{what} lock failed: {os.strerror(rc)} ({rc}); "
                         "run `bukt check` and restart the service")


cdef int lock_stripe(Store s, uint32_t si) except -1:
    cdef int rc = _acquire(&STRIPE(s, si).lock)
    if rc == 0:
        return 0
    if rc == EOWNERDEAD:
        repair_stripe(s, si)
        bk_lock_consistent(&STRIPE(s, si).lock)
        return 0
    return _lock_error(f"stripe {si}", rc)


cdef inline void unlock_stripe(Store s, uint32_t si) noexcept:
    bk_lock_release(&STRIPE(s, si).lock)


cdef int trylock_stripe(Store s, uint32_t si) except -1:
    """1 when taken (repaired if its holder died), 0 when busy."""
    cdef int rc = bk_lock_try(&STRIPE(s, si).lock)
    if rc == 0:
        return 1
    if rc == EBUSY:
        return 0
    if rc == EOWNERDEAD:
        repair_stripe(s, si)
        bk_lock_consistent(&STRIPE(s, si).lock)
        return 1
    return _lock_error(f"stripe {si}", rc)


cdef int lock_class(Store s, uint32_t c) except -1:
    cdef int rc = _acquire(&s.classes[c].lock)
    if rc == 0:
        return 0
    if rc == EOWNERDEAD:
        rebuild_class(s, c)
        bk_lock_consistent(&s.classes[c].lock)
        _note_repair(s)
        return 0
    return _lock_error(f"class {c}", rc)


cdef inline void unlock_class(Store s, uint32_t c) noexcept:
    bk_lock_release(&s.classes[c].lock)


cdef int lock_simple(Store s, bk_lock *lk, str what) except -1:
    """The alloc and ring locks: their holders store the word that publishes their
    work last (pages_used, ring_head), so a death leaves nothing to repair."""
    cdef int rc = _acquire(lk)
    if rc == 0:
        return 0
    if rc == EOWNERDEAD:
        bk_lock_consistent(lk)
        _note_repair(s)
        return 0
    return _lock_error(what, rc)


cdef int lock_meta(Store s) except -1:
    cdef int rc = _acquire(&s.hdr.meta_lock)
    if rc == 0:
        return 0
    if rc == EOWNERDEAD:
        repair_meta(s)
        bk_lock_consistent(&s.hdr.meta_lock)
        _note_repair(s)
        return 0
    return _lock_error("meta", rc)


cdef inline void unlock_meta(Store s) noexcept:
    bk_lock_release(&s.hdr.meta_lock)


cdef inline void _note_repair(Store s) noexcept:
    bk_fetch_add_u64(&s.hdr.repairs, 1)
    bk_store_rel32(&s.hdr.needs_recount, 1)


cdef int maybe_recount(Store s) except -1:
    """After a repair the bucket gauges may be off by the dead holder's last change:
    recount them, holding no lock when called."""
    if bk_load_acq32(&s.hdr.needs_recount) and not s.readonly:
        recount(s)
    return 0
