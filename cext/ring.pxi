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
# producer sees the 1. While the writer gathers a batch (ring_gather_wait) it sleeps
# for a number of bytes, not for the next record: it publishes that number in
# gather_bytes before it sets the word, and a producer whose record ends short of it
# leaves the writer asleep (the one that completes the batch rings; the gather's
# timeout bounds the wait if nobody does). Four committers used to wake it four times a
# batch, three of them to find the batch short and sleep again, each wake a context
# switch on the cores the committers need. Under everysec and no nobody waits for the
# writer, so producers never ring, and the sleep is just the poll interval: unless the
# change feed is watched, for then its watchers wait for the writer. The header's
# feed_watched is the LRU-clock tick until which someone watches (watchers renew it,
# bukt/feed.py, THE WATCHED WORD); while it is ahead of lru_clock producers ring just
# as under always (the same fences, the same handshake), and after a small batch the
# writer gathers for a short while only (bukt/writer/process.py, WATCHED), so an event
# is about one wake-up behind its commit, not a poll and a 2 ms gather.
#
# THE DOZE (every policy, watched or not). Polling an empty ring every 2 ms cost an
# idle writer 500 wake-ups and about 2% of a CPU a second. So a writer that has found
# the ring empty for a while (DOZE_AFTER_S, bukt/writer/process.py) sleeps until its
# next tick on a second word, writer_dozing, which every commit rings. THE RULE, once:
#
#     producer (ring_commit): state = COMMITTED; full fence; load writer_dozing:
#                             1 -> CAS 1 -> 0, and the winner wakes the writer
#     writer (ring_doze):     writer_dozing = 1; full fence; look at the tail record:
#                             committed -> no sleep; else sleep while the word is 1
#
# Either the writer sees the record or the producer sees the 1 (Dekker), so no commit
# waits for the tick. The fence is in every commit, ahead of the sync_always and
# feed_watched loads too (ring_doorbell relies on it): one full fence and one load
# more than an unwatched everysec commit paid before, from the line sync_always is
# read from, which only the dozing writer writes. A busy writer never sets the word,
# so only the first commit after a doze pays a futex wake. A writer killed while
# dozing leaves the word 1: the next commit takes it to 0 and wakes nobody. A record
# committed by a repair (not ring_commit) rings nothing: the writer's timeout picks
# it up.
#
# THE CLAIM (fairness). Room in a nearly full ring goes to whoever polls first after
# the writer frees some, so many producers of small records, each needing a few
# hundred bytes, can keep a producer of a large one (which needs twice its record
# free, for the padding at the wrap) from ever seeing enough for ring_wait, though the
# ring keeps moving. So a producer that has waited CLAIM_AFTER_US publishes a claim
# in the header: ring_claim = 2 * need bytes, with its ticket and a time stamp, under
# the ring lock. Every other producer then treats the ring as ring_claim bytes
# smaller, both when it waits for room (ring_wait_space) and when it takes it
# (ring_reserve, under the ring lock, where it counts), so the ring drains down to
# what the claimant needs and nobody else can fill it again. The claimant uses the
# whole ring, and gives the claim up when its record is reserved, or when it stops
# waiting (RingFull, or room seen before taking its stripe lock: a wait that found
# room, then lost it under the stripe lock, claims again in ring_reserve_wait).
# One claim stands at a time; another starved waiter takes it over when it is free.
#
# A claim must not outlive its waiter: the waiter renews the stamp on every poll, a
# claim not renewed for CLAIM_STALE_MS is void for everyone (the waiter is stopped,
# or died and its pid was reused), and a waiter that wants to claim takes over one
# whose pid is dead at once. A void claim costs the others nothing but some room
# for a while; a live claimant whose claim went void while it was descheduled just
# claims again. The fast path (room, and no claim) reads one more word, ring_claim,
# which sits on ring_head's cache line that both functions read anyway.
#
# THE CLAIM FROM AN EVENT LOOP. A server worker must not wait inside the core: its
# one thread is the event loop of all its requests. It sets its Store's ring_wait to
# 0, so a write that finds no room raises RingFull at once (with `room`, the claim
# its record needs), keeps the request and tries it again from the loop every
# millisecond or so (bukt/writewait/ringroom.py). To take part in the claim across those tries,
# on each one it calls Store.ring_claim_room(room, waited, ticket): without blocking,
# that takes the claim once `waited` is past CLAIM_AFTER_US, renews it, or returns 0
# while another waiter's claim stands. Around the retried write it sets
# Store.ring_ticket to its ticket, so that ring_wait_space and ring_reserve count
# the claim as the writer's own and end it when its record is reserved; it drops
# the claim itself (ring_claim_drop) when the request goes through or gives up. The
# waits in the core never renew or drop a claim they did not take. A worker that dies
# or stops leaves a claim that goes void as any other. The fast path costs one load
# more: ring_reserve is passed s.ring_ticket, where it was passed 0.

# THE WRITER'S CLAIM (writer_claimed in the header). A segment no writer process has
# claimed, which a program made with bukt.create and uses without one (embedded use,
# docs/api.md), queues nothing here: nobody would ever drain the ring, so after
# ring_size bytes of changes every write would wait ring_wait and fail with RingFull.
# A producer reads the word under the lock that orders its change, its stripe lock (or
# the meta lock for a bucket change): 0, and the change reaches the table only. A
# writer process claims the segment by storing 1, then taking and releasing every
# stripe lock and the meta lock in turn (writer_claim, cext/writer.pxi). A producer
# whose section held a lock before the pass took it read 0, and its change is in the
# table before the pass moves on; one whose section came after read 1 (the lock orders
# the store before its load), and its record is in the ring. So once the pass ends,
# every change is either in the table, which the writer snapshots next into a base file
# covering the ring's tail, or in the ring at or after that tail: none is in neither.
# The writer stores 2 once that base file is in (a writer that dies before then leaves
# 1, and the next one writes the base again). A claim is never given up: writes to a
# segment whose writer died wait for ring room and then fail with RingFull, as they
# must, since the next writer logs what waits. ring_wait_space returns at once while
# nobody has claimed the segment. The word shares ring_head's line, which a producer
# that logs reads anyway.

# THE LAG LIMIT (fsync: everysec). Nobody waits for the log under everysec, so a writer
# process stuck on its disk (a write or an fsync that does not return, a device that
# hangs) would leave every change acknowledged and held in memory alone, up to the
# ring's size, for as long as it stays stuck. The writer publishes the bound
# (lag_limit_ms, the configuration's fsync_lag_limit; 0 under the other policies) and
# a wall time before which every committed change is in the log (log_current_ms: the
# start of the last drain whose head the log has passed, bukt/writer/lag.py, so its age
# is that of the oldest change the log may lack, under a steady load too). A producer that finds the log older than the
# bound while the writer process lives refuses the write with DiskError, as it does
# when the writer reports a disk error; a dead writer's segment keeps the ring wait
# and RingFull (the next writer logs what waits). A write failure is published at
# once; this catches what cannot be: a writer alive but not coming back, or one whose
# log falls behind for good. writer_info() reports it as the writer's error, so
# health checks say why. (log_lag_ms and lag_error are in store.pxi.)

cdef extern from *:
    """
    static inline void bk_fence_full(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
    """
    void bk_fence_full() nogil

cdef extern from "unistd.h" nogil:
    int usleep(unsigned int usec)


cdef inline bint claimed(bk_header *h) noexcept nogil:
    """Has a writer process claimed the segment? (THE WRITER'S CLAIM: exact under a
    stripe lock or the meta lock)"""
    return bk_load_acq32(&h.writer_claimed) != 0


cdef inline bk_rec *REC(Store s, uint64_t pos) noexcept nogil:
    return <bk_rec *>(s.ring + pos % s.ring_size)


cdef enum:
    CLAIM_AFTER_US = 2000       # a waiter claims room after this long: well past the
                                # writer's drain step, so a ring that merely filled for
                                # a moment sees no claims
    CLAIM_STALE_MS = 1000       # a claim not renewed for this long is void (its waiter
                                # is stopped, or dead): a live waiter renews it every
                                # millisecond or so, and even a loaded machine runs it
                                # more often than this

cdef uint32_t _claims = 0       # this process's claims so far: tickets (under the GIL)


cdef inline int64_t claim_age_ms(bk_header *h) noexcept nogil:
    """Milliseconds since the claim's waiter renewed it (signed: a stamp renewed
    after this process read the clock is a little in the future)."""
    return <int64_t>(<uint64_t>bk_mono_ns() // 1000000 - bk_load_rlx64(&h.ring_claim_ms))


cdef inline uint32_t others_claim(bk_header *h, uint64_t ticket) noexcept nogil:
    """The room the caller must leave free for another waiter's claim: 0 when none
    stands, it is the caller's own (`ticket`), or it is void (not renewed for
    CLAIM_STALE_MS). Exact under the ring lock, advisory without it."""
    cdef uint32_t claim = bk_load_rlx32(&h.ring_claim)
    if claim == 0 or (ticket != 0 and bk_load_rlx64(&h.ring_claim_ticket) == ticket):
        return 0
    if claim_age_ms(h) > CLAIM_STALE_MS:
        return 0
    return claim


cdef inline bint claim_stands(bk_header *h, uint64_t ticket) noexcept nogil:
    """Another waiter's claim stands, and its process lives (a slow path: a syscall)."""
    return others_claim(h, ticket) != 0 and \
        bk_pid_alive(<uint32_t>(bk_load_rlx64(&h.ring_claim_ticket) >> 32))


cdef uint64_t claim_room(Store s, uint64_t ticket, uint32_t claim, double waited) except? 1:
    """Called by a waiter on each poll: after CLAIM_AFTER_US, hold a claim of `claim`
    bytes (THE CLAIM above). Returns the waiter's ticket while it holds the claim
    (renewed), else 0: too early, or another live waiter's claim stands."""
    global _claims
    cdef bk_header *h = s.hdr
    if waited * 1e6 < CLAIM_AFTER_US:
        return 0
    if ticket and bk_load_rlx64(&h.ring_claim_ticket) == ticket and \
            bk_load_rlx32(&h.ring_claim):
        bk_store_rlx64(&h.ring_claim_ms, <uint64_t>bk_mono_ns() // 1000000)  # renew
        return ticket
    if claim_stands(h, ticket):                 # looked at without the lock first:
        return 0                                # many waiters may poll at once
    if ticket == 0:
        _claims += 1
        ticket = (<uint64_t>os.getpid() << 32) | _claims
    lock_simple(s, &h.ring_lock, "ring")
    if claim_stands(h, ticket):
        bk_lock_release(&h.ring_lock)
        return 0
    # take it (over a void or dead one): the stamp and ticket before the claim itself,
    # so that whoever reads the claim without the lock finds them
    bk_store_rlx64(&h.ring_claim_ms, <uint64_t>bk_mono_ns() // 1000000)
    h.ring_claim_ticket = ticket
    bk_store_rel32(&h.ring_claim, claim)
    bk_lock_release(&h.ring_lock)
    return ticket


cdef int claim_drop(Store s, uint64_t ticket) except -1:
    """Give up the claim of `ticket` if it still stands (a waiter that stops waiting)."""
    cdef bk_header *h = s.hdr
    if ticket == 0 or bk_load_rlx64(&h.ring_claim_ticket) != ticket:
        return 0
    lock_simple(s, &h.ring_lock, "ring")
    if h.ring_claim_ticket == ticket:
        bk_store_rel32(&h.ring_claim, 0)
        h.ring_claim_ticket = 0
    bk_lock_release(&h.ring_lock)
    return 0


cdef int ring_wait_space(Store s, uint32_t need) except -1:
    """Before taking a stripe lock: wait (bounded by ring_wait) until a record of
    `need` bytes fits, counting the worst padding at the wrap and the room another
    waiter has claimed."""
    cdef bk_header *h = s.hdr
    cdef uint64_t room = s.ring_size
    if not claimed(h):
        return 0                                # nothing goes to the ring (above)
    if bk_load_acq32(&h.writer_error_code):
        raise _err.DiskError(
            "the writer process reports a disk error ("
            + h.writer_error[:256].split(b"\0", 1)[0].decode(errors="replace")
            + "); writes to persisted buckets are refused until it clears. "
            "Check `bukt status`.")
    age = log_lag_ms(h)
    if age and bk_pid_alive(h.writer_pid):
        raise _err.DiskError(
            lag_error(h, age) + "; writes to persisted buckets are refused until it "
            "catches up. Check `bukt status`.")
    # fast path: room for the record and for any claim, whether it stands or not
    if bk_load_acq64(&h.ring_head) - bk_load_acq64(&h.ring_tail) + 2 * need \
            + bk_load_rlx32(&h.ring_claim) <= room:
        return 0
    return ring_wait_space_slow(s, need)


cdef int ring_wait_space_slow(Store s, uint32_t need) except -1:
    """Slow path of ring_wait_space: poll every millisecond, claiming room once the
    wait has gone on for CLAIM_AFTER_US, until it fits or ring_wait has passed. A
    front end's claim (s.ring_ticket, THE CLAIM FROM AN EVENT LOOP) counts as ours,
    and is renewed and given up by that front end, not here."""
    global _inside_waits
    cdef bk_header *h = s.hdr
    cdef uint64_t room = s.ring_size, held = s.ring_ticket, ticket = held
    start = time.monotonic()
    deadline = start + s.ring_wait
    try:
        while bk_load_acq64(&h.ring_head) - bk_load_acq64(&h.ring_tail) + 2 * need \
                + others_claim(h, ticket) > room:
            now = time.monotonic()
            if now >= deadline or bk_load_rlx32(&h.retired):
                raise ring_full(s,
                    f"change ring full for {s.ring_wait:g} s ({s.ring_size} bytes): the "
                    "writer process is down or behind; the write was not applied. "
                    "Check `bukt status`.", need)
            if not held:
                ticket = claim_room(s, ticket, 2 * need, now - start)
            # the writer frees room a batch at a time, often within 100 us: a 1 ms
            # sleep left the ring idle most of it (a writer process behind for longer
            # costs this poll 10k wake-ups a second, only while the ring is full)
            _inside_waits += 1                  # no re-attach meanwhile (RETIREMENT)
            try:
                time.sleep(0.0001 if now - start < 0.01 else 0.001)
            finally:
                _inside_waits -= 1
    finally:
        if ticket != held:
            claim_drop(s, ticket)
    return 0


cdef uint64_t ring_reserve(Store s, uint32_t need, uint32_t owner, uint64_t *intent_ring,
                           uint64_t ticket) except? 1:
    """Reserve `need` bytes; 0 when they do not fit beside another waiter's claim.
    The position is stored into *intent_ring before ring_head publishes the
    reservation. A claimant passes its `ticket` (others 0): its claim ends with the
    reservation."""
    cdef bk_header *h = s.hdr
    cdef uint64_t R = s.ring_size, head, tail, off, pad = 0, pos, claim
    cdef bk_rec *r
    if s.epoch != _fork_epoch:
        s._claim_counter_row()                  # refreshes s.pid after a fork
    lock_simple(s, &h.ring_lock, "ring")
    if bk_load_rlx32(&h.retired):               # store.pxi, RETIREMENT: the replacing
        bk_lock_release(&h.ring_lock)           # writer drains below its mark only
        return 0
    head = h.ring_head
    tail = bk_load_acq64(&h.ring_tail)
    claim = h.ring_claim
    if claim:                                   # slow path: a waiter claims room
        claim = others_claim(h, ticket)
        if claim == 0 and h.ring_claim_ticket != ticket:
            bk_store_rel32(&h.ring_claim, 0)    # void: its waiter stopped or died
            h.ring_claim_ticket = 0
    off = head % R
    if R - off < need:
        pad = R - off
    if head + pad + need - tail + claim > R:
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
    if ticket and h.ring_claim_ticket == ticket:
        bk_store_rel32(&h.ring_claim, 0)        # served: the others have the ring again
        h.ring_claim_ticket = 0
    bk_lock_release(&h.ring_lock)
    return pos


cdef uint64_t ring_reserve_wait(Store s, uint32_t need, uint32_t owner,
                                uint64_t *intent_ring) except? 1:
    """ring_reserve, waiting up to ring_wait for room: writers that all saw room
    before taking their locks may find it taken. Waiting with a stripe lock held
    cannot deadlock: the consumer drains the ring without taking any stripe lock.
    A long wait claims room (THE CLAIM above); a front end's claim (s.ring_ticket)
    is used, not renewed or given up. 0 when the ring stayed full."""
    cdef uint64_t held = s.ring_ticket, ticket = held
    cdef uint64_t pos = ring_reserve(s, need, owner, intent_ring, held)
    cdef double start, deadline, now
    if pos or bk_load_rlx32(&s.hdr.retired):
        return pos
    start = time.monotonic()
    deadline = start + s.ring_wait
    try:
        now = start
        while pos == 0 and now < deadline and not bk_load_rlx32(&s.hdr.retired):
            if not held:
                ticket = claim_room(s, ticket, 2 * need, now - start)
            wait_inside(500)
            pos = ring_reserve(s, need, owner, intent_ring, ticket)
            now = time.monotonic()
    finally:
        if ticket != held:
            claim_drop(s, ticket)
    return pos


cdef int wait_inside(unsigned int usec) except -1:
    """Sleep `usec` microseconds without the GIL, inside an operation (counted in
    _inside_waits: no re-attach meanwhile, store.pxi RETIREMENT)."""
    global _inside_waits
    _inside_waits += 1
    with nogil:
        usleep(usec)
    _inside_waits -= 1
    return 0


cdef object ring_full(Store s, str message, uint32_t need):
    """RingFull for a record of `need` bytes. Its `room` is what a front end that
    tries the write again from its event loop claims (THE CLAIM FROM AN EVENT LOOP):
    the record and as much again for the padding at the wrap. SegmentRetired instead
    when the ring refused it because its segment is being replaced (store.pxi,
    RETIREMENT): nothing was applied, and the next call attaches to the new one."""
    if bk_load_acq32(&s.hdr.retired):
        return _err.SegmentRetired(
            f"segment /bukt-{s.name} is being replaced by a cold start: the write was "
            "not applied. Try it again (the next operation attaches to the new segment).")
    exc = _err.RingFull(message)
    exc.room = 2 * need
    return exc


def ring_claim(Store s):
    """The claim standing in the ring (THE CLAIM above), for tests and inspection:
    None, or (bytes, pid, ms since its waiter renewed it)."""
    s._open()
    cdef bk_header *h = s.hdr
    cdef uint32_t claim = bk_load_acq32(&h.ring_claim)
    if claim == 0:
        return None
    return (claim, <uint32_t>(bk_load_rlx64(&h.ring_claim_ticket) >> 32), claim_age_ms(h))


# THE FEED'S RECORDS (bukt/feed.py, THE SOURCE). A change to a cache-only bucket is
# not logged, but the change feed wants it, and only the writer process publishes the
# feed. While the writer asks for them (feed_cache_only in the header) and someone
# watches the bucket (its feed_lease: bukt/feed.py, THE LEASE), such changes
# reserve a feed-only record (BK_RF_FEED) the writer publishes and leaves out of the
# log. A cache-only write never waits for the ring, nor is refused because of it: it
# reserves its record at once, and only while the ring is under half full, so it
# cannot take the room a persisted write waits for; failing that it changes the table
# alone and raises feed_lost to the ring's head, which the writer turns into a gap
# that watchers behind it are told of ("gone"), never a silent one. The record is
# reserved, filled, committed and repaired exactly as a logged one (its stripe's
# intent names it). s.rec_flags holds the flags an operation adds to its records
# (BK_RF_INCR, BK_RF_FLUSH) for the feed to tell them apart; the log ignores them.

cdef inline uint32_t feeds(Store s, bk_bucket *b) noexcept nogil:
    """Does a change to bucket b go to the ring as a feed-only record? 0: no; else 1 +
    the largest value it carries. Only while someone watches the bucket (its lease,
    THE LEASE in bukt/feed.py: until > the LRU clock, which lags the true clock, so a
    producer never stops before a watcher thinks the lease ended), or with
    feed_always. (Exact under the stripe lock, like logs().)"""
    cdef uint32_t carry
    if b.persist or not s.logging or not claimed(s.hdr):
        return 0
    carry = bk_load_rlx32(&s.hdr.feed_cache_only)
    if carry == 0:
        return 0
    if <uint32_t>bk_load_acq64(&b.feed_lease) > bk_load_rlx32(&s.hdr.lru_clock) \
            or bk_load_rlx32(&s.hdr.feed_always):
        return carry
    return 0


cdef uint64_t feed_reserve(Store s, uint32_t need, uint32_t owner, uint64_t *intent_ring) except? 1:
    """Reserve a feed-only record of `need` bytes at once, or note the gap (above)."""
    cdef bk_header *h = s.hdr
    cdef uint64_t head = bk_load_acq64(&h.ring_head), cur, pos = 0
    if head - bk_load_acq64(&h.ring_tail) + 2 * need <= s.ring_size // 2:
        pos = ring_reserve(s, need, owner, intent_ring, s.ring_ticket)
    if pos == 0:
        head = bk_load_acq64(&h.ring_head)
        while True:
            cur = bk_load_acq64(&h.feed_lost)
            if cur >= head or bk_cas64(&h.feed_lost, cur, head):
                break
    return pos


cdef inline void ring_fill(Store s, uint64_t pos, uint8_t rtype, uint16_t bidx, uint32_t gen,
                           const char *k, uint32_t klen, const char *v, uint32_t vlen,
                           int64_t expire_ms, uint64_t version, uint8_t flags,
                           uint8_t rflags=0) noexcept:
    """Fill the record at pos. flags: the entry's (BK_E_CARRY: single-read in the
    record's flags, the object bits in its eflags); rflags: BK_RF_* of this record
    (with s.rec_flags, the operation's)."""
    cdef bk_rec *r = REC(s, pos)
    r.type = rtype
    r.bucket = bidx
    r.bucket_gen = gen
    r.klen = klen
    r.vlen = vlen
    r.expire_ms = expire_ms
    r.version = version
    r.flags = (flags & BK_E_SINGLE) | rflags | s.rec_flags
    r.eflags = flags & BK_E_OBJECT
    if klen:
        memcpy(<char *>r + 48, k, klen)
    if vlen:
        memcpy(<char *>r + 48 + klen, v, vlen)


cdef inline void ring_commit(Store s, uint64_t pos) noexcept:
    cdef bk_rec *r = REC(s, pos)
    cdef bk_header *h = s.hdr
    bk_store_rel8(&r.state, BK_R_COMMITTED)
    bk_fence_full()                             # THE DOORBELL: see the writer's word,
    if bk_load_acq32(&h.writer_dozing):         # or the writer sees this record
        if bk_cas32(&h.writer_dozing, 1, 0):    # it sleeps long: wake it, whoever waits
            bk_futex_wake(&h.writer_dozing)
    elif h.sync_always or bk_load_rlx32(&h.feed_watched) > bk_load_rlx32(&h.lru_clock):
        ring_doorbell(h, pos + r.len)           # someone waits for the writer


cdef inline void ring_doorbell(bk_header *h, uint64_t end) noexcept nogil:
    """After committing the record that ends at ring position `end` (and the full
    fence after it, in ring_commit): wake the writer if it sleeps and, when it gathers,
    if the ring holds its batch up to here (see THE DOORBELL above)."""
    cdef uint32_t gather
    if bk_load_acq32(&h.writer_sleeping):
        gather = bk_load_acq32(&h.gather_bytes)
        if gather and end - bk_load_acq64(&h.ring_tail) < gather:
            return                              # short of the batch: let it sleep
        if bk_cas32(&h.writer_sleeping, 1, 0):
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
    s._open()
    cdef bk_header *h = s.hdr
    cdef long ns = <long>(timeout * 1e9) if timeout > 0 else 0
    bk_store_rel32(&h.gather_bytes, 0)          # any commit rings (a writer killed
    bk_store_rel32(&h.writer_sleeping, 1)       # while gathering may have left it set)
    bk_fence_full()
    if not ring_has_work(s) and ns > 0:
        with nogil:
            bk_futex_wait(&h.writer_sleeping, 1, ns)
    bk_store_rel32(&h.writer_sleeping, 0)
    return ring_has_work(s)


def ring_doze(Store s, double timeout):
    """The idle writer's long sleep (THE DOORBELL above): like ring_idle_wait, but on
    writer_dozing, which every commit rings whatever the fsync policy and whether or
    not the feed is watched. Returns True at once if a record can be consumed, else
    sleeps until a producer rings or `timeout` seconds pass; True when rung (or a
    record is there), False after a timeout with nothing to consume."""
    s._open()
    cdef bk_header *h = s.hdr
    cdef long ns = <long>(timeout * 1e9) if timeout > 0 else 0
    cdef bint rung
    bk_store_rel32(&h.writer_dozing, 1)
    bk_fence_full()                             # Dekker with ring_commit
    if not ring_has_work(s) and ns > 0:
        with nogil:
            bk_futex_wait(&h.writer_dozing, 1, ns)
    rung = bk_load_acq32(&h.writer_dozing) == 0
    bk_store_rel32(&h.writer_dozing, 0)
    return rung or ring_has_work(s)


cdef extern from "<sched.h>" nogil:
    int sched_yield()


def ring_gather_wait(Store s, uint64_t want, double timeout, double spin=0.0):
    """The writer under `fsync: always`, before it takes a batch: while the ring holds
    less than `want` bytes past the tail (reserved or committed), wait up to `timeout`
    seconds for them, asleep on the doorbell with gather_bytes = `want`, so that only
    the commit that completes them wakes it (THE DOORBELL above), and one fsync
    acknowledges the writers that are about to commit instead of only the first of
    them (GATHER in bukt/writer/process.py). Before it sleeps it yields the CPU in a loop for
    up to `spin` seconds (within `timeout`), the doorbell unset, so that a batch that
    comes meanwhile costs neither the writer's wake-up nor a producer's futex call
    (GATHER SPIN in bukt/writer/process.py). Returns the bytes there."""
    s._open()
    cdef bk_header *h = s.hdr
    cdef uint64_t have, now, deadline = bk_mono_ns() + <uint64_t>(max(timeout, 0.0) * 1e9)
    cdef uint64_t spin_end = min(bk_mono_ns() + <uint64_t>(max(spin, 0.0) * 1e9), deadline)
    with nogil:
        # A yield that lets another task run is what this wait is for: the tasks that
        # want this CPU are mostly the producers it waits for (so, unlike the TCP
        # worker's busy poll, it does not give way after slow yields: that cost 4
        # writers all that the spin gained)
        while bk_load_acq64(&h.ring_head) - bk_load_acq64(&h.ring_tail) < want \
                and bk_mono_ns() < spin_end:
            sched_yield()
    while True:
        have = bk_load_acq64(&h.ring_head) - bk_load_acq64(&h.ring_tail)
        now = bk_mono_ns()
        if have >= want or now >= deadline:
            return have
        bk_store_rel32(&h.gather_bytes, <uint32_t>min(want, <uint64_t>0xffffffff))
        bk_store_rel32(&h.writer_sleeping, 1)
        bk_fence_full()                 # Dekker with ring_commit: see the record or
        have = bk_load_acq64(&h.ring_head) - bk_load_acq64(&h.ring_tail)   # be rung
        if have < want:
            with nogil:
                bk_futex_wait(&h.writer_sleeping, 1, <long>(deadline - now))
        bk_store_rel32(&h.writer_sleeping, 0)
        bk_store_rel32(&h.gather_bytes, 0)


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
