"""The dashboard: static files served at /ui by the HTTP face, shipped in this package.

The page is plain HTML, CSS and JavaScript modules (no build step, nothing fetched from
another host: it works on a machine without internet). It talks only to the public
HTTP API (docs/http.md), with the token the user signs in with, kept in the browser's
sessionStorage. The files are read once per worker and served with a strict
Content-Security-Policy: scripts and styles from this origin only.
"""

import os

from bukt.http.problems import Problem

HERE = os.path.dirname(os.path.abspath(__file__))
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _load():
    files = {}
    for name in os.listdir(HERE):
        ext = os.path.splitext(name)[1]
        if ext in TYPES:
            with open(os.path.join(HERE, name), "rb") as f:
                files[name] = (f.read(), TYPES[ext])
    return files


class UiFile:
    """GET /ui/{file}: one of this package's files; 404 for anything else."""

    def __init__(self):
        self.files = _load()

    async def on_get(self, req, resp, file=None):
        entry = self.files.get(file or "index.html")
        if entry is None:
            raise Problem(404, "not_found", "no such file in the dashboard")
        resp.data, resp.content_type = entry
        resp.set_header("Content-Security-Policy", CSP)
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Referrer-Policy", "no-referrer")
        resp.set_header("Cache-Control", "no-cache")


class UiRoot:
    """GET /ui: to /ui/, so the page's relative links resolve under it."""

    async def on_get(self, req, resp):
        resp.status = 308
        resp.location = "/ui/"
