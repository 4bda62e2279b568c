"""The writer process and what it alone owns: the log on disk, base files, the
data directory, recovery, and the translation of ring records into log records."""
