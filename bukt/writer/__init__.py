"""The writer process and what it alone owns: the log on disk, base files, the
data directory, recovery, and the translation of ring records into log records.

What other packages (the CLI, the service) may use is named here; the modules behind
it are the writer's own."""

from bukt.writer.aof import (BASE_MAGIC, BUCKET_CREATE, SET, SINGLE_READ, TOKEN_ADD, Record,
                             fsync_dir)
from bukt.writer.basefile import read_base, write_base
from bukt.writer.buckettable import read_table
from bukt.writer.datadir import RecoveryError, check, fix, read_manifest, replay
from bukt.writer.restore import DUMP_STRIPES, final_sets, memory_needed


def run_command(config_path=None, cold=False) -> int:
    """`bukt writer`: the writer process, until it is told to stop."""
    from bukt.writer import process
    return process.run_command(config_path, cold=cold)


def remove_tie(path) -> bool:
    """Forgets the tie between the data directory at `path` and a surviving segment (after
    `bukt check --fix` changed the logs), so the next start is cold. True if there was one."""
    from bukt.writer import process
    return process.remove_tie(path)


__all__ = ["BASE_MAGIC", "BUCKET_CREATE", "SET", "SINGLE_READ", "TOKEN_ADD", "Record",
           "fsync_dir", "read_base", "write_base", "read_table", "RecoveryError", "check",
           "fix", "read_manifest", "replay", "DUMP_STRIPES", "final_sets", "memory_needed",
           "run_command", "remove_tie"]
