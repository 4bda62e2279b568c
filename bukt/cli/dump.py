"""`bukt dump` and `bukt load`: move buckets out of a service and into one.

TWO FORMATS

JSON lines (the default; locally or over --url): one object per line, a header first,
then each bucket's settings before its keys. Keys are text when they are UTF-8
(`key_b64` otherwise); values are always base64; expiry is absolute, in milliseconds
since the epoch, so a key that expired between dump and load stays gone:

    {"format": "bukt-dump", "version": 1, "created_ms": 1795310864056}
    {"bucket": "sessions", "settings": {"schema": "bytes", "eviction": "lru",
                                        "persist": true, "default_ttl": 3600.0}}
    (one line in the file)
    {"bucket": "sessions", "key": "user:42", "value": "aGVsbG8=", "expires_at_ms": 1795314464056}
    {"bucket": "sessions", "key_b64": "/w==", "value": "", "expires_at_ms": 0, "single_read": true}

An attached dump writes entries as stored: an object's manifest and hidden chunks, a
compressed value, each with "flags", its object bits (bukt._core ENTRY_MANIFEST 8,
ENTRY_HIDDEN 16, ENTRY_ZSTD 32, ENTRY_LZ4 64); an attached load puts them back as
they were. Such lines load attached only (over --url they are refused: the
server's API takes values, not stored entries); a dump over --url reads values, so
it holds none.

Snapshot (`--format snapshot`, attached only): a base file, the format compaction
writes (docs/operations.md: checksummed records between a header and a footer):
bucket definitions, token hashes and every entry with its flags and expiry. Cache-only
buckets are included (a compaction's base leaves their keys out).

WHAT A LOAD DOES: a bucket that does not exist is created with the dump's settings (and,
from a snapshot, gets the dump's tokens back); an existing bucket keeps its settings and
tokens. Keys are written over whatever the bucket holds; other keys stay. `--into NAME`
loads every entry into one bucket.

LIMITS: a dump over --url reads each value with GET, so it consumes single-read keys
(HEAD never does, but carries no value); dump attached to keep them. A dump is not a
point-in-time image: writes that race it may or may not be in it.
"""
import base64
import json
import os
import sys
import time

from bukt import codec
from bukt.errors import IntegrityError
from bukt.cli.common import OK, REFUSED, CliError, emit, open_target, target_args
from bukt.cli.progress import Progress
from bukt.cli.targets import LocalTarget, TcpTarget, raw
from bukt._core import ENTRY_FLAGS as CORE_FLAGS, ENTRY_SINGLE as CORE_SINGLE
from bukt.writer import BASE_MAGIC as SNAPSHOT_MAGIC   # a snapshot is a base file

__all__ = ["dump_args", "dump", "load_args", "load", "SNAPSHOT_MAGIC"]

HEADER = {"format": "bukt-dump", "version": 1}
SCAN_COUNT = 500            # keys per scan page and per mget over --url
LOAD_BATCH = 256            # sets per round trip when loading over --url
# a bucket's settings as bucket_info names them: dumped, and given to create_bucket
BUCKET_SETTINGS = ("schema", "eviction", "persist", "default_ttl", "max_memory",
                   "compression", "compression_threshold", "compression_min_saving")


def _now_ms():
    return int(time.time() * 1000)


# -- dump ------------------------------------------------------------------------------------

def dump_args(p):
    target_args(p)
    p.add_argument("-o", "--output", metavar="FILE", help="where to write (default stdout)")
    p.add_argument("--format", choices=("jsonl", "snapshot"), default="jsonl")
    p.add_argument("--all", action="store_true", help="every bucket (the default without -b)")


def dump(args):
    snapshot = args.format == "snapshot"
    if snapshot and (args.url or not args.output):
        raise CliError(REFUSED, "--format snapshot needs -o FILE and works attached only "
                                "(no --url); use the default JSON lines over --url")
    with open_target(args) as t:
        if snapshot:
            n = _dump_snapshot(t, args.bucket, args.output)
        else:
            out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
            try:
                n = _dump_jsonl(t, args.bucket, out)
            finally:
                if args.output:
                    out.close()
    if args.output:
        emit(args, {"keys": n, "file": args.output}, f"dumped {n} keys to {args.output}")
    return OK


OBJECT_BITS = CORE_FLAGS & ~CORE_SINGLE     # what "flags" holds (manifest, hidden, codecs)


def _entry_line(bucket, key, value, expire_ms, single, flags=0):
    d = {"bucket": bucket}
    try:
        d["key"] = key.decode()
    except UnicodeDecodeError:
        d["key_b64"] = base64.b64encode(key).decode()
    d["value"] = base64.b64encode(value).decode()
    d["expires_at_ms"] = expire_ms
    if single:
        d["single_read"] = True
    if flags & OBJECT_BITS:
        d["flags"] = flags & OBJECT_BITS
    return json.dumps(d, separators=(",", ":"))


def _local_entries(store, names, progress):
    """(bucket, key, raw value, expire_ms, flags) of live entries of `names`."""
    from bukt.writer import DUMP_STRIPES
    progress.total = 1 << 32                    # dump_stripes' cursor runs to 2^32
    start, now = 0, _now_ms()
    while True:
        entries, nxt = store.dump_stripes(start, DUMP_STRIPES)
        for name, key, value, expire_ms, flags, _ in entries:
            if name in names and not (0 < expire_ms <= now):
                yield name, key, value, expire_ms, flags
        progress.set(nxt or progress.total)
        if nxt == 0:
            return
        start = nxt


def _live_table(store, wanted):
    from bukt.writer import read_table
    from bukt import errors
    table = {s.name: s for s in read_table(store) if s.state == 1}
    if wanted and wanted not in table:
        raise errors.BucketNotFound(f"no bucket {wanted!r}")
    return {n: s for n, s in table.items() if not wanted or n == wanted}


def _dump_jsonl(t, wanted, out) -> int:
    out.write(json.dumps({**HEADER, "created_ms": _now_ms()}) + "\n")
    n = 0
    if isinstance(t, LocalTarget):
        table = _live_table(t.store, wanted)
        for name, slot in table.items():
            out.write(json.dumps({"bucket": name, "settings": slot.settings}) + "\n")
        damaged = 0
        with Progress("dump", unit="stripes") as p:
            for name, key, value, expire_ms, flags in _local_entries(t.store, table, p):
                if flags & codec.FLAGS:     # a dump holds values as they were set
                    try:
                        value = codec.decode_entry(t.store.bucket(name), key, value, flags)
                        flags &= ~codec.FLAGS
                    except IntegrityError as e:
                        # kept as stored, its flags with it: a load attached puts it
                        # back as it was (and a read of it still refuses it)
                        print(f"bukt dump: {e}: dumped as stored", file=sys.stderr)
                        damaged += 1
                out.write(_entry_line(name, key, value, expire_ms, flags & CORE_SINGLE,
                                      flags) + "\n")
                n += 1
        if damaged:
            print(f"bukt dump: {damaged} compressed value(s) failed their checksum",
                  file=sys.stderr)
        return n
    names = [wanted] if wanted else [t.bucket] if isinstance(t, TcpTarget) and t.bucket \
        else t.buckets()
    for name in names:
        info = t.bucket_info(name)
        settings = {k: info.get(k) for k in BUCKET_SETTINGS}
        out.write(json.dumps({"bucket": name, "settings": settings}) + "\n")
        with Progress(f"dump {name}", total=t.bucket_stats(name).get("keys"),
                      unit="keys") as p:
            cursor = 0
            while True:
                cursor, keys = t.scan(name, b"", cursor, SCAN_COUNT)
                if keys:
                    values = t.mget(name, keys)
                    ttls = t.ttls(name, keys)
                    now = _now_ms()
                    for k, v, ttl in zip(keys, values, ttls):
                        if v is None:
                            continue            # deleted or expired since the scan
                        exp = now + int(ttl * 1000) if ttl is not None else 0
                        out.write(_entry_line(name, k, raw(v), exp, False) + "\n")
                        n += 1
                    p.advance(len(keys))
                if cursor == 0:
                    break
    return n


def _dump_snapshot(t, wanted, path) -> int:
    from bukt.writer import Record, log_flags, write_base
    if not isinstance(t, LocalTarget):
        raise CliError(REFUSED, "--format snapshot works attached only")
    table = _live_table(t.store, wanted)
    count = [0]

    def records():
        for name, slot in table.items():
            yield Record.bucket_create(0, name, slot.settings)
            for token_id, perms, token_hash in slot.tokens:
                yield Record.token_add(0, name, token_hash, token_id, perms)
        with Progress("dump", unit="stripes") as p:
            for name, key, value, expire_ms, flags in _local_entries(t.store, table, p):
                count[0] += 1
                yield Record.set(0, name, key, value, expire_ms, log_flags(flags))
    write_base(os.path.abspath(path), records(), 0)
    return count[0]


# -- load ------------------------------------------------------------------------------------

def load_args(p):
    target_args(p)
    p.add_argument("file", nargs="?", default="-", help="a dump (default stdin); the format "
                                                        "is recognised")
    p.add_argument("--into", metavar="BUCKET",
                   help="load every entry into this bucket (over TCP: the URL's bucket)")


class _Loader:
    """Creates buckets as the dump describes them and writes entries, in batches."""

    def __init__(self, t, into):
        self.t, self.into = t, into
        self.local = isinstance(t, LocalTarget)
        self.known = None
        self.created = {}           # name -> its new token (None: attached, no token)
        self.batch = {}
        self.keys = self.expired = self.tokens_skipped = 0
        self.buckets = {}

    def target_bucket(self, name):
        if self.into:
            return self.into
        if isinstance(self.t, TcpTarget):
            return self.t.bucket or name
        return name

    def ensure(self, name, settings):
        name = self.target_bucket(name)
        if self.known is None:
            self.known = set(self.t.buckets()) if not isinstance(self.t, TcpTarget) \
                or not self.t.bucket else {self.t.bucket}
        if name in self.known:
            return
        s = {k: settings.get(k) for k in BUCKET_SETTINGS if settings.get(k) is not None}
        if s.get("compression") == "none":
            del s["compression"]    # (a target without compression takes the bucket)
        if self.local:              # no new token: a snapshot brings the bucket's own
            self.t.store.create_bucket(name, **s)
            token = None
        else:
            token = self.t.create_bucket(name, **s)[1]
        self.known.add(name)
        self.created[name] = token

    def entry(self, bucket, key, value, expire_ms, single, flags=0):
        """flags: the entry's object bits (OBJECT_BITS), as stored."""
        bucket = self.target_bucket(bucket)
        now = _now_ms()
        if 0 < expire_ms <= now:
            self.expired += 1
            return
        if self.local:
            b = self.buckets.get(bucket) or self.buckets.setdefault(
                bucket, self.t.store.bucket(bucket))
            flags = (CORE_SINGLE if single else 0) | (flags & OBJECT_BITS)
            c = codec.code_of(b.compression)
            if c and not flags & OBJECT_BITS and len(value) >= b.comp_threshold:
                packed = codec.compress(value, c, b.comp_min_saving)
                if packed is not None:  # stored as a set would store it (bukt/codec.py)
                    value, codec_flag = packed
                    flags |= codec_flag
            b.restore(key, value, expire_ms, flags, 0)
            self.keys += 1
            return
        if flags & OBJECT_BITS:
            raise CliError(REFUSED, f"entry {key[:60]!r} of bucket {bucket!r} is stored as "
                                    f"an object's part or compressed (flags {flags:#x}): "
                                    "such entries load attached only (no --url)")
        ttl = (expire_ms - now) / 1000 if expire_ms else None
        self.batch.setdefault(bucket, []).append((key, value, ttl, bool(single)))
        if len(self.batch[bucket]) >= LOAD_BATCH:
            self.flush(bucket)

    def flush(self, bucket=None):
        for b in [bucket] if bucket else list(self.batch):
            items = self.batch.pop(b, [])
            if items:
                self.t.set_many(b, items)
                self.keys += len(items)


def load(args):
    src = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")
    try:
        total = os.fstat(src.fileno()).st_size if args.file != "-" else None
        first = src.peek(8)[:8] if hasattr(src, "peek") else b""
        with open_target(args) as t:
            ld = _Loader(t, args.into)
            with Progress("load", total=total or None, unit="B") as p:
                if first == SNAPSHOT_MAGIC:
                    _load_snapshot(ld, args.file, p)
                else:
                    _load_jsonl(ld, src, p)
                ld.flush()
    finally:
        if src is not sys.stdin.buffer:
            src.close()
    msg = f"loaded {ld.keys} keys"
    for name, token in sorted(ld.created.items()):
        msg += f"\ncreated bucket {name}" + (f", token (shown only now): {token}" if token
                                            else "")
    if ld.expired:
        msg += f"; {ld.expired} had expired"
    if ld.tokens_skipped:
        msg += f"; {ld.tokens_skipped} tokens of existing buckets kept as they are"
    emit(args, {"keys": ld.keys, "created": ld.created, "expired": ld.expired,
                "tokens_skipped": ld.tokens_skipped}, msg)
    return OK


def _load_jsonl(ld, src, progress):
    for lineno, line in enumerate(src, 1):
        progress.advance(len(line))
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            if "format" in d:
                if d.get("format") != HEADER["format"] or d.get("version") != 1:
                    raise CliError(REFUSED, f"line {lineno}: not a bukt-dump version 1 "
                                            f"({line[:60]!r})")
                continue
            if "settings" in d:
                ld.ensure(d["bucket"], d["settings"])
                continue
            key = d["key"].encode() if "key" in d else base64.b64decode(d["key_b64"])
            value = base64.b64decode(d["value"], validate=True)
            exp = int(d.get("expires_at_ms") or 0)
            bucket = d["bucket"]
        except CliError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CliError(REFUSED, f"line {lineno}: not a dump line ({e}); nothing after "
                                    "it was loaded") from None
        flags = d.get("flags", 0)
        if not isinstance(flags, int) or flags & ~OBJECT_BITS:
            raise CliError(REFUSED, f"line {lineno}: flags {flags!r} are not entry object "
                                    f"bits ({OBJECT_BITS:#x}); nothing after it was loaded")
        ld.entry(bucket, key, value, exp, d.get("single_read", False), flags)


def _load_snapshot(ld, path, progress):
    from bukt.writer import BUCKET_CREATE, SET, SINGLE_READ, TOKEN_ADD, core_flags, read_base
    if not ld.local:
        raise CliError(REFUSED, "a snapshot loads attached only (no --url); dump JSON lines "
                                "to load over the network")
    if path == "-":
        raise CliError(REFUSED, "a snapshot loads from a file, not stdin")
    store = ld.t.store
    for r in read_base(path):
        progress.advance(48 + len(r.bucket) + len(r.key) + len(r.value))
        if r.type == SET:
            ld.entry(r.bucket, r.key, r.value, r.expire_ms, r.flags & SINGLE_READ,
                     core_flags(r.flags))
        elif r.type == BUCKET_CREATE:
            ld.ensure(r.bucket, r.settings)
        elif r.type == TOKEN_ADD:
            name = ld.target_bucket(r.bucket)
            if name in ld.created and r.token_id not in {i for i, _ in store.tokens(name)}:
                store.restore_token(name, r.token_id, r.key, r.perms)
            else:
                ld.tokens_skipped += 1

