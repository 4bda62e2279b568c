"""Replica acknowledgements for `replication.min_acks` (docs/design.md, Replicas).

A replica reports the last primary sequence it applied (POST
/api/v1/replication/ack?seq=S); the HTTP worker that takes the report stores it in
this small shared area, /dev/shm/bukt-<instance>-acks, which the primary's writer
reads: under `fsync: always` with min_acks N it acknowledges a batch (moves the
flushed position every face waits for) only once the batch is on its disk and N
replicas report a sequence at or past the batch's last record. So every face, and a
local program's own wait, holds a write's acknowledgement the same way; one that waits
longer than the face's durable timeout fails with WriterDown saying which.

    header  64 B: magic u64 | min_acks u64 (the writer's setting, for the message)
    slots   SLOTS x 32 B: replica id u64 (a hash of its address) | seq u64 | ms u64 | -

Slots are claimed by id; a report from a new replica takes a free slot or the
stalest. Words are written and read whole (8-byte aligned): a reader sees an old or
a new value, never a torn one.
"""
import hashlib
import mmap
import os
import time

__all__ = ["AckTable", "acks_path", "SLOTS"]

MAGIC = int.from_bytes(b"BUKTACKS", "little")
SLOTS = 16
HEADER = 64
SLOT = 32
SIZE = HEADER + SLOTS * SLOT


def acks_path(instance):
    return f"/dev/shm/bukt-{instance}-acks"


def _id(address):
    return int.from_bytes(hashlib.sha256(address.encode()).digest()[:8], "little") or 1


class AckTable:
    def __init__(self, instance, create=False):
        path = acks_path(instance)
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if os.fstat(fd).st_size < SIZE:
                os.ftruncate(fd, SIZE)
            self.buf = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)
        self.q = memoryview(self.buf).cast("Q")
        if self.q[0] != MAGIC:
            self.q[0] = MAGIC

    @property
    def min_acks(self):
        return self.q[1]

    def set_min_acks(self, n):
        self.q[1] = n

    def report(self, address, seq, now_ms=None):
        rid, now = _id(address), int(time.time() * 1000) if now_ms is None else now_ms
        q, free, stalest = self.q, None, None
        for i in range(SLOTS):
            w = HEADER // 8 + i * (SLOT // 8)
            if q[w] == rid:
                if seq > q[w + 1]:
                    q[w + 1] = seq
                q[w + 2] = now
                return
            if q[w] == 0 and free is None:
                free = w
            if stalest is None or q[w + 2] < q[stalest + 2]:
                stalest = w
        w = free if free is not None else stalest
        q[w + 1], q[w + 2] = seq, now
        q[w] = rid

    def count_at(self, seq):
        """How many replicas report a sequence at or past `seq`."""
        q, n = self.q, 0
        for i in range(SLOTS):
            w = HEADER // 8 + i * (SLOT // 8)
            if q[w] and q[w + 1] >= seq:
                n += 1
        return n

    def close(self):
        self.q.release()
        self.buf.close()
