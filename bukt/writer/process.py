"""The writer process (`bukt writer`): the one consumer of the change ring, which it turns
into the append-only log; it also owns recovery, compaction and expiry.

HOW IT STARTS

    DataDir.open (flock LOCK) -> the segment: warm, or cold -> ready -> the loop

WARM RESTART. A segment that survived (the writer died or was restarted, the host did
not reboot) is reused as it is when data_dir/SEGMENT names its generation: that file is
written after every cold recovery, and says "the logs here describe that segment". No
replay: the writer reopens the last log where its good records end and goes on from the
ring's tail. The records between the ring's tail and head are the ones the dead writer
had not released; some may be in the log already (it died between write and release),
so the log's end is scanned from the last size the writer published (log_size in the
header, published after each release; 0 around a rotation, when the whole last log is
scanned) and ring records the log already holds are skipped. The log is fsynced before
anything is acknowledged. Milliseconds, whatever the data size.

COLD START (no segment, another generation, a damaged one, or `--cold`). A new segment
is created under a temporary name (/dev/shm/bukt-<instance>.recovering-<pid>-<start>:
the writer's owner record, bukt/owners.py), the base file and logs are replayed into it
with logging off (bukt/writer/restore.py), the ring is told to number on after the log's last
sequence number (ring_set_start), and only then is it renamed to
/dev/shm/bukt-<instance>, replacing any old segment in one step. So no process ever
attaches to a half-loaded table, and none writes into the new one before its numbering
is set. Then SEGMENT records the new generation. After a load_good start that skipped
damage, a compaction runs at once so the damaged file leaves MANIFEST.

THE LOOP. Drain the ring (ring_read), translate (bukt/writer/ringlog.py), append with one
write, release the ring space, then apply the fsync policy:

    always    fsync every batch, then ring_flushed(pos): every writer waiting on a
              record of the batch wakes (group commit: while one fsync runs, the
              next batch gathers in the ring, and one fsync acknowledges all of it;
              see GATHER)
    everysec  fsync when the last one is a second old; ring_flushed after it
    no        never fsync; ring_flushed at once

then the timers: heartbeat and progress in the header every HEARTBEAT_S, the expiry
cycle at expiry.hz with its budget, the repair pass every repair.interval (REPAIR), the
compaction check every second. On an empty ring
the writer sleeps on the segment's doorbell (ring_idle_wait, cext/ring.pxi), never
spinning a core. Under `always` every producer that commits while it sleeps rings the
doorbell, so the writer drains at once: the time from a commit to its acknowledgement is
one wake-up, one write, one fsync and one wake-up, and records committed during an
fsync go into the next one. Under everysec and no nobody waits, producers do not ring,
and the sleep backs off from POLL_MIN_S to POLL_MAX_S, then the writer dozes (DOZE);
under a stream of writes the writer drains every BATCH_S (at once while batches come
back full). While the change
feed is watched (the header's feed_watched, renewed by watchers: bukt/feed.py, THE
WATCHED WORD) its watchers do wait: see WATCHED. A record still RESERVED by its
producer for longer than STUCK_S is handed to ring_unstick, which repairs the stripe if
the producer died.

DOZE (everysec, no). Polling every POLL_MAX_S kept an idle writer waking 500 times a
second (1.7-2.2% of a CPU). So once the ring has been empty for DOZE_AFTER_S the writer
sleeps until its next tick on the doze word, which every commit rings whatever the
policy (cext/ring.pxi, THE DOZE: the writer sets it, fences and looks at the ring once
more; a producer fences after its commit and looks at the word). Its timers keep their
times, since the doze ends at the next tick: heartbeat, the everysec fsync, expiry,
repair, compaction checks. Idle, it wakes at the tick rate (10 a second). A commit
while it dozes costs its producer one futex wake and wakes the writer at once; the
polls before DOZE_AFTER_S keep a stream with short gaps off the futex. Under `always`
producers ring anyway, and the idle sleep already lasts until the next tick.

WATCHED (everysec, no). While the change feed is watched, producers ring the doorbell as
under `always` (cext/ring.pxi, THE DOORBELL), so an idle writer drains a commit one
wake-up after it, not at its next poll, and after a batch of at most WATCHED_TRICKLE
records the writer gathers WATCHED_BATCH_S, not BATCH_S, asleep off the doorbell (a
commit meanwhile makes no system call). A paced event (1000 a second) is published
within a wake-up of its commit, where it waited up to a poll and a gather (2-4 ms).
A larger batch is a stream of writes: the writer gathers BATCH_S as when unwatched
(off the doorbell too), for a drain a commit, or one every WATCHED_BATCH_S, costs
every watcher's face a wake-up and a send a batch (waking for every commit took one
RESP connection's sets from 31k to 8k a second in bench/watch.py). The price is
paid by the faces: a batch a paced event, where a gather took two, is twice the wake-ups
and sends (RESP, 100 subscribers at 1000 events/s: its worker at 46-52% of a CPU, not
32-36%).

GATHER (`always`). Writers that wait for their acknowledgement write again as soon as
it comes, one after another, so right after an fsync the ring holds the first of them
only; taking that one at once and fsyncing it makes the others wait a whole fsync more,
and the batches alternate 1, n-1, 1, n-1. So when the ring holds less than the largest
of the last GATHER_HISTORY batches, the writer first waits for that much, for at most
half the time the last batch took to be made durable, its write and fsync together
(commit_s; and GATHER_MAX_S): with n writers committing, one fsync acknowledges about
n of them. It sleeps on the doorbell with the bytes it waits for published (ring.pxi,
THE DOORBELL), so only the commit that completes the batch wakes it: when every commit
woke it, waiting for a whole batch cost 16 writers on 2 CPUs two thirds of their
throughput, and the writer took a batch at once when it held half of that
(docs/writer.md has the figures). A lone writer's batches hold one record, so it
never waits longer than its record takes to come; after writers leave, the estimate
falls back within GATHER_HISTORY batches. (PostgreSQL's commit_delay, with the delay
and the count of siblings measured instead of configured.) Under `always` the log is
also written with THE SYNCED WRITE (bukt/writer/aof.py): each batch durable as it is written,
one system call where a write and an fdatasync were two.

GATHER SPIN (`always`, `gather_spin`). With few writers the batch comes a few tens of
microseconds after the acknowledgement (each writer wakes up, returns and writes
again), and a sleeping writer process takes about as long again to be woken for it.
So the gather first yields the CPU in a loop (sched_yield: a producer runnable on the
writer's CPU runs first) for up to gather_spin, with the doorbell unset, so that the
producers make no futex call either, and sleeps only if the batch has not come. It
spins only while spinning pays (bukt/writewait/spin.py, SpinCredit). Unlike the TCP worker's
busy poll it does not give way after slow yields: the tasks that want its CPU are
mostly the producers it waits for, and giving way to them cost 4 writers all that the
spin gained. Here 4 writers got 15-27% more acknowledgements a second from it and 16
the same (docs/writer.md).

REPAIR. A process killed inside a write leaves its stripe's seq odd until a process
that may write takes the stripe's lock and repairs it (cext/table.pxi, THE REPAIR PASS).
Read-only readers cannot, and wait: so the writer looks for such stripes at start and
every repair.interval, reading one word a stripe, and repairs them, in slices of
EXPIRE_SLICE_S with a drain between, as the expiry cycle does. It publishes the period
in the header, and a read-only reader waits a few periods before it gives up saying
that the writer is not repairing (cext/bucket.pxi, readonly_wait).

OBJECTS. The writer runs the reclaim sweep of objects' hidden entries (chunks of
replaced, deleted, expired or evicted objects, uploads a dead process left) from its
tick: when store.objects_retired() moved, while garbage waits for readers, and every
objects.sweep_interval (bukt/objects/reclaim.py says what goes and when). Its deletes
are ring records like any other, logged and replicated; a read replica sweeps nothing.

DATA DIRECTORY. The writer resolves data_dir to an absolute path at start and
publishes it in the segment's header: the CLI's commands, run from any directory with
no data_dir of their own, act on the one the writer claimed (bukt/cli/common.py).

COMPACTION, when the logs since the last base outgrow compaction.ratio x that base (and
compaction.min_log_bytes), on SIGUSR1 (`bukt compact` sends it), or after a load_good
start: at a record boundary S (the last seq written) the log is rotated (DataDir.rotate
fsyncs it and lists a new log after S), then a thread takes the snapshot with
dump_stripes while the loop goes on draining into the new log, and DataDir.install_base
switches MANIFEST to the new base and the logs after S. Records state results, so a
snapshot that already shows some changes after S is still right once they are replayed.

DISK ERRORS (operations.md, "Disk errors"). A failed write is undone by the LogWriter;
the writer publishes the error in the header, keeps the records in the ring (they are
not released, so nothing is lost and, once the ring is full, writers get RingFull
instead of an acknowledgement) and retries with a backoff; `fsync: always` writers
are never acknowledged past what is durable, so they get WriterDown. A failed fsync
leaves the log untrustworthy (Linux may have dropped the pages): the writer stops using
it and rebuilds durability from the segment, which holds everything: a new log after
the last written seq, then a base file snapshotted from the table (the same two steps
as a compaction). Until the base file is in nothing more is acknowledged: the records
of the failed log are on disk only in that base (the table holds their effects), and
the flushed position is one mark, so acknowledging the new log's records would pass
theirs too. Then everything up to the new log's last fsync is acknowledged at once; a
base that fails is tried again the same way (rebase_ack, _acknowledge,
_compaction_done).

ADOPTION (a segment no writer has claimed). A program may create a segment with
bukt.create and use it without a writer (embedded use, docs/api.md): its changes reach
the table only, not the ring (cext/ring.pxi, THE WRITER'S CLAIM). A writer that finds
such a segment under its instance name takes it over rather than replacing it with one
recovered from the data directory, which would drop everything in it. Only into a data
directory that holds no records yet: one that holds some describes another table, and
the writer refuses to start rather than choose which to lose (a segment holding no
bucket is replaced as before). The writer starts a new log after the ring's tail, ties
the data directory to the segment (SEGMENT), claims the segment (writer_claim: from then
on every change goes to the ring too) and then writes a base file of the table, as
after a failed fsync (rebase_ack: nothing is acknowledged until it is in). A writer that
dies before the base file is in leaves the claim at 1, and the next one, warm, writes
the base again.

SIGTERM / SIGINT: stop taking new work, drain the ring (up to shutdown_timeout), fsync,
acknowledge, mark the header not ready, exit 0. SIGXFSZ is ignored, so a file size
limit gives EFBIG (a disk error) instead of killing the writer.

TEST HOOK: BUKT_FAKE_TIME_FILE names a file holding milliseconds since the epoch; the
writer reads it every cycle and sets its store's clock (store.set_time) to it, so tests
move the expiry clock instead of sleeping (design.md invariant 9).
"""
import collections
import json
import logging
import os
import signal
import threading
import time

import bukt
from bukt import logs
from bukt.writer import aof
from bukt.writer import datadir
from bukt import owners
from bukt.writer.aof import FILE_HEADER_SIZE, LOG_MAGIC, LogCorrupt, LogWriter, RecoveryError, Scan
from bukt.writer.datadir import DataDir
from bukt.errors import (BuktError, DiskError, FormatMismatch, RingFull, SegmentFull,
                     SegmentInvalid, SegmentNotFound)
from bukt._core import (DATA_DIR_MAX, expire_position, feed_lost, feed_settings,
                        feed_watched, ring_doze, ring_gather_wait, ring_idle_wait,
                        writer_claim,
                        writer_claimed)
from bukt.feed import FeedWriter
from bukt.writer.restore import Cancelled, FinalLoader, Loader, final_sets, memory_needed, \
    snapshot_chunks
from bukt.writer.lag import LogAge
from bukt.writer.ringlog import RingTranslator
from bukt.replica import refuse_writes_for
from bukt.replica.fence import check_at_start as fence_check
from bukt.replica.acks import AckTable
from bukt.writer.ringlog import RING_FEED_ONLY
from bukt._core import replica_exempt
from bukt.writewait.spin import SpinCredit
from bukt.objects.reclaim import Reclaimer

__all__ = ["Writer", "run_writer", "main", "run_command", "read_tie", "TIE_FILE",
           "WriterError"]

log = logging.getLogger("bukt.writer")

POLL_MIN_S = 0.0001         # first sleep on an empty ring: a write is picked up fast
POLL_MAX_S = 0.002          # longest poll on an empty ring (then it dozes: DOZE)
DOZE_AFTER_S = 0.05         # an empty ring this long: sleep until the next tick, woken
                            # by the next commit (DOZE); polls cover the shorter gaps,
                            # whose first commits would each pay a futex wake
BATCH_S = 0.002             # everysec/no: after a batch that was not full, records gather
                            # this long before the next drain
WATCHED_BATCH_S = 0.0005    # the same while the change feed is watched (its watchers wait
                            # for the writer) and batches are small (see WATCHED)
WATCHED_TRICKLE = 8         # watched: a batch of at most this many records is a trickle,
                            # gathered WATCHED_BATCH_S; a larger one, a stream, BATCH_S
ACK_POLL_S = 0.0002         # replication.min_acks: how often waiting acknowledgements look
                            # at the replicas' reports (bukt/replica/acks.py)
HEARTBEAT_S = 0.1           # progress published in the header this often
EVERYSEC_S = 1.0            # fsync: everysec
STUCK_S = 0.05              # a RESERVED record this old goes to ring_unstick
EXPIRE_SLICE_S = 0.001      # the expiry cycle runs in slices this long, draining between
COMPACT_CHECK_S = 1.0       # how often the compaction threshold is looked at
DISK_RETRY_MIN_S = 0.05     # first retry after a disk error; doubles up to the max
DISK_RETRY_MAX_S = 1.0
GATHER_HISTORY = 8          # always: batches whose largest sets the bytes to gather
GATHER_MAX_S = 0.0005       # always: the longest a batch waits to gather (see GATHER)
READ_RECORDS = 4096         # one batch: at most this many ring records or bytes; small
READ_BYTES = 2 << 20        # batches give ring space back sooner under backpressure
TIE_FILE = "SEGMENT"        # data_dir/SEGMENT: the generation the logs describe
FAKE_TIME_ENV = "BUKT_FAKE_TIME_FILE"
POLL_ENV = "BUKT_WRITER_POLL_S"    # test hook: every idle sleep (everysec/no) this long,
                                   # and a doze, so a test can tell a rung doorbell from
                                   # a poll (the writer's ticks wait for it too)


class WriterError(BuktError):
    """The writer cannot start: another writer serves the segment, or the like."""

    code = "writer_error"


# -- the tie between a data directory and a surviving segment ---------------------------

def read_tie(path):
    """(instance, generation) from data_dir/SEGMENT, or None."""
    try:
        with open(os.path.join(path, TIE_FILE), "rb") as f:
            d = json.loads(f.read())
        return d["instance"], int(d["generation"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_tie(path, instance, generation) -> None:
    tmp = os.path.join(path, TIE_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"instance": instance, "generation": generation}, f)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(path, TIE_FILE))
    aof.fsync_dir(path)


def remove_tie(path) -> bool:
    """Breaks the tie (after `bukt check --fix` changed the logs): the next start is
    cold. True if there was one."""
    try:
        os.unlink(os.path.join(path, TIE_FILE))
    except FileNotFoundError:
        return False
    aof.fsync_dir(path)
    return True


def _shm_path(name):
    return f"/dev/shm/bukt-{name}"


def _fake_now():
    path = os.environ.get(FAKE_TIME_ENV)
    if not path:
        return None
    try:
        with open(path) as f:
            text = f.read().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def _sd_notify(message: str) -> None:
    """systemd's Type=notify, without a dependency: one datagram to $NOTIFY_SOCKET."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    import socket                       # here: a start without systemd does not load it
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(message.encode(), addr)
    except OSError as e:
        log.warning("sd_notify %s failed: %s", message, e)


# -- the process ------------------------------------------------------------------------

class Writer:
    """One writer process's state. start() then run(); run() returns the exit code."""

    def __init__(self, cfg, cold=False):
        self.cfg = cfg
        self.force_cold = cold
        self.policy = cfg.fsync
        self.dd = None
        self.store = None
        self.w = None                   # the LogWriter of the last log, or None
        self.translator = None
        self.skip_upto = 0              # ring records up to this seq are in the log already
        self.written_pos = 0            # ring position up to which records are written
        self.flushed_pos = 0            # ... and acknowledged (ring_flushed)
        self.last_fsync = time.monotonic()
        self.last_fsync_ms = 0
        self.stopping = False
        self.compact_requested = False
        self.compaction = None          # the running compaction's thread, or None
        self.compaction_result = None
        self.cancel = threading.Event()
        self.base_size = 0
        self.error = ""                 # what is published as the writer's error
        self.disk_retry_at = 0.0
        self.disk_backoff = DISK_RETRY_MIN_S
        self.rebase_needed = False
        self.rebase_ack = 0             # written, never fsynced: acknowledged once the
                                        # rebase's base file (which holds them) is in;
                                        # until then nothing is (see _acknowledge)
        self.synced_pos = 0             # ring position the last fsync covered
        self.stuck = (None, 0.0)
        self.batch_full = False         # the last drain took a whole batch
        self.batch_records = 0          # records the last drain took (WATCHED)
        self.batch_bytes = collections.deque(maxlen=GATHER_HISTORY)   # always: GATHER
        self.commit_s = 0.0             # always: how long the last batch took to be
                                        # made durable (its write and its fsync)
        self.spin = SpinCredit(cfg.gather_spin)                        # always: GATHER SPIN
        self.start_kind = None          # "warm", "cold" or "adopted", for tests and logs
        self.lag_limit_ms = 0           # everysec: THE LAG LIMIT (cext/ring.pxi)
        self.log_current_ms = 0         # ... the last time published from an idle ring
        self.log_age = LogAge()         # ... and from a drain that passed an earlier head
        self.recovery = None
        self.feed = None                # the change feed (bukt/feed.py), once started
        self.replica_of = None          # host:port of the primary, when a read replica
        self.min_acks = cfg.get("replication.min_acks")
        self.acks = None                # the replicas' reports (bukt/replica/acks.py)
        self.ack_wait = collections.deque()  # (last logged seq, ring pos) not yet acked
        self.logged_seq = 0             # the last sequence logged
        self.reclaimer = Reclaimer(cfg.objects.upload_timeout)    # OBJECTS
        self.last_sweep = 0.0

    # -- start ------------------------------------------------------------------------
    def start(self) -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        replica_exempt(True)            # the writer writes even while its segment
                                        # refuses others' writes (a replica's, a fenced
                                        # primary's): expiry, repair, recovery
        dd = os.path.abspath(self.cfg.data_dir)
        if not self.cfg.get("replica.of"):
            try:
                fence_check(dd)         # the fencing rule (bukt/replica/fence.py)
            except OSError as e:
                log.warning("fencing check: %s", e)
        self.replica_of = refuse_writes_for(self.cfg)
        t0 = time.monotonic()
        path = os.path.abspath(self.cfg.data_dir)      # published: CLI commands find it
        if len(os.fsencode(path)) >= DATA_DIR_MAX:
            raise WriterError(f"data_dir {path}: {len(os.fsencode(path))} bytes; the "
                              f"segment records at most {DATA_DIR_MAX - 1}: choose a "
                              "shorter path")
        self.dd = DataDir.open(path)
        self.dd.prepare = self.cfg.log_prepare
        self.dd.sync_writes = self.policy == "always"     # aof: THE SYNCED WRITE
        try:
            old = self._attach_surviving()
            if old is not None and writer_claimed(old) == 0:
                old = self._adopt(old)
            if old is not None:
                self._warm(old)
            if self.store is None:
                self._cold()
        except BaseException:
            self.dd.close()
            raise
        store = self.store
        if self.replica_of:
            store.set_replica(self.replica_of)      # before ready: docs/design.md, Replicas
        elif store.replica_primary() is not None:
            store.set_replica(None)                 # promoted: a primary now
        store.sync_wait = False         # the writer never waits on itself: not for
        store.ring_wait = 0             # durability, not for ring space (it drains it)
        store.follow = False            # nor follows its segment elsewhere (RETIREMENT)
        self.translator = RingTranslator(store)
        if self.min_acks:
            self.acks = AckTable(self.cfg.instance, create=True)
            self.acks.set_min_acks(self.min_acks)
        tail, head, _ = store.ring_position()
        self.written_pos = self.flushed_pos = tail
        store.ring_flushed(tail)        # a warm start fsynced the log: all below is durable
        self.base_size = self._base_size()
        self._start_feed(store, tail)
        log.info("writer %d ready: %s start of segment %s in %.1f ms, data dir %s, fsync %s, "
                 "%d bytes of changes waiting in the ring", os.getpid(), self.start_kind,
                 _shm_path(self.cfg.instance), (time.monotonic() - t0) * 1000,
                 self.dd.path, self.policy, head - tail)
        self.lag_limit_ms = int(self.cfg.fsync_lag_limit * 1000) \
            if self.policy == "everysec" else 0
        store.writer_publish(pid=os.getpid(), ready=True, error="", data_dir=self.dd.path,
                             repair_period=self.cfg.repair.interval,
                             log_current_ms=int(time.time() * 1000),
                             lag_limit_ms=self.lag_limit_ms,
                             sync_always=(self.policy == "always"),
                             heartbeat_ms=int(time.time() * 1000), log_size=self.w.size,
                             flushed_seq=self.w.synced_seq)
        _sd_notify("READY=1")
        if self.recovery is not None and self.recovery.needs_compaction:
            self.compact_requested = True
        if self.start_kind == "adopted":
            # ADOPTION: a base file of what the table held before the claim
            self.rebase_ack = tail
            self._start_compaction(rotate=False, seq=self.w.written_seq)
        elif writer_claimed(store) == 1:
            self.rebase_needed = True   # an adopter died before its base file was in

    def _start_feed(self, store, tail):
        """The change feed (bukt/feed.py): its area, kept from an earlier writer when it
        matches; a gap for what it lacks before `tail`; cache-only buckets' changes
        asked of the producers (feed.cache_only: of watched buckets, THE LEASE in
        bukt/feed.py, or of all)."""
        fc = self.cfg.feed
        self.feed = FeedWriter(self.cfg.instance, fc.size, fc.max_value, self.cfg.segment.mode,
                               lease_ms=int(fc.lease * 1000))
        self.feed.start_at(tail)
        feed_settings(store, fc.max_value + 1 if fc.cache_only != "never" else 0,
                      always=fc.cache_only == "always")

    def _publish(self, recs, upto):
        """After a batch is in the log: its events into the change feed, and a gap
        for cache-only changes that found no ring room (THE SOURCE in bukt/feed.py)."""
        feed = self.feed
        if feed is None:
            return
        lost = feed_lost(self.store)
        if lost > feed.ring_lost_seen():
            # the change that found no room was made before this load, so before the
            # ring's head now: every watcher behind that point is told
            feed.mark_lost(max(self.store.ring_position()[1], lost) - 1)
            feed.set_ring_lost_seen(lost)
        if recs:
            feed.publish_ring(recs, self.translator.names, upto=upto)
        else:
            feed.publish((), upto=upto)

    def _adopt(self, old):
        """ADOPTION: take over a segment no writer has claimed. Returns it, claimed and
        tied to a fresh log (None: it holds nothing, and a cold start replaces it)."""
        name = _shm_path(self.cfg.instance)
        buckets = len(old.bucket_table())
        if self.force_cold or not buckets or _holds_records(self.dd):
            if not buckets:
                old.close()
                return None
            old.close()
            why = "--cold asks to recover from it" if self.force_cold else "it holds data"
            raise WriterError(
                f"segment {name} holds {buckets} bucket(s) that no writer process has "
                f"logged, and {why} in data directory {self.dd.path}: the writer will not "
                "replace either. To keep the segment's contents, start the writer with an "
                "empty data directory; to recover from the data directory instead, remove "
                f"the segment ({name}) first")
        tail = old.ring_position()[0]
        # the ring stays still until the claim: nothing goes to it before
        self.w = self.dd.rotate(tail - 1, None)
        write_tie(self.dd.path, self.cfg.instance, old.generation)
        writer_claim(old)
        log.warning("segment %s was used without a writer process: adopted; a base file "
                    "of its %d bucket(s) follows", name, buckets)
        self.store, self.start_kind = old, "adopted"
        return None

    def _attach_surviving(self):
        name = self.cfg.instance
        try:
            old = bukt.attach(name)
        except SegmentNotFound:
            return None
        except (SegmentInvalid, FormatMismatch) as e:
            log.warning("%s; it is replaced by a segment recovered from %s", e, self.cfg.data_dir)
            return None
        old.follow = False              # a retired one is ours to finish (RETIREMENT)
        info = old.writer_info()
        if info["alive"] and info["pid"] != os.getpid():      # pid and start time match
            old.close()
            raise WriterError(f"segment {_shm_path(name)} is served by writer process "
                              f"{info['pid']}; stop it first")
        return old

    def _warm(self, old) -> None:
        tie = read_tie(self.dd.path)
        why = None
        ours = tie == (self.cfg.instance, old.generation)
        if self.force_cold:
            why = "--cold"
        elif old.retired:
            why = "a cold start that retired this segment did not finish"
        elif not ours:
            why = (f"the data directory describes generation {tie[1]}" if tie else
                   "the data directory names no segment generation") + \
                  f", the segment is generation {old.generation}"
        else:
            why = self._open_log_warm(old)
        if why:
            log.warning("cold start, not a warm restart: %s", why)
            try:
                self._retire(old, drain=ours)
            finally:
                old.close()
            return
        self.store, self.start_kind = old, "warm"
        if old.limits["ring_size"] != self.cfg.limits.ring_size or \
                old.stats()["segment_bytes"] != self.cfg.memory:
            log.warning("the surviving segment was made with other sizes than the "
                        "configuration asks for; they apply after `bukt writer --cold`")

    def _retire(self, old, drain) -> None:
        """RETIREMENT (cext/store.pxi): before a cold start replaces the segment `old`,
        refuse new records in its ring, then append what was committed there to the
        log the new segment is built from (when `drain`: the data directory describes
        `old`), fsync, and publish the verdict: records below `drained` are saved, the
        writers of the others are told theirs are lost. Programs still attached then
        move to the new segment."""
        if old.retired == 2:
            return                      # a cold start that died after this step
        head = old.retire_begin()
        tail = drained = old.ring_position()[0]
        if drain and head > tail:
            why = self._open_log_warm(old)
            if why is None:
                drained = self._drain_retired(old, head)
            else:
                log.warning("the retired segment's last %d bytes of changes cannot be "
                            "logged (%s): their writers are told so", head - tail, why)
        elif head > tail:
            log.warning("the retired segment is not the one %s describes: its last %d "
                        "bytes of changes are not logged, and their writers are told so",
                        self.dd.path, head - tail)
        old.retire_finish(drained)
        log.info("retired segment %s (generation %d): %d bytes of changes it held were "
                 "logged first", _shm_path(self.cfg.instance), old.generation,
                 drained - tail)

    def _drain_retired(self, old, head) -> int:
        """_retire's drain: the loop's own _drain on `old` until its tail reaches `head`
        (records reserved before the mark are committed by their writers, or resolved
        by ring_unstick), for at most shutdown_timeout, then an fsync. Returns the ring
        position below which every record is durable in the log."""
        tail = old.ring_position()[0]
        self.store, self.translator = old, RingTranslator(old)
        self.written_pos = self.flushed_pos = self.synced_pos = tail
        deadline = time.monotonic() + self.cfg.shutdown_timeout
        try:
            while old.ring_position()[0] < head and time.monotonic() < deadline:
                if not self._drain():
                    time.sleep(POLL_MIN_S)
            done = self.written_pos
            if self.w is None or self.w.broken or self.error or not self._fsync():
                done = self.synced_pos
            if done < head:
                log.warning("the retired segment's ring was drained up to %d of %d "
                            "within shutdown_timeout", done, head)
            return max(done, tail)
        finally:
            if self.w is not None:
                self.w.close()
            self.w = None
            self.store = self.translator = None
            self.skip_upto = self.written_pos = self.flushed_pos = self.synced_pos = 0
            self.batch_bytes.clear()
            self.error = ""

    def _open_log_warm(self, store):
        """Reopen the last log after a warm start; None, or why a cold start is needed."""
        if not self.dd.manifest.logs:
            return "MANIFEST lists no log"
        path = self.dd.log_paths[-1]
        published = store.writer_info()["log_size"]
        try:
            report, found = _scan_tail(path, published)
        except (OSError, RecoveryError) as e:
            return f"the last log cannot be reopened ({e})"
        if report is None:
            return f"{path}: its end is damaged ({found})"
        # written_seq must be at least every seq in the log (a rotation starts the next
        # log after it): records below the ring's tail were all released, so logged.
        report.last_seq = max(report.last_seq, found, store.ring_position()[0] - 1)
        self.w = self.dd.appender(LogWriter.open(path, report, self.dd.prepare))
        self.w.fsync()                  # what the dead writer wrote is durable from here on
        self.skip_upto = found
        return None

    def _new_segment(self, tmp, now):
        cfg = self.cfg
        try:
            store = bukt.create(tmp, size=cfg.memory, mode=cfg.segment.mode,
                                max_key=cfg.limits.max_key, max_value=cfg.limits.max_value,
                                max_buckets=cfg.limits.max_buckets,
                                ring_size=cfg.limits.ring_size,
                                ring_wait=cfg.limits.ring_wait_ms / 1000.0,
                                max_transaction_keys=cfg.limits.max_transaction_keys,
                                object_readers=cfg.limits.object_readers)
        except SegmentFull as e:
            old = _shm_path(cfg.instance)
            try:
                old_bytes = os.stat(old).st_blocks * 512
            except FileNotFoundError:
                raise e from None
            raise SegmentFull(
                f"{e}. The old segment {old} ({old_bytes} bytes) is still there: it is "
                f"replaced only once the new one is loaded, and stays mapped by the "
                f"processes that use it, so a cold start needs room for both, {old_bytes} "
                f"+ {cfg.memory} bytes in /dev/shm. Free that much, or stop the service "
                f"and remove {old} (the data directory rebuilds it)") from None
        if now is not None:
            store.set_time(now)
        store.set_logging(False)
        if self.replica_of:
            store.set_replica(self.replica_of)      # before anyone can attach to it
        return store

    def _cold(self) -> None:
        cfg = self.cfg
        tmp = f"{cfg.instance}.recovering-%d-%d" % owners.identity()
        _remove_leftovers(cfg.instance)
        now = _fake_now()
        store = self._new_segment(tmp, now)
        try:
            t0 = time.monotonic()
            now_ms = store.now_ms()
            rec = datadir.replay(self.dd, now_ms=now_ms, on_corrupt=cfg.recovery.on_corrupt)
            evicted = store.stats()["evictions_total"]
            try:
                Loader(store).apply(rec)
                full = None
            except SegmentFull as e:
                full = e
            evicted = store.stats()["evictions_total"] - evicted
            if full is not None or evicted:
                # the history does not replay into this memory as it ran: load each
                # key's final state instead (restore.py, FINAL STATE)
                log.warning("replaying the history into %s evicted %d keys%s; loading "
                            "each key's final state instead", _shm_path(tmp), evicted,
                            f" and was refused ({full})" if full is not None else "")
                store.unlink()
                store.close()
                store = None
                store = self._new_segment(tmp, now)
                rec = self._load_final(store, now_ms)
            store.set_logging(True)
            store.ring_set_start(rec.last_seq + 8)
            writer_claim(store, based=True)     # the data directory holds it all
            if self.dd.manifest.logs:
                self.w = self.dd.open_log(rec)
            else:                       # a base file with no log after it
                self.w = self.dd.rotate(rec.last_seq, None)
                log.info("%s: the base file has no log after it; started %s",
                         self.dd.path, os.path.basename(self.w.path))
            self.recovery = rec
            os.rename(_shm_path(tmp), _shm_path(cfg.instance))
        except BaseException:
            if store is not None:
                store.unlink()
                store.close()
            if self.w is not None:
                self.w.close()
                self.w = None
            raise
        log.info("recovered %d records (last seq %d, %d expired while down) from %s in "
                 "%.2f s", rec.records, rec.last_seq, rec.expired, self.dd.path,
                 time.monotonic() - t0)
        self.store = bukt.attach(cfg.instance)
        store.close()
        if now is not None:
            self.store.set_time(now)
        write_tie(self.dd.path, cfg.instance, self.store.generation)
        self.start_kind = "cold"

    def _load_final(self, store, now_ms):
        """Loads each key's final state into the empty `store` (two passes over the
        files, restore.py FINAL STATE); the Recovery of the second pass. Refuses
        (RecoveryError) when it does not fit, naming the memory it needs, unless
        recovery.evict allows evicting from lru buckets."""
        cfg = self.cfg
        final = final_sets(datadir.replay(self.dd, now_ms=now_ms,
                                          on_corrupt=cfg.recovery.on_corrupt))
        keys = sum(len(d) for d in final.values())
        rec = datadir.replay(self.dd, now_ms=now_ms, on_corrupt=cfg.recovery.on_corrupt)
        loader = FinalLoader(store, final)
        evicted = store.stats()["evictions_total"]
        loader.apply(rec)
        evicted = store.stats()["evictions_total"] - evicted
        if loader.refused or (evicted and not cfg.recovery.evict):
            need = memory_needed(loader.sizes, cfg)
            raise RecoveryError(
                f"the live set in {self.dd.path} ({keys} keys) does not fit in memory "
                f"{cfg.memory} bytes: loading it evicted {evicted} keys"
                + (f" and {loader.refused} keys of `eviction: none` buckets found no room"
                   if loader.refused else "")
                + f". It needs memory of at least {need} bytes ({-(-need >> 20)}MiB): "
                "raise `memory`" + ("" if loader.refused else
                                    ", or set recovery.evict: true to start with those "
                                    "keys evicted"))
        if evicted:
            log.warning("recovery.evict: the live set (%d keys) does not fit in memory "
                        "%d bytes; %d keys were evicted to start (it needs %d bytes)",
                        keys, cfg.memory, evicted, memory_needed(loader.sizes, cfg))
        log.info("loaded the final state of %d keys (%d evicted)", keys, evicted)
        return rec

    def _base_size(self) -> int:
        p = self.dd.base_path
        try:
            return os.path.getsize(p) if p else 0
        except OSError:
            return 0

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> int:
        self._install_signals()
        poll_min, poll_max = POLL_MIN_S, POLL_MAX_S
        if os.environ.get(POLL_ENV):
            poll_min = poll_max = float(os.environ[POLL_ENV])
        idle = poll_min
        next_tick = 0.0
        idle_since = time.monotonic()       # the ring was last found moving (DOZE)
        while not self.stopping:
            moved = self._drain()
            now = time.monotonic()
            if now >= next_tick:
                self._tick(now)
                next_tick = now + min(HEARTBEAT_S, 1.0 / self.cfg.expiry.hz)
            if moved:
                idle, idle_since = poll_min, now
                if self.policy != "always" and not self.batch_full:
                    # Nobody waits for these records (everysec, no): let the next ones
                    # gather for BATCH_S instead of waking for each (a trickle of writes
                    # cost one drain, log write and wake-up per record). A full batch
                    # means more are waiting, and those are taken at once. While the
                    # change feed is watched its watchers wait: a short gather, off the
                    # doorbell (producers ring it then: WATCHED)
                    if feed_watched(self.store):
                        time.sleep(WATCHED_BATCH_S if self.batch_records <= WATCHED_TRICKLE
                                   else BATCH_S)
                    else:
                        ring_idle_wait(self.store, BATCH_S)
            elif self.error or self.w is None:
                time.sleep(idle)            # backing off a disk error: records wait
                idle = min(idle * 2, poll_max)
            elif self.ack_wait:
                self._replica_acks()        # replication.min_acks: poll the reports
                ring_idle_wait(self.store, ACK_POLL_S)
            elif self.policy == "always":
                # producers ring the doorbell: sleep until the next tick, or until a
                # record RESERVED at the tail has been stuck long enough to look at
                ring_idle_wait(self.store, min(STUCK_S, max(0.0, next_tick - now)))
            elif idle > POLL_MAX_S or now - idle_since >= DOZE_AFTER_S:
                # DOZE: idle for a while (or the test hook's long sleep): until the
                # next tick, and any commit rings
                if ring_doze(self.store, idle if idle > POLL_MAX_S
                             else max(0.0, next_tick - now)):
                    idle, idle_since = poll_min, time.monotonic()
            else:
                ring_idle_wait(self.store, idle)
                idle = min(idle * 2, poll_max)
        return self._shutdown()

    def _install_signals(self):
        def stop(signum, frame):
            self.stopping = True

        def compact(signum, frame):
            self.compact_requested = True
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGUSR1, compact)

    def _drain(self) -> bool:
        """One batch from the ring to the log; True if the ring moved."""
        store = self.store
        if self.w is None or self.w.broken or self.rebase_needed:
            self._rebase()
            if self.w is None:
                return False
        if self.error and time.monotonic() < self.disk_retry_at:
            return False
        if self.policy == "always" and self.batch_bytes:     # GATHER
            want, spin = max(self.batch_bytes), self.spin.next()
            t0 = time.monotonic()
            have = ring_gather_wait(store, want, min(GATHER_MAX_S, self.commit_s / 2), spin)
            if spin:
                self.spin.paid(have >= want and time.monotonic() - t0 <= spin)
        read_ms, head = int(time.time() * 1000), store.ring_position()[1]
        self.log_age.mark(head, read_ms)
        recs, next_pos, stuck = store.ring_read(READ_RECORDS, READ_BYTES)
        if next_pos > self.written_pos:
            self.batch_bytes.append(next_pos - self.written_pos)
        self.batch_records = len(recs)
        self.batch_full = len(recs) >= READ_RECORDS or \
            next_pos - self.written_pos >= READ_BYTES // 2
        if stuck is not None and not recs:
            self._unstick(stuck)
        if next_pos == self.written_pos:
            if self.error and not self.rebase_needed:
                # Writers are refused while the error stands (DiskError), so no record
                # arrives to prove the disk works again: probe it with an fsync.
                try:
                    self.w.fsync()
                except DiskError as e:
                    self._disk_error(e)
                    return False
                self._clear_error()
            self.log_age.written(next_pos)  # marks it passed: none is newer than now
            if next_pos >= head and not self.error:
                self._log_current(read_ms)  # nothing waits: the log is current
            return False
        if self.skip_upto and recs:
            recs = [r for r in recs if r[0] > self.skip_upto]
            if next_pos > self.skip_upto:
                self.skip_upto = 0
        data = self.translator.encode(recs) if recs else b""
        if self.min_acks:
            for r in reversed(recs):
                if not r[8] & RING_FEED_ONLY:
                    self.logged_seq = r[0]
                    break
        t0 = time.monotonic()
        if data:
            try:
                self.w.append_encoded(data, recs[-1][0])
            except DiskError as e:
                self._disk_error(e)
                return False
        self.written_pos = next_pos
        store.ring_release(next_pos)
        # the log's size before the feed's wake-up: a replica's log stream woken by it
        # reads the log up to this size (bukt/replica/source.py, LogReader.read)
        store.writer_publish(log_size=self.w.size,
                             log_current_ms=self.log_age.written(next_pos))
        self._publish(recs, next_pos)
        if self.policy == "always":
            if not self._fsync():
                return True
            # a synced write (THE SYNCED WRITE) is durable when the write returns and
            # its fsync costs nothing: the batch's cost is both together
            self.commit_s = time.monotonic() - t0
        elif self.policy == "no":
            self._acknowledge(next_pos)
        if self.error and not self.rebase_needed:
            self._clear_error()
        return True

    def _log_current(self, ms):
        """The log holds everything committed before wall time `ms` (ring.pxi, THE LAG
        LIMIT): published at most every HEARTBEAT_S / 2 from an idle ring."""
        if ms - self.log_current_ms >= HEARTBEAT_S * 500:
            self.store.writer_publish(log_current_ms=ms)
            self.log_current_ms = ms

    def _fsync(self) -> bool:
        pos = self.written_pos
        if self.w.written_seq != self.w.synced_seq or pos > self.flushed_pos:
            t0 = time.monotonic()
            try:
                self.w.fsync()
            except DiskError as e:
                self._disk_error(e)
                self.rebase_needed = True
                return False
            self.last_fsync = time.monotonic()
            self.last_fsync_ms = int(time.time() * 1000)
        self.synced_pos = pos
        self._acknowledge(pos)
        return True

    def _acknowledge(self, pos):
        if self.min_acks and pos > self.flushed_pos:
            # replication.min_acks: on disk, and then on that many replicas
            self.ack_wait.append((self.logged_seq, pos))
            self._replica_acks()
            return
        self._ack_now(pos)

    def _replica_acks(self):
        acks, wait = self.acks, self.ack_wait
        pos = None
        while wait and acks.count_at(wait[0][0]) >= self.min_acks:
            pos = wait.popleft()[1]
        if pos is not None:
            self._ack_now(pos)

    def _ack_now(self, pos):
        if self.rebase_ack:
            # the flushed position is one mark: past these records it would also pass
            # the failed log's, which are durable only once the rebase's base is in
            # (_compaction_done acknowledges then)
            return
        if pos > self.flushed_pos:
            self.store.ring_flushed(pos)
            self.flushed_pos = pos

    def _unstick(self, stuck):
        pos = stuck[0]
        seen, since = self.stuck
        now = time.monotonic()
        if seen != pos:
            self.stuck = (pos, now)
        elif now - since >= STUCK_S:
            if self.store.ring_unstick(pos):
                log.warning("ring record at %d, reserved by process %d, was resolved "
                            "(its producer had died)", pos, stuck[1])
                self.stuck = (None, 0.0)

    def _tick(self, now):
        store = self.store
        fake = _fake_now()
        if fake is not None:
            store.set_time(fake)
        if self.policy == "everysec" and now - self.last_fsync >= EVERYSEC_S and \
                self.w is not None and not self.w.broken and not self.error:
            self._fsync()
            self.last_fsync = now
        self._expire()
        self._repair()
        self._sweep_objects(now)
        if self.compaction is not None and not self.compaction.is_alive():
            self._compaction_done()
        if self.compaction is None and not self.error and (
                self.compact_requested or self._compaction_due()):
            self._start_compaction()
        store.writer_publish(heartbeat_ms=int(time.time() * 1000),
                             flushed_seq=(self.w.synced_seq if self.w and self.policy != "no"
                                          else self.w.written_seq if self.w else None),
                             last_fsync_ms=self.last_fsync_ms or None)

    _last_expire = 0.0

    def _expire(self):
        """One expiry cycle: at most expiry.budget_ms, or one pass over the stripes,
        in slices of EXPIRE_SLICE_S with a drain between them. A pass that finds
        expired keys in most stripes of a large index takes tens of milliseconds
        (stripes where none is due are passed over unread), and in one piece it would
        hold up every `fsync: always` writer waiting for the next batch (and the
        ring's draining)."""
        now = time.monotonic()
        if now - self._last_expire < 1.0 / self.cfg.expiry.hz:
            return
        self._last_expire = now
        store = self.store
        deadline = now + self.cfg.expiry.budget_ms / 1000.0
        cursor, stripes = expire_position(store)
        covered = 0
        while True:
            try:
                store.expire_some(budget=min(EXPIRE_SLICE_S, max(0.0, deadline - now)))
            except RingFull:
                return                  # the ring is full: this loop drains it first
            after = expire_position(store)[0]
            covered += (after - cursor) % stripes or stripes    # 0: all the way round
            cursor = after
            now = time.monotonic()
            if covered >= stripes or now >= deadline or self.stopping:
                return
            self._drain()

    _last_repair = None

    def _repair(self):
        """The repair pass (REPAIR): at start, then every repair.interval, every
        stripe in use, in slices of EXPIRE_SLICE_S with a drain between them."""
        now = time.monotonic()
        last = self._last_repair
        if last is not None and now - last < self.cfg.repair.interval:
            return
        self._last_repair = now
        start = 0
        while True:
            repaired, start = self.store.repair_some(start, budget=EXPIRE_SLICE_S)
            if repaired:
                log.warning("repaired %d stripe(s) a dead process left mid-write", repaired)
            if start == 0 or self.stopping:
                return
            self._drain()

    def _sweep_objects(self, now):
        """OBJECTS: the reclaim sweep (bukt/objects/reclaim.py) when an object was
        retired (store.objects_retired() moved) or garbage waits for readers, and every
        objects.sweep_interval for uploads that dead processes left. Not on a read
        replica: it applies its primary's sweeps from the log."""
        if self.replica_of is not None or self.error:
            return
        due = now - self.last_sweep >= self.cfg.objects.sweep_interval
        if not due and not self.reclaimer.due(self.store):
            return
        self.last_sweep = now
        try:
            done = self.reclaimer.sweep(self.store, between=self._drain)
        except RingFull:
            return                      # this loop drains the ring; the next tick again
        except BuktError as e:
            log.warning("object sweep: %s", e)
            return
        if done["objects"]:
            log.debug("object sweep: %d object(s), %d entries reclaimed", done["objects"],
                      done["entries"])

    # -- disk errors ------------------------------------------------------------------
    def _disk_error(self, e):
        if str(e) != self.error:
            log.error("disk error: %s", e)
        self.error = str(e)
        self.store.writer_publish(error=self.error[:255])
        self.disk_retry_at = time.monotonic() + self.disk_backoff
        self.disk_backoff = min(self.disk_backoff * 2, DISK_RETRY_MAX_S)

    def _clear_error(self):
        log.info("disk writes work again; the error is cleared")
        self.error = ""
        self.disk_backoff = DISK_RETRY_MIN_S
        self.store.writer_publish(error="")

    def _rebase(self):
        """After a failed fsync: a new log after the last seq written, then a base file
        from the table, so that nothing depends on the log that failed."""
        if time.monotonic() < self.disk_retry_at or self.compaction is not None:
            if self.compaction is not None and not self.compaction.is_alive():
                self._compaction_done()
            return
        seq = self.w.written_seq
        try:
            self.store.writer_publish(log_size=0)
            new = self.dd.rotate(seq, None)
        except (DiskError, OSError) as e:
            self._disk_error(e if isinstance(e, DiskError) else DiskError(str(e)))
            return
        if self.w is not None:
            self.w.close()
        self.w = new
        self.rebase_needed = False
        self.store.writer_publish(log_size=new.size)
        log.warning("started %s after a failed fsync; a base file from the table follows",
                    new.path)
        # the records the failed log holds were released from the ring; the table, so
        # the snapshot taken from here on, holds their effects
        self.rebase_ack = self.written_pos
        self._start_compaction(rotate=False, seq=seq)

    # -- compaction -------------------------------------------------------------------
    def _compaction_due(self) -> bool:
        now = time.monotonic()
        if now - getattr(self, "_checked", 0.0) < COMPACT_CHECK_S:
            return False
        self._checked = now
        c = self.cfg.compaction
        logs = 0
        for p in self.dd.log_paths:
            try:
                # the log being written by its records, not its prepared zeros
                logs += self.w.size if self.w is not None and p == self.w.path else \
                    os.path.getsize(p)
            except OSError:
                pass
        return logs >= c.min_log_bytes and logs > c.ratio * self.base_size

    def _start_compaction(self, rotate=True, seq=None):
        self.compact_requested = False
        if rotate:
            seq = self.w.written_seq
            try:
                self.store.writer_publish(log_size=0)
                new = self.dd.rotate(seq, self.w)
            except DiskError as e:
                self._disk_error(e)
                self.rebase_needed = self.w.broken is not None
                return
            self.w.close()
            self.w = new
            self.store.writer_publish(log_size=new.size)
            if self.policy != "always":
                self.last_fsync = time.monotonic()
                self._acknowledge(self.written_pos)
        self.cancel.clear()
        self.compaction_result = None
        t = threading.Thread(target=self._compact, args=(seq,), name="bukt-compaction",
                             daemon=True)
        self.compaction = t
        self.compaction_t0 = time.monotonic()
        log.info("compaction: snapshot covering seq %d begins", seq)
        t.start()

    def _compact(self, seq):
        try:
            self.compaction_result = self.dd.install_base(
                snapshot_chunks(self.store, seq, self.cancel), seq)
        except BaseException as e:      # reported by the loop, in _compaction_done
            self.compaction_result = e

    def _compaction_done(self):
        self.compaction.join()
        self.compaction = None
        r = self.compaction_result
        if isinstance(r, Cancelled):
            return
        if isinstance(r, BaseException):
            if isinstance(r, DiskError):
                self._disk_error(r)
            else:
                log.error("compaction failed: %r", r)
            # a rebase's base that failed is tried again (a new log, a new base): the
            # writes it would hold stay unacknowledged until one is in
            self.rebase_needed = self.rebase_needed or bool(self.rebase_ack) or \
                (self.w is not None and self.w.broken is not None)
            return
        self.base_size = r.size
        log.info("compaction: %s holds %d records (%d bytes), written in %.2f s",
                 os.path.basename(r.path), r.records, r.size,
                 time.monotonic() - self.compaction_t0)
        if writer_claimed(self.store) == 1:
            writer_claim(self.store, based=True)    # ADOPTION: the base is in
        if self.rebase_ack:
            # after a failed fsync: the base is durable, so are the writes it holds,
            # and those the new log has fsynced since
            ack = max(self.rebase_ack, self.synced_pos)
            self.rebase_ack = 0
            self._acknowledge(ack)

    # -- stop -------------------------------------------------------------------------
    def _shutdown(self) -> int:
        _sd_notify("STOPPING=1")
        store = self.store
        deadline = time.monotonic() + self.cfg.shutdown_timeout
        code = 0
        while time.monotonic() < deadline:
            moved = self._drain()
            tail, head, _ = store.ring_position()
            if not moved and tail == head:
                break
            if not moved:
                time.sleep(POLL_MAX_S)
        tail, head, _ = store.ring_position()
        if tail != head:
            log.error("stopping with %d bytes of changes still in the ring; the next "
                      "writer logs them", head - tail)
            code = 1
        if self.w is not None and not self.w.broken and not self.error:
            if not self._fsync():
                code = 1
            else:
                try:
                    self.w.finish()     # stopped, the log ends at its last record
                except DiskError as e:
                    log.warning("%s (the log keeps its prepared zeros; harmless)", e)
        elif self.error:
            code = 1
        if self.compaction is not None:
            self.cancel.set()
            self.compaction.join(timeout=max(0.1, deadline - time.monotonic()))
        store.writer_publish(ready=False, flushed_seq=self.w.synced_seq if self.w else None)
        if self.w is not None:
            self.w.close()
        self.dd.close()
        log.info("writer %d stopped (exit %d)", os.getpid(), code)
        return code

    def close(self):
        if self.w is not None:
            self.w.close()
        if self.dd is not None:
            self.dd.close()


def _remove_leftovers(instance) -> None:
    """Removes segments half-recovered by writers that died during a cold start."""
    prefix = f"bukt-{instance}.recovering-"
    for name in os.listdir("/dev/shm"):
        if name.startswith(prefix):
            pid, _, start = name[len(prefix):].partition("-")
            if pid.isdigit() and (int(pid) == os.getpid() or not owners.owner_alive(
                    int(pid), int(start) if start.isdigit() else 0)):
                try:
                    os.unlink(os.path.join("/dev/shm", name))
                    log.info("removed /dev/shm/%s, left by a writer that died recovering", name)
                except FileNotFoundError:
                    pass


def _holds_records(dd) -> bool:
    """Does data directory `dd` hold a base file or any log record? (ADOPTION; an
    unreadable log counts as holding some)"""
    if dd.manifest.base:
        return True
    for path in dd.log_paths:
        try:
            for _ in aof.read_log(path):
                return True
        except (OSError, BuktError):
            return True
    return False


def _scan_tail(path, published):
    """(Scan ready for LogWriter.open, highest seq after `published`) for the last log,
    scanning only from `published` (a record boundary the writer announced) when it is
    one; (None, why) when the log's end is damaged (a cold start then decides)."""
    m = aof._Mapped(path)
    try:
        if m.size < FILE_HEADER_SIZE:
            return None, "shorter than its header"
        header_seq = aof.read_file_header(m.buf, path, LOG_MAGIC)
        starts = [FILE_HEADER_SIZE]
        if FILE_HEADER_SIZE < published <= m.size:
            starts.insert(0, published)
        for start in starts:
            report = Scan(path, header_seq)
            found = 0
            try:
                for r in aof.scan(m.buf, start, m.size, report, path=path):
                    if r.seq > found:
                        found = r.seq
            except LogCorrupt as e:
                if start == FILE_HEADER_SIZE:
                    return None, str(e)
                continue
            # From `published`, a first record that parses proves it a boundary; a
            # problem right there might mean it is not one: scan the whole log then.
            if start != FILE_HEADER_SIZE and report.problems and not report.records:
                continue
            if start == FILE_HEADER_SIZE:
                found = report.last_seq if report.records else 0
            return report, found
    finally:
        m.close()
    return None, "no readable end"


def run_writer(cfg, cold=False) -> int:
    """Runs the writer until SIGTERM; the process's exit code."""
    w = Writer(cfg, cold=cold)
    w.start()
    return w.run()


def main(argv=None) -> int:
    """`bukt writer [--config PATH] [--cold]`, parsing its own arguments."""
    import argparse

    parser = argparse.ArgumentParser(prog="bukt writer",
                                     description="Run the writer process: log, recovery, "
                                                 "compaction, expiry.")
    parser.add_argument("--config", help="bukt.yaml (default: $BUKT_CONFIG, else built-in "
                                         "defaults)")
    parser.add_argument("--cold", action="store_true",
                        help="recover from disk even if the segment survived")
    args = parser.parse_args(argv)
    return run_command(args.config, cold=args.cold)


def run_command(config_path=None, cold=False) -> int:
    """What `bukt writer` runs once its arguments are parsed (bukt/cli/__init__.py calls it
    directly: parsing them twice would cost a warm restart a few milliseconds)."""
    from bukt import config

    try:
        # the test hook is not a configuration key (config.ENV_NOT_KEYS should list it)
        cfg = config.load(config_path, env={k: v for k, v in os.environ.items()
                                            if k not in (FAKE_TIME_ENV, POLL_ENV)})
    except config.ConfigError as e:
        logs.configure("writer")        # no configuration: the default format
        log.error("bukt writer: %s", e)
        return 2
    logs.from_config("writer", cfg)
    # Each error once, as a log line (the log is stderr).
    try:
        return run_writer(cfg, cold=cold)
    except (RecoveryError, WriterError) as e:
        log.error("bukt writer: %s", e)
        return 2
    except SegmentFull as e:            # /dev/shm has no room: said in full, no traceback
        log.error("bukt writer: %s", e)
        return 1
    except (BuktError, OSError) as e:
        log.exception("bukt writer: %s", e)
        return 1
