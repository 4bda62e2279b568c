"""bukt/areas.py lists every /dev/shm area a service makes; a service stopped by SIGTERM
keeps only those a warm restart reattaches (segment, feed, acks); `areas.unlink` removes
the rest of an instance and never another instance's whose name starts the same."""
import os

import bukt
from bukt import areas
from bukt.replica.acks import AckTable
from names import areas_of
from serve_harness import Service


def names(paths):
    return sorted(os.path.basename(p) for p in paths)


def test_areas_of_a_service_running_stopped_and_retired(tmp_path):
    svc = Service(tmp_path)
    neighbour = f"{svc.name}-b"                 # an instance whose name extends this one's
    other = bukt.create(neighbour, size="4MiB")
    try:
        svc.start()
        AckTable(svc.name, create=True).buf.close()     # as a replica's first report makes it
        base = f"bukt-{svc.name}"
        every = {base, base + "-feed", base + "-acks", base + "-http", base + "-http-auth",
                 base + "-tcp-auth", base + "-tcp-stats"}
        mine = set(names(areas_of(svc.name))) - {f"bukt-{neighbour}"}
        assert mine == every                    # what a running service has...
        assert names(areas.paths(svc.name)) == sorted(every)    # ...and the list knows it
        assert svc.stop() == 0
        # the faces' areas went with them; what a warm restart reattaches stays
        assert names(areas.paths(svc.name)) == sorted([base, base + "-feed", base + "-acks"])
        removed = areas.unlink(svc.name)
        assert names(removed) == sorted([base, base + "-feed", base + "-acks"])
        assert areas.paths(svc.name) == []
        assert os.path.exists(f"{areas.SHM_DIR}/bukt-{neighbour}")
    finally:
        svc.cleanup()
        other.unlink()
        other.close()
