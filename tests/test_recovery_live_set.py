"""A cold start rebuilds exactly the live set the files describe (design.md invariant 10,
"Recovery"): from a base file written in hash order as from a log.

Keys are set through the local API while a real writer logs them; compactions and cold
starts go through real writer processes."""
import os
import subprocess

import pytest

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
