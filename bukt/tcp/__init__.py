"""Bukt's binary TCP front end (docs/protocol.md): a pool of SO_REUSEPORT workers.

    from bukt.tcp import serve_tcp
    serve_tcp(bukt.config.load("conf/bukt.yaml"))      # or serve_tcp(bind=..., workers=2)

`python -m bukt.tcp [--config PATH]` runs it alone; `bukt tcp` is the same entry point.

Each worker also serves the Redis protocol on its own socket (resp.bind; docs/resp.md):
resp (parser, encoders) and resp_session (the commands), driven by the same loops
(connection.RespConnection on asyncio, Conn.resp in the epoll loop).

Modules: pool (supervisor, serve_tcp), worker (one process: socket, loop, shutdown),
connection (framing, pipelining, limits, backpressure), session (AUTH and the dispatch of
each command to the store), settings (the tcp.* keys), cpu (each worker's niceness and
scheduler slice: how the workers share the CPUs with clients).

EVENT LOOP. `loop="auto"` takes the first available of: the epoll loop in Cython
(bukt/tcp/_epoll.pyx, when compiled), uvloop (when installed), asyncio. All three serve the
same protocol through the same Session and frame loop, and the test suite runs on each
(TCP_TEST_LOOP=epoll|uvloop|asyncio). Measured with bench/tcp.py on a 2-core machine
shared with other work (so throughput is noisy; CPU time per operation of the server
processes is the steadier figure), 2 workers, 100 B values over 100k keys, 90% GET:

    .venv/bin/python bench/tcp.py --loops epoll,uvloop,uvloop+py,asyncio --seconds 4 --repeat 3

    server CPU µs per op    50 conns   1 conn   pipeline 16
    epoll (Cython)              14.6     16.9           2.7
    uvloop                      17.3     21.9           3.1
    uvloop, Python frame loop   23.4     26.8           8.4
    asyncio                     22.3     34.3           3.5
    redis-server 7 (1 thread)   12.4     17.6           2.2

The frame loop and the GET/SET fast path in Cython (bukt/tcp/_wire.pyx; its Python twin is
connection.run_py) save a quarter to two thirds of the CPU per op over Python. Since the
epoll loop keeps the GIL and calls the frame loop as C, a later run (load average 6-7,
`--loops epoll,uvloop`) gave it 13.4 / 17.3 / 2.9 µs per op against Redis's
13.2 / 17.6 / 3.2 (uvloop 18.9 / 22.5 / 3.1); README "Benchmarks" has its throughput.
"""
from bukt.tcp.pool import serve_tcp
from bukt.tcp.settings import TcpSettings

__all__ = ["serve_tcp", "TcpSettings", "main"]


def main(argv=None) -> int:
    """`bukt tcp [--config PATH] [--bind HOST:PORT] [--workers N] [--loop KIND]`."""
    import argparse
    import logging

    from bukt import config, errors, logs

    parser = argparse.ArgumentParser(prog="bukt tcp", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="bukt.yaml (default: $BUKT_CONFIG, else built-in defaults)")
    parser.add_argument("--bind", help="HOST:PORT, overrides tcp.bind")
    parser.add_argument("--workers", type=int, help="overrides tcp.workers")
    parser.add_argument("--instance", help="overrides instance (the segment's name)")
    parser.add_argument("--loop", choices=("auto", "epoll", "uvloop", "asyncio"), default="auto")
    args = parser.parse_args(argv)
    cfg = config.load(args.config)
    logs.from_config("tcp", cfg)
    try:
        return serve_tcp(cfg, bind=args.bind, workers=args.workers, instance=args.instance,
                         loop=args.loop)
    except (errors.BuktError, OSError) as exc:  # no segment, address in use: one line
        if isinstance(exc, config.ConfigError):
            raise
        logging.getLogger("bukt.tcp").error("bukt tcp: %s", exc)
        return 1
