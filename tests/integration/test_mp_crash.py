"""Crash safety (design.md invariant 4): writer processes are
SIGKILLed at random moments under load, hundreds of times, while a consumer process
drains the change ring of the persisted bucket.

The load: N writer processes loop over set (with and without TTL), mset, delete,
incr, expire/persist, getdel, get, single-read sets and the active expiry cycle (its
walk sets a stripe's expiry bound) on small key sets of three buckets, with
self-checking values (tests/support/mp_common.py) carrying the writer's id.
The segment is small, so the lru buckets evict while it runs. The parent kills a
random writer with SIGKILL 0-20 ms after choosing it and starts a replacement, until
BUKT_CRASH_KILLS kills (default 240) are done and the repair counter shows that kills
landed inside locked sections (the load is lengthened, within a bound, until it does).

Afterwards:
* no operation hangs: a read of every key, then a write of every key, a bucket
  create/drop, expire_some and check(), each run in a subprocess with a timeout;
* store.check() is clean;
* every key holds a value some writer wrote (checksum, key, bucket and writer id);
* each counter is at least the increments acknowledged and at most those attempted;
* the ring never stalled: a record whose producer died was resolved through
  ring_unstick, sequence numbers strictly increase, and replaying the ring gives
  exactly what the table holds (a repair commits a record iff it completes the
  change, and skips it iff it undoes it);
* the lru buckets evicted, and store.stats()["repairs"] > 0;
* no write to an evicting bucket was refused with SegmentFull, and nothing failed
  with RingFull (the ring is drained; ring_wait is 5 s).

Beside it, three narrower kill loops, each checked after every kill:
* test_ring_unstick_resolves_a_dead_producer: a lone writer, so that its reserved
  record stays stuck until the consumer's ring_unstick resolves it (which must
  name the dead process);
* test_reads_never_spin_on_a_dead_writers_stripe: exists/version/ttl/scan return
  (bounded) after a writer died inside its write section;
* test_bucket_and_token_changes_survive_kills: create/drop bucket, add/revoke
  token; every committed META record is sound, the ring's changes replay to the
  table's buckets and tokens, and no bucket name is left wedged.
"""
import hashlib
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import traceback
import zlib

import pytest
from mp_common import (
    BadValue,
    check_value,
    kill_and_reap,
    make_value,
    replay_record,
    time_limit,
    unique_name,
    unlink_segment,
    wait_pid,
)

import bukt
from bukt._core import writer_claim
from bukt import errors

MIN_KILLS = int(os.environ.get("BUKT_CRASH_KILLS", "240"))
MIN_REPAIRS = 10
STORM_LIMIT = 45.0                  # seconds the kill loop may take at most
NSLOTS = 4                          # writer processes alive at once
TTL_MAX = 0.6
TESTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support")

TAGS = {"lru": 1, "logged": 2}
KEYS = [b"k%02d" % i for i in range(56)]
SINGLE = [b"s%02d" % i for i in range(8)]
ALL_KEYS = KEYS + SINGLE
COUNTERS = [b"c%d" % i for i in range(8)]
SIZES = [0, 64, 200, 700, 2000, 6000, 15000, 30000, 60000]   # 0: the smallest
MAXV = 60000
FINAL_WID = 65000

from mp_common import T_META, T_SET  # noqa: E402 (ring record types)

ctx = mp.get_context("fork")


def writer_value(key, tag, wid, ctr, rng):
    # fixed payloads: a writer spends its time in the table, not in zlib, so that
    # more kills land inside locked sections
    return make_value(key, tag, wid, ctr, rng.choice(SIZES), fixed_payload=True)


# -- a writer: runs until it is killed ------------------------------------------------
def crash_writer(store, slot, wid, seed, ops, att, ack, full):
    rng = random.Random(seed)
    if wid % 2:                         # half attach afresh, half use the store
        store = bukt.attach(store.name)  # inherited across the fork
    data = {t: store.bucket(t) for t in TAGS}
    ctrs = store.bucket("ctr")
    ctr = 0
    while True:
        ctr += 1
        ops[slot] += 1
        try:
            one_op(rng, store, data, ctrs, slot, wid, ctr, att, ack)
        except errors.SegmentFull:
            # Every bucket here either evicts or has room, and the consumer keeps
            # the ring drained (ring_wait is 5 s): both errors are counted, and the
            # test fails on them at the end, after the crash checks had their say.
            full[2 * slot] += 1
        except errors.RingFull:
            full[2 * slot + 1] += 1


def one_op(rng, store, data, ctrs, slot, wid, ctr, att, ack):
    bname = "lru" if rng.random() < 0.5 else "logged"
    b, tag = data[bname], TAGS[bname]
    key = rng.choice(KEYS)
    r = rng.random()
    if r < 0.30:
        ttl = rng.uniform(0.05, TTL_MAX) if rng.random() < 0.2 else None
        b.set(key, writer_value(key, tag, wid, ctr, rng), ttl=ttl)
    elif r < 0.35:
        keys = rng.sample(KEYS, 3)
        b.mset({k: writer_value(k, tag, wid, ctr, rng) for k in keys})
    elif r < 0.43:
        b.delete(key)
    elif r < 0.58:
        c = rng.randrange(len(COUNTERS))
        i = slot * len(COUNTERS) + c
        att[i] += 1
        ctrs.incr(COUNTERS[c])
        ack[i] += 1
    elif r < 0.66:
        if rng.random() < 0.7:
            b.expire(key, rng.uniform(0.05, TTL_MAX))
        else:
            b.persist(key)
    elif r < 0.76:
        v = b.getdel(key)
        if v is not None:
            check_value(v, key, tag)
    elif r < 0.90:
        v = b.get(key)
        if v is not None:
            check_value(v, key, tag)
    elif r < 0.92:
        store.expire_some(budget=0.002)
    else:
        skey = rng.choice(SINGLE)
        b.set(skey, writer_value(skey, tag, wid, ctr, rng), single_read=True)
        v = b.get(skey)
        if v is not None:
            check_value(v, skey, tag)


def spawn_writer(store, slot, wid, ops, att, ack, full, errdir):
    pid = os.fork()
    if pid == 0:                                    # the child never returns
        code = 0
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            crash_writer(store, slot, wid, wid * 7919, ops, att, ack, full)
        except BaseException:  # noqa: BLE001 - reported through a file, then exit
            code = 1
            try:
                tmp = os.path.join(errdir, f".writer-{wid}.tmp")
                with open(tmp, "w") as f:
                    f.write(traceback.format_exc())
                os.rename(tmp, os.path.join(errdir, f"writer-{wid}.err"))
            finally:
                os._exit(code)
        os._exit(code)
    return pid


# -- the ring consumer ------------------------------------------------------------------
def crash_consumer(name, conn):
    """Drain the ring as the writer process would, resolving stuck records, and
    replay the persisted buckets. Commands on `conn`: "snapshot" (drain to the head
    and send the replay) and "stop" (drain, send the final report, exit)."""
    try:
        _consume(name, conn)
    except BaseException:  # noqa: BLE001 - reported to the parent
        conn.send(("error", traceback.format_exc()))


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _consume(name, conn):
    store = bukt.attach(name)
    names = {}
    replay = {"logged": {}, "ctr": {}}
    last_seq = 0
    info = {"records": 0, "stuck": 0, "dead_stuck": 0, "unstuck": 0,
            "dead_unstuck": 0, "max_stall": 0.0, "problems": []}
    stall_since = stall_pos = None

    def bad(msg):
        if len(info["problems"]) < 20:
            info["problems"].append(msg)

    def on_set(bname, rec):
        seq, key, value = rec[0], rec[4], rec[5]
        if bname == "logged":
            try:
                check_value(value, key, TAGS["logged"])
            except BadValue as e:
                bad(f"ring record {seq}: {e}")
            return zlib.crc32(value)
        return int(value)

    def step():
        """One read; True when the ring is empty."""
        nonlocal last_seq, stall_since, stall_pos
        recs, pos, stuck = store.ring_read()
        for seq, rtype, bidx, gen, key, value, expire_ms, version, flags in recs:
            info["records"] += 1
            if seq <= last_seq:
                bad(f"ring seq {seq} after {last_seq}: not strictly increasing")
            last_seq = seq
            skipped = replay_record((seq, rtype, bidx, gen, key, value, expire_ms, version,
                                     flags), names, replay, bad, on_set)
            if skipped and (skipped[1] is None or skipped[1] in TAGS):
                bad(f"record {seq} (type {rtype}) for bucket {bidx} {skipped[1]!r}")
        store.ring_release(pos)
        store.ring_flushed(pos)
        if stall_since is not None and (not stuck or stuck[0] != stall_pos):
            info["max_stall"] = max(info["max_stall"], time.monotonic() - stall_since)
            stall_since = None
        if stuck:
            info["stuck"] += 1
            dead = not _pid_alive(stuck[1])
            info["dead_stuck"] += dead
            if stall_since is None:
                stall_since, stall_pos = time.monotonic(), stuck[0]
            if store.ring_unstick(stuck[0]):
                info["unstuck"] += 1
                info["dead_unstuck"] += dead
            else:
                time.sleep(0.0002)
        return not recs and not stuck and pos == store.ring_position()[1]

    def drain(limit=20.0):
        deadline = time.monotonic() + limit
        while not step():
            if time.monotonic() > deadline:
                bad(f"could not drain the ring in {limit} s with no writer running: "
                    f"position {store.ring_position()}, stalled since {stall_since}")
                return

    while True:
        if conn.poll():
            cmd = conn.recv()
            drain()
            if cmd == "snapshot":
                conn.send(("ok", replay))
                continue
            conn.send(("ok", info))
            return
        if step():
            time.sleep(0.0005)


# -- subprocess scripts: every operation bounded ---------------------------------------
VERIFY = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    import bukt
    from mp_common import check_value
    store = bukt.attach({name!r})
    out = {{"values": [], "counters": {{}}}}
    for tag_name, tag in {tags!r}.items():
        b = store.bucket(tag_name)
        # the lock-free reads first (a get would repair a stripe on its way)
        cursor, n = 0, 0
        while True:
            cursor, found = b.scan(b"", cursor, 16)
            n += 1
            assert n < 10000, "scan does not finish"
            if cursor == 0:
                break
        for key in {keys!r}:
            b.exists(key); b.ttl(key); b.version(key)
        for key in {keys!r}:
            v = b.get(key)
            if v is not None:
                wid, ctr, _ = check_value(v, key, tag)
                out["values"].append([tag_name, key.decode(), wid, ctr])
    c = store.bucket("ctr")
    for key in {counters!r}:
        out["counters"][key.decode()] = c.get(key)
    print(json.dumps(out))
""")

FINAL_OPS = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    import bukt
    from mp_common import check_value, make_value
    store = bukt.attach({name!r})
    for tag_name, tag in {tags!r}.items():
        b = store.bucket(tag_name)
        for i, key in enumerate({keys!r}):
            v = make_value(key, tag, {wid}, i, {sizes!r}[i % {nsizes}])
            b.set(key, v)
            assert b.get(key) == v, key
            assert b.expire(key, 60)
            assert b.persist(key)
            assert b.getdel(key) == v
            b.set(key, v, single_read=True)
            assert b.get(key) == v and b.get(key) is None
            b.set(key, v)
            assert b.delete(key) == 1
    c = store.bucket("ctr")
    for key in {counters!r}:
        before = c.get(key) or 0
        assert c.incr(key, 5) == before + 5
    store.create_bucket("extra", persist=True).set(b"x", b"y")
    store.drop_bucket("extra")
    store.expire_some(budget=0.05)
    print(json.dumps({{"check": store.check()}}))
""")


def run_bounded(script, timeout=30):
    try:
        p = subprocess.run([sys.executable, "-c", script], capture_output=True,
                           text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"an operation did not complete within {timeout} s after "
                             f"the kills (deadlock?); output so far: {e.stdout!r} "
                             f"{e.stderr!r}") from None
    assert p.returncode == 0, f"subprocess failed:\n{p.stdout}\n{p.stderr}"
    return json.loads(p.stdout.strip().splitlines()[-1])


# -- the test -------------------------------------------------------------------------
@pytest.fixture
def segment():
    name = unique_name("mpcrash")
    pids = {}
    procs = []
    yield name, pids, procs
    for pid in list(pids.values()):
        kill_and_reap(pid)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)
    unlink_segment(name)


@pytest.mark.slow
def test_sigkill_writers_under_load(segment, tmp_path):
    name, pids, procs = segment
    with time_limit(STORM_LIMIT + 200, "the crash test"):
        _crash(name, pids, procs, str(tmp_path))


def _crash(name, pids, procs, errdir):
    store = bukt.create(name, size="3MiB", max_value=MAXV, max_buckets=8,
                        ring_size="1MiB", ring_wait=5.0)
    writer_claim(store)   # as a writer does: changes go to the ring
    data = {t: store.create_bucket(t, persist=(t == "logged")) for t in TAGS}
    ctrs = store.create_bucket("ctr", schema="int", eviction="none", persist=True)

    parent_end, child_end = ctx.Pipe()
    cons = ctx.Process(target=crash_consumer, args=(name, child_end), name="consumer")
    cons.start()
    procs.append(cons)

    # Prefill round-robin over the sizes, so that every size class owns chunks
    # before the pages run out (pages never move between classes); the counters
    # first: their bucket does not evict, so their class needs its page early.
    for key in COUNTERS:
        ctrs.set(key, 0)
    for i, key in enumerate(KEYS):
        for t, b in data.items():
            b.set(key, make_value(key, TAGS[t], 0, i, SIZES[i % len(SIZES)]))

    ops = mp.RawArray("q", NSLOTS)
    att = mp.RawArray("q", NSLOTS * len(COUNTERS))
    ack = mp.RawArray("q", NSLOTS * len(COUNTERS))
    full = mp.RawArray("q", 2 * NSLOTS)        # SegmentFull, RingFull per slot
    rng = random.Random(20240611)
    launched = {0}
    next_wid = 1

    def check_errors():
        errs = [f for f in os.listdir(errdir) if f.endswith(".err")]
        if errs:
            with open(os.path.join(errdir, errs[0])) as f:
                raise AssertionError(f"a writer failed:\n{f.read()}")

    def start(slot):
        nonlocal next_wid
        wid, next_wid = next_wid, next_wid + 1
        base = ops[slot]
        pids[slot] = spawn_writer(store, slot, wid, ops, att, ack, full, errdir)
        launched.add(wid)
        deadline = time.monotonic() + 10
        while ops[slot] == base:                    # wait until it is under way
            check_errors()
            status = wait_pid(pids[slot], 0)
            if status is not None:
                del pids[slot]
                check_errors()
                raise AssertionError(f"writer {wid} ended at start (status {status})")
            assert time.monotonic() < deadline, f"writer {wid} did not start in 10 s"
            time.sleep(0.0005)

    def kill(slot):
        pid = pids[slot]
        os.kill(pid, signal.SIGKILL)
        status = wait_pid(pid, 10)
        assert status is not None, f"writer {pid} survived SIGKILL for 10 s"
        del pids[slot]
        check_errors()
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
            f"writer {pid} ended by itself (status {status:#x}) before it was killed"

    t0 = time.monotonic()
    for slot in range(NSLOTS):
        start(slot)
    kills = 0
    while True:
        repairs = store.stats()["repairs"]
        if kills >= MIN_KILLS and repairs >= MIN_REPAIRS:
            break
        if time.monotonic() - t0 > STORM_LIMIT:
            break
        slot = rng.randrange(NSLOTS)
        time.sleep(rng.uniform(0, 0.020))
        kill(slot)
        kills += 1
        start(slot)
    for slot in list(pids):
        kill(slot)
        kills += 1
    storm = time.monotonic() - t0
    repairs = store.stats()["repairs"]
    assert kills >= MIN_KILLS, f"only {kills} kills in {STORM_LIMIT} s"
    assert repairs >= MIN_REPAIRS, (
        f"{kills} kills in {storm:.1f} s, but only {repairs} lock repairs: the kills "
        "did not land inside locked sections often enough to prove anything")
    total_ops = sum(ops)

    # 1. every key readable within a bound, and every value one some writer wrote
    time.sleep(TTL_MAX + 0.1)                       # every TTL has run out
    res = run_bounded(VERIFY.format(tests=TESTS_DIR, name=name, tags=TAGS,
                                    keys=ALL_KEYS, counters=COUNTERS))
    for tag_name, key, wid, ctr in res["values"]:
        assert wid in launched, f"{tag_name} {key}: value of writer {wid}, never started"
    # counters: >= acknowledged (nothing acknowledged was lost), <= attempted
    # (a kill between the increment and its acknowledgement leaves one more)
    for c, key in enumerate(COUNTERS):
        lo = sum(ack[s * len(COUNTERS) + c] for s in range(NSLOTS))
        hi = sum(att[s * len(COUNTERS) + c] for s in range(NSLOTS))
        got = int(res["counters"][key.decode()])
        assert lo <= got <= hi, f"counter {key!r} = {got}, acknowledged {lo}, tried {hi}"

    # 2. the ring: its replay is the table
    parent_end.send("snapshot")
    assert parent_end.poll(60), "the consumer did not answer within 60 s"
    status, replay = parent_end.recv()
    assert status == "ok", replay
    for key in ALL_KEYS:
        rep = replay["logged"].get(key)
        ver = data["logged"].version(key)
        if rep is None:
            assert ver is None, f"logged {key!r}: in the table (version {ver}), not in the log"
            continue
        assert ver == rep[0], f"logged {key!r}: table version {ver}, log version {rep[0]}"
        assert (data["logged"].ttl(key) is None) == (rep[2] == 0), (key, rep)
        assert key not in SINGLE                     # VERIFY consumed those
        assert zlib.crc32(data["logged"].get(key)) == rep[1], \
            f"logged {key!r}: the table's value is not the log's"
    for key in COUNTERS:
        rep = replay["ctr"].get(key)
        if rep is None:
            assert ctrs.version(key) is None, key
        else:
            assert (ctrs.version(key), ctrs.get(key)) == rep[:2], (key, rep)

    # 3. every kind of write still completes, on every key, and check() is clean
    res = run_bounded(FINAL_OPS.format(tests=TESTS_DIR, name=name, tags=TAGS,
                                       keys=ALL_KEYS, counters=COUNTERS, wid=FINAL_WID,
                                       sizes=SIZES, nsizes=len(SIZES)))
    assert res["check"] == [], res["check"]

    parent_end.send("stop")
    assert parent_end.poll(60), "the consumer did not stop within 60 s"
    status, info = parent_end.recv()
    assert status == "ok", info
    cons.join(10)

    nfull, nring = sum(full[0::2]), sum(full[1::2])
    st = store.stats()
    ev = {t: data[t].stats()["evictions"] for t in TAGS}
    print(f"\ncrash: {kills} kills in {storm:.1f} s, {total_ops} writer ops, "
          f"{st['repairs']} repairs, evictions {ev}, {st['slab_moves']} slab moves; ring: {info['records']} records, "
          f"{info['stuck']} stuck reads ({info['dead_stuck']} of a dead producer), "
          f"{info['unstuck']} unstuck ({info['dead_unstuck']} of a dead producer), "
          f"longest stall {info['max_stall'] * 1000:.0f} ms; SegmentFull {nfull}, "
          f"RingFull {nring}")
    assert info["problems"] == [], info["problems"]
    assert info["max_stall"] < 10.0, "the ring consumer stalled"
    assert ev["lru"] > 0, "the segment never filled: no eviction in the lru bucket"
    assert store.check() == []
    assert st["repairs"] >= repairs > 0
    assert nfull == 0, (
        f"{nfull} writes to evicting buckets (or to the counters, whose class has "
        "room) were refused with SegmentFull while other processes were writing")
    assert nring == 0, (
        f"{nring} operations failed with RingFull although the consumer drained the "
        f"ring all along (longest stall {info['max_stall']:.2f} s, ring_wait 5 s)")
    store.close()


# -- a record whose producer died is resolved by the consumer alone ----------------------
def lone_writer(store, values):
    b = store.bucket("solo")
    while True:
        for key, v in values.items():
            b.set(key, v)


def test_ring_unstick_resolves_a_dead_producer(segment):
    """One writer process, no other: when it dies between reserving a ring record
    and committing it, nobody else takes its stripe lock, so the record stays
    RESERVED until the consumer calls ring_unstick, which must resolve it (commit or
    skip, as the repair decides), after which the ring drains and its replay equals
    the table. Large values (8 MiB: milliseconds of copying into the ring) keep
    the writer inside that window much of the time, its first write after the fork
    included: the stuck record must name the process that reserved it."""
    name, pids, _ = segment
    with time_limit(120, "the ring_unstick test"):
        store = bukt.create(name, size="112MiB", ring_size="24MiB", ring_wait=5.0,
                            max_value=8 << 20)
        writer_claim(store)   # as a writer does: changes go to the ring
        b = store.create_bucket("solo", persist=True)
        keys = [b"big%d" % i for i in range(4)]
        values = {k: os.urandom(8 << 20) for k in keys}
        replay, last_seq = {}, 0
        rng = random.Random(7)
        kills = dead_stuck = 0
        wrong_pid = []

        def drain(pid):
            nonlocal last_seq, dead_stuck
            for _ in range(1000):
                recs, pos, stuck = store.ring_read()
                for seq, rtype, _b, _g, key, value, _e, version, _f in recs:
                    assert seq > last_seq
                    last_seq = seq
                    if rtype == T_SET:
                        assert value == values[key], f"record {seq}: wrong value"
                        replay[key] = version
                store.ring_release(pos)
                if stuck:
                    if stuck[1] != pid:             # the only producer: the dead one
                        wrong_pid.append((stuck[1], pid))
                    dead_stuck += 1
                    assert store.ring_unstick(stuck[0]), \
                        f"ring_unstick could not resolve record {stuck} of dead pid {pid}"
                elif not recs:
                    return
            raise AssertionError("the ring did not drain after a kill")

        t0 = time.monotonic()
        while (dead_stuck < 3 or kills < 30) and time.monotonic() - t0 < 60:
            pid = os.fork()
            if pid == 0:
                try:
                    signal.signal(signal.SIGALRM, signal.SIG_DFL)
                    lone_writer(store, values)
                finally:
                    os._exit(1)
            kill_after(pids, pid, rng.uniform(0, 0.012))
            kills += 1
            drain(pid)
            # Lock-free reads would spin if the writer died after its commit with
            # the stripe's seq odd (see test_reads_never_spin_...): a get takes the
            # lock after its retries, and so repairs; then compare with the log.
            for key in keys:
                b.get(key)
            drain(pid)
            tail, head, _ = store.ring_position()
            assert tail == head, (tail, head)
            for key in keys:
                assert b.version(key) == replay.get(key), \
                    f"{key!r}: table version {b.version(key)}, log {replay.get(key)}"
        print(f"\nunstick: {kills} kills, {dead_stuck} records of a dead producer "
              f"resolved, {store.stats()['repairs']} repairs")
        assert dead_stuck >= 1, (
            f"in {kills} kills the writer never died holding a reserved record")
        assert store.check() == []
        assert not wrong_pid, (
            f"stuck records named the wrong producer (named, actual): {wrong_pid[:5]}")
        store.close()


# -- lock-free reads right after a kill --------------------------------------------------
def peeker(name, conn):
    """Answer each "peek" with the lock-free reads of every key and a whole scan."""
    store = bukt.attach(name)
    b = store.bucket("b")
    while conn.poll(60):
        conn.recv()
        out = [(b.exists(k), b.version(k), b.ttl(k)) for k in PEEK_KEYS]
        cursor, found = 0, []
        while True:
            cursor, keys = b.scan(b"", cursor, 100)
            found += keys
            if cursor == 0:
                break
        conn.send((out, sorted(set(found))))


PEEK_KEYS = [b"p%d" % i for i in range(4)]


def churn(b):
    v1, v2 = b"v" * 5000, b"w" * 300
    while True:
        for k in PEEK_KEYS:
            b.set(k, v1)
            b.delete(k)
            b.set(k, v2)
            b.expire(k, 100)
            b.persist(k)


@pytest.mark.slow
def test_reads_never_spin_on_a_dead_writers_stripe(segment):
    """A writer killed inside its write section leaves the stripe's sequence odd
    until some process takes that stripe's lock and repairs it. A lock-free reader
    (exists, version, ttl, scan) must not wait for that for ever: like get, it must
    fall back to the lock (which repairs) after its bounded retries. The readers
    run in a helper process and must answer within 5 s after every kill."""
    name, pids, procs = segment
    with time_limit(150, "the read-after-kill test"):
        store = bukt.create(name, size="16MiB")
        writer_claim(store)   # as a writer does: changes go to the ring
        b = store.create_bucket("b", persist=False)
        for k in PEEK_KEYS:
            b.set(k, b"x")
        parent_end, child_end = ctx.Pipe()
        helper = ctx.Process(target=peeker, args=(name, child_end), name="peeker")
        helper.start()
        procs.append(helper)
        rng = random.Random(11)
        kills = 0
        t0 = time.monotonic()
        while kills < 300 and time.monotonic() - t0 < 60:
            pid = os.fork()
            if pid == 0:
                try:
                    signal.signal(signal.SIGALRM, signal.SIG_DFL)
                    churn(b)
                finally:
                    os._exit(1)
            kill_after(pids, pid, rng.uniform(0, 0.003))
            kills += 1
            parent_end.send("peek")
            assert parent_end.poll(5), (
                f"after kill {kills}: exists/version/ttl/scan did not return within 5 s "
                "(they spin on the dead writer's odd stripe sequence and never take "
                "the lock that would repair it)")
            _, found = parent_end.recv()
            assert set(found) <= set(PEEK_KEYS), found
        assert kills >= 200, f"only {kills} kills in 60 s"
        assert store.check() == []
        store.close()


def kill_after(pids, pid, delay):
    """SIGKILL the child `pid` after `delay` s and reap it; it must die by the signal."""
    pids[0] = pid
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    status = wait_pid(pid, 10)
    if status is not None:
        del pids[0]
    assert status is not None and os.WIFSIGNALED(status), status


# -- bucket and token changes (the meta lock) under kills ---------------------------------
def meta_churn(store, seed):
    rng = random.Random(seed)
    h = hashlib.sha256(b"%d" % seed).digest()
    while True:
        if rng.random() < 0.5:
            tid = store.add_token("m", h, bukt.READ)
            store.revoke_token("m", tid)
        else:
            name = f"tmp{seed}"
            b = store.create_bucket(name, persist=False)
            for i in range(rng.randrange(1, 100)):
                b.set(b"k%d" % i, b"v")
            store.drop_bucket(name)


@pytest.mark.slow
def test_bucket_and_token_changes_survive_kills(segment):
    """A process killed inside create_bucket, drop_bucket, add_token or
    revoke_token. Afterwards (the consumer resolving a stuck META record with
    ring_unstick) every committed META record is the JSON that was written, the
    ring's bucket and token changes replay to exactly the buckets and tokens the
    table holds, and no bucket name is left wedged (neither listed, nor creatable,
    nor droppable)."""
    name, pids, _ = segment
    with time_limit(150, "the meta kill test"):
        store = bukt.create(name, size="16MiB")
        writer_claim(store)   # as a writer does: changes go to the ring
        store.create_bucket("m", persist=True)
        log_buckets, log_tokens = {}, {}            # name -> idx; idx -> token ids
        problems = {"bad record": [], "buckets: log != table": [],
                    "tokens: log != table": [], "wedged": [], "died by itself": []}

        def drain():
            for _ in range(10000):
                recs, pos, stuck = store.ring_read()
                for seq, rtype, bidx, _g, _k, value, _e, _v, _f in recs:
                    if rtype != T_META:
                        continue
                    try:
                        c = json.loads(value)
                    except ValueError:
                        problems["bad record"].append(
                            f"kill {kills}: committed META record {seq}: {value[:70]!r}")
                        continue
                    if c["op"] == "create":
                        log_buckets[c["name"]] = c["idx"]
                    elif c["op"] == "drop":
                        log_buckets.pop(c["name"], None)
                        log_tokens.pop(c["idx"], None)
                    elif c["op"] == "token_add":
                        log_tokens.setdefault(c["idx"], set()).add(c["id"])
                    elif c["op"] == "token_revoke":
                        log_tokens.get(c["idx"], set()).discard(c["id"])
                store.ring_release(pos)
                if stuck:
                    assert store.ring_unstick(stuck[0]), f"unresolved {stuck}"
                elif not recs:
                    return
            raise AssertionError("the ring did not drain")

        rng = random.Random(17)
        kills = 0
        drain()
        t0 = time.monotonic()
        while kills < 300 and time.monotonic() - t0 < 60:
            kills += 1
            pid = os.fork()
            if pid == 0:
                try:
                    signal.signal(signal.SIGALRM, signal.SIG_DFL)
                    meta_churn(store, kills)
                except BaseException:  # noqa: BLE001 - the exit status says it
                    traceback.print_exc()
                finally:
                    os._exit(1)
            pids[0] = pid
            time.sleep(rng.uniform(0, 0.005))
            os.kill(pid, signal.SIGKILL)
            status = wait_pid(pid, 10)
            if status is not None:
                del pids[0]
            assert status is not None, "a SIGKILLed process did not end in 10 s"
            if not os.WIFSIGNALED(status):
                problems["died by itself"].append(
                    f"kill {kills}: exit status {status} (traceback in captured stderr)")
            drain()
            table = sorted(store.buckets())
            if table != sorted(log_buckets):
                problems["buckets: log != table"].append(
                    f"kill {kills}: table {table}, log {sorted(log_buckets)}")
            table = sorted(i for i, _ in store.tokens("m"))
            log = sorted(log_tokens.get(log_buckets["m"], ()))
            if table != log:
                problems["tokens: log != table"].append(
                    f"kill {kills}: token ids of 'm' in the table {table}, in the log {log}")
            # tidy up as a client would, which also shows whether a name is wedged
            tmp = f"tmp{kills}"
            try:
                if tmp in store.buckets():
                    store.drop_bucket(tmp)
                else:
                    store.create_bucket(tmp, persist=False)
                    store.drop_bucket(tmp)
            except errors.BuktError as e:
                problems["wedged"].append(f"kill {kills}: bucket {tmp!r}: "
                                          f"{type(e).__name__}: {e}")
            for tid, _ in store.tokens("m"):
                store.revoke_token("m", tid)
            drain()
            log_buckets = {n: i for n, i in log_buckets.items() if n in store.buckets()}
            log_tokens[log_buckets["m"]] = {i for i, _ in store.tokens("m")}
        print(f"\nmeta: {kills} kills, {store.stats()['repairs']} repairs, "
              + ", ".join(f"{k}: {len(v)}" for k, v in problems.items()))
        assert kills >= 200
        assert store.check() == []
        assert problems == {k: [] for k in problems}, {
            k: v[:3] for k, v in problems.items() if v}
        store.close()
