"""How old the log is: the writer's side of THE LAG LIMIT (cext/ring.pxi).

Under `fsync: everysec` producers refuse writes when the log has not held everything
committed for longer than `fsync_lag_limit`. The writer publishes `log_current_ms`:
a wall time before which every committed change is in the log.

The drain used to publish only after a batch that reached the ring's head. Under a
sustained load each batch is full (READ_RECORDS or READ_BYTES) and the next one is
already waiting, so no drain reaches the head even while the log trails it by a few
milliseconds: the published time stood still, its age passed the limit after two
seconds, and producers were refused although the writer was keeping up (1 MiB object
chunks written in a loop did this; 3-8% of small SETs beside them were refused).

So each drain marks where the head was when it began, with the time: every change
committed before that time lies below that position. When the log is written past a
mark, its time is the new `log_current_ms`. The age producers compute is then the age
of the oldest change the log may still lack, to within one drain, whatever the load.
"""
import collections

__all__ = ["LogAge"]

MARKS_MAX = 4096        # marks kept: one per drain whose head moved; the oldest go first


class LogAge:
    """Head marks of the drains not yet written past."""

    def __init__(self):
        self.marks = collections.deque()        # (head position, wall ms), increasing

    def mark(self, head: int, ms: int) -> None:
        """A drain begins: every change committed before `ms` is below `head`."""
        if self.marks and self.marks[-1][0] >= head:
            return                              # the head did not move: the older mark stands
        if len(self.marks) >= MARKS_MAX:
            self.marks.popleft()                # drops a time: only makes the log look older
        self.marks.append((head, ms))

    def written(self, pos: int):
        """The log holds the ring below `pos`: the time of the last mark it passed, or
        None when it passed none."""
        ms = None
        marks = self.marks
        while marks and marks[0][0] <= pos:
            ms = marks.popleft()[1]
        return ms
