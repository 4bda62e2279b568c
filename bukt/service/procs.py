"""The processes of a running service, read from /proc: for `bukt status` and for the
supervisor, which must know when a new TCP pool has forked its workers. (Who owns a
record, owner_alive and the start times it compares, is bukt/owners.py.)

Linux only, like the rest of Bukt. Every function tolerates processes that vanish
while it looks (a dead pid is simply left out).
"""
import os

from bukt.owners import _stat, alive  # noqa: F401 - alive: for callers of this module

__all__ = ["children_of", "describe", "alive", "tree"]

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
