"""Bukt: a single-host shared-memory key-value cache.

    import bukt
    store = bukt.attach("default")          # or bukt.create("demo", size="64MiB")
    b = store.bucket("sessions")
    b.set(b"k", b"v", ttl=30)
    b.get(b"k")

docs/api.md is the reference of this API.
"""
from bukt import errors
from bukt._core import ADMIN, READ, WRITE, Bucket, JsonDocument, Store, attach, create
from bukt.errors import BuktError
from bukt import values as _values

_values.register()          # the core's value hooks: compression, objects (bukt/values.py)

__version__ = "0.1.0"
__all__ = ["create", "attach", "Store", "Bucket", "JsonDocument", "errors", "BuktError",
           "READ", "WRITE", "ADMIN", "Client", "AsyncClient"]


def __getattr__(name):
    # The network clients import asyncio (about 0.1 s): loaded on first use, so that a
    # local attach, and the writer's start (a warm restart is timed from exec), skip it.
    if name in ("Client", "AsyncClient"):
        from bukt import client
        return getattr(client, name)
    raise AttributeError(f"module 'bukt' has no attribute {name!r}")
