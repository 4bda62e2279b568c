"""SpinCredit (bukt/writewait/spin.py): the rule that decides whether the writer's gather and
the TCP worker's busy poll spin before they sleep."""
from bukt.writewait.spin import CREDIT_MAX, PROBE, SpinCredit


def test_spinning_goes_on_while_it_pays_and_stops_when_it_does_not():
    g = SpinCredit(50e-6)
    for _ in range(3 * CREDIT_MAX):                 # paying: spins every time
        assert g.next() == 50e-6
        g.paid(True)
    assert g.credit == CREDIT_MAX
    spins = 0
    while g.credit:                                 # not paying: the credit runs out
        assert g.next() == 50e-6
        g.paid(False)
        spins += 1
    assert spins == CREDIT_MAX // 2                 # each miss costs two
    taken = [g.next() for _ in range(2 * PROBE)]    # without credit: the probes only
    assert taken.count(50e-6) == 2 and taken.count(0.0) == 2 * PROBE - 2


def test_a_probe_that_pays_turns_spinning_back_on():
    g = SpinCredit(30e-6)
    g.credit = 0
    while g.next() == 0.0:
        pass
    g.paid(True)
    assert g.next() == 30e-6


def test_a_limit_of_zero_never_spins():
    never = SpinCredit(0.0)
    assert all(never.next() == 0.0 for _ in range(3 * PROBE))
