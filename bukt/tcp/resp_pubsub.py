"""Redis keyspace notifications on the RESP face, fed by the change feed (bukt/feed.py).

CHANNELS. A connection is a bucket (docs/resp.md), and its bucket is its database: an
event on key K of bucket B is published as Redis publishes an event of database 0,
under both of the bucket's names, `__keyspace@B__:K` (message: the event's name) and
`__keyevent@B__:<event>` (message: K), and the same with `@0` for clients that know
only database numbers. A SUBSCRIBE gets the channels it names; a PSUBSCRIBE pattern
gets each event at most once per channel kind (keyspace, keyevent), under the first of
the names B, 0 that it matches. Channels of another bucket, or not of keyspace
notifications at all, may be subscribed to (Redis refuses no channel name) and carry
nothing here. The event names are Redis's (EVENTS below); what Bukt cannot tell apart
arrives under the nearest name (docs/resp.md, Keyspace notifications).

THE FEED. A subscribed session holds one Watcher of its bucket, from the moment of its
first SUBSCRIBE. Its key prefix is the longest one every subscription allows (a
keyspace channel of this bucket: its key; a pattern: its literal start; a keyevent
channel: none), so the feed filters before Python looks at an event. The event loop
(bukt/tcp/connection.py, bukt/tcp/_epoll.pyx) is woken by the feed's Waker after each
of the writer's batches, and every second (revocation), and calls `pump` while the
connection's unsent output is below the high-water mark: events wait in the feed, not
in the worker. A pump hands over every event the feed has for the subscriber, up to the
room left below that mark, for one send: with 100 subscribers a send per subscriber and
event was most of what the worker spent (the loopback send wakes the reader, in the
kernel, on the sender's CPU). The epoll loop also holds back a subscriber it gave
messages to less than resp.coalesce ago, until that window ends (bukt/tcp/_epoll.pyx,
COALESCING), so a busy subscriber gets at most one send a window whatever the rate.

SHARED POLLS. Within one round of pumps (the loop's `begin_round` .. `end_round`),
subscribers at the same place of the feed with the same subscriptions get the same
messages: the first one's poll of the feed is kept, and the others take its bytes and
its new place without reading the feed themselves (a hundred clients of
`__keyspace@0__:*` cost one poll a round, not a hundred). Outside a round every pump
polls for itself: the feed may have moved since.

SLOW SUBSCRIBERS. A subscriber whose output stays above the high-water mark is not
pumped; once it trails the feed's head by more than feed.max_lag bytes (the limit the
Server-Sent Events watch has), or the feed has overwritten its place, it is cut off:
its last reply is `-ERR subscriber cut off ... resume after sequence N` and the
connection closes once that is out. Redis closes such a client at its
client-output-buffer-limit without a word; Bukt names the point up to which events
were delivered (a binary WATCH or an SSE watch from that sequence gets the rest, while
the feed holds them). A revoked token or a dropped bucket ends the subscription the
same way (-NOAUTH, -ERR).
"""
from __future__ import annotations

import fnmatch
import logging
import weakref

from bukt import errors
from bukt.tcp import resp as R

BATCH = 256     # events read from the feed per pump
MESSAGES_MAX = 4096     # events' messages a worker keeps for its other subscribers (all
                        # subscriptions together: at most this, plus a BATCH)

# the feed's kinds (bukt.feed.KINDS) -> Redis's event names. An incr is INCRBY's
# (INCR, DECR, INCRBY, DECRBY: "incrby"); a flush's deletes are reported key by key as
# del (Redis reports nothing for FLUSHDB); an expire to no TTL is PERSIST's "persist".
EVENTS = {"set": b"set", "delete": b"del", "expired": b"expired", "evicted": b"evicted",
          "expire": b"expire", "incr": b"incrby", "flush": b"del"}
# CONFIG GET notify-keyspace-events: what is always on (Redis's letters: K keyspace,
# E keyevent, g generic, $ string, x expired, e evicted)
NOTIFY_FLAGS = "g$xeKE"

SPACE, EVENT = b"__keyspace@", b"__keyevent@"
ALLOWED_RESP2 = frozenset({b"SUBSCRIBE", b"PSUBSCRIBE", b"UNSUBSCRIBE", b"PUNSUBSCRIBE",
                           b"PING", b"QUIT", b"RESET"})

_live: "weakref.WeakSet[Subscriptions]" = weakref.WeakSet()   # this worker's (PUBSUB)
log = logging.getLogger("bukt.tcp")

# SHARED MESSAGES. (bucket names, protocol, channels, patterns) -> {event seq -> its
# messages}: subscribers of a worker with the same subscriptions (a hundred clients of
# `__keyspace@0__:*`) match and encode each event once between them, not once each,
# as the SSE face shares its encoding (with 100 subscribers, matching and encoding
# were most of the worker's time). A seq names one record of the feed, so its
# messages for a given set of subscriptions never change. Past MESSAGES_MAX in all,
# they are dropped and made again as asked.
_MESSAGES: dict = {}
_held = 0

# SHARED POLLS: (place, subscriptions) -> (messages, events, watcher's pos, seq, more),
# while a round is open (None: no round)
_round: dict | None = None


def begin_round():
    """Pumps from now to end_round() may share their polls (SHARED POLLS)."""
    global _round
    _round = {}


def end_round():
    global _round
    _round = None


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


def _head(n: int, proto: int) -> bytes:
    return (b">%d\r\n" if proto == 3 else b"*%d\r\n") % n


def _common(a: bytes, b: bytes) -> bytes:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]


class Subscriptions:
    """One session's channels and patterns, and its Watcher (module docstring)."""

    def __init__(self, session):
        self.session = session
        self.channels: dict = {}    # channel -> None, in subscription order
        self.patterns: dict = {}
        self.names = (session.bucket_name.encode(), b"0")
        self.watcher = None
        _live.add(self)

    @property
    def count(self) -> int:
        return len(self.channels) + len(self.patterns)

    # -- what the feed is asked for ---------------------------------------------------

    def _key_prefix(self, sub: bytes, pattern: bool):
        """The prefix of the keys whose events `sub` can carry: bytes, or None when it
        can carry none of this bucket's."""
        for name in self.names:
            space = SPACE + name + b"__:"
            if sub.startswith(space):
                rest = sub[len(space):]
                return R.glob_prefix(rest) if pattern else rest
            if sub.startswith(EVENT + name + b"__:"):
                return b""
        if not pattern:
            return None
        lit = R.glob_prefix(sub)
        for name in self.names:
            for kind in (SPACE, EVENT):
                full = kind + name + b"__:"
                if full.startswith(lit) or lit.startswith(full):
                    return b""
        return None

    def _refresh(self):
        """Opens, narrows or closes the Watcher after a change of subscriptions."""
        prefix = None
        for subs, pattern in ((self.channels, False), (self.patterns, True)):
            for sub in subs:
                p = self._key_prefix(sub, pattern)
                if p is not None:
                    prefix = p if prefix is None else _common(prefix, p)
        if prefix is None:
            self.watcher = None
            return
        if self.watcher is None:
            from bukt.feed import Watcher
            try:
                self.watcher = Watcher(self.session.store, self.session.bucket_name, prefix)
            except errors.BuktError as exc:
                raise _Refused(R.error(f"ERR keyspace notifications need the change "
                                       f"feed: {exc}")) from None
        else:
            # (events already read were matched against the old subscriptions; the
            # new prefix applies from the watcher's position on)
            self.watcher.prefix = prefix

    # -- commands ---------------------------------------------------------------------

    def subscribe(self, subs, pattern: bool) -> bytes:
        table = self.patterns if pattern else self.channels
        kind = b"psubscribe" if pattern else b"subscribe"
        added = [s for s in dict.fromkeys(subs) if s not in table]
        for s in added:
            table[s] = None
        try:
            self._refresh()
        except _Refused as r:
            for s in added:
                del table[s]
            self._refresh()
            return r.reply
        proto = self.session.proto
        out = []
        n = self.count - len(added)
        for s in subs:
            if s in added:
                n += 1
                added.remove(s)
            out.append(_head(3, proto) + _bulk(kind) + _bulk(s) + b":%d\r\n" % n)
        return b"".join(out)

    def unsubscribe(self, subs, pattern: bool) -> bytes:
        table = self.patterns if pattern else self.channels
        kind = b"punsubscribe" if pattern else b"unsubscribe"
        proto = self.session.proto
        if not subs:
            subs = list(table)
            if not subs:
                return (_head(3, proto) + _bulk(kind) + R.null(proto)
                        + b":%d\r\n" % self.count)
        out = []
        for s in subs:
            table.pop(s, None)
            out.append(_head(3, proto) + _bulk(kind) + _bulk(s) + b":%d\r\n" % self.count)
        self._refresh()
        return b"".join(out)

    def close(self):
        self.channels.clear()
        self.patterns.clear()
        self.watcher = None
        _live.discard(self)

    # -- delivery ---------------------------------------------------------------------

    def lag(self) -> int:
        """Bytes of the feed between the subscriber's place and the newest event."""
        w = self.watcher
        return 0 if w is None or w.pos is None else w.feed.head() - w.pos

    def lagging(self, max_lag: int) -> bool:
        """The subscriber trails the feed's head by more than max_lag bytes."""
        return self.lag() > max_lag

    def cutoff(self, max_lag: int) -> bytes:
        pos = self.watcher.position if self.watcher is not None else 0
        log.warning("RESP subscriber %s (bucket %s) cut off %d bytes behind the change "
                    "feed (feed.max_lag %d): it had every event up to sequence %d",
                    self.session.peer, self.session.bucket_name, self.lag(), max_lag, pos)
        self.close()
        return R.error(f"ERR subscriber cut off: it did not read its messages and fell "
                       f"more than feed.max_lag ({max_lag} bytes) behind the change feed; "
                       f"every event up to sequence {pos} was delivered, resume after it")

    def pump(self, room: int = 1 << 20):
        """(messages, events, last reply or None, more): every event the feed has for
        this subscriber, until the messages reach `room` bytes (then `more` is true: the
        rest waits in the feed), and how many events they carry; a last reply ends the
        subscription and the connection (revoked token, dropped bucket, a place the
        feed has overwritten)."""
        w = self.watcher
        if w is None:
            return b"", 0, None, False
        s = self.session
        s.recheck()
        if s.bucket is None:
            self.close()
            return b"", 0, R.error("NOAUTH this connection's token was revoked: the "
                                   "subscription ends"), False
        sig = (self.names, s.proto, tuple(self.channels), tuple(self.patterns))
        shared = _round
        if shared is not None and w.gone is None and not w.dropped and w.pos is not None:
            place = (id(w.feed), w.idx, w.gen, w.prefix, w.values, w._lease, w.pos, w.seq,
                     room, sig)
            got = shared.get(place)
            if got is not None:                 # SHARED POLLS: another's poll, as it was
                data, n, w.pos, w.seq, more = got
                return data, n, None, more
        else:
            place = None
        out = []
        size = n = 0
        more = True
        while more and size < room:
            data, k, end, more = self._poll(sig)
            if data:
                out.append(data)
                size += len(data)
            n += k
            if end is not None:
                return b"".join(out), n, end, False
        data = b"".join(out)
        if place is not None and w.gone is None and not w.dropped:
            shared[place] = (data, n, w.pos, w.seq, more)
        return data, n, None, more

    def _poll(self, sig):
        """One poll of the feed: (messages, events, last reply or None, more)."""
        s = self.session
        evs = self.watcher.poll(BATCH)
        out = []
        global _held
        if _held >= MESSAGES_MAX:
            _MESSAGES.clear()
            _held = 0
        shared = _MESSAGES.get(sig)
        if shared is None:
            shared = _MESSAGES[sig] = {}
        n = 0
        for e in evs:
            if e.gone:
                log.warning("RESP subscriber %s (bucket %s) cut off: the change feed "
                            "overwrote its place (sequence %d)", s.peer, s.bucket_name,
                            e.since)
                self.close()
                return b"".join(out), n, R.error(
                    f"ERR subscriber cut off: the change feed no longer holds its place "
                    f"({e.reason}); events after sequence {e.since} were lost to it, the "
                    f"feed holds every event after sequence {e.oldest}"), False
            if e.kind == "drop":
                self.close()
                return b"".join(out), n, R.error("ERR the bucket was dropped: the "
                                                 "subscription ends"), False
            m = shared.get(e.seq)
            if m is None:
                one = []
                self._deliver(e, one)
                m = shared[e.seq] = b"".join(one)
                _held += 1
            if m:
                out.append(m)
                n += 1
        return b"".join(out), n, None, len(evs) >= BATCH

    def _deliver(self, e, out):
        name = EVENTS.get(e.kind)
        if name is None:
            return
        if e.kind == "expire" and not e.expire_ms:
            name = b"persist"
        key = e.key
        proto = self.session.proto
        channels, patterns = self.channels, self.patterns
        # as Redis: the keyspace channel, then the keyevent one; each to its channel's
        # subscribers, then to the patterns'
        for kind, tail, msg in ((SPACE, key, name), (EVENT, name, key)):
            if channels:
                for db in self.names:
                    ch = kind + db + b"__:" + tail
                    if ch in channels:
                        out.append(_head(3, proto) + b"$7\r\nmessage\r\n" + _bulk(ch)
                                   + _bulk(msg))
            for pat in patterns:
                for db in self.names:
                    ch = kind + db + b"__:" + tail
                    if fnmatch.fnmatchcase(ch, pat):
                        out.append(_head(4, proto) + b"$8\r\npmessage\r\n" + _bulk(pat)
                                   + _bulk(ch) + _bulk(msg))
                        break


class _Refused(Exception):
    def __init__(self, reply):
        self.reply = reply


def pubsub_command(s, args) -> bytes:
    """PUBSUB CHANNELS [pattern] | NUMSUB [channel ...] | NUMPAT: this worker's
    subscribers only (each TCP worker process has its own)."""
    sub = args[1].upper()
    live = list(_live)
    if sub == b"CHANNELS" and len(args) <= 3:
        seen = dict.fromkeys(ch for x in live for ch in x.channels)
        if len(args) == 3:
            seen = [ch for ch in seen if fnmatch.fnmatchcase(ch, args[2])]
        return R.bulks(list(seen), s.proto)
    if sub == b"NUMSUB":
        parts = []
        for ch in args[2:]:
            parts += [R.bulk(ch), R.integer(sum(1 for x in live if ch in x.channels))]
        return R.mapping(list(zip(parts[0::2], parts[1::2])), s.proto) if s.proto == 3 \
            else R.array(parts)
    if sub == b"NUMPAT" and len(args) == 2:
        return R.integer(sum(len(x.patterns) for x in live))
    raise errors.InvalidArgument(f"unknown PUBSUB subcommand or wrong number of arguments "
                                 f"for '{args[1].decode('utf-8', 'replace')}'")
