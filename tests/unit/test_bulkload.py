"""Cold recovery's compiled bulk path (cext/bulkload.pxi) against the record-by-record
path it replaces: the same files recovered both ways into real segments give the same
table, entry for entry (value, expiry, flags, version), the same buckets and tokens, and
the same counts and errors."""
import hashlib
import os
import random

import pytest

import bukt
from bukt.writer import aof
from bukt._core import BulkLoad
from bukt.writer.aof import LogCorrupt, LogWriter, Record
from bukt.writer.datadir import DataDir, replay
from bukt.errors import ValueTooLarge
from bukt.writer.restore import Loader
from names import unique_name

NOW = 2_000_000                    # the injected clock, ms since the epoch
PAST, FUTURE = NOW - 1, NOW + 3_600_000


def _write(tmp_path, base_recs, log_parts, base_seq):
    """A data directory: a base covering base_seq (if base_recs), then one log per part."""
    path = str(tmp_path / "data")
    with DataDir.open(path) as dd:
        rec = replay(dd)
        list(rec)
        w = dd.open_log(rec)
        if base_recs is not None:
            w2 = dd.rotate(base_seq, w)
            w.close()
            w = w2
            dd.install_base(base_recs, base_seq)
        for i, part in enumerate(log_parts):
            if i:
                w2 = dd.rotate(part[0].seq - 1, w)
                w.close()
                w = w2
            w.append(part)
            w.fsync()
        w.close()
    return path


class Recovered:
    def __init__(self, name, path, bulk, on_corrupt="refuse", **create):
        self.store = bukt.create(name, size=32 << 20, **create)
        try:
            self.store.set_time(NOW)
            self.store.set_logging(False)
            self.rec = replay(path, now_ms=NOW, on_corrupt=on_corrupt)
            self.loader = Loader(self.store, bulk=bulk)
            self.applied = self.loader.apply(self.rec)
        except BaseException:
            self.close()
            raise

    def contents(self):
        out, start = [], 0
        while True:
            entries, start = self.store.dump_stripes(start, 64)
            out += entries
            if start == 0:
                return sorted(out)

    def summary(self):
        rec = self.rec
        return dict(contents=self.contents(), buckets=self.store.bucket_table(),
                    records=rec.records, expired=rec.expired, last_seq=rec.last_seq,
                    applied=self.applied, missing=self.loader.missing,
                    good_end=rec.tail.good_end if rec.tail else None,
                    keys=self.store.stats()["keys"],
                    keys_with_ttl=self.store.stats()["keys_with_ttl"],
                    problems=self.store.check(),
                    next_version=self._next_version())

    def _next_version(self):
        self.store.set_logging(True)
        names = [t[3] for t in self.store.bucket_table() if t[2] == 1]
        return self.store.bucket(names[0]).set(b"probe-after-recovery", b"x") if names else None

    def close(self):
        self.store.unlink()
        self.store.close()


@pytest.fixture
def recover(request):
    made = []

    def run(path, bulk, **kw):
        r = Recovered(unique_name(f"bulk{int(bulk)}"), path, bulk, **kw)
        made.append(r)
        return r
    yield run
    for r in made:
        r.close()


def _both(recover, path, **kw):
    slow = recover(path, bulk=False, **kw).summary()
    fast = recover(path, bulk=True, **kw).summary()
    assert fast == slow
    # every stripe's count of entries with an expiry is exact (check() verifies it),
    # and none is expired: recovery turns those into EXPIREs
    assert fast["problems"] == []
    assert fast["keys_with_ttl"] == sum(1 for e in fast["contents"] if e[3])
    return fast


def _token(i):
    return hashlib.sha256(b"token-%d" % i).digest()


def test_every_record_kind_recovers_the_same_both_ways(tmp_path, recover):
    base = [Record.bucket_create(20, "b", {"schema": "bytes"}),
            Record.bucket_create(20, "c", {"schema": "bytes", "eviction": "none"}),
            Record.token_add(20, "b", _token(1), 1, 3),
            Record.set(20, "b", b"plain", b"base value", version=11),
            Record.set(20, "b", b"gone", b"expired in the base", expire_ms=PAST, version=12),
            Record.set(20, "b", b"later", b"expires later", expire_ms=FUTURE, version=13),
            Record.set(20, "b", b"once", b"single read", flags=aof.SINGLE_READ, version=14),
            Record.set(20, "b", b"deleted", b"d", version=15),
            Record.set(20, "b", b"evicted", b"e", version=16),
            Record.set(20, "b", b"ttl-past", b"t", version=17),
            Record.set(20, "b", b"ttl-future", b"t", expire_ms=PAST + 10, version=18),
            Record.set(20, "c", b"flushed", b"f", version=19)]
    log1 = [Record.set(19, "b", b"stale", b"already in the base"),      # at or below 20
            Record.set(21, "b", b"plain", b"log value", version=21),
            Record.delete(22, "b", b"deleted"),
            Record.evict(23, "b", b"evicted"),
            Record.set_ttl(24, "b", b"ttl-past", PAST, version=24),
            Record.set_ttl(25, "b", b"ttl-future", FUTURE, version=25),
            Record.set(26, "b", b"dies", b"x", expire_ms=PAST, version=26),
            Record.expire(27, "b", b"never-there"),
            Record.flush(28, "c"),
            Record.set(29, "c", b"after-flush", b"y", version=29),
            Record.set(30, "nobody", b"k", b"for a bucket never created"),
            Record.token_revoke(31, "b", 1)]
    log2 = [Record.bucket_drop(40, "c"),
            Record.set(41, "c", b"after-drop", b"z"),                         # missing
            Record.bucket_create(42, "c", {"schema": "bytes"}),
            Record.set(43, "c", b"recreated", b"w", version=43),
            Record.set(44, "b", b"big-version", b"v", version=10 ** 12),
            Record.set(45, "b", b"once", b"again", flags=aof.SINGLE_READ, version=45)]
    path = _write(tmp_path, base, [log1, log2], 20)
    got = _both(recover, path)
    entries = {(e[0], e[1]): e[2:] for e in got["contents"]}
    assert entries == {
        ("b", b"plain"): (b"log value", 0, 0, 21),
        ("b", b"later"): (b"expires later", FUTURE, 0, 13),
        ("b", b"ttl-future"): (b"t", FUTURE, 0, 25),
        ("b", b"once"): (b"again", 0, entries[("b", b"once")][2], 45),
        ("b", b"big-version"): (b"v", 0, 0, 10 ** 12),
        ("c", b"recreated"): (b"w", 0, 0, 43),
    }
    assert entries[("b", b"once")][2] != 0                  # the single-read flag
    assert got["next_version"] > 10 ** 12                   # versions stay increasing
    assert got["missing"] == {"nobody": 1}      # "c" was created again afterwards
    assert got["expired"] == 3 and got["last_seq"] == 45
    assert got["keys_with_ttl"] == 2                        # later, ttl-future
    assert [t[8] for t in got["buckets"] if t[3] == "b"] == [()]    # token revoked


def test_the_bulk_path_takes_the_key_records_and_yields_only_the_others(tmp_path, recover):
    recs = [Record.bucket_create(1, "b", {"schema": "bytes"})] + \
           [Record.set(2 + i, "b", b"k%d" % i, b"v%d" % i, version=2 + i) for i in range(500)] + \
           [Record.flush(502, "b"), Record.set(503, "b", b"last", b"x", version=503)]
    path = _write(tmp_path, None, [recs], 0)
    r = recover(path, bulk=True)
    assert r.contents() == [("b", b"last", b"x", 0, 0, 503)]
    store = r.store
    store.set_logging(False)
    rec = replay(path, now_ms=NOW)
    rec.attach_bulk(BulkLoad(store))
    yielded = list(rec)                     # what reaches the Python loop
    assert [x.type for x in yielded] == [aof.BUCKET_CREATE, aof.FLUSH]
    assert rec.records == len(recs)


def test_random_histories_recover_the_same_both_ways(tmp_path, recover):
    rnd = random.Random(20261122)
    seq, base, parts, part = 0, None, [], []
    names = ["b0", "b1", "b2"]
    live = set()
    base_seq = 0

    def add(r):
        part.append(r)

    for step in range(3000):
        seq += 1
        if step == 1500:                    # the first half becomes a base file
            base_seq = seq - 1
            base = [r for p in parts + [part] for r in p]
            parts, part = [], []
        if step and step % 700 == 0 and part:
            parts.append(part)
            part = []
            seq += 1
        name = rnd.choice(names)
        x = rnd.random()
        if name not in live or x < 0.002:
            add(Record.bucket_create(seq, name, {"schema": "bytes"}))
            live.add(name)
            continue
        key = b"key-%d" % rnd.randrange(200)
        if x < 0.004:
            add(Record.bucket_drop(seq, name))
            live.discard(name)
        elif x < 0.006:
            add(Record.flush(seq, name))
        elif x < 0.55:
            exp = rnd.choice([0, 0, PAST - rnd.randrange(10 ** 6), FUTURE + rnd.randrange(10 ** 6)])
            add(Record.set(seq, name, key, os.urandom(rnd.randrange(0, 300)), expire_ms=exp,
                           flags=rnd.choice([0, 0, aof.SINGLE_READ]),
                           version=rnd.choice([0, seq])))
        elif x < 0.75:
            add(rnd.choice([Record.delete, Record.expire, Record.evict])(seq, name, key))
        else:
            add(Record.set_ttl(seq, name, key, rnd.choice([0, PAST, FUTURE]),
                               version=rnd.choice([0, seq])))
    parts.append(part)
    path = _write(tmp_path, base, parts, base_seq)
    got = _both(recover, path)
    assert got["keys"] > 50 and got["expired"] > 50 and got["keys_with_ttl"] > 10


def _damaged(tmp_path, where):
    recs = [Record.bucket_create(1, "b", {"schema": "bytes"})] + \
           [Record.set(2 + i, "b", b"k%d" % i, b"v" * 40, version=2 + i) for i in range(100)]
    path = _write(tmp_path, None, [recs], 0)
    log = os.path.join(path, sorted(n for n in os.listdir(path) if n.endswith(".bkl"))[-1])
    size = os.path.getsize(log)
    if where == "tail":
        os.truncate(log, size - 7)
    else:
        with open(log, "r+b") as f:                 # a flipped bit in record 50's value
            f.seek(size // 2)
            b = f.read(1)[0]
            f.seek(size // 2)
            f.write(bytes([b ^ 1]))
    return path


def test_a_truncated_tail_is_dropped_the_same_both_ways(tmp_path, recover):
    got = _both(recover, _damaged(tmp_path, "tail"))
    assert got["keys"] == 99 and got["last_seq"] == 100


def test_a_corrupt_middle_record_is_refused_or_skipped_the_same_both_ways(tmp_path, recover):
    path = _damaged(tmp_path, "middle")
    errors = []
    for bulk in (False, True):
        with pytest.raises(LogCorrupt) as e:
            recover(path, bulk=bulk)
        errors.append(str(e.value))
    assert errors[0] == errors[1] and "bukt check --fix" in errors[0]
    got = _both(recover, path, on_corrupt="load_good")
    assert got["keys"] == 99


def test_a_value_over_the_limit_fails_the_same_both_ways(tmp_path, recover):
    recs = [Record.bucket_create(1, "b", {"schema": "bytes"}),
            Record.set(2, "b", b"small", b"s"),
            Record.set(3, "b", b"large", b"L" * 5000)]
    path = _write(tmp_path, None, [recs], 0)
    for bulk in (False, True):
        with pytest.raises(ValueTooLarge):
            recover(path, bulk=bulk, max_value=4096)
