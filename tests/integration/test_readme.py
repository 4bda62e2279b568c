"""The README cannot rot: every ```sh block in it is run, in order, as one bash script
(`set -euo pipefail`, so any failing command fails the test) against a real service
this test starts.

The script runs in a scratch directory laid out as a checkout looks to a user: `var/`
is the service's data directory (so `var/admin.token` is there) and `.venv` links to
this checkout's environment. Only what must differ on a shared test machine is changed,
and only here: the ports (7070, 7071 and 7072 become unused ones), and the instance name
(`bukt.attach("default")`, and BUKT_INSTANCE for the CLI, become a unique one).

A block the test cannot run (a foreground server, root and systemd) is preceded by an
HTML comment `<!-- not run here: ... -->` and must be listed in NOT_RUN with the test
that covers it instead."""
import os
import re
import shutil
import subprocess

import pytest

from serve_harness import ROOT, Service

README = os.path.join(ROOT, "README.md")
FENCE = re.compile(r"(?:<!--(?P<note>.*?)-->\s*\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)```",
                   re.S)
SHELL_LANGS = {"sh", "bash", "shell", "console", "zsh"}
# blocks not run here -> the test that covers them
NOT_RUN = {
    "make run": "tests/integration/test_serve.py::test_make_run_reaches_healthy_and_stops_on_sigterm",
    "make test": "the CI runs it (.ci/run), this test included",
    "sudo make install": "tests/integration/test_systemd.py (install-units into a staging root)",
    "sudo systemctl enable --now bukt": "tests/integration/test_systemd.py (analyze verify, notify)",
    "sudo -u bukt BUKT_CONFIG=/etc/bukt/bukt.yaml /opt/bukt/bin/bukt status":
        "tests/integration/test_cli.py::test_status_check_compact",
    "sudo systemctl reload bukt": "tests/integration/test_serve.py::test_sighup_applies_worker_keys_and_names_the_rest",
}


def blocks():
    """[(lang, body, note)] of every fenced block of the README."""
    with open(README) as f:
        text = f.read()
    return [(m["lang"], m["body"], (m["note"] or "").strip()) for m in FENCE.finditer(text)]


def commands(body):
    """The commands of a block, comments and continuations folded away."""
    out = []
    for line in body.replace("\\\n", " ").splitlines():
        line = line.split("  #")[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def test_every_command_block_is_run_or_covered_elsewhere():
    shell = [(lang, body, note) for lang, body, note in blocks() if lang in SHELL_LANGS]
    assert len(shell) >= 5
    for lang, body, note in shell:
        assert lang == "sh", f"a ```{lang} block: use ```sh, which this test runs"
        if note:
            assert note.startswith("not run here:"), note
            for cmd in commands(body):
                assert cmd in NOT_RUN, f"{cmd!r} is not run and no test covers it"
    # nothing that looks like a command hides in an unlabelled block
    for lang, body, note in blocks():
        if lang not in SHELL_LANGS:
            assert not re.search(r"^\s*(\$ |bukt |curl |make )", body, re.M), body


@pytest.fixture
def service(tmp_path):
    s = Service(tmp_path)               # data_dir is tmp_path/var
    yield s
    s.cleanup()


def test_readme_commands_run(service, tmp_path):
    assert shutil.which("curl"), "the README's curl session needs curl: apt-get install curl"
    service.start()
    os.symlink(os.path.join(ROOT, ".venv"), tmp_path / ".venv")
    http, tcp, resp = str(service.http_port), str(service.tcp_port), str(service.resp_port)
    script = ["set -euo pipefail"]
    for i, (lang, body, note) in enumerate(blocks()):
        if lang != "sh" or note:
            continue
        body = body.replace(":7070", f":{http}").replace(":7071", f":{tcp}")
        body = body.replace("-p 7072", f"-p {resp}")
        body = body.replace('bukt.attach("default")', f'bukt.attach("{service.name}")')
        script += [f"echo '### README block {i}'", body]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUKT_")}
    env.update(BUKT_INSTANCE=service.name, BUKT_HTTP__BIND=service.http_bind,
               BUKT_TCP__BIND=service.tcp_bind, PYTHONUNBUFFERED="1")
    r = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"a README command failed (exit {r.returncode}):\n{out}"
    # a few of the outputs the README promises
    assert '"status": "ok"' in r.stdout
    assert "hello\n" in r.stdout and "b'hello'" in r.stdout
    assert "exit 3 (not found)" in r.stdout
    assert "fsync: 'sometimes' is not allowed" in out and "exit 2" in r.stdout
    assert "loaded" in r.stdout and "tcp        get" in r.stdout
    assert service.stop() == 0
