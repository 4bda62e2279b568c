"""GET /api/v1/service: the service at a glance, for operators and the dashboard (/ui).

What /metrics gives as counters and gauges, plus what a person looking at the service
asks next and no metric answers: the writer's fsync policy and its state in words,
the files of the data directory and how near the next compaction is, the processes of
each face, and the segment's memory by slab class. Admin token only, as /metrics.
"""

import glob
import json
import os
import time

from bukt.http.auth import ADMIN
from bukt.owners import owner_alive
from bukt.service.procs import children_of
from bukt.service.supervisor import STATE_FILE
from bukt.writewait.durability import fsync_lag_seconds


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _writer(w, settings, now_ms):
    if not w.get("pid"):
        state = "absent"
    elif not w.get("alive"):
        state = "gone"
    elif w.get("error"):
        state = "error"
    elif not w.get("ready"):
        state = "starting"
    else:
        state = "ready"
    return {
        "state": state, "pid": w.get("pid") or None, "error": w.get("error") or None,
        # the segment says only whether every write waits for its fsync; the policy's
        # name is the configuration's (the same file `bukt serve` gave the writer)
        "fsync": "always" if w.get("sync_always") else settings.fsync,
        "fsync_lag_seconds": fsync_lag_seconds(w, now_ms),
        "heartbeat_age_seconds": (now_ms - w["heartbeat_ms"]) / 1000
        if w.get("heartbeat_ms") else None,
        "log_bytes": w.get("log_size", 0), "flushed_seq": w.get("flushed_seq", 0)}


def _disk(data_dir, settings):
    if not data_dir or not os.path.isdir(data_dir):
        return None, None
    logs = glob.glob(os.path.join(data_dir, "log-*.bkl"))
    bases = glob.glob(os.path.join(data_dir, "base-*.bkb"))
    log_bytes = sum(map(_size, logs))
    base_bytes = sum(map(_size, bases))
    # the writer's own test (bukt/writer/process.py, _compaction_due) on file sizes:
    # the current log's prepared zeros count here, so this is an upper bound
    due_at = max(settings.compaction_min_log_bytes,
                 int(settings.compaction_ratio * base_bytes) + 1)
    disk = {"data_dir": data_dir, "logs": len(logs), "log_bytes": log_bytes,
            "bases": len(bases), "base_bytes": base_bytes}
    compaction = {"ratio": settings.compaction_ratio,
                  "min_log_bytes": settings.compaction_min_log_bytes,
                  "next_at_log_bytes": due_at,
                  "progress": min(1.0, log_bytes / due_at) if due_at else 1.0}
    return disk, compaction


def _faces(data_dir, settings, area):
    faces = {"http": {"workers": settings.workers,
                      "restarts_last_minute": area.restarts(settings.workers)},
             "tcp": {"workers": settings.tcp_workers}}
    try:
        with open(os.path.join(data_dir or "", STATE_FILE)) as f:
            serve = json.load(f)
    except (OSError, ValueError):
        serve = None
    if not serve or not owner_alive(serve.get("pid", 0), serve.get("start", 0)):
        return faces, None
    for face in ("http", "tcp"):
        pid = (serve.get(face) or {}).get("pid")
        if pid:
            faces[face].update(pid=pid, bind=serve[face].get("bind"),
                               pids=children_of(pid))
            faces[face]["alive"] = len(faces[face]["pids"])
    return faces, serve["pid"]


def report(ctx):
    store, settings = ctx.store, ctx.settings
    st = store.stats()
    w = store.writer_info()
    now_ms = time.time() * 1000
    data_dir = w.get("data_dir") or settings.data_dir
    disk, compaction = _disk(data_dir, settings)
    faces, serve_pid = _faces(data_dir, settings, ctx.metrics.area)
    return {
        "instance": settings.instance, "time": now_ms / 1000,
        "serve_pid": serve_pid,
        "writer": _writer(w, settings, now_ms),
        "ring": {"size": st["ring_size"], "depth": st["ring_depth"],
                 "unflushed": w["ring_head"] - w["flushed_pos"]},
        "memory": {k: st[k] for k in ("segment_bytes", "memory_used", "page_size",
                                      "pages_total", "pages_used", "pages_free",
                                      "chunk_bytes", "index_bytes", "index_slots",
                                      "index_used")},
        "classes": [c for c in store.class_stats() if c["slabs"] or c["used"]],
        "keys": st["keys"], "buckets": st["buckets"],
        "disk": disk, "compaction": compaction, "faces": faces}


class Service:
    def __init__(self, ctx):
        self.ctx = ctx

    async def on_get(self, req, resp):
        self.ctx.auth.require(req, None, ADMIN)
        resp.set_header("Cache-Control", "no-store")
        resp.media = report(self.ctx)
