"""The --rate auto controller, driven by a simulated token-bucket server and clock."""

from __future__ import annotations

import pytest

from bulkpatch.pace import TICK_S, AutoRate

STEP = 0.01  # simulated seconds per step


def drive(pacer: AutoRate, limits: list[tuple[float, float]], seconds: float) -> list[float]:
    """Send at the pacer's rate into a token bucket (burst 10) whose limit follows
    ``limits``; the requests accepted in each simulated second."""
    tokens, credit, now, next_tick = 10.0, 0.0, 0.0, TICK_S
    accepted = [0.0] * int(seconds)
    while now < seconds:
        limit = [rate for at, rate in limits if at <= now][-1]
        tokens = min(10.0, tokens + limit * STEP)
        credit += pacer.rate * STEP
        while credit >= 1.0:
            credit -= 1.0
            pacer.sent()
            if tokens >= 1.0:
                tokens -= 1.0
                accepted[int(now)] += 1
                pacer.answered(now, throttled=False)
            else:
                pacer.answered(now, throttled=True)
        now += STEP
        if now >= next_tick:
            pacer.tick(now)
            next_tick += TICK_S
    return accepted


def test_finds_an_unknown_limit_and_follows_it_down_and_up() -> None:
    schedule = [(0.0, 300.0), (20.0, 150.0), (40.0, 300.0)]
    accepted = drive(AutoRate(), schedule, 60)
    for start, limit in ((5, 300), (25, 150), (45, 300)):
        phase = accepted[start : start + 15]
        assert sum(phase) / 15 >= 0.9 * limit, (start, phase)


def test_stays_put_when_the_client_does_not_use_its_rate() -> None:
    pacer = AutoRate(start=50)
    for n in range(1, 20):
        pacer.tick(n * TICK_S)  # nothing sent: not the rate that holds the client back
    assert pacer.rate == 50


def test_a_refusal_right_after_a_decrease_changes_nothing() -> None:
    pacer = AutoRate(start=100)
    assert pacer.answered(1.0, throttled=True)
    lowered = pacer.rate
    assert lowered < 100
    assert not pacer.answered(1.0 + TICK_S / 2, throttled=True)  # sent before the decrease
    assert pacer.rate == lowered


@pytest.mark.parametrize("max_rate", [40.0, 300.0])
def test_never_above_max_rate(max_rate: float) -> None:
    pacer = AutoRate(max_rate=max_rate)
    drive(pacer, [(0.0, 10_000.0)], 10)
    assert pacer.rate == max_rate
