"""The operator's commands of `bukt`: status, check, compact.

A stopped service is exit code 4 (UNREACHABLE) for both status and compact, as when
there is no segment at all: the segment outlives the service (a warm restart
reattaches it), so a segment without a live writer is a stopped service.

`status` reads the segment header (what the writer publishes), the table's counters,
`data_dir/serve.json` (the supervisor's pids and addresses, bukt/service/supervisor.py) and /proc;
with --url http://... it asks a server's /healthz and /metrics instead.
"""
import glob
import json
import logging
import os
import signal
import time

from bukt import errors
from bukt import owners
from bukt.service import procs
from bukt.service import probes as probe
from bukt.writewait.durability import HEARTBEAT_STALE_MS, fsync_lag_seconds
from bukt.cli.common import (FAILED, OK, REFUSED, UNREACHABLE, CliError, config_arg, data_dir_of,
                      emit, human_bytes, json_arg, load_config, open_target, segment_writer,
                      target_args)
from bukt.cli.progress import Progress

log = logging.getLogger("bukt.cli")


# -- status ----------------------------------------------------------------------------------

def status_args(p):
    target_args(p, bucket=False)


def status(args):
    if args.url:
        return _remote_status(args)
    import bukt
    cfg = load_config(args)
    store = bukt.attach(cfg.instance, readonly=True)
    try:
        st, w = store.stats(), store.writer_info()
    finally:
        store.close()
    report = local_report(cfg, st, w)
    emit(args, report, lambda: print(_human_status(report)))
    if not (w["pid"] and w["alive"]):
        return UNREACHABLE          # the service is stopped: its segment outlived it
    return OK if report["healthy"] else FAILED


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def local_report(cfg, st, w) -> dict:
    now_ms = time.time() * 1000
    problems = []
    heartbeat_age = (now_ms - w["heartbeat_ms"]) / 1000 if w["heartbeat_ms"] else None
    if not w["pid"]:
        problems.append("no writer has attached (start the service: bukt serve)")
    elif not w["alive"]:
        problems.append(f"the writer (pid {w['pid']}) is gone")
    elif not w["ready"]:
        problems.append("the writer is not ready (recovering, or stopping)")
    elif heartbeat_age is not None and heartbeat_age * 1000 > HEARTBEAT_STALE_MS:
        problems.append(f"the writer's heartbeat is {heartbeat_age:.1f} s old")
    if w["error"]:
        problems.append(f"the writer reports: {w['error']}")
    awaiting = st["stripes_awaiting_repair"]
    if awaiting:
        problems.append(f"{awaiting} stripe(s) left mid-write by a dead process await "
                        "repair: their read-only readers wait (the writer repairs them at "
                        "start and every repair.interval)")
    data_dir, source = data_dir_of(cfg, writer=w)
    if w["data_dir"] and w["data_dir"] != data_dir:
        problems.append(f"the writer of this segment serves data_dir {w['data_dir']}, "
                        f"not {data_dir} ({source}): no writer serves this data_dir")
    elif w["pid"] and not w["data_dir"]:
        problems.append("the writer has not published its data_dir: which data_dir it "
                        "serves is not known")
    serve = _read_json(os.path.join(data_dir, "serve.json"))
    service = None
    if serve and owners.owner_alive(serve.get("pid", 0), serve.get("start", 0)):
        service = {"pid": serve["pid"], "config": serve.get("config"),
                   "admin_token": serve.get("admin_token"), "restarts": serve.get("restarts"),
                   "http": serve["http"]["bind"], "tcp": serve["tcp"]["bind"]}
        health = probe.http_health(serve["http"]["bind"])
        service["http_answers"] = health is not None
        ping = probe.tcp_ping(serve["tcp"]["bind"])
        service["tcp_ping_ms"] = None if ping is None else round(ping * 1000, 3)
        if health is None:
            problems.append(f"HTTP does not answer on {serve['http']['bind']}")
        else:
            workers = health[1].get("http_workers") or {}
            service["http_worker_restarts_last_minute"] = workers.get("restarts_last_minute")
            restarts = workers.get("restarts_last_minute") or 0
            if restarts >= cfg.http.max_worker_restarts:
                problems.append(f"the HTTP workers crash-loop: {restarts} died and were "
                                "restarted in the last minute; see the service's log")
        if ping is None:
            problems.append(f"TCP does not answer on {serve['tcp']['bind']}")
    logs = glob.glob(os.path.join(data_dir, "log-*.bkl"))
    bases = glob.glob(os.path.join(data_dir, "base-*.bkb"))
    return {
        "healthy": not problems, "problems": problems, "instance": cfg.instance,
        "segment": {"path": f"/dev/shm/bukt-{cfg.instance}", "bytes": st["segment_bytes"],
                    "memory_used": st["memory_used"], "pages_used": st["pages_used"],
                    "pages_total": st["pages_total"], "index_used": st["index_used"],
                    "index_slots": st["index_slots"], "index_stripes": st["index_stripes"],
                    "generation": st["generation"]},
        "keys": st["keys"], "buckets": st["buckets"], "value_bytes": st["bytes"],
        "stripes_awaiting_repair": awaiting, "repairs": st["repairs"],
        "ring": {"size": st["ring_size"], "depth": st["ring_depth"],
                 "unflushed": w["ring_head"] - w["flushed_pos"]},
        "writer": {"pid": w["pid"], "alive": w["alive"], "ready": w["ready"],
                   "error": w["error"], "heartbeat_age_s": heartbeat_age,
                   "fsync_lag_s": fsync_lag_seconds(w, now_ms),
                   "sync_always": w["sync_always"], "flushed_seq": w["flushed_seq"]},
        "disk": {"data_dir": data_dir, "data_dir_from": source,
                 "current_log_bytes": w["log_size"],
                 "log_bytes": sum(_size(p) for p in logs), "logs": len(logs),
                 # the zeros the writer keeps ahead of its records (aof: THE PREPARED
                 # TAIL): counted in log_bytes, since they take disk space
                 "prepared_bytes": max(0, _size(max(logs)) - w["log_size"])
                 if logs and w["ready"] else 0,
                 "base_bytes": sum(_size(p) for p in bases)},
        "service": service,
        "processes": _processes(serve if service else None, w),
    }


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _processes(serve, w) -> list:
    now = time.time()
    roles = {}
    if serve:
        roles[serve["pid"]] = "serve"
        for role, what in (("writer", "writer"), ("http", "http arbiter"), ("tcp", "tcp pool")):
            pid = serve.get(role, {}).get("pid")
            if pid:
                roles[pid] = what
        roots = [(d, p) for d, p in procs.tree(serve["pid"])]
    else:
        roots = [(0, w["pid"])] if w["pid"] and w["alive"] else []
        roles[w["pid"]] = "writer"
    out = []
    parent_role = {}
    for depth, pid in roots:
        d = procs.describe(pid)
        if d is None:
            continue
        role = roles.get(pid)
        if role is None:
            ppid_role = parent_role.get(depth - 1, "")
            role = {"http arbiter": "http worker", "tcp pool": "tcp worker"}.get(ppid_role,
                                                                                "child")
        parent_role[depth] = role
        out.append({"pid": pid, "role": role, "depth": depth, "rss_bytes": d["rss_bytes"],
                    "uptime_s": round(now - d["started"], 1)})
    return out


def _ago(s):
    if s is None:
        return "never"
    return f"{s:.1f} s ago" if s < 120 else f"{s / 60:.0f} min ago"


def _lag(s):
    """The fsync lag (bukt.writewait.durability.fsync_lag_seconds) in words."""
    return "-" if s is None else "0 s (nothing waits)" if s == 0 else f"{s:.1f} s"


def _human_status(r) -> str:
    seg, ring, w, disk = r["segment"], r["ring"], r["writer"], r["disk"]
    lines = [f"bukt {r['instance']}: " + ("healthy" if r["healthy"] else "UNHEALTHY")]
    lines += [f"  ! {p}" for p in r["problems"]]
    s = r["service"]
    if s:
        lines.append(f"  service   bukt serve pid {s['pid']}; HTTP {s['http']}"
                     f"{'' if s['http_answers'] else ' (not answering)'}, TCP {s['tcp']}"
                     + (f" (PING {s['tcp_ping_ms']} ms)" if s["tcp_ping_ms"] is not None
                        else " (not answering)"))
    else:
        lines.append("  service   no `bukt serve` runs for this data_dir")
    lines.append(f"  writer    pid {w['pid']}, " + ("ready" if w["ready"] else "not ready")
                 + f", heartbeat {_ago(w['heartbeat_age_s'])}, fsync lag "
                 + _lag(w["fsync_lag_s"]) + (", fsync always" if w["sync_always"] else ""))
    pct = 100 * seg["memory_used"] / seg["bytes"] if seg["bytes"] else 0
    lines.append(f"  memory    {human_bytes(seg['memory_used'])} of "
                 f"{human_bytes(seg['bytes'])} ({pct:.1f}%), index {seg['index_used']:,} of "
                 f"{seg['index_slots']:,} slots ({seg['index_stripes']:,} stripes in use); "
                 f"{seg['path']}")
    lines.append(f"  keys      {r['keys']:,} in {r['buckets']} buckets, "
                 f"{human_bytes(r['value_bytes'])} of values")
    lines.append(f"  repair    {r['stripes_awaiting_repair']} stripes awaiting repair, "
                 f"{r['repairs']:,} repairs since the segment was made")
    lines.append(f"  ring      {human_bytes(ring['depth'])} waiting for the writer, "
                 f"{human_bytes(ring['unflushed'])} not yet durable, of "
                 f"{human_bytes(ring['size'])}")
    prepared = f" ({human_bytes(disk['prepared_bytes'])} of them zeros prepared ahead)" \
        if disk["prepared_bytes"] else ""
    lines.append(f"  disk      {disk['data_dir']} (from {disk['data_dir_from']}): "
                 f"{disk['logs']} logs, "
                 f"{human_bytes(disk['log_bytes'])}{prepared}; base "
                 f"{human_bytes(disk['base_bytes'])}")
    if r["processes"]:
        lines.append("  processes")
        for p in r["processes"]:
            name = "  " * p["depth"] + p["role"]
            lines.append(f"    {p['pid']:>7}  {name:<18}{human_bytes(p['rss_bytes']):>10}  "
                         f"up {p['uptime_s']:.0f} s")
    return "\n".join(lines)


def _remote_status(args):
    from bukt.cli.targets import HttpTarget
    from bukt import errors
    with open_target(args) as t:
        if not isinstance(t, HttpTarget):
            ping = probe.tcp_ping(f"{t.client.host}:{t.client.port}", timeout=args.timeout)
            if ping is None:
                raise CliError(UNREACHABLE, f"{t.where}: no answer to PING")
            emit(args, {"healthy": True, "tcp_ping_ms": round(ping * 1000, 3)},
                 f"{t.where}: answers PING in {ping * 1000:.2f} ms (ask over http:// "
                 "for the whole status)")
            return OK
        code, health = t.health()
        report = {"healthy": code == 200, "health": health}
        try:
            report["metrics"] = m = t.metrics()
        except (errors.AuthError, errors.PermissionDenied):
            m = None
    def human():
        print(f"{t.where}: " + ("healthy" if code == 200 else
                                f"UNHEALTHY: {health.get('reason', '')}"))
        if m is None:
            print("  (pass the admin token, --token, for memory, keys and the writer)")
            return
        st, w = m["store"], m.get("writer", {})
        print(f"  memory    {human_bytes(st['memory_used'])} of "
              f"{human_bytes(st['segment_bytes'])}")
        print(f"  keys      {st['keys']:,} in {st['buckets']} buckets")
        print(f"  ring      {human_bytes(w.get('ring_depth'))} waiting, "
              f"{human_bytes(w.get('unflushed_bytes'))} not yet durable")
        print(f"  writer    up {w.get('up')}, fsync lag "
              f"{_lag(w.get('fsync_lag_seconds'))}, log {human_bytes(w.get('log_bytes'))}")
    emit(args, report, human)
    return OK if code == 200 else FAILED


# -- check -----------------------------------------------------------------------------------

def check_args(p):
    config_arg(p)
    json_arg(p)
    p.add_argument("--fix", action="store_true",
                   help="repair: cut damaged logs at their last good record (the rest is "
                        "kept as <file>.bad-<time>), rewrite damaged base files; the "
                        "writer must be stopped")
    p.add_argument("--data-dir", help="overrides data_dir")


def check(args):
    from bukt import writer
    from bukt.errors import BuktError
    import bukt
    cfg = load_config(args)
    w = segment_writer(cfg.instance)
    path, source = data_dir_of(cfg, args.data_dir, writer=w)
    # a directory the running writer claimed may be fresh (nothing in it yet); any
    # other without files is one this command was not meant to check
    claimed = bool(w and w["alive"] and w["data_dir"] == path)
    result = {"data_dir": path, "data_dir_from": source, "files": [], "fixed": [],
              "segment": None}
    lines = [f"data_dir {path} (from {source})"]
    bad = False
    nothing = (f"nothing on disk was checked: is this the service's data directory? Name "
               "it with --data-dir, data_dir in --config, or BUKT_DATA_DIR; run from "
               "anywhere, this command finds it in the running service's segment")
    if not os.path.isdir(path):
        if claimed:
            lines.append(f"{path}: not made yet by writer pid {w['pid']} (a fresh instance)")
        else:
            lines.append(f"{path}: no such directory; {nothing}")
            bad = True
    else:
        try:
            with Progress("check") as p:
                p.unit = "B"
                reports = writer.check(path, p)
        except writer.RecoveryError as e:
            raise CliError(REFUSED, str(e)) from None
        if not reports:
            if claimed:
                lines.append(f"{path}: no MANIFEST, log or base file yet: a fresh data "
                             f"directory, claimed by writer pid {w['pid']}")
            else:
                lines.append(f"{path}: no MANIFEST, log or base file; {nothing}")
                bad = True
        for r in reports:
            state = "ok" if not r.problems and not r.error else "DAMAGED"
            prepared = f" ({r.prepared} of them zeros prepared for the next records)" \
                if r.prepared else ""
            lines.append(f"{r.path}: {r.kind}, {r.records} records, {r.size} bytes{prepared}: "
                         f"{state}")
            if r.error:
                lines.append(f"  {r.error}")
            for pr in r.problems:
                kind = "truncated tail" if pr.truncated else "corrupt"
                lines.append(f"  bytes {pr.offset}-{pr.end}: {kind}: {pr.reason}")
            result["files"].append({"path": r.path, "kind": r.kind, "records": r.records,
                                    "bytes": r.size, "prepared": r.prepared, "error": r.error,
                                    "problems": [{"offset": pr.offset, "end": pr.end,
                                                  "truncated": pr.truncated,
                                                  "reason": pr.reason} for pr in r.problems]})
            bad = bad or bool(r.problems or r.error)
        if args.fix and bad and reports:
            try:
                done = writer.fix(path)
            except writer.RecoveryError as e:
                raise CliError(REFUSED, f"not fixed: {e}") from None
            for r in done:
                lines.append(f"fixed {r.path}: cut at byte {r.cut_at}, {r.removed} bytes kept "
                             f"in {r.side_file} ({r.reason})")
                result["fixed"].append({"path": r.path, "cut_at": r.cut_at,
                                        "side_file": r.side_file})
            if done and writer.remove_tie(path):
                lines.append("the logs changed: the next writer start recovers from disk "
                             "(cold)")
            bad = False
        if not bad:
            fit = _live_set_fits(cfg, path)
            if fit is not None:
                ok, line, result["live_set"] = fit
                lines.append(line)
                bad = not ok
    if w and w["data_dir"] and w["data_dir"] != path:
        lines.append(f"note: the segment's writer serves data_dir {w['data_dir']}, not {path}")
    try:
        store = bukt.attach(cfg.instance)
    except (BuktError, PermissionError) as e:
        lines.append(f"segment: {e}")
    else:
        try:
            problems = store.check()
            objects = _check_objects(cfg, store)
        finally:
            store.close()
        lines.append(f"segment /dev/shm/bukt-{cfg.instance}: "
                     + ("ok" if not problems else f"{len(problems)} problems"))
        lines += [f"  {pr}" for pr in problems]
        result["segment"] = {"problems": [str(pr) for pr in problems]}
        bad = bad or bool(problems)
        if objects is not None:
            lines.append(f"objects: {objects['objects']} ({human_bytes(objects['bytes'])}), "
                         + ("digests ok" if not objects["bad"] else
                            f"{len(objects['bad'])} DAMAGED")
                         + f"; {objects['orphans']} hidden entries of "
                           f"{objects['orphan_objects']} retired or abandoned objects "
                           "awaiting the reclaim sweep")
            lines += [f"  {b['bucket']} {b['key']!r}: {b['error']}" for b in objects["bad"]]
            result["objects"] = {**objects, "bad": [
                {**b, "key": b["key"].decode("utf-8", "backslashreplace")}
                for b in objects["bad"]]}
            bad = bad or bool(objects["bad"])
    result["ok"] = not bad
    emit(args, result, "\n".join(lines))
    return FAILED if bad else OK


def _check_objects(cfg, store):
    """Every object's digest verified (bukt/objects/check.py)."""
    from bukt.objects.check import verify
    return verify(store, cfg.objects.upload_timeout)


def _live_set_fits(cfg, path):
    """Does the live set the files describe fit in `memory`, as a cold start loads it
    (design.md, Recovery)? (ok, a line, a dict), or None when the files cannot be read
    through (what is wrong with them is reported already)."""
    from bukt import writer
    try:
        final = writer.final_sets(writer.replay(path, now_ms=int(time.time() * 1000),
                                          on_corrupt=cfg.recovery.on_corrupt), sizes=True)
    except writer.RecoveryError:
        return None
    sizes = {}
    for d in final.values():
        for size in d.values():
            sizes[size] = sizes.get(size, 0) + 1
    keys = sum(sizes.values())
    need = writer.memory_needed(sizes, cfg)
    info = {"keys": keys, "memory_needed": need, "memory": cfg.memory}
    line = (f"live set: {keys} keys; needs memory of at least {need} bytes "
            f"({human_bytes(need)}), memory is {cfg.memory} bytes")
    if need <= cfg.memory:
        return True, line + ": a cold start loads it all", info
    if cfg.recovery.evict:
        return True, line + ": a cold start evicts from lru buckets (recovery.evict)", info
    return False, line + (": a cold start would refuse; raise memory, or set "
                          "recovery.evict: true"), info


# -- compact ---------------------------------------------------------------------------------

def compact_args(p):
    config_arg(p)
    json_arg(p)
    p.add_argument("--wait", type=float, default=300.0, metavar="S",
                   help="seconds to wait for the new base file (0: do not wait)")


def _writer_of(instance):
    """writer_info() of the segment now named /bukt-<instance>, or None if there is none
    (a cold restart may replace the segment: it is attached anew each time)."""
    import bukt
    try:
        store = bukt.attach(instance, readonly=True)
    except errors.SegmentNotFound:
        return None
    try:
        return store.writer_info()
    finally:
        store.close()


def compact(args):
    """Ask the writer to compact; with --wait, until the new base file is listed. A
    writer that dies on the way is followed: the one the supervisor starts in its place
    is asked again (its own compaction starts over), and with none, the command says the
    compaction was interrupted rather than waiting for a base that cannot come."""
    from bukt.writer import read_manifest
    cfg = load_config(args)
    info = _writer_of(cfg.instance)
    if info is None:
        import bukt
        bukt.attach(cfg.instance, readonly=True)    # raises SegmentNotFound, explained
    if not info["alive"]:
        raise CliError(UNREACHABLE, "no writer process is running; start the service "
                                    "(bukt serve)")
    data_dir, source = data_dir_of(cfg, writer=info)
    if info["data_dir"] != data_dir:
        raise CliError(FAILED, f"the writer (pid {info['pid']}) serves data_dir "
                               f"{info['data_dir']}, not {data_dir} ({source}): its new base "
                               "file would not show there; name the writer's data_dir, or "
                               "none")
    before = read_manifest(data_dir)
    os.kill(info["pid"], signal.SIGUSR1)
    if args.wait <= 0:
        emit(args, {"requested": True}, "compaction requested")
        return OK
    deadline = time.monotonic() + args.wait
    writer, lost, next_look = (info["pid"], info["start"]), False, 0.0
    with Progress("compact", unit="B") as p:
        while time.monotonic() < deadline:
            m = read_manifest(data_dir)
            if m is not None and m.base and (before is None or m.base != before.base):
                path = os.path.join(data_dir, m.base)
                p.set(_size(path))
                p.close()
                emit(args, {"base": path, "bytes": _size(path)}, f"compacted: {path}")
                return OK
            p.set(sum(_size(t) for t in glob.glob(os.path.join(data_dir, "base-*.tmp"))))
            if time.monotonic() >= next_look:        # is the writer asked still there?
                next_look = time.monotonic() + 0.2
                now = _writer_of(cfg.instance)
                if now and now["alive"] and now["ready"] and \
                        (now["pid"], now["start"]) != writer:
                    log.warning("the writer (pid %d) stopped during the compaction; asking "
                                "its successor (pid %d)", writer[0], now["pid"])
                    os.kill(now["pid"], signal.SIGUSR1)
                    writer, lost = (now["pid"], now["start"]), False
                elif not owners.owner_alive(*writer):
                    lost = True                 # until a successor is up
            time.sleep(0.05)
    if lost:
        raise CliError(FAILED, f"the compaction was interrupted: the writer (pid {writer[0]})"
                               " stopped and no writer took its place; start the service "
                               "and run bukt compact again")
    raise CliError(FAILED, f"no new base file within {args.wait:g} s; see the writer's log")
