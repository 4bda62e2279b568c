"""The systemd side: the unit files pass `systemd-analyze verify` as `make install-units`
puts them in place, sysusers.d and tmpfiles.d apply in a scratch root, and `bukt serve`
speaks the notify protocol to a datagram socket this test binds (READY=1 only once HTTP
and TCP answer, WATCHDOG=1 at half of WATCHDOG_USEC, RELOADING=1 on SIGHUP, STOPPING=1
on SIGTERM), and no process but the supervisor speaks.

systemd-analyze, systemd-sysusers and systemd-tmpfiles come with the Debian package
`systemd`; the tests that need them are skipped where they are missing."""
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from bukt.service.probes import http_health, tcp_ping
from bukt.service.sdnotify import Notifier
from serve_harness import ROOT, Service, wait_for

UNITS = os.path.join(ROOT, "systemd")
needs = {tool: pytest.mark.skipif(shutil.which(tool) is None,
                                  reason=f"{tool} is not installed (apt-get install systemd)")
         for tool in ("systemd-analyze", "systemd-sysusers", "systemd-tmpfiles")}


@pytest.fixture
def staged(tmp_path):
    """`make install-units` into a staging directory, ExecStart pointing at this venv."""
    dest = tmp_path / "root"
    prefix = os.path.dirname(os.path.dirname(sys.executable))   # the venv: bin/bukt is there
    r = subprocess.run(["make", "-s", "--no-print-directory", "-C", ROOT, "install-units",
                        f"DESTDIR={dest}", f"PREFIX={prefix}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return dest, prefix


def test_make_install_units_places_every_file(staged):
    dest, prefix = staged
    unit = (dest / "etc/systemd/system/bukt.service").read_text()
    assert f"ExecStart={prefix}/bin/bukt serve --config /etc/bukt/bukt.yaml" in unit
    assert (dest / "etc/sysusers.d/bukt.conf").exists()
    assert (dest / "etc/tmpfiles.d/bukt.conf").exists()
    conf = dest / "etc/bukt/bukt.yaml"
    assert conf.stat().st_mode & 0o777 == 0o640
    from bukt import config
    installed = config.load(conf, env={})
    assert installed.data_dir == "/var/lib/bukt"          # the unit's StateDirectory=
    shipped = config.load(os.path.join(ROOT, "conf/bukt.yaml"), env={}).as_dict()
    assert {**shipped, "data_dir": "/var/lib/bukt"} == installed.as_dict()


@needs["systemd-analyze"]
def test_unit_passes_systemd_analyze_verify(staged):
    dest, _ = staged
    r = subprocess.run(["systemd-analyze", "verify", str(dest / "etc/systemd/system/bukt.service")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), \
        r.stdout + r.stderr


def test_unit_says_what_to_adapt_and_keeps_the_segment():
    text = open(os.path.join(UNITS, "bukt.service")).read()
    head = text.split("[Unit]")[0]
    assert "WHAT TO ADAPT" in head and "ExecStart=" in head and "User=" in head
    settings = dict(line.split("=", 1) for line in text.splitlines()
                    if "=" in line and not line.startswith("#"))
    for key, value in {"Type": "notify", "NotifyAccess": "main", "Restart": "on-failure",
                       "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes", "RemoveIPC": "no",
                       "PrivateDevices": "no", "KillMode": "mixed", "User": "bukt",
                       "StateDirectory": "bukt", "RuntimeDirectory": "bukt"}.items():
        assert settings.get(key) == value, key
    assert "AF_UNIX" in settings["RestrictAddressFamilies"]
    assert int(settings["LimitNOFILE"]) >= 4096


@needs["systemd-sysusers"]
@needs["systemd-tmpfiles"]
def test_sysusers_and_tmpfiles_apply(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    r = subprocess.run(["systemd-sysusers", f"--root={root}",
                        os.path.join(UNITS, "bukt.sysusers.conf")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    passwd = (root / "etc/passwd").read_text()
    line = next(ln for ln in passwd.splitlines() if ln.startswith("bukt:"))
    uid = int(line.split(":")[2])
    assert uid < 1000                     # a system user: logind leaves its IPC alone
    r = subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create",
                        os.path.join(UNITS, "bukt.tmpfiles.conf")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    st = os.stat(root / "var/lib/bukt")
    assert st.st_uid == uid and st.st_mode & 0o777 == 0o700


# -- the notify protocol ------------------------------------------------------------------------

class NotifySocket:
    """A bound AF_UNIX datagram socket that records (time, sender pid, message)."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.2)
        self.messages = []
        self.on_message = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        creds = socket.CMSG_SPACE(struct.calcsize("3i"))
        while not self.stop.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, creds)
            except socket.timeout:
                continue
            pid = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:12])[0]
            msg = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            if self.on_message:
                msg["_seen"] = self.on_message(msg)
            self.messages.append((time.monotonic(), pid, msg))

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()

    def having(self, key):
        return [(t, pid, m) for t, pid, m in self.messages if key in m]


def test_notify_protocol(tmp_path):
    service = Service(tmp_path)
    ns = NotifySocket(str(tmp_path / "notify.sock"))
    # When READY=1 arrives, both front ends must already answer.
    ns.on_message = lambda m: (http_health(service.http_bind) is not None,
                               tcp_ping(service.tcp_bind) is not None) if "READY" in m else None
    try:
        env = service.env(NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="400000")
        service.start(env=env)
        wait_for(lambda: ns.having("READY"), what="READY=1")
        pid = service.proc.pid
        ready = ns.having("READY")
        assert len(ready) == 1 and ready[0][2]["_seen"] == (True, True)
        assert "STATUS" in ready[0][2]
        assert ns.having("STATUS")[0][0] < ready[0][0]          # STATUS= while starting
        wait_for(lambda: len(ns.having("WATCHDOG")) >= 4, what="WATCHDOG=1")
        times = [t for t, _, _ in ns.having("WATCHDOG")]
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert all(0.19 < g < 1.0 for g in gaps), gaps              # every 0.2 s or so
        assert sorted(gaps)[len(gaps) // 2] < 0.4, gaps
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: ns.having("RELOADING"), what="RELOADING=1")
        wait_for(lambda: len(ns.having("READY")) == 2, what="READY=1 after the reload")
        assert service.stop() == 0
        stopping = ns.having("STOPPING")
        assert len(stopping) == 1
        # only the supervisor spoke: not the writer, not gunicorn
        assert {p for _, p, _ in ns.messages} == {pid}, ns.messages
    finally:
        ns.close()
        service.cleanup()


def test_notifier_abstract_socket_and_watchdog_pid():
    name = f"bukt-test-{os.getpid()}-{time.monotonic_ns()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(2)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000000",
                      "WATCHDOG_PID": str(os.getpid())})
        assert n.watchdog_interval == 0.5
        n.ready("up")
        assert s.recv(100) == b"READY=1\nSTATUS=up"
        other = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000000",
                          "WATCHDOG_PID": "1"})
        assert other.watchdog_interval is None        # the watchdog is another process's
        silent = Notifier({})
        silent.ready("nobody listens")                # no socket: nothing, no error
        assert not silent.enabled
    finally:
        s.close()
