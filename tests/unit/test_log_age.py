"""The writer's log age under a steady load (bukt/writer/lag.py; cext/ring.pxi, THE LAG
LIMIT): the published time follows the oldest change the log may lack, not the last
drain that happened to reach the ring's head."""
from bukt.writer.lag import MARKS_MAX, LogAge


def test_a_drain_that_never_reaches_the_head_still_moves_the_time():
    age = LogAge()
    # a steady load: each drain starts with the head a batch ahead and writes one batch,
    # so the log never reaches the head it saw, yet trails it by one batch only
    head, written, published = 100, 0, []
    for ms in range(1000, 1010):
        age.mark(head, ms)
        written += 100
        published.append(age.written(written))
        head += 100
    assert published[0] == 1000          # passed the first mark at once
    assert published[-1] == 1009         # ... and the newest one at the end
    assert all(p is not None for p in published)


def test_time_moves_only_past_marks_the_log_holds():
    age = LogAge()
    age.mark(500, 10)
    age.mark(900, 20)
    assert age.written(499) is None      # below every head: nothing to say
    assert age.written(500) == 10
    assert age.written(899) is None
    assert age.written(2000) == 20
    assert age.written(3000) is None     # no mark left


def test_a_head_that_did_not_move_keeps_the_older_mark():
    age = LogAge()
    age.mark(500, 10)
    age.mark(500, 30)                    # same head, later: the older time is the truth
    assert age.written(500) == 10


def test_marks_are_bounded_and_dropping_one_only_ages_the_log():
    age = LogAge()
    for i in range(MARKS_MAX + 10):
        age.mark(i + 1, i)
    assert len(age.marks) == MARKS_MAX
    assert age.written(MARKS_MAX + 10) == MARKS_MAX + 9
