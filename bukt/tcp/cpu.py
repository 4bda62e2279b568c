"""How a TCP worker shares the CPUs: its niceness (tcp.nice) and its scheduler slice
(tcp.slice). Each worker calls both once, after the fork and before it starts a thread.

WHY A SLICE. Since Linux 6.6 the fair scheduler is EEVDF: a runnable task gets the CPU
by virtual deadline, and a task's deadline is its slice away. Where the workers share
the CPUs with busy clients (two workers and a load generator on two CPUs: three tasks
that rarely sleep), a worker with requests waiting waits for the task on its CPU to use
up its slice, 1.4 ms by default on two CPUs (more with more CPUs), and the slowest 1% of
requests take that long. A shorter slice gives the worker earlier deadlines: it is
picked sooner when woken, and preempted sooner when it runs on. It does not change the
worker's share of CPU time over a second (niceness does that), which is why it can be on
by default where a lower niceness cannot. Linux 6.12 and later honour a fair task's
slice given through sched_setattr (sched_runtime, 100 us to 100 ms); no privilege is
needed. Older kernels ignore it, which apply_slice reads back and reports.

Measured with bench/tcp.py's load generator at 50 connections on 2 vCPUs (two workers):
the slowest 1% took 1.17-1.52 ms with the kernel's slice and 0.62-0.78 ms with 100-500
us (1 ms: 0.93-1.13 ms); Redis, alone on its CPU, 0.41-0.46 ms. With one worker, or one
connection, no change. The worker's loop also yields after a round that served two or
more events (bukt/tcp/_epoll.pyx, ROUND YIELD).
"""
from __future__ import annotations

import ctypes
import logging
import os
import platform
import struct

log = logging.getLogger("bukt.tcp")

# struct sched_attr (include/uapi/linux/sched/types.h, SCHED_ATTR_SIZE_VER0): size,
# policy, flags, nice, priority, runtime, deadline, period.
_ATTR = struct.Struct("=IIQiIQQQ")
# sched_setattr and sched_getattr: glibc 2.36 has no wrappers, so by number.
_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275), "riscv64": (274, 275)}


def _syscalls():
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        return None
    return ctypes.CDLL(None, use_errno=True), numbers


def sched_attr(pid: int = 0) -> dict | None:
    """The task's sched_attr as a dict (runtime: for a fair task on Linux 6.12+, its
    slice in ns; 0 on older kernels), or None where sched_getattr is not known here."""
    sc = _syscalls()
    if sc is None:
        return None
    libc, (_, getattr_nr) = sc
    buf = ctypes.create_string_buffer(_ATTR.size)
    if libc.syscall(getattr_nr, pid, buf, _ATTR.size, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    size, policy, flags, nice, prio, runtime, _, _ = _ATTR.unpack(buf.raw)
    return dict(policy=policy, nice=nice, runtime=runtime)


def apply_slice(seconds: float, slot: int = 0) -> bool:
    """tcp.slice: ask the scheduler for slices this long for the calling process (0:
    leave the kernel's). Its policy and niceness are kept. False, with a line on stderr,
    where the kernel does not take it; a policy other than SCHED_OTHER or SCHED_BATCH
    (an operator's choice, such as SCHED_FIFO) is left alone."""
    if not seconds:
        return False
    ns = int(round(seconds * 1e9))
    sc = _syscalls()
    why = None
    if sc is None:
        why = f"sched_setattr is not known on {platform.machine()}"
    else:
        libc, (setattr_nr, _) = sc
        policy = os.sched_getscheduler(0)
        if policy not in (os.SCHED_OTHER, os.SCHED_BATCH):
            return False
        nice = os.getpriority(os.PRIO_PROCESS, 0)
        buf = ctypes.create_string_buffer(_ATTR.pack(_ATTR.size, policy, 0, nice, 0, ns, 0, 0))
        if libc.syscall(setattr_nr, 0, buf, 0) != 0:
            why = os.strerror(ctypes.get_errno())
        elif sched_attr(0)["runtime"] != ns:
            why = "this kernel does not take a fair task's slice (Linux 6.12 and later do)"
    if why:
        log.warning("bukt tcp: worker %d: tcp.slice %gus not applied (%s); it runs with "
                    "the kernel's slice", slot, seconds * 1e6, why)
        return False
    return True


def apply_nice(nice: int | None, slot: int = 0) -> None:
    """tcp.nice: the calling worker's niceness (conf/bukt.yaml says when to lower it),
    set before it starts any thread, which inherits it. None leaves it as inherited.
    Below the current value it needs CAP_SYS_NICE or RLIMIT_NICE (systemd: LimitNICE=);
    without them the worker says so and serves at its niceness."""
    if nice is None:
        return
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice == current:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except PermissionError as exc:
        log.warning("bukt tcp: worker %d: tcp.nice %d not applied (%s); its niceness "
                    "stays %d. Lowering it needs CAP_SYS_NICE or RLIMIT_NICE (systemd: "
                    "LimitNICE=%d)", slot, nice, exc.strerror, current, nice)
