"""What the log's prepared tail saves (bukt/writer/aof.py, THE PREPARED TAIL): the time of
write + fdatasync of one small batch, appended to a growing file versus written inside
zeros the file already has, as the writer does with `log_prepare`.

    .venv/bin/python bench/fsync.py [--dir DIR] [--batch 600] [--count 3000]
                                    [--prepare 4MiB] [--rounds 2]

DIR is where the data directory would be (default: bench/'s system temp dir); the
figures are the filesystem's and the disk's, not Bukt's code. Each round runs both
ways in turn; per way it prints the median, p99 and worst fdatasync and the mean time
per batch including the zeroing, which happens once per `--prepare` bytes.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bukt.config import parse_size  # noqa: E402

ZEROS = bytes(1 << 20)


def run(path, batch, count, prepare):
    """(per-fdatasync seconds, mean seconds per batch) for `count` batches."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    data, size, file_end, syncs = b"x" * batch, 0, 0, []
    try:
        t0 = time.perf_counter()
        for _ in range(count):
            if prepare and size + batch > file_end:
                end = size + batch + prepare
                while file_end < end:
                    file_end += os.pwrite(fd, ZEROS[:min(len(ZEROS), end - file_end)], file_end)
            size += os.pwrite(fd, data, size)
            t = time.perf_counter()
            os.fdatasync(fd)
            syncs.append(time.perf_counter() - t)
        return syncs, (time.perf_counter() - t0) / count
    finally:
        os.close(fd)
        os.unlink(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=None)
    ap.add_argument("--batch", type=int, default=600)
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--prepare", default="4MiB")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    prepare = parse_size(a.prepare)
    d = tempfile.mkdtemp(prefix="bukt-bench-fsync-", dir=a.dir)
    print(f"# fdatasync of {a.batch}-byte batches in {d}, {a.count} per run, {a.rounds} rounds")
    print("| way | median us | p99 us | worst us | per batch us |")
    print("| --- | ---: | ---: | ---: | ---: |")
    means = {}
    try:
        for _ in range(a.rounds):
            for label, prep in (("append (file grows)", 0), (f"prepared tail {a.prepare}", prepare)):
                syncs, mean = run(os.path.join(d, "log"), a.batch, a.count, prep)
                syncs.sort()
                means.setdefault(label, []).append(mean)
                print(f"| {label} | {statistics.median(syncs) * 1e6:.0f} | "
                      f"{syncs[int(len(syncs) * 0.99)] * 1e6:.0f} | {syncs[-1] * 1e6:.0f} | "
                      f"{mean * 1e6:.0f} |", flush=True)
    finally:
        os.rmdir(d)
    (a_label, a_means), (p_label, p_means) = means.items()
    print(f"prepared / append, per batch: "
          f"{statistics.median(p_means) / statistics.median(a_means):.2f}x")


if __name__ == "__main__":
    main()
