"""`bukt serve`: the whole service from one configuration, supervised.

HOW IT STARTS

    config -> data_dir + serve.lock -> admin token -> writer ready -> HTTP + TCP listen
           -> READY=1, the banner, data_dir/serve.json

1. The configuration is loaded (defaults < file < BUKT_* variables) and refused with
   the key, the value and what is allowed when it is wrong (exit 2).
2. data_dir is created and `data_dir/serve.lock` is locked (flock), so a second
   `bukt serve` for the same data is refused; both addresses are bound once and
   released, so a port in use is reported before anything starts (exit 2).
3. The admin token is resolved the way the HTTP side resolves it
   (bukt.tokens.admin_token): auth.admin_token / BUKT_ADMIN_TOKEN, else
   `data_dir/admin.token`, generated with mode 0600 on the first start.
4. The children are started from one file, `data_dir/serve.effective.json` (0600):
   the configuration this supervisor validated, with every variable already applied;
   JSON, so that a child starts without importing PyYAML (bukt/config.py).
   They get an environment without BUKT_* keys and without NOTIFY_SOCKET, so they read
   exactly what was validated, and only this process speaks to systemd (sdnotify.py).
5. The writer first (`bukt writer`): it recovers and creates or re-attaches the
   segment; it is ready when the segment header says so (store.writer_info()["ready"]
   with its pid). A long recovery extends systemd's start timeout as it goes.
6. Then the gunicorn arbiter (`bukt http`) and the TCP pool (`bukt tcp`); each is up
   when it answers: GET /healthz for HTTP, a PING for TCP. (Neither front end has a
   readiness signal of its own yet, so they are polled.)

SUPERVISION. Each child runs in its own process group, so a child and whatever it
forked (gunicorn's workers, the TCP workers) are signalled and, if need be, killed
together. The front ends replace their own workers (gunicorn's arbiter, the TCP pool);
this supervisor replaces a child that exits: after BACKOFF_MIN_S, doubling up to
BACKOFF_MAX_S while it keeps dying within STABLE_S of its start, and it gives up (exit
1, for systemd's Restart= to judge) after GIVE_UP_AFTER such deaths in a row. A writer
whose heartbeat stops for WRITER_STALL_S while its process lives is killed and
replaced. A writer that comes back with a new segment (a cold start) has the front ends
restarted, since they would otherwise go on serving the old one. While every child is
up the loop sleeps until one exits (a pidfd each) or a signal comes (the handlers write
a wake pipe), a second at most (IDLE_WAIT_S); it polls every POLL_S only while a child
starts, is down or drains.

SIGTERM / SIGINT: STOPPING=1; the front ends are told first (they stop accepting and
answer what they have read, within shutdown_timeout less the writer's share), then the
writer (it drains the ring, fsyncs and exits). Exit 0 when the writer stopped cleanly
within shutdown_timeout; 1 otherwise (what it had not written stays in the segment's
ring and is logged by the next writer, so a kill loses nothing unless the host goes
down too).

SIGHUP: the configuration is read again. Keys fixed in the segment (SEGMENT_KEYS) or
bound at start (RESTART_KEYS) keep their running values and are logged as needing a
cold start or a restart; every other change is applied by restarting the children that
read it (KEY_ROLES; log.level and log.format: every child, and this process's own
logging at once): the writer (a warm restart: milliseconds, nothing lost), the TCP
pool (the new pool starts beside the old one on the same SO_REUSEPORT port, then the
old one drains: no refused connection) and the HTTP arbiter (stopped, then started:
about a second without HTTP, until gunicorn binds with SO_REUSEPORT too). A file that
does not load is refused and the running configuration stays.

WATCHDOG=1 is sent every WATCHDOG_USEC / 2 from every wait of this process (the loop,
a reload, a restart, the shutdown): systemd restarts the service when the supervisor
hangs; hung children are the supervisor's to replace.
"""
import errno
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import bukt
from bukt import config as config_mod
from bukt import logs
from bukt import owners
from bukt.service import procs
from bukt.service import probes as probe
from bukt.errors import BuktError
from bukt.service.sdnotify import CHILD_ENV_DROP, Notifier

__all__ = ["serve", "Supervisor", "ServeError", "SEGMENT_KEYS", "RESTART_KEYS",
           "KEY_ROLES", "STATE_FILE", "EFFECTIVE_FILE"]

log = logging.getLogger("bukt.serve")

POLL_S = 0.05               # the supervision loop's tick while a child starts, is down
                            # or drains (retiring)
IDLE_WAIT_S = 1.0           # with every child up: the loop sleeps until a child exits (its
                            # pidfd), a signal (the wake pipe), or this long at most (and no
                            # later than the writer check or the watchdog), not POLL_S: an
                            # idle service's supervisor woke 20 times a second
PROBE_EVERY_S = 0.1         # how often a starting child is probed
LISTEN_TIMEOUT_S = 60.0     # a front end that does not answer within this failed to start
BACKOFF_MIN_S = 0.1         # first restart delay of a dead child
BACKOFF_MAX_S = 10.0        # ... doubled while it keeps dying quickly, up to this
STABLE_S = 10.0             # a child that lived this long gets the shortest delay again
GIVE_UP_AFTER = 5           # quick deaths in a row after which the service stops (exit 1)
WRITER_STALL_S = 10.0       # a live writer silent this long (heartbeat) is replaced
WRITER_CHECK_S = 1.0        # how often the writer's heartbeat is looked at
RECOVERY_EXTEND_S = 30.0    # EXTEND_TIMEOUT_USEC step while the writer recovers
WRITER_SHARE_S = 2.0        # of shutdown_timeout, kept for the writer's final flush

STATE_FILE = "serve.json"            # in data_dir: pids and addresses, for `bukt status`
EFFECTIVE_FILE = "serve.effective.json"
LOCK_FILE = "serve.lock"

# Fixed in the segment when it is created: a change needs a cold start.
SEGMENT_KEYS = frozenset({"memory", "segment.mode", "limits.max_key", "limits.max_value",
                          "limits.max_buckets", "limits.ring_size", "limits.ring_wait_ms"})
# Bound when the service starts: a change needs a restart.
RESTART_KEYS = frozenset({"instance", "data_dir", "http.bind", "tcp.bind", "resp.bind",
                          "s3.bind"})
# Read by every process when it sets up its logging (bukt/logs.py): a change restarts
# every child (each configures its logging afresh) and reconfigures the supervisor's.
LOG_KEYS = frozenset({"log.level", "log.format"})


def KEY_ROLES(key: str) -> tuple:
    """The children that read `key` (restarted when SIGHUP changes it)."""
    if key.startswith(("http.", "ratelimit.", "s3.")):
        return ("http",)
    if key == "limits.max_object":              # objects through every face
        return ("http", "tcp")
    if key == "objects.upload_timeout":         # the sweep; the S3 gateway's uploads
        return ("writer", "http")
    if key.startswith(("tcp.", "resp.")):
        return ("tcp",)
    if key == "auth.admin_token":
        return ("http", "tcp")
    if key == "shutdown_timeout":
        return ("writer", "tcp")
    if key in LOG_KEYS:
        return ("writer", "tcp", "http", "replica")
    if key.startswith("log."):                  # the access log: the HTTP workers'
        return ("http",)
    if key.startswith(("fsync", "compaction.", "expiry.", "recovery.")):
        return ("writer",)
    return ()


def disk_full(e, data_dir) -> str:
    """What to say when a start fails for want of disk space (ENOSPC, EDQUOT)."""
    where = e.filename or data_dir
    return (f"the disk is full: {e.strerror} writing {where}; free space on the "
            f"file system of data_dir {data_dir} (df -h {data_dir}), or choose another")


class ServeError(BuktError):
    """The service cannot start; `exit_code` 2 when an operator must change something."""

    code = "serve_error"

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


class _Stop(Exception):
    """SIGTERM arrived while something was being waited for."""


def _flat(cfg) -> dict:
    return {k: cfg.get(k) for k in config_mod.SCHEMA}


def _describe_exit(code) -> str:
    if code is None:
        return "running"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit {code}"


class Child:
    """One supervised process: the writer, the HTTP arbiter or the TCP pool."""

    def __init__(self, role, argv):
        self.role, self.argv = role, argv
        self.proc = None
        self.state = "down"         # down -> starting -> up; down again when it exits
        self.started = 0.0
        self.backoff = BACKOFF_MIN_S
        self.quick_deaths = 0
        self.restart_at = None      # monotonic time of the next start, when down
        self.restarts = 0
        self.next_probe = 0.0
        self.pidfd = None           # readable once the process exits (the idle wait)

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def spawn(self, env, extra=()):
        self.proc = subprocess.Popen(self.argv + list(extra), env=env, process_group=0,
                                     stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self.close_pidfd()
        self.pidfd = procs.pidfd_of(self.proc.pid)
        self.state, self.started, self.restart_at = "starting", time.monotonic(), None
        self.next_probe = 0.0
        return self.proc

    def exited(self) -> bool:
        """Has the process exited? It is not reaped here (WNOWAIT), so its pid, which is
        also its process group's id, cannot be reused before kill_group has run."""
        if self.proc is None:
            return False
        if self.proc.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.proc.pid,
                             os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def kill_group(self, sig=signal.SIGKILL):
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def signal(self, sig):
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def reap(self):
        """After exited(): kill what the child left in its group, collect its status."""
        self.kill_group()
        code = self.proc.wait()
        self.state = "down"
        self.close_pidfd()
        return code

    def close_pidfd(self):
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


class Supervisor:
    def __init__(self, cfg, config_path=None, cold=False, env=None):
        self.cfg = cfg
        self.config_path = config_path
        self.cold = cold
        self.env = dict(os.environ if env is None else env)
        self.notify = Notifier(self.env)
        self.data_dir = os.path.abspath(cfg.data_dir)
        self.effective_path = os.path.join(self.data_dir, EFFECTIVE_FILE)
        self.stop_requested = False
        self.reload_requested = False
        self.lock_fd = None
        self.generation = None
        self.retiring = []          # (Child, deadline): replaced children still draining
        self.admin_token_where = None
        self.next_writer_check = 0.0
        self.exits = None           # the idle wait's wake pipe (install_signals)
        argv = [sys.executable, "-m", "bukt"]
        self.children = {role: Child(role, argv + [role, "--config", self.effective_path])
                         for role in ("writer", "http", "tcp")}
        # a read replica's applier (docs/design.md, Replicas): after the writer, stopped
        # with the front ends
        from bukt.replica import primary_of
        if primary_of(cfg):
            self.children["replica"] = Child("replica", argv + [
                "replica-follow", "--config", self.effective_path])

    # -- the environment the children get ----------------------------------------------
    def child_env(self) -> dict:
        keep = config_mod.ENV_NOT_KEYS | {"BUKT_FAKE_TIME_FILE"}
        env = {k: v for k, v in self.env.items()
               if k not in CHILD_ENV_DROP
               and not (k.startswith(config_mod.ENV_PREFIX) and k not in keep)}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def write_effective(self, cfg) -> None:
        """The configuration the children read, validated by loading it back."""
        d = cfg.as_dict()
        d["data_dir"] = self.data_dir
        text = json.dumps(d, indent=2) + "\n"
        tmp = self.effective_path[:-len(".json")] + ".tmp.json"    # read as JSON too
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        config_mod.load(tmp, env={})        # what the children will see must load
        os.rename(tmp, self.effective_path)

    def write_state(self) -> None:
        c = self.children
        state = {"pid": os.getpid(), "start": owners.start_time(os.getpid()),
                 "instance": self.cfg.instance,
                 "config": os.path.abspath(self.config_path) if self.config_path else None,
                 "data_dir": self.data_dir, "admin_token": self.admin_token_where,
                 "http": {"bind": self.cfg.http.bind, "pid": c["http"].pid},
                 "tcp": {"bind": self.cfg.tcp.bind, "pid": c["tcp"].pid},
                 "writer": {"pid": c["writer"].pid},
                 "replica": {"pid": c["replica"].pid} if "replica" in c else None,
                 "restarts": {r: ch.restarts for r, ch in c.items()},
                 "updated": time.time()}
        path = os.path.join(self.data_dir, STATE_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump(state, f, indent=1)
        os.rename(path + ".tmp", path)

    # -- start ---------------------------------------------------------------------------
    def preflight(self) -> None:
        try:
            os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        except OSError as e:
            raise ServeError(f"data_dir {self.data_dir}: cannot create it: {e.strerror}; "
                             "choose another with data_dir or BUKT_DATA_DIR", 2) from None
        path = os.path.join(self.data_dir, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            other = _read_json(os.path.join(self.data_dir, STATE_FILE)).get("pid", "?")
            raise ServeError(f"another `bukt serve` (pid {other}) runs on data_dir "
                             f"{self.data_dir}; stop it first, or give this one another "
                             "data_dir and instance", 2) from None
        self.lock_fd = fd
        for key in ("http.bind", "tcp.bind") + (("resp.bind",) if self.cfg.get("resp.enabled")
                                                else ()) + \
                (("s3.bind",) if self.cfg.get("s3.bind") else ()):
            _check_bind(key, self.cfg.get(key))

    def resolve_admin_token(self) -> None:
        from bukt.tokens import admin_token
        try:
            _, where = admin_token(self.cfg.get("auth.admin_token"),
                                   self.data_dir, create=True)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise ServeError(f"admin token: {e}", 2) from None
        except ValueError as e:
            raise ServeError(f"admin token: {e}", 2) from None
        self.admin_token_where = {"config": "configured (auth.admin_token)",
                                  "env": "from BUKT_ADMIN_TOKEN"}.get(where) \
            or os.path.abspath(where)

    def start(self) -> None:
        self.preflight()
        self.resolve_admin_token()
        self.write_effective(self.cfg)
        self.notify.status("starting the writer")
        w = self.children["writer"]
        w.spawn(self.child_env(), ["--cold"] if self.cold else [])
        log.info("writer started (pid %d)%s; waiting for it to be ready", w.pid,
                 ", cold start asked" if self.cold else "")
        self.wait_up(w, first=True)
        if "replica" in self.children:
            self.children["replica"].spawn(self.child_env())
            self.wait_up(self.children["replica"], first=True)
        self.notify.status("starting HTTP and TCP")
        for role in ("http", "tcp"):
            self.children[role].spawn(self.child_env())
        for role in ("http", "tcp"):
            self.wait_up(self.children[role], first=True)
        self.write_state()

    def probe(self, child):
        """True once `child` is ready (writer) or answers (front ends)."""
        if child.role == "writer":
            info = self.writer_info()
            if info is None or not info["ready"] or info["pid"] != child.pid:
                return False
            if self.generation is not None and info["generation"] != self.generation:
                log.warning("the writer made a new segment (cold start): restarting HTTP "
                            "and TCP so they serve it")
                self.generation = info["generation"]
                for role in ("http", "tcp"):
                    if self.children[role].proc is not None:
                        self.restart_now(self.children[role])
            self.generation = info["generation"]
            return True
        if child.role == "replica":
            return True                 # it copies and follows on its own time
        if child.role == "http":
            return probe.http_health(self.cfg.http.bind, timeout=0.5) is not None
        return probe.tcp_ping(self.cfg.tcp.bind, timeout=0.5) is not None

    def wait_up(self, child, first=False, timeout=None) -> None:
        """Blocks until `child` is up. Raises ServeError if it exits or (front ends)
        does not answer in time, _Stop on SIGTERM."""
        t0 = time.monotonic()
        next_extend = t0 + RECOVERY_EXTEND_S / 3
        if timeout is None and child.role != "writer":
            timeout = LISTEN_TIMEOUT_S
        while True:
            if self.stop_requested:
                raise _Stop()
            if child.exited():
                code = child.reap()
                raise ServeError(f"the {child.role} process exited ({_describe_exit(code)}) "
                                 "before it was ready; its messages are above",
                                 2 if code == 2 else 1)
            if self.probe(child):
                child.state = "up"
                log.info("%s is up (pid %d) after %.2f s", child.role, child.pid,
                         time.monotonic() - t0)
                return
            now = time.monotonic()
            if timeout is not None and now - t0 > timeout:
                child.kill_group()
                child.reap()
                raise ServeError(f"the {child.role} process did not answer on "
                                 f"{self.cfg.get(child.role + '.bind')} within {timeout:g} s")
            if child.role == "writer" and now >= next_extend:
                next_extend = now + RECOVERY_EXTEND_S / 3
                self.notify.extend_timeout(RECOVERY_EXTEND_S)
                self.notify.status(f"the writer is recovering ({now - t0:.0f} s)")
            self.pause(PROBE_EVERY_S if first else POLL_S)

    def writer_info(self):
        try:
            store = bukt.attach(self.cfg.instance, readonly=True)
        except (BuktError, OSError):
            return None
        try:
            return store.writer_info()
        finally:
            store.close()

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> int:
        self.install_signals()
        try:
            try:
                try:
                    self.start()
                except OSError as e:
                    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    raise ServeError(disk_full(e, self.data_dir)) from None
            except _Stop:
                return self.shutdown()
            except ServeError:
                self.shutdown(quiet=True)
                raise
            self.notify.ready(self.status_line())
            self.banner()
            return self.loop()
        finally:
            self.cleanup()

    def loop(self) -> int:
        while True:
            if self.stop_requested:
                return self.shutdown()
            if self.reload_requested:
                try:
                    self.reload()
                except _Stop:
                    continue
            now = time.monotonic()
            for child in list(self.children.values()):
                if child.state != "down" and child.exited():
                    if not self.on_death(child):
                        return self.shutdown(code=1)
                elif child.state == "starting" and now >= child.next_probe:
                    child.next_probe = now + PROBE_EVERY_S
                    if self.probe(child):
                        child.state = "up"
                        log.info("%s is back (pid %d) after %.2f s", child.role, child.pid,
                                 now - child.started)
                        self.notify.status(self.status_line())
                elif child.state == "down" and child.restart_at is not None \
                        and now >= child.restart_at and self.may_start(child):
                    child.restarts += 1
                    child.spawn(self.child_env())
                    log.info("%s restarted (pid %d, restart %d)", child.role, child.pid,
                             child.restarts)
                    self.write_state()
            self.check_writer(now)
            self.finish_retiring(now)
            self.idle_pause()

    def idle_pause(self) -> None:
        """The loop's sleep: POLL_S while a child starts, is down or drains; with every
        child up, until one exits or a signal comes (or the writer check, the watchdog,
        IDLE_WAIT_S at most)."""
        children = list(self.children.values())
        if self.retiring or any(c.state != "up" for c in children) or self.exits is None:
            self.pause(POLL_S)
            return
        now = time.monotonic()
        wait = min(IDLE_WAIT_S, max(0.0, self.next_writer_check - now))
        if self.notify.watchdog_interval is not None:
            wait = min(wait, self.notify.watchdog_interval)
        if self.notify.watchdog_due(now):
            self.notify.watchdog(now)
        self.exits.wait(wait, [c.pidfd for c in children if c.pidfd is not None])

    def pause(self, seconds) -> None:
        """Sleeps; every wait of the supervisor goes through here, so WATCHDOG=1 keeps
        coming while it waits for a child (a reload, a restart, the shutdown)."""
        now = time.monotonic()
        if self.notify.watchdog_due(now):
            self.notify.watchdog(now)
        time.sleep(seconds)

    def may_start(self, child) -> bool:
        """Front ends wait for a writer that is being restarted (they attach to the
        segment it may be recreating)."""
        return child.role == "writer" or self.children["writer"].state == "up"

    def on_death(self, child) -> bool:
        """Schedules the restart of a child that exited; False to give up."""
        lived = time.monotonic() - child.started
        code = child.reap()
        if child.role == "replica":
            from bukt.replica import promoted
            if promoted(self.data_dir) is not None:
                log.warning("the replica's applier stopped after a promotion: this "
                            "service is a primary now")
                del self.children["replica"]
                self.write_state()
                return True
        if lived >= STABLE_S:
            child.backoff, child.quick_deaths = BACKOFF_MIN_S, 0
        else:
            child.quick_deaths += 1
        if child.quick_deaths >= GIVE_UP_AFTER:
            log.error("the %s died %d times in a row within %g s of its start (last: %s); "
                      "giving up: see its messages above", child.role, child.quick_deaths,
                      STABLE_S, _describe_exit(code))
            self.notify.status(f"failed: the {child.role} keeps dying")
            return False
        delay = child.backoff
        child.backoff = min(child.backoff * 2, BACKOFF_MAX_S)
        child.restart_at = time.monotonic() + delay
        log.warning("the %s (pid %d) died (%s) after %.1f s; restarting it in %.1f s",
                    child.role, child.proc.pid, _describe_exit(code), lived, delay)
        self.notify.status(f"restarting the {child.role} ({_describe_exit(code)})")
        return True

    def check_writer(self, now) -> None:
        w = self.children["writer"]
        if w.state != "up" or now < self.next_writer_check:
            return
        self.next_writer_check = now + WRITER_CHECK_S
        info = self.writer_info()
        if info is None or info["pid"] != w.pid or not info["heartbeat_ms"]:
            return
        silent = time.time() - info["heartbeat_ms"] / 1000
        if silent > WRITER_STALL_S:
            log.error("the writer (pid %d) has published no heartbeat for %.0f s: killing "
                      "it to start another", w.pid, silent)
            w.kill_group()

    def restart_now(self, child) -> None:
        """Stops `child` (gracefully, bounded) and starts it again at once."""
        self.stop_child(child, self.cfg.shutdown_timeout)
        child.restarts += 1
        child.spawn(self.child_env())

    def stop_child(self, child, timeout) -> int:
        if child.proc is None or child.proc.returncode is not None:
            child.state = "down"
            return child.proc.returncode if child.proc is not None else 0
        child.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while not child.exited() and time.monotonic() < deadline:
            self.pause(0.02)
        if not child.exited():
            log.error("the %s (pid %d) did not stop within %.1f s: killed", child.role,
                      child.pid, timeout)
        return child.reap()

    def finish_retiring(self, now) -> None:
        for entry in list(self.retiring):
            old, deadline = entry
            if old.exited() or now >= deadline:
                if not old.exited():
                    log.error("the old %s (pid %d) did not drain in time: killed", old.role,
                              old.pid)
                old.reap()
                self.retiring.remove(entry)

    # -- SIGHUP --------------------------------------------------------------------------
    def reload(self) -> None:
        self.reload_requested = False
        self.notify.reloading()
        try:
            new = config_mod.load(self.config_path, env=self.env)
        except config_mod.ConfigError as e:
            log.error("SIGHUP: the configuration is refused, the running one stays: %s", e)
            self.notify.ready(self.status_line())
            return
        old, flat = _flat(self.cfg), _flat(new)
        changed = [k for k in config_mod.SCHEMA if old[k] != flat[k]]
        cold = [k for k in changed if k in SEGMENT_KEYS]
        restart = [k for k in changed if k in RESTART_KEYS]
        for k in cold + restart:
            flat[k] = old[k]
        if cold:
            log.warning("SIGHUP: %s changed; fixed in the segment at its creation, they "
                        "apply after a cold start (stop the service, then `bukt serve "
                        "--cold`)", ", ".join(cold))
        if restart:
            log.warning("SIGHUP: %s changed; they apply after a restart of the service",
                        ", ".join(restart))
        applied = [k for k in changed if k not in cold and k not in restart]
        if not applied:
            log.info("SIGHUP: nothing to apply now")
            self.notify.ready(self.status_line())
            return
        nested = {}
        for k, v in flat.items():
            node = nested
            *parents, leaf = k.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = v
        try:
            self.write_effective(config_mod.Config(nested))
        except config_mod.ConfigError as e:
            log.error("SIGHUP: with the keys that need a restart kept as they are, the "
                      "configuration is refused (%s); the running one stays", e)
            self.notify.ready(self.status_line())
            return
        self.cfg = config_mod.load(self.effective_path, env={})
        logs.from_config("serve", self.cfg)     # log.level, log.format: this process's
        roles = [r for r in ("writer", "tcp", "http", "replica")
                 if r in self.children and any(r in KEY_ROLES(k) for k in applied)]
        log.info("SIGHUP: applying %s; restarting %s", ", ".join(applied),
                 ", ".join(roles) or "nothing")
        for role in roles:
            child = self.children[role]
            try:
                self.roll(child)
            except ServeError as e:
                log.error("SIGHUP: %s; it is restarted as after a death", e)
                child.state, child.restart_at = "down", time.monotonic() + child.backoff
        self.write_state()
        self.notify.ready(self.status_line())

    def roll(self, child) -> None:
        """Replaces `child` with one that reads the new configuration."""
        if child.role == "tcp" and child.state == "up":
            old = Child(child.role, child.argv)
            old.proc, old.state, old.started = child.proc, "retiring", child.started
            child.restarts += 1
            child.spawn(self.child_env())
            try:
                # the old pool still answers PING: the new one is up when all its
                # workers exist (each listens before it is forked: bukt/tcp/pool.py)
                workers = self.cfg.tcp.workers or os.cpu_count() or 1
                deadline = time.monotonic() + LISTEN_TIMEOUT_S
                while len(procs.children_of(child.pid)) < workers:
                    if self.stop_requested:
                        raise _Stop()
                    if child.exited() or time.monotonic() > deadline:
                        child.kill_group()
                        raise ServeError(f"the new TCP pool did not start "
                                         f"({_describe_exit(child.reap())})")
                    self.pause(0.02)
                child.state = "up"
            except ServeError as e:
                log.error("SIGHUP: %s; the old pool goes on", e)
                child.proc, child.state, child.started = old.proc, "up", old.started
                return
            except _Stop:
                old.signal(signal.SIGTERM)
                self.retiring.append((old, time.monotonic() + self.cfg.shutdown_timeout))
                raise
            log.info("tcp: the new pool (pid %d) listens; the old one (pid %d) drains",
                     child.pid, old.pid)
            old.signal(signal.SIGTERM)
            self.retiring.append((old, time.monotonic() + self.cfg.shutdown_timeout + 1))
            return
        self.restart_now(child)
        self.wait_up(child)

    # -- stop ----------------------------------------------------------------------------
    def shutdown(self, quiet=False, code=0) -> int:
        timeout = self.cfg.shutdown_timeout
        t0 = time.monotonic()
        deadline = t0 + timeout
        self.notify.stopping()
        if not quiet:
            log.info("stopping: HTTP and TCP first, then the writer (within %g s)", timeout)
        fronts = [self.children["http"], self.children["tcp"]] + [c for c, _ in self.retiring]
        if "replica" in self.children:
            fronts.append(self.children["replica"])
        for c in fronts:
            c.signal(signal.SIGTERM)
        front_deadline = deadline - min(WRITER_SHARE_S, timeout / 3)
        for c in fronts:
            while c.proc is not None and not c.exited() and time.monotonic() < front_deadline:
                self.pause(0.02)
            if c.proc is not None and not c.exited():
                log.error("the %s (pid %d) did not stop in time: killed", c.role, c.pid)
            if c.proc is not None and c.proc.returncode is None:
                c.reap()
        self.retiring.clear()
        w = self.children["writer"]
        if w.proc is not None and w.proc.returncode is None:
            wcode = self.stop_child(w, max(0.1, deadline - time.monotonic()))
            if wcode != 0:
                code = 1
                log.error("the writer stopped with %s; what it had not written stays in "
                          "the segment and the next writer logs it", _describe_exit(wcode))
        if not quiet:
            log.info("stopped in %.2f s (exit %d)", time.monotonic() - t0, code)
        return code

    def cleanup(self) -> None:
        for c in list(self.children.values()) + [c for c, _ in self.retiring]:
            if c.proc is not None and c.proc.returncode is None:
                c.kill_group()
                c.proc.wait()
        for name in (STATE_FILE,):
            try:
                os.unlink(os.path.join(self.data_dir, name))
            except OSError:
                pass
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
        for c in list(self.children.values()) + [c for c, _ in self.retiring]:
            c.close_pidfd()
        if self.exits is not None:
            self.exits.close()
            self.exits = None
        self.notify.close()

    # -- signals and words -----------------------------------------------------------------
    def install_signals(self) -> None:
        if self.exits is None:
            self.exits = procs.ExitWatch()

        def stop(signum, frame):
            self.stop_requested = True
            self.exits.wake()

        def reload(signum, frame):
            self.reload_requested = True
            self.exits.wake()
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    def status_line(self) -> str:
        return (f"serving {self.cfg.instance}: HTTP {self.cfg.http.bind}, "
                f"TCP {self.cfg.tcp.bind}, writer pid {self.children['writer'].pid}")

    def banner(self) -> None:
        host, port = probe.client_host(self.cfg.http.bind)
        thost, tport = probe.client_host(self.cfg.tcp.bind)
        h = f"[{host}]" if ":" in host else host
        t = f"[{thost}]" if ":" in thost else thost
        where = self.admin_token_where
        resp = ""
        if self.cfg.get("resp.enabled"):
            rh, rport = probe.client_host(self.cfg.get("resp.bind"))
            resp = f"\nRESP         redis://{rh}:{rport}      try: redis-cli -p {rport} PING"
        if self.cfg.get("s3.bind"):
            sh, sport = probe.client_host(self.cfg.get("s3.bind"))
            resp += f"\nS3           http://{sh}:{sport}      (docs/s3.md)"
        log.info(f"""bukt serve: ready (instance {self.cfg.instance}, pid {os.getpid()})
HTTP         http://{h}:{port}      try: curl http://{h}:{port}/healthz
TCP          bukt://{t}:{tport}{resp}
admin token  {where}
data         {self.data_dir}   segment /dev/shm/bukt-{self.cfg.instance}
stop         Ctrl-C, or kill -TERM {os.getpid()}""")


def _die_with_parent():
    """In the child before exec: SIGTERM when the supervisor dies (PR_SET_PDEATHSIG), so a
    killed `bukt serve` does not leave children holding the ports and the data dir."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))     # PR_SET_PDEATHSIG


def _read_json(path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _check_bind(key, bind) -> None:
    host, port = config_mod.parse_bind(bind)
    if port == 0:
        raise ServeError(f"{key}: {bind!r}: bukt serve needs a fixed port (0 would be a "
                         "different one for every process)", 2)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            hint = {errno.EADDRINUSE: "the port is in use (another Bukt, or another program: "
                                      f"`ss -ltnp 'sport = :{port}'`); choose another",
                    errno.EACCES: "ports below 1024 need CAP_NET_BIND_SERVICE; choose "
                                  "another",
                    errno.EADDRNOTAVAIL: "no interface of this host has that address"}
            raise ServeError(f"{key}: {bind}: {e.strerror}: "
                             f"{hint.get(e.errno, 'choose another')} "
                             f"(BUKT_{key.upper().replace('.', '__')})", 2) from None
        except socket.gaierror as e:
            raise ServeError(f"{key}: {bind}: {e}", 2) from None


def serve(cfg, config_path=None, cold=False) -> int:
    """Runs the service until SIGTERM; the exit code."""
    logs.from_config("serve", cfg)
    sup = Supervisor(cfg, config_path, cold=cold)
    try:
        return sup.run()
    except ServeError as e:
        log.error("bukt serve: %s", e)          # once: the log is stderr
        return e.exit_code
