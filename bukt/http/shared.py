"""A small shared-memory area for what every HTTP worker must see alike: the rate
limiter's table and the request counters.

It is its own POSIX segment (/bukt-<instance>-http) for now, behind this one class, so
that it can move into the core's segment without touching its users. What it needs
from the core if it moves there: SIZE bytes (about 64 KiB + 8 KiB per worker row with
the defaults), one lock held for a few hundred nanoseconds per rate check, and
single-writer rows of u64 counters that any process may sum without a lock.

LAYOUT (native byte order, 8-byte words):

    header  magic "BKTHTTP1" | format | slots | rows | words | owner pid |
            owner start | worker starts
    recent  RECENT x f64                       wall-clock time of the last worker starts
    rates   slots x (key u64 | tat f64)        GCRA state per client (see ratelimit.py)
    rows    rows  x (pid u64 | start u64 | words x u64)   one row per worker process

An owner is a pid with its start time (bukt/owners.py, OWNERSHIP): a killed owner that is
still a zombie, or an unrelated process given its pid later, does not count as alive.
"worker starts" counts the rows claimed by new worker processes since the area was
created, and "recent" keeps when the last RECENT of them started (start n in slot n %
RECENT). The first `workers` starts are the pool's; every later one replaces a worker
that died, so restarts() says how many workers died in the last minute: a pool that
crash-loops (a worker killed by SIGBUS as it starts, say) shows there, and /healthz and
`bukt status` report it past http.max_worker_restarts.

RESERVED AT CREATION: the area's pages are allocated (posix_fallocate) when it is
created, like the core's segment, so a full /dev/shm is an error at start; a merely
sized (sparse) file would instead SIGBUS the first worker to touch a missing page.

WHO WRITES WHAT
- rates: any worker, under the area lock. A slot is (key, theoretical arrival time);
  key 0 marks a free slot. A worker killed inside the lock leaves at most one slot half
  written: one client gets a wrong budget once. That is harmless, so there is no repair.
- rows: each worker claims a row (under the lock) by writing its pid, then is the only
  writer of its counters, which readers sum without the lock (a u64 store is atomic on
  x86-64 and aarch64; a reader sees a counter one increment late at worst). A row
  whose pid is dead is taken over by the next worker to start, counters kept, so the
  totals stay monotonic across worker restarts, as Prometheus counters must.

THE LOCK is a POSIX record lock (fcntl) on the segment's file descriptor. The kernel
drops it when its holder dies, so a SIGKILLed worker never wedges the others; a
threading.Lock inside covers threads of one process, which record locks do not.
"""

import fcntl
import mmap
import os
import struct
import threading
import time

from bukt import owners
from bukt.errors import SegmentFull

MAGIC = int.from_bytes(b"BKTHTTP1", "little")
FORMAT = 2           # 2: owner start time, worker starts, rows carry a start time
HEADER_WORDS = 8
OWNER, OWNER_START, WORKER_STARTS = 5, 6, 7     # header words
RECENT = 16          # worker start times kept (http.max_worker_restarts is below it)
ROW_HEAD = 2         # pid, start
SHM_DIR = "/dev/shm"     # where shm_open puts a POSIX shared-memory object on Linux
PROBES = 8           # slots looked at per client before the stalest is taken over


class SharedArea:
    def __init__(self, buf, fd, slots, rows, words, path=None):
        self._buf, self._fd, self._path = buf, fd, path
        self.slots, self.rows, self.words = slots, rows, words
        self._q = memoryview(buf).cast("Q")
        self._d = memoryview(buf).cast("d")
        self._rates = HEADER_WORDS + RECENT
        self._rows = self._rates + 2 * slots
        self._tlock = threading.Lock()
        self._row = None

    # -- creation
    @staticmethod
    def size_for(slots, rows, words):
        return 8 * (HEADER_WORDS + RECENT + 2 * slots + rows * (ROW_HEAD + words))

    @staticmethod
    def path_of(name, shm_dir=SHM_DIR):
        """The file of POSIX shared-memory object `name` ("/bukt-x-http")."""
        return os.path.join(shm_dir, name.lstrip("/"))

    @classmethod
    def create(cls, name, slots=4096, rows=128, words=1024, mode=0o600, shm_dir=SHM_DIR):
        """A new area owned by this process, its pages reserved (SegmentFull if
        `shm_dir`, /dev/shm, has not room for them). One left by a dead owner is
        replaced; one whose owner lives is refused (FileExistsError): another server
        runs."""
        path = cls.path_of(name, shm_dir)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            pass
        else:
            try:
                owner = start = 0
                if os.fstat(fd).st_size >= 8 * HEADER_WORDS:
                    with mmap.mmap(fd, 8 * HEADER_WORDS) as m:
                        magic, fmt = struct.unpack_from("=2Q", m, 0)
                        owner, start = struct.unpack_from("=2Q", m, 8 * OWNER)
                        if magic != MAGIC or fmt != FORMAT:
                            start = 0           # an older build's area: no start time
            finally:
                os.close(fd)
            if owner and owner != os.getpid() and owners.owner_alive(owner, start):
                raise FileExistsError(f"{name} belongs to the live process {owner}")
            os.unlink(path)
        size = cls.size_for(slots, rows, words)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)             # open() applies the umask
            os.ftruncate(fd, size)
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as e:
                raise SegmentFull(f"cannot reserve {size} bytes in {shm_dir} for the HTTP "
                                  f"area {name}: {os.strerror(e.errno)}; free space there "
                                  "(df -h /dev/shm) or lower ratelimit.slots") from None
            buf = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        pid, start = owners.identity()
        struct.pack_into("=8Q", buf, 0, MAGIC, FORMAT, slots, rows, words, pid, start, 0)
        return cls(buf, fd, slots, rows, words, path)

    @classmethod
    def attach(cls, name, shm_dir=SHM_DIR):
        path = cls.path_of(name, shm_dir)
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size < 8 * HEADER_WORDS:
                raise ValueError(f"{name} is not a Bukt HTTP area of format {FORMAT}")
            buf = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        magic, fmt, slots, rows, words = struct.unpack_from("=5Q", buf, 0)
        if magic != MAGIC or fmt != FORMAT or size < cls.size_for(slots, rows, words):
            buf.close()
            os.close(fd)
            raise ValueError(f"{name} is not a Bukt HTTP area of format {FORMAT}, or is "
                             "shorter than its header says")
        return cls(buf, fd, slots, rows, words, path)

    @classmethod
    def private(cls, slots=4096, rows=4, words=1024):
        """An area for one process (tests, a single worker): nothing to share or lock."""
        buf = mmap.mmap(-1, cls.size_for(slots, rows, words))
        return cls(buf, None, slots, rows, words)

    def close(self):
        self._row = None
        for view in (self._q, self._d):
            view.release()
        self._buf.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def unlink(self):
        if self._path is not None:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass

    def worker_starts(self):
        """How many worker processes have claimed a counter row since creation."""
        return self._q[WORKER_STARTS]

    def restarts(self, workers, window=60.0, now=None):
        """Workers started in the last `window` seconds to replace one that died (the
        first `workers` starts are the pool's own); at most RECENT."""
        now = time.time() if now is None else now
        n = self._q[WORKER_STARTS]
        return sum(1 for i in range(max(workers, n - RECENT), n)
                   if self._d[HEADER_WORDS + i % RECENT] > now - window)

    # -- the lock
    def _lock(self):
        self._tlock.acquire()
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)

    def _unlock(self):
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
        self._tlock.release()

    # -- rate table
    def rate_check(self, key, now, interval, tolerance):
        """GCRA for client `key` (a nonzero u64) at monotonic time `now`: 0.0 if the
        request may go (and it is counted), else the seconds until it may."""
        q, d, base = self._q, self._d, self._rates
        start = key % self.slots
        self._lock()
        try:
            chosen, stalest, stalest_tat = -1, -1, float("inf")
            for i in range(PROBES):
                j = base + 2 * ((start + i) % self.slots)
                k = q[j]
                if k == key:
                    chosen = j
                    break
                tat = d[j + 1]
                if tat < stalest_tat:   # a free slot has tat 0.0: it wins at once
                    stalest, stalest_tat = j, tat
            if chosen < 0:              # a new client: take a free or the stalest slot
                chosen = stalest
                q[chosen], d[chosen + 1] = key, 0.0
            tat = max(d[chosen + 1], now)
            if tat - now > tolerance:
                return tat - now - tolerance
            d[chosen + 1] = tat + interval
            return 0.0
        finally:
            self._unlock()

    # -- counter rows
    def counter_row(self):
        """This process's row of `words` u64 counters (a memoryview it alone writes)."""
        pid = os.getpid()
        if self._row is not None and self._row_pid == pid:
            return self._row
        start = owners.start_time(pid)
        q, stride = self._q, ROW_HEAD + self.words
        self._lock()
        try:
            found = None
            for r in range(self.rows):
                off = self._rows + r * stride
                owner, owner_start = q[off], q[off + 1]
                if (owner, owner_start) == (pid, start) or owner == 0 \
                        or not owners.owner_alive(owner, owner_start):
                    found = r
                    if owner in (pid, 0):
                        break
            if found is None:
                raise RuntimeError(f"all {self.rows} counter rows are held by live "
                                   "processes; raise the row count")
            off = self._rows + found * stride
            if (q[off], q[off + 1]) != (pid, start):
                n = q[WORKER_STARTS]
                self._d[HEADER_WORDS + n % RECENT] = time.time()
                q[WORKER_STARTS] = n + 1
            q[off], q[off + 1] = pid, start
        finally:
            self._unlock()
        self._row, self._row_pid = q[off + ROW_HEAD: off + ROW_HEAD + self.words], pid
        return self._row

    def totals(self):
        """The sum of every row, word by word."""
        q, stride, words = self._q, ROW_HEAD + self.words, self.words
        sums = [0] * words
        for r in range(self.rows):
            off = self._rows + r * stride
            if q[off] == 0:
                continue
            row = q[off + ROW_HEAD: off + ROW_HEAD + words]
            sums = [a + b for a, b in zip(sums, row)]
        return sums

