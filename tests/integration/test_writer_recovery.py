"""Starting the writer over data directories broken on purpose (operations.md, "Recovery
at start"): each case is recovered or refused as specified, and the message says so."""
import os
import re
import subprocess
import time

import pytest

from bukt.writer import aof
from bukt.writer import datadir
from bukt._core import FORMAT_VERSION
from writer_harness import PY, ROOT, instance, wait_for  # noqa: F401

pytestmark = pytest.mark.slow
N = 50


def _fill(inst, n=N, compact=False):
    """A writer run that sets k0..k<n-1>, optionally compacts, and stops cleanly."""
    w = inst.start()
    s = inst.attach()
    b = s.create_bucket("b")
    for i in range(n):
        b.set(b"k%d" % i, b"v%d" % i)
    s.close()
    if compact:
        assert _cli(inst, "compact", "--wait", "20").returncode == 0
    assert inst.stop(w) == 0
    inst.unlink_segment()


def _cli(inst, *args):
    return subprocess.run([PY, "-m", "bukt.cli", *args, "--config", inst.conf], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=ROOT))


def _last_log(inst):
    return os.path.join(inst.data_dir, datadir.read_manifest(inst.data_dir).logs[-1])


def _offsets(path):
    data = open(path, "rb").read()
    out, off = [], aof.FILE_HEADER_SIZE
    while off < len(data):
        out.append(off)
        off += int.from_bytes(data[off + 4:off + 8], "little")
    return out


def _keys(inst):
    s = inst.attach()
    try:
        b = s.bucket("b")
        return {i for i in range(N) if b.get(b"k%d" % i) == b"v%d" % i}
    finally:
        s.close()


def test_truncated_tail_is_dropped_and_reported(instance):
    _fill(instance)
    log = _last_log(instance)
    os.truncate(log, os.path.getsize(log) - 5)
    w = instance.start()
    assert re.search(r"dropped a truncated last record at byte \d+ .*normal result of a crash",
                     instance.log())
    assert _keys(instance) == set(range(N - 1))
    s = instance.attach()
    s.bucket("b").set(b"after", b"x")               # appends after the cut
    s.close()
    assert instance.stop(w) == 0
    instance.unlink_segment()
    w = instance.start()
    s = instance.attach()
    assert s.bucket("b").get(b"after") == b"x"
    s.close()
    instance.stop(w)


def test_prepared_tail_after_a_kill_is_quiet_and_a_clean_stop_cuts_it(instance):
    w = instance.start()
    s = instance.attach()
    b = s.create_bucket("b")
    for i in range(N):
        b.set(b"k%d" % i, b"v%d" % i)
    s.close()
    wait_for(lambda: instance.info()["flushed_seq"] >= N, 10)
    log = _last_log(instance)
    records_end = instance.info()["log_size"]
    instance.kill(w)
    # the log ends in the zeros its writer kept ahead of its records (log_prepare)
    assert records_end < os.path.getsize(log) <= records_end + (4 << 20)
    assert not any(open(log, "rb").read()[records_end:])
    r = _cli(instance, "check")
    assert r.returncode == 0 and re.search(r"bytes \(\d+ of them zeros prepared for the next "
                                           r"records\): ok", r.stdout), r.stdout
    instance.unlink_segment()
    w = instance.start()                            # cold: every key, nothing "dropped"
    assert instance.info()["log_size"] == records_end
    assert "dropped" not in instance.log() and "truncated" not in instance.log()
    assert _keys(instance) == set(range(N))
    s = instance.attach()
    s.bucket("b").set(b"after", b"x")               # written inside the zeros
    s.close()
    assert instance.stop(w) == 0
    end, report = os.path.getsize(log), aof.Scan(log)
    assert [r.key for r in aof.read_log(log, report=report)][-1] == b"after"
    assert report.good_end == end and report.prepared == 0     # a clean stop cut them off


def test_torn_last_record_before_the_prepared_zeros_is_dropped(instance):
    w = instance.start()
    s = instance.attach()
    b = s.create_bucket("b")
    for i in range(N):
        b.set(b"k%d" % i, b"v%d" % i)
    s.close()
    wait_for(lambda: instance.info()["flushed_seq"] >= N, 10)
    log = _last_log(instance)
    instance.kill(w)
    last = _offsets_before(log, instance)[-1]
    with open(log, "r+b") as f:                     # a torn write of the last record
        f.seek(last + 46)
        f.write(bytes(8))
    instance.unlink_segment()
    w = instance.start()
    assert re.search(r"dropped a truncated last record at byte %d " % last, instance.log())
    assert _keys(instance) == set(range(N - 1))
    instance.stop(w)


def _offsets_before(path, inst):
    """Record offsets of a log whose records end where zeros begin."""
    data = open(path, "rb").read()
    out, off = [], aof.FILE_HEADER_SIZE
    while off + 8 <= len(data) and any(data[off:off + 8]):
        out.append(off)
        off += int.from_bytes(data[off + 4:off + 8], "little")
    return out


def test_corrupt_middle_record_refuses_to_start_then_check_fix_repairs(instance):
    _fill(instance)
    log = _last_log(instance)
    bad = _offsets(log)[20]
    with open(log, "r+b") as f:
        f.seek(bad + 50)
        byte = f.read(1)
        f.seek(bad + 50)
        f.write(bytes([byte[0] ^ 0x10]))
    code, out = instance.run_to_exit()
    assert code == 2
    assert f"{log}: corrupt record at byte {bad}" in out
    assert "bukt check --fix" in out and "load_good" in out
    r = _cli(instance, "check")
    assert r.returncode == 1 and "DAMAGED" in r.stdout and f"bytes {bad}-" in r.stdout
    r = _cli(instance, "check", "--fix")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"fixed {log}: cut at byte {bad}" in r.stdout
    assert any(n.startswith(os.path.basename(log) + ".bad-") for n in os.listdir(instance.data_dir))
    w = instance.start()
    # the bucket's creation is record 0, so k0..k18 precede the damaged record 20
    assert _keys(instance) == set(range(19))
    instance.stop(w)


def test_corrupt_middle_record_with_load_good_loads_the_rest_and_compacts(instance):
    _fill(instance)
    log = _last_log(instance)
    bad = _offsets(log)[20]
    with open(log, "r+b") as f:
        f.seek(bad + 50)
        f.write(b"\xff")
    instance.configure(recovery={"on_corrupt": "load_good"})
    w = instance.start()
    assert re.search(r"skipped bytes \d+-\d+", instance.log())
    assert _keys(instance) == set(range(N)) - {19}
    m = datadir.read_manifest(instance.data_dir)
    for _ in range(200):                            # compacts at once: the bad log goes
        m = datadir.read_manifest(instance.data_dir)
        if m.base:
            break
        time.sleep(0.05)
    assert m.base and os.path.basename(log) not in m.logs
    instance.stop(w)


def test_empty_log_file_starts_empty_and_takes_writes(instance):
    _fill(instance)
    os.truncate(_last_log(instance), 0)
    w = instance.start()
    assert "the log is empty" in instance.log()
    s = instance.attach()
    assert s.buckets() == []
    s.create_bucket("b").set(b"new", b"1")
    s.close()
    assert instance.stop(w) == 0
    instance.unlink_segment()
    w = instance.start()
    s = instance.attach()
    assert s.bucket("b").get(b"new") == b"1"
    s.close()
    instance.stop(w)


def test_missing_base_is_refused_unless_load_good(instance):
    _fill(instance, compact=True)
    m = datadir.read_manifest(instance.data_dir)
    base = os.path.join(instance.data_dir, m.base)
    os.unlink(base)
    code, out = instance.run_to_exit()
    assert code == 2
    assert f"{base}: the base file MANIFEST lists is missing" in out
    instance.configure(recovery={"on_corrupt": "load_good"})
    w = instance.start()
    assert "recovering without it" in instance.log()
    instance.stop(w)


def test_base_without_its_log_is_loaded_and_a_new_log_started(instance):
    _fill(instance, compact=True)
    m = datadir.read_manifest(instance.data_dir)
    for name in m.logs:
        os.unlink(os.path.join(instance.data_dir, name))
    datadir._write_manifest(instance.data_dir, m._replace(logs=()))
    w = instance.start()
    assert "has no log after it" in instance.log()
    assert _keys(instance) == set(range(N))
    s = instance.attach()
    s.bucket("b").set(b"after", b"x")
    s.close()
    assert instance.stop(w) == 0
    instance.unlink_segment()
    w = instance.start()
    assert _keys(instance) == set(range(N))
    s = instance.attach()
    assert s.bucket("b").get(b"after") == b"x"
    s.close()
    instance.stop(w)


def _imported_before_ready(inst):
    """The modules the last writer imported before its "ready" line: started with
    PYTHONPROFILEIMPORTTIME=1, it lists each import on stderr, which its log shares."""
    text = inst.log()
    return set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \| *(\S+)$",
                          text[:text.index(" ready: ")], re.M))


def test_a_warm_start_loads_no_base_file_code(instance):
    # The base file's reader and writer (bukt/writer/basefile.py) serve a cold start and a
    # compaction; a warm restart, timed from exec, leaves them unimported.
    _fill(instance, compact=True)
    profile = {"PYTHONPROFILEIMPORTTIME": "1"}
    w = instance.start(env=profile)
    assert "cold start" in instance.log()
    cold = _imported_before_ready(instance)
    instance.kill(w)
    w = instance.start(env=profile)
    assert "warm start" in instance.log()
    warm = _imported_before_ready(instance)
    assert _keys(instance) == set(range(N))
    instance.stop(w)
    assert {"bukt.writer.process", "bukt.writer.aof", "bukt.writer.datadir"} <= warm     # the listing works
    assert "bukt.writer.basefile" in cold                                  # and shows it, loaded
    assert "bukt.writer.basefile" not in warm


def test_files_without_manifest_are_refused(instance):
    _fill(instance)
    os.unlink(os.path.join(instance.data_dir, "MANIFEST"))
    code, out = instance.run_to_exit()
    assert code == 2 and "but no MANIFEST" in out


def test_cold_flag_and_a_foreign_segment_recover_from_disk(instance):
    _fill(instance)
    w = instance.start()
    assert "cold start" in instance.log()          # the segment was removed by _fill
    instance.kill(w)
    w = instance.start()
    assert "warm start" in instance.log()
    instance.kill(w)
    w = instance.start(cold=True)
    assert "cold start, not a warm restart: --cold" in instance.log()
    assert _keys(instance) == set(range(N))
    instance.kill(w)
    os.unlink(os.path.join(instance.data_dir, "SEGMENT"))
    w = instance.start()
    assert "names no segment generation" in instance.log()
    assert _keys(instance) == set(range(N))
    instance.stop(w)


def test_a_surviving_segment_of_another_format_is_recovered_from_disk(instance):
    """After an upgrade that changed the segment's layout (BK_FORMAT), the segment
    that survived the old writer is never read: the new one recovers cold from the
    data directory and takes its place."""
    _fill(instance)
    w = instance.start()
    instance.kill(w)                                # the segment survives
    with open(f"/dev/shm/bukt-{instance.name}", "r+b") as f:
        f.seek(8)
        f.write((FORMAT_VERSION - 1).to_bytes(4, "little"))
    w = instance.start()
    log = instance.log()
    assert f"has format {FORMAT_VERSION - 1}" in log and "cold start" in log, log
    assert _keys(instance) == set(range(N))
    instance.stop(w)


def test_a_second_writer_is_refused(instance):
    w = instance.start()
    code, out = instance.run_to_exit()
    assert code == 2 and "another process (a running writer?) holds this data directory" in out
    instance.stop(w)


def _definitions(inst):
    """Every bucket's settings and tokens, which tokens authenticate, and the keys."""
    import hashlib
    s = inst.attach()
    try:
        out = {name: (s.bucket_info(name), sorted(s.tokens(name))) for name in s.buckets()}
        found = {t: s.find_token(hashlib.sha256(t).digest()) for t in (b"a", b"b", b"c")}
        keys = {name: {k: s.bucket(name).get(k) for k in (b"k", b"n", b"old", b"new")}
                for name in out}
        return out, found, keys
    finally:
        s.close()


def test_bucket_settings_and_tokens_survive_cold_starts_from_the_log_and_a_base(instance):
    """Bucket creation, token changes and drops are logged, so a cold start restores
    buckets with their settings and tokens: from the log alone, then from a base file."""
    import hashlib
    from bukt import ADMIN, READ, WRITE
    w = instance.start()
    s = instance.attach()
    s.create_bucket("plain").set(b"k", b"v")
    s.create_bucket("counters", schema="int", eviction="none", default_ttl=60)
    s.bucket("counters").incr(b"n", 5)
    s.create_bucket("cache", persist=False).set(b"k", b"not logged")
    s.create_bucket("dropped").set(b"k", b"gone")
    s.drop_bucket("dropped")
    s.create_bucket("again").set(b"old", b"of the first bucket of that name")
    s.drop_bucket("again")
    s.create_bucket("again", schema="str").set(b"new", "of the second")
    first = s.add_token("plain", hashlib.sha256(b"a").digest(), READ | WRITE)
    s.add_token("plain", hashlib.sha256(b"b").digest(), READ)
    s.revoke_token("plain", first if isinstance(first, int) else first[0])
    s.add_token("counters", hashlib.sha256(b"c").digest(), ADMIN)
    s.close()
    before = _definitions(instance)
    defs, found, keys = before
    assert set(defs) == {"plain", "counters", "cache", "again"}
    assert found[b"a"] is None and found[b"b"] and found[b"c"]
    assert instance.stop(w) == 0
    instance.unlink_segment()
    w = instance.start()                                # cold, from the log alone
    assert "cold start" in instance.log()
    after = _definitions(instance)
    before[2]["cache"] = {k: None for k in before[2]["cache"]}  # persist=False: keys gone
    assert after == before
    assert _cli(instance, "compact", "--wait", "20").returncode == 0
    assert instance.stop(w) == 0
    assert datadir.read_manifest(instance.data_dir).base
    instance.unlink_segment()
    w = instance.start()                                # cold, from the base file
    assert "cold start" in instance.log()
    assert _definitions(instance) == before
    assert instance.stop(w) == 0


def test_keys_with_a_ttl_are_counted_exactly_after_cold_and_warm_starts(instance, tmp_path):
    clock = tmp_path / "now"
    t0 = int(time.time() * 1000)
    clock.write_text(str(t0))
    env = {"BUKT_FAKE_TIME_FILE": str(clock)}
    w = instance.start(env=env)
    s = instance.attach()
    s.set_time(t0)
    b = s.create_bucket("b")
    d = s.create_bucket("d", default_ttl=600)
    for i in range(300):
        b.set(b"k%d" % i, b"v", ttl=600 if i % 3 == 0 else None)    # 100 with a ttl
    for i in range(0, 30):
        b.expire(b"k%d" % (3 * i + 1), 900)          # +30
        b.persist(b"k%d" % (3 * i))                  # -30
    b.delete(*[b"k%d" % (3 * i + 1) for i in range(10)])            # -10
    b.incr(b"n", ttl=600)                            # +1
    for i in range(20):
        d.set(b"d%d" % i, b"v")                      # +20
    expected = 100 + 30 - 30 - 10 + 1 + 20
    assert s.stats()["keys_with_ttl"] == expected and s.check() == []
    s.close()
    instance.kill(w)                                 # warm: the segment survives
    w = instance.start(env=env)
    assert "ready: warm start" in instance.log()
    s = instance.attach()
    assert s.stats()["keys_with_ttl"] == expected and s.check() == []
    s.close()
    assert instance.stop(w) == 0
    instance.unlink_segment()                        # cold: from the log
    w = instance.start(env=env)
    assert "ready: cold start" in instance.log()
    s = instance.attach()
    assert s.stats()["keys_with_ttl"] == expected and s.check() == []
    s.close()
    clock.write_text(str(t0 + 700_000))              # every ttl but the expire()d ones'
    wait_for(lambda: _stats(instance)["keys_with_ttl"] == 20, timeout=10,
             what="active expiry")
    s = instance.attach()
    assert s.check() == []
    s.close()
    instance.stop(w)


def _stats(inst):
    s = inst.attach()
    try:
        return s.stats()
    finally:
        s.close()
