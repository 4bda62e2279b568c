"""Instance and segment names of this test run, and the /dev/shm areas that carry them.

Every name a test gives a segment or an instance comes from `unique_name`, so every
POSIX shared-memory area the run makes (/dev/shm/bukt-<name>, and the side areas named
after it: -feed, -http, -http-auth, -tcp-auth, -tcp-stats, -acks, .recovering-...)
carries RUN, this pytest run's tag. tests/conftest.py lists the areas with RUN before
and after each test module and fails the module that left any behind; areas of other
runs on the same host (other checkouts, CI) never carry it.

RUN is kept in the environment so a process the tests spawn (a multiprocessing child
that re-imports this module) names its areas after the same run.
"""
import os
import uuid

SHM_DIR = "/dev/shm"
_ENV = "BUKTTEST_RUN"      # not BUKT_*: the harnesses strip those from a service's env

RUN = os.environ.setdefault(_ENV, f"{os.getpid()}r{uuid.uuid4().hex[:4]}")
_MARK = f"-{RUN}-"


def unique_name(prefix="t"):
    """A fresh instance name of this run: <prefix>-<RUN>-<random>."""
    return f"{prefix}{_MARK}{uuid.uuid4().hex[:10]}"


def run_areas():
    """Names of the /dev/shm areas of this run (files in SHM_DIR)."""
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return set()
    return {n for n in names if n.startswith("bukt-") and _MARK in n}


def areas_of(name):
    """Paths of the /dev/shm areas of instance `name`: its segment and every area whose
    name extends it. A superset of bukt/areas.py's list (which a service's areas are):
    it also takes what a test names after its segment ("-src", "-2"), and with a random
    `name` nobody else's area starts the same."""
    out = []
    for n in os.listdir(SHM_DIR):
        if n == f"bukt-{name}" or n.startswith((f"bukt-{name}-", f"bukt-{name}.")):
            out.append(os.path.join(SHM_DIR, n))
    return out


def unlink_areas(name):
    """Unlinks every area of instance `name` (a test's cleanup: what a SIGKILLed service
    leaves for a warm restart, or what a stopped one keeps)."""
    for path in areas_of(name):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
