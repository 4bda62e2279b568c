# writer.pxi: what the writer process reads of the segment for its own loop, beside
# the ring's consumer side (meta.pxi: ring_read; ring.pxi: ring_idle_wait, ring_doze).


def expire_position(Store s):
    """(the stripe the next expiry cycle starts at, the number of stripes): the writer
    runs the cycle in short slices, draining the ring between them, and learns from
    the cursor when a slice has gone all the way round."""
    s._open()
    return s.hdr.expire_cursor % s.nstripes, s.nstripes


def writer_doorbell(Store s):
    """The doorbell word (cext/ring.pxi): 1 while the writer sleeps waiting for records;
    a producer under `fsync: always` sets it back to 0 when it rings. For tests and
    `bukt status`-style inspection."""
    s._open()
    return bk_load_acq32(&s.hdr.writer_sleeping)


def writer_dozing(Store s):
    """The dozing word (cext/ring.pxi, THE DOZE): 1 while the idle writer sleeps until
    its next tick, and any commit will wake it. For tests and inspection."""
    s._open()
    return bk_load_acq32(&s.hdr.writer_dozing)


def flush_waiters(Store s):
    """How many sleepers on the flush futex count themselves (cext/store.pxi, THE FLUSH
    WAKE): while it is 0 a flush makes no futex wake. For tests and inspection."""
    s._open()
    return bk_load_acq32(&s.hdr.flush_waiters)


def writer_claim(Store s, bint based=False):
    """A writer process claims the segment (cext/ring.pxi, THE WRITER'S CLAIM): from
    the first claim on, changes to persisted buckets go to the ring. Stores 1 (2 with
    `based`: the data directory already holds everything the table does, as after a
    cold start that loaded the table from it), then takes and releases every stripe
    lock and the meta lock, so that each change is in the table before the pass, or
    in the ring after it. On a claimed segment it only raises 1 to 2 with `based`.
    Returns the state found: 0 never claimed, 1 claimed with no base file yet, 2."""
    cdef bk_header *h = s.hdr
    cdef uint32_t si, was
    s._writable()
    was = bk_load_acq32(&h.writer_claimed)
    if was == 0:
        bk_store_rel32(&h.writer_claimed, 2 if based else 1)
        bk_fence_full()
        for si in range(s.nstripes):
            lock_stripe(s, si)
            unlock_stripe(s, si)
        lock_meta(s)
        unlock_meta(s)
        maybe_recount(s)
    elif based and was == 1:
        bk_store_rel32(&h.writer_claimed, 2)
    return was


def writer_claimed(Store s):
    """The claim's state (writer_claim): 0 no writer process ever claimed the
    segment, 1 one did and its base file is not in yet, 2 claimed with its base in."""
    s._open()
    return bk_load_acq32(&s.hdr.writer_claimed)


def feed_settings(Store s, uint32_t carry, bint always=False):
    """The writer asks for cache-only buckets' changes as feed-only records (ring.pxi,
    THE FEED'S RECORDS): 0 stops them; else they carry values shorter than `carry`
    bytes (1 + feed.max_value), from watched buckets only (their leases: feed_watch)
    or, `always`, from every one. Returns the previous setting."""
    cdef uint32_t was
    s._writable()
    was = bk_load_acq32(&s.hdr.feed_cache_only)
    bk_store_rel32(&s.hdr.feed_always, 1 if always else 0)
    bk_store_rel32(&s.hdr.feed_cache_only, carry)
    return was


cdef inline uint32_t _feed_tick(Store s) noexcept:
    """Now on the LRU clock's scale (64 ms ticks since the segment was made), read
    from the clock itself: the segment's lru_clock lags it."""
    cdef int64_t t = (s.now_coarse() - s.hdr.created_ms) >> 6
    return <uint32_t>t if t > 0 else 0


def feed_watching(Store s, uint32_t lease_ms):
    """A watcher of the change feed is here (bukt/feed.py, THE WATCHED WORD): keep the
    header's feed_watched at least half of `lease_ms` ahead of the clock, so producers
    ring the writer's doorbell (ring.pxi, THE DOORBELL). A load and a compare; a
    store (racy max: two renewals store about the same tick) once half the lease is
    gone. False, changing nothing, on a closed or read-only store."""
    cdef uint32_t ticks = max(2, (lease_ms + 63) >> 6), now_t, until
    if not s.mapped or s.readonly:
        return False
    s._open()
    now_t = _feed_tick(s)
    until = bk_load_rlx32(&s.hdr.feed_watched)
    if until < now_t + ticks // 2:
        bk_store_rel32(&s.hdr.feed_watched, now_t + ticks)
    return True


def feed_watched(Store s):
    """Is the change feed watched now (feed_watching renewed the header's feed_watched
    within its lease)? The writer then gathers a small batch briefly: its watchers wait."""
    s._open()
    return bk_load_rlx32(&s.hdr.feed_watched) > _feed_tick(s)


def feed_watch(Store s, uint32_t idx, uint32_t gen, uint32_t lease_ms):
    """A watcher's hold on cache-only bucket (idx, gen) (bukt/feed.py, THE LEASE):
    renew its lease to `lease_ms` from now and return (run, since): the lease's run
    (bumped whenever a lapsed lease is taken up again: a watcher that sees it move
    may have missed changes) and the ring position the run began at (the feed holds
    every change of the bucket after it). None when the bucket needs no lease: it is
    persisted (logged changes are always in the ring), it is gone or replaced, or the
    writer asks for every cache-only change (feed_always)."""
    cdef bk_header *h
    cdef bk_bucket *b
    cdef uint64_t lease, lease2, since, suspect
    cdef uint32_t ticks = max(2, (lease_ms + 63) >> 6), until, run, now_t
    s._open()
    h = s.hdr
    if idx >= s.max_buckets:
        raise _err.InvalidArgument(f"bucket slot {idx} outside the table")
    b = &s.bucketv[idx]
    if bk_load_acq32(&b.state) != 1 or b.gen != gen or b.persist \
            or bk_load_acq32(&h.feed_always):
        return None
    if bk_load_acq32(&h.feed_cache_only) == 0:
        raise _err.InvalidArgument(
            f"bucket {b.name.decode()!r} is cache-only and the writer publishes no "
            "cache-only changes (feed.cache_only: never)")
    if s.readonly:
        raise _err.ReadOnly(
            f"watching cache-only bucket {b.name.decode()!r} takes a hold on it in the "
            f"segment (feed.lease), and segment {s.name!r} is attached read-only")
    while True:
        now_t = _feed_tick(s)
        lease = bk_load_acq64(&b.feed_lease)
        until, run = <uint32_t>lease, <uint32_t>(lease >> 32)
        if until > now_t + 1:           # live, with a tick to spare for the CAS below
            if until - now_t > ticks // 2:
                since = bk_load_acq64(&b.feed_since)
                if bk_load_acq64(&b.feed_lease) >> 32 == run:
                    return (run, since)
                continue
            suspect = (<uint64_t>run << 32) | (now_t + ticks)
            if not bk_cas64(&b.feed_lease, lease, suspect):
                continue
            if _feed_tick(s) < until:   # it was live up to the CAS: the run goes on
                since = bk_load_acq64(&b.feed_since)
                if bk_load_acq64(&b.feed_lease) >> 32 == run:
                    return (run, since)
                continue
        else:
            suspect = lease
        # lapsed (or about to, or the CAS came too late to be sure): a new run, from
        # the ring's head; since is stored before the lease that names its run
        lock_meta(s)
        try:
            lease2 = bk_load_acq64(&b.feed_lease)
            if lease2 == suspect or <uint32_t>lease2 <= _feed_tick(s) + 1:
                run = <uint32_t>(lease2 >> 32) + 1
                since = bk_load_acq64(&h.ring_head)
                bk_store_rel64(&b.feed_since, since)
                now_t = _feed_tick(s)
                bk_store_rel64(&b.feed_lease, (<uint64_t>run << 32) | (now_t + ticks))
                return (run, since)
        finally:
            unlock_meta(s)


def feed_lost(Store s):
    """The highest ring position a cache-only change could not reserve its feed record
    at (0: none ever): the writer makes a gap in the change feed when it moves."""
    s._open()
    return bk_load_acq64(&s.hdr.feed_lost)
