"""Bukt's binary TCP front end (docs/protocol.md): a pool of SO_REUSEPORT workers.

    from bukt.tcp import serve_tcp
    serve_tcp(bukt.config.load("conf/bukt.yaml"))      # or serve_tcp(bind=..., workers=2)

`python -m bukt.tcp [--config PATH]` runs it alone; `bukt tcp` is the same entry point.

Modules: pool (supervisor, serve_tcp), worker (one process: socket, loop, shutdown),
connection (framing, pipelining, limits, backpressure), session (AUTH and the dispatch of
each command to the store), settings (the tcp.* keys).

Event loop: uvloop when installed, else asyncio; see docs/protocol.md and the issue's
report for the measurements behind that choice.
"""
from .pool import serve_tcp
from .settings import TcpSettings

__all__ = ["serve_tcp", "TcpSettings", "main"]


def main(argv=None) -> int:
    """`bukt tcp [--config PATH] [--bind HOST:PORT] [--workers N] [--loop KIND]`."""
    import argparse

    from .. import config

    parser = argparse.ArgumentParser(prog="bukt tcp", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="bukt.yaml (default: $BUKT_CONFIG, else built-in defaults)")
    parser.add_argument("--bind", help="HOST:PORT, overrides tcp.bind")
    parser.add_argument("--workers", type=int, help="overrides tcp.workers")
    parser.add_argument("--instance", help="overrides instance (the segment's name)")
    parser.add_argument("--loop", choices=("auto", "epoll", "uvloop", "asyncio"), default="auto")
    args = parser.parse_args(argv)
    cfg = config.load(args.config)
    return serve_tcp(cfg, bind=args.bind, workers=args.workers, instance=args.instance,
                     loop=args.loop)
