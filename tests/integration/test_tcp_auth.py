"""The auth matrix over real workers: no AUTH, a wrong token, a read-only token writing,
a write-only token reading, another bucket's token, the admin session's bounds."""
import pytest

from bukt import errors
from bukt.client import Client
from bukt.protocol import Command as C, Status as S

from tcp_harness import ADMIN_TOKEN, Server, auth, call, connect, store

WRITE_CALLS = [
    (C.SET, dict(flags=0, ttl_ms=0, if_version=0, key=b"k", value=b"v")),
    (C.DELETE, dict(keys=[b"k"])), (C.INCR, dict(by=1, initial=0, ttl_ms=0, key=b"n")),
    (C.GETDEL, dict(key=b"k")), (C.EXPIRE, dict(ttl_ms=10, key=b"k")),
    (C.PERSIST, dict(key=b"k")), (C.MSET, dict(ttl_ms=0, items=[(b"a", b"1")])),
]
READ_CALLS = [
    (C.GET, dict(key=b"k")), (C.EXISTS, dict(keys=[b"k"])), (C.TTL, dict(key=b"k")),
    (C.MGET, dict(keys=[b"k"])), (C.SCAN, dict(cursor=0, count=10, prefix=b"")),
    (C.VERSION, dict(key=b"k")), (C.STATS, {}),
]
ADMIN_CALLS = [(C.FLUSH, {}), (C.TOKEN_LIST, {}), (C.TOKEN_CREATE, dict(perms=1))]
STORE_ADMIN = [(C.BUCKET_LIST, {}), (C.BUCKET_INFO, dict(name=b"o")),
               (C.BUCKET_DROP, dict(name=b"o")),
               (C.BUCKET_CREATE, dict(schema=0, eviction=0, persist=1, default_ttl_ms=0,
                                      name=b"new"))]


@pytest.fixture(scope="module")
def srv():
    with store() as (_, name):
        with Server(name, workers=2) as server:
            yield server


def _status(sock, command, fields):
    return call(sock, command, 7, **fields)[0]


def test_nothing_but_auth_ping_quit_before_auth(srv):
    with connect(srv.port) as s:
        for command, fields in WRITE_CALLS + READ_CALLS + ADMIN_CALLS + STORE_ADMIN:
            assert _status(s, command, fields) == S.UNAUTHORIZED, command
        assert _status(s, C.PING, dict(data=b"")) == S.OK


@pytest.mark.parametrize("bucket,token", [
    (b"b", b"wrong"), (b"b", b""), (b"b", b"other"),  # another bucket's token
    (b"nosuch", b"rw"), (b"", b"rw"), (b"", b"not-the-admin-token")])
def test_bad_auth_is_refused_and_leaves_the_connection_unauthenticated(srv, bucket, token):
    with connect(srv.port) as s:
        status, rid, f = call(s, C.AUTH, 3, bucket=bucket, token=token)
        assert (status, rid) == (S.UNAUTHORIZED, 3)
        assert _status(s, C.GET, dict(key=b"k")) == S.UNAUTHORIZED


def test_a_failed_reauth_drops_the_earlier_permissions(srv):
    with connect(srv.port) as s:
        auth(s, "rw")
        assert call(s, C.AUTH, bucket=b"b", token=b"wrong")[0] == S.UNAUTHORIZED
        assert _status(s, C.GET, dict(key=b"k")) == S.UNAUTHORIZED


@pytest.mark.parametrize("token,allowed", [
    ("ro", {"read"}), ("wo", {"write"}), ("rw", {"read", "write"}),
    ("all", {"read", "write", "admin"})])
def test_permissions_per_token(srv, token, allowed):
    with connect(srv.port) as s:
        auth(s, token)
        for kind, calls in (("write", WRITE_CALLS), ("read", READ_CALLS),
                            ("admin", ADMIN_CALLS)):
            for command, fields in calls:
                status = _status(s, command, fields)
                if kind in allowed:
                    assert status not in (S.FORBIDDEN, S.UNAUTHORIZED), (token, command)
                else:
                    assert status == S.FORBIDDEN, (token, command)
        for command, fields in STORE_ADMIN:
            if command == C.BUCKET_DROP or command == C.BUCKET_INFO:
                continue  # of another bucket: checked below
            assert _status(s, command, fields) == S.FORBIDDEN, (token, command)
        # Another bucket is off limits whatever the token.
        assert _status(s, C.BUCKET_INFO, dict(name=b"o")) == S.FORBIDDEN
        assert _status(s, C.BUCKET_DROP, dict(name=b"o")) == S.FORBIDDEN


def test_a_token_works_only_on_its_own_bucket(srv):
    c = Client(srv.url("other"))  # bucket "o"
    c.set("k", b"in o")
    with pytest.raises(errors.AuthError):
        Client(srv.url("other", bucket="b")).get("k")
    assert Client(srv.url("rw")).get("k") != b"in o"


def test_the_admin_session_administers_but_has_no_bucket(srv):
    admin = Client(f"bukt://:{ADMIN_TOKEN}@127.0.0.1:{srv.port}")
    assert set(admin.buckets()) >= {"b", "o"}
    with pytest.raises(errors.PermissionDenied):
        admin.get("k")
    with pytest.raises(errors.PermissionDenied):
        admin.set("k", b"v")


def test_client_errors_are_mapped(srv):
    with pytest.raises(errors.PermissionDenied):
        Client(srv.url("ro")).set("k", b"v")
    with pytest.raises(errors.AuthError):
        Client(f"bukt://b:nope@127.0.0.1:{srv.port}").get("k")
    with pytest.raises(errors.PermissionDenied):
        Client(srv.url("wo")).get("k")


@pytest.mark.parametrize("loop,compiled", [("epoll", True), ("asyncio", True),
                                           ("asyncio", False)])
def test_a_revoked_token_ends_an_open_session(loop, compiled):
    """A session authenticated before its token was revoked by another process is
    refused from its next request on, GET and SET (the fast path) as much as the rest,
    on every loop and frame runner; a new AUTH with a token that stands works again.
    A session whose bucket is dropped gets BUCKET_NOT_FOUND, also once a bucket of
    that name exists again."""
    import hashlib
    with store() as (s, name), Server(name, workers=1, loop=loop, compiled=compiled) as srv:
        s.create_bucket("gone")
        s.add_token("gone", hashlib.sha256(b"gone-token").digest(), 7)
        with connect(srv.port) as a, connect(srv.port) as g:
            assert call(g, C.AUTH, bucket=b"gone", token=b"gone-token")[0] == S.OK
            auth(a, "rw")
            assert _status(a, C.SET, WRITE_CALLS[0][1]) == S.OK
            assert _status(a, C.GET, dict(key=b"k")) == S.OK
            rw_id = s.find_token(hashlib.sha256(b"rw").digest())[1]
            assert s.revoke_token("b", rw_id)                   # from this process
            for command, fields in [(C.GET, dict(key=b"k")), WRITE_CALLS[0],
                                    (C.EXISTS, dict(keys=[b"k"]))]:
                status, _, f = call(a, command, 9, **fields)
                assert status == S.UNAUTHORIZED, command
            assert "revoked" in f["message"]
            auth(a, "all")                                      # another token of b
            assert _status(a, C.GET, dict(key=b"k")) == S.OK
            s.drop_bucket("gone")
            assert _status(g, C.GET, dict(key=b"k")) == S.BUCKET_NOT_FOUND
            s.create_bucket("gone")
            assert _status(g, C.SET, WRITE_CALLS[0][1]) == S.BUCKET_NOT_FOUND
        assert s.check() == []
