"""The compiled RESP loop (bukt/tcp/_resp.pyx) against the Python session it stands in
for (bukt/tcp/resp_session.py `run`): the same command streams, fed whole or in pieces,
give the same reply bytes and the same stops; random and mutated streams neither crash
nor hang it, and a claimed length allocates nothing."""
import os
import random
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bukt.feed import Feed, FeedWriter
from bukt.tcp import resp_session as S
from bukt.tokens import digest

_resp = pytest.importorskip("bukt.tcp._resp")

MAX = 4096
RW, RO = b"rw-token", b"ro-token"


def encode(args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


@pytest.fixture
def tokens(store, segname):
    store.create_bucket("b", persist=False)
    store.add_token("b", digest(RW), S.READ | S.WRITE)
    store.add_token("b", digest(RO), S.READ)
    for name, schema in (("j", "json"), ("i", "int")):      # typed values: R.value's
        store.create_bucket(name, schema=schema, persist=False)
        store.add_token(name, digest(name.encode() * 8), S.READ | S.WRITE)
    store.create_bucket("p")            # logged, so the feed carries it: SUBSCRIBE works
    store.add_token("p", digest(b"p" * 8), S.READ | S.WRITE)
    feed = FeedWriter(segname, 64 << 10, 1024)      # SUBSCRIBE needs the change feed
    yield store
    feed.close()
    os.unlink(feed.path)
    Feed._open.clear()


def drive(store, run, data, cuts=None, max_frame=MAX, out_limit=1 << 20):
    """Feeds `data` (in pieces of `cuts` bytes) through `run` as a loop does with one
    connection: (reply bytes, the stops seen, bytes left unparsed). The bucket starts
    empty and the clock is the same for both runs (TTLs are whole seconds)."""
    store.bucket("b").flush()
    session = S.RespSession(store, max_frame=max_frame)
    session.id = 1              # (HELLO says it; a count of sessions otherwise)
    buf = bytearray()
    replies = bytearray()
    stops = []
    at = 0
    for n in (cuts or []) + [len(data)]:
        buf += data[at:at + n]
        at += n
        pos = 0
        while pos < len(buf):
            out = []
            pos, why = run(buf, len(buf), pos, session, max_frame, out, out_limit)
            for r in out:
                assert type(r) is bytes
                replies += r
            stops.append(why)
            if why in (S.STOP_FATAL, S.STOP_QUIT):
                return bytes(replies), stops, b""
            if why == S.STOP_PARTIAL:
                break
        del buf[:pos]
    return bytes(replies), stops, bytes(buf)


def both(store, data, cuts=None, **kw):
    py = drive(store, S.run, data, cuts, **kw)
    fast = drive(store, _resp.run, data, cuts, **kw)
    assert fast[0] == py[0]
    assert fast[2] == py[2]
    # the compiled loop gathers replies, so it stops for STOP_FULL at other places;
    # the stops that end or hold a connection are the same
    assert [w for w in fast[1] if w != S.STOP_FULL] == [w for w in py[1] if w != S.STOP_FULL]
    return py[0]


AUTH = encode([b"AUTH", b"b", RW])
SCRIPT = [
    [b"PING"], [b"ping", b"hi"], [b"PING", b"a", b"b"], [b"ECHO", b"x\r\ny"], [b"ECHO"],
    [b"GET", b"k"], [b"SET", b"k", b"v"], [b"get", b"k"], [b"GET", b"k", b"x"],
    [b"SET", b"k2", b"v2", b"EX", b"100"], [b"SET", b"k3", b"v3", b"px", b"100000"],
    [b"TTL", b"k2"], [b"SET", b"k", b"v", b"EX", b"0"], [b"SET", b"k", b"v", b"EX", b"-1"],
    [b"SET", b"k", b"v", b"EX", b"+5"], [b"SET", b"k", b"v", b"EX", b"1_0"],
    [b"SET", b"k", b"v", b"EX", b"99999999999999999999999"], [b"SET", b"k", b"v", b"NX"],
    [b"SET", b"k", b"v", b"XX", b"EX", b"5"], [b"SET", b"k", b"v", b"EX"],
    [b"SET", b"k", b"v", b"KEEPTTL"], [b"SET", b""], [b"SET", b"", b"empty key"],
    [b"SETEX", b"s", b"100", b"v"], [b"SETEX", b"s", b"0", b"v"], [b"setex", b"s", b"x", b"v"],
    [b"INCR", b"n"], [b"INCR", b"n"], [b"DECR", b"n"], [b"INCRBY", b"n", b"41"],
    [b"DECRBY", b"n", b"-3"], [b"INCRBY", b"n", b"007"], [b"INCRBY", b"n", b"1_0"],
    [b"INCRBY", b"n", b" 1"], [b"INCRBY", b"n", b""], [b"INCRBY", b"n", b"-"],
    [b"INCRBY", b"n", b"9223372036854775807"], [b"INCRBY", b"big", b"9223372036854775807"],
    [b"INCR", b"big"], [b"DECRBY", b"m", b"-9223372036854775808"], [b"INCR", b"k"],
    [b"INCR"], [b"MGET", b"k", b"nope", b"n", b"k2"], [b"MGET"],
    [b"MSET", b"a", b"1", b"b", b"2", b"a", b"3"], [b"MSET", b"a"], [b"MSET", b"a", b"1", b"b"],
    [b"MGET", b"a", b"b"], [b"EXISTS", b"a", b"a", b"zz"], [b"EXISTS"],
    [b"DEL", b"a", b"zz", b"a"], [b"UNLINK", b"b"], [b"DEL"], [b"exists", b"a", b"b"],
    [b"GET", b"x" * 300], [b"SET", b"x" * 300, b"v"],      # longer than max_key
    [b"STRLEN", b"k"], [b"NOSUCH", b"a"], [b"HELLO", b"3"], [b"GET", b"nope"],
    [b"MGET", b"nope", b"k"], [b"SET", b"k", b"v", b"NX"], [b"HELLO", b"2"],
    [b"MULTI"], [b"SET", b"t", b"1"], [b"INCR", b"t"], [b"GET", b"t"], [b"EXEC"],
    [b"GET", b"t"], [b"MULTI"], [b"GET", b"t"], [b"DISCARD"],
    [b"AUTH", b"p", b"p" * 8],           # subscribed: reads only (nothing drains the ring)
    [b"SUBSCRIBE", b"__keyspace@p__:k"], [b"GET", b"k"], [b"PING"], [b"EXISTS", b"k"],
    [b"UNSUBSCRIBE"], [b"GET", b"k"], [b"HELLO", b"3"], [b"SUBSCRIBE", b"c"], [b"GET", b"k"],
    [b"PING"], [b"MGET", b"k"], [b"UNSUBSCRIBE"], [b"HELLO", b"2"], [b"AUTH", b"b", RW],
    [b"AUTH", b"b", RO], [b"GET", b"k"], [b"SET", b"k", b"w"], [b"INCR", b"n"],
    [b"MSET", b"q", b"1"], [b"DEL", b"k"], [b"MGET", b"k"], [b"EXISTS", b"k"],
    [b"AUTH", b"b", b"wrong"], [b"GET", b"k"], [b"PING"], [b"ECHO", b"e"],
    [b"AUTH", b"b", RW], [b"SET", b"v" * 2000, b"x"], [b"GET", b"k"],
    [b"AUTH", b"j", b"j" * 8], [b"SET", b"doc", b'{"a": [1, 2.5, "x"]}'], [b"GET", b"doc"],
    [b"MGET", b"doc", b"nope"], [b"SET", b"bad", b"{not json"], [b"INCR", b"doc"],
    [b"AUTH", b"i", b"i" * 8], [b"SET", b"n", b"5"], [b"INCR", b"n"], [b"GET", b"n"],
    [b"SET", b"s", b"abc"], [b"MGET", b"n", b"s"], [b"AUTH", b"b", RW],
]


def script_bytes():
    return AUTH + b"".join(encode(c) for c in SCRIPT) + b"PING\r\nGET k\r\n\r\n" \
        + encode([b"GET", b"k"])


def test_script_whole_and_in_pieces(tokens):
    data = script_bytes()
    whole = both(tokens, data)
    assert whole.startswith(b"+OK\r\n+PONG\r\n$2\r\nhi\r\n-ERR wrong number")
    assert b"-NOPERM" in whole and b"-NOAUTH" in whole and b"-ERR syntax" in whole
    assert b"$9\r\nsubscribe\r\n" in whole and b"-ERR Can't execute 'get'" in whole
    rng = random.Random(5)
    for _ in range(5):
        cuts = [rng.randrange(1, 40) for _ in range(len(data) // 10)]
        assert both(tokens, data, cuts) == whole
    assert both(tokens, data, [1] * len(data)) == whole


def test_replies_gathered_up_to_out_limit(tokens):
    """Many commands in one buffer: the compiled loop stops at out_limit as the Python
    one does, and the rest follows in the next calls."""
    data = AUTH + b"".join(encode([b"SET", b"k%d" % i, b"v" * 50]) +
                           encode([b"GET", b"k%d" % i]) for i in range(300))
    assert both(tokens, data, out_limit=1000).count(b"+OK") == 301


def test_pipelined_windows_answer_alike(tokens):
    """A long pipeline of one-key commands, which the compiled loop reads ahead of in
    windows to prefetch their keys (PREFETCH in bukt/tcp/_resp.pyx), with commands the
    session runs, protocol errors and a partial command between them: the same replies
    as the session, whole and cut anywhere."""
    rng = random.Random(7)
    cmds = []
    for i in range(200):
        k = b"k%d" % rng.randrange(40)
        cmds.append(rng.choice([[b"GET", k], [b"SET", k, b"v%d" % i], [b"INCR", b"n"],
                                [b"SETEX", k, b"100", b"x"], [b"DECRBY", b"n", b"2"],
                                [b"GET", k], [b"GET", k], [b"STRLEN", k], [b"PING"],
                                [b"MGET", k, b"k1"], [b"TTL", k], [b"GET"]]))
    data = AUTH + b"".join(encode(c) for c in cmds)
    whole = both(tokens, data)
    assert whole.count(b"+OK") > 20
    assert both(tokens, data + b"*2\r\n$3\r\nGET\r\n$2\r\nk") == whole
    for _ in range(3):
        cuts = [rng.randrange(1, 200) for _ in range(len(data) // 50)]
        assert both(tokens, data, cuts) == whole
    bad = data[:len(data) // 2] + b"*1\r\n:1\r\n" + data[len(data) // 2:]
    both(tokens, bad)
    both(tokens, data, out_limit=300)


def test_protocol_errors_and_limits(tokens):
    """What the parser refuses (bukt/tcp/resp.py) is refused with the same words, at the
    same place; a bulk or a command larger than max_frame among them."""
    for bad in (b"*-1\r\n", b"*abc\r\n", b"*1000000\r\n", b"*1\r\n$-5\r\n",
                b"*1\r\n$5000\r\n", b"*1\r\n:1\r\n", b"*1\r\n$1\r\nabc\r\n",
                b"*" + b"1" * 100, b"*2\r\n$3\r\nGET\r\n$" + b"9" * 70,
                b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4090\r\n" + b"x" * 4090 + b"\r\n",
                b"*0\r\n", b"*1\r\n$0\r\n\r\n"):
        got = both(tokens, AUTH + encode([b"GET", b"k"]) + bad + encode([b"PING"]))
        assert got.startswith(b"+OK\r\n$-1\r\n"), bad


def test_a_claimed_length_allocates_nothing(tokens):
    """A bulk that claims nearly max_frame and sends 10 bytes: incomplete, and nothing
    allocated for it however often the loop looks."""
    session = S.RespSession(tokens, max_frame=64 << 20)
    out = []
    _resp.run(bytearray(AUTH), len(AUTH), 0, session, 64 << 20, out, 1 << 20)
    assert out == [b"+OK\r\n"]
    buf = bytearray(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$60000000\r\n" + b"x" * 10)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):
            assert _resp.run(buf, len(buf), 0, session, 64 << 20, out, 1 << 20) == (
                0, S.STOP_PARTIAL)
        grew = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert grew < 64 << 10 and out == [b"+OK\r\n"]


def test_fast_path_is_taken(tokens):
    """The compiled loop answers the hot commands itself: a session whose execute would
    fail is never asked."""
    session = S.RespSession(tokens, max_frame=MAX)
    out = []
    _resp.run(bytearray(AUTH), len(AUTH), 0, session, MAX, out, 1 << 20)

    def refuse(args):
        raise AssertionError(f"the Python session ran {args}")
    session.execute = refuse
    data = bytearray(b"".join(encode(c) for c in (
        [b"SET", b"k", b"v"], [b"GET", b"k"], [b"INCR", b"n"], [b"MSET", b"a", b"1"],
        [b"MGET", b"a", b"k"], [b"DEL", b"a"], [b"EXISTS", b"k"], [b"PING"],
        [b"SETEX", b"s", b"5", b"v"], [b"SET", b"e", b"v", b"PX", b"5000"])))
    out = []
    assert _resp.run(data, len(data), 0, session, MAX, out, 1 << 20) == (
        len(data), S.STOP_PARTIAL)
    assert b"".join(out) == (b"+OK\r\n$1\r\nv\r\n:1\r\n+OK\r\n*2\r\n$1\r\n1\r\n$1\r\nv\r\n"
                             b":1\r\n:1\r\n+PONG\r\n+OK\r\n+OK\r\n")


def test_the_fast_path_resumes_once_the_write_it_waited_behind_is_flushed(tokens):
    """Under `fsync: always` the epoll loop's hook (RingPositions) holds a write's reply
    until the flushed position passes the write's record, and every reply behind it
    waits too (ORDER). Once the writer has flushed past it, the next commands are the
    compiled loop's again, not handed one by one to the Python session."""
    from bukt.tcp.frames import Deferred
    from bukt.writewait.durability import RingPositions
    store = tokens
    store.writer_publish(sync_always=True)
    try:
        session = S.RespSession(store, max_frame=MAX, durable=RingPositions(store))
        login = encode([b"AUTH", b"p", b"p" * 8])
        out = []
        _resp.run(bytearray(login), len(login), 0, session, MAX, out, 1 << 20)
        assert out == [b"+OK\r\n"]
        for key in (b"k1", b"k2", b"k3"):
            data = bytearray(encode([b"SET", key, b"v"]))
            out = []
            assert _resp.run(data, len(data), 0, session, MAX, out, 1 << 20) == (
                len(data), S.STOP_DEFERRED)
            assert len(out) == 1 and type(out[0]) is Deferred
            assert (out[0].response, out[0].wait) == (b"+OK\r\n", store.last_pos)
            if key == b"k1":
                # a GET behind the waiting write waits for the same position (the
                # session answers it)
                data = bytearray(encode([b"GET", key]))
                out = []
                assert _resp.run(data, len(data), 0, session, MAX, out, 1 << 20) == (
                    len(data), S.STOP_DEFERRED)
                assert (out[0].response, out[0].wait) == (b"$1\r\nv\r\n",
                                                          store.last_pos)
            store.ring_flushed(store.ring_position()[1])    # the writer's fsync
            if key == b"k1":
                def refuse(args):
                    raise AssertionError(f"the Python session ran {args}")
                session.execute = refuse
        data = bytearray(encode([b"GET", b"k3"]))
        out = []
        assert _resp.run(data, len(data), 0, session, MAX, out, 1 << 20) == (
            len(data), S.STOP_PARTIAL)
        assert out == [b"$1\r\nv\r\n"]
    finally:
        store.writer_publish(sync_always=False)


WORDS = [b"GET", b"SET", b"SETEX", b"INCR", b"DECR", b"INCRBY", b"DECRBY", b"MGET", b"MSET",
         b"DEL", b"EXISTS", b"PING", b"ECHO", b"EX", b"PX", b"get", b"set", b"k", b"n",
         b"1", b"-1", b"0", b"100", b"x", b"", b"MULTI", b"EXEC", b"HELLO", b"3", b"2"]
arg = st.one_of(st.sampled_from(WORDS), st.binary(max_size=12))
command = st.lists(arg, min_size=1, max_size=6)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(command, max_size=12), st.data())
def test_random_commands_answer_alike(tokens, commands, data):
    raw = bytearray(AUTH + b"".join(encode(c) for c in commands))
    for _ in range(data.draw(st.integers(0, 3))):
        i = data.draw(st.integers(len(AUTH), len(raw)))
        op = data.draw(st.sampled_from(["flip", "drop", "dup", "digit"]))
        if op == "flip" and i < len(raw):
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "drop" and i < len(raw):
            del raw[i]
        elif op == "dup":
            raw[i:i] = raw[i:i + 8]
        else:
            raw[i:i] = b"9999999999"
    cuts = data.draw(st.lists(st.integers(1, 16), max_size=32))
    both(tokens, bytes(raw), cuts)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_random_bytes(tokens, data):
    both(tokens, AUTH + data)
