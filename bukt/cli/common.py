"""What every `bukt` subcommand shares: exit codes, common options, output, and the
one-line error that says what to do.

EXIT CODES (also in `bukt --help` and the README):

    0  done; `status`: healthy
    1  failed: the message says why; `check` found problems; `status`: unhealthy
    2  refused: bad usage or configuration (argparse's own code too)
    3  not found: no such key, bucket or token; a set whose --nx / --xx did not hold
    4  unreachable: the service is stopped (no segment here, or no live writer process
       on it: `status`, `compact`, a write), or nothing answers at the URL
    5  not allowed: no token, a wrong one, or one without the permission; or the OS
       refused access to the segment
"""
import errno
import json
import os
import sys

from bukt import errors

__all__ = ["OK", "FAILED", "REFUSED", "NOT_FOUND", "UNREACHABLE", "DENIED", "CliError",
           "config_arg", "target_args", "json_arg", "load_config", "open_target", "emit",
           "explain", "human_bytes", "table", "EXIT_CODES_HELP", "key_arg", "show_bytes",
           "data_dir_of", "segment_writer", "error_line"]

OK, FAILED, REFUSED, NOT_FOUND, UNREACHABLE, DENIED = 0, 1, 2, 3, 4, 5

EXIT_CODES_HELP = """exit codes: 0 done (status: healthy); 1 failed (check: problems found; status:
unhealthy); 2 bad usage or configuration; 3 not found (key, bucket, token, or an --nx/--xx
set that did not hold); 4 unreachable (the service is stopped: no segment or no writer
here, or nothing answers at the URL); 5 not allowed (token or OS permission). Errors are
one line on stderr; with --json, a JSON object {"error", "exit_code", "command"}."""


class CliError(Exception):
    """A command's failure with its exit code and one line for the operator."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


# -- options --------------------------------------------------------------------------------

def config_arg(p):
    p.add_argument("--config", metavar="PATH",
                   help="bukt.yaml (default: $BUKT_CONFIG, else built-in defaults)")


def json_arg(p):
    p.add_argument("--json", action="store_true", help="machine-readable output (JSON)")


def target_args(p, bucket=True):
    config_arg(p)
    g = p.add_argument_group("where", "local (attached to this host's segment) unless --url "
                                      "names a server")
    g.add_argument("--url", metavar="URL",
                   help="bukt://BUCKET:TOKEN@HOST:PORT (TCP), bukt://:ADMIN_TOKEN@HOST:PORT "
                        "(TCP admin session) or http://HOST:PORT (with --token)")
    if bucket:
        g.add_argument("-b", "--bucket", help="the bucket (over TCP: the URL's)")
    g.add_argument("--token", help="token for --url (instead of putting it in the URL)")
    g.add_argument("--timeout", type=float, default=5.0, metavar="S",
                   help="seconds to wait for a server (default 5)")
    json_arg(p)


def action(sub, name, help_):
    """A second-level subcommand (`bukt buckets create`) with the help every command
    has: its description and the exit codes."""
    import argparse
    return sub.add_parser(name, help=help_, description=help_, epilog=EXIT_CODES_HELP,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def key_arg(text: str) -> bytes:
    """A key from the command line: its bytes as the OS gave them."""
    return os.fsencode(text)


def load_config(args):
    from bukt import config
    return config.load(getattr(args, "config", None))


def segment_writer(instance):
    """The writer_info() of this host's segment for `instance` (read-only), or None
    when there is no segment or it cannot be read."""
    import bukt
    try:
        store = bukt.attach(instance, readonly=True)
    except (errors.BuktError, PermissionError):
        return None
    try:
        return store.writer_info()
    finally:
        store.close()


def data_dir_of(cfg, override=None, writer=None):
    """(the absolute data directory a command acts on, where it comes from). A data
    directory named explicitly (`override`, e.g. --data-dir; the configuration file,
    where a relative path is the file's; BUKT_DATA_DIR) wins; else the one the writer
    that claimed the segment published (`writer`: its writer_info(), read here when
    None), so a command run from any directory finds the service's; else the built-in
    default, from the current directory."""
    if override:
        return os.path.abspath(override), "--data-dir"
    source = cfg.source("data_dir")
    if source is not None:
        return os.path.abspath(cfg.data_dir), source
    if writer is None:
        writer = segment_writer(cfg.instance)
    if writer and writer.get("data_dir"):
        return writer["data_dir"], f"the writer of segment /dev/shm/bukt-{cfg.instance}"
    return os.path.abspath(cfg.data_dir), "the built-in default (in the current directory)"


def open_target(args):
    from bukt.cli.targets import open_target as _open
    return _open(getattr(args, "url", None), config=lambda: load_config(args),
                 bucket=getattr(args, "bucket", None), token=getattr(args, "token", None),
                 timeout=getattr(args, "timeout", 5.0))


# -- output ---------------------------------------------------------------------------------

def emit(args, data, human=None) -> None:
    """`data` as JSON with --json; else `human` (a string, or a callable printing)."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=None if isinstance(data, (list, dict)) and
                         len(json.dumps(data)) < 100 else 1, sort_keys=True, default=str))
    elif callable(human):
        human()
    elif human is not None:
        print(human)


def show_bytes(value) -> str:
    """A key or value for a person: text when it is UTF-8, else a Python bytes literal."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return repr(value)
    return str(value)


def human_bytes(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def table(headers, rows) -> str:
    """A plain text table; numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(isinstance(r[i], (int, float)) for r in rows) and rows
               for i in range(len(headers))]
    out = []
    for r in cells:
        out.append("  ".join(c.rjust(w) if numeric[i] else c.ljust(w)
                             for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    return "\n".join(out)


def _cell(v):
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "-" if v is None else str(v)


# -- errors ---------------------------------------------------------------------------------

def explain(exc, args) -> tuple:
    """(exit code, one line saying what went wrong and what to do) for an exception, or
    None when it is not one the CLI knows (a bug: the traceback is shown)."""
    import socket

    from bukt.config import ConfigError
    from bukt.cli.targets import TargetError
    url = _redact(getattr(args, "url", None))
    if isinstance(exc, CliError):
        return exc.code, str(exc)
    if isinstance(exc, ConfigError):
        return REFUSED, str(exc)
    if isinstance(exc, TargetError):
        return REFUSED, str(exc)
    if isinstance(exc, errors.SegmentNotFound):
        return UNREACHABLE, f"{exc}; or reach a server with --url"
    if isinstance(exc, (errors.AuthError,)):
        return DENIED, (f"{exc}: give a token of the bucket (bukt://BUCKET:TOKEN@HOST:PORT "
                        "or --token); bucket and token admin needs the admin token "
                        "(data_dir/admin.token)")
    if isinstance(exc, errors.PermissionDenied):
        return DENIED, f"{exc}: use a token with that permission (`bukt tokens create`)"
    if isinstance(exc, errors.BucketNotFound):
        return NOT_FOUND, f"{exc}: `bukt buckets list` shows the buckets"
    if isinstance(exc, errors.NotFound):
        return NOT_FOUND, str(exc)
    if isinstance(exc, errors.WriterDown):       # a stopped service, as status says it
        return UNREACHABLE, f"{exc}: start the service (bukt serve); `bukt status` says more"
    if isinstance(exc, (errors.RingFull, errors.SegmentRetired)):
        return FAILED, f"{exc}: is the writer running? `bukt status` says"
    if isinstance(exc, errors.InvalidArgument):
        return REFUSED, str(exc)
    if isinstance(exc, errors.SegmentDenied):
        return DENIED, (f"{exc}: run as the service's user (sudo -u bukt ...), or let a "
                        "group attach (segment.mode: 0660)")
    if isinstance(exc, errors.BuktError):
        return FAILED, str(exc)
    if isinstance(exc, PermissionError):
        where = str(exc.filename or "")
        if where and not where.startswith(("/dev/shm/", "/bukt-")):
            # a file of the data directory (or another local file): segment.mode is
            # no help there; the directory is the service user's
            return DENIED, (f"{exc.strerror}: {where}: the data directory belongs to the "
                            "service's user: run as it (sudo -u bukt ...)")
        return DENIED, (f"{exc.strerror}: {where or 'the segment'}: run as the "
                        "service's user (sudo -u bukt ...), or let a group attach "
                        "(segment.mode: 0660)")
    if isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
        return UNREACHABLE, (f"cannot connect to {url or 'the server'}: {exc.strerror or exc}"
                             "; is `bukt serve` running there (tcp.bind, http.bind)?")
    if isinstance(exc, TimeoutError):
        return UNREACHABLE, (f"no answer from {_where(args) or 'the server'} within "
                             f"{getattr(args, 'timeout', 5):g} s; raise --timeout, or check "
                             "`bukt status` there")
    if isinstance(exc, FileNotFoundError):
        return FAILED, f"{exc.strerror}: {exc.filename}"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" ({exc.filename})" if exc.filename else ""
        return FAILED, (f"the disk is full{where}: {exc.strerror}; free space there "
                        "(df -h), or choose another data_dir")
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return FAILED, (f"{exc.strerror}: another process listens on that address; stop "
                        "it, or choose another bind")
    if isinstance(exc, OSError) and exc.filename:           # a local file, not a server
        return FAILED, f"{exc.strerror}: {exc.filename}"
    if isinstance(exc, OSError):
        return UNREACHABLE, f"{url or 'the server'}: {exc}; is `bukt serve` running there?"
    import http.client
    if isinstance(exc, http.client.HTTPException):
        return UNREACHABLE, f"{url}: not an HTTP answer ({exc!r}); is it Bukt's HTTP port?"
    return None


def _where(args):
    """HOST:PORT of the command's --url (or the URL without its token)."""
    url = getattr(args, "url", None)
    if not url:
        return None
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(url)
        port = parts.port or {"bukt": 7071, "http": 80, "https": 443}.get(parts.scheme)
        return f"{parts.hostname or '127.0.0.1'}:{port}"
    except ValueError:
        return _redact(url)


def error_line(args, code, message) -> None:
    """The one error line on stderr: `bukt CMD: message`, or with --json a JSON object
    {"error", "exit_code", "command"} that a script can parse as it parses the output."""
    command = getattr(args, "command", None)
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "exit_code": code, "command": command}),
              file=sys.stderr)
    else:
        print(f"bukt {command}: {message}" if command else f"bukt: {message}",
              file=sys.stderr)


def _redact(url):
    """The URL without its token: error lines end up in logs."""
    if not url or "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[1]}"


def fail(code, message):
    raise CliError(code, message)


def stdout_bytes(data: bytes, newline=None) -> None:
    """Raw bytes on stdout; a newline after them when stdout is a terminal."""
    out = sys.stdout.buffer
    out.write(data)
    if newline if newline is not None else sys.stdout.isatty():
        out.write(b"\n")
    out.flush()
