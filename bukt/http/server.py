"""serve_http(config): a gunicorn arbiter whose prefork workers run the ASGI app.

The arbiter resolves the admin token (generating data_dir/admin.token on the first
start), checks that the segment can be attached, and creates the shared HTTP area;
then it forks. Each worker attaches to the segment and to the area *after* the fork,
in load(), so no mapping, lock or file offset is shared by accident. On SIGTERM the
arbiter stops accepting, lets workers finish their requests (graceful_timeout), and
removes the HTTP area on exit. `bukt http` calls this; `bukt serve` will too.
"""

import logging
import os

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger

import bukt
from bukt import logs
from bukt.http.auth import resolve_admin_token
from bukt.http.settings import HttpSettings
from bukt.authguard import FailureTable, table_name
from bukt.http.shared import SharedArea

WORKER_CLASS = "bukt.http.worker.BuktWorker"   # uvloop + httptools, keep-alive, corked
log = logging.getLogger("bukt.http")


class BuktLogger(GunicornLogger):
    """gunicorn's logger with its lines in the service's one format (bukt/logs.py): its
    error log goes to the root logger's handler instead of a handler of its own."""

    def setup(self, cfg):
        super().setup(cfg)
        logs.adopt(self.error_log.name)
        self.error_log.setLevel(logging.NOTSET)     # the root's level decides


def area_name(instance):
    return f"/bukt-{instance}-http"


class HttpServer(BaseApplication):
    def __init__(self, config, attach=None):
        self.config_in = config
        self.settings = HttpSettings.from_config(config)
        token, source = resolve_admin_token(self.settings)
        if source not in ("config", "env"):
            log.warning("admin token: %s", source)
        self.admin_token = token
        self.attach = attach or bukt.attach
        self.attach(self.settings.instance).close()      # fail here, not in the arbiter
        self.area = None
        self.auth_table = None
        super().__init__()

    # -- gunicorn's side
    def load_config(self):
        s = self.settings
        options = {
            "bind": [s.bind] + ([s.s3_bind] if s.s3_bind else []),   # S3: docs/s3.md
            "workers": s.workers,
            "worker_class": WORKER_CLASS,
            "keepalive": s.keepalive,
            "timeout": max(1, round(s.timeout)),
            "graceful_timeout": 10,
            "proc_name": f"bukt-http-{s.instance}",
            "accesslog": None,           # the app writes its own JSON lines
            "errorlog": "-",
            "logger_class": BuktLogger,
            "loglevel": "info",
            "post_fork": self._post_fork,
            "preload_app": False,        # load() runs in each worker, after fork
            "on_starting": self._on_starting,
            "on_exit": self._on_exit,
        }
        if "control_socket_disable" in self.cfg.settings:   # gunicorn >= 24
            options["control_socket_disable"] = True        # one per arbiter clashes
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        """In the worker, after fork: attach to the segment and the area."""
        from bukt.http.app import create_app
        from bukt.http.settings import HttpSettings as _S
        from bukt.http.worker import set_limits
        set_limits(self.settings)                # the request head's limits
        store = self.attach(self.settings.instance)
        area = SharedArea.attach(area_name(self.settings.instance))
        table = FailureTable.attach(table_name(self.settings.instance, "http"))
        settings = _S(**{**self.settings.__dict__, "admin_token": self.admin_token})
        return create_app(store, settings, area=area, auth_table=table)

    # -- arbiter hooks
    def _on_starting(self, arbiter):
        self.area = SharedArea.create(area_name(self.settings.instance),
                                      slots=self.settings.ratelimit_slots)
        # Failed tokens per address, counted by every worker together (authguard.py).
        self.auth_table = FailureTable.create(table_name(self.settings.instance, "http"),
                                              slots=self.settings.auth_sources)
        log.info("bukt http %s on %s, %d workers, pid %d", self.settings.instance,
                 self.settings.bind, self.settings.workers, os.getpid())

    @staticmethod
    def _post_fork(arbiter, worker):
        logs.set_role("http-worker")
        # uvicorn's worker took gunicorn's handlers for its loggers (none, BuktLogger):
        # its error log goes to the root's, as every logger here does; its access log
        # stays off (the app writes its own when log.access is on: middleware.py)
        logs.adopt("uvicorn.error")
        silence_uvicorn_access()

    def _on_exit(self, arbiter):
        if self.area is not None:
            self.area.unlink()
            self.area.close()
        if self.auth_table is not None:
            self.auth_table.unlink()
            self.auth_table.close()


def silence_uvicorn_access():
    """Turn uvicorn's access log off in this process: no handler and no propagation.
    uvicorn asks hasHandlers() once per connection and, if it gets True, builds a log
    record for every response; a NullHandler answered True, and those records were 4% of
    a worker's samples under wrk (py-spy, 1 MiB GETs). The app writes its own access
    lines when log.access is on (middleware.py)."""
    access = logging.getLogger("uvicorn.access")
    access.handlers, access.propagate = [], False


def serve_http(config=None, attach=None):
    """Run the HTTP server until SIGTERM/SIGINT; returns when the arbiter exits."""
    from bukt.http.settings import lookup
    logs.configure("http", lookup(config, "log.level", "info"),
                   lookup(config, "log.format", "text"))
    HttpServer(config, attach).run()
