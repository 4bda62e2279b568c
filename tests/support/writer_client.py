"""A writing client for the writer tests, run as its own process:

    writer_client.py INSTANCE ACK_FILE PREFIX MODE SEED [MAX_OPS] [BUCKET]

unique  sets PREFIX-<i> to a fresh value, i = 0, 1, ...; after each set returns (under
        fsync: always that is after its record is on disk) appends "key value\\n" to
        ACK_FILE with one write(2), so a kill -9 loses at most a line being written
model   random sets and deletes over PREFIX-k0..k199; appends "S key value" / "D key"
        (for a reference model; used under everysec/no, where nothing raises after
        applying)

A write that raises appends "E <error class> <key>" and the client goes on after a
short pause. It stops after MAX_OPS operations (0: when killed), and writes "DONE".
"""
import os
import random
import sys
import time

import bukt
from bukt.errors import BuktError


def main():
    name, ack, prefix, mode, seed = sys.argv[1:6]
    max_ops = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    bucket_name = sys.argv[7] if len(sys.argv) > 7 else "b"
    rnd = random.Random(int(seed))
    fd = os.open(ack, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    store = None
    for _ in range(3000):
        try:
            store = bukt.attach(name)
            b = store.bucket(bucket_name)
            break
        except BuktError:
            time.sleep(0.005)
    else:
        sys.exit("no segment")
    i = 0
    while not max_ops or i < max_ops:
        if mode == "unique":
            key = f"{prefix}-{i}".encode()
            value = b"%x" % rnd.getrandbits(64)
            line = b"%s %s\n" % (key, value)
            op = (b.set, key, value)
        else:
            key = f"{prefix}-k{rnd.randrange(200)}".encode()
            if rnd.random() < 0.7:
                value = b"%x-%d" % (rnd.getrandbits(32), i)
                line = b"S %s %s\n" % (key, value)
                op = (b.set, key, value)
            else:
                line = b"D %s\n" % key
                op = (b.delete, key)
        try:
            op[0](*op[1:])
        except BuktError as e:
            os.write(fd, b"E %s %s\n" % (type(e).__name__.encode(), key))
            time.sleep(0.01)
        else:
            os.write(fd, line)
        i += 1
    os.write(fd, b"DONE\n")


if __name__ == "__main__":
    main()
