"""What the dashboard (/ui) needs of the HTTP API, in-process: the static files with
their security headers, GET /api/v1/service, and ?peek=true on a key's GET. The page in
a real browser against a real `bukt serve` is tests/integration/test_dashboard.py."""

import os

import pytest

from test_http_app import (API, admin, assert_problem, key_url, make_client, new_bucket,  # noqa: F401
                           new_token, store, client)

import bukt.http.ui as ui


def test_ui_files_are_served_with_a_strict_policy(client):
    r = client.simulate_get("/ui")
    assert r.status_code == 308 and r.headers["location"] == "/ui/"
    page = client.simulate_get("/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert b'src="app.js"' in page.content
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    for name, kind in (("app.js", "text/javascript"), ("chart.js", "text/javascript"),
                       ("style.css", "text/css"), ("index.html", "text/html")):
        r = client.simulate_get(f"/ui/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind), name
        with open(os.path.join(ui.HERE, name), "rb") as f:
            assert r.content == f.read()


@pytest.mark.parametrize("path", ["/ui/__init__.py", "/ui/nothing.js", "/ui/..%2Fapp.py",
                                  "/ui/%2e%2e/auth.py"])
def test_ui_serves_nothing_but_its_files(client, path):
    r = client.simulate_get(path)
    assert r.status_code == 404, (path, r.text)


def test_ui_files_ship_in_the_package():
    """pyproject's package-data names every kind of file the page is made of."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(ui.HERE)))
    with open(os.path.join(root, "pyproject.toml")) as f:
        text = f.read()
    line = next(ln for ln in text.splitlines() if ln.startswith('"bukt.http.ui"'))
    for name in os.listdir(ui.HERE):
        ext = os.path.splitext(name)[1]
        if ext in ui.TYPES:
            assert f'"*{ext}"' in line, name


def test_service_needs_the_admin_token(client):
    token = new_bucket(client, "b")
    assert client.simulate_get(f"{API}/service").status_code == 401
    assert client.simulate_get(f"{API}/service",
                               headers={"X-Auth-Token": token}).status_code == 403


def test_service_reports_writer_ring_memory_by_class_and_faces(client, store):
    tok = {"X-Auth-Token": new_bucket(client, "b")}
    for i, size in enumerate((10, 1000, 20000)):
        assert client.simulate_put(key_url(f"k{i}"), body=b"x" * size,
                                   headers=tok).status_code == 204
    r = client.simulate_get(f"{API}/service", headers=admin())
    assert r.status_code == 200, r.text
    s = r.json
    assert s["writer"]["fsync"] == "everysec"          # the configuration's default
    assert s["writer"]["state"] in ("absent", "gone", "starting", "ready", "error")
    assert s["ring"]["depth"] == store.stats()["ring_depth"] > 0
    assert s["keys"] == 3 and s["buckets"] == 1
    classes = s["classes"]
    assert sum(c["used"] for c in classes) == 3         # three chunks, one per entry
    assert len({c["chunk_size"] for c in classes if c["used"]}) == 3
    for c in classes:
        assert c["used"] <= c["chunks"] and c["used_bytes"] == c["used"] * c["chunk_size"]
    assert s["memory"]["memory_used"] == store.stats()["memory_used"]
    assert s["faces"]["http"]["workers"] >= 1 and s["faces"]["tcp"]["workers"] >= 1
    assert r.headers["cache-control"] == "no-store"


def test_service_reports_the_configured_fsync_policy(store):
    c = make_client(store, fsync="no")
    assert c.simulate_get(f"{API}/service", headers=admin()).json["writer"]["fsync"] == "no"


def test_peek_never_consumes_a_single_read_key(client):
    tok = {"X-Auth-Token": new_bucket(client, "b")}
    etag = client.simulate_put(key_url("once"), body=b"secret", headers=tok,
                               params={"single_read": "true", "ttl": "100"}).headers["etag"]
    for _ in range(3):
        r = client.simulate_get(key_url("once"), params={"peek": "true"}, headers=tok)
        assert (r.status_code, r.content, r.headers["etag"]) == (200, b"secret", etag)
        assert 99 < float(r.headers["bukt-ttl"]) <= 100
    assert client.simulate_get(key_url("once"), headers=tok).content == b"secret"
    assert client.simulate_get(key_url("once"), params={"peek": "true"},
                               headers=tok).status_code == 404
    assert_problem(client.simulate_get(key_url("once"), params={"peek": "maybe"},
                                       headers=tok), 400, "invalid_argument")


def test_openapi_describes_the_additions(client):
    doc = client.simulate_get(f"{API}/openapi.json").json
    assert "get" in doc["paths"]["/api/v1/service"]
    params = doc["paths"]["/api/v1/buckets/{name}/keys/{key}"]["get"]["parameters"]
    assert any(p["name"] == "peek" and p["in"] == "query" for p in params)
