# store.pxi: the segment as an object: create, attach, map, fork, close.

# The layout's numbers as C constants (macros of segment.h), so the compiler folds them
# into the hot path instead of loading module variables
cdef enum:
    SLOTS = 512                    # BK_SLOTS_PER_STRIPE
    SLOT_MASK = 511
    READ_TRIES = 64                # BK_READ_TRIES: optimistic tries before the lock
cdef int MIN_CHUNK = 48
cdef uint32_t REC_HDR = 48         # sizeof(bk_rec)
cdef uint32_t ENTRY_HDR = 32       # sizeof(bk_entry)

# Fork detection: gunicorn forks workers after the arbiter may have attached. A
# child needs its own counter row; everything else (the mapping, the locks, which
# the child does not hold) stays valid. register_at_fork bumps this epoch in the
# child and each store compares it on use, which costs no syscall (getpid would).
cdef int _fork_epoch = 0
# A process that writes even to a read replica's segment (docs/design.md, Replicas):
# the replica's applier and its writer process, which say so with replica_exempt().
cdef bint _replica_exempt = False


def replica_exempt(bint on=True):
    """This process writes even to a read replica's segment (its applier, its writer)."""
    global _replica_exempt
    _replica_exempt = on

# Threads of this process inside an operation's wait with the GIL released (a busy
# lock, a full ring, a durability wait), holding pointers into a mapping: a re-attach
# (RETIREMENT) waits for none to be left before it swaps and unmaps. Under the GIL.
cdef int _inside_waits = 0


def _after_fork_in_child():
    global _fork_epoch
    _fork_epoch += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


cdef inline uint64_t align8(uint64_t n) noexcept nogil:
    return (n + 7) & ~(<uint64_t>7)


cdef inline uint64_t align_to(uint64_t n, uint64_t a) noexcept nogil:
    return ((n + a - 1) // a) * a


def _shm_name(name):
    if not isinstance(name, str) or not name or len(name) > 200 or "/" in name:
        raise _err.InvalidArgument(f"segment name {name!r}: 1-200 characters, no '/'")
    return "/bukt-" + name


def _parse_size(size):
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    from bukt.config import parse_size      # one definition of a size, shared with the config
    try:
        return parse_size(size)
    except ValueError as e:
        raise _err.InvalidArgument(str(e)) from None


cdef inline int64_t log_lag_ms(bk_header *h) noexcept nogil:
    """How long the log has gone without holding everything committed, in ms, when
    that is longer than the lag limit (ring.pxi, THE LAG LIMIT; the writer's liveness
    is not looked at here); 0 when within it, or when there is no limit."""
    cdef uint32_t limit = bk_load_rlx32(&h.lag_limit_ms)
    cdef int64_t age
    if limit == 0:
        return 0
    age = bk_now_coarse_ms() - bk_load_rlx_i64(&h.log_current_ms)
    return age if age > limit else 0


cdef str lag_error(bk_header *h, int64_t age):
    return (f"the log has not been written for {age / 1000.0:.1f} s, longer than "
            f"fsync_lag_limit ({h.lag_limit_ms / 1000.0:g} s) allows under fsync "
            "everysec: the writer process is stuck on its disk")


cdef class Store:
    """An attached segment. Made by bukt.create() or bukt.attach()."""

    cdef char *base
    cdef uint64_t size
    cdef bk_header *hdr
    cdef char *stripe_base              # nstripes x (header + slots), BK_STRIPE_BYTES each
    cdef bk_class *classes
    cdef uint8_t *pagemap
    cdef bk_bucket *bucketv
    cdef bk_proc *procs
    cdef bk_counters *counters_base
    cdef bk_counters *my_counters
    cdef bk_counters *private_counters
    cdef char *ring
    cdef uint64_t ring_size
    cdef uint64_t arena_off
    cdef uint64_t npages
    cdef uint32_t page_size
    cdef uint32_t nstripes
    cdef uint32_t nclasses
    cdef uint32_t max_key
    cdef uint32_t max_value
    cdef uint32_t max_buckets
    cdef uint32_t max_procs
    cdef uint32_t max_txn_keys          # keys one Bucket.atomic may involve
    cdef readonly bint readonly
    cdef bint mapped
    cdef bint split_due                 # an insert filled a stripe to BK_SPLIT_AT
    cdef int crash_move                 # crash tests: where the slab mover dies, -1 never
    cdef int crash_txn                  # crash tests: atomic() dies after crash_txn - 1
                                        # operations, 0 never
    cdef int epoch
    cdef int64_t fake_now
    cdef readonly str name
    cdef uint32_t pid
    cdef uint32_t pid_start             # low 32 bits of this process's start time
    cdef readonly uint64_t last_pos     # ring position just past this process's last record
    cdef readonly uint64_t expire_scanned       # stripes the expiry cycle walked
    cdef readonly uint64_t expire_entries_read  # entry headers it read (see expire_cycle)
    cdef public bint sync_wait          # False: servers wait for durability themselves
    cdef bint logging                   # False while the writer replays its log
    cdef public double durable_timeout  # seconds a durable write waits for the writer
    cdef public double ring_wait        # seconds a write waits for ring space (the
                                        # writer process sets 0: it must not wait on itself)
    cdef public uint64_t ring_ticket    # a front end's claim on ring room, for the write
                                        # it tries again (ring.pxi, THE CLAIM FROM AN
                                        # EVENT LOOP); 0 outside such a try
    cdef uint8_t rec_flags              # added to the flags of ring records (ring.pxi,
                                        # THE FEED'S RECORDS): BK_RF_INCR, BK_RF_FLUSH
    cdef dict _bucket_cache
    cdef object _notifier               # this process's FlushNotifier (flushnote.pxi)
    cdef object _waker                  # ... and its FlushWaker (flushwake.pxi)
    cdef int my_row                     # its process row: counters, waker (0: shared)
    # RETIREMENT (below)
    cdef readonly uint32_t seg_epoch    # segments this Store moved to after the first:
                                        # a Bucket resolved under another re-resolves
    cdef public bint follow             # re-attach when the segment is retired (False:
                                        # the writer, which drains a retired segment)
    cdef public double reattach_wait    # seconds a re-attach waits for the new segment
    cdef list _old_maps                 # (base, size) of retired mappings not unmapped

    def __cinit__(self):
        self.mapped = False
        self.fake_now = -1
        self.crash_move = -1
        self.sync_wait = True
        self.logging = True
        self.durable_timeout = 5.0
        self._bucket_cache = {}
        self.follow = True
        self.reattach_wait = 5.0
        self._old_maps = []

    # -- mapping ---------------------------------------------------------------
    cdef int _map(self, int fd, uint64_t size, bint readonly) except -1:
        cdef int prot = PROT_READ if readonly else (PROT_READ | PROT_WRITE)
        cdef void *p = mmap(NULL, size, prot, MAP_SHARED, fd, 0)
        if p == MAP_FAILED:
            raise OSError(f"mmap of {size} bytes failed")
        self.base = <char *>p
        self.size = size
        self.readonly = readonly
        self.mapped = True
        self.hdr = <bk_header *>p
        return 0

    cdef int _bind_regions(self) except -1:
        cdef bk_header *h = self.hdr
        self.stripe_base = self.base + h.stripes_off
        self.classes = <bk_class *>(self.base + h.classes_off)
        self.pagemap = <uint8_t *>(self.base + h.pagemap_off)
        self.bucketv = <bk_bucket *>(self.base + h.buckets_off)
        self.procs = <bk_proc *>(self.base + h.procs_off)
        self.counters_base = <bk_counters *>(self.base + h.counters_off)
        self.ring = self.base + h.ring_off
        self.ring_size = h.ring_size
        self.arena_off = h.arena_off
        self.npages = h.npages
        self.page_size = h.page_size
        self.nstripes = h.nstripes
        self.nclasses = h.nclasses
        self.max_key = h.max_key
        self.max_value = h.max_value
        self.max_buckets = h.max_buckets
        self.max_procs = h.max_procs
        self.ring_wait = h.ring_wait_ms / 1000.0
        self.max_txn_keys = h.max_txn_keys
        self._claim_counter_row()
        return 0

    cdef int _claim_counter_row(self) except -1:
        """Take a counter row for this pid: a free one, or one whose pid is dead
        (its counts stay: totals never go backwards). Row 0 is shared overflow."""
        cdef uint32_t me = <uint32_t>os.getpid()
        cdef uint32_t i, owner
        cdef uint64_t word, mine
        cdef int row = 0
        self.epoch = _fork_epoch
        self.pid = me
        self.pid_start = start32(me)
        mine = (<uint64_t>self.pid_start << 32) | me
        if not self.readonly:
            for i in range(1, self.max_procs):
                word = bk_load_acq64(<uint64_t *>&self.procs[i])    # pid | start << 32
                if word == mine:
                    row = i
                    break
                owner = <uint32_t>word
                if owner == 0 or not owner_alive32(owner, <uint32_t>(word >> 32)):
                    if bk_cas64(<uint64_t *>&self.procs[i], word, mine):
                        row = i
                        # a dead owner's waker goes with it (flushwake.pxi)
                        bk_store_rel32(&self.procs[i].wake_armed, 0)
                        bk_store_rel32(&self.procs[i].wake_name, 0)
                        break
        self.my_row = row
        if self.readonly:
            # the mapping is PROT_READ: count into private memory (not reported)
            if self.private_counters == NULL:
                self.private_counters = <bk_counters *>calloc(self.max_buckets, sizeof(bk_counters))
                if self.private_counters == NULL:
                    raise MemoryError()
            self.my_counters = self.private_counters
        else:
            self.my_counters = self.counters_base + <uint64_t>row * self.max_buckets
        return 0

    cdef inline bk_counters *counters(self, uint16_t bidx) noexcept:
        if self.epoch != _fork_epoch:
            self._claim_counter_row()
        return self.my_counters + bidx

    cdef inline int64_t now(self) noexcept nogil:
        if self.fake_now >= 0:
            return self.fake_now
        return bk_now_ms()

    cdef inline int64_t now_coarse(self) noexcept nogil:
        """now() to within a clock tick (a few ms), for less: the LRU clock's ticks."""
        if self.fake_now >= 0:
            return self.fake_now
        return bk_now_coarse_ms()

    cdef inline int _open(self) except -1:
        """Every public method that reads the mapping starts here: after close() the
        header and table pointers point at unmapped memory (a segfault, not an
        error), so a closed store answers BuktError instead. A retired segment is
        left for its successor here (RETIREMENT)."""
        if not self.mapped:
            raise _err.BuktError("the store is closed")
        if bk_load_rlx32(&self.hdr.retired) and self.follow:
            self._reattach()
        return 0

    cdef inline int _mapped(self) except -1:
        """_open without the re-attach: for the writer's side and for waits that hold
        pointers into the mapping."""
        if not self.mapped:
            raise _err.BuktError("the store is closed")
        return 0

    cdef int _writable(self) except -1:
        self._open()
        if self.readonly:
            raise _err.ReadOnly(f"segment {self.name!r} is attached read-only; "
                                "attach with readonly=False to write")
        if self.hdr.replica and not _replica_exempt:
            raise _err.ReplicaReadOnly(
                f"this is a read replica of {self.replica_primary()}: write there "
                "(or `bukt promote` this one)")
        return 0

    def replica_primary(self):
        """The primary this segment is a read replica of (host:port), or None."""
        self._mapped()
        if not bk_load_acq32(&self.hdr.replica):
            return None
        return self.hdr.replica_of[:64].split(b"\0", 1)[0].decode(errors="replace")

    def set_replica(self, primary):
        """Mark the segment a read replica of `primary` (host:port; every process's
        writes are refused from now on but the exempt ones'), or, with None, a primary
        again (promotion)."""
        cdef bytes pb
        self._mapped()
        if primary is None:
            bk_store_rel32(&self.hdr.replica, 0)
            return
        pb = str(primary).encode()[:63]
        memset(self.hdr.replica_of, 0, 64)
        memcpy(self.hdr.replica_of, <const char *>pb, len(pb))
        bk_store_rel32(&self.hdr.replica, 1)

    # -- public ----------------------------------------------------------------
    def set_time(self, ms):
        """Inject a clock (ms since the epoch) for TTL logic; None: the real clock."""
        self.fake_now = -1 if ms is None else int(ms)
        if self.mapped and not self.readonly:
            tick_lru(self, self.now())

    def now_ms(self):
        self._open()
        return self.now()

    @property
    def generation(self):
        self._mapped()
        return self.hdr.generation

    @property
    def limits(self):
        self._open()
        return {"max_key": self.max_key, "max_value": self.max_value,
                "max_buckets": self.max_buckets, "ring_size": self.ring_size,
                "ring_wait": self.hdr.ring_wait_ms / 1000.0,
                "max_transaction_keys": self.max_txn_keys,
                "page_size": self.page_size, "nstripes": self.nstripes,
                "classes": [self.classes[i].chunk_size for i in range(self.nclasses)],
                "index_slots": self.nstripes * SLOTS,
                "object_readers": self.hdr.nreaders}    # reads the registry holds at once

    def __dealloc__(self):
        if self.mapped and self._stop_notifier():
            munmap(self.base, self.size)
            self._unmap_old()
        free(self.private_counters)

    def close(self):
        """Unmap. The segment itself stays for the other processes."""
        if self.mapped:
            if self._stop_notifier():
                munmap(self.base, self.size)
                self._unmap_old()
            self.mapped = False
            self.base = NULL
        self._bucket_cache.clear()

    cdef void _unmap_old(self) noexcept:
        cdef uint64_t base
        if self._old_maps:
            for base, size in self._old_maps:
                munmap(<void *><size_t>base, <size_t>size)
            self._old_maps = []

    cdef bint _stop_notifier(self) noexcept:
        """False when the flush notifier's thread did not end: the mapping stays."""
        if self._waker is not None:
            (<FlushWaker>self._waker)._stop()
            self._waker = None
        if self._notifier is None:
            return True
        ok = (<FlushNotifier>self._notifier)._stop()
        self._notifier = None
        return ok

    def flush_notifier(self):
        """This process's FlushNotifier (flushnote.pxi): an eventfd an event loop
        watches to learn of the writer's flushes. Started on first use, and again in a
        process forked after that."""
        self._open()
        cdef FlushNotifier n = self._notifier
        if n is not None and n.epoch == _fork_epoch and n.fd >= 0:
            return n
        if n is not None:
            n._stop()                       # the parent's, inherited: close our copy
        n = FlushNotifier()
        n._start(self.hdr)
        self._notifier = n
        return n

    def flush_waker(self):
        """What an event loop watches to learn that the writer flushed past the
        position it arms (THE FLUSH WAKER, flushwake.pxi): this process's FlushWaker,
        or, for a process without a row of its own or whose row another Store's waker
        holds, the flush notifier (flushnote.pxi), with the same fd, arm, disarm and
        clear. Made on first use, and again in a process forked after that."""
        self._open()
        cdef FlushWaker w = self._waker
        if w is not None and w.epoch == _fork_epoch and w.fd >= 0:
            return w
        if w is not None:
            w._stop()                       # the parent's, inherited: close our copy
            self._waker = None
        if self.epoch != _fork_epoch:
            self._claim_counter_row()
        if self.readonly or self.my_row == 0 or \
                bk_load_acq32(&self.procs[self.my_row].wake_name) != 0:
            return self.flush_notifier()
        w = FlushWaker()
        w._start(self)
        self._waker = w
        return w

    def wake_slots(self):
        """The process rows' flush wakers (flushwake.pxi), for tests and diagnosis:
        one dict per row whose owner or waker is set."""
        self._mapped()
        cdef uint32_t i
        cdef bk_proc *p
        out = []
        for i in range(1, self.max_procs):
            p = &self.procs[i]
            if p.pid or p.wake_name:
                out.append({"row": i, "pid": p.pid, "name": p.wake_name,
                            "armed": bool(p.wake_armed), "pos": p.wake_pos,
                            "address": wake_address(p.pid, p.wake_name),
                            "alive": bool(p.pid) and bool(owner_alive32(p.pid, p.start))})
        return out

    def unlink(self):
        """Remove the segment's name; processes that mapped it keep their view."""
        import posix_ipc
        try:
            posix_ipc.unlink_shared_memory(_shm_name(self.name))
        except posix_ipc.ExistentialError:
            pass

    # -- buckets and tokens (meta.pxi) ------------------------------------------
    def create_bucket(self, name, schema="bytes", eviction="lru", persist=True,
                      default_ttl=None, max_memory=None, compression=None,
                      compression_threshold=None, compression_min_saving=None):
        """max_memory: bytes (or a size such as "64MiB") of chunks the bucket's
        entries may take; None or 0: no limit. compression: "none", "zstd" or "lz4";
        values of at least compression_threshold bytes are stored compressed when
        that saves compression_min_saving percent (defaults: bukt/codec.py;
        docs/api.md, Compression)."""
        self._open()
        return create_bucket(self, name, schema, eviction, persist, default_ttl, max_memory,
                             compression, compression_threshold, compression_min_saving)

    def drop_bucket(self, name):
        self._open()
        drop_bucket(self, name)

    def buckets(self):
        """Names of the buckets. One that a dead process left half dropped is still
        listed (the log still has it) until a drop_bucket, create_bucket or check()
        finishes the drop."""
        cdef uint32_t i
        self._open()
        settle_meta(self)
        return [self.bucketv[i].name.decode() for i in range(self.max_buckets)
                if self.bucketv[i].state == 1 or (self.bucketv[i].state == 2 and
                                                  not dropper_alive(&self.bucketv[i]))]

    def watch(self, bucket, prefix=b"", since=None, values=False):
        """The change feed of one bucket (bukt/feed.py): a Watcher, iterated for
        its events (blocking), resumable after sequence `since` (None: from now)."""
        from bukt.feed import Watcher
        return Watcher(self, bucket, prefix, since, values)

    def awatch(self, bucket, prefix=b"", since=None, values=False):
        """watch() for asyncio: `async for event in store.awatch(...)`."""
        from bukt.feed import Watcher
        return Watcher(self, bucket, prefix, since, values)

    def bucket(self, name):
        cdef Bucket b = self._bucket_cache.get(name)
        cdef int i
        self._open()
        if b is not None and self.bucketv[b.idx].gen == b.gen and self.bucketv[b.idx].state == 1:
            return b
        i = find_bucket(self, name) if isinstance(name, str) else -1
        if i < 0 or self.bucketv[i].state != 1:
            raise _err.BucketNotFound(f"no bucket {name!r}")
        b = Bucket.__new__(Bucket)
        b.s = self
        b.idx = <uint16_t>i
        b.gen = self.bucketv[i].gen
        b.schema = self.bucketv[i].schema
        b.name = name
        b.seg_epoch = self.seg_epoch
        self._bucket_cache[name] = b
        return b

    def bucket_info(self, name):
        cdef int i
        self._open()
        i = find_bucket(self, name)
        if i < 0 or self.bucketv[i].state != 1:
            raise _err.BucketNotFound(f"no bucket {name!r}")
        return bucket_settings(self, i)

    def add_token(self, bucket, token_hash, perms):
        self._open()
        return add_token(self, bucket, bytes(token_hash), perms)

    def tokens(self, bucket):
        cdef int i, t
        self._open()
        i = find_bucket(self, bucket)
        if i < 0 or self.bucketv[i].state != 1:
            raise _err.BucketNotFound(f"no bucket {bucket!r}")
        return [(self.bucketv[i].tokens[t].id, self.bucketv[i].tokens[t].perms)
                for t in range(BK_MAX_TOKENS) if self.bucketv[i].tokens[t].id]

    def has_token(self, Bucket b, uint32_t token_id, uint32_t perms):
        """Whether bucket `b` (of this store) still stands and still holds token
        `token_id` with exactly `perms`: the HTTP workers' per-request check of a
        token they resolved before (bukt/http/auth.py), without building tokens()
        and looking the bucket up by name. Read without the meta lock, like every
        read of bucket metadata: a change is seen by the next call."""
        cdef bk_bucket *m
        cdef int t
        self._open()
        if b.s is not self or token_id == 0:
            return False
        if b.seg_epoch != self.seg_epoch:           # re-attached (RETIREMENT)
            try:
                b._rebind()
            except _err.BucketNotFound:
                return False
        m = &self.bucketv[b.idx]
        if m.gen != b.gen or m.state != 1:
            return False
        for t in range(BK_MAX_TOKENS):
            if m.tokens[t].id == token_id:
                return m.tokens[t].perms == perms
        return False

    # -- THE READER REGISTRY ------------------------------------------------------------
    # The objects layer keeps an overwritten or deleted object's chunks until no read
    # that may have seen its manifest is still going. Each such read holds a slot of
    # the registry (nreaders slots of bk_reader after the counters) from before it
    # reads the manifest to after its last chunk: enter claims a free slot by CAS on
    # its owner word (this process's pid | start << 32), then stores the monotonic
    # clock into since_ns with a seq_cst store and fence, so a sweep that reads the
    # registry after a manifest was replaced sees every reader that could have read the
    # old one (a reader that publishes later reads the new one). exit clears since_ns,
    # then the owner (release). object_readers_oldest scans every slot and ignores
    # one whose owner is dead (a SIGKILLed reader: owners.py, OWNERSHIP), which the
    # next enter takes over, so a killed reader cannot hold chunks for ever. A slot
    # claimed but not yet stamped (since_ns 0) is no reader yet: its manifest read
    # comes after its stamp. All processes together run at most nreaders object
    # reads at once (limits.object_readers; LimitExceeded past it).
    def object_reader_enter(self):
        """Register an object read in flight; returns the token for
        object_reader_exit. Published (seq_cst) before it returns."""
        cdef bk_reader *rv
        cdef uint32_t n, i, j, start, owner
        cdef uint64_t mine, word
        self._open()
        if self.readonly:               # (a replica's readers register: it is a mapping
            raise _err.ReadOnly(        # rule, not a write)
                f"segment {self.name!r} is attached read-only: an object read cannot "
                "register; attach with readonly=False")
        if self.epoch != _fork_epoch:
            self._claim_counter_row()
        rv = <bk_reader *>(self.base + self.hdr.readers_off)
        n = self.hdr.nreaders
        mine = (<uint64_t>self.pid_start << 32) | self.pid
        start = <uint32_t>((self.pid * 2654435761u) % n) if n else 0
        for j in range(n):
            i = (start + j) % n
            word = bk_load_acq64(&rv[i].owner)
            if word != 0:
                owner = <uint32_t>word
                if owner_alive32(owner, <uint32_t>(word >> 32)):
                    continue
            if bk_cas64(&rv[i].owner, word, mine):
                bk_store_seq_i64(&rv[i].since_ns, bk_mono_ns())
                bk_fence_seq()
                return i
        raise _err.LimitExceeded(f"{n} object reads in flight, all the registry holds "
                                 "(limits.object_readers): try again when fewer run")

    def object_reader_exit(self, token):
        """End the object read `token` (from object_reader_enter)."""
        cdef bk_reader *rv
        cdef uint32_t i
        self._open()
        if not isinstance(token, int) or not 0 <= token < self.hdr.nreaders:
            raise _err.InvalidArgument(f"reader token {token!r} is not one enter gave")
        i = token
        rv = <bk_reader *>(self.base + self.hdr.readers_off)
        if <uint32_t>bk_load_acq64(&rv[i].owner) != self.pid:
            raise _err.InvalidArgument(f"reader token {token} is not this process's")
        bk_store_seq_i64(&rv[i].since_ns, 0)
        bk_store_rel64(&rv[i].owner, 0)

    def object_readers_oldest(self):
        """CLOCK_MONOTONIC ns at which the oldest object read in flight (of a live
        process) began; 0 when none is."""
        cdef bk_reader *rv
        cdef uint32_t i
        cdef uint64_t word
        cdef int64_t t, oldest = 0
        self._open()
        rv = <bk_reader *>(self.base + self.hdr.readers_off)
        bk_fence_seq()
        alive = {}
        for i in range(self.hdr.nreaders):
            word = bk_load_acq64(&rv[i].owner)
            if word == 0:
                continue
            t = bk_load_seq_i64(&rv[i].since_ns)
            if t == 0 or (oldest and t >= oldest):
                continue
            ok = alive.get(word)
            if ok is None:
                ok = alive[word] = owner_alive32(<uint32_t>word, <uint32_t>(word >> 32))
            if ok:
                oldest = t
        return oldest

    def objects_retired(self):
        """A counter that moves whenever an entry flagged MANIFEST or HIDDEN leaves
        the table or is replaced (set over, deleted, expired, evicted, flushed,
        dropped): the objects layer's reclaim sweep runs when it moved."""
        self._open()
        return bk_load_acq64(&self.hdr.objects_retired)

    def clock_ns(self):
        """CLOCK_MONOTONIC in ns: the clock of the reader registry's entries."""
        return bk_mono_ns()

    @property
    def meta_epoch(self):
        """A counter that moves after every change to the bucket table or its tokens
        (create, drop, token add or revoke, by any process): a cached check of a token
        holds while it has not moved."""
        self._open()
        return meta_epoch_of(self)

    def revoke_token(self, bucket, token_id):
        self._open()
        return revoke_token(self, bucket, token_id)

    def find_token(self, token_hash):
        self._open()
        return find_token(self, bytes(token_hash))

    # -- whole-store passes ------------------------------------------------------
    def stats(self):
        self._open()
        return store_stats(self)

    def class_stats(self):
        """Memory by slab class: [{chunk_size, slabs, slab_bytes, chunks, used,
        used_bytes}], read without the classes' locks (figures for a dashboard,
        each field exact, the row not necessarily one instant)."""
        cdef uint32_t i
        cdef bk_class *c
        self._open()
        out = []
        for i in range(self.nclasses):
            c = &self.classes[i]
            slabs = bk_load_rlx64(&c.slabs)
            used = bk_load_rlx64(&c.used)
            out.append({"chunk_size": c.chunk_size, "slabs": slabs,
                        "slab_bytes": slabs * c.slab_pages * self.page_size,
                        "chunks": slabs * c.per_slab, "used": used,
                        "used_bytes": used * c.chunk_size})
        return out

    def check(self):
        """Integrity walk: a list of problems, empty when the table is sound."""
        self._open()
        return check_table(self)

    def recount(self):
        self._open()
        recount(self)

    def expire_some(self, now=None, budget=0.001):
        """Remove expired keys for at most `budget` seconds (at most one pass over the
        stripes); how many were removed. Only stripes where an expiry may be due are
        walked; expire_scanned and expire_entries_read count, in this process, the
        stripes walked and the entry headers read."""
        self._open()
        return expire_cycle(self, self.now() if now is None else int(now), budget)

    def repair_some(self, uint32_t start=0, budget=0.001):
        """The writer's repair pass (THE REPAIR PASS in table.pxi), one slice: from
        stripe `start`, repair the stripes a dead process left mid-write, for at most
        `budget` seconds. (stripes repaired, the next slice's start or 0 when the
        pass is done)."""
        return repair_pass(self, start, budget)

    def stripes_awaiting_repair(self):
        """Stripes a dead process left mid-write (seq odd, lock holder gone) that no
        one has repaired yet: readers of such a stripe in a read-only mapping wait
        for the writer's repair pass. Readable in any mapping."""
        self._open()
        return count_awaiting_repair(self)

    # -- durability ----------------------------------------------------------------
    cdef int _after_write(self, bint persisted) except -1:
        if self.split_due:
            grow_index(self)
        if bk_load_acq32(&self.hdr.needs_recount):
            maybe_recount(self)
        if persisted and bk_load_rlx32(&self.hdr.retired):
            return self._settle_retired()           # after the commit (RETIREMENT)
        if persisted and self.sync_wait and self.hdr.sync_always:
            self.wait_durable(self.last_pos)
        return 0

    def wait_durable(self, uint64_t pos, timeout=None):
        """Block, without the GIL, until the writer process has flushed every record
        below `pos` (its fsync policy applied). WriterDown after `timeout` seconds;
        SegmentRetired when the segment was replaced and the record is not in the
        log the new one was built from (RETIREMENT)."""
        global _inside_waits
        cdef bk_header *h = self.hdr
        cdef uint32_t epoch
        cdef double limit = self.durable_timeout if timeout is None else timeout
        self._mapped()
        deadline = time.monotonic() + limit
        if bk_load_acq64(&h.flushed_pos) >= pos:
            return True
        bk_inc32(&h.flush_waiters)          # counted before the epoch is read (THE
        bk_fence_seq()                      # FLUSH WAKE)
        try:
            while bk_load_acq64(&h.flushed_pos) < pos:
                epoch = bk_load_acq32(&h.flush_epoch)
                if bk_load_acq64(&h.flushed_pos) >= pos:
                    break
                if bk_load_acq32(&h.retired) == BK_RETIRED:
                    raise retired_lost(self)
                if time.monotonic() >= deadline:
                    raise _err.WriterDown(
                        f"no confirmation from the writer process within {limit:g} s that "
                        "the write reached the disk; it is applied in memory. Check "
                        "`bukt status`.")
                _inside_waits += 1
                with nogil:
                    bk_futex_wait(&h.flush_epoch, epoch, 50000000)
                _inside_waits -= 1
        finally:
            bk_dec32(&h.flush_waiters)
        return True

    # -- RETIREMENT ------------------------------------------------------------------
    # A cold start replaces the segment under /bukt-<name> with one rebuilt from the
    # data directory, while programs stay attached to the old one. The writer that
    # does it (bukt/writer/process.py, Writer._retire) first marks the old segment:
    #
    #   retire_begin     under the ring lock, retired = BK_RETIRING (release): every
    #                    reservation after it is refused (ring_reserve), so the ring
    #                    positions below the head it returns are all there will be
    #   drain            the records below that head are appended to the log (records
    #                    reserved before the mark are committed by their writers, who
    #                    hold their stripe lock, or resolved by ring_unstick), fsynced
    #   retire_finish    retire_drained = what the log now holds, retired = BK_RETIRED,
    #                    flushed_pos moved there, waiters woken; then the new segment
    #                    is built from the log and renamed into place
    #
    # and the attached programs follow:
    #
    #   * an operation that starts on a retired segment re-attaches first (_open,
    #     Bucket._b): it maps what the name holds now once that is another, live
    #     segment (waiting up to reattach_wait while it is being built), in place, so
    #     every holder of the Store (Bucket objects, the HTTP and TCP workers) follows;
    #     a Bucket re-resolves itself by name. The check is one relaxed load of a word
    #     on index_geom's line, which every get and set reads anyway.
    #   * a write that reaches its reservation after the mark is refused before it
    #     changes anything: SegmentRetired (nothing applied; the next call re-attaches).
    #   * a write that committed, then finds the flag set (_after_write), waits for
    #     BK_RETIRED and succeeds only when its record is below retire_drained: then it
    #     is in the log, so in the new segment; otherwise SegmentRetired says it is lost.
    #     A write that finds no flag committed before the mark, so below the head the
    #     writer drains to. So no write is acknowledged that the new segment lacks.
    #
    # Buckets with persist: false never reach the log: a cold start drops them, the
    # writes made to a retired segment as well as the rest.

    cdef int _settle_retired(self) except -1:
        """After a persisted write that found its segment retired: wait (up to
        durable_timeout) for the replacing writer's verdict; SegmentRetired unless the
        write's record is in the log the new segment is built from."""
        global _inside_waits
        cdef bk_header *h = self.hdr
        cdef uint32_t epoch
        deadline = time.monotonic() + self.durable_timeout
        while bk_load_acq32(&h.retired) != BK_RETIRED:
            epoch = bk_load_acq32(&h.flush_epoch)
            if bk_load_acq32(&h.retired) == BK_RETIRED:
                break
            if time.monotonic() >= deadline:
                raise _err.SegmentRetired(
                    f"segment /bukt-{self.name} is being replaced by a cold start, and the "
                    f"writer replacing it did not say within {self.durable_timeout:g} s "
                    "whether this write reached the log the new segment is built from. "
                    "Check `bukt status`.")
            _inside_waits += 1
            with nogil:
                bk_futex_wait(&h.flush_epoch, epoch, 10000000)
            _inside_waits -= 1
        if self.last_pos > bk_load_acq64(&h.retire_drained):
            raise retired_lost(self)
        return 0

    cdef int _reattach(self) except -1:
        """The segment is retired: map the one that replaced it, in place (RETIREMENT).
        Waits up to reattach_wait for it to appear (a cold start builds it first) and
        for this process's other threads to leave their waits inside the old one;
        SegmentRetired when it does not."""
        cdef Store new = None
        cdef uint64_t old_gen = self.hdr.generation
        deadline = time.monotonic() + self.reattach_wait
        while True:
            if _inside_waits == 0:
                try:
                    new = attach(self.name, readonly=self.readonly)
                except _err.SegmentNotFound:
                    new = None
                except (_err.SegmentInvalid, _err.FormatMismatch) as e:
                    raise _err.SegmentRetired(
                        f"segment /bukt-{self.name} was replaced, and its successor cannot "
                        f"be attached: {e}") from None
                if new is not None:
                    if new.hdr.generation != old_gen and not bk_load_acq32(&new.hdr.retired):
                        break
                    new.close()
                    new = None
            if time.monotonic() >= deadline:
                raise _err.SegmentRetired(
                    f"segment /bukt-{self.name} was replaced by a cold start, and no new "
                    f"segment took its name within {self.reattach_wait:g} s"
                    + (" (another thread of this process was waiting inside the old one)"
                       if _inside_waits else "") +
                    ": the operation was not applied. Check `bukt status`.")
            time.sleep(0.005)
        self._adopt(new)
        return 0

    cdef int _adopt(self, Store new) except -1:
        """Take over `new`'s mapping; the old one is unmapped, or kept until close()
        when the flush notifier's thread would not leave it."""
        cdef char *old_base = self.base
        cdef uint64_t old_size = self.size
        cdef double ring_wait = self.ring_wait
        cdef bint unmap = True
        if self._notifier is not None:
            unmap = (<FlushNotifier>self._notifier)._move(new.hdr)
        self.base, self.size, self.hdr = new.base, new.size, new.hdr
        new.mapped = False                          # the mapping is ours now
        new.base = NULL
        self._bind_regions()                        # the counter row `new` claimed
        self.ring_wait = ring_wait                  # a front end's 0 stays 0
        self.ring_ticket = 0
        self.split_due = False
        self._bucket_cache.clear()
        self.seg_epoch += 1
        if unmap:
            munmap(old_base, old_size)
        else:
            self._old_maps.append((<uint64_t><size_t>old_base, old_size))
        return 0

    @property
    def retired(self):
        """0 live; 1 being replaced by a cold start; 2 replaced (RETIREMENT)."""
        self._mapped()
        return bk_load_acq32(&self.hdr.retired)

    def retire_begin(self):
        """The replacing writer's first step (RETIREMENT): refuse every reservation
        from now on. Returns the ring head: the records below it are all there are.
        This Store stops following (it drains the retired segment)."""
        cdef bk_header *h = self.hdr
        cdef uint64_t head
        self.follow = False
        self._writable()
        lock_simple(self, &h.ring_lock, "ring")
        bk_store_rel32(&h.retired, BK_RETIRING)
        head = h.ring_head
        bk_lock_release(&h.ring_lock)
        return head

    def retire_finish(self, uint64_t drained):
        """The replacing writer's last step on the old segment: the records below
        `drained` are durable in the log the new segment is built from; the others'
        writers are told they are lost. Wakes every waiter."""
        cdef bk_header *h = self.hdr
        self._mapped()
        self.follow = False
        h.retire_drained = drained
        bk_store_rel32(&h.retired, BK_RETIRED)      # after retire_drained: readers of
        if drained > bk_load_acq64(&h.flushed_pos): # the flag find it
            bk_store_rel64(&h.flushed_pos, drained)
        bk_inc32(&h.flush_epoch)
        bk_futex_wake(&h.flush_epoch)
        wake_flushed(self, <uint64_t>-1)            # every armed loop looks now

    # -- the writer process's side ---------------------------------------------------
    def ring_read(self, max_records=4096, max_bytes=16 << 20):
        self._mapped()
        return ring_read(self, max_records, max_bytes)

    def ring_release(self, uint64_t pos):
        """The records below `pos` are in the log: their ring space may be reused."""
        self._mapped()
        if pos < self.hdr.ring_tail or pos > bk_load_acq64(&self.hdr.ring_head):
            raise _err.InvalidArgument(f"ring position {pos} outside tail..head")
        bk_store_rel64(&self.hdr.ring_tail, pos)

    # THE FLUSH WAKE. Local writers waiting for durability (wait_durable) and the flush
    # notifier's threads (flushnote.pxi) sleep on flush_epoch; the event loops of the
    # faces are woken by datagram instead (flushwake.pxi), so most flushes have nobody
    # on the futex, and a wake was a system call a flush for nothing. The sleepers
    # count themselves in flush_waiters, and the writer wakes only while it is not 0:
    #
    #     sleeper:  flush_waiters += 1; full fence; read flush_epoch, then flushed_pos;
    #               sleep while the epoch is what it read; flush_waiters -= 1
    #     writer:   flushed_pos = f; flush_epoch += 1; full fence; read flush_waiters:
    #               not 0 -> futex wake
    #
    # Either the writer sees the count, or the sleeper sees the new epoch (and f), so
    # none sleeps through a flush. A sleeper killed while counted leaves the count
    # high, and the writer then wakes on every flush, as it did before: a cost, never
    # a missed wake.
    def ring_flushed(self, uint64_t pos):
        """Publish that records below `pos` are durable; wakes the waiting writers."""
        self._mapped()
        bk_store_rel64(&self.hdr.flushed_pos, pos)
        bk_inc32(&self.hdr.flush_epoch)
        bk_fence_seq()
        if bk_load_acq32(&self.hdr.flush_waiters):
            bk_futex_wake(&self.hdr.flush_epoch)
        wake_flushed(self, pos)                     # the event loops (flushwake.pxi)

    def ring_set_start(self, uint64_t pos):
        """Number the next record `pos` (the writer continues its log's sequence after
        a cold start). Only while the ring is empty."""
        cdef bk_header *h = self.hdr
        self._writable()
        lock_simple(self, &h.ring_lock, "ring")
        try:
            if h.ring_head != bk_load_acq64(&h.ring_tail):
                raise _err.InvalidArgument("the ring is not empty")
            pos = align8(max(pos, h.ring_head))
            h.ring_tail = pos
            h.flushed_pos = pos
            bk_store_rel64(&h.ring_head, pos)
        finally:
            bk_lock_release(&h.ring_lock)
        return pos

    def set_logging(self, bint on):
        """Off while the writer replays its own log into the table: writes of this
        Store object then reach the table but not the ring."""
        self._mapped()
        self.logging = on

    def writer_publish(self, pid=None, ready=None, heartbeat_ms=None, last_fsync_ms=None,
                       log_size=None, flushed_seq=None, error=None, sync_always=None,
                       repair_period=None, data_dir=None,
                       log_current_ms=None, lag_limit_ms=None):
        """The writer process's progress, for health checks and `bukt status`; its
        repair period (seconds) and its data directory (an absolute path);
        log_current_ms and lag_limit_ms: ring.pxi, THE LAG LIMIT."""
        cdef bk_header *h = self.hdr
        cdef bytes eb, db
        self._mapped()
        if self.readonly:
            self._writable()
        if data_dir is not None:
            db = os.fsencode(data_dir)
            if not db.startswith(b"/") or len(db) >= BK_DATA_DIR_MAX or b"\0" in db:
                raise _err.InvalidArgument(
                    f"data_dir {data_dir!r}: an absolute path under {BK_DATA_DIR_MAX} bytes")
            bk_store_rel32(&h.data_dir_len, 0)          # readers see none while it changes
            memset(h.data_dir, 0, BK_DATA_DIR_MAX)
            memcpy(h.data_dir, <const char *>db, len(db))
            bk_store_rel32(&h.data_dir_len, <uint32_t>len(db))
        if repair_period is not None:
            bk_store_rel32(&h.repair_period_ms, <uint32_t>max(1, round(repair_period * 1000)))
        if log_current_ms is not None:          # before the pid that makes it count
            bk_store_rlx_i64(&h.log_current_ms, log_current_ms)
        if lag_limit_ms is not None:
            bk_store_rel32(&h.lag_limit_ms, lag_limit_ms)
        if pid is not None:
            h.writer_pid = pid
            h.writer_start = _owners.start_time(pid) if pid else 0
        if heartbeat_ms is not None:
            h.writer_heartbeat_ms = heartbeat_ms
        if last_fsync_ms is not None:
            h.last_fsync_ms = last_fsync_ms
        if log_size is not None:
            h.log_size = log_size
        if flushed_seq is not None:
            h.flushed_seq = flushed_seq
        if sync_always is not None:
            h.sync_always = 1 if sync_always else 0
        if error is not None:
            eb = str(error).encode()[:255]
            memset(h.writer_error, 0, 256)
            memcpy(h.writer_error, <const char *>eb, len(eb))
            bk_store_rel32(&h.writer_error_code, 1 if eb else 0)
        if ready is not None:
            bk_store_rel32(&h.writer_ready, 1 if ready else 0)

    def writer_info(self):
        """The writer's progress. `error`: the disk error it reports, or the lag limit
        passed while it lives (ring.pxi, THE LAG LIMIT), or ""; `claimed`: cext/writer.pxi,
        writer_claimed."""
        cdef bk_header *h = self.hdr
        cdef int64_t lag
        self._mapped()
        alive = bool(_owners.owner_alive(h.writer_pid, h.writer_start))
        lag = log_lag_ms(h)
        return {"pid": h.writer_pid, "ready": bool(h.writer_ready), "alive": alive,
                "start": h.writer_start,
                "heartbeat_ms": h.writer_heartbeat_ms, "last_fsync_ms": h.last_fsync_ms,
                "log_size": h.log_size, "flushed_seq": h.flushed_seq,
                "error": h.writer_error[:256].split(b"\0", 1)[0].decode(errors="replace")
                         if h.writer_error_code else
                         lag_error(h, lag) if lag and alive else "",
                "log_current_ms": h.log_current_ms, "lag_limit_ms": h.lag_limit_ms,
                "claimed": bk_load_acq32(&h.writer_claimed),
                "sync_always": bool(h.sync_always),
                "ring_head": h.ring_head, "ring_tail": h.ring_tail,
                "flushed_pos": h.flushed_pos, "generation": h.generation,
                "retired": bk_load_acq32(&h.retired),
                "repair_period": h.repair_period_ms / 1000.0 if h.repair_period_ms else None,
                "data_dir": self._data_dir()}

    cdef object _data_dir(self):
        cdef uint32_t n = bk_load_acq32(&self.hdr.data_dir_len)
        if n == 0 or n >= BK_DATA_DIR_MAX:
            return None
        return os.fsdecode(PyBytes_FromStringAndSize(self.hdr.data_dir, n))

    def bucket_table(self):
        """Every live or dropping bucket as (idx, gen, state, name, schema, eviction,
        persist, default_ttl_ms, ((token_id, perms, hash), ...), max_memory), read
        under the meta lock: the writer names ring records (which carry idx and gen)
        with it."""
        self._mapped()
        return bucket_table(self)

    def restore_token(self, bucket, uint32_t token_id, token_hash, int perms):
        """Recovery: put back a token with the id it had."""
        self._open()
        return restore_token(self, bucket, token_id, bytes(token_hash), perms)

    def grow_index(self):
        """Split the next stripe in line now (the index grows by itself as inserts
        fill stripes: GROWTH in table.pxi). True when one was split."""
        self._writable()
        return grow_index(self) == 1

    def _crash_in_split(self, int phase, int k):
        """Crash tests only: split the next stripe and die (exit status 70), holding
        both stripe locks as a SIGKILL there would, at the k-th point of `phase`: 0
        started, 1 after a word is copied to the new stripe, 2 inside the unlinks from
        the old one, 3 the depths and geometry at the end (k 0-3). Returns when the
        split ends first."""
        cdef crash_t c
        c.phase, c.k = phase, k
        self._writable()
        grow_index(self, &c)

    def _crash_in_page_return(self, int point):
        """Crash tests only: from now on, the slab mover of this process exits
        (status 70) at `point`, holding the locks held there, as a SIGKILL would:
        0 a slab's free chunks half unlinked (its class lock held), 1 its first page
        marked an orphan, 2 its pages unassigned but not yet counted free (class and
        alloc locks held), 3 a relocated entry's new chunk filled but not published,
        4 published, the old chunk not yet freed (its stripe's lock held). -1: never."""
        self._writable()
        self.crash_move = point

    def _stripe_of(self, str bucket, key):
        """Tests only: the stripe that holds `key` of `bucket` by the geometry now."""
        cdef bytes kb = as_key(self, key)
        cdef Bucket b
        self._open()
        b = self.bucket(bucket)
        return stripe_of(self, khash(b.idx, kb, len(kb)))

    def _crash_in_atomic(self, int after):
        """Crash tests only: from now on, Bucket.atomic in this process exits (status
        70) after applying `after` of its operations, holding every stripe lock of the
        transaction with their seqs odd, as a SIGKILL there would. -1: never."""
        self._writable()
        self.crash_txn = after + 1 if after >= 0 else 0

    def _die_holding_every_stripe(self, str bucket=None, int64_t skew=0):
        """Crash tests only: take every stripe lock, as check() and recount() do,
        and exit (status 70) holding them, as a SIGKILL there would. With `bucket`,
        first leave its bytes gauge off by `skew`, as a holder that dies between a
        slot's change and the gauges' leaves it (a repair then flags a recount)."""
        self._writable()
        lock_all_stripes(self)
        if bucket is not None:
            bk_add64(&self.bucketv[find_bucket(self, bucket)].bytes, skew)
        _exit(70)

    def _die_mid_write(self, str bucket, key):
        """Crash tests only: take the lock of `key`'s stripe in `bucket`, enter its
        write section (seq odd) and exit (status 70), as a SIGKILL inside a write
        would leave it. Returns nothing: the process ends."""
        cdef Bucket b
        cdef bytes kb
        cdef uint32_t si
        self._writable()
        b = self.bucket(bucket)
        kb = as_key(self, key)
        si = lock_key(self, stripe_of(self, khash(b.idx, kb, len(kb))),
                      khash(b.idx, kb, len(kb)))
        bk_seq_enter(&STRIPE(self, si).seq)
        _exit(70)

    def dump_stripes(self, uint64_t start, uint32_t count):
        """Live entries of `count` stripes from cursor `start` (0 to begin), each read
        under its seq: ([(bucket, key, value, expire_ms, flags, version)], the next
        cursor or 0). The cursor sees each key once however the index grows."""
        self._open()
        return dump_stripes(self, start, count)

    def ring_unstick(self, uint64_t pos):
        self._mapped()
        return ring_unstick(self, pos)

    def ring_position(self):
        self._mapped()
        return (bk_load_acq64(&self.hdr.ring_tail), bk_load_acq64(&self.hdr.ring_head),
                bk_load_acq64(&self.hdr.flushed_pos))

    # -- ring room for a front end that waits on its event loop ------------------------
    # (ring.pxi, THE CLAIM FROM AN EVENT LOOP; bukt/writewait/ringroom.py is their one user)
    def ring_claim_room(self, uint64_t room, double waited, uint64_t ticket=0):
        """Never blocks. After `waited` seconds of trying a write that needs `room`
        bytes of the ring (RingFull.room), hold a claim on them: returns the ticket
        while it is held (taken, or `ticket`'s renewed), 0 while it is too early or
        another live waiter's claim stands. Pass the ticket back on the next try, and
        set ring_ticket to it around the write tried again."""
        self._writable()
        return claim_room(self, ticket, <uint32_t>min(room, self.ring_size), waited)

    def ring_claim_drop(self, uint64_t ticket):
        """Give up the claim of `ticket`, if it still stands (the write went through,
        or its wait is over)."""
        self._open()
        if ticket:
            self._writable()
            claim_drop(self, ticket)

    def ring_free(self, uint64_t ticket=0):
        """Bytes of the ring a write may take now: what is free, less another waiter's
        claim (not the claim of `ticket`, the caller's own)."""
        cdef bk_header *h = self.hdr
        cdef uint64_t used, claim
        self._open()
        used = bk_load_acq64(&h.ring_head) - bk_load_acq64(&h.ring_tail)
        claim = others_claim(h, ticket)
        return 0 if used + claim >= self.ring_size else self.ring_size - used - claim

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<bukt.Store {self.name!r} {'mapped' if self.mapped else 'closed'}>"


def _layout(uint64_t size, uint32_t max_key, uint32_t max_value, uint32_t max_buckets,
            uint64_t index_slots, uint64_t ring_size, uint32_t max_procs, double factor,
            uint64_t page_size=65536, uint32_t object_readers=1024):
    """Plan the regions of a segment of `size` bytes: a dict of offsets and counts."""
    cdef uint64_t max_entry = ENTRY_HDR + max_key + max_value
    cdef uint64_t page = page_size
    cdef uint64_t max_rec = align8(REC_HDR + max_key + max_value)
    if ring_size == 0:
        ring_size = max(size // 16, 2 * max_rec + 4096)
    ring_size = align_to(ring_size, 4096)
    if ring_size < 2 * max_rec:
        raise _err.InvalidArgument(
            f"ring_size {ring_size} is below two of the largest records ({2 * max_rec} "
            f"bytes with max_key {max_key} and max_value {max_value})")
    if index_slots == 0:
        index_slots = (size // 160) * 8 // 7      # ~160 B per small entry, 7/8 load
    cdef uint64_t nstripes = 1
    while nstripes * SLOTS < index_slots:
        nstripes *= 2                   # a power of two: the grown index is even (GROWTH)
    # Size classes: chunks from MIN_CHUNK up by `factor`, packed many to a page up
    # to half a page; above that a chunk is a slab of whole pages of its own, so a
    # page stays small (a small segment still has pages for many classes) while a
    # value can be as large as max_value.
    classes = []                        # (chunk_size, per_slab, slab_pages)
    cdef double c = MIN_CHUNK
    cdef uint64_t cs
    while True:
        cs = align8(<uint64_t>c)
        if cs > page // 2:
            break
        if not classes or cs > classes[len(classes) - 1][0]:
            classes.append((cs, page // cs, 1))
        c = c * factor
    cs = page
    while True:
        classes.append((cs, 1, cs // page))
        if cs >= max_entry:
            break
        cs = max(cs + page, align_to(<uint64_t>(cs * factor), page))
        if cs > max_entry:
            cs = align_to(max_entry, page)
    if len(classes) > BK_MAX_CLASSES:
        raise _err.InvalidArgument(
            f"size factor {factor} gives {len(classes)} classes; at most {BK_MAX_CLASSES}")
    off = BK_HEADER_SIZE
    plan = {}
    plan["stripes_off"] = off
    plan["slots_off"] = off + sizeof(bk_stripe)      # of stripe 0; each stripe's follow it
    off += nstripes * BK_STRIPE_BYTES
    plan["classes_off"] = off; off += BK_MAX_CLASSES * sizeof(bk_class)
    plan["buckets_off"] = off; off = align_to(off + max_buckets * sizeof(bk_bucket), 64)
    plan["procs_off"] = off; off = align_to(off + max_procs * sizeof(bk_proc), 64)
    plan["counters_off"] = off; off += <uint64_t>max_procs * max_buckets * sizeof(bk_counters)
    plan["readers_off"] = off = align_to(off, 64)
    plan["nreaders"] = object_readers
    off += <uint64_t>object_readers * sizeof(bk_reader)
    plan["ring_off"] = off = align_to(off, 4096); off += ring_size
    pagemap_off = off
    rest = size - off if size > off else 0
    npages = rest // (page + 1)         # a page and its pagemap byte
    while npages and align_to(pagemap_off + npages, 4096) + npages * page > size:
        npages -= 1
    if npages == 0:
        raise _err.InvalidArgument(
            f"segment size {size} leaves no room for one {page}-byte page after the "
            f"index and ring ({off} bytes); give it more memory or a smaller max_value")
    if npages < classes[len(classes) - 1][2]:
        raise _err.InvalidArgument(
            f"segment size {size} leaves {npages} pages of {page} bytes, fewer than one "
            f"value of max_value {max_value} needs; give it more memory or a smaller max_value")
    plan.update(pagemap_off=pagemap_off, arena_off=align_to(pagemap_off + npages, 4096),
                npages=npages, page_size=page, nstripes=nstripes, ring_size=ring_size,
                classes=classes)
    return plan


def create(name, size="64MiB", mode=0o600, *, max_key=250, max_value=1 << 20,
           max_buckets=64, index_slots=None, ring_size=None, ring_wait=1.0,
           max_procs=64, size_factor=1.25, max_transaction_keys=1024, object_readers=1024):
    """Create the segment /bukt-<name> and format it. SegmentExists if it exists."""
    import posix_ipc
    cdef uint64_t nbytes = _parse_size(size)
    if not 1 <= max_key <= 65535:
        raise _err.InvalidArgument(f"max_key {max_key}: 1..65535 bytes")
    if not 1 <= max_value <= (1 << 30):
        raise _err.InvalidArgument(f"max_value {max_value}: 1 byte .. 1 GiB")
    if not 1 <= max_buckets <= 4096:
        raise _err.InvalidArgument(f"max_buckets {max_buckets}: 1..4096")
    if not 2 <= max_procs <= 4096:
        raise _err.InvalidArgument(f"max_procs {max_procs}: 2..4096")
    if not 1.01 <= size_factor <= 4.0:
        raise _err.InvalidArgument(f"size_factor {size_factor}: 1.01..4")
    if not 1 <= max_transaction_keys <= 0xffffffff:
        raise _err.InvalidArgument(f"max_transaction_keys {max_transaction_keys}: "
                                   "at least 1")
    if not 1 <= object_readers <= (1 << 20):
        raise _err.InvalidArgument(f"object_readers {object_readers}: 1..1048576")
    plan = _layout(nbytes, max_key, max_value, max_buckets,
                   _parse_size(index_slots or 0), _parse_size(ring_size or 0),
                   max_procs, size_factor, object_readers=object_readers)
    shm_name = _shm_name(name)
    try:
        shm = posix_ipc.SharedMemory(shm_name, posix_ipc.O_CREX, mode=mode, size=0)
    except posix_ipc.ExistentialError:
        raise _err.SegmentExists(f"segment {shm_name} exists; attach to it, or remove it "
                                 "with store.unlink() / `bukt check`") from None
    try:
        os.fchmod(shm.fd, mode)      # shm_open applies the umask; the mode is asked for
        try:
            os.ftruncate(shm.fd, nbytes)
            os.posix_fallocate(shm.fd, 0, nbytes)
        except OSError as e:
            raise _err.SegmentFull(
                f"cannot reserve {nbytes} bytes in /dev/shm for {shm_name}: "
                f"{os.strerror(e.errno)}; free space there or ask for less memory") from None
        store = Store()
        store.name = name
        store._map(shm.fd, nbytes, False)
        _format(store, plan, nbytes, mode, max_key, max_value, max_buckets, max_procs,
                ring_wait, max_transaction_keys)
        store._bind_regions()
    except BaseException:
        shm.close_fd()
        posix_ipc.unlink_shared_memory(shm_name)
        raise
    shm.close_fd()
    return store


cdef _format(Store s, dict plan, uint64_t nbytes, int mode, uint32_t max_key,
             uint32_t max_value, uint32_t max_buckets, uint32_t max_procs, double ring_wait,
             uint32_t max_txn_keys):
    cdef bk_header *h = s.hdr
    cdef uint64_t i
    h.header_size = BK_HEADER_SIZE
    h.total_size = nbytes
    h.generation = int.from_bytes(_secrets.token_bytes(8), "little") | 1
    h.created_ms = bk_now_ms()
    h.mode = mode
    h.flags = 1 if BUKT_DEBUG else 0
    h.stripes_off = plan["stripes_off"]
    h.slots_off = plan["slots_off"]
    h.nstripes = plan["nstripes"]
    h.slots_per_stripe = SLOTS
    h.classes_off = plan["classes_off"]
    h.nclasses = len(plan["classes"])
    h.page_size = plan["page_size"]
    h.pagemap_off = plan["pagemap_off"]
    h.arena_off = plan["arena_off"]
    h.npages = plan["npages"]
    h.buckets_off = plan["buckets_off"]
    h.max_buckets = max_buckets
    h.max_procs = max_procs
    h.procs_off = plan["procs_off"]
    h.counters_off = plan["counters_off"]
    h.readers_off = plan["readers_off"]
    h.nreaders = plan["nreaders"]
    h.ring_off = plan["ring_off"]
    h.ring_size = plan["ring_size"]
    h.max_key = max_key
    h.max_value = max_value
    h.ring_wait_ms = <uint32_t>(ring_wait * 1000)
    h.max_txn_keys = max_txn_keys
    h.ring_head = h.ring_tail = h.flushed_pos = RING_FIRST_POS
    h.version_counter = 0
    h.lru_clock = 0                     # ticks since created_ms
    if bk_lock_init(&h.alloc_lock) or bk_lock_init(&h.meta_lock) or bk_lock_init(&h.ring_lock):
        raise OSError("pthread_mutex_init failed")
    cdef bk_stripe *st
    cdef uint32_t level = 0
    while level < BK_FIRST_LEVEL and (2ULL << level) <= h.nstripes:
        level += 1                      # 2^level stripes in use to start (GROWTH)
    h.index_geom = <uint64_t>level << 32
    for i in range(h.nstripes):
        st = <bk_stripe *>(s.base + h.stripes_off + i * BK_STRIPE_BYTES)
        if bk_lock_init(&st.lock):
            raise OSError("pthread_mutex_init failed")
        st.depth = level if i < (1ULL << level) else 0
        st.min_expire_ms = BK_NO_EXPIRY     # empty: nothing expires (0 would be a
                                            # correct bound too, costing a walk)
    cdef bk_class *cl = <bk_class *>(s.base + h.classes_off)
    classes = plan["classes"]
    for i in range(h.nclasses):
        if bk_lock_init(&cl[i].lock):
            raise OSError("pthread_mutex_init failed")
        cl[i].chunk_size, cl[i].per_slab, cl[i].slab_pages = classes[i]
    h.meta_epoch = 1                    # 0 stands for "closed" (meta_epoch_of)
    # Written last: a segment whose magic is set is completely formatted.
    h.format = BK_FORMAT
    bk_fence_rel()
    bk_store_rel64(&h.magic, BK_MAGIC)


cdef object retired_lost(Store s):
    return _err.SegmentRetired(
        f"segment /bukt-{s.name} was replaced by a cold start before this write reached "
        "the log the new segment was built from: the write is lost. Try it again (the "
        "next operation attaches to the new segment).")


def attach(name, readonly=False):
    """Attach to the existing segment /bukt-<name>; SegmentNotFound if none."""
    import posix_ipc
    shm_name = _shm_name(name)
    try:
        shm = posix_ipc.SharedMemory(shm_name, read_only=bool(readonly))
    except posix_ipc.ExistentialError:
        raise _err.SegmentNotFound(
            f"no segment {shm_name}: start the service (`bukt serve` or `bukt writer`) "
            "or create it with bukt.create()") from None
    except posix_ipc.PermissionsError as e:
        raise _err.SegmentDenied(f"segment {shm_name}: permission denied ({e}); "
                                  "check the segment's mode and your user") from None
    cdef Store store
    try:
        size = os.fstat(shm.fd).st_size
        if size < BK_HEADER_SIZE:
            raise _err.SegmentInvalid(f"segment {shm_name} is {size} bytes: not a Bukt segment")
        store = Store()
        store.name = name
        store._map(shm.fd, size, bool(readonly))
    finally:
        shm.close_fd()
    cdef bk_header *h = store.hdr
    if bk_load_acq64(&h.magic) != BK_MAGIC:
        store.close()
        raise _err.SegmentInvalid(f"segment {shm_name} has no Bukt magic number: it is "
                                  "not a Bukt segment, or it was never fully formatted")
    if h.format != BK_FORMAT:
        fmt = h.format
        store.close()
        raise _err.FormatMismatch(f"segment {shm_name} has format {fmt}; this build reads "
                                  f"format {BK_FORMAT}. Stop the service and restart it "
                                  "with one version (the writer rebuilds from disk)")
    if h.total_size != size:
        store.close()
        raise _err.SegmentInvalid(f"segment {shm_name} claims {h.total_size} bytes but "
                                  f"has {size}")
    store._bind_regions()
    return store
