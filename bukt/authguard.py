"""Failed authentication: counted, logged (rate-limited) and slowed per source address,
on every face (HTTP tokens in bukt/http/auth.py, TCP AUTH in bukt/tcp/session.py).

THE POLICY (auth.* keys, bukt/config.py). A source (a peer IP address) that fails
`max_failures` times within `failure_window` seconds is locked out for `lockout`
seconds; each further lockout that begins while its previous one is recent (within
`lockout_max` of its end) lasts twice as long, up to `lockout_max`. While locked
out, every authentication from that address is refused at once, without looking at the
token: the valid ones too, because answering a right guess differently from a wrong
one would tell a guesser which guess was right, whatever the lockout. So clients that
share an address with a guesser (behind one NAT, or on the same host over loopback)
share its lockout; clients on other addresses never do. What already authenticated is
not touched: an open TCP session goes on, and HTTP requests are refused only while
their own address is locked out. Refusals are not failures: they do not lengthen the
lockout. A success does not clear the count, or a guesser holding one valid token
could guess others' for free.

NEVER A WAIT. A refusal is an answer (TCP: LIMIT_EXCEEDED; HTTP: 429 with Retry-After),
never a sleep on the event loop: a guesser's delay must not become everyone's.

SHARED BY THE WORKERS OF A FACE. The counts live in a small POSIX shared-memory table,
one per face and instance (/bukt-<instance>-http-auth, /bukt-<instance>-tcp-auth),
created by the face's parent process (the gunicorn arbiter, the TCP supervisor) and
removed when it exits, so that a guesser spreading attempts over the workers gains
nothing. A worker that starts alone gets a private table. A reload starts the new pool
before the old one ends: the new one makes a table of its own under the name (the counts
start again), and the old one, exiting, leaves the name to it.

LAYOUT (native byte order, 8-byte words):
    header  magic "BKTAUTH1" | format | slots | owner pid | horizon f64 |
            failures u64 | refused u64 | spare
    slots   slots x (key u64 | failures u64 | window_start f64 | locked_until f64 |
                     lockout f64 | last_log f64 | unlogged_failures u64 |
                     unlogged_refused u64)
`horizon` is the latest locked_until of any source: while the clock is past it (the
usual case) nobody is locked out and a check reads that one word, without the lock.
Times are CLOCK_MONOTONIC, the same in every process of the host. Everything else is
written under a POSIX record lock on the segment (dropped by the kernel if its holder
dies). A slot is found by the address's hash, PROBES slots from it; a new source takes
a free slot or the one least recently active. Losing a slot to a flood of other sources
costs a guesser's count, never a legitimate client's access.

LOGGING. A line per source at most every `log_interval` seconds, across all the
workers, with the failures and refusals not logged since its previous line. It names
the address and the face, never a token.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import mmap
import os
import struct
import threading
import time

MAGIC = int.from_bytes(b"BKTAUTH1", "little")
FORMAT = 1
HEADER_WORDS = 8
SLOT_WORDS = 8
PROBES = 8
H_OWNER, H_HORIZON, H_FAILURES, H_REFUSED = 3, 4, 5, 6
# slot words
S_KEY, S_FAILURES, S_WINDOW, S_LOCKED, S_LOCKOUT, S_LOG, S_UNLOGGED_F, S_UNLOGGED_R = range(8)

log = logging.getLogger("bukt.auth")


def table_name(instance: str, face: str) -> str:
    return f"/bukt-{instance}-{face}-auth"


class FailureTable:
    """The shared table of the module docstring."""

    def __init__(self, buf, fd, slots, shm=None):
        self._buf, self._fd, self._shm = buf, fd, shm
        self.slots = slots
        self._q = memoryview(buf).cast("Q")
        self._d = memoryview(buf).cast("d")
        self._tlock = threading.Lock()

    @staticmethod
    def size_for(slots):
        return 8 * (HEADER_WORDS + SLOT_WORDS * slots)

    @classmethod
    def create(cls, name, slots=4096, mode=0o600):
        """A new table owned by this process, under `name`. One already there is
        replaced, even when its owner lives: that is the face's previous pool or arbiter
        during a reload, which keeps its own mapping until it exits (and then leaves the
        name alone: unlink())."""
        import posix_ipc
        try:
            posix_ipc.unlink_shared_memory(name)
        except posix_ipc.ExistentialError:
            pass
        size = cls.size_for(slots)
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=mode, size=size)
        buf = mmap.mmap(shm.fd, size)
        struct.pack_into("=4Q", buf, 0, MAGIC, FORMAT, slots, os.getpid())
        return cls(buf, shm.fd, slots, shm)

    @classmethod
    def attach(cls, name):
        import posix_ipc
        shm = posix_ipc.SharedMemory(name)
        buf = mmap.mmap(shm.fd, shm.size)
        magic, fmt, slots = struct.unpack_from("=3Q", buf, 0)
        if magic != MAGIC or fmt != FORMAT or shm.size < cls.size_for(slots):
            buf.close()
            shm.close_fd()
            raise ValueError(f"{name} is not a Bukt failure table of format {FORMAT}")
        return cls(buf, shm.fd, slots, shm)

    @classmethod
    def private(cls, slots=4096):
        """A table for one process: nothing to share or lock."""
        buf = mmap.mmap(-1, cls.size_for(slots))
        struct.pack_into("=4Q", buf, 0, MAGIC, FORMAT, slots, os.getpid())
        return cls(buf, None, slots)

    def close(self):
        for view in (self._q, self._d):
            view.release()
        self._buf.close()
        if self._shm is not None:
            self._shm.close_fd()

    def unlink(self):
        """Removes the name, if it is still this table's (not a successor's)."""
        if self._shm is None:
            return
        import posix_ipc
        try:
            current = posix_ipc.SharedMemory(self._shm.name)
        except posix_ipc.ExistentialError:
            return
        try:
            same = os.fstat(current.fd).st_ino == os.fstat(self._shm.fd).st_ino
        finally:
            current.close_fd()
        if same:
            self._shm.unlink()

    def lock(self):
        self._tlock.acquire()
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)

    def unlock(self):
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
        self._tlock.release()

    @property
    def horizon(self) -> float:
        return self._d[H_HORIZON]

    @property
    def words(self):
        """The table as f64 words, for a reader of the horizon (words[H_HORIZON]) that
        cannot afford a call."""
        return self._d

    def totals(self) -> dict:
        """{"failures": n, "refused": n}: every worker's, since the table was made."""
        return {"failures": self._q[H_FAILURES], "refused": self._q[H_REFUSED]}

    def slot(self, key, now, create):
        """The word offset of `key`'s slot (under the lock), or -1 when it has none and
        `create` is false."""
        q, d = self._q, self._d
        start = key % self.slots
        stalest, stalest_t = -1, math.inf
        for i in range(PROBES):
            j = HEADER_WORDS + SLOT_WORDS * ((start + i) % self.slots)
            k = q[j + S_KEY]
            if k == key:
                return j
            if not create:
                continue
            # How recently the slot mattered: a free one (0) wins at once; a locked-out
            # source is kept until its lockout ends.
            t = 0.0 if k == 0 else max(d[j + S_WINDOW], d[j + S_LOCKED], d[j + S_LOG])
            if t < stalest_t:
                stalest, stalest_t = j, t
        if not create:
            return -1
        q[stalest:stalest + SLOT_WORDS] = _EMPTY_SLOT
        q[stalest + S_KEY] = key
        return stalest


_EMPTY_SLOT = memoryview(bytes(8 * SLOT_WORDS)).cast("Q")


def source_key(address: str) -> int:
    return int.from_bytes(hashlib.blake2b(address.encode(), digest_size=8).digest(),
                          "little") or 1


class AuthGuard:
    """The policy of the module docstring over a FailureTable, for one face."""

    def __init__(self, table: FailureTable, face: str, *, max_failures=10,
                 window=60.0, lockout=10.0, lockout_max=900.0, log_interval=60.0,
                 logger=None):
        self.table, self.face = table, face
        self.max_failures = int(max_failures)     # 0: never locked out (still counted)
        self.window, self.lockout = float(window), float(lockout)
        self.lockout_max = max(float(lockout_max), self.lockout)
        self.log_interval = float(log_interval)
        self.log = logger or log
        self._keys = {}                           # address -> key, for this process

    @classmethod
    def from_settings(cls, table, face, s, logger=None):
        """From any settings object with the auth_* fields (TcpSettings, HttpSettings)."""
        return cls(table, face, max_failures=s.auth_max_failures,
                   window=s.auth_failure_window, lockout=s.auth_lockout,
                   lockout_max=s.auth_lockout_max, log_interval=s.auth_log_interval,
                   logger=logger)

    def _key(self, address):
        key = self._keys.get(address)
        if key is None:
            if len(self._keys) >= 4096:
                self._keys.clear()
            key = self._keys[address] = source_key(address)
        return key

    def check(self, address, now=None) -> float:
        """0.0 when `address` may try to authenticate; else the seconds its lockout
        has left (the attempt is refused, counted and maybe logged)."""
        t = self.table
        now = time.monotonic() if now is None else now
        if now >= t._d[H_HORIZON]:        # nobody is locked out: one read, no lock
            return 0.0
        key = self._key(address)
        t.lock()
        try:
            j = t.slot(key, now, False)
            if j < 0 or t._d[j + S_LOCKED] <= now:
                return 0.0
            left = t._d[j + S_LOCKED] - now
            t._q[H_REFUSED] += 1
            t._q[j + S_UNLOGGED_R] += 1
            line = self._due(j, now, address)
        finally:
            t.unlock()
        if line:
            self.log.warning(line)
        return left

    def failed(self, address, now=None) -> float:
        """Counts a failed authentication from `address`; the seconds of the lockout
        it started (0.0: none)."""
        t = self.table
        now = time.monotonic() if now is None else now
        key = self._key(address)
        q, d = t._q, t._d
        t.lock()
        try:
            j = t.slot(key, now, True)
            q[H_FAILURES] += 1
            q[j + S_UNLOGGED_F] += 1
            if now - d[j + S_WINDOW] >= self.window:
                d[j + S_WINDOW], q[j + S_FAILURES] = now, 0
                if now - d[j + S_LOCKED] >= self.lockout_max:
                    d[j + S_LOCKOUT] = 0.0        # quiet long enough: back to the start
            q[j + S_FAILURES] += 1
            locked = 0.0
            if self.max_failures and q[j + S_FAILURES] >= self.max_failures:
                prev = d[j + S_LOCKOUT]
                locked = min(prev * 2, self.lockout_max) if prev else self.lockout
                d[j + S_LOCKOUT] = locked
                d[j + S_LOCKED] = now + locked
                d[j + S_WINDOW], q[j + S_FAILURES] = now, 0
                if d[H_HORIZON] < now + locked:
                    d[H_HORIZON] = now + locked
            line = self._due(j, now, address)
        finally:
            t.unlock()
        if line:
            self.log.warning(line)
        return locked

    def _due(self, j, now, address):
        """The log line for slot j if one is due (under the lock), else None."""
        q, d = self.table._q, self.table._d
        if d[j + S_LOG] and now - d[j + S_LOG] < self.log_interval:
            return None
        failures, refused = q[j + S_UNLOGGED_F], q[j + S_UNLOGGED_R]
        q[j + S_UNLOGGED_F] = q[j + S_UNLOGGED_R] = 0
        d[j + S_LOG] = now
        left = d[j + S_LOCKED] - now
        state = (f"locked out for {left:.0f} more s" if left > 0 else "not locked out")
        return (f"bukt {self.face}: failed authentication from {address}: {failures} "
                f"failed and {refused} refused since the last line about it "
                f"(at most one per {self.log_interval:g} s); {state}")


def locked_message(address, left) -> str:
    """The refusal every face sends to a locked-out address."""
    return (f"too many failed authentications from {address}; try again in "
            f"{max(1, math.ceil(left))} s")


