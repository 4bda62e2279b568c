"""Fixtures of the command-line tests (tests/integration/test_cli*.py): one `bukt serve`
for the module, BUKT_CONFIG pointing at it and no other BUKT_* variable, its admin
token. A test module imports them by name (pytest finds fixtures in its namespace)."""
import os

import pytest

from serve_harness import Service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, request):
    s = Service(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    s.start()
    yield s
    s.cleanup()


@pytest.fixture(autouse=True)
def config(svc, monkeypatch):
    monkeypatch.setenv("BUKT_CONFIG", svc.conf)
    for k in [k for k in os.environ if k.startswith("BUKT_") and k != "BUKT_CONFIG"]:
        monkeypatch.delenv(k)


@pytest.fixture(scope="module")
def admin(svc):
    return svc.admin_token()
