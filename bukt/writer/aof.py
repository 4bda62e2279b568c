"""The append-only log: Bukt's record format, the appender, the reader and the repair.

The writer process turns the segment's change ring into these records; recovery reads
them back (bukt/writer/datadir.py puts base file and logs in order). Base files (bukt/writer/basefile.py)
hold the same records. All integers are little-endian.

FILE HEADER (32 bytes, once, at offset 0)

    off size field
      0    8 magic       b"BUKTLOG\\0" (a log) or b"BUKTBAS\\0" (a base file)
      8    4 format      u32, FORMAT = 1; another value is refused, never guessed at
     12    4 reserved    0
     16    8 seq         u64: log: the last sequence number before its first record;
                              base: the sequence number the snapshot covers
     24    4 reserved    0
     28    4 hcrc        CRC-32 of bytes 0..28

RECORD (44-byte header, payload, 4-byte checksum)

    off size field
      0    2 magic       b"Bk": lets `load_good` find the next record after a bad one
      2    1 type        SET=1 DELETE=2 EXPIRE=3 SET_TTL=4 FLUSH=5 BUCKET_CREATE=6
                         BUCKET_DROP=7 TOKEN_ADD=8 TOKEN_REVOKE=9 EVICT=10
                         (BASE_END=127: base files only)
      3    1 flags       bit 0: single-read; bits 3-6 (OBJECT_FLAGS): what the value
                         is, with the core's bit values (bukt._core ENTRY_*): 0x08 an
                         object's manifest, 0x10 an object's hidden entry, 0x20
                         zstd-compressed, 0x40 lz4-compressed. A log without them
                         (older writers) reads as plain values.
      4    4 length      u32: the whole record, 44 + bucket + key + value + 4
      8    8 seq         u64: sequence number, increasing through the logs
     16    8 version     u64: the entry's version after this change (0: none)
     24    8 expire_ms   u64: absolute expiry in ms since the epoch (0: none)
     32    1 bucket_len  u8
     33    1 reserved    0 when written, ignored when read
     34    2 key_len     u16
     36    4 value_len   u32
     40    4 hcrc        CRC-32 of bytes 0..40: the lengths are trusted only after this
     44    . bucket      UTF-8 name
      .    . key
      .    . value
    end-4  4 crc         CRC-32 of every byte of the record before it

A literal example: the log of a fresh data directory holding one record,
SET bucket "b" key "k" = "hi", seq 1, version 1, no expiry (hexdump -C):

    00000000  42 55 4b 54 4c 4f 47 00  01 00 00 00 00 00 00 00  |BUKTLOG.........|
    00000010  00 00 00 00 00 00 00 00  00 00 00 00 f1 57 b0 42  |.............W.B|
    00000020  42 6b 01 00 34 00 00 00  01 00 00 00 00 00 00 00  |Bk..4...........|
    00000030  01 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|
    00000040  01 00 01 00 02 00 00 00  ed cb f7 fa 62 6b 68 69  |............bkhi|
    00000050  73 fc c5 29                                       |s..)|

(tests/unit/test_log_format.py rebuilds these bytes, so the example cannot drift from the code.)

Payloads by type. Every record states a result, not a delta, so replaying a record twice,
or over a snapshot taken while writes went on, gives the same state (compaction relies
on this; see bukt/writer/datadir.py):

    SET            bucket, key, value, expire_ms, flags, version: the entry now is this
    DELETE         bucket, key: the entry is gone (delete, getdel, a single-read get)
    EXPIRE         bucket, key: the entry is gone because its expiry passed
    EVICT          bucket, key: the entry is gone, evicted to make room (an lru bucket)
    SET_TTL        bucket, key, expire_ms (0: persist), version: only the expiry changed
    FLUSH          bucket: every entry of the bucket is gone
    BUCKET_CREATE  bucket, value = settings as compact JSON ({"default_ttl": null,
                   "eviction": "lru", "persist": true, "schema": "bytes"}, and
                   "max_memory": bytes when the bucket has a limit; "compression":
                   "zstd" | "lz4", "compression_threshold": bytes and
                   "compression_min_saving": percent when it compresses); replaces
                   the settings if the bucket exists
    BUCKET_DROP    bucket: the bucket, its keys and tokens are gone
    TOKEN_ADD      bucket, key = SHA-256 of the token (32 bytes), value = u32 id, u32 perms
    TOKEN_REVOKE   bucket, value = u32 id

CHECKSUM: CRC-32 (IEEE, zlib.crc32), not CRC32C. It is in the standard library and in the
libz that every CPython links, so the Cython writer can compute the same sum without a
new dependency; it runs at about 2 GB/s here, far above what fsync lets a log take; and
for records of this size its error detection is as good as CRC32C's for what a log
meets: torn writes, truncation and flipped bits. The header has its own sum so that a
damaged length is never mistaken for "the record runs past the end of the file".

HOW A LOG ENDS. The last log usually ends in zeros: the PREPARED TAIL (below), which is
not a problem and is reported apart (Scan.prepared). A crash leaves the last record cut
short; that is normal and is reported, not refused. The reader calls the tail TRUNCATED
when, from the first byte that does not parse, either fewer than 44 bytes remain, or the
header's sum holds and its length runs past the end, or the bad record is the last one and only its payload sum fails (a torn multi-page write),
or no sound record follows the bad one anywhere in the file (damage confined to the end,
as RocksDB's default WAL recovery also reads it). What is dropped is reported with its
offset and size; none of it was covered by a completed fsync unless the disk itself
failed. A bad record with a sound one after it is CORRUPT: the reader stops with LogCorrupt, which names the file,
the byte offset and the command that repairs it (`bukt check --fix`: `repair()` below,
which cuts the file at the last good record and keeps the rest in a side file), unless
the caller asked for `load_good`, which skips to the next record whose sums hold.
LIMITATION of load_good: it resynchronises on the b"Bk" magic and both checksums, so a
value that itself holds a whole valid Bukt record could be taken for one after damage.
That is why it is an operator's choice and not the default.

THE APPENDER writes a batch with one pwrite(2) at the log's end. A short write (ENOSPC,
EFBIG) is undone by truncating the file back to where the batch began, as Redis does, so
the log never ends in a half record while the process lives; if even the truncation
fails, the appender refuses further writes. A failed fsync also makes it refuse further
writes: after an fsync error Linux may have dropped the dirty pages and a retried fsync
would report success for data that is not on disk, so the only honest course is to
restart from what the disk holds.

THE PREPARED TAIL (LogWriter's `prepare`, the writer's `log_prepare`). fdatasync after an
append that grew the file must also commit the new size through the filesystem's journal:
a second write to the disk in every fsync. So the appender keeps the file's next
`prepare` bytes written as zeros (fsynced with the next batch) ahead of the records, and
a batch overwrites blocks the file already has: its fdatasync writes the data pages
alone. bench/fsync.py times it: here (ext4 on a virtual disk, 600-byte batches) 162-164
-> 114-118 us at the median, 0.74x the time per batch with the zeroing included; and
bench/durability.py runs `always` both ways (4 clients 9,648 -> 13,000 acknowledged
sets/s, 16 clients 25,608 -> 36,544, medians of alternated runs). PostgreSQL's
zero-filled WAL segments and RocksDB's recycled logs do the same. The zeros cost nothing
to read: a run of zeros to the end of the file, where a record header should start, is
the prepared tail (Scan.prepared), not damage. A log stops being the last only after
DataDir.rotate has cut its zeros off and fsynced it (finish()), and a clean stop does the
same, so only the log being written ends in zeros; recovery refuses zeros at the end of
any other log unless every record up to where the next log begins is there (the rebase
after a failed fsync starts a new log without cutting the old one). Extending the zeros
can fail (ENOSPC): what was written of them is cut off again and the batch is appended
as before, which then fails or not on its own.

THE SYNCED WRITE (LogWriter.sync_writes; the writer turns it on under `fsync: always`).
Inside the prepared tail a batch needs neither a new size nor new blocks, so it can be
made durable by the write itself: a second descriptor opened O_DIRECT | O_DSYNC writes
the blocks the batch covers (the last partly written block, kept in memory, then the
batch, then zeros to the block's end: what the file holds there already), and fsync()
has nothing left to do unless something went through the page cache since the last one
(the header, the zeros, a cut). One system call and one trip to the disk where a write
and an fdatasync were two; here 112-117 us against 7 + 120-135 (a 4-record batch, the
writer under bench/durability.py), and 16 acknowledging clients 42,512-45,760 ->
48,032-48,704 sets/s. A file system that refuses O_DIRECT (tmpfs) keeps the plain path,
and a batch that cannot get its zeros (ENOSPC), or whose write the device refuses for
its alignment (EINVAL: sectors larger than 4 KiB), turns the synced write off for the
rest of that log and is written plainly. A failed synced write is treated as a failed
fsync: the log refuses writes. Readers (recovery, `bukt check`) read through the page
cache, which Linux keeps coherent with direct writes.
"""
import errno
import json
import mmap
import os
import struct
import time
import zlib
from typing import Iterator, NamedTuple, Optional

from bukt.errors import BuktError, DiskError
from bukt.writer._logscan import scan_records as _scan_records

__all__ = [
    "Encoded",
    "FORMAT", "LOG_MAGIC", "BASE_MAGIC", "FILE_HEADER_SIZE", "RECORD_OVERHEAD",
    "SET", "DELETE", "EXPIRE", "SET_TTL", "FLUSH", "BUCKET_CREATE", "BUCKET_DROP",
    "TOKEN_ADD", "TOKEN_REVOKE", "EVICT", "BASE_END", "TYPE_NAMES", "SINGLE_READ", "OBJECT_FLAGS",
    "Record", "RecoveryError", "LogCorrupt", "Problem", "Scan", "Repair",
    "encode", "encode_file_header", "read_file_header", "scan", "read_log",
    "LogWriter", "repair", "fsync_dir", "side_path",
]

FORMAT = 1
LOG_MAGIC = b"BUKTLOG\0"
BASE_MAGIC = b"BUKTBAS\0"

SET, DELETE, EXPIRE, SET_TTL, FLUSH = 1, 2, 3, 4, 5
BUCKET_CREATE, BUCKET_DROP, TOKEN_ADD, TOKEN_REVOKE, EVICT = 6, 7, 8, 9, 10
BASE_END = 127
TYPE_NAMES = {SET: "SET", DELETE: "DELETE", EXPIRE: "EXPIRE", SET_TTL: "SET_TTL",
              FLUSH: "FLUSH", BUCKET_CREATE: "BUCKET_CREATE", BUCKET_DROP: "BUCKET_DROP",
              TOKEN_ADD: "TOKEN_ADD", TOKEN_REVOKE: "TOKEN_REVOKE", EVICT: "EVICT",
              BASE_END: "BASE_END"}

SINGLE_READ = 0x01
OBJECT_FLAGS = 0x78     # MANIFEST | HIDDEN | ZSTD | LZ4, the core's bits (restore.py
                        # converts: log_flags, core_flags)

_FILE_HEADER = struct.Struct("<8sIIQI")          # magic format reserved seq reserved
FILE_HEADER_SIZE = _FILE_HEADER.size + 4         # + hcrc = 32
_REC_MAGIC = b"Bk"
_REC_HEADER = struct.Struct("<2sBBIQQQBxHI")     # up to hcrc, 40 bytes
_HCRC = struct.Struct("<I")
REC_HEADER_SIZE = _REC_HEADER.size + 4           # 44
RECORD_OVERHEAD = REC_HEADER_SIZE + 4            # 48: header + trailing crc
_TOKEN = struct.Struct("<II")
_U32 = struct.Struct("<I")
_crc = zlib.crc32


class RecoveryError(BuktError):
    """The data directory cannot be loaded as it is; the message says what to do."""

    code = "recovery_error"


class LogCorrupt(RecoveryError):
    """A bad record before the end of a log or base file."""

    code = "log_corrupt"

    def __init__(self, path, offset, reason, hint=None):
        self.path, self.offset, self.reason = os.fspath(path), offset, reason
        super().__init__(
            f"{self.path}: corrupt record at byte {offset}: {reason}. Nothing after it "
            f"was loaded. {hint or REPAIR_HINT}")


REPAIR_HINT = ("Run `bukt check --fix` to cut the file at the last good record (the rest "
               "is kept beside it as <file>.bad-<time>), or set recovery.on_corrupt: "
               "load_good to load every good record and skip the bad ones.")


class Encoded(NamedTuple):
    """Records already encoded (bukt/writer/restore.py: snapshot_chunks): their bytes,
    and how many. write_base takes these among Records as they are."""
    data: bytes
    records: int


class Record(NamedTuple):
    """One change. `bucket` is a str; key and value are bytes."""

    type: int
    seq: int
    bucket: str = ""
    key: bytes = b""
    value: bytes = b""
    expire_ms: int = 0
    flags: int = 0
    version: int = 0

    # -- constructors, one per type, so callers never pack payloads by hand ------------
    @classmethod
    def set(cls, seq, bucket, key, value, expire_ms=0, flags=0, version=0):
        return cls(SET, seq, bucket, key, value, expire_ms, flags, version)

    @classmethod
    def delete(cls, seq, bucket, key):
        return cls(DELETE, seq, bucket, key)

    @classmethod
    def expire(cls, seq, bucket, key):
        return cls(EXPIRE, seq, bucket, key)

    @classmethod
    def evict(cls, seq, bucket, key):
        return cls(EVICT, seq, bucket, key)

    @classmethod
    def set_ttl(cls, seq, bucket, key, expire_ms, version=0):
        return cls(SET_TTL, seq, bucket, key, b"", expire_ms, 0, version)

    @classmethod
    def flush(cls, seq, bucket):
        return cls(FLUSH, seq, bucket)

    @classmethod
    def bucket_create(cls, seq, bucket, settings: dict):
        value = json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()
        return cls(BUCKET_CREATE, seq, bucket, b"", value)

    @classmethod
    def bucket_drop(cls, seq, bucket):
        return cls(BUCKET_DROP, seq, bucket)

    @classmethod
    def token_add(cls, seq, bucket, token_hash: bytes, token_id: int, perms: int):
        return cls(TOKEN_ADD, seq, bucket, token_hash, _TOKEN.pack(token_id, perms))

    @classmethod
    def token_revoke(cls, seq, bucket, token_id: int):
        return cls(TOKEN_REVOKE, seq, bucket, b"", _U32.pack(token_id))

    # -- readers of typed payloads ---------------------------------------------------
    @property
    def settings(self) -> dict:
        return json.loads(self.value)

    @property
    def token_id(self) -> int:
        return _U32.unpack_from(self.value)[0]

    @property
    def perms(self) -> int:
        return _TOKEN.unpack(self.value)[1]

    def expired(self, now_ms: int) -> bool:
        """True when the record sets an expiry that `now_ms` has reached."""
        return 0 < self.expire_ms <= now_ms

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.type, str(self.type))


def encode(r: Record, _pack=_REC_HEADER.pack, _u32=_HCRC.pack, _crc=_crc) -> bytes:
    """The record's bytes, as laid out in the module's docstring."""
    rtype, seq, bucket, key, value, expire_ms, flags, version = r
    bucket = bucket.encode()
    blen, klen, vlen = len(bucket), len(key), len(value)
    if blen > 255 or klen > 65535 or vlen > 0xFFFFFFFF - 512:
        raise ValueError(f"record too large to encode: bucket {blen}, key {klen}, "
                         f"value {vlen} bytes")
    head = _pack(_REC_MAGIC, rtype, flags, RECORD_OVERHEAD + blen + klen + vlen, seq,
                 version, expire_ms, blen, klen, vlen)
    data = b"".join((head, _u32(_crc(head)), bucket, key, value))
    return data + _u32(_crc(data))


def encode_file_header(magic: bytes, seq: int) -> bytes:
    head = _FILE_HEADER.pack(magic, FORMAT, 0, seq, 0)
    return head + _HCRC.pack(_crc(head))


def read_file_header(buf, path, magic: bytes) -> int:
    """The header's seq; RecoveryError if `buf` does not start with a sound header of
    this kind and format. A short `buf` is the caller's business (see scan)."""
    kind = "log" if magic == LOG_MAGIC else "base file"
    got_magic, fmt, _, seq, _ = _FILE_HEADER.unpack_from(buf, 0)
    if got_magic != magic:
        other = {LOG_MAGIC: "a log", BASE_MAGIC: "a base file"}.get(got_magic)
        raise RecoveryError(f"{path}: not a Bukt {kind}"
                            + (f" (it is {other})" if other else
                               f": magic {got_magic!r} at byte 0, expected {magic!r}"))
    if _HCRC.unpack_from(buf, _FILE_HEADER.size)[0] != _crc(buf[:_FILE_HEADER.size]):
        raise LogCorrupt(path, 0, "the file header's checksum does not match")
    if fmt != FORMAT:
        raise RecoveryError(f"{path}: a {kind} of format {fmt}; this build reads format "
                            f"{FORMAT}. Run the Bukt version that wrote it, or `bukt dump` "
                            "with it and `bukt load` with this one.")
    return seq


# -- reading ---------------------------------------------------------------------------

# Kinds of Problem. The first four are how a crash leaves a log's end ("truncated");
# the rest are corruption.
SHORT, ZEROS, PAST_END, TORN, BAD_END = "short", "zeros", "past_end", "torn", "bad_end"
BAD_HEADER, BAD_LENGTH, BAD_PAYLOAD, BAD_TYPE = "bad_header", "bad_length", "bad_payload", "bad_type"
_TRUNCATED = frozenset({SHORT, ZEROS, PAST_END, TORN, BAD_END})


class Problem(NamedTuple):
    """A stretch of a file that did not parse."""

    offset: int          # where the first bad byte is
    end: int             # where good records resume (the file's size if they do not)
    reason: str          # for people
    kind: str            # SHORT, ZEROS, ... above

    @property
    def truncated(self) -> bool:
        """True for the normal tail of a crash, False for corruption."""
        return self.kind in _TRUNCATED


def _parse(buf, off, size):
    """(record, end) for the record at `off`, or (None, Problem)."""
    left = size - off
    if left < REC_HEADER_SIZE:
        if not any(buf[off:size]):
            return None, Problem(off, size, f"the last {left} bytes are zeros (a file "
                                            "extended but never written)", ZEROS)
        return None, Problem(off, size, f"the last {left} bytes are a cut-short record "
                                        "header", SHORT)
    magic, rtype, flags, length, seq, version, expire_ms, blen, klen, vlen = \
        _REC_HEADER.unpack_from(buf, off)
    hcrc = _crc(buf[off:off + _REC_HEADER.size])
    if magic != _REC_MAGIC or _HCRC.unpack_from(buf, off + _REC_HEADER.size)[0] != hcrc:
        if not any(buf[off:size]):
            return None, Problem(off, size, f"the last {left} bytes are zeros (a file "
                                            "extended but never written)", ZEROS)
        return None, Problem(off, size, "the record header's checksum does not match", BAD_HEADER)
    if length != RECORD_OVERHEAD + blen + klen + vlen:
        return None, Problem(off, size, f"the record's length {length} disagrees with its "
                                        "parts", BAD_LENGTH)
    end = off + length
    if end > size:
        return None, Problem(off, size, f"the last record needs {length} bytes, "
                                        f"{left} are there", PAST_END)
    if _HCRC.unpack_from(buf, end - 4)[0] != _crc(memoryview(buf)[off + REC_HEADER_SIZE - 4:end - 4], hcrc):
        if end == size:
            return None, Problem(off, size, "the last record's payload checksum does not "
                                            "match (a torn write)", TORN)
        return None, Problem(off, size, "the record's payload checksum does not match", BAD_PAYLOAD)
    if rtype not in TYPE_NAMES:
        return None, Problem(off, size, f"unknown record type {rtype}", BAD_TYPE)
    p = off + REC_HEADER_SIZE
    bucket = str(buf[p:p + blen], "utf-8")
    p += blen
    key = buf[p:p + klen]
    value = buf[p + klen:p + klen + vlen]
    return Record(rtype, seq, bucket, key, value, expire_ms, flags, version), end


def _resync(buf, off, size):
    """The offset of the next record after `off` whose checksums hold, or of a sound
    header that runs past the end (a truncated tail); `size` if there is none."""
    at = off
    while True:
        at = buf.find(_REC_MAGIC, at + 1, size)
        if at < 0:
            return size
        rec, end_or_problem = _parse(buf, at, size)
        if rec is not None or end_or_problem.kind in (PAST_END, TORN):
            return at


class Scan:
    """What a pass over a file found besides its records; filled in while iterating.

    good_end:  the offset just after the last good record (where an appender may go on)
    prepared:  how many zero bytes follow good_end to the end of the file (THE PREPARED
               TAIL: the appender's, not a problem; 0 when the file ends otherwise)
    problems:  the Problems met, in order (at most one unless skipping)
    records:   how many records were yielded
    last_seq:  the highest sequence number yielded (or the header's)
    """

    def __init__(self, path, header_seq=0):
        self.path = os.fspath(path)
        self.good_end = 0
        self.prepared = 0
        self.problems: list[Problem] = []
        self.records = 0
        self.header_seq = header_seq
        self.last_seq = header_seq

    @property
    def truncated(self) -> Optional[Problem]:
        return next((p for p in self.problems if p.truncated), None)

    @property
    def clean(self) -> bool:
        return not self.problems


def scan(buf, start, size, report: Scan, *, skip_bad=False, path="?",
         bulk=None) -> Iterator[Record]:
    """Yields the records in buf[start:size] in order, filling `report`.

    A truncated tail is recorded in report.problems and ends the scan. A corrupt record
    raises LogCorrupt, or with skip_bad is recorded and skipped to the next good record.

    `bulk` (a bukt._core.BulkLoad, cold recovery only): the sound key records are
    applied to its store without being yielded; the others are yielded one at a time,
    so a consumer that applies each record as it comes keeps the file's order.
    """
    off = start
    report.good_end = start
    while off < size:
        if bulk is not None:
            # Fastest path (cext/bulkload.pxi): key records straight into the table.
            n, end, last_seq = bulk.load(buf, off, size)
            if n:
                report.records += n
                report.last_seq = max(report.last_seq, last_seq)
                report.good_end = off = end
                continue
        # Fast path (compiled: bukt/writer/_logscan.pyx): whole records whose checksum, over
        # everything before it, header included, holds. Anything else goes to _parse,
        # which tells a truncated tail from corruption.
        recs, ends = _scan_records(buf, off, size, Record, TYPE_NAMES,
                                   4096 if bulk is None else 1)
        if recs:
            report.records += len(recs)
            report.last_seq = max(report.last_seq, max(r.seq for r in recs))
            for rec, off in zip(recs, ends):
                report.good_end = off
                yield rec
            continue
        off = yield from _slow(buf, off, size, report, skip_bad, path)


def _slow(buf, off, size, report, skip_bad, path):
    """One step of scan() off the fast path; returns where to go on (size to stop)."""
    rec, end = _parse(buf, off, size)
    if rec is not None:                 # not reached while the fast path is as strict
        report.records += 1
        report.last_seq = max(report.last_seq, rec.seq)
        report.good_end = end
        yield rec
        return end
    problem = end
    if problem.kind == ZEROS:
        report.prepared = size - off    # the appender's zeros: the end, not damage
        return size
    resume = size if problem.truncated else _resync(buf, off, size)
    if resume == size and not problem.truncated:
        problem = problem._replace(kind=BAD_END, reason=(
            f"{problem.reason}, and no sound record follows in the last {size - off} bytes: "
            "a torn end"))
    if problem.truncated:
        report.problems.append(problem)
        return size
    if not skip_bad:
        report.problems.append(problem)
        raise LogCorrupt(path, off, problem.reason)
    report.problems.append(problem._replace(end=resume))
    return resume


class _Mapped:
    """A read-only view of a whole file (an mmap, or b"" for an empty file)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        with open(self.path, "rb") as f:
            self.size = os.fstat(f.fileno()).st_size
            self.buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if self.size else b""

    def close(self):
        if isinstance(self.buf, mmap.mmap):
            self.buf.close()


def read_log(path, *, skip_bad=False, report: Optional[Scan] = None,
             bulk=None) -> Iterator[Record]:
    """Yields the records of the log at `path`; pass a Scan as `report` to learn where
    it ended and why. A file shorter than its header (empty, or cut in the header) has no
    records and reports a truncated tail; a wrong magic or format raises RecoveryError.
    `bulk`: see scan()."""
    report = report if report is not None else Scan(path)
    m = _Mapped(path)
    try:
        if m.size < FILE_HEADER_SIZE:
            if m.size:
                report.problems.append(Problem(0, m.size, f"the file is {m.size} bytes, "
                                               "shorter than its header", SHORT))
            return
        report.header_seq = report.last_seq = read_file_header(m.buf, m.path, LOG_MAGIC)
        yield from scan(m.buf, FILE_HEADER_SIZE, m.size, report, skip_bad=skip_bad, path=m.path,
                        bulk=bulk)
    finally:
        m.close()


# -- writing ---------------------------------------------------------------------------

def fsync_dir(path) -> None:
    """Makes a rename, creation or removal inside directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_ZEROS = bytes(1 << 20)                 # one write's worth of the prepared tail
_DIRECT_BLOCK = 4096                    # O_DIRECT's alignment: offsets, sizes, memory


class _Misaligned(Exception):
    """An O_DIRECT write refused before any byte went (EINVAL)."""


class _DirectTail:
    """The log's second descriptor, O_DIRECT | O_DSYNC, and an aligned buffer that
    holds the last partly written block (THE SYNCED WRITE). A batch goes out as whole
    blocks: the partial block's bytes, the batch, and zeros to the block's end, which
    are what the prepared tail holds there anyway."""

    def __init__(self, path, size):
        self.fd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_DSYNC | os.O_CLOEXEC)
        try:
            start = size - size % _DIRECT_BLOCK
            with open(path, "rb") as f:     # the partial block's bytes, to write again
                f.seek(start)
                self.partial = f.read(size - start)
            if len(self.partial) != size - start:
                raise OSError(errno.EIO, "the log is shorter than its records")
            self.buf = mmap.mmap(-1, 16 * _DIRECT_BLOCK)    # page-aligned
        except BaseException:
            os.close(self.fd)
            raise

    def fits(self, start, n, file_end) -> bool:
        """True when the blocks a batch of `n` bytes at `start` covers are all inside
        the file (the prepared zeros), so that writing them whole changes no size."""
        end = start + n
        return end + (-end) % _DIRECT_BLOCK <= file_end

    def write(self, start, view) -> None:
        block = start - start % _DIRECT_BLOCK
        head = len(self.partial)
        used = head + len(view)
        total = used + (-used) % _DIRECT_BLOCK
        if total > len(self.buf):
            self.buf.close()
            self.buf = mmap.mmap(-1, total)
        buf = self.buf
        buf[:head] = self.partial
        buf[head:used] = view
        buf[used:total] = _ZEROS[:total - used]     # less than a block
        done = 0
        with memoryview(buf) as out:    # released even on an error: close() needs that
            while done < total:
                try:
                    n = os.pwrite(self.fd, out[done:total], block + done)
                except OSError as e:
                    if e.errno == errno.EINVAL and not done:
                        raise _Misaligned() from e
                    raise
                if n <= 0 or n % _DIRECT_BLOCK:
                    raise OSError(errno.EIO, f"O_DIRECT write wrote {n} bytes")
                done += n
        last = used - used % _DIRECT_BLOCK
        self.partial = buf[last:used]

    def close(self) -> None:
        os.close(self.fd)
        try:
            self.buf.close()
        except BufferError:
            pass        # a failed write's traceback still holds a view: freed with it


class LogWriter:
    """Appends records to one log file. Single-threaded: the writer process owns it.

    size:       where the records end (and the next batch goes)
    file_end:   the file's size: size plus the prepared tail's zeros
    prepare:    how far ahead of `size` the zeros are kept (0: plain appends); see
                THE PREPARED TAIL in the module's docstring
    written_seq / synced_seq: the highest sequence number written / known on disk.
    """

    def __init__(self, path, fd, size, seq, prepare=0, file_end=None):
        self.path, self._fd, self.size = os.fspath(path), fd, size
        self.file_end = size if file_end is None else file_end
        self.prepare = prepare
        self.written_seq = self.synced_seq = seq
        self._broken: Optional[str] = None
        self._direct: Optional["_DirectTail"] = None    # THE SYNCED WRITE, when on
        # written through the page cache since the last fdatasync; true at first, as
        # what an earlier writer left in the file may not be on disk yet
        self._dirty = True

    def sync_writes(self) -> bool:
        """From now on, writes a batch that fits in the prepared tail durably, with
        one O_DIRECT | O_DSYNC write of its blocks, so that fsync() has nothing left
        to do for it (THE SYNCED WRITE). False, and nothing changes, where the file
        system refuses O_DIRECT (tmpfs) or there is no prepared tail."""
        if self._direct is not None:
            return True
        if self.prepare < _DIRECT_BLOCK or self._broken:
            return False
        try:
            self._direct = _DirectTail(self.path, self.size)
        except OSError:
            return False
        return True

    @classmethod
    def create(cls, path, seq: int, prepare: int = 0) -> "LogWriter":
        """A new log (it must not exist) whose records follow `seq`; the header and the
        file's name are on disk when this returns."""
        path = os.fspath(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        w = cls(path, fd, 0, seq, prepare)
        try:
            w._write_all(encode_file_header(LOG_MAGIC, seq))
            w.fsync()
            fsync_dir(os.path.dirname(path) or ".")
        except BaseException:
            w.close()
            raise
        return w

    @classmethod
    def open(cls, path, report: Scan, prepare: int = 0) -> "LogWriter":
        """The existing log at `path`, to append after what `report` (a finished scan of
        it, e.g. from recovery) found good. A torn tail is cut off first (a prepared one
        is kept); a file cut inside its header is rewritten as an empty log following
        report.last_seq."""
        path = os.fspath(path)
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if report.good_end < FILE_HEADER_SIZE:
                os.ftruncate(fd, 0)
                w = cls(path, fd, 0, report.last_seq, prepare)
                w._write_all(encode_file_header(LOG_MAGIC, report.last_seq))
            elif not report.problems and report.good_end + report.prepared == size:
                w = cls(path, fd, report.good_end, report.last_seq, prepare, size)
            else:
                if size != report.good_end:
                    os.ftruncate(fd, report.good_end)
                w = cls(path, fd, report.good_end, report.last_seq, prepare)
            if size != w.file_end:
                w.fsync()
            return w
        except BaseException:
            os.close(fd)
            raise

    def append(self, records) -> int:
        """Writes `records` (a Record, or Records in sequence order) with one write;
        returns the log's new size."""
        if isinstance(records, Record):
            records = (records,)
        elif not isinstance(records, (list, tuple)):
            records = list(records)
        if not records:
            return self.size
        return self.append_encoded(b"".join(map(encode, records)), records[-1].seq)

    def append_encoded(self, data: bytes, last_seq: int) -> int:
        """Writes records already encoded (whole records only) whose highest sequence
        number is `last_seq`; returns the log's new size. Raises DiskError, with nothing
        of `data` left in the file."""
        self._write_all(data)
        self.written_seq = max(self.written_seq, last_seq)
        return self.size

    def _write_all(self, data) -> None:
        if self._broken:
            raise DiskError(self._broken)
        start, view, done = self.size, memoryview(data), 0
        # a synced write covers whole blocks, so its zeros must reach the last one's end
        need = start + len(view) + (_DIRECT_BLOCK if self._direct is not None else 0)
        if self.prepare and need > self.file_end:
            self._extend(start + len(view) + self.prepare)  # >= need: see sync_writes
        if self._direct is not None:
            if self._direct.fits(start, len(view), self.file_end) and \
                    self._write_direct(view):
                return
            # the zeros could not be extended (ENOSPC), or the device wants a larger
            # alignment: append through the page cache, which the partial block kept
            # for synced writes would no longer match
            self._direct.close()
            self._direct = None
        self._dirty = True
        try:
            while done < len(view):
                n = os.pwrite(self._fd, view[done:], start + done)
                if n <= 0:
                    raise OSError(errno.EIO, "write wrote nothing")
                done += n
        except OSError as e:
            where = f"{self.path}: write of {len(view)} bytes at byte {start} failed: {e.strerror}"
            if done or self.file_end > start:
                # cut back to the batch's start: its half, and the prepared zeros
                # after it (they are extended again by the next batch)
                try:
                    os.ftruncate(self._fd, start)
                    self.file_end = start
                except OSError as e2:
                    self._broken = (f"{where}, and cutting the partial record off failed too "
                                    f"({e2.strerror}); the log refuses writes until the "
                                    "writer restarts and recovers")
                    raise DiskError(self._broken) from e
            err = DiskError(f"{where}; nothing of it was kept")
            err.errno = e.errno
            raise err from e
        self.size += done
        self.file_end = max(self.file_end, self.size)

    def _write_direct(self, view) -> bool:
        """The batch `view` at self.size through the O_DIRECT | O_DSYNC descriptor: on
        disk when this returns True. False when the write was refused before any byte
        went (EINVAL: the device wants a larger alignment than _DIRECT_BLOCK); the
        caller then writes it plainly. Any other failure leaves the blocks in an
        unknown state, as a failed fsync does, so the log refuses writes from then on."""
        try:
            self._direct.write(self.size, view)
        except _Misaligned:
            return False
        except OSError as e:
            self._broken = (f"{self.path}: synced write of {len(view)} bytes at byte "
                            f"{self.size} failed: {e.strerror}; what the log holds on disk "
                            "is unknown, so it refuses writes until the writer restarts "
                            "and recovers")
            err = DiskError(self._broken)
            err.errno = e.errno
            raise err from e
        self.size += len(view)
        return True

    def _extend(self, end) -> None:
        """Zeros from file_end up to `end` (THE PREPARED TAIL). On failure the zeros
        written are cut off again and the caller appends as if there were none."""
        self._dirty = True
        old, at = self.file_end, self.file_end
        try:
            while at < end:
                n = os.pwrite(self._fd, memoryview(_ZEROS)[:min(len(_ZEROS), end - at)], at)
                if n <= 0:
                    raise OSError(errno.EIO, "write wrote nothing")
                at += n
            self.file_end = end
        except OSError:
            try:
                os.ftruncate(self._fd, old)
            except OSError:
                self.file_end = at      # zeros past the records: finish() cuts them

    def finish(self) -> None:
        """Cuts the prepared tail off and fsyncs: done before the log stops being the
        last one (a rotation) and at a graceful stop, so that only the log being
        written ever ends in zeros."""
        if self._broken:
            raise DiskError(self._broken)
        if self.file_end > self.size:
            self._dirty = True
            try:
                os.ftruncate(self._fd, self.size)
            except OSError as e:
                err = DiskError(f"{self.path}: cutting the prepared tail off at byte "
                                f"{self.size} failed: {e.strerror}")
                err.errno = e.errno
                raise err from e
            self.file_end = self.size
        self.fsync()

    def fsync(self) -> None:
        """Puts everything written so far on disk (fdatasync)."""
        if self._broken:
            raise DiskError(self._broken)
        seq = self.written_seq
        if self._direct is not None and not self._dirty:
            self.synced_seq = seq           # every batch since the last one is synced
            return
        try:
            os.fdatasync(self._fd)
            self._dirty = False
        except OSError as e:
            self._broken = (f"{self.path}: fsync failed: {e.strerror}; what the log holds on "
                            "disk is unknown, so it refuses writes until the writer restarts "
                            "and recovers")
            err = DiskError(self._broken)
            err.errno = e.errno
            raise err from e
        self.synced_seq = seq

    @property
    def broken(self) -> Optional[str]:
        """Why the log refuses writes, or None."""
        return self._broken

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
            self._direct = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- repair ----------------------------------------------------------------------------

def side_path(path, now=None) -> str:
    """A free name beside `path` for a bad part kept aside: <path>.bad-<UTC time>."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    candidate, n = f"{os.fspath(path)}.bad-{stamp}", 1
    while os.path.exists(candidate):
        n += 1
        candidate = f"{os.fspath(path)}.bad-{stamp}.{n}"
    return candidate


class Repair(NamedTuple):
    path: str
    cut_at: int            # the new size of the file
    removed: int           # bytes moved aside
    side_file: Optional[str]
    reason: str


def judge_zeros(report: Scan, next_seq) -> None:
    """For a log before the last, scanned into `report` (`next_seq`: the seq the next
    log starts after): the zeros it ends in are harmless when its records reach
    next_seq (the tail a rebase after a failed fsync leaves), and dropped from the
    report; otherwise records may lie under them, and they become a ZEROS problem.
    Only the log being written may end in its prepared tail (THE PREPARED TAIL), so
    recovery, `bukt check` and `bukt check --fix` all judge the others with this."""
    if not report.prepared:
        return
    if report.last_seq < next_seq:
        at = report.good_end
        report.problems.append(Problem(
            at, at + report.prepared, f"the last {report.prepared} bytes are zeros, which "
            "only the last log may end in", ZEROS))
    report.prepared = 0


def repair(path, header_seq: int = 0, next_seq=None) -> Optional[Repair]:
    """Cuts the log at `path` at its last good record, keeping the rest in a side file
    (<path>.bad-<time>, on disk before the cut). None when the log is sound. A log cut
    inside its header gets a fresh header following `header_seq`. A file that is not a
    Bukt log, or whose header is damaged, is refused (RecoveryError): cutting it would
    leave nothing, and the records in it may still be worth a person's look.
    next_seq: for a log before the last, the seq the next log starts after; zeros it
    ends in are then judged as judge_zeros does."""
    path = os.fspath(path)
    report = Scan(path)
    try:
        for _ in read_log(path, report=report):
            pass
    except LogCorrupt as e:
        if not report.problems:     # the file header itself
            raise RecoveryError(f"{e}; `bukt check --fix` does not cut a file at byte 0: "
                                "move it away, or restore it from a backup") from None
    if next_seq is not None:
        judge_zeros(report, next_seq)
    if report.clean:
        return None
    problem = report.problems[0]
    cut = report.good_end
    with open(path, "rb") as f:
        f.seek(cut)
        tail = f.read()
    side = side_path(path)
    with open(side, "xb") as f:
        f.write(tail)
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, cut)
        if cut == 0:
            os.write(fd, encode_file_header(LOG_MAGIC, header_seq))
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(os.path.dirname(path) or ".")
    return Repair(path, cut, len(tail), side, problem.reason)
