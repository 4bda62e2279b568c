"""One log format for every process of the service: the supervisor (`bukt serve`), the
writer, the gunicorn arbiter and its workers (uvicorn's loggers included), the TCP pool
and its workers.

ONE RECORD, ONE SHAPE. Every line says when (UTC, milliseconds), how bad (the level),
who (the process's role and pid) and what. `log.format: text` (the default) reads

    2026-12-07T13:12:08.123Z INFO writer[4242] bukt.writer: log-000001.bkl opened

a record of several lines (a traceback, the ready banner) continuing on lines indented
by two spaces; `log.format: json` writes one JSON object per line, with the keys ts
(seconds since the epoch), time (the same, ISO 8601), level, role, pid, logger and msg,
and exc (the traceback) when there is one. Nothing else writes to stderr: an error is
a log line, printed once.

A role is set once per process (configure) and again in a child after a fork
(set_role): the record's pid is always the process's own. Third-party loggers
(gunicorn.error, uvicorn.error) are routed to the root logger, so their lines take the
same shape; bukt/http/server.py's BuktLogger does it for gunicorn.

The HTTP access log is apart: off by default (log.access), sampled when asked
(log.access_sample), its lines JSON always (bukt/http/middleware.py), since they are
records for a machine with fields of their own, written by the fast path without the
logging module.
"""
import json
import logging
import sys
import time

FORMATS = ("text", "json")
_state = {"role": "bukt", "format": "text"}


def _iso(created):
    t = time.gmtime(created)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (
        t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
        int(created * 1000) % 1000)


class TextFormatter(logging.Formatter):
    def format(self, record):
        msg = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            msg = f"{msg}\n{record.exc_text}"
        if record.stack_info:
            msg = f"{msg}\n{self.formatStack(record.stack_info)}"
        head = "%s %s %s[%d] %s: " % (_iso(record.created),
                                      record.levelname,
                                      _state["role"], record.process, record.name)
        return head + msg.rstrip("\n").replace("\n", "\n  ")


class JsonFormatter(logging.Formatter):
    def format(self, record):
        doc = {"ts": int(record.created * 1000) / 1000, "time": _iso(record.created),
               "level": record.levelname,
               "role": _state["role"], "pid": record.process, "logger": record.name,
               "msg": record.getMessage()}
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False)


def formatter(fmt=None):
    return JsonFormatter() if (fmt or _state["format"]) == "json" else TextFormatter()


def configure(role, level="info", fmt="text", stream=None):
    """This process's logging: one handler on the root logger, on stderr, in `fmt`
    ("text" or "json"), at `level`; `role` names the process in every line. Replaces
    whatever handlers the root had (basicConfig's, an earlier configure's)."""
    if fmt not in FORMATS:
        raise ValueError(f"log.format: {fmt!r}: expected text or json")
    _state.update(role=role, format=fmt)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(fmt))
    root.addHandler(handler)
    root.setLevel(getattr(logging, str(level).upper()))
    for name in ("gunicorn.error", "uvicorn", "uvicorn.error"):
        adopt(name)
    logging.captureWarnings(True)


def from_config(role, cfg):
    """configure() from a bukt.config.Config (log.level, log.format)."""
    configure(role, cfg.log.level, cfg.log.format)


def adopt(name):
    """Route a library's logger to the root's handler: its own handlers go."""
    lg = logging.getLogger(name)
    for h in list(lg.handlers):
        lg.removeHandler(h)
    lg.propagate = True


def set_role(role):
    """In a child after a fork: the role its lines name."""
    _state["role"] = role


def role():
    return _state["role"]
