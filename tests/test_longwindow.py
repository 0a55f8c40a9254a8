"""Reading a long window from the stretches of refusals it causes (``bulkpatch.longwindow``)."""

from __future__ import annotations

import pytest

from bulkpatch.accepted import AcceptedLog
from bulkpatch.longwindow import LongWindow, Reading


def _climbed() -> LongWindow:
    """A climb from 0 s that had 600 accepted by its first refusal at 3.5 s."""
    log = AcceptedLog(12.0)
    for tick, accepted in ((0.0, 0), (1.0, 40), (2.0, 160), (3.0, 400), (3.5, 600)):
        log.record(tick, accepted)
    return LongWindow(log, turned=(0.0, 0))


def test_a_stretch_longer_than_a_second_window_can_refuse_reads_the_window() -> None:
    # Refused from 3.5 s to 5.9 s, taking requests again at 6.0 s: a window of a second
    # can't refuse that long. It turned between the last refusal and then: 600 accepted
    # over at least 5.9 s (the grant read on the high side, never low).
    reading = _climbed().ended(6.0, (3.5, 5.9, 600), asked=0.0)
    assert reading is not None
    assert reading.window == pytest.approx(5.9)
    assert reading.allowance == 600
    assert reading.grant == pytest.approx(600 / 5.9)
    assert reading.longest == pytest.approx(6.0)  # the turn came before 6.0 s


def test_a_stretch_a_retry_after_explains_is_no_long_window() -> None:
    # Told to wait 1 s at 3.5 s and taking requests again at 4.6 s: a window of a second.
    window = _climbed()
    assert window.ended(4.6, (3.5, 3.6, 600), asked=1.0) is None
    assert not window.read


def test_a_retry_after_over_two_and_a_half_seconds_reads_the_climbs_window() -> None:
    # Told to wait 3 s: the server counts in windows that long; the turn came within the
    # second before the client took requests again (a Retry-After is whole seconds).
    reading = _climbed().ended(7.0, (3.5, 3.6, 600), asked=3.0)
    assert reading == Reading(window=6.0, allowance=600, longest=7.0)


def _doubling_climb() -> LongWindow:
    """A climb doubling each tick from 0 s, 310 accepted by the tick at 2.5 s."""
    log = AcceptedLog(12.0)
    for tick, accepted in ((0.0, 0), (0.5, 10), (1.0, 30), (1.5, 70), (2.0, 150), (2.5, 310)):
        log.record(tick, accepted)
    return LongWindow(log, turned=(0.0, 0))


def test_the_echo_is_judged_against_the_second_up_to_the_climbs_first_refusal() -> None:
    # First refused at 2.99 s with 628 accepted, the tick at 3.0 s not yet counted: the
    # climb took 558 since the tick a second before (1.5 s), not the 240 between the ticks
    # before each. Against 240, the 40/s the server took after it was no echo; a 6 s
    # counter went unseen, and the run landed 0.80x to 0.85x of its limit.
    window = _doubling_climb()
    assert window.ended(3.02, (2.99, 3.0, 628), asked=0.0) is None
    window.history.record(3.0, 630)
    assert window.heard(3.0, 630, refused_at=3.01, asked=0.0) is None  # the second after begins
    reading = window.heard(4.0, 670, refused_at=3.9, asked=0.0)
    assert reading is not None
    assert reading.allowance == 628
