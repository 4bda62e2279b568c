"""`bukt serve` end to end: `make run` reaches healthy, SIGTERM under write load loses
no acknowledged write, killed children are replaced, SIGHUP applies what it can, and a
bad configuration is refused with its key. Each test runs a real service (writer,
gunicorn, TCP pool) on unused ports with a unique instance; see serve_harness.py."""
import json
import os
import signal
import time

import pytest

from bukt.service.procs import alive, children_of
from face_writers import FaceWriters, cold_read
from serve_harness import ROOT, Service, wait_for


@pytest.fixture
def service(tmp_path):
    s = Service(tmp_path)
    yield s
    s.cleanup()


# -- make run ---------------------------------------------------------------------------------

def test_make_run_reaches_healthy_and_stops_on_sigterm(tmp_path, service):
    """`make run` with built-in defaults, only the instance, ports and data directory moved
    (environment variables) so it cannot collide with anything else on the machine."""
    env = service.env(BUKT_INSTANCE=service.name, BUKT_DATA_DIR=service.data_dir,
                      BUKT_HTTP__BIND=service.http_bind, BUKT_TCP__BIND=service.tcp_bind,
                      BUKT_MEMORY="32MiB", BUKT_LIMITS__RING_SIZE="4MiB",
                      BUKT_HTTP__WORKERS="1", BUKT_TCP__WORKERS="1")
    # -o: the suite runs after `make test` built everything; never rebuild mid-suite
    cmd = ["make", "-s", "--no-print-directory", "-C", ROOT, "-o", ".venv/.core-built",
           "-o", ".venv/.deps-installed", "run"]
    service.start(cmd=cmd, env=env)
    out = service.log()
    assert f"http://127.0.0.1:{service.http_port}" in out
    assert f"bukt://127.0.0.1:{service.tcp_port}" in out
    token_file = os.path.join(service.data_dir, "admin.token")
    assert token_file in out
    assert os.stat(token_file).st_mode & 0o777 == 0o600
    assert wait_for(service.healthy, what="healthy")
    status, body = service.http("GET", "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    os.kill(service.state()["pid"], signal.SIGTERM)
    assert service.proc.wait(20) == 0, service.log()
    assert "stopped in" in service.log()
    assert not os.path.exists(os.path.join(service.data_dir, "serve.json"))


# -- SIGTERM under load -----------------------------------------------------------------------

def test_sigterm_under_write_load_loses_no_acknowledged_write(service):
    service.start()
    token = service.create_bucket("load")
    with FaceWriters(service, "load", token) as w:
        wait_for(lambda: len(w.acked) > 2000, timeout=20, what="2000 acknowledged writes")
        t0 = time.monotonic()
        code = service.stop()
        took = time.monotonic() - t0
    assert code == 0, service.log()
    assert took < service.settings["shutdown_timeout"]
    log = service.log()
    assert "stopping: HTTP and TCP first, then the writer" in log
    assert "writer" in log and "stopped (exit 0)" in log
    # A cold start of the writer alone: the segment is gone, so everything it finds
    # comes from the log on disk.
    os.unlink(f"/dev/shm/bukt-{service.name}")
    got = cold_read(service, "load", w.acked)
    missing = [k for k, v in w.acked.items() if got[k] != v]
    assert not missing, f"{len(missing)} of {len(w.acked)} acknowledged writes lost: " \
                        f"{missing[:5]}"


# -- supervision --------------------------------------------------------------------------------

def _died_and_back(service, pid, role_text, check):
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), what=f"{pid} to die")
    wait_for(check, timeout=20, what=f"the {role_text} to be replaced")
    wait_for(service.healthy, timeout=20, what="healthy again")


def test_killed_workers_and_writer_are_replaced(service):
    service.start()
    token = service.create_bucket("kv")
    c = service.client("kv", token, timeout=5)
    c.set(b"before", b"1")

    # an HTTP worker: gunicorn's arbiter replaces it
    old = service.children("http")
    _died_and_back(service, old[0], "HTTP worker",
                   lambda: service.children("http") and service.children("http") != old)
    # a TCP worker: the pool replaces it
    old = service.children("tcp")
    _died_and_back(service, old[0], "TCP worker",
                   lambda: service.children("tcp") and service.children("tcp") != old)
    # the writer: bukt serve restarts it (a warm start), and writes go on
    wpid = service.state()["writer"]["pid"]
    _died_and_back(service, wpid, "writer",
                   lambda: service.state()["writer"]["pid"] not in (None, wpid))
    assert f"the writer (pid {wpid}) died (signal SIGKILL)" in service.log()
    assert "writer restarted" in service.log()
    # the HTTP arbiter itself: bukt serve restarts it, and its orphaned workers go too
    arbiter, workers = service.state()["http"]["pid"], service.children("http")
    _died_and_back(service, arbiter, "HTTP arbiter",
                   lambda: service.state()["http"]["pid"] not in (None, arbiter))
    wait_for(lambda: not any(alive(p) for p in workers), what="the orphaned workers to go")

    c2 = service.client("kv", token, timeout=5)
    c2.set(b"after", b"2")
    assert c2.get(b"before") == b"1" and c2.get(b"after") == b"2"
    status, body = service.http("GET", "/api/v1/buckets/kv/keys/after",
                                headers={"X-Auth-Token": token})
    assert (status, body) == (200, b"2")
    c.close()
    c2.close()
    assert service.stop() == 0


def test_sighup_applies_worker_keys_and_names_the_rest(service):
    service.start()
    pid = service.state()["pid"]
    old_http, old_tcp = service.state()["http"]["pid"], service.state()["tcp"]["pid"]
    old_writer = service.state()["writer"]["pid"]
    service.configure(http={"workers": 2}, tcp={"workers": 2}, memory="64MiB")
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: "SIGHUP: applying" in service.log(), timeout=20, what="the reload")
    wait_for(lambda: len(children_of(service.state()["http"]["pid"])) == 2, timeout=30,
             what="two HTTP workers")
    wait_for(lambda: len(children_of(service.state()["tcp"]["pid"])) == 2, timeout=30,
             what="two TCP workers")
    st = service.state()
    assert st["http"]["pid"] != old_http and st["tcp"]["pid"] != old_tcp
    assert st["writer"]["pid"] == old_writer           # nothing of the writer's changed
    log = service.log()
    assert "memory changed" in log and "cold start" in log
    assert "http.workers" in log and "tcp.workers" in log
    wait_for(lambda: not alive(old_tcp), what="the old pool to go")
    wait_for(service.healthy, what="healthy after the reload")
    # a file that does not load is refused; the service goes on
    with open(service.conf, "a") as f:
        f.write("fsync: sometimes\n")
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: "the configuration is refused" in service.log(), what="the refusal")
    assert service.healthy()
    assert service.stop() == 0


# -- refusals ---------------------------------------------------------------------------------

def _serve_once(service, env=None, timeout=30):
    p = service.start(wait=False, env=env)
    p.wait(timeout)
    return p.returncode, service.log()


@pytest.mark.parametrize("text, words", [
    ("fsync: sometimes\n", ["fsync", "'sometimes'", "always, everysec, no"]),
    ("fysnc: always\n", ["unknown key 'fysnc'"]),
    ("tcp:\n  workers: -1\n", ["tcp.workers", "-1", "an integer from 0"]),
    ("memory: 64MB\n", ["memory", "64MB", "MiB"]),
])
def test_bad_configuration_is_refused_with_the_key(service, text, words):
    with open(service.conf, "a") as f:
        f.write(text)
    code, out = _serve_once(service)
    assert code == 2, out
    line = [ln for ln in out.splitlines() if ln.startswith("bukt serve:")]
    assert line and all(w in line[0] for w in words), out
    assert "Traceback" not in out


def test_bad_environment_variable_is_refused(service):
    code, out = _serve_once(service, env=service.env(BUKT_HTTP__WORKRES="2"))
    assert code == 2 and "BUKT_HTTP__WORKRES names no configuration key" in out


def test_port_in_use_is_refused_before_anything_starts(service):
    import socket
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", service.tcp_port))
        s.listen()
        code, out = _serve_once(service)
    assert code == 2 and "tcp.bind" in out and "in use" in out, out
    assert not os.path.exists(f"/dev/shm/bukt-{service.name}")     # nothing was started


def test_second_serve_on_the_same_data_dir_is_refused(service):
    import fcntl
    os.makedirs(service.data_dir)
    with open(os.path.join(service.data_dir, "serve.json"), "w") as f:
        json.dump({"pid": 4242}, f)
    with open(os.path.join(service.data_dir, "serve.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # what a running `bukt serve` holds
        code, out = _serve_once(service)
    assert code == 2 and "another `bukt serve` (pid 4242)" in out, out
