"""The TCP face's counters: connections, requests and errors by command, bytes in and
out, for the binary protocol and for RESP, per worker, summed by whoever reads them
(the HTTP face's /metrics: bukt/http/metrics.py).

Workers are separate processes, so the counters live in shared memory: a SharedArea
(bukt/http/shared.py: one row of u64 words a worker, each row written by its worker
alone, summed without a lock, a dead worker's row taken over by its successor with its
counts kept), /dev/shm/bukt-<instance>-tcp-stats, made by the pool before it forks and
removed when it exits. What a request pays: a few increments of words of its worker's
row, made from C on the compiled loops (bukt/tcp/_wire.pyx, bukt/tcp/_resp.pyx) and
from Python for what RESP hands to its session (resp_session.counting).

LAYOUT of a row (words): per face (FACES: "bukt", the binary protocol, then "resp")
ACCEPTED, OPEN (a gauge: the worker's connections now), BYTES_IN, BYTES_OUT, INFLIGHT
(a gauge: responses waiting for durability, under fsync: always); a worker zeroes its
gauges when it takes a row over; then the binary protocol's requests and errors
by opcode (OPCODES words each: an opcode past the table counts as opcode 0, "unknown");
then RESP's by command (resp_session's command table in sorted order, then "other" for
a name it does not know), and by errors the same; then PUBSUB_WORDS: the sends of
keyspace notifications to subscribers and the events they carried (bukt/tcp/resp_pubsub.py;
events over sends says how well a worker coalesces a busy subscriber's messages). An error is a binary response of status 0x10 or more (a miss
or a NOT_STORED is an answer, not an error), or a RESP error reply ("-...").
"""
from __future__ import annotations

import os

from bukt import protocol as P
from bukt.http.shared import SharedArea

FACES = ("bukt", "resp")
ACCEPTED, OPEN, BYTES_IN, BYTES_OUT, INFLIGHT = 0, 1, 2, 3, 4
FACE_WORDS = 5
OPCODES = 64
BIN_REQUESTS = FACE_WORDS * len(FACES)
BIN_ERRORS = BIN_REQUESTS + OPCODES
RESP_REQUESTS = BIN_ERRORS + OPCODES
ERROR_STATUS = int(P.Status.ERROR)       # binary statuses from here on are errors
BIN_NAMES = {int(c): c.name.lower() for c in P.Command}
SLOTS = 16                               # the area's rate-limit table, unused here


def resp_names():
    from bukt.tcp.resp_session import COMMANDS
    return sorted(n.decode().lower() for n in COMMANDS) + ["other"]


def area_name(instance):
    return f"/bukt-{instance}-tcp-stats"


PUBSUB_SENDS, PUBSUB_EVENTS = 0, 1     # from pubsub_base()
PUBSUB_WORDS = 2


def pubsub_base():
    return RESP_REQUESTS + 2 * len(resp_names())


def words():
    return pubsub_base() + PUBSUB_WORDS


def face_base(face):
    return FACE_WORDS * face


class RespIndex:
    """RESP command name (bytes, any case) -> its requests word; errors are n words on."""

    def __init__(self):
        names = resp_names()
        self.n = len(names)
        self.other = RESP_REQUESTS + self.n - 1
        self.index = {}
        for i, name in enumerate(names[:-1]):
            for form in (name.encode(), name.upper().encode()):
                self.index[form] = RESP_REQUESTS + i

    def word(self, name):
        w = self.index.get(name)
        if w is None:
            w = self.index.get(name.upper(), self.other)
        return w


def create(instance, workers):
    """The pool's area: a row a worker, and as many again for workers that replace
    dead ones before their rows are taken over. One already there is replaced, even
    when its owner lives, as the pool's failure table is (bukt/authguard.py): that is
    the previous pool during a reload, or another pool on the same segment (bench/tcp.py
    runs several), which keeps counting into its own mapping; /metrics reads the newest."""
    name = area_name(instance)
    try:
        os.unlink(SharedArea.path_of(name))
    except FileNotFoundError:
        pass
    return SharedArea.create(name, slots=SLOTS, rows=2 * workers + 2, words=words())


def remove(area):
    """Unlink the pool's area if its name is still this area's (not a later pool's)."""
    try:
        if os.stat(area._path).st_ino == os.fstat(area._fd).st_ino:
            area.unlink()
    except (OSError, TypeError):
        pass
    area.close()


def claim(area):
    """This worker's row, its gauges zeroed (a dead predecessor's connections are gone)."""
    row = area.counter_row()
    for face in range(len(FACES)):
        row[face_base(face) + OPEN] = row[face_base(face) + INFLIGHT] = 0
    return row


def totals(area):
    """{"bukt": {...}, "resp": {...}}: per face accepted, open, bytes_in, bytes_out,
    and requests and errors by command name (commands never used left out)."""
    t = area.totals()
    out = {}
    for f, face in enumerate(FACES):
        b = face_base(f)
        out[face] = {"accepted": t[b + ACCEPTED], "open": t[b + OPEN],
                     "inflight": t[b + INFLIGHT],
                     "bytes_in": t[b + BYTES_IN], "bytes_out": t[b + BYTES_OUT],
                     "requests": {}, "errors": {}}
    for op in range(OPCODES):
        name = BIN_NAMES.get(op, "unknown")
        if t[BIN_REQUESTS + op]:
            out["bukt"]["requests"][name] = t[BIN_REQUESTS + op]
        if t[BIN_ERRORS + op]:
            out["bukt"]["errors"][name] = t[BIN_ERRORS + op]
    names = resp_names()
    for i, name in enumerate(names):
        if t[RESP_REQUESTS + i]:
            out["resp"]["requests"][name] = t[RESP_REQUESTS + i]
        if t[RESP_REQUESTS + len(names) + i]:
            out["resp"]["errors"][name] = t[RESP_REQUESTS + len(names) + i]
    p = pubsub_base()
    out["resp"]["pubsub_sends"] = t[p + PUBSUB_SENDS]
    out["resp"]["pubsub_events"] = t[p + PUBSUB_EVENTS]
    return out


def read(instance):
    """totals() of a running pool's area, or None when no pool runs for `instance`."""
    try:
        area = SharedArea.attach(area_name(instance))
    except (OSError, ValueError):
        return None
    try:
        if area.words != words():
            return None                  # another build's layout
        return totals(area)
    finally:
        area.close()


# -- this worker's row, for the Python loops (the binary protocol's compiled loop has
# its own pointer to it: _wire.set_stats) -------------------------------------------------

row = None          # this worker's counters (claim()), or None: nothing is counted
_resp_index = None  # RespIndex, made with the row


def use(counters):
    """Count into `counters` (a row from claim(), or None) from now on, in every loop
    of this process."""
    global row, _resp_index
    row = counters
    _resp_index = RespIndex() if counters is not None else None
    try:
        from bukt.tcp import _epoll, _resp, _wire
    except ImportError:
        return
    _wire.set_stats(counters)
    _resp.set_stats(counters, _resp_index)
    _epoll.set_stats(counters)


def count_bin(command, length, result):
    """A binary request of `length` bytes answered with `result` (bytes or Deferred)."""
    r = row
    op = command if command < OPCODES else 0
    r[BIN_REQUESTS + op] += 1
    r[BYTES_IN] += length
    if result.__class__ is bytes:
        r[BYTES_OUT] += len(result)
        if result[4] >= ERROR_STATUS:
            r[BIN_ERRORS + op] += 1


def count_resp(name, result):
    """A RESP command `name` answered with `result` (its bytes: count_resp_bytes)."""
    r, idx = row, _resp_index
    w = idx.word(name)
    r[w] += 1
    if result.__class__ is bytes and result[:1] == b"-":
        r[w + idx.n] += 1


def count_resp_bytes(consumed, out, first):
    """A RESP batch: `consumed` bytes of requests, its answers out[first:]."""
    r = row
    r[FACE_WORDS + BYTES_IN] += consumed
    r[FACE_WORDS + BYTES_OUT] += sum(len(x) for x in out[first:] if x.__class__ is bytes)


def connected(face):
    r = row
    if r is not None:
        b = face_base(face)
        r[b + ACCEPTED] += 1
        r[b + OPEN] += 1


def sent(face, nbytes):
    """An answer of `face` that waited (for durability, for the change feed), `nbytes`
    long, handed to its connection now: the answers given at once are counted with
    their requests (count_bin, count_resp_bytes, the compiled loops)."""
    r = row
    if r is not None:
        r[face_base(face) + BYTES_OUT] += nbytes


_pubsub_at = None   # pubsub_base(), once


def pubsub_sent(events, nbytes):
    """Keyspace notifications handed to one subscriber's connection in one send:
    `events` events, `nbytes` bytes."""
    global _pubsub_at
    r = row
    if r is not None:
        if _pubsub_at is None:
            _pubsub_at = pubsub_base()
        r[_pubsub_at + PUBSUB_SENDS] += 1
        r[_pubsub_at + PUBSUB_EVENTS] += events
        r[FACE_WORDS + BYTES_OUT] += nbytes


def inflight(face, delta):
    """A response of `face` starts (+1) or stops (-1) waiting for durability."""
    r = row
    if r is not None:
        r[face_base(face) + INFLIGHT] += delta


def disconnected(face):
    r = row
    if r is not None:
        r[face_base(face) + OPEN] -= 1
