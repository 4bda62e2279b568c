"""The RESP frame loop in one process: what the shared loop (bukt/tcp/frames.py, drive)
costs over a loop of its own, per pipelined GET, with no sockets in the way.

    .venv/bin/python bench/frameloop.py [--commands 2000] [--rounds 200] [--repeat 5]

Runs bukt.tcp.resp_session.run (frames.drive) and, as the baseline, a copy
of the loop RESP had before it shared one, over the same buffer of pipelined GETs,
alternating (CPU time of this process), and prints microseconds per command of each
and the median ratio of the pairs.
"""
import argparse
import os
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.join(ROOT, "bench")]
sys.path.insert(0, ROOT)

import bukt  # noqa: E402
from bukt.tcp import resp as R  # noqa: E402
from bukt.tcp import resp_session as RS  # noqa: E402
from bukt.tcp.resp_session import (PARK, STOP_DEFERRED, STOP_FATAL, STOP_FULL,  # noqa: E402
                                   STOP_PARK, STOP_PARTIAL, STOP_QUIT)


def own_loop(buf, size, pos, session, max_frame, out, out_limit):
    """resp_session.run as it was before the loops shared frames.drive."""
    out_bytes = 0
    session.recheck()
    parse = session.parser.parse
    execute = session.execute
    while pos < size:
        try:
            got = parse(buf, pos, size)
        except R.RespError as exc:
            out.append(R.error(f"ERR Protocol error: {exc}"))
            return pos, STOP_FATAL
        if got is None:
            return pos, STOP_PARTIAL
        args, end = got
        if not args:
            pos = end
            continue
        result = execute(args)
        if result is PARK:
            return pos, STOP_PARK
        pos = end
        out.append(result)
        if result.__class__ is not bytes:
            return pos, STOP_DEFERRED
        if session.closing:
            return pos, STOP_QUIT
        out_bytes += len(result)
        if out_bytes >= out_limit:
            return pos, STOP_FULL
    return pos, STOP_PARTIAL


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--commands", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    name = f"bench-{uuid.uuid4().hex[:8]}"
    st = bukt.create(name, size="16MiB")
    try:
        st.create_bucket("b", persist=False)
        st.add_token("b", __import__("hashlib").sha256(b"t").digest(), 7)
        st.bucket("b").set(b"k", b"v" * 16)
        s = RS.RespSession(st)
        assert s.authenticate(b"b", b"t") is None
        buf = bytearray(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" * a.commands)
        times = {"own loop": [], "shared drive": []}
        ratios = []
        for i in range(a.repeat):
            pair = {}
            order = (("own loop", own_loop), ("shared drive", RS.run))
            for label, fn in (order if i % 2 == 0 else order[::-1]):
                t0 = time.process_time()
                for _ in range(a.rounds):
                    out = []
                    pos, why = fn(buf, len(buf), 0, s, 4 << 20, out, 1 << 30)
                    assert pos == len(buf) and len(out) == a.commands, (pos, why)
                pair[label] = (time.process_time() - t0) / (a.rounds * a.commands)
                times[label].append(pair[label])
            ratios.append(pair["shared drive"] / pair["own loop"])
        for label, ts in times.items():
            print(f"{label:14s} {min(ts) * 1e6:.3f} us/command (best of {a.repeat}, CPU time)")
        ratios.sort()
        print(f"shared/own     median {ratios[len(ratios) // 2]:.3f} of {a.repeat} "
              f"alternated pairs (min {ratios[0]:.3f}, max {ratios[-1]:.3f})")
    finally:
        st.unlink()
        st.close()


if __name__ == "__main__":
    main()
