"""`bukt`: one command, many subcommands.

    the service
      bukt serve   [--config PATH] [--cold]    writer + HTTP + TCP, supervised (serve.py)
      bukt writer  [--config PATH] [--cold]    the writer process alone (writer.py)
      bukt http    [--config PATH]             the HTTP front end alone (http/)
      bukt tcp     [--config PATH] [--bind A]  the TCP front end alone (tcp/)
    operating it
      bukt status  [--url URL] [--json]        health, memory, keys, ring, fsync, log, pids
      bukt stats   [-b BUCKET]                 a per-bucket table
      bukt check   [--fix]                     the data directory and the segment's table
      bukt compact [--wait S]                  compact the log now
      bukt bench   [--seconds S]               throughput and latency, TCP and HTTP
    data (attached to this host's segment, or --url bukt://... / http://...)
      bukt get | set | del | incr | ttl        keys of a bucket (-b BUCKET)
      bukt exists | expire | persist | mget | mset | scan (keys) | flush
      bukt shell                               an interactive prompt (GET, SET, SCAN, USE, ...)
      bukt watch   -b BUCKET [--prefix P] [--since N] [--json]   changes as they happen
      bukt buckets create | list | drop
      bukt tokens  create | new | list | revoke
    more than one host
      bukt cluster config | locate             a twemproxy pool over Bukt nodes
      bukt dump    [-o FILE] [--format jsonl|snapshot]
      bukt load    [FILE] [--into BUCKET]

COMMANDS below is the table of subcommands: a name, a one-line help, a function that
adds the subcommand's arguments, and one that runs it with the parsed arguments and
returns the exit code. Adding a subcommand is adding a row.

Output is for people by default and JSON with --json. Errors are one line on stderr
that says what to do (a JSON object with --json, usage errors included); the exit codes
are in bukt/cli/common.py (EXIT_CODES_HELP).
"""
import argparse
import importlib
import os
import sys

from bukt.cli.common import (EXIT_CODES_HELP, FAILED, REFUSED, config_arg, error_line, explain,
                             load_config)

__all__ = ["main", "COMMANDS"]


# -- the service ---------------------------------------------------------------------------

def _serve_args(p):
    config_arg(p)
    p.add_argument("--cold", action="store_true",
                   help="the writer recovers from disk even if the segment survived (to "
                        "apply a new memory or limits.* size)")


def _serve(args):
    from bukt.service import supervisor as serve
    return serve.serve(load_config(args), args.config or os.environ.get("BUKT_CONFIG"),
                       cold=args.cold)


def _writer_args(p):
    config_arg(p)
    p.add_argument("--cold", action="store_true",
                   help="recover from disk even if the segment survived")


def _writer(args):
    from bukt import writer
    return writer.run_command(args.config, cold=args.cold)


def _http(args):
    from bukt.http import serve_http
    cfg = load_config(args)
    try:
        serve_http(cfg)                 # it sets up the service's logging first
    except Exception as e:
        return _logged_error("bukt.http", e, args)
    return 0


def _tcp_args(p):
    config_arg(p)
    p.add_argument("--bind", metavar="HOST:PORT", help="overrides tcp.bind")
    p.add_argument("--workers", type=int, metavar="N", help="overrides tcp.workers")
    p.add_argument("--instance", help="overrides instance (the segment's name)")
    p.add_argument("--loop", choices=("auto", "epoll", "uvloop", "asyncio"), default="auto",
                   help="the workers' event loop (default auto)")


def _tcp(args):
    from bukt import logs, tcp
    cfg = load_config(args)
    logs.from_config("tcp", cfg)        # the service's one log format (bukt/logs.py)
    try:
        return tcp.serve_tcp(cfg, bind=args.bind, workers=args.workers,
                             instance=args.instance, loop=args.loop)
    except Exception as e:
        return _logged_error("bukt.tcp", e, args)


def _logged_error(logger, exc, args) -> int:
    """The exit code for `exc` in a service process whose logging is set up: its error
    said once as a log line in log.format (a traceback for one the CLI does not know),
    not as the CLI's own error line, so a process of the service has one format."""
    import logging

    from bukt import errors
    known = explain(exc, args)
    if isinstance(exc, errors.SegmentNotFound):     # without the clients' --url hint
        known = (known[0], str(exc))
    if known is None:
        logging.getLogger(logger).error("bukt %s: %r", args.command, exc, exc_info=exc)
        return FAILED
    code, message = known
    logging.getLogger(logger).error("bukt %s: %s", args.command, message)
    return code


def _replica_follow(args):
    from bukt.replica.applier import main
    return main(args.config)


# name -> (help, add_arguments, run). A function, or "module:function" in bukt.cli.<module>,
# imported only when that subcommand runs: `bukt get` does not load the bench.
COMMANDS = {
    "serve": ("run the whole service (writer, HTTP, TCP), supervised", _serve_args, _serve),
    "writer": ("run the writer process (log, recovery, compaction, expiry)", _writer_args,
               _writer),
    "http": ("run the HTTP front end", config_arg, _http),
    "tcp": ("run the TCP front end", _tcp_args, _tcp),
    "replica-follow": ("run a read replica's applier (replica.of; `bukt serve` starts it)",
                       config_arg, _replica_follow),
    "status": ("health, memory, keys, ring, fsync lag, log size and processes",
               "ops:status_args", "ops:status"),
    "stats": ("per-bucket counters: keys, bytes, reads, writes, hit rate",
              "data:stats_args", "data:stats"),
    "get": ("print a key's value", "data:get_args", "data:get"),
    "set": ("store a value (--ttl, --nx, --xx, --single-read)", "data:set_args",
            "data:set_"),
    "del": ("delete keys", "data:del_args", "data:del_"),
    "incr": ("add to an integer value (--by, --initial)", "data:incr_args",
             "data:incr"),
    "ttl": ("a key's remaining time to live", "data:ttl_args", "data:ttl"),
    "exists": ("how many of the keys exist", "keys:exists_args", "keys:exists"),
    "expire": ("give a key a time to live", "keys:expire_args", "keys:expire"),
    "persist": ("remove a key's time to live", "keys:persist_args", "keys:persist"),
    "mget": ("print the values of several keys", "keys:mget_args", "keys:mget"),
    "mset": ("store several KEY VALUE pairs at once", "keys:mset_args", "keys:mset"),
    "scan": ("list a bucket's keys (--prefix, --match)", "keys:scan_args", "keys:scan"),
    "keys": ("list a bucket's keys (the same as scan)", "keys:scan_args", "keys:scan"),
    "flush": ("delete every key of a bucket (asks first; --yes)", "keys:flush_args",
              "keys:flush"),
    "shell": ("an interactive prompt: GET, SET, SCAN, USE, HELP ...", "shell:shell_args",
              "shell:shell"),
    "watch": ("print a bucket's changes as they happen (--prefix, --since, --json)",
              "watch:watch_args", "watch:watch"),
    "buckets": ("create, list or drop buckets", "data:buckets_args", "data:buckets"),
    "tokens": ("create, list or revoke a bucket's tokens", "data:tokens_args",
               "data:tokens"),
    "cluster": ("a twemproxy pool spreading a bucket over Bukt nodes (config, locate)",
                "cluster:cluster_args", "cluster:cluster"),
    "check": ("check the data directory and the segment (--fix repairs)",
              "ops:check_args", "ops:check"),
    "compact": ("compact the log now", "ops:compact_args", "ops:compact"),
    "dump": ("write buckets out as JSON lines or a binary snapshot", "dump:dump_args",
             "dump:dump"),
    "load": ("read a dump back in", "dump:load_args", "dump:load"),
    "bench": ("throughput and latency of a running service, TCP and HTTP",
              "bench:bench_args", "bench:bench"),
    "replica": ("a read replica's state: primary, applied sequence, lag (status)",
                "replica:replica_args", "replica:replica"),
    "promote": ("make this read replica a primary (and fence the old one)",
                "replica:promote_args", "replica:promote"),
    "unfence": ("let a fenced old primary take writes again (the operator's word)",
                "replica:unfence_args", "replica:unfence"),
}


def _resolve(fn):
    if isinstance(fn, str):
        module, name = fn.split(":")
        return getattr(importlib.import_module(f"bukt.cli.{module}"), name)
    return fn


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors follow --json (error_line) like the rest."""

    json_errors = False

    def error(self, message):
        if _Parser.json_errors:
            error_line(argparse.Namespace(json=True, command=self.prog.partition(" ")[2]
                                          or None), REFUSED, message)
            sys.exit(REFUSED)
        super().error(message)


def parser(only=None) -> argparse.ArgumentParser:
    """The parser; with `only` (a known subcommand, first on the command line), that
    subcommand alone is added: the others would only be listed, for `bukt --help` and
    a misspelt name, and building them all costs a start ~8 ms of CPU (a warm restart
    of the writer is timed from exec)."""
    from bukt import __version__
    p = _Parser(prog="bukt", description="Bukt: a shared-memory key-value cache for one "
                "host.", epilog=EXIT_CODES_HELP,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"bukt {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_, add, run) in COMMANDS.items():
        if only is not None and name != only:
            continue
        s = sub.add_parser(name, help=help_, description=help_, epilog=EXIT_CODES_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _resolve(add)(s)
        s.set_defaults(run=run)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _Parser.json_errors = "--json" in argv
    args = parser(argv[0] if argv and argv[0] in COMMANDS else None).parse_args(argv)
    args.run = _resolve(args.run)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:              # `bukt dump | head`
        sys.stderr.close()
        return 0
    except Exception as e:               # a clean line for the operator, not a traceback
        known = explain(e, args)
        if known is None:
            raise
        code, message = known
        error_line(args, code, message)
        return code


if __name__ == "__main__":
    sys.exit(main())
