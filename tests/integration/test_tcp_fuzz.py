"""Fuzzing the frame parser and dispatch with hypothesis: no crash, no hang, no memory
allocated on a claimed length. In process (a Connection over a fake transport, a real
segment) for speed and precise invariants; then random streams at a real worker, which
must stay up."""
import asyncio
import contextlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bukt import errors
from bukt.tcp.admission import Admission
from bukt import protocol as P
from bukt.protocol import Command as C, Status as S
from bukt.tcp import connection as connection_mod
from bukt.tcp.connection import Connection
from bukt.tcp.settings import TcpSettings

from tcp_harness import Server, auth, call, connect, read_frame, store

MAX_FRAME = 4096


class FakeTransport:
    def __init__(self):
        self.out = bytearray()
        self.reading = True
        self.closed = False
        self.eof = False

    def write(self, data):
        assert not self.eof, "write after write_eof"
        self.out += data

    def write_eof(self):
        self.eof = True

    def can_write_eof(self):
        return True

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True

    def close(self):
        self.closed = True

    abort = close

    def get_extra_info(self, name):
        return None

    def set_write_buffer_limits(self, high=None, low=None):
        pass


# The frame loop in Python (the reference) and compiled (bukt/tcp/_wire.pyx) when built.
IMPLS = [pytest.param(False, id="python"),
         pytest.param(True, id="compiled", marks=pytest.mark.skipif(
             connection_mod._wire is None, reason="bukt.tcp._wire is not built"))]


class FakeWorker:
    def __init__(self, store, compiled=False, **overrides):
        self.settings = TcpSettings.from_config(None, max_frame=MAX_FRAME, max_inflight=8,
                                                compiled=compiled, **overrides)
        self.store = store
        self.admin_hash = None
        self.durable = None
        self.ring_wait = None  # the store waits for ring room itself (bukt/tcp/worker.py)
        self.loop = asyncio.new_event_loop()
        self.connections = set()
        self.stopping = False
        self.admission = Admission(self.settings.max_connections)
        self.guard = None


@pytest.fixture(scope="module")
def segment():
    with store() as (s, _):
        yield s


def _open(worker, token=b"rw"):
    conn = Connection(worker)
    t = FakeTransport()
    conn.connection_made(t)
    conn.data_received(P.encode_request(C.AUTH, 1, bucket=b"b", token=token))
    assert P.decode_response(C.AUTH, bytes(t.out))[0] == S.OK
    t.out.clear()
    return conn, t


def _frames(data: bytes):
    """Splits server output into frames; each must be well formed."""
    pos, out = 0, []
    while pos < len(data):
        length = struct.unpack_from(">I", data, pos)[0]
        assert P.HEADER_SIZE <= length and pos + length <= len(data)
        out.append(data[pos:pos + length])
        pos += length
    return out


# A frame that is often almost right: a real command, a Length that may lie.
frame_like = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda cmd, rid, payload, lie: struct.pack(
        ">IBQ", max(0, P.HEADER_SIZE + len(payload) + lie) & 0xFFFFFFFF, cmd, rid) + payload,
        st.sampled_from([int(c) for c in C] + [0, 0x7F, 0xFF]),
        st.integers(0, 2**64 - 1), st.binary(max_size=80),
        st.sampled_from([0, 0, 0, 0, 1, -1, -14, 5000, 2**32])),
    st.builds(lambda key: P.encode_request(C.GET, 9, key=key), st.binary(max_size=40)),
    st.builds(lambda k, v, flags: P.encode_request(
        C.SET, 10, flags=flags, ttl_ms=0, if_version=0, key=k, value=v),
        st.binary(max_size=30), st.binary(max_size=100), st.integers(0, 255)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(parts=st.lists(frame_like, max_size=12), cuts=st.lists(st.integers(1, 50), max_size=8))
@pytest.mark.parametrize("compiled", IMPLS)
def test_random_streams_in_process(segment, compiled, parts, cuts):
    worker = FakeWorker(segment, compiled)
    try:
        conn, t = _open(worker)
        stream = b"".join(parts)
        pos = 0
        for cut in cuts + [len(stream)]:
            chunk = stream[pos:pos + cut]
            pos += len(chunk)
            if chunk:
                conn.data_received(chunk)
            # Never more than one partial frame beyond a chunk: nothing allocated on a
            # claimed length.
            assert len(conn.buf) <= MAX_FRAME + 50
            if conn.finishing:
                break
        for f in _frames(bytes(t.out)):
            assert f[4] in set(S), f  # every response has a known status
    finally:
        worker.loop.close()


@settings(max_examples=300, deadline=None)
@given(command=st.sampled_from(list(C)), payload=st.binary(max_size=120))
def test_decoding_random_payloads_raises_only_protocol_errors(command, payload):
    with contextlib.suppress(errors.ProtocolError):
        P.decode_payload(P.REQUEST[command], payload)
    with contextlib.suppress(errors.ProtocolError):
        P.decode_response(command, P.frame(0, 1, payload))


@settings(max_examples=300, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture])
@given(parts=st.lists(frame_like, min_size=1, max_size=10))
def test_compiled_and_python_answer_alike(segment, parts):
    """The same stream through both frame loops gives the same bytes back."""
    if connection_mod._wire is None:
        pytest.skip("bukt.tcp._wire is not built")
    stream = b"".join(parts)
    outputs = []
    for compiled in (False, True):
        worker = FakeWorker(segment, compiled)
        try:
            conn, t = _open(worker)
            segment.bucket("b").flush()
            conn.data_received(stream)
            # Versions differ between the runs (one counter per segment): mask them.
            outputs.append([(f[4], f[5:13]) for f in _frames(bytes(t.out))])
            outputs[-1].append((conn.finishing, len(conn.buf)))
        finally:
            worker.loop.close()
    assert outputs[0] == outputs[1]


def test_a_huge_claimed_count_is_refused_without_allocating():
    payload = b"\xff\xff\xff\xff" + b"\x00" * 8
    with pytest.raises(errors.ProtocolError, match="cannot fit"):
        P.decode_payload(P.REQUEST[C.MGET], payload)


@pytest.mark.parametrize("compiled", IMPLS)
def test_max_inflight_pauses_reading_until_answers_go_out(segment, compiled):
    """Responses that wait (the durability hook): at max_inflight the connection stops
    reading and handles nothing more; as answers go out it resumes."""
    worker = FakeWorker(segment, compiled)
    loop = worker.loop
    waits = []

    def durable(session):
        fut = loop.create_future()
        waits.append(fut)
        return fut
    worker.durable = durable

    async def scenario():
        conn, t = _open(worker)
        n = 20
        conn.data_received(b"".join(P.encode_request(
            C.SET, 100 + i, flags=0, ttl_ms=0, if_version=0, key=b"k%d" % i, value=b"v")
            for i in range(n)))
        await asyncio.sleep(0)
        assert len(waits) == 8 and not t.reading and conn.stalled and not t.out
        for fut in waits[:3]:
            fut.set_result(None)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(_frames(bytes(t.out))) == 3 and len(waits) == 11
        for _ in range(5):
            for fut in waits:
                if not fut.done():
                    fut.set_result(None)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        frames = _frames(bytes(t.out))
        assert sorted(struct.unpack_from(">Q", f, 5)[0] for f in frames) == \
            list(range(100, 100 + n))
        assert t.reading
        # A failed durability wait is reported on that request alone.
        conn.data_received(P.encode_request(C.SET, 999, flags=0, ttl_ms=0, if_version=0,
                                            key=b"x", value=b"v"))
        await asyncio.sleep(0)
        waits[-1].set_exception(errors.WriterDown("writer is not flushing"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        last = _frames(bytes(t.out))[-1]
        assert P.decode_response(C.SET, last)[:2] == (S.WRITER_DOWN, 999)

    loop.run_until_complete(scenario())
    loop.close()


@pytest.mark.slow
def test_random_streams_at_a_real_worker():
    """Random streams at a live worker; afterwards it still serves, and no worker died."""
    import random
    rng = random.Random(4)
    with store() as (_, name), Server(name, workers=1, max_frame="8KiB") as srv:
        pids = srv.worker_pids()
        for i in range(60):
            with connect(srv.port, timeout=5) as s:
                if i % 2:
                    auth(s, "rw")
                stream = _random_stream(rng)
                with contextlib.suppress(OSError):
                    s.sendall(stream)
                    s.shutdown(1)
                    while s.recv(65536):
                        pass
        with connect(srv.port) as s:
            assert call(s, C.PING, data=b"ok")[0] == S.OK
        assert srv.worker_pids() == pids


def _random_stream(rng):
    out = bytearray()
    for _ in range(rng.randint(1, 20)):
        kind = rng.random()
        if kind < 0.3:
            out += rng.randbytes(rng.randint(1, 40))
        else:
            cmd = rng.choice([int(c) for c in C] + [0x7F])
            payload = rng.randbytes(rng.randint(0, 60))
            length = P.HEADER_SIZE + len(payload) + rng.choice([0, 0, 0, 1, -1, 3])
            out += struct.pack(">IBQ", max(0, length), cmd, rng.getrandbits(64)) + payload
    return bytes(out)
