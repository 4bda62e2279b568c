"""The change feed: every change to the table, in order, for whoever watches.

THE SOURCE. Every change to a persisted bucket already reaches the writer process
through the change ring (cext/ring.pxi), numbered by its ring position, and the writer
drains it in that order. So the writer is the feed's one publisher: after it has
written a batch to the log it copies the batch's events into the feed area below.
Changes to cache-only buckets (persist: false) are not logged; while feed.cache_only is
on (off by default: it costs each cache-only write what a logged one costs, see
docs/benchmarks.md) they reach the ring too, as feed-only records the writer publishes
and leaves out of the log (ring.pxi, THE FEED'S RECORDS). A cache-only write never
waits for the ring: it takes its record only while the ring is under half full, and
otherwise changes the table alone and raises the header's feed_lost, which the writer
turns into a gap watchers are told of. Expiries (the writer's expiry cycle and lazy
expiry in any process) and evictions (any process's allocator) are ring records like
the others. An incr and a flush's deletes carry a record flag (BK_RF_INCR,
BK_RF_FLUSH) the log ignores and the feed reports.

Nobody waits for a watcher: the writer writes into a fixed ring that overwrites its
oldest events, watchers read it without a lock and without writing anything, and a
watcher that fell too far behind finds its events overwritten and is told so.

THE AREA is its own POSIX shared-memory object, /dev/shm/bukt-<instance>-feed, made
by the writer with its pages reserved (posix_fallocate), and kept across writer
restarts (the events in it stay valid: sequences are ring positions, which continue).

    header  4096 B, u64 words: magic "BUKTFEED" | format | data size | max_value |
            writer pid | writer start | lease ms | nonce | head | low | lost | last_seq |
            ring_lost_seen (the segment's feed_lost last made a gap) |
            upto (the ring position past the last batch published) | ... |
            wake (u32 at byte 128: bumped and futex-woken after each batch)
    data    `size` bytes: records at byte positions that grow for ever (the bytes of
            position p sit at p % size), each REC (64 B) then key then value, 8-aligned,
            never split by the end of the area (a PAD record, or under 64 bytes left,
            nothing, fills the gap).

    REC     pos u64 (its own byte position: a stamp) | seq u64 (the change's ring
            position) | ms i64 (wall time it was published) | version u64 |
            expire_ms i64 (0: none) | len u32 (whole record) | klen u32 | vlen u32
            (value bytes kept) | vsize u32 (the value's size; VSIZE_UNKNOWN when a
            cache-only value was too long to carry) | gen u32 | bucket u16 |
            kind u8 | flags u8

THE PROTOCOL (one writer, any number of readers, seqlock-like by position):
  - head: byte position past the last published record (release, after its bytes).
  - low: position of the oldest intact record. Before it overwrites bytes, the writer
    raises low past every record they held (release, then a full fence), and raises
    lost to the highest sequence among them.
  - lost: the feed may lack events with sequences up to it and holds every event
    after it. A watcher at sequence `since` < lost has missed something: it gets GONE
    naming lost, its resume point, never a silent gap. Overwriting raises it; so does
    a writer start that cannot vouch for what came between the feed's last event and
    the ring's tail, and a cache-only change that found no room in the ring.
  - A reader at position p with p >= low copies the record, fences, and loads low
    again: still <= p, the copy is whole (and its stamp equals p); else it was being
    overwritten under it, and the watcher is gone.
Readers map the area read-only: a watcher cannot harm the feed or the writer.

WAITING. After each batch the writer bumps the wake word and futex-wakes its sleepers
(one syscall a batch, not a record). Watcher.wait() sleeps there. An event loop does
not sleep: Waker, one thread a process, sleeps for all of that process's watchers and
calls each one's callback (asyncio: loop.call_soon_threadsafe).

THE READERS' COST. Watchers share the writers' CPUs, so what a watcher spends an event
is taken from the writers. A process's watchers share what they read: Feed.stretch
copies a stretch of the area once and parses it into C structs (bukt/_feedread.pyx,
Stretch), the first watcher of a view (bucket, prefix, values) to read it makes the
view's events, and the others of that view are handed the same objects. An Event is a
compiled object Python's cyclic collector does not track (it holds only ints, exact str
and bytes, so it cannot be in a cycle): made in bulk and kept with the stretches, the
Python Events had set the collector off and been walked by it, 27% of a watcher
process's time. Being shared, an Event is read-only. The feed's words are loaded
through one buffer held for the Feed's life (FeedArea), not one taken a load.

THE WATCHED WORD. Under `fsync: everysec` or `no` nobody waits for the writer, so by
itself it finds a record only at its next poll and gathers a batch before it drains
the next: an event would wait 2-4 ms for it. A watcher does wait. So every watcher's
poll() (each wake, at least every second: the Waker's timeout) renews the segment
header's feed_watched, the LRU-clock tick until which someone watches, to feed.lease
from now once half of it is gone (feed_watching: a load and a compare, a store a few
times a lease). While it is ahead of the clock, producers ring the writer's doorbell
as under `always` and the writer gathers a small batch for 0.5 ms, not 2
(cext/ring.pxi, THE DOORBELL; bukt/writer/process.py, WATCHED). A
watcher that dies or stops polling leaves it to lapse: it costs the producers a
futex call per writer sleep for at most a lease, never an event. A watcher attached
read-only cannot renew it; its events come a poll later.
"""
import array
import asyncio
import bisect
import collections
import mmap
import os
import struct
import threading
import time
import weakref

from bukt import errors
from bukt.owners import identity
from bukt._core import ENTRY_HIDDEN, ENTRY_LZ4, ENTRY_SINGLE, ENTRY_ZSTD
from bukt._core import (RING_FIRST, FeedArea, feed_fence, feed_store,
                        feed_wait, feed_wake, feed_watch, feed_watching)
from bukt import _feedread
from bukt._feedread import Event, Stretch

__all__ = ["FeedWriter", "Feed", "Watcher", "Event", "Gone", "KINDS", "feed_path",
           "ring_records_to_events"]

MAGIC = int.from_bytes(b"BUKTFEED", "little")
FORMAT = 1
HEADER = 4096
SIZE_W, MAXV_W, PID_W, START_W = 2, 3, 4, 5
NONCE_W = 7             # random, set when the area is made: tells a new area from an
                        # old one that had the same inode number
LEASE_W = 6             # feed.lease in ms: how long a watcher's hold on a cache-only
                        # bucket lasts (THE LEASE)
HEAD, LOW, LOST, LAST = 8 * 8, 9 * 8, 10 * 8, 11 * 8      # byte offsets of the words
RING_LOST_W = 12        # the segment's feed_lost the writer last turned into a gap
UPTO_W = 13             # the ring position past the last batch published
WAKE = 128
REC = struct.Struct("<QQqQqIIIIIHBB")
VSIZE_UNKNOWN = 0xffffffff
COPY = 256 << 10        # bytes a watcher copies out of the feed at a time
STRETCHES = 64          # parsed stretches a process keeps for its watchers
ROUND = 4096            # events an iterating watcher takes at a time: whole stretches
                        # (256 KiB, under 4096 records), so watchers stay on the
                        # stretches the process keeps (Feed.stretch)
PAD = 0
_ZEROS = bytes(8)

# kinds as the feed stores them, and their names on every face
KINDS = {1: "set", 2: "delete", 3: "expired", 4: "evicted", 5: "expire", 6: "incr",
         7: "flush", 8: "drop"}
KIND_CODES = {v: k for k, v in KINDS.items()}
_feedread.setup(KINDS)
assert _feedread.REC_SIZE == REC.size   # (bukt/_feedrec.pxd: the same record)

# ring record types and flags (cext/includes/segment.h)
_T_SET, _T_DEL, _T_EXPIRED, _T_EVICTED, _T_TOUCH, _T_META = 1, 2, 3, 4, 5, 16
RF_NOVALUE, RF_FEED, RF_FLUSH, RF_INCR = 0x08, 0x10, 0x20, 0x40
_E_SINGLE = ENTRY_SINGLE
_E_HIDDEN = ENTRY_HIDDEN     # an entry's (in ring_read's flags, above its record's: << 8)
_E_CODECS_RING = (ENTRY_ZSTD | ENTRY_LZ4) << 8     # a compressed value's (bukt/codec.py)


def _raw_value(stored, eflags, maxv):
    """(value, vsize) of a compressed value for the feed: watchers get values as they
    were set. Decompressed only when its raw size fits feed.max_value (the frame says
    it first); else, or when its frame is damaged, no value, and its raw size."""
    from bukt import codec
    from bukt.errors import IntegrityError
    size = codec.content_size(stored, eflags)
    if size is None:
        return b"", VSIZE_UNKNOWN
    if size > maxv:
        return b"", size
    try:
        return codec.decompress(stored, eflags, maxv), size
    except IntegrityError:
        return b"", VSIZE_UNKNOWN


def feed_path(instance: str) -> str:
    return f"/dev/shm/bukt-{instance}-feed"


def _align8(n):
    return (n + 7) & ~7


class Gone:
    """The watcher's position is no longer in the feed: events after it were
    overwritten (it fell behind, or asked for an older point) or never reached the
    feed. `oldest`: the feed holds every event after this sequence; resume from it
    (after re-reading whatever state the watcher keeps). `since`: where it was."""

    gone = True
    kind = "gone"

    def __init__(self, since, oldest, reason="behind"):
        self.since, self.oldest, self.reason = since, oldest, reason

    @property
    def seq(self):
        return self.oldest

    def as_dict(self, values=False):
        return {"kind": "gone", "since": self.since, "oldest": self.oldest,
                "reason": self.reason}

    def __repr__(self):
        return f"Gone(since={self.since}, oldest={self.oldest}, {self.reason})"


def _records(buf, size, pos, head, low=None):
    """(position, sequence, length) of the records (padding skipped) in [pos, head)
    of feed area `buf`, read header by header, then (head, None, 0) if the walk got
    there: it stops short at a record whose stamp is not its position (a torn area),
    or, given `low` (a function: the feed's low word), at one overwritten while it was
    read (low passed it)."""
    while pos < head:
        left = size - pos % size
        if left < REC.size:
            pos += left
            continue
        off = HEADER + pos % size
        stamp, seq = struct.unpack_from("<QQ", buf, off)
        n = struct.unpack_from("<I", buf, off + 40)[0]
        if low is not None:
            feed_fence()
            if low() > pos:
                return
        if stamp != pos or n == 0:
            return
        if buf[off + 62] != PAD:
            yield pos, seq, n
        pos += n
    yield pos, None, 0


# ---------------------------------------------------------------- the writer's side

def ring_records_to_events(recs, names):
    """(seq, kind code, bucket idx, gen, key, value, expire_ms, version, flags, vsize)
    of ring records `recs` (ring_read's tuples) that the feed reports. `names`: the
    translator's (idx, gen) -> name map, for META records."""
    import json
    out = []
    for seq, rtype, idx, gen, key, value, expire_ms, version, flags in recs:
        if (flags >> 8) & _E_HIDDEN:
            continue                    # an object's internal entry: not the user's
        if rtype == _T_SET:
            kind = 6 if flags & RF_INCR else 1
            vsize = VSIZE_UNKNOWN if flags & RF_NOVALUE else len(value)
        elif rtype == _T_DEL:
            kind, value, vsize = (7 if flags & RF_FLUSH else 2), b"", 0
        elif rtype == _T_EXPIRED:
            kind, value, vsize = 3, b"", 0
        elif rtype == _T_EVICTED:
            kind, value, vsize = 4, b"", 0
        elif rtype == _T_TOUCH:
            kind, value, vsize = 5, b"", 0
        elif rtype == _T_META:
            try:
                op = json.loads(value).get("op")
            except ValueError:
                continue
            if op != "drop":
                continue
            kind, key, value, vsize = 8, b"", b"", 0
        else:
            continue
        out.append((seq, kind, idx, gen, key, value, expire_ms, version, flags, vsize))
    return out


class FeedWriter:
    """The writer process's side: creates (or takes over) the area, publishes."""

    def __init__(self, instance, size, max_value, mode=0o600, lease_ms=10_000):
        self.path = feed_path(instance)
        self.max_value = max_value
        size = _align8(max(size, 64 << 10))
        fd = self._open_existing(size, max_value)
        if fd is None:
            fd = self._create(size, mode)
        self.fd = fd
        self.buf = mmap.mmap(fd, HEADER + size)
        self.q = memoryview(self.buf).cast("Q")
        self.size = size
        pid, start = identity()
        self.q[PID_W], self.q[START_W] = pid, start
        self.q[LEASE_W] = lease_ms
        self.head = self.q[HEAD // 8]
        self.low = self.q[LOW // 8]
        self.lost = self.q[LOST // 8]
        self.last = self.q[LAST // 8]
        self.published = 0
        self.held = collections.deque()     # [positions, sequences, first held] a run
        # the records an earlier writer left are read only as they are about to be
        # overwritten (_make_room): walking a full area at start cost a warm restart
        # 50-75 ms. Nothing overwrites one of them before _make_room has passed it.
        self._old = self._walk(self.low, self.head)
        self._old_next = next(self._old, None)

    def _walk(self, pos, head):
        """(position, sequence) of the records an earlier writer left in [pos, head)
        (a torn area ends the walk: what follows is unknown)."""
        for pos, seq, _n in _records(self.buf, self.size, pos, head):
            if seq is not None:
                yield pos, seq

    def _open_existing(self, size, max_value):
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            if st.st_size == HEADER + size:
                with mmap.mmap(fd, HEADER) as m:
                    magic, fmt, sz, mv = struct.unpack_from("=4Q", m, 0)
                if (magic, fmt, sz, mv) == (MAGIC, FORMAT, size, max_value):
                    return fd                   # keep its events
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        os.unlink(self.path)
        return None

    def _create(self, size, mode):
        tmp = f"{self.path}.new-{os.getpid()}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            os.ftruncate(fd, HEADER + size)
            try:
                os.posix_fallocate(fd, 0, HEADER + size)
            except OSError as e:
                raise errors.SegmentFull(
                    f"cannot reserve {HEADER + size} bytes in /dev/shm for the change feed "
                    f"{self.path}: {os.strerror(e.errno)}; free space there (df -h "
                    "/dev/shm) or lower feed.size") from None
            with mmap.mmap(fd, HEADER) as m:
                struct.pack_into("=4Q", m, 0, MAGIC, FORMAT, size, self.max_value)
                struct.pack_into("=Q", m, NONCE_W * 8, int.from_bytes(os.urandom(8), "little"))
            os.rename(tmp, self.path)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        return fd

    def start_at(self, tail):
        """The writer drains the ring from `tail`. The feed holds everything of the ring
        below `upto` (the end of the last batch published); what lies between it and
        `tail` was drained by an earlier writer that died before publishing it: a gap.
        A new feed holds nothing before `tail`, which is lost unless nothing came
        before it: a ring still at its first position (RING_FIRST: a new segment with
        no history; a cold start from a log numbers the ring after the log's last
        sequence) had no changes for the feed to miss."""
        if tail <= RING_FIRST and self.q[UPTO_W] == 0:
            self.q[UPTO_W] = tail               # nothing before the first position
        elif tail > self.q[UPTO_W]:
            self.mark_lost(tail - 1)
            if tail - 1 > self.last:
                self.last = tail - 1
                feed_store(self.buf, LAST, self.last)
            self.q[UPTO_W] = tail

    def ring_lost_seen(self):
        return self.q[RING_LOST_W]

    def set_ring_lost_seen(self, value):
        self.q[RING_LOST_W] = value

    def mark_lost(self, seq):
        """The feed may lack events up to `seq`: watchers before it are gone."""
        if seq > self.lost:
            self.lost = seq
            feed_store(self.buf, LOST, seq)

    def publish(self, events, now_ms=None, upto=None):
        """Append `events` (ring_records_to_events' tuples, in order) and wake the
        watchers. Never blocks: the oldest events are overwritten."""
        if events:
            self._append(events, int(time.time() * 1000) if now_ms is None else now_ms)
        self._finish(len(events), upto)

    def publish_ring(self, recs, names, now_ms=None, upto=None):
        """publish(ring_records_to_events(recs, names)), with the records packed by a
        compiled loop (bukt/writer/_logscan.pyx: feed_measure, feed_write) run by
        run, straight into the area: in Python, a record's event cost the writer more
        than its log record did, and a replica's full copy is a million of them. The few records only Python handles (a drop,
        a compressed value, a padding at the area's end) go through _append."""
        from bukt.writer._logscan import feed_measure, feed_write    # (the writer's alone)
        ms = int(time.time() * 1000) if now_ms is None else now_ms
        size, limit, maxv = self.size, self.size // 4, self.max_value
        i, n, published = 0, len(recs), 0
        while i < n:
            head, last = self.head, self.last
            j, end, self.last, count = feed_measure(recs, i, head, size, limit, last, maxv)
            if count:
                self._make_room(end, head)
                pos, seqs = feed_write(recs, i, j, self.buf, HEADER + head % size, head,
                                       end, last, ms, maxv, count)
                self.head = end
                self.held.append([array.array("Q", pos), array.array("Q", seqs), 0])
                published += count
            i = j
            if i < n and not count:
                evs = ring_records_to_events([recs[i]], names)
                if evs:
                    self._append(evs, ms)
                    published += 1
                i += 1
        self._finish(published, upto)

    def _finish(self, count, upto):
        """Make what _append wrote visible and wake the watchers."""
        buf = self.buf
        if count:
            feed_store(buf, HEAD, self.head)    # release: the records before the head
            feed_store(buf, LAST, self.last)
        if upto is not None and upto > self.q[UPTO_W]:
            feed_store(buf, UPTO_W * 8, upto)   # after the events: a writer killed
                                                # before this leaves a gap to mark
        if count:
            self.published += count
            feed_wake(buf, WAKE)

    def _append(self, events, ms):
        """Write `events` after the head (not yet published: _finish does). The
        records of a stretch that does not wrap are packed into one buffer and written
        at once, low raised before it (the writer's cost a record is what bounds the
        rate it can publish at, and it runs beside the log)."""
        buf, size, pack = self.buf, self.size, REC.pack
        maxv, last, head = self.max_value, self.last, self.head
        run, run_start, run_bytes, hp, hs = [], head, 0, [], []
        limit = size // 4
        for seq, kind, idx, gen, key, value, expire_ms, version, flags, vsize in events:
            if seq <= last:
                continue                        # published before this writer started
            if flags & _E_CODECS_RING and value:
                value, vsize = _raw_value(value, flags >> 8, maxv)
            if len(value) > maxv:
                value = b""
            klen, vlen = len(key), len(value)
            n = REC.size + klen + vlen
            n8 = (n + 7) & ~7
            if n8 > limit:                      # (a feed far too small for its keys)
                key, value, klen, vlen = key[:64], b"", min(klen, 64), 0
                n = REC.size + klen
                n8 = (n + 7) & ~7
            left = size - head % size
            if left < n8 or run_bytes + n8 > limit or left == size:
                # (left == size: the last record ended at the area's end, and a run's
                # bytes must be contiguous in the area)
                self._write_run(run, run_start, head, hp, hs)
                run, run_bytes, hp, hs = [], 0, [], []
                if left < n8:                   # pad to the start of the area
                    self._make_room(head + left, head)
                    if left >= REC.size:
                        REC.pack_into(buf, HEADER + head % size, head, 0, 0, 0, 0, left, 0,
                                      0, 0, 0, 0, PAD, 0)
                    head += left
                run_start = head
            run.append(pack(head, seq, ms, version, expire_ms, n8, klen, vlen, vsize, gen,
                            idx, kind, flags & 0xff))
            hp.append(head)
            hs.append(seq)
            run.append(key)
            if vlen:
                run.append(value)
            if n8 != n:
                run.append(_ZEROS[:n8 - n])
            run_bytes += n8
            head += n8
            last = seq
        self._write_run(run, run_start, head, hp, hs)
        self.head, self.last = head, last

    def _write_run(self, run, start, end, positions, seqs):
        if not run:
            return
        self._make_room(end, start)
        off = HEADER + start % self.size
        self.buf[off:off + end - start] = b"".join(run)
        self.held.append([positions, seqs, 0])

    def _make_room(self, end, head):
        """Raise low (and lost) past every record whose bytes lie before `end - size`,
        before the writer overwrites them. The writer keeps the (position, sequence)
        of the records it wrote in `held`, so it reads back only the headers of the
        records an earlier writer left, each once, just before it drops them."""
        size, held = self.size, self.held
        if end - self.low <= size:
            return
        low, lost = self.low, self.lost
        while self._old_next is not None and end - self._old_next[0] > size:
            lost = max(lost, self._old_next[1])          # an earlier writer's record
            self._old_next = next(self._old, None)
        if self._old_next is None:
            # held: [positions, sequences, index of the first still held] a run
            while held:
                h = held[0]
                ps, k = h[0], h[2]
                k2 = bisect.bisect_left(ps, end - size, k)
                if k2 > k:
                    lost = max(lost, h[1][k2 - 1])      # (sequences increase)
                if k2 < len(ps):
                    h[2] = k2
                    break
                held.popleft()
        low = self._old_next[0] if self._old_next is not None else \
            held[0][0][held[0][2]] if held else head
        if end - low > size:                    # (records before it were all padding)
            low = end - size
        self.low = low
        buf = self.buf
        if lost > self.lost:
            self.lost = lost
            feed_store(buf, LOST, lost)
        feed_store(buf, LOW, low)
        feed_fence()                            # low is seen before the bytes change

    def close(self):
        try:
            self.q.release()
            self.buf.close()
        finally:
            os.close(self.fd)


# ---------------------------------------------------------------- the readers' side

def _nonce(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return struct.unpack("=Q", os.pread(fd, 8, NONCE_W * 8))[0]
    finally:
        os.close(fd)


class Feed:
    """A read-only mapping of an instance's feed area (one a process is enough)."""

    _open = {}
    _lock = threading.Lock()

    def __init__(self, path):
        self.path = path
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise errors.BuktError(
                f"no change feed at {path}: the writer process has not started (it "
                "makes the feed), or runs a build without it") from None
        try:
            head = os.pread(fd, 32, 0)
            magic, fmt, size, maxv = struct.unpack("=4Q", head)
            if magic != MAGIC or fmt != FORMAT:
                raise errors.FormatMismatch(f"{path} is not a change feed of format {FORMAT}")
            self.buf = mmap.mmap(fd, HEADER + size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self.size, self.max_value = size, maxv
        self._load = FeedArea(self.buf).load    # (its words, without a buffer a load)
        self.copy = max(COPY, maxv + 65536 + 2 * REC.size)   # a whole record fits
        self._waker = None
        self._loop_wakes = weakref.WeakKeyDictionary()
        self._stretches = {}            # position -> a parsed stretch (stretch())

    @classmethod
    def of(cls, instance):
        path = feed_path(instance)
        with cls._lock:
            f = cls._open.get(path)
            st = os.stat(path) if os.path.exists(path) else None
            # (the inode and the area's nonce: tmpfs reuses a removed file's inode
            # number for the next file, so a feed made anew may carry the old one's)
            ident = (st.st_ino, _nonce(path)) if st else None
            if f is None or st is None or getattr(f, "_ino", None) != ident:
                f = cls(path)
                f._ino = ident
                cls._open[path] = f
            return f

    def head(self):
        return self._load(HEAD)

    def low(self):
        return self._load(LOW)

    def lost(self):
        return self._load(LOST)

    def last_seq(self):
        return self._load(LAST)

    def stretch(self, pos, head):
        """The records of the feed from byte position `pos` (a record's start) towards
        `head`, parsed: a Stretch (bukt/_feedread.pyx: its end, count, damaged, views;
        its events()), or None when the writer overwrote `pos` meanwhile. A stretch is
        copied out, then low checked once: if the writer had not raised it past `pos`
        after the copy, nothing in the copy was being overwritten.
        The process keeps the last few stretches parsed: its watchers, at the same
        position when they keep up, read each record's header, key and value once
        between them, not once each (with many watchers of a process, parsing was
        what their cost grew with)."""
        cache = self._stretches
        st = cache.get(pos)
        if st is not None:
            # (served while its start is still in the feed, as its bytes would be: a
            # watcher the writer overran is told so whoever parsed it before)
            return st if self._load(LOW) <= pos else None
        buf, size = self.buf, self.size
        end = min(head, pos + self.copy)
        a, b = HEADER + pos % size, HEADER + (end - 1) % size + 1
        data = buf[a:b] if b > a else buf[a:HEADER + size] + buf[HEADER:b]
        feed_fence()
        if self._load(LOW) > pos:
            return None
        st = Stretch(data, pos, size)
        if st.end > pos:
            if len(cache) >= STRETCHES:
                del cache[next(iter(cache))]    # the oldest
            cache[pos] = st
        return st

    def lease_ms(self):
        """feed.lease: how long a watcher's hold on a cache-only bucket lasts."""
        return self._load(LEASE_W * 8) or 10_000

    def published_upto(self):
        """The change ring's position up to which the feed holds every change: a
        write whose record ends below it has its event published."""
        return self._load(UPTO_W * 8)

    def wake_word(self):
        return struct.unpack_from("=I", self.buf, WAKE)[0]

    def wait(self, seen, timeout):
        return feed_wait(self.buf, WAKE, seen, timeout)

    def waker(self):
        with Feed._lock:
            if self._waker is None:
                self._waker = Waker(self)
            return self._waker

    def loop_wake(self, loop):
        """The LoopWake of asyncio loop `loop` (one a loop, made on first use)."""
        with Feed._lock:
            lw = self._loop_wakes.get(loop)
            if lw is None:
                lw = self._loop_wakes[loop] = LoopWake(loop, self)
            return lw


class Waker:
    """One thread a process that sleeps on the feed's wake word for every watcher an
    event loop runs, and calls their callbacks after each batch (and every second, so a
    revoked token or a closed peer is noticed without events)."""

    def __init__(self, feed):
        self.feed = feed
        self.callbacks = set()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="bukt-feed-waker", daemon=True)
        self.thread.start()

    def add(self, callback):
        with self.lock:
            self.callbacks.add(callback)

    def remove(self, callback):
        with self.lock:
            self.callbacks.discard(callback)

    def _run(self):
        seen = self.feed.wake_word()
        while True:
            now = self.feed.wait(seen, 1.0)
            seen = now
            with self.lock:
                cbs = list(self.callbacks)
            for cb in cbs:
                try:
                    cb()
                except Exception:
                    pass


class LoopWake:
    """The Waker's one callback for every watcher of one asyncio loop: after each batch
    it wakes the loop once (one call_soon_threadsafe, one write to the loop's self-pipe)
    and the loop sets each watcher's asyncio.Event, where a callback a watcher cost a
    cross-thread wake per watcher per batch (with 100 watchers of a process, 100 writes
    to the same pipe and 100 wakeups of the loop's selector for one batch)."""

    def __init__(self, loop, feed):
        self.loop, self.feed = loop, feed
        self.events = set()
        self.pending = False
        self._cb = self._ring           # (one bound method: the Waker's set holds it)

    def _ring(self):                    # the Waker's thread
        if not self.pending:
            self.pending = True
            try:
                self.loop.call_soon_threadsafe(self._fire)
            except RuntimeError:        # (the loop closed)
                self.pending = False

    def _fire(self):                    # the loop's thread
        self.pending = False
        for ev in list(self.events):
            ev.set()

    def add(self, event):
        """Set asyncio.Event `event` after each batch (and each second), in the loop."""
        if not self.events:
            self.feed.waker().add(self._cb)
        self.events.add(event)

    def remove(self, event):
        self.events.discard(event)
        if not self.events:
            self.feed.waker().remove(self._cb)


class WakeFd:
    """An eventfd that the process's Waker makes readable after each batch (and each
    second) while `watch(True)`: for a loop that waits on file descriptors in its own
    thread (the TCP face's epoll worker, bukt/tcp/_epoll.pyx, WATCH WAITS)."""

    def __init__(self, waker):
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.waker = waker
        self.on = False
        self._cb = self._ring          # (one bound method: the Waker's set holds it)

    def _ring(self):
        try:
            os.eventfd_write(self.fd, 1)
        except OSError:
            pass

    def watch(self, on):
        if on != self.on:
            (self.waker.add if on else self.waker.remove)(self._cb)
            self.on = on

    def clear(self):
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass


def _bucket_slot(store, name):
    for row in store.bucket_table():
        if row[3] == name and row[2] == 1:
            return row[0], row[1]
    raise errors.BucketNotFound(f"no bucket {name!r}")


class Watcher:
    """A watch of one bucket's changes (keys starting with `prefix`), from just after
    sequence `since` (None: from now on). poll() never blocks; wait() sleeps until the
    feed moves; waker() gives an event loop a callback on each move instead.

    A watcher that falls behind the feed's window (feed.size), or asks for a point
    older than it, gets one Gone and then nothing: it starts a new one from
    Gone.oldest after re-reading what it keeps."""

    def __init__(self, store, bucket, prefix=b"", since=None, values=False):
        if isinstance(prefix, str):
            prefix = prefix.encode()
        if isinstance(bucket, str):
            self.bucket = bucket
        else:
            self.bucket = bucket.name
        self.store = store
        self.feed = Feed.of(store.name)
        self.idx, self.gen = _bucket_slot(store, self.bucket)
        self.values = values
        self.prefix = prefix                    # (and _view_key, for Stretch.views)
        self.gone = None
        self.dropped = False
        feed = self.feed
        self._lease_s = feed.lease_ms() / 1000.0
        self._lease_ms = int(self._lease_s * 1000)
        feed_watching(store, self._lease_ms)    # producers ring from now (THE WATCHED WORD)
        self._lease = self._hold()              # (run, since), or None: no lease needed
        if since is None:
            self.seq = feed.last_seq()
            self.pos = feed.head()
            if feed.lost() > self.seq:          # (a gap being marked just now)
                self.seq = feed.lost()
            if self._lease is not None and self._lease[1] - 1 > self.seq:
                self.seq = self._lease[1] - 1   # a resume point inside the lease's run
        else:
            self.seq = int(since)
            self.pos = None                     # found by _seek

    @property
    def prefix(self):
        return self._prefix

    @prefix.setter
    def prefix(self, value):
        """A new prefix applies from the watcher's position on (a RESP subscriber's
        watcher follows its subscriptions); the stretches' views are keyed by it."""
        self._prefix = bytes(value)
        self._view_key = (self.idx, self.gen, self._prefix, self.values)

    @property
    def position(self):
        """The resume point: the sequence of the last event this watcher passed."""
        return self.seq

    def _gone(self, reason="behind", oldest=None):
        self.gone = Gone(self.seq, max(self.feed.lost(), self.seq if oldest is None
                                       else oldest), reason)
        return self.gone

    def _hold(self):
        """Take or renew this watcher's hold on a cache-only bucket (THE LEASE): its
        (run, since), or None when the bucket needs none."""
        self._renewed = time.monotonic()
        return feed_watch(self.store, self.idx, self.gen, int(self._lease_s * 1000))

    def _lease_gone(self):
        """A Gone when the bucket's changes may not all have reached the feed since
        this watcher's point: it is older than the lease's run (the bucket was not
        watched then), or the lease lapsed since the last renewal (a new run)."""
        lease = self._lease
        if lease is None:
            return None
        if time.monotonic() - self._renewed > self._lease_s / 4:
            now = self._hold()
            if now is None:
                self._lease = None              # (dropped or replaced: its drop event ends us)
                return None
            if now[0] != lease[0]:
                self._lease = now
                return self._gone("the bucket went unwatched: its changes did not reach "
                                  "the feed", now[1] - 1)
        if self.seq < lease[1] - 1:
            return self._gone("the bucket was not watched then: its changes before "
                              "did not reach the feed", lease[1] - 1)
        return None

    def _seek(self):
        """Position at the first record after self.seq; a Gone when that is lost."""
        feed = self.feed
        while True:
            if self.seq < feed.lost():
                return self._gone("older than the feed")
            for pos, seq, _n in _records(feed.buf, feed.size, feed.low(), feed.head(),
                                         feed.low):
                if seq is None or seq > self.seq:
                    self.pos = pos
                    return None
            # (overwritten while we looked: again)

    def poll(self, max_events=256):
        """Up to `max_events` new events (a list, maybe empty); a Gone as its last
        element when the watcher lost its place (then every later poll returns [])."""
        if self.gone is not None or self.dropped:
            return []
        feed_watching(self.store, self._lease_ms)
        if self._lease is not None:
            g = self._lease_gone()
            if g is not None:
                return [g]
        if self.pos is None:
            g = self._seek()
            if g is not None:
                return [g]
        feed = self.feed
        load = feed._load                       # (the feed's words: Feed.head() and all)
        out = []
        pos, head = self.pos, load(HEAD)
        prefix, values, idx, gen = self.prefix, self.values, self.idx, self.gen
        while pos < head and len(out) < max_events:
            st = feed.stretch(pos, head)
            if st is None:                      # overwritten under us
                self.pos = pos
                return out + [self._gone()]
            count, damaged = st.count, st.damaged
            if count and damaged is None and count <= max_events - len(out):
                # the whole stretch: its events for this view of it (bucket, prefix,
                # values), made once by the first watcher of the process to read it
                v = st.views.get(self._view_key)
                if v is None:
                    v = st.views[self._view_key] = st.view(idx, gen, prefix, values,
                                                           self.bucket)
                evs, drop_at = v
                out.extend(evs)
                self.seq = st.last_seq if drop_at is None else evs[-1].seq
                if drop_at is not None:         # the bucket was dropped: the watch ends
                    self.dropped = True
                    self.pos = drop_at
                    return out
                pos = st.end
                continue
            n, seq, dropped = st.events(out, max_events - len(out), idx, gen, prefix,
                                        values, self.bucket)
            if n:
                self.seq = seq
            if dropped:                         # the bucket was dropped: the watch ends
                self.dropped = True
                self.pos = st.after(n - 1)
                return out
            p = st.start_of(n)                  # (n == count: the end parsed up to)
            if n == count and damaged is not None:
                self.pos = damaged
                return out + [self._gone("the feed is damaged")]
            if p == pos:
                break                           # (a record longer than feed.copy: never)
            pos = p
        self.pos = pos
        if pos >= head and self.seq < load(LAST) and load(HEAD) == head:
            self.seq = max(self.seq, load(LAST))
        if self.seq < load(LOST):               # a gap marked behind us (cache-only)
            out.append(self._gone("a change did not reach the feed"))
        return out

    def wake_word(self):
        return self.feed.wake_word()

    def wait(self, timeout=1.0, seen=None):
        """Sleep until the feed moves past wake word `seen` (None: read now) or
        `timeout` seconds."""
        if seen is None:
            seen = self.feed.wake_word()
        if self.feed.head() != self.pos:
            return
        self.feed.wait(seen, timeout)

    def waker(self):
        """The process's Waker: add(callback) is called after each batch, from its thread."""
        return self.feed.waker()

    def _rounds(self):
        """(wake word read before the poll, the poll's events) until a Gone or a drop
        ends the watch: __iter__ and __aiter__ differ only in how they wait."""
        while True:
            seen = self.feed.wake_word()
            evs = self.poll(ROUND)
            yield seen, evs
            if self.gone is not None or self.dropped:
                return

    def __iter__(self):
        """Blocking iteration: events, ending after a Gone or a drop."""
        for seen, evs in self._rounds():
            yield from evs
            if not evs:
                self.wait(1.0, seen)

    async def __aiter__(self):
        ready = asyncio.Event()
        wake = self.feed.loop_wake(asyncio.get_running_loop())
        wake.add(ready)
        try:
            for _seen, evs in self._rounds():
                for e in evs:
                    yield e
                if not evs:
                    await ready.wait()
                ready.clear()
        finally:
            wake.remove(ready)


def watch(store, bucket, prefix=b"", since=None, values=False):
    return Watcher(store, bucket, prefix, since, values)
