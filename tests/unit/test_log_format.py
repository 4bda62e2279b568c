"""The append-only log file (bukt/writer/aof.py): its format, the torn tail a crash
leaves, the prepared tail, the synced write, and the appender under disk errors; on real
files broken on purpose."""
import errno
import os
import re
import subprocess
import sys
import textwrap

import pytest

from bukt.writer import aof
from bukt.writer import basefile
from bukt.writer import datadir
from bukt.writer.aof import LogCorrupt, LogWriter, Record, RecoveryError, Scan
from bukt.writer.datadir import DataDir, replay
from bukt.errors import DiskError
from logfiles import B, flip, fresh, offsets, read_all, records, state, write_log


# -- the format ------------------------------------------------------------------------

def test_literal_example_in_the_docstring_is_what_the_code_writes(tmp_path):
    dump = re.findall(r"^    ([0-9a-f]{8})  ((?:[0-9a-f]{2} {1,2})+)", aof.__doc__, re.M)
    expected = bytes.fromhex("".join(hexes for _, hexes in dump))
    path = write_log(str(tmp_path / "log"), [Record.set(1, "b", b"k", b"hi", version=1)])
    assert open(path, "rb").read() == expected
    assert len(expected) == 0x54


def test_literal_base_example_is_what_the_code_writes(tmp_path):
    dump = re.findall(r"^    ([0-9a-f]{8})  ((?:[0-9a-f]{2} {1,2})+)", basefile.__doc__, re.M)
    path = str(tmp_path / "base")
    basefile.write_base(path, [Record.set(7, "b", b"k", b"hi", version=1)], 7)
    assert open(path, "rb").read() == bytes.fromhex("".join(h for _, h in dump))


def test_operations_doc_shows_the_same_bytes():
    doc = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "operations.md")).read()
    for module in (aof, basefile):
        for line in re.findall(r"^    ([0-9a-f]{8}  .*)$", module.__doc__, re.M):
            assert line in doc, line


def test_compiled_readers_know_the_format_aof_writes():
    """The log's record format in C (bukt/writer/_logscan.pxd: what the writer's scan and
    the core's bulk loader read) has aof.py's sizes, record types and flag."""
    from bukt.writer import _logscan
    assert _logscan.FORMAT_CONSTANTS == {n: getattr(aof, n) for n in _logscan.FORMAT_CONSTANTS}
    assert aof._scan_records is _logscan.scan_records


def test_every_record_type_round_trips(tmp_path):
    h = bytes(range(32))
    recs = [
        Record.set(1, "b", b"k", b"v" * 1000, expire_ms=1_700_000_000_123,
                   flags=aof.SINGLE_READ, version=7),
        Record.delete(2, "b", b"k"),
        Record.expire(3, "b", b"k2"),
        Record.set_ttl(4, "b", b"k3", 123456, version=9),
        Record.flush(5, "b"),
        Record.bucket_create(6, "sessions", {"schema": "int", "eviction": "none",
                                             "persist": True, "default_ttl": 30}),
        Record.bucket_drop(7, "sessions"),
        Record.token_add(8, "b", h, 3, 5),
        Record.token_revoke(9, "b", 3),
        Record.set(10, "ünï", b"", b""),
        Record.evict(11, "b", b"k4"),
    ]
    got, report = read_all(write_log(str(tmp_path / "log"), recs))
    assert got == recs and report.clean and report.last_seq == 11
    assert got[5].settings["default_ttl"] == 30
    assert (got[7].key, got[7].token_id, got[7].perms) == (h, 3, 5)
    assert got[8].token_id == 3
    assert [r.type_name for r in got[:3]] == ["SET", "DELETE", "EXPIRE"]
    assert len(aof.encode(recs[1])) == aof.RECORD_OVERHEAD + 1 + 1


def test_oversized_fields_are_refused_when_encoding():
    with pytest.raises(ValueError, match="too large"):
        aof.encode(Record.set(1, "x" * 256, b"k", b"v"))
    with pytest.raises(ValueError, match="too large"):
        aof.encode(Record.set(1, "b", b"k" * 65536, b"v"))


def test_wrong_magic_and_format_are_refused_distinctly(tmp_path):
    path = write_log(str(tmp_path / "log"), records(1))
    data = bytearray(open(path, "rb").read())
    other = tmp_path / "other"
    other.write_bytes(b"GARBAGE!" + bytes(data[8:]))
    with pytest.raises(RecoveryError, match="not a Bukt log"):
        read_all(str(other))
    base = tmp_path / "base"
    basefile.write_base(str(base), records(1), 1)
    with pytest.raises(RecoveryError, match="it is a base file"):
        read_all(str(base))
    fmt = bytearray(data)
    fmt[8] = 2
    fmt[28:32] = aof.zlib.crc32(bytes(fmt[:28])).to_bytes(4, "little")
    other.write_bytes(bytes(fmt))
    with pytest.raises(RecoveryError, match="format 2; this build reads format 1"):
        read_all(str(other))


# -- truncated tail: the normal result of a crash --------------------------------------

def test_truncated_tail_at_every_byte_of_the_last_record(tmp_path):
    src = write_log(str(tmp_path / "src"), records(3))
    data = open(src, "rb").read()
    last = offsets(src)[-1]
    path = str(tmp_path / "log")
    for cut in range(last + 1, len(data)):
        open(path, "wb").write(data[:cut])
        got, report = read_all(path)
        assert got == records(2), cut
        assert report.truncated and report.truncated.offset == last, cut
        assert report.good_end == last and report.last_seq == 2
    open(path, "wb").write(data)
    got, report = read_all(path)
    assert got == records(3) and report.clean


def test_truncated_tail_is_reported_and_cut_before_appending(tmp_path, caplog):
    path = fresh(tmp_path, records(3))
    log = os.path.join(path, "log-00000001.bkl")
    size = os.path.getsize(log)
    os.truncate(log, size - 5)
    with DataDir.open(path) as dd:
        rec = replay(dd)
        assert state(rec) == state(records(2))
        assert rec.last_seq == 2
        assert any("truncated last record at byte" in n and "normal result of a crash" in n
                   for n in rec.notes)
        assert "truncated last record" in caplog.text
        with dd.open_log(rec) as w:
            w.append([Record.set(3, B, b"new", b"x")])
            w.fsync()
    rec = replay(path)
    assert [r.key for r in rec] == [b"k0", b"k1", b"new"] and not rec.notes


def test_zero_filled_tail_is_the_prepared_tail_not_a_problem(tmp_path):
    path = write_log(str(tmp_path / "log"), records(2))
    size = os.path.getsize(path)
    for zeros in (4096, 43, 1):                 # shorter than a record header too
        os.truncate(path, size)
        with open(path, "ab") as f:
            f.write(bytes(zeros))
        got, report = read_all(path)
        assert got == records(2) and report.clean, zeros
        assert (report.good_end, report.prepared) == (size, zeros)


# -- the prepared tail (aof: THE PREPARED TAIL) -------------------------------------------

PREP = 64 << 10


def test_appender_keeps_zeros_ahead_of_its_records(tmp_path):
    path = str(tmp_path / "log")
    with LogWriter.create(path, 0, prepare=PREP) as w:
        assert os.path.getsize(path) == w.file_end == aof.FILE_HEADER_SIZE + PREP
        for i in range(200):                    # ~12 KiB a round: past the first zeros
            w.append(records(100, start=1 + 100 * i))
            assert w.file_end - PREP <= w.size + 12000 and w.file_end >= w.size
            assert os.path.getsize(path) == w.file_end
        w.fsync()
        got, report = read_all(path)
        assert [r.seq for r in got] == list(range(1, 20001)) and report.clean
        assert report.good_end == w.size and report.prepared == w.file_end - w.size > 0


def test_reopened_log_keeps_its_prepared_tail_and_appends_inside_it(tmp_path):
    path = str(tmp_path / "log")
    with LogWriter.create(path, 0, prepare=PREP) as w:
        w.append(records(3))
        w.fsync()
        end = w.file_end
    _, report = read_all(path)
    with LogWriter.open(path, report, prepare=PREP) as w:
        assert (w.size, w.file_end) == (report.good_end, end)
        w.append(records(2, start=4))
        w.fsync()
        assert os.path.getsize(path) == end     # written inside, not appended
    got, report = read_all(path)
    assert [r.seq for r in got] == [1, 2, 3, 4, 5] and report.clean and report.prepared


def test_torn_record_before_the_zeros_is_cut_with_them_on_reopen(tmp_path):
    path = str(tmp_path / "log")
    with LogWriter.create(path, 0, prepare=PREP) as w:
        w.append(records(3))
        w.fsync()
        last = offsets(path, w.size)[-1]
    flip(path, last + 50, 3)                    # the last record's payload, then zeros
    got, report = read_all(path)
    assert [r.seq for r in got] == [1, 2] and report.truncated.kind == aof.BAD_END
    assert report.good_end == last
    with LogWriter.open(path, report, prepare=PREP) as w:
        assert os.path.getsize(path) == last == w.size == w.file_end
        w.append(records(1, start=3))
        w.fsync()
    got, report = read_all(path)
    assert [r.seq for r in got] == [1, 2, 3] and report.clean


def test_finish_cuts_the_zeros_off(tmp_path):
    path = str(tmp_path / "log")
    with LogWriter.create(path, 0, prepare=PREP) as w:
        w.append(records(3))
        w.finish()
        assert os.path.getsize(path) == w.size == w.file_end
        w.append(records(1, start=4))           # and the zeros come back with the next batch
        assert os.path.getsize(path) == w.size + PREP
    got, report = read_all(path)
    assert len(got) == 4 and report.clean


def test_failed_zeroing_falls_back_to_a_plain_append(tmp_path, monkeypatch):
    path = str(tmp_path / "log")
    with LogWriter.create(path, 0, prepare=PREP) as w:
        real = os.pwrite

        def no_room_for_zeros(fd, data, off):
            if not any(data):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd, data, off)
        monkeypatch.setattr(os, "pwrite", no_room_for_zeros)
        w.append(records(2000))                 # past the zeros the creation wrote
        w.fsync()
        assert w.file_end == w.size == os.path.getsize(path)
    got, report = read_all(path)
    assert len(got) == 2000 and report.clean and not report.prepared


# -- the synced write (aof: THE SYNCED WRITE) -----------------------------------------------

def batches():
    """Batches of every shape a synced write meets: one small record, many, a value
    larger than the aligned buffer (64 KiB), one that runs past the prepared zeros."""
    seq, out = 1, []
    for n, value in ((1, b"v"), (100, b"value"), (1, bytes(range(256)) * 400), (7, b"x" * 3000),
                     (1, b"w" * (PREP + 5000)), (3, b"tail")):
        out.append([Record.set(seq + i, B, b"k%d" % (seq + i), value) for i in range(n)])
        seq += n
    return out


def counting_fdatasync(monkeypatch):
    calls, real = [], os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd))[1])
    return calls


def test_synced_writes_leave_the_bytes_a_plain_append_leaves(tmp_path, monkeypatch):
    plain, synced = str(tmp_path / "plain"), str(tmp_path / "synced")
    calls = counting_fdatasync(monkeypatch)
    with LogWriter.create(plain, 0, prepare=PREP) as p, \
            LogWriter.create(synced, 0, prepare=PREP) as w:
        assert w.sync_writes()
        for batch in batches():
            p.append(batch)
            p.fsync()
            before, end = len(calls), w.file_end
            w.append(batch)
            assert os.path.getsize(synced) == w.file_end and w.size <= w.file_end - 4096
            w.fsync()
            # inside the zeros the write was the fsync; zeros added cost one fdatasync
            assert len(calls) - before == (0 if w.file_end == end else 1)
            assert w.synced_seq == w.written_seq == batch[-1].seq
        size = w.size
    assert p.size == size
    a, b = open(plain, "rb").read(), open(synced, "rb").read()
    assert a[:size] == b[:size] and not any(a[size:]) and not any(b[size:])
    got, report = read_all(synced)
    assert got == [r for batch in batches() for r in batch] and report.clean


def test_synced_writes_go_on_in_a_reopened_log(tmp_path):
    path = str(tmp_path / "log")
    first, *rest = batches()
    with LogWriter.create(path, 0, prepare=PREP) as w:
        w.append(first + rest[0])               # ends inside a block: the partial one
        w.fsync()
    _, report = read_all(path)
    assert report.good_end % 4096
    with LogWriter.open(path, report, prepare=PREP) as w:
        assert w.sync_writes()
        for batch in rest[1:]:
            w.append(batch)
            w.fsync()
    got, report = read_all(path)
    assert got == [r for batch in batches() for r in batch] and report.clean


def test_the_first_fsync_of_a_reopened_log_is_a_real_one(tmp_path, monkeypatch):
    """A log reopened after its writer died may hold records that writer wrote and
    never fsynced; the new writer's first fsync must put them on disk even when every
    batch of its own is a synced write."""
    path = str(tmp_path / "log")
    with LogWriter.create(path, 0, prepare=PREP) as w:
        w.append(records(3))                    # written, never fsynced
    _, report = read_all(path)
    calls = counting_fdatasync(monkeypatch)
    with LogWriter.open(path, report, prepare=PREP) as w:
        assert w.sync_writes()
        w.fsync()
        assert len(calls) == 1
        w.append(records(1, start=4))
        w.fsync()
        assert len(calls) == 1                  # then the synced writes need none


def test_synced_writes_stay_off_where_o_direct_is_refused(tmp_path, monkeypatch):
    path = str(tmp_path / "log")
    real_open = os.open

    def no_direct(p, flags, *a):                # as tmpfs answered before Linux 6.6
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(p, flags, *a)
    with LogWriter.create(path, 0, prepare=PREP) as w:
        monkeypatch.setattr(os, "open", no_direct)
        assert not w.sync_writes()
        monkeypatch.undo()
        calls = counting_fdatasync(monkeypatch)
        w.append(records(3))
        w.fsync()
        assert len(calls) == 1                  # the plain path: write, then fdatasync
    with LogWriter.create(str(tmp_path / "bare"), 0) as bare:
        assert bare.sync_writes() is False      # no prepared zeros to write inside


def test_synced_writes_turn_off_when_the_zeros_cannot_grow(tmp_path, monkeypatch):
    path = str(tmp_path / "log")
    with LogWriter.create(path, 0, prepare=PREP) as w:
        assert w.sync_writes()
        w.append(records(10))
        real = os.pwrite

        def no_room_for_zeros(fd, data, off):
            if len(data) > 4096 and not any(data):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd, data, off)
        monkeypatch.setattr(os, "pwrite", no_room_for_zeros)
        calls = counting_fdatasync(monkeypatch)
        w.append(records(2000, start=11))       # past the zeros: appended plainly
        w.append(records(5, start=2011))
        w.fsync()
        assert w.file_end == w.size == os.path.getsize(path) and len(calls) == 1
    got, report = read_all(path)
    assert [r.seq for r in got] == list(range(1, 2016)) and report.clean


def test_synced_write_refused_for_its_alignment_falls_back_to_the_plain_path(
        tmp_path, monkeypatch):
    path = str(tmp_path / "log")
    with LogWriter.create(path, 0, prepare=PREP) as w:
        assert w.sync_writes()
        w.append(records(2))
        real = os.pwrite

        def wants_more_alignment(fd, data, off):    # as a device with larger sectors
            if w._direct is not None and fd == w._direct.fd:
                raise OSError(errno.EINVAL, "Invalid argument")
            return real(fd, data, off)
        monkeypatch.setattr(os, "pwrite", wants_more_alignment)
        calls = counting_fdatasync(monkeypatch)
        w.append(records(3, start=3))
        w.fsync()
        assert w._direct is None and not w.broken and len(calls) == 1
    got, report = read_all(path)
    assert [r.seq for r in got] == [1, 2, 3, 4, 5] and report.clean


def test_failed_synced_write_makes_the_log_refuse_writes(tmp_path, monkeypatch):
    path = str(tmp_path / "log")
    w = LogWriter.create(path, 0, prepare=PREP)
    assert w.sync_writes()
    w.append(records(2))
    real = os.pwrite

    def eio(fd, data, off):
        if fd == w._direct.fd:
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, data, off)
    monkeypatch.setattr(os, "pwrite", eio)
    with pytest.raises(DiskError, match=r"synced write of \d+ bytes at byte \d+ failed: "
                                        "Input/output error"):
        w.append(records(1, start=3))
    monkeypatch.undo()
    assert w.broken and w.written_seq == 2
    with pytest.raises(DiskError, match="refuses writes until the writer restarts"):
        w.append(records(1, start=3))
    w.close()
    got, report = read_all(path)
    assert [r.seq for r in got] == [1, 2] and report.clean


def test_rotation_cuts_the_old_logs_zeros_and_zeros_left_in_a_middle_log_are_checked(tmp_path):
    path = fresh(tmp_path, records(3))
    with DataDir.open(path) as dd:
        dd.prepare = PREP
        rec = replay(dd)
        list(rec)
        with dd.open_log(rec) as w, dd.rotate(3, w) as w2:
            assert os.path.getsize(w.path) == w.size
            w2.append(records(2, start=4))
            w2.fsync()
            assert os.path.getsize(w2.path) == w2.file_end > w2.size
    assert [r.seq for r in replay(path)] == [1, 2, 3, 4, 5]
    first = os.path.join(path, "log-00000001.bkl")
    with open(first, "ab") as f:                # as the rebase after a failed fsync leaves it:
        f.write(bytes(4096))                    # zeros, but every record up to seq 3
    rec = replay(path)
    assert [r.seq for r in rec] == [1, 2, 3, 4, 5] and not rec.notes
    size = os.path.getsize(first) - 4096
    os.truncate(first, size)
    last = offsets(first, size)[-1]
    with open(first, "r+b") as f:               # record 3 lost under the zeros
        f.seek(last)
        f.write(bytes(size - last + 4096))
    with pytest.raises(LogCorrupt, match="zeros, which only the last log may end in"):
        list(replay(path))
    # `bukt check` says what recovery refuses, and `bukt check --fix` cuts it off (the
    # zeros go to a side file): recovery then loads what is left
    reports = {os.path.basename(r.path): r for r in datadir.check(path)}
    mid = reports["log-00000001.bkl"]
    assert [p.kind for p in mid.problems] == [aof.ZEROS] and mid.prepared == 0
    assert mid.problems[0].offset == last
    assert reports["log-00000002.bkl"].prepared and not reports["log-00000002.bkl"].problems
    fixed = datadir.fix(path)
    assert [(os.path.basename(r.path), r.cut_at) for r in fixed] == [("log-00000001.bkl", last)]
    assert "zeros, which only the last log may end in" in fixed[0].reason
    assert os.path.getsize(first) == last and not any(open(fixed[0].side_file, "rb").read())
    assert [r.seq for r in replay(path)] == [1, 2, 4, 5]
    assert not any(r.problems for r in datadir.check(path))
    assert datadir.fix(path) == []              # the last log keeps its prepared zeros


def test_torn_payload_of_the_last_record_counts_as_truncated(tmp_path):
    path = write_log(str(tmp_path / "log"), records(3))
    flip(path, os.path.getsize(path) - 6, 0)
    got, report = read_all(path)
    assert got == records(2) and report.truncated.kind == aof.TORN


def test_damage_with_no_sound_record_after_it_is_a_torn_end(tmp_path):
    src = write_log(str(tmp_path / "src"), records(3))
    data = open(src, "rb").read()
    last = offsets(src)[-1]
    path = str(tmp_path / "log")
    for off in range(last, len(data)):
        open(path, "wb").write(data)
        flip(path, off, 6)
        got, report = read_all(path)
        assert got == records(2), off
        assert report.truncated.offset == last and report.good_end == last, off
    with open(path, "ab") as f:
        f.write(os.urandom(5000).replace(b"Bk", b"xx"))
    got, report = read_all(path)
    assert got == records(2) and report.truncated.kind == aof.BAD_END
    assert "no sound record follows in the last" in report.truncated.reason


# -- the appender under disk errors -----------------------------------------------------------

def test_short_write_is_undone_rlimit_fsize(tmp_path):
    """A real short write: RLIMIT_FSIZE lets the write stop part way (EFBIG)."""
    path = str(tmp_path / "log")
    write_log(path, records(2))
    size = os.path.getsize(path)
    script = textwrap.dedent(f"""
        import resource, signal, os
        from bukt.writer.aof import LogWriter, Record, Scan
        from bukt.errors import DiskError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({size} + 100, {size} + 100))
        rep = Scan({path!r})
        from bukt.writer.aof import read_log
        list(read_log({path!r}, report=rep))
        w = LogWriter.open({path!r}, rep)
        try:
            w.append([Record.set(3, "b", b"big", b"x" * 1000)])
        except DiskError as e:
            print("refused:", e, getattr(e, "errno", None))
        print("size", os.path.getsize({path!r}))
        w.append([Record.set(3, "b", b"small", b"y")])
        w.fsync()
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "nothing of it was kept" in out.stdout
    assert f" {errno.EFBIG}\n" in out.stdout
    assert f"size {size}\n" in out.stdout and "ok" in out.stdout
    got, report = read_all(path)
    assert [r.key for r in got] == [b"k0", b"k1", b"small"] and report.clean


@pytest.mark.parametrize("prepare", [0, 64 << 10])
def test_short_write_then_enospc_is_undone(tmp_path, monkeypatch, prepare):
    path = str(tmp_path / "log")
    w = LogWriter.create(path, 0, prepare=prepare)
    w.append(records(1))
    size = w.size
    real_pwrite = os.pwrite
    calls = []

    def half_then_enospc(fd, data, off):
        calls.append(len(data))
        if len(calls) == 1:
            return real_pwrite(fd, bytes(data[:len(data) // 2]), off)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", half_then_enospc)
    with pytest.raises(DiskError, match="No space left on device; nothing of it was kept"):
        w.append(records(3, start=2))
    monkeypatch.undo()
    # the half record is gone, and with it the zeros that were after it
    assert os.path.getsize(path) == size == w.size == w.file_end and w.written_seq == 1
    w.append(records(2)[1:])
    w.close()
    assert read_all(path)[0] == records(2)


def test_failed_fsync_makes_the_log_refuse_writes(tmp_path, monkeypatch):
    w = LogWriter.create(str(tmp_path / "log"), 0)
    w.append(records(2))
    monkeypatch.setattr(os, "fdatasync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(DiskError, match="fsync failed: I/O error"):
        w.fsync()
    monkeypatch.undo()
    assert w.synced_seq == 0 and w.written_seq == 2 and w.broken
    with pytest.raises(DiskError, match="refuses writes until the writer restarts"):
        w.append(records(1, start=3))
    w.close()


def test_append_tracks_written_and_synced_seq(tmp_path):
    with LogWriter.create(str(tmp_path / "log"), 10) as w:
        assert (w.written_seq, w.synced_seq) == (10, 10)
        w.append(records(3, start=11))
        assert (w.written_seq, w.synced_seq) == (13, 10)
        w.fsync()
        assert w.synced_seq == 13
        w.append(Record.delete(14, B, b"k"))
        assert w.written_seq == 14
