"""Read replicas (docs/design.md, "Replicas"): the primary's source (source.py) and the
replica's applier process (applier.py)."""
import json
import os

__all__ = ["primary_of", "PROMOTED_FILE", "promoted"]

PROMOTED_FILE = "promoted.json"     # in data_dir: `bukt promote` made this a primary


def promoted(data_dir):
    """The promotion record of this data directory ({"ms", "was_replica_of"}), or None."""
    try:
        with open(os.path.join(data_dir, PROMOTED_FILE)) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def primary_of(cfg):
    """host:port of the primary this instance is a read replica of; None when it is a
    primary (no replica.of, or promoted since)."""
    url = cfg.get("replica.of")
    if not url or promoted(os.path.abspath(cfg.data_dir)) is not None:
        return None
    from bukt.replica.applier import parse_primary
    host, port, _ = parse_primary(url)
    return f"{host}:{port}"
