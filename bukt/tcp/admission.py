"""Who may hold one of a worker's connections: the admission policy of every
connection-oriented face (the binary TCP face; a RESP listener on the same event loop
takes the same object). It knows nothing of frames or loops: the loop tells it when a
connection opens, authenticates and goes, asks it which connections to close, and
writes the refusal in its own protocol (the texts are here).

THREE RULES, per worker process (like tcp.max_connections; the kernel spreads the
connections of one address over the workers):
  - at most `max_connections` connections;
  - at most `max_per_address` of them from one peer address (0: no such limit), so
    one host cannot take a worker's slots; a connection over it is refused at once,
    authenticated or not;
  - a connection that has not authenticated `auth_timeout` seconds after it opened is
    closed (0: never), so a connection that never sends AUTH holds a slot for seconds,
    not for tcp.idle_timeout.

A FULL WORKER MAKES ROOM. When every slot is taken, a new connection closes the oldest
connection that has not authenticated yet and takes its place; it is refused only when
every slot is held by an authenticated connection. Every connection starts
unauthenticated, so a share of the slots kept for authenticated clients would not let
a new client in past a crowd of idle ones; closing the oldest idle one does, and an
attacker who wants to keep clients out must open connections faster than a client's
AUTH round trip, from more addresses than max_per_address allows him, for as long as
he keeps it up. Authenticated connections are never closed to make room.
"""
from __future__ import annotations

from bukt.tcp import stats

TOO_MANY = "too many connections to this worker"
MADE_ROOM = ("closed to make room for a new connection: this worker is full and this "
             "connection had not authenticated")


def too_many_from(address, limit):
    return (f"too many connections from {address} to this worker "
            f"(max_connections_per_address: {limit})")


def auth_timed_out(timeout):
    return f"no successful AUTH within {timeout:g} s of connecting; closing"


class Admission:
    """The rules of the module docstring for one worker. Connections are opaque,
    hashable handles of the loop's own."""

    def __init__(self, max_connections: int, max_per_address: int = 0,
                 auth_timeout: float = 0.0):
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.auth_timeout = auth_timeout
        self.held = {}          # conn -> its address: every admitted connection
        self.per_address = {}   # address -> connections held
        self.pending = {}       # conn -> deadline: not authenticated yet, oldest first
        self.faces = {}         # conn -> its listener (bukt/tcp/stats.py FACES) when not 0

    def __len__(self):
        return len(self.held)

    def admit(self, conn, address, now, face=0):
        """(refusal, evicted): refusal is None when `conn` is admitted, else the text
        to close it with (it holds no slot); evicted is a connection closed to make
        room (already released: the loop tells its peer MADE_ROOM and closes it)."""
        limit = self.max_per_address
        if limit and self.per_address.get(address, 0) >= limit:
            return too_many_from(address, limit), None
        evicted = None
        if len(self.held) >= self.max_connections:
            if not self.pending:
                return TOO_MANY, None
            evicted = next(iter(self.pending))
            self.release(evicted)
        self.held[conn] = address
        self.per_address[address] = self.per_address.get(address, 0) + 1
        self.pending[conn] = now + self.auth_timeout
        if face:
            self.faces[conn] = face
        stats.connected(face)
        return None, evicted

    def authenticated(self, conn):
        """`conn` authenticated: no deadline, and it is never closed to make room."""
        self.pending.pop(conn, None)

    def release(self, conn):
        """`conn` is going (or was closed to make room, or timed out): its slot is
        free. Harmless for a connection not held."""
        address = self.held.pop(conn, _NONE)
        if address is _NONE:
            return
        self.pending.pop(conn, None)
        stats.disconnected(self.faces.pop(conn, 0) if self.faces else 0)
        n = self.per_address[address] - 1
        if n:
            self.per_address[address] = n
        else:
            del self.per_address[address]

    def expired(self, now):
        """The connections past their AUTH deadline, released; the loop closes each
        with auth_timed_out(auth_timeout)."""
        if not self.auth_timeout or not self.pending:
            return []
        out = []
        for conn, deadline in self.pending.items():  # oldest first: deadlines ascend
            if deadline > now:
                break
            out.append(conn)
        for conn in out:
            self.release(conn)
        return out


_NONE = object()
