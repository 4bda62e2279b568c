"""The HTTP app through falcon's TestClient, over a real segment.

Covers every route of docs/http.md, the auth matrix, conditional and range requests, the
problem documents, bounded bodies, rate limiting, metrics and the access log. The
real server (gunicorn, two workers) is tests/integration/test_http_server.py.
"""

import asyncio
import hashlib
import json
import os
import stat
import time

import falcon.testing
import pytest

import bukt
from bukt import objects
from bukt._core import writer_claim
from bukt.errors import WriterDown
from bukt.http import create_app
from bukt.http.auth import resolve_admin_token
from bukt.writewait.flushwait import POLICY_REFRESH
from bukt.http.settings import HttpSettings
from bukt.http.shared import SharedArea
from names import unique_name

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
API = "/api/v1"


@pytest.fixture
def store():
    s = bukt.create(unique_name(), size="16MiB")
    writer_claim(s)   # as a writer does: changes go to the ring
    yield s
    s.unlink()
    s.close()


def asgi_client(app):
    """falcon's TestClient over an ASGI app. The shim yields to the loop once: the
    TestClient's conductor loses its lifespan-shutdown notification (and hangs) when a
    request completes without ever suspending, as the fast path's answers do."""
    async def shim(scope, receive, send):
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await app(scope, receive, send)

    return falcon.testing.TestClient(shim)


def make_client(store, **config):
    config = {"auth.admin_token": ADMIN_TOKEN, "http.access_log": None, **config}
    return asgi_client(create_app(store, config))


@pytest.fixture
def client(store):
    return make_client(store)


def admin():
    return {"X-Auth-Token": ADMIN_TOKEN}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def new_bucket(client, name="b", **settings):
    r = client.simulate_post(f"{API}/buckets", json={"name": name, **settings},
                             headers=admin())
    assert r.status_code == 201, r.text
    return r.json["token"]


def new_token(client, bucket, perms):
    r = client.simulate_post(f"{API}/buckets/{bucket}/tokens",
                             json={"permissions": perms}, headers=admin())
    assert r.status_code == 201, r.text
    return r.json["token"]


def assert_problem(r, status, code):
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    doc = r.json
    assert doc["status"] == status and doc["code"] == code, doc
    assert doc["type"] == f"urn:bukt:problem:{code}" and doc["title"]


# -- buckets and tokens -----------------------------------------------------------------

def test_bucket_lifecycle(client, store):
    token = new_bucket(client, "sessions", schema="str", eviction="none", default_ttl=60)
    assert client.simulate_get(f"{API}/buckets", headers=admin()).json == {
        "buckets": ["sessions"]}
    info = client.simulate_get(f"{API}/buckets/sessions", headers=bearer(token)).json
    assert info["schema"] == "str" and info["eviction"] == "none"
    assert info["default_ttl"] == 60 and info["stats"]["keys"] == 0
    assert_problem(client.simulate_post(f"{API}/buckets", json={"name": "sessions"},
                                        headers=admin()), 409, "bucket_exists")
    r = client.simulate_delete(f"{API}/buckets/sessions", headers=admin())
    assert r.status_code == 204
    assert store.buckets() == []
    assert_problem(client.simulate_get(f"{API}/buckets/sessions", headers=admin()),
                   404, "bucket_not_found")


@pytest.mark.parametrize("body, field", [
    ({}, "name"), ({"name": "x", "schema": "float"}, "schema"),
    ({"name": "x", "eviction": "fifo"}, "eviction"), ({"name": "x", "persist": "yes"},
                                                      "persist"),
    ({"name": "x", "default_ttl": 0}, "default_ttl"), ({"name": "x", "default_ttl": "1"},
                                                       "default_ttl"),
])
def test_bucket_create_refuses_bad_settings(client, body, field):
    r = client.simulate_post(f"{API}/buckets", json=body, headers=admin())
    assert_problem(r, 400, "invalid_argument")
    assert field in r.json["detail"]


def test_bucket_bad_name_is_schema_error(client):
    r = client.simulate_post(f"{API}/buckets", json={"name": "no spaces"}, headers=admin())
    assert_problem(r, 400, "schema_error")


def test_drop_with_token_in_body_as_in_the_original_api(client, store):
    token = new_bucket(client, "old")
    r = client.simulate_delete(f"{API}/buckets/old", json={"token": token})
    assert r.status_code == 204 and store.buckets() == []


def test_tokens_are_stored_as_sha256_and_listed_without_secrets(client, store):
    first = new_bucket(client)
    assert store.find_token(hashlib.sha256(first.encode()).digest())[0] == "b"
    r = client.simulate_post(f"{API}/buckets/b/tokens", json={"permissions": ["read"]},
                             headers=bearer(first))
    assert r.status_code == 201 and r.json["permissions"] == ["read"]
    second, second_id = r.json["token"], r.json["id"]
    assert len(second) >= 43 and second != first
    listed = client.simulate_get(f"{API}/buckets/b/tokens", headers=bearer(first))
    assert listed.json == {"tokens": [{"id": 1, "permissions": ["read", "write", "admin"]},
                                      {"id": second_id, "permissions": ["read"]}]}
    assert first not in listed.text and second not in listed.text
    r = client.simulate_delete(f"{API}/buckets/b/tokens/{second_id}", headers=admin())
    assert r.status_code == 204
    assert_problem(client.simulate_get(f"{API}/buckets/b/keys", headers=bearer(second)),
                   401, "unauthorized")
    assert_problem(client.simulate_delete(f"{API}/buckets/b/tokens/{second_id}",
                                          headers=admin()), 404, "not_found")


@pytest.mark.parametrize("perms", [[], ["root"], ["read", "read"], "read", [{}]])
def test_token_permissions_are_checked(client, perms):
    new_bucket(client)
    r = client.simulate_post(f"{API}/buckets/b/tokens", json={"permissions": perms},
                             headers=admin())
    assert_problem(r, 400, "invalid_argument")


# -- the auth matrix ------------------------------------------------------------------------

ROUTES = [  # method, path, body, permission needed (None: admin token only)
    ("GET", f"{API}/buckets", None, None),
    ("POST", f"{API}/buckets", {"name": "new"}, None),
    ("GET", f"{API}/buckets/a", None, "read"),
    ("DELETE", f"{API}/buckets/a", None, "admin"),
    ("GET", f"{API}/buckets/a/tokens", None, "admin"),
    ("POST", f"{API}/buckets/a/tokens", {"permissions": ["read"]}, "admin"),
    ("GET", f"{API}/buckets/a/keys/k", None, "read"),
    ("HEAD", f"{API}/buckets/a/keys/k", None, "read"),
    ("PUT", f"{API}/buckets/a/keys/k", None, "write"),
    ("DELETE", f"{API}/buckets/a/keys/k", None, "write"),
    ("POST", f"{API}/buckets/a/keys/n/incr", None, "write"),
    ("GET", f"{API}/buckets/a/keys", None, "read"),
    ("POST", f"{API}/buckets/a/mget", {"keys": ["k"]}, "read"),
    ("POST", f"{API}/buckets/a/exists", {"keys": ["k"]}, "read"),
    ("POST", f"{API}/buckets/a/mset", {"items": {"k": "v"}}, "write"),
    ("POST", f"{API}/buckets/a/delete", {"keys": ["k"]}, "write"),
]   # /metrics: tests/unit/test_metrics.py (a bucket token gets its own bucket's)


@pytest.fixture
def matrix(client):
    """Bucket a (keys k and n) with a token per permission; bucket b with its admin."""
    tokens = {"admin-of-a": new_bucket(client, "a"), "admin-of-b": new_bucket(client, "b")}
    for perm in ("read", "write"):
        tokens[f"{perm}-of-a"] = new_token(client, "a", [perm])
    client.simulate_put(f"{API}/buckets/a/keys/k", body=b"v", headers=admin())
    return tokens


@pytest.mark.parametrize("method, path, body, needs", ROUTES)
def test_auth_matrix(client, matrix, method, path, body, needs):
    def call(headers):
        return client.simulate_request(method, path, json=body, headers=headers)

    assert call({}).status_code == 401
    assert call({"X-Auth-Token": "not-a-token"}).status_code == 401
    assert call(bearer(matrix["admin-of-b"])).status_code == 403   # never reaches a
    may = {"read-of-a": {"read"}, "write-of-a": {"write"},
           "admin-of-a": {"read", "write", "admin"}}
    for who, perms in may.items():
        status = call(bearer(matrix[who])).status_code   # 404: passed auth, k deleted
        assert status == 403 if needs not in perms else status not in (401, 403), \
            (who, status)
    assert call(admin()).status_code not in (401, 403)


@pytest.mark.parametrize("header", ["X-Auth-Token", "X-API-Key", "Authorization"])
def test_token_headers(client, header):
    token = new_bucket(client)
    value = f"Bearer {token}" if header == "Authorization" else token
    r = client.simulate_get(f"{API}/buckets/b", headers={header: value})
    assert r.status_code == 200
    r = client.simulate_get(f"{API}/buckets/b", headers={header: value[:-1]})
    assert_problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_admin_token_is_generated_once_with_mode_0600(tmp_path, monkeypatch):
    monkeypatch.delenv("BUKT_ADMIN_TOKEN", raising=False)
    settings = HttpSettings.from_config({"data_dir": str(tmp_path / "data")})
    token, path = resolve_admin_token(settings)
    assert len(token) >= 43 and path == str(tmp_path / "data" / "admin.token")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert resolve_admin_token(settings) == (token, path)
    monkeypatch.setenv("BUKT_ADMIN_TOKEN", "from-the-environment-123")
    assert resolve_admin_token(HttpSettings.from_config({"data_dir": str(tmp_path)}))[0] \
        == "from-the-environment-123"


# -- keys ------------------------------------------------------------------------------------

def test_remembered_tokens_are_checked_against_the_segment(client, store):
    """Workers remember tokens they recognised (auth.py): a token revoked behind their
    back, or one of a bucket dropped and created again (whose token ids start over),
    is refused on the very next request, fast path (GET) and slow (HEAD) alike."""
    token = new_bucket(client)
    reader = new_token(client, "b", ["read"])
    store.bucket("b").set(b"k", b"v")
    for t in (token, reader):
        for _ in range(2):
            assert client.simulate_get(key_url("k"), headers=bearer(t)).status_code == 200
            assert client.simulate_head(key_url("k"), headers=bearer(t)).status_code == 200
    reader_id = [i for i, perms in store.tokens("b") if perms == 1][0]
    assert store.revoke_token("b", reader_id)             # not through this app
    assert_problem(client.simulate_get(key_url("k"), headers=bearer(reader)), 401,
                   "unauthorized")
    assert client.simulate_head(key_url("k"), headers=bearer(reader)).status_code == 401
    assert client.simulate_get(key_url("k"), headers=bearer(token)).status_code == 200
    store.drop_bucket("b")
    fresh = store.create_bucket("b")
    fresh.set(b"k", b"new")
    first_id = store.add_token("b", hashlib.sha256(b"another token").digest(), 7)
    assert (first_id, 7) in store.tokens("b")                 # the id the old one had
    r = client.simulate_get(key_url("k"), headers=bearer(token))
    assert_problem(r, 401, "unauthorized")
    assert client.simulate_get(key_url("k"), headers=bearer("another token")).content \
        == b"new"


@pytest.fixture
def tok(client):
    return bearer(new_bucket(client))


def key_url(key, bucket="b"):
    return f"{API}/buckets/{bucket}/keys/{key}"


def test_put_get_delete_raw(client, tok):
    r = client.simulate_put(key_url("user/1%2Fx"), body=b"\x00\xffbinary", headers=tok)
    assert r.status_code == 204 and r.headers["etag"].startswith('"')
    r = client.simulate_get(key_url("user/1/x"), headers=tok)
    assert r.status_code == 200 and r.content == b"\x00\xffbinary"
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-length"] == "8" and "bukt-ttl" not in r.headers
    assert client.simulate_delete(key_url("user/1/x"), headers=tok).status_code == 204
    assert_problem(client.simulate_get(key_url("user/1/x"), headers=tok), 404, "not_found")
    assert_problem(client.simulate_delete(key_url("user/1/x"), headers=tok), 404,
                   "not_found")


def test_ttl_by_query_or_header(client, tok):
    client.simulate_put(key_url("a"), body=b"1", params={"ttl": "30"}, headers=tok)
    client.simulate_put(key_url("b"), body=b"1", headers={**tok, "Bukt-TTL": "0.5"})
    ttl_a = float(client.simulate_get(key_url("a"), headers=tok).headers["bukt-ttl"])
    ttl_b = float(client.simulate_head(key_url("b"), headers=tok).headers["bukt-ttl"])
    assert 29 < ttl_a <= 30 and 0 < ttl_b <= 0.5
    for bad in ("0", "-1", "abc", "", "inf"):
        r = client.simulate_put(key_url("c"), body=b"1", params={"ttl": bad}, headers=tok)
        assert_problem(r, 400, "invalid_argument")


def test_single_read_is_consumed_by_get_not_head(client, tok):
    etag = client.simulate_put(key_url("once"), body=b"secret",
                               params={"single_read": "true"}, headers=tok).headers["etag"]
    for _ in range(3):
        head = client.simulate_head(key_url("once"), headers=tok)
        assert (head.status_code, head.content, head.headers["etag"]) == (200, b"", etag)
        assert head.headers["content-length"] == "6"        # the GET's, from the peek
    assert client.simulate_head(key_url("once"), headers={**tok, "If-None-Match": etag}
                                ).status_code == 304
    get = client.simulate_get(key_url("once"), headers=tok)
    assert (get.content, get.headers["etag"]) == (b"secret", etag)
    assert client.simulate_get(key_url("once"), headers=tok).status_code == 404
    assert client.simulate_head(key_url("once"), headers=tok).status_code == 404


def test_conditional_get_never_consumes_a_single_read_key(client, tok):
    etag = client.simulate_put(key_url("once"), body=b"secret",
                               params={"single_read": "true"}, headers=tok).headers["etag"]
    r = client.simulate_get(key_url("once"), headers={**tok, "If-None-Match": etag})
    assert r.status_code == 304
    assert_problem(client.simulate_get(key_url("once"), headers={**tok, "If-Match": '"999999"'}),
                   412, "version_mismatch")
    r = client.simulate_get(key_url("once"), headers={**tok, "If-Match": etag})
    assert (r.status_code, r.content, r.headers["etag"]) == (200, b"secret", etag)
    assert client.simulate_get(key_url("once"), headers=tok).status_code == 404


def test_head_has_the_get_headers(client):
    tok = bearer(new_bucket(client, "n", schema="int"))
    client.simulate_put(key_url("i", "n"), body=b"1234", headers={**tok, "Bukt-TTL": "60"})
    get = client.simulate_get(key_url("i", "n"), headers=tok)
    head = client.simulate_head(key_url("i", "n"), headers=tok)
    assert head.content == b"" and get.content == b"1234"
    want, got = dict(get.headers), dict(head.headers)
    assert abs(float(want.pop("bukt-ttl")) - float(got.pop("bukt-ttl"))) < 1
    assert got == want


def test_etag_always_names_the_body_served(client, store):
    """Another thread rewrites the key (each value of another length) while GETs, fast
    path and slow, read it: every answer has an ETag, and it is the version whose value
    is the body. (tests/integration/test_http_server.py races a process against real workers.)"""
    import threading
    tok = bearer(new_bucket(client, "h", persist=False))      # no writer drains a ring
    bucket, written, stop = store.bucket("h"), {}, threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            value = str(i).encode() * (1 + i % 7)
            written[bucket.set(b"hot", value)] = value
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    try:
        for i in range(300):
            headers = tok if i % 2 else {**tok, "If-None-Match": '"0"'}   # slow path
            r = client.simulate_get(key_url("hot", "h"), headers=headers)
            if r.status_code == 200:
                seen.append((r.headers.get("etag"), r.content))
    finally:
        stop.set()
        thread.join()
    assert len({e for e, _ in seen}) > 1          # the writer did interleave
    for etag, body in seen:
        assert etag is not None and written[int(etag.strip('"'))] == body


def test_delete_if_match_is_a_compare_and_delete(client, tok, store):
    v1 = client.simulate_put(key_url("d"), body=b"1", headers=tok).headers["etag"]
    v2 = client.simulate_put(key_url("d"), body=b"2", headers=tok).headers["etag"]
    for stale in (v1, '"0"', f'{v1}, "0"', "nonsense"):
        assert_problem(client.simulate_delete(key_url("d"), headers={**tok, "If-Match": stale}),
                       412, "version_mismatch")
        assert store.bucket("b").get(b"d") == b"2"              # left as it was
    assert client.simulate_delete(key_url("d"), headers={**tok, "If-Match": f"{v1}, {v2}"}
                                  ).status_code == 204
    assert store.bucket("b").get(b"d") is None
    for tags in (v2, "*"):      # no current representation: If-Match fails
        assert_problem(client.simulate_delete(key_url("d"), headers={**tok, "If-Match": tags}),
                       412, "version_mismatch")
    client.simulate_put(key_url("d"), body=b"3", headers=tok)
    assert client.simulate_delete(key_url("d"), headers={**tok, "If-Match": "*"}
                                  ).status_code == 204


def test_put_json_shape_of_the_original_api(client, tok):
    r = client.simulate_put(key_url("j"), json={"value": "hello", "ttl_seconds": 60,
                                                "single_read": False}, headers=tok)
    assert r.status_code == 200 and r.json["value"] == "hello"
    assert r.json["expires_at"].endswith("Z")
    assert client.simulate_get(key_url("j"), headers=tok).content == b"hello"
    r = client.simulate_put(key_url("j"), json={"value": "AP8=", "encoding": "base64"},
                            headers=tok)
    assert r.json["expires_at"] is None
    assert client.simulate_get(key_url("j"), headers=tok).content == b"\x00\xff"
    assert_problem(client.simulate_put(key_url("j"), json={"ttl_seconds": 1},
                                       headers=tok), 400, "invalid_argument")
    assert_problem(client.simulate_put(key_url("j"), body=b"{nope",
                                       headers={**tok, "Content-Type": "application/json"}),
                   400, "bad_json")


def test_conditional_put_is_compare_and_set(client, tok):
    r = client.simulate_put(key_url("c"), body=b"1", headers={**tok, "If-None-Match": "*"})
    assert r.status_code == 204
    v1 = r.headers["etag"]
    assert_problem(client.simulate_put(key_url("c"), body=b"x",
                                       headers={**tok, "If-None-Match": "*"}),
                   412, "version_mismatch")
    r = client.simulate_put(key_url("c"), body=b"2", headers={**tok, "If-Match": v1})
    assert r.status_code == 204
    v2 = r.headers["etag"]
    assert v2 != v1
    assert_problem(client.simulate_put(key_url("c"), body=b"3",
                                       headers={**tok, "If-Match": v1}),
                   412, "version_mismatch")
    assert_problem(client.simulate_put(key_url("absent"), body=b"3",
                                       headers={**tok, "If-Match": "*"}),
                   412, "version_mismatch")
    assert client.simulate_put(key_url("c"), body=b"4", headers={
        **tok, "If-Match": f'"0", {v2}'}).status_code == 204
    assert_problem(client.simulate_delete(key_url("c"), headers={**tok, "If-Match": v1}),
                   412, "version_mismatch")
    assert client.simulate_get(key_url("c"), headers=tok).content == b"4"


def test_conditional_get(client, tok):
    etag = client.simulate_put(key_url("g"), body=b"abc", headers=tok).headers["etag"]
    r = client.simulate_get(key_url("g"), headers={**tok, "If-None-Match": etag})
    assert r.status_code == 304 and r.headers["etag"] == etag and not r.content
    r = client.simulate_get(key_url("g"), headers={**tok, "If-None-Match": f"W/{etag}"})
    assert r.status_code == 304
    r = client.simulate_get(key_url("g"), headers={**tok, "If-None-Match": '"999999"'})
    assert r.status_code == 200 and r.content == b"abc"
    assert_problem(client.simulate_get(key_url("g"), headers={**tok, "If-Match": '"0"'}),
                   412, "version_mismatch")
    assert client.simulate_head(key_url("g"), headers={**tok, "If-None-Match": "*"}
                                ).status_code == 304


@pytest.mark.parametrize("header, status, body, content_range", [
    ("bytes=0-3", 206, b"0123", "bytes 0-3/10"),
    ("bytes=8-", 206, b"89", "bytes 8-9/10"),
    ("bytes=-3", 206, b"789", "bytes 7-9/10"),
    ("bytes=5-100", 206, b"56789", "bytes 5-9/10"),
    ("bytes=0-1,4-5", 200, b"0123456789", None),
    ("items=0-1", 200, b"0123456789", None),
    ("bytes=10-", 416, None, "bytes */10"),
])
def test_range_requests_answer_206_or_the_whole_value_or_416(client, tok, header, status, body, content_range):
    client.simulate_put(key_url("r"), body=b"0123456789", headers=tok)
    r = client.simulate_get(key_url("r"), headers={**tok, "Range": header})
    assert r.status_code == status
    if body is not None:
        assert r.content == body
    else:
        assert_problem(r, 416, "range_not_satisfiable")
    assert r.headers.get("content-range") == content_range


def test_if_range(client, tok):
    etag = client.simulate_put(key_url("r"), body=b"0123456789", headers=tok
                               ).headers["etag"]
    r = client.simulate_get(key_url("r"), headers={**tok, "Range": "bytes=0-0",
                                                    "If-Range": etag})
    assert r.status_code == 206
    r = client.simulate_get(key_url("r"), headers={**tok, "Range": "bytes=0-0",
                                                    "If-Range": '"1234567"'})
    assert r.status_code == 200 and len(r.content) == 10


def test_incr_counts_and_refuses_text_and_bad_steps(client, tok):
    url = key_url("hits/incr")
    assert client.simulate_post(url, headers=tok).json == {"value": 1}
    assert client.simulate_post(url, params={"by": "41"}, headers=tok).json == {"value": 42}
    assert client.simulate_get(key_url("hits"), headers=tok).content == b"42"
    assert client.simulate_post(key_url("x/incr"), params={"by": "-1", "initial": "10"},
                                headers=tok).json == {"value": 9}
    client.simulate_put(key_url("text"), body=b"abc", headers=tok)
    assert_problem(client.simulate_post(key_url("text/incr"), headers=tok), 400,
                   "schema_error")
    assert_problem(client.simulate_post(key_url("hits/incr"), params={"by": "x"},
                                        headers=tok), 400, "invalid_argument")
    assert_problem(client.simulate_post(key_url("hits"), headers=tok), 405,
                   "method_not_allowed")


def test_schemas_int_and_str(client):
    tok = bearer(new_bucket(client, "n", schema="int"))
    client.simulate_put(key_url("a", "n"), body=b"12", headers=tok)
    r = client.simulate_get(key_url("a", "n"), headers=tok)
    assert r.content == b"12" and r.headers["content-type"].startswith("text/plain")
    assert_problem(client.simulate_put(key_url("a", "n"), body=b"twelve", headers=tok),
                   400, "schema_error")
    tok = bearer(new_bucket(client, "s", schema="str"))
    assert_problem(client.simulate_put(key_url("a", "s"), body=b"\xff", headers=tok),
                   400, "schema_error")


def test_limits_give_413(store):
    client = make_client(store, **{"http.max_body": 2048})
    tok = bearer(new_bucket(client))
    r = client.simulate_put(key_url("big"), body=b"x" * 4096, headers=tok)
    assert_problem(r, 413, "payload_too_large")
    r = client.simulate_put(key_url("k" * 300), body=b"x", headers=tok)
    assert_problem(r, 413, "key_too_large")


def test_value_too_large(store, client, tok):
    # above an entry a value is an object (tests/unit/test_objects.py); above
    # limits.max_object it is refused before its body is read
    small = make_client(store, **{"limits.max_object": "1MiB"})
    r = small.simulate_put(key_url("big"), body=b"x" * ((1 << 20) + 1), headers=tok)
    assert_problem(r, 413, "object_too_large")


def test_fast_path_answers_as_the_slow_path(store):
    """bukt/http/fastpath.py answers plain GETs of a key without falcon: it must send
    what the falcon app sends, and stand aside for everything else."""
    config = {"auth.admin_token": ADMIN_TOKEN, "http.access_log": None,
              "limits.max_object": "1MiB"}   # "big": refused before its body is read
    fast = create_app(store, config)
    slow = asgi_client(create_app(store, config, fast_path=False))
    seen_by_falcon = []
    inner = fast.app

    async def counting(scope, receive, send):
        if scope["type"] == "http":
            seen_by_falcon.append(scope["path"])
        await inner(scope, receive, send)

    fast.app = counting
    fast = asgi_client(fast)
    tok = bearer(new_bucket(slow, "b"))
    num = bearer(new_bucket(slow, "n", schema="int"))
    reader = bearer(new_token(slow, "b", ["read"]))
    writer = bearer(new_token(slow, "b", ["write"]))
    b, n = store.bucket("b"), store.bucket("n")

    def setup():
        b.set(b"plain", b"\x00value")
        b.set(b"ttl", b"t", ttl=100)
        b.set(b"a/b c", b"slash and space")
        b.set(b"\xff", b"binary key")
        b.set(b"once", b"single", single_read=True)
        n.set(b"i", 42)
        if b.read_entry(b"obj1", peek=True) is None:      # (no writer drains the ring)
            objects.put(b, b"obj1", big, single_read=True)

    big = os.urandom(70_000)        # an object (objects.put) in a chunk: not inline
    objects.put(b, b"obj", big, content_type="video/mp4", ttl=100)
    cases = [  # url, headers, answered by the fast path
        (key_url("obj"), tok, True), (key_url("obj1"), tok, True),
        (key_url("plain"), tok, True), (key_url("ttl"), reader, True),
        (key_url("a/b%20c"), tok, True), (key_url("%FF"), admin(), True),
        (key_url("once"), tok, True), (key_url("missing"), tok, True),
        (key_url("i", "n"), num, True),
        (key_url("plain"), {}, False), (key_url("plain"), writer, False),
        (key_url("plain"), num, False), (key_url("plain"), {"X-API-Key": "nope"}, False),
        (key_url("k", "nobucket"), admin(), False),
        (key_url("plain") + "?encoding=base64", tok, False),
        (key_url("plain"), {**tok, "Range": "bytes=0-1"}, False),
        (key_url("plain"), {**tok, "If-None-Match": '"1"'}, False),
    ]
    for url, headers, fast_one in cases:
        setup()
        before = len(seen_by_falcon)
        got = fast.simulate_get(url, headers=headers)
        assert (len(seen_by_falcon) == before) == fast_one, url
        setup()
        want = slow.simulate_get(url, headers=headers)
        assert (got.status_code, got.content) == (want.status_code, want.content), url
        got_h, want_h = dict(got.headers), dict(want.headers)
        assert ("etag" in got_h) == ("etag" in want_h), url    # versions moved on
        assert abs(float(got_h.pop("bukt-ttl", 0)) - float(want_h.pop("bukt-ttl", 0))) < 1
        got_h.pop("etag", None), want_h.pop("etag", None)
        assert got_h == want_h, url
    assert fast.simulate_get(key_url("once"), headers=tok).content == b"single"
    assert fast.simulate_get(key_url("once"), headers=tok).status_code == 404
    got = fast.simulate_get(key_url("obj1"), headers=tok)
    assert got.content == big and got.headers["repr-digest"]
    assert fast.simulate_get(key_url("obj1"), headers=tok).status_code == 404


def test_fast_path_puts_as_the_slow_path(store):
    config = {"auth.admin_token": ADMIN_TOKEN, "http.access_log": None,
              "limits.max_object": "1MiB"}   # "big": refused before its body is read
    fast = create_app(store, config)
    slow = asgi_client(create_app(store, config, fast_path=False))
    seen_by_falcon = []
    inner = fast.app

    async def counting(scope, receive, send):
        if scope["type"] == "http":
            seen_by_falcon.append(scope["path"])
        await inner(scope, receive, send)

    fast.app = counting
    fast = asgi_client(fast)
    tok = bearer(new_bucket(slow, "b"))
    num = bearer(new_bucket(slow, "n", schema="int"))
    reader = bearer(new_token(slow, "b", ["read"]))
    big = b"x" * ((1 << 20) + 1)
    cases = [  # url, body, headers, answered by the fast path
        (key_url("plain"), b"v", tok, True),
        (key_url("ttl"), b"v", {**tok, "Bukt-TTL": "30"}, True),
        (key_url("once"), b"v", {**tok, "Bukt-Single-Read": "true"}, True),
        (key_url("a/b%20c"), b"", admin(), True),
        (key_url("big"), big, tok, False),            # an object: 413 on the slow path
        (key_url("k" * 300), b"v", tok, True),                         # 413 key
        (key_url("i", "n"), b"forty", num, True),                      # 400 schema
        (key_url("i", "n"), b"42", num, True),
        (key_url("plain"), b"v", reader, False),
        (key_url("plain"), b"v", {}, False),
        (key_url("plain"), b"v", {**tok, "Bukt-TTL": "-1"}, False),
        (key_url("plain") + "?ttl=5", b"v", tok, False),
        (key_url("plain"), b"v", {**tok, "If-None-Match": "*"}, False),
        (key_url("plain"), b'{"value": "j"}', {**tok, "Content-Type": "application/json"},
         False),
    ]
    for url, body, headers, fast_one in cases:
        before = len(seen_by_falcon)
        got = fast.simulate_put(url, body=body, headers=headers)
        assert (len(seen_by_falcon) == before) == fast_one, url
        want = slow.simulate_put(url, body=body, headers=headers)
        assert (got.status_code, got.text) == (want.status_code, want.text), url
        got_h, want_h = dict(got.headers), dict(want.headers)
        assert ("etag" in got_h) == ("etag" in want_h), url
        got_h.pop("etag", None), want_h.pop("etag", None)
        assert got_h == want_h, url
    assert store.bucket("b").get(b"a/b c") == b""
    assert 29 < store.bucket("b").ttl(b"ttl") <= 30
    assert store.bucket("n").get(b"i") == 42


# -- bulk, scan, original shapes --------------------------------------------------------

def test_mset_mget_exists_and_delete_of_many_keys(client, tok):
    b = f"{API}/buckets/b"
    r = client.simulate_post(f"{b}/mset", json={"items": {"a": "1", "b": "2"},
                                                "ttl_seconds": 100}, headers=tok)
    assert r.status_code == 200 and len(r.json["versions"]) == 2
    r = client.simulate_post(f"{b}/mget", json={"keys": ["a", "zz", "b"]}, headers=tok)
    assert r.json == {"values": ["1", None, "2"]}
    assert client.simulate_post(f"{b}/exists", json={"keys": ["a", "a", "zz"]},
                                headers=tok).json == {"exists": 2}
    assert client.simulate_post(f"{b}/delete", json={"keys": ["a", "zz"]},
                                headers=tok).json == {"deleted": 1}
    client.simulate_put(key_url("bin"), body=b"\xff", headers=tok)
    assert_problem(client.simulate_post(f"{b}/mget", json={"keys": ["bin"]}, headers=tok),
                   406, "value_not_utf8")
    r = client.simulate_post(f"{b}/mget", json={"keys": ["Ymlu"], "encoding": "base64"},
                             headers=tok)
    assert r.json == {"values": ["/w=="]}
    assert_problem(client.simulate_post(f"{b}/mget", json={"keys": "a"}, headers=tok),
                   400, "invalid_argument")
    assert_problem(client.simulate_post(f"{b}/mget", json={"keys": ["k"] * 1001},
                                        headers=tok), 400, "invalid_argument")


def test_scan_pages_with_a_cursor(client, tok):
    keys = {f"user:{i:03}" for i in range(25)} | {"other"}
    client.simulate_post(f"{API}/buckets/b/mset", json={"items": {k: "v" for k in keys}},
                         headers=tok)
    seen, cursor = set(), "0"
    for _ in range(30):
        r = client.simulate_get(f"{API}/buckets/b/keys", headers=tok,
                                params={"prefix": "user:", "cursor": cursor, "count": "7"})
        assert r.status_code == 200
        seen.update(r.json["keys"])
        cursor = r.json["cursor"]
        if cursor == "0":
            break
    assert seen == keys - {"other"}
    assert_problem(client.simulate_get(f"{API}/buckets/b/keys", headers=tok,
                                       params={"cursor": "x"}), 400, "invalid_argument")


def test_original_kv_shapes(client):
    tok = new_bucket(client)
    r = client.simulate_post(f"{API}/kv", json={"key": "greeting", "value": "hi",
                                                "ttl": 10, "single_read": True},
                             headers={"X-Auth-Token": tok})
    assert r.status_code == 201 and r.json["key"] == "greeting"
    assert r.json["expires_at"].endswith("Z")
    r = client.simulate_get(f"{API}/kv/greeting", headers={"X-Auth-Token": tok})
    assert r.json["value"] == "hi" and r.json["key"] == "greeting"
    assert client.simulate_get(f"{API}/kv/greeting",
                               headers={"X-Auth-Token": tok}).status_code == 404
    client.simulate_post(f"{API}/kv", json={"key": "k", "value": "v"},
                         headers={"X-Auth-Token": tok})
    assert client.simulate_delete(f"{API}/kv/k", headers={"X-Auth-Token": tok}
                                  ).status_code == 204
    assert_problem(client.simulate_get(f"{API}/kv/k", headers=admin()), 400, "bad_request")
    assert client.simulate_get(f"{API}/kv/k").status_code == 401


# -- errors, health, metrics, openapi ------------------------------------------------------

def test_unknown_route_and_method_are_problems(client):
    assert_problem(client.simulate_get(f"{API}/nothing"), 404, "not_found")
    r = client.simulate_patch(f"{API}/buckets", headers=admin())
    assert_problem(r, 405, "method_not_allowed")
    assert "GET" in r.headers["allow"]


def test_healthz_reports_writer_state(store):
    class Reporting:
        """The store as a core with a writer would present it."""
        state = {"alive": True, "flushing": True}

        def __getattr__(self, name):
            return getattr(store, name)

        def writer_state(self):
            return self.state

    wrapped = Reporting()
    client = make_client(wrapped)
    r = client.simulate_get("/healthz")
    assert r.status_code == 200 and r.json["status"] == "ok"
    wrapped.state = {"alive": False, "flushing": False, "reason": "writer pid 7 gone"}
    r = client.simulate_get("/healthz")
    assert r.status_code == 503 and "writer pid 7 gone" in r.json["reason"]


def test_healthz_reads_the_writer_from_the_segment(client, store):
    r = client.simulate_get("/healthz")
    assert r.status_code == 503 and r.json["status"] == "unavailable"
    assert "no writer" in r.json["reason"] and r.json["segment"] == "attached"
    now_ms = int(time.time() * 1000)
    store.writer_publish(pid=os.getpid(), ready=True, heartbeat_ms=now_ms)
    r = client.simulate_get("/healthz")
    assert r.status_code == 200 and r.json["writer"]["alive"]
    store.writer_publish(heartbeat_ms=now_ms - 10_000)
    assert "heartbeat" in client.simulate_get("/healthz").json["reason"]
    store.writer_publish(heartbeat_ms=now_ms, error="EIO on log 7")
    r = client.simulate_get("/healthz")
    assert r.status_code == 503 and "EIO on log 7" in r.json["reason"]
    store.writer_publish(error="")
    assert client.simulate_get("/healthz").status_code == 200
    doc = client.simulate_get("/metrics", params={"format": "json"}, headers=admin()).json
    assert doc["writer"]["up"] == 1


def test_healthz_and_metrics_count_stripes_left_mid_write(client, store):
    import subprocess
    import sys
    store.writer_publish(pid=os.getpid(), ready=True, heartbeat_ms=int(time.time() * 1000))
    store.create_bucket("b", persist=False)
    store.bucket("b").set(b"k", b"v")
    r = subprocess.run([sys.executable, "-c", "import sys, bukt; "
                        "bukt.attach(sys.argv[1])._die_mid_write('b', b'k')", store.name],
                       timeout=60)
    assert r.returncode == 70                   # died holding k's stripe, seq odd
    r = client.simulate_get("/healthz")
    assert r.status_code == 503 and r.json["stripes_awaiting_repair"] == 1
    assert "mid-write" in r.json["reason"]
    text = client.simulate_get("/metrics", headers=admin()).text
    assert "bukt_store_stripes_awaiting_repair 1.0" in text
    assert store.bucket("b").get(b"k") == b"v"  # a read-write access repairs it
    r = client.simulate_get("/healthz")
    assert r.status_code == 200 and r.json["stripes_awaiting_repair"] == 0
    assert "bukt_store_stripes_awaiting_repair 0.0" in \
        client.simulate_get("/metrics", headers=admin()).text
    assert store.check() == []


def flush_ring(store):
    """What the writer process does with the ring, once: log (here: drop) the records
    and publish them as durable."""
    records, pos, stuck = store.ring_read()
    store.ring_release(pos)
    store.ring_flushed(pos)
    return len(records)


def test_fsync_always_awaits_the_flush_without_blocking_the_loop(store):
    store.writer_publish(sync_always=True)        # what a writer with fsync: always says
    app = create_app(store, {"auth.admin_token": ADMIN_TOKEN, "http.access_log": None})
    assert store.sync_wait is False          # the app waits, on its loop

    async def scenario():
        async with falcon.testing.ASGIConductor(app) as c:
            create = asyncio.create_task(c.simulate_post(
                f"{API}/buckets", json={"name": "b"}, headers=admin()))
            await asyncio.sleep(0.05)
            assert not create.done()
            assert flush_ring(store) >= 1
            tok = bearer((await create).json["token"])
            put = asyncio.create_task(c.simulate_put(key_url("k"), body=b"v", headers=tok))
            await asyncio.sleep(0.05)
            assert not put.done()                          # waiting for the writer...
            other = await c.simulate_get(key_url("k"), headers=tok)
            assert other.status_code == 200                # ...but the loop serves reads
            flush_ring(store)
            assert (await put).status_code == 204
            store.durable_timeout = 0.1
            slow = await c.simulate_put(key_url("k"), body=b"w", headers=tok)
            assert_problem(slow, 503, "writer_down")

    asyncio.run(scenario())


def test_a_switch_to_fsync_always_reaches_http_within_the_shared_refresh(store):
    """The HTTP app reads the writer's policy as often as the TCP face does (one
    RingDurability, one POLICY_REFRESH): a write made that long after the writer
    switched to `fsync: always` waits for the flush."""
    app = create_app(store, {"auth.admin_token": ADMIN_TOKEN, "http.access_log": None})

    async def scenario():
        async with falcon.testing.ASGIConductor(app) as c:
            tok = bearer((await c.simulate_post(f"{API}/buckets", json={"name": "b"},
                                                headers=admin())).json["token"])
            assert (await c.simulate_put(key_url("k"), body=b"v", headers=tok)
                    ).status_code == 204              # everysec: acknowledged at once
            store.writer_publish(sync_always=True)    # the writer restarts with always
            await asyncio.sleep(POLICY_REFRESH)
            put = asyncio.create_task(c.simulate_put(key_url("k"), body=b"w", headers=tok))
            await asyncio.sleep(0.05)
            assert not put.done()                     # waits for the writer's flush
            flush_ring(store)
            assert (await put).status_code == 204

    asyncio.run(scenario())


def test_writes_await_durability_and_report_writer_down(store):
    settled = []

    class Durability:
        fail = False

        async def settle(self, bucket):
            settled.append(bucket)
            if self.fail:
                raise WriterDown("not flushing")

    durability = Durability()
    client = asgi_client(create_app(
        store, {"auth.admin_token": ADMIN_TOKEN, "http.access_log": None},
        durability=durability))
    tok = bearer(new_bucket(client))
    client.simulate_put(key_url("k"), body=b"v", headers=tok)
    client.simulate_delete(key_url("k"), headers=tok)
    assert settled == ["b", "b", "b"]
    durability.fail = True
    r = client.simulate_put(key_url("k"), body=b"v", headers=tok)
    assert_problem(r, 503, "writer_down")
    assert r.headers["retry-after"]


def test_metrics_prometheus_and_json(client, tok):
    client.simulate_put(key_url("k"), body=b"v", headers=tok)
    client.simulate_get(key_url("k"), headers=tok)
    client.simulate_get(key_url("missing"), headers=tok)
    r = client.simulate_get("/metrics", headers=admin())
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert 'bukt_bucket_hits_total{bucket="b"} 1.0' in text
    assert 'bukt_bucket_misses_total{bucket="b"} 1.0' in text
    assert 'bukt_bucket_keys{bucket="b"} 1.0' in text
    route = f"{API}/buckets/{{name}}/keys/{{key:path}}"
    assert f'bukt_http_requests_total{{code="4xx",route="{route}"}} 1.0' in text
    assert f'bukt_http_request_duration_seconds_count{{route="{route}"}} 3.0' in text
    doc = client.simulate_get("/metrics", params={"format": "json"}, headers=admin()).json
    assert doc["buckets"]["b"]["hits"] == 1
    assert doc["http"]["routes"][route]["count"] == 3
    assert client.simulate_get("/metrics").status_code == 401


def test_openapi_document_covers_every_route(client):
    doc = client.simulate_get(f"{API}/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    paths = set(doc["paths"])
    for template in ("/healthz", "/metrics", f"{API}/buckets", f"{API}/buckets/{{name}}",
                     f"{API}/buckets/{{name}}/keys/{{key}}",
                     f"{API}/buckets/{{name}}/keys/{{key}}/incr", f"{API}/kv",
                     f"{API}/kv/{{key}}", f"{API}/buckets/{{name}}/mset"):
        assert template in paths
    for path in doc["paths"].values():
        for method, operation in path.items():
            if method != "parameters":
                assert "default" in operation["responses"]


# -- rate limit and access log ---------------------------------------------------------

def test_rate_limit_429_with_retry_after_and_healthz_exempt(store):
    client = make_client(store, **{"ratelimit.enabled": True, "ratelimit.rps": 1,
                                   "ratelimit.burst": 3})
    codes = [client.simulate_get(f"{API}/openapi.json").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    r = client.simulate_get(f"{API}/openapi.json")
    assert_problem(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1
    assert client.simulate_get("/healthz").status_code in (200, 503)   # never 429


def test_rate_limiter_table_is_shared_through_the_area():
    name = f"/bukt-{unique_name()}-http"
    area = SharedArea.create(name, slots=64)
    try:
        other = SharedArea.attach(name)
        assert area.rate_check(7, 100.0, 1.0, 1.0) == 0.0
        assert other.rate_check(7, 100.0, 1.0, 1.0) == 0.0      # the burst of two
        assert other.rate_check(7, 100.0, 1.0, 1.0) == pytest.approx(1.0)
        assert area.rate_check(7, 100.0, 1.0, 1.0) == pytest.approx(1.0)
        assert area.rate_check(8, 100.0, 1.0, 1.0) == 0.0       # another client
        assert area.rate_check(7, 101.0, 1.0, 1.0) == 0.0       # a second later
        # a full neighbourhood: the stalest slot is taken over, nobody is refused
        for key in range(1000, 1100):
            assert area.rate_check(key, 102.0, 1.0, 1.0) == 0.0
        other.close()
        pid = os.fork()
        if pid == 0:    # another process is refused the area while its owner lives
            try:
                SharedArea.create(name, slots=64)
            except FileExistsError:
                os._exit(0)
            os._exit(1)
        assert os.waitpid(pid, 0)[1] == 0
    finally:
        area.unlink()
        area.close()


def test_access_log_is_json_without_tokens(store, tmp_path):
    path = tmp_path / "access.log"
    client = make_client(store, **{"log.access": True, "http.access_log": str(path)})
    token = new_bucket(client)
    client.simulate_put(key_url("k"), body=b"v", headers=bearer(token))
    client.simulate_get(key_url("k"), headers={"X-API-Key": token})
    text = path.read_text()
    assert token not in text and ADMIN_TOKEN not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(x["method"], x["status"], x["bucket"]) for x in lines] == [
        ("POST", 201, "b"), ("PUT", 204, "b"),
        ("GET", 200, "b")]
    assert all(x["duration_ms"] >= 0 and x["path"].startswith("/api/v1") for x in lines)


def test_access_log_is_off_unless_asked_and_sampled_when_asked(store, tmp_path):
    path = tmp_path / "access.log"
    client = make_client(store, **{"http.access_log": str(path)})
    token = new_bucket(client)
    client.simulate_put(key_url("k"), body=b"v", headers=bearer(token))
    assert not path.exists() or path.read_text() == ""      # log.access: false
    client = make_client(store, **{"log.access": True, "log.access_sample": 0.5,
                                   "http.access_log": str(path)})
    for _ in range(200):
        client.simulate_get(key_url("k"), headers=bearer(token))
    logged = len(path.read_text().splitlines())
    assert 0 < logged < 200     # each request drawn: all or none is a 2^-199 chance
