"""The RESP parser (bukt/tcp/resp.py) on random and mutated input: every outcome is a
command, "incomplete", or RespError; never another exception, never a hang, never a
buffer allocated on a claimed length."""
import random
import time
import tracemalloc

import pytest
from hypothesis import given, settings, strategies as st

from bukt.tcp import resp as R

MAX = 1 << 20


def encode(args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def parse_all(data, max_bulk=MAX, chunks=None):
    """Feeds `data` as a connection would (in chunks), returns (commands, error or None,
    leftover bytes)."""
    p = R.Parser(max_bulk)
    buf = bytearray()
    out = []
    cuts = chunks or [len(data)]
    at = 0
    for n in cuts:
        buf += data[at:at + n]
        at += n
        pos = 0
        while True:
            try:
                got = p.parse(buf, pos, len(buf))
            except R.RespError as exc:
                return out, exc, bytes(buf[pos:])
            if got is None:
                break
            args, pos = got
            if args:
                out.append(args)
        del buf[:pos]
    return out, None, bytes(buf)


def test_arrays_and_inline():
    cmds, err, rest = parse_all(encode([b"SET", b"k", b"v\r\n"]) + b"PING\r\n"
                                + b"  set  a  'b c'  \"x\\ny\"\r\n\r\n" + b"GET k\n")
    assert err is None and rest == b""
    assert cmds == [[b"SET", b"k", b"v\r\n"], [b"PING"], [b"set", b"a", b"b c", b"x\ny"],
                    [b"GET", b"k"]]


@pytest.mark.parametrize("data, text", [
    (b"*-1\r\n", "invalid multibulk length"),
    (b"*abc\r\n", "invalid multibulk length"),
    (b"*99999999999999999999\r\n", "invalid multibulk length"),
    (b"*1000000\r\n", "invalid multibulk length"),            # more than could fit
    (b"*1\r\n$-5\r\n", "invalid bulk length"),
    (b"*1\r\n$2000000\r\n", "invalid bulk length"),           # past max_bulk
    (b"*1\r\n*1\r\n$1\r\na\r\n", "expected '$', got '*'"),   # nesting
    (b"*1\r\n:1\r\n", "expected '$', got ':'"),
    (b"*1\r\n$1\r\nabc\r\n", "bulk not terminated by CRLF"),  # missing CRLF
    (b"*" + b"1" * 100, "too big multibulk count line"),
    (b"x" * (R.INLINE_MAX + 1), "too big inline request"),
    (b"set a \"b\r\n", "unbalanced quotes"),
])
def test_refused(data, text):
    cmds, err, _ = parse_all(data)
    assert cmds == [] and err is not None and text in str(err)


def test_claimed_length_allocates_nothing():
    """A bulk that claims nearly max_bulk and sends 10 bytes costs nothing; parsing it
    again as bytes trickle in does not restart from the beginning every time."""
    p = R.Parser(64 << 20)
    head = b"*2\r\n$3\r\nSET\r\n$60000000\r\n"
    buf = bytearray(head + b"x" * 10)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):
            assert p.parse(buf, 0, len(buf)) is None
        grew = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert grew < 64 << 10
    assert p.need == len(head) + 60_000_000 + 2


def test_byte_by_byte_equals_whole():
    data = b"".join(encode([b"MSET"] + [b"k%d" % i, b"v" * i] * 1) for i in range(40))
    data += b"PING\r\nECHO hi\r\n"
    whole = parse_all(data)
    one = parse_all(data, chunks=[1] * len(data))
    assert whole == one and whole[1] is None and len(whole[0]) == 42


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(data):
    cmds, err, rest = parse_all(data, max_bulk=4096)
    assert err is None or isinstance(err, R.RespError)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(st.binary(max_size=20), min_size=1, max_size=5), max_size=5),
       st.data())
def test_mutated_commands(commands, data):
    raw = bytearray(b"".join(encode(c) for c in commands))
    for _ in range(data.draw(st.integers(0, 4))):
        if not raw:
            break
        i = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "drop", "dup", "digit"]))
        if op == "flip":
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "drop":
            del raw[i]
        elif op == "dup":
            raw[i:i] = raw[i:i + 8]
        else:
            raw[i:i] = b"9999999999"
    cuts = data.draw(st.lists(st.integers(1, 16), max_size=64))
    t = time.monotonic()
    cmds, err, rest = parse_all(bytes(raw), max_bulk=1 << 16, chunks=cuts + [len(raw)])
    assert time.monotonic() - t < 5
    assert err is None or isinstance(err, R.RespError)
    if err is None and not rest and not cuts:
        pass


def test_unmutated_round_trip():
    rng = random.Random(7)
    commands = [[bytes(rng.randrange(256) for _ in range(rng.randrange(30)))
                 for _ in range(rng.randrange(1, 6))] for _ in range(200)]
    cmds, err, rest = parse_all(b"".join(encode(c) for c in commands),
                                chunks=[rng.randrange(1, 50) for _ in range(2000)])
    assert err is None and rest == b"" and cmds == commands


def test_encoders():
    assert R.bulk(b"ab") == b"$2\r\nab\r\n" and R.bulk(None) == b"$-1\r\n"
    assert R.bulk(12) == b"$2\r\n12\r\n"
    assert R.null(3) == b"_\r\n" and R.null_array(2) == b"*-1\r\n"
    assert R.mapping([(R.bulk("a"), R.integer(1))], 3) == b"%1\r\n$1\r\na\r\n:1\r\n"
    assert R.mapping([(R.bulk("a"), R.integer(1))], 2) == b"*2\r\n$1\r\na\r\n:1\r\n"
    assert R.error("ERR a\r\nb") == b"-ERR a  b\r\n"
    assert R.double(1.5, 3) == b",1.5\r\n" and R.double(1.5, 2) == b"$3\r\n1.5\r\n"
