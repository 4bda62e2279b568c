"""Bukt's HTTP API: a falcon ASGI app (app.py) served by a gunicorn arbiter with
uvicorn workers (server.py). See docs/http.md."""

from bukt.http.app import create_app


def serve_http(config=None):
    from bukt.http.server import serve_http as serve
    return serve(config)


__all__ = ["create_app", "serve_http"]
