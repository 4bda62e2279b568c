"""Multi-process stress: writers, readers and a ring consumer in
separate processes over one segment, for BUKT_STRESS_SECONDS (default 5).

Every value checks itself (tests/support/mp_common.py): a reader that ever returns a torn
value, another key's value or another bucket's value fails. Besides that:

* reads are monotonic: one reader never sees a writer's older value of a key after
  a newer one (the table is linearizable per key);
* an expired key is never returned: TTL keys are written with the writer's clock
  injected, so the value embeds its exact expiry and a reader that started its get
  at or after that millisecond must not get it;
* the writers run the active expiry cycle now and then, and once every TTL has run
  out, one pass of it leaves no key with a TTL (no stripe's expiry bound was left
  after an expiry a writer published);
* single-read keys are handed to exactly one reader across all processes;
* incr and compare-and-set (if_version) lose and duplicate nothing: each counter
  ends equal to the number of acknowledged increments;
* the change ring of the persisted buckets, drained by a consumer process, has
  strictly increasing sequence numbers, sound records in table order per key, and
  replaying it gives exactly what the table holds at the end;
* store.check() is clean.
"""
import collections
import math
import multiprocessing as mp
import os
import random
import struct
import time
import traceback
import zlib

import pytest
from mp_common import (
    BadValue,
    check_value,
    join_all,
    make_value,
    min_size,
    replay_record,
    time_limit,
    unique_name,
    unlink_segment,
)

import bukt
from bukt._core import writer_claim
from bukt import errors

DURATION = float(os.environ.get("BUKT_STRESS_SECONDS", "5"))
NWRITERS = 2
NREADERS = 2
MAXV = 64 * 1024

TAGS = {"cache": 1, "logged": 2}
NORMAL = [b"k%02d" % i for i in range(48)]
TTLKEYS = [b"t%02d" % i for i in range(8)]
SINGLE = [b"s%02d" % i for i in range(8)]
KEYS = NORMAL + TTLKEYS + SINGLE                # 64 keys in each data bucket
COUNTERS = [b"c%d" % i for i in range(4)]
CAS_KEY = b"cas"
EXPIRE_MAX = 0.3                                # longest TTL any writer gives

F_SINGLE = 0x04

ctx = mp.get_context("fork")


def value_size(rng, lo):
    r = rng.random()
    if r < 0.05:
        return lo
    if r < 0.10:
        return MAXV
    return int(math.exp(rng.uniform(math.log(lo), math.log(MAXV))))


def _child(q, role, fn, *args):
    try:
        q.put((role, "ok", fn(*args)))
    except BaseException:  # noqa: BLE001 - reported to the parent
        q.put((role, "error", traceback.format_exc()))


# -- the processes -------------------------------------------------------------------
def writer(name, wid, deadline, seed):
    rng = random.Random(seed)
    store = bukt.attach(name)
    data = {t: store.bucket(t) for t in TAGS}
    ctrs = store.bucket("counters")
    incrs = collections.Counter()
    cas_ok = 0
    ops = collections.Counter()
    ctr = 0
    while time.time() < deadline:
        ctr += 1
        if ctr % 64 == 0:
            # the cycle's walks, under the stripe locks, race the writes
            store.expire_some(budget=0.001)
            ops["expire_some"] += 1
        bname = rng.choice(("cache", "logged"))
        b, tag = data[bname], TAGS[bname]
        r = rng.random()
        if r < 0.36:
            key = rng.choice(NORMAL)
            val = make_value(key, tag, wid, ctr, value_size(rng, min_size(key)))
            flag = rng.random()
            ver = b.set(key, val, nx=flag < 0.05, xx=0.05 <= flag < 0.1)
            assert ver is None or (isinstance(ver, int) and ver > 0), ver
            ops["set"] += 1
        elif r < 0.42:
            keys = rng.sample(NORMAL, 3)
            vers = b.mset({k: make_value(k, tag, wid, ctr, value_size(rng, min_size(k)))
                           for k in keys})
            assert len(vers) == 3 and all(v > 0 for v in vers), vers
            ops["mset"] += 1
        elif r < 0.48:
            n = b.delete(*rng.sample(NORMAL, 2))
            assert 0 <= n <= 2, n
            ops["delete"] += 1
        elif r < 0.53:
            key = rng.choice(NORMAL)
            v = b.getdel(key)
            if v is not None:
                check_value(v, key, tag)
            ops["getdel"] += 1
        elif r < 0.58:
            key = rng.choice(NORMAL)
            if rng.random() < 0.7:
                b.expire(key, rng.uniform(0.01, EXPIRE_MAX))
            else:
                b.persist(key)
            ops["expire"] += 1
        elif r < 0.68:
            # a TTL key, written with this writer's clock injected so that the value
            # can carry its exact absolute expiry for the readers to check
            key = rng.choice(TTLKEYS)
            now = time.time_ns() // 1_000_000
            ttl = rng.randint(5, 200)
            val = make_value(key, tag, wid, ctr, value_size(rng, min_size(key) + 8),
                             struct.pack("<q", now + ttl))
            store.set_time(now)
            try:
                b.set(key, val, ttl=ttl / 1000)
            finally:
                store.set_time(None)
            ops["ttl"] += 1
        elif r < 0.77:
            key = rng.choice(SINGLE)
            b.set(key, make_value(key, tag, wid, ctr, value_size(rng, min_size(key))),
                  single_read=True)
            ops["single"] += 1
        elif r < 0.92:
            key = rng.choice(COUNTERS)
            got = ctrs.incr(key)
            assert isinstance(got, int) and got >= 1, got
            incrs[key] += 1
            ops["incr"] += 1
        else:
            ver = ctrs.version(CAS_KEY)
            cur = ctrs.get(CAS_KEY)
            try:
                ctrs.set(CAS_KEY, cur + 1, if_version=ver)
                cas_ok += 1
            except errors.VersionMismatch:
                pass
            ops["cas"] += 1
    return {"incrs": dict(incrs), "cas": cas_ok, "ops": dict(ops)}


def reader(name, rid, deadline, seed):
    rng = random.Random(seed)
    store = bukt.attach(name)
    data = {t: store.bucket(t) for t in TAGS}
    ctrs = store.bucket("counters")
    seen = {}                           # (tag, key, wid) -> newest counter seen
    ctr_seen = {}
    tokens = []
    stats = collections.Counter()

    def sound(key, tag, v):
        wid, ctr, payload = check_value(v, key, tag)
        k = (tag, key, wid)
        if ctr < seen.get(k, 0):
            raise AssertionError(f"{key!r} (tag {tag}): writer {wid}'s value {ctr} read "
                                 f"after its newer value {seen[k]} (reads went back)")
        seen[k] = ctr
        return wid, ctr, payload

    while time.time() < deadline:
        bname = rng.choice(("cache", "logged"))
        b, tag = data[bname], TAGS[bname]
        r = rng.random()
        if r < 0.40:
            key = rng.choice(NORMAL)
            v = b.get(key)
            stats["get"] += 1
            if v is not None:
                sound(key, tag, v)
                stats["hit"] += 1
        elif r < 0.50:
            keys = rng.sample(NORMAL, 4)
            for k, v in zip(keys, b.mget(keys)):
                if v is not None:
                    sound(k, tag, v)
            stats["mget"] += 1
        elif r < 0.65:
            key = rng.choice(TTLKEYS)
            t0 = time.time_ns() // 1_000_000
            v = b.get(key)
            stats["ttl_get"] += 1
            if v is not None:
                _, _, payload = sound(key, tag, v)
                (expire_ms,) = struct.unpack_from("<q", payload)
                if expire_ms <= t0:
                    raise AssertionError(
                        f"{key!r}: returned a value that expired at {expire_ms} ms by a "
                        f"get that started at {t0} ms")
                stats["ttl_hit"] += 1
        elif r < 0.78:
            key = rng.choice(SINGLE)
            v = b.get(key)
            stats["single_get"] += 1
            if v is not None:
                wid, ctr, _ = check_value(v, key, tag)
                tokens.append((tag, key, wid, ctr))
        elif r < 0.90:
            key = rng.choice(COUNTERS)
            v = ctrs.get(key)
            if v is not None:
                if not isinstance(v, int) or v < ctr_seen.get(key, 0):
                    raise AssertionError(f"counter {key!r} read {v!r} after "
                                         f"{ctr_seen.get(key)}")
                ctr_seen[key] = v
            stats["counter_get"] += 1
        elif r < 0.96:
            key = rng.choice(KEYS)
            assert b.exists(key) in (0, 1)
            ver = b.version(key)
            assert ver is None or ver > 0
            t = b.ttl(key)
            assert t is None or 0 <= t <= 0.3
            stats["peek"] += 1
        else:
            cursor, found = 0, []
            for _ in range(10000):
                cursor, keys = b.scan(b"", cursor, 50)
                found.extend(keys)
                if cursor == 0:
                    break
            else:
                raise AssertionError("scan did not finish in 10000 calls")
            strange = set(found) - set(KEYS)
            assert not strange, f"scan returned keys nobody wrote: {sorted(strange)[:5]}"
            stats["scan"] += 1
    return {"tokens": tokens, "stats": dict(stats)}


def consumer(name, stop_evt):
    """The writer process's side of the ring, checked: drain it, resolve stuck
    records, and replay the persisted buckets' records."""
    store = bukt.attach(name)
    names = {}                          # bucket idx -> name, from the META records
    replay = {"logged": {}, "counters": {}}
    last_seq = 0
    nrec = stuck_n = unstuck = 0
    max_stall = 0.0
    stall_since = None
    stall_pos = 0
    problems = []

    def bad(msg):
        if len(problems) < 20:
            problems.append(msg)

    def on_set(bname, rec):
        seq, key, value, expire_ms, flags = rec[0], rec[4], rec[5], rec[6], rec[8]
        if bname != "logged":
            try:
                return int(value)
            except ValueError:
                bad(f"counter {key!r}: record value {value[:40]!r}")
                return None
        try:
            _, _, payload = check_value(value, key, TAGS["logged"])
        except BadValue as e:
            bad(f"ring record {seq}: {e}")
            return None
        if key in TTLKEYS:
            if expire_ms != struct.unpack_from("<q", payload)[0]:
                bad(f"{key!r}: record expiry {expire_ms}, value says "
                    f"{struct.unpack_from('<q', payload)[0]}")
        elif expire_ms != 0:
            bad(f"{key!r}: SET record with expiry {expire_ms}, no ttl given")
        if bool(flags & F_SINGLE) != (key in SINGLE):
            bad(f"{key!r}: SET record flags {flags:#x}")
        return zlib.crc32(value)

    while True:
        recs, pos, stuck = store.ring_read()
        for seq, rtype, bidx, gen, key, value, expire_ms, version, flags in recs:
            nrec += 1
            if seq <= last_seq:
                bad(f"ring seq {seq} after {last_seq}: not strictly increasing")
            last_seq = seq
            skipped = replay_record((seq, rtype, bidx, gen, key, value, expire_ms, version,
                                     flags), names, replay, bad, on_set)
            if skipped:
                bad(f"record {seq} of type {rtype} for bucket {bidx} ({skipped[1]}), "
                    "which is not persisted")
        store.ring_release(pos)
        store.ring_flushed(pos)
        if stall_since is not None and (not stuck or stuck[0] != stall_pos):
            max_stall = max(max_stall, time.monotonic() - stall_since)
            stall_since = None
        if stuck:
            stuck_n += 1
            if stall_since is None:
                stall_since, stall_pos = time.monotonic(), stuck[0]
            if store.ring_unstick(stuck[0]):
                unstuck += 1
            else:
                time.sleep(0.0002)      # its producer is alive and inside: let it run
        if not recs and not stuck:
            tail, head, _ = store.ring_position()
            if stop_evt.is_set() and tail == head:
                break
            time.sleep(0.0005)
    return {"replay": replay, "records": nrec, "stuck": stuck_n, "unstuck": unstuck,
            "max_stall": max_stall, "problems": problems}


# -- the test -----------------------------------------------------------------------
@pytest.fixture
def segment():
    name = unique_name("mpstress")
    procs = []
    yield name, procs
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)
    unlink_segment(name)


@pytest.mark.slow
@pytest.mark.parametrize("size", ["128MiB", "3MiB"], ids=["roomy", "full"])
def test_stress_writers_readers_consumer(segment, size):
    """"full": the values do not fit, so the lru buckets evict and slabs move between
    size classes while readers copy values out of the pages being moved."""
    name, procs = segment
    with time_limit(DURATION + 120, "the stress test"):
        _stress(name, procs, size)


def _stress(name, procs, size):
    store = bukt.create(name, size=size, ring_size="1MiB" if size == "3MiB" else "16MiB",
                        ring_wait=10.0, max_value=MAXV)
    writer_claim(store)   # as a writer does: changes go to the ring
    data = {t: store.create_bucket(t, persist=(t == "logged")) for t in TAGS}
    ctrs = store.create_bucket("counters", schema="int", eviction="none", persist=True)
    ctrs.set(CAS_KEY, 0)

    q = ctx.Queue()
    stop_evt = ctx.Event()
    cons = ctx.Process(target=_child, args=(q, "consumer", consumer, name, stop_evt),
                       name="consumer")
    cons.start()
    procs.append(cons)
    started = time.monotonic()
    deadline = time.time() + 0.5 + DURATION       # children start within the 0.5 s
    work = []
    for i in range(NWRITERS):
        work.append(ctx.Process(target=_child, name=f"writer{i}",
                                args=(q, f"writer{i}", writer, name, 10 + i, deadline,
                                      1000 + i)))
    for i in range(NREADERS):
        work.append(ctx.Process(target=_child, name=f"reader{i}",
                                args=(q, f"reader{i}", reader, name, i, deadline,
                                      2000 + i)))
    for p in work:
        p.start()
        procs.append(p)

    results = {}
    for _ in work:
        role, status, res = q.get(timeout=DURATION + 60)
        assert status == "ok", f"{role} failed:\n{res}"
        results[role] = res
    hung = join_all(work, 30)
    assert not hung, f"processes did not exit: {hung}"
    load_secs = time.monotonic() - started

    # Let every TTL run out: one pass of the active expiry cycle removes (and logs)
    # every key that had one. Then touch every key: lazy expiry finds nothing left,
    # and after that nothing changes by itself any more.
    time.sleep(EXPIRE_MAX + 0.1)
    store.expire_some(budget=60.0)
    assert store.stats()["keys_with_ttl"] == 0, "a pass left expired keys behind"
    for t, b in data.items():
        for key in NORMAL + TTLKEYS:
            v = b.get(key)
            if v is not None:
                check_value(v, key, TAGS[t])
        for key in TTLKEYS:
            assert b.get(key) is None, f"{t} {key!r} outlived its TTL"

    stop_evt.set()
    role, status, cres = q.get(timeout=60)
    assert role == "consumer" and status == "ok", f"consumer failed:\n{cres}"
    cons.join(10)
    assert not cons.is_alive()

    writers = [results[f"writer{i}"] for i in range(NWRITERS)]
    readers = [results[f"reader{i}"] for i in range(NREADERS)]
    print(f"\nstress: {load_secs:.1f} s of load; writers {[w['ops'] for w in writers]}; "
          f"readers {[r['stats'] for r in readers]}; ring records {cres['records']}, "
          f"stuck seen {cres['stuck']}, max stall {cres['max_stall'] * 1000:.1f} ms; "
          f"evictions {store.stats()['evictions_total']}, "
          f"slab moves {store.stats()['slab_moves']}")
    if size == "3MiB":
        assert store.stats()["evictions_total"] > 0 and store.stats()["slab_moves"] > 0

    # the load really ran, and did what it says
    for w in writers:
        assert sum(w["ops"].values()) > 200, w["ops"]
    for r in readers:
        assert r["stats"].get("hit", 0) > 50, r["stats"]
    assert sum(r["stats"].get("ttl_hit", 0) for r in readers) > 0

    # single-read keys: each value went to one reader only
    tokens = collections.Counter(t for r in readers for t in r["tokens"])
    twice = [t for t, n in tokens.items() if n > 1]
    assert not twice, f"single-read values handed out more than once: {twice[:5]}"
    assert tokens, "no single-read key was ever read"

    # counters: nothing lost, nothing counted twice
    for key in COUNTERS:
        acked = sum(w["incrs"].get(key, 0) for w in writers)
        assert ctrs.get(key) == acked, (key, ctrs.get(key), acked)
    cas = sum(w["cas"] for w in writers)
    assert cas > 0
    assert ctrs.get(CAS_KEY) == cas

    # the ring: sound, ordered, and its replay is the table
    assert cres["problems"] == [], cres["problems"]
    assert cres["records"] > 100
    log = cres["replay"]
    for key in KEYS:
        rep = log["logged"].get(key)
        ver = data["logged"].version(key)
        if rep is None:
            assert ver is None, f"logged {key!r}: table has version {ver}, log has none"
            continue
        assert ver == rep[0], f"logged {key!r}: table version {ver}, log version {rep[0]}"
        assert rep[2] == 0 and data["logged"].ttl(key) is None
        v = data["logged"].get(key)           # consumes a single-read key: fine now
        assert zlib.crc32(v) == rep[1], f"logged {key!r}: table and log values differ"
    for key in COUNTERS + [CAS_KEY]:
        rep = log["counters"].get(key)
        assert rep is not None, key
        assert (ctrs.version(key), ctrs.get(key)) == rep[:2], (key, rep)

    # whatever the cache bucket holds is sound
    for key in NORMAL:
        v = data["cache"].get(key)
        if v is not None:
            check_value(v, key, TAGS["cache"])

    assert store.check() == []
    st = store.stats()
    assert st["repairs"] == 0, "no process died, yet locks were repaired"
    store.close()
