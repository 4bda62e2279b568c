# C declarations of cext/includes/segment.h: the segment's byte layout and the
# primitives (atomics, robust mutex, futex, hash) the core is built from.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t

cdef extern from "segment.h" nogil:
    int BUKT_DEBUG
    uint64_t BK_MAGIC
    uint32_t BK_FORMAT, BK_HEADER_SIZE, BK_SLOTS_PER_STRIPE, BK_STRIPE_MAX_LOAD
    uint32_t BK_SPLIT_AT, BK_FIRST_LEVEL
    uint64_t BK_OFF_MASK, BK_TAG_MASK, BK_STRIPE_BYTES
    int64_t BK_NO_EXPIRY
    int BK_READ_TRIES
    int BK_TAG_SHIFT, BK_NAME_MAX, BK_MAX_TOKENS, BK_MAX_CLASSES, BK_DATA_DIR_MAX
    uint8_t BK_E_USED, BK_E_PENDING, BK_E_SINGLE
    uint8_t BK_E_MANIFEST, BK_E_HIDDEN, BK_E_ZSTD, BK_E_LZ4
    uint8_t BK_E_OBJECT, BK_E_DECODE, BK_E_CARRY
    const char *BK_RESERVED_PREFIX
    int BK_RESERVED_PREFIX_LEN
    uint32_t BK_OP_NONE, BK_OP_ALLOC, BK_OP_SET, BK_OP_DEL, BK_OP_TOUCH, BK_OP_SPLIT
    uint8_t BK_R_RESERVED, BK_R_COMMITTED, BK_R_SKIPPED, BK_R_PAD
    uint8_t BK_T_SET, BK_T_DEL, BK_T_EXPIRED, BK_T_EVICTED, BK_T_TOUCH, BK_T_META
    uint8_t BK_RF_FEED, BK_RF_FLUSH, BK_RF_INCR, BK_RF_NOVALUE
    uint32_t BK_RING_META_STRIPE, BK_RETIRING, BK_RETIRED
    int EOWNERDEAD, ENOTRECOVERABLE, EBUSY, ETIMEDOUT

    ctypedef struct bk_lock:
        pass

    ctypedef struct bk_header:
        uint64_t magic
        uint32_t format
        uint32_t header_size
        uint64_t total_size
        uint64_t generation
        uint64_t objects_retired
        uint64_t readers_off
        uint32_t nreaders
        int64_t created_ms
        uint32_t mode
        uint32_t flags
        uint64_t stripes_off
        uint64_t slots_off
        uint32_t nstripes
        uint32_t slots_per_stripe
        uint64_t classes_off
        uint32_t nclasses
        uint32_t page_size
        uint64_t pagemap_off
        uint64_t arena_off
        uint64_t npages
        uint64_t buckets_off
        uint32_t max_buckets
        uint32_t max_procs
        uint64_t procs_off
        uint64_t counters_off
        uint64_t ring_off
        uint64_t ring_size
        uint32_t max_key
        uint32_t max_value
        uint32_t ring_wait_ms
        uint32_t max_txn_keys
        uint64_t index_geom
        uint32_t retired
        uint32_t replica
        char replica_of[64]
        bk_lock alloc_lock
        bk_lock meta_lock
        bk_lock ring_lock
        uint64_t pages_used
        uint64_t free_pages
        uint64_t slab_moves
        uint64_t move_hand
        uint64_t relocations
        uint64_t ring_head
        uint32_t ring_claim
        uint32_t writer_claimed
        uint64_t ring_claim_ticket
        uint64_t ring_claim_ms
        uint64_t ring_tail
        uint64_t flushed_pos
        uint32_t flush_epoch
        uint32_t sync_always
        uint32_t feed_watched
        uint32_t writer_dozing
        uint32_t flush_waiters
        uint64_t version_counter
        uint32_t lru_clock
        uint32_t needs_recount
        uint64_t repairs
        uint64_t evictions
        uint64_t expirations
        uint64_t meta_epoch
        uint64_t writer_start
        uint64_t feed_lost
        uint32_t feed_always
        uint32_t writer_pid
        uint32_t writer_ready
        int64_t writer_heartbeat_ms
        int64_t last_fsync_ms
        uint64_t log_size
        uint64_t flushed_seq
        uint32_t writer_error_code
        uint32_t lag_limit_ms
        char writer_error[256]
        uint64_t expire_cursor
        uint32_t meta_state
        uint32_t meta_len
        uint64_t meta_ring
        char meta_buf[1024]
        uint32_t writer_sleeping
        uint32_t gather_bytes
        uint32_t feed_cache_only
        uint64_t retire_drained
        uint32_t repair_period_ms
        uint32_t data_dir_len
        char data_dir[1024]
        int64_t log_current_ms

    ctypedef struct bk_stripe:
        bk_lock lock
        uint64_t seq
        uint32_t count
        uint32_t intent_op
        uint32_t intent_slot
        uint32_t intent_hole
        uint64_t intent_old
        uint64_t intent_new
        uint64_t intent_ring
        uint32_t nttl
        uint32_t depth
        int64_t min_expire_ms

    ctypedef struct bk_entry:
        uint64_t version
        int64_t expire_ms
        uint32_t klen
        uint32_t vlen
        uint32_t _spare
        uint16_t bucket
        uint8_t flags
        uint8_t cls

    ctypedef struct bk_class:
        bk_lock lock
        uint64_t free_head
        uint32_t chunk_size
        uint32_t per_slab
        uint32_t slab_pages
        uint64_t slabs
        uint64_t used
        uint64_t hand
        uint64_t free_tail
        uint32_t drain_page
        uint32_t dry

    ctypedef struct bk_token:
        uint32_t id
        uint32_t perms
        uint8_t hash[32]

    ctypedef struct bk_bucket:
        uint32_t state
        uint32_t gen
        char name[65]
        uint8_t schema
        uint8_t eviction
        uint8_t persist
        uint8_t compression
        uint8_t comp_min_saving
        int64_t default_ttl_ms
        int64_t created_ms
        uint32_t next_token_id
        uint32_t comp_threshold
        bk_token tokens[16]
        int64_t keys
        int64_t bytes
        int64_t mem
        int64_t max_memory
        uint32_t dropper_pid
        uint32_t dropper_start
        uint64_t feed_lease
        uint64_t feed_since
        int64_t comp_saved

    ctypedef struct bk_reader:
        uint64_t owner
        int64_t since_ns

    ctypedef struct bk_proc:
        uint32_t pid
        uint32_t start
        uint32_t wake_name
        uint32_t wake_armed
        uint64_t wake_pos

    ctypedef struct bk_counters:
        int64_t hits, misses, writes, deletes, evictions, expirations, integrity_errors

    ctypedef struct bk_rec:
        uint32_t len
        uint8_t state
        uint8_t type
        uint16_t bucket
        uint32_t pid
        uint32_t stripe
        uint32_t klen
        uint32_t vlen
        int64_t expire_ms
        uint64_t version
        uint32_t bucket_gen
        uint8_t flags
        uint8_t eflags

    uint64_t bk_load_acq64(const uint64_t *p)
    uint64_t bk_load_rlx64(const uint64_t *p)
    void bk_store_rel64(uint64_t *p, uint64_t v)
    void bk_store_rlx64(uint64_t *p, uint64_t v)
    uint32_t bk_load_acq32(const uint32_t *p)
    void bk_store_rel32(uint32_t *p, uint32_t v)
    uint32_t bk_load_rlx32(const uint32_t *p)
    int64_t bk_load_rlx_i64(const int64_t *p)
    void bk_store_rlx_i64(int64_t *p, int64_t v)
    uint16_t bk_load_rlx16(const uint16_t *p)
    uint8_t bk_load_acq8(const uint8_t *p)
    void bk_store_rel8(uint8_t *p, uint8_t v)
    int64_t bk_add64(int64_t *p, int64_t v)
    uint64_t bk_fetch_add_u64(uint64_t *p, uint64_t v)
    void bk_inc32(uint32_t *p)
    void bk_dec32(uint32_t *p)
    void bk_fence_acq()
    void bk_fence_rel()
    bint bk_cas64(uint64_t *p, uint64_t expect, uint64_t want)
    bint bk_cas32(uint32_t *p, uint32_t expect, uint32_t want)
    void bk_pause()
    void bk_prefetch_w(const void *p)
    void bk_prefetch_r(const void *p)
    void bk_seq_enter(uint64_t *seq)
    void bk_seq_leave(uint64_t *seq)
    int bk_lock_init(bk_lock *l)
    int bk_lock_acquire(bk_lock *l)
    int bk_lock_try(bk_lock *l)
    bint bk_lock_owner_dead(const bk_lock *l)
    int bk_lock_release(bk_lock *l)
    int bk_lock_consistent(bk_lock *l)
    int bk_futex_wait(uint32_t *addr, uint32_t val, long timeout_ns)
    int bk_futex_wake(uint32_t *addr)
    int64_t bk_now_ms()
    int64_t bk_now_coarse_ms()
    int64_t bk_mono_ns()
    void bk_fence_seq()
    void bk_store_seq_i64(int64_t *p, int64_t v)
    int64_t bk_load_seq_i64(const int64_t *p)
    bint bk_pid_alive(uint32_t pid)
    uint64_t bk_hash(const void *key, size_t len, uint64_t seed)
