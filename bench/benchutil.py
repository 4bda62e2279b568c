"""What the benchmark scripts share: the CPU time of server processes, and waiting for
a `bukt writer` they started to be ready. (Imported by the scripts in this directory,
which Python puts first on sys.path when one of them runs.)"""
import time

import bukt


def cpu_seconds(*pids) -> float:
    """User + system CPU seconds the processes have used so far, from
    /proc/PID/schedstat (nanoseconds, where /proc/PID/stat counts clock ticks); a
    process that is gone counts 0."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def wait_writer_ready(name, proc, timeout=60.0, poll=0.01):
    """The store `name`, attached once the writer process `proc` (a Popen) says it is
    ready in the segment's header. RuntimeError if it exits first or takes longer than
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            store = bukt.attach(name)
            if store.writer_info()["ready"]:
                return store
            store.close()
        except bukt.BuktError:
            pass                        # not created yet, or not a whole segment yet
        if proc.poll() is not None:
            raise RuntimeError(f"the writer exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the writer was not ready within {timeout:g} s")
        time.sleep(poll)
