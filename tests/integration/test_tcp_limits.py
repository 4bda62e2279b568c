"""Each limit of docs/protocol.md enforced by real workers, and bad input handled:
max frame, connections per worker, in-flight requests (reading pauses), idle timeout,
unknown commands and payloads that do not parse."""
import socket
import time

import pytest

from bukt import protocol as P
from bukt.protocol import Command as C, Status as S

from tcp_harness import Server, auth, call, connect, read_frame, socket_fds, store


@pytest.fixture(scope="module")
def srv():
    with store() as (_, name):
        with Server(name, workers=1, max_frame="64KiB", max_connections=8, max_inflight=16,
                    idle_timeout=1.5) as server:
            yield server


def _closed(s, timeout=5.0) -> bool:
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


@pytest.mark.parametrize("length", [0, 5, 12, 64 * 1024 + 1, 0xFFFFFFFF])
def test_a_bad_length_is_answered_at_once_then_closed(srv, length):
    with connect(srv.port) as s:
        auth(s, "rw")
        # Only the Length and a few bytes: the server must not wait for the rest.
        s.sendall(length.to_bytes(4, "big") + b"\x02")
        status, rid, f = P.decode_response(C.GET, read_frame(s))
        assert (status, rid) == (S.PROTOCOL_ERROR, 0) and "frame length" in f["message"]
        assert _closed(s)


def test_the_largest_frame_allowed_is_served(srv):
    with connect(srv.port) as s:
        auth(s, "rw")
        overhead = P.HEADER_SIZE + 17 + 4 + 2 + 4
        value = b"v" * (64 * 1024 - overhead)
        status, _, _ = call(s, C.SET, flags=0, ttl_ms=0, if_version=0, key=b"mx", value=value)
        assert status == S.OK


def test_unknown_command_and_bad_payloads_keep_the_stream(srv):
    with connect(srv.port) as s:
        auth(s, "rw")
        bad = [
            P.frame(0x7F, 10, b"\x00"),                                  # unknown command
            P.frame(C.GET, 11, b"\x00\x00\x00\x05k"),                    # key runs past the end
            P.frame(C.GET, 12, b"\x00\x00\x00\x01kk"),                   # bytes left over
            P.frame(C.SET, 13, b"\xf0" + bytes(16) + b"\x00\x00\x00\x01k\x00\x00\x00\x00"),  # flags
            P.frame(C.MGET, 14, b"\xff\xff\xff\xff"),                    # a count that cannot fit
            P.frame(C.DELETE, 15, b""),                                  # no count at all
            P.frame(C.EXPIRE, 16, bytes(8) + b"\x00\x00\x00\x01k"),      # ttl 0
        ]
        s.sendall(b"".join(bad) + P.encode_request(C.PING, 17, data=b"alive"))
        statuses = [P.decode_response(C.PING, read_frame(s))[:2] for _ in range(len(bad) + 1)]
        assert statuses == [(S.UNKNOWN_COMMAND, 10), (S.PROTOCOL_ERROR, 11),
                            (S.PROTOCOL_ERROR, 12), (S.PROTOCOL_ERROR, 13),
                            (S.PROTOCOL_ERROR, 14), (S.PROTOCOL_ERROR, 15),
                            (S.INVALID_ARGUMENT, 16), (S.OK, 17)]


def test_connections_per_worker(srv):
    held = []
    try:
        deadline = time.monotonic() + 10
        while len(held) < 8:  # (connections of the tests before may still be closing)
            s = connect(srv.port)
            # Authenticated: an unauthenticated one would be closed to make room.
            if call(s, C.AUTH, bucket=b"b", token=b"rw")[0] == S.OK:
                held.append(s)
                continue
            s.close()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with connect(srv.port) as extra:
            status, rid, _ = P.decode_response(C.PING, read_frame(extra))
            assert (status, rid) == (S.LIMIT_EXCEEDED, 0)
            assert _closed(extra)
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 5
    while True:  # the slots come back once the server has seen the closes
        with connect(srv.port) as s:
            try:
                if call(s, C.PING, data=b"")[0] == S.OK:
                    break
            except ConnectionError:
                pass
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_peer_that_does_not_read_is_not_read_either(srv):
    """Requests whose responses are not read: the server stops reading the connection
    (max_inflight, then the transport's high-water mark), the kernel buffers fill, and
    the sender blocks. Bounded memory in the worker; nothing is lost once it reads."""
    with connect(srv.port) as s:
        auth(s, "rw")
        call(s, C.SET, flags=0, ttl_ms=0, if_version=0, key=b"big", value=b"x" * 60000)
        worker = srv.worker_pids()[0]
        rss_before = _rss(worker)
        request = P.encode_request(C.GET, 5, key=b"big")
        s.setblocking(False)
        sent = 0
        stalled_since = None
        batch = request * 64
        pending = memoryview(b"")
        while True:
            if not pending:
                pending = memoryview(batch)
            try:
                n = s.send(pending)
                sent += n
                pending = pending[n:]
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 1.0:
                    break
                time.sleep(0.01)
            assert sent < 50_000_000, "the server kept reading a peer that does not read"
        # Each GET would answer 60 kB: unbounded reading would have cost
        # (sent / len(request)) * 60 kB.
        requests_sent = sent // len(request)
        assert _rss(worker) - rss_before < 64 << 20, (requests_sent, _rss(worker) - rss_before)
        s.setblocking(True)
        s.settimeout(20)
        for _ in range(min(requests_sent, 500)):  # reading resumes the flow, intact
            status, rid, f = P.decode_response(C.GET, read_frame(s))
            assert status == S.OK and len(f["value"]) == 60000


def _rss(pid) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def test_idle_connections_are_closed(srv):
    worker = srv.worker_pids()[0]
    with connect(srv.port) as s:
        call(s, C.PING, data=b"")
        assert not _closed(s, timeout=0.5)  # not before its time
        assert _closed(s, timeout=5.0)


def test_a_partial_frame_holds_no_memory_for_its_claimed_length(srv):
    """A Length of max_frame with 20 bytes behind it, on many connections at once:
    the worker allocates nothing for the bytes that never come."""
    worker = srv.worker_pids()[0]
    rss_before = _rss(worker)
    held = []
    try:
        for _ in range(7):
            s = connect(srv.port)
            s.sendall((64 * 1024).to_bytes(4, "big") + b"\x01" + bytes(15))
            held.append(s)
        time.sleep(0.3)
        assert _rss(worker) - rss_before < 4 << 20
        assert socket_fds(worker) >= 7
    finally:
        for s in held:
            s.close()
