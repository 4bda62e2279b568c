"""`bukt`: one command, many subcommands.

    bukt writer  [--config PATH] [--cold]     the writer process (bukt/writer.py)
    bukt check   [--config PATH] [--fix]      check (and repair) the data directory and
                                              the segment's table
    bukt compact [--config PATH] [--wait S]   ask the running writer to compact now
    bukt status  [--config PATH]              the writer's progress, from the segment
    bukt tcp ...                              the TCP front end (bukt/tcp)
    bukt http    [--config PATH]              the HTTP front end (bukt/http)

COMMANDS below is the table of subcommands: a name, a one-line help, a function that
adds the subcommand's arguments, and one that runs it with the parsed arguments and
returns the exit code. Adding a subcommand is adding a row. A subcommand whose module
parses its own arguments (tcp) is given the rest of the command line untouched.

Exit codes: 0 done; 1 failed, or problems found; 2 refused (bad configuration, a data
directory that needs an operator).
"""
import argparse
import json
import os
import signal
import sys
import time

__all__ = ["main", "COMMANDS"]


def _config_arg(p):
    p.add_argument("--config", help="bukt.yaml (default: $BUKT_CONFIG, else built-in "
                                    "defaults)")


def _load(args):
    from . import config
    return config.load(args.config)


# -- writer ------------------------------------------------------------------------------

def _writer_args(p):
    _config_arg(p)
    p.add_argument("--cold", action="store_true",
                   help="recover from disk even if the segment survived")


def _writer(args):
    from . import writer
    argv = (["--config", args.config] if args.config else []) + (["--cold"] if args.cold else [])
    return writer.main(argv)


# -- check -------------------------------------------------------------------------------

def _check_args(p):
    _config_arg(p)
    p.add_argument("--fix", action="store_true",
                   help="repair: cut damaged logs at their last good record (the rest is "
                        "kept as <file>.bad-<time>), rewrite damaged base files; the "
                        "writer must be stopped")
    p.add_argument("--data-dir", help="overrides data_dir")


def _check(args):
    from . import datadir, writer
    from .errors import BuktError
    cfg = _load(args)
    path = args.data_dir or cfg.data_dir
    bad = False
    if not os.path.isdir(path):
        print(f"{path}: no data directory (a fresh instance)")
    else:
        try:
            reports = datadir.check(path)
        except datadir.RecoveryError as e:
            print(e)
            return 2
        for r in reports:
            state = "ok" if not r.problems and not r.error else "DAMAGED"
            print(f"{r.path}: {r.kind}, {r.records} records, {r.size} bytes: {state}")
            if r.error:
                print(f"  {r.error}")
            for p in r.problems:
                kind = "truncated tail" if p.truncated else "corrupt"
                print(f"  bytes {p.offset}-{p.end}: {kind}: {p.reason}")
            bad = bad or bool(r.problems or r.error)
        if args.fix and bad:
            try:
                done = datadir.fix(path)
            except datadir.RecoveryError as e:
                print(f"not fixed: {e}")
                return 2
            for r in done:
                print(f"fixed {r.path}: cut at byte {r.cut_at}, {r.removed} bytes kept in "
                      f"{r.side_file} ({r.reason})")
            if done and writer.remove_tie(path):
                print("the logs changed: the next `bukt writer` start recovers from disk "
                      "(cold)")
            bad = False
    try:
        import bukt
        store = bukt.attach(cfg.instance)
    except BuktError as e:
        print(f"segment: {e}")
    else:
        try:
            problems = store.check()
            print(f"segment /dev/shm/bukt-{cfg.instance}: "
                  + ("ok" if not problems else f"{len(problems)} problems"))
            for p in problems:
                print(f"  {p}")
            bad = bad or bool(problems)
        finally:
            store.close()
    return 1 if bad else 0


# -- compact -----------------------------------------------------------------------------

def _compact_args(p):
    _config_arg(p)
    p.add_argument("--wait", type=float, default=300.0,
                   help="seconds to wait for the new base file (0: do not wait)")


def _compact(args):
    import bukt
    from . import datadir
    from .errors import BuktError
    cfg = _load(args)
    try:
        store = bukt.attach(cfg.instance, readonly=True)
    except BuktError as e:
        print(f"bukt compact: {e}", file=sys.stderr)
        return 1
    try:
        info = store.writer_info()
    finally:
        store.close()
    if not info["alive"]:
        print("bukt compact: no writer process is running", file=sys.stderr)
        return 1
    before = datadir.read_manifest(cfg.data_dir)
    os.kill(info["pid"], signal.SIGUSR1)
    if args.wait <= 0:
        return 0
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        m = datadir.read_manifest(cfg.data_dir)
        if m is not None and m.base and (before is None or m.base != before.base):
            print(f"compacted: {os.path.join(cfg.data_dir, m.base)}")
            return 0
        time.sleep(0.05)
    print(f"bukt compact: no new base file within {args.wait:g} s; see the writer's log",
          file=sys.stderr)
    return 1


# -- status ------------------------------------------------------------------------------

def _status_args(p):
    _config_arg(p)


def _status(args):
    import bukt
    from .errors import BuktError
    cfg = _load(args)
    try:
        store = bukt.attach(cfg.instance, readonly=True)
    except BuktError as e:
        print(f"bukt status: {e}", file=sys.stderr)
        return 1
    try:
        info = store.writer_info()
    finally:
        store.close()
    print(json.dumps(info, indent=2, sort_keys=True))
    return 0 if info["alive"] and info["ready"] and not info["error"] else 1


# -- front ends (their modules parse their own arguments) -------------------------------

def _tcp(args):
    from . import tcp
    return tcp.main(args.rest)


def _http_args(p):
    _config_arg(p)


def _http(args):
    from . import config
    from .http import serve_http
    serve_http(config.load(args.config))
    return 0


def _passthrough(p):
    p.add_argument("rest", nargs=argparse.REMAINDER)


# name -> (help, add_arguments, run)
COMMANDS = {
    "writer": ("run the writer process (log, recovery, compaction, expiry)", _writer_args,
               _writer),
    "check": ("check the data directory and the segment (--fix repairs)", _check_args,
              _check),
    "compact": ("ask the running writer to compact the log now", _compact_args, _compact),
    "status": ("the writer's progress and errors, from the segment", _status_args, _status),
    "tcp": ("run the TCP front end (bukt tcp --help)", _passthrough, _tcp),
    "http": ("run the HTTP front end", _http_args, _http),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and COMMANDS.get(argv[0], (None, None))[1] is _passthrough:
        # the module parses its own arguments, --help included
        return COMMANDS[argv[0]][2](argparse.Namespace(rest=argv[1:]))
    parser = argparse.ArgumentParser(prog="bukt", description="Bukt: a shared-memory "
                                     "key-value cache for one host.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_, add, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_,
                           add_help=add is not _passthrough)
        add(p)
        p.set_defaults(run=run)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:           # a clean line for the operator, not a traceback
        from .config import ConfigError
        if isinstance(e, ConfigError):
            print(f"bukt {args.command}: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
