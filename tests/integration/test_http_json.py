"""HTTP for apps: JSON documents stored the way `requests.put(url, json=doc)` sends them,
a `json` bucket (validated on write, served as application/json, bounded by
limits.max_value), the bulk expire/persist/flush, and HEAD /healthz. Through
`requests` against a real `bukt serve`."""
import json

import pytest
import requests

from serve_harness import Service

API = "/api/v1"


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    s = Service(tmp_path_factory.mktemp("httpjson"), **{"limits": {"ring_size": "4MiB",
                                                                   "max_value": "64KiB"}})
    s.start()
    yield s
    s.cleanup()


@pytest.fixture(scope="module")
def web(svc):
    session = requests.Session()
    session.headers["X-Auth-Token"] = svc.admin_token()
    base = f"http://127.0.0.1:{svc.http_port}"
    for name, schema in (("docs", "json"), ("plain", "bytes")):
        r = session.post(base + f"{API}/buckets", json={"name": name, "schema": schema})
        assert r.status_code == 201, r.text
    return session, base


DOC = {"user": "ada", "roles": ["admin", "ops"], "n": 3, "ok": True, "none": None}


def test_a_json_bucket_stores_any_document(web):
    s, base = web
    url = base + f"{API}/buckets/docs/keys/u1"
    r = s.put(url, json=DOC)
    assert r.status_code == 204, r.text
    r = s.get(url)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json() == DOC
    # a document that looks like Bukt's envelope is still the document here
    s.put(url, json={"value": "x", "ttl_seconds": 5})
    assert s.get(url).json() == {"value": "x", "ttl_seconds": 5}
    assert "Bukt-TTL" not in s.get(url).headers
    # any JSON value, and a raw body with any content type: validated all the same
    for doc in ([1, 2], "text", 12.5, None):        # (json=None would send no body)
        assert s.put(url, data=json.dumps(doc),
                     headers={"Content-Type": "application/json"}).status_code == 204
        assert s.get(url).json() == doc
    assert s.put(url, data=b'{"raw": 1}').status_code == 204
    assert s.get(url).json() == {"raw": 1}


def test_a_json_bucket_refuses_what_is_not_json(web):
    s, base = web
    url = base + f"{API}/buckets/docs/keys/bad"
    for body in (b"{not json", b"NaN", b"\xff\xfe", b""):
        r = s.put(url, data=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (body, r.text)
        assert r.json()["code"] == "schema_error", r.text
    assert s.get(url).status_code == 404                     # nothing was stored
    big = {"blob": "x" * (64 << 10)}                           # over limits.max_value
    r = s.put(url, json=big)
    assert r.status_code == 413 or r.json()["code"] == "value_too_large", r.text
    assert s.get(url).status_code == 404


def test_a_bytes_bucket_keeps_the_envelope_and_stores_other_json_as_bytes(web):
    s, base = web
    url = base + f"{API}/buckets/plain/keys/k"
    r = s.put(url, json={"value": "hello", "ttl_seconds": 60})   # the envelope
    assert r.status_code == 200 and r.json()["value"] == "hello"
    assert s.get(url).content == b"hello" and 0 < float(s.get(url).headers["Bukt-TTL"]) <= 60
    r = s.put(url, json=DOC)                                     # said 400 before
    assert r.status_code == 204, r.text
    got = s.get(url)
    assert got.headers["Content-Type"] == "application/octet-stream"
    assert json.loads(got.content) == DOC
    r = s.put(url, data=b"{broken", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "bad_json"
    assert json.loads(s.get(url).content) == DOC                 # kept


def test_expire_persist_flush(web):
    s, base = web
    b = base + f"{API}/buckets/plain"
    s.put(b + "/keys/t", data=b"v")
    assert s.post(b + "/expire", json={"key": "t", "ttl_seconds": 30}).json() == \
        {"existed": True}
    assert 0 < float(s.head(b + "/keys/t").headers["Bukt-TTL"]) <= 30
    assert s.post(b + "/persist", json={"key": "t"}).json() == {"existed": True}
    assert "Bukt-TTL" not in s.head(b + "/keys/t").headers
    assert s.post(b + "/expire", json={"key": "absent", "ttl_seconds": 3}).json() == \
        {"existed": False}
    assert s.post(b + "/expire", json={"key": "t"}).status_code == 400
    assert s.post(b + "/flush").json()["deleted"] >= 1
    assert s.get(b + "/keys/t").status_code == 404


def test_head_healthz_answers_like_get(svc):
    url = f"http://127.0.0.1:{svc.http_port}/healthz"
    g, h = requests.get(url), requests.head(url)
    assert h.status_code == g.status_code == 200
    assert h.headers["Content-Type"] == g.headers["Content-Type"]
    assert h.content == b""


def test_a_json_bucket_on_the_other_faces(svc, web):
    """The document is checked in the core, so TCP and RESP refuse what HTTP refuses,
    and read the document's bytes back (RESP showed a Python bytes literal of it)."""
    import redis

    from bukt import errors
    from bukt.client import Client
    s, base = web
    r = s.post(base + f"{API}/buckets/docs/tokens", json={"permissions": ["read", "write"]})
    token = r.json()["token"]
    c = Client(f"bukt://docs:{token}@127.0.0.1:{svc.tcp_port}")
    assert c.bucket_info("docs")["schema"] == "json"
    c.set("t", b'{"a": [1]}')
    assert c.get("t") == b'{"a": [1]}'
    with pytest.raises(errors.SchemaError):
        c.set("t2", b"{nope")
    c.close()
    rc = redis.Redis(port=svc.resp_port, username="docs", password=token,
                     lib_name=None, lib_version=None)
    assert rc.get("t") == b'{"a": [1]}' and rc.mget(["t"]) == [b'{"a": [1]}']
    with pytest.raises(redis.ResponseError, match="not a JSON document"):
        rc.set("t3", "nope")
    rc.close()
    assert s.get(base + f"{API}/buckets/docs/keys/t").json() == {"a": [1]}


def test_a_json_bucket_survives_a_cold_restart(svc, web):
    """Its schema is logged with the bucket; the documents come back from the log."""
    s, base = web
    url = base + f"{API}/buckets/docs/keys/kept"
    assert s.put(url, json=DOC).status_code == 204
    assert svc.stop() == 0
    svc.start(args=("--cold",))
    r = s.get(url)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json() == DOC
    r = s.put(url, data=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "schema_error"
