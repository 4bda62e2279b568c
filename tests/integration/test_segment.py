"""The segment itself: create, attach, the checks on attach, modes, limits, fork."""
import os
import stat
import struct
import subprocess
import sys

import pytest

import bukt
from bukt import errors
from names import unique_name


def test_create_then_attach_sees_the_same_data(store, segname):
    store.create_bucket("b", persist=False).set(b"k", b"v")
    other = bukt.attach(segname)
    assert other.bucket("b").get(b"k") == b"v"
    assert other.generation == store.generation
    other.close()


def test_create_twice_is_segment_exists(store, segname):
    with pytest.raises(errors.SegmentExists):
        bukt.create(segname, size="16MiB")


def test_attach_missing_is_segment_not_found():
    with pytest.raises(errors.SegmentNotFound, match="start the service"):
        bukt.attach(unique_name("missing"))


def test_wrong_magic_is_segment_invalid(store, segname):
    with open(f"/dev/shm/bukt-{segname}", "r+b") as f:
        f.write(b"NOTBUKT!")
    with pytest.raises(errors.SegmentInvalid, match="magic"):
        bukt.attach(segname)


def test_wrong_format_is_format_mismatch(store, segname):
    with open(f"/dev/shm/bukt-{segname}", "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<I", 999))
    with pytest.raises(errors.FormatMismatch, match="format 999"):
        bukt.attach(segname)


def test_too_small_file_is_segment_invalid(segname):
    with open(f"/dev/shm/bukt-{segname}", "wb") as f:
        f.write(b"x" * 100)
    with pytest.raises(errors.SegmentInvalid):
        bukt.attach(segname)


def test_mode_is_applied_despite_umask(segname):
    old = os.umask(0o077)
    try:
        s = bukt.create(segname, size="16MiB", mode=0o660)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(f"/dev/shm/bukt-{segname}").st_mode) == 0o660
    s.close()


def test_default_mode_is_0600(store, segname):
    assert stat.S_IMODE(os.stat(f"/dev/shm/bukt-{segname}").st_mode) == 0o600


def test_memory_is_reserved_at_creation_not_faulted_later(segname):
    # tmpfs grows a sparse file lazily; posix_fallocate must reserve it up front, so a
    # segment that cannot be backed fails now with a clear error, not SIGBUS later. The
    # failure is provoked with RLIMIT_FSIZE in a child (filling the real /dev/shm would
    # take the machine's memory with it).
    code = f"""
import resource, signal, sys
import bukt
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))
try:
    bukt.create({segname!r}, size="16MiB")
except bukt.errors.SegmentFull as e:
    print(e)
    sys.exit(3)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "cannot reserve" in r.stdout and "File too large" in r.stdout
    assert not os.path.exists(f"/dev/shm/bukt-{segname}")
    s = bukt.create(segname, size="16MiB")
    st = os.stat(f"/dev/shm/bukt-{segname}")
    assert st.st_blocks * 512 >= 16 << 20
    s.close()


def test_readonly_attach_reads_and_refuses_writes(store, segname):
    b = store.create_bucket("b", persist=False)
    b.set(b"k", b"v")
    b.set(b"once", b"x", single_read=True)
    ro = bukt.attach(segname, readonly=True)
    rb = ro.bucket("b")
    assert rb.get(b"k") == b"v"
    assert rb.exists(b"k", b"once") == 2
    for call in (lambda: rb.set(b"k", b"w"), lambda: rb.delete(b"k"),
                 lambda: rb.incr(b"n"), lambda: ro.create_bucket("c"),
                 lambda: rb.get(b"once"), lambda: rb.flush(), lambda: ro.expire_some()):
        with pytest.raises(errors.ReadOnly):
            call()
    assert b.get(b"k") == b"v" and b.get(b"once") == b"x"
    ro.close()


def test_segment_too_small_for_its_limits(segname):
    with pytest.raises(errors.InvalidArgument, match="max_value"):
        bukt.create(segname, size="1MiB")


@pytest.mark.parametrize("kw", [dict(max_key=0), dict(max_key=70000), dict(max_value=0),
                                dict(max_buckets=0), dict(size_factor=1.0)])
def test_bad_limits_are_refused(segname, kw):
    with pytest.raises(errors.InvalidArgument):
        bukt.create(segname, size="16MiB", **kw)


def test_store_survives_fork_and_child_counts_apart(store):
    b = store.create_bucket("b", persist=False)
    b.set(b"k", b"v")
    pid = os.fork()
    if pid == 0:  # child: the inherited mapping works and gets its own counter row
        ok = b.get(b"k") == b"v" and b.set(b"child", b"1") is not None
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b.get(b"child") == b"1"
    assert b.stats()["reads"] == 2 and b.stats()["writes"] == 2


def test_another_interpreter_sees_writes(store, segname):
    store.create_bucket("b", persist=False).set(b"k", b"from parent")
    code = ("import bukt; s = bukt.attach(%r); b = s.bucket('b'); "
            "assert b.get(b'k') == b'from parent'; b.set(b'k2', b'from child')" % segname)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert store.bucket("b").get(b"k2") == b"from child"


def test_close_then_use_is_an_error(segname):
    s = bukt.create(segname, size="16MiB")
    b = s.create_bucket("b", persist=False)
    s.close()
    with pytest.raises(errors.BuktError, match="closed"):
        b.get(b"k")


def test_unlink_removes_the_name(segname):
    s = bukt.create(segname, size="16MiB")
    s.unlink()
    with pytest.raises(errors.SegmentNotFound):
        bukt.attach(segname)
    s.close()


def test_a_closed_store_refuses_every_call_instead_of_crashing(segname):
    """After close() the store's pointers point at unmapped memory: each public call
    must be a BuktError, not a segfault (run in a child, so a crash fails the test
    instead of killing the run)."""
    probe = f'''
import bukt
from bukt import _core
s = bukt.create({segname!r}, size="16MiB")
b = s.create_bucket("b")
s.add_token("b", bytes(32), 1)
s.close()
calls = [
    lambda: s.check(), lambda: s.stats(), lambda: s.buckets(), lambda: s.bucket("b"),
    lambda: s.bucket_info("b"), lambda: s.tokens("b"), lambda: s.find_token(bytes(32)),
    lambda: s.has_token(b, 1, 1), lambda: s.create_bucket("c"), lambda: s.drop_bucket("b"),
    lambda: s.add_token("b", bytes(range(32)), 1), lambda: s.revoke_token("b", 1),
    lambda: s.recount(), lambda: s.expire_some(), lambda: s.wait_durable(1, 0.01),
    lambda: s.ring_read(), lambda: s.ring_release(0), lambda: s.ring_flushed(0),
    lambda: s.ring_position(), lambda: s.ring_free(), lambda: s.ring_claim_room(1, 1.0),
    lambda: s.ring_claim_drop(1), lambda: s.writer_info(), lambda: s.writer_publish(pid=1),
    lambda: s.bucket_table(), lambda: s.dump_stripes(0, 1), lambda: s.generation,
    lambda: s.limits, lambda: s.now_ms(), lambda: _core.ring_claim(s),
    lambda: _core.ring_idle_wait(s, 0.01), lambda: _core.expire_position(s),
    lambda: _core.writer_doorbell(s), lambda: b.get(b"k"), lambda: b.set(b"k", b"v"),
]
for i, call in enumerate(calls):
    try:
        call()
    except bukt.BuktError as e:
        assert "closed" in str(e), (i, e)
    else:
        raise AssertionError(f"call {{i}} answered on a closed store")
s.unlink()
print("ok", len(calls))
'''
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("ok"), (r.returncode, r.stderr)


def test_meta_epoch_moves_after_every_bucket_table_change(store, segname):
    """Store.meta_epoch moves after each create, drop, token add and token revoke, made
    by this process or another attached one, and only then: the TCP worker re-checks a
    session's token only when it moved (bukt/tcp/_epoll.pyx), so a change it missed would
    leave a revoked token working."""
    import hashlib
    e0 = store.meta_epoch
    assert e0 > 0                                     # 0 stands for "closed"
    b = store.create_bucket("m", persist=False)
    e1 = store.meta_epoch
    assert e1 > e0
    b.set("k", b"v")
    b.get("k")
    assert store.meta_epoch == e1                     # data does not move it
    tid = store.add_token("m", hashlib.sha256(b"t").digest(), bukt.READ)
    e2 = store.meta_epoch
    assert e2 > e1
    code = ("import sys, bukt; s = bukt.attach(sys.argv[1]); "
            "assert s.revoke_token('m', int(sys.argv[2])); s.close()")
    subprocess.run([sys.executable, "-c", code, segname, str(tid)], check=True)
    e3 = store.meta_epoch
    assert e3 > e2                                    # another process's revoke
    store.drop_bucket("m")
    assert store.meta_epoch > e3
    assert store.check() == []
