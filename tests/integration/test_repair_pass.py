"""The writer's repair pass (cext/table.pxi, THE REPAIR PASS): a stripe that a process
killed inside a write left with an odd seq is repaired by the writer process, at its
start and every repair.interval, so that a read-only reader (which cannot take the lock
that repairs it) gets its value instead of waiting; `bukt status` and the stats count
the stripes awaiting repair, and a read-only reader that waits in vain says that the
writer is not repairing.

Real processes: a writer (`bukt writer`), a child that dies holding a stripe's lock
with its seq odd (Store._die_mid_write), read-only attaches and the `bukt status`
command run from another directory."""
import json
import os
import subprocess
import sys

import pytest
from writer_harness import PY, ROOT, instance  # noqa: F401

import bukt
from bukt.errors import BuktError

KEY = b"the-key"
VALUE = b"the value"


def die_mid_write(inst, key=KEY):
    """A child process takes `key`'s stripe lock, makes its seq odd and exits."""
    code = ("import sys, bukt; s = bukt.attach(sys.argv[1]); "
            "s._die_mid_write('b', sys.argv[2].encode())")
    r = subprocess.run([PY, "-c", code, inst.name, key.decode()], cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    assert r.returncode == 70


def status(inst):
    """`bukt status --json` for the instance, run from / (exit code, report)."""
    r = subprocess.run([PY, "-m", "bukt.cli", "status", "--json", "--config", inst.conf],
                       cwd="/", env=dict(os.environ, PYTHONPATH=ROOT),
                       capture_output=True, text=True, timeout=60)
    return r.returncode, json.loads(r.stdout)


def awaiting(inst):
    s = bukt.attach(inst.name, readonly=True)
    try:
        return s.stripes_awaiting_repair(), s.stats()["stripes_awaiting_repair"]
    finally:
        s.close()


def readonly_get(inst, key=KEY):
    s = bukt.attach(inst.name, readonly=True)
    try:
        return s.bucket("b").get(key)
    finally:
        s.close()


@pytest.fixture
def loaded(instance):  # noqa: F811
    instance.configure(repair={"interval": "200ms"})
    writer = instance.start()
    s = instance.attach()
    try:
        s.create_bucket("b")
        s.bucket("b").set(KEY, VALUE)
    finally:
        s.close()
    return instance, writer


def test_a_running_writer_repairs_a_stripe_left_mid_write_for_readonly_readers(loaded):
    inst, writer = loaded
    die_mid_write(inst)
    # the writer's next pass repairs it: the read-only reader waits at most a few
    # repair periods, and gets the value (before: it waited 5 s and raised)
    assert readonly_get(inst) == VALUE
    assert awaiting(inst) == (0, 0)
    s = inst.attach()
    try:
        assert s.check() == []
        assert s.stats()["repairs"] >= 1
    finally:
        s.close()
    assert inst.stop(writer) == 0


def test_status_counts_stripes_awaiting_repair_until_the_writer_starts(loaded):
    inst, writer = loaded
    assert inst.stop(writer) == 0
    die_mid_write(inst)
    # with no writer, nobody repairs: status says so, and so do the stats
    assert awaiting(inst) == (1, 1)
    code, report = status(inst)
    assert code == 4 and not report["healthy"]  # no writer: a stopped service
    assert report["stripes_awaiting_repair"] == 1
    assert any("mid-write" in p for p in report["problems"])
    # a read-only reader waits a few repair periods and says that nobody repairs
    with pytest.raises(BuktError, match="not repairing"):
        readonly_get(inst)
    # a writer repairs it at its start
    writer = inst.start()
    assert readonly_get(inst) == VALUE
    code, report = status(inst)
    assert report["stripes_awaiting_repair"] == 0, report
    assert code == 0 and report["healthy"], report
    s = inst.attach()
    try:
        assert s.check() == []
    finally:
        s.close()
    assert inst.stop(writer) == 0


def test_repair_interval_is_a_duration_the_writer_publishes(loaded):
    inst, writer = loaded
    assert inst.info()["repair_period"] == pytest.approx(0.2)
    from bukt import config
    with pytest.raises(config.ConfigError, match="repair.interval"):
        config.load(None, env={"BUKT_REPAIR__INTERVAL": "10ms"})
    assert config.defaults().repair.interval == 1.0
    assert inst.stop(writer) == 0
