"""Transactions on a persisted bucket with a real writer process: what atomic()
applied is in the log, a cold start from the log gives back exactly the table, also
after a process was killed in the middle of a transaction (whose changes made before
the kill stay, the rest never happen); limits.max_transaction_keys from the config
reaches the segment."""
import os
import subprocess
import textwrap

import pytest
from writer_harness import PY, ROOT, instance  # noqa: F401

from bukt import errors

pytestmark = pytest.mark.slow


def _die_mid_transaction(inst, keys, after):
    """A separate process runs a transaction over `keys` (set each to b"new") and is
    killed, holding its stripes, after `after` of the changes."""
    code = textwrap.dedent(f"""
        import bukt
        s = bukt.attach({inst.name!r})
        s._crash_in_atomic({after})
        s.bucket("b").atomic([("set", (k, b"new")) for k in {keys!r}])
    """)
    p = subprocess.run([PY, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                       timeout=60, capture_output=True)
    assert p.returncode == 70, p.stderr


def test_transactions_survive_a_cold_start_and_a_kill_mid_transaction(instance):
    instance.configure(limits={"max_transaction_keys": 8})
    w = instance.start()
    s = instance.attach()
    try:
        assert s.limits["max_transaction_keys"] == 8
        b = s.create_bucket("b")
        for i in range(8):
            b.set(f"acct{i}", b"100")
        res = b.atomic([("incr", ("acct0", -30)), ("incr", ("acct1", 30)),
                        ("set", ("note", b"moved"), {"ttl": 3600}), ("delete", ("acct7",)),
                        ("expire", ("acct6", 3600))],
                       watched={"acct0": b.version("acct0")})
        assert res[:2] == [70, 130]
        with pytest.raises(errors.LimitExceeded):
            b.atomic([("get", (f"acct{i}",)) for i in range(9)])
        keys = [f"k{i}" for i in range(6)]
        for k in keys:
            b.set(k, b"old")
        _die_mid_transaction(instance, keys, 3)
        # the readers repair each stripe on its own: three changes made, three not
        assert b.mget(keys) == [b"new"] * 3 + [b"old"] * 3
        assert s.check() == []
    finally:
        s.close()
    before = instance.contents()
    assert instance.stop(w) == 0
    instance.unlink_segment()
    w = instance.start()                    # no segment: recovered from the log
    try:
        after = instance.contents()
        assert after == before
        assert after[("b", b"acct0")][0] == b"70" and ("b", b"acct7") not in after
        assert after[("b", b"note")][1] > 0 and after[("b", b"acct6")][1] > 0
        s = instance.attach()
        assert s.limits["max_transaction_keys"] == 8
        s.close()
    finally:
        assert instance.stop(w) == 0
