"""Read replicas (docs/design.md, "Replicas"): two real `bukt serve`s on loopback, the
second with replica.of naming the first. The replica copies, follows, refuses writes
everywhere, and in the end holds exactly the primary's entries (dumped and compared)."""
import multiprocessing
import os
import signal
import time

import pytest

import bukt
from bukt import errors
from serve_harness import Service, wait_for

BUCKET = "b"


def dump(name):
    """Every live entry of a segment: {(bucket, key): (value, expire_ms, flags, version)}."""
    store = bukt.attach(name, readonly=True)
    try:
        out, start = {}, 0
        while True:
            entries, start = store.dump_stripes(start, 256)
            for bucket, key, value, expire_ms, flags, version in entries:
                out[(bucket, bytes(key))] = (bytes(value), expire_ms, flags, version)
            if start == 0:
                return out
    finally:
        store.close()


def buckets(name):
    store = bukt.attach(name, readonly=True)
    try:
        return sorted(store.buckets())
    finally:
        store.close()


def services(tmp_path, memory="64MiB", **primary_overrides):
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    p = Service(tmp_path / "p", memory=memory, **primary_overrides)
    r = Service(tmp_path / "r", memory=memory)
    return p, r


def start_replica(p, r, **overrides):
    r.configure(replica={"of": f"bukt://:{p.admin_token()}@127.0.0.1:{p.http_port}"},
                **overrides)
    r.start()


def replicating(p, r, keys, **replica_overrides):
    """The primary started with BUCKET holding `keys` keys, the replica started on it
    and caught up: (the bucket's token, the contents both hold)."""
    p.start()
    token = p.create_bucket(BUCKET)
    _load(p.name, BUCKET, 0, keys)
    start_replica(p, r, **replica_overrides)
    return token, wait_equal(p, r)


def replica_status(r):
    import json
    try:
        with open(os.path.join(r.data_dir, "replica.status.json")) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return {}


def wait_equal(p, r, timeout=60.0):
    """Waits until the replica's entries equal the primary's (the primary is quiet)."""
    deadline = time.monotonic() + timeout
    while True:
        a, b = dump(p.name), dump(r.name)
        if a == b:
            return a
        if time.monotonic() > deadline:
            missing = len(a.keys() - b.keys())
            extra = len(b.keys() - a.keys())
            differ = sum(1 for k in a.keys() & b.keys() if a[k] != b[k])
            raise AssertionError(f"replica differs: {missing} missing, {extra} extra, "
                                 f"{differ} different; replica log:\n{r.log()[-3000:]}")
        time.sleep(0.2)


def _again(fn, *args, **kw):
    """fn(*args), again while the primary's writer is behind (RingFull, DiskError from
    its lag limit): a loaded test machine, not what the test is about."""
    while True:
        try:
            return fn(*args, **kw)
        except (errors.RingFull, errors.DiskError):
            time.sleep(0.05)


def _load(name, bucket, start, n, value_len=16):
    store = bukt.attach(name)
    b = store.bucket(bucket)
    v = b"v" * value_len
    for i in range(start, start + n):
        _again(b.set, b"k%08d" % i, v + b"%d" % i)
    store.close()


def _churn(name, bucket, seconds_marker, seed):
    """Writes until the marker file disappears: sets, overwrites, deletes, TTLs, incrs."""
    import random
    rnd = random.Random(seed)
    store = bukt.attach(name)
    b = store.bucket(bucket)
    i = 0
    while os.path.exists(seconds_marker):
        k = b"k%08d" % rnd.randrange(0, 200_000)
        op = rnd.random()
        if op < 0.6:
            _again(b.set, k, b"w%d-%d" % (seed, i))
        elif op < 0.8:
            _again(b.delete, k)
        elif op < 0.9:
            _again(b.set, k, b"t%d" % i, ttl=3600)
        else:
            _again(b.incr, b"n%03d" % rnd.randrange(100))
        i += 1
    store.close()


def test_replica_refuses_writes_and_follows(tmp_path):
    p, r = services(tmp_path)
    try:
        token, _ = replicating(p, r, 1000)
        assert buckets(r.name) == buckets(p.name)
        # followed: a change after the copy reaches the replica
        _load(p.name, BUCKET, 1000, 10)
        wait_equal(p, r)
        # every face of the replica refuses writes, naming the primary
        local = bukt.attach(r.name)
        try:
            with pytest.raises(errors.ReplicaReadOnly, match=f"127.0.0.1:{p.http_port}"):
                local.bucket(BUCKET).set(b"x", b"y")
            with pytest.raises(errors.ReplicaReadOnly):
                local.create_bucket("other")
            assert local.bucket(BUCKET).get(b"k00000001") == b"vvvvvvvvvvvvvvvv1"
        finally:
            local.close()
        status, body = r.http("PUT", f"/api/v1/buckets/{BUCKET}/keys/x", b"y",
                              {"X-Auth-Token": token})
        assert status == 503 and f"127.0.0.1:{p.http_port}".encode() in body, body
        # the primary's bucket token reads on the replica (tokens are replicated)
        with r.client(BUCKET, token) as c:
            assert c.get(b"k00000002") == b"vvvvvvvvvvvvvvvv2"
            with pytest.raises(errors.ReadOnly, match="replica"):
                c.set(b"x", b"y")
        assert dump(r.name) == dump(p.name)
    finally:
        r.cleanup()
        p.cleanup()


def test_replica_status_info_and_metrics(tmp_path):
    import json
    import subprocess
    import sys
    import redis
    p, r = services(tmp_path)
    try:
        p.start()
        token = p.create_bucket(BUCKET)
        _load(p.name, BUCKET, 0, 100)
        start_replica(p, r, resp={"enabled": True})
        wait_equal(p, r)

        def status():
            out = subprocess.run([sys.executable, "-m", "bukt", "replica", "status",
                                  "--config", r.conf, "--json"], capture_output=True,
                                 env=r.env(), timeout=30)
            return out.returncode, json.loads(out.stdout)
        # caught up: the primary's BEAT says there is nothing left
        st = wait_for(lambda: (lambda c, d: d if c == 0 and d["lag_seq"] == 0 else None)(
            *status()), 15, what="a caught-up status")
        assert st["role"] == "replica" and st["primary"] == f"127.0.0.1:{p.http_port}"
        assert st["link"] == "up" and st["applied"] > 0 and st["copies"] == 1
        assert st["lag_seconds"] is not None and st["lag_seconds"] < 30
        code = subprocess.run([sys.executable, "-m", "bukt", "replica", "status",
                               "--config", p.conf, "--json"], capture_output=True,
                              env=p.env(), timeout=30).returncode
        assert code == 0
        # RESP: INFO replication in Redis's words
        rc = redis.Redis("127.0.0.1", r.resp_port, username=BUCKET, password=token,
                         socket_timeout=10)
        info = rc.info("replication")
        assert info["role"] == "slave" and info["master_port"] == p.http_port
        assert info["master_link_status"] == "up"
        assert info["slave_repl_offset"] == st["applied"] or info["slave_repl_offset"] > 0
        with pytest.raises(redis.exceptions.ResponseError, match="replica"):
            rc.set("x", "y")
        rc.close()
        pc = redis.Redis("127.0.0.1", p.resp_port, username=BUCKET, password=token,
                         socket_timeout=10)
        assert pc.info("replication")["role"] == "master"
        pc.close()
        # /metrics
        status_, body = r.http("GET", "/metrics", headers={"X-Auth-Token": r.admin_token()})
        assert status_ == 200
        text = body.decode()
        assert f'bukt_replica{{primary="127.0.0.1:{p.http_port}"}} 1' in text
        assert "bukt_replica_lag_seconds " in text and "bukt_replica_applied " in text
        status_, body = p.http("GET", "/metrics", headers={"X-Auth-Token": p.admin_token()})
        assert "bukt_replica 0" in body.decode()
    finally:
        r.cleanup()
        p.cleanup()


@pytest.mark.slow
def test_replica_copies_a_million_keys_and_follows_a_write_load(tmp_path):
    p, r = services(tmp_path, memory="512MiB", limits={"ring_size": "16MiB"})
    try:
        p.start()
        p.create_bucket(BUCKET)
        ctx = multiprocessing.get_context("fork")
        loaders = [ctx.Process(target=_load, args=(p.name, BUCKET, i * 500_000, 500_000))
                   for i in range(2)]
        for proc in loaders:
            proc.start()
        for proc in loaders:
            proc.join()
            assert proc.exitcode == 0
        assert len(dump(p.name)) == 1_000_000
        marker = str(tmp_path / "churning")
        open(marker, "w").close()
        churn = [ctx.Process(target=_churn, args=(p.name, BUCKET, marker, s))
                 for s in range(2)]
        for proc in churn:
            proc.start()
        start_replica(p, r, limits={"ring_size": "16MiB"})
        wait_for(lambda: replica_status(r).get("copies", 0) >= 1, 120,
                 what="the full copy")
        time.sleep(2)                   # (the replica follows the load for a while)
        os.unlink(marker)
        for proc in churn:
            proc.join()
            assert proc.exitcode == 0
        final = wait_equal(p, r, timeout=120)
        assert len(final) > 500_000
    finally:
        r.cleanup()
        p.cleanup()


def _kill_service(svc):
    """SIGKILL a whole `bukt serve` (its children too), leaving its segment."""
    from serve_harness import kill_matching
    try:
        os.killpg(svc.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    svc.proc.wait(10)
    kill_matching(str(svc.tmp))


def _logs_start(data_dir):
    """The sequence the oldest log of a data directory starts after."""
    import json
    from bukt.writer import aof
    with open(os.path.join(data_dir, "MANIFEST")) as f:
        first = json.load(f)["logs"][0]
    with open(os.path.join(data_dir, first), "rb") as f:
        return aof.read_file_header(f.read(aof.FILE_HEADER_SIZE), first, aof.LOG_MAGIC)


@pytest.mark.slow
def test_a_killed_replica_resumes_where_it_was(tmp_path):
    p, r = services(tmp_path)
    try:
        replicating(p, r, 5000)
        wait_for(lambda: replica_status(r).get("saved"), 10, what="replica.json")
        _kill_service(r)
        _load(p.name, BUCKET, 5000, 5000)           # while the replica is down
        r.start()
        wait_equal(p, r)
        assert replica_status(r)["copies"] == 1     # resumed: no second copy
        assert "full copy" not in r.log()
        assert "following" in r.log()
    finally:
        r.cleanup()
        p.cleanup()


@pytest.mark.slow
def test_a_copy_survives_a_cold_restart_of_the_replica(tmp_path):
    """The copy's key records go through the core's bulk loader; they must still reach
    the replica's own log, so a replica started cold from its files has every key and
    resumes from replica.json without a second copy."""
    p, r = services(tmp_path)
    try:
        _, want = replicating(p, r, 20_000)
        wait_for(lambda: replica_status(r).get("saved"), 10, what="replica.json")
        assert r.stop() == 0
        r.start(args=("--cold",))
        assert "cold start" in r.log()
        assert dump(r.name) == want                 # from its own files, before following
        _load(p.name, BUCKET, 20_000, 100)
        wait_equal(p, r)
        assert replica_status(r)["copies"] == 1     # resumed: no second copy
        assert "full copy" not in r.log()
    finally:
        r.cleanup()
        p.cleanup()


@pytest.mark.slow
def test_a_replica_behind_a_compaction_copies_again(tmp_path):
    p, r = services(tmp_path)
    try:
        replicating(p, r, 5000)
        wait_for(lambda: replica_status(r).get("saved"), 10, what="replica.json")
        assert r.stop() == 0
        from bukt.replica.applier import read_state
        applied = read_state(r.data_dir)["applied"]
        _load(p.name, BUCKET, 5000, 5000)
        os.kill(p.state()["writer"]["pid"], signal.SIGUSR1)        # compact now
        wait_for(lambda: _logs_start(p.data_dir) > applied, 30,
                 what="the primary's compaction past the replica")
        r.start()
        wait_equal(p, r)
        assert replica_status(r)["copies"] == 2
        assert "cannot resume from the last applied sequence" in r.log()
    finally:
        r.cleanup()
        p.cleanup()


@pytest.mark.slow
def test_a_stopped_replica_catches_up(tmp_path):
    p, r = services(tmp_path)
    try:
        replicating(p, r, 1000)
        applier = r.state()["replica"]["pid"]
        os.kill(applier, signal.SIGSTOP)
        try:
            _load(p.name, BUCKET, 1000, 50_000)
            assert len(dump(r.name)) == 1000        # it really stood still
        finally:
            os.kill(applier, signal.SIGCONT)
        wait_equal(p, r)
        assert r.state()["replica"]["pid"] == applier   # the same process caught up
    finally:
        r.cleanup()
        p.cleanup()


def _cli(svc, *args):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "bukt", *args, "--config", svc.conf],
                         capture_output=True, env=svc.env(), timeout=60, text=True)
    return out.returncode, out.stdout + out.stderr


def _writes(name):
    """True if a local program may write to the segment; the refusal's text if not."""
    store = bukt.attach(name)
    try:
        store.bucket(BUCKET).set(b"probe", b"1")
        return True
    except errors.ReplicaReadOnly as e:
        return str(e)
    finally:
        store.close()


def test_promote_fences_the_old_primary_until_an_operator_unfences_it(tmp_path):
    p, r = services(tmp_path)
    try:
        token, _ = replicating(p, r, 100)
        wait_for(lambda: replica_status(r).get("primary_node"), 10, what="the primary's id")
        code, out = _cli(r, "promote")
        assert code == 0, out
        assert "fenced (HTTP 200)" in out
        # the replica takes writes on every face now; its applier is gone for good
        assert _writes(r.name) is True
        with r.client(BUCKET, token) as c:
            c.set(b"after", b"promotion")
        wait_for(lambda: "applier stopped after a promotion" in r.log(), 10,
                 what="the supervisor's word")
        assert r.state()["replica"] is None
        # the old primary refuses, naming the new one, and still after a restart
        me = f"127.0.0.1:{r.http_port}"
        assert me in _writes(p.name)
        with p.client(BUCKET, token) as c:
            with pytest.raises(errors.ReadOnly, match=me):
                c.set(b"x", b"y")
        assert p.stop() == 0
        p.start()
        assert me in _writes(p.name)
        # the operator's word
        code, out = _cli(p, "unfence")
        assert code == 0, out
        assert _writes(p.name) is True
        assert p.stop() == 0
        p.start()
        assert _writes(p.name) is True
        # the promoted replica stays a primary across its own restart
        assert r.stop() == 0
        r.start()
        assert _writes(r.name) is True
        assert r.state()["replica"] is None
    finally:
        r.cleanup()
        p.cleanup()


def test_an_old_primary_that_was_down_fences_itself_at_start(tmp_path):
    p, r = services(tmp_path)
    try:
        replicating(p, r, 100)
        wait_for(lambda: replica_status(r).get("saved"), 10, what="replica.json")
        _kill_service(p)
        code, out = _cli(r, "promote")
        assert code == 0, out
        assert "unreachable" in out
        p.start()
        assert f"127.0.0.1:{r.http_port}" in _writes(p.name)
        assert "fenced: a replica was promoted" in p.log()
    finally:
        r.cleanup()
        p.cleanup()


def test_min_acks_without_a_replica_fails_the_write_clearly(tmp_path):
    (tmp_path / "p").mkdir()
    p = Service(tmp_path / "p", fsync="always")
    try:
        p.start()
        token = p.create_bucket(BUCKET)
        assert p.stop() == 0
        p.configure(replication={"min_acks": 1})
        p.start()
        with p.client(BUCKET, token, timeout=30) as c:
            with pytest.raises(errors.WriterDown, match=r"replication.min_acks \(1\)"):
                c.set(b"k", b"v")
        status, body = p.http("PUT", f"/api/v1/buckets/{BUCKET}/keys/k2", b"v",
                              {"X-Auth-Token": token}, timeout=30)
        assert status == 503 and b"replication.min_acks (1)" in body, body
    finally:
        p.cleanup()


def _ack_writer(name, bucket, path, start):
    """Sets keys one after another, noting each acknowledged one (then fsynced)."""
    store = bukt.attach(name)
    b = store.bucket(bucket)
    with open(path, "ab", buffering=0) as f:
        i = start
        while True:
            try:
                b.set(b"a%08d" % i, b"%d" % i)
            except errors.BuktError:
                time.sleep(0.01)
                continue
            f.write(b"%d\n" % i)
            i += 1


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(int(os.environ.get("BUKT_REPLICA_TRIALS", "30"))))
def test_min_acks_keeps_every_acknowledged_write_through_a_promotion(tmp_path, trial):
    import random
    p, r = services(tmp_path, fsync="always", replication={"min_acks": 1})
    try:
        p.start()
        start_replica(p, r)
        wait_for(lambda: replica_status(r).get("copies", 0) >= 1, 60, what="the copy")
        p.create_bucket(BUCKET)         # (acknowledged once the replica has it)
        acked = str(tmp_path / "acked")
        ctx = multiprocessing.get_context("fork")
        writers = [ctx.Process(target=_ack_writer, args=(p.name, BUCKET, f"{acked}{w}",
                                                          w * 10_000_000))
                   for w in range(2)]
        for w in writers:
            w.start()
        wait_for(lambda: all(os.path.exists(f"{acked}{w}") and os.path.getsize(f"{acked}{w}")
                             for w in range(2)), 30, what="acknowledged writes")
        time.sleep(random.Random(trial).uniform(0.05, 1.0))
        _kill_service(p)                     # the primary dies mid-load
        for w in writers:
            w.kill()
            w.join()
        code, out = _cli(r, "promote")
        assert code == 0, out
        after = dump(r.name)
        n = 0
        for w in range(2):
            with open(f"{acked}{w}", "rb") as f:
                for line in f.read().split(b"\n"):
                    if not line:
                        continue
                    i = int(line)
                    assert after.get((BUCKET, b"a%08d" % i), (None,))[0] == b"%d" % i, \
                        f"acknowledged write {i} is not on the promoted replica"
                    n += 1
        assert n > 0
    finally:
        r.cleanup()
        p.cleanup()


def test_a_record_longer_than_the_primary_reads_at_a_time_is_sent(tmp_path):
    p, r = services(tmp_path, replica={"chunk": "64KiB"})
    try:
        p.start()
        p.create_bucket(BUCKET)
        start_replica(p, r)
        wait_equal(p, r)
        store = bukt.attach(p.name)
        try:
            store.bucket(BUCKET).set(b"big", os.urandom(300_000))   # > 4 chunks
            store.bucket(BUCKET).set(b"after", b"it")
        finally:
            store.close()
        wait_equal(p, r, timeout=30)
    finally:
        r.cleanup()
        p.cleanup()


def test_a_replicate_token_follows_and_only_the_admin_gives_one(tmp_path):
    import json
    p, r = services(tmp_path)
    try:
        p.start()
        token = p.create_bucket(BUCKET)             # the bucket's read/write/admin token
        path = f"/api/v1/buckets/{BUCKET}/tokens"
        status, body = p.http("POST", path, {"permissions": ["replicate"]},
                              {"X-Auth-Token": token})
        assert status == 403, body                  # a bucket's admin may not
        status, body = p.http("GET", "/api/v1/replication/snapshot",
                              headers={"X-Auth-Token": token})
        assert status == 403, body                  # nor replicate with its own token
        status, body = p.http("POST", path, {"permissions": ["replicate"]},
                              {"X-Auth-Token": p.admin_token()})
        assert status == 201, body
        replicate = json.loads(body)["token"]
        _load(p.name, BUCKET, 0, 100)
        r.configure(replica={"of": f"bukt://:{replicate}@127.0.0.1:{p.http_port}"})
        r.start()
        wait_equal(p, r)
    finally:
        r.cleanup()
        p.cleanup()



def test_the_applier_logs_in_the_service_format_and_follows_a_reload(tmp_path):
    """The replica's applier logs as every process does (bukt/logs.py: role `replica`),
    and a SIGHUP that changes log.format restarts it in the new format; it resumes."""
    import json
    import signal
    p, r = services(tmp_path)
    try:
        replicating(p, r, 100)
        assert any(" replica[" in line for line in r.log().splitlines()), r.log()
        mark = len(r.log())
        r.configure(log={"format": "json"})
        os.kill(r.proc.pid, signal.SIGHUP)

        def replica_json():
            for line in r.log()[mark:].splitlines():
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                if doc.get("role") == "replica":
                    return doc
            return None
        wait_for(replica_json, timeout=60, what="the applier to log in json")
        _load(p.name, BUCKET, 100, 10)
        wait_equal(p, r)
        r.stop()
        p.stop()
    finally:
        r.cleanup()                     # also unlinks the segments stop leaves
        p.cleanup()
