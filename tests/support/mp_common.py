"""Helpers shared by the multi-process tests (tests/test_mp_*.py).

Values that check themselves: every value the multi-process tests write carries a
header with its own length, the key it was written under, a bucket tag, the id of
the writing process and that writer's counter, and a CRC-32 of everything after the
CRC. A reader that gets a torn value (bytes of two writes), a value of another key
or of another bucket, or bytes that no writer wrote, fails `check_value`.

    offset  size  field
    0       4     crc32 of bytes 4..16+k, continued from the crc32 of bytes 16+k..end
                  (the payload's checksum first, so a fixed payload's can be cached)
    4       4     total length of the value
    8       2     writer id
    10      1     bucket tag
    11      1     key length (k)
    12      4     writer's counter
    16      k     the key
    16+k    ...   payload (first 8 bytes: absolute expiry in ms for TTL keys)

Also: unique segment names, a bounded wait for processes, a guard that turns a hang
into a test failure, and a process that dies holding a stripe's lock.
"""
import contextlib
import faulthandler
import os
import signal
import struct
import time
import zlib

from names import unique_name, unlink_areas   # noqa: F401  (the tests import them from here)

HDR = struct.Struct("<IIHBBI")          # crc, total, wid, tag, klen, ctr
assert HDR.size == 16

_POOL = os.urandom(1 << 17) * 2         # payload source: slices of random bytes


def unlink_segment(name):
    """The segment and every area named after it."""
    unlink_areas(name)


def min_size(key):
    return HDR.size + len(key)


_CRC_CACHE = {}


def make_value(key, tag, wid, ctr, size, extra=b"", fixed_payload=False):
    """A self-checking value of exactly `size` bytes (at least min_size(key) +
    len(extra)), at most 128 KiB. The payload bytes vary with writer and counter,
    unless `fixed_payload` (then they depend on the size only and their checksum is
    cached: cheap values for tests that want writers to spend their time in the
    table rather than in zlib)."""
    size = max(size, HDR.size + len(key) + len(extra))
    n = size - HDR.size - len(key) - len(extra)
    assert n <= 1 << 17, "values of up to 128 KiB"
    start = (n if fixed_payload else ctr * 7919 + wid * 104729) % (1 << 17)
    payload = extra + _POOL[start:start + n]
    if fixed_payload and not extra:
        pcrc = _CRC_CACHE.get(n)
        if pcrc is None:
            pcrc = _CRC_CACHE[n] = zlib.crc32(payload)
    else:
        pcrc = zlib.crc32(payload)
    head = struct.pack("<IHBBI", size, wid, tag, len(key), ctr) + key
    return struct.pack("<I", zlib.crc32(head, pcrc)) + head + payload


class BadValue(AssertionError):
    pass


def check_value(value, key, tag):
    """(wid, ctr, payload) of a sound value written under `key` in the bucket of
    `tag`; BadValue otherwise."""
    if not isinstance(value, bytes):
        raise BadValue(f"{key!r}: value of type {type(value).__name__}")
    if len(value) < HDR.size:
        raise BadValue(f"{key!r}: value of {len(value)} bytes is shorter than a header")
    crc, total, wid, vtag, klen, ctr = HDR.unpack_from(value)
    if total != len(value):
        raise BadValue(f"{key!r}: value says {total} bytes, has {len(value)} (torn?)")
    if klen > len(value) - HDR.size or \
            zlib.crc32(value[4:HDR.size + klen], zlib.crc32(value[HDR.size + klen:])) != crc:
        raise BadValue(f"{key!r}: checksum mismatch in a {len(value)}-byte value "
                       f"(writer {wid}, counter {ctr}) (torn or foreign bytes)")
    vkey = value[HDR.size:HDR.size + klen]
    if vkey != key:
        raise BadValue(f"{key!r}: got the value of key {vkey!r} (foreign value)")
    if vtag != tag:
        raise BadValue(f"{key!r}: got a value of bucket tag {vtag}, expected {tag}")
    return wid, ctr, value[HDR.size + klen:]


def wait_pid(pid, timeout):
    """Reap `pid` within `timeout` seconds: its wait status, or None if it is still
    running (the caller kills it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        if got == pid:
            return status
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.002)


def switches(pid):
    """A process's voluntary context switches so far (/proc/<pid>/status): every sleep
    of it that ended is one, so a delta over a window counts its wake-ups."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc/<pid>/status")


def kill_and_reap(pid, timeout=10):
    """SIGKILL a child of ours that has not been reaped yet, and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return wait_pid(pid, timeout)


def join_all(procs, timeout):
    """Join multiprocessing processes within one overall `timeout`; kill and name
    any that did not finish."""
    deadline = time.monotonic() + timeout
    hung = []
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            hung.append(p.name)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)
    return hung


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds, what="test"):
    """The last lines of defence (every wait has its own timeout too): SIGALRM
    fails the test when it runs past `seconds`; and should the process be stuck
    where no Python signal handler runs (a spin inside the compiled core), the
    faulthandler watchdog dumps every thread's stack and ends the run 60 s later,
    rather than letting it hang."""
    def on_alarm(signum, frame):
        raise Hang(f"{what} exceeded its {seconds} s bound (something hangs)")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(seconds))
    faulthandler.dump_traceback_later(int(seconds) + 60, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# -- replaying the change ring, as the writer process would log it ---------------------
T_SET, T_DEL, T_EXPIRED, T_EVICTED, T_TOUCH, T_META = 1, 2, 3, 4, 5, 16


def replay_record(rec, names, replay, bad, on_set):
    """Apply one ring record to `replay` ({bucket name: {key: (version, value id,
    expire_ms)}}), checking it against what the log already holds: versions grow with
    every SET, a removal names the version the log holds, a TOUCH keeps it. `names`
    maps bucket idx -> name from META records; `on_set(bname, rec)` checks a SET's
    value and returns its value id, or None to leave the table as it is. Returns
    ("skipped", bucket name or None) for a record of a bucket `replay` does not
    follow (the caller says whether that is wrong), else None."""
    import json
    seq, rtype, bidx, _gen, key, value, expire_ms, version, _flags = rec
    if rtype == T_META:
        change = json.loads(value)
        if change["op"] == "create":
            names[change["idx"]] = change["name"]
        return None
    bname = names.get(bidx)
    if bname not in replay:
        return ("skipped", bname)
    table = replay[bname]
    have = table.get(key)
    if rtype == T_SET:
        if have is not None and version <= have[0]:
            bad(f"{bname} {key!r}: SET version {version} after {have[0]}")
        vid = on_set(bname, rec)
        if vid is not None:
            table[key] = (version, vid, expire_ms)
    elif rtype in (T_DEL, T_EXPIRED, T_EVICTED):
        if have is None:
            bad(f"{bname} {key!r}: record type {rtype} (version {version}) for a key the "
                "log does not hold")
        elif version != have[0]:
            bad(f"{bname} {key!r}: record type {rtype} of version {version}, the log "
                f"holds version {have[0]}")
        table.pop(key, None)
    elif rtype == T_TOUCH:
        if have is None:
            bad(f"{bname} {key!r}: TOUCH for a key the log does not hold")
        else:
            if version != have[0]:      # a TTL change keeps the version
                bad(f"{bname} {key!r}: TOUCH version {version}, the log holds version "
                    f"{have[0]}")
            table[key] = (version, have[1], expire_ms)
    else:
        bad(f"record {seq}: unknown type {rtype}")
    return None


# The stripe layout of cext/includes/segment.h, for tests that write a stripe's
# counters as a holder that died mid-change would leave them.
HEADER_SIZE, STRIPE_BYTES = 4096, 128 + 512 * 8 + 512 * 4
NTTL_AT, BOUND_AT = 112, 120                   # nttl (u32), min_expire_ms (i64)


def stripe_words(segname, si):
    """(nttl, min_expire_ms) of stripe si, read from the segment's bytes."""
    with open(f"/dev/shm/bukt-{segname}", "rb") as f:
        f.seek(HEADER_SIZE + si * STRIPE_BYTES + NTTL_AT)
        nttl, _, bound = struct.unpack("<IIq", f.read(16))
    return nttl, bound


def clocked_keys(segname, index_slots, n, ttl_of, now):
    """A segment of index_slots slots (512 a stripe) on an injected clock at `now`,
    with n keys k0.. in a cache-only bucket "b", key i with ttl_of(i) (None: none);
    (store, bucket)."""
    import bukt
    from bukt._core import writer_claim
    store = bukt.create(segname, size="16MiB", index_slots=index_slots)
    writer_claim(store)   # as a writer does: changes go to the ring
    store.set_time(now)
    bucket = store.create_bucket("b", persist=False)
    for i in range(n):
        bucket.set(b"k%d" % i, b"v", ttl=ttl_of(i))
    return store, bucket


def die_holding_stripe(segname, si, field_at, fmt, value):
    """A child process locks stripe si's robust mutex through its own mapping, writes
    `value` (struct format `fmt`) at `field_at` in the stripe header, and exits
    holding the lock: the next locker gets EOWNERDEAD and repairs the stripe."""
    import ctypes
    import mmap
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fd = os.open(f"/dev/shm/bukt-{segname}", os.O_RDWR)
            m = mmap.mmap(fd, 0)
            at = HEADER_SIZE + si * STRIPE_BYTES
            lock = ctypes.addressof(ctypes.c_char.from_buffer(m, at))
            if ctypes.CDLL(None).pthread_mutex_lock(ctypes.c_void_p(lock)) == 0:
                struct.pack_into(fmt, m, at + field_at, value)
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
