"""The processes of a running service, read from /proc: for `bukt status` and for the
supervisor, which must know when a new TCP pool has forked its workers; and the one test
of ownership every record of "process N owns this" goes through (owner_alive).

Linux only, like the rest of Bukt. Every function tolerates processes that vanish
while it looks (a dead pid is simply left out).
"""
import os

__all__ = ["children_of", "describe", "alive", "tree", "start_time", "identity",
           "owner_alive"]

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid):
    """The fields of /proc/<pid>/stat after the command name, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # the command name is in parentheses and may itself hold spaces or ")"
    return data[data.rfind(b")") + 2:].split()


def alive(pid) -> bool:
    """True if `pid` exists and is not a zombie."""
    st = _stat(pid)
    return st is not None and st[0] != b"Z"


def start_time(pid) -> int:
    """When `pid` started, in clock ticks after boot (/proc/<pid>/stat field 22); 0 if
    it is gone or a zombie."""
    st = _stat(pid)
    if st is None or st[0] == b"Z":
        return 0
    return int(st[19])


def identity(pid=None) -> tuple:
    """(pid, start time) of `pid` (default: this process): what an owner record keeps."""
    pid = os.getpid() if pid is None else pid
    return pid, start_time(pid)


def owner_alive(pid, start, bits=64) -> bool:
    """OWNERSHIP. Does the process that wrote the owner record (`pid`, `start`) still
    run? A pid alone cannot say: a killed owner is a zombie until its parent reaps it
    (kill(pid, 0) succeeds on it), and its pid may be given to an unrelated process
    later (kill(pid, 0) succeeds again). The start time tells them apart: a zombie is
    dead, and a process with the pid but another start time is not the owner. A record
    without a start time (start 0, written by an older build) falls back to "the pid
    exists and is not a zombie". Records in the segment that have room for 32 bits only
    (counter rows, a dropping bucket) keep the start's low bits: `bits=32`. Every
    ownership check uses this: the HTTP area's owner and counter rows, the segment's
    writer, counter rows and bucket droppers, `bukt serve`'s state file. (The robust
    mutexes' owner check by thread id, bk_pid_alive in C, is of another kind.)"""
    if not pid or pid < 0:
        return False
    now = start_time(pid)
    return bool(now) and (not start or now & ((1 << bits) - 1) == start)


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
