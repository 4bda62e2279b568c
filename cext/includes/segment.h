/* segment.h: the byte layout of a Bukt segment and the few primitives that are
 * clearer in C than in Cython (atomics, the robust mutex, futex, the key hash).
 *
 * The layout essay (who writes what, under which lock, and why a racing reader is
 * safe) heads cext/core.pyx; this file only fixes the bytes. Every struct here lives
 * in shared memory: fields are fixed-width, offsets are relative to the segment base,
 * never pointers, and the static assertions at the bottom pin the sizes so that a
 * compiler or platform change cannot silently change the format.
 */
#ifndef BUKT_SEGMENT_H
#define BUKT_SEGMENT_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <errno.h>
#include <time.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/futex.h>
#include "debug.h"

#define BK_MAGIC        0x4d474553544b5542ULL   /* "BUKTSEGM" little-endian */
#define BK_FORMAT       20u     /* 20: the header's writer_dozing (producers ring
                                   the writer while it sleeps long: ring.pxi, THE
                                   DOORBELL) and flush_waiters (the writer skips
                                   the flush_epoch wake when nobody sleeps on it);
                                   19: the header's feed_watched (producers ring
                                   the writer's doorbell while the change feed
                                   is watched: ring.pxi, THE DOORBELL);
                                   18: a process row (bk_proc) carries its flush
                                   waker: wake_name, wake_armed, wake_pos;
                                   17: objects in the core: entry flags
                                   MANIFEST, HIDDEN, ZSTD, LZ4 (and a ring
                                   record's eflags that carries them), buckets'
                                   compression settings and comp_saved gauge;
                                   16: the header's replica flag and replica_of (a
                                   read replica refuses writes: docs/design.md,
                                   Replicas);
                                   15: buckets' feed lease (feed_lease, feed_since)
                                   and the header's feed_always: cache-only changes
                                   reach the ring only while a bucket is watched;
                                   14: the change feed's feed_cache_only and
                                   feed_lost (bukt/feed.py, THE SOURCE);
                                   13: the header's max_txn_keys (in _pad0);
                                   12: owner start times (writer_start, dropper_start,
                                   bk_proc.start) beside their pids;
                                   11: writer_claimed beside ring_head, the lag
                                   limit (lag_limit_ms, log_current_ms);
                                   10: the header's data_dir and repair_period_ms;
                                   9: the header's retired flag (and retire_drained):
                                   a replaced segment sends its users to the new one;
                                   8: buckets' max_memory and chunk-bytes gauge, the
                                   header's relocations; 7: the header's meta_epoch; 6: the index grows by
                                   linear hashing (index_geom, stripe depth); 5:
                                   stripes keep a lower bound on their earliest expiry
                                   (min_expire_ms); 4: stripes count their entries
                                   with an expiry (nttl); 3: the ring claim beside
                                   ring_head; 2: LRU stamps beside the slots, pages
                                   move between classes */
#define BK_HEADER_SIZE  4096u

#define BK_SLOTS_PER_STRIPE 512u            /* 4 KiB of slot words per stripe */
#define BK_STRIPE_MAX_LOAD  448u            /* 7/8: probe chains stay short */
#define BK_SPLIT_AT         320u            /* 5/8: an insert that fills a stripe this far
                                               splits the next stripe in line while the
                                               index may still grow (table.pxi, GROWTH) */
#define BK_FIRST_LEVEL      8u              /* a new index starts with 2^8 stripes (fewer
                                               when the segment has fewer) */
#define BK_OFF_MASK     0x0000ffffffffffffULL
#define BK_TAG_MASK     0xffff000000000000ULL
#define BK_TAG_SHIFT    48
#define BK_STRIPE_BYTES (128u + BK_SLOTS_PER_STRIPE * 8u + BK_SLOTS_PER_STRIPE * 4u)
                                            /* header, slot words, LRU stamps */
#define BK_READ_TRIES   64                  /* optimistic tries before a reader locks */

#define BK_NAME_MAX     64
#define BK_DATA_DIR_MAX 1024                /* the header's data_dir, in bytes */
#define BK_MAX_TOKENS   16
#define BK_MAX_CLASSES  64

/* entry flags */
#define BK_E_USED    0x01   /* chunk holds an entry (set under the class lock) */
#define BK_E_PENDING 0x02   /* allocated, not yet published; version holds the owner stripe */
#define BK_E_SINGLE  0x04   /* single-read: the get that returns it deletes it */
#define BK_E_MANIFEST 0x08  /* the value is an object manifest (bukt/objects/manifest.py) */
#define BK_E_HIDDEN  0x10   /* an object's internal entry (a chunk, an object's head
                               record): its key starts with RESERVED_PREFIX; listing,
                               the feed and user reads pass over it */
#define BK_E_ZSTD    0x20   /* the value is stored zstd-compressed (bukt/codec.py) */
#define BK_E_LZ4     0x40   /* the value is stored lz4-compressed */
#define BK_E_OBJECT  (BK_E_MANIFEST | BK_E_HIDDEN | BK_E_ZSTD | BK_E_LZ4)
                            /* the bits a read must look at before it hands a value out:
                               one test of the flags byte it loaded anyway */
#define BK_E_DECODE  (BK_E_MANIFEST | BK_E_ZSTD | BK_E_LZ4)
                            /* a value the value hooks decode (bukt/values.py) */
#define BK_E_CARRY   (BK_E_SINGLE | BK_E_OBJECT)
                            /* what an entry carries beyond USED/PENDING: kept by the
                               slab mover, the ring, the log, a base file, a replica */
#define BK_RESERVED_PREFIX     "\000bkt\000"  /* hidden keys start with it */
#define BK_RESERVED_PREFIX_LEN 5

/* intent ops: the one mutation in flight in a stripe, for repair after a death */
#define BK_OP_NONE   0
#define BK_OP_ALLOC  1      /* intent_new allocated, not yet linked */
#define BK_OP_SET    2      /* slot intent_slot switches from intent_old to intent_new */
#define BK_OP_DEL    3      /* intent_old unlinked by backward shift; intent_hole is the hole */
#define BK_OP_TOUCH  4      /* expiry of the entry at intent_slot rewritten in place */
#define BK_OP_SPLIT  5      /* this stripe is being split at level intent_old into itself
                               and stripe intent_new (whose lock is held too) */

/* ring record states */
#define BK_R_RESERVED  1
#define BK_R_COMMITTED 2
#define BK_R_SKIPPED   3
#define BK_R_PAD       4

/* ring record types (the writer process logs them; see bukt/writer/aof.py) */
#define BK_T_SET     1
#define BK_T_DEL     2
#define BK_T_EXPIRED 3
#define BK_T_EVICTED 4
#define BK_T_TOUCH   5      /* expiry changed (expire / persist) */
#define BK_T_META    16     /* bucket and token changes: value holds the encoded change */

#define BK_RING_META_STRIPE 0xffffffffu

/* ring record flags beyond the entry's BK_E_SINGLE: what the change feed tells
 * apart (bukt/feed.py); the log ignores them. They share bit values with the entry's
 * object bits, which a record therefore carries in a byte of their own (eflags) */
#define BK_RF_NOVALUE 0x08  /* a feed-only set whose value was too long to carry */
#define BK_RF_FEED   0x10   /* feed only: a cache-only bucket's change, never logged */
#define BK_RF_FLUSH  0x20   /* a delete made by a bucket's flush */
#define BK_RF_INCR   0x40   /* a set made by incr */

/* the header's retired word (store.pxi, RETIREMENT) */
#define BK_RETIRING 1u      /* marked under the ring lock: reservations are refused */
#define BK_RETIRED  2u      /* drained: retire_drained says which records were saved */

typedef union {
    pthread_mutex_t m;
    char pad[64];
} bk_lock;

typedef struct {
    uint64_t magic;             /* BK_MAGIC */
    uint32_t format;            /* BK_FORMAT */
    uint32_t header_size;       /* BK_HEADER_SIZE */
    uint64_t total_size;        /* bytes mapped */
    uint64_t generation;        /* random at creation; the writer ties the log to it */
    int64_t  created_ms;
    uint32_t mode;              /* file mode the segment was created with */
    uint32_t flags;             /* 1 = built with BUKT_DEBUG */
    /* regions (offsets from the segment base) */
    uint64_t stripes_off;       /* nstripes x bk_stripe */
    uint64_t slots_off;         /* nstripes x BK_SLOTS_PER_STRIPE x uint64 */
    uint32_t nstripes;
    uint32_t slots_per_stripe;
    uint64_t classes_off;       /* nclasses x bk_class */
    uint32_t nclasses;
    uint32_t page_size;
    uint64_t pagemap_off;       /* npages x uint8: 0 unassigned, class id + 1 at a slab's
                                   first page, 0x80 | (class id + 1) on its other pages */
    uint64_t arena_off;         /* page-aligned start of the pages */
    uint64_t npages;
    uint64_t buckets_off;       /* max_buckets x bk_bucket */
    uint32_t max_buckets;
    uint32_t max_procs;
    uint64_t procs_off;         /* max_procs x bk_proc */
    uint64_t counters_off;      /* max_procs x max_buckets x bk_counters */
    uint64_t ring_off;
    uint64_t ring_size;
    /* limits, fixed at creation */
    uint32_t max_key;
    uint32_t max_value;
    uint32_t ring_wait_ms;      /* how long a writer waits for ring space */
    uint32_t max_txn_keys;      /* keys one Bucket.atomic may involve */
    uint64_t index_geom;        /* level << 32 | split: the stripes in use are 2^level +
                                   split; a key's stripe is the low `level` bits of its
                                   hash's high half, one bit more when those fall below
                                   split (table.pxi, GROWTH). Stored by the splitter of
                                   stripe `split` under its lock; read by everyone */
    uint32_t retired;           /* 0 live; BK_RETIRING: a cold start replaces this
                                   segment, no ring record is reserved any more; and
                                   BK_RETIRED: what was committed before is in the log
                                   up to retire_drained (store.pxi, RETIREMENT). On
                                   index_geom's line, which every get and set reads:
                                   checking it costs no miss */
    uint32_t replica;           /* 1: a read replica's segment: every write but the
                                   replica's applier's and its writer's is refused
                                   with ReplicaReadOnly naming replica_of (store.pxi,
                                   _writable); on index_geom's line like retired */
    char     replica_of[64];    /* the primary, NUL-terminated: host:port */
    /* line 4..: mutable state, each hot word on its own cache line */
    bk_lock  alloc_lock;        /* page assignment: pages_used, pagemap */
    bk_lock  meta_lock;         /* bucket table and tokens */
    bk_lock  ring_lock;         /* ring reservation: ring_head and the record header */
    uint64_t pages_used;        /* under alloc_lock: pages ever handed out (a high mark) */
    uint64_t free_pages;        /* under alloc_lock: pages below pages_used given back by
                                   the slab mover (pagemap 0), for any class to take */
    uint64_t slab_moves;        /* slabs taken from one class for another */
    uint64_t move_hand;         /* the slab mover's next page to look at (racy, advisory) */
    uint64_t relocations;       /* entries the slab mover moved to another chunk of
                                   their class to empty a slab (alloc.pxi) */
    uint64_t objects_retired;   /* bumped (atomic) whenever an entry flagged MANIFEST or
                                   HIDDEN leaves the table or is replaced: the writer's
                                   reclaim sweep runs when it moves (bukt/objects) */
    char     _pad2[16];
    uint64_t ring_head;         /* next position to reserve (under ring_lock, read by all) */
    uint32_t ring_claim;        /* bytes the other producers leave free for a waiter that
                                   waited too long, 0 = none (ring.pxi, THE CLAIM; under
                                   ring_lock, read by all: it shares ring_head's line) */
    uint32_t writer_claimed;    /* 0: no writer process ever claimed the segment, and
                                   changes reach the table only, not the ring; 1: one
                                   claimed it, its base file of what the table held
                                   then is not in yet; 2: claimed, base in (ring.pxi,
                                   THE WRITER'S CLAIM; read by producers under their
                                   stripe or meta lock, set before a pass over them) */
    uint64_t ring_claim_ticket; /* the claiming waiter: pid << 32 | its process's count */
    uint64_t ring_claim_ms;     /* monotonic ms the waiter last renewed it: void when old */
    char     _pad3[32];
    uint64_t ring_tail;         /* first position not yet consumed (writer process) */
    uint64_t flushed_pos;       /* records below this are on disk per the fsync policy */
    uint32_t flush_epoch;       /* futex word: bumped after every flush */
    uint32_t sync_always;       /* 1: writes wait for flushed_pos (fsync: always) */
    uint32_t feed_watched;      /* the LRU-clock tick until which the change feed is
                                   watched, 0 = never: while it is ahead of lru_clock
                                   producers ring the writer's doorbell as under
                                   sync_always (ring.pxi, THE DOORBELL). Renewed by
                                   watchers (feed_watching, bukt/feed.py, THE WATCHED
                                   WORD), racy max; on sync_always's line, which
                                   every commit reads anyway */
    uint32_t writer_dozing;     /* futex word: 1 while an idle writer sleeps long
                                   (until its next tick): every commit rings it, under
                                   any fsync policy, watched or not (ring.pxi, THE
                                   DOORBELL). Set by the writer, taken to 0 by the
                                   producer whose CAS wins; on sync_always's line */
    uint32_t flush_waiters;     /* sleepers on flush_epoch (Store.wait_durable, the
                                   flush notifier's thread), atomic add before they
                                   read the epoch: the writer skips the futex wake
                                   after a flush while it is 0 (store.pxi, THE FLUSH
                                   WAKE) */
    char     _pad4[28];
    uint64_t version_counter;   /* versions are unique and increasing across the segment */
    char     _pad5[56];
    uint32_t lru_clock;         /* 64 ms ticks since created_ms; readers store it into
                                   the stamp beside a slot they hit; writers advance it */
    uint32_t needs_recount;     /* a repair happened: gauges are recomputed */
    uint64_t repairs;           /* lock holders found dead and repaired */
    uint64_t evictions;
    uint64_t expirations;
    uint64_t meta_epoch;        /* bumped (release, under meta_lock) after every change
                                   applied to the bucket table or its tokens (a drop's
                                   first step, state 2, is not: it revokes nothing
                                   until the logged drop): a TCP session re-checks its
                                   token only when it moved (bukt/tcp/_epoll.pyx) */
    uint64_t writer_start;      /* the writer's start time (/proc/<pid>/stat field 22):
                                   with writer_pid, the owner record (bukt/owners.py,
                                   OWNERSHIP) a zombie or a reused pid cannot fake */
    uint64_t feed_lost;         /* the change feed (bukt/feed.py, THE SOURCE): the
                                   highest ring position a cache-only change's record
                                   could not be reserved at (the ring was over half
                                   full): the writer makes it a gap in the feed,
                                   which watchers past it are told is gone. Atomic
                                   max by producers */
    uint32_t feed_always;       /* 1: every cache-only change goes to the ring (see
                                   feed_cache_only), watched or not (feed.cache_only:
                                   always); 0: only a watched bucket's (feed_lease).
                                   Set by the writer */
    uint32_t _pad6;
    /* the writer process's published progress (read by health checks) */
    uint32_t writer_pid;
    uint32_t writer_ready;
    int64_t  writer_heartbeat_ms;
    int64_t  last_fsync_ms;
    uint64_t log_size;
    uint64_t flushed_seq;
    uint32_t writer_error_code; /* errno of the last disk error, 0 = none */
    uint32_t lag_limit_ms;      /* the longest the log may go unwritten while changes
                                   wait (fsync everysec), 0 = no limit: past it, and
                                   while the writer lives, producers refuse writes with
                                   DiskError (ring.pxi, THE LAG LIMIT) */
    char     writer_error[256];
    uint64_t expire_cursor;     /* next stripe the expiry cycle samples */
    /* the meta lock holder's intent: the change in flight, for repair (meta.pxi) */
    uint32_t meta_state;        /* 0 none, 1 a change is in flight */
    uint32_t meta_len;
    uint64_t meta_ring;         /* its ring record's position, 0 before reservation */
    char     meta_buf[1024];    /* the change, as the JSON its META record carries */
    /* the writer's doorbell (ring.pxi): an idle writer sleeps on it; under fsync
       always, a producer that commits a record while it is 1 wakes the writer */
    uint32_t writer_sleeping;   /* futex word: 1 while the writer waits for records */
    uint32_t gather_bytes;      /* while the writer gathers a batch (ring.pxi, THE
                                   DOORBELL): a commit rings only once the ring holds
                                   this many bytes up to its record's end; 0: any does */
    uint32_t feed_cache_only;   /* 0: changes to cache-only buckets stay off the ring;
                                   else they go to it too, as feed-only records
                                   (BK_RF_FEED) the writer publishes in the change feed
                                   but does not log, carrying values of up to
                                   feed_cache_only - 1 bytes (feed.max_value); set by
                                   the writer (feed.cache_only) */
    uint64_t retire_drained;    /* set before retired becomes BK_RETIRED: every record
                                   below this ring position is in the log the new
                                   segment is built from (durable); those at or past it
                                   are not, and their writers are told so */
    /* the writer's repair pass (table.pxi, THE REPAIR PASS) and its data directory */
    uint32_t repair_period_ms;  /* the writer repairs stripes left mid-write this often
                                   (repair.interval); 0: no writer has said. A read-only
                                   reader waits for a repair a few periods (bucket.pxi) */
    uint32_t data_dir_len;      /* bytes of data_dir in use, 0: none published */
    char     data_dir[BK_DATA_DIR_MAX];   /* the absolute data directory of the writer
                                   that claimed the segment: CLI commands given no
                                   data_dir use it (bukt/cli/common.py, data_dir_of) */
    int64_t  log_current_ms;    /* wall ms at which the log last held every change
                                   committed to the ring (the writer process; THE LAG
                                   LIMIT) */
    uint64_t readers_off;       /* nreaders x bk_reader: object reads in flight (store.pxi,
                                   THE READER REGISTRY) */
    uint32_t nreaders;          /* slots of the registry (limits.object_readers) */
    uint32_t _pad7;
} bk_header;

typedef struct {
    bk_lock  lock;              /* robust, process-shared */
    uint64_t seq;               /* even: stable; odd: a writer is inside */
    uint32_t count;             /* slots in use */
    uint32_t intent_op;         /* BK_OP_* in flight */
    uint32_t intent_slot;
    uint32_t intent_hole;
    uint64_t intent_old;
    uint64_t intent_new;
    uint64_t intent_ring;       /* ring position reserved by the op in flight, 0 none */
    uint32_t nttl;              /* entries in the slots whose expire_ms != 0: the
                                   expiry cycle skips a stripe where it is 0 */
    uint32_t depth;             /* hash bits that name this stripe (it holds the keys
                                   whose hash's high half ends in its index's `depth`
                                   bits); 0: not in use yet. Changed by a split only,
                                   under the lock and inside an odd seq */
    int64_t  min_expire_ms;     /* no entry in the slots expires before this (ms since
                                   the epoch; BK_NO_EXPIRY: none expires): a lower
                                   bound, exact after a walk under the lock. The
                                   expiry cycle skips a stripe while it is ahead */
} bk_stripe;

#define BK_NO_EXPIRY    INT64_MAX   /* min_expire_ms of a stripe with no expiry in it */

typedef struct {
    uint64_t version;           /* free: next free chunk; pending: owner stripe */
    int64_t  expire_ms;         /* absolute, 0 = never; free: previous free chunk */
    uint32_t klen;
    uint32_t vlen;
    uint32_t _spare;            /* was the LRU stamp: no reader writes into a chunk now,
                                   since a stale offset may point into a moved page */
    uint16_t bucket;
    uint8_t  flags;             /* BK_E_* */
    uint8_t  cls;
} bk_entry;                     /* followed by key bytes, then value bytes */

typedef struct {
    bk_lock  lock;              /* free list and counts of this class */
    uint64_t free_head;         /* offset of the first free chunk, 0 = none */
    uint32_t chunk_size;
    uint32_t per_slab;          /* chunks in one slab */
    uint32_t slab_pages;        /* pages in one slab: 1, or more for chunks over a page */
    uint32_t _pad0;
    uint64_t slabs;             /* slabs owned */
    uint64_t used;              /* chunks handed out */
    uint64_t hand;              /* eviction clock hand (racy, advisory) */
    uint64_t free_tail;         /* last chunk of the free list (doubly linked: a free
                                   chunk's version is its next, expire_ms its previous) */
    uint32_t drain_page;        /* page + 1 of the slab the mover is emptying, 0 none:
                                   its chunks are freed to the tail (advisory) */
    uint32_t dry;               /* times the class ran dry (racy): paces the mover's
                                   look for an older slab elsewhere */
} bk_class;

typedef struct {
    uint32_t id;                /* 0 = unused */
    uint32_t perms;             /* READ 1, WRITE 2, ADMIN 4 */
    uint8_t  hash[32];          /* SHA-256 of the token */
} bk_token;

typedef struct {
    uint32_t state;             /* 0 free, 1 live, 2 dropping */
    uint32_t gen;               /* bumped when the slot is reused */
    char     name[BK_NAME_MAX + 1];
    uint8_t  schema;            /* 0 bytes, 1 int, 2 str, 3 json */
    uint8_t  eviction;          /* 0 lru, 1 none */
    uint8_t  persist;
    uint8_t  compression;       /* 0 none, 1 zstd, 2 lz4: how Bucket.set stores a value of
                                   comp_threshold bytes or more (the value hooks'
                                   compress, bukt/codec.py); set at creation */
    uint8_t  comp_min_saving;   /* percent: a compressed value saving less is stored raw */
    uint8_t  _pad0[2];
    int64_t  default_ttl_ms;    /* 0 = none */
    int64_t  created_ms;
    uint32_t next_token_id;
    uint32_t comp_threshold;    /* bytes: smaller values are never compressed */
    bk_token tokens[BK_MAX_TOKENS];
    int64_t  keys;              /* gauges, atomic; exact after a recount */
    int64_t  bytes;             /* key and value bytes */
    int64_t  mem;               /* chunk bytes its entries take (what max_memory caps) */
    int64_t  max_memory;        /* 0: no limit; else the chunk bytes it may hold: a
                                   write past it evicts its own keys (lru) or is
                                   refused (none). Set at creation, logged with it */
    uint32_t dropper_pid;       /* state 2: the process dropping it (a dead one's drop
                                   is finished by the next create/drop/check) */
    uint32_t dropper_start;     /* its start time, low 32 bits (bukt/owners.py,
                                   OWNERSHIP): a zombie or a reused pid is dead */
    uint64_t feed_lease;        /* the change feed's watch lease on a cache-only bucket
                                   (bukt/feed.py, THE LEASE): run << 32 | until, where
                                   until is an lru_clock tick: its changes go to the
                                   ring while until > lru_clock. Watchers renew it
                                   (CAS); one that finds it lapsed starts a new run
                                   (run + 1, under meta_lock) */
    uint64_t feed_since;        /* the ring's head when the current run began: the
                                   feed holds every change of the bucket after it
                                   (stored before the run's lease) */
    int64_t  comp_saved;        /* gauge, atomic like bytes: value bytes compression
                                   saved (raw - stored), kept by the codec's caller
                                   (Bucket.add_comp_saved) */
} bk_bucket;

/* an object read in flight (store.pxi, THE READER REGISTRY) */
typedef struct {
    uint64_t owner;             /* pid | start (low 32 bits) << 32 of the reading process,
                                   0 = free; claimed by CAS; a dead owner's is free */
    int64_t  since_ns;          /* CLOCK_MONOTONIC ns the read began, 0 = not yet */
} bk_reader;

typedef struct {
    uint32_t pid;               /* owner of this counter slot, 0 = free */
    uint32_t start;             /* the owner's start time, low 32 bits; pid and start
                                   are one 64-bit word, claimed by one CAS */
    /* the owner's flush waker (flushwake.pxi, THE FLUSH WAKER): reset by whoever
       claims the row, set and armed by its owner, disarmed by the writer */
    uint32_t wake_name;         /* 0: none; else the owner's datagram socket is bound to
                                   the abstract name "bukt-wake-<pid>-<wake_name, hex>" */
    uint32_t wake_armed;        /* 1: the owner waits for flushed_pos >= wake_pos; the
                                   writer takes it to 0 (CAS) and sends one datagram */
    uint64_t wake_pos;          /* written by the owner before it arms */
    uint64_t _pad;
} bk_proc;

typedef struct {
    int64_t _unused, hits, misses, writes, deletes, evictions, expirations;
    int64_t integrity_errors;   /* damaged values met by a read (a compressed frame or an
                                   object chunk failing its checksum): the value hooks
                                   count them (Bucket.count_integrity_error). Was _pad,
                                   zero in every segment made before: no format change */
} bk_counters;

typedef struct {
    uint32_t len;               /* whole record, 8-aligned */
    uint8_t  state;             /* BK_R_* */
    uint8_t  type;              /* BK_T_* */
    uint16_t bucket;
    uint32_t pid;
    uint32_t stripe;            /* the stripe whose lock covers it, or META */
    uint32_t klen;
    uint32_t vlen;
    int64_t  expire_ms;
    uint64_t version;
    uint32_t bucket_gen;
    uint8_t  flags;             /* the entry's BK_E_SINGLE | BK_RF_* */
    uint8_t  eflags;            /* the entry's BK_E_OBJECT bits (MANIFEST, HIDDEN, ...) */
    uint8_t  _pad[2];
} bk_rec;                       /* followed by key, then value */

_Static_assert(sizeof(pthread_mutex_t) <= 64, "mutex does not fit its slot");
_Static_assert(sizeof(bk_stripe) == 128, "stripe header is two cache lines");
_Static_assert(offsetof(bk_stripe, depth) / 64 == offsetof(bk_stripe, seq) / 64,
               "a reader finds a stripe's depth in the line of its seq");
_Static_assert(offsetof(bk_stripe, min_expire_ms) / 64 == offsetof(bk_stripe, nttl) / 64,
               "the expiry cycle's two words share a line");
_Static_assert(sizeof(bk_entry) == 32, "entry header is 32 bytes");
_Static_assert(sizeof(bk_class) == 128, "class header is two cache lines");
_Static_assert(sizeof(bk_rec) == 48, "ring record header is 48 bytes");
_Static_assert(offsetof(bk_header, replica_of) + 64 == 256, "replica_of ends the first lines");
_Static_assert(offsetof(bk_header, alloc_lock) == 256, "header locks start at 256");
_Static_assert(offsetof(bk_header, ring_claim_ms) / 64 == offsetof(bk_header, ring_head) / 64,
               "the claim shares ring_head's cache line");
_Static_assert(offsetof(bk_header, retired) / 64 == offsetof(bk_header, index_geom) / 64,
               "the retired flag shares index_geom's line, which every get reads");
_Static_assert(offsetof(bk_header, writer_dozing) / 64 == offsetof(bk_header, sync_always) / 64,
               "the dozing word shares sync_always's line, which every commit reads");
_Static_assert(offsetof(bk_header, version_counter) % 64 == 0, "version_counter's own line");
_Static_assert(sizeof(bk_header) <= BK_HEADER_SIZE, "header fits its page");
_Static_assert(sizeof(bk_counters) == 64, "counters are one cache line");
_Static_assert(sizeof(bk_reader) == 16, "a reader slot is two words");
_Static_assert(sizeof(bk_proc) == 32, "a process row is four words");

/* ---- atomics: explicit ordering, as design.md invariant 2 asks ---- */
static inline uint64_t bk_load_acq64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint64_t bk_load_rlx64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void bk_store_rel64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void bk_store_rlx64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline uint32_t bk_load_acq32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void bk_store_rel32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint32_t bk_load_rlx32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline int64_t bk_load_rlx_i64(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void bk_store_rlx_i64(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline uint16_t bk_load_rlx16(const uint16_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline uint8_t bk_load_acq8(const uint8_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void bk_store_rel8(uint8_t *p, uint8_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline int64_t bk_add64(int64_t *p, int64_t v) { return __atomic_add_fetch(p, v, __ATOMIC_RELAXED); }
static inline uint64_t bk_fetch_add_u64(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
static inline void bk_inc32(uint32_t *p) { __atomic_add_fetch(p, 1, __ATOMIC_RELEASE); }
static inline void bk_dec32(uint32_t *p) { __atomic_sub_fetch(p, 1, __ATOMIC_RELEASE); }
static inline int bk_cas64(uint64_t *p, uint64_t expect, uint64_t want) {
    return __atomic_compare_exchange_n(p, &expect, want, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
static inline void bk_fence_acq(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void bk_fence_seq(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void bk_store_seq_i64(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline int64_t bk_load_seq_i64(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void bk_fence_rel(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
static inline int bk_cas32(uint32_t *p, uint32_t expect, uint32_t want) {
    return __atomic_compare_exchange_n(p, &expect, want, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
/* a hint: start fetching the line of p now (for writing), so that its miss overlaps
 * the reader's other misses instead of following them */
static inline void bk_prefetch_w(const void *p) { __builtin_prefetch(p, 1, 3); }
static inline void bk_prefetch_r(const void *p) { __builtin_prefetch(p, 0, 3); }
static inline void bk_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* seqlock, writer side: the stripe lock is held */
static inline void bk_seq_enter(uint64_t *seq) {
    __atomic_store_n(seq, *seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);  /* odd seq is seen before any data store */
}
static inline void bk_seq_leave(uint64_t *seq) {
    __atomic_store_n(seq, *seq + 1, __ATOMIC_RELEASE);  /* data stores before even seq */
}

/* ---- the robust process-shared mutex ---- */
static inline int bk_lock_init(bk_lock *l) {
    pthread_mutexattr_t a;
    int rc;
    memset(l, 0, sizeof(*l));
    if ((rc = pthread_mutexattr_init(&a))) return rc;
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    rc = pthread_mutex_init(&l->m, &a);
    pthread_mutexattr_destroy(&a);
    return rc;
}
/* ---- is a process (or thread) there? EPERM: it is, another user's ---- */
static inline int bk_pid_alive(uint32_t pid) {
    if (pid == 0) return 0;
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}
/* The kernel marks the robust mutexes of a thread that dies (FUTEX_OWNER_DIED, and
 * the next locker gets EOWNERDEAD), but it walks at most ROBUST_LIST_LIMIT (2048) of
 * them: a process that dies holding more (check() and recount() hold every stripe's,
 * 4096 in a 256 MiB segment) leaves the rest owned by a dead thread for ever. So a
 * locker that finds a mutex busy looks at its owner (the TID in glibc's futex word,
 * the mutex's first int) and, when no such task exists, marks it as the kernel's
 * handle_futex_death would: one CAS, then a wake for a waiter. The CAS fails if the
 * word changed meanwhile (a release, the kernel's own mark). Owner TIDs mean nothing
 * across PID namespaces: share a segment only within one. */
static inline void bk_lock_mark_if_dead(bk_lock *l) {
    uint32_t *word = (uint32_t *)&l->m;
    uint32_t v = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    pid_t tid = (pid_t)(v & FUTEX_TID_MASK);
    uint32_t nv;
    if (tid == 0 || (v & FUTEX_OWNER_DIED) || bk_pid_alive((uint32_t)tid)) return;
    nv = (v & FUTEX_WAITERS) | FUTEX_OWNER_DIED;
    if (__atomic_compare_exchange_n(word, &v, nv, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)
            && (nv & FUTEX_WAITERS))
        syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}
/* Is the mutex held by a task that no longer exists (or marked so by the kernel)?
 * A read, no store: a read-only mapping may ask (status, the repair pass's look). */
static inline int bk_lock_owner_dead(const bk_lock *l) {
    uint32_t v = __atomic_load_n((const uint32_t *)&l->m, __ATOMIC_ACQUIRE);
    pid_t tid = (pid_t)(v & FUTEX_TID_MASK);
    if (v & FUTEX_OWNER_DIED) return 1;
    return tid != 0 && !bk_pid_alive((uint32_t)tid);
}
/* 0: locked; EOWNERDEAD: locked, the previous owner died inside (repair, then
 * bk_lock_consistent); ENOTRECOVERABLE: the mutex was abandoned unrepaired. Busy:
 * mark a dead owner first, then wait in rounds of 100 ms, looking again each time
 * (a dead owner unmarked while we wait). */
static inline int bk_lock_acquire(bk_lock *l) {
    struct timespec ts;
    int rc;
    for (;;) {
        bk_lock_mark_if_dead(l);
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000L;
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec += 1; ts.tv_nsec -= 1000000000L; }
        rc = pthread_mutex_timedlock(&l->m, &ts);
        if (rc != ETIMEDOUT) return rc;
    }
}
static inline int bk_lock_try(bk_lock *l) {
    int rc = pthread_mutex_trylock(&l->m);
    if (rc == EBUSY) {                  /* rare: only a contended or orphaned lock */
        bk_lock_mark_if_dead(l);
        rc = pthread_mutex_trylock(&l->m);
    }
    return rc;
}
static inline int bk_lock_release(bk_lock *l) { return pthread_mutex_unlock(&l->m); }
static inline int bk_lock_consistent(bk_lock *l) { return pthread_mutex_consistent(&l->m); }

/* ---- futex on a shared word (group commit waiters sleep here) ---- */
static inline int bk_futex_wait(uint32_t *addr, uint32_t val, long timeout_ns) {
    struct timespec ts = { timeout_ns / 1000000000L, timeout_ns % 1000000000L };
    return (int)syscall(SYS_futex, addr, FUTEX_WAIT, val, &ts, NULL, 0);
}
static inline int bk_futex_wake(uint32_t *addr) {
    return (int)syscall(SYS_futex, addr, FUTEX_WAKE, 0x7fffffff, NULL, NULL, 0);
}

/* ---- time: the coarse wall clock (the last tick's, a few ms old; no TSC read): for
 * the LRU clock's 64 ms ticks, which every write advances ---- */
static inline int64_t bk_now_coarse_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- time: wall clock in ms (expiries are absolute and survive a reboot) ---- */
static inline int64_t bk_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);  /* vDSO: no syscall */
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
static inline int64_t bk_mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}


/* ---- the key hash: 64-bit MurmurHash2 (MurmurHash64A, public domain, Austin
 * Appleby), seeded with the bucket slot so equal keys of two buckets land apart. ---- */
static inline uint64_t bk_hash(const void *key, size_t len, uint64_t seed) {
    const uint64_t m = 0xc6a4a7935bd1e995ULL;
    const int r = 47;
    uint64_t h = seed ^ (len * m);
    const unsigned char *p = (const unsigned char *)key;
    const unsigned char *end = p + (len & ~(size_t)7);
    while (p != end) {
        uint64_t k;
        memcpy(&k, p, 8);
        p += 8;
        k *= m; k ^= k >> r; k *= m;
        h ^= k; h *= m;
    }
    switch (len & 7) {
    case 7: h ^= (uint64_t)p[6] << 48; /* fall through */
    case 6: h ^= (uint64_t)p[5] << 40; /* fall through */
    case 5: h ^= (uint64_t)p[4] << 32; /* fall through */
    case 4: h ^= (uint64_t)p[3] << 24; /* fall through */
    case 3: h ^= (uint64_t)p[2] << 16; /* fall through */
    case 2: h ^= (uint64_t)p[1] << 8;  /* fall through */
    case 1: h ^= (uint64_t)p[0]; h *= m;
    }
    h ^= h >> r; h *= m; h ^= h >> r;
    return h;
}

#endif
