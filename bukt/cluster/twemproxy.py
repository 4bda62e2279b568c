"""The twemproxy (nutcracker) pool `bukt cluster config` writes for a set of Bukt nodes.

One pool, named after the bucket, listens where the clients connect and spreads keys
over the nodes' RESP ports with ketama (consistent hashing: adding a node moves only
the keys that now land on it). Its settings, and why (docs/scale-out.md says more):

- `hash: md5`: ketama compares whole 32-bit hashes; nutcracker's fnv1a_64 moves only
  the low bits for the last bytes of a key, so keys that differ at the end ("user:1",
  "user:2") pile onto one node (bukt/cluster/ketama.py). md5 is libketama's own choice,
  so any ketama client computes the same placement; `murmur` spreads as well.
- `redis: true` and `redis_auth`: nutcracker authenticates each server connection with
  `AUTH <password>` and makes clients AUTH with the same password; a Bukt token names
  its bucket, so the password is one token of the bucket, registered on every node
  (`bukt buckets create NAME --token-file F` / `bukt tokens create --token-file F`).
- named servers (`host:port:1 name`): the ring is built from the names, so a node can
  move to another address under its name without moving keys.
- `timeout`: longer than the slowest answer a healthy node gives, a write waiting for
  room in a full change ring (`limits.ring_wait_ms`), plus a margin: nutcracker counts
  a timeout as a server failure, and a node that is merely busy must not be ejected.
- `server_connections: 1`: nutcracker hands a node's requests to its connections in
  turn, and each Bukt connection is served by one TCP worker, so with more than one,
  two requests a client pipelines to a node may run in either order (a GET overtaking
  the SET before it). More connections spread a node's load over its workers;
  `--server-connections N` trades that order for it.
- `auto_eject_hosts: true`, `server_failure_limit: 3`, `server_retry_timeout`: a node
  that fails three requests in a row leaves the ring and its keys go to the others
  until it is retried; `--no-eject` keeps it in (its keys fail instead of moving).
"""
import os
import re
import socket
from dataclasses import dataclass

from bukt import config as _config
from bukt.cluster.ketama import Continuum
from bukt.errors import InvalidArgument

__all__ = ["Node", "parse_node", "Pool", "check_node", "HASH_CHOICES"]

HASH_CHOICES = ("md5", "murmur")     # the ones that spread short, similar keys
DEFAULT_LISTEN = "127.0.0.1:22121"   # nutcracker's customary port
DEFAULT_POOL = "bukt"                # the pool's name without --bucket
TIMEOUT_MARGIN_MS = 1000             # over limits.ring_wait_ms
SERVER_FAILURE_LIMIT = 3             # failures in a row that eject a node
SERVER_RETRY_TIMEOUT_MS = 10_000     # an ejected node is tried again after this
BACKLOG = 1024
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Node:
    name: str
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_node(text: str) -> Node:
    """NAME=HOST:PORT (the node's resp.bind); HOST is an IPv4 address or a host name
    (nutcracker's servers list takes no IPv6 brackets)."""
    name, sep, where = text.partition("=")
    if not sep or not NAME_RE.fullmatch(name):
        raise InvalidArgument(f"--node {text!r}: NAME=HOST:PORT, NAME of 1-64 letters, "
                              "digits, '_', '.', '-' (e.g. a=10.0.0.1:7072)")
    try:
        host, port = _config.parse_bind(where)
    except ValueError as e:
        raise InvalidArgument(f"--node {text!r}: {e}") from None
    if ":" in host:
        raise InvalidArgument(f"--node {text!r}: nutcracker's servers list takes an IPv4 "
                              "address or a host name, not IPv6")
    if port == 0:
        raise InvalidArgument(f"--node {text!r}: port 0 is not a node's address")
    return Node(name, host, port)


def default_timeout_ms(cfg=None) -> int:
    """limits.ring_wait_ms (of `cfg`, else the default) plus TIMEOUT_MARGIN_MS."""
    wait = cfg.limits.ring_wait_ms if cfg is not None else \
        _config.SCHEMA["limits.ring_wait_ms"][0]
    return int(wait) + TIMEOUT_MARGIN_MS


@dataclass
class Pool:
    name: str
    listen: str
    nodes: list
    token: str
    hash: str = "md5"
    hash_tag: str | None = None
    timeout_ms: int = 0
    eject: bool = True
    retry_ms: int = SERVER_RETRY_TIMEOUT_MS
    failure_limit: int = SERVER_FAILURE_LIMIT
    server_connections: int = 1

    def __post_init__(self):
        if not NAME_RE.fullmatch(self.name):
            raise InvalidArgument(f"pool name {self.name!r}: 1-64 letters, digits, '_', "
                                  "'.', '-' (a bucket name)")
        try:
            _config.parse_bind(self.listen)
        except ValueError as e:
            raise InvalidArgument(f"--listen: {e}") from None
        if not self.nodes:
            raise InvalidArgument("no nodes: give --node NAME=HOST:PORT for each")
        for attr in ("name", "address"):
            seen = [getattr(n, attr) for n in self.nodes]
            dup = {x for x in seen if seen.count(x) > 1}
            if dup:
                raise InvalidArgument(f"node {attr} {sorted(dup)[0]!r} given twice")
        if self.hash not in HASH_CHOICES:
            raise InvalidArgument(f"--hash {self.hash!r}: one of {', '.join(HASH_CHOICES)}")
        if self.hash_tag is not None and (len(self.hash_tag) != 2 or
                                          not self.hash_tag.isprintable() or
                                          '"' in self.hash_tag or "\\" in self.hash_tag):
            raise InvalidArgument(f"--hash-tag {self.hash_tag!r}: two characters, e.g. {{}}")
        if self.timeout_ms <= 0:
            self.timeout_ms = default_timeout_ms()
        if self.retry_ms <= 0 or self.failure_limit <= 0 or self.server_connections <= 0:
            raise InvalidArgument("--retry-ms, --failure-limit and --server-connections "
                                  "must be positive")

    def continuum(self) -> Continuum:
        return Continuum([n.name for n in self.nodes])

    def yaml(self) -> str:
        shares = self.continuum().shares()
        width = max(len(n.name) for n in self.nodes)
        lines = [
            f"# twemproxy (nutcracker) pool {self.name!r} over Bukt nodes, written by",
            "# `bukt cluster config` (docs/scale-out.md). Clients connect to the listen",
            "# address and AUTH with the bucket's token, the password below.",
            f"# ketama over {self.hash}: each node's share of the keys",
            *(f"#   {n.name.ljust(width)}  {100 * shares[n.name]:5.1f}%  ({n.address})"
              for n in self.nodes),
            f"{self.name}:",
            f"  listen: {self.listen}",
            "  redis: true",
            f'  redis_auth: "{self.token}"',
            f"  hash: {self.hash}",
            *([f'  hash_tag: "{self.hash_tag}"'] if self.hash_tag else []),
            "  distribution: ketama",
            f"  timeout: {self.timeout_ms}",
            f"  backlog: {BACKLOG}",
            "  preconnect: true",
            f"  server_connections: {self.server_connections}",
            f"  auto_eject_hosts: {'true' if self.eject else 'false'}",
            f"  server_retry_timeout: {self.retry_ms}",
            f"  server_failure_limit: {self.failure_limit}",
            "  servers:",
            *(f"   - {n.address}:1 {n.name}" for n in self.nodes),
        ]
        return "\n".join(lines) + "\n"


def _bulk(*args) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def check_node(node: Node, token: str, bucket: str | None, timeout=5.0) -> str | None:
    """None when the node's RESP port accepts `token` (for `bucket` when given), else
    what went wrong, in a few words."""
    try:
        with socket.create_connection((node.host, node.port), timeout=timeout) as s:
            args = ("AUTH", bucket, token) if bucket else ("AUTH", token)
            s.sendall(_bulk(*args) + _bulk("PING"))
            data = b""
            while data.count(b"\r\n") < 2:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        return f"cannot reach {node.address}: {e.strerror or e}"
    first = data.split(b"\r\n", 1)[0].decode(errors="replace")
    if first == "+OK":
        return None
    if not first:
        return f"{node.address} closed the connection (is it the node's resp.bind?)"
    what = "the token is not one of bucket " + repr(bucket) if bucket else "the token"
    return f"{node.address} refused {what}: {first.lstrip('-')}"


def write_private(path: str, text: str) -> None:
    """`text` into `path`, mode 0600 (it holds a token), complete or not at all."""
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
