"""A client process for tests/integration/test_objects*.py.

    object_client.py INSTANCE BUCKET KEY MODE OUT [ARG]

MODE read:      until OUT.stop exists, open KEY and read it whole (bukt.objects
                verifies the SHA-256 and every chunk's CRC); write "reads errors" to
                OUT at the end, and each error's text to OUT.err.
MODE overwrite: until OUT.stop exists (or COUNT puts, a 7th argument), put objects of
                ARG bytes with different bytes each time; write the number of puts
                to OUT at the end.
MODE stall:     put an object of ARG bytes from a source that, after half of it,
                writes OUT and then blocks for ever (the test kills this process).
"""
import os
import sys
import time

import bukt
from bukt import objects
from bukt.errors import BuktError


def main():
    name, bucket, key, mode, out = sys.argv[1:6]
    arg = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    store = bukt.attach(name)
    b = store.bucket(bucket)
    key = key.encode()
    stop = out + ".stop"
    if mode == "read":
        reads = errors = 0
        with open(out + ".err", "w") as err:
            while not os.path.exists(stop):
                try:
                    reader = objects.open(b, key)
                    if reader is not None:
                        with reader:
                            data = reader.read()
                            if len(data) != reader.size:
                                raise AssertionError("short read")
                        reads += 1
                except (BuktError, AssertionError) as e:
                    errors += 1
                    err.write(f"{type(e).__name__}: {e}\n")
        with open(out, "w") as f:
            f.write(f"{reads} {errors}\n")
    elif mode == "overwrite":
        n = 0
        while not os.path.exists(stop) and n < (int(sys.argv[7]) if len(sys.argv) > 7 else 1 << 62):
            n += 1
            objects.put(b, key, os.urandom(64) * (arg // 64) + bytes([n % 256]) * (arg % 64))
        with open(out, "w") as f:
            f.write(f"{n}\n")
    elif mode == "stall":
        def source():
            piece = os.urandom(64 << 10)
            sent = 0
            while sent < arg // 2:
                yield piece
                sent += len(piece)
            with open(out, "w") as f:
                f.write("half\n")
            while True:
                time.sleep(60)
        objects.put(b, key, source())
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
