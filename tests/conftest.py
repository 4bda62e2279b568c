"""Shared fixtures: a fresh segment per test, unlinked afterwards; and a guard that fails
the test module that leaves /dev/shm areas of this run behind."""
import os
import sys

import pytest

import bukt

# the harnesses and the reference model, importable by every test
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
from bukt._core import writer_claim
from names import RUN, SHM_DIR, run_areas, unique_name, unlink_areas   # noqa: F401


@pytest.fixture(scope="module", autouse=True)
def _no_shm_left_behind(request):
    """Fails (errors) the module whose tests leave a /dev/shm area of this run behind: a
    cache user's CI would fill /dev/shm, a tmpfs in RAM, a run at a time. Only areas
    named after this run (tests/support/names.py) count, so other runs on the host
    never trip it. What was left is unlinked, so the next module starts clean."""
    before = run_areas()
    yield
    left = sorted(run_areas() - before)
    if not left:
        return
    for name in left:
        try:
            os.unlink(os.path.join(SHM_DIR, name))
        except FileNotFoundError:
            pass
    pytest.fail(f"{request.module.__name__} left {len(left)} area(s) in {SHM_DIR}: "
                + ", ".join(left), pytrace=False)


@pytest.fixture
def segname():
    name = unique_name()
    yield name
    unlink_areas(name)


@pytest.fixture
def store(segname):
    s = bukt.create(segname, size="16MiB")
    writer_claim(s)   # as a writer does: changes go to the ring
    yield s
    s.close()


@pytest.fixture
def bucket(store):
    # cache-only: no writer process drains the ring in unit tests
    return store.create_bucket("b", persist=False)


@pytest.fixture(autouse=True)
def _objects_settings():
    """An app made in a test (create_app) sets this process's objects limits
    (bukt.objects.configure): back to the defaults after every test."""
    yield
    from bukt import objects
    objects.configure(max_object=None, read_limit=None)
