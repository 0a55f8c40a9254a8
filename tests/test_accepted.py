"""What the server accepted, tick by tick (``bulkpatch.accepted``)."""

from __future__ import annotations

import pytest

from bulkpatch.accepted import AcceptedLog


def _log(*counts: int) -> AcceptedLog:
    log = AcceptedLog(12.0)
    for i, count in enumerate(counts):
        log.record(0.5 * i, count)
    return log


def test_a_steady_pace_over_the_last_two_ticks_is_read_per_second() -> None:
    assert _log(0, 300, 350, 400).steady() == pytest.approx(100.0)


def test_a_pace_that_doubles_from_tick_to_tick_is_not_steady() -> None:
    # A moving window giving back a climb that doubled each tick.
    assert _log(0, 10, 20, 40).steady() is None
    assert _log(0, 10).steady() is None  # two ticks: one interval only


def test_a_server_that_took_nothing_for_two_ticks_holds_a_pace_of_nothing() -> None:
    assert _log(0, 600, 600, 600).steady() == 0.0


def test_the_busiest_second_is_the_most_taken_between_ticks_a_second_apart() -> None:
    # Ticks at 0, 0.5, ... 2.5 s: 150 taken in the second from 0.5 s to 1.5 s.
    assert _log(0, 10, 100, 160, 170, 175).busiest(175, 2.5) == 150


def test_the_busiest_second_counts_what_was_taken_since_the_last_tick() -> None:
    # A burst of 150 at 0.2 s, before the second tick: a fixed window filled at once.
    assert _log(0).busiest(150, 0.2) == 150
