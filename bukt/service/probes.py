"""Is it listening? One HTTP GET and one TCP PING, for the supervisor's readiness checks,
`bukt status` and the tests. Each probe has a short timeout and never raises."""
import http.client
import json
import time

from bukt.config import parse_bind

__all__ = ["client_host", "http_get", "http_health", "tcp_ping"]


def client_host(bind: str) -> tuple[str, int]:
    """(host, port) a client on this host connects to for a bind address: a wildcard
    bind is reached on loopback."""
    host, port = parse_bind(bind)
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, port


def http_get(bind: str, path: str, timeout: float = 1.0, headers=None):
    """(status, body bytes) of GET `path`, or None when nothing answers."""
    host, port = client_host(bind)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def http_health(bind: str, timeout: float = 1.0):
    """(status, parsed /healthz body) or None when nothing answers."""
    got = http_get(bind, "/healthz", timeout)
    if got is None:
        return None
    status, body = got
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {}


def tcp_ping(bind: str, timeout: float = 1.0):
    """Round trip of a PING in seconds, or None when nothing answers."""
    from bukt.client import Client
    host, port = client_host(bind)
    client = Client(host=host, port=port, timeout=timeout, pool_size=1, retry_reads=False)
    try:
        t0 = time.perf_counter()
        if client.ping(b"bukt") != b"bukt":
            return None
        return time.perf_counter() - t0
    except Exception:             # refused, reset, timeout, garbage: not listening
        return None
    finally:
        client.close()
