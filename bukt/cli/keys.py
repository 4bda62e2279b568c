"""The rest of a bucket's data operations in `bukt`: exists, expire, persist, mget, mset,
scan (and its alias keys) and flush. Like get and set (data.py) each works attached,
over bukt:// and over http:// (bukt/cli/targets.py).

    bukt exists  -b B KEY...              how many exist (exit 3 when none)
    bukt expire  -b B KEY SECONDS         a TTL for the key (exit 3: no such key)
    bukt persist -b B KEY                 the key's TTL removed (exit 3: no such key)
    bukt mget    -b B KEY...              one value a line; (nil) where absent
    bukt mset    -b B KEY VALUE [KEY VALUE ...] [--ttl S]
    bukt scan    -b B [--prefix P] [--match GLOB] [--limit N]     one key a line
    bukt flush   -b B [--yes]             every key deleted; asks first on a terminal
"""
import base64
import fnmatch
import re
import sys

from bukt.cli.common import (NOT_FOUND, OK, REFUSED, CliError, emit, key_arg, open_target,
                             show_bytes, stdout_bytes, target_args)
from bukt.cli.targets import raw

__all__ = ["exists_args", "exists", "expire_args", "expire", "persist_args", "persist",
           "mget_args", "mget", "mset_args", "mset", "scan_args", "scan", "flush_args",
           "flush", "scan_keys", "literal_prefix"]

SCAN_PAGE = 1000            # keys asked for per round trip


def _json_value(value):
    if value is None:
        return None
    b = raw(value)
    try:
        return b.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(b).decode()}


def _ttl(text):
    try:
        ttl = float(text)
    except ValueError:
        raise CliError(REFUSED, f"{text!r} is not a number of seconds") from None
    if not ttl > 0:
        raise CliError(REFUSED, f"a TTL is a number of seconds above zero, not {text}")
    return ttl


# -- exists / expire / persist -------------------------------------------------------------

def exists_args(p):
    target_args(p)
    p.add_argument("keys", nargs="+", metavar="key")


def exists(args):
    with open_target(args) as t:
        n = t.exists(t.need_bucket(), [key_arg(k) for k in args.keys])
    emit(args, {"exists": n}, str(n))
    return OK if n else NOT_FOUND


def expire_args(p):
    target_args(p)
    p.add_argument("key")
    p.add_argument("seconds", help="the TTL: a number of seconds above zero")


def expire(args):
    ttl = _ttl(args.seconds)
    with open_target(args) as t:
        existed = t.expire(t.need_bucket(), key_arg(args.key), ttl)
    return _touched(args, existed, f"expires in {ttl:g} s")


def persist_args(p):
    target_args(p)
    p.add_argument("key")


def persist(args):
    with open_target(args) as t:
        existed = t.persist(t.need_bucket(), key_arg(args.key))
    return _touched(args, existed, "no TTL (persistent)")


def _touched(args, existed, said):
    if not existed:
        if args.json:
            emit(args, {"key": args.key, "found": False})
            return NOT_FOUND
        raise CliError(NOT_FOUND, f"no key {args.key!r}")
    emit(args, {"key": args.key, "found": True}, said)
    return OK


# -- mget / mset -----------------------------------------------------------------------------

def mget_args(p):
    target_args(p)
    p.add_argument("keys", nargs="+", metavar="key")


def mget(args):
    with open_target(args) as t:
        values = t.mget(t.need_bucket(), [key_arg(k) for k in args.keys])
    if args.json:
        emit(args, {k: _json_value(v) for k, v in zip(args.keys, values)})
    else:
        for v in values:
            stdout_bytes(b"(nil)" if v is None else raw(v), newline=True)
    return OK if any(v is not None for v in values) else NOT_FOUND


def mset_args(p):
    target_args(p)
    p.add_argument("pairs", nargs="+", metavar="KEY VALUE",
                   help="keys and values, alternating")
    p.add_argument("--ttl", type=float, metavar="S", help="expire them after S seconds")


def mset(args):
    if len(args.pairs) % 2:
        raise CliError(REFUSED, f"KEY VALUE pairs: {len(args.pairs)} words is an odd count; "
                                f"{args.pairs[-1]!r} has no value")
    mapping = {key_arg(k): key_arg(v) for k, v in zip(args.pairs[::2], args.pairs[1::2])}
    if args.ttl is not None:
        _ttl(str(args.ttl))
    with open_target(args) as t:
        versions = t.mset(t.need_bucket(), mapping, ttl=args.ttl)
    emit(args, {"stored": len(versions), "versions": versions}, f"OK, {len(versions)} stored")
    return OK


# -- scan / keys -----------------------------------------------------------------------------

def literal_prefix(glob: bytes) -> bytes:
    """The part of a glob before its first wildcard: what the scan can ask for."""
    m = re.search(rb"[*?\[\\]", glob)
    return glob if m is None else glob[:m.start()]


def scan_keys(target, bucket, prefix=b"", match=None, limit=None):
    """The keys of `bucket` that start with `prefix` and match the glob `match` (both
    bytes), page by page; at most `limit`."""
    if match is not None:
        lit = literal_prefix(match)
        if lit.startswith(prefix):
            prefix = lit
        elif not prefix.startswith(lit):
            return
    cursor, n = 0, 0
    while True:
        cursor, keys = target.scan(bucket, prefix, cursor, SCAN_PAGE)
        for k in keys:
            if match is None or fnmatch.fnmatchcase(k, match):
                yield k
                n += 1
                if limit is not None and n >= limit:
                    return
        if not cursor:
            return


def scan_args(p):
    target_args(p)
    p.add_argument("--prefix", default="", help="only keys that start with it")
    p.add_argument("--match", metavar="GLOB",
                   help="only keys that match the glob (*, ?, [abc]), as Redis's MATCH")
    p.add_argument("--limit", type=int, metavar="N", help="at most N keys")


def scan(args):
    match = key_arg(args.match) if args.match is not None else None
    found = []
    with open_target(args) as t:
        for k in scan_keys(t, t.need_bucket(), key_arg(args.prefix), match, args.limit):
            if args.json:
                found.append(k)
            else:
                stdout_bytes(k, newline=True)
    if args.json:
        emit(args, {"keys": [show_bytes(k) for k in found], "count": len(found)})
    return OK


# -- flush -----------------------------------------------------------------------------------

def flush_args(p):
    target_args(p)
    p.add_argument("-y", "--yes", action="store_true",
                   help="do not ask (needed when stdin is not a terminal)")


def flush(args):
    with open_target(args) as t:
        bucket = t.need_bucket()
        if not args.yes:
            if not sys.stdin.isatty():
                raise CliError(REFUSED, f"flush deletes every key of bucket {bucket!r}: "
                                        "confirm with --yes (stdin is not a terminal to ask)")
            sys.stderr.write(f"delete every key of bucket {bucket!r}? type its name to "
                             "confirm: ")
            sys.stderr.flush()
            if sys.stdin.readline().strip() != bucket:
                raise CliError(REFUSED, "not flushed: the answer was not the bucket's name")
        n = t.flush(bucket)
    emit(args, {"bucket": bucket, "deleted": n}, f"{n} deleted")
    return OK
