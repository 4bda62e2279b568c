# meta.pxi: the bucket table and its tokens (meta lock), store-wide stats, the
# expiry cycle, and the consumer side of the ring used by the writer process.
#
# Bucket and token changes go through the ring as META records whose value is a
# JSON object, so the writer process logs them beside the key records, in order
# (meta_change says how a death half-way is repaired).

_BUCKET_NAME = _re.compile(r"[A-Za-z0-9._-]{1,64}\Z")


cdef int find_bucket(Store s, str name) except -2:
    cdef uint32_t i
    settle_meta(s)
    cdef bytes nb = name.encode()
    for i in range(s.max_buckets):
        if s.bucketv[i].state != 0 and s.bucketv[i].name == nb:
            return <int>i
    return -1


cdef int meta_change(Store s, dict change) except -1:
    """Make a bucket or token change (meta lock held): log it, then apply it.

    The change is first written into the header's intent (meta_buf), then its META
    record is reserved, filled and committed, and only then applied to the table, by
    apply_meta, which is idempotent. So whoever repairs a dead holder (repair_meta)
    knows what it was doing: a record still reserved means nothing was applied (skip
    it); a committed one means the log has it, so apply it again."""
    cdef bk_header *h = s.hdr
    cdef uint64_t pos = 0
    cdef uint32_t need
    payload = json.dumps(change, separators=(",", ":")).encode()
    if len(payload) > sizeof(h.meta_buf):
        raise _err.InvalidArgument("bucket change too large to log")
    memcpy(h.meta_buf, <const char *>payload, len(payload))
    h.meta_len = <uint32_t>len(payload)
    h.meta_ring = 0
    bk_store_rel32(&h.meta_state, 1)
    if s.logging and claimed(h):                # under the meta lock: THE WRITER'S CLAIM
        need = rec_size(0, <uint32_t>len(payload))
        pos = ring_reserve_wait(s, need, BK_RING_META_STRIPE, &h.meta_ring)
        if pos == 0:
            bk_store_rel32(&h.meta_state, 0)
            raise ring_full(s, "change ring full: the writer process is down or behind; "
                            "the bucket change was not applied", need)
        ring_fill(s, pos, BK_T_META, change.get("idx", 0), change.get("gen", 0), NULL, 0,
                  payload, <uint32_t>len(payload), 0, 0, 0)
        ring_commit(s, pos)
        s.last_pos = pos + need
    apply_meta(s, change)
    bk_store_rel32(&h.meta_state, 0)
    return 0


cdef int apply_meta(Store s, dict c) except -1:
    """Apply a logged bucket change to the table; applying it twice changes nothing."""
    cdef uint32_t idx = c["idx"], gen = c["gen"], i
    cdef int t
    cdef bk_bucket *b = &s.bucketv[idx]
    op = c["op"]
    if op == "create":
        if b.state == 1 and b.gen == gen:
            return 0
        memset(b.name, 0, sizeof(b.name))
        nb = c["name"].encode()
        memcpy(b.name, <const char *>nb, len(nb))
        b.schema = SCHEMAS.index(c["schema"])
        b.eviction = EVICTIONS.index(c["eviction"])
        b.persist = c["persist"]
        b.default_ttl_ms = c["default_ttl_ms"]
        b.created_ms = bk_now_ms()
        b.next_token_id = 1
        b.dropper_pid = 0
        b.dropper_start = 0
        memset(b.tokens, 0, sizeof(b.tokens))
        b.keys = 0
        b.bytes = 0
        b.mem = 0
        b.max_memory = c.get("max_memory", 0)
        # compression (bukt/codec.py): absent from the change when none
        b.compression = COMPRESSIONS.index(c.get("compression", "none"))
        b.comp_threshold = c.get("comp_threshold", 0)
        b.comp_min_saving = c.get("comp_min_saving", 0)
        b.comp_saved = 0
        for i in range(s.max_procs):        # a reused slot starts its counters at 0
            memset(s.counters_base + <uint64_t>i * s.max_buckets + idx, 0, sizeof(bk_counters))
        b.gen = gen
        bk_store_rel32(&b.state, 1)
    elif op == "drop":
        if b.state != 0 and b.gen == gen:
            b.gen = gen + 1                 # every Bucket object of it is now stale
            bk_store_rel32(&b.state, 0)
    elif op == "token_add":
        if b.state != 1 or b.gen != gen or token_slot(b, c["id"]) >= 0:
            return 0
        t = token_slot(b, 0)
        if t < 0:
            return 0
        hb = bytes.fromhex(c["hash"])
        memcpy(b.tokens[t].hash, <const char *>hb, 32)
        b.tokens[t].perms = c["perms"]
        b.next_token_id = max(b.next_token_id, c["id"] + 1)
        bk_store_rel32(&b.tokens[t].id, c["id"])
    elif op == "token_revoke":
        if b.state == 1 and b.gen == gen:
            t = token_slot(b, c["id"])
            if t >= 0:
                bk_store_rel32(&b.tokens[t].id, 0)
    bump_meta_epoch(s)
    return 0


cdef inline void bump_meta_epoch(Store s) noexcept:
    """After a change to the bucket table: whoever cached a check of it looks again
    (under the meta lock, so a plain increment; released so that a reader that sees
    the new epoch sees the change)."""
    bk_store_rel64(&s.hdr.meta_epoch, s.hdr.meta_epoch + 1)


cdef uint64_t meta_epoch_of(object store) noexcept:
    """The segment's meta_epoch, 0 when `store` is closed. Declared in bukt/_core.pxd,
    the core's C boundary: bukt/tcp/_epoll.pyx cimports it."""
    cdef Store s = <Store>store
    if not s.mapped:                    # (hdr still points at the unmapped header)
        return 0
    return bk_load_acq64(&s.hdr.meta_epoch)



cdef int repair_meta(Store s) except -1:
    """The meta lock's holder died: finish or forget its change (see meta_change)."""
    cdef bk_header *h = s.hdr
    cdef uint64_t pos = h.meta_ring, head = bk_load_acq64(&h.ring_head)
    cdef uint64_t tail = bk_load_acq64(&h.ring_tail), p
    cdef bk_rec *r
    cdef bint logged = False
    if h.meta_state == 1 and pos != 0 and pos < head:
        if pos < tail:
            logged = True                   # consumed, so it was committed
        else:
            r = REC(s, pos)
            if r.stripe == BK_RING_META_STRIPE and bk_load_acq8(&r.state) == BK_R_COMMITTED:
                logged = True
    # any META record still reserved was its, and was never applied: skip it
    p = tail
    while p < head:
        r = REC(s, p)
        if r.len < 8 or r.len % 8 or r.len > s.ring_size:
            break
        if r.stripe == BK_RING_META_STRIPE and bk_load_acq8(&r.state) == BK_R_RESERVED:
            bk_store_rel8(&r.state, BK_R_SKIPPED)
        p += r.len
    if logged and h.meta_len <= sizeof(h.meta_buf):
        apply_meta(s, json.loads(PyBytes_FromStringAndSize(h.meta_buf, h.meta_len)))
    bk_store_rel32(&h.meta_state, 0)
    return 0


cdef int settle_meta(Store s) except -1:
    """Readers of the bucket table call this first: when a meta change is in flight
    and its holder turns out dead (trylock says EOWNERDEAD), repair it now, so the
    table agrees with the log without waiting for the next bucket change. Costs one
    load when no change is in flight."""
    cdef int rc
    if not bk_load_acq32(&s.hdr.meta_state) or s.readonly:
        return 0
    rc = bk_lock_try(&s.hdr.meta_lock)
    if rc == EOWNERDEAD:
        repair_meta(s)
        bk_lock_consistent(&s.hdr.meta_lock)
        _note_repair(s)
    elif rc != 0:
        return 0                            # busy: its holder is alive and at work
    unlock_meta(s)
    return 0


cdef int finish_dead_drops(Store s) except -1:
    """A process that died inside drop_bucket left its bucket dropping: finish it
    (remove its keys, then the logged drop). Holds no lock when called."""
    cdef uint32_t i
    cdef bk_bucket *b
    for i in range(s.max_buckets):
        b = &s.bucketv[i]
        if b.state == 2 and not dropper_alive(b):
            finish_drop(s, i, b.gen)
    return 0


cdef int finish_drop(Store s, uint32_t slot, uint32_t gen) except -1:
    cdef bk_bucket *b = &s.bucketv[slot]
    remove_where(s, slot, -1)               # each key's delete is logged in order
    ring_wait_space(s, rec_size(0, 512))
    lock_meta(s)
    try:
        if b.state == 2 and b.gen == gen:
            meta_change(s, {"op": "drop", "idx": slot, "gen": gen,
                            "name": b.name.decode()})
    finally:
        unlock_meta(s)
    return 0


cdef dict bucket_settings(Store s, uint32_t i):
    cdef bk_bucket *b = &s.bucketv[i]
    return {"name": b.name.decode(), "schema": SCHEMAS[b.schema],
            "eviction": EVICTIONS[b.eviction], "persist": bool(b.persist),
            "default_ttl": (b.default_ttl_ms / 1000.0) if b.default_ttl_ms else None,
            "max_memory": b.max_memory or None,
            "compression": COMPRESSIONS[b.compression],
            "compression_threshold": b.comp_threshold if b.compression else None,
            "compression_min_saving": b.comp_min_saving if b.compression else None}


cdef object create_bucket(Store s, str name, str schema, str eviction, object persist,
                          object default_ttl, object max_memory, object compression=None,
                          object comp_threshold=None, object comp_min_saving=None):
    cdef uint32_t i
    cdef int slot = -1
    cdef bk_bucket *b
    cdef int64_t dttl = 0, maxmem = 0
    comp = compression_settings(compression, comp_threshold, comp_min_saving)
    s._writable()
    if not isinstance(name, str) or not _BUCKET_NAME.match(name):
        raise _err.SchemaError(f"bucket name {name!r}: 1-64 characters of A-Z a-z 0-9 . _ -")
    if schema not in SCHEMAS:
        raise _err.SchemaError(f"schema {schema!r}: one of {', '.join(SCHEMAS)}")
    if eviction not in EVICTIONS:
        raise _err.SchemaError(f"eviction {eviction!r}: one of {', '.join(EVICTIONS)}")
    if not isinstance(persist, bool):
        raise _err.SchemaError(f"persist {persist!r}: True or False")
    if default_ttl is not None:
        try:
            dttl = ttl_ms(default_ttl)
        except _err.InvalidArgument as e:
            raise _err.SchemaError(f"default_ttl: {e}") from None
    if max_memory is not None:
        try:
            maxmem = _parse_size(max_memory)
        except _err.InvalidArgument as e:
            raise _err.SchemaError(f"max_memory: {e}") from None
        if not isinstance(maxmem, int) or not 0 <= maxmem <= s.size:
            raise _err.SchemaError(f"max_memory {max_memory!r}: 0 (no limit) up to the "
                                   f"segment's {s.size} bytes")
    finish_dead_drops(s)
    ring_wait_space(s, rec_size(0, 512))
    lock_meta(s)
    try:
        if find_bucket(s, name) >= 0:
            raise _err.BucketExists(f"bucket {name!r} exists")
        for i in range(s.max_buckets):
            if s.bucketv[i].state == 0:
                slot = <int>i
                break
        if slot < 0:
            raise _err.LimitExceeded(f"bucket limit reached: {s.max_buckets} buckets "
                                     "(max_buckets); drop one or create the segment "
                                     "with more")
        meta_change(s, {"op": "create", "idx": slot, "gen": s.bucketv[slot].gen + 1,
                        "name": name, "schema": schema, "eviction": eviction,
                        "persist": bool(persist), "default_ttl_ms": dttl,
                        "max_memory": maxmem, **comp})
    finally:
        unlock_meta(s)
    return s.bucket(name)


cdef dict compression_settings(object compression, object threshold, object min_saving):
    """The META create change's compression fields, checked: {} for none (the change
    then reads as it did before compression existed). Defaults: bukt/codec.py."""
    from bukt import codec
    if compression is None or compression == "none":
        if threshold is not None or min_saving is not None:
            raise _err.SchemaError("compression_threshold and compression_min_saving "
                                   "need a compression (zstd or lz4)")
        return {}
    if compression not in COMPRESSIONS:
        raise _err.SchemaError(f"compression {compression!r}: one of {', '.join(COMPRESSIONS)}")
    lo, hi = codec.THRESHOLD_RANGE
    if threshold is None:
        threshold = codec.DEFAULT_THRESHOLD
    try:
        threshold = _parse_size(threshold)
    except (_err.InvalidArgument, ValueError, TypeError):
        threshold = None
    if not isinstance(threshold, int) or not lo <= threshold <= hi:
        raise _err.SchemaError(f"compression_threshold: bytes from {lo} to {hi}")
    if min_saving is None:
        min_saving = codec.DEFAULT_MIN_SAVING
    if isinstance(min_saving, bool) or not isinstance(min_saving, int) \
            or not 0 <= min_saving <= 90:
        raise _err.SchemaError(f"compression_min_saving {min_saving!r}: a percent from 0 "
                               "to 90")
    return {"compression": compression, "comp_threshold": threshold,
            "comp_min_saving": min_saving}


cdef int drop_bucket(Store s, str name) except -1:
    """Three steps, so a death in any of them is finished by the next process:
    mark the bucket dropping (writers refuse it from then on), delete its keys (each
    delete logged), then log and apply the drop."""
    cdef int slot
    cdef bk_bucket *b
    cdef uint32_t gen
    s._writable()
    lock_meta(s)
    try:
        slot = find_bucket(s, name)
        if slot < 0 or (s.bucketv[slot].state == 2 and dropper_alive(&s.bucketv[slot])):
            raise _err.BucketNotFound(f"no bucket {name!r}")
        b = &s.bucketv[slot]
        gen = b.gen
        b.dropper_pid = s.pid               # ours now, or taken over from a dead dropper
        b.dropper_start = s.pid_start
        bk_store_rel32(&b.state, 2)
    finally:
        unlock_meta(s)
    finish_drop(s, slot, gen)
    s._bucket_cache.pop(name, None)
    return 0


cdef int token_slot(bk_bucket *b, uint32_t token_id) noexcept:
    cdef int i
    for i in range(BK_MAX_TOKENS):
        if b.tokens[i].id == token_id:
            return i
    return -1


cdef object add_token(Store s, str name, bytes token_hash, int perms):
    cdef int slot, t
    cdef bk_bucket *b
    s._writable()
    if len(token_hash) != 32:
        raise _err.InvalidArgument("token_hash must be the 32-byte SHA-256 of the token")
    if perms <= 0 or perms & ~15:
        raise _err.InvalidArgument(f"perms {perms}: a mask of READ 1, WRITE 2, ADMIN 4, "
                                   "REPLICATE 8")
    ring_wait_space(s, rec_size(0, 512))
    lock_meta(s)
    try:
        slot = find_bucket(s, name)
        if slot < 0 or s.bucketv[slot].state != 1:
            raise _err.BucketNotFound(f"no bucket {name!r}")
        b = &s.bucketv[slot]
        if find_token(s, token_hash) is not None:
            raise _err.InvalidArgument("a token with this hash exists already")
        t = token_slot(b, 0)
        if t < 0:
            raise _err.LimitExceeded(f"bucket {name!r} has {BK_MAX_TOKENS} tokens, the "
                                     "limit; revoke one first")
        tid = b.next_token_id
        meta_change(s, {"op": "token_add", "idx": slot, "gen": b.gen, "name": name,
                        "id": tid, "perms": perms, "hash": token_hash.hex()})
    finally:
        unlock_meta(s)
    return tid


cdef list bucket_table(Store s):
    cdef uint32_t i
    cdef int t
    cdef bk_bucket *b
    cdef list out = []
    if s.readonly:
        raise _err.ReadOnly("bucket_table() takes the meta lock: attach read-write")
    settle_meta(s)
    lock_meta(s)
    try:
        for i in range(s.max_buckets):
            b = &s.bucketv[i]
            if b.state not in (1, 2):
                continue
            tokens = tuple((b.tokens[t].id, b.tokens[t].perms,
                            PyBytes_FromStringAndSize(<char *>b.tokens[t].hash, 32))
                           for t in range(BK_MAX_TOKENS) if b.tokens[t].id)
            out.append((i, b.gen, b.state, b.name.decode(), SCHEMAS[b.schema],
                        EVICTIONS[b.eviction], bool(b.persist), b.default_ttl_ms, tokens,
                        b.max_memory, COMPRESSIONS[b.compression], b.comp_threshold,
                        b.comp_min_saving))
    finally:
        unlock_meta(s)
    return out


cdef object restore_token(Store s, str name, uint32_t token_id, bytes token_hash, int perms):
    cdef int slot, t
    cdef bk_bucket *b
    s._writable()
    lock_meta(s)
    try:
        slot = find_bucket(s, name)
        if slot < 0 or s.bucketv[slot].state != 1:
            raise _err.BucketNotFound(f"no bucket {name!r}")
        b = &s.bucketv[slot]
        if token_slot(b, token_id) >= 0 or token_id == 0:
            return token_id
        t = token_slot(b, 0)
        if t < 0:
            raise _err.LimitExceeded(f"bucket {name!r} has {BK_MAX_TOKENS} tokens, the limit")
        memcpy(b.tokens[t].hash, <const char *>token_hash, 32)
        b.tokens[t].perms = perms
        b.next_token_id = max(b.next_token_id, token_id + 1)
        bk_store_rel32(&b.tokens[t].id, token_id)
        bump_meta_epoch(s)
    finally:
        unlock_meta(s)
    return token_id


cdef tuple dump_stripes(Store s, uint64_t start, uint32_t count):
    """Live entries of `count` stripes from cursor `start` (read_at_cursor), and the
    cursor to go on from (0: done)."""
    cdef uint64_t cur = start, nxt = 0
    cdef uint32_t done
    cdef list out = [], part
    for done in range(count):
        part = read_at_cursor(s, cur, collect_entries, None, &nxt)
        for bidx, k, v, exp_, fl, ver in part:
            if s.bucketv[bidx].state == 1:
                out.append((s.bucketv[bidx].name.decode(), k, v, exp_, fl, ver))
        cur = nxt
        if cur == 0:
            break
    return out, cur


cdef list collect_entries(Store s, uint32_t si, object arg):
    """Live entries of one stripe, read without validation (the caller validates)."""
    cdef uint64_t *slots = SLOTS_OF(s, si)
    cdef uint64_t w, off
    cdef uint32_t i, klen, vlen
    cdef int64_t now = s.now(), exp
    cdef bk_entry *e
    cdef list part = []
    for i in range(SLOTS):
        w = bk_load_rlx64(&slots[i])
        if w == 0:
            continue
        off = w & BK_OFF_MASK
        if off < s.arena_off or off + 32 > s.size:
            continue
        e = ENT(s, off)
        klen = bk_load_rlx32(&e.klen)
        vlen = bk_load_rlx32(&e.vlen)
        if klen > s.max_key or vlen > s.max_value or off + 32 + klen + vlen > s.size \
                or e.bucket >= s.max_buckets:
            continue
        exp = bk_load_rlx_i64(&e.expire_ms)
        if exp and exp <= now:
            continue
        part.append((e.bucket, PyBytes_FromStringAndSize(EKEY(s, off), klen),
                     PyBytes_FromStringAndSize(EKEY(s, off) + klen, vlen),
                     exp, e.flags & BK_E_CARRY, e.version))
    return part


cdef bint revoke_token(Store s, str name, uint32_t token_id) except -1:
    cdef int slot, t
    cdef bk_bucket *b
    s._writable()
    if token_id == 0:
        return False
    ring_wait_space(s, rec_size(0, 512))
    lock_meta(s)
    try:
        slot = find_bucket(s, name)
        if slot < 0 or s.bucketv[slot].state != 1:
            raise _err.BucketNotFound(f"no bucket {name!r}")
        b = &s.bucketv[slot]
        t = token_slot(b, token_id)
        if t < 0:
            return False
        meta_change(s, {"op": "token_revoke", "idx": slot, "gen": b.gen,
                        "name": name, "id": token_id})
        return True
    finally:
        unlock_meta(s)


cdef object find_token(Store s, bytes token_hash):
    """(bucket, id, perms) of the token with this hash, or None. Every live token is
    compared, each in constant time, so the time taken says nothing of where or
    whether a prefix matched."""
    cdef uint32_t i
    cdef int t
    cdef bk_bucket *b
    found = None
    if len(token_hash) != 32:
        return None
    settle_meta(s)
    for i in range(s.max_buckets):
        b = &s.bucketv[i]
        if b.state != 1:
            continue
        for t in range(BK_MAX_TOKENS):
            if b.tokens[t].id == 0:
                continue
            if hmac.compare_digest(PyBytes_FromStringAndSize(<char *>b.tokens[t].hash, 32),
                                   token_hash) and found is None:
                found = (b.name.decode(), b.tokens[t].id, b.tokens[t].perms)
    return found


cdef dict store_stats(Store s):
    cdef uint32_t i
    cdef uint64_t used_slots = 0, with_ttl = 0
    cdef bk_header *h = s.hdr
    totals = {"reads": 0, "writes": 0, "hits": 0, "misses": 0, "deletes": 0,
              "keys": 0, "bytes": 0, "memory": 0, "evictions": 0, "expirations": 0,
              "integrity_errors": 0,
              "bytes_saved": 0}
    nb = 0
    for i in range(s.max_buckets):
        if s.bucketv[i].state == 1:
            nb += 1
            for k, v in bucket_stats(s, i).items():
                if k in totals:             # (not a bucket's own max_memory)
                    totals[k] += v
    for i in range(s.nstripes):
        used_slots += STRIPE(s, i).count
        with_ttl += STRIPE(s, i).nttl
    pages_used = bk_load_acq64(&h.pages_used)
    chunk_bytes = 0
    for i in range(s.nclasses):
        chunk_bytes += s.classes[i].used * s.classes[i].chunk_size
    index_bytes = <uint64_t>s.nstripes * BK_STRIPE_BYTES
    head, tail = bk_load_acq64(&h.ring_head), bk_load_acq64(&h.ring_tail)
    totals.update(
        buckets=nb, segment_bytes=s.size, page_size=s.page_size, pages_total=s.npages,
        pages_used=pages_used, chunk_bytes=chunk_bytes, index_bytes=index_bytes,
        index_slots=s.nstripes * SLOTS, index_used=used_slots,
        # stripes the index uses so far (GROWTH in table.pxi): 2^level + split
        index_stripes=stripes_in_use(bk_load_acq64(&h.index_geom)),
        # entries holding an expiry, expired ones not yet removed included
        keys_with_ttl=with_ttl,
        # bytes in use: the fixed regions (header, index, tables) plus the pages
        # handed out; the ring is counted apart, being a fixed buffer
        memory_used=h.ring_off + (h.arena_off - h.pagemap_off)
        + (pages_used - h.free_pages) * s.page_size,
        pages_free=h.free_pages, slab_moves=h.slab_moves, relocations=h.relocations,
        ring_size=s.ring_size, ring_head=head, ring_tail=tail, ring_depth=head - tail,
        flushed_pos=h.flushed_pos, evictions_total=h.evictions,
        expirations_total=h.expirations, repairs=h.repairs, generation=h.generation,
        # stripes a dead process left mid-write, not yet repaired (THE REPAIR PASS)
        stripes_awaiting_repair=count_awaiting_repair(s),
        writer_pid=h.writer_pid, writer_ready=bool(h.writer_ready))
    return totals


cdef int expire_cycle(Store s, int64_t now, double budget) except -1:
    """Redis's active expiry, over stripes instead of random keys: from a cursor
    kept in the header, walk, under its lock, each stripe that may hold an expired
    entry, until the time budget is spent. Returns how many expired.

    Fast path: a stripe is passed over without reading its slots when its nttl is 0
    (no entry with an expiry) or its min_expire_ms is after `now` (no entry expires
    before it: THE EXPIRY BOUND in core.pyx). Both words share a cache line of the
    stripe header, so with a million keys, 1% of them with a TTL an hour away, a pass
    reads one line a stripe where it read ~every entry header (a miss per key).
    Slow path: a stripe whose bound is due is walked under its lock; the walk
    removes what expired and sets the bound exactly, to the earliest expiry left. A
    stripe walked for nothing (its earliest key was deleted, persisted or given a
    later expiry since the bound was set) costs one walk, after which its bound is
    exact again. Both words are read without the lock: a writer that adds an
    expiry meanwhile is seen by the next cycle, and until then lazy expiry hides its
    key from every reader. store.expire_scanned and expire_entries_read count the
    stripes and entry headers this process walked."""
    cdef uint64_t deadline = bk_mono_ns() + <uint64_t>(budget * 1e9)
    cdef uint32_t n = 0, si
    cdef uint64_t entries = 0, scanned = 0
    cdef bk_stripe *st
    cdef int removed = 0
    s._writable()
    tick_lru(s, now)                    # the writer's cycle keeps the LRU clock going
    si = <uint32_t>(s.hdr.expire_cursor % s.nstripes)
    try:
        while n < s.nstripes:
            st = STRIPE(s, si)
            if bk_load_rlx32(&st.nttl) != 0 and bk_load_rlx_i64(&st.min_expire_ms) <= now:
                # slow path: something may be due
                scanned += 1
                ring_wait_space(s, rec_size(s.max_key, 0))
                removed += remove_in_stripe(s, si, -1, now, &entries)
            si = (si + 1) % s.nstripes
            n += 1
            if (n & 15) == 0 and <uint64_t>bk_mono_ns() > deadline:
                break
    finally:                            # a walk that raised (RingFull) is where
        s.hdr.expire_cursor = si        # the next cycle starts
        s.expire_scanned += scanned
        s.expire_entries_read += entries
    maybe_recount(s)
    return removed


# -- the consumer side of the ring (the writer process) ----------------------------
cdef tuple ring_read(Store s, int max_records, uint64_t max_bytes):
    """Committed records from the tail: ([(seq, type, bucket, gen, key, value,
    expire_ms, version, flags)], next_pos, stuck) where stuck is (pos, pid, owner)
    of a record still RESERVED, or None. flags: the record's flags byte (single-read,
    BK_RF_*) | its eflags (the entry's object bits) << 8."""
    cdef bk_header *h = s.hdr
    cdef uint64_t pos = bk_load_acq64(&h.ring_tail), head = bk_load_acq64(&h.ring_head)
    cdef uint64_t got = 0, off
    cdef bk_rec *r
    cdef uint8_t state
    cdef char *body
    out = []
    stuck = None
    while pos < head and len(out) < max_records and got < max_bytes:
        off = pos % s.ring_size
        r = <bk_rec *>(s.ring + off)
        state = bk_load_acq8(&r.state)
        if r.len < 8 or r.len % 8 or r.len > s.ring_size - off:
            raise _err.BuktError(f"change ring damaged at position {pos} (length {r.len})")
        if state == BK_R_PAD or state == BK_R_SKIPPED:
            pos += r.len
            continue
        if state == BK_R_RESERVED:
            stuck = (pos, r.pid, r.stripe)
            break
        if state != BK_R_COMMITTED or 48 + <uint64_t>r.klen + r.vlen > r.len:
            raise _err.BuktError(f"change ring damaged at position {pos} (state {state})")
        body = <char *>r + 48
        out.append((pos, r.type, r.bucket, r.bucket_gen,
                    PyBytes_FromStringAndSize(body, r.klen),
                    PyBytes_FromStringAndSize(body + r.klen, r.vlen),
                    r.expire_ms, r.version, r.flags | (<uint32_t>r.eflags << 8)))
        got += r.len
        pos += r.len
    return out, pos, stuck


cdef bint ring_unstick(Store s, uint64_t pos) except -1:
    """The record at `pos` stays RESERVED: if its producer died, repair the lock it
    held (which commits or skips the record). True when the record is resolved."""
    cdef bk_rec *r = REC(s, pos)
    cdef uint32_t owner = r.stripe
    if bk_load_acq8(&r.state) != BK_R_RESERVED:
        return True
    cdef int rc
    if owner == BK_RING_META_STRIPE:
        rc = bk_lock_try(&s.hdr.meta_lock)
        if rc == EBUSY:
            return False
        if rc == EOWNERDEAD:
            repair_meta(s)
            bk_lock_consistent(&s.hdr.meta_lock)
            _note_repair(s)
        elif rc != 0:
            return _lock_error("meta", rc)
        if bk_load_acq8(&r.state) == BK_R_RESERVED:     # no live holder: an orphan
            bk_store_rel8(&r.state, BK_R_SKIPPED)
        unlock_meta(s)
        return True
    if owner >= s.nstripes or not trylock_stripe(s, owner):
        return False
    try:
        if bk_load_acq8(&r.state) == BK_R_RESERVED:   # no live holder: an orphan
            bk_store_rel8(&r.state, BK_R_SKIPPED)
    finally:
        unlock_stripe(s, owner)
    maybe_recount(s)
    return True
