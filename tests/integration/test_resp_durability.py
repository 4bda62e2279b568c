"""`fsync: always` over RESP: a write is answered only once the writer has flushed past
its record, and since RESP replies carry no request ids, the replies behind it on the
same connection wait too (in order); other connections do not. The test plays the
writer: it publishes the policy and the flushed position in the segment's header."""
import os
import signal
import socket
import time

import pytest

from tcp_harness import Server, store


def resp(*args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def read_until(sock, want):
    got = b""
    while len(got) < len(want):
        chunk = sock.recv(4096)
        assert chunk, got
        got += chunk
    return got


@pytest.mark.parametrize("loop", ["epoll", "asyncio"])
def test_a_durable_write_holds_the_replies_behind_it(loop):
    with store() as (s, name), Server(name, workers=1, loop=loop) as srv:
        s.writer_publish(sync_always=True)
        s.ring_flushed(s.ring_position()[1])  # everything so far is "on disk"
        time.sleep(0.3)  # the worker rereads the policy every 0.1 s
        a = socket.create_connection(("127.0.0.1", srv.resp_port), timeout=5)
        b = socket.create_connection(("127.0.0.1", srv.resp_port), timeout=5)
        try:
            for c in (a, b):
                c.sendall(resp(b"AUTH", b"b", b"rw"))
                assert read_until(c, b"+OK\r\n") == b"+OK\r\n"
            a.sendall(resp(b"SET", b"dk", b"v") + resp(b"PING"))
            while s.bucket("b").version(b"dk") is None:  # a's SET has been applied
                time.sleep(0.01)
            b.sendall(resp(b"GET", b"dk"))   # in memory already: b does not wait
            assert read_until(b, b"$1\r\nv\r\n") == b"$1\r\nv\r\n"
            a.settimeout(0.3)
            with pytest.raises(socket.timeout):  # neither the SET nor the PING behind it
                a.recv(4096)
            s.ring_flushed(s.ring_position()[1])  # the writer's fsync completes
            a.settimeout(5)
            assert read_until(a, b"+OK\r\n+PONG\r\n") == b"+OK\r\n+PONG\r\n"
            # Many writes pipelined on one connection: released by one flush, in order.
            a.sendall(b"".join(resp(b"INCR", b"n") for _ in range(50)))
            time.sleep(0.2)
            s.ring_flushed(s.ring_position()[1])
            want = b"".join(b":%d\r\n" % i for i in range(1, 51))
            assert read_until(a, want) == want
        finally:
            a.close()
            b.close()
        s.writer_publish(sync_always=False)


@pytest.mark.parametrize("loop", ["epoll", "asyncio"])
def test_the_writer_wakes_the_worker_and_a_forged_wake_releases_nothing(loop):
    """The worker waits by its flush waker (cext/flushwake.pxi): armed with the write's
    position in its process row, woken by the writer's one datagram (here the test plays
    the writer: ring_flushed sends it; none for a flush short of the record). Datagrams
    forged to the same abstract name release nothing: the reply comes only once the
    flushed position passes the record."""
    from bukt._core import wake_counts
    with store() as (s, name), Server(name, workers=1, loop=loop) as srv:
        s.writer_publish(sync_always=True)
        s.ring_flushed(s.ring_position()[1])
        time.sleep(0.3)  # the worker rereads the policy every 0.1 s
        a = socket.create_connection(("127.0.0.1", srv.resp_port), timeout=5)
        forger = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            a.sendall(resp(b"AUTH", b"b", b"rw"))
            assert read_until(a, b"+OK\r\n") == b"+OK\r\n"
            for round_ in range(3):
                key = b"fk%d" % round_
                a.sendall(resp(b"SET", key, b"v"))
                while s.bucket("b").version(key) is None:   # applied, waiting
                    time.sleep(0.01)
                end = s.ring_position()[1]
                armed = []
                while not armed:
                    armed = [r for r in s.wake_slots() if r["armed"]]
                    time.sleep(0.01)
                assert [r["pos"] for r in armed] == [end]
                for _ in range(5):
                    forger.sendto(b"f", armed[0]["address"])
                a.settimeout(0.3)
                with pytest.raises(socket.timeout):
                    a.recv(4096)
                sent = wake_counts()
                s.ring_flushed(end - 8)                     # short of the record
                with pytest.raises(socket.timeout):
                    a.recv(4096)
                assert wake_counts() == sent
                s.ring_flushed(end)                         # the writer's fsync is done
                # one datagram to the worker, or none if its own poll saw the flush
                # first and disarmed its row (flushwake.pxi, THE ORDER)
                assert wake_counts() in (sent, sent + 1)
                a.settimeout(5)
                assert read_until(a, b"+OK\r\n") == b"+OK\r\n"
        finally:
            a.close()
            forger.close()
        s.writer_publish(sync_always=False)


def stopped(pid):
    """Whether process `pid` is stopped (SIGSTOP took effect): its /proc state is T."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.parametrize("loop", ["epoll", "asyncio"])
def test_a_reply_the_flush_released_goes_before_the_next_commands_reply(loop):
    """The flush that covers a waiting write and the next command on the same connection
    reach the epoll worker in one round (here the worker is stopped while both arrive):
    the write's reply goes first. The session sees the write flushed and answers the
    GET at once, so the loop must hand out what the flush released before it runs the
    connection's new commands."""
    with store() as (s, name), Server(name, workers=1, loop=loop) as srv:
        s.writer_publish(sync_always=True)
        s.ring_flushed(s.ring_position()[1])
        time.sleep(0.3)  # the worker rereads the policy every 0.1 s
        a = socket.create_connection(("127.0.0.1", srv.resp_port), timeout=5)
        try:
            a.sendall(resp(b"AUTH", b"b", b"rw"))
            assert read_until(a, b"+OK\r\n") == b"+OK\r\n"
            for round_ in range(3):
                key = b"ok%d" % round_
                a.sendall(resp(b"SET", key, b"v%d" % round_))
                while not [r for r in s.wake_slots() if r["armed"]]:  # applied, waiting
                    time.sleep(0.01)
                [pid] = srv.worker_pids()
                os.kill(pid, signal.SIGSTOP)
                try:
                    while not stopped(pid):
                        time.sleep(0.001)
                    s.ring_flushed(s.ring_position()[1])  # its datagram waits for the worker
                    a.sendall(resp(b"GET", key))          # and so does the GET
                    time.sleep(0.05)
                finally:
                    os.kill(pid, signal.SIGCONT)
                want = b"+OK\r\n$2\r\nv%d\r\n" % round_
                assert read_until(a, want) == want
        finally:
            a.close()
        s.writer_publish(sync_always=False)
