"""One connection's session: who it is (AUTH) and what each command does to the store.

`Session.handle(command, request_id, buf, start, end)` takes one request frame, still in
the connection's receive buffer (the payload is buf[start:end]), runs it against the
store and returns the whole response frame as bytes, or a `Deferred` when the answer has
to wait for durability. It never raises: every failure becomes an error status.

FAST PATH: GET and SET are parsed inline with struct.unpack_from straight out of the
receive buffer and answered without going through the generic codec.
SLOW PATH: every other command decodes its payload with bukt.protocol's layout tables.

RING FULL: a write to a persisted bucket needs room in the change ring, which the writer
process drains. The core can wait for room itself (store.ring_wait), but that blocks the
thread, and a worker's thread is the event loop of all its connections. So the worker
sets store.ring_wait to 0 and `park_ring_full` (bukt/writewait/ringroom.py says why, and which
commands may be tried again): a command whose attempt failed with RingFull and changed
nothing (RETRY_SAFE: one record, undone by the core) returns PARK instead of an error,
and the connection keeps that frame, reads nothing more from that peer (its order is
kept) and tries it again on a timer, until the worker's ring_wait has passed; then it
answers RING_FULL. Commands that write several records (MSET, a DELETE of several keys,
FLUSH, bucket and token administration) are parked before they start while the ring has
no room for them (`_ring_room`); if the ring still fills under them (other processes
write too), they answer RING_FULL at once, as the core would: some of their records may
be applied. `park_room` is the ring room the parked command waits for; the connection
claims it while it waits (ringroom.RoomWait), so that small records written elsewhere
cannot starve it.

REVOCATION: a session keeps its token's id and permissions from AUTH, and `recheck()`
confirms them against the segment (Store.has_token: one read of the bucket's slot) at
the start of every batch of frames a read brings in (bukt/tcp/_wire.pyx run_frames and its
twin run_py). A token revoked by anyone (this worker, another, the CLI, HTTP)
leaves the session unauthenticated from its next batch on: its requests
are answered UNAUTHORIZED ("AUTH again") until a new AUTH succeeds. A session whose
bucket was dropped keeps it, and the core answers its requests BUCKET_NOT_FOUND (a
bucket created again under that name is another bucket, with other tokens).

FAILED AUTH: the session's `guard` (bukt/authguard.py, shared by every worker) is
asked before a token is looked at: an address locked out for too many failures is
answered LIMIT_EXCEEDED at once, whatever the token, and each failed AUTH is counted
against `peer`, the connection's address. Nothing here waits.

DURABILITY HOOK: under `fsync: always` a write may be acknowledged only once its log
record is on disk (design.md, invariant 7). `durable(session)` is called after every
successful write and returns None (acknowledge now) or an awaitable that completes when
the write is durable (or raises WriterDown / DiskError); bukt/writewait/durability.py is the
implementation over the segment's ring. The connection then sends the response only
after that awaitable completes, while it goes on reading and answering other requests,
and other connections are not held up at all: one group commit wakes many waiters.
"""
from __future__ import annotations

import hmac
import logging
import struct

from bukt import errors
from bukt import protocol as P
from bukt.writewait import ringroom
from bukt.protocol import Command as C, Status as S
from bukt.authguard import locked_message
from bukt.tokens import digest, new_token
from bukt.tcp.frames import PARK, Deferred, WatchWait, internal_error  # noqa: F401

log = logging.getLogger("bukt.tcp")

READ, WRITE, ADMIN = 1, 2, 4
ALL_PERMS = READ | WRITE | ADMIN

_HDR = P.HEADER
_HDR_SIZE = P.HEADER_SIZE
_u8 = struct.Struct(">B")
_u32 = struct.Struct(">I")
_u64 = struct.Struct(">Q")
_i64 = struct.Struct(">q")
_SET_FIXED = struct.Struct(">BQQI")  # flags, ttl_ms, if_version, key length
_VT = {bytes: b"\x00", int: b"\x01", str: b"\x02"}

# The permission each bucket command needs.
NEEDS = {
    C.SET: WRITE, C.GET: READ, C.DELETE: WRITE, C.EXISTS: READ, C.INCR: WRITE,
    C.DECR: WRITE, C.GETDEL: WRITE, C.TTL: READ, C.EXPIRE: WRITE, C.PERSIST: WRITE,
    C.MGET: READ, C.MSET: WRITE, C.SCAN: READ, C.VERSION: READ, C.STATS: READ,
    C.FLUSH: ADMIN, C.WATCH: READ, C.TOKEN_CREATE: ADMIN, C.TOKEN_LIST: ADMIN, C.TOKEN_REVOKE: ADMIN,
}
WRITES = frozenset(c for c, p in NEEDS.items() if p == WRITE) | {C.FLUSH}
# Commands the session answers itself (permissions checked in the handler).
OPEN = frozenset({C.AUTH, C.PING, C.QUIT})
BUCKET_ADMIN = frozenset({C.BUCKET_CREATE, C.BUCKET_DROP, C.BUCKET_LIST, C.BUCKET_INFO})
# The store method each writing command calls; which of them may be tried again after
# RingFull, and which wait for room first, is decided once, in bukt/writewait/ringroom.py.
METHOD = {C.SET: "set", C.GET: "get", C.DELETE: "delete", C.INCR: "incr", C.DECR: "incr",
          C.GETDEL: "getdel", C.EXPIRE: "expire", C.PERSIST: "persist", C.MSET: "mset",
          C.FLUSH: "flush", C.BUCKET_CREATE: "create_bucket", C.BUCKET_DROP: "drop_bucket",
          C.TOKEN_CREATE: "add_token", C.TOKEN_REVOKE: "revoke_token"}
# One record at most, and nothing changed when the core raises RingFull: tried again.
RETRY_SAFE = frozenset(c for c, m in METHOD.items() if m in ringroom.RETRY_SAFE)
# Several records, or changes before the record: parked first while the ring is full.
ROOM_FIRST = frozenset(c for c, m in METHOD.items() if m in ringroom.ROOM_FIRST)


_rec = ringroom.rec_room
from bukt.feed import KIND_CODES  # noqa: E402 (the feed's kinds are the wire's)


def _ok(request_id: int, body: bytes = b"") -> bytes:
    return _HDR.pack(_HDR_SIZE + len(body), 0, request_id) + body


def _status(status: int, request_id: int) -> bytes:
    return _HDR.pack(_HDR_SIZE, status, request_id)


def _tvalue(value) -> bytes:
    vt = _VT.get(type(value))
    if vt is None:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return b"\x00" + bytes(value)
        raise TypeError(f"the store returned a {type(value).__name__}")
    if vt == b"\x00":
        return vt + value
    return vt + (str(value).encode())


def _ttl(ms: int):
    return ms / 1000 if ms else None


def _name(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise errors.SchemaError("a bucket name must be UTF-8") from None


class Session:
    __slots__ = ("store", "admin_hash", "max_frame", "durable", "bucket", "bucket_name",
                 "perms", "persist", "admin", "closing", "park_ring_full", "park_room",
                 "token_id", "token_perms", "revoked", "_handlers", "_limits",
                 "_watch_state", "guard", "peer", "watch_max_wait")

    def __init__(self, store, *, admin_hash: bytes | None = None,
                 max_frame: int = P.DEFAULT_MAX_FRAME, durable=None, guard=None,
                 peer: str = "-", watch_max_wait: float = 30.0):
        self.store = store
        self.watch_max_wait = watch_max_wait  # the longest a WATCH waits for events
        self.guard = guard            # failed AUTH per address (bukt/authguard.py), or None
        self.peer = peer              # the peer's address, as the guard counts it
        self.admin_hash = admin_hash  # sha256 of the admin token, or None: no admin session
        self.max_frame = max_frame
        self.durable = durable        # the durability hook (module docstring)
        self.bucket = None            # the authenticated bucket, or None
        self.bucket_name = None
        self.perms = 0
        self.token_id = 0             # the AUTH token's id and its permissions as stored
        self.token_perms = 0          # (REVOCATION in the docstring)
        self.revoked = False          # the token went away since AUTH
        self.persist = False          # the bucket is logged: its writes may wait (durable)
        self.admin = False            # an admin session (AUTH with the admin token)
        self.closing = False          # QUIT: close once this response is out
        self.park_ring_full = False   # RingFull -> PARK (RING FULL in the docstring)
        self.park_room = 0            # the ring room the command last PARKed waits for
        self._limits = None           # (ring_size, max_key), once asked for
        self._watch_state = None      # ((bucket, prefix, values), bukt.feed.Watcher) of the last
                                      # WATCH, reused while the next one goes on from it
        self._handlers = {c: getattr(self, "_" + c.name.lower()) for c in P.Command
                          if c not in (C.GET, C.SET)}

    # -- the entry point ----------------------------------------------------------------

    def handle(self, command: int, rid: int, buf, start: int, end: int):
        try:
            perms = self.perms
            if command == 0x02:  # GET: fast path
                if not perms & READ:
                    self._refuse(command)
                return self._get(rid, buf, start, end)
            if command == 0x01:  # SET: fast path
                if not perms & WRITE:
                    self._refuse(command)
                return self._finish_write(rid, self._set(rid, buf, start, end), command)
            # SLOW PATH: generic decode.
            try:
                command = C(command)
            except ValueError:
                return P.frame(S.UNKNOWN_COMMAND, rid, f"unknown command 0x{command:02x}".encode())
            need = NEEDS.get(command)
            if need is not None and not perms & need:
                self._refuse(command)
            fields = P.decode_payload(P.REQUEST[command], bytes(buf[start:end]))
            if (command in ROOM_FIRST and self.park_ring_full
                    and not self._ring_room(command, fields)):
                return PARK
            response = self._handlers[command](rid, **fields)
            if command in WRITES:
                return self._finish_write(rid, response, command)
            return response
        except errors.RingFull as exc:
            if self.park_ring_full and command in RETRY_SAFE and (
                    command != C.DELETE or self._one_key(buf, start, end)):
                self.park_room = exc.room
                return PARK
            return P.encode_error(rid, exc)
        except errors.BuktError as exc:
            return P.encode_error(rid, exc)
        except Exception as exc:  # a bug, or the core raising something unexpected
            return internal_error(command, rid, exc)

    @staticmethod
    def _one_key(buf, start, end) -> bool:
        """A DELETE payload (u32 count, then keys) names one key."""
        return end - start >= 4 and _u32.unpack_from(buf, start)[0] == 1

    def _ring_room(self, command, fields) -> bool:
        """Whether the ring has room now for what `command` will append (module
        docstring, RING FULL), beside another waiter's claim; if not, park_room is
        what it waits for. Always True for a bucket that is not logged, and for a
        DELETE of one key (RETRY_SAFE: it is tried again if the ring is full)."""
        if command in (C.BUCKET_CREATE, C.BUCKET_DROP, C.TOKEN_CREATE, C.TOKEN_REVOKE):
            need = ringroom.META_ROOM
        elif not self.persist or (command == C.DELETE and len(fields["keys"]) == 1):
            return True
        elif command == C.MSET:
            need = sum(_rec(len(k) + len(v)) for k, v in fields["items"])
        elif command == C.DELETE:
            need = sum(_rec(len(k)) for k in fields["keys"])
        else:  # FLUSH: one record's room; a flush larger than the ring goes in parts
            need = _rec(self._ring_limits()[1])
        ring_size = self._ring_limits()[0]
        if ringroom.has_room(self.store, need, ring_size, self.store.ring_ticket):
            return True
        self.park_room = min(need, ring_size // 2)
        return False

    def _ring_limits(self):
        """(ring_size, max_key): fixed in the segment, read once."""
        if self._limits is None:
            limits = self.store.limits
            self._limits = (limits["ring_size"], limits["max_key"])
        return self._limits

    def recheck(self):
        """At the start of each batch of frames: the session's token still stands, or
        the session becomes unauthenticated (REVOCATION in the docstring)."""
        if self.bucket is not None and not self.store.has_token(
                self.bucket, self.token_id, self.token_perms):
            try:
                live = self.store.bucket(self.bucket_name) is self.bucket
            except errors.BuktError:
                live = False
            if live:            # revoked: a dropped bucket answers BUCKET_NOT_FOUND
                self.bucket = self.bucket_name = None
                self.perms, self.revoked = 0, True

    def _refuse(self, command):
        if self.bucket is None and not self.admin:
            raise errors.AuthError("this connection's token was revoked; AUTH again"
                                   if self.revoked else "AUTH first")
        if self.bucket is None:
            raise errors.PermissionDenied("the admin session has no bucket; AUTH with a "
                                          "bucket's token for data commands")
        need = NEEDS.get(command, ADMIN)
        names = [n for bit, n in ((READ, "read"), (WRITE, "write"), (ADMIN, "admin"))
                 if need & bit]
        raise errors.PermissionDenied(f"token lacks {'/'.join(names)}")

    def _finish_write(self, rid, response: bytes, command):
        if len(response) > self.max_frame:
            return P.frame(S.LIMIT_EXCEEDED, rid, b"response larger than max_frame")
        if self.durable is None or response[4] != 0:
            return response
        wait = self.durable(self)
        return response if wait is None else Deferred(response, wait, rid)

    # -- FAST PATH ----------------------------------------------------------------------

    def _get(self, rid, buf, start, end):
        if end - start < 4:
            raise errors.ProtocolError("payload truncated: key length needs 4 bytes")
        (klen,) = _u32.unpack_from(buf, start)
        if 4 + klen != end - start:
            raise errors.ProtocolError(
                f"payload truncated: key needs {klen} bytes, {end - start - 4} left"
                if 4 + klen > end - start else f"{end - start - 4 - klen} unexpected bytes "
                "after the payload")
        value = self.bucket.get(bytes(buf[start + 4:end]))
        if value is None:
            return _status(S.NOT_FOUND, rid)
        if type(value) is bytes:
            return _HDR.pack(_HDR_SIZE + 1 + len(value), 0, rid) + b"\x00" + value
        return _ok(rid, _tvalue(value))

    def _set(self, rid, buf, start, end):
        size = end - start
        if size < P.SET_KEY:
            raise errors.ProtocolError(
                f"payload truncated: SET needs at least {P.SET_KEY + 4} bytes")
        flags, ttl_ms, if_version, klen = _SET_FIXED.unpack_from(buf, start)
        kend = start + P.SET_KEY + klen
        if kend + 4 > end:
            raise errors.ProtocolError("payload truncated: key or value length")
        (vlen,) = _u32.unpack_from(buf, kend)
        if kend + 4 + vlen != end:
            raise errors.ProtocolError("payload length does not match the key and value")
        if flags & ~P.SET_FLAGS:
            raise errors.ProtocolError(f"unknown SET flags 0x{flags:02x}")
        version = self.bucket.set(
            bytes(buf[start + P.SET_KEY:kend]), bytes(buf[kend + 4:end]),
            ttl=ttl_ms / 1000 if ttl_ms else None,
            nx=bool(flags & P.SET_NX), xx=bool(flags & P.SET_XX),
            single_read=bool(flags & P.SET_SINGLE_READ),
            if_version=if_version if flags & P.SET_IF_VERSION else None)
        if version is None:
            return _status(S.NOT_STORED, rid)
        return _HDR.pack(_HDR_SIZE + 8, 0, rid) + _u64.pack(version)

    # -- SLOW PATH: one handler per command, named after it -----------------------------

    def _delete(self, rid, keys):
        return _ok(rid, _u64.pack(self.bucket.delete(*keys)))

    def _exists(self, rid, keys):
        return _ok(rid, _u64.pack(self.bucket.exists(*keys)))

    def _incr(self, rid, by, initial, ttl_ms, key):
        return _ok(rid, _i64.pack(self.bucket.incr(key, by=by, initial=initial, ttl=_ttl(ttl_ms))))

    def _decr(self, rid, by, initial, ttl_ms, key):
        return self._incr(rid, -by, initial, ttl_ms, key)

    def _getdel(self, rid, key):
        value = self.bucket.getdel(key)
        return _status(S.NOT_FOUND, rid) if value is None else _ok(rid, _tvalue(value))

    def _ttl(self, rid, key):
        ttl = self.bucket.ttl(key)
        if ttl is None:
            return _status(S.NOT_FOUND, rid)
        return _ok(rid, _u64.pack(max(0, int(round(ttl * 1000)))))

    def _expire(self, rid, ttl_ms, key):
        if not ttl_ms:
            raise errors.InvalidArgument("EXPIRE needs a ttl_ms above zero; PERSIST removes a TTL")
        return _ok(rid, _u8.pack(bool(self.bucket.expire(key, ttl_ms / 1000))))

    def _persist(self, rid, key):
        return _ok(rid, _u8.pack(bool(self.bucket.persist(key))))

    def _mget(self, rid, keys):
        return self._bounded(rid, P.encode_payload(P.RESPONSE[C.MGET],
                                                   {"values": self.bucket.mget(keys)}))

    def _mset(self, rid, ttl_ms, items):
        mapping = dict(items)
        if len(mapping) != len(items):
            raise errors.InvalidArgument("MSET names a key twice")
        versions = self.bucket.mset(mapping, ttl=_ttl(ttl_ms))
        return _ok(rid, P.encode_payload(P.RESPONSE[C.MSET], {"versions": versions}))

    def _scan(self, rid, cursor, count, prefix):
        next_cursor, keys = self.bucket.scan(prefix, cursor, count or 100)
        if next_cursor > 0xFFFFFFFFFFFFFFFF:
            raise errors.BuktError("the store's scan cursor does not fit in u64")
        return self._bounded(rid, P.encode_payload(P.RESPONSE[C.SCAN],
                                                   {"cursor": next_cursor, "keys": keys}))

    def _watch(self, rid, flags, since, max, wait_ms, prefix):
        """WATCH: the change feed (bukt/feed.py) from `since`. With events there (or a
        gone) it answers at once; else, given `wait_ms`, it answers when events come or
        the wait ends (a long poll, bounded by tcp.watch_max_wait): a Deferred whose
        WatchWait the connection's loop waits on beside its other connections. The
        session keeps the last Watcher, so a client that goes on from the position it
        was given costs no seek through the feed."""
        if flags & ~P.WATCH_FLAGS:
            raise errors.InvalidArgument(f"WATCH flags 0x{flags:02x}")
        from bukt.feed import Watcher
        values = bool(flags & P.WATCH_VALUES)
        key = (self.bucket_name, prefix, values)
        kept = self._watch_state
        if flags & P.WATCH_NOW:
            w = Watcher(self.store, self.bucket_name, prefix, None, values)
        elif kept is not None and kept[0] == key and kept[1].position == since \
                and kept[1].gone is None:
            w = kept[1]
        else:
            w = Watcher(self.store, self.bucket_name, prefix, since, values)
        self._watch_state = (key, w)
        # as many as surely fit in a frame: an event takes at most its fixed fields,
        # a maximal key and a value of feed.max_value
        bound = 29 + 9 + self._ring_limits()[1] + w.feed.max_value
        n = min(max or 256, 4096, (self.max_frame - 64) // bound or 1)
        evs = w.poll(n)
        wait = min(wait_ms / 1000.0, self.watch_max_wait)
        if evs or wait <= 0 or w.dropped:
            return self.watch_answer(rid, w, evs)
        return Deferred(None, WatchWait(self, w, rid, n, wait), rid)

    def watch_answer(self, rid, w, evs):
        """The WATCH response of watcher `w`'s events `evs` (a Gone last: state gone)."""
        state, position = P.WATCH_EVENTS, w.position
        if evs and evs[-1].gone:
            state, position = P.WATCH_GONE, evs[-1].oldest
            evs = evs[:-1]
        out = [(e.seq, KIND_CODES[e.kind], e.ms, e.version, e.expire_ms, e.key, e.value)
               for e in evs]
        try:
            return self._bounded(rid, P.encode_payload(P.RESPONSE[C.WATCH], {
                "state": state, "position": position, "events": out}))
        except errors.BuktError as exc:
            return P.encode_error(rid, exc)

    def _version(self, rid, key):
        version = self.bucket.version(key)
        return _status(S.NOT_FOUND, rid) if version is None else _ok(rid, _u64.pack(version))

    def _stats(self, rid):
        stats = {k: int(v) for k, v in self.bucket.stats().items()
                 if isinstance(v, (int, float))}
        return _ok(rid, P.encode_payload(P.RESPONSE[C.STATS], {"stats": stats}))

    def _flush(self, rid):
        return _ok(rid, _u64.pack(self.bucket.flush()))

    def _bounded(self, rid, body):
        if _HDR_SIZE + len(body) > self.max_frame:
            raise errors.LimitExceeded(
                f"response of {_HDR_SIZE + len(body)} bytes exceeds max_frame {self.max_frame}")
        return _ok(rid, body)

    # -- bucket and token administration ------------------------------------------------

    def _may_administer(self, name: str, own_perm: int):
        if self.admin:
            return
        if self.bucket is None:
            raise errors.AuthError("AUTH first")
        if name != self.bucket_name or not self.perms & own_perm:
            raise errors.PermissionDenied(
                "needs the admin session" if name != self.bucket_name else
                f"token lacks {'admin' if own_perm == ADMIN else 'read'}")

    def _new_token(self, bucket: str, perms: int):
        token = new_token()
        token_id = self.store.add_token(bucket, digest(token), perms)
        return token_id, token.encode()

    def _bucket_create(self, rid, schema, eviction, persist, default_ttl_ms, name):
        name = _name(name)
        self._may_administer(None, ADMIN)  # the admin session only
        if schema not in P.SCHEMA_NAMES or eviction not in P.EVICTION_NAMES or persist > 1:
            raise errors.SchemaError(
                f"schema {schema}, eviction {eviction}, persist {persist}: see docs/protocol.md")
        self.store.create_bucket(name, schema=P.SCHEMA_NAMES[schema],
                                 eviction=P.EVICTION_NAMES[eviction], persist=bool(persist),
                                 default_ttl=_ttl(default_ttl_ms))
        token_id, token = self._new_token(name, ALL_PERMS)
        return _ok(rid, _u64.pack(token_id) + _u32.pack(len(token)) + token)

    def _bucket_drop(self, rid, name):
        name = _name(name)
        self._may_administer(name, ADMIN)
        self.store.drop_bucket(name)
        return _ok(rid)

    def _bucket_list(self, rid):
        self._may_administer(None, ADMIN)
        names = self.store.buckets()
        return self._bounded(rid, P.encode_payload(P.RESPONSE[C.BUCKET_LIST], {"names": names}))

    def _bucket_info(self, rid, name):
        name = _name(name)
        self._may_administer(name, READ)
        info = self.store.bucket_info(name)
        ttl = info.get("default_ttl")
        return _ok(rid, P.encode_payload(P.RESPONSE[C.BUCKET_INFO], {
            "schema": P.SCHEMAS[info["schema"]], "eviction": P.EVICTIONS[info["eviction"]],
            "persist": int(bool(info["persist"])),
            "default_ttl_ms": int(round(ttl * 1000)) if ttl else 0, "name": name}))

    def _token_create(self, rid, perms):
        if not 0 < perms <= ALL_PERMS:
            raise errors.InvalidArgument(f"perms must be 1..7 (READ=1|WRITE=2|ADMIN=4), not {perms}")
        token_id, token = self._new_token(self.bucket_name, perms)
        return _ok(rid, _u64.pack(token_id) + _u32.pack(len(token)) + token)

    def _token_list(self, rid):
        tokens = self.store.tokens(self.bucket_name)
        return _ok(rid, P.encode_payload(P.RESPONSE[C.TOKEN_LIST], {"tokens": tokens}))

    def _token_revoke(self, rid, token_id):
        return _ok(rid, _u8.pack(bool(self.store.revoke_token(self.bucket_name, token_id))))

    # -- session control ----------------------------------------------------------------

    def _auth(self, rid, bucket, token):
        self.bucket = self.bucket_name = None
        self.perms, self.admin, self.revoked = 0, False, False
        guard = self.guard
        if guard is not None:
            # A locked-out address is refused before its token is looked at, valid or
            # not, and at once: nothing waits on the loop (bukt/authguard.py).
            left = guard.check(self.peer)
            if left:
                raise errors.LimitExceeded(locked_message(self.peer, left))
        token_hash = digest(token)
        if not bucket:
            # Compare digests, not tokens: constant time whatever the lengths.
            if self.admin_hash is None or not hmac.compare_digest(token_hash, self.admin_hash):
                self._failed()
                raise errors.AuthError("invalid admin token")
            self.admin = True
            return _ok(rid, _u8.pack(ADMIN))
        name = bucket.decode("utf-8", "replace")
        found = self.store.find_token(token_hash)
        # One answer for an unknown token, another bucket's token and an unknown bucket:
        # nothing tells a guesser which of them was wrong.
        if found is None or found[0] != name:
            self._failed()
            raise errors.AuthError(f"invalid token for bucket {name!r}")
        self.bucket = self.store.bucket(name)
        self.bucket_name, self.perms = name, found[2] & ALL_PERMS
        self.token_id, self.token_perms = found[1], found[2]
        self.persist = bool(self.store.bucket_info(name).get("persist", True))
        return _ok(rid, _u8.pack(self.perms))

    def _failed(self):
        if self.guard is not None:
            self.guard.failed(self.peer)

    def _ping(self, rid, data):
        return _ok(rid, data)

    def _quit(self, rid):
        self.closing = True
        return _ok(rid)
