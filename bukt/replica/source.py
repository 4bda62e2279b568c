"""The primary's side of replication: its table as a snapshot, its log by sequence.

docs/design.md, "Replicas", says why the log and not the change feed. Both answers are
a stream of FRAMES, so that a replica can tell a finished copy from a cut connection and
learns the primary's position while nothing changes:

    FRAME   kind u8 | length u32 (of the payload) | ms i64 (the primary's wall clock
            when it sent the frame) | last u64 (the last sequence the primary has in
            its log then) | payload

    RECORDS  payload: whole log records (bukt/writer/aof.py's RECORD), in order
    BEAT     no payload: the stream is alive; `last` says where the primary is
    END      payload: JSON {"done": true, "records": n} after a snapshot's last
             record, or {"error": "..."} when the primary stops a stream

A snapshot's records are a base file's (bukt/writer/restore.py, snapshot) covering the
sequence in its first frame's `last`; a replica follows the log from there.
"""
import json
import os
import struct
import time

from bukt import errors
from bukt.writer import aof
from bukt.writer.datadir import read_manifest

__all__ = ["FRAME", "RECORDS", "BEAT", "END", "frame", "Gone", "LogReader",
           "snapshot_seq", "snapshot_frames", "logged_upto"]

FRAME = struct.Struct("<BIqQ")
RECORDS, BEAT, END = 1, 2, 3


def frame(kind, last, payload=b"", ms=None):
    ms = int(time.time() * 1000) if ms is None else ms
    return FRAME.pack(kind, len(payload), ms, last) + payload


class Gone(errors.BuktError):
    """The primary no longer holds the log after this sequence (compacted past it, or
    it never had it: another data directory): the replica needs a new full copy."""

    code = "gone"


def logged_upto(store) -> int:
    """The last sequence the primary's log holds (every ring record below the ring's
    tail was written to the log before the tail moved past it)."""
    tail = store.writer_info()["ring_tail"]
    return max(0, tail - 1)


def snapshot_seq(store) -> int:
    """The sequence a snapshot taken now covers: every change up to it is in the table
    already (the table is written before the ring record), and the log holds every
    record after it. Records state results, so the copy plus the log after this
    sequence ends in the primary's state whatever the dump saw of later changes."""
    return logged_upto(store)


def snapshot_frames(store, seq, chunk):
    """The table as frames of base-file records covering `seq`, then END. The records
    come encoded by the compiled encoder (restore.snapshot_chunks): encoding each in
    Python was about a third of the primary's time in a full copy."""
    from bukt.writer.restore import snapshot_chunks
    yield frame(BEAT, seq)              # (the answer's headers go out at once)
    out, size, n = [], 0, 0
    for data, count in snapshot_chunks(store, seq):         # aof.Encoded pieces
        out.append(data)
        size += len(data)
        n += count
        if size >= chunk:
            yield frame(RECORDS, seq, b"".join(out))
            out, size = [], 0
    if out:
        yield frame(RECORDS, seq, b"".join(out))
    yield frame(END, seq, json.dumps({"done": True, "records": n}).encode())


def _header_seq(path):
    with open(path, "rb") as f:
        head = f.read(aof.FILE_HEADER_SIZE)
    if len(head) < aof.FILE_HEADER_SIZE:
        return None
    return aof.read_file_header(head, path, aof.LOG_MAGIC)


class LogReader:
    """Whole records after sequence `since` from the logs of `data_dir`, following the
    last log as it grows and the logs after it as they are started. Gone when the
    logs no longer reach back to `since`."""

    def __init__(self, data_dir, since, chunk, upto=None):
        self.dir, self.chunk = data_dir, chunk
        self.last = since               # the last sequence read (or the start point)
        self.fd = None
        self.name = None
        self.off = 0
        if upto is not None and since > upto:
            raise Gone(f"sequence {since} is past the primary's log (it ends at {upto}): "
                       "the replica followed another history")
        for _ in range(10):            # (a compaction may remove a log under us)
            try:
                self._open_first(since)
                return
            except FileNotFoundError:
                time.sleep(0.01)
        raise Gone("the primary's logs kept changing while the replica looked for its "
                   "sequence")

    def _manifest(self):
        m = read_manifest(self.dir)
        if m is None or not m.logs:
            raise Gone(f"{self.dir} holds no log")
        return m

    def _open_first(self, since):
        m = self._manifest()
        chosen = None
        for name in m.logs:
            hs = _header_seq(os.path.join(self.dir, name))
            if hs is not None and hs <= since:
                chosen = name
        if chosen is None:
            raise Gone(f"the primary's logs start after sequence {since} (compacted "
                       "past it)")
        self._open(chosen)

    def _open(self, name):
        fd = os.open(os.path.join(self.dir, name), os.O_RDONLY)
        if self.fd is not None:
            os.close(self.fd)
        self.fd, self.name, self.off = fd, name, aof.FILE_HEADER_SIZE

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _read_here(self, end=0):
        """Whole records after self.last from the current log at self.off; with `end`,
        none past that offset (see read)."""
        size = self.chunk
        if end:
            size = min(size, end - self.off)
            if size <= 0:
                return b""
        while True:
            data = os.pread(self.fd, size, self.off)
            if not data:
                return b""
            report = aof.Scan(self.name, self.last)
            start, prev = None, 0
            last = self.last
            try:
                for rec in aof.scan(data, 0, len(data), report, path=self.name):
                    if start is None and rec.seq > last:
                        start = prev
                    prev = report.good_end
                    last = rec.seq if rec.seq > last else last
            except aof.LogCorrupt:
                # a batch being written can look damaged for a moment only at the end;
                # what came before it is sound: send that, and read the rest later
                pass
            if prev or len(data) < size or (end and size >= end - self.off):
                break
            size *= 2                   # one record longer than a chunk: read it whole
            if end:
                size = min(size, end - self.off)
        end = prev
        self.off += end
        if start is None:
            return b""
        self.last = last
        return data[start:end]

    def read(self, end=0):
        """Bytes of whole records after the last read (b"": nothing new yet).

        `end`: the size the writer last published for the log it writes (log_size in
        writer_info; 0: unknown, as around a rotation). The logs are prepared ahead
        with zeros, so a read of a whole chunk past the records read and scanned
        megabytes of zeros each time (tens of milliseconds a wake-up on a loaded
        machine, the most of a replica's lag): with `end` the current log is read only
        to there. An `end` that belongs to the next log costs nothing but a look at
        the manifest: a finished log is read to its end without it."""
        out = self._read_here(end)
        if out:
            return out
        m = self._manifest()
        if m.logs and m.logs[-1] == self.name:
            return b""
        # A later log is listed, so this one is finished (DataDir.rotate finishes it
        # first): read what is left of it, then go on with the next.
        out = self._read_here()
        if out:
            return out
        nxt = None
        if self.name in m.logs:
            i = m.logs.index(self.name)
            nxt = m.logs[i + 1] if i + 1 < len(m.logs) else None
        else:                           # compacted away under us: the last log that
            for name in m.logs:         # starts at or before where we are
                hs = _header_seq(os.path.join(self.dir, name))
                if hs is not None and hs <= self.last:
                    nxt = name
            if nxt is None:
                nxt = m.logs[0]         # (then checked below: it must not start later)
        if nxt is None:
            return b""
        hs = _header_seq(os.path.join(self.dir, nxt))
        if hs is not None and hs > self.last:
            raise Gone(f"the log after {self.name} starts after sequence {hs}, past the "
                       f"replica's {self.last}")
        self._open(nxt)
        return self._read_here()
