# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, infer_types=True
"""Bukt's shared table: one hash table in one POSIX shared-memory segment.

LAYOUT
======
The segment `/bukt-<name>` is mapped MAP_SHARED by every process. It holds no
pointers: every reference is an offset from the segment base, and every offset or
length a lock-free reader follows is bounds-checked before it is dereferenced
(design.md invariant 1). The byte layout is pinned in includes/segment.h.

  +--------------------------------------------------------------------------+
  | header   4 KiB   magic, format, sizes, region offsets, limits (key and  |
  |                  value sizes, ring wait, keys per transaction),          |
  |                  generation,                                             |
  |                  retired flag and the replica word with its primary's    |
  |                  address (beside index_geom: docs/design.md, Replicas),  |
  |                  global counters,                                        |
  |                  ring head/claim/tail, writer progress and owner record  |
  |                  (pid + start time), retire_drained, its repair period   |
  |                  and absolute data directory, the change feed's asks     |
  |                  (feed_cache_only, feed_lost, feed_always: ring.pxi,     |
  |                  THE FEED'S RECORDS)                                     |
  | stripes  nstripes x 6272 B, each a header, its slots, their stamps:     |
  |            header 128 B   robust mutex | seq | count | intent | nttl |  |
  |                           depth | min_expire_ms (depth: the hash bits    |
  |                           naming the stripe, 0 unused: GROWTH;           |
  |                           nttl: entries with an expiry;                  |
  |                           min_expire_ms: none expires before it; the     |
  |                           expiry cycle passes over a stripe where nttl   |
  |                           is 0 or the bound is ahead: THE EXPIRY BOUND)  |
  |            slots  512 x 8 B   tag:16 | entry offset:48 (0 = empty)       |
  |            stamps 512 x 4 B   LRU clock of the slot's last access        |
  | classes  64 x 128 B   size class: mutex | free list head | counts        |
  | pagemap  npages x 1 B   class id + 1 of a slab's first page, 0x80 | that |
  |                         of its further pages, 0 = unassigned             |
  | buckets  max_buckets x bk_bucket   settings, token hashes, gauges,     |
  |                                     dropper pid + start (low 32 bits),   |
  |                                     the feed's watch lease (feed_lease,  |
  |                                     feed_since: bukt/feed.py, THE LEASE) |
  | procs    max_procs x 32 B  pid | start (low 32 bits) owning each row;    |
  |                           its flush waker: wake_name | wake_armed |      |
  |                           wake_pos (flushwake.pxi, THE FLUSH WAKER)      |
  | counters max_procs x max_buckets x 64 B   event counters, one row a pid  |
  | readers  nreaders x 16 B   object reads in flight (limits.object_readers):|
  |                           owner (pid | start) | since_ns (store.pxi,    |
  |                           THE READER REGISTRY)                           |
  | ring     ring_size   change records for the writer process               |
  | arena    npages x page_size   chunks of the size classes                 |
  +--------------------------------------------------------------------------+

INDEX. A key's 64-bit hash (MurmurHash64A seeded with the bucket slot) picks its
stripe (from the high 32 bits, by linear hashing: see below), its home slot among the
stripe's 512 (bits 16-24) and a 16-bit tag (low bits). A stripe is a small
open-addressing table with linear probing that never leaves the stripe, so one
sequence number covers everything a reader of that stripe touches in the index.
Deletion is by backward shift (no tombstones), so probe chains stay short without a
rehash; a stripe refuses inserts past 7/8 full (448 of 512), evicting from itself when
the bucket allows it.

The index GROWS (table.pxi, GROWTH): the stripes are laid out for a full segment (a
power of two of them), but a new segment uses 256 and splits one more, in order,
whenever an insert fills a stripe to 320 slots, so a lightly filled segment keeps its
keys on few, shared, cached lines (a get in a 256 MiB segment holding 100k keys:
220 -> 145-175 ns). index_geom in the header (level, split) names the stripes in use;
each stripe's depth says which hash bits name it, so a process with an older view
finds out under the seq (readers) or the lock (writers) and follows the geometry.

ENTRY FLAGS (the entry's flags byte): USED and PENDING are the allocator's; SINGLE
(single-read), MANIFEST (an object's manifest), HIDDEN (an object's chunk or head
record, its key under RESERVED_PREFIX), ZSTD and LZ4 (stored compressed) are the
entry's own and go wherever it goes (BK_E_CARRY: the slab mover, the ring, whose
record keeps the object bits in eflags, the log, base files, replicas, dumps).
Readers test BK_E_OBJECT on the flags byte they load anyway: a hidden entry is a
miss to user reads, a manifest or compressed value goes to the value hooks' decode
(bucket.pxi, OBJECTS IN THE CORE). The keys gauge counts entries that are not
HIDDEN; bytes and mem count all. objects_retired (header) moves whenever a MANIFEST
or HIDDEN entry is replaced or removed.

ENTRIES live in chunks of size classes (memcached's slabs): 48 bytes and up by a
growth factor (1.25 by default), aligned to 8, the last class one page. A chunk holds
a 32-byte bk_entry header, the key, then the value. Fragmentation is bounded by the
class spacing: a chunk wastes less than (factor - 1) of its size, under 20% at 1.25
(about 10% on average), plus at most one partly used page per class. Pages are handed
to classes on demand. When a class runs dry and no page is unassigned, the slab mover
(alloc.pxi) first gives it a slab of another class that costs no entry: one with no
live entry, or one whose entries fit in the free chunks of the rest of its class and
are relocated there (a SET of the same key and value under the stripe lock), whatever
their buckets, so memory that deletes freed serves any class and any bucket, an
`eviction: none` bucket's too. Failing that, an lru write evicts the oldest of a sample
of the class's own entries (whatever their bucket), or the mover empties by eviction a
slab of another class: when the class has nothing to evict, or when another class's
slab holds only entries older than the ones it would evict (memcached's slab mover,
with an age rule in place of its automove). A bucket with max_memory evicts only its
own entries once its chunks reach it (table.pxi, within_max_memory). Free lists are
doubly linked, so a slab leaves its class in O(chunks of the slab).

Because pages change class, a stale offset may point into the middle of another
chunk's value. Readers therefore never write into a chunk: the LRU stamp a hit leaves
lives beside the slot (stamps), and everything a reader reads through a stale offset
is bounds-checked and then discarded by the seq check. Repair code that follows an
offset from a dead holder's intent record first checks that it is still a chunk
boundary in its page's current carving (chunk_start). The LRU clock counts 64 ms
ticks since creation; writers and the writer process's expiry cycle advance it, so a
get reads no clock.

WHO WRITES WHAT
---------------
  stripe slots, seq/intent/count/nttl,    the stripe lock holder (nttl and the
  min_expire_ms                           bound are read unlocked by the expiry
                                          cycle, advisory; repair recounts nttl
                                          with count and sets the bound exactly)
  entry bodies                            the allocating writer, before publication;
                                          afterwards immutable except single aligned
                                          words (expire_ms and version by TOUCH under
                                          the stripe lock); free chunks' links by the
                                          class lock holder
  stripe stamps                           any reader or writer of the stripe, relaxed
                                          (advisory: a stale store only misdates)
  class free lists and counts             the class lock holder
  pages_used, free_pages, pagemap         the alloc lock holder, and only for pages
                                          of a class whose lock it also holds (so an
                                          orphan run of class c is dead while c's
                                          lock is held: rebuild_class gives it back)
  buckets table, tokens                   the meta lock holder; gauges keys/bytes by
                                          stripe lock holders, atomically
  ring head, record headers, ring claim   the ring lock holder; record bodies and the
                                          commit state by the record's reserver; the
                                          claim's stamp by its waiter, relaxed
  ring tail, flushed_pos, writer fields,  the writer process only
  feed_cache_only, feed_always
  a bucket's feed_lease, feed_since       its watchers (feed_watch: the lease by CAS,
                                          a new run and its since under meta lock)
  feed_watched                            any watcher (feed_watching: racy max, relaxed)
  writer_dozing                           the writer process sets it to 1 before a long
                                          sleep; a committing producer takes it to 0
                                          by CAS (ring.pxi, THE DOZE)
  flush_waiters                           every sleeper on flush_epoch, atomic add and
                                          subtract around its sleep (store.pxi, THE
                                          FLUSH WAKE)
  feed_lost                               producers of cache-only changes (atomic max)
  retired, retire_drained                 the writer process replacing the segment
                                          (retired under the ring lock: store.pxi,
                                          RETIREMENT)
  counters row r                          the process whose pid is procs[r] (atomic
                                          adds, so threads of one process may share)
  procs[r]'s wake fields                  its owner (name, position, arming; cleared
                                          by whoever claims the row); wake_armed is
                                          taken to 0 by the writer's CAS before it
                                          sends (flushwake.pxi, THE ORDER)
  a reader slot                           the process that claimed it (CAS of its
                                          owner word from 0 or a dead owner); its
                                          since_ns seq_cst before the read
  objects_retired                         whoever removes or replaces a MANIFEST or
                                          HIDDEN entry (atomic add, under the stripe
                                          lock)

LOCK RULES (written once; names follow them)
--------------------------------------------
* Public methods take locks; `do_*` functions assume the stripe lock is held.
* Order: one stripe lock, then at most one class lock or the ring lock; the class
  lock may take the alloc lock. Never a second stripe lock by blocking, with three
  exceptions that keep index order: recount()/check() take every stripe, in index
  order, holding nothing else; a transaction (bucket.pxi, TRANSACTIONS) takes the
  stripes of its keys in ascending order, holding nothing else first, and then at
  most one class lock or the ring lock at a time as a single write does; a split
  (table.pxi, GROWTH) holds stripe p and takes the stripe q = 2^level + p > p that
  no key maps to yet, so no one else holds or waits for it (the repair of a split
  cut short does the same). Eviction and the slab mover take a victim's stripe with
  trylock and pick another victim when it is busy (a stripe the transaction holds
  itself is busy too). So no cycle exists and no deadlock is possible.
* All locks are robust, process-shared pthread mutexes (not semaphores): the kernel
  hands the next locker EOWNERDEAD when a holder dies, which is exactly the "noticed
  the death" that invariant 4 asks for. The kernel marks at most 2048 mutexes of a
  dead thread (ROBUST_LIST_LIMIT) and check() holds every stripe's (4096 at 256 MiB),
  so a locker that finds a lock busy also checks that its owner exists, and marks it
  as the kernel would when it does not (bk_lock_mark_if_dead in segment.h; owner
  TIDs assume one PID namespace, and a reused TID only delays this until it exits).
  On EOWNERDEAD the new holder repairs, calls pthread_mutex_consistent and goes on:
    - stripe: the intent record names the one operation in flight (ALLOC, SET, DEL,
      TOUCH, SPLIT), its slot, old and new chunk and reserved ring record. Repair
      redoes or undoes that one operation idempotently (see repair_stripe; a SPLIT
      is finished: GROWTH), recounts count and nttl, sets the expiry bound exactly
      (THE EXPIRY BOUND), makes the seq even and flags a recount of the gauges.
    - class: the free list may be half-updated; it is rebuilt from the chunk headers'
      USED flags over the class's pages (chunks are scannable: every page of a class
      is carved into equal chunks).
    - alloc: pages_used is written last; free_pages is recounted from the pagemap.
      Pages being claimed or given back are an "orphan" run (further-page bytes with
      no first page) until done; the class lock holder died too, and its
      rebuild_class gives the run back.
    - ring: the record header is written before ring_head advances: consistent.
      A claim (ring.pxi, THE CLAIM) half made or half given up is at worst one
      whose waiter is dead: the next waiter takes it over, and it goes void anyway.
    - meta: the header's meta intent holds the change in flight; its META record
      is committed before the change is applied, so a record still reserved is
      skipped (nothing was applied) and a committed one is applied again
      (apply_meta is idempotent). A bucket left "dropping" by a dead process is
      finished by the next create_bucket, drop_bucket or check().
  A lock holder never blocks on anything but the locks above, except a writer waiting
  for ring space, which it does before taking its stripe lock (and, when others took
  the room it saw, again under it: the consumer takes no stripe lock).

TRANSACTIONS (bucket.pxi): a transaction makes the seq of every stripe it holds odd
before its first change and even after its last; the do_* functions it calls leave
an odd seq alone (seq_enter_own). So a reader of any of its keys retries until the
whole transaction is applied, and Bucket.mget_consistent, which samples the seqs of
all its keys' stripes before copying and checks them all after, sees it wholly or
not at all. A holder killed mid-transaction leaves each of its stripes to repair
alone: the changes made stay, the one in flight is finished or undone.

READERS (the fast path): no lock, no syscall. Sample the stripe seq (odd: retry),
probe the slots, compare the full key, copy the value into a bytes object allocated
up front, acquire fence, re-read seq; equal means the copy is a true snapshot. A
writer frees or reuses a chunk only inside the write section of the stripe that
referenced it, so a reader that copied a chunk freed under its feet sees that
stripe's seq change and retries, even when another stripe has already reused the
chunk (invariant 3). A torn header costs a retry, never a wild read: lengths are read
once into locals and checked against the segment's bounds before any copy. After 64
failed tries the reader takes the lock (the slow path), as it does for single-read
and expired entries, which need mutual exclusion. A read-only mapping cannot take a
lock: on a stripe a dead writer left mid-write it waits for the writer process, which
repairs such stripes at start and every repair.interval (THE REPAIR PASS, table.pxi),
for up to three of the periods it publishes, then fails saying nobody repairs.

WRITERS: lock the stripe; check conditions; allocate the new chunk (the intent record
holds it from the moment it leaves the free list) and fill it; reserve the ring
record and fill it; then seq odd, publish with one 8-byte slot store, commit the ring
record, free the old chunk, seq even, unlock. The ring append is inside the stripe
section, so two writes to one key reach the log in the order they reached the table.

THE EXPIRY BOUND. min_expire_ms in a stripe's header is a lower bound on the expiry
of every entry its slots reference (BK_NO_EXPIRY when it knows of none). The expiry
cycle (meta.pxi) passes over a stripe, unread, while the bound is after `now`; so
keys whose TTL is an hour away cost a pass one cache line a stripe, not a miss per
key. The rule that keeps it sound: it may be too low, never too high.
  - Too low only costs one walk: the cycle walks a due stripe under its lock, removes
    what expired and stores the earliest expiry left, exactly. A bound goes stale low
    when its entry is deleted, persisted, evicted or given a later expiry; nothing
    raises it then but that walk, repair (below), or a flush's walk.
  - Lowered before it is needed: every path that makes an expiry visible in a slot
    goes through do_set (a new entry: set, mset, incr, single-read, restore and the
    bulk loader's replay) or do_touch (expire, restore_ttl, a replay's SET_TTL), and
    both, under the stripe lock, lower the bound to the new expiry before the slot
    store that publishes the entry, or the store into the entry's expiry word.
    Deletion and the slab mover (which evicts through do_delete_at) only take
    entries away, which can never make a lower bound wrong.
  - Raised only with writers shut out: by a walk under the stripe lock that read
    every slot (remove_in_stripe: the cycle, flush, drop), or by repair. An unlocked
    walk never stores it: a writer could publish an earlier expiry behind its back.
  - A process killed at any instruction leaves it low enough: the lowering is one
    aligned 8-byte store that comes before the publication in program order, so a
    holder killed after it but before publishing leaves a bound merely low, and one
    killed before it had published nothing. Repair finishes or undoes the dead
    holder's operation (redoing a TOUCH lowers the bound before the entry's word, as
    do_touch does, so a repairer killed in turn leaves it low too), then, with every
    slot again holding a published entry, walks them and stores the exact earliest,
    as the cycle's walk does. A walk killed before its final store leaves the old
    bound, which was sound; the store is one word, after the last removal.
  - Read unlocked by the cycle, which is advisory like nttl: a bound lowered just
    after the cycle read it is seen by the next cycle, and until then lazy expiry
    hides the key from every reader, as it does for any key not yet collected.
  check() reports a stripe whose bound is after the earliest expiry of its entries,
  and the debug build asserts it after every change to a stripe.

THE CHANGE RING is multi-producer, single-consumer. Positions grow for ever (u64) and
double as the records' sequence numbers; a record's bytes sit at position % size.
Reservation takes the ring lock for a few stores; the consumer (the writer process)
reads committed records at the tail, publishes the tail when they are in its log, and
publishes flushed_pos after fsync, bumping a futex word that `fsync: always` writers
sleep on (group commit: one fsync releases every waiter behind it), and sends a datagram
to each event loop that armed its process row for a position the flush covers
(flushwake.pxi, THE FLUSH WAKER). A record whose
producer died is resolved by whoever repairs that producer's stripe; the consumer
itself triggers that repair when it finds the record stuck (ring_unstick).
Room is handed out fairly: a producer that has waited a few milliseconds claims
room in the header (ring_claim), and the others leave that much free until it is
served, so small records cannot starve a large one (ring.pxi, THE CLAIM). Server
workers, which wait on their event loops rather than in the core, hold a claim across
their tries (Store.ring_claim_room, ring_ticket; ring.pxi, THE CLAIM FROM AN EVENT LOOP).
A segment no writer process has claimed (writer_claimed in the header, beside
ring_head) takes no records at all: its changes reach the table only, until a writer
claims it under a pass over every stripe lock (ring.pxi, THE WRITER'S CLAIM). Under
everysec the writer also publishes a lag limit that producers enforce (THE LAG LIMIT).
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy, memcmp, memset
from libc.stdlib cimport malloc, calloc, free
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8String, PyUnicode_DecodeUTF8
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED
from posix.unistd cimport _exit
from segment cimport *

import os
import json
import hmac
import time
import secrets as _secrets

from bukt import errors as _err
from bukt import owners as _owners


cdef inline uint32_t start32(uint32_t pid) except? 0:
    """The low 32 bits of `pid`'s start time, as owner records in the segment keep it."""
    return <uint32_t>(_owners.start_time(pid) & 0xffffffff)


cdef bint owner_alive32(uint32_t pid, uint32_t start) except -1:
    """OWNERSHIP (bukt/owners.py) of a record that keeps the low 32 bits of the start."""
    return _owners.owner_alive(pid, start, bits=32)


cdef bint dropper_alive(bk_bucket *b) except -1:
    return owner_alive32(b.dropper_pid, b.dropper_start)

DEBUG = bool(BUKT_DEBUG)
FORMAT_VERSION = BK_FORMAT
PROC_ROW = sizeof(bk_proc)          # bytes of a process row (procs, in the layout above)
DATA_DIR_MAX = BK_DATA_DIR_MAX      # bytes of the header's data_dir, its NUL included
cdef enum:
    RING_FIRST_POS = 8                  # a new segment's first ring position
RING_FIRST = RING_FIRST_POS
READ, WRITE, ADMIN = 1, 2, 4
ENTRY_SINGLE = BK_E_SINGLE        # an entry's single-read flag (Bucket.restore, dump_stripes)

include "store.pxi"
include "locks.pxi"
include "alloc.pxi"
include "ring.pxi"
include "table.pxi"
include "bucket.pxi"
include "meta.pxi"
include "check.pxi"
include "bulkload.pxi"
include "writer.pxi"
include "flushnote.pxi"
include "flushwake.pxi"
include "feedmem.pxi"

# for bukt/writer/restore.py's memory_needed: a chunk holds an entry header, its key and value,
# and a grown index keeps an average stripe at most this full
ENTRY_HEADER = ENTRY_HDR
SPLIT_AT = BK_SPLIT_AT
