"""A real `bukt serve` for tests: a unique instance, unused ports, a data directory under
tmp_path, a config file; start, wait for its banner, talk to it over HTTP and TCP, stop
it, and in teardown kill whatever is left (the supervisor's session, every process
whose command line names this test's directory) and unlink its segments."""
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

from names import unique_name, unlink_areas
from writer_harness import write_config

PY = sys.executable
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
START_TIMEOUT = 60


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=10.0, step=0.05, what="a condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def base_settings(tmp_path, name):
    return {"instance": name, "memory": "32MiB", "data_dir": str(tmp_path / "var"),
            "limits": {"ring_size": "4MiB"},
            "http": {"bind": f"127.0.0.1:{unused_port()}", "workers": 1, "access_log": None},
            "tcp": {"bind": f"127.0.0.1:{unused_port()}", "workers": 1},
            "resp": {"bind": f"127.0.0.1:{unused_port()}"},
            "shutdown_timeout": 10}


class Service:
    def __init__(self, tmp_path, **overrides):
        self.tmp = tmp_path
        self.name = unique_name("s")
        self.settings = base_settings(tmp_path, self.name)
        self.conf = str(tmp_path / "bukt.yaml")
        self.proc = None
        self.runs = 0
        self.configure(**overrides)

    # -- configuration ---------------------------------------------------------------------
    def configure(self, **overrides):
        write_config(self.conf, self.settings, overrides)

    @property
    def http_bind(self):
        return self.settings["http"]["bind"]

    @property
    def tcp_bind(self):
        return self.settings["tcp"]["bind"]

    @property
    def resp_port(self):
        return int(self.settings["resp"]["bind"].rsplit(":", 1)[1])

    @property
    def http_port(self):
        return int(self.http_bind.rsplit(":", 1)[1])

    @property
    def tcp_port(self):
        return int(self.tcp_bind.rsplit(":", 1)[1])

    @property
    def data_dir(self):
        return self.settings["data_dir"]

    # -- the process -------------------------------------------------------------------------
    def env(self, **extra):
        e = {k: v for k, v in os.environ.items()
             if not k.startswith("BUKT_") and k != "NOTIFY_SOCKET"}
        e.update(PYTHONPATH=ROOT, PYTHONUNBUFFERED="1", **extra)
        return e

    def start(self, wait=True, args=(), env=None, cmd=None):
        self.runs += 1
        self.log_path = str(self.tmp / f"serve-{self.runs}.log")
        cmd = cmd or [PY, "-m", "bukt", "serve", "--config", self.conf, *args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=str(self.tmp), stdout=log,
                                         stderr=subprocess.STDOUT, env=env or self.env(),
                                         start_new_session=True)
        if wait:
            self.wait_ready()
        return self.proc

    def wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while "bukt serve: ready" not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(f"bukt serve exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"bukt serve not ready in {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, timeout=30):
        """SIGTERM; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"bukt serve did not stop in {timeout} s:\n{self.log()}")

    def state(self):
        with open(os.path.join(self.data_dir, "serve.json")) as f:
            return json.load(f)

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        kill_matching(str(self.tmp))
        unlink_areas(self.name)

    # -- talking to it -----------------------------------------------------------------------
    def admin_token(self):
        with open(os.path.join(self.data_dir, "admin.token")) as f:
            return f.read().strip()

    def http(self, method, path, body=None, headers=None, timeout=10):
        """(status, body bytes) on a new connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            h = dict(headers or {})
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                h["Content-Type"] = "application/json"
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def healthy(self):
        """True when /healthz says 200 and TCP answers PING."""
        from bukt.service.probes import http_health, tcp_ping
        h = http_health(self.http_bind)
        return bool(h and h[0] == 200 and tcp_ping(self.tcp_bind) is not None)

    def create_bucket(self, name, **settings):
        status, body = self.http("POST", "/api/v1/buckets", {"name": name, **settings},
                                 {"X-Auth-Token": self.admin_token()})
        assert status == 201, body
        return json.loads(body)["token"]

    def client(self, bucket, token, **kw):
        from bukt.client import Client
        return Client(host="127.0.0.1", port=self.tcp_port, bucket=bucket, token=token, **kw)

    def children(self, role):
        """Pids of the workers of the front end `role` ("http" or "tcp")."""
        from bukt.service.procs import children_of
        return children_of(self.state()[role]["pid"])


def kill_matching(text):
    """SIGKILL every process whose command line contains `text` (this test's tmp dir)."""
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


@contextlib.contextmanager
def s3_service(tmp, *buckets):
    """A started `bukt serve` with S3 on an unused port (`settings['s3']['bind']`) and
    the given buckets, each one's token kept as `tokens[name]`; stopped cleanly after."""
    s = Service(tmp, memory="128MiB", s3={"bind": f"127.0.0.1:{unused_port()}"})
    try:
        s.start()
        s.tokens = {name: s.create_bucket(name) for name in buckets}
        yield s
        assert s.stop() == 0
    finally:
        s.cleanup()
