"""What happens around every request: the rate limit on the way in; request counters,
the latency histogram and the JSON access log on the way out.

One middleware class does all three, so a request pays for one set of hooks.
"""

import asyncio
import hashlib
import math
import os
import time
from random import random
from bisect import bisect_left

from json.encoder import encode_basestring_ascii as json_str

from bukt.http.problems import PROBLEM_JSON, problem_body

# Latency histogram upper bounds in seconds; the last bucket is +Inf.
LATENCY_BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                  0.1, 0.25, 1.0)
STATUS_CLASSES = 5                                   # 1xx .. 5xx
ROUTE_WORDS = STATUS_CLASSES + len(LATENCY_BOUNDS) + 1 + 1   # classes, buckets, sum (us)
RATELIMITED = 0                                      # word 0: requests refused with 429
ROUTES_BASE = 8                                      # words 1..7 spare
EXEMPT = ("/healthz",)
LOG_FLUSH_S = 0.05        # access lines wait at most this long in the worker...
LOG_FLUSH_BYTES = 64 << 10  # ...or until this many bytes are waiting
QUOTED_MAX = 4096         # escaped peers, methods and bucket names kept per worker
# Ready-made pieces of an access line (Frontdoor.record_at): the status with the key
# after it, a duration's whole milliseconds, and its fraction with the key after it.
STATUS_PIECES = {s: ',"status":%d,"duration_ms":' % s for s in range(100, 600)}
MS_DIGITS = [str(ms) for ms in range(1000)]
FRACTION_PIECES = ['.%03d,"bucket":' % f for f in range(1000)]


class RequestMetrics:
    """Counter indices for each route template; the counts live in a SharedArea row."""

    def __init__(self, area, routes):
        self.area = area
        self.routes = ["unmatched"] + list(routes)
        self.index = {r: i for i, r in enumerate(self.routes)}
        needed = ROUTES_BASE + len(self.routes) * ROUTE_WORDS
        if needed > area.words:
            raise ValueError(f"{len(self.routes)} routes need {needed} counter words, "
                             f"the area has {area.words}")

    def row(self):
        return self.area.counter_row()

    def base(self, template):
        return ROUTES_BASE + self.index.get(template, 0) * ROUTE_WORDS

    def snapshot(self):
        """{route: {"status": {"2xx": n, ...}, "buckets": [cumulative...], "sum": s,
        "count": n}} summed over every worker, plus "ratelimited"."""
        t = self.area.totals()
        out = {}
        for i, route in enumerate(self.routes):
            b = ROUTES_BASE + i * ROUTE_WORDS
            classes = t[b:b + STATUS_CLASSES]
            count = sum(classes)
            if not count:
                continue
            hist = t[b + STATUS_CLASSES: b + STATUS_CLASSES + len(LATENCY_BOUNDS) + 1]
            cumulative, acc = [], 0
            for n in hist:
                acc += n
                cumulative.append(acc)
            out[route] = {"status": {f"{c + 1}xx": n for c, n in enumerate(classes) if n},
                          "buckets": cumulative, "count": count,
                          "sum": t[b + ROUTE_WORDS - 1] / 1e6}
        return {"routes": out, "ratelimited": t[RATELIMITED]}


class RateLimiter:
    """GCRA per client IP over the SharedArea's table: `rate` requests per second
    sustained, `burst` at once."""

    def __init__(self, area, rate, burst):
        if rate <= 0 or burst < 1:
            raise ValueError("ratelimit.rate must be > 0 and ratelimit.burst >= 1")
        self.area = area
        self.interval = 1.0 / rate
        self.tolerance = self.interval * (burst - 1)

    def check(self, client, now=None):
        """0.0 if `client` may go now, else the seconds until it may."""
        key = int.from_bytes(hashlib.blake2b(client.encode(), digest_size=8).digest(),
                             "little") or 1
        return self.area.rate_check(key, time.monotonic() if now is None else now,
                                    self.interval, self.tolerance)


def peer(req):
    """The connected peer's address. Not falcon's remote_addr, which parses the
    Forwarded headers on every call (and costs more than the store lookup)."""
    client = req.scope.get("client")
    return client[0] if client else "-"


def open_access_log(dest):
    """An fd to write access lines to: "-" is stderr, a path is appended to."""
    if not dest:
        return None
    if dest == "-":
        return 2
    return os.open(dest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)


class Frontdoor:
    def __init__(self, metrics, limiter=None, access_fd=None, sample=1.0):
        self.metrics, self.limiter, self.access_fd = metrics, limiter, access_fd
        self.sample = sample if sample < 1.0 else None   # log.access_sample
        self.pid = os.getpid()           # made in the worker, after the fork
        self.row = metrics.row()         # this worker's counters
        self._lines, self._waiting, self._flush_due = [], 0, False
        self._ts_ms, self._ts_head = -1, ""   # '{"ts":<now>,"pid":<pid>,"remote":'
        self._q_remote, self._q_method, self._q_bucket = {}, {}, {}   # see _piece

    async def process_request(self, req, resp):
        req.context.start = time.perf_counter()
        req.context.bucket = None
        if self.limiter is not None and req.path not in EXEMPT:
            wait = self.limiter.check(peer(req))
            if wait > 0:
                retry = max(1, math.ceil(wait))
                self.row[RATELIMITED] += 1
                resp.status = 429
                resp.content_type = PROBLEM_JSON
                resp.set_header("Retry-After", str(retry))
                resp.text = problem_body(429, "rate_limited",
                                         f"too many requests; retry in {retry} s", req.path)
                resp.complete = True

    async def process_response(self, req, resp, resource, req_succeeded):
        start = getattr(req.context, "start", None)
        if start is not None:
            self.record(req.uri_template, resp.status_code, time.perf_counter() - start,
                        req.method, req.path, req.context.bucket, peer(req))

    def record(self, template, status, elapsed, method, path, bucket, remote):
        """Count a finished request and write its access line."""
        self.record_at(self.metrics.base(template), status, elapsed, method, path, bucket,
                       remote)

    def record_at(self, base, status, elapsed, method, path, bucket, remote):
        """record() given the route's counter base (the fast path, fastpath.py, which
        answers without falcon, knows it in advance)."""
        row, us = self.row, int(elapsed * 1e6)
        cls = status // 100 - 1                 # 1xx..5xx; below 1xx counts as 1xx,
        row[base + (cls if 0 <= cls <= 4 else 0 if cls < 0 else 4)] += 1   # above 5xx
        row[base + STATUS_CLASSES + bisect_left(LATENCY_BOUNDS, elapsed)] += 1
        row[base + ROUTE_WORDS - 1] += us
        if self.access_fd is None or (self.sample is not None and random() >= self.sample):
            return
        # The line is joined from pieces made once, so a request formats no number
        # and escapes only its path: str % with eight fields cost 7k instructions of
        # the fast path's 61k (callgrind, tests/unit/test_http_app.py checks the result).
        # Pieces: the timestamp and pid (once per millisecond), the quoted peer,
        # method and bucket with the JSON around them (once per distinct value), the
        # status and the duration's digits (tables).
        now_ms = int(time.time() * 1000)
        if now_ms != self._ts_ms:
            self._ts_ms = now_ms
            self._ts_head = '{"ts":%d.%03d,"pid":%d,"remote":' % (*divmod(now_ms, 1000),
                                                                  self.pid)
        ms = us // 1000
        self._log("".join((
            self._ts_head,
            self._q_remote.get(remote) or self._piece(self._q_remote, remote, "%s,"),
            self._q_method.get(method) or self._piece(self._q_method, method,
                                                      '"method":%s,"path":'),
            json_str(path),
            STATUS_PIECES.get(status) or ',"status":%d,"duration_ms":' % status,
            MS_DIGITS[ms] if ms < 1000 else str(ms),
            FRACTION_PIECES[us % 1000],
            self._q_bucket.get(bucket) or self._piece(self._q_bucket, bucket, "%s}\n"),
        )).encode())

    @staticmethod
    def _piece(cache, text, shape):
        """`shape` around the JSON form of `text` (None: null), kept in `cache`."""
        if len(cache) >= QUOTED_MAX:
            cache.clear()
        piece = cache[text] = shape % (json_str(text) if text is not None else "null")
        return piece

    # -- the access log's buffer: one write per LOG_FLUSH_S instead of one per request
    # (a write costs as much as a fast-path GET). A worker killed outright loses at
    # most LOG_FLUSH_S of lines; a graceful stop flushes (process_shutdown).
    def _log(self, line):
        self._lines.append(line)
        self._waiting += len(line)
        if self._waiting >= LOG_FLUSH_BYTES:
            self.flush()
        elif not self._flush_due:
            try:
                asyncio.get_running_loop().call_later(LOG_FLUSH_S, self.flush)
                self._flush_due = True
            except RuntimeError:        # no loop: write now
                self.flush()

    def flush(self):
        self._flush_due = False
        if not self._lines:
            return
        data = b"".join(self._lines)
        self._lines.clear()
        self._waiting = 0
        try:
            while data:
                data = data[os.write(self.access_fd, data):]
        except OSError:
            pass

    async def process_shutdown(self, scope, event):
        self.flush()
