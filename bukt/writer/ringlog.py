"""From the change ring to the log: ring records (store.ring_read) as log records.

A ring record is (seq, type, bucket_idx, bucket_gen, key, value, expire_ms, version,
flags); its ring position is its sequence number, and stays so in the log. Types:

    ring           log
    1 SET          SET       key, value, expire_ms, version, flags (single-read)
    2 DEL          DELETE    key
    3 EXPIRED      EXPIRE    key
    4 EVICTED      EVICT     key
    5 TOUCH        SET_TTL   key, expire_ms (0: persist), version, flags
    16 META        BUCKET_CREATE / BUCKET_DROP / TOKEN_ADD / TOKEN_REVOKE, from the JSON
                   change {"op", "idx", "gen", "name", ...} in the value
    (flag 0x10)    nothing: a cache-only bucket's change, for the change feed alone

NAMING BUCKETS. The ring names a bucket by (slot, generation); a slot's generation
changes whenever it is dropped or reused, so a pair names one bucket for the segment's
whole life, and the map (idx, gen) -> name only ever grows. It is seeded from the
segment's bucket table (bukt/writer/buckettable.py: live and dropping buckets), and every META
record adds its pair. Before a batch is translated its META records are registered
first, so a key record that precedes the META of its own bucket's drop (drop_bucket
logs the deletes of its keys, then the drop) is still named. A pair nobody knows after
that (not seen in practice) re-reads the table once; failing that the record is
reported and left out.
"""
import json
import logging

from bukt.writer import aof
from bukt.writer.aof import (BUCKET_CREATE, BUCKET_DROP, DELETE, EVICT, EXPIRE, SET, SET_TTL,
                  OBJECT_FLAGS, SINGLE_READ, TOKEN_ADD, TOKEN_REVOKE)
from bukt.writer.restore import CORE_SINGLE, log_flags, settings_from_meta
from bukt.writer.buckettable import read_table
from bukt.writer._logscan import encode_ring

__all__ = ["RingTranslator", "RING_SET", "RING_DEL", "RING_EXPIRED", "RING_EVICTED",
           "RING_TOUCH", "RING_META"]

log = logging.getLogger("bukt.writer")

RING_SET, RING_DEL, RING_EXPIRED, RING_EVICTED, RING_TOUCH, RING_META = 1, 2, 3, 4, 5, 16
from bukt.feed import RF_FEED as RING_FEED_ONLY    # a cache-only bucket's change: for
                                                    # the change feed alone, never logged


def entry_flags(ring_flags: int) -> int:
    """The entry's core flags from a ring_read tuple's flags: its record's flags byte
    (single-read and the ring's BK_RF_* bits) in the low byte, the entry's object bits
    (its record's eflags) in the next (cext/meta.pxi, ring_read)."""
    return (ring_flags & CORE_SINGLE) | (ring_flags >> 8)


_KEY_ONLY = {RING_DEL: DELETE, RING_EXPIRED: EXPIRE, RING_EVICTED: EVICT}
# what the compiled loop (_logscan.pyx: encode_ring) makes of each key record: the log
# type, whether it keeps expiry, flags and version, whether it keeps the value
_KINDS = {RING_SET: (SET, True, True), RING_TOUCH: (SET_TTL, True, False),
          **{t: (lt, False, False) for t, lt in _KEY_ONLY.items()}}
_TOKEN = aof._TOKEN
_U32 = aof._U32


class RingTranslator:
    """Turns batches of ring records into encoded log records."""

    def __init__(self, store):
        self.store = store
        self.names = {}             # (idx, gen) -> bucket name
        self.bnames = {}            # (idx, gen) -> its UTF-8 (encode_ring's cache)
        self.dropped = 0            # records left out because no bucket could be named
        self.refresh()

    def refresh(self) -> None:
        for slot in read_table(self.store):
            self.names[(slot.idx, slot.gen)] = slot.name

    def encode(self, recs) -> bytes:
        """The log bytes of ring records `recs` (in ring order). The key records are
        encoded by the compiled loop (_logscan.pyx: encode_ring), the rest by _other."""
        names = self.names
        for r in recs:
            if r[1] == RING_META:
                change = json.loads(r[5])
                names[(r[2], r[3])] = change["name"]
        return encode_ring(recs, names, self.bnames, _KINDS, CORE_SINGLE, OBJECT_FLAGS,
                           RING_FEED_ONLY, self._other)

    def _other(self, r) -> bytes:
        """One record encode_ring leaves to Python: META, an unknown type, or a bucket
        the names do not hold yet."""
        seq, rtype, idx, gen, key, value, expire_ms, version, flags = r
        name = self.names.get((idx, gen))
        if name is None:
            name = self._unknown(idx, gen, seq)
            if name is None:
                return b""
        encode = aof.encode
        if rtype == RING_SET:
            return encode((SET, seq, name, key, value, expire_ms,
                           log_flags(entry_flags(flags)), version))
        if rtype in _KEY_ONLY:
            return encode((_KEY_ONLY[rtype], seq, name, key, b"", 0, 0, 0))
        if rtype == RING_TOUCH:
            return encode((SET_TTL, seq, name, key, b"", expire_ms,
                           log_flags(entry_flags(flags)), version))
        if rtype == RING_META:
            return encode(self._meta(seq, name, json.loads(value)))
        log.error("ring record %d of unknown type %d left out of the log", seq, rtype)
        self.dropped += 1
        return b""

    def _meta(self, seq, name, change):
        op = change.get("op")
        if op == "create":
            value = json.dumps(settings_from_meta(change), sort_keys=True,
                               separators=(",", ":")).encode()
            return (BUCKET_CREATE, seq, name, b"", value, 0, 0, 0)
        if op == "drop":
            return (BUCKET_DROP, seq, name, b"", b"", 0, 0, 0)
        if op == "token_add":
            return (TOKEN_ADD, seq, name, bytes.fromhex(change["hash"]),
                    _TOKEN.pack(change["id"], change["perms"]), 0, 0, 0)
        if op == "token_revoke":
            return (TOKEN_REVOKE, seq, name, b"", _U32.pack(change["id"]), 0, 0, 0)
        raise ValueError(f"ring META record {seq}: unknown op {op!r}")

    def _unknown(self, idx, gen, seq):
        self.refresh()
        name = self.names.get((idx, gen))
        if name is None:
            self.dropped += 1
            log.error("ring record %d names bucket slot %d generation %d, which neither the "
                      "bucket table nor a META record names; it is left out of the log",
                      seq, idx, gen)
        return name
