"""Hostile clients on the binary TCP face, against real workers: connections that never
AUTH (bukt/tcp/admission.py: the AUTH deadline, a full worker making room, the limit per
address) and token guessing (bukt/authguard.py: failures counted by every worker
together, a lockout per address, a rate-limited log line). Clients take addresses of
their own among 127.0.0.0/8, all of which are this host."""
import re
import resource
import socket

import pytest

from bukt import protocol as P
from bukt.protocol import Command as C, Status as S

from tcp_harness import Server, auth, call, connect, read_frame, store


def _told_and_closed(s, timeout=30.0):
    """The frame a server closes a connection with, then EOF: (status, rid, message)."""
    s.settimeout(timeout)
    status, rid, f = P.decode_response(C.PING, read_frame(s))
    try:
        rest = s.recv(1)
    except ConnectionResetError:
        rest = b""
    assert rest == b"", "the connection stayed open after its error frame"
    return status, rid, f.get("message", "")


def _works(port, source="127.0.0.1", key=b"k"):
    with connect(port, source=source) as s:
        auth(s, "rw")
        assert call(s, C.SET, 2, flags=0, ttl_ms=0, if_version=0, key=key,
                    value=b"v")[0] == S.OK
        status, _, f = call(s, C.GET, 3, key=key)
        assert (status, f["value"]) == (S.OK, b"v")


# -- connections that never authenticate ------------------------------------------------

@pytest.mark.slow
def test_thousands_of_idle_connections_do_not_keep_a_client_out():
    """3,000 connections that never AUTH, from 12 addresses, against two workers of
    1,024 slots each: a client keeps connecting, authenticating and working all along,
    and every idle connection is told why and closed (made room of, or past its AUTH
    deadline)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 8192:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(8192, hard), hard))
    with store() as (st, name):
        with Server(name, workers=2, auth_timeout=3) as srv:
            idle = []
            try:
                for i in range(3000):
                    idle.append(connect(srv.port, timeout=30,
                                        source=f"127.0.0.{2 + i % 12}"))
                    if i % 100 == 99:
                        _works(srv.port, key=b"k%d" % i)
                kinds = set()
                for s in idle:
                    status, rid, message = _told_and_closed(s)
                    assert rid == 0
                    assert (status, message) in {
                        (S.LIMIT_EXCEEDED, "closed to make room for a new connection: this "
                         "worker is full and this connection had not authenticated"),
                        (S.UNAUTHORIZED, "no successful AUTH within 3 s of connecting; "
                         "closing")}, (status, message)
                    kinds.add(status)
                _works(srv.port)
            finally:
                for s in idle:
                    s.close()
        assert st.check() == []


def test_a_connection_that_does_not_auth_in_time_is_closed():
    with store() as (_, name):
        with Server(name, workers=1, auth_timeout=1) as srv:
            with connect(srv.port) as idle, connect(srv.port) as authed:
                auth(authed, "rw")
                assert call(idle, C.PING, 5, data=b"x")[0] == S.OK  # PING is no AUTH
                assert _told_and_closed(idle) == (
                    S.UNAUTHORIZED, 0, "no successful AUTH within 1 s of connecting; closing")
                # The one that authenticated has no deadline.
                assert call(authed, C.PING, 6, data=b"y")[:2] == (S.OK, 6)


def test_a_full_worker_closes_its_oldest_unauthenticated_connection_to_make_room():
    with store() as (_, name):
        with Server(name, workers=1, max_connections=4) as srv:
            held = [connect(srv.port) for _ in range(4)]
            try:
                for s in held:
                    assert call(s, C.PING, data=b"")[0] == S.OK  # all four admitted
                auth(held[3], "rw")
                _works(srv.port)        # the fifth: the oldest unauthenticated goes
                status, rid, message = _told_and_closed(held[0])
                assert (status, rid) == (S.LIMIT_EXCEEDED, 0) and "make room" in message
                for s in held[1:3]:     # authenticate the rest: now nothing can go
                    auth(s, "rw")
                _works(srv.port)        # took held[0]'s slot, then gave it back
                with connect(srv.port) as extra:
                    auth(extra, "rw")   # every slot is now held by an authenticated one
                    with connect(srv.port) as refused:
                        assert _told_and_closed(refused) == (
                            S.LIMIT_EXCEEDED, 0, "too many connections to this worker")
                    assert call(extra, C.PING, 9, data=b"")[:2] == (S.OK, 9)
                for s in held[1:]:
                    assert call(s, C.PING, 9, data=b"")[:2] == (S.OK, 9)
            finally:
                for s in held:
                    s.close()


def test_connections_per_address_are_limited_and_other_addresses_still_connect():
    with store() as (_, name):
        with Server(name, workers=1, max_connections_per_address=3) as srv:
            held = [connect(srv.port, source="127.0.0.5") for _ in range(3)]
            try:
                auth(held[0], "rw")
                for s in held[1:]:
                    assert call(s, C.PING, data=b"")[0] == S.OK
                with connect(srv.port, source="127.0.0.5") as extra:
                    assert _told_and_closed(extra) == (
                        S.LIMIT_EXCEEDED, 0, "too many connections from 127.0.0.5 to this "
                        "worker (max_connections_per_address: 3)")
                _works(srv.port)
            finally:
                for s in held:
                    s.close()


# -- guessing tokens --------------------------------------------------------------------

def _auth_status(port, token, source, bucket=b"b"):
    with connect(port, source=source) as s:
        status, _, f = call(s, C.AUTH, 4, bucket=bucket, token=token)
        return status, f.get("message", "")


def test_wrong_tokens_lock_their_address_out_across_workers():
    """5 wrong AUTHs from 127.0.0.2, on new connections spread over two workers, lock
    it out: its next AUTH is refused unread, even with a valid token. A session it
    opened before goes on; 127.0.0.1 is untouched. Counted, and logged once."""
    with store() as (_, name):
        with Server(name, workers=2, auth_max_failures=5, auth_lockout=120) as srv:
            with connect(srv.port, source="127.0.0.2") as before:
                auth(before, "rw")
                for _ in range(5):
                    assert _auth_status(srv.port, b"wrong", "127.0.0.2")[0] == S.UNAUTHORIZED
                status, message = _auth_status(srv.port, b"wrong", "127.0.0.2")
                assert status == S.LIMIT_EXCEEDED, message
                assert message.startswith("too many failed authentications from 127.0.0.2; "
                                          "try again in ")
                assert _auth_status(srv.port, b"rw", "127.0.0.2")[0] == S.LIMIT_EXCEEDED
                # Other addresses: a valid token works, a wrong one is only wrong.
                _works(srv.port)
                assert _auth_status(srv.port, b"wrong", "127.0.0.1")[0] == S.UNAUTHORIZED
                # Sessions that authenticated before the lockout are not touched.
                assert call(before, C.GET, 8, key=b"k")[:2] == (S.OK, 8)
            from bukt.authguard import FailureTable, table_name
            table = FailureTable.attach(table_name(name, "tcp"))
            try:
                assert table.totals() == {"failures": 6, "refused": 2}
            finally:
                table.close()
        lines = [line for line in srv.output().splitlines()
                 if "failed authentication from 127.0.0.2" in line]
        assert len(lines) == 1, lines
        assert "wrong" not in srv.output()


def test_the_log_line_counts_what_it_did_not_log():
    with store() as (_, name):
        with Server(name, workers=2, auth_max_failures=0, auth_log_interval=1) as srv:
            for _ in range(20):                 # never locked out (max_failures 0)
                assert _auth_status(srv.port, b"wrong", "127.0.0.3")[0] == S.UNAUTHORIZED
            first = []
            while not first:                    # (stderr is read by a thread)
                first = [line for line in srv.output().splitlines() if "127.0.0.3" in line]
            while True:                         # the next line, once its interval passed
                assert _auth_status(srv.port, b"wrong", "127.0.0.3")[0] == S.UNAUTHORIZED
                lines = [line for line in srv.output().splitlines() if "127.0.0.3" in line]
                if len(lines) > 1:
                    break
        assert len(first) == 1 and "1 failed and 0 refused" in first[0], first
        assert len(lines) == 2
        # Between the two lines: the 19 not logged, and the one that logged it.
        n = int(re.search(r"(\d+) failed and", lines[1])[1])
        assert n >= 20, lines
