"""Bukt's binary protocol: frames, commands, statuses and the payload codec.

docs/protocol.md is the specification; this module is its executable form, and
tests/unit/test_protocol_vectors.py checks the two against each other byte for byte.

A frame, request or response alike, is

    [Length u32][Command-or-Status u8][RequestID u64][Payload]      big-endian

Length counts the whole frame, its own four bytes included, so the smallest frame is
HEADER_SIZE (13) bytes. Payloads are sequences of typed fields (LAYOUTS below); the
encoder and decoder are driven by the same tables, so a command is described once.

The server's hot path (bukt/tcp/) does not go through `decode_request` for GET and SET:
it unpacks those two layouts inline. Everything else, and every client, uses this codec.
"""
from __future__ import annotations

import enum
import struct

from bukt import errors

HEADER = struct.Struct(">IBQ")
HEADER_SIZE = HEADER.size  # 13
LENGTH = struct.Struct(">I")
MAX_LENGTH = 0xFFFFFFFF  # the largest frame the Length field can describe

# Default limits; the server's configuration (tcp.max_frame, ...) overrides them.
DEFAULT_MAX_FRAME = 4 * 1024 * 1024  # tcp.max_frame's default (bukt/config.py)


class Command(enum.IntEnum):
    SET = 0x01
    GET = 0x02
    DELETE = 0x03
    EXISTS = 0x04
    INCR = 0x05
    DECR = 0x06
    GETDEL = 0x07
    TTL = 0x08
    EXPIRE = 0x09
    PERSIST = 0x0A
    MGET = 0x0B
    MSET = 0x0C
    SCAN = 0x0D
    VERSION = 0x0E
    STATS = 0x0F
    FLUSH = 0x10
    WATCH = 0x11
    BUCKET_CREATE = 0x20
    BUCKET_DROP = 0x21
    BUCKET_LIST = 0x22
    BUCKET_INFO = 0x23
    TOKEN_CREATE = 0x24
    TOKEN_LIST = 0x25
    TOKEN_REVOKE = 0x26
    AUTH = 0x30
    PING = 0x31
    QUIT = 0x32


class Status(enum.IntEnum):
    OK = 0x00
    NOT_FOUND = 0x01
    NOT_STORED = 0x02
    ERROR = 0x10
    SEGMENT_NOT_FOUND = 0x11
    SEGMENT_EXISTS = 0x12
    SEGMENT_INVALID = 0x13
    FORMAT_MISMATCH = 0x14
    SEGMENT_FULL = 0x15
    KEY_TOO_LARGE = 0x16
    VALUE_TOO_LARGE = 0x17
    SCHEMA_ERROR = 0x18
    VERSION_MISMATCH = 0x19
    READ_ONLY = 0x1A
    BUCKET_NOT_FOUND = 0x1B
    BUCKET_EXISTS = 0x1C
    LIMIT_EXCEEDED = 0x1D
    RING_FULL = 0x1E
    WRITER_DOWN = 0x1F
    DISK_ERROR = 0x20
    UNAUTHORIZED = 0x21
    FORBIDDEN = 0x22
    PROTOCOL_ERROR = 0x23
    INVALID_ARGUMENT = 0x24
    UNKNOWN_COMMAND = 0x25
    SEGMENT_RETIRED = 0x26
    SEGMENT_DENIED = 0x27
    REPLICA_READ_ONLY = 0x28
    OBJECT_TOO_LARGE = 0x29
    INTEGRITY_ERROR = 0x2A
    OBJECT_GONE = 0x2B
    DIGEST_MISMATCH = 0x2C


# One status per error class, both ways. NotFound shares NOT_FOUND; UNKNOWN_COMMAND is a
# ProtocolError on the client's side.
ERROR_STATUS = {
    errors.BuktError: Status.ERROR,
    errors.SegmentNotFound: Status.SEGMENT_NOT_FOUND,
    errors.SegmentExists: Status.SEGMENT_EXISTS,
    errors.SegmentInvalid: Status.SEGMENT_INVALID,
    errors.FormatMismatch: Status.FORMAT_MISMATCH,
    errors.SegmentFull: Status.SEGMENT_FULL,
    errors.KeyTooLarge: Status.KEY_TOO_LARGE,
    errors.ValueTooLarge: Status.VALUE_TOO_LARGE,
    errors.SchemaError: Status.SCHEMA_ERROR,
    errors.VersionMismatch: Status.VERSION_MISMATCH,
    errors.ReadOnly: Status.READ_ONLY,
    errors.BucketNotFound: Status.BUCKET_NOT_FOUND,
    errors.BucketExists: Status.BUCKET_EXISTS,
    errors.LimitExceeded: Status.LIMIT_EXCEEDED,
    errors.RingFull: Status.RING_FULL,
    errors.WriterDown: Status.WRITER_DOWN,
    errors.DiskError: Status.DISK_ERROR,
    errors.SegmentRetired: Status.SEGMENT_RETIRED,
    errors.SegmentDenied: Status.SEGMENT_DENIED,
    errors.ReplicaReadOnly: Status.REPLICA_READ_ONLY,
    errors.ObjectTooLarge: Status.OBJECT_TOO_LARGE,
    errors.IntegrityError: Status.INTEGRITY_ERROR,
    errors.ObjectGone: Status.OBJECT_GONE,
    errors.DigestMismatch: Status.DIGEST_MISMATCH,
    errors.NotFound: Status.NOT_FOUND,
    errors.AuthError: Status.UNAUTHORIZED,
    errors.PermissionDenied: Status.FORBIDDEN,
    errors.ProtocolError: Status.PROTOCOL_ERROR,
    errors.InvalidArgument: Status.INVALID_ARGUMENT,
}
STATUS_ERROR = {status: cls for cls, status in ERROR_STATUS.items()}
STATUS_ERROR[Status.UNKNOWN_COMMAND] = errors.ProtocolError


def status_for(exc: BaseException) -> Status:
    """The status byte for an exception: its class's, or its nearest base's."""
    for cls in type(exc).__mro__:
        status = ERROR_STATUS.get(cls)
        if status is not None:
            return status
    return Status.ERROR


def error_for(status: int, message: str) -> errors.BuktError:
    cls = STATUS_ERROR.get(status, errors.BuktError)
    return cls(message)


# SET flags
SET_NX = 0x01
SET_XX = 0x02
SET_SINGLE_READ = 0x04
SET_IF_VERSION = 0x08
SET_FLAGS = SET_NX | SET_XX | SET_SINGLE_READ | SET_IF_VERSION

# Where the key starts in a payload, its u32 length just before it (the hot paths,
# bukt/tcp/session.py and bukt/tcp/_wire.pyx, parse GET and SET without the tables below).
GET_KEY = 4             # GET: klen u32, key
SET_KEY = 21            # SET: flags u8, ttl_ms u64, if_version u64, klen u32, key, vlen u32, value

# Value types (tvalue): what the bucket's schema made of the stored bytes.
VT_BYTES = 0x00
VT_INT = 0x01
VT_STR = 0x02
VT_ABSENT = 0xFF  # in MGET results only

SCHEMAS = {"bytes": 0, "int": 1, "str": 2, "json": 3}
EVICTIONS = {"lru": 0, "none": 1}
SCHEMA_NAMES = {v: k for k, v in SCHEMAS.items()}
EVICTION_NAMES = {v: k for k, v in EVICTIONS.items()}

# Field kinds. Each is a short name that docs/protocol.md uses in its tables.
U8, U32, U64, I64 = "u8", "u32", "u64", "i64"
BLOB = "blob"  # u32 length, then that many bytes
BLOBS = "blobs"  # u32 count, then count blobs
PAIRS = "pairs"  # u32 count, then count (blob key, blob value)
TVALUE = "tvalue"  # u8 type, then the value's bytes up to the end of the frame
TVALUES = "tvalues"  # u32 count, then count (u8 type, and unless 0xFF: blob)
U64S = "u64s"  # u32 count, then count u64
STATS = "stats"  # u32 count, then count (blob name, i64 value)
TOKENS = "tokens"  # u32 count, then count (u64 id, u8 perms)
REST = "rest"  # the bytes up to the end of the frame
EVENTS = "events"  # u32 count, then count change-feed events (docs/protocol.md, WATCH)

# WATCH flags, and the state its answer opens with
WATCH_VALUES = 0x01  # set and incr events carry their values
WATCH_NOW = 0x02  # from now on: `since` is ignored
WATCH_FLAGS = WATCH_VALUES | WATCH_NOW
WATCH_EVENTS, WATCH_GONE = 0, 1

_KEY = (("key", BLOB),)
_KEYS = (("keys", BLOBS),)
_NAME = (("name", BLOB),)
_BUCKET_INFO = (("schema", U8), ("eviction", U8), ("persist", U8),
                ("default_ttl_ms", U64), ("name", BLOB))
_INCR = (("by", I64), ("initial", I64), ("ttl_ms", U64), ("key", BLOB))

# Request payloads.
REQUEST = {
    Command.SET: (("flags", U8), ("ttl_ms", U64), ("if_version", U64),
                  ("key", BLOB), ("value", BLOB)),
    Command.GET: _KEY,
    Command.DELETE: _KEYS,
    Command.EXISTS: _KEYS,
    Command.INCR: _INCR,
    Command.DECR: _INCR,
    Command.GETDEL: _KEY,
    Command.TTL: _KEY,
    Command.EXPIRE: (("ttl_ms", U64), ("key", BLOB)),
    Command.PERSIST: _KEY,
    Command.MGET: _KEYS,
    Command.MSET: (("ttl_ms", U64), ("items", PAIRS)),
    Command.SCAN: (("cursor", U64), ("count", U32), ("prefix", BLOB)),
    Command.VERSION: _KEY,
    Command.STATS: (),
    Command.FLUSH: (),
    Command.WATCH: (("flags", U8), ("since", U64), ("max", U32), ("wait_ms", U32),
                    ("prefix", BLOB)),
    Command.BUCKET_CREATE: _BUCKET_INFO,
    Command.BUCKET_DROP: _NAME,
    Command.BUCKET_LIST: (),
    Command.BUCKET_INFO: _NAME,
    Command.TOKEN_CREATE: (("perms", U8),),
    Command.TOKEN_LIST: (),
    Command.TOKEN_REVOKE: (("token_id", U64),),
    Command.AUTH: (("bucket", BLOB), ("token", BLOB)),
    Command.PING: (("data", REST),),
    Command.QUIT: (),
}

# Response payloads under status OK. NOT_FOUND and NOT_STORED carry no payload; an
# error status carries its message (UTF-8) as the whole payload.
RESPONSE = {
    Command.SET: (("version", U64),),
    Command.GET: (("value", TVALUE),),
    Command.DELETE: (("count", U64),),
    Command.EXISTS: (("count", U64),),
    Command.INCR: (("value", I64),),
    Command.DECR: (("value", I64),),
    Command.GETDEL: (("value", TVALUE),),
    Command.TTL: (("ttl_ms", U64),),
    Command.EXPIRE: (("existed", U8),),
    Command.PERSIST: (("existed", U8),),
    Command.MGET: (("values", TVALUES),),
    Command.MSET: (("versions", U64S),),
    Command.SCAN: (("cursor", U64), ("keys", BLOBS)),
    Command.VERSION: (("version", U64),),
    Command.STATS: (("stats", STATS),),
    Command.FLUSH: (("count", U64),),
    Command.WATCH: (("state", U8), ("position", U64), ("events", EVENTS)),
    Command.BUCKET_CREATE: (("token_id", U64), ("token", BLOB)),
    Command.BUCKET_DROP: (),
    Command.BUCKET_LIST: (("names", BLOBS),),
    Command.BUCKET_INFO: _BUCKET_INFO,
    Command.TOKEN_CREATE: (("token_id", U64), ("token", BLOB)),
    Command.TOKEN_LIST: (("tokens", TOKENS),),
    Command.TOKEN_REVOKE: (("existed", U8),),
    Command.AUTH: (("perms", U8),),
    Command.PING: (("data", REST),),
    Command.QUIT: (),
}

_u8 = struct.Struct(">B")
_u32 = struct.Struct(">I")
_u64 = struct.Struct(">Q")
_i64 = struct.Struct(">q")
_INTS = {U8: _u8, U32: _u32, U64: _u64, I64: _i64}
_EVENT = struct.Struct(">QBqQq")  # seq, kind, time_ms, version, expire_ms


# --- encoding -------------------------------------------------------------------------

def _as_bytes(value) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()
    raise TypeError(f"expected bytes or str, not {type(value).__name__}")


def _blob(value) -> bytes:
    data = _as_bytes(value)
    return _u32.pack(len(data)) + data


def _tvalue_parts(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return VT_BYTES, bytes(value)
    if isinstance(value, bool):
        raise TypeError("bool is not a value")
    if isinstance(value, int):
        return VT_INT, str(value).encode()
    if isinstance(value, str):
        return VT_STR, value.encode()
    raise TypeError(f"cannot send {type(value).__name__} as a value")


def _encode_field(kind, value, out: list) -> None:
    codec = _INTS.get(kind)
    if codec is not None:
        out.append(codec.pack(value))
    elif kind == BLOB:
        out.append(_blob(value))
    elif kind == REST:
        out.append(_as_bytes(value))
    elif kind == BLOBS:
        items = list(value)
        out.append(_u32.pack(len(items)))
        out.extend(_blob(v) for v in items)
    elif kind == PAIRS:
        items = list(value.items() if hasattr(value, "items") else value)
        out.append(_u32.pack(len(items)))
        for k, v in items:
            out.append(_blob(k))
            out.append(_blob(v))
    elif kind == TVALUE:
        vt, data = _tvalue_parts(value)
        out.append(_u8.pack(vt))
        out.append(data)
    elif kind == TVALUES:
        items = list(value)
        out.append(_u32.pack(len(items)))
        for v in items:
            if v is None:
                out.append(_u8.pack(VT_ABSENT))
            else:
                vt, data = _tvalue_parts(v)
                out.append(_u8.pack(vt))
                out.append(_u32.pack(len(data)) + data)
    elif kind == U64S:
        items = list(value)
        out.append(_u32.pack(len(items)))
        out.extend(_u64.pack(v) for v in items)
    elif kind == STATS:
        items = list(value.items())
        out.append(_u32.pack(len(items)))
        for name, v in items:
            out.append(_blob(name))
            out.append(_i64.pack(int(v)))
    elif kind == TOKENS:
        items = list(value)
        out.append(_u32.pack(len(items)))
        for token_id, perms in items:
            out.append(_u64.pack(token_id) + _u8.pack(perms))
    elif kind == EVENTS:
        items = list(value)
        out.append(_u32.pack(len(items)))
        for seq, kind_code, ms, version, expire_ms, key, val in items:
            out.append(_EVENT.pack(seq, kind_code, ms, version, expire_ms))
            out.append(_blob(key))
            if val is None:
                out.append(_u8.pack(0))
            else:
                out.append(_u8.pack(1))
                out.append(_blob(val))
    else:  # pragma: no cover - a typo in the tables
        raise AssertionError(kind)


def encode_payload(layout, fields: dict) -> bytes:
    out: list = []
    for name, kind in layout:
        _encode_field(kind, fields[name], out)
    return b"".join(out)


def frame(code: int, request_id: int, payload: bytes = b"") -> bytes:
    """A whole frame around a payload; `code` is a Command or a Status."""
    length = HEADER_SIZE + len(payload)
    if length > MAX_LENGTH:
        raise errors.LimitExceeded(f"frame of {length} bytes exceeds the 4 GiB Length field")
    return HEADER.pack(length, code, request_id) + payload


def encode_request(command: int, request_id: int, **fields) -> bytes:
    return frame(command, request_id, encode_payload(REQUEST[Command(command)], fields))


def encode_response(command: int, status: int, request_id: int, **fields) -> bytes:
    """A response to `command`: its OK layout under status OK, a message under an error
    status (fields: message=...), nothing under NOT_FOUND / NOT_STORED."""
    if status == Status.OK:
        payload = encode_payload(RESPONSE[Command(command)], fields)
    elif status in (Status.NOT_FOUND, Status.NOT_STORED) and "message" not in fields:
        payload = b""
    else:
        payload = _as_bytes(fields.get("message", ""))
    return frame(status, request_id, payload)


def encode_error(request_id: int, exc: BaseException) -> bytes:
    return frame(status_for(exc), request_id, str(exc).encode("utf-8", "replace"))


# --- decoding -------------------------------------------------------------------------

class _Reader:
    """Reads fields off a payload; every length is checked against what is there before
    anything is sliced, so a lying count costs nothing."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf):
        self.buf = buf
        self.pos = 0
        self.end = len(buf)

    def need(self, n: int, what: str) -> None:
        if self.end - self.pos < n:
            raise errors.ProtocolError(
                f"payload truncated: {what} needs {n} bytes, {self.end - self.pos} left")

    def int(self, codec, what: str):
        self.need(codec.size, what)
        (value,) = codec.unpack_from(self.buf, self.pos)
        self.pos += codec.size
        return value

    def bytes(self, n: int, what: str) -> bytes:
        self.need(n, what)
        data = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return data

    def blob(self, what: str) -> bytes:
        return self.bytes(self.int(_u32, what + " length"), what)

    def count(self, what: str, min_item: int) -> int:
        n = self.int(_u32, what + " count")
        # Each item takes at least min_item bytes: refuse a count the payload cannot hold
        # before building anything for it.
        if n * min_item > self.end - self.pos:
            raise errors.ProtocolError(
                f"{what} count {n} cannot fit in the {self.end - self.pos} bytes left")
        return n

    def rest(self) -> bytes:
        data = bytes(self.buf[self.pos:self.end])
        self.pos = self.end
        return data


def _decode_tvalue(vt: int, data: bytes):
    if vt == VT_BYTES:
        return data
    if vt == VT_INT:
        try:
            return int(data)
        except ValueError:
            raise errors.ProtocolError("int value is not decimal") from None
    if vt == VT_STR:
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise errors.ProtocolError("str value is not UTF-8") from None
    raise errors.ProtocolError(f"unknown value type 0x{vt:02x}")


def _decode_field(kind, r: _Reader, name: str):
    codec = _INTS.get(kind)
    if codec is not None:
        return r.int(codec, name)
    if kind == BLOB:
        return r.blob(name)
    if kind == REST:
        return r.rest()
    if kind == BLOBS:
        return [r.blob(name) for _ in range(r.count(name, 4))]
    if kind == PAIRS:
        return [(r.blob(name + " key"), r.blob(name + " value"))
                for _ in range(r.count(name, 8))]
    if kind == TVALUE:
        vt = r.int(_u8, name + " type")
        return _decode_tvalue(vt, r.rest())
    if kind == TVALUES:
        values = []
        for _ in range(r.count(name, 1)):
            vt = r.int(_u8, name + " type")
            values.append(None if vt == VT_ABSENT else _decode_tvalue(vt, r.blob(name)))
        return values
    if kind == U64S:
        return [r.int(_u64, name) for _ in range(r.count(name, 8))]
    if kind == STATS:
        out = {}
        for _ in range(r.count(name, 12)):
            key = r.blob(name + " name").decode("utf-8", "replace")
            out[key] = r.int(_i64, name + " value")
        return out
    if kind == TOKENS:
        return [(r.int(_u64, "token id"), r.int(_u8, "perms")) for _ in range(r.count(name, 9))]
    if kind == EVENTS:
        out = []
        for _ in range(r.count(name, _EVENT.size + 5)):
            r.need(_EVENT.size, name)
            seq, kind_code, ms, version, expire_ms = _EVENT.unpack_from(r.buf, r.pos)
            r.pos += _EVENT.size
            key = r.blob(name + " key")
            has = r.int(_u8, name + " value flag")
            if has > 1:
                raise errors.ProtocolError(f"event value flag {has}: 0 or 1")
            out.append((seq, kind_code, ms, version, expire_ms, key,
                        r.blob(name + " value") if has else None))
        return out
    raise AssertionError(kind)  # pragma: no cover


def decode_payload(layout, payload) -> dict:
    """The fields of a payload; ProtocolError if it is short or has bytes left over."""
    r = _Reader(payload)
    fields = {name: _decode_field(kind, r, name) for name, kind in layout}
    if r.pos != r.end:
        raise errors.ProtocolError(f"{r.end - r.pos} unexpected bytes after the payload")
    return fields


def parse_header(buf, max_frame: int = MAX_LENGTH):
    """(length, code, request_id) of the frame at the start of buf, or None when fewer than
    HEADER_SIZE bytes are there. A Length below HEADER_SIZE or above max_frame raises
    FrameError: the stream cannot be resynchronised, so the connection must close."""
    if len(buf) < HEADER_SIZE:
        if len(buf) >= 4:
            check_length(LENGTH.unpack_from(buf, 0)[0], max_frame)
        return None
    length, code, request_id = HEADER.unpack_from(buf, 0)
    check_length(length, max_frame)
    return length, code, request_id


class FrameError(errors.ProtocolError):
    """A frame whose Length cannot be honoured; the connection closes after the reply."""


def check_length(length: int, max_frame: int) -> None:
    if length < HEADER_SIZE:
        raise FrameError(f"frame length {length} is below the {HEADER_SIZE}-byte header")
    if length > max_frame:
        raise FrameError(f"frame length {length} exceeds the maximum frame of {max_frame} bytes")


def decode_request(data):
    """(command, request_id, fields) of one whole request frame."""
    length, code, request_id = HEADER.unpack_from(data, 0)
    if length != len(data):
        raise FrameError(f"frame length {length} but {len(data)} bytes given")
    try:
        command = Command(code)
    except ValueError:
        raise errors.ProtocolError(f"unknown command 0x{code:02x}") from None
    return command, request_id, decode_payload(REQUEST[command], memoryview(data)[HEADER_SIZE:])


def decode_response(command: int, data):
    """(status, request_id, fields) of one whole response frame to `command`; an error
    status gives fields {"message": str}."""
    length, status, request_id = HEADER.unpack_from(data, 0)
    if length != len(data):
        raise FrameError(f"frame length {length} but {len(data)} bytes given")
    payload = memoryview(data)[HEADER_SIZE:]
    if status == Status.OK:
        return Status.OK, request_id, decode_payload(RESPONSE[Command(command)], payload)
    try:
        status = Status(status)
    except ValueError:
        pass
    if status in (Status.NOT_FOUND, Status.NOT_STORED) and not len(payload):
        return status, request_id, {}
    return status, request_id, {"message": bytes(payload).decode("utf-8", "replace")}


class FrameReader:
    """Splits a byte stream into frames.

    Bytes are appended as they arrive; a frame is handed out only when all of it is
    there. The buffer holds at most one partial frame beyond what was fed, and a Length
    is checked against max_frame as soon as its four bytes arrive, before any of the
    frame is waited for: nothing is ever allocated on a claimed length.
    """

    __slots__ = ("buf", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME):
        self.buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data) -> None:
        self.buf += data

    def next(self):
        """The next whole frame as bytes, or None; FrameError on a bad Length."""
        buf = self.buf
        if len(buf) < 4:
            return None
        length = LENGTH.unpack_from(buf, 0)[0]
        check_length(length, self.max_frame)
        if len(buf) < length:
            return None
        data = bytes(buf[:length])
        del buf[:length]
        return data
