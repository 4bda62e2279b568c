"""Who owns a record: the process identity (pid and start time, from /proc) that every
"process N owns this" record keeps, and the one test of ownership they all go through
(owner_alive). A neutral module: the compiled core, the writer, the HTTP area, the
supervisor and the CLI import it, and it imports nothing of Bukt.

Linux only, like the rest of Bukt. Every function tolerates processes that vanish
while it looks (a dead pid is simply gone).
"""
import os

__all__ = ["alive", "start_time", "identity", "owner_alive"]


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
