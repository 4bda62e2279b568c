"""The processes of a running service, read from /proc: for `bukt status` and for the
supervisor, which must know when a new TCP pool has forked its workers. (Who owns a
record, owner_alive and the start times it compares, is bukt/owners.py.)

Linux only, like the rest of Bukt. Every function tolerates processes that vanish
while it looks (a dead pid is simply left out).
"""
import os
import select

from bukt.owners import _stat, alive  # noqa: F401 - alive: for callers of this module

__all__ = ["children_of", "describe", "alive", "tree", "ExitWatch", "pidfd_of"]

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def children_of(pid) -> list:
    """Pids whose parent is `pid` (zombies left out), in ascending order."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(name)
            if st is not None and st[0] != b"Z" and int(st[1]) == pid:
                out.append(int(name))
    return sorted(out)


def _boot_time():
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return int(line.split()[1])
    return 0


def describe(pid):
    """{"pid", "rss_bytes", "started" (epoch seconds), "cmd"} or None if gone."""
    st = _stat(pid)
    if st is None:
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        cmd = ""
    # st[0] is field 3 (state): starttime is field 22 and rss field 24
    return {"pid": int(pid), "rss_bytes": int(st[21]) * _PAGE,
            "started": _boot_time() + int(st[19]) / _TICK, "cmd": cmd}


def tree(pid, depth=0):
    """[(depth, pid)] of `pid` and its descendants, depth first."""
    out = [(depth, pid)]
    for c in children_of(pid):
        out.extend(tree(c, depth + 1))
    return out


def pidfd_of(pid):
    """A pidfd of child `pid` (readable once it exits), or None where none can be opened
    (then an idle wait's timeout finds the exit)."""
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


class ExitWatch:
    """Sleeping until a child exits or a signal comes: the idle wait of the supervisor
    and of the TCP pool. A pidfd of each watched child (readable once it exits) and a
    wake pipe a signal handler writes (wake()); wait(timeout) returns at the first of
    them or after `timeout` seconds. A child whose pidfd cannot be opened is found by
    the caller's next look, after the timeout."""

    def __init__(self):
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pidfds = {}                # pid -> its pidfd

    def watch(self, pid):
        self.forget(pid)
        fd = pidfd_of(pid)
        if fd is not None:
            self.pidfds[pid] = fd

    def forget(self, pid):
        fd = self.pidfds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def wake(self):
        """Ends the current or the next wait; safe in a signal handler."""
        try:
            os.write(self.w, b"x")
        except OSError:
            pass                        # full: a wake-up is pending anyway

    def wait(self, timeout, more=()):
        """Until a watched child (or a pidfd in `more`) exits, wake() or `timeout`."""
        ready, _, _ = select.select([self.r, *self.pidfds.values(), *more], [], [], timeout)
        if self.r in ready:
            try:
                os.read(self.r, 64)
            except BlockingIOError:
                pass

    def close(self):
        """Closes every descriptor (also in a forked child, which must not keep them)."""
        for fd in (self.r, self.w, *self.pidfds.values()):
            os.close(fd)
        self.pidfds.clear()
