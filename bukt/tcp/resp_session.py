"""One RESP connection's session: who it is, which protocol version it speaks, and what
each Redis command does to its bucket (docs/resp.md is the user's side of this).

The RESP listener shares everything else with the binary face (bukt/tcp/connection.py and
bukt/tcp/_epoll.pyx): the loop, the limits, admission, auth lockouts, durability, the
ring-full parking. `run` is the RESP twin of connection.run_py: it handles the whole
commands of a buffer, appends each reply (bytes) or Deferred to `out`, and stops with
the same STOP_* codes, so both loops drive either protocol the same way.

AUTH. A connection is bound to one bucket by a token (bukt/tokens.py), as a binary
session is: `AUTH <bucket> <token>` (Redis's ACL form: the user name is the bucket),
`AUTH <token>` (the token names its bucket, as over HTTP), or `HELLO 3 AUTH <bucket>
<token>`. Before it, only PING, HELLO, AUTH and QUIT are answered (-NOAUTH). Failed
AUTHs count against the peer's address in the table shared with the binary face
(bukt/authguard.py); a locked-out address is refused before its token is read. A
revoked token leaves the session unauthenticated from its next batch (`recheck`, as
bukt/tcp/session.py does).

ADMIN. `AUTH <bucket> <admin-token>` (or HELLO's AUTH) opens the bucket with every
permission, FLUSHDB's admin one included: the admin token is the service's, so it
may do anything to any bucket, and a RESP connection needs a bucket to do anything.
The admin token alone names no bucket and is refused (-WRONGPASS saying so).

ORDER. Redis replies in request order, without request ids. Under `fsync: always` the
reply to a write waits for the writer's flushed position (a Deferred, as on the binary
face); every reply after it on the same connection waits for that same position too,
so nothing overtakes it (the loops release Deferreds in position order). Once the
flushed position has passed it nothing waits (finish, and the compiled loop's batch,
clear wait_pos), so the loop hands out the replies the position released before it
runs a connection's new commands (bukt/tcp/_epoll.pyx, DURABILITY). On a timeout
the write answers -ERR (applied in memory, not confirmed on disk); the replies behind
it go out as they are.

TRANSACTIONS. MULTI queues; each queued command is planned at once into Bucket calls
(`ops`: (method, args)) and a formatter for its reply; EXEC hands the ops and the
WATCHed versions to `exec_queue`, the one place that applies them. A command that
cannot be planned into Bucket calls is refused inside MULTI (the transaction is then
aborted at EXEC, as Redis does for a bad command).
"""
from __future__ import annotations

import fnmatch
import hashlib
import hmac
import itertools
import math
import os
import random
import time

from bukt import errors
from bukt.authguard import locked_message
from bukt.tcp import stats as tcp_stats
from bukt.tcp import resp as R
from bukt.tcp import resp_pubsub as PS
from bukt.tcp.frames import (STOP_DEFERRED, STOP_FATAL, STOP_FULL,  # noqa: F401
                              STOP_PARK, STOP_PARTIAL, STOP_QUIT, drive)
from bukt.tcp.session import PARK, Deferred, Session
from bukt.tokens import digest
from bukt.writewait import ringroom

READ, WRITE, ADMIN = 1, 2, 4
ALL_PERMS = READ | WRITE | ADMIN
REDIS_VERSION = "7.2.0"   # what client version gates compare against
MAX_CAS = 1000            # tries of a read-modify-write before it gives up (contention)

_ids = itertools.count(1)

NOAUTH = R.error("NOAUTH Authentication required.")
WRONGPASS = R.error("WRONGPASS invalid username-password pair or user is disabled.")
NOT_INT = R.error("ERR value is not an integer or out of range")
NOT_FLOAT = R.error("ERR value is not a valid float")
SYNTAX = R.error("ERR syntax error")
WRITER_DOWN = R.error("ERR the writer did not confirm the write on disk in time; it is "
                      "applied in memory")


def version_string():
    try:
        from importlib.metadata import version
        return version("bukt")
    except Exception:
        return "0"


def run(buf, size, pos, session, max_frame, out, out_limit):
    """Handles the whole commands of buf[pos:size] into `out` until a stop; returns
    (pos, why). The same contract as bukt/tcp/connection.py run_py, and the same loop
    (frames.drive) around the RESP parser and RespSession.execute."""
    if tcp_stats.row is None:
        return drive(session.parser.parse, session.execute, R.RespError, _protocol_error,
                     buf, size, pos, session, out, out_limit)
    # Counting (bukt/tcp/stats.py): a command's name and whether it failed, through
    # one call around execute; the batch's bytes once it ends.
    n0, start = len(out), pos
    pos, why = drive(session.parser.parse, counting(session.execute), R.RespError,
                     _protocol_error, buf, size, pos, session, out, out_limit)
    tcp_stats.count_resp_bytes(pos - start, out, n0)
    return pos, why


def counting(execute):
    """`execute`, counting each command it answers (bukt/tcp/stats.py); also the
    compiled loop's (bukt/tcp/_resp.pyx) for what it hands to the session."""
    def counted(args):
        result = execute(args)
        if result is not PARK:
            tcp_stats.count_resp(args[0], result)
        return result
    return counted


def _protocol_error(exc) -> bytes:
    return R.error(f"ERR Protocol error: {exc}")


def ring_full_answer(session, buf, pos, size, wait):
    """The reply to the parked command at buf[pos:] after `wait` seconds, and where the
    next command starts."""
    got = session.parser.parse(buf, pos, size)
    end = got[1] if got else size
    return R.error(f"ERR change ring full for {wait:g} s: the writer process is down or "
                   "behind; the write was not applied. Check `bukt status`."), end


def _atomic_plan(ops):
    """The planned ops in Bucket.atomic's vocabulary (one key an op), and a function that
    folds atomic's results back into one result per planned op: mget, mset and the
    many-key delete and exists become an op per key; get_entry (a peek: value, version,
    ttl) becomes get, version and ttl of its key."""
    core, shapes = [], []
    for method, args in ops:
        start = len(core)
        if method == "mget":
            core.extend(("get", (k,)) for k in args[0])
            shapes.append(("list", start, len(core)))
        elif method == "mset":
            core.extend(("set", (k, v)) for k, v in args[0].items())
            shapes.append(("true", start, len(core)))
        elif method in ("delete", "exists") and len(args) != 1:
            core.extend((method, (k,)) for k in args)
            shapes.append(("count", start, len(core)))
        elif method == "exists":
            core.append(("exists", args))
            shapes.append(("count", start, len(core)))
        elif method == "get_entry":
            core.extend((("get", (args[0],)), ("version", (args[0],)), ("ttl", (args[0],))))
            shapes.append(("entry", start, len(core)))
        else:
            core.append((method, args))
            shapes.append(("one", start, len(core)))

    def regroup(results):
        out = []
        for shape, a, b in shapes:
            part = results[a:b]
            bad = next((r for r in part if isinstance(r, BaseException)), None)
            if bad is not None:
                out.append(bad)
            elif shape == "one":
                out.append(part[0])
            elif shape == "list":
                out.append(list(part))
            elif shape == "true":
                out.append(True)
            elif shape == "count":
                out.append(sum(1 for r in part if r))
            else:
                value, version, ttl = part
                out.append(None if value is None else (value, version, ttl))
        return out
    return core, regroup


def exec_queue(bucket, ops, watched):
    """Applies a transaction: None when a WATCHed key's version is no longer the one
    recorded (0: absent), else the result of each op, in order (an exception object
    where an op raised). `ops` are (Bucket method, positional args).

    A Bucket hands them to the core's atomic() (docs/resp.md, Transactions); a store
    without it (the reference model) checks the versions and applies the ops one by
    one."""
    atomic = getattr(bucket, "atomic", None)
    if atomic is not None:
        core_ops, regroup = _atomic_plan(ops)
        results = atomic(core_ops, watched)
        return None if results is None else regroup(results)
    for key, version in watched.items():
        if (bucket.version(key) or 0) != version:
            return None
    results = []
    for method, args in ops:
        try:
            results.append(getattr(bucket, method)(*args))
        except errors.BuktError as exc:
            results.append(exc)
    return results


# -- argument helpers ----------------------------------------------------------------------

class Reply(Exception):
    """Raised by a handler to answer with `reply` (an encoded error, usually)."""

    def __init__(self, reply: bytes):
        self.reply = reply


def _int(b) -> int:
    try:
        if not b or len(b) > 20 or b[0:1] == b"+" or b.strip() != b:
            raise ValueError
        n = int(b)
    except ValueError:
        raise Reply(NOT_INT) from None
    if not -(1 << 63) <= n < (1 << 63):
        raise Reply(NOT_INT)
    return n


def _float(b) -> float:
    try:
        x = float(b)
    except ValueError:
        raise Reply(NOT_FLOAT) from None
    if math.isnan(x) or math.isinf(x):
        raise Reply(NOT_FLOAT)
    return x


def _fmt_float(x: float) -> bytes:
    """As Redis prints an INCRBYFLOAT result: up to 17 significant digits, no exponent
    for ordinary magnitudes, no trailing zeros."""
    if x == int(x) and abs(x) < 1e17:
        return str(int(x)).encode()
    text = ("%.17f" % x).rstrip("0").rstrip(".")
    return repr(x).encode() if "e" in repr(x) and abs(x) < 1e-5 else text.encode()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _expiry(opt: bytes, arg: bytes, cmd: str) -> float:
    """Seconds from now for EX/PX/EXAT/PXAT; may be <= 0 (already expired)."""
    n = _int(arg)
    if n <= 0 and opt in (b"EX", b"PX"):
        raise Reply(R.error(f"ERR invalid expire time in '{cmd}' command"))
    if opt == b"EX":
        return float(n)
    if opt == b"PX":
        return n / 1000
    if opt == b"EXAT":
        return n - time.time()
    return (n - _now_ms()) / 1000  # PXAT


def _matcher(pattern):
    if pattern is None or pattern == b"*":
        return None
    pat = pattern.replace(b"[^", b"[!")
    return lambda key: fnmatch.fnmatchcase(key, pat)


class Cmd:
    """One command of the table: its handler, arity (Redis's: negative means at least),
    the permission it needs (0: none), and whether it may run before AUTH."""

    __slots__ = ("name", "handler", "arity", "perm", "open", "write", "plan", "park")

    def __init__(self, name, handler, arity, perm=0, open=False, plan=None, park=False):
        self.name, self.handler, self.arity, self.perm = name, handler, arity, perm
        self.open, self.write, self.plan, self.park = open, perm == WRITE, plan, park


COMMANDS: dict = {}


def command(name, arity, perm=0, open=False, park=False):
    """Registers a direct handler: handler(session, args) -> reply bytes."""
    def deco(fn):
        COMMANDS[name.encode()] = Cmd(name, fn, arity, perm, open, park=park)
        return fn
    return deco


def planned(name, arity, perm, park=False):
    """Registers a planned handler: plan(session, args) -> (ops, fmt), where ops are
    (Bucket method, args) and fmt(results, proto) the reply; run at once, or at EXEC."""
    def deco(plan):
        def handler(session, args):
            ops, fmt = plan(session, args)
            b = session.bucket
            return fmt([getattr(b, m)(*a) for m, a in ops], session.proto)
        COMMANDS[name.encode()] = Cmd(name, handler, arity, perm, plan=plan, park=park)
        return plan
    return deco


class RespSession:
    """One RESP connection's state (module docstring)."""

    def __init__(self, store, *, admin_hash=None, max_frame=4 << 20, durable=None,
                 guard=None, peer="-", max_keys=100_000, info=None):
        self.store = store
        self.admin_hash = admin_hash
        self.max_frame = max_frame
        self.durable = durable
        self.guard = guard
        self.peer = peer
        self.max_keys = max_keys
        self.info = info or {}       # what INFO and CONFIG GET say of the server
        self.parser = R.Parser(max_frame)
        self.id = next(_ids)
        self.proto = 2
        self.name = None
        self.lib = {}
        self.bucket = self.bucket_name = None
        self.perms = 0
        self.token_id = self.token_perms = 0
        self.persist = False
        self.admin = False           # opened by the admin token (ADMIN in the docstring)
        self.revoked = False
        self.multi = None            # list of (cmd, ops, fmt) while in MULTI
        self.multi_dirty = False
        self.watched = {}            # key -> version at WATCH (0: absent)
        self.subs = None             # Subscriptions while subscribed (resp_pubsub.py)
        self.closing = False
        self.park_ring_full = False
        self.park_room = 0
        self.wait_pos = 0            # ORDER: replies wait for this flushed position
        self.created = time.monotonic()

    # -- the dispatch ----------------------------------------------------------------------

    def execute(self, args):
        name = args[0].upper()
        cmd = COMMANDS.get(name)
        try:
            if cmd is None:
                shown = args[0].decode("utf-8", "replace")[:128]
                rest = " ".join("'" + a.decode("utf-8", "replace")[:64] + "'" for a in args[1:4])
                raise Reply(R.error(f"ERR unknown command '{shown}', with args beginning "
                                    f"with: {rest}"))
            n = len(args)
            if n != cmd.arity if cmd.arity > 0 else n < -cmd.arity:
                raise Reply(R.error(f"ERR wrong number of arguments for "
                                    f"'{cmd.name.lower()}' command"))
            if not cmd.open and self.bucket is None:
                raise Reply(NOAUTH)
            if self.subs is not None and self.proto == 2 and name not in PS.ALLOWED_RESP2:
                raise Reply(R.error(f"ERR Can't execute '{cmd.name.lower()}': only "
                                    "(P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / "
                                    "RESET are allowed in this context"))
            if cmd.perm and not self.perms & cmd.perm:
                raise Reply(R.error(f"NOPERM this token has no permission to run the "
                                    f"'{cmd.name.lower()}' command (it lacks "
                                    f"{ {READ: 'read', WRITE: 'write', ADMIN: 'admin'}[cmd.perm]})"))
            if self.multi is not None and name not in TX_CONTROL:
                return self._queue(cmd, args)
            reply = cmd.handler(self, args)
        except Reply as r:
            if self.multi is not None and name not in TX_CONTROL:
                self.multi_dirty = True
            reply = r.reply
        except Exception as exc:
            reply = self.failed(args, exc, name, cmd)
            if reply is PARK:
                return PARK
        return self.finish(cmd is not None and cmd.write, reply)

    def failed(self, args, exc, name=None, cmd=None):
        """The reply to the command `args` whose Bucket call raised `exc`, or PARK (it
        waits for room in the change ring): for execute and for the compiled fast path
        (bukt/tcp/_resp.pyx)."""
        if name is None:
            name = args[0].upper()
            cmd = COMMANDS.get(name)
        if isinstance(exc, errors.RingFull):
            if self.park_ring_full and cmd.park and (
                    name not in (b"DEL", b"UNLINK") or len(args) == 2):
                self.park_room = exc.room
                return PARK
            return R.error(f"ERR {exc}")
        if isinstance(exc, errors.SchemaError):
            return NOT_INT if name in INT_COMMANDS else error_reply(exc)
        if isinstance(exc, errors.BuktError):
            return error_reply(exc)
        # a bug: answered, logged by the caller's logs
        import logging
        logging.getLogger("bukt.tcp").exception("RESP %s failed", cmd and cmd.name,
                                                exc_info=exc)
        return R.error(f"ERR internal error in {cmd and cmd.name}: {type(exc).__name__}")

    def finish(self, write, reply):
        """The reply to a command that ran (`write`: it is a write), or the Deferred
        that holds it until the disk has what it must (ORDER above)."""
        if write and self.durable is not None and reply[0:1] != b"-":
            wait = self.durable(self)
            if wait is not None:
                self.wait_pos = self.store.last_pos
                return Deferred(reply, wait, True)
        if self.wait_pos:
            # ORDER: behind a reply that waits for the disk.
            if self.store.ring_position()[2] >= self.wait_pos:
                self.wait_pos = 0
            else:
                return Deferred(reply, self.durable.wait_for(self.wait_pos), None)
        return reply

    def _queue(self, cmd, args):
        if cmd.plan is None:
            self.multi_dirty = True
            return R.error(f"ERR {cmd.name} is not supported inside MULTI by Bukt")
        ops, fmt = cmd.plan(self, args)
        self.multi.append((cmd, ops, fmt))
        return R.QUEUED

    # -- auth ------------------------------------------------------------------------------

    def authenticate(self, bucket, token) -> bytes | None:
        """None when `token` (bytes) admits this session to `bucket` (bytes, or None: the
        token's own); else the error reply."""
        guard = self.guard
        if guard is not None:
            left = guard.check(self.peer)
            if left:
                return R.error("ERR " + locked_message(self.peer, left))
        if self.admin_hash is not None and hmac.compare_digest(
                hashlib.sha256(token).digest(), self.admin_hash):
            return self._admit_admin(bucket)
        found = self.store.find_token(digest(token))
        # Redis's "default" user (what clients send with a password alone) names no
        # bucket: the token's own, as AUTH <token> does.
        name = None if bucket in (None, b"default") else bucket.decode("utf-8", "replace")
        if found is None or (name is not None and found[0] != name):
            if guard is not None:
                guard.failed(self.peer)
            return WRONGPASS
        name = found[0]
        self.bucket = self.store.bucket(name)
        self.bucket_name, self.perms = name, found[2] & ALL_PERMS
        self.token_id, self.token_perms = found[1], found[2]
        self.persist = bool(self.store.bucket_info(name).get("persist", True))
        self.revoked = self.admin = False
        return None

    def _admit_admin(self, bucket) -> bytes | None:
        """ADMIN: the admin token opens the bucket it names with every permission."""
        if bucket in (None, b"default"):
            return R.error("WRONGPASS the admin token opens a bucket: AUTH <bucket> "
                           "<admin-token>")
        name = bucket.decode("utf-8", "replace")
        try:
            self.bucket = self.store.bucket(name)
            persist = bool(self.store.bucket_info(name).get("persist", True))
        except errors.BuktError:
            return R.error(f"WRONGPASS no bucket {name!r}")
        self.bucket_name, self.perms, self.admin = name, ALL_PERMS, True
        self.token_id = self.token_perms = 0
        self.persist, self.revoked = persist, False
        return None

    def recheck(self):
        """The token still stands, or the session becomes unauthenticated: the binary
        face's rule (bukt/tcp/session.py), on the same fields. The admin token is not a
        bucket's token (it is the service's own, and cannot be revoked): an admin session
        is only dropped with its bucket."""
        if not self.admin:
            Session.recheck(self)
        elif self.bucket is not None:
            try:
                live = self.store.bucket(self.bucket_name) is self.bucket
            except errors.BuktError:
                live = False
            if not live:
                self.unauthenticate()

    def unauthenticate(self):
        self.bucket = self.bucket_name = None
        self.perms = 0
        self.admin = False
        self.multi = None
        self.watched = {}
        self.end_subscriptions()

    def end_subscriptions(self):
        if self.subs is not None:
            self.subs.close()
            self.subs = None


def error_reply(exc) -> bytes:
    if isinstance(exc, errors.SegmentFull):
        return R.error(f"OOM command not allowed: {exc}")
    if isinstance(exc, errors.PermissionDenied):
        return R.error(f"NOPERM {exc}")
    if isinstance(exc, errors.AuthError):
        return R.error(f"NOAUTH {exc}")
    return R.error(f"ERR {exc}")


INT_COMMANDS = frozenset({b"INCR", b"DECR", b"INCRBY", b"DECRBY"})
TX_CONTROL = frozenset({b"EXEC", b"DISCARD", b"MULTI", b"WATCH", b"UNWATCH", b"QUIT",
                        b"RESET"})


# == connection and server commands ==========================================================

@command("PING", -1, open=True)
def _ping(s, args):
    if len(args) > 2:
        raise Reply(R.error("ERR wrong number of arguments for 'ping' command"))
    if s.subs is not None and s.proto == 2:   # Redis's answer in the subscribed state
        return b"*2\r\n$4\r\npong\r\n" + R.bulk(args[1] if len(args) == 2 else b"")
    return R.PONG if len(args) == 1 else R.bulk(args[1])


@command("ECHO", 2)
def _echo(s, args):
    return R.bulk(args[1])


@command("QUIT", -1, open=True)
def _quit(s, args):
    s.closing = True
    return R.OK


@command("RESET", 1)
def _reset(s, args):
    s.unauthenticate()      # (and unsubscribes)
    s.proto, s.name, s.multi_dirty = 2, None, False
    return R.simple("RESET")


@command("AUTH", -2, open=True)
def _auth(s, args):
    if len(args) > 3:
        raise Reply(SYNTAX)
    bucket, token = (None, args[1]) if len(args) == 2 else (args[1], args[2])
    err = s.authenticate(bucket, token)
    if err is not None:
        s.unauthenticate()
        return err
    return R.OK


@command("HELLO", -1, open=True)
def _hello(s, args):
    proto = s.proto
    i = 1
    if len(args) > 1:
        try:
            proto = int(args[1])
        except ValueError:
            raise Reply(R.error("ERR Protocol version is not an integer or out of range"))
        if proto not in (2, 3):
            raise Reply(R.error("NOPROTO unsupported protocol version"))
        i = 2
    auth = setname = None
    while i < len(args):
        opt = args[i].upper()
        if opt == b"AUTH" and i + 2 < len(args):
            auth = (args[i + 1], args[i + 2])
            i += 3
        elif opt == b"SETNAME" and i + 1 < len(args):
            setname = args[i + 1]
            i += 2
        else:
            raise Reply(R.error(f"ERR Syntax error in HELLO option "
                                f"'{args[i].decode('utf-8', 'replace')}'"))
    if auth is not None:
        err = s.authenticate(*auth)
        if err is not None:
            s.unauthenticate()
            return err
    # Unlike Redis with a password set, HELLO without AUTH answers (and switches the
    # protocol): the commands after it still get -NOAUTH until an AUTH.
    if setname is not None:
        _check_name(setname)
        s.name = setname
    s.proto = proto
    b = R.bulk
    return R.mapping([(b("server"), b("redis")), (b("version"), b(REDIS_VERSION)),
                      (b("proto"), R.integer(proto)), (b("id"), R.integer(s.id)),
                      (b("mode"), b("standalone")), (b("role"), b("master")),
                      (b("modules"), R.EMPTY_ARRAY)], proto)


@command("SELECT", 2)
def _select(s, args):
    if args[1] == b"0":
        return R.OK
    raise Reply(R.error("ERR DB index is out of range: Bukt has one database per "
                        "connection, the bucket its AUTH named; to use another bucket, "
                        "AUTH <bucket> <token>"))


def _check_name(name):
    if any(c <= 32 or c > 126 for c in name):
        raise Reply(R.error("ERR Client names cannot contain spaces, newlines or special "
                            "characters."))


@command("CLIENT", -2, open=True)  # this connection only: redis-py sends SETINFO first
def _client(s, args):
    sub = args[1].upper()
    if sub == b"SETNAME" and len(args) == 3:
        _check_name(args[2])
        s.name = args[2] or None
        return R.OK
    if sub == b"GETNAME" and len(args) == 2:
        return R.null(s.proto) if s.name is None else R.bulk(s.name)
    if sub == b"ID" and len(args) == 2:
        return R.integer(s.id)
    if sub == b"SETINFO" and len(args) == 4:
        attr = args[2].upper()
        if attr not in (b"LIB-NAME", b"LIB-VER"):
            raise Reply(R.error(f"ERR Unrecognized option '{args[2].decode('utf-8', 'replace')}'"))
        s.lib[attr] = args[3]
        return R.OK
    if sub in (b"INFO", b"LIST") and len(args) == 2:
        return R.bulk(_client_line(s) + ("\n" if sub == b"LIST" else ""))
    raise Reply(R.error(f"ERR unknown subcommand '{args[1].decode('utf-8', 'replace')}'. "
                        "Try CLIENT HELP."))


def _client_line(s) -> str:
    name = (s.name or b"").decode()
    return (f"id={s.id} addr={s.peer}:0 laddr=- fd=-1 name={name} "
            f"age={int(time.monotonic() - s.created)} idle=0 flags={'P' if s.subs else 'N'} db=0 "
            f"sub={len(s.subs.channels) if s.subs else 0} "
            f"psub={len(s.subs.patterns) if s.subs else 0} "
            f"multi={-1 if s.multi is None else len(s.multi)} resp={s.proto} "
            f"lib-name={s.lib.get(b'LIB-NAME', b'').decode()} "
            f"lib-ver={s.lib.get(b'LIB-VER', b'').decode()} bucket={s.bucket_name or ''}")


def _info_text(s, sections) -> str:
    st = s.store
    out = []
    want = {x.lower() for x in sections} or {"default"}
    every = bool(want & {"all", "everything", "default"})

    def section(name, pairs):
        if every or name in want:
            out.append(f"# {name.capitalize()}\r\n" + "".join(f"{k}:{v}\r\n" for k, v in pairs))

    section("server", [("redis_version", REDIS_VERSION), ("bukt_version", version_string()),
                       ("redis_mode", "standalone"), ("os", os.uname().sysname),
                       ("process_id", os.getpid()), ("tcp_port", s.info.get("port", 0)),
                       ("uptime_in_seconds", int(time.monotonic() - s.info.get("started", time.monotonic())))])
    stats = {}
    try:
        stats = st.stats()
    except Exception:
        pass
    section("clients", [("connected_clients", s.info.get("clients", lambda: 1)())])
    section("memory", [("used_memory", stats.get("used_bytes", stats.get("bytes", 0))),
                       ("maxmemory", stats.get("segment_size", stats.get("size", 0))),
                       ("maxmemory_policy", "allkeys-lru")])
    section("persistence", [("loading", 0), ("aof_enabled", int(bool(s.persist))),
                            ("rdb_bgsave_in_progress", 0)])
    bstats = {}
    if s.bucket is not None:
        try:
            bstats = s.bucket.stats()
        except errors.BuktError:
            pass
    section("stats", [("keyspace_hits", bstats.get("hits", 0)),
                      ("keyspace_misses", bstats.get("misses", 0)),
                      ("expired_keys", bstats.get("expirations", 0)),
                      ("evicted_keys", bstats.get("evictions", 0))])
    if bstats:
        section("keyspace", [("db0", f"keys={bstats.get('keys', 0)},expires=0,avg_ttl=0"),
                             (f"bucket_{s.bucket_name}",
                              ",".join(f"{k}={v}" for k, v in bstats.items()
                                       if isinstance(v, (int, float))))])
    else:
        section("keyspace", [])
    section("replication", _replication(st))
    return "\r\n".join(out)


def _replication(store):
    """INFO replication in Redis's words (docs/resp.md), from bukt/replica/status.py."""
    from bukt.replica.status import replica_status
    try:
        r = replica_status(store)
    except (errors.BuktError, OSError):
        return [("role", "master")]
    if r["role"] == "primary":
        return [("role", "master"), ("connected_slaves", 0)]
    host, _, port = r["primary"].rpartition(":")
    return [("role", "slave"), ("master_host", host), ("master_port", port),
            ("master_link_status", r["link"]),
            ("master_last_io_seconds_ago", int(r["last_io_seconds"] or -1)),
            ("master_sync_in_progress", 0),
            ("slave_repl_offset", r["applied"] or 0),
            ("master_repl_offset", r["primary_last"]),
            ("slave_read_only", 1),
            ("bukt_lag_seq", r["lag_seq"] if r["lag_seq"] is not None else -1),
            ("bukt_lag_seconds", r["lag_seconds"] if r["lag_seconds"] is not None else -1),
            ("bukt_full_copies", r["copies"])]


@command("INFO", -1)
def _info(s, args):
    return R.verbatim(_info_text(s, [a.decode("utf-8", "replace") for a in args[1:]]), s.proto)


@command("CONFIG", -2)
def _config(s, args):
    sub = args[1].upper()
    if sub == b"GET" and len(args) >= 3:
        conf = s.info.get("config", {})
        pairs = []
        for pat in args[2:]:
            for k, v in conf.items():
                if (fnmatch.fnmatchcase(k, pat.decode("utf-8", "replace").lower())
                        and (k, v) not in pairs):
                    pairs.append((k, v))
        return R.mapping([(R.bulk(k), R.bulk(v)) for k, v in pairs], s.proto)
    if sub in (b"SET", b"RESETSTAT", b"REWRITE"):
        raise Reply(R.error(f"ERR CONFIG {sub.decode()} is not supported by Bukt: its "
                            "settings are in bukt.yaml (docs/operations.md)"))
    raise Reply(R.error(f"ERR unknown subcommand '{args[1].decode('utf-8', 'replace')}'. "
                        "Try CONFIG HELP."))


@command("COMMAND", -1)
def _command(s, args):
    if len(args) == 1:
        return R.EMPTY_ARRAY
    sub = args[1].upper()
    if sub == b"COUNT":
        return R.integer(len(COMMANDS))
    if sub == b"DOCS":
        return R.mapping([], s.proto)
    if sub in (b"INFO", b"LIST", b"GETKEYS"):
        return R.EMPTY_ARRAY
    raise Reply(R.error(f"ERR unknown subcommand '{args[1].decode('utf-8', 'replace')}'. "
                        "Try COMMAND HELP."))


@command("TIME", 1)
def _time(s, args):
    t = time.time()
    return R.array([R.bulk(str(int(t))), R.bulk(str(int((t % 1) * 1e6)))])


# == keyspace notifications (bukt/tcp/resp_pubsub.py) ========================================

def _subscribe(pattern):
    def handler(s, args):
        if s.subs is None:
            s.subs = PS.Subscriptions(s)
        reply = s.subs.subscribe(args[1:], pattern)
        if not s.subs.count:
            s.end_subscriptions()
        return reply
    return handler


def _unsubscribe(pattern):
    def handler(s, args):
        subs = s.subs or PS.Subscriptions(s)
        reply = subs.unsubscribe(args[1:], pattern)
        if not subs.count:
            subs.close()
            s.subs = None
        return reply
    return handler


for _name, _pat in (("SUBSCRIBE", False), ("PSUBSCRIBE", True)):
    command(_name, -2, READ)(_subscribe(_pat))
for _name, _pat in (("UNSUBSCRIBE", False), ("PUNSUBSCRIBE", True)):
    command(_name, -1)(_unsubscribe(_pat))
command("PUBSUB", -2, READ)(PS.pubsub_command)


# == transactions ============================================================================

@command("MULTI", 1)
def _multi(s, args):
    if s.multi is not None:
        raise Reply(R.error("ERR MULTI calls can not be nested"))
    s.multi, s.multi_dirty = [], False
    return R.OK


@command("DISCARD", 1)
def _discard(s, args):
    if s.multi is None:
        raise Reply(R.error("ERR DISCARD without MULTI"))
    s.multi, s.watched = None, {}
    return R.OK


@command("WATCH", -2, READ)
def _watch(s, args):
    if s.multi is not None:
        raise Reply(R.error("ERR WATCH inside MULTI is not allowed"))
    for key in args[1:]:
        if key not in s.watched:
            s.watched[key] = s.bucket.version(key) or 0
    return R.OK


@command("UNWATCH", 1)
def _unwatch(s, args):
    s.watched = {}
    return R.OK


@command("EXEC", 1)
def _exec(s, args):
    if s.multi is None:
        raise Reply(R.error("ERR EXEC without MULTI"))
    queue, watched, dirty = s.multi, s.watched, s.multi_dirty
    s.multi, s.watched, s.multi_dirty = None, {}, False
    if dirty:
        raise Reply(R.error("EXECABORT Transaction discarded because of previous errors."))
    writes = any(cmd.write for cmd, _, _ in queue)
    if writes and not s.perms & WRITE:
        raise Reply(R.error("NOPERM this token has no permission to write"))
    ops, spans = [], []
    for cmd, cops, fmt in queue:
        spans.append((len(ops), len(ops) + len(cops), fmt))
        ops.extend(cops)
    results = exec_queue(s.bucket, ops, watched)
    if results is None:
        return R.null_array(s.proto)
    replies = []
    for start, end, fmt in spans:
        part = results[start:end]
        bad = next((r for r in part if isinstance(r, BaseException)), None)
        if bad is not None:
            replies.append(NOT_INT if isinstance(bad, errors.SchemaError) else error_reply(bad))
            continue
        try:
            replies.append(fmt(part, s.proto))
        except Reply as r:
            replies.append(r.reply)
    return R.array(replies)


# EXEC is a write when its queue writes (durability), which only the handler knows.
COMMANDS[b"EXEC"].write = True


# == strings =================================================================================

def _one(results, proto):
    return R.value(results[0], proto)


def _ok_or_nil(results, proto):
    return R.OK if results[0] is not None else R.null(proto)


def _int_reply(results, proto):
    return R.integer(int(results[0]))


def _parse_set(args, start, cmd="set"):
    """SET's options from args[start:]: (ttl or None, nx, xx, keepttl, get, single_read)."""
    ttl = None
    nx = xx = keepttl = get = single = False
    i = start
    n = len(args)
    while i < n:
        opt = args[i].upper()
        if opt in (b"EX", b"PX", b"EXAT", b"PXAT") and i + 1 < n and ttl is None and not keepttl:
            ttl = _expiry(opt, args[i + 1], cmd)
            i += 2
            continue
        if opt == b"NX" and not xx:
            nx = True
        elif opt == b"XX" and not nx:
            xx = True
        elif opt == b"KEEPTTL" and ttl is None:
            keepttl = True
        elif opt == b"GET":
            get = True
        elif opt == b"BUKT-SINGLE-READ":
            single = True
        else:
            raise Reply(SYNTAX)
        i += 1
    return ttl, nx, xx, keepttl, get, single


def _plan_set(s, args):
    ttl, nx, xx, keepttl, get, single = _parse_set(args, 3)
    if keepttl or get:
        raise Reply(R.error("ERR SET with KEEPTTL or GET is not supported inside MULTI "
                            "by Bukt"))
    if ttl is not None and ttl <= 0:
        return [("delete", (args[1],))], lambda r, p: R.OK
    return [("set", (args[1], args[2], ttl, nx, xx, single))], _ok_or_nil


def _cas(s, key, change):
    """Read-modify-write of one key, made atomic by its version: change(entry) returns
    (value, ttl) to store, or None to store nothing; tried again while another write
    gets in between. Returns (entry, stored version or None)."""
    b = s.bucket
    for _ in range(MAX_CAS):
        entry = b.get_entry(key, consume=False)
        new = change(entry)
        if new is None:
            return entry, None
        value, ttl = new
        try:
            if ttl is not None and ttl <= 0:
                b.delete(key, if_version=entry[1] if entry else 0)
                return entry, 0
            return entry, b.set(key, value, ttl, False, False, False, entry[1] if entry else 0)
        except errors.VersionMismatch:
            continue
    raise Reply(R.error(f"ERR too much contention on this key ({MAX_CAS} tries)"))


@command("SET", -3, WRITE, park=True)
def _set(s, args):
    ttl, nx, xx, keepttl, get, single = _parse_set(args, 3)
    b = s.bucket
    key, value = args[1], args[2]
    if not (keepttl or get or (ttl is not None and ttl <= 0)):
        done = b.set(key, value, ttl, nx, xx, single)
        return R.OK if done is not None else R.null(s.proto)

    def change(entry):
        if (nx and entry is not None) or (xx and entry is None):
            return None
        return value, (entry[2] if keepttl and entry is not None else ttl)
    entry, version = _cas(s, key, change)
    if get:
        return R.value(entry[0] if entry else None, s.proto)
    return R.OK if version is not None else R.null(s.proto)


COMMANDS[b"SET"].plan = _plan_set


@planned("GET", 2, READ)
def _get(s, args):
    return [("get", (args[1],))], _one


@planned("SETNX", 3, WRITE, park=True)
def _setnx(s, args):
    return [("set", (args[1], args[2], None, True))], \
        lambda r, p: R.ONE if r[0] is not None else R.ZERO


@planned("SETEX", 4, WRITE, park=True)
def _setex(s, args):
    return [("set", (args[1], args[3], _expiry(b"EX", args[2], "setex")))], \
        lambda r, p: R.OK


@planned("PSETEX", 4, WRITE, park=True)
def _psetex(s, args):
    return [("set", (args[1], args[3], _expiry(b"PX", args[2], "psetex")))], \
        lambda r, p: R.OK


@command("GETSET", 3, WRITE, park=True)
def _getset(s, args):
    entry, _ = _cas(s, args[1], lambda e: (args[2], None))
    return R.value(entry[0] if entry else None, s.proto)


@planned("GETDEL", 2, WRITE, park=True)
def _getdel(s, args):
    return [("getdel", (args[1],))], _one


@command("GETEX", -2, WRITE, park=True)
def _getex(s, args):
    b = s.bucket
    key = args[1]
    opts = args[2:]
    if not opts:
        return R.value(b.get(key), s.proto)
    opt = opts[0].upper()
    if opt == b"PERSIST" and len(opts) == 1:
        value = b.get(key)
        if value is not None:
            b.persist(key)
        return R.value(value, s.proto)
    if opt in (b"EX", b"PX", b"EXAT", b"PXAT") and len(opts) == 2:
        ttl = _expiry(opt, opts[1], "getex")
        value = b.get(key)
        if value is not None:
            if ttl <= 0:
                b.delete(key)
            else:
                b.expire(key, ttl)
        return R.value(value, s.proto)
    raise Reply(SYNTAX)


@planned("MGET", -2, READ)
def _mget(s, args):
    return [("mget", (args[1:],))], lambda r, p: R.bulks(r[0], p)


@planned("MSET", -3, WRITE)
def _mset(s, args):
    if len(args) % 2 != 1:
        raise Reply(R.error("ERR wrong number of arguments for 'mset' command"))
    mapping = {args[i]: args[i + 1] for i in range(1, len(args), 2)}
    return [("mset", (mapping,))], lambda r, p: R.OK


@command("MSETNX", -3, WRITE)
def _msetnx(s, args):
    if len(args) % 2 != 1:
        raise Reply(R.error("ERR wrong number of arguments for 'msetnx' command"))
    mapping = {args[i]: args[i + 1] for i in range(1, len(args), 2)}
    ops = [("set", (k, v, None, True)) for k, v in mapping.items()]
    watched = {k: 0 for k in mapping}
    results = exec_queue(s.bucket, ops, watched)
    if results is None:
        return R.ZERO
    bad = next((r for r in results if isinstance(r, BaseException)), None)
    if bad is not None:
        raise bad
    return R.ONE if all(r is not None for r in results) else R.ZERO


def _as_bytes(v) -> bytes:
    if type(v) is bytes:
        return v
    return bytes(v) if isinstance(v, bytes) else str(v).encode()    # JsonDocument: bytes


@command("APPEND", 3, WRITE)
def _append(s, args):
    out = []

    def change(entry):
        old = _as_bytes(entry[0]) if entry else b""
        out[:] = [len(old) + len(args[2])]
        return old + args[2], entry[2] if entry else None
    _cas(s, args[1], change)
    return R.integer(out[0])


@planned("STRLEN", 2, READ)
def _strlen(s, args):
    return [("get_entry", (args[1], False))], \
        lambda r, p: R.integer(len(_as_bytes(r[0][0])) if r[0] else 0)


def _incr_plan(sign, by_arg):
    def plan(s, args):
        by = _int(args[2]) * sign if by_arg else sign
        return [("incr", (args[1], by))], _int_reply
    return plan


for _name, _sign, _by in (("INCR", 1, False), ("DECR", -1, False), ("INCRBY", 1, True),
                          ("DECRBY", -1, True)):
    planned(_name, 3 if _by else 2, WRITE, park=True)(_incr_plan(_sign, _by))


@command("INCRBYFLOAT", 3, WRITE)
def _incrbyfloat(s, args):
    by = _float(args[2])
    out = []

    def change(entry):
        old = 0.0
        if entry:
            try:
                old = float(_as_bytes(entry[0]))
            except ValueError:
                raise Reply(NOT_FLOAT) from None
        new = old + by
        if math.isnan(new) or math.isinf(new):
            raise Reply(R.error("ERR increment would produce NaN or Infinity"))
        out[:] = [_fmt_float(new)]
        return out[0], entry[2] if entry else None
    _cas(s, args[1], change)
    return R.bulk(out[0])


# == keys ====================================================================================

@planned("DEL", -2, WRITE, park=True)
def _del(s, args):
    return [("delete", tuple(args[1:]))], _int_reply


COMMANDS[b"UNLINK"] = Cmd("UNLINK", COMMANDS[b"DEL"].handler, -2, WRITE, plan=_del, park=True)


@planned("EXISTS", -2, READ)
def _exists(s, args):
    return [("exists", tuple(args[1:]))], _int_reply


@planned("TOUCH", -2, READ)
def _touch(s, args):
    return [("exists", tuple(args[1:]))], _int_reply


@planned("TYPE", 2, READ)
def _type(s, args):
    return [("exists", (args[1],))], \
        lambda r, p: R.simple("string") if r[0] else R.simple("none")


def _expire_when(unit, absolute, arg, name) -> tuple[float, int]:
    """(seconds from now, absolute unix ms) of an EXPIRE-family argument."""
    n = _int(arg)
    now = _now_ms()
    when = n * (1000 // unit) if absolute else now + n * (1000 // unit)
    if not -(1 << 63) <= when < (1 << 63):
        raise Reply(R.error(f"ERR invalid expire time in '{name.lower()}' command"))
    return (when - now) / 1000, when


def _expire_flags(opts, name) -> str:
    """NX, XX, GT, LT as Redis reads them (any order, repeats allowed): a set of letters
    'n', 'x', 'g', 'l'."""
    flags = set()
    for opt in opts:
        o = opt.upper()
        if o not in (b"NX", b"XX", b"GT", b"LT"):
            raise Reply(R.error(f"ERR Unsupported option {opt.decode('utf-8', 'replace')}"))
        flags.add(o[:1].lower().decode())
    if "n" in flags and flags & {"x", "g", "l"}:
        raise Reply(R.error("ERR NX and XX, GT or LT options at the same time are not "
                            "compatible"))
    if {"g", "l"} <= flags:
        raise Reply(R.error("ERR GT and LT options at the same time are not compatible"))
    return "".join(sorted(flags))


def _expire_plan(unit, absolute, name):
    def plan(s, args):
        if len(args) > 3:
            _expire_flags(args[3:], name)
            raise Reply(R.error(f"ERR {name} with NX, XX, GT or LT is not supported "
                                "inside MULTI by Bukt"))
        ttl, _ = _expire_when(unit, absolute, args[2], name)
        if ttl <= 0:
            return [("delete", (args[1],))], _int_reply
        return [("expire", (args[1], ttl))], lambda r, p: R.ONE if r[0] else R.ZERO
    return plan


def _expire_handler(unit, absolute, name):
    """EXPIRE and kin. With NX/XX/GT/LT (Redis 7's rules; a key without a TTL counts as
    an infinite one for GT and LT) the key's TTL is read, compared, and the change applied
    only if the key's version is still the one read (a set or delete in between: read
    again). A TTL changed in between by another EXPIRE is not seen (EXPIRE changes no
    version; docs/resp.md)."""
    plan = _expire_plan(unit, absolute, name)

    def handler(s, args):
        if len(args) == 3:
            ops, fmt = plan(s, args)
            b = s.bucket
            return fmt([getattr(b, m)(*a) for m, a in ops], s.proto)
        flags = _expire_flags(args[3:], name)
        ttl, when = _expire_when(unit, absolute, args[2], name)
        key, b = args[1], s.bucket
        for _ in range(MAX_CAS):
            entry = b.get_entry(key, consume=False)
            if entry is None:
                return R.ZERO
            current = None if entry[2] is None else _now_ms() + round(entry[2] * 1000)
            if (("n" in flags and current is not None)
                    or ("x" in flags and current is None)
                    or ("g" in flags and (current is None or when <= current))
                    or ("l" in flags and current is not None and when >= current)):
                return R.ZERO
            op = ("delete", (key,)) if ttl <= 0 else ("expire", (key, ttl))
            done = exec_queue(b, [op], {key: entry[1]})
            if done is None:
                continue                # replaced or deleted in between: again
            if isinstance(done[0], BaseException):
                raise done[0]
            return R.ONE if done[0] else R.ZERO
        raise Reply(R.error(f"ERR too much contention on this key ({MAX_CAS} tries)"))
    return plan, handler


for _name, _unit, _abs in (("EXPIRE", 1, False), ("PEXPIRE", 1000, False),
                           ("EXPIREAT", 1, True), ("PEXPIREAT", 1000, True)):
    _plan, _handler = _expire_handler(_unit, _abs, _name)
    COMMANDS[_name.encode()] = Cmd(_name, _handler, -3, WRITE, plan=_plan, park=True)


def _ttl_plan(ms):
    def fmt(r, p):
        entry = r[0]
        if entry is None:
            return R.integer(-2)
        if entry[2] is None:
            return R.integer(-1)
        return R.integer(max(0, round(entry[2] * 1000)) if ms else max(0, round(entry[2])))

    def plan(s, args):
        return [("get_entry", (args[1], False))], fmt
    return plan


planned("TTL", 2, READ)(_ttl_plan(False))
planned("PTTL", 2, READ)(_ttl_plan(True))


@command("PERSIST", 2, WRITE, park=True)
def _persist(s, args):
    b = s.bucket
    if b.ttl(args[1]) is None:
        return R.ZERO
    return R.ONE if b.persist(args[1]) else R.ZERO


@command("SCAN", -2, READ)
def _scan(s, args):
    try:
        cursor = int(args[1])
        if cursor < 0:
            raise ValueError
    except ValueError:
        raise Reply(R.error("ERR invalid cursor"))
    pattern, count, kind = None, 10, None
    i = 2
    while i < len(args):
        opt = args[i].upper()
        if i + 1 >= len(args):
            raise Reply(SYNTAX)
        if opt == b"MATCH":
            pattern = args[i + 1]
        elif opt == b"COUNT":
            count = _int(args[i + 1])
            if count < 1:
                raise Reply(SYNTAX)
        elif opt == b"TYPE":
            kind = args[i + 1].lower()
        else:
            raise Reply(SYNTAX)
        i += 2
    count = min(count, s.max_keys)
    prefix = R.glob_prefix(pattern) if pattern else b""
    match = _matcher(pattern)
    next_cursor, keys = s.bucket.scan(prefix, cursor, count)
    if match is not None:
        keys = [k for k in keys if match(k)]
    if kind is not None and kind != b"string":
        keys = []
    return R.array([R.bulk(str(next_cursor)), R.bulks(keys, s.proto)])


@command("KEYS", 2, READ)
def _keys(s, args):
    pattern = args[1]
    prefix = R.glob_prefix(pattern)
    match = _matcher(pattern)
    out = []
    cursor = 0
    while True:
        cursor, keys = s.bucket.scan(prefix, cursor, 1000)
        out.extend(k for k in keys if match is None or match(k))
        if len(out) > s.max_keys:
            raise Reply(R.error(f"ERR KEYS would return more than resp.max_keys "
                                f"({s.max_keys}) keys; use SCAN"))
        if cursor == 0:
            return R.bulks(out, s.proto)


@command("DBSIZE", 1, READ)
def _dbsize(s, args):
    return R.integer(int(s.bucket.stats().get("keys", 0)))


@command("FLUSHDB", -1, ADMIN)
def _flushdb(s, args):
    if len(args) > 2 or (len(args) == 2 and args[1].upper() not in (b"ASYNC", b"SYNC")):
        raise Reply(SYNTAX)
    s.bucket.flush()
    return R.OK


COMMANDS[b"FLUSHDB"].write = True


@command("RANDOMKEY", 1, READ)
def _randomkey(s, args):
    cursor, keys = s.bucket.scan(b"", 0, 64)
    return R.bulk(random.choice(keys)) if keys else R.null(s.proto)


@command("BUKT.SETSR", -3, WRITE, park=True)
def _setsr(s, args):
    """SET key value [EX s | PX ms]: a single-read key (docs/resp.md)."""
    return _set(s, list(args) + [b"BUKT-SINGLE-READ"])


# == the scripts of redis-py's Lock ==========================================================
# Bukt runs no Lua. redis-py's Lock releases, extends and reacquires through three short
# scripts; those three, recognised by their text or SHA1, run natively, made atomic by
# the key's version. Any other script is -NOSCRIPT (EVALSHA) or an error (EVAL).

def _lock_release(s, keys, argv):
    b = s.bucket
    entry = b.get_entry(keys[0], consume=False)
    if entry is None or _as_bytes(entry[0]) != argv[0]:
        return R.ZERO
    try:
        b.delete(keys[0], if_version=entry[1])
    except errors.VersionMismatch:
        return R.ZERO
    return R.ONE


def _lock_pexpire(s, keys, argv, extend):
    b = s.bucket
    entry = b.get_entry(keys[0], consume=False)
    if entry is None or _as_bytes(entry[0]) != argv[0]:
        return R.ZERO
    if extend and entry[2] is None:
        return R.ZERO
    ms = _int(argv[1])
    if extend and argv[2] == b"0":
        ms += round(entry[2] * 1000)
    if ms <= 0:  # (the newer scripts leave the TTL alone then)
        return R.ONE
    try:
        b.set(keys[0], entry[0], ms / 1000, False, False, False, entry[1])
    except errors.VersionMismatch:
        return R.ZERO
    return R.ONE


_LOCK_SCRIPTS = {
    "local token = redis.call('get', KEYS[1]) if not token or token ~= ARGV[1] then "
    "return 0 end redis.call('del', KEYS[1]) return 1": _lock_release,
    "local token = redis.call('get', KEYS[1]) if not token or token ~= ARGV[1] then "
    "return 0 end local expiration = redis.call('pttl', KEYS[1]) if not expiration then "
    "expiration = 0 end if expiration < 0 then return 0 end local newttl = ARGV[2] if "
    "ARGV[3] == \"0\" then newttl = ARGV[2] + expiration end redis.call('pexpire', "
    "KEYS[1], newttl) return 1": lambda s, k, a: _lock_pexpire(s, k, a, True),
    "local token = redis.call('get', KEYS[1]) if not token or token ~= ARGV[1] then "
    "return 0 end redis.call('pexpire', KEYS[1], ARGV[2]) return 1":
        lambda s, k, a: _lock_pexpire(s, k, a[:2] + [b"1"], False),
    # redis-py 5.1 and later
    "local token = redis.call('get', KEYS[1]) if not token or token ~= ARGV[1] then "
    "return 0 end local expiration = redis.call('pttl', KEYS[1]) if not expiration then "
    "expiration = 0 end if expiration < 0 then return 0 end local newttl = ARGV[2] if "
    "ARGV[3] == \"0\" then newttl = ARGV[2] + expiration end if tonumber(newttl) <= 0 "
    "then return 1 end redis.call('pexpire', KEYS[1], newttl) return 1":
        lambda s, k, a: _lock_pexpire(s, k, a, True),
    "local token = redis.call('get', KEYS[1]) if not token or token ~= ARGV[1] then "
    "return 0 end if tonumber(ARGV[2]) > 0 then redis.call('pexpire', KEYS[1], ARGV[2]) "
    "end return 1": lambda s, k, a: _lock_pexpire(s, k, a[:2] + [b"1"], False),
}
_SCRIPT_SHAS: dict = {}   # sha1 hex of a loaded script -> its handler


def _script_key(text: bytes) -> str:
    return " ".join(text.decode("utf-8", "replace").split())


def _find_script(text: bytes):
    fn = _LOCK_SCRIPTS.get(_script_key(text))
    if fn is not None:
        _SCRIPT_SHAS[hashlib.sha1(text).hexdigest()] = fn
    return fn


def _run_script(s, fn, args):
    nkeys = _int(args[2])
    if nkeys < 0 or nkeys > len(args) - 3:
        raise Reply(R.error("ERR Number of keys can't be greater than number of args"))
    keys, argv = args[3:3 + nkeys], list(args[3 + nkeys:])
    if not keys or len(argv) < 2 and fn is not _lock_release:
        raise Reply(R.error("ERR wrong number of arguments for this script"))
    return fn(s, keys, argv)


@command("EVAL", -3, WRITE)
def _eval(s, args):
    fn = _find_script(args[1])
    if fn is None:
        raise Reply(R.error("ERR Bukt runs no Lua scripts; only the scripts of redis-py's "
                            "Lock are recognised (docs/resp.md)"))
    return _run_script(s, fn, args)


@command("EVALSHA", -3, WRITE)
def _evalsha(s, args):
    fn = _SCRIPT_SHAS.get(args[1].decode("ascii", "replace").lower())
    if fn is None:
        raise Reply(R.error("NOSCRIPT No matching script. Please use EVAL."))
    return _run_script(s, fn, args)


@command("SCRIPT", -2, READ)
def _script(s, args):
    sub = args[1].upper()
    if sub == b"LOAD" and len(args) == 3:
        if _find_script(args[2]) is None:
            raise Reply(R.error("ERR Bukt runs no Lua scripts; only the scripts of "
                                "redis-py's Lock are recognised (docs/resp.md)"))
        return R.bulk(hashlib.sha1(args[2]).hexdigest())
    if sub == b"EXISTS":
        return R.array([R.ONE if a.decode("ascii", "replace").lower() in _SCRIPT_SHAS
                        else R.ZERO for a in args[2:]])
    raise Reply(R.error(f"ERR unknown subcommand '{args[1].decode('utf-8', 'replace')}'."))


for _n in (b"EVAL", b"EVALSHA"):
    COMMANDS[_n].write = True

