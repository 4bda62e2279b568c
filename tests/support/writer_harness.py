"""Real writer processes for tests/test_writer_*.py: a unique instance and data dir per
test, a config file, start / SIGTERM / kill -9, client processes that write and record
what was acknowledged, and the segment's contents for comparisons. Every segment the
test made (and any half-recovered one) is unlinked in teardown."""
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

import bukt
from bukt.errors import BuktError
from names import unique_name, unlink_areas

PY = sys.executable
HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "writer_client.py")
ROOT = os.path.dirname(os.path.dirname(HERE))


class Instance:
    def __init__(self, tmp_path, **overrides):
        self.tmp = tmp_path
        self.name = unique_name("w")
        self.data_dir = str(tmp_path / "var")
        self.conf = str(tmp_path / "bukt.yaml")
        self.procs = []
        self.runs = 0
        self.settings = {"instance": self.name, "memory": "32MiB", "data_dir": self.data_dir,
                         "fsync": "always", "limits": {"ring_size": "4MiB"},
                         "log": {"level": "info"}}
        self.configure(**overrides)

    def configure(self, **overrides):
        write_config(self.conf, self.settings, overrides)

    # -- the writer ---------------------------------------------------------------------
    def start(self, cold=False, wait=True, env=None, preexec_fn=None):
        self.runs += 1
        self.log_path = str(self.tmp / f"writer-{self.runs}.log")
        cmd = [PY, "-m", "bukt.cli", "writer", "--config", self.conf] + (["--cold"] if cold else [])
        e = dict(os.environ, **(env or {}))
        e["PYTHONPATH"] = ROOT
        with open(self.log_path, "wb") as log:
            p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=e, cwd=ROOT,
                                 preexec_fn=preexec_fn)
        self.procs.append(p)
        if wait:
            self.wait_ready(p)
        return p

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait_ready(self, p, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise AssertionError(f"writer exited {p.returncode}:\n{self.log()}")
            try:
                s = bukt.attach(self.name, readonly=True)
            except BuktError:
                time.sleep(0.01)
                continue
            try:
                info = s.writer_info()
            finally:
                s.close()
            if info["ready"] and info["pid"] == p.pid:
                return info
            time.sleep(0.01)
        raise AssertionError(f"writer not ready in {timeout} s:\n{self.log()}")

    def run_to_exit(self, cold=False, timeout=30, env=None):
        """Starts a writer expected to refuse to start: (exit code, its output)."""
        p = self.start(cold=cold, wait=False, env=env)
        p.wait(timeout)
        return p.returncode, self.log()

    def stop(self, p, timeout=30):
        p.send_signal(signal.SIGTERM)
        return p.wait(timeout)

    @staticmethod
    def kill(p):
        if p.poll() is None:
            p.kill()
        p.wait(10)

    def unlink_segment(self):
        """The segment and the areas named after it (the feed's, a half-recovered one)."""
        unlink_areas(self.name)

    def attach(self):
        return bukt.attach(self.name)

    def info(self):
        s = bukt.attach(self.name, readonly=True)
        try:
            return s.writer_info()
        finally:
            s.close()

    def contents(self):
        """{(bucket, key): (value, expire_ms, flags, version)} of the segment."""
        s = bukt.attach(self.name)
        try:
            out, start = {}, 0
            while True:
                entries, start = s.dump_stripes(start, 256)
                for b, k, v, exp, fl, ver in entries:
                    out[(b, k)] = (v, exp, fl, ver)
                if start == 0:
                    return out
        finally:
            s.close()

    # -- clients ------------------------------------------------------------------------
    def client(self, ack_path, prefix, mode="unique", seed=0, extra=()):
        e = dict(os.environ, PYTHONPATH=ROOT)
        p = subprocess.Popen([PY, CLIENT, self.name, str(ack_path), prefix, mode, str(seed),
                              *map(str, extra)], env=e, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=open(str(ack_path) + ".err", "wb"))
        self.procs.append(p)
        return p

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        self.unlink_segment()


def read_acks(path):
    """Acknowledged lines of a client's ack file (a line cut by kill -9 is dropped)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    return [ln.split(b" ") for ln in lines[:-1] if ln]


def wait_for(predicate, timeout=10, step=0.01, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def instance(tmp_path):
    inst = Instance(tmp_path)
    yield inst
    inst.cleanup()


def write_config(path, settings, overrides):
    """Merge `overrides` into `settings` (one level of mappings) and write the YAML."""
    for k, v in overrides.items():
        if isinstance(v, dict):
            settings.setdefault(k, {}).update(v)
        else:
            settings[k] = v
    with open(path, "w") as f:
        yaml.safe_dump(settings, f)
