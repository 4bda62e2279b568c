"""GET /metrics: text Prometheus accepts (promtool, and prometheus_client's own parser),
one declaration per metric, and who may scrape what. Over a real segment, through
falcon's TestClient; the served /metrics of a real `bukt serve` is
tests/integration/test_metrics_serve.py."""
import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from test_http_app import (ADMIN_TOKEN, API, admin, bearer, make_client, new_bucket,  # noqa: F401
                           store)

SCRAPE_TOKEN = "scrape-token-for-tests-0123456789"


def busy(client):
    """Buckets a and b with keys, hits, misses and a 404, so every family has samples."""
    toks = {name: new_bucket(client, name) for name in ("a", "b")}
    for name, tok in toks.items():
        client.simulate_put(f"{API}/buckets/{name}/keys/k", body=b"v", headers=bearer(tok))
        client.simulate_get(f"{API}/buckets/{name}/keys/k", headers=bearer(tok))
        client.simulate_get(f"{API}/buckets/{name}/keys/missing", headers=bearer(tok))
    return toks


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool (Debian prometheus; .ci/run installs it) is missing")
def test_promtool_accepts_the_metrics(store):
    client = make_client(store)
    busy(client)
    text = client.simulate_get("/metrics", headers=admin()).text
    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()


def test_counters_are_counters_and_each_metric_has_its_own_help(store):
    client = make_client(store)
    busy(client)
    fams = families(client.simulate_get("/metrics", headers=admin()).text)
    helps = [f.documentation for f in fams.values()]
    assert len(helps) == len(set(helps)), sorted(helps)
    for name in ("bukt_store_evictions", "bukt_store_expirations", "bukt_store_reads",
                 "bukt_store_writes", "bukt_store_hits", "bukt_bucket_hits",
                 "bukt_http_requests", "bukt_auth_failures"):
        assert fams[name].type == "counter", name
    for name in ("bukt_store_pages", "bukt_store_keys", "bukt_store_memory_used_bytes",
                 "bukt_bucket_keys"):
        assert fams[name].type == "gauge", name
    for f in fams.values():
        if f.type != "counter":
            assert not f.name.endswith("_total"), f.name
    hits = {s.labels["bucket"]: s.value for s in fams["bukt_bucket_hits"].samples
            if s.name == "bukt_bucket_hits_total"}
    assert hits == {"a": 1, "b": 1}
    st = store.stats()
    pages = fams["bukt_store_pages"].samples[0].value
    assert pages == st["pages_total"]


def test_every_store_figure_is_exposed_or_left_out_on_purpose(store):
    from bukt.http.metrics import STORE_LEFT_OUT, STORE_METRICS
    numeric = {k for k, v in store.stats().items()
               if isinstance(v, (int, float))}
    assert numeric == set(STORE_METRICS) | set(STORE_LEFT_OUT)


def test_the_scrape_token_reads_metrics_and_nothing_else(store):
    client = make_client(store, **{"metrics.token": SCRAPE_TOKEN})
    busy(client)
    r = client.simulate_get("/metrics", headers=bearer(SCRAPE_TOKEN))
    assert r.status_code == 200
    assert "bukt_store_keys" in families(r.text)
    assert client.simulate_get(f"{API}/buckets", headers=bearer(SCRAPE_TOKEN)) \
        .status_code == 401
    assert client.simulate_get(f"{API}/buckets/a/keys/k", headers=bearer(SCRAPE_TOKEN)) \
        .status_code == 401
    assert client.simulate_get("/metrics", headers=bearer("x" * 32)).status_code == 401
    assert client.simulate_get("/metrics").status_code == 401


def test_a_bucket_token_scrapes_its_own_bucket_only(store):
    client = make_client(store)
    toks = busy(client)
    r = client.simulate_get("/metrics", headers=bearer(toks["a"]))
    assert r.status_code == 200
    fams = families(r.text)
    buckets = {s.labels.get("bucket") for f in fams.values() for s in f.samples}
    assert buckets == {"a"}
    assert not [n for n in fams if n.startswith(("bukt_store", "bukt_http", "bukt_writer"))]
    doc = client.simulate_get("/metrics", params={"format": "json"},
                              headers=bearer(toks["b"])).json
    assert list(doc["buckets"]) == ["b"] and "store" not in doc


def peer_client(store, **config):
    """make_client, with the peer address falcon's TestClient hands over as an
    iterator (remote_addr=) made the (host, port) pair a server gives."""
    import falcon.testing

    from bukt.http import create_app
    app = create_app(store, {"auth.admin_token": ADMIN_TOKEN, **config})

    async def shim(scope, receive, send):
        if scope.get("client") is not None:
            scope["client"] = tuple(scope["client"])
        await app(scope, receive, send)

    return falcon.testing.TestClient(shim)


def test_loopback_scrapes_without_a_token_only_when_configured(store):
    closed = peer_client(store)
    assert closed.simulate_get("/metrics", remote_addr="127.0.0.1").status_code == 401
    client = peer_client(store, **{"metrics.public_on_loopback": True})
    assert client.simulate_get("/metrics", remote_addr="127.0.0.1").status_code == 200
    assert client.simulate_get("/metrics", remote_addr="::1").status_code == 200
    assert client.simulate_get("/metrics", remote_addr="10.1.2.3").status_code == 401
    # loopback opens /metrics, nothing else
    assert client.simulate_get(f"{API}/buckets", remote_addr="127.0.0.1").status_code == 401


def test_the_scrape_settings_are_configuration_keys(tmp_path):
    from bukt import config
    path = tmp_path / "bukt.yaml"
    path.write_text("metrics:\n  token: short\n")
    with pytest.raises(config.ConfigError, match="metrics.token"):
        config.load(str(path), env={})
    path.write_text(f"metrics:\n  token: {SCRAPE_TOKEN}\n  public_on_loopback: true\n")
    cfg = config.load(str(path), env={})
    assert cfg.metrics.token == SCRAPE_TOKEN and cfg.metrics.public_on_loopback is True


def _dashboard_picture():
    import importlib.util
    import os
    import sys
    path = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "dashboard_picture.py")
    spec = importlib.util.spec_from_file_location("dashboard_picture", path)
    mod = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path[:] = saved
    return mod


def test_the_dashboard_picture_computes_histogram_quantile_as_prometheus_does():
    """The picture's HTTP latency panel: the quantile of cumulative buckets, interpolated
    linearly inside the bucket the rank falls in; in +Inf, the highest finite bound; no
    value when nothing was observed."""
    dp = _dashboard_picture()
    inf = float("inf")
    b = [(0.1, 50.0), (0.5, 90.0), (inf, 100.0)]
    assert dp.bucket_quantile(0.5, b) == pytest.approx(0.1)
    assert dp.bucket_quantile(0.25, b) == pytest.approx(0.05)
    assert dp.bucket_quantile(0.75, b) == pytest.approx(0.35)
    assert dp.bucket_quantile(0.99, b) == pytest.approx(0.5)
    assert dp.bucket_quantile(0.5, [(0.1, 0.0), (inf, 0.0)]) is None
    # from scrapes: per-route buckets summed by le, rates over the window
    name = "bukt_http_request_duration_seconds_bucket"

    def scrape(t, fast, slow):
        rows = {}
        for route, (a, c) in {"get": fast, "put": slow}.items():
            rows[(("le", "0.1"), ("route", route))] = a
            rows[(("le", "+Inf"), ("route", route))] = c
        return t, {name: rows}

    scrapes = [scrape(0, (0, 0), (0, 0)), scrape(2, (10, 10), (0, 10)),
               scrape(4, (20, 20), (0, 20))]
    expr = ('histogram_quantile(0.5, sum by (le) (rate('
            + name + '{job="$job"}[5m])))')
    [(legend, points)] = dp.evaluate(expr, scrapes)
    # half the requests under 0.1 s: the median is the bucket's top
    assert legend.startswith("p50") and points == [(2, pytest.approx(0.1)),
                                                   (4, pytest.approx(0.1))]
