"""The reclaim sweep: deletes the hidden entries that no published object needs
(docs/design.md, "Objects"). The writer process runs it (bukt/writer/process.py) when
store.objects_retired() moves (a manifest was replaced, deleted, expired, evicted or
taken) and every objects.sweep_interval (uploads of dead processes retire nothing).

WHAT IS GARBAGE. For each object id found among a bucket's hidden entries:
- its head record names a user key whose manifest names this id: LIVE, kept;
- the head says UPLOADING, its uploader (pid and start time) still runs and started
  less than objects.upload_timeout ago: an upload under way, kept;
- anything else (replaced, deleted, expired, evicted, an upload whose process died or
  that ran past the timeout, chunks without a head record): garbage.

WHEN IT GOES. Garbage that was once published may still be read by a reader that
registered before its manifest went. The sweep notes the core's monotonic clock T
right after it found the garbage (so every retirement among it happened before T) and
deletes it only once no in-flight reader started at or before T:
store.object_readers_oldest() is 0 (none) or later than T. Garbage that must wait
stays PENDING in the Reclaimer and goes at a later sweep. A never-published upload's
chunks could go at once, but they are treated alike: one rule, no shortcut to get
wrong.
"""
import logging

from bukt.errors import BuktError
from bukt.objects import manifest as mf
from bukt.objects.store import F_MANIFEST, now_ms
from bukt.owners import owner_alive

log = logging.getLogger("bukt.objects")
SCAN_COUNT = 1000


class Reclaimer:
    """The sweep's state across runs: garbage waiting for readers, per bucket."""

    def __init__(self, upload_timeout=3600.0):
        self.upload_timeout = upload_timeout
        self.pending = {}       # (bucket name, oid) -> (clock ns found, [keys])
        self.last_retired = None
        self.stats = {"sweeps": 0, "objects_reclaimed": 0, "entries_reclaimed": 0}

    def due(self, store) -> bool:
        """True when retirements happened since the last sweep (or garbage waits)."""
        return store.objects_retired() != self.last_retired or bool(self.pending)

    def sweep(self, store, between=None) -> dict:
        """One sweep of every bucket; `between()` is called every SCAN_COUNT deletes
        (the writer drains its ring there). Returns this sweep's counts."""
        self.last_retired = store.objects_retired()
        found = {}
        for name in store.buckets():
            try:
                bucket = store.bucket(name)
                for oid, keys in self._garbage(bucket).items():
                    found[(name, oid)] = keys
            except BuktError as e:      # a bucket dropped under us
                log.debug("sweep of %s: %s", name, e)
        t = store.clock_ns()
        for k, keys in found.items():
            if k not in self.pending:
                self.pending[k] = (t, keys)
            else:
                self.pending[k] = (self.pending[k][0], keys)
        for k in [k for k in self.pending if k not in found]:
            del self.pending[k]         # gone by other means (a drop, a flush)
        oldest = store.object_readers_oldest()
        done = {"objects": 0, "entries": 0, "waiting": 0}
        n = 0
        for (name, oid), (t_found, keys) in list(self.pending.items()):
            if oldest and oldest <= t_found:
                done["waiting"] += 1
                continue
            try:
                bucket = store.bucket(name)
            except BuktError:
                del self.pending[(name, oid)]
                continue
            for key in keys:            # chunks first: a chunk without a head is garbage
                try:
                    bucket.delete_entry(key)
                except BuktError as e:
                    log.warning("sweep could not delete a chunk of %s: %s", name, e)
                done["entries"] += 1
                n += 1
                if between is not None and n % SCAN_COUNT == 0:
                    between()
            done["objects"] += 1
            del self.pending[(name, oid)]
        self.stats["sweeps"] += 1
        self.stats["objects_reclaimed"] += done["objects"]
        self.stats["entries_reclaimed"] += done["entries"]
        return done

    def _garbage(self, bucket) -> dict:
        """oid -> [hidden keys to delete, head record last] for one bucket."""
        heads, chunks = {}, {}
        cursor = 0
        while True:
            cursor, keys = scan_hidden(bucket, cursor, SCAN_COUNT)
            for key in keys:
                p = mf.parse_hidden(key)
                if p is None:
                    continue
                kind, oid, _ = p
                if kind == "head":
                    heads[oid] = key
                else:
                    chunks.setdefault(oid, []).append(key)
            if not cursor:
                break
        garbage = {}
        now = now_ms()
        for oid in set(heads) | set(chunks):
            # the head is read again even when the scan did not list it: a scan may
            # pass its stripe before an upload writes it, and find its chunks later
            hkey = mf.head_key(oid)
            if self._needed(bucket, oid, hkey, now):
                continue
            garbage[oid] = sorted(chunks.get(oid, [])) + [hkey]
        return garbage

    def _needed(self, bucket, oid, hkey, now) -> bool:
        entry = bucket.read_entry(hkey, peek=True)
        if entry is None:
            return False
        try:
            state, pid, start, started, key = mf.unpack_head(entry[0])
        except Exception:           # noqa: BLE001 - a damaged head: garbage
            return False
        if names(bucket, key, oid):
            return True
        return state == mf.UPLOADING and now - started < self.upload_timeout * 1000 \
            and owner_alive(pid, start)


def scan_hidden(bucket, cursor, count):
    """(next cursor, hidden keys) of a bucket, through the core's scan_hidden."""
    return bucket.scan_hidden(cursor, count)


def hidden_keys(bucket) -> list:
    """Every hidden key of a bucket (tests, check)."""
    out, cursor = [], 0
    while True:
        cursor, keys = scan_hidden(bucket, cursor, SCAN_COUNT)
        out += keys
        if not cursor:
            return out


def names(bucket, key, oid) -> bool:
    """Does the manifest under `key` name object `oid`?"""
    entry = bucket.read_entry(key, peek=True)
    if entry is None or not entry[1] & F_MANIFEST:
        return False
    return entry[0][4:4 + mf.OID_LEN] == oid       # FIXED: magic, then the oid


def sweep(store, upload_timeout=3600.0) -> dict:
    """One sweep with a fresh Reclaimer (tests; `bukt check`): with no reader in
    flight, every garbage entry goes now."""
    return Reclaimer(upload_timeout).sweep(store)
