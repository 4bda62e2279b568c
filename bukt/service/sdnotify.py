"""systemd's notify protocol, as `bukt serve` speaks it for the whole service.

The protocol is one datagram per message on the AF_UNIX socket named by $NOTIFY_SOCKET
(a path, or "@name" for the abstract namespace), the message being newline-separated
VAR=value assignments. Bukt sends:

    READY=1                 once the writer is ready and HTTP and TCP both listen
    STATUS=...              what it is doing, for `systemctl status`
    RELOADING=1 ... READY=1 around a SIGHUP reload (with MONOTONIC_USEC=, as systemd
                            253 wants it; older versions ignore what they do not know)
    EXTEND_TIMEOUT_USEC=... while a long recovery runs, so TimeoutStartSec= is not hit
    WATCHDOG=1              every WATCHDOG_USEC / 2, while the service is healthy
    STOPPING=1              when SIGTERM begins the shutdown

Only the supervisor speaks: its children are started without $NOTIFY_SOCKET (the
writer and gunicorn would otherwise announce READY=1 on their own, too early), which
also suits the unit's NotifyAccess=main.

No dependency: python-systemd is not needed for a datagram.
"""
import logging
import os
import socket
import time

__all__ = ["Notifier", "CHILD_ENV_DROP"]

log = logging.getLogger("bukt.serve")

# Variables that belong to the main process and must not reach the children.
CHILD_ENV_DROP = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
                  "LISTEN_PID", "LISTEN_FDNAMES")


class Notifier:
    """Sends notify messages when $NOTIFY_SOCKET is set; does nothing otherwise."""

    def __init__(self, env=None):
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET") or None
        if addr and addr.startswith("@"):
            addr = "\0" + addr[1:]
        self.addr = addr
        self.sock = None
        if addr:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.setblocking(False)
        # The watchdog applies to us when WATCHDOG_PID is unset or names this process.
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_interval = None
        if addr and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2
        self._next_watchdog = 0.0

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def send(self, **fields) -> None:
        """notify(READY=1, STATUS="...") sends "READY=1\\nSTATUS=..."."""
        if self.sock is None:
            return
        msg = "\n".join(f"{k}={v}" for k, v in fields.items())
        try:
            self.sock.sendto(msg.encode("utf-8", "replace"), self.addr)
        except OSError as e:        # systemd gone or its queue full: never fatal
            log.debug("sd_notify %r failed: %s", msg, e)

    def ready(self, status: str) -> None:
        self.send(READY=1, STATUS=status)

    def status(self, status: str) -> None:
        self.send(STATUS=status)

    def reloading(self) -> None:
        self.send(RELOADING=1, MONOTONIC_USEC=int(time.monotonic() * 1e6))

    def stopping(self, status: str = "stopping") -> None:
        self.send(STOPPING=1, STATUS=status)

    def extend_timeout(self, seconds: float) -> None:
        self.send(EXTEND_TIMEOUT_USEC=int(seconds * 1e6))

    def watchdog_due(self, now: float) -> bool:
        return self.watchdog_interval is not None and now >= self._next_watchdog

    def watchdog(self, now: float) -> None:
        """WATCHDOG=1, and the next one due half a timeout later."""
        self.send(WATCHDOG=1)
        self._next_watchdog = now + self.watchdog_interval

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
