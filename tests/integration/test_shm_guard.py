"""The guard of tests/conftest.py: a test module that leaves a /dev/shm area of its run
behind fails (and the area is removed); one that cleans up passes; an area named after
another run is none of its business. A real pytest run, in a subprocess, of three small
modules under the real conftest's fixtures, with a run tag of its own."""
import os
import re
import subprocess
import sys
import textwrap
import uuid

from names import RUN, SHM_DIR, areas_of, unique_name, unlink_areas

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TESTS)

CONFTEST = f"""
import importlib.util, sys
sys.path.insert(0, {os.path.join(TESTS, "support")!r})
spec = importlib.util.spec_from_file_location("bukt_tests_conftest",
                                              {os.path.join(TESTS, "conftest.py")!r})
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
_no_shm_left_behind = mod._no_shm_left_behind      # the guard, as every module has it
segname = mod.segname
"""

LEAKY = """
    import bukt
    from names import unique_name

    def test_leaves_a_segment():
        s = bukt.create(unique_name("leak"), size="4MiB")
        s.close()                       # closed, never unlinked

    def test_cleans_up():
        s = bukt.create(unique_name("tidy"), size="4MiB")
        s.unlink()
        s.close()
"""

TIDY = """
    import bukt

    def test_cleans_up(segname):
        bukt.create(segname, size="4MiB").close()     # the segname fixture unlinks it
"""

FOREIGN = """
    import bukt

    def test_another_runs_area():
        bukt.create({name!r}, size="4MiB").close()
"""


def test_the_module_that_leaves_an_area_fails_and_no_other(tmp_path):
    other = unique_name("other")        # named after this (the outer) run: another run's
    assert RUN in other
    (tmp_path / "conftest.py").write_text(CONFTEST)
    for name, body in [("leaky", LEAKY), ("tidy", TIDY), ("foreign", FOREIGN)]:
        (tmp_path / f"test_{name}.py").write_text(textwrap.dedent(body.format(name=other)))
    tag = f"guard{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, PYTHONPATH=ROOT, BUKTTEST_RUN=tag)
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                            "-o", "addopts=", "-rA", str(tmp_path)], cwd=str(tmp_path),
                           env=env, capture_output=True, text=True, timeout=300)
        out = r.stdout + r.stderr
        assert r.returncode == 1, out
        assert re.search(r"4 passed, 1 error", out), out    # every test passed; a module errs
        errors = re.findall(r"^ERROR (\S+)", out, re.M)
        assert errors == ["test_leaky.py::test_cleans_up"], out     # its last test's teardown
        assert re.search(r"test_leaky left 1 area\(s\) in /dev/shm: "
                         rf"bukt-leak-{tag}-[0-9a-f]+$", out, re.M), out
        # the guard removed what it reported; the other run's area is still there
        assert [n for n in os.listdir(SHM_DIR) if f"-{tag}-" in n] == []
        assert os.path.exists(f"{SHM_DIR}/bukt-{other}")
    finally:
        unlink_areas(other)


def test_a_killed_tcp_pool_leaves_nothing_behind_its_store():
    """The pool removes its areas (-tcp-auth, -tcp-stats) when it exits; killed, it
    cannot, and the harness's store() removes them with the segment."""
    import signal
    from tcp_harness import Server, store
    with store() as (_, name):
        srv = Server(name, workers=1)
        srv.start()
        assert {f"bukt-{name}-tcp-auth", f"bukt-{name}-tcp-stats"} <= set(
            os.path.basename(p) for p in areas_of(name))
        workers = srv.worker_pids()
        srv.stop(signal.SIGKILL)
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert areas_of(name) == []
