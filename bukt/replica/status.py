"""What a replica says of itself: one function every face uses (`bukt replica status`,
RESP's INFO replication, /metrics), so that they agree.

The applier publishes where it is in `replica.status.json` in the data directory after
every frame (at least every second: the primary's BEAT). Lag is given two ways:
  lag_seq      how far the primary's log is ahead of what was applied, in sequence
               positions (a sequence is a position in the primary's change ring, so
               this counts bytes of change records; 0 when caught up);
  lag_seconds  how old the newest applied frame is by the primary's clock (0 when
               the primary's last BEAT found nothing left to apply); it grows while
               the replica is cut off, stopped or behind.
"""
import json
import os
import time

from bukt.replica import promoted

__all__ = ["replica_status", "STATUS_FILE", "LINK_DOWN_S"]

STATUS_FILE = "replica.status.json"
LINK_DOWN_S = 3.0           # no frame from the primary for this long: the link is down


def _read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def replica_status(store, now_ms=None):
    """{"role": "replica", "primary", "link", "applied", "primary_last", "lag_seq",
    "lag_seconds", "copies", "last_io_seconds"} of a replica's segment, or {"role":
    "primary", "promoted": ...} of a primary's."""
    now_ms = time.time() * 1000 if now_ms is None else now_ms
    primary = store.replica_primary()
    dd = store.writer_info().get("data_dir")
    if primary is None:
        out = {"role": "primary"}
        was = promoted(dd) if dd else None
        if was:
            out["promoted"] = was
        return out
    st = _read(os.path.join(dd, STATUS_FILE)) if dd else {}
    applied, last = st.get("applied"), st.get("primary_last") or 0
    io_ms = st.get("io_ms") or 0
    link = "up" if st.get("connected") and now_ms - io_ms < LINK_DOWN_S * 1000 else "down"
    applied_ms = st.get("applied_ms") or 0
    return {"role": "replica", "primary": primary, "link": link,
            "applied": applied, "saved": st.get("saved"), "primary_last": last,
            "lag_seq": max(0, last - applied) if applied is not None else None,
            "lag_seconds": round(max(0.0, (now_ms - applied_ms) / 1000), 3)
            if applied_ms else None,
            "last_io_seconds": round((now_ms - io_ms) / 1000, 3) if io_ms else None,
            "copies": st.get("copies", 0), "pid": st.get("pid")}
