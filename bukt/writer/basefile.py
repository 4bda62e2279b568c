"""Base files: the compacted snapshot that recovery loads before replaying the logs.

A base file is the live set written as ordinary records (bukt/writer/aof.py) between a file
header and a footer:

    file header   32 bytes, magic b"BUKTBAS\\0", seq = the sequence number it covers
    records       BUCKET_CREATE, TOKEN_ADD, SET ... (any order the writer likes)
    footer        one BASE_END record, 64 bytes: seq = the header's seq,
                  value = u64 record count, u64 bytes of records (header to footer)

The footer is written last and carries its own checksums, so a base file cut short at
any byte (a torn copy, a disk that lost the end) has no sound footer, and one that lost
records in the middle has the wrong count or length. Either is refused before a single
record is loaded: unlike a log's tail, no part of a base file is expected to be missing
after a crash, because a base file is only ever installed complete: written to
<name>.tmp, fsynced, renamed into place, and the directory fsynced (write_base).

A literal example: a base covering seq 7 that holds one entry, SET bucket "b" key "k" =
"hi", version 1 (hexdump -C); the footer starts at 0x54 and counts 1 record of 0x34 bytes:

    00000000  42 55 4b 54 42 41 53 00  01 00 00 00 00 00 00 00  |BUKTBAS.........|
    00000010  07 00 00 00 00 00 00 00  00 00 00 00 8d 38 3d 4c  |.............8=L|
    00000020  42 6b 01 00 34 00 00 00  07 00 00 00 00 00 00 00  |Bk..4...........|
    00000030  01 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|
    00000040  01 00 01 00 02 00 00 00  d2 dc b8 b3 62 6b 68 69  |............bkhi|
    00000050  73 fc c5 29 42 6b 7f 00  40 00 00 00 07 00 00 00  |s..)Bk..@.......|
    00000060  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|
    00000070  00 00 00 00 00 00 00 00  10 00 00 00 c3 a6 31 ae  |..............1.|
    00000080  01 00 00 00 00 00 00 00  34 00 00 00 00 00 00 00  |........4.......|
    00000090  9b 57 3a a0                                       |.W:.|
"""
import os
import struct
from typing import Iterable, Iterator, NamedTuple, Optional

from bukt.writer import aof
from bukt.writer.aof import (BASE_END, BASE_MAGIC, FILE_HEADER_SIZE, RECORD_OVERHEAD, LogCorrupt,
                  Problem, Record, RecoveryError, Scan)
from bukt.errors import DiskError

__all__ = ["write_base", "read_base", "repair", "BaseInfo", "FOOTER_SIZE"]

_FOOTER_VALUE = struct.Struct("<QQ")
FOOTER_SIZE = RECORD_OVERHEAD + _FOOTER_VALUE.size     # 64
_WRITE_CHUNK = 1 << 20

BASE_HINT = ("Run `bukt check --fix` to rewrite it from its good records (the original is "
             "kept beside it as <file>.bad-<time>; what it lost stays lost), or set "
             "recovery.on_corrupt: load_good to load its good records.")


class BaseInfo(NamedTuple):
    path: str
    seq: int
    records: int
    size: int


def write_base(path, records: Iterable[Record], seq: int) -> BaseInfo:
    """Writes `records` (Records, or aof.Encoded runs of them) as the base file `path`
    covering `seq`: to <path>.tmp, fsync,
    rename, fsync the directory. When this returns the file is durable under its name;
    if it raises (DiskError), no file of that name was created."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    count = 0
    try:
        with open(tmp, "wb") as f:
            buf = bytearray(aof.encode_file_header(BASE_MAGIC, seq))
            body = 0
            for r in records:
                if type(r) is aof.Encoded:      # (snapshot_chunks: a run of SETs)
                    buf += r.data
                    body += len(r.data)
                    count += r.records
                else:
                    if r.type == BASE_END:
                        raise ValueError("a base file's records may not include BASE_END")
                    data = aof.encode(r)
                    buf += data
                    body += len(data)
                    count += 1
                if len(buf) >= _WRITE_CHUNK:
                    f.write(buf)
                    buf.clear()
            buf += aof.encode(Record(BASE_END, seq, value=_FOOTER_VALUE.pack(count, body)))
            f.write(buf)
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.rename(tmp, path)
        aof.fsync_dir(os.path.dirname(path) or ".")
    except OSError as e:
        _remove_quietly(tmp)
        err = DiskError(f"{path}: writing the base file failed: {e.strerror}")
        err.errno = e.errno
        raise err from e
    except BaseException:
        _remove_quietly(tmp)
        raise
    return BaseInfo(path, seq, count, size)


def _remove_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def read_base(path, *, skip_bad=False, report: Optional[Scan] = None,
              bulk=None) -> Iterator[Record]:
    """Yields the records of the base file at `path`. Raises LogCorrupt if the file is
    torn or any record is bad, before yielding anything if the footer shows it; with
    skip_bad, yields every good record instead and lists the bad parts in report.problems.
    report.header_seq is the sequence number the base covers. `bulk`: see aof.scan (a
    bad record in the middle is still raised, after the records around it were applied
    to a table that the failed recovery then throws away)."""
    path = os.fspath(path)
    report = report if report is not None else Scan(path)
    m = aof._Mapped(path)
    try:
        if m.size < FILE_HEADER_SIZE:
            raise LogCorrupt(path, 0, f"the base file is {m.size} bytes, shorter than its "
                             "header: it is torn", BASE_HINT)
        seq = aof.read_file_header(m.buf, path, BASE_MAGIC)
        report.header_seq = report.last_seq = seq
        body_end, count, problem = _footer(m, seq)
        if problem:
            if not skip_bad:
                raise LogCorrupt(path, problem.offset, problem.reason, BASE_HINT)
            report.problems.append(problem)
        for r in aof.scan(m.buf, FILE_HEADER_SIZE, body_end, report, skip_bad=True, path=path,
                          bulk=bulk):
            if r.type == BASE_END:
                continue
            if not skip_bad and report.problems:
                break
            yield r
        if not skip_bad:
            bad = report.problems[0] if report.problems else None
            if bad is None and count != report.records:
                bad = Problem(body_end, body_end, f"the footer counts {count} records, "
                              f"{report.records} were found", aof.BAD_LENGTH)
            if bad:
                raise LogCorrupt(path, bad.offset, bad.reason, BASE_HINT)
        report.last_seq = max(report.last_seq, seq)
    finally:
        m.close()


def _footer(m, seq):
    """(end of the records, record count, None) from a sound footer, or
    (file size, None, Problem) when there is none."""
    at = m.size - FOOTER_SIZE
    if at >= FILE_HEADER_SIZE:
        rec, _ = aof._parse(m.buf, at, m.size)
        if rec is not None and rec.type == BASE_END and len(rec.value) == _FOOTER_VALUE.size:
            count, body = _FOOTER_VALUE.unpack(rec.value)
            if rec.seq == seq and body == at - FILE_HEADER_SIZE:
                return at, count, None
    return m.size, None, Problem(max(at, FILE_HEADER_SIZE), m.size,
                                 "the base file has no sound footer at its end: it is torn "
                                 "(cut short, or its end damaged)", aof.BAD_LENGTH)


def repair(path) -> Optional[aof.Repair]:
    """Rewrites the base file at `path` from its good records, keeping the original as
    <path>.bad-<time>. None when it is sound. A base whose file header is damaged is
    refused: the sequence number it covers is unknown."""
    path = os.fspath(path)
    report = Scan(path)
    try:
        records = list(read_base(path, skip_bad=True, report=report))
    except LogCorrupt as e:          # only the file header raises with skip_bad
        raise RecoveryError(f"{e}; `bukt check --fix` cannot rebuild a base file whose "
                            "header is damaged: restore it from a backup") from None
    if report.clean:
        return None
    side = aof.side_path(path)
    os.link(path, side)              # the original stays whole under the side name
    aof.fsync_dir(os.path.dirname(path) or ".")
    info = write_base(path, records, report.header_seq)
    reasons = "; ".join(f"{p.reason} (bytes {p.offset}-{p.end})" for p in report.problems)
    return aof.Repair(path, info.size, os.path.getsize(side), side, reasons)
