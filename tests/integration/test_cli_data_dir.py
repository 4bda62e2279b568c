"""Which data directory the operator's commands act on: the real `bukt` CLI, run from
another current directory than the service's, against a real running writer.

A relative data_dir in a configuration file is the file's (not the current
directory's); the writer records its absolute data directory in the segment, and
`bukt check`, `status` and `compact` given no data_dir use that one; none of them
reports ok about files it did not find, and `status` is unhealthy when the segment's
writer serves another data directory than the one it was given."""
import json
import os
import subprocess

import pytest
from writer_harness import PY, ROOT, instance  # noqa: F401


def cli(inst, *argv, cwd="/", config=False, **env):
    """`bukt ARGV` in a subprocess from `cwd`, naming the instance by BUKT_INSTANCE (no
    data_dir) unless `config` passes the instance's config file. (code, out, err)"""
    e = {k: v for k, v in os.environ.items() if not k.startswith("BUKT_")}
    e.update(PYTHONPATH=ROOT, **env)
    if config:
        argv = (*argv, "--config", inst.conf)
    else:
        e["BUKT_INSTANCE"] = inst.name
    r = subprocess.run([PY, "-m", "bukt.cli", *argv], cwd=cwd, env=e, capture_output=True,
                       text=True, timeout=120)
    return r.returncode, r.stdout, r.stderr


@pytest.fixture
def running(instance, tmp_path):  # noqa: F811
    """A writer whose config file names its data_dir relative to the file (./var)."""
    instance.configure(data_dir="./var")
    writer = instance.start()                   # from the checkout: cwd is not tmp_path
    s = instance.attach()
    try:
        s.create_bucket("b")
        for i in range(100):
            s.bucket("b").set(b"k%d" % i, b"v" * 100)
    finally:
        s.close()
    yield instance, writer
    instance.stop(writer)


def test_a_relative_data_dir_in_a_config_file_is_beside_the_file(running, tmp_path):
    inst, _ = running
    # the writer ran from the checkout (writer_harness: cwd=ROOT), the file is in tmp_path
    assert inst.info()["data_dir"] == str(tmp_path / "var")
    assert os.path.exists(tmp_path / "var" / "MANIFEST")


def test_check_from_another_directory_checks_the_writers_data_dir(running, tmp_path):
    inst, _ = running
    code, out, err = cli(inst, "check", "--json")
    assert code == 0, (out, err)
    r = json.loads(out)
    assert r["data_dir"] == str(tmp_path / "var") and r["ok"]
    assert any(f["kind"] == "log" and f["path"].startswith(str(tmp_path / "var"))
               for f in r["files"])
    # the same with the config file, run from yet another directory
    code, out, err = cli(inst, "check", "--json", cwd=str(tmp_path), config=True)
    assert code == 0 and json.loads(out)["data_dir"] == str(tmp_path / "var"), (out, err)


def test_check_of_a_directory_with_no_files_is_not_ok(running, tmp_path):
    inst, _ = running
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = cli(inst, "check", BUKT_DATA_DIR=str(empty))
    assert code == 1, (out, err)
    assert "nothing on disk was checked" in out
    code, out, err = cli(inst, "check", "--data-dir", str(tmp_path / "missing"))
    assert code == 1 and "no such directory" in out, (out, err)


def test_status_from_another_directory_reports_the_writers_data_dir(running, tmp_path):
    inst, _ = running
    code, out, err = cli(inst, "status", "--json")
    assert code == 0, (out, err)
    r = json.loads(out)
    assert r["healthy"], r["problems"]
    assert r["disk"]["data_dir"] == str(tmp_path / "var") and r["disk"]["logs"] >= 1
    code, out, err = cli(inst, "status")
    assert code == 0 and str(tmp_path / "var") in out


def test_status_is_unhealthy_when_no_writer_serves_its_data_dir(running, tmp_path):
    inst, _ = running
    other = tmp_path / "other"
    other.mkdir()
    code, out, err = cli(inst, "status", "--json", BUKT_DATA_DIR=str(other))
    assert code == 1, (out, err)
    r = json.loads(out)
    assert not r["healthy"]
    assert any("no writer serves this data_dir" in p for p in r["problems"]), r["problems"]


def test_compact_from_another_directory_waits_on_the_writers_data_dir(running, tmp_path):
    inst, _ = running
    code, out, err = cli(inst, "compact", "--json", "--wait", "120")
    assert code == 0, (out, err)
    base = json.loads(out)["base"]
    assert base.startswith(str(tmp_path / "var")) and os.path.exists(base)
    # given another data_dir than the writer's, it says so at once
    code, out, err = cli(inst, "compact", "--wait", "120", BUKT_DATA_DIR=str(tmp_path))
    assert code == 1 and "serves data_dir" in err, (out, err)


def test_the_writer_refuses_a_data_dir_the_segment_cannot_record(instance, tmp_path):  # noqa: F811
    from bukt._core import DATA_DIR_MAX
    deep = str(tmp_path) + ("/" + "d" * 200) * (DATA_DIR_MAX // 200 + 1)
    instance.configure(data_dir=deep)
    code, log = instance.run_to_exit()
    assert code == 2 and "choose a shorter path" in log
    assert not os.path.exists(deep)
