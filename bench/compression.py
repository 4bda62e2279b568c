"""Compression ratio and cost per value size: what a bucket's threshold rests on.

    .venv/bin/python bench/compression.py [--rounds N]

For each size, values cut from a text corpus (this repository's docs and sources: prose,
code, JSON-like config) and from random bytes; for zstd (level 3) and lz4 (level 0)
through bukt/codec.py: the stored size as a share of the raw size, and the time to
compress and to decompress one value (median of the rounds, ns). The last column is
the saving per microsecond of compression: where it is small, compressing buys little.
"""
import argparse
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from bukt import codec  # noqa: E402

SIZES = (128, 256, 512, 1024, 2048, 4096, 16384, 65536)


def corpus() -> bytes:
    root = pathlib.Path(__file__).resolve().parent.parent
    parts = [p.read_bytes() for pat in ("docs/*.md", "bukt/**/*.py", "conf/*.yaml")
             for p in sorted(root.glob(pat))]
    return b"\n".join(parts)


def samples(text: bytes, size: int, n: int):
    step = max(1, (len(text) - size) // n)
    return [text[i * step:i * step + size] for i in range(n)]


def timed(fn, values, rounds):
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for v in values:
            fn(v)
        per.append((time.perf_counter_ns() - t0) / len(values))
    return statistics.median(per)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=200, help="values per size")
    args = ap.parse_args()
    text = corpus()
    print(f"corpus: {len(text)} bytes of text")
    print(f"{'data':6} {'codec':5} {'size':>6} {'stored':>7} {'comp ns':>8} {'dec ns':>7} "
          f"{'saved B/us':>10}")
    for kind in ("text", "random"):
        for size in SIZES:
            vals = samples(text, size, args.n) if kind == "text" else \
                [os.urandom(size) for _ in range(args.n)]
            for name, c in (("zstd", codec.ZSTD), ("lz4", codec.LZ4)):
                frames = [codec.compress(v, c, 0) for v in vals]
                stored = sum(len(f[0]) if f else len(v) for f, v in zip(frames, vals))
                ratio = stored / sum(len(v) for v in vals)
                ct = timed(lambda v: codec.compress(v, c, 0), vals, args.rounds)
                packed = [f for f in frames if f]
                dt = timed(lambda f: codec.decompress(f[0], f[1]), packed, args.rounds) \
                    if packed else 0.0
                saved = (1 - ratio) * size / (ct / 1000)
                print(f"{kind:6} {name:5} {size:6d} {ratio:7.1%} {ct:8.0f} {dt:7.0f} "
                      f"{saved:10.1f}")


if __name__ == "__main__":
    main()
