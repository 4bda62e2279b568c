"""`fsync: always` through the service's faces: every write a client saw acknowledged
over TCP, RESP or HTTP is in the log after the whole service (supervisor, workers and
writer) is killed with SIGKILL, found again by a cold start from the log alone. The
acknowledgements come by the flush waker (cext/flushwake.pxi): the writer wakes the
waiting worker itself."""
import os
import signal

import pytest

import bukt
from face_writers import FaceWriters, cold_read
from serve_harness import Service, wait_for


@pytest.fixture
def service(tmp_path):
    s = Service(tmp_path, fsync="always")
    yield s
    s.cleanup()


@pytest.mark.slow
def test_sigkill_of_the_service_loses_no_write_acknowledged_under_fsync_always(service):
    service.start()
    token = service.create_bucket("load")
    with FaceWriters(service, "load", token, tcp=2, resp=2, http=1) as c:
        wait_for(lambda: c.count(b"r") > 300 and c.count(b"t") > 300 and
                 c.count(b"h") > 50,
                 timeout=60, what="writes acknowledged on every face")
        s = bukt.attach(service.name, readonly=True)
        try:
            # the workers wait by the flush waker: each has a process row of its own
            rows = {r["pid"]: r for r in s.wake_slots() if r["name"]}
            workers = service.children("tcp") + service.children("http")
            assert set(workers) <= set(rows), (workers, rows)
        finally:
            s.close()
        os.killpg(service.proc.pid, signal.SIGKILL)    # supervisor, workers, writer
        service.proc.wait(10)
    acked = dict(c.acked)
    for name in os.listdir("/dev/shm"):
        if name.startswith(f"bukt-{service.name}"):
            os.unlink(f"/dev/shm/{name}")
    got = cold_read(service, "load", acked)
    missing = [k for k, v in acked.items() if got[k] != v]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged writes lost: " \
                        f"{missing[:5]}"
