"""Where twemproxy (nutcracker) puts a key: its hashes and its ketama continuum,
computed the way nutcracker 0.4/0.5 computes them (src/hashkit/nc_ketama.c and the
hash functions beside it), so that a placement can be predicted, checked and
explained without the proxy.

THE CONTINUUM. Every live server gets 160 points per unit of its share of the total
weight (160 each when the weights are equal), in groups of four: for group i the
string "<name>-<i>" is hashed with MD5, and each 4-byte quarter of the digest, read
little-endian, is a point. The points are sorted; a key goes to the server of the
first point at or above the key's 32-bit hash, wrapping to the first point. The
server's *name* (the word after `host:port:weight` in the servers list, else
`host:port`) is what is hashed, not its address: a node can move to another address
under the same name and keep its keys.

THE KEY'S HASH is the pool's `hash`. It has to spread over all 32 bits, because ketama
compares whole values: `fnv1a_64` in nutcracker is FNV-1a cut down to 32 bits with the
64-bit prime truncated to 435 (0x1b3), so a key's last bytes move only its low bits,
and keys that differ only at the end ("key:1", "key:2", ...) land together on one
arc of the ring, on one server. `modula` takes the hash modulo the number of servers,
which only needs the low bits, so fnv1a_64 looked fine there. `md5` (what libketama
itself uses) and `murmur` spread such keys; `bukt cluster config` writes md5.
"""
import hashlib
import struct
from bisect import bisect_left

__all__ = ["HASHES", "Continuum", "key_hash"]

POINTS_PER_SERVER = 160      # nc_ketama.c KETAMA_POINTS_PER_SERVER
POINTS_PER_HASH = 4          # an MD5 digest gives four points
MASK = 0xFFFFFFFF


def _f32(x: float) -> float:
    """x rounded to a C float: nutcracker does the weight arithmetic in float."""
    return struct.unpack("f", struct.pack("f", x))[0]


def md5(key: bytes) -> int:
    d = hashlib.md5(key).digest()
    return int.from_bytes(d[:4], "little")


def fnv1a_64(key: bytes) -> int:
    """nutcracker's fnv1a_64: a 32-bit state, the 64-bit offset basis and prime each
    truncated to their low 32 bits (the prime becomes 435)."""
    h = 0xcbf29ce484222325 & MASK
    for c in key:
        h = ((h ^ c) * (0x100000001b3 & MASK)) & MASK
    return h


def fnv1a_32(key: bytes) -> int:
    h = 2166136261
    for c in key:
        h = ((h ^ c) * 16777619) & MASK
    return h


def murmur(key: bytes) -> int:
    """nutcracker's murmur: MurmurHash2, seeded with 0xdeadbeef * length."""
    m, n = 0x5bd1e995, len(key)
    h = ((0xdeadbeef * n) & MASK) ^ n
    i = 0
    while n - i >= 4:
        k = int.from_bytes(key[i:i + 4], "little")
        k = (k * m) & MASK
        k ^= k >> 24
        k = (k * m) & MASK
        h = ((h * m) & MASK) ^ k
        i += 4
    rest = n - i
    if rest == 3:
        h ^= key[i + 2] << 16
    if rest >= 2:
        h ^= key[i + 1] << 8
    if rest >= 1:
        h ^= key[i]
        h = (h * m) & MASK
    h ^= h >> 13
    h = (h * m) & MASK
    h ^= h >> 15
    return h


# the pool's `hash:` -> the function (the ones Bukt's tools compute; nutcracker has
# more: one_at_a_time, fnv1_64, fnv1_32, hsieh, jenkins, crc16, crc32, crc32a)
HASHES = {"md5": md5, "murmur": murmur, "fnv1a_64": fnv1a_64, "fnv1a_32": fnv1a_32}


def key_hash(key, hash_name="md5", hash_tag=None) -> int:
    """The 32-bit hash nutcracker computes for `key`: with a two-character hash_tag
    such as "{}", only the part between the first opening character and the next
    closing one (when both are there and it is not empty) is hashed."""
    if isinstance(key, str):
        key = key.encode()
    if hash_tag:
        left, right = hash_tag[0].encode(), hash_tag[1].encode()
        start = key.find(left)
        if start >= 0:
            end = key.find(right, start + 1)
            if end > start + 1:
                key = key[start + 1:end]
    return HASHES[hash_name](key) if key else 0      # nutcracker: an empty key is 0


class Continuum:
    """The ring of a pool: servers [(name, weight)] in the order of the servers list
    (every one live; leave out an ejected one to see where its keys go)."""

    def __init__(self, servers):
        servers = [(s, 1) if isinstance(s, str) else (s[0], int(s[1])) for s in servers]
        if not servers:
            raise ValueError("a continuum needs at least one server")
        self.names = [name for name, _ in servers]
        total = sum(w for _, w in servers)
        live = len(servers)
        points = []
        self.points = {}
        for index, (name, weight) in enumerate(servers):
            pct = _f32(_f32(weight) / _f32(total))
            # floorf(pct * 160 / 4 * nlive + 1e-10) * 4, in float as nutcracker does
            per_server = int(_f32(_f32(_f32(pct * POINTS_PER_SERVER) / 4) * live)
                             + 1e-10) * POINTS_PER_HASH
            self.points[name] = per_server
            for group in range(per_server // POINTS_PER_HASH):
                d = hashlib.md5(f"{name}-{group}".encode()).digest()
                for x in range(POINTS_PER_HASH):
                    points.append((int.from_bytes(d[4 * x:4 * x + 4], "little"), index))
        points.sort(key=lambda p: p[0])     # nutcracker's qsort: ties in any order
        self._values = [v for v, _ in points]
        self._owners = [i for _, i in points]

    def server_of_hash(self, h: int) -> str:
        if len(self.names) == 1:            # nutcracker does not hash for one server
            return self.names[0]
        i = bisect_left(self._values, h)
        return self.names[self._owners[i if i < len(self._values) else 0]]

    def server(self, key, hash_name="md5", hash_tag=None) -> str:
        return self.server_of_hash(key_hash(key, hash_name, hash_tag))

    def shares(self) -> dict:
        """Each server's fraction of the 32-bit hash space (the arcs that end at its
        points): the share of uniformly hashed keys it gets."""
        share = dict.fromkeys(self.names, 0)
        prev = self._values[-1] - (1 << 32)
        for v, i in zip(self._values, self._owners):
            share[self.names[i]] += v - prev
            prev = v
        return {n: s / (1 << 32) for n, s in share.items()}
