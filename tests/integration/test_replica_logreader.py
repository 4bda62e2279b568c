"""The primary's log reader (bukt/replica/source.py, LogReader) bounded by the writer's
published log size, as the log stream uses it: a real `bukt serve`, its real logs. Every
record after the start point comes out once and in order: a record longer than a read,
and a log that is finished (a compaction rotates it) while the bound names the next."""
import json
import os
import signal
import time

import bukt
from bukt.replica import source
from bukt.writer import aof
from serve_harness import Service, wait_for

BUCKET = "b"


def _last_log(data_dir):
    with open(os.path.join(data_dir, "MANIFEST")) as f:
        return json.load(f)["logs"][-1]


def _read_until(reader, store, want, timeout=30.0):
    """Keys of the SET records the reader gives, bounded as the stream bounds it,
    until `want` keys came (or the timeout)."""
    keys = []
    deadline = time.monotonic() + timeout
    while len(keys) < want and time.monotonic() < deadline:
        data = reader.read(store.writer_info()["log_size"])
        if not data:
            time.sleep(0.01)
            continue
        report = aof.Scan("test")
        for rec in aof.scan(data, 0, len(data), report):
            if rec.key:
                keys.append(bytes(rec.key))
        assert report.good_end == len(data) and not report.problems
    return keys


def test_bounded_reads_give_every_record_once_across_a_long_record_and_a_rotation(tmp_path):
    p = Service(tmp_path)
    try:
        p.start()
        p.create_bucket(BUCKET)
        store = bukt.attach(p.name)
        b = store.bucket(BUCKET)
        b.set(b"before", b"x")
        wait_for(lambda: store.writer_info()["ring_tail"] == store.ring_position()[1], 10,
                 0.01, "the writer")
        dd = store.writer_info()["data_dir"]
        reader = source.LogReader(dd, source.logged_upto(store), 64 << 10)
        try:
            first = [b"a%04d" % i for i in range(200)]
            for k in first[:100]:
                b.set(k, b"v")
            b.set(b"big", os.urandom(300_000))          # longer than 4 reads
            for k in first[100:]:
                b.set(k, b"v")
            got = _read_until(reader, store, 201)
            assert got == first[:100] + [b"big"] + first[100:]

            old = _last_log(dd)
            os.kill(p.state()["writer"]["pid"], signal.SIGUSR1)     # compact: rotate
            wait_for(lambda: _last_log(dd) != old, 30, 0.05, "the rotation")
            second = [b"c%04d" % i for i in range(300)]
            for k in second:
                b.set(k, b"w")
            # the reader is still in the finished log, past the size the writer now
            # publishes for the new one: it must finish the old log and go on
            assert _read_until(reader, store, 300) == second
            assert reader.name == _last_log(dd)
        finally:
            reader.close()
            store.close()
    finally:
        p.cleanup()
