"""Read replicas (docs/design.md, "Replicas"): the primary's source (source.py), the
replica's applier process (applier.py), what both say of themselves (status.py), and
here the files in a data directory that say which role it has:

    node.id          this data directory's identity, made on first use: a replica
                     remembers its primary's, so a promotion names whom it replaced
    replicas.json    (a primary) the replicas that followed it: {address: last seen ms}
    promoted.json    (a promoted replica) {"ms", "was_replica_of", "primary_node"}
    fenced.json      (an old primary) {"ms", "by"}: a replica promoted in its place;
                     every write is refused, naming "by", until `bukt unfence`
    unfenced.json    {"ms", "accepted": [addresses]}: promotions an operator accepted
"""
import json
import os
import secrets
import time

__all__ = ["primary_of", "refuse_writes_for", "promoted", "fenced", "node_id",
           "PROMOTED_FILE", "FENCED_FILE", "REPLICAS_FILE", "UNFENCED_FILE",
           "read_json", "write_json"]

PROMOTED_FILE = "promoted.json"
FENCED_FILE = "fenced.json"
REPLICAS_FILE = "replicas.json"
UNFENCED_FILE = "unfenced.json"
NODE_FILE = "node.id"


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def write_json(path, doc):
    """Atomically (a temporary file, fsynced, renamed)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def promoted(data_dir):
    """The promotion record of this data directory, or None."""
    return read_json(os.path.join(data_dir, PROMOTED_FILE))


def fenced(data_dir):
    """The fence of this (old primary's) data directory, or None."""
    return read_json(os.path.join(data_dir, FENCED_FILE))


def node_id(data_dir):
    path = os.path.join(data_dir, NODE_FILE)
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        pass
    node = secrets.token_hex(8)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path) as f:
            return f.read().strip()
    with os.fdopen(fd, "w") as f:
        f.write(node + "\n")
    return node


def primary_of(cfg):
    """host:port of the primary this instance follows (its applier runs); None when
    it is a primary (no replica.of, or promoted since)."""
    url = cfg.get("replica.of")
    if not url or promoted(os.path.abspath(cfg.data_dir)) is not None:
        return None
    from bukt.replica.applier import parse_primary
    host, port, _ = parse_primary(url)
    return f"{host}:{port}"


def refuse_writes_for(cfg):
    """The address every write is refused in favour of (the segment's replica word):
    the primary of a replica, or the promoted replica that fenced an old primary;
    None when this instance takes writes."""
    p = primary_of(cfg)
    if p:
        return p
    f = fenced(os.path.abspath(cfg.data_dir))
    return f["by"] if f else None


def note_replica(data_dir, address):
    """A primary remembers who follows it (for the fencing rule)."""
    if not address:
        return
    path = os.path.join(data_dir, REPLICAS_FILE)
    doc = read_json(path) or {}
    doc[address] = int(time.time() * 1000)
    try:
        write_json(path, doc)
    except OSError:
        pass
