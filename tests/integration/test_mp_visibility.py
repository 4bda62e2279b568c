"""Across processes: single-read keys are handed out exactly once
however many processes race for them; what one interpreter writes another reads;
a store attached before a fork keeps working in the children, whose counters all
count; a read-only attach from another process reads, and refuses every write with
bukt.errors.ReadOnly.
"""
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import textwrap
import time
import traceback

import pytest
from mp_common import (
    check_value,
    kill_and_reap,
    make_value,
    time_limit,
    unique_name,
    unlink_segment,
    wait_pid,
)

import bukt
from bukt import errors

TESTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support")
ctx = mp.get_context("fork")


@pytest.fixture
def seg():
    name = unique_name("mpvis")
    cleanup = {"pids": [], "procs": [], "popen": []}    # pids: not yet reaped
    yield name, cleanup
    for pid in cleanup["pids"]:
        kill_and_reap(pid)
    for p in cleanup["popen"]:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    for p in cleanup["procs"]:
        if p.is_alive():
            p.kill()
            p.join(5)
    unlink_segment(name)


def run_py(code, timeout=60, **kw):
    """Run `code` in a new interpreter; its last stdout line, parsed as JSON."""
    try:
        p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                           capture_output=True, text=True, timeout=timeout, check=False,
                           **kw)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"subprocess did not finish in {timeout} s: {e.stderr!r}") \
            from None
    assert p.returncode == 0, f"subprocess failed:\n{p.stdout}\n{p.stderr}"
    return json.loads(p.stdout.strip().splitlines()[-1])


# -- single-read: exactly once ------------------------------------------------------------
NRACERS = 6
NKEYS = 64
ROUNDS = 5


def racer(name, bucket, barrier, conn, seed, mode="get"):
    try:
        rng = random.Random(seed)
        b = bukt.attach(name).bucket(bucket)
        keys = [b"sr%02d" % i for i in range(NKEYS)]
        for _ in range(ROUNDS):
            barrier.wait(30)
            got = []
            order = keys[:]
            rng.shuffle(order)
            for k in order:
                if mode == "cas":                   # compare-and-delete at what it saw
                    ver = b.version(k)
                    try:
                        if ver is not None and b.delete(k, if_version=ver) == 1:
                            got.append((k, ver))
                    except errors.VersionMismatch:
                        pass
                    continue
                v = b.get(k)
                if v is not None:
                    got.append((k, v))
            conn.send(("ok", got))
    except BaseException:  # noqa: BLE001 - reported to the parent
        conn.send(("error", traceback.format_exc()))


def start_racers(name, bucket, cleanup, mode):
    """NRACERS racer processes on the bucket, waiting at a barrier each round; the
    barrier and the racers' pipes."""
    barrier = ctx.Barrier(NRACERS + 1)
    pipes = []
    for i in range(NRACERS):
        parent_end, child_end = ctx.Pipe()
        p = ctx.Process(target=racer, args=(name, bucket, barrier, child_end, i, mode),
                        name=f"racer{i}")
        p.start()
        cleanup["procs"].append(p)
        pipes.append(parent_end)
    return barrier, pipes


def winners_of_round(pipes, rnd, expected, what):
    """Each key the racers report, mapped to the one racer that got it; fails when
    a key went to two racers, to none, or with a value it was not given."""
    winners = {}
    for i, conn in enumerate(pipes):
        assert conn.poll(60), f"racer {i} did not report round {rnd} in 60 s"
        status, got = conn.recv()
        assert status == "ok", got
        for k, v in got:
            assert v == expected[k], f"{k!r}: racer {i} got {v!r}, not this round's"
            assert k not in winners, (
                f"round {rnd}: {what} {k!r} went to racers {winners[k]} and {i}")
            winners[k] = i
    assert sorted(winners) == sorted(expected), (
        f"round {rnd}: keys nobody got: {sorted(set(expected) - set(winners))}")
    return winners


@pytest.mark.parametrize("persist", [False, True], ids=["cache", "persisted"])
def test_single_read_exactly_once_across_processes(seg, persist):
    name, cleanup = seg
    with time_limit(120, "the single-read race"):
        store = bukt.create(name, size="16MiB")
        b = store.create_bucket("sr", persist=persist)
        keys = [b"sr%02d" % i for i in range(NKEYS)]
        barrier, pipes = start_racers(name, "sr", cleanup, "get")
        before = b.stats()
        for rnd in range(ROUNDS):
            values = {k: b"round %d of %s" % (rnd, k) + os.urandom(rnd * 50)
                      for k in keys}
            for k, v in values.items():
                b.set(k, v, single_read=True)
            barrier.wait(30)                        # go
            winners_of_round(pipes, rnd, values, "single-read key")
            assert b.exists(*keys) == 0
            assert b.mget(keys) == [None] * NKEYS
        for p in cleanup["procs"]:
            p.join(30)
            assert p.exitcode == 0, f"{p.name} exit code {p.exitcode}"
        # every racer's get counted, in its own process's counters
        after = b.stats()
        assert after["reads"] - before["reads"] == NRACERS * NKEYS * ROUNDS + NKEYS * ROUNDS
        assert after["hits"] - before["hits"] == NKEYS * ROUNDS
        assert after["keys"] == 0
        assert store.check() == []
        store.close()


# -- one interpreter writes, another reads ----------------------------------------------
def test_set_in_one_interpreter_read_in_another(seg):
    name, cleanup = seg
    with time_limit(180, "the cross-interpreter test"):
        store = bukt.create(name, size="16MiB")
        store.create_bucket("raw", persist=False)
        store.create_bucket("nums", schema="int", persist=False)
        store.create_bucket("text", schema="str", persist=True)

        wrote = run_py(f"""
            import json, bukt
            s = bukt.attach({name!r})
            raw, nums, text = s.bucket("raw"), s.bucket("nums"), s.bucket("text")
            out = {{}}
            out["raw"] = raw.set(b"k", bytes(range(256)) * 300)
            out["ttl"] = raw.set(b"ttl", b"short-lived", ttl=300)
            out["once"] = raw.set(b"once", b"for one reader", single_read=True)
            out["n"] = nums.set("n", -42)
            out["incr"] = nums.incr("c", 5)
            out["txt"] = text.set("t", "grüße, 世界")
            s.create_bucket("from_a", persist=False).set("x", "made in A")
            print(json.dumps(out))
        """)
        read = run_py(f"""
            import json, bukt
            s = bukt.attach({name!r})
            raw, nums, text = s.bucket("raw"), s.bucket("nums"), s.bucket("text")
            out = {{
                "raw": raw.get(b"k") == bytes(range(256)) * 300,
                "raw_version": raw.version(b"k"),
                "ttl": [raw.get(b"ttl").decode(), 0 < raw.ttl(b"ttl") <= 300],
                "once": [raw.get(b"once").decode(), raw.get(b"once")],
                "n": nums.get("n"), "incr": nums.incr("c", 1),
                "txt": text.get("t"),
                "buckets": sorted(s.buckets()),
                "from_a": s.bucket("from_a").get("x").decode(),
            }}
            s.bucket("from_a").set("y", "made in B")
            print(json.dumps(out))
        """)
        assert read == {
            "raw": True, "raw_version": wrote["raw"],
            "ttl": ["short-lived", True],
            "once": ["for one reader", None],
            "n": -42, "incr": 6, "txt": "grüße, 世界",
            "buckets": ["from_a", "nums", "raw", "text"],
            "from_a": "made in A",
        }
        # and this process, attached before either ran, sees both
        raw = store.bucket("raw")
        assert raw.get(b"once") is None
        assert raw.version(b"k") == wrote["raw"]
        assert store.bucket("nums").get("c") == 6
        assert store.bucket("from_a").get("y") == b"made in B"

        # live: a process already running sees a key appear, without re-attaching
        code = textwrap.dedent(f"""
            import sys, time, bukt
            b = bukt.attach({name!r}).bucket("raw")
            assert b.get(b"live") is None
            print("ready", flush=True)
            deadline = time.monotonic() + 30
            while b.get(b"live") != b"now":
                assert time.monotonic() < deadline, "never saw the key"
                time.sleep(0.001)
            b.set(b"ack", b"seen")
            print("done", flush=True)
        """)
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        cleanup["popen"].append(p)
        try:
            assert p.stdout.readline().strip() == "ready"
            raw.set(b"live", b"now")
            deadline = time.monotonic() + 30
            while raw.get(b"ack") != b"seen":
                assert time.monotonic() < deadline, "the other process never answered"
                assert p.poll() is None or p.returncode == 0, p.stderr.read()
                time.sleep(0.001)
            _, err = p.communicate(timeout=30)
            assert p.returncode == 0, err
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        assert store.check() == []
        store.close()


# -- a store attached before fork --------------------------------------------------------
R_HITS, R_MISSES, W_SETS, W_DELS = 200, 50, 100, 10
NCHILDREN = 4


def child_work(b, i):
    """Known numbers of reads, hits, misses, writes and deletes through a store the
    process inherited. Raises on a wrong answer."""
    for j in range(R_HITS):
        k = b"shared%02d" % (j % 20)
        check_value(b.get(k), k, 1)
    for j in range(R_MISSES):
        assert b.get(b"absent-%d-%d" % (i, j)) is None
    for j in range(W_SETS):
        k = b"c%d-%03d" % (i, j)
        b.set(k, make_value(k, 1, i, j, 100 + j))
    assert b.delete(*[b"c%d-%03d" % (i, j) for j in range(W_DELS)]) == W_DELS


def os_fork_child(b, i, grandchild):
    """Body of an os.fork child: work, maybe fork a grandchild that works too."""
    code = 0
    try:
        child_work(b, i)
        if grandchild:
            pid = os.fork()
            if pid == 0:
                gcode = 0
                try:
                    child_work(b, i + 100)
                except BaseException:  # noqa: BLE001 - exit status says it
                    traceback.print_exc()
                    gcode = 1
                os._exit(gcode)
            status = wait_pid(pid, 60)
            if status is None:
                kill_and_reap(pid)
                code = 3
            elif not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                code = 2
    except BaseException:  # noqa: BLE001 - exit status says it
        traceback.print_exc()
        code = 1
    os._exit(code)


def mp_child(b, i):
    child_work(b, i)


@pytest.mark.parametrize("how", ["os.fork", "multiprocessing-fork"])
def test_store_attached_before_fork_works_in_children(seg, how):
    name, cleanup = seg
    with time_limit(120, "the fork test"):
        store = bukt.create(name, size="16MiB")
        b = store.create_bucket("f", persist=False)
        for j in range(20):
            k = b"shared%02d" % j
            b.set(k, make_value(k, 1, 99, j, 1000))
        assert b.get(b"shared00") is not None      # this process counts too
        before = b.stats()
        workers = [0, 1, 2, 3]
        if how == "os.fork":
            pids = []
            for i in range(NCHILDREN):
                pid = os.fork()
                if pid == 0:
                    os_fork_child(b, i, grandchild=(i == 0))
                pids.append(pid)
                cleanup["pids"].append(pid)
            workers.append(100)                     # child 0's grandchild
            for pid in pids:
                status = wait_pid(pid, 60)
                assert status is not None, f"child {pid} did not finish in 60 s"
                cleanup["pids"].remove(pid)
                assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, \
                    f"child {pid} failed (status {status:#x}); see captured stderr"
        else:
            procs = [ctx.Process(target=mp_child, args=(b, i)) for i in range(NCHILDREN)]
            for p in procs:
                p.start()
                cleanup["procs"].append(p)
            for p in procs:
                p.join(60)
                assert p.exitcode == 0, f"{p.name}: exit code {p.exitcode}"
        n = len(workers)
        after = b.stats()
        diff = {k: after[k] - before[k] for k in ("reads", "hits", "misses", "writes",
                                                  "deletes")}
        assert diff == {"reads": n * (R_HITS + R_MISSES), "hits": n * R_HITS,
                        "misses": n * R_MISSES, "writes": n * W_SETS,
                        "deletes": n * W_DELS}, diff
        assert after["keys"] == 20 + n * (W_SETS - W_DELS)
        for i in workers:                           # what the children wrote is here
            for j in range(W_SETS):
                k = b"c%d-%03d" % (i, j)
                v = b.get(k)
                if j < W_DELS:
                    assert v is None
                else:
                    assert check_value(v, k, 1)[:2] == (i, j)
        # the parent keeps working, and its own counters were not disturbed
        b.set(b"parent", b"after the children")
        assert b.get(b"parent") == b"after the children"
        assert b.stats()["writes"] == after["writes"] + 1
        assert store.check() == []
        store.close()


# -- read-only attach from another process ---------------------------------------------
READONLY_SCRIPT = """
    import json, sys, bukt
    sys.path.insert(0, {tests!r})
    from mp_common import check_value
    s = bukt.attach({name!r}, readonly=True)
    b, n = s.bucket("b"), s.bucket("n")
    out = {{"values": {{}}, "refused": {{}}}}
    for i in range(50):
        k = b"k%02d" % i
        out["values"][k.decode()] = list(check_value(b.get(k), k, 1)[:2])
    out["mget"] = [v is not None for v in b.mget([b"k00", b"nope", b"k49"])]
    out["exists"] = b.exists(b"k00", b"k01", b"nope")
    out["version"] = b.version(b"k07")
    out["ttl"] = b.ttl(b"ttl") is not None and b.ttl(b"ttl") > 0
    out["counter"] = n.get("c")
    cursor, keys = 0, []
    while True:
        cursor, got = b.scan(b"k", cursor, 10)
        keys += got
        if cursor == 0:
            break
    out["scan"] = len(set(keys))
    out["check"] = bool(s.check())
    writes = {{
        "set": lambda: b.set(b"k00", b"x"),
        "set_new": lambda: b.set(b"new", b"x"),
        "mset": lambda: b.mset({{b"a": b"1"}}),
        "delete": lambda: b.delete(b"k01"),
        "getdel": lambda: b.getdel(b"k02"),
        "incr": lambda: n.incr("c"),
        "expire": lambda: b.expire(b"k03", 10),
        "persist": lambda: b.persist(b"ttl"),
        "flush": lambda: b.flush(),
        "single_read_get": lambda: b.get(b"once"),
        "create_bucket": lambda: s.create_bucket("nope"),
        "drop_bucket": lambda: s.drop_bucket("b"),
        "add_token": lambda: s.add_token("b", b"h" * 32, bukt.READ),
        "expire_some": lambda: s.expire_some(),
    }}
    for what, fn in writes.items():
        try:
            fn()
            out["refused"][what] = "no error"
        except bukt.errors.ReadOnly:
            out["refused"][what] = "ReadOnly"
        except Exception as e:
            out["refused"][what] = type(e).__name__ + ": " + str(e)
    print(json.dumps(out))
"""

HOT_READER = """
    import json, sys, time, bukt
    sys.path.insert(0, {tests!r})
    from mp_common import check_value
    b = bukt.attach({name!r}, readonly=True).bucket("b")
    seen = set()
    n = 0
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        v = b.get(b"hot")
        wid, ctr, _ = check_value(v, b"hot", 1)
        seen.add(ctr)
        n += 1
    print(json.dumps({{"reads": n, "distinct": len(seen)}}))
"""


def test_readonly_attach_from_another_process(seg):
    name, cleanup = seg
    with time_limit(120, "the read-only test"):
        store = bukt.create(name, size="16MiB")
        b = store.create_bucket("b", persist=False)
        n = store.create_bucket("n", schema="int", persist=False)
        for i in range(50):
            k = b"k%02d" % i
            b.set(k, make_value(k, 1, 7, i, 20 + i * 500))
        b.set(b"ttl", b"t", ttl=600)
        b.set(b"once", b"single", single_read=True)
        n.set("c", 41)
        versions = {k: b.version(k) for k in (b"k00", b"k01", b"k02", b"k03", b"k07")}

        out = run_py(READONLY_SCRIPT.format(tests=TESTS_DIR, name=name))
        assert out["values"] == {f"k{i:02d}": [7, i] for i in range(50)}
        assert out["mget"] == [True, False, True]
        assert out["exists"] == 2
        assert out["version"] == versions[b"k07"]
        assert out["ttl"] is True
        assert out["counter"] == 41
        assert out["scan"] == 50
        assert out["check"] is True                 # a read-only attach cannot check
        assert out["refused"] == {what: "ReadOnly" for what in out["refused"]}, \
            out["refused"]
        # nothing changed
        assert {k: b.version(k) for k in versions} == versions
        assert b.get(b"once") == b"single"
        assert n.get("c") == 41
        assert store.buckets() == ["b", "n"]
        assert b.ttl(b"ttl") is not None

        # read-only readers are lock-free readers: sound values while this process
        # rewrites the key as fast as it can
        b.set(b"hot", make_value(b"hot", 1, 1, 0, 5000))
        p = subprocess.Popen([sys.executable, "-c",
                              textwrap.dedent(HOT_READER.format(tests=TESTS_DIR,
                                                                name=name))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        cleanup["popen"].append(p)
        rng = random.Random(3)
        ctr = 0
        deadline = time.monotonic() + 60
        while p.poll() is None:
            assert time.monotonic() < deadline, "the read-only reader did not finish"
            ctr += 1
            b.set(b"hot", make_value(b"hot", 1, 1, ctr, rng.choice([20, 700, 5000, 60000])))
        stdout, stderr = p.communicate(timeout=10)
        assert p.returncode == 0, stderr
        res = json.loads(stdout.strip().splitlines()[-1])
        assert res["reads"] > 100 and res["distinct"] > 10, res
        assert store.check() == []
        store.close()


def test_readonly_attach_refuses_writes_in_process_too(seg):
    """The same refusal through a read-only store in this process, next to a
    read-write one: errors.ReadOnly, a BuktError."""
    name, _ = seg
    store = bukt.create(name, size="16MiB")
    store.create_bucket("b", persist=False).set(b"k", b"v")
    ro = bukt.attach(name, readonly=True)
    assert ro.readonly
    assert ro.bucket("b").get(b"k") == b"v"
    with pytest.raises(errors.ReadOnly):
        ro.bucket("b").set(b"k", b"w")
    assert issubclass(errors.ReadOnly, errors.BuktError)
    assert store.bucket("b").get(b"k") == b"v"
    ro.close()
    store.close()


def test_compare_and_delete_succeeds_once_across_processes(seg):
    """delete(key, if_version=v) checks and deletes under one lock: of racers that
    all saw version v, exactly one deletes; the rest get VersionMismatch."""
    name, cleanup = seg
    with time_limit(120, "the compare-and-delete race"):
        store = bukt.create(name, size="16MiB")
        b = store.create_bucket("cas", persist=False)
        keys = [b"sr%02d" % i for i in range(NKEYS)]
        barrier, pipes = start_racers(name, "cas", cleanup, "cas")
        for rnd in range(ROUNDS):
            versions = {k: b.set(k, b"round %d" % rnd) for k in keys}
            barrier.wait(30)
            winners_of_round(pipes, rnd, versions, "a compare-and-delete of")
            assert b.exists(*keys) == 0
        for p in cleanup["procs"]:
            p.join(30)
            assert p.exitcode == 0, f"{p.name} exit code {p.exitcode}"
        assert store.check() == []
        store.close()
