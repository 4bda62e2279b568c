"""Sizes written for people ("64MiB", "1GiB", "4096") turned into bytes."""
import re

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1 << 10, "m": 1000**2,
          "mb": 1000**2, "mib": 1 << 20, "g": 1000**3, "gb": 1000**3, "gib": 1 << 30,
          "t": 1000**4, "tb": 1000**4, "tib": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value):
    """Bytes from an int or a string such as "64MiB", "1.5GiB", "4096"."""
    if isinstance(value, bool):
        raise ValueError(f"size {value!r}: a number of bytes or a string like '64MiB'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size {value}: must not be negative")
        return value
    m = _SIZE.match(str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"size {value!r}: a number of bytes or a string like '64MiB' "
                         "(units B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
