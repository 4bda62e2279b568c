"""Base files (bukt/writer/basefile.py): round trip, torn and corrupt files refused."""
import os
import re

import pytest

from bukt.writer import aof
from bukt.writer import basefile
from bukt.writer import datadir
from bukt.writer.aof import LogCorrupt, Record, Scan
from bukt.writer.datadir import replay
from logfiles import compacted, flip, records


# -- base files ----------------------------------------------------------------------------

def test_base_round_trip_and_header_seq(tmp_path):
    path = str(tmp_path / "base")
    info = basefile.write_base(path, records(5), 42)
    assert info.records == 5 and info.size == os.path.getsize(path)
    report = Scan(path)
    assert list(basefile.read_base(path, report=report)) == records(5)
    assert report.header_seq == 42 and not os.path.exists(path + ".tmp")


def test_torn_base_file_at_every_byte_is_refused_before_any_record(tmp_path):
    src = str(tmp_path / "src")
    basefile.write_base(src, records(3), 3)
    data = open(src, "rb").read()
    path = str(tmp_path / "base")
    for cut in range(0, len(data)):
        open(path, "wb").write(data[:cut])
        got = []
        with pytest.raises(LogCorrupt) as e:
            for r in basefile.read_base(path):
                got.append(r)
        assert got == [], cut
        assert path in str(e.value) and "bukt check --fix" in str(e.value)
        if cut >= aof.FILE_HEADER_SIZE:
            assert "torn" in str(e.value), cut


def test_flipped_bit_in_a_base_record_is_refused(tmp_path):
    path = str(tmp_path / "base")
    basefile.write_base(path, records(3), 3)
    flip(path, aof.FILE_HEADER_SIZE + 50, 2)          # the first record's payload
    with pytest.raises(LogCorrupt, match=f"corrupt record at byte {aof.FILE_HEADER_SIZE}"):
        list(basefile.read_base(path))
    report = Scan(path)
    assert list(basefile.read_base(path, skip_bad=True, report=report)) == records(3)[1:]


def test_torn_base_in_a_data_directory(tmp_path):
    path = compacted(tmp_path, records(3), records(1, start=4), 3)
    base = os.path.join(path, datadir.read_manifest(path).base)
    os.truncate(base, os.path.getsize(base) - 30)
    with pytest.raises(LogCorrupt, match=re.escape(base) + ".*torn.*bukt check --fix"):
        list(replay(path))
    rec = replay(path, on_corrupt="load_good")
    assert [r.seq for r in rec] == [1, 2, 3, 4]        # the records survived; the footer not
    assert rec.skipped


def test_base_records_never_include_a_footer(tmp_path):
    with pytest.raises(ValueError):
        basefile.write_base(str(tmp_path / "b"), [Record(aof.BASE_END, 1)], 1)
    assert os.listdir(tmp_path) == []
