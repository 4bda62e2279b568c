"""The POSIX shared-memory areas of an instance, listed in one place for whoever must
find or remove them all (a test's or a benchmark's cleanup; an operator retiring an
instance with the service stopped).

    /dev/shm/bukt-<instance>              the segment (cext/core.pyx)
             bukt-<instance>-feed         the change feed (bukt/feed.py)
             bukt-<instance>-acks         replicas' acknowledgements (bukt/replica/acks.py)
             bukt-<instance>-http         the HTTP face's rate limits (bukt/http/shared.py)
             bukt-<instance>-http-auth    failed tokens per address (bukt/authguard.py)
             bukt-<instance>-tcp-auth     the same, for the TCP pool
             bukt-<instance>-tcp-stats    the TCP workers' counters (bukt/tcp/stats.py)
             bukt-<instance>.recovering-<pid>-<start>
                                          a segment a writer was recovering into
                                          (bukt/writer/process.py)

The segment, the feed and the acks outlive a stopped service on purpose: a warm restart
reattaches them (docs/design.md, "Shared memory a service leaves"). The faces' areas
belong to the running face and go when it exits; a killed face's are taken over by the
next one of the instance, as a dead writer's half-recovered segment is. So nothing
piles up for an instance that keeps its name; what an instance that is gone for good
left is for whoever retired it to remove: `unlink(instance)`.

The names are listed, not matched by prefix: instance "a" must never take "a-b"'s.
"""
import os

__all__ = ["SHM_DIR", "SUFFIXES", "paths", "unlink"]

SHM_DIR = "/dev/shm"        # where shm_open puts a POSIX shared-memory object on Linux
SUFFIXES = ("", "-feed", "-acks", "-http", "-http-auth", "-tcp-auth", "-tcp-stats")
RECOVERING = ".recovering-"


def paths(instance, shm_dir=SHM_DIR):
    """The paths of the areas of `instance` that exist now."""
    base = f"bukt-{instance}"
    try:
        names = os.listdir(shm_dir)
    except FileNotFoundError:
        return []
    wanted = {base + s for s in SUFFIXES}
    out = []
    for name in names:
        if name in wanted:
            out.append(os.path.join(shm_dir, name))
        elif name.startswith(base + RECOVERING):
            pid, _, start = name[len(base + RECOVERING):].partition("-")
            if pid.isdigit() and start.isdigit():
                out.append(os.path.join(shm_dir, name))
    return sorted(out)


def unlink(instance, shm_dir=SHM_DIR):
    """Removes every area of `instance`; the paths it removed. Only for an instance whose
    processes are all gone: a live one keeps its mappings but loses its names."""
    gone = []
    for path in paths(instance, shm_dir):
        try:
            os.unlink(path)
            gone.append(path)
        except FileNotFoundError:
            pass
    return gone
