"""Shared fixtures: a fresh segment per test, unlinked afterwards."""
import os
import sys
import uuid

import pytest

import bukt

# the harnesses and the reference model, importable by every test
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
from bukt._core import writer_claim


def unique_name(prefix="t"):
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def segname():
    name = unique_name()
    yield name
    try:
        os.unlink(f"/dev/shm/bukt-{name}")
    except FileNotFoundError:
        pass


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
