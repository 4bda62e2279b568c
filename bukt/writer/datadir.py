"""The data directory: which base file and logs are current, how they change, and replay.

    data_dir/
      MANIFEST              which files are current, in replay order (JSON, below)
      base-00000007.bkb     the compacted snapshot (bukt/writer/basefile.py), or none yet
      log-00000007.bkl      logs (bukt/writer/aof.py) after it, oldest first; the writer
      log-00000009.bkl      appends to the last one
      log-00000009.bkl.bad-20261122T003000Z   a bad part kept aside by `bukt check --fix`

    MANIFEST: {"format": 1, "generation": 9, "base": "base-00000007.bkb",
               "logs": ["log-00000007.bkl", "log-00000009.bkl"]}

Every change of the set of current files writes a new MANIFEST with the next generation:
MANIFEST.tmp, fsync, rename over MANIFEST, fsync the directory. A file is named after the
generation that first lists it, so names never repeat. Files are created (and made
durable) before a MANIFEST names them, and removed only after a MANIFEST that no longer
names them is durable; a crash between the steps leaves an unlisted file, which the next
DataDir.open removes. Recovery reads only what MANIFEST lists.

COMPACTION, as the writer drives it (writes go on throughout):

 1. rotate(seq, current_log): at a record boundary, with every record up to `seq` in
    the current log, fsync it, start log N+1 whose header says "after seq", and list it.
    New records go to log N+1.
 2. Snapshot the live table as records (BUCKET_CREATE, TOKEN_ADD, SET) and call
    install_base(records, seq): base N+2 is written and listed with the logs that start
    at or after `seq`; the older logs and the old base are removed.

The snapshot in step 2 is taken while writers change the table, so it is not the state
at `seq`: some entries may already show later changes. That is safe because every log
record states a result rather than a delta (see bukt/writer/aof.py): replaying all records after
`seq` over such a snapshot ends in the same state as replaying them over the exact one.
A kill -9 at any point loses nothing: before step 1's MANIFEST, the old files are
current; between the steps, the old base and all logs; after step 2, the new base and
the new log.

RECOVERY (replay): the base's records, then each log's records after the base's seq, in
order. A truncated tail of the last log is dropped and reported. A corrupt record, a
truncated tail of any log but the last (the writer fsyncs a log before it rotates, so
that is not a crash's doing), a torn base file, or a file MANIFEST lists that is missing
stops recovery with a RecoveryError that says what to run, unless on_corrupt is
"load_good". Given `now_ms`, replay turns a log's SET or SET_TTL whose expiry has passed
into an EXPIRE of that key (and leaves such a SET out of the base's records), so applying
the records in order never brings an expired key back. Expired means
0 < expire_ms <= now_ms, as in the table and tests/support/model.py.
"""
import fcntl
import json
import logging
import os
import re
from typing import Iterable, Iterator, NamedTuple, Optional

from bukt.writer import aof
from bukt.writer.aof import (EXPIRE, FILE_HEADER_SIZE, LOG_MAGIC, SET, SET_TTL, LogCorrupt, LogWriter,
                  Record, RecoveryError, Scan)

__all__ = ["Manifest", "DataDir", "Recovery", "replay", "read_manifest", "check", "fix",
           "FileReport", "MANIFEST"]

log = logging.getLogger("bukt.recovery")

MANIFEST = "MANIFEST"
MANIFEST_FORMAT = 1
LOCK = "LOCK"                  # flock()ed by the one process that may change the files
_OURS = re.compile(r"^(base-\d{8}\.bkb|log-\d{8}\.bkl|MANIFEST)(\.tmp)?$")


class Manifest(NamedTuple):
    generation: int
    base: Optional[str]          # file name, or None before the first compaction
    logs: tuple                  # file names, oldest first

    def to_json(self) -> bytes:
        return json.dumps({"format": MANIFEST_FORMAT, "generation": self.generation,
                           "base": self.base, "logs": list(self.logs)}).encode() + b"\n"


def read_manifest(path) -> Optional[Manifest]:
    """The MANIFEST in directory `path`, or None if there is none."""
    mpath = os.path.join(path, MANIFEST)
    try:
        with open(mpath, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    try:
        d = json.loads(raw)
        fmt = d["format"]
        if fmt != MANIFEST_FORMAT:
            raise RecoveryError(f"{mpath}: format {fmt}; this build reads format "
                                f"{MANIFEST_FORMAT}")
        m = Manifest(int(d["generation"]), d["base"], tuple(d["logs"]))
        names = ([m.base] if m.base else []) + list(m.logs)
        if not all(isinstance(n, str) and _OURS.match(n) and not n.endswith(".tmp")
                   for n in names):
            raise ValueError("a listed file name is not a base or log name")
        return m
    except (ValueError, KeyError, TypeError) as e:
        raise RecoveryError(f"{mpath}: not a valid MANIFEST ({e}). It is replaced only by "
                            "rename, so this is damage: restore it from a backup, or write "
                            "it by hand naming the base and logs in order") from None


def _write_manifest(path, m: Manifest) -> None:
    tmp = os.path.join(path, MANIFEST + ".tmp")
    with open(tmp, "wb") as f:
        f.write(m.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(path, MANIFEST))
    aof.fsync_dir(path)


def _next_log_seq(path, logs, i) -> float:
    """The seq the log after logs[i] starts after (inf when unreadable)."""
    try:
        return _log_header_seq(os.path.join(path, logs[i + 1]))
    except (OSError, RecoveryError):
        return float("inf")


def _log_header_seq(path) -> int:
    with open(path, "rb") as f:
        head = f.read(FILE_HEADER_SIZE)
    if len(head) < FILE_HEADER_SIZE:
        return 0
    return aof.read_file_header(head, path, LOG_MAGIC)


class DataDir:
    """The writer's handle on its data directory. Only one process may hold it."""

    def __init__(self, path, manifest: Manifest, lock_fd: int):
        self.path = os.fspath(path)
        self.manifest = manifest
        self._lock_fd = lock_fd
        self.prepare = 0        # the logs' prepared tail, in bytes (aof: THE PREPARED TAIL)
        self.sync_writes = False    # each batch durable as written (aof: THE SYNCED WRITE)

    def appender(self, w: LogWriter) -> LogWriter:
        """`w`, set up as this directory's logs are written (sync_writes)."""
        if self.sync_writes:
            w.sync_writes()
        return w

    @classmethod
    def open(cls, path) -> "DataDir":
        """Opens (creating, mode 0700, if need be) the data directory and locks it: a
        fresh one gets an empty first log and a MANIFEST; files no MANIFEST lists are
        removed. RecoveryError if another process holds it."""
        path = os.fspath(path)
        if not os.path.isdir(path):
            os.makedirs(path, mode=0o700, exist_ok=True)
            aof.fsync_dir(os.path.dirname(os.path.abspath(path)))   # its name is durable
        lock_fd = _lock(path)
        try:
            return cls._open_locked(path, lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise

    @classmethod
    def _open_locked(cls, path, lock_fd) -> "DataDir":
        m = read_manifest(path)
        if m is None:
            _refuse_unlisted(path)
            first = Manifest(1, None, ("log-00000001.bkl",))
            _remove_quietly(os.path.join(path, first.logs[0]))   # an unlisted leftover
            LogWriter.create(os.path.join(path, first.logs[0]), 0).close()
            _write_manifest(path, first)
            m = first
        dd = cls(path, m, lock_fd)
        dd.remove_unlisted()
        return dd

    def close(self) -> None:
        """Releases the lock; the files stay as they are."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def file(self, name) -> str:
        return os.path.join(self.path, name)

    @property
    def base_path(self) -> Optional[str]:
        return self.file(self.manifest.base) if self.manifest.base else None

    @property
    def log_paths(self) -> list:
        return [self.file(n) for n in self.manifest.logs]

    def open_log(self, recovery: "Recovery") -> LogWriter:
        """The last log, to append to after a finished `recovery` of this directory
        (a torn tail it reported is cut off)."""
        tail, last = recovery.tail, self.log_paths[-1]
        if tail is None and recovery.load_good and not os.path.exists(last):
            # recovered without it
            return self.appender(LogWriter.create(last, recovery.last_seq, self.prepare))
        if tail is None or tail.path != last:
            raise ValueError("open_log needs a finished recovery of this data directory")
        return self.appender(LogWriter.open(tail.path, tail, self.prepare))

    def rotate(self, seq: int, current: Optional[LogWriter] = None) -> LogWriter:
        """Starts a new log after `seq` and lists it; `current` (the log written so far,
        holding every record up to seq) is cut at its last record and fsynced first.
        Returns the new log's writer."""
        if current is not None:
            current.finish()
        gen = self.manifest.generation + 1
        name = f"log-{gen:08d}.bkl"
        w = self.appender(LogWriter.create(self.file(name), seq, self.prepare))
        try:
            self._switch(Manifest(gen, self.manifest.base, self.manifest.logs + (name,)))
        except BaseException:
            w.close()
            raise
        return w

    def install_base(self, records: Iterable[Record], seq: int) -> "basefile.BaseInfo":
        """Writes `records` as a new base covering `seq` and makes it current with the
        logs that start at or after seq (one must: rotate(seq) first); the older logs and
        the old base are removed once the new MANIFEST is durable."""
        starts = [(n, _log_header_seq(self.file(n))) for n in self.manifest.logs]
        if not any(s == seq for _, s in starts):
            raise ValueError(f"no current log starts after seq {seq}: call rotate({seq}) "
                             "before snapshotting")
        from bukt.writer import basefile
        gen = self.manifest.generation + 1
        name = f"base-{gen:08d}.bkb"
        info = basefile.write_base(self.file(name), records, seq)
        self._switch(Manifest(gen, name, tuple(n for n, s in starts if s >= seq)))
        return info

    def _switch(self, m: Manifest) -> None:
        _write_manifest(self.path, m)
        self.manifest = m
        self.remove_unlisted()

    def remove_unlisted(self) -> list:
        """Removes base, log and temporary files the MANIFEST does not list (leftovers of
        a crash between two steps of a switch); .bad-* side files stay. Returns names."""
        listed = {MANIFEST, self.manifest.base, *self.manifest.logs}
        gone = [n for n in sorted(os.listdir(self.path)) if _OURS.match(n) and n not in listed]
        for n in gone:
            _remove_quietly(self.file(n))
        if gone:
            aof.fsync_dir(self.path)
            log.info("%s: removed files no MANIFEST lists: %s", self.path, ", ".join(gone))
        return gone


def _remove_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _lock(path) -> int:
    fd = os.open(os.path.join(path, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RecoveryError(f"{path}: another process (a running writer?) holds this data "
                            "directory; stop it first") from None
    return fd


def _refuse_unlisted(path):
    stray = [n for n in sorted(os.listdir(path))
             if _OURS.match(n) and not n.endswith(".tmp") and n != MANIFEST]
    if stray:
        raise RecoveryError(f"{path}: holds Bukt files ({', '.join(stray)}) but no MANIFEST, "
                            "so which are current is unknown. Restore the MANIFEST, or write "
                            f'one by hand: {{"format": 1, "generation": 1, "base": null, '
                            f'"logs": ["log-..."]}} naming the base and logs in order')


# -- recovery --------------------------------------------------------------------------

class Recovery:
    """The records of a data directory in replay order; iterate once.

    After iteration:
      last_seq      the highest sequence number seen: the writer continues after it
      tail          the Scan of the last log (good_end: where appending resumes)
      notes         what was out of the ordinary, in words (also logged as warnings)
      skipped       (path, Problem) for every bad part passed over (load_good only)
      expired       how many SET/SET_TTL records were turned into EXPIRE by now_ms
      records       how many records were yielded
    """

    def __init__(self, path, now_ms: Optional[int] = None, on_corrupt: str = "refuse"):
        if on_corrupt not in ("refuse", "load_good"):
            raise ValueError(f"on_corrupt: {on_corrupt!r}; expected refuse or load_good")
        self.path = os.fspath(path)
        self.now_ms = now_ms
        self.load_good = on_corrupt == "load_good"
        self.last_seq = 0
        self.tail: Optional[Scan] = None
        self.notes: list[str] = []
        self.skipped: list = []
        self.expired = 0
        self.records = 0
        self.bulk = None
        self._iter = self._run()

    def attach_bulk(self, bulk) -> None:
        """Cold recovery's fast path: before iterating, a bukt._core.BulkLoad that applies
        the key records to its store itself (the same rules as _emit: seq after the
        base, expired records turned into EXPIRE or left out of the base); only the
        other records are yielded, each before anything after it is applied."""
        bulk.now_ms = -1 if self.now_ms is None else self.now_ms
        self.bulk = bulk

    def __iter__(self):
        return self

    def __next__(self) -> Record:
        return next(self._iter)

    @property
    def needs_compaction(self) -> bool:
        """True when bad parts were skipped: a compaction takes them out of the MANIFEST."""
        return bool(self.skipped)

    def _note(self, text):
        self.notes.append(text)
        log.warning("%s", text)

    def _missing(self, path, what):
        msg = f"{path}: the {what} MANIFEST lists is missing"
        if not self.load_good:
            raise RecoveryError(f"{msg}. Restore it from a backup, or set "
                                "recovery.on_corrupt: load_good to recover without it "
                                "(what it held is lost)")
        self._note(msg + "; recovering without it (load_good)")

    def _run(self) -> Iterator[Record]:
        m = read_manifest(self.path)
        if m is None:
            _refuse_unlisted(self.path) if os.path.isdir(self.path) else None
            return
        base_seq = 0
        if m.base:
            path = os.path.join(self.path, m.base)
            if not os.path.exists(path):
                self._missing(path, "base file")
            else:
                from bukt.writer import basefile
                report = Scan(path)
                self._bulk_file(0, in_base=True)
                yield from self._emit(basefile.read_base(path, skip_bad=self.load_good,
                                                         report=report, bulk=self.bulk),
                                      0, in_base=True)
                self._bulk_counts()
                self._problems(report, last=False, kind="base file")
                base_seq = report.header_seq
                self.last_seq = max(self.last_seq, report.last_seq)
        for i, name in enumerate(m.logs):
            path = os.path.join(self.path, name)
            last = i == len(m.logs) - 1
            if not os.path.exists(path):
                self._missing(path, "log")
                continue
            if os.path.getsize(path) == 0:
                self._note(f"{path}: the log is empty (not even a header); no records")
            report = Scan(path)
            self._bulk_file(base_seq, in_base=False)
            yield from self._emit(aof.read_log(path, skip_bad=self.load_good, report=report,
                                               bulk=self.bulk), base_seq)
            self._bulk_counts()
            if not last:
                aof.judge_zeros(report, _next_log_seq(self.path, m.logs, i))
            self._problems(report, last=last, kind="log")
            self.last_seq = max(self.last_seq, report.last_seq)
            if last:
                self.tail = report

    def _bulk_file(self, after_seq, in_base):
        if self.bulk is not None:
            self.bulk.after_seq, self.bulk.in_base = after_seq, in_base

    def _bulk_counts(self):
        """What the bulk path applied counts as yielded records."""
        if self.bulk is not None:
            self.records += self.bulk.emitted
            self.expired += self.bulk.expired
            self.bulk.emitted = self.bulk.expired = 0

    def _emit(self, records, after_seq, in_base=False) -> Iterator[Record]:
        now = self.now_ms
        for r in records:
            if r.seq <= after_seq and after_seq:
                continue                 # already in the base
            if now is not None and (r.type == SET or r.type == SET_TTL) and 0 < r.expire_ms <= now:
                self.expired += 1
                if in_base:
                    continue             # nothing before a base to remove
                r = Record(EXPIRE, r.seq, r.bucket, r.key)
            self.records += 1
            yield r

    def _problems(self, report: Scan, last: bool, kind: str):
        for p in report.problems:
            if p.truncated and last:
                self._note(f"{report.path}: dropped a truncated last record at byte "
                           f"{p.offset} ({p.reason}); this is the normal result of a crash "
                           "and no acknowledged fsynced write is in it")
            elif not self.load_good:
                raise LogCorrupt(report.path, p.offset,
                                 p.reason + ("" if not p.truncated else
                                             f"; only the last log may end cut short, this "
                                             f"{kind} was fsynced before the next began"))
            else:
                self.skipped.append((report.path, p))
                self._note(f"{report.path}: skipped bytes {p.offset}-{p.end}: {p.reason} "
                           "(load_good)")


def replay(data_dir, now_ms: Optional[int] = None, on_corrupt: str = "refuse") -> Recovery:
    """The records of `data_dir` (a path, or a DataDir) in replay order: the base file's,
    then the logs' after it. Reads only; see Recovery for what it reports afterwards."""
    return Recovery(data_dir.path if isinstance(data_dir, DataDir) else data_dir,
                    now_ms, on_corrupt)


# -- check and fix (`bukt check [--fix]`) -------------------------------------------------

class FileReport(NamedTuple):
    path: str
    kind: str                  # "base" or "log"
    records: int
    size: int
    problems: list             # Problems found (every one: checking skips past them)
    error: Optional[str]       # a problem that stopped the check of this file (missing...)
    prepared: int = 0          # zeros after the last record (aof: THE PREPARED TAIL)


def check(path, progress=None) -> list:
    """A FileReport for each file the MANIFEST lists; reads only. `progress` (a
    bukt.cli.progress.Progress, or None) is given the bytes to read and advanced by each
    record's."""
    m = read_manifest(path)
    if m is None:
        _refuse_unlisted(path)
        return []
    from bukt.writer import basefile
    out = []
    listed = ([("base", m.base)] if m.base else []) + [("log", n) for n in m.logs]
    if progress is not None:
        progress.total = sum(_size_or_0(os.path.join(path, n)) for _, n in listed)
    for kind, name in listed:
        fpath = os.path.join(path, name)
        report = Scan(fpath)
        reader = basefile.read_base if kind == "base" else aof.read_log
        try:
            size = os.path.getsize(fpath)
            for r in reader(fpath, skip_bad=True, report=report):
                if progress is not None:
                    progress.advance(aof.RECORD_OVERHEAD + len(r.bucket) + len(r.key) +
                                     len(r.value))
            if kind == "log" and name != m.logs[-1]:     # as recovery judges it
                aof.judge_zeros(report, _next_log_seq(path, m.logs, m.logs.index(name)))
            out.append(FileReport(fpath, kind, report.records, size, report.problems, None,
                                  report.prepared))
        except (OSError, RecoveryError) as e:
            out.append(FileReport(fpath, kind, report.records, 0, report.problems,
                                  str(e) if isinstance(e, RecoveryError) else
                                  f"{fpath}: {e.strerror}"))
    return out


def _size_or_0(path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def fix(path) -> list:
    """Repairs every damaged file the MANIFEST lists (see aof.repair, basefile.repair);
    returns the Repairs done. Missing files and damaged headers are not guessed at: they
    raise RecoveryError."""
    lock_fd = _lock(path)
    try:
        return _fix_locked(path)
    finally:
        os.close(lock_fd)


def _fix_locked(path) -> list:
    m = read_manifest(path)
    if m is None:
        _refuse_unlisted(path)
        return []
    done = []
    seq = 0
    if m.base:
        from bukt.writer import basefile
        r = basefile.repair(os.path.join(path, m.base))
        done += [r] if r else []
        report = Scan(os.path.join(path, m.base))
        for _ in basefile.read_base(report.path, report=report):
            pass
        seq = report.header_seq
    for i, name in enumerate(m.logs):
        fpath = os.path.join(path, name)
        if not os.path.exists(fpath):
            raise RecoveryError(f"{fpath}: the log MANIFEST lists is missing; restore it, or "
                                "remove it from MANIFEST by hand (what it held is lost)")
        r = aof.repair(fpath, header_seq=seq,
                       next_seq=_next_log_seq(path, m.logs, i) if i < len(m.logs) - 1
                       else None)
        done += [r] if r else []
        report = Scan(fpath)
        for _ in aof.read_log(fpath, report=report):
            pass
        seq = report.last_seq
    return done
