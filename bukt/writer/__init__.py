"""The writer process and what it alone owns: the log on disk, base files, the
data directory, recovery, and the translation of ring records into log records.

What other packages (the CLI, the service) may use is named here; the modules behind
it are the writer's own. A name's module is imported when the name is first used, so
that importing the package costs nothing: a warm start of the writer never loads the
base file's code (tests/integration/test_writer_recovery.py)."""
import importlib

# name -> the module of bukt/writer/ that defines it
_SURFACE = {
    "BASE_MAGIC": "aof", "BUCKET_CREATE": "aof", "SET": "aof", "SINGLE_READ": "aof",
    "TOKEN_ADD": "aof", "Record": "aof", "fsync_dir": "aof",
    "read_base": "basefile", "write_base": "basefile",
    "read_table": "buckettable",
    "RecoveryError": "datadir", "check": "datadir", "fix": "datadir",
    "read_manifest": "datadir", "replay": "datadir",
    "DUMP_STRIPES": "restore", "final_sets": "restore", "memory_needed": "restore",
    "log_flags": "restore", "core_flags": "restore",
}


def __getattr__(name):
    module = _SURFACE.get(name)
    if module is None:
        raise AttributeError(f"module 'bukt.writer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"bukt.writer.{module}"), name)
    globals()[name] = value
    return value


def run_command(config_path=None, cold=False) -> int:
    """`bukt writer`: the writer process, until it is told to stop."""
    from bukt.writer import process
    return process.run_command(config_path, cold=cold)


def remove_tie(path) -> bool:
    """Forgets the tie between the data directory at `path` and a surviving segment (after
    `bukt check --fix` changed the logs), so the next start is cold. True if there was one."""
    from bukt.writer import process
    return process.remove_tie(path)


__all__ = sorted(_SURFACE) + ["run_command", "remove_tie"]
