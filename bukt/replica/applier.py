"""The replica's applier: `bukt replica-follow`, a process the supervisor starts.

It copies the primary's store, then follows its log (bukt/replica/source.py serves
both), applying every record to this instance's segment: the key records through the
core's compiled loader (cext/bulkload.pxi), the rest through the recovery Loader
(bukt/writer/restore.py). It is an ordinary producer of that segment, so this
instance's own writer logs what it applies: the replica restarts like any instance.

WHERE IT IS. The last primary sequence applied is kept in `replica.json` in the data
directory, written only when this instance's writer reports the ring position of the
applier's last record as flushed (its fsync policy's promise): after any restart the
file names a point at or before what the replica's files hold, and applying a record
twice is harmless (every record states a result). No file, a primary that answers
410 (its logs no longer reach back), or a record stream that cannot be read means a
new full copy: the replica's buckets are dropped and the snapshot applied, logged.

ONLY IT WRITES. The segment's replica word (cext/store.pxi, set_replica) refuses
every other process's writes; this process and the writer are exempt
(store.replica_exempt).
"""
import http.client
import json
import logging
import os
import signal
import threading
import time
import urllib.parse

import bukt
from bukt import errors
from bukt._core import BulkLoad, replica_exempt
from bukt.replica import promoted, read_json, write_json
from bukt.replica.status import STATUS_FILE
from bukt.replica.source import BEAT, END, FRAME, RECORDS
from bukt.writer import aof
from bukt.writer._logscan import scan_records as _scan_records
from bukt.writer.restore import Loader

__all__ = ["Applier", "parse_primary", "STATE_FILE", "read_state", "main"]

log = logging.getLogger("bukt.replica")

STATE_FILE = "replica.json"
API = "/api/v1/replication"
STATE_EVERY_S = 0.1     # how often the applied sequence is considered for replica.json
READ_TIMEOUT_S = 30.0   # the primary sends a frame at once and a BEAT every second
                        # while idle: silence this long is a dead connection


def parse_primary(url):
    """(host, port, token) of `bukt://:TOKEN@HOST:PORT`."""
    u = urllib.parse.urlsplit(url)
    if u.scheme != "bukt" or not u.hostname or not u.port:
        raise errors.InvalidArgument(f"replica.of {url!r}: bukt://:TOKEN@HOST:PORT")
    token = urllib.parse.unquote(u.password or u.username or "")
    return u.hostname, u.port, token


def read_state(data_dir):
    return read_json(os.path.join(data_dir, STATE_FILE)) or {}


def write_state(data_dir, state):
    write_json(os.path.join(data_dir, STATE_FILE), state)


class StateSaver:
    """Writes replica.json in its own thread: the write's fsync (tens of milliseconds on
    a busy disk, every STATE_EVERY_S) held up the records arriving behind it (at 50k
    sets/s the lag's p99 went from about 120 ms to 40 ms when it moved here). The applier hands over the newest state to save
    and goes on; a state handed over while one is being written replaces any not yet
    started (only the newest matters). forget() waits for a write under way, so a new
    full copy never finds an older history's state written after it removed it."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.cv = threading.Condition()
        self.want = None                # the state to write next
        self.busy = False               # a write under way
        self.saved = None               # the applied sequence of the last state written
        self.error = None
        threading.Thread(target=self._run, name="bukt-replica-state", daemon=True).start()

    def submit(self, state):
        with self.cv:
            self.want = state
            self.cv.notify_all()

    def forget(self):
        with self.cv:
            self.want = None
            while self.busy:
                self.cv.wait()
            self.saved = None
            try:
                os.unlink(os.path.join(self.data_dir, STATE_FILE))
            except FileNotFoundError:
                pass

    def flush(self, timeout=10.0):
        """Waits until every state handed over is written."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while (self.want is not None or self.busy) and time.monotonic() < deadline:
                self.cv.wait(0.1)

    def _run(self):
        while True:
            with self.cv:
                while self.want is None:
                    self.cv.wait()
                st, self.want, self.busy = self.want, None, True
            try:
                write_state(self.data_dir, st)
                saved, self.error = st["applied"], None
            except OSError as e:        # (the next state tries again)
                saved = None
                if self.error is None:
                    log.warning("replica: cannot write %s: %s", STATE_FILE, e)
                self.error = e
            with self.cv:
                self.busy = False
                if saved is not None:
                    self.saved = saved
                self.cv.notify_all()


class Recopy(Exception):
    """The replica needs a new full copy (the reason is the message)."""


class Applier:
    def __init__(self, cfg, store=None):
        self.cfg = cfg
        self.data_dir = os.path.abspath(cfg.data_dir)
        self.host, self.port, self.token = parse_primary(cfg.get("replica.of"))
        self.primary = f"{self.host}:{self.port}"
        self.chunk = cfg.get("replica.chunk")
        self.retry = cfg.get("replica.retry")
        self.store = store
        self.stopping = False
        self.applied = None             # the last primary sequence applied, None: no copy
        self.primary_last = 0           # the primary's last logged sequence, as it said
        self.primary_ms = 0             # ... and when (its clock)
        self.applied_ms = 0             # the frame time of the last records applied
        self.pending = []               # (ring position, applied seq) awaiting the flush
        self.saved = None               # the applied seq in replica.json
        self.saver = None               # its StateSaver, from attach
        self._submitted = None          # the applied seq last handed to it
        self.next_state = 0.0
        self.copies = 0
        self.loader = None
        self._behind = False
        self.connected = False
        self.io_ms = 0
        self.primary_node = None        # the primary's node id (bukt/replica/__init__.py)
        self._ack_cv = threading.Condition()
        self._next_publish = 0.0
        host, port = cfg.get("http.bind").rsplit(":", 1)
        self.address = f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"

    # -- the segment -----------------------------------------------------------------
    def attach(self):
        replica_exempt(True)
        if self.store is None:
            self.store = bukt.attach(self.cfg.instance)
        self.store.set_replica(self.primary)
        self._loaders()
        self.saver = StateSaver(self.data_dir)
        st = read_state(self.data_dir)
        if st.get("primary") == self.primary and isinstance(st.get("applied"), int):
            self.applied = self.saved = self.saver.saved = st["applied"]
            self.copies = int(st.get("copies", 0))
            self.primary_node = st.get("primary_node")

    def _loaders(self):
        self.loader = Loader(self.store, bulk=False)
        self.bulk = BulkLoad(self.store)

    # -- the primary -----------------------------------------------------------------
    def _get(self, path):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=READ_TIMEOUT_S)
        conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}",
                                           "X-Bukt-Replica": self.address})
        resp = conn.getresponse()
        node = resp.getheader("X-Bukt-Node")
        if node:
            self.primary_node = node
        return conn, resp

    def _frames(self, resp):
        """(kind, ms, last, payload) of the frames of a response, as they come. Each
        part is read to its exact size (http.client reads no further, so a frame is
        handed over as soon as it is whole): gathering a large frame from read1()'s
        pieces copied the buffer again at each piece."""
        need = FRAME.size
        while True:
            head = resp.read(need)
            if len(head) < need:
                if head:
                    raise ConnectionError("the primary's stream ended mid-frame")
                return
            kind, n, ms, last = FRAME.unpack(head)
            payload = resp.read(n) if n else b""
            if len(payload) < n:
                raise ConnectionError("the primary's stream ended mid-frame")
            yield kind, ms, last, payload

    def _apply(self, payload):
        """Applies whole records; returns the last sequence among them (None: none).

        The key records go through the core's compiled loader (cext/bulkload.pxi, the
        cold start's); this store logs, so each also goes to this instance's ring as
        Bucket.restore's would (do_set logs whenever the store does). The others
        (buckets, tokens, flushes, a bucket the table lacks) go one by one through the
        Loader, in the stream's order. A record not plainly sound is a damaged frame."""
        off, size, last = 0, len(payload), 0
        while off < size:
            try:
                n, end, hi = self.bulk.load(payload, off, size)
                if n:
                    off, last = end, max(last, hi)
                    continue
                recs, ends = _scan_records(payload, off, size, aof.Record, aof.TYPE_NAMES, 1)
                if not recs:
                    raise ConnectionError(f"a damaged frame from the primary (at byte {off} "
                                          f"of {size})")
                self.loader.apply(recs)
                off, last = ends[0], max(last, recs[0].seq)
            except (errors.RingFull, errors.DiskError) as e:
                # this replica's own writer is behind: wait for it, then apply from the
                # start of the step again (a record applied twice leaves the same state)
                if not self._behind:
                    log.warning("replica: this instance's writer is behind (%s); waiting", e)
                self._behind = True
                time.sleep(0.05)
        self._behind = False
        return last or None

    def copy(self, reason):
        """A new full copy of the primary."""
        t0 = time.monotonic()
        log.warning("replica: full copy of %s (%s)", self.primary, reason)
        conn, resp = self._get(f"{API}/snapshot")
        try:
            if resp.status != 200:
                raise ConnectionError(f"snapshot: HTTP {resp.status} {resp.read()[:300]!r}")
            seq = int(resp.getheader("X-Bukt-Seq"))
            self.applied = None
            self._forget_state()
            for name in self.store.buckets():
                self.store.drop_bucket(name)
            self._loaders()
            n = 0
            done = False
            for kind, ms, last, payload in self._frames(resp):
                if kind == RECORDS:
                    self._apply(payload)
                    self._publish()
                elif kind == END:
                    doc = json.loads(payload)
                    if not doc.get("done"):
                        raise ConnectionError(f"snapshot: {doc}")
                    n = doc.get("records", 0)
                    done = True
                    break
            if not done:
                raise ConnectionError("the snapshot ended before its END frame")
        finally:
            conn.close()
        self.copies += 1
        self._applied(seq, int(time.time() * 1000))
        log.warning("replica: copied %d records of %s up to sequence %d in %.2f s",
                    n, self.primary, seq, time.monotonic() - t0)

    def follow(self):
        """Applies the primary's log after self.applied until the stream ends."""
        conn, resp = self._get(f"{API}/log?since={self.applied}")
        try:
            if resp.status == 410:
                raise Recopy(json.loads(resp.read() or b"{}").get("detail")
                             or "the primary's log no longer reaches back")
            if resp.status != 200:
                raise ConnectionError(f"log: HTTP {resp.status} {resp.read()[:300]!r}")
            log.info("replica: following %s from sequence %d", self.primary, self.applied)
            for kind, ms, last, payload in self._frames(resp):
                self.primary_last, self.primary_ms = last, ms
                self.connected, self.io_ms = True, int(time.time() * 1000)
                if kind == RECORDS:
                    seq = self._apply(payload)
                    if seq is not None:
                        self._applied(seq, ms)
                elif kind == BEAT:
                    if self.applied is not None and self.applied >= last:
                        self.applied_ms = ms
                    self._publish(force=True)
                elif kind == END:
                    doc = json.loads(payload)
                    if doc.get("error") == "gone":
                        raise Recopy(doc.get("reason", "gone"))
                    raise ConnectionError(f"the primary ended the stream: {doc}")
                self._save_state()
                if self.stopping or self._promoted():
                    return
        finally:
            conn.close()

    def _promoted(self):
        if promoted(self.data_dir) is not None:
            self.stopping = True
            log.warning("replica: promoted; the applier stops")
            return True
        return False

    # -- acknowledgements (replication.min_acks: bukt/replica/acks.py) ---------------
    def _ack_loop(self):
        """Reports the applied sequence to the primary whenever it moves, on one
        kept-alive connection (a thread: applying never waits for it)."""
        conn, sent = None, None
        while not self.stopping:
            with self._ack_cv:
                while (self.applied is None or self.applied == sent) and not self.stopping:
                    self._ack_cv.wait(1.0)
                seq = self.applied
            if self.stopping:
                break
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port,
                                                      timeout=READ_TIMEOUT_S)
                conn.request("POST", f"{API}/ack?seq={seq}", body=b"",
                             headers={"Authorization": f"Bearer {self.token}",
                                      "X-Bukt-Replica": self.address})
                r = conn.getresponse()
                r.read()
                sent = seq
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(min(self.retry, 0.1))

    # -- where it is -----------------------------------------------------------------
    def _applied(self, seq, ms):
        self.applied, self.applied_ms = seq, ms
        with self._ack_cv:
            self._ack_cv.notify()
        self.pending.append((self.store.last_pos, seq))
        self._save_state()

    def _forget_state(self):
        self.pending.clear()
        self.saved = self._submitted = None
        self.saver.forget()

    def _save_state(self, force=False):
        now = time.monotonic()
        if not self.pending or (now < self.next_state and not force):
            if force and self.saver is not None:
                self.saver.flush()
                self.saved = self.saver.saved
            self._publish()
            return
        self.next_state = now + STATE_EVERY_S
        flushed = self.store.writer_info()["flushed_pos"]
        seq = None
        while self.pending and self.pending[0][0] <= flushed:
            seq = self.pending.pop(0)[1]
        if seq is not None and seq != self._submitted:
            self.saver.submit({"primary": self.primary, "applied": seq,
                               "copies": self.copies, "primary_node": self.primary_node})
            self._submitted = seq
        if force:
            self.saver.flush()
        self.saved = self.saver.saved
        self._publish()

    def _publish(self, force=False):
        now = time.monotonic()
        if not force and now < self._next_publish:
            return
        self._next_publish = now + STATE_EVERY_S
        if self.saver is not None:
            self.saved = self.saver.saved
        st = {"primary": self.primary, "applied": self.applied, "saved": self.saved,
              "primary_last": self.primary_last, "primary_ms": self.primary_ms,
              "applied_ms": self.applied_ms, "copies": self.copies, "pid": os.getpid(),
              "connected": self.connected, "io_ms": self.io_ms,
              "primary_node": self.primary_node,
              "updated_ms": int(time.time() * 1000)}
        path = os.path.join(self.data_dir, STATUS_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(st, f)
        os.rename(tmp, path)

    # -- the loop --------------------------------------------------------------------
    def run(self):
        self.attach()
        threading.Thread(target=self._ack_loop, name="bukt-replica-ack",
                         daemon=True).start()
        wait = self.retry / 10
        reason = "no copy yet" if self.applied is None else None
        while not self.stopping and not self._promoted():
            try:
                if self.applied is None:
                    self.copy(reason or "no copy yet")
                    reason = None
                self.follow()
                wait = self.retry / 10
            except Recopy as e:
                self.applied = None
                reason = f"the primary cannot resume from the last applied sequence: {e}"
                continue
            except (OSError, http.client.HTTPException, ConnectionError, ValueError) as e:
                if self.stopping:
                    break
                self.connected = False
                self._publish(force=True)
                log.warning("replica: %s unreachable or failing (%s); again in %.2f s",
                            self.primary, e, wait)
                if self._promoted():
                    break
                time.sleep(wait)
                wait = min(wait * 2, self.retry)
        self._save_state(force=True)
        self._publish(force=True)
        return 0


def main(config_path=None) -> int:
    from bukt import config as config_mod, logs
    try:
        cfg = config_mod.load(config_path)
    except config_mod.ConfigError as e:
        logs.configure("replica")       # no configuration: the default format
        log.error("bukt replica-follow: %s", e)
        return 2
    logs.from_config("replica", cfg)    # one format for every process (bukt/logs.py)
    if not cfg.get("replica.of"):
        log.error("replica.of is not set: nothing to follow")
        return 2
    a = Applier(cfg)

    def stop(signum, frame):
        a.stopping = True
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        return a.run()
    except SystemExit:
        try:
            a._save_state(force=True)
            a._publish(force=True)
        except Exception:
            pass
        return 0
