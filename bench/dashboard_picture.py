"""A picture of docs/grafana-dashboard.json without Grafana (not installed here): runs a
real `bukt serve`, puts load on it (HTTP, binary TCP and RESP, hits, misses and
errors), scrapes /metrics every STEP seconds, and draws each panel of the dashboard
(its title, place and expressions) from those scrapes on a page of its own, which
Playwright and Debian's chromium turn into a PNG. It is a page equivalent to the
dashboard, not Grafana's rendering: a counter's series are drawn as their per-second
rate between scrapes, a gauge's as its value, a stat as its last value (a ratio of two
metrics as that ratio), a histogram_quantile as Prometheus computes it (each bucket's
rate over the expression's window, summed by le, then the quantile interpolated in the
bucket its rank falls in: bucket_quantile).

    .venv/bin/python bench/dashboard_picture.py docs/grafana-dashboard.png
"""
import os
import sys

# bench/ holds http.py (the HTTP benchmark), which would shadow the standard library's
# http package that prometheus_client and the harness import
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import html  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

ROOT = Path(HERE).parent
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT))
from serve_harness import Service  # noqa: E402

STEP = 2.0
SCRAPES = 16
CHROMIUM = "/usr/bin/chromium"
COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#b877d9", "#f2495c", "#8ab8ff"]


def scrape(service):
    status, body = service.http("GET", "/metrics",
                                headers={"X-Auth-Token": service.admin_token()})
    fams = {}
    for f in text_string_to_metric_families(body.decode()):
        for s in f.samples:
            fams.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
        fams.setdefault("__type__", {})[f.name] = f.type
    return time.time(), fams


def load(service, tok, stop):
    """HTTP, binary and RESP traffic with misses and errors until `stop` is set."""
    i = 0
    with service.client("b", tok) as c, \
            socket.create_connection(("127.0.0.1", service.resp_port)) as r:
        r.sendall(b"AUTH b %s\r\n" % tok.encode())
        r.recv(100)
        while not stop.is_set():
            i += 1
            c.set(b"k%d" % (i % 500), b"v" * 100)
            c.get(b"k%d" % (i % 700))
            if i % 3 == 0:
                service.http("GET", f"/api/v1/buckets/b/keys/k{i % 600}",
                             headers={"X-Auth-Token": tok})
            if i % 7 == 0:
                r.sendall(b"GET k%d\r\nBOGUS\r\n" % (i % 500))
                r.recv(4096)
            if i % 50 == 0:
                try:
                    c.get(b"x" * 1000)
                except Exception:
                    pass
            time.sleep(0.002)


def series(scrapes, name, matchers):
    """{labels: [(t, value)]} of sample `name` whose labels match `matchers`."""
    out = {}
    for t, fams in scrapes:
        for labels, v in fams.get(name, {}).items():
            d = dict(labels)
            if all(re.fullmatch(p, d.get(k, "")) for k, p in matchers.items()):
                out.setdefault(labels, []).append((t, v))
    return out


def as_rate(points):
    return [(t1, max(0.0, (v1 - v0) / (t1 - t0)))
            for (t0, v0), (t1, v1) in zip(points, points[1:])]


def window_rate(points, window):
    """[(t, per-second increase over the `window` seconds up to t)] of a counter's
    points, from the earliest point inside the window (as rate(x[window]) over what
    has been scraped; none until the window holds two points)."""
    out = []
    for i, (t, v) in enumerate(points):
        first = next((p for p in points[:i] if p[0] >= t - window), None)
        if first is not None and t > first[0]:
            out.append((t, max(0.0, (v - first[1]) / (t - first[0]))))
    return out


def bucket_quantile(q, buckets):
    """Prometheus's histogram_quantile of one instant: `buckets` [(le, cumulative
    rate)], le a float (inf for +Inf). None when nothing was observed. The rank q*total
    falls in the first bucket whose cumulative value reaches it and is interpolated
    linearly in it (its lower bound the previous bucket's le, 0 for the first); in the
    +Inf bucket the answer is the highest finite le."""
    buckets = sorted(buckets)
    if len(buckets) < 2 or buckets[-1][0] != float("inf"):
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for i, (le, count) in enumerate(buckets):
        if count >= rank:
            if le == float("inf"):
                return buckets[-2][0]
            if i == 0 and le <= 0:
                return le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return buckets[-2][0]


UNITS = {"s": 1, "m": 60, "h": 3600}


def quantile_series(expr, scrapes):
    """histogram_quantile(q, sum by (le) (rate(NAME_bucket{...}[W]))) as a series:
    at each scrape, every bucket's rate over the window, summed over the other labels
    (route), then the quantile of those buckets."""
    m = re.match(r"histogram_quantile\(([0-9.]+),.*?\b(bukt_[a-z_]+_bucket)\b.*?"
                 r"\[(\d+)([smh])\]", expr)
    q, name, window = float(m[1]), m[2], int(m[3]) * UNITS[m[4]]
    by_le = {}
    for labels, points in series(scrapes, name, {}).items():
        le = float(dict(labels)["le"])
        for t, v in window_rate(points, window):
            by_le.setdefault(t, {}).setdefault(le, 0.0)
            by_le[t][le] += v
    pts = []
    for t in sorted(by_le):
        v = bucket_quantile(q, list(by_le[t].items()))
        if v is not None:
            pts.append((t, v))
    return [(f"p{q * 100:g} {name.removeprefix('bukt_').removesuffix('_bucket')}", pts)]


def evaluate(expr, scrapes):
    """[(legend, [(t, v)])] for the metrics an expression names."""
    if expr.startswith("histogram_quantile("):
        return quantile_series(expr, scrapes)
    names = re.findall(r"\b(bukt_[a-z_]+)(\{[^}]*\})?", expr)
    out = []
    for name, sel in names[:2]:
        matchers = {k: ("$" in v and ".*") or v for k, v in
                    re.findall(r'(\w+)=~?"([^"]*)"', sel or "") if k != "job"}
        for labels, points in series(scrapes, name, matchers).items():
            pts = as_rate(points) if "rate(" in expr else points
            legend = " ".join(v for k, v in labels if k not in ("le",)) or name
            if name.endswith("_bucket"):
                continue
            out.append((f"{legend} {name.removeprefix('bukt_')}", pts))
    if " / " in expr and len(out) >= 2 and len(names) >= 2:
        a = sum(p[-1][1] for lg, p in out if names[0][0].removeprefix("bukt_") in lg and p)
        b = sum(p[-1][1] for lg, p in out if names[1][0].removeprefix("bukt_") in lg and p)
        return [("ratio", [(0, a / b if b else 0.0)])]
    return out


def svg(lines, w, h):
    pts = [v for _, p in lines for _, v in p]
    if not pts:
        return '<div class="none">no data</div>'
    lo, hi = 0.0, max(pts) or 1.0
    ts = [t for _, p in lines for t, _ in p]
    t0, t1 = min(ts), max(ts) if max(ts) > min(ts) else min(ts) + 1
    paths, legend = [], []
    for i, (name, p) in enumerate(lines[:7]):
        c = COLORS[i % len(COLORS)]
        d = " ".join(f"{'M' if j == 0 else 'L'}{(t - t0) / (t1 - t0) * w:.1f},"
                     f"{h - (v - lo) / (hi - lo) * (h - 4) - 2:.1f}" for j, (t, v) in enumerate(p))
        paths.append(f'<path d="{d}" fill="none" stroke="{c}" stroke-width="2"/>')
        legend.append(f'<span style="color:{c}">&#9644; {html.escape(name)}</span>')
    return (f'<svg width="{w}" height="{h}"><text x="2" y="12" class="ax">{hi:.3g}</text>'
            + "".join(paths) + "</svg><div class='legend'>" + " ".join(legend) + "</div>")


def page(doc, scrapes):
    cell = 52
    boxes = []
    for p in doc["panels"]:
        g = p["gridPos"]
        w, h = g["w"] * cell - 10, g["h"] * 36 - 10
        lines = [x for t in p["targets"] for x in evaluate(t["expr"], scrapes)]
        if p["type"] in ("stat", "gauge"):
            v = lines[0][1][-1][1] if lines and lines[0][1] else None
            unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
            shown = "-" if v is None else f"{v * 100:.1f}%" if unit == "percentunit" \
                else f"{v:.2f} s" if unit == "s" else f"{v:,.0f}"
            body = f'<div class="stat">{shown}</div>'
        else:
            body = svg(lines, w - 16, h - 70)
        exprs = "<br>".join(html.escape(t["expr"]) for t in p["targets"])
        boxes.append(f'<div class="panel" style="left:{g["x"] * cell}px;top:{g["y"] * 36}px;'
                     f'width:{w}px;height:{h}px"><div class="title">{html.escape(p["title"])}'
                     f'</div>{body}<div class="expr">{exprs}</div></div>')
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in doc["panels"]) * 36
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>
body {{ background:#111217; color:#ccccdc; font:12px sans-serif; margin:12px; }}
h1 {{ font-size:16px; margin:0 0 4px; }} .note {{ color:#8e8e9e; margin-bottom:10px; }}
.grid {{ position:relative; height:{height}px; }}
.panel {{ position:absolute; background:#181b1f; border:1px solid #2c3235; border-radius:3px;
          padding:6px 8px; overflow:hidden; box-sizing:border-box; }}
.title {{ font-weight:600; margin-bottom:4px; }} .stat {{ font-size:30px; color:#73bf69; }}
.expr {{ color:#6e7079; font:10px monospace; margin-top:4px; }} .legend {{ font-size:10px; }}
.ax {{ fill:#6e7079; font-size:10px; }} .none {{ color:#6e7079; }}
</style></head><body><h1>{html.escape(doc["title"])} (docs/grafana-dashboard.json)</h1>
<div class="note">Drawn by bench/dashboard_picture.py from {len(scrapes)} scrapes of a
live bukt serve, {STEP:g} s apart; not Grafana's rendering (Grafana is not installed
here).</div><div class="grid">{"".join(boxes)}</div></body></html>"""


def main(out):
    from playwright.sync_api import sync_playwright
    doc = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    tmp = Path(tempfile.mkdtemp(prefix="bukt-dash-"))
    service = Service(tmp)
    stop = threading.Event()
    try:
        service.start()
        tok = service.create_bucket("b")
        worker = threading.Thread(target=load, args=(service, tok, stop), daemon=True)
        worker.start()
        scrapes = []
        for _ in range(SCRAPES):
            time.sleep(STEP)
            scrapes.append(scrape(service))
        stop.set()
        worker.join(30)
        service.stop()
    finally:
        stop.set()
        service.cleanup()
    html_path = tmp / "dashboard.html"
    html_path.write_text(page(doc, scrapes))
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--headless", "--no-sandbox", "--disable-gpu"])
        pg = b.new_page(viewport={"width": 1260, "height": 900})
        pg.goto(html_path.as_uri())
        pg.screenshot(path=out, full_page=True)
        b.close()
    print(out)


if __name__ == "__main__":
    main(os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "docs/grafana-dashboard.png"))
