"""Which package may import which: each check imports a module in a fresh interpreter
and looks at what came with it, or reads a module's imports from its source."""
import ast
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def loaded_by(module):
    """The bukt modules a fresh interpreter has after `import module`."""
    out = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; "
         "print('\\n'.join(m for m in sys.modules if m.startswith('bukt')))"],
        capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


def imports_of(path):
    """The modules a source file imports from, at any depth (`from X import y` -> X,
    `import X` -> X)."""
    tree = ast.parse((ROOT / path).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            pkg = ROOT.joinpath(*node.module.split("."))
            found.update(f"{node.module}.{a.name}" for a in node.names
                         if (pkg / f"{a.name}.py").exists())     # a module, by name
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_the_core_does_not_load_the_service_package():
    assert not {m for m in loaded_by("bukt._core") if m.startswith("bukt.service")}


def test_the_core_reads_the_log_format_without_loading_the_writer():
    """cext/bulkload.pxi cimports the record format from bukt/writer/_logscan.pxd, whose
    contents are inline: the core loads nothing of the writer's package at run time."""
    assert not {m for m in loaded_by("bukt._core") if m.startswith("bukt.writer")}


def test_the_frame_loop_and_the_session_do_not_import_each_other():
    """_wire.pyx runs sessions it is handed and recognises their answers through
    bukt/tcp/frames.py; the session never needs the loops."""
    wire = re.findall(r"^\s*(?:from|import|cimport) ([\w.]+)", (ROOT / "bukt/tcp/_wire.pyx")
                      .read_text(), re.M)
    assert "bukt.tcp.session" not in wire and "bukt.tcp.frames" in wire
    assert not {m for m in imports_of("bukt/tcp/session.py")
                if m.startswith(("bukt.tcp._wire", "bukt.tcp._epoll", "bukt.tcp.connection"))}


def test_services_and_cli_use_the_public_surface_of_other_packages():
    """The supervisor and the CLI call bukt.http, bukt.writer, bukt.tcp through their
    __init__, not their internal modules."""
    for path in ("bukt/service/supervisor.py", "bukt/cli/__init__.py", "bukt/cli/ops.py",
                 "bukt/cli/data.py",
                 "bukt/cli/dump.py", "bukt/cli/common.py", "bukt/cli/targets.py"):
        inner = {m for m in imports_of(path)
                 if m.count(".") >= 2 and m.split(".")[1] in ("http", "writer", "tcp")}
        assert not inner, f"{path} imports internals: {sorted(inner)}"
