"""/metrics of a real `bukt serve` (writer, HTTP and TCP faces): what promtool says of
it, and the writer's fsync lag on an idle service and behind a stopped writer."""
import os
import shutil
import signal
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serve_harness import Service, wait_for

API = "/api/v1"


@pytest.fixture
def service(tmp_path):
    s = Service(tmp_path)
    yield s
    s.cleanup()


def scrape(service):
    status, body = service.http("GET", "/metrics",
                                headers={"X-Auth-Token": service.admin_token()})
    assert status == 200, body
    return body.decode()


def sample(text, name):
    for f in text_string_to_metric_families(text):
        for s in f.samples:
            if s.name == name:
                return s.value
    return None


def put(service, tok, key):
    status, body = service.http("PUT", f"{API}/buckets/b/keys/{key}", b"v",
                                {"X-Auth-Token": tok})
    assert status == 204, body


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool (Debian prometheus; .ci/run installs it) is missing")
def test_promtool_accepts_a_served_scrape(service):
    service.start()
    tok = service.create_bucket("b")
    put(service, tok, "k")
    with service.client("b", tok) as c:
        assert c.get(b"k") == b"v"
    text = scrape(service)
    assert sample(text, "bukt_writer_up") == 1
    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, (r.stdout + r.stderr).decode() + text
    assert service.stop() == 0


@pytest.mark.slow
def test_fsync_lag_is_zero_while_idle_and_counts_while_a_change_waits(service):
    service.start()
    tok = service.create_bucket("b")
    put(service, tok, "k")
    lag = lambda: sample(scrape(service), "bukt_writer_fsync_lag_seconds")  # noqa: E731
    wait_for(lambda: lag() == 0, what="the change to be synced")
    time.sleep(2.5)             # idle through two everysec periods and many heartbeats
    assert lag() == 0
    writer = service.state()["writer"]["pid"]
    os.kill(writer, signal.SIGSTOP)     # a writer that does not come back from its disk
    try:
        put(service, tok, "k2")
        assert lag() > 0
    finally:
        os.kill(writer, signal.SIGCONT)
    wait_for(lambda: lag() == 0, what="the waiting change to be synced")
    assert service.stop() == 0
