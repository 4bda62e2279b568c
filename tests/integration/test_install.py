"""`make install DESTDIR=...` stages everything under DESTDIR: the virtual environment
too (it went to the real PREFIX), its paths rewritten to name PREFIX, where it will
run; and it runs on the system interpreter, not the build user's private one."""
import os
import subprocess
import sys
import uuid

import pytest

from serve_harness import ROOT


def _text_files(top):
    for d, _, files in os.walk(top):
        for f in files:
            path = os.path.join(d, f)
            if os.path.islink(path):
                continue
            with open(path, "rb") as fh:
                data = fh.read()
            if b"\0" not in data[:8192]:
                yield path, data


@pytest.mark.slow
@pytest.mark.timeout(1800)          # it compiles the core: minutes on a busy machine
@pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="no system python3")
def test_destdir_stages_everything_and_nothing_lands_outside(tmp_path):
    tag = uuid.uuid4().hex[:8]
    prefix, sysconf = f"/opt/bukt-test-{tag}", f"/etc/bukt-test-{tag}"
    dest = tmp_path / "stage"
    r = subprocess.run(["make", "-s", "install", f"DESTDIR={dest}", f"PREFIX={prefix}",
                        f"SYSCONFDIR={sysconf}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert not os.path.exists(prefix) and not os.path.exists(sysconf)
    stage = dest / prefix.lstrip("/")
    assert (stage / "bin" / "bukt").exists()
    assert (dest / sysconf.lstrip("/") / "systemd/system/bukt.service").exists()
    assert (dest / sysconf.lstrip("/") / "bukt/bukt.yaml").exists()
    # no file of the environment names the staging area; scripts run from PREFIX
    leaks = [p for p, data in _text_files(stage) if str(dest).encode() in data]
    assert leaks == []
    first = (stage / "bin" / "bukt").read_text().splitlines()[0]
    assert first == f"#!{prefix}/bin/python"
    # the environment's interpreter is the system's, not one in a home directory
    cfg = (stage / "pyvenv.cfg").read_text()
    assert "/root/" not in cfg and "/home/" not in cfg
    r = subprocess.run([str(stage / "bin" / "python"), "-m", "bukt", "--version"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("bukt "), r.stderr


def test_a_private_interpreter_is_refused(tmp_path):
    """pyenv's python3 under /root is what the build user has; the bukt user cannot
    read it."""
    private = os.path.realpath(sys.base_prefix)
    if not private.startswith(("/root/", "/home/")):
        pytest.skip("this interpreter is not in a home directory")
    r = subprocess.run(["make", "-s", "install-venv", f"DESTDIR={tmp_path}",
                        f"INSTALL_PYTHON={sys.executable}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and "private home" in r.stderr
    assert not any(tmp_path.iterdir())
