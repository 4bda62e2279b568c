"""The data commands of `bukt`: get, set, del, incr, ttl, buckets, tokens, stats.

Each works attached to this host's segment (the default: the OS permissions on the
segment are the only check) or against a server named by --url (bukt/cli/targets.py).
Each pair below is (add the arguments, run); bukt/cli/__init__.py lists them in COMMANDS.
"""
import base64
import sys

from bukt.cli.common import (NOT_FOUND, OK, REFUSED, CliError, action, emit, human_bytes,
                             key_arg, open_target, show_bytes, stdout_bytes, table, target_args)
from bukt._core import SCHEMAS
from bukt.cli.targets import perm_names, perms_from_names, raw
from bukt.tokens import new_token, read_given

TOKEN_FILE_HELP = ("register this token instead of making one: the first line of PATH, "
                   "or of stdin for -, shaped as Bukt makes them (`bukt tokens new`); the "
                   "same token on every node behind a proxy (docs/scale-out.md)")


def _given(args):
    """The token --token-file names, or None; a bad one is refused (exit 2)."""
    path = getattr(args, "token_file", None)
    if path is None:
        return None
    try:
        return read_given(path)
    except ValueError as e:
        raise CliError(REFUSED, f"--token-file {path}: {e}") from None


def _value_json(value):
    """A value in JSON output: text when the bucket returns text or the bytes are UTF-8,
    else base64 (with "encoding": "base64")."""
    if isinstance(value, int):
        return {"value": value}
    if isinstance(value, str):
        return {"value": value}
    try:
        return {"value": value.decode()}
    except UnicodeDecodeError:
        return {"value": base64.b64encode(value).decode(), "encoding": "base64"}


# -- get / set / del / incr / ttl --------------------------------------------------------------

def get_args(p):
    target_args(p)
    p.add_argument("key")


def get(args):
    key = key_arg(args.key)
    with open_target(args) as t:
        value = t.get(t.need_bucket(), key)
    if value is None:
        if args.json:
            emit(args, {"key": args.key, "found": False})
            return NOT_FOUND
        raise CliError(NOT_FOUND, f"no key {args.key!r} in bucket {args.bucket or t.bucket!r}")
    if args.json:
        emit(args, {"key": args.key, "found": True, **_value_json(value)})
    else:
        stdout_bytes(raw(value))
    return OK


def set_args(p):
    target_args(p)
    p.add_argument("key")
    p.add_argument("value", nargs="?", help="the value; omit it or give - to read stdin")
    p.add_argument("--file", metavar="PATH", help="read the value from a file")
    p.add_argument("--ttl", type=float, metavar="S", help="expire after S seconds")
    cond = p.add_mutually_exclusive_group()
    cond.add_argument("--nx", action="store_true", help="only if the key is absent")
    cond.add_argument("--xx", action="store_true", help="only if the key is present")
    p.add_argument("--single-read", action="store_true",
                   help="the first read that returns it deletes it")


def set_(args):
    if args.file:
        with open(args.file, "rb") as f:
            value = f.read()
    elif args.value is None or args.value == "-":
        value = sys.stdin.buffer.read()
    else:
        value = key_arg(args.value)
    with open_target(args) as t:
        version = t.set(t.need_bucket(), key_arg(args.key), value, ttl=args.ttl, nx=args.nx,
                        xx=args.xx, single_read=args.single_read)
    if version is None:
        why = "the key exists (--nx)" if args.nx else "the key does not exist (--xx)"
        if args.json:
            emit(args, {"key": args.key, "stored": False})
            return NOT_FOUND
        raise CliError(NOT_FOUND, f"not stored: {why}")
    emit(args, {"key": args.key, "stored": True, "version": version},
         f"OK, version {version}")
    return OK


def del_args(p):
    target_args(p)
    p.add_argument("keys", nargs="+", metavar="key")


def del_(args):
    with open_target(args) as t:
        n = t.delete(t.need_bucket(), [key_arg(k) for k in args.keys])
    emit(args, {"deleted": n}, f"{n} deleted")
    return OK if n else NOT_FOUND


def incr_args(p):
    target_args(p)
    p.add_argument("key")
    p.add_argument("--by", type=int, default=1, help="the step (negative to decrement)")
    p.add_argument("--initial", type=int, default=0,
                   help="the value before the first step of an absent key (default 0)")
    p.add_argument("--ttl", type=float, metavar="S", help="TTL of a key this creates")


def incr(args):
    with open_target(args) as t:
        value = t.incr(t.need_bucket(), key_arg(args.key), by=args.by, initial=args.initial,
                       ttl=args.ttl)
    emit(args, {"key": args.key, "value": value}, str(value))
    return OK


def ttl_args(p):
    target_args(p)
    p.add_argument("key")


def ttl(args):
    with open_target(args) as t:
        exists, seconds = t.ttl(t.need_bucket(), key_arg(args.key))
    if not exists:
        if args.json:
            emit(args, {"key": args.key, "found": False})
            return NOT_FOUND
        raise CliError(NOT_FOUND, f"no key {args.key!r}")
    emit(args, {"key": args.key, "found": True, "ttl": seconds},
         "no TTL (persistent)" if seconds is None else f"{seconds:.3f}")
    return OK


# -- buckets ---------------------------------------------------------------------------------

def buckets_args(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    c = action(sub, "create", "create a bucket; prints its first token (once)")
    target_args(c, bucket=False)
    c.add_argument("name")
    c.add_argument("--schema", choices=SCHEMAS, default="bytes",
                   help="what values are: bytes; int (decimal, 64-bit); str (UTF-8); json "
                        "(a JSON document, validated on write)")
    c.add_argument("--eviction", choices=("lru", "none"), default="lru",
                   help="lru: forget the least recently used keys when full; none: refuse")
    c.add_argument("--cache-only", action="store_true",
                   help="not logged to disk: lost when the service restarts cold")
    c.add_argument("--default-ttl", type=float, metavar="S")
    c.add_argument("--max-memory", metavar="SIZE",
                   help="memory its entries may take (e.g. 64MiB); at it, an lru bucket "
                        "evicts its own keys and a none bucket refuses (default: no limit)")
    c.add_argument("--compression", choices=("none", "zstd", "lz4"), default=None,
                   help="store values compressed (docs/api.md, Compression; default: none)")
    c.add_argument("--compression-threshold", metavar="SIZE",
                   help="smaller values are stored raw (default 1KiB)")
    c.add_argument("--compression-min-saving", type=int, metavar="PERCENT",
                   help="a value that compresses by less is stored raw (default 10)")
    c.add_argument("--token-file", metavar="PATH", help=TOKEN_FILE_HELP)
    ls = action(sub, "list", "the buckets and their settings")
    target_args(ls, bucket=False)
    d = action(sub, "drop", "delete a bucket, its keys and its tokens")
    target_args(d, bucket=False)
    d.add_argument("name")


def buckets(args):
    given = _given(args) if args.action == "create" else None
    with open_target(args) as t:
        if args.action == "create":
            tid, token = t.create_bucket(args.name, token=given, schema=args.schema,
                                         eviction=args.eviction, persist=not args.cache_only,
                                         default_ttl=args.default_ttl,
                                         **({"max_memory": args.max_memory}
                                            if args.max_memory else {}),
                                         **{k: v for k, v in (
                                             ("compression", args.compression),
                                             ("compression_threshold",
                                              args.compression_threshold),
                                             ("compression_min_saving",
                                              args.compression_min_saving))
                                            if v is not None})
            if given is not None:
                emit(args, {"name": args.name, "token_id": tid, "token_file": args.token_file,
                            "permissions": ["read", "write", "admin"]},
                     f"bucket {args.name} created with the token of {args.token_file} "
                     "(read, write, admin)")
            else:
                emit(args, {"name": args.name, "token": token, "token_id": tid,
                            "permissions": ["read", "write", "admin"]},
                     f"bucket {args.name} created\n"
                     f"token (read, write, admin; shown only now): {token}")
        elif args.action == "list":
            rows = []
            for name in t.buckets():
                info = t.bucket_info(name)
                rows.append({"name": name, **{k: info.get(k) for k in
                                              ("schema", "eviction", "persist",
                                               "default_ttl", "max_memory",
                                               "compression")}})
            emit(args, rows, lambda: print(table(
                ["bucket", "schema", "eviction", "persist", "default_ttl", "max_memory",
                 "compression"],
                [[r["name"], r["schema"], r["eviction"],
                  "logged" if r["persist"] else "cache-only",
                  "-" if r["default_ttl"] is None else f"{r['default_ttl']:g} s",
                  "-" if not r["max_memory"] else str(r["max_memory"]),
                  r["compression"] or "none"]
                 for r in rows]) if rows else print("no buckets")))
        else:
            t.drop_bucket(args.name)
            emit(args, {"dropped": args.name}, f"bucket {args.name} dropped")
    return OK


# -- tokens ----------------------------------------------------------------------------------

def tokens_args(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    c = action(sub, "create", "a new token of the bucket; printed once")
    target_args(c)
    c.add_argument("--perms", default="read,write", metavar="LIST",
                   help="comma-separated: read, write, admin (default read,write)")
    c.add_argument("--token-file", metavar="PATH", help=TOKEN_FILE_HELP)
    n = action(sub, "new", "print a new random token, registered nowhere (for "
                           "--token-file on each node)")
    n.set_defaults(bucket=None, url=None)
    ls = action(sub, "list", "the bucket's token ids and permissions")
    target_args(ls)
    r = action(sub, "revoke", "revoke a token by its id")
    target_args(r)
    r.add_argument("id", type=int)


def tokens(args):
    if args.action == "new":
        print(new_token())
        return OK
    given = _given(args) if args.action == "create" else None
    with open_target(args) as t:
        bucket = t.need_bucket()
        if args.action == "create":
            perms = perms_from_names([p.strip() for p in args.perms.split(",") if p.strip()])
            tid, token = t.create_token(bucket, perms, given)
            names = ", ".join(perm_names(perms))
            if given is not None:
                emit(args, {"bucket": bucket, "id": tid, "token_file": args.token_file,
                            "permissions": perm_names(perms)},
                     f"token {tid} of {bucket} ({names}) registered from {args.token_file}")
            else:
                emit(args, {"bucket": bucket, "id": tid, "token": token,
                            "permissions": perm_names(perms)},
                     f"token {tid} of {bucket} ({names}; shown only now): {token}")
        elif args.action == "list":
            rows = [{"id": i, "permissions": perm_names(p)} for i, p in t.tokens(bucket)]
            emit(args, rows, lambda: print(table(
                ["id", "permissions"], [[r["id"], ",".join(r["permissions"])] for r in rows])
                if rows else print(f"{bucket} has no tokens")))
        else:
            if not t.revoke_token(bucket, args.id):
                raise CliError(NOT_FOUND, f"bucket {bucket!r} has no token {args.id}")
            emit(args, {"revoked": args.id}, f"token {args.id} of {bucket} revoked")
    return OK


# -- stats -----------------------------------------------------------------------------------

STATS_COLUMNS = ("keys", "bytes", "reads", "writes", "hits", "misses", "evictions",
                 "expirations", "integrity_errors")


def stats_args(p):
    target_args(p)


def stats(args):
    with open_target(args) as t:
        names = [args.bucket] if args.bucket else \
            [t.bucket] if t.kind == "tcp" and t.bucket else t.buckets()
        rows = {name: t.bucket_stats(name) for name in names}
    if args.json:
        emit(args, rows)
        return OK
    if not rows:
        print("no buckets")
        return OK
    out = []
    for name, s in rows.items():
        looked = s.get("hits", 0) + s.get("misses", 0)
        out.append([name, s.get("keys", 0), human_bytes(s.get("bytes", 0)),
                    *(s.get(c, 0) for c in STATS_COLUMNS[2:6]),
                    f"{100 * s['hits'] / looked:.1f}%" if looked else "-",
                    *(s.get(c, 0) for c in STATS_COLUMNS[6:]),
                    human_bytes(s.get("bytes_saved", 0))])
    print(table(["bucket", "keys", "bytes", "reads", "writes", "hits", "misses", "hit rate",
                 "evictions", "expirations", "damaged", "saved"], out))
    return OK


__all__ = ["get_args", "get", "set_args", "set_", "del_args", "del_", "incr_args", "incr",
           "ttl_args", "ttl", "buckets_args", "buckets", "tokens_args", "tokens",
           "stats_args", "stats", "show_bytes"]
