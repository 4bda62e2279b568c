"""A progress line on stderr for long CLI commands (dump, load, check, compact), drawn
only when stderr is a terminal, so scripts and logs never see it.

    with Progress("load", total=size, unit="B") as p:
        for line in f:
            p.advance(len(line))

With a total it draws a bar and a percentage; without one, a count and a rate. It
redraws at most REDRAW_S apart, so a tight loop pays one time.monotonic() per call.
"""
import sys
import time

__all__ = ["Progress"]

REDRAW_S = 0.1
WIDTH = 30


def _human(n, unit):
    if unit == "B":
        for u in ("B", "KiB", "MiB", "GiB"):
            if n < 1024 or u == "GiB":
                return f"{n:.0f} {u}" if u == "B" else f"{n:.1f} {u}"
            n /= 1024
    return f"{n:,.0f}{(' ' + unit) if unit else ''}"


class Progress:
    def __init__(self, label, total=None, unit="", stream=None, enabled=None):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done = 0
        self.t0 = time.monotonic()
        self._next = 0.0
        self._drawn = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def advance(self, n=1):
        self.done += n
        if self.enabled:
            now = time.monotonic()
            if now >= self._next:
                self._next = now + REDRAW_S
                self.draw(now)

    def set(self, done):
        self.done = done
        self.advance(0)

    def draw(self, now=None):
        elapsed = max((now or time.monotonic()) - self.t0, 1e-9)
        rate = self.done / elapsed
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * WIDTH)
            text = (f"{self.label} [{bar:<{WIDTH}}] {frac * 100:5.1f}%  "
                    f"{_human(self.done, self.unit)} of {_human(self.total, self.unit)}")
        else:
            text = f"{self.label}  {_human(self.done, self.unit)}"
        text += f"  {_human(rate, self.unit)}/s  {elapsed:.1f} s"
        self.stream.write("\r" + text[:150] + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self):
        if self._drawn:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
