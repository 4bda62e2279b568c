"""Bukt's HTTP API: a falcon ASGI app (app.py) served by a gunicorn arbiter with
uvicorn workers (server.py). See docs/http.md.

create_app is imported when first asked for, so that a process needing one module of
this package (the TCP workers use shared.py for their counters) does not load falcon."""


def __getattr__(name):
    if name == "create_app":
        from bukt.http.app import create_app
        return create_app
    raise AttributeError(f"module 'bukt.http' has no attribute {name!r}")


def serve_http(config=None):
    from bukt.http.server import serve_http as serve
    return serve(config)


__all__ = ["create_app", "serve_http"]
