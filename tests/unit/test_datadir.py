"""The data directory (bukt/writer/datadir.py): recovery through damaged, empty and
missing files, expiry across replay, and compaction's switch of files; on real files
broken on purpose."""
import os
import re

import pytest

from bukt.writer import datadir
from bukt.writer.aof import LogCorrupt, Record, RecoveryError
from bukt.writer.datadir import DataDir, replay
from logfiles import B, compacted, flip, fresh, offsets, read_all, records, state, write_log


# -- corruption before the end ----------------------------------------------------------

def test_flipped_bit_anywhere_in_a_middle_record_is_refused_with_file_offset_command(tmp_path):
    src = write_log(str(tmp_path / "src"), records(3))
    data = open(src, "rb").read()
    start, end = offsets(src)[1], offsets(src)[2]
    path = str(tmp_path / "log")
    for off in range(start, end):
        for bit in range(8):
            open(path, "wb").write(data)
            flip(path, off, bit)
            with pytest.raises(LogCorrupt) as e:
                read_all(path)
            msg = str(e.value)
            assert e.value.offset == start and e.value.path == path, (off, bit)
            assert f"{path}: corrupt record at byte {start}" in msg
            assert "bukt check --fix" in msg and "load_good" in msg


def test_corrupt_middle_record_stops_recovery(tmp_path):
    path = fresh(tmp_path, records(5))
    log = os.path.join(path, "log-00000001.bkl")
    bad = offsets(log)[2]
    flip(log, bad + 50, 3)
    with pytest.raises(LogCorrupt, match=rf"{re.escape(log)}: corrupt record at byte {bad}"
                                         r".*bukt check --fix"):
        list(replay(path))


def test_load_good_skips_the_bad_record_and_loads_the_rest(tmp_path):
    path = fresh(tmp_path, records(5))
    log = os.path.join(path, "log-00000001.bkl")
    bad, after = offsets(log)[2], offsets(log)[3]
    flip(log, bad + 10, 1)                        # the header: the length is not trusted
    rec = replay(path, on_corrupt="load_good")
    got = list(rec)
    assert [r.seq for r in got] == [1, 2, 4, 5]
    assert rec.needs_compaction
    [(p, problem)] = rec.skipped
    assert p == log and (problem.offset, problem.end) == (bad, after)
    assert any(f"skipped bytes {bad}-{after}" in n for n in rec.notes)


def test_load_good_with_garbage_to_the_end(tmp_path):
    path = write_log(str(tmp_path / "log"), records(2))
    with open(path, "ab") as f:
        f.write(b"Bk" + os.urandom(300) + b"Bk\x01")
    got, report = read_all(path, skip_bad=True)
    assert got == records(2) and report.problems[0].end == os.path.getsize(path)


def test_truncated_log_that_is_not_the_last_is_corruption(tmp_path):
    path = fresh(tmp_path, records(3))
    with DataDir.open(path) as dd:
        rec = replay(dd)
        list(rec)
        with dd.open_log(rec) as w, dd.rotate(3, w) as w2:
            w2.append(records(2, start=4))
    first = os.path.join(path, "log-00000001.bkl")
    os.truncate(first, os.path.getsize(first) - 1)
    with pytest.raises(LogCorrupt, match="only the last log may end cut short"):
        list(replay(path))


# -- empty, missing, base without log ----------------------------------------------------

def test_empty_log_file_recovers_to_nothing_and_takes_writes(tmp_path):
    path = fresh(tmp_path)
    log = os.path.join(path, "log-00000001.bkl")
    os.truncate(log, 0)
    with DataDir.open(path) as dd:
        rec = replay(dd)
        assert list(rec) == [] and any("empty" in n for n in rec.notes)
        with dd.open_log(rec) as w:
            w.append(records(2))
            w.fsync()
    assert list(replay(path)) == records(2)


def test_log_cut_inside_its_header(tmp_path):
    path = fresh(tmp_path, records(1))
    log = os.path.join(path, "log-00000001.bkl")
    os.truncate(log, 10)
    rec = replay(path)
    assert list(rec) == [] and any("shorter than its header" in n for n in rec.notes)


def test_fresh_directory_and_no_directory(tmp_path):
    assert list(replay(str(tmp_path / "nothing"))) == []
    path = fresh(tmp_path)
    assert sorted(os.listdir(path)) == ["LOCK", "MANIFEST", "log-00000001.bkl"]
    assert os.stat(path).st_mode & 0o777 == 0o700


def test_log_alone_without_a_base(tmp_path):
    path = fresh(tmp_path, records(4))
    assert datadir.read_manifest(path).base is None
    assert list(replay(path)) == records(4)


def test_missing_base_is_refused_or_skipped_with_load_good(tmp_path):
    path = compacted(tmp_path, records(3), records(2, start=4, bucket="c"), 3)
    base = os.path.join(path, datadir.read_manifest(path).base)
    os.unlink(base)
    with pytest.raises(RecoveryError, match=re.escape(base) + r": the base file MANIFEST "
                                            r"lists is missing.*load_good"):
        list(replay(path))
    rec = replay(path, on_corrupt="load_good")
    assert [r.bucket for r in rec] == ["c", "c"]
    assert any("recovering without it" in n for n in rec.notes)


def test_base_without_log(tmp_path):
    path = compacted(tmp_path, records(3), [], 3)
    m = datadir.read_manifest(path)
    for name in m.logs:
        os.unlink(os.path.join(path, name))
    datadir._write_manifest(path, m._replace(logs=()))
    rec = replay(path)
    assert list(rec) == records(3) and rec.last_seq == 3


def test_missing_listed_log_is_refused_or_recreated_with_load_good(tmp_path):
    path = compacted(tmp_path, records(3), records(1, start=4), 3)
    log = os.path.join(path, datadir.read_manifest(path).logs[-1])
    os.unlink(log)
    with pytest.raises(RecoveryError, match=re.escape(log) + ": the log MANIFEST lists is missing"):
        list(replay(path))
    with DataDir.open(path) as dd:
        rec = replay(dd, on_corrupt="load_good")
        assert list(rec) == records(3)
        with dd.open_log(rec) as w:
            w.append([Record.set(4, B, b"x", b"y")])
    assert len(list(replay(path))) == 4


def test_files_without_a_manifest_are_refused(tmp_path):
    path = fresh(tmp_path, records(1))
    os.unlink(os.path.join(path, "MANIFEST"))
    with pytest.raises(RecoveryError, match="no MANIFEST"):
        list(replay(path))
    with pytest.raises(RecoveryError, match="no MANIFEST"):
        DataDir.open(path)


# -- expiry across replay ----------------------------------------------------------------------

def test_replay_never_resurrects_an_expired_key(tmp_path):
    log_recs = [
        Record.set(4, B, b"old", b"1"),                       # no expiry ...
        Record.set(5, B, b"old", b"2", expire_ms=1500),       # ... then one that passed
        Record.set(6, B, b"live", b"x", expire_ms=5000),
        Record.set(7, B, b"ttl", b"y"),
        Record.set_ttl(8, B, b"ttl", 1000),                   # expire() that passed
        Record.set(9, B, b"keep", b"z", expire_ms=1000),
        Record.set_ttl(10, B, b"keep", 0),                    # persist() after it
    ]
    base_recs = [Record.set(3, B, b"gone", b"g", expire_ms=1999),
                 Record.set(3, B, b"stays", b"s", expire_ms=2001)]
    path = compacted(tmp_path, base_recs, log_recs, 3)
    rec = replay(path, now_ms=2000)
    s = state(rec)[B]
    assert set(s) == {b"live", b"stays"}
    assert rec.expired == 4
    # without a clock nothing is dropped, and a later clock drops more
    assert set(state(replay(path))[B]) == {b"old", b"live", b"ttl", b"keep", b"stays", b"gone"}
    assert set(state(replay(path, now_ms=10_000)).get(B, {})) == set()


def test_record_expired_helper():
    assert Record.set(1, B, b"k", b"v", expire_ms=10).expired(10)
    assert not Record.set(1, B, b"k", b"v", expire_ms=11).expired(10)
    assert not Record.set(1, B, b"k", b"v").expired(10**15)


# -- compaction: switching files ----------------------------------------------------------------

def test_compaction_with_changes_during_the_snapshot_ends_in_the_same_state(tmp_path):
    path = fresh(tmp_path)
    truth = []
    with DataDir.open(path) as dd:
        rec = replay(dd)
        list(rec)
        w = dd.open_log(rec)
        first = [Record.bucket_create(1, B, {"schema": "bytes"})] + records(20, start=2)
        w.append(first)
        truth += first
        w2 = dd.rotate(21, w)
        w.close()
        during = [Record.delete(22, B, b"k3"), Record.set(23, B, b"k4", b"new"),
                  Record.flush(24, "other")]
        w2.append(during)
        truth += during
        # the snapshot sees part of what happened after seq 21 (a fuzzy snapshot)
        snap = [r for r in first if r.key != b"k3"]
        snap[5] = Record.set(23, B, b"k4", b"new")
        dd.install_base(snap, 21)
        w2.append([Record.set(25, B, b"k5", b"after")])
        truth.append(Record.set(25, B, b"k5", b"after"))
        w2.close()
        assert sorted(os.listdir(path)) == ["LOCK", "MANIFEST", "base-00000003.bkb",
                                            "log-00000002.bkl"]
    rec = replay(path)
    assert state(rec) == state(truth) and rec.last_seq == 25


def test_install_base_refuses_without_a_rotation(tmp_path):
    path = fresh(tmp_path, records(3))
    with DataDir.open(path) as dd:
        with pytest.raises(ValueError, match="call rotate"):
            dd.install_base(records(3), 3)


def test_crash_between_base_and_manifest_leaves_the_old_files_current(tmp_path, monkeypatch):
    path = fresh(tmp_path, records(3))
    with DataDir.open(path) as dd:
        rec = replay(dd)
        list(rec)
        with dd.open_log(rec) as w, dd.rotate(3, w) as w2:
            w2.append(records(4)[3:])
            w2.fsync()
            monkeypatch.setattr(datadir, "_write_manifest", _crash)
            with pytest.raises(KeyboardInterrupt):
                dd.install_base(records(3), 3)
            monkeypatch.undo()
    assert any(n.startswith("base-") for n in os.listdir(path))     # written, unlisted
    assert list(replay(path)) == records(4)
    with DataDir.open(path):
        assert not any(n.startswith("base-") for n in os.listdir(path))
    assert list(replay(path)) == records(4)


def _crash(*a):
    raise KeyboardInterrupt("killed")


def test_leftover_temporary_files_are_removed_on_open(tmp_path):
    path = fresh(tmp_path, records(1))
    for name in ("MANIFEST.tmp", "base-00000009.bkb.tmp", "log-00000009.bkl"):
        open(os.path.join(path, name), "wb").write(b"junk")
    open(os.path.join(path, "log-00000001.bkl.bad-20260101T000000Z"), "wb").write(b"kept")
    with DataDir.open(path):
        pass
    assert sorted(os.listdir(path)) == ["LOCK", "MANIFEST", "log-00000001.bkl",
                                        "log-00000001.bkl.bad-20260101T000000Z"]


def test_switches_fsync_the_directory_after_each_rename(tmp_path, monkeypatch):
    path = fresh(tmp_path, records(3))
    trace = []
    real_fsync, real_rename, real_unlink = os.fsync, os.rename, os.unlink  # fdatasync too

    def fsync(fd):
        trace.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(a, b):
        trace.append(("rename", os.path.basename(b)))
        real_rename(a, b)

    def unlink(p):
        trace.append(("unlink", os.path.basename(p)))
        real_unlink(p)

    with DataDir.open(path) as dd:
        rec = replay(dd)
        list(rec)
        w = dd.open_log(rec)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "fdatasync", fsync)
        monkeypatch.setattr(os, "rename", rename)
        monkeypatch.setattr(os, "unlink", unlink)
        w2 = dd.rotate(3, w)
        w.close()
        dd.install_base(records(3), 3)
        w2.close()
        monkeypatch.undo()
    d = os.path.realpath(path)

    def after(event):
        i = trace.index(event)
        return trace[i + 1:]

    # rotate: the old log is on disk, then the new log and its directory entry, before
    # a MANIFEST names it
    assert trace[:3] == [("fsync", os.path.join(d, "log-00000001.bkl")),
                         ("fsync", os.path.join(d, "log-00000002.bkl")), ("fsync", d)]
    # every rename is followed by an fsync of the directory before anything else
    renames = [e for e in trace if e[0] == "rename"]
    assert renames == [("rename", "MANIFEST"), ("rename", "base-00000003.bkb"),
                       ("rename", "MANIFEST")]
    for i, e in enumerate(trace):
        if e[0] == "rename":
            assert trace[i + 1] == ("fsync", d), trace
    # old files go only after the MANIFEST that drops them is durable
    last_manifest = len(trace) - 1 - trace[::-1].index(("rename", "MANIFEST"))
    assert trace.index(("unlink", "log-00000001.bkl")) > last_manifest + 1
    assert trace[-1] == ("fsync", d)
