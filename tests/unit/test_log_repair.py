"""`bukt check --fix` (datadir.repair): cutting a log at its last good record,
rewriting a torn base, refusing a held directory."""
import os
import re

import pytest

from bukt.writer import aof
from bukt.writer import datadir
from bukt.writer.aof import RecoveryError
from bukt.writer.datadir import DataDir, replay
from logfiles import compacted, flip, fresh, offsets, read_all, records, write_log


# -- repair (`bukt check --fix`) --------------------------------------------------------------

def test_repair_cuts_at_the_last_good_record_keeps_the_tail_and_replays_cleanly(tmp_path):
    path = fresh(tmp_path, records(5))
    log = os.path.join(path, "log-00000001.bkl")
    whole = open(log, "rb").read()
    bad = offsets(log)[2]
    flip(log, bad + 50, 5)
    damaged = open(log, "rb").read()
    [report_before] = [r for r in datadir.check(path) if r.kind == "log"]
    assert report_before.problems[0].offset == bad
    [r] = datadir.fix(path)
    assert (r.path, r.cut_at, r.removed) == (log, bad, len(whole) - bad)
    assert re.fullmatch(re.escape(log) + r"\.bad-\d{8}T\d{6}Z", r.side_file)
    assert open(r.side_file, "rb").read() == damaged[bad:]
    assert open(log, "rb").read() == whole[:bad]
    rec = replay(path)
    assert list(rec) == records(2) and not rec.notes
    assert datadir.fix(path) == []
    assert all(not f.problems for f in datadir.check(path))
    with DataDir.open(path) as dd:                     # the side file survives a restart
        rec = replay(dd)
        list(rec)
        with dd.open_log(rec) as w:
            w.append(records(1, start=3))
    assert os.path.exists(r.side_file) and len(list(replay(path))) == 3


def test_repair_of_a_truncated_tail(tmp_path):
    path = str(tmp_path / "log")
    write_log(path, records(3))
    os.truncate(path, os.path.getsize(path) - 1)
    r = aof.repair(path)
    assert r.removed == aof.RECORD_OVERHEAD + len("b") + 2 + 7 - 1
    assert read_all(path)[1].clean and aof.repair(path) is None


def test_repair_refuses_a_damaged_file_header(tmp_path):
    path = write_log(str(tmp_path / "log"), records(2))
    flip(path, 17, 0)
    with pytest.raises(RecoveryError, match="does not cut a file at byte 0"):
        aof.repair(path)


def test_repair_rewrites_a_torn_base_from_its_good_records(tmp_path):
    path = compacted(tmp_path, records(3), records(1, start=4), 3)
    base = os.path.join(path, datadir.read_manifest(path).base)
    os.truncate(base, os.path.getsize(base) - 10)
    torn = open(base, "rb").read()
    [r] = datadir.fix(path)
    assert r.path == base and open(r.side_file, "rb").read() == torn
    rec = replay(path)
    assert [x.seq for x in rec] == [1, 2, 3, 4] and not rec.notes


def test_fix_refuses_while_the_directory_is_held(tmp_path):
    path = fresh(tmp_path)
    with DataDir.open(path):
        with pytest.raises(RecoveryError, match="another process"):
            datadir.fix(path)
        with pytest.raises(RecoveryError, match="another process"):
            DataDir.open(path)
