"""A cold start rebuilds exactly the live set the files describe (design.md invariant 10,
"Recovery"): from a base file written in hash order as from a log, at any fill the
segment that wrote them reached; when the files truly cannot fit (memory lowered), the
start refuses and names the memory needed unless recovery.evict allows eviction, and
`bukt check` says so before a start is tried.

Keys are set through the local API while a real writer logs them; compactions and cold
starts go through real writer processes."""
import os
import re
import subprocess

import pytest

import bukt
from writer_harness import PY, ROOT, instance  # noqa: F401

pytestmark = pytest.mark.slow
VALUE = b"v" * 100


def _cli(inst, *args):
    return subprocess.run([PY, "-m", "bukt.cli", *args, "--config", inst.conf], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=ROOT))


def _live(inst):
    """{(bucket, key): value} of the running segment."""
    return {k: v[0] for k, v in inst.contents().items()}


def _check_segment(inst):
    s = inst.attach()
    try:
        assert s.check() == []
    finally:
        s.close()


def _fill_and_compact(inst, n, eviction):
    """A writer run that sets n keys of 100 B into bucket b, compacts and stops."""
    w = inst.start()
    s = inst.attach()
    b = s.create_bucket("b", eviction=eviction)
    for i in range(n):
        b.set(b"key%012d" % i, VALUE)
    assert s.stats()["keys"] == n
    s.close()
    r = _cli(inst, "compact", "--wait", "300")
    assert r.returncode == 0, r.stdout + r.stderr
    assert inst.stop(w) == 0


def _cold_start_keeps_all(inst, n):
    inst.unlink_segment()
    w = inst.start(cold=True, wait=False)
    inst.wait_ready(w, timeout=600)
    live = _live(inst)
    assert len(live) == n
    assert live == {("b", b"key%012d" % i): VALUE for i in range(n)}
    _check_segment(inst)
    return w


@pytest.mark.parametrize("n,memory,eviction", [
    (220_000, "256MiB", "lru"),
    (250_000, "256MiB", "none"),
    (500_000, "256MiB", "lru"),
    (500_000, "256MiB", "none"),
    (1_000_000, "256MiB", "lru"),
    (1_000_000, "256MiB", "none"),
])
def test_a_cold_start_from_a_base_file_keeps_every_key(instance, n, memory, eviction):
    # before: 250k and more in an `eviction: none` bucket refused to start ("index
    # full: stripe 0 holds 448 keys"); an lru bucket lost 435 of 500k keys, 1,651 of
    # 1M; after: all kept
    instance.configure(memory=memory, fsync="no", limits={"ring_size": "16MiB"},
                       compaction={"min_log_bytes": "4GiB"})
    _fill_and_compact(instance, n, eviction)
    instance.stop(_cold_start_keeps_all(instance, n))


def test_compact_and_cold_start_cycles_at_1m_keys_lose_nothing(instance):
    # before: each cycle lost more (1,539, then 2,798, then 3,908 keys); after: none
    n = 1_000_000
    instance.configure(memory="256MiB", fsync="no", limits={"ring_size": "16MiB"},
                       compaction={"min_log_bytes": "4GiB"})
    _fill_and_compact(instance, n, "lru")
    for cycle in range(3):
        w = _cold_start_keeps_all(instance, n)
        r = _cli(instance, "compact", "--wait", "300")
        assert r.returncode == 0, r.stdout + r.stderr
        assert instance.stop(w) == 0


def _mixed_fill(inst):
    """The full-lru-segment history: 300k x 100 B, 600 x 50 KiB, 20k x 1 KiB, then 100k
    overwrites of mixed sizes, logged by a writer; the live set at the stop."""
    w = inst.start()
    s = inst.attach()
    b = s.create_bucket("b")
    for i in range(300_000):
        b.set(b"s%d" % i, b"s" * 100)
    for i in range(600):
        b.set(b"l%d" % i, b"l" * (50 << 10))
    for i in range(20_000):
        b.set(b"m%d" % i, b"m" * 1024)
    sizes = (10, 100, 700, 1024, 3000, 20000)
    for i in range(100_000):
        key = (b"s%d" % (i * 7 % 300_000), b"m%d" % (i % 20_000), b"l%d" % (i % 600))[i % 3]
        b.set(key, b"o" * sizes[i % len(sizes)])
    assert s.stats()["evictions_total"] > 0        # the segment was full
    s.close()
    assert inst.stop(w) == 0
    return _live(inst)


def test_a_cold_start_of_a_full_lru_segment_from_the_log_keeps_the_live_set(instance):
    # before: 3,131 of 49,455 live keys gone, the replay's 28,842 evictions unsaid;
    # after: exactly the live set
    instance.configure(memory="64MiB", fsync="no", limits={"ring_size": "4MiB"},
                       compaction={"min_log_bytes": "4GiB"})
    before = _mixed_fill(instance)
    instance.unlink_segment()
    w = instance.start(cold=True, wait=False)
    instance.wait_ready(w, timeout=600)
    after = _live(instance)
    assert len(after) == len(before) and after == before
    assert "loading each key's final state instead" in instance.log()
    _check_segment(instance)
    # and after a compaction, from the base file
    r = _cli(instance, "compact", "--wait", "300")
    assert r.returncode == 0, r.stdout + r.stderr
    assert instance.stop(w) == 0
    instance.unlink_segment()
    w = instance.start(cold=True, wait=False)
    instance.wait_ready(w, timeout=600)
    assert _live(instance) == before
    assert instance.stop(w) == 0


def test_less_memory_than_the_live_set_refuses_unless_recovery_evict(instance):
    instance.configure(memory="64MiB", fsync="no", limits={"ring_size": "4MiB"})
    w = instance.start()
    s = instance.attach()
    b = s.create_bucket("b")
    for i in range(30_000):
        b.set(b"k%d" % i, b"x" * 1000)
    s.close()
    assert instance.stop(w) == 0
    before = _live(instance)
    assert len(before) == 30_000
    instance.unlink_segment()
    instance.configure(memory="16MiB")
    # `bukt check` finds what the start would refuse, and names the same figure
    r = _cli(instance, "check")
    assert r.returncode != 0
    need = re.search(r"needs memory of at least (\d+) bytes", r.stdout).group(1)
    code, out = instance.run_to_exit(cold=True, timeout=300)
    assert code != 0
    assert f"needs memory of at least {need} bytes" in out
    assert "recovery.evict: true" in out
    instance.configure(memory=int(need))
    assert _cli(instance, "check").returncode == 0
    w = instance.start(cold=True, wait=False)
    instance.wait_ready(w, timeout=300)
    assert _live(instance) == before            # the figure named is enough
    assert instance.stop(w) == 0
    instance.unlink_segment()
    instance.configure(memory="16MiB", recovery={"evict": True})
    w = instance.start(cold=True, wait=False)
    instance.wait_ready(w, timeout=300)
    after = _live(instance)
    assert 0 < len(after) < len(before)
    assert all(before[k] == v for k, v in after.items())
    evicted = int(re.search(r"(\d+) keys were evicted to start", instance.log()).group(1))
    assert evicted == len(before) - len(after)
    _check_segment(instance)
    assert instance.stop(w) == 0
