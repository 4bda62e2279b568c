"""A small shared-memory area for what every HTTP worker must see alike: the rate
limiter's table and the request counters.

It is its own POSIX segment (/bukt-<instance>-http) for now, behind this one class, so
that it can move into the core's segment without touching its users. What it needs
from the core if it moves there: SIZE bytes (about 64 KiB + 8 KiB per worker row with
the defaults), one lock held for a few hundred nanoseconds per rate check, and
single-writer rows of u64 counters that any process may sum without a lock.

LAYOUT (native byte order, 8-byte words):

    header  magic "BKTHTTP1" | format | slots | rows | words | owner pid | 2 spare
    rates   slots x (key u64 | tat f64)        GCRA state per client (see ratelimit.py)
    rows    rows  x (pid u64 | words x u64)    one row per worker process

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

import posix_ipc

MAGIC = int.from_bytes(b"BKTHTTP1", "little")
FORMAT = 1
HEADER_WORDS = 8
PROBES = 8           # slots looked at per client before the stalest is taken over


class SharedArea:
    def __init__(self, buf, fd, slots, rows, words, shm=None):
        self._buf, self._fd, self._shm = buf, fd, shm
        self.slots, self.rows, self.words = slots, rows, words
        self._q = memoryview(buf).cast("Q")
        self._d = memoryview(buf).cast("d")
        self._rates = HEADER_WORDS
        self._rows = HEADER_WORDS + 2 * slots
        self._tlock = threading.Lock()
        self._row = None

    # -- creation
    @staticmethod
    def size_for(slots, rows, words):
        return 8 * (HEADER_WORDS + 2 * slots + rows * (1 + words))

    @classmethod
    def create(cls, name, slots=4096, rows=128, words=1024, mode=0o600):
        """A new area owned by this process. One left by a dead owner is replaced; one
        whose owner lives is refused (FileExistsError): another server runs."""
        try:
            old = posix_ipc.SharedMemory(name)
        except posix_ipc.ExistentialError:
            pass
        else:
            owner = 0
            if old.size >= 8 * HEADER_WORDS:
                with mmap.mmap(old.fd, 8 * HEADER_WORDS) as m:
                    owner = struct.unpack_from("=Q", m, 40)[0]
            old.close_fd()
            if owner and owner != os.getpid() and _alive(owner):
                raise FileExistsError(f"{name} belongs to the live process {owner}")
            old.unlink()
        size = cls.size_for(slots, rows, words)
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=mode, size=size)
        buf = mmap.mmap(shm.fd, size)
        struct.pack_into("=6Q", buf, 0, MAGIC, FORMAT, slots, rows, words, os.getpid())
        return cls(buf, shm.fd, slots, rows, words, shm)

    @classmethod
    def attach(cls, name):
        shm = posix_ipc.SharedMemory(name)
        buf = mmap.mmap(shm.fd, shm.size)
        magic, fmt, slots, rows, words = struct.unpack_from("=5Q", buf, 0)
        if magic != MAGIC or fmt != FORMAT:
            raise ValueError(f"{name} is not a Bukt HTTP area of format {FORMAT}")
        if shm.size < cls.size_for(slots, rows, words):
            raise ValueError(f"{name} is shorter than its header says")
        return cls(buf, shm.fd, slots, rows, words, shm)

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
        if self._shm is not None:
            self._shm.close_fd()

    def unlink(self):
        if self._shm is not None:
            self._shm.unlink()

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
        q, stride = self._q, 1 + self.words
        self._lock()
        try:
            found = None
            for r in range(self.rows):
                owner = q[self._rows + r * stride]
                if owner == pid or owner == 0 or not _alive(owner):
                    found = r
                    if owner in (pid, 0):
                        break
            if found is None:
                raise RuntimeError(f"all {self.rows} counter rows are held by live "
                                   "processes; raise the row count")
            off = self._rows + found * stride
            q[off] = pid
        finally:
            self._unlock()
        self._row, self._row_pid = q[off + 1: off + 1 + self.words], pid
        return self._row

    def totals(self):
        """The sum of every row, word by word."""
        q, stride, words = self._q, 1 + self.words, self.words
        sums = [0] * words
        for r in range(self.rows):
            off = self._rows + r * stride
            if q[off] == 0:
                continue
            row = q[off + 1: off + 1 + words]
            sums = [a + b for a, b in zip(sums, row)]
        return sums


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
