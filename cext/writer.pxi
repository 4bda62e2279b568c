# writer.pxi: what the writer process reads of the segment for its own loop, beside
# the ring's consumer side (meta.pxi: ring_read; ring.pxi: ring_idle_wait).


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


def feed_settings(Store s, uint32_t carry):
    """The writer asks for cache-only buckets' changes as feed-only records (ring.pxi,
    THE FEED'S RECORDS): 0 stops them; else they carry values shorter than `carry`
    bytes (1 + feed.max_value). Returns the previous setting."""
    cdef uint32_t was
    s._writable()
    was = bk_load_acq32(&s.hdr.feed_cache_only)
    bk_store_rel32(&s.hdr.feed_cache_only, carry)
    return was


def feed_lost(Store s):
    """The highest ring position a cache-only change could not reserve its feed record
    at (0: none ever): the writer makes a gap in the change feed when it moves."""
    s._open()
    return bk_load_acq64(&s.hdr.feed_lost)
