"""The Redis protocol's wire format (RESP2 and RESP3): a bounded incremental parser of
commands and the encoders of replies. What the commands do is bukt/tcp/resp_session.py's.

PARSING. A client sends a command as an array of bulk strings

    *3\\r\\n$3\\r\\nSET\\r\\n$1\\r\\nk\\r\\n$1\\r\\nv\\r\\n

or as one "inline" line of words (`PING\\r\\n`: redis-benchmark and telnet do). `parse`
reads one whole command from buf[pos:size] and returns (args, next_pos), or None while
the command is incomplete. It never allocates on a claimed length: a count or a bulk
length is checked against the limits as soon as its line is in, and the bytes of a
bulk are copied only once all of them have arrived, so a client that claims 4 GiB and
sends nothing costs nothing. What it refuses (RespError, after which the connection is
answered and closed, as Redis does):
  - a count or length that is not a decimal number, or negative (other than the null
    forms, which a command may not contain);
  - a bulk longer than `max_bulk`, or a command whose bytes would exceed it: the same
    tcp.max_frame that bounds a frame of the binary protocol;
  - more elements than could fit in max_bulk bytes (each takes at least 6);
  - anything but a bulk string inside the array (nested arrays, integers, ...);
  - an inline line longer than INLINE_MAX, or a header line longer than LINE_MAX
    without its CRLF;
  - a bulk not followed by CRLF.

A command that is still incomplete leaves a hint, `Parser.need`: the bytes from its start
below which parsing again cannot finish it (a bulk whose length is known), so a large value
arriving in many reads is not parsed from the start at every read.
"""
from __future__ import annotations

INLINE_MAX = 64 << 10   # bytes of an inline command line (Redis: PROTO_INLINE_MAX_SIZE)
LINE_MAX = 64           # bytes of a '*' or '$' header line, CRLF included
MIN_ELEMENT = 6         # "$0\r\n\r\n": the fewest bytes an element of a command takes


class RespError(Exception):
    """A request that is not RESP: answered `-ERR Protocol error: ...`, then closed."""


def _number(buf, start, end, what):
    """The decimal at buf[start:end] (no sign, no blanks), else RespError."""
    if end <= start or end - start > 19:
        raise RespError(f"invalid {what}")
    n = 0
    for i in range(start, end):
        c = buf[i]
        if c < 48 or c > 57:
            raise RespError(f"invalid {what}")
        n = n * 10 + (c - 48)
    return n


class Parser:
    """One connection's parser: the limits, and the hint of the command in progress."""

    __slots__ = ("max_bulk", "need")

    def __init__(self, max_bulk: int):
        self.max_bulk = max_bulk
        self.need = 0    # parsing again is useless until buf[pos:] holds this many bytes

    def parse(self, buf, pos: int, size: int):
        """(args: list of bytes, next_pos), or None (incomplete); RespError when the bytes
        cannot be a command (module docstring)."""
        if size <= pos:
            return None
        if self.need and size - pos < self.need:
            return None
        self.need = 0
        if buf[pos] != 42:  # '*'
            return self._inline(buf, pos, size)
        eol = buf.find(b"\r\n", pos, min(size, pos + LINE_MAX))
        if eol < 0:
            if size - pos >= LINE_MAX:
                raise RespError("too big multibulk count line")
            return None
        if buf[pos + 1] == 45:  # '-': "*-1" is a null array, never a command
            raise RespError("invalid multibulk length")
        count = _number(buf, pos + 1, eol, "multibulk length")
        max_bulk = self.max_bulk
        if count > max_bulk // MIN_ELEMENT:
            raise RespError("invalid multibulk length")
        p = eol + 2
        args = []
        for _ in range(count):
            if p >= size:
                return None
            if buf[p] != 36:  # '$'
                raise RespError(f"expected '$', got '{chr(buf[p])}'")
            eol = buf.find(b"\r\n", p, min(size, p + LINE_MAX))
            if eol < 0:
                if size - p >= LINE_MAX:
                    raise RespError("too big bulk count line")
                return None
            if buf[p + 1] == 45:
                raise RespError("invalid bulk length")
            n = _number(buf, p + 1, eol, "bulk length")
            if n > max_bulk:
                raise RespError("invalid bulk length")
            start = eol + 2
            end = start + n
            if end + 2 - pos > max_bulk + LINE_MAX * (count + 1):
                raise RespError("command larger than tcp.max_frame")
            if end + 2 > size:
                self.need = end + 2 - pos  # the rest of this bulk is on its way
                return None
            if buf[end] != 13 or buf[end + 1] != 10:
                raise RespError("bulk not terminated by CRLF")
            args.append(bytes(buf[start:end]))
            p = end + 2
        return args, p

    def _inline(self, buf, pos, size):
        eol = buf.find(b"\n", pos, min(size, pos + INLINE_MAX))
        if eol < 0:
            if size - pos >= INLINE_MAX:
                raise RespError("too big inline request")
            return None
        end = eol - 1 if eol > pos and buf[eol - 1] == 13 else eol
        line = bytes(buf[pos:end])
        if b'"' in line or b"'" in line:
            args = split_quoted(line)
        else:
            args = line.split()
        return args, eol + 1


def split_quoted(line: bytes) -> list:
    """Words of an inline line, with "double" (backslash escapes) and 'single' quotes,
    as redis-cli and Redis's sdssplitargs read them."""
    args, i, n = [], 0, len(line)
    while True:
        while i < n and line[i] in b" \t":
            i += 1
        if i >= n:
            return args
        word = bytearray()
        quote = None
        while i < n:
            c = line[i]
            if quote is None:
                if c in b" \t":
                    break
                if c in b"\"'":
                    quote = c
                else:
                    word.append(c)
            elif c == quote:
                quote = None
                if i + 1 < n and line[i + 1] not in b" \t":
                    raise RespError("unbalanced quotes in request")
            elif c == 92 and quote == 34 and i + 1 < n:  # backslash in "..."
                i += 1
                c = line[i]
                if c == 120 and i + 2 < n:  # \xHH
                    try:
                        word.append(int(line[i + 1:i + 3], 16))
                        i += 2
                    except ValueError:
                        word.append(c)
                else:
                    word.append({110: 10, 114: 13, 116: 9, 98: 8, 97: 7}.get(c, c))
            else:
                word.append(c)
            i += 1
        if quote is not None:
            raise RespError("unbalanced quotes in request")
        args.append(bytes(word))


# -- encoders ------------------------------------------------------------------------------
# Each returns the bytes of one reply. `proto` (2 or 3) matters only where RESP3 has a
# type of its own: null, map, set, double, boolean.

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
QUEUED = b"+QUEUED\r\n"
NULL2 = b"$-1\r\n"
NULL_ARRAY2 = b"*-1\r\n"
NULL3 = b"_\r\n"
EMPTY_ARRAY = b"*0\r\n"
ZERO = b":0\r\n"
ONE = b":1\r\n"


def simple(text: str) -> bytes:
    return b"+" + text.encode() + b"\r\n"


def error(text: str) -> bytes:
    """`text` starts with its code (ERR, NOAUTH, WRONGPASS, NOPERM, EXECABORT, ...).
    CR and LF cannot appear in an error line: they become spaces."""
    return b"-" + text.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace") + b"\r\n"


def integer(n: int) -> bytes:
    return b":%d\r\n" % n


def bulk(value) -> bytes:
    if value is None:
        return NULL2
    if type(value) is not bytes:        # a json bucket's JsonDocument is bytes too
        value = bytes(value) if isinstance(value, bytes) else value.encode() \
            if isinstance(value, str) else str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(value), value)


def null(proto: int) -> bytes:
    return NULL3 if proto == 3 else NULL2


def null_array(proto: int) -> bytes:
    return NULL3 if proto == 3 else NULL_ARRAY2


def value(v, proto: int) -> bytes:
    """A stored value (bytes, int or str by the bucket's schema) or None, as a bulk."""
    return null(proto) if v is None else bulk(v)


def array(items, proto: int = 2) -> bytes:
    """Items already encoded."""
    return b"*%d\r\n" % len(items) + b"".join(items)


def bulks(values, proto: int) -> bytes:
    return b"*%d\r\n" % len(values) + b"".join(value(v, proto) for v in values)


def mapping(pairs, proto: int) -> bytes:
    """pairs: [(encoded key, encoded value)]; a map in RESP3, a flat array in RESP2."""
    head = b"%" if proto == 3 else b"*"
    n = len(pairs) if proto == 3 else 2 * len(pairs)
    return head + b"%d\r\n" % n + b"".join(k + v for k, v in pairs)


def set_of(items, proto: int) -> bytes:
    return (b"~" if proto == 3 else b"*") + b"%d\r\n" % len(items) + b"".join(items)


def double(x: float, proto: int) -> bytes:
    text = repr(float(x)) if x != int(x) or abs(x) >= 1e17 else str(int(x))
    if proto == 3:
        return b"," + text.encode() + b"\r\n"
    return bulk(text)


def verbatim(text: str, proto: int) -> bytes:
    """INFO's text: a verbatim string in RESP3 (redis-py reads either), a bulk in RESP2."""
    data = text.encode()
    if proto == 3:
        return b"=%d\r\ntxt:%s\r\n" % (len(data) + 4, data)
    return bulk(data)


def glob_prefix(pattern: bytes) -> bytes:
    """The literal start of a glob pattern (KEYS, SCAN MATCH, PSUBSCRIBE): what the
    core's prefix scan and the change feed's prefix filter can use."""
    out = bytearray()
    for c in pattern:
        if c in b"*?[\\":
            break
        out.append(c)
    return bytes(out)
